//! The Nix worker protocol spoken over the daemon socket (CppNix
//! src/libstore/worker-protocol*.{hh,cc}, daemon.cc; the reference is
//! the team notes worker-protocol.md): primitive encodings, framed
//! streams, the request decoder for every operation at every protocol minor
//! from 1.10, and the encoders for replies and the stderr (logger) channel.
//!
//! Pure: async readers and writers over any byte stream, no sockets and no
//! store; `sync` is the same encoding over blocking `std::io` streams. Every length a peer sends is checked against a bound before
//! anything is allocated for it.

mod framed;
mod request;
pub mod stderr;
pub mod sync;
mod types;
mod wire;

pub use framed::{FramedReader, FramedWriter};
pub use request::{GcRequest, Request, read_request};
pub use stderr::{ActivityType, Field, ResultType, StderrMessage, Verbosity};
pub use types::{
    BuildMode, BuildResult, BuildStatus, ClientOptions, DerivedPath, Missing, SubstitutablePathInfo,
    read_basic_derivation, read_path_info, read_unkeyed_path_info, write_basic_derivation, write_path_info,
    write_unkeyed_path_info,
};
pub use wire::{Limits, WireRead, WireWrite};

/// What the client sends first ("cxin").
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// What the daemon answers ("oixd").
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;
/// Export records in `nix-store --export` streams ("NIXE").
pub const EXPORT_MAGIC: u64 = 0x4558_494e;

/// Protocol 1.38, the newest CppNix speaks (2.24 and later).
pub const PROTOCOL_VERSION: u64 = 0x100 | 38;
/// The oldest client minor served (CppNix ≤ 2.31 accept 1.10).
pub const MIN_CLIENT_VERSION: u64 = 0x10a;

/// The minor of a version word.
pub const fn minor(version: u64) -> u64 {
    version & 0xff
}

/// The major of a version word.
pub const fn major(version: u64) -> u64 {
    version & 0xff00
}

/// Operation numbers (CppNix `WorkerProto::Op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Op {
    IsValidPath = 1,
    HasSubstitutes = 3,
    QueryPathHash = 4,
    QueryReferences = 5,
    QueryReferrers = 6,
    AddToStore = 7,
    AddTextToStore = 8,
    BuildPaths = 9,
    EnsurePath = 10,
    AddTempRoot = 11,
    AddIndirectRoot = 12,
    SyncWithGC = 13,
    FindRoots = 14,
    ExportPath = 16,
    QueryDeriver = 18,
    SetOptions = 19,
    CollectGarbage = 20,
    QuerySubstitutablePathInfo = 21,
    QueryDerivationOutputs = 22,
    QueryAllValidPaths = 23,
    QueryFailedPaths = 24,
    ClearFailedPaths = 25,
    QueryPathInfo = 26,
    ImportPaths = 27,
    QueryDerivationOutputNames = 28,
    QueryPathFromHashPart = 29,
    QuerySubstitutablePathInfos = 30,
    QueryValidPaths = 31,
    QuerySubstitutablePaths = 32,
    QueryValidDerivers = 33,
    OptimiseStore = 34,
    VerifyStore = 35,
    BuildDerivation = 36,
    AddSignatures = 37,
    NarFromPath = 38,
    AddToStoreNar = 39,
    QueryMissing = 40,
    QueryDerivationOutputMap = 41,
    RegisterDrvOutput = 42,
    QueryRealisation = 43,
    AddMultipleToStore = 44,
    AddBuildLog = 45,
    BuildPathsWithResults = 46,
    AddPermRoot = 47,
}

impl Op {
    pub const ALL: [Op; 44] = [
        Op::IsValidPath,
        Op::HasSubstitutes,
        Op::QueryPathHash,
        Op::QueryReferences,
        Op::QueryReferrers,
        Op::AddToStore,
        Op::AddTextToStore,
        Op::BuildPaths,
        Op::EnsurePath,
        Op::AddTempRoot,
        Op::AddIndirectRoot,
        Op::SyncWithGC,
        Op::FindRoots,
        Op::ExportPath,
        Op::QueryDeriver,
        Op::SetOptions,
        Op::CollectGarbage,
        Op::QuerySubstitutablePathInfo,
        Op::QueryDerivationOutputs,
        Op::QueryAllValidPaths,
        Op::QueryFailedPaths,
        Op::ClearFailedPaths,
        Op::QueryPathInfo,
        Op::ImportPaths,
        Op::QueryDerivationOutputNames,
        Op::QueryPathFromHashPart,
        Op::QuerySubstitutablePathInfos,
        Op::QueryValidPaths,
        Op::QuerySubstitutablePaths,
        Op::QueryValidDerivers,
        Op::OptimiseStore,
        Op::VerifyStore,
        Op::BuildDerivation,
        Op::AddSignatures,
        Op::NarFromPath,
        Op::AddToStoreNar,
        Op::QueryMissing,
        Op::QueryDerivationOutputMap,
        Op::RegisterDrvOutput,
        Op::QueryRealisation,
        Op::AddMultipleToStore,
        Op::AddBuildLog,
        Op::BuildPathsWithResults,
        Op::AddPermRoot,
    ];

    pub fn from_u64(n: u64) -> Option<Op> {
        Op::ALL.into_iter().find(|op| *op as u64 == n)
    }
}

/// Why a peer's bytes could not be decoded. Messages follow CppNix where
/// clients show them.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("unexpected end-of-file")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{what} of {len} bytes is longer than the limit of {limit} bytes")]
    TooLong { what: &'static str, len: u64, limit: u64 },
    #[error("{what} has {count} elements, more than the limit of {limit}")]
    TooMany { what: &'static str, count: u64, limit: u64 },
    #[error("non-zero padding")]
    BadPadding,
    #[error("{what} value {value} is out of range")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("invalid operation {0}")]
    InvalidOp(u64),
    #[error("Removed operation {0}")]
    RemovedOp(u64),
    #[error("{0}")]
    BadValue(String),
    #[error("protocol mismatch")]
    BadMagic,
}

impl ProtoError {
    /// Whether the peer simply went away.
    pub fn is_eof(&self) -> bool {
        match self {
            ProtoError::Eof => true,
            ProtoError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
