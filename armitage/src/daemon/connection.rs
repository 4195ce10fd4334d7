//! One client connection: the handshake, then requests one after another,
//! each read here and handed to its operation (`ops::perform`) inside a work
//! window on the stderr channel that ends with `STDERR_LAST` and the reply,
//! or `STDERR_ERROR` (worker-protocol.md §3–5).
//!
//! Errors after a request has been read are reported and the connection
//! carries on; errors while reading a request (an unknown operation, a
//! malformed or oversized field, a broken upload) are reported once and end
//! the connection, since the stream can no longer be trusted to be in step.

use super::ops;
use super::peer::Peer;
use super::session::{Input, OpError, Output, Session, Trust};
use super::state::DaemonState;
use local_store::LocalStore;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use worker_protocol::{
    self as wp, ClientOptions, MIN_CLIENT_VERSION, PROTOCOL_VERSION, ProtoError, WORKER_MAGIC_1, WORKER_MAGIC_2,
    WireRead, WireWrite,
};

/// How long a connection keeps its staging directory after an add while
/// the client sends nothing: long enough for a client adding paths one
/// after another (`nix-store --import`, `nix copy`), short enough that an
/// idle connection leaves nothing in the store.
const STAGING_LINGER: std::time::Duration = std::time::Duration::from_millis(200);

/// A connection: its session, who is at the other end, and what all
/// connections share.
pub struct Connection<R, W> {
    session: Session<R, W>,
    peer: Option<Peer>,
    daemon: Arc<DaemonState>,
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

impl<R: Input, W: Output> Connection<R, W> {
    /// A connection working on `store` (a handle of its own on the store
    /// as it is on disk now: [`DaemonState::connection_store`]).
    pub fn new(
        reader: R,
        writer: W,
        trust: Trust,
        peer: Option<Peer>,
        daemon: Arc<DaemonState>,
        store: LocalStore,
    ) -> Self {
        let session = Session::new(reader, writer, trust, store, default_options(&daemon));
        Connection { session, peer, daemon }
    }

    /// Declares the socket `writer` writes to; it must stay open as long as
    /// the connection.
    pub fn with_socket_fd(mut self, fd: std::os::fd::RawFd) -> Self {
        self.session.socket_fd = Some(fd);
        self
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
        let s = &mut self.session;
        let daemon = self.daemon.clone();
        let mut ops = 0u64;
        loop {
            if s.store.holds_staging() {
                // `fill_buf` consumes nothing, so giving up on it loses nothing.
                if tokio::time::timeout(STAGING_LINGER, s.reader.fill_buf()).await.is_err() {
                    s.store.release_staging();
                }
            }
            let op = match s.reader.read_u64_le_wire().await {
                Ok(op) => op,
                Err(e) if e.is_eof() => break,
                Err(e) => {
                    tracing::debug!("reading an operation: {e}");
                    break;
                }
            };
            ops += 1;
            let store_dir = s.store.store_dir().clone();
            let request = match wp::read_request(op, &mut s.reader, &store_dir, s.minor, &daemon.limits).await {
                Ok(r) => r,
                Err(e) => {
                    if !e.is_eof() {
                        tracing::info!(op, "bad request: {e}");
                        let _ = s.send_error(&e.to_string()).await;
                    }
                    break;
                }
            };
            tracing::debug!(op, "performing daemon worker op");
            s.begin_work();
            // A slot for the work (see `MAX_CONCURRENT_OPS`), waited for
            // without holding a thread; the reply is flushed without it.
            let slot = daemon.op_slots.acquire().await.ok();
            let outcome = ops::perform(s, &daemon, request).await;
            drop(slot);
            match outcome {
                Ok(()) => {}
                Err(OpError::BuildFailed(msg, status)) => {
                    if s.send_error_status(&msg, status).await.is_err() {
                        break;
                    }
                }
                Err(OpError::Failed(msg)) => {
                    if s.send_error(&msg).await.is_err() {
                        break;
                    }
                }
                Err(OpError::Fatal(msg)) => {
                    tracing::info!(op, "ending the connection: {msg}");
                    let _ = s.send_error(&msg).await;
                    break;
                }
            }
            if s.writer.flush().await.is_err() {
                break;
            }
        }
        match &self.peer {
            Some(p) => tracing::debug!(ops, user = %p.user, pid = ?p.pid, "connection closed"),
            None => tracing::debug!(ops, "connection closed"),
        }
    }

    async fn handshake(&mut self) -> Result<(), ProtoError> {
        let s = &mut self.session;
        let magic = s.reader.read_u64_le_wire().await?;
        if magic != WORKER_MAGIC_1 {
            return Err(ProtoError::BadMagic);
        }
        // Answer at once: clients up to 2.22 wait for this before sending their version.
        s.writer.write_u64_wire(WORKER_MAGIC_2).await?;
        s.writer.write_u64_wire(PROTOCOL_VERSION).await?;
        s.writer.flush().await?;
        let client_version = s.reader.read_u64_le_wire().await?;
        if client_version < MIN_CLIENT_VERSION || wp::major(client_version) != 0x100 {
            return Err(ProtoError::BadValue(format!("the Nix client version {client_version:#x} is too old")));
        }
        s.minor = wp::minor(client_version.min(PROTOCOL_VERSION));
        if s.minor >= 38 {
            // We support no optional features: the intersection is empty.
            let _features = s.reader.read_strings("features", &self.daemon.limits).await?;
            s.writer.write_u64_wire(0).await?;
            s.writer.flush().await?;
        }
        if s.minor >= 14 && s.reader.read_u64_le_wire().await? != 0 {
            s.reader.read_u64_le_wire().await?; // obsolete CPU affinity
        }
        if s.minor >= 11 {
            s.reader.read_u64_le_wire().await?; // obsolete reserveSpace
        }
        if s.minor >= 33 {
            s.writer.write_str(&self.daemon.reported_version).await?;
        }
        if s.minor >= 35 {
            s.writer.write_u64_wire(if s.trusted() { 1 } else { 2 }).await?;
        }
        s.writer.write_u64_wire(wp::stderr::STDERR_LAST).await?;
        s.writer.flush().await?;
        Ok(())
    }
}
