//! [`Upload`]: an object written as its bytes stream past. Up to one part
//! size it is held and sent in one PUT at [`Upload::finish`] (niks3 found
//! small objects in one request to be what S3 servers like); past that a
//! multipart upload starts and each full part is sent while the next one
//! fills, [`Tuning::concurrency`](crate::Tuning) parts in flight at most,
//! so memory stays at a few parts whatever the size.
//!
//! Nothing is visible under the key before [`Upload::finish`]: an upload
//! dropped, [aborted](Upload::abort) or killed leaves at most an
//! incomplete multipart upload, which is not an object (servers expire
//! those; armitage's queue aborts its own).

use crate::runtime::{block, spawn, wait};
use crate::{Bucket, Error};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::Receiver;

impl Bucket {
    /// Starts writing `key` as its bytes stream past ([`Upload`]).
    pub fn upload(&self, key: &str, content_type: &str) -> Upload {
        Upload::new(self.clone(), key, content_type)
    }

    /// Writes (or replaces) `key` with everything `reader` yields, in
    /// constant memory; returns the size.
    pub fn put(&self, key: &str, reader: &mut dyn Read, content_type: &str) -> Result<u64, Error> {
        let mut upload = self.upload(key, content_type);
        upload.copy_from(reader)?;
        upload.finish()
    }
}

pub struct Upload {
    bucket: Bucket,
    key: String,
    content_type: String,
    buffer: BytesMut,
    multipart: Option<Multipart>,
    size: u64,
}

struct Multipart {
    upload_id: String,
    next_number: i32,
    in_flight: VecDeque<Receiver<Result<CompletedPart, Error>>>,
    done: Vec<CompletedPart>,
}

impl Upload {
    pub(crate) fn new(bucket: Bucket, key: &str, content_type: &str) -> Upload {
        Upload {
            buffer: BytesMut::with_capacity(bucket.tuning.part_size.min(1 << 20)),
            bucket,
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            multipart: None,
            size: 0,
        }
    }

    /// The key the object will have.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether parts are already on the server (the key can no longer
    /// change: see [`Self::set_key`]).
    pub fn is_multipart(&self) -> bool {
        self.multipart.is_some()
    }

    /// Makes the object go under `key` instead; `false` (and nothing
    /// changed) once parts are on the server under the first key.
    pub fn set_key(&mut self, key: &str) -> bool {
        if self.multipart.is_some() {
            return false;
        }
        self.key = key.to_owned();
        true
    }

    /// Writes everything `reader` yields.
    pub fn copy_from(&mut self, reader: &mut dyn Read) -> Result<u64, Error> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Body {
                        key: self.key.clone(),
                        at: self.bucket.at.clone(),
                        why: format!("reading what to upload: {e}"),
                    });
                }
            };
            self.push(&buf[..n])?;
            total += n as u64;
        }
    }

    fn push(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        let part_size = self.bucket.tuning.part_size;
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = part_size.saturating_sub(self.buffer.len()).max(1);
            let take = room.min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // A full part is sent once more bytes follow it: an object of
            // exactly one part size still goes in one PUT.
            if self.buffer.len() >= part_size && !bytes.is_empty() {
                let part = self.buffer.split_to(part_size).freeze();
                self.send_part(part)?;
            }
        }
        Ok(())
    }

    fn send_part(&mut self, part: Bytes) -> Result<(), Error> {
        if self.multipart.is_none() {
            let request = self
                .bucket
                .client
                .create_multipart_upload()
                .bucket(&self.bucket.name)
                .key(&self.key)
                .content_type(&self.content_type);
            let out = block(request.send()).map_err(|e| self.error("start uploading", e))?;
            let upload_id = out.upload_id().unwrap_or_default().to_owned();
            self.multipart =
                Some(Multipart { upload_id, next_number: 1, in_flight: VecDeque::new(), done: Vec::new() });
        }
        let bucket = self.bucket.clone();
        let key = self.key.clone();
        let multipart = self.multipart.as_mut().expect("started above");
        let number = multipart.next_number;
        multipart.next_number += 1;
        let request = bucket
            .client
            .upload_part()
            .bucket(&bucket.name)
            .key(&key)
            .upload_id(&multipart.upload_id)
            .part_number(number)
            .content_length(part.len() as i64)
            .body(ByteStream::from(part));
        let at = bucket.at.clone();
        multipart.in_flight.push_back(spawn(async move {
            let out = request.send().await.map_err(|e| Error::request("upload a part of", &key, &at, e))?;
            Ok(CompletedPart::builder().set_e_tag(out.e_tag().map(str::to_owned)).part_number(number).build())
        }));
        while multipart.in_flight.len() > bucket.tuning.concurrency.max(1) {
            let oldest = multipart.in_flight.pop_front().expect("more than one in flight");
            multipart.done.push(wait(oldest)?);
        }
        Ok(())
    }

    /// The object is complete: makes it visible under its key. Returns the
    /// size. On an error nothing is visible and the parts are let go.
    pub fn finish(mut self) -> Result<u64, Error> {
        let result = self.complete();
        if result.is_err() {
            self.abort_parts();
        }
        self.multipart = None;
        result
    }

    fn complete(&mut self) -> Result<u64, Error> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        if self.multipart.is_none() {
            self.bucket.put_bytes(&self.key, rest.to_vec(), &self.content_type)?;
            return Ok(self.size);
        }
        if !rest.is_empty() {
            self.send_part(rest)?;
        }
        let multipart = self.multipart.as_mut().expect("multipart");
        while let Some(part) = multipart.in_flight.pop_front() {
            multipart.done.push(wait(part)?);
        }
        let mut parts = std::mem::take(&mut multipart.done);
        parts.sort_by_key(|p| p.part_number());
        let request = self
            .bucket
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket.name)
            .key(&self.key)
            .upload_id(&multipart.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        block(request.send()).map_err(|e| self.error("complete the upload of", e))?;
        Ok(self.size)
    }

    /// Gives the upload up: nothing becomes visible.
    pub fn abort(mut self) {
        self.abort_parts();
    }

    fn abort_parts(&mut self) {
        let Some(multipart) = self.multipart.take() else { return };
        // Parts still being sent finish or fail on their own; the abort
        // lets the server drop whatever arrived.
        let request = self
            .bucket
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket.name)
            .key(&self.key)
            .upload_id(&multipart.upload_id);
        let (key, at) = (self.key.clone(), self.bucket.at.clone());
        drop(spawn(async move {
            if let Err(e) = request.send().await {
                tracing::debug!(key, at, error = %Error::request("abort the upload of", &key, &at, e), "abort");
            }
        }));
    }

    fn error<E>(&self, op: &'static str, e: aws_sdk_s3::error::SdkError<E>) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        Error::request(op, &self.key, &self.bucket.at, e)
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.abort_parts();
    }
}
