//! What every connection shares: the store, the daemon's settings and
//! trusted keys, the protocol's limits, the slots that bound operations in
//! progress, and the builder. Plain data, used by the connection loop and
//! by the operations; it uses no other module of the daemon.

use local_store::{LiveStore, LocalStore};
use std::sync::Arc;
use store::nix_conf::Settings;
use store::signing::PublicKeys;
use worker_protocol::Limits;

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
    pub fn new(
        store: LocalStore,
        settings: Settings,
        reported_version: String,
        witness: Option<Arc<crate::witness::WitnessService>>,
        s3: &crate::config::S3Config,
    ) -> Result<DaemonState, String> {
        let public_keys = PublicKeys::parse_all(settings.trusted_public_keys.iter().map(String::as_str))
            .map_err(|e| format!("trusted-public-keys: {e}"))?;
        let store = Arc::new(LiveStore::new(store));
        let archive = witness.as_ref().map(|w| w.archive().clone());
        let uploads = crate::upload::Uploader::start(s3, store.clone(), archive).map_err(|e| e.to_string())?;
        let builder = Arc::new(
            crate::build::Builder::new(store.clone(), &settings, public_keys.clone())?
                .with_witness(witness)
                .with_uploads(uploads),
        );
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

    /// A store handle for a new connection, on the store as it is on disk
    /// now (CppNix opens the store per connection). A few `stat`s, done
    /// in place; opening the store again, when its database was replaced,
    /// is rare. When it cannot be opened the connection is closed, as
    /// CppNix's connection process exits: a client is never served a
    /// deleted database.
    pub fn connection_store(&self) -> Option<LocalStore> {
        match self.store.session() {
            Ok(store) => Some(store),
            Err(e) => {
                tracing::error!("opening the store for a new connection: {e}");
                None
            }
        }
    }
}
