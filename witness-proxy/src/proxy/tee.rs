//! The response body on its way to the client: each frame is passed on as
//! it arrives and, for a body the witness keeps, written to its
//! [`BodyWriter`] at the same time; nothing is held back or buffered whole.
//! When the body ends the record is finished: a complete body is committed
//! (its sha256 and size go into the record), a broken one (the upstream
//! failed or stalled, the client went away) is dropped and the record says
//! why.

use super::body::BoxError;
use super::records;
use crate::record::{Body as BodyRecord, Record};
use crate::sink::{BodyWriter, Witness};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// An upstream body relayed to the client and, maybe, to the witness.
pub(super) struct Tee {
    inner: Incoming,
    writer: Option<Box<dyn BodyWriter>>,
    /// Why the writer was given up while the body went on, if it was.
    lost: Option<String>,
    /// The record and where it goes; `None` once kept.
    pending: Option<(Record, Arc<dyn Witness>)>,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    /// The upstream connection's handle, dropped with the body.
    connection: Option<SendRequest<Incoming>>,
}

impl Tee {
    pub fn new(
        inner: Incoming,
        writer: Option<Box<dyn BodyWriter>>,
        record: Record,
        witness: Arc<dyn Witness>,
        stall: Duration,
        connection: SendRequest<Incoming>,
    ) -> Tee {
        Tee {
            inner,
            writer,
            lost: None,
            pending: Some((record, witness)),
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            connection: Some(connection),
        }
    }

    fn write(&mut self, data: &[u8]) {
        let Some(writer) = &mut self.writer else { return };
        if let Err(e) = writer.write_all(data) {
            self.writer = None;
            self.lost = Some(format!("the body could not be kept: {e}"));
        }
    }

    /// Keeps the record: the body whole (`broken` is `None`) or not.
    fn finish(&mut self, broken: Option<String>) {
        let Some((mut record, witness)) = self.pending.take() else { return };
        let writer = self.writer.take();
        match broken {
            Some(why) => record.error = Some(why),
            None => {
                if let Some(writer) = writer {
                    match writer.commit() {
                        Ok((sha256, size)) => record.body = Some(BodyRecord { size, sha256 }),
                        Err(e) => record.error = Some(format!("the body could not be kept: {e}")),
                    }
                }
            }
        }
        if record.error.is_none() {
            record.error = self.lost.take();
        }
        self.connection = None;
        records::keep(&*witness, record);
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.as_mut().reset(Instant::now() + this.stall);
                if let Some(data) = frame.data_ref() {
                    this.write(data);
                }
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Some(format!("the upstream body broke off: {}", records::error_chain(&e))));
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let why = format!("the upstream sent nothing for {}s", this.stall.as_secs());
                    this.finish(Some(why.clone()));
                    Poll::Ready(Some(Err(why.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if self.pending.is_none() {
            return;
        }
        // hyper drops a body it knows is over (HEAD, 204, 304, a final
        // frame it saw the end after) without polling it again.
        if self.inner.is_end_stream() {
            self.finish(None);
        } else {
            self.finish(Some("the client went away before the body was complete".to_owned()));
        }
    }
}
