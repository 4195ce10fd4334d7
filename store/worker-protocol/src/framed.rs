//! Framed streams (worker-protocol.md §2.1): `u64 n` + `n` unpadded bytes,
//! repeated, ended by a zero length. Used for uploads whose end the server
//! must find without parsing (AddToStore ≥ 1.25, AddToStoreNar ≥ 1.23,
//! AddMultipleToStore, AddBuildLog).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Reads the payload of a framed stream; reports end-of-file at the
/// terminator and leaves the underlying stream just after it.
pub struct FramedReader<R> {
    inner: R,
    /// Bytes left in the current frame.
    remaining: u64,
    /// A partly read length word.
    header: [u8; 8],
    header_filled: usize,
    done: bool,
}

impl<R: AsyncRead + Unpin> FramedReader<R> {
    pub fn new(inner: R) -> Self {
        FramedReader { inner, remaining: 0, header: [0; 8], header_filled: 0, done: false }
    }

    /// Whether the terminator has been read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads and discards the rest of the stream, up to its terminator (what
    /// CppNix does before reporting an error, so the connection stays in sync).
    pub async fn drain(&mut self) -> io::Result<u64> {
        tokio::io::copy(self, &mut tokio::io::sink()).await
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FramedReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.done || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.remaining == 0 {
                // Read the next length word, possibly in pieces.
                while this.header_filled < 8 {
                    let mut hb = ReadBuf::new(&mut this.header[this.header_filled..]);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut hb))?;
                    let n = hb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "unexpected end-of-file in a framed stream",
                        )));
                    }
                    this.header_filled += n;
                }
                this.header_filled = 0;
                this.remaining = u64::from_le_bytes(this.header);
                if this.remaining == 0 {
                    this.done = true;
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let want = (buf.remaining() as u64).min(this.remaining) as usize;
            let n = {
                let mut limited = buf.take(want);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                limited.filled().len()
            };
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "unexpected end-of-file in a framed stream",
                )));
            }
            // SAFETY: the inner reader filled (so initialised) these `n` bytes
            // at the start of our unfilled region, through the `take` view of it.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            this.remaining -= n as u64;
            return Poll::Ready(Ok(()));
        }
    }
}

/// Writes a framed stream (the client side; tests and tools).
pub struct FramedWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> FramedWriter<W> {
    pub fn new(inner: W) -> Self {
        FramedWriter { inner }
    }

    /// Writes one frame (nothing for empty data: an empty frame would end the stream).
    pub async fn write_frame(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.inner.write_all(&(data.len() as u64).to_le_bytes()).await?;
        self.inner.write_all(data).await
    }

    /// Writes the terminator.
    pub async fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&0u64.to_le_bytes()).await?;
        Ok(self.inner)
    }
}
