//! Errors of the local store. Messages name what failed, on what, and why;
//! where CppNix's wording is matched by clients or scripts it is kept.

use std::io;
use std::path::PathBuf;
use store::store_path::StorePathError;

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
    #[error(
        "Cannot delete path '{0}' since it is still alive. To find out why, use: nix-store --query --roots and nix-store --query --referrers"
    )]
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
    #[error(
        "experimental Nix feature 'ca-derivations' is disabled; add '--extra-experimental-features ca-derivations' to enable it"
    )]
    CaDerivationsDisabled,
    #[error(
        "Trying to register a realisation of '{id}', but we already have another one locally.\nLocal:  {local}\nRemote: {remote}"
    )]
    RealisationConflict { id: String, local: String, remote: String },
    #[error("Unrealised derivation '{0}'")]
    UnrealisedDerivation(String),
    #[error("invalid ownership on file '{}'", .0.display())]
    InvalidOwnership(PathBuf),
    /// Git-hashed content addresses (CppNix's `git-hashing` feature).
    #[error("{}git-hashed content addresses are not supported", .0.as_deref().map(|n| format!("cannot add '{n}': ")).unwrap_or_default())]
    GitHashingUnsupported(Option<String>),
    #[error("contents for '{}' exceed the limit of {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("'{}' is not a regular file; flat hashing needs one", .0.display())]
    NotRegularFile(PathBuf),
    #[error("error parsing derivation '{path}': error: {why}")]
    DerivationParse { path: String, why: String },
    #[error("invalid hash part")]
    InvalidHashPart,
    #[error("creating a garbage collector root ({}) in the Nix store is forbidden (are you running nix-build inside the store?)", .0.display())]
    RootInStore(PathBuf),
    #[error("cannot create symlink '{}'; already exists", .0.display())]
    RootExists(PathBuf),
    #[error("garbage collector sent an unexpected reply {reply:?} for root '{root}'")]
    CollectorReply { reply: char, root: String },
    /// A derivation that breaks CppNix's invariants, or whose hash modulo
    /// cannot be computed.
    #[error(transparent)]
    InvalidDerivation(#[from] store::derivation::DerivationError),
    /// A malformed `nix-store --export` stream (the message says how).
    #[error("{0}")]
    BadExport(String),
    /// A thread the store started to overlap work panicked.
    #[error("the {0} thread panicked")]
    ThreadPanicked(&'static str),
    /// A failure with no better variant (the message says what); callers
    /// outside the store use it for their own checks on store paths.
    /// Refused by the trust check (a false content address, no signature).
    #[error(transparent)]
    Untrusted(#[from] store::backend::TrustError),
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
