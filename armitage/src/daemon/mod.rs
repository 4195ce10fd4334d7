//! `armitage daemon`: serves the Nix worker protocol on a Unix socket (or
//! on stdin/stdout, or on a socket passed by systemd), one async task per
//! connection, on a local store shared with CppNix.
//!
//! The modules form a DAG (no module uses one that uses it):
//! - `session`, `state`, `peer`, `io`, `memory`: leaves (one connection's
//!   state and stderr channel; what all connections share; who connects;
//!   async/sync bridges; heap trimming);
//! - `policy` (every trust decision): uses `session`, `peer`;
//! - `ops` (the operations by family, and their dispatch table): uses
//!   `session`, `state`, `policy`, `io`;
//! - `connection` (handshake and request loop): uses `session`, `state`,
//!   `peer`, `ops`;
//! - this module (listening, admitting): uses `connection`, `state`,
//!   `peer`, `policy`, `session`, `memory`.

mod connection;
mod io;
pub mod memory;
mod ops;
pub mod peer;
pub mod policy;
mod session;
mod state;

pub use connection::Connection;
pub use session::Trust;
pub use state::{BLOCKING_THREADS, DaemonState, MAX_CONCURRENT_OPS};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;

/// Binds the daemon socket (removing a stale one), world-connectable as
/// CppNix's: access is decided by `allowed-users`.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// A listening socket passed by systemd (`LISTEN_FDS`/`LISTEN_PID`), if any.
pub fn socket_from_systemd() -> std::io::Result<Option<UnixListener>> {
    let pid_ok = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let fds = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    if !pid_ok || fds == 0 {
        return Ok(None);
    }
    if fds != 1 {
        return Err(std::io::Error::other(format!("unexpected systemd environment variables: LISTEN_FDS={fds}")));
    }
    // SAFETY: systemd passes the listening socket as fd 3 (SD_LISTEN_FDS_START)
    // and nothing else in this process owns it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(3) };
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    std_listener.set_nonblocking(true)?;
    Ok(Some(UnixListener::from_std(std_listener)?))
}

/// Accepts connections until `shutdown` resolves; each gets a task.
pub async fn serve(listener: UnixListener, state: Arc<DaemonState>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let state = state.clone();
                tokio::spawn(async move { handle_unix(stream, state).await });
            }
        }
    }
}

async fn handle_unix(stream: tokio::net::UnixStream, state: Arc<DaemonState>) {
    let _open = memory::Open::new();
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot read the peer's credentials: {e}");
            return;
        }
    };
    let peer = peer::Peer::from_ids(cred.pid(), cred.uid(), cred.gid());
    let admission = policy::admit(
        &peer,
        &state.settings.trusted_users,
        &state.settings.allowed_users,
        &state.settings.build_users_group,
    );
    let trusted = match admission {
        policy::Admission::Refused => {
            tracing::info!(user = %peer.user, uid = peer.uid, "refusing connection: user is not allowed to connect to the Nix daemon");
            return;
        }
        policy::Admission::Trusted => Trust::Trusted,
        policy::Admission::Untrusted => Trust::NotTrusted,
    };
    tracing::info!(
        "accepted connection from pid {}, user {}{}",
        peer.pid.map(|p| p.to_string()).unwrap_or_else(|| "<unknown>".into()),
        peer.user,
        if trusted == Trust::Trusted { " (trusted)" } else { "" }
    );
    let Some(store) = state.connection_store() else { return };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (r, w) = stream.into_split();
    Connection::new(r, w, trusted, Some(peer), state, store).with_socket_fd(fd).serve().await;
}

/// Serves one connection on stdin/stdout (`--stdio`, as ssh-ng runs it).
pub async fn serve_stdio(state: Arc<DaemonState>, trust: Trust) {
    let Some(store) = state.connection_store() else { return };
    Connection::new(tokio::io::stdin(), tokio::io::stdout(), trust, None, state, store).serve().await;
}

/// Raises the soft limit on open files to the hard limit, as a daemon that
/// holds one descriptor per client (and a few per upload) must: the usual
/// soft limit of 1024 would refuse the 1000th client. Returns the limit now
/// in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        limit.current = Some(hard);
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => return hard,
            Err(e) => tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}"),
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// The default socket path for a state dir.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon-socket/socket")
}
