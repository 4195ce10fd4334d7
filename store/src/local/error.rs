//! Errors of the local store. Messages name what failed, on what, and why;
//! where CppNix's wording is matched by clients or scripts it is kept.

use crate::store_path::StorePathError;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} '{}': {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store database '{}': {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("current Nix store schema is version {found}, but I only support {supported}")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("current Nix store schema is version {0}, which is too old to use; upgrade it with an older Nix first")]
    SchemaTooOld(u32),
    #[error("'{}' is corrupt: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("the path '{}' is a symlink; this is not allowed for the Nix store and its parent directories", .0.display())]
    SymlinkedStore(PathBuf),
    #[error("path '{0}' is not valid")]
    InvalidPath(String),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error("hash mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    HashMismatch { path: String, specified: String, got: String },
    #[error("size mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    SizeMismatch { path: String, specified: u64, got: u64 },
    #[error("ca hash mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    CaMismatch { path: String, specified: String, got: String },
    #[error("cannot add path '{path}' to the store: its reference '{reference}' is not valid")]
    MissingReference { path: String, reference: String },
    #[error("cycle detected in the references of '{0}'")]
    ReferenceCycle(String),
    /// CppNix 2.23 and later's wording; 2.22 and earlier stop the hint
    /// after `--roots` (a daemon words it for its client).
    #[error("Cannot delete path '{0}' since it is still alive. To find out why, use: nix-store --query --roots and nix-store --query --referrers")]
    StillAlive(String),
    #[error("cannot delete path '{path}' since it is still alive because of referrer '{referrer}'")]
    PathInUse { path: String, referrer: String },
    #[error("file '{}' has an unsupported type (only regular files, directories and symlinks can be in the store)", .0.display())]
    UnsupportedFileType(PathBuf),
    #[error("path '{}' changed while it was being added to the store", .0.display())]
    ChangedWhileAdding(PathBuf),
    #[error("{0}")]
    Nar(String),
    #[error("derivation '{path}': {why}")]
    Derivation { path: String, why: String },
    #[error("the store database '{}' was replaced or removed since this connection opened it; connect again", .0.display())]
    DatabaseReplaced(PathBuf),
    /// Refused by the trust check (a false content address, no signature).
    #[error(transparent)]
    Untrusted(#[from] crate::backend::TrustError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches an operation and a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io { op, path: path.into(), source })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::Io { op, path: path.into(), source: e.into() })
    }
}

impl Error {
    /// Whether the failure is the disk being full (so callers can say so).
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.raw_os_error() == Some(libc_enospc()),
            Error::Db { source, .. } | Error::Sqlite(source) => matches!(
                source,
                rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull
            ),
            _ => false,
        }
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}
