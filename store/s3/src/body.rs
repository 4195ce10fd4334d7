//! A GET's body as a blocking [`Read`]: each chunk is asked for on the S3
//! runtime while the one before is being read, so the network and the
//! reader overlap.

use crate::runtime::{spawn, wait};
use aws_sdk_s3::primitives::{ByteStream, ByteStreamError};
use bytes::{Buf, Bytes};
use std::io::{self, Read};
use std::sync::mpsc::Receiver;

type Next = (ByteStream, Option<Result<Bytes, ByteStreamError>>);

pub(crate) struct BodyReader {
    next: Option<Receiver<Next>>,
    chunk: Bytes,
    key: String,
    at: String,
}

fn ask(mut stream: ByteStream) -> Receiver<Next> {
    spawn(async move {
        let next = stream.next().await;
        (stream, next)
    })
}

impl BodyReader {
    pub(crate) fn new(stream: ByteStream, key: &str, at: &str) -> BodyReader {
        BodyReader { next: Some(ask(stream)), chunk: Bytes::new(), key: key.to_owned(), at: at.to_owned() }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let Some(next) = self.next.take() else { return Ok(0) };
            match wait(next) {
                (_, None) => return Ok(0),
                (stream, Some(Ok(chunk))) => {
                    self.chunk = chunk;
                    self.next = Some(ask(stream));
                }
                (_, Some(Err(e))) => {
                    let why = crate::Error::Body { key: self.key.clone(), at: self.at.clone(), why: e.to_string() };
                    return Err(io::Error::other(why));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}
