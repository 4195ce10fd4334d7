//! A CAS object as an HTTP response body, for the proxy's replays and the
//! hashed mirror ([`crate::mirror`]): read on a blocking thread in chunks,
//! through the reader [`crate::cas::Cas::get`] returns, which checks the
//! bytes against the object's name; memory stays a few chunks whatever the
//! object's size.
//!
//! The check can only end at the end of the object, so the last chunk is
//! held back until the reader has settled it: a client never gets the
//! whole announced length of bytes that do not hash to the object's name.
//! On a mismatch (or any read error, or more or fewer bytes than
//! announced) the body ends in an error, which makes the server abort the
//! response: the client sees a failed transfer, never a complete wrong
//! file.

use crate::cas::CasError;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes read from the object at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks read ahead of the client.
const AHEAD: usize = 4;

/// What [`ObjectBody`] reports once, when it ends: `Ok` when the whole
/// object was handed on, checked; otherwise why not, in one line.
pub(crate) type OnEnd = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The body: see the module header.
pub(crate) struct ObjectBody {
    pieces: mpsc::Receiver<Piece>,
    size: u64,
    object: String,
    done: bool,
    on_end: Option<OnEnd>,
}

enum Piece {
    Data(Bytes),
    /// The object's last bytes, sent once the whole object checked out.
    Last(Bytes),
    Failed(String),
}

impl ObjectBody {
    /// Streams `reader` (a CAS reader of `object`, `size` bytes long);
    /// the reading thread gives up when the client takes no chunk for
    /// `stall`. Must be called inside a tokio runtime.
    pub fn new(reader: Box<dyn Read + Send>, object: String, size: u64, stall: Duration, on_end: OnEnd) -> Self {
        let (sender, pieces) = mpsc::channel(AHEAD);
        let handle = tokio::runtime::Handle::current();
        let name = object.clone();
        tokio::task::spawn_blocking(move || {
            let send = |piece| handle.block_on(sender.send_timeout(piece, stall)).is_ok();
            read_object(reader, &name, size, send);
        });
        ObjectBody { pieces, size, object, done: false, on_end: Some(on_end) }
    }

    fn end(&mut self, outcome: Result<(), String>) {
        self.done = true;
        if let Some(on_end) = self.on_end.take() {
            on_end(outcome);
        }
    }
}

/// Reads the object, handing its chunks to `send` one behind: a chunk goes
/// once the next read returned more, the last one once the reader settled
/// the check. Stops when `send` fails (the client is gone or stalled).
fn read_object(mut reader: Box<dyn Read + Send>, object: &str, size: u64, send: impl Fn(Piece) -> bool) {
    let mut held: Option<Bytes> = None;
    let mut total: u64 = 0;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                send(Piece::Failed(read_error(object, &e)));
                return;
            }
        };
        if n == 0 {
            let piece = if total == size {
                Piece::Last(held.unwrap_or_default())
            } else {
                Piece::Failed(format!("object {object} has {total} bytes, not the {size} announced"))
            };
            send(piece);
            return;
        }
        total += n as u64;
        if total > size {
            send(Piece::Failed(format!("object {object} has more than the {size} bytes announced")));
            return;
        }
        buf.truncate(n);
        if let Some(chunk) = held.replace(Bytes::from(buf))
            && !send(Piece::Data(chunk))
        {
            return;
        }
    }
}

/// A read error in one line, naming the object (a tampered one says so
/// already).
fn read_error(object: &str, e: &io::Error) -> String {
    match CasError::in_io(e) {
        Some(cas @ CasError::Tampered { .. }) => cas.to_string(),
        _ => format!("cannot read object {object}: {e}"),
    }
}

impl Body for ObjectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.pieces.poll_recv(cx) {
            Poll::Ready(Some(Piece::Data(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(Some(Piece::Last(chunk))) => {
                this.end(Ok(()));
                if chunk.is_empty() { Poll::Ready(None) } else { Poll::Ready(Some(Ok(Frame::data(chunk)))) }
            }
            Poll::Ready(Some(Piece::Failed(why))) => {
                this.end(Err(why.clone()));
                Poll::Ready(Some(Err(why.into())))
            }
            Poll::Ready(None) => {
                let why = format!("reading object {} stopped before its end", this.object);
                this.end(Err(why.clone()));
                Poll::Ready(Some(Err(why.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.size)
    }
}

impl Drop for ObjectBody {
    fn drop(&mut self) {
        if self.on_end.is_some() {
            self.end(Err("the client went away before the body was complete".to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::{ObjectId, VerifyingReader};
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    type Ended = Arc<Mutex<Option<Result<(), String>>>>;

    fn body_of(bytes: Vec<u8>, name_of: &[u8], size: u64) -> (ObjectBody, Ended) {
        let id = ObjectId::of(name_of);
        let ended: Ended = Arc::default();
        let into = ended.clone();
        let reader = Box::new(VerifyingReader::new(io::Cursor::new(bytes), id));
        let body = ObjectBody::new(
            reader,
            id.to_hex(),
            size,
            Duration::from_secs(5),
            Box::new(move |outcome| *into.lock().unwrap() = Some(outcome)),
        );
        (body, ended)
    }

    /// The data frames until the end or an error.
    async fn drain(mut body: ObjectBody) -> (Vec<u8>, Option<String>) {
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => got.extend_from_slice(frame.data_ref().unwrap()),
                Err(e) => return (got, Some(e.to_string())),
            }
        }
        (got, None)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_good_object_is_passed_on_whole() {
        for len in [0, 10, CHUNK, 3 * CHUNK + 7] {
            let bytes = pattern(len);
            let (body, ended) = body_of(bytes.clone(), &bytes, len as u64);
            assert_eq!(body.size_hint().exact(), Some(len as u64));
            let (got, error) = drain(body).await;
            assert_eq!((got.len(), error), (len, None));
            assert!(got == bytes);
            assert_eq!(*ended.lock().unwrap(), Some(Ok(())));
        }
    }

    #[tokio::test]
    async fn tampered_bytes_never_reach_their_full_length() {
        let good = pattern(3 * CHUNK + 7);
        let mut bad = good.clone();
        bad[5] ^= 1;
        let (body, ended) = body_of(bad, &good, good.len() as u64);
        let (got, error) = drain(body).await;
        let id = ObjectId::of(&good);
        assert!(got.len() < good.len(), "the last chunk was held back");
        let error = error.expect("the body ends in an error");
        assert!(error.starts_with(&format!("object {id} is tampered: its bytes hash to ")), "{error}");
        assert_eq!(*ended.lock().unwrap(), Some(Err(error)));
    }

    #[tokio::test]
    async fn more_or_fewer_bytes_than_announced_are_an_error() {
        let bytes = pattern(100);
        let (body, _) = body_of(bytes.clone(), &bytes, 50);
        let (got, error) = drain(body).await;
        assert!(got.len() <= 50);
        assert!(error.unwrap().ends_with("has more than the 50 bytes announced"));
        let (body, _) = body_of(bytes.clone(), &bytes, 200);
        let error = drain(body).await.1.unwrap();
        assert!(error.ends_with("has 100 bytes, not the 200 announced"), "{error}");
    }

    #[tokio::test]
    async fn a_body_dropped_early_says_so() {
        let bytes = pattern(3 * CHUNK);
        let (body, ended) = body_of(bytes.clone(), &bytes, bytes.len() as u64);
        drop(body);
        let outcome = ended.lock().unwrap().clone();
        assert_eq!(outcome, Some(Err("the client went away before the body was complete".to_owned())));
    }
}
