//! Decoding requests: the operation word and every field each operation
//! carries at the connection's minor (worker-protocol.md §7). Payloads that
//! are streamed (NARs, framed uploads, export streams) are left in the
//! stream for the server to consume as the operation proceeds.

use super::types::{
    BuildMode, ClientOptions, DerivedPath, parse_ca, read_basic_derivation, read_path, read_path_set,
    read_unkeyed_path_info,
};
use super::wire::{Limits, WireRead};
use super::{Op, ProtoError};
use std::collections::{BTreeMap, BTreeSet};
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::derivation::Derivation;
use store::hash::Algorithm;
use store::path_info::PathInfo;
use store::store_path::{StoreDir, StorePath};
use tokio::io::AsyncRead;

/// `CollectGarbage`'s fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcRequest {
    /// 0 return live, 1 return dead, 2 delete dead, 3 delete specific.
    pub action: u64,
    pub paths_to_delete: BTreeSet<StorePath>,
    pub ignore_liveness: bool,
    pub max_freed: u64,
}

/// A decoded request. Variants named after the operation; `…Legacy` are
/// the encodings of older minors.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    IsValidPath(StorePath),
    HasSubstitutes(StorePath),
    QueryPathHash(StorePath),
    QueryReferences(StorePath),
    QueryReferrers(StorePath),
    /// ≥ 1.25; a framed dump follows (NAR for `r:`/`git:`, raw bytes otherwise).
    AddToStore {
        name: String,
        method: ContentAddressMethod,
        algorithm: Algorithm,
        references: BTreeSet<StorePath>,
        repair: bool,
    },
    /// < 1.25; an unframed NAR follows.
    AddToStoreLegacy {
        name: String,
        method: FileIngestionMethod,
        algorithm: Algorithm,
    },
    AddTextToStore {
        name: String,
        text: Vec<u8>,
        references: BTreeSet<StorePath>,
    },
    BuildPaths {
        paths: Vec<(String, DerivedPath)>,
        mode: BuildMode,
    },
    BuildPathsWithResults {
        paths: Vec<(String, DerivedPath)>,
        mode: BuildMode,
    },
    EnsurePath(StorePath),
    AddTempRoot(StorePath),
    AddIndirectRoot(String),
    SyncWithGC,
    FindRoots,
    ExportPath(StorePath),
    QueryDeriver(StorePath),
    SetOptions(ClientOptions),
    CollectGarbage(GcRequest),
    QuerySubstitutablePathInfo(StorePath),
    QueryDerivationOutputs(StorePath),
    QueryAllValidPaths,
    QueryPathInfo(StorePath),
    /// The export stream is pulled with STDERR_READ.
    ImportPaths,
    QueryDerivationOutputNames(StorePath),
    QueryPathFromHashPart(String),
    QuerySubstitutablePathInfos(BTreeMap<StorePath, Option<ContentAddress>>),
    QueryValidPaths {
        paths: BTreeSet<StorePath>,
        substitute: bool,
    },
    QuerySubstitutablePaths(BTreeSet<StorePath>),
    QueryValidDerivers(StorePath),
    OptimiseStore,
    VerifyStore {
        check_contents: bool,
        repair: bool,
    },
    BuildDerivation {
        drv_path: StorePath,
        drv: Box<Derivation>,
        mode: BuildMode,
    },
    AddSignatures {
        path: StorePath,
        sigs: BTreeSet<String>,
    },
    NarFromPath(StorePath),
    /// The NAR follows: framed (≥ 1.23), pulled with STDERR_READ (1.21–1.22)
    /// or inline (< 1.21).
    AddToStoreNar {
        info: Box<PathInfo>,
        repair: bool,
        dont_check_sigs: bool,
    },
    QueryMissing(Vec<(String, DerivedPath)>),
    QueryDerivationOutputMap(StorePath),
    /// < 1.31: a DrvOutput id and an output path's base name.
    RegisterDrvOutputLegacy {
        id: String,
        out_path: String,
    },
    /// ≥ 1.31: Realisation JSON.
    RegisterDrvOutput(String),
    QueryRealisation(String),
    /// A framed stream of path infos and NARs follows.
    AddMultipleToStore {
        repair: bool,
        dont_check_sigs: bool,
    },
    /// A framed log follows; the derivation is given by base name.
    AddBuildLog {
        drv: StorePath,
    },
    AddPermRoot {
        path: StorePath,
        gc_root: String,
    },
}

