//! Composite values of the protocol (worker-protocol.md §6): path infos at
//! every minor, derived paths, build modes and results, `QueryMissing`
//! answers, the options of `SetOptions`, and basic derivations.

use super::ProtoError;
use super::wire::{Limits, WireRead, WireWrite};
use std::collections::{BTreeMap, BTreeSet};
use store::content_address::ContentAddress;
use store::derivation::{Derivation, Output};
use store::hash::{Algorithm, Hash};
use store::path_info::PathInfo;
use store::store_path::{StoreDir, StorePath};
use tokio::io::{AsyncRead, AsyncWrite};

/// A store path the peer sent, refused with CppNix's `parseStorePath`
/// wording where clients show it (the store dir is not repeated).
fn parse_path(dir: &StoreDir, s: &str) -> Result<StorePath, ProtoError> {
    dir.parse_path(s).map_err(|e| match e {
        store::store_path::StorePathError::NotInStore { path, .. } => {
            ProtoError::BadValue(format!("path '{path}' is not in the Nix store"))
        }
        e => ProtoError::BadValue(e.to_string()),
    })
}

pub(super) async fn read_path<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dir: &StoreDir,
    limits: &Limits,
) -> Result<StorePath, ProtoError> {
    let s = r.read_string("store path", limits).await?;
    parse_path(dir, &s)
}

pub(super) async fn read_opt_path<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dir: &StoreDir,
    limits: &Limits,
) -> Result<Option<StorePath>, ProtoError> {
    let s = r.read_string("store path", limits).await?;
    if s.is_empty() { Ok(None) } else { parse_path(dir, &s).map(Some) }
}

pub(super) async fn read_path_set<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dir: &StoreDir,
    limits: &Limits,
) -> Result<BTreeSet<StorePath>, ProtoError> {
    let n = r.read_count("store path set", limits).await?;
    let mut set = BTreeSet::new();
    for _ in 0..n {
        set.insert(read_path(r, dir, limits).await?);
    }
    Ok(set)
}

pub(super) fn parse_ca(s: &str) -> Result<Option<ContentAddress>, ProtoError> {
    if s.is_empty() {
        Ok(None)
    } else {
        ContentAddress::parse(s).map(Some).map_err(|e| ProtoError::BadValue(e.to_string()))
    }
}

/// Writes full paths of a set, in order.
pub async fn write_path_set<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    dir: &StoreDir,
    paths: &BTreeSet<StorePath>,
) -> std::io::Result<()> {
    w.write_u64_wire(paths.len() as u64).await?;
    for p in paths {
        w.write_str(&dir.display(p)).await?;
    }
    Ok(())
}

/// `UnkeyedValidPathInfo` at `minor` (§6.1).
pub async fn write_unkeyed_path_info<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    dir: &StoreDir,
    info: &PathInfo,
    minor: u64,
) -> std::io::Result<()> {
    w.write_str(&info.deriver.as_ref().map(|d| dir.display(d)).unwrap_or_default()).await?;
    w.write_str(&info.nar_hash.to_base16()).await?;
    write_path_set(w, dir, &info.references).await?;
    w.write_u64_wire(info.registration_time.max(0) as u64).await?;
    w.write_u64_wire(info.nar_size).await?;
    if minor >= 16 {
        w.write_bool(info.ultimate).await?;
        w.write_strings(info.sigs.iter()).await?;
        w.write_str(&info.ca.map(|c| c.to_string()).unwrap_or_default()).await?;
    }
    Ok(())
}

/// `ValidPathInfo`: the path, then the unkeyed info.
pub async fn write_path_info<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    dir: &StoreDir,
    info: &PathInfo,
    minor: u64,
) -> std::io::Result<()> {
    w.write_str(&dir.display(&info.path)).await?;
    write_unkeyed_path_info(w, dir, info, minor).await
}

