//! Nix binary caches, laid out as CppNix's binary-cache stores lay them out
//! (src/libstore/binary-cache-store.cc, http-binary-cache-store.cc,
//! local-binary-cache-store.cc): `nix-cache-info`, `<hash>.narinfo`,
//! `nar/<file hash>.nar[.xz|.zst|.bz2]`, optional `<hash>.ls` listings,
//! `log/<drv>` and `realisations/<id>.doi`, in a directory (`file://`),
//! behind HTTP(S) or in an S3 bucket (`s3://`, through the `s3` crate).
//!
//! Reading ([`cache::BinaryCache`], [`http::Client`], [`decompress`]) is
//! what armitage's substituter uses; [`BinaryCacheStore`] adds the writing
//! side and puts a cache behind the [`store::backend::Store`] seam, for the
//! cache facade and `nix copy --to`.
//!
//! Blocking API: callers in async code run it on blocking threads.

pub mod cache;
pub mod compress;
pub mod decompress;
pub mod file;
pub mod http;
mod store;
#[cfg(any(test, feature = "test-server"))]
pub mod test_server;

pub use cache::{BinaryCache, CacheInfo};
pub use store::{BinaryCacheStore, StoreOptions};

use ::store::narinfo::NarInfoError;

/// Why reading or writing a binary cache failed. Messages keep CppNix's
/// wording where it has one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
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
    #[error("while uploading to HTTP binary cache at '{url}': {why}")]
    Upload { url: String, why: String },
    #[error("the NAR of '{path}' in binary cache '{cache}' does not match its narinfo: {why}")]
    CorruptNar { path: String, cache: String, why: String },
    #[error("unknown compression method '{0}'")]
    BadCompression(String),
    #[error("reading secret key file '{path}': {why}")]
    SecretKey { path: String, why: String },
    #[error(transparent)]
    Realisation(#[from] ::store::realisation::RealisationError),
    #[error(transparent)]
    S3(#[from] s3::Error),
}

impl From<Error> for ::store::backend::Error {
    fn from(e: Error) -> Self {
        ::store::backend::Error::Backend(Box::new(e))
    }
}
