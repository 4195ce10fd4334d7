//! One connection's state, as every operation sees it: the client's streams
//! and negotiated minor, its trust level and options, its own store handle,
//! and the stderr channel (worker-protocol.md §4): log lines and activities
//! inside a work window, which ends with `STDERR_LAST` and the reply or with
//! `STDERR_ERROR` ([`OpError`] says which, and whether the connection goes
//! on).
//!
//! A leaf: it uses no other module of the daemon, so that the connection
//! loop, the operations, the policy and the build reporting can all use it.

use local_store::LocalStore;
use std::sync::Arc;
use store::store_path::StorePath;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use worker_protocol::{self as wp, ClientOptions, ProtoError, StderrMessage, WireWrite};

/// The connection's read and write buffers. Requests and most replies are a
/// few hundred bytes, and NARs do not go through these buffers' copies (large
/// reads and writes bypass them), so a connection needs little: CppNix's
/// buffered source and sink are 32 KiB. 64 KiB each cost the daemon a MiB of
/// memory per 16 clients (the read buffer is zeroed, so all of it is touched).
const CONNECTION_BUFFER: usize = 16 * 1024;

/// What a connection reads from (a socket's read half, stdin).
pub trait Input: AsyncRead + Unpin + Send {}
impl<T: AsyncRead + Unpin + Send> Input for T {}

/// What a connection writes to (a socket's write half, stdout).
pub trait Output: AsyncWrite + Unpin + Send {}
impl<T: AsyncWrite + Unpin + Send> Output for T {}

/// Trust as the handshake reports it (minor ≥ 35).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Trusted,
    NotTrusted,
}

/// Why an operation failed.
#[derive(Debug)]
pub enum OpError {
    /// Failed after its request was read: reported, the connection goes on.
    Failed(String),
    /// A failed build, with CppNix's exit status (`Worker::exitStatus`:
    /// 100 + 1 timed out, + 2 hash mismatch, + 4 not deterministic), which
    /// clients before protocol 1.26 exit with.
    BuildFailed(String, u64),
    /// The stream is out of step or broken: reported if possible, then the
    /// connection ends.
    Fatal(String),
}

impl From<local_store::Error> for OpError {
    fn from(e: local_store::Error) -> Self {
        OpError::Failed(e.to_string())
    }
}

impl From<ProtoError> for OpError {
    fn from(e: ProtoError) -> Self {
        OpError::Fatal(e.to_string())
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        OpError::Fatal(e.to_string())
    }
}

pub type OpResult<T = ()> = Result<T, OpError>;

/// The state of one connection.
pub struct Session<R, W> {
    pub reader: BufReader<R>,
    pub writer: BufWriter<W>,
    /// The negotiated minor (0 until the handshake sets it).
    pub minor: u64,
    pub trust: Trust,
    /// This connection's own store handle (its temp roots die with it).
    pub store: Arc<LocalStore>,
    /// What the client set with SetOptions, as the policy let it.
    pub options: ClientOptions,
    /// Whether a work window is open (stderr messages may be sent).
    in_work: bool,
    /// Next activity id (per connection; high bits keep them apart from
    /// the client's own `pid << 32` ids).
    next_activity: u64,
    /// The socket under `writer`, when it is one, for replies written by
    /// blocking code straight to it (see `io::SocketWriter`).
    pub socket_fd: Option<std::os::fd::RawFd>,
}

impl<R: Input, W: Output> Session<R, W> {
    /// A session on `store` (a handle of its own on the store as it is on
    /// disk now), starting with `options` until the client sets its own.
    pub fn new(reader: R, writer: W, trust: Trust, store: LocalStore, options: ClientOptions) -> Self {
        Session {
            reader: BufReader::with_capacity(CONNECTION_BUFFER, reader),
            writer: BufWriter::with_capacity(CONNECTION_BUFFER, writer),
            minor: 0,
            trust,
            store: Arc::new(store.reuse_staging()),
            options,
            in_work: false,
            next_activity: (1u64 << 63) | (u64::from(std::process::id()) << 32),
            socket_fd: None,
        }
    }

    pub fn trusted(&self) -> bool {
        self.trust == Trust::Trusted
    }

    /// Opens the work window of a request: stderr messages may go out.
    pub fn begin_work(&mut self) {
        self.in_work = true;
    }

    /// Writes a stderr message (buffered) inside the work window.
    pub async fn log(&mut self, msg: StderrMessage) -> std::io::Result<()> {
        if !self.in_work {
            return Ok(());
        }
        // Before 1.20 an activity becomes a log line, which CppNix sends only
        // at the client's verbosity (activities themselves go out whatever their level).
        if let StderrMessage::StartActivity { level, .. } = &msg
            && self.minor < 20
            && (*level as u64) > self.options.verbosity
        {
            return Ok(());
        }
        msg.write(&mut self.writer, self.minor).await
    }

    /// A log line, if the client's verbosity admits `level`.
    pub async fn info(&mut self, level: wp::Verbosity, text: &str) -> std::io::Result<()> {
        if (level as u64) > self.options.verbosity {
            return Ok(());
        }
        self.log(StderrMessage::Next(format!("{text}\n"))).await
    }

    /// A warning line, as CppNix's `warn` prints them.
    pub async fn warn(&mut self, text: &str) -> std::io::Result<()> {
        self.log(StderrMessage::Next(format!("warning: {text}\n"))).await
    }

    /// Closes the work window successfully; the reply follows.
    pub async fn last(&mut self) -> std::io::Result<()> {
        self.in_work = false;
        StderrMessage::Last.write(&mut self.writer, self.minor).await
    }

    /// Closes the work window with an error (exit status 1) and flushes it.
    pub async fn send_error(&mut self, message: &str) -> std::io::Result<()> {
        self.send_error_status(message, 1).await
    }

    /// Closes the work window with an error and the exit status clients
    /// before 1.26 exit with, and flushes it.
    pub async fn send_error_status(&mut self, message: &str, exit_status: u64) -> std::io::Result<()> {
        self.in_work = false;
        StderrMessage::Error { message: message.to_owned(), exit_status }.write(&mut self.writer, self.minor).await?;
        self.writer.flush().await
    }

    pub fn new_activity_id(&mut self) -> u64 {
        self.next_activity += 1;
        self.next_activity
    }

    /// A set of store paths, as a reply.
    pub async fn write_paths<'p>(
        &mut self,
        paths: impl ExactSizeIterator<Item = &'p StorePath>,
    ) -> std::io::Result<()> {
        let dir = self.store.store_dir().clone();
        self.writer.write_u64_wire(paths.len() as u64).await?;
        for p in paths {
            self.writer.write_str(&dir.display(p)).await?;
        }
        Ok(())
    }
}