/// Reads `UnkeyedValidPathInfo` for `path` at `minor`. The NAR hash may be
/// in any form CppNix accepts.
pub async fn read_unkeyed_path_info<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dir: &StoreDir,
    path: StorePath,
    minor: u64,
    limits: &Limits,
) -> Result<PathInfo, ProtoError> {
    let deriver = read_opt_path(r, dir, limits).await?;
    let hash = r.read_string("NAR hash", limits).await?;
    let nar_hash = Hash::parse_any(&hash, Some(Algorithm::Sha256)).map_err(|e| ProtoError::BadValue(e.to_string()))?;
    let references = read_path_set(r, dir, limits).await?;
    let registration_time = r.read_u64_le_wire().await?;
    let nar_size = r.read_u64_le_wire().await?;
    let mut info = PathInfo::new(path, nar_hash, nar_size);
    info.deriver = deriver;
    info.references = references;
    info.registration_time = i64::try_from(registration_time).unwrap_or(i64::MAX);
    if minor >= 16 {
        info.ultimate = r.read_bool().await?;
        info.sigs = r.read_string_set("signatures", limits).await?;
        info.ca = parse_ca(&r.read_string("content address", limits).await?)?;
    }
    Ok(info)
}

/// Reads `ValidPathInfo` (path first).
pub async fn read_path_info<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dir: &StoreDir,
    minor: u64,
    limits: &Limits,
) -> Result<PathInfo, ProtoError> {
    let path = read_path(r, dir, limits).await?;
    read_unkeyed_path_info(r, dir, path, minor, limits).await
}

/// What to build or make valid (§6.3), with the string the client sent
/// (replies echo it so that clients can match them to their requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerivedPath {
    /// A store path to make valid.
    Opaque(StorePath),
    /// Outputs of a derivation: `None` for all of them.
    Built { drv: StorePath, outputs: Option<BTreeSet<String>> },
}

impl DerivedPath {
    /// Parses the wire syntax of `minor`.
    pub fn parse(s: &str, dir: &StoreDir, minor: u64) -> Result<DerivedPath, ProtoError> {
        let bad = |e: &dyn std::fmt::Display| ProtoError::BadValue(e.to_string());
        match s.split_once('!') {
            Some((drv, outputs)) => {
                let drv = parse_path(dir, drv)?;
                if outputs.contains('!') {
                    return Err(ProtoError::BadValue(format!("dynamic derivation outputs are not supported: '{s}'")));
                }
                let outputs = if outputs == "*" && minor >= 30 {
                    None
                } else {
                    let names: BTreeSet<String> =
                        outputs.split(',').filter(|o| !o.is_empty()).map(str::to_owned).collect();
                    if names.is_empty() {
                        return Err(ProtoError::BadValue(format!("invalid derived path '{s}': no outputs")));
                    }
                    for n in &names {
                        store::store_path::check_name(n).map_err(|e| bad(&e))?;
                    }
                    Some(names)
                };
                Ok(DerivedPath::Built { drv, outputs })
            }
            None => {
                let p = parse_path(dir, s)?;
                // Before 1.30 a bare derivation means all of its outputs.
                if minor < 30 && p.is_derivation() {
                    Ok(DerivedPath::Built { drv: p, outputs: None })
                } else {
                    Ok(DerivedPath::Opaque(p))
                }
            }
        }
    }