async fn derived_paths<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dir: &StoreDir,
    minor: u64,
    limits: &Limits,
) -> Result<Vec<(String, DerivedPath)>, ProtoError> {
    let raw = r.read_strings("derived paths", limits).await?;
    raw.into_iter()
        .map(|s| {
            let d = DerivedPath::parse(&s, dir, minor)?;
            Ok((s, d))
        })
        .collect()
}

/// Parses `fixed:r:sha256`, `fixed:sha1`, `text:sha256`, `fixed:git:sha1`.
fn parse_method_algo(s: &str) -> Result<(ContentAddressMethod, Algorithm), ProtoError> {
    let bad = || ProtoError::BadValue(format!("content address method '{s}' is not valid"));
    let rest = if let Some(r) = s.strip_prefix("fixed:") {
        if r.starts_with("text:") {
            return Err(bad());
        }
        r
    } else if s.starts_with("text:") {
        s
    } else {
        return Err(bad());
    };
    ContentAddressMethod::parse_with_algorithm(rest).map_err(|e| ProtoError::BadValue(format!("'{s}': {e}")))
}

/// Reads the fields of operation `op_word` (already read) at `minor`.
pub async fn read_request<R: AsyncRead + Unpin + ?Sized>(
    op_word: u64,
    r: &mut R,
    dir: &StoreDir,
    minor: u64,
    limits: &Limits,
) -> Result<Request, ProtoError> {
    let op = Op::from_u64(op_word).ok_or(ProtoError::InvalidOp(op_word))?;
    let l = limits;
    Ok(match op {
        Op::IsValidPath => Request::IsValidPath(read_path(r, dir, l).await?),
        Op::HasSubstitutes => Request::HasSubstitutes(read_path(r, dir, l).await?),
        Op::QueryPathHash => Request::QueryPathHash(read_path(r, dir, l).await?),
        Op::QueryReferences => Request::QueryReferences(read_path(r, dir, l).await?),
        Op::QueryReferrers => Request::QueryReferrers(read_path(r, dir, l).await?),
        Op::AddToStore if minor >= 25 => {
            let name = r.read_string("name", l).await?;
            let cam = r.read_string("content address method", l).await?;
            let references = read_path_set(r, dir, l).await?;
            let repair = r.read_bool().await?;
            let (method, algorithm) = parse_method_algo(&cam)?;
            Request::AddToStore { name, method, algorithm, references, repair }
        }
        Op::AddToStore => {
            let name = r.read_string("name", l).await?;
            let fixed = r.read_bool().await?;
            let recursive = r.read_u64_le_wire().await?;
            let algo = r.read_string("hash algorithm", l).await?;
            if recursive > 1 {
                return Err(ProtoError::BadValue(format!(
                    "unsupported FileIngestionMethod with value of {recursive}; you may need to upgrade nix-daemon"
                )));
            }
            let (method, algorithm) = if !fixed {
                // Compatibility hack: not "fixed" means recursive SHA-256.
                (FileIngestionMethod::Recursive, Algorithm::Sha256)
            } else {
                let m = if recursive == 1 { FileIngestionMethod::Recursive } else { FileIngestionMethod::Flat };
                (m, algo.parse().map_err(|e: store::hash::HashError| ProtoError::BadValue(e.to_string()))?)
            };
            Request::AddToStoreLegacy { name, method, algorithm }
        }
        Op::AddTextToStore => {
            let name = r.read_string("name", l).await?;
            let text = r.read_bytes_limited("text", l.max_text).await?;
            let references = read_path_set(r, dir, l).await?;
            Request::AddTextToStore { name, text, references }
        }
        Op::BuildPaths => {
            let paths = derived_paths(r, dir, minor, l).await?;
            let mode = if minor >= 15 { BuildMode::from_u64(r.read_u64_le_wire().await?)? } else { BuildMode::Normal };
            Request::BuildPaths { paths, mode }
        }
        Op::BuildPathsWithResults => {
            let paths = derived_paths(r, dir, minor, l).await?;
            let mode = BuildMode::from_u64(r.read_u64_le_wire().await?)?;
            Request::BuildPathsWithResults { paths, mode }
        }
        Op::EnsurePath => Request::EnsurePath(read_path(r, dir, l).await?),
        Op::AddTempRoot => Request::AddTempRoot(read_path(r, dir, l).await?),
        Op::AddIndirectRoot => Request::AddIndirectRoot(r.read_string("root", l).await?),
        Op::SyncWithGC => Request::SyncWithGC,
        Op::FindRoots => Request::FindRoots,
        Op::ExportPath => {
            let p = read_path(r, dir, l).await?;
            r.read_u64_le_wire().await?; // obsolete "sign" flag
            Request::ExportPath(p)
        }
        Op::QueryDeriver => Request::QueryDeriver(read_path(r, dir, l).await?),
        Op::SetOptions => {
            let u32max = u64::from(u32::MAX);
            let mut o = ClientOptions {
                keep_failed: r.read_bounded("keepFailed", u32max).await? != 0,
                keep_going: r.read_bounded("keepGoing", u32max).await? != 0,
                try_fallback: r.read_bounded("tryFallback", u32max).await? != 0,
                verbosity: r.read_bounded("verbosity", u32max).await?,
                max_build_jobs: r.read_bounded("maxBuildJobs", u32max).await?,
                max_silent_time: r.read_bounded("maxSilentTime", u32max).await?,
                protocol_minor: minor,
                ..Default::default()
            };
            r.read_bounded("useBuildHook", u32max).await?;
            o.verbose_build = r.read_bounded("verboseBuild", u32max).await? == 0;
            r.read_bounded("logType", u32max).await?;
            r.read_bounded("printBuildTrace", u32max).await?;
            o.build_cores = r.read_bounded("buildCores", u32max).await?;
            o.use_substitutes = r.read_bounded("useSubstitutes", u32max).await? != 0;
            if minor >= 12 {
                o.overrides = r.read_string_map("overrides", l).await?;
            }
            Request::SetOptions(o)
        }
        Op::CollectGarbage => {
            let action = r.read_u64_le_wire().await?;
            if action > 3 {
                return Err(ProtoError::OutOfRange { what: "garbage collector action", value: action });
            }
            let paths_to_delete = read_path_set(r, dir, l).await?;
            let ignore_liveness = r.read_bool().await?;
            let max_freed = r.read_u64_le_wire().await?;
            for _ in 0..3 {
                r.read_u64_le_wire().await?; // obsolete
            }
            Request::CollectGarbage(GcRequest { action, paths_to_delete, ignore_liveness, max_freed })
        }
        Op::QuerySubstitutablePathInfo => Request::QuerySubstitutablePathInfo(read_path(r, dir, l).await?),
        Op::QueryDerivationOutputs => Request::QueryDerivationOutputs(read_path(r, dir, l).await?),
        Op::QueryAllValidPaths => Request::QueryAllValidPaths,
        Op::QueryFailedPaths | Op::ClearFailedPaths => return Err(ProtoError::RemovedOp(op_word)),
        Op::QueryPathInfo => Request::QueryPathInfo(read_path(r, dir, l).await?),
        Op::ImportPaths => Request::ImportPaths,
        Op::QueryDerivationOutputNames => Request::QueryDerivationOutputNames(read_path(r, dir, l).await?),
        Op::QueryPathFromHashPart => Request::QueryPathFromHashPart(r.read_string("hash part", l).await?),
        Op::QuerySubstitutablePathInfos => {
            let mut map = BTreeMap::new();
            if minor < 22 {
                for p in read_path_set(r, dir, l).await? {
                    map.insert(p, None);
                }
            } else {
                let n = r.read_count("path map", l).await?;
                for _ in 0..n {
                    let p = read_path(r, dir, l).await?;
                    let ca = parse_ca(&r.read_string("content address", l).await?)?;
                    map.insert(p, ca);
                }
            }
            Request::QuerySubstitutablePathInfos(map)
        }
        Op::QueryValidPaths => {
            let paths = read_path_set(r, dir, l).await?;
            let substitute = if minor >= 27 { r.read_bool().await? } else { false };
            Request::QueryValidPaths { paths, substitute }
        }
        Op::QuerySubstitutablePaths => Request::QuerySubstitutablePaths(read_path_set(r, dir, l).await?),
        Op::QueryValidDerivers => Request::QueryValidDerivers(read_path(r, dir, l).await?),
        Op::OptimiseStore => Request::OptimiseStore,
        Op::VerifyStore => {
            let check_contents = r.read_bool().await?;
            let repair = r.read_bool().await?;
            Request::VerifyStore { check_contents, repair }
        }
        Op::BuildDerivation => {
            let drv_path = read_path(r, dir, l).await?;
            let name =
                store::derivation::name_from_drv_path(&drv_path).map_err(|e| ProtoError::BadValue(e.to_string()))?;
            let drv = read_basic_derivation(r, dir, name, l).await?;
            let mode = BuildMode::from_u64(r.read_u64_le_wire().await?)?;
            Request::BuildDerivation { drv_path, drv: Box::new(drv), mode }
        }
        Op::AddSignatures => {
            let path = read_path(r, dir, l).await?;
            let sigs = r.read_string_set("signatures", l).await?;
            Request::AddSignatures { path, sigs }
        }
        Op::NarFromPath => Request::NarFromPath(read_path(r, dir, l).await?),
        Op::AddToStoreNar => {
            let path = read_path(r, dir, l).await?;
            // The minor-16 layout of path info, whatever the connection's minor.
            let info = read_unkeyed_path_info(r, dir, path, 16, l).await?;
            let repair = r.read_bool().await?;
            let dont_check_sigs = r.read_bool().await?;
            Request::AddToStoreNar { info: Box::new(info), repair, dont_check_sigs }
        }
        Op::QueryMissing => Request::QueryMissing(derived_paths(r, dir, minor, l).await?),
        Op::QueryDerivationOutputMap => Request::QueryDerivationOutputMap(read_path(r, dir, l).await?),
        Op::RegisterDrvOutput if minor < 31 => {
            let id = r.read_string("derivation output id", l).await?;
            let out_path = r.read_string("output path", l).await?;
            Request::RegisterDrvOutputLegacy { id, out_path }
        }
        Op::RegisterDrvOutput => Request::RegisterDrvOutput(r.read_string_limited("realisation", l.max_text).await?),
        Op::QueryRealisation => Request::QueryRealisation(r.read_string("derivation output id", l).await?),
        Op::AddMultipleToStore => {
            let repair = r.read_bool().await?;
            let dont_check_sigs = r.read_bool().await?;
            Request::AddMultipleToStore { repair, dont_check_sigs }
        }
        Op::AddBuildLog => {
            let base = r.read_string("derivation", l).await?;
            let drv = StorePath::from_base_name(&base).map_err(|e| ProtoError::BadValue(e.to_string()))?;
            Request::AddBuildLog { drv }
        }
        Op::AddPermRoot => {
            let path = read_path(r, dir, l).await?;
            let gc_root = r.read_string("GC root", l).await?;
            Request::AddPermRoot { path, gc_root }
        }
    })
}
