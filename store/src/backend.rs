//! The one seam every store backend sits behind: [`Store`], the operations a
//! daemon, a substituter or a cache facade calls on a store, whatever keeps
//! the paths (the local store, a `file://` or `http(s)://` binary cache, S3).
//! CppNix draws the same line with its abstract `Store` class
//! (src/libstore/store-api.hh); the operations kept here are the ones every
//! backend can answer, plus a few (referrers, all valid paths, derivers)
//! that only some can, which answer [`Error::Unsupported`] elsewhere, as
//! CppNix's `unsupported(op)` does.
//!
//! Synchronous on purpose (`std::io`): callers in async code run it on
//! blocking threads. Nothing here depends on SQLite, tokio or the OS beyond
//! `std`, so a backend in any crate can implement it.
//!
//! The contract every backend keeps (checked by the `store-conformance`
//! suite):
//! - [`Store::add_to_store`] consumes exactly the NAR's bytes, registers the
//!   path only if the NAR matches the info's NAR hash and size, every
//!   reference other than the path itself is already valid, and a claimed
//!   content address gives the path ([`trust::require_true_ca`]). Whether
//!   the path is signed or trusted is the caller's business
//!   ([`trust::verdict`]).
//! - A path is valid once its info can be queried, and its NAR can be read
//!   byte for byte as it was added.
//! - Adding a valid path again is a no-op that still consumes the NAR, also
//!   from several threads at once.

pub mod trust;

use crate::path_info::PathInfo;
use crate::realisation::{DrvOutput, Realisation};
use crate::store_path::{StoreDir, StorePath};
use std::collections::BTreeSet;
use std::io::{BufRead, Read, Write};

pub use trust::{TrustError, Verdict};

