//! Why a substitution failed, in CppNix's words where it has them.

use std::sync::Arc;
use store::narinfo::NarInfoError;

/// Why a substitution failed. Messages keep CppNix's wording where it has
/// one (hash mismatches, missing signatures, a cache for another store dir).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubstituteError {
    #[error("don't know how to open Nix store '{url}': {why}")]
    UnsupportedStore { url: String, why: String },
    #[error("binary cache '{url}' is for Nix stores with prefix '{theirs}', not '{ours}'")]
    StoreDirMismatch { url: String, theirs: String, ours: String },
    #[error("'{0}' does not appear to be a binary cache")]
    NotACache(String),
    #[error("binary cache '{url}' has a bad nix-cache-info: {why}")]
    BadCacheInfo { url: String, why: String },
    #[error("unable to download '{url}': HTTP error {status} ('{reason}')")]
    HttpStatus { url: String, status: u16, reason: String },
    #[error("unable to download '{url}': {why}")]
    Download { url: String, why: String },
    #[error("{op} '{path}': {why}")]
    Io { op: &'static str, path: String, why: String },
    #[error(transparent)]
    NarInfo(#[from] NarInfoError),
    #[error("binary cache '{url}' names the file '{name}', which is not inside it")]
    BadFileName { url: String, name: String },
    #[error("binary cache '{cache}' describes '{path}' with a {algorithm} NarHash; only SHA-256 can be checked")]
    UncheckableNarHash { cache: String, path: String, algorithm: String },
    #[error("asked '{cache}' for '{wanted}' but got '{got}'")]
    WrongPath { cache: String, wanted: String, got: String },
    #[error("the substitute for '{path}' from '{cache}' is not signed by any of the keys in 'trusted-public-keys'")]
    NotSigned { path: String, cache: String },
    #[error("cannot add path '{0}' because it lacks a valid signature")]
    LacksSignature(String),
    #[error("substituter '{0}' is not one of the configured substituters")]
    UnknownCache(String),
    #[error("cannot substitute '{path}': its reference '{reference}' is not valid (substitute it first)")]
    MissingReference { path: String, reference: String },
    #[error("file '{name}' does not exist in binary cache '{cache}'")]
    Gone { name: String, cache: String },
    #[error("unknown compression method '{method}' for '{path}' in binary cache '{cache}'")]
    UnknownCompression { method: String, path: String, cache: String },
    #[error("decompressing '{url}' ({method}): {why}")]
    Decompress { url: String, method: String, why: String },
    #[error("hash mismatch in file downloaded from '{url}':\n  specified: {specified}\n  got:       {got}")]
    FileHashMismatch { url: String, specified: String, got: String },
    #[error("size mismatch in file downloaded from '{url}':\n  specified: {specified}\n  got:       {got}")]
    FileSizeMismatch { url: String, specified: u64, got: u64 },
    #[error("NAR for '{path}' fetched from '{cache}' is incomplete")]
    Incomplete { path: String, cache: String },
    #[error("NAR for '{path}' fetched from '{cache}' is larger than its NarSize {nar_size}")]
    TooLong { path: String, cache: String, nar_size: u64 },
    #[error("the narinfos of binary caches have a reference cycle through '{0}'")]
    Cycle(String),
    /// The store refused the path (CppNix's "hash mismatch importing path"
    /// for a NAR that does not match its NarHash, ...).
    #[error(transparent)]
    Store(Arc<local_store::Error>),
    /// Another failure of the cache's (none that reading gives today).
    #[error(transparent)]
    Cache(binary_cache::Error),
}

/// The cache's errors are the substituter's, variant for variant (same
/// words); ones only writing can give are carried as they are.
impl From<binary_cache::Error> for SubstituteError {
    fn from(e: binary_cache::Error) -> Self {
        use binary_cache::Error as E;
        match e {
            E::UnsupportedStore { url, why } => SubstituteError::UnsupportedStore { url, why },
            E::StoreDirMismatch { url, theirs, ours } => SubstituteError::StoreDirMismatch { url, theirs, ours },
            E::NotACache(url) => SubstituteError::NotACache(url),
            E::BadCacheInfo { url, why } => SubstituteError::BadCacheInfo { url, why },
            E::HttpStatus { url, status, reason } => SubstituteError::HttpStatus { url, status, reason },
            E::Download { url, why } => SubstituteError::Download { url, why },
            E::Io { op, path, why } => SubstituteError::Io { op, path, why },
            E::NarInfo(e) => SubstituteError::NarInfo(e),
            E::BadFileName { url, name } => SubstituteError::BadFileName { url, name },
            other => SubstituteError::Cache(other),
        }
    }
}

impl From<local_store::Error> for SubstituteError {
    fn from(e: local_store::Error) -> Self {
        SubstituteError::Store(Arc::new(e))
    }
}
