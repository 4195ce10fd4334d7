//! Bridges between the connection's async streams and the store's
//! synchronous readers and writers, used inside `block_in_place`: NARs are
//! unpacked and dumped by blocking code while the bytes move over the
//! socket, without holding more than a buffer in memory. (What blocking
//! code reads from them is decoded by `worker_protocol::sync`.)
//! A leaf: it uses no other module of the daemon.

use std::io::{self, Read, Write};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::runtime::Handle;
use tokio_util::io::SyncIoBridge;
use worker_protocol::{StderrMessage, WireRead};

/// Synchronous readers over async streams.
pub struct SyncReader;

impl SyncReader {
    /// Buffers an unbuffered async stream (framed uploads end at their terminator).
    pub fn buffered<R: AsyncRead + Unpin>(r: R, handle: Handle) -> SyncIoBridge<BufReader<R>> {
        SyncIoBridge::new_with_handle(BufReader::with_capacity(256 * 1024, r), handle)
    }

    /// Reads straight from the connection's own buffer, consuming exactly
    /// what the reader uses (unframed NARs are followed by the next request).
    pub fn direct<R: AsyncBufRead + Unpin>(r: R, handle: Handle) -> SyncIoBridge<R> {
        SyncIoBridge::new_with_handle(r, handle)
    }
}

/// A synchronous writer over the connection's writer.
pub struct SyncWriter;

impl SyncWriter {
    #[allow(clippy::new_ret_no_self)]
    pub fn new<W: AsyncWrite + Unpin>(w: W, handle: Handle) -> SyncIoBridge<W> {
        SyncIoBridge::new_with_handle(w, handle)
    }
}

/// The socket send buffer asked for while a NAR is sent.
const NAR_SEND_BUFFER: usize = 1 << 20;

/// Blocking writes straight to the connection's socket, for long replies
/// written by blocking code (a NAR). Going through the async writer would
/// cost a round trip through the runtime, and a wake-up of another thread,
/// each time the socket's buffer fills; here the writing thread itself waits
/// in `poll` for room, as CppNix's per-connection process does in `write`.
/// Whatever is buffered in the async writer must be flushed first.
pub struct SocketWriter {
    fd: std::os::fd::RawFd,
}

impl SocketWriter {
    /// `fd` must stay open while this writer is used (the connection owns it).
    pub fn new(fd: std::os::fd::RawFd) -> SocketWriter {
        // SAFETY: as in `write`.
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        // Each time the client drains the socket, both this thread and the
        // runtime's (which watches the socket too) wake up: a larger send
        // buffer means fewer rounds (200 MiB: CPU 50 -> 30 ms, bench/daemon.sh).
        // The kernel caps it at net.core.wmem_max; failing is harmless.
        if rustix::net::sockopt::socket_send_buffer_size(sock).is_ok_and(|n| n < NAR_SEND_BUFFER) {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(sock, NAR_SEND_BUFFER);
        }
        SocketWriter { fd }
    }
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: the connection that owns the socket outlives this writer
        // (see `new`), so the descriptor is open and is that socket.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        loop {
            match rustix::net::send(fd, buf, rustix::net::SendFlags::NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => {
                    // The socket is non-blocking (the runtime's): wait for room,
                    // or for the peer to go (POLLHUP/POLLERR, then `send` fails).
                    let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::OUT)];
                    match rustix::event::poll(&mut fds, None) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Data the client sends when asked with STDERR_READ (ImportPaths, and
/// AddToStoreNar at 1.21–1.22). Never asks for more than its caller wants,
/// and the caller (a NAR parser) stops asking at the NAR's end.
pub struct TunnelReader<'a, R, W> {
    reader: &'a mut BufReader<R>,
    writer: &'a mut BufWriter<W>,
    minor: u64,
    handle: Handle,
}

impl<'a, R: AsyncRead + Unpin, W: AsyncWrite + Unpin> TunnelReader<'a, R, W> {
    pub fn new(reader: &'a mut BufReader<R>, writer: &'a mut BufWriter<W>, minor: u64) -> std::io::BufReader<Self> {
        // CppNix asks for 32 KiB at a time.
        std::io::BufReader::with_capacity(32 * 1024, TunnelReader { reader, writer, minor, handle: Handle::current() })
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Read for TunnelReader<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len() as u64;
        let (reader, writer, minor) = (&mut *self.reader, &mut *self.writer, self.minor);
        let data = self.handle.block_on(async move {
            StderrMessage::Read(want).write(writer, minor).await?;
            writer.flush().await?;
            reader.read_bytes_limited("tunnelled data", want).await.map_err(|e| io::Error::other(e.to_string()))
        })?;
        if data.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client sent no data"));
        }
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }
}

/// Sends what is written as STDERR_WRITE messages (ExportPath).
pub struct StderrWriteSink<'a, W> {
    writer: &'a mut BufWriter<W>,
    minor: u64,
    handle: Handle,
}

impl<'a, W: AsyncWrite + Unpin> StderrWriteSink<'a, W> {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(writer: &'a mut BufWriter<W>, handle: Handle, minor: u64) -> std::io::BufWriter<Self> {
        std::io::BufWriter::with_capacity(64 * 1024, StderrWriteSink { writer, minor, handle })
    }
}

impl<W: AsyncWrite + Unpin> Write for StderrWriteSink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (writer, minor) = (&mut *self.writer, self.minor);
        self.handle.block_on(StderrMessage::Write(buf.to_vec()).write(writer, minor))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
