//! `armitage daemon`: serves the Nix worker protocol on a Unix socket (or
//! on stdin/stdout, or on a socket passed by systemd), one async task per
//! connection, on a local store shared with CppNix.

mod connection;
mod io;
pub mod memory;
mod ops;
mod options;
mod realise;
mod missing;
pub mod trust;

pub use connection::{Connection, Trust};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use local_store::{LiveStore, LocalStore};
use store::nix_conf::Settings;
use store::path_info::PathInfo;
use store::signing::PublicKeys;
use worker_protocol::Limits;
use tokio::net::UnixListener;

/// Most operations in progress at once, over all connections. An operation
/// may hold a thread for as long as its client lets it (an upload that stops
/// half way, a NAR reply the client does not read, or a path lock such an
/// upload holds); the others wait for a slot without holding one. A stalled
/// client therefore costs one thread, as it costs CppNix one process.
pub const MAX_CONCURRENT_OPS: usize = 2048;

/// The runtime's cap on blocking threads: above [`MAX_CONCURRENT_OPS`], so
/// that operations stuck on their clients can never take the threads that
/// `block_in_place` needs to hand the workers' queues to. With tokio's
/// default of 512, 513 stalled uploads wedged the whole daemon.
pub const BLOCKING_THREADS: usize = MAX_CONCURRENT_OPS + 64;

/// What every connection shares.
pub struct DaemonState {
    /// The store; each connection gets a handle on it as it is on disk
    /// when the connection starts.
    pub store: Arc<LiveStore>,
    pub settings: Settings,
    pub public_keys: PublicKeys,
    pub limits: Limits,
    /// One permit per operation in progress ([`MAX_CONCURRENT_OPS`]).
    pub op_slots: tokio::sync::Semaphore,
    /// Builds and substitutions, shared by all connections.
    pub builder: Arc<crate::build::Builder>,
    /// The version the handshake reports (minor ≥ 33; `reported-version`
    /// in armitage.toml).
    pub reported_version: String,
}

impl DaemonState {
    pub fn new(store: LocalStore, settings: Settings, reported_version: String) -> Result<DaemonState, String> {
        let public_keys = PublicKeys::parse_all(settings.trusted_public_keys.iter().map(String::as_str))
            .map_err(|e| format!("trusted-public-keys: {e}"))?;
        let store = Arc::new(LiveStore::new(store));
        let builder = Arc::new(crate::build::Builder::new(store.clone(), &settings, public_keys.clone())?);
        Ok(DaemonState {
            builder,
            store,
            settings,
            public_keys,
            limits: Limits::DEFAULT,
            op_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_OPS),
            reported_version,
        })
    }

    /// Whether a path from an untrusted source may be added: with
    /// `require-sigs`, it must be content-addressed (its path follows from
    /// its content address) or carry a valid signature by a trusted key
    /// (CppNix `pathInfoIsUntrusted`).
    pub fn check_signatures(&self, info: &PathInfo) -> local_store::Result<()> {
        if !self.settings.require_sigs {
            return Ok(());
        }
        Ok(store::backend::trust::require_trusted(self.store.store_dir(), info, &self.public_keys)?)
    }

    /// A store handle for a new connection, on the store as it is on disk
    /// now (CppNix opens the store per connection). A few `stat`s, done
    /// in place; opening the store again, when its database was replaced,
    /// is rare. When it cannot be opened the connection is closed, as
    /// CppNix's connection process exits: a client is never served a
    /// deleted database.
    fn session(&self) -> Option<LocalStore> {
        match self.store.session() {
            Ok(store) => Some(store),
            Err(e) => {
                tracing::error!("opening the store for a new connection: {e}");
                None
            }
        }
    }

    /// Whether an untrusted client may use this substituter.
    pub fn is_trusted_substituter(&self, url: &str) -> bool {
        let with_slash = format!("{url}/");
        let known = |u: &str| u == url || u == with_slash;
        self.settings.trusted_substituters.iter().any(|u| known(u)) || self.settings.substituters.iter().any(|u| known(u))
    }
}

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
    let peer = trust::Peer::from_ids(cred.pid(), cred.uid(), cred.gid());
    let admission = trust::admit(
        &peer,
        &state.settings.trusted_users,
        &state.settings.allowed_users,
        &state.settings.build_users_group,
    );
    let trusted = match admission {
        trust::Admission::Refused => {
            tracing::info!(user = %peer.user, uid = peer.uid, "refusing connection: user is not allowed to connect to the Nix daemon");
            return;
        }
        trust::Admission::Trusted => Trust::Trusted,
        trust::Admission::Untrusted => Trust::NotTrusted,
    };
    tracing::info!(
        "accepted connection from pid {}, user {}{}",
        peer.pid.map(|p| p.to_string()).unwrap_or_else(|| "<unknown>".into()),
        peer.user,
        if trusted == Trust::Trusted { " (trusted)" } else { "" }
    );
    let Some(store) = state.session() else { return };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (r, w) = stream.into_split();
    Connection::new(r, w, trusted, Some(peer), state, store).with_socket_fd(fd).serve().await;
}

/// Serves one connection on stdin/stdout (`--stdio`, as ssh-ng runs it).
pub async fn serve_stdio(state: Arc<DaemonState>, trust: Trust) {
    let Some(store) = state.session() else { return };
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
        match setrlimit(Resource::Nofile, limit.clone()) {
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