    /// The wire syntax of `minor`.
    pub fn render(&self, dir: &StoreDir, minor: u64) -> String {
        match self {
            DerivedPath::Opaque(p) => dir.display(p),
            DerivedPath::Built { drv, outputs: None } if minor >= 30 => format!("{}!*", dir.display(drv)),
            DerivedPath::Built { drv, outputs: None } => dir.display(drv),
            DerivedPath::Built { drv, outputs: Some(o) } => {
                format!("{}!{}", dir.display(drv), o.iter().cloned().collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// `BuildMode` (§6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    Normal,
    Repair,
    Check,
}

impl BuildMode {
    pub fn from_u64(v: u64) -> Result<BuildMode, ProtoError> {
        match v {
            0 => Ok(BuildMode::Normal),
            1 => Ok(BuildMode::Repair),
            2 => Ok(BuildMode::Check),
            // CppNix's wording (`Serialise<BuildMode>::read`).
            _ => Err(ProtoError::BadValue("Invalid build mode".into())),
        }
    }
}

/// `BuildResult::Status` (§6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum BuildStatus {
    Built = 0,
    Substituted = 1,
    AlreadyValid = 2,
    PermanentFailure = 3,
    InputRejected = 4,
    OutputRejected = 5,
    TransientFailure = 6,
    CachedFailure = 7,
    TimedOut = 8,
    MiscFailure = 9,
    DependencyFailed = 10,
    LogLimitExceeded = 11,
    NotDeterministic = 12,
    ResolvesToAlreadyValid = 13,
    NoSubstituters = 14,
}

/// A build result (§6.5). `built_outputs` maps DrvOutput ids
/// (`sha256:<hex>!<output>`) to Realisation JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub status: BuildStatus,
    pub error_msg: String,
    pub times_built: u64,
    pub is_non_deterministic: bool,
    pub start_time: u64,
    pub stop_time: u64,
    pub cpu_user_us: Option<i64>,
    pub cpu_system_us: Option<i64>,
    pub built_outputs: BTreeMap<String, String>,
}

impl BuildResult {
    pub fn new(status: BuildStatus) -> BuildResult {
        BuildResult {
            status,
            error_msg: String::new(),
            times_built: 0,
            is_non_deterministic: false,
            start_time: 0,
            stop_time: 0,
            cpu_user_us: None,
            cpu_system_us: None,
            built_outputs: BTreeMap::new(),
        }
    }

    pub async fn write<W: AsyncWrite + Unpin + ?Sized>(&self, w: &mut W, minor: u64) -> std::io::Result<()> {
        w.write_u64_wire(self.status as u64).await?;
        w.write_str(&self.error_msg).await?;
        if minor >= 29 {
            w.write_u64_wire(self.times_built).await?;
            w.write_bool(self.is_non_deterministic).await?;
            w.write_u64_wire(self.start_time).await?;
            w.write_u64_wire(self.stop_time).await?;
        }
        if minor >= 37 {
            for t in [self.cpu_user_us, self.cpu_system_us] {
                match t {
                    None => w.write_u64_wire(0).await?,
                    Some(us) => {
                        w.write_u64_wire(1).await?;
                        w.write_u64_wire(us as u64).await?;
                    }
                }
            }
        }
        if minor >= 28 {
            w.write_u64_wire(self.built_outputs.len() as u64).await?;
            for (k, v) in &self.built_outputs {
                w.write_str(k).await?;
                w.write_str(v).await?;
            }
        }
        Ok(())
    }
}

/// The reply of `QueryMissing` (§6.8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    pub will_build: BTreeSet<StorePath>,
    pub will_substitute: BTreeSet<StorePath>,
    pub unknown: BTreeSet<StorePath>,
    pub download_size: u64,
    pub nar_size: u64,
}

impl Missing {
    pub async fn write<W: AsyncWrite + Unpin + ?Sized>(&self, w: &mut W, dir: &StoreDir) -> std::io::Result<()> {
        write_path_set(w, dir, &self.will_build).await?;
        write_path_set(w, dir, &self.will_substitute).await?;
        write_path_set(w, dir, &self.unknown).await?;
        w.write_u64_wire(self.download_size).await?;
        w.write_u64_wire(self.nar_size).await
    }
}

/// What a substituter knows about a path (§6.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstitutablePathInfo {
    pub deriver: Option<StorePath>,
    pub references: BTreeSet<StorePath>,
    pub download_size: u64,
    pub nar_size: u64,
}

