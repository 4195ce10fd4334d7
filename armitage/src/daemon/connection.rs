//! One client connection: the handshake, then requests one after another,
//! each answered inside a work window on the stderr channel that ends with
//! `STDERR_LAST` and the reply, or `STDERR_ERROR` (worker-protocol.md §3–5).
//!
//! Errors after a request has been read are reported and the connection
//! carries on; errors while reading a request (an unknown operation, a
//! malformed or oversized field, a broken upload) are reported once and end
//! the connection, since the stream can no longer be trusted to be in step.

use super::DaemonState;
use super::trust::Peer;
use std::sync::Arc;
use local_store::LocalStore;
use worker_protocol::{
    self as wp, ClientOptions, MIN_CLIENT_VERSION, PROTOCOL_VERSION, ProtoError, StderrMessage, WORKER_MAGIC_1, WORKER_MAGIC_2,
    WireRead, WireWrite,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// The connection's read and write buffers. Requests and most replies are a
/// few hundred bytes, and NARs do not go through these buffers' copies (large
/// reads and writes bypass them), so a connection needs little: CppNix's
/// buffered source and sink are 32 KiB. 64 KiB each cost the daemon a MiB of
/// memory per 16 clients (the read buffer is zeroed, so all of it is touched).
const CONNECTION_BUFFER: usize = 16 * 1024;

/// How long a connection keeps its staging directory after an add while
/// the client sends nothing: long enough for a client adding paths one
/// after another (`nix-store --import`, `nix copy`), short enough that an
/// idle connection leaves nothing in the store.
const STAGING_LINGER: std::time::Duration = std::time::Duration::from_millis(200);

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
pub struct Connection<R, W> {
    pub(super) reader: BufReader<R>,
    pub(super) writer: BufWriter<W>,
    /// The negotiated minor.
    pub(super) minor: u64,
    pub(super) trust: Trust,
    pub(super) peer: Option<Peer>,
    /// This connection's own store handle (its temp roots die with it).
    pub(super) store: Arc<LocalStore>,
    pub(super) daemon: Arc<DaemonState>,
    pub(super) options: ClientOptions,
    /// Whether a work window is open (stderr messages may be sent).
    pub(super) in_work: bool,
    /// Next activity id (per connection; high bits keep them apart from
    /// the client's own `pid << 32` ids).
    pub(super) next_activity: u64,
    /// The socket under `writer`, when it is one, for replies written by
    /// blocking code straight to it (see `io::SocketWriter`).
    pub(super) socket_fd: Option<std::os::fd::RawFd>,
}

/// The options of a client that never sends SetOptions (ssh-ng, `nix
/// copy --to ssh-ng://`): the daemon's own settings, as CppNix's daemon
/// keeps its global settings until a client overrides them.
fn default_options(daemon: &DaemonState) -> ClientOptions {
    let s = daemon.builder.settings();
    ClientOptions {
        verbosity: 3,
        use_substitutes: s.substitute,
        max_build_jobs: u64::from(s.max_jobs),
        build_cores: u64::from(s.cores),
        max_silent_time: u64::try_from(s.max_silent_time).unwrap_or(0),
        keep_failed: s.keep_failed,
        keep_going: s.keep_going,
        try_fallback: s.fallback,
        ..Default::default()
    }
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// A connection working on `store` (a handle of its own on the store
    /// as it is on disk now: [`DaemonState::session`]).
    pub fn new(reader: R, writer: W, trust: Trust, peer: Option<Peer>, daemon: Arc<DaemonState>, store: LocalStore) -> Self {
        Connection {
            reader: BufReader::with_capacity(CONNECTION_BUFFER, reader),
            writer: BufWriter::with_capacity(CONNECTION_BUFFER, writer),
            minor: 0,
            trust,
            peer,
            store: Arc::new(store.reuse_staging()),
            options: default_options(&daemon),
            daemon,
            in_work: false,
            next_activity: (1u64 << 63) | (u64::from(std::process::id()) << 32),
            socket_fd: None,
        }
    }

    /// Declares the socket `writer` writes to; it must stay open as long as
    /// the connection.
    pub fn with_socket_fd(mut self, fd: std::os::fd::RawFd) -> Self {
        self.socket_fd = Some(fd);
        self
    }

    pub fn trusted(&self) -> bool {
        self.trust == Trust::Trusted
    }

    /// Runs the connection to its end.
    pub async fn serve(mut self) {
        match self.handshake().await {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!("handshake failed: {e}");
                return;
            }
        }
        let mut ops = 0u64;
        loop {
            if self.store.holds_staging() {
                // `fill_buf` consumes nothing, so giving up on it loses nothing.
                if tokio::time::timeout(STAGING_LINGER, self.reader.fill_buf()).await.is_err() {
                    self.store.release_staging();
                }
            }
            let op = match self.reader.read_u64_le_wire().await {
                Ok(op) => op,
                Err(e) if e.is_eof() => break,
                Err(e) => {
                    tracing::debug!("reading an operation: {e}");
                    break;
                }
            };
            ops += 1;
            let store_dir = self.store.store_dir().clone();
            let limits = self.daemon.limits;
            let request = match wp::read_request(op, &mut self.reader, &store_dir, self.minor, &limits).await {
                Ok(r) => r,
                Err(e) => {
                    if !e.is_eof() {
                        tracing::info!(op, "bad request: {e}");
                        let _ = self.send_error(&e.to_string()).await;
                    }
                    break;
                }
            };
            tracing::debug!(op, "performing daemon worker op");
            self.in_work = true;
            // A slot for the work (see `MAX_CONCURRENT_OPS`), waited for
            // without holding a thread; the reply is flushed without it.
            let daemon = self.daemon.clone();
            let slot = daemon.op_slots.acquire().await.ok();
            let outcome = super::ops::perform(&mut self, request).await;
            drop(slot);
            match outcome {
                Ok(()) => {}
                Err(OpError::BuildFailed(msg, status)) => {
                    if self.send_error_status(&msg, status).await.is_err() {
                        break;
                    }
                }
                Err(OpError::Failed(msg)) => {
                    if self.send_error(&msg).await.is_err() {
                        break;
                    }
                }
                Err(OpError::Fatal(msg)) => {
                    tracing::info!(op, "ending the connection: {msg}");
                    let _ = self.send_error(&msg).await;
                    break;
                }
            }
            if self.writer.flush().await.is_err() {
                break;
            }
        }
        match &self.peer {
            Some(p) => tracing::debug!(ops, user = %p.user, pid = ?p.pid, "connection closed"),
            None => tracing::debug!(ops, "connection closed"),
        }
    }

    async fn handshake(&mut self) -> Result<(), ProtoError> {
        let magic = self.reader.read_u64_le_wire().await?;
        if magic != WORKER_MAGIC_1 {
            return Err(ProtoError::BadMagic);
        }
        // Answer at once: clients up to 2.22 wait for this before sending their version.
        self.writer.write_u64_wire(WORKER_MAGIC_2).await?;
        self.writer.write_u64_wire(PROTOCOL_VERSION).await?;
        self.writer.flush().await?;
        let client_version = self.reader.read_u64_le_wire().await?;
        if client_version < MIN_CLIENT_VERSION || wp::major(client_version) != 0x100 {
            return Err(ProtoError::BadValue(format!("the Nix client version {client_version:#x} is too old")));
        }
        self.minor = wp::minor(client_version.min(PROTOCOL_VERSION));
        if self.minor >= 38 {
            // We support no optional features: the intersection is empty.
            let _features = self.reader.read_strings("features", &self.daemon.limits).await?;
            self.writer.write_u64_wire(0).await?;
            self.writer.flush().await?;
        }
        if self.minor >= 14 && self.reader.read_u64_le_wire().await? != 0 {
            self.reader.read_u64_le_wire().await?; // obsolete CPU affinity
        }
        if self.minor >= 11 {
            self.reader.read_u64_le_wire().await?; // obsolete reserveSpace
        }
        if self.minor >= 33 {
            self.writer.write_str(&self.daemon.reported_version).await?;
        }
        if self.minor >= 35 {
            self.writer.write_u64_wire(if self.trusted() { 1 } else { 2 }).await?;
        }
        self.writer.write_u64_wire(wp::stderr::STDERR_LAST).await?;
        self.writer.flush().await?;
        Ok(())
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

    async fn send_error(&mut self, message: &str) -> std::io::Result<()> {
        self.send_error_status(message, 1).await
    }

    async fn send_error_status(&mut self, message: &str, exit_status: u64) -> std::io::Result<()> {
        self.in_work = false;
        StderrMessage::Error { message: message.to_owned(), exit_status }.write(&mut self.writer, self.minor).await?;
        self.writer.flush().await
    }

    pub fn new_activity_id(&mut self) -> u64 {
        self.next_activity += 1;
        self.next_activity
    }
}
