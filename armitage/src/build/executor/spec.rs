//! The executor seam's types: what a build needs to run ([`ExecSpec`]),
//! how it is isolated ([`Isolation`], [`Network`]), the [`Executor`] trait,
//! and how a run ends ([`RunOutcome`], [`ExecError`]). A leaf: the
//! executors and the scheduler use it, it uses neither.

use super::super::log::BuildLog;
use super::super::sandbox::SandboxSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// How a build is kept from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// None: the builder runs on the host (`sandbox = false`, or a
    /// derivation `relaxed` leaves out).
    None,
    /// A chroot holding only the inputs, in private mount, PID, IPC, UTS
    /// (and, per [`Network`], network) namespaces.
    Namespaces,
}

/// The network a build gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A loopback interface only (a sandboxed build that is not
    /// fixed-output or impure).
    None,
    /// The host's network (and, in a sandbox, its resolver files).
    Host,
    /// A namespace the daemon made, named by a path that opens it: the
    /// witness's for a sandboxed fixed-output build (loopback only, with
    /// the witness proxy listening on it). Without a sandbox, the host's.
    Namespace(PathBuf),
}

/// The build user a builder runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (given when not sandboxed).
    pub groups: Vec<u32>,
}

/// One output as the builder writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The store path the builder is told (its environment has it).
    pub path: String,
    /// Where that path is on the host (in the chroot when sandboxed).
    pub location: PathBuf,
}

/// Everything one build needs to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The program (a path, or `builtin:<name>`).
    pub builder: String,
    /// `argv[0]` followed by the arguments.
    pub args: Vec<Vec<u8>>,
    /// The complete environment.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// The input closure: each path as builders see it and where it is on
    /// the host.
    pub inputs: Vec<(String, PathBuf)>,
    /// The outputs to build, by name (those kept as they are, already
    /// valid, are not among them).
    pub outputs: BTreeMap<String, ExecOutput>,
    /// The store directory (as builders see it, also inside a sandbox).
    pub store_dir: String,
    /// The build directory on the host (`nix-build-…`).
    pub build_dir: PathBuf,
    /// The build directory as the builder sees it: its working directory
    /// and `$TMPDIR` (`/build` in the sandbox).
    pub build_dir_inside: PathBuf,
    /// The chroot directory on the host, for isolations that have one.
    pub chroot: Option<PathBuf>,
    pub isolation: Isolation,
    pub network: Network,
    /// `None`: the builder runs as the daemon's user.
    pub user: Option<ExecUser>,
    /// `sandbox-paths`: what a sandbox gets from the host besides the inputs.
    pub sandbox_paths: std::collections::BTreeSet<String>,
    /// Whether `kvm` is a system feature (a sandbox then gets /dev/kvm).
    pub kvm: bool,
    /// `timeout` and `max-silent-time` (none: no limit).
    pub timeout: Option<Duration>,
    pub max_silent: Option<Duration>,
    /// The protocol minor of the client whose request started the build
    /// (builtins word some messages after it).
    pub client_minor: u64,
}

/// What an executor's [`Executor::prepare`] set up, handed to its
/// [`Executor::run`].
#[derive(Debug)]
pub enum Setup {
    /// Nothing to hand over.
    Nothing,
    /// The sandbox laid out on the host, for the build child to enter.
    Sandbox(SandboxSpec),
}

/// How a run ended.
#[derive(Debug)]
pub enum RunOutcome {
    Exited(ExitStatus),
    /// `max-silent-time` (true) or `timeout` (false) ran out.
    TimedOut {
        silence: bool,
    },
    Cancelled,
    /// The log outgrew `max-build-log-size`.
    LogLimit,
}

/// Where a running build's output goes, and its cancellation.
pub struct ExecIo<'a> {
    /// The build's log (lines, tail, `max-build-log-size`).
    pub log: &'a mut BuildLog,
    /// Every finished line of output.
    pub on_line: &'a mut dyn FnMut(String),
    /// Set when nobody wants the build any more.
    pub cancel: &'a AtomicBool,
}

/// Why a builder could not be started (its own failure is a
/// [`RunOutcome`]). The texts are the build's error messages.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Laying out what the isolation needs failed (before the build is
    /// reported as started).
    #[error("{0}")]
    Prepare(String),
    /// The pseudo-terminal for the build's output.
    #[error("{0}")]
    Terminal(String),
    #[error("writing the build spec '{path}': {source}")]
    SpecFile { path: PathBuf, source: std::io::Error },
    #[error("writing the build spec: {0}")]
    SpecWrite(String),
    #[error("starting the build process: {0}")]
    Spawn(std::io::Error),
    /// A builder started straight from the daemon could not be executed.
    #[error("executing '{builder}': {source}")]
    Exec { builder: String, source: std::io::Error },
    #[error("the build process ended before setting up")]
    EndedEarly,
    #[error("the build process ended before setting up ({0})")]
    EndedEarlyWith(String),
    #[error("reading from the build process: {0}")]
    Read(std::io::Error),
    /// The build child reported a failure setting up (the sandbox).
    #[error("while setting up the build environment: {0}")]
    SetupFailed(String),
    /// The user namespace handshake.
    #[error("{0}")]
    IdMaps(String),
    #[error("{0}")]
    Internal(String),
}

/// Runs builders. Called on a blocking thread, one build per call pair.
pub trait Executor: Send + Sync {
    /// Sets up what the build runs in. Called before the build is
    /// reported as started: a failure here is a build that never started.
    fn prepare(&self, spec: &ExecSpec) -> Result<Setup, ExecError>;

    /// Runs the builder to its end, feeding its output to `io`; honours
    /// the limits in `spec` and `io.cancel`. On return no process of the
    /// build is left.
    fn run(&self, spec: &ExecSpec, setup: Setup, io: &mut ExecIo<'_>) -> Result<RunOutcome, ExecError>;
}