impl SubstitutablePathInfo {
    pub async fn write<W: AsyncWrite + Unpin + ?Sized>(&self, w: &mut W, dir: &StoreDir) -> std::io::Result<()> {
        w.write_str(&self.deriver.as_ref().map(|d| dir.display(d)).unwrap_or_default()).await?;
        write_path_set(w, dir, &self.references).await?;
        w.write_u64_wire(self.download_size).await?;
        w.write_u64_wire(self.nar_size).await
    }
}

/// The settings a client sends with `SetOptions` (§7.19).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    pub keep_failed: bool,
    pub keep_going: bool,
    pub try_fallback: bool,
    pub verbosity: u64,
    pub max_build_jobs: u64,
    pub max_silent_time: u64,
    /// The client wants build logs (its verbose-build level was 0 = Error).
    pub verbose_build: bool,
    pub build_cores: u64,
    pub use_substitutes: bool,
    pub overrides: BTreeMap<String, String>,
    /// The protocol minor of the connection that sent them (0: none were
    /// sent). Not on the wire: the daemon words a few messages after the
    /// client's Nix version.
    pub protocol_minor: u64,
}

/// Reads a `BasicDerivation` (§6.7) for the derivation named `name`.
pub async fn read_basic_derivation<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    dir: &StoreDir,
    name: &str,
    limits: &Limits,
) -> Result<Derivation, ProtoError> {
    let n = r.read_count("derivation outputs", limits).await?;
    let mut outputs = BTreeMap::new();
    for _ in 0..n {
        let out_name = r.read_string("output name", limits).await?;
        let path = r.read_string("output path", limits).await?;
        let algo = r.read_string("output hash algorithm", limits).await?;
        let hash = r.read_string("output hash", limits).await?;
        let output = Output::from_fields(dir, path.as_bytes(), algo.as_bytes(), hash.as_bytes())
            .map_err(|e| ProtoError::BadValue(format!("output '{out_name}': {e}")))?;
        outputs.insert(out_name, output);
    }
    let input_srcs = read_path_set(r, dir, limits).await?;
    let system = r.read_string("platform", limits).await?;
    let builder = r.read_bytes_limited("builder", limits.max_string).await?;
    let nargs = r.read_count("builder arguments", limits).await?;
    let mut args = Vec::new();
    for _ in 0..nargs {
        args.push(r.read_bytes_limited("builder argument", limits.max_text).await?);
    }
    let nenv = r.read_count("environment", limits).await?;
    let mut env = BTreeMap::new();
    for _ in 0..nenv {
        let k = r.read_bytes_limited("environment variable name", limits.max_string).await?;
        let v = r.read_bytes_limited("environment variable value", limits.max_text).await?;
        env.insert(k, v);
    }
    Ok(Derivation {
        name: name.to_owned(),
        outputs,
        input_drvs: BTreeMap::new(),
        input_srcs,
        system,
        builder,
        args,
        env,
    })
}

/// Writes a `BasicDerivation` (the client side of `BuildDerivation`).
pub async fn write_basic_derivation<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    dir: &StoreDir,
    drv: &Derivation,
) -> std::io::Result<()> {
    w.write_u64_wire(drv.outputs.len() as u64).await?;
    for (name, output) in &drv.outputs {
        let fields = output
            .to_fields(dir, &drv.name, name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        w.write_str(name).await?;
        for f in &fields {
            w.write_str(f).await?;
        }
    }
    write_path_set(w, dir, &drv.input_srcs).await?;
    w.write_str(&drv.system).await?;
    w.write_bytes(&drv.builder).await?;
    w.write_u64_wire(drv.args.len() as u64).await?;
    for a in &drv.args {
        w.write_bytes(a).await?;
    }
    w.write_u64_wire(drv.env.len() as u64).await?;
    for (k, v) in &drv.env {
        w.write_bytes(k).await?;
        w.write_bytes(v).await?;
    }
    Ok(())
}