/// Why a store operation failed. Messages keep CppNix's wording where
/// clients match on it (hash mismatches, invalid paths).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot do `op` at all (a binary cache has no referrers).
    #[error("operation '{op}' is not supported by store '{backend}'")]
    Unsupported { op: &'static str, backend: String },
    #[error("path '{0}' is not valid")]
    InvalidPath(String),
    #[error("hash mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    HashMismatch { path: String, specified: String, got: String },
    #[error("size mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    SizeMismatch { path: String, specified: u64, got: u64 },
    #[error("cannot add path '{path}' to the store: its reference '{reference}' is not valid")]
    MissingReference { path: String, reference: String },
    /// A claimed content address that does not give the path, or a
    /// missing signature.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
    /// The NAR is malformed or truncated (the reader's reason, with offset).
    #[error("{0}")]
    Nar(String),
    /// Anything else the backend reports, in its own words.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store, as the daemon, the substituter and the cache facade see it.
/// Object-safe: callers hold a `dyn Store`.
pub trait Store: Send + Sync {
    /// How the store names itself in errors (CppNix's `getUri`): `local`,
    /// or the cache's URL.
    fn uri(&self) -> String;

    /// The store directory its paths live in.
    fn store_dir(&self) -> &StoreDir;

    /// What the store knows about `path`; `None` if it is not valid.
    fn query_path_info(&self, path: &StorePath) -> Result<Option<PathInfo>>;

    fn is_valid(&self, path: &StorePath) -> Result<bool> {
        Ok(self.query_path_info(path)?.is_some())
    }

    /// The valid path with this hash part, if any.
    fn query_path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>>;

    /// Writes the NAR of a valid path to `sink` (CppNix's `narFromPath`).
    fn nar_from_path(&self, path: &StorePath, sink: &mut dyn Write) -> Result<()>;

    /// Adds a path from its NAR, checked as the module docs say.
    fn add_to_store(&self, info: &PathInfo, nar: &mut dyn BufRead) -> Result<()>;

    /// Adds signatures to a valid path's info.
    fn add_signatures(&self, path: &StorePath, sigs: &BTreeSet<String>) -> Result<()>;

    /// Where a content-addressed derivation output was realised.
    fn query_realisation(&self, id: &DrvOutput) -> Result<Option<Realisation>>;

    /// Records a realisation; its output path must be valid.
    fn register_realisation(&self, realisation: &Realisation) -> Result<()>;

    /// Stores the build log of `drv` (an existing one is kept).
    fn add_build_log(&self, drv: &StorePath, log: &mut dyn Read) -> Result<()>;

    /// Protects `path` from garbage collection while the handle lives.
    /// Stores without a collector have nothing to protect.
    fn add_temp_root(&self, _path: &StorePath) -> Result<()> {
        Ok(())
    }

    /// Valid paths that refer to `path`.
    fn query_referrers(&self, _path: &StorePath) -> Result<BTreeSet<StorePath>> {
        Err(self.unsupported("queryReferrers"))
    }

    /// Valid derivations known to produce `path`.
    fn query_valid_derivers(&self, _path: &StorePath) -> Result<BTreeSet<StorePath>> {
        Err(self.unsupported("queryValidDerivers"))
    }

    /// Every valid path.
    fn query_all_valid_paths(&self) -> Result<BTreeSet<StorePath>> {
        Err(self.unsupported("queryAllValidPaths"))
    }

    /// Like [`Self::query_path_info`], but a missing path is an error
    /// (CppNix's "path '…' is not valid").
    fn path_info(&self, path: &StorePath) -> Result<PathInfo> {
        self.query_path_info(path)?.ok_or_else(|| Error::InvalidPath(self.store_dir().display(path)))
    }

    /// The error for an operation this backend cannot do.
    fn unsupported(&self, op: &'static str) -> Error {
        Error::Unsupported { op, backend: self.uri() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that implements only what it must: the defaults answer
    /// `Unsupported` naming the operation and the store.
    struct Empty(StoreDir);

    impl Store for Empty {
        fn uri(&self) -> String {
            "empty://".into()
        }
        fn store_dir(&self) -> &StoreDir {
            &self.0
        }
        fn query_path_info(&self, _: &StorePath) -> Result<Option<PathInfo>> {
            Ok(None)
        }
        fn query_path_from_hash_part(&self, _: &str) -> Result<Option<StorePath>> {
            Ok(None)
        }
        fn nar_from_path(&self, p: &StorePath, _: &mut dyn Write) -> Result<()> {
            Err(Error::InvalidPath(self.0.display(p)))
        }
        fn add_to_store(&self, _: &PathInfo, _: &mut dyn BufRead) -> Result<()> {
            Err(self.unsupported("addToStore"))
        }
        fn add_signatures(&self, _: &StorePath, _: &BTreeSet<String>) -> Result<()> {
            Err(self.unsupported("addSignatures"))
        }
        fn query_realisation(&self, _: &DrvOutput) -> Result<Option<Realisation>> {
            Ok(None)
        }
        fn register_realisation(&self, _: &Realisation) -> Result<()> {
            Err(self.unsupported("registerDrvOutput"))
        }
        fn add_build_log(&self, _: &StorePath, _: &mut dyn Read) -> Result<()> {
            Err(self.unsupported("addBuildLog"))
        }
    }

    #[test]
    fn defaults_are_unsupported_or_derived() {
        let dir = StoreDir::new("/nix/store").unwrap();
        let store: Box<dyn Store> = Box::new(Empty(dir.clone()));
        let path = dir.parse_path("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-foo").unwrap();
        match store.query_referrers(&path) {
            Err(Error::Unsupported { op, backend }) => {
                assert_eq!((op, backend.as_str()), ("queryReferrers", "empty://"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.query_all_valid_paths().unwrap_err().to_string(),
            "operation 'queryAllValidPaths' is not supported by store 'empty://'"
        );
        assert!(!store.is_valid(&path).unwrap());
        assert_eq!(
            store.path_info(&path).unwrap_err().to_string(),
            "path '/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-foo' is not valid"
        );
        store.add_temp_root(&path).unwrap();
    }
}
