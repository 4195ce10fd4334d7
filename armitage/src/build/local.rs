//! One local build up to its outputs, on a blocking thread (CppNix
//! `LocalDerivationGoal`: `tryLocalBuild`, `startBuilder`, `buildDone`), in
//! named steps: output locks and the validity check again, the platform
//! check, the sandbox decision, a build user, the build directory, scratch
//! paths for the outputs, the environment, then an [`ExecSpec`] that the
//! builder's [`Executor`] prepares and runs with its log. A build that ran
//! is handed on ([`Built`]) to the after-build pipeline (after.rs), which
//! the derivation goal calls next; the locks, the build user and the build
//! directory go with it.

use super::builder::{Builder, Job};
use super::error::BuildError;
use super::executor::run::exit_text;
use super::executor::{ExecIo, ExecOutput, ExecSpec, ExecUser, Executor, Isolation, Network, RunOutcome};
use super::goal::{BuildModeKey, Event, GoalCtx, Outcome};
use super::log::{self, BuildLog};
use super::outputs::{self, Scratch};
use super::sandbox;
use super::user_pool::{self, BuildUser};
use super::witnessed;
use local_store::LocalStore;
use local_store::lock::PathLocks;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::derivation::Derivation;
use store::derivation::DerivationType;
use store::derivation::hash_placeholder;
use store::hash::{Algorithm, Hash};
use store::nix_conf::SandboxMode;
use store::store_path::{StorePath, output_path_name};
use worker_protocol::BuildStatus;

pub(super) struct LocalParams {
    pub b: Arc<Builder>,
    pub job: Arc<Job>,
    pub store: Arc<LocalStore>,
    pub drv_path: StorePath,
    pub drv: Arc<Derivation>,
    /// Output name → its path when known in advance.
    pub initial: BTreeMap<String, Option<StorePath>>,
    /// The input closure.
    pub inputs: BTreeSet<StorePath>,
    /// Placeholders of floating inputs → their paths.
    pub input_rewrites: BTreeMap<String, String>,
    pub mode: BuildModeKey,
    pub ctx: GoalCtx,
}

/// How [`build`] ended when it did not fail.
pub(super) enum Ran {
    /// Nothing to build (someone built the outputs meanwhile).
    Done(Outcome),
    /// The builder succeeded; its outputs wait to be registered.
    Built(Built),
}

/// A build whose builder succeeded, for the after-build pipeline.
pub(super) struct Built {
    /// The output locks, released once the outputs are registered.
    pub locks: PathLocks,
    /// The build directory and the chroot, removed when dropped.
    pub cleanup: Cleanup,
    /// The build user, free again when dropped.
    pub user: Option<BuildUser>,
    /// Where each output was built.
    pub scratch: BTreeMap<String, Scratch>,
    /// The derivation's path as shown.
    pub full: String,
    pub start_time: u64,
    pub stop_time: u64,
}

pub(super) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The outcome of a build that began at `begun` (seconds): a failure
/// becomes one, and an outcome without times gets `begun` to now.
pub(super) fn outcome(result: Result<Outcome, BuildError>, begun: u64) -> Outcome {
    let mut outcome = match result {
        Ok(o) => o,
        Err(e) => Outcome::failed(e.status(), e.to_string()),
    };
    if outcome.start_time == 0 {
        outcome.start_time = begun;
        outcome.stop_time = now();
    }
    outcome
}

/// Runs the build up to its outputs.
pub(super) fn build(p: &LocalParams) -> Result<Ran, BuildError> {
    let store = &*p.store;
    let full = store.display(&p.drv_path);
    let settings = &p.job.settings;

    // Output locks (CppNix's `.lock` files, shared with CppNix processes),
    // then the validity check again: someone may have built them meanwhile.
    let lock_paths: Vec<PathBuf> = p.initial.values().flatten().map(|o| store.real_path(o)).collect();
    let locks =
        PathLocks::lock(lock_paths).map_err(|e| BuildError::Other(format!("locking the outputs of '{full}': {e}")))?;
    if p.mode == BuildModeKey::Normal
        && let Some(outs) = outputs::all_valid(store, &p.initial)?
    {
        let mut o = Outcome::new(BuildStatus::AlreadyValid);
        o.outputs = outs;
        return Ok(Ran::Done(o));
    }
    check_platform(p, &full)?;
    let drv_type = p.drv.derivation_type().map_err(|e| BuildError::Other(e.to_string()))?;
    let isolation =
        if use_sandbox(settings.sandbox, drv_type, &p.drv, &full)? { Isolation::Namespaces } else { Isolation::None };
    let user = build_user(p)?;
    p.b.auto_gc.maybe_collect(store, settings);
    let (tmp_dir, mut cleanup) = build_dir(p, isolation, user.as_ref())?;
    let (scratch, rewrites) = scratch_outputs(p, isolation, cleanup.chroot.as_deref())?;
    let mut spec =
        exec_spec(p, drv_type, isolation, &tmp_dir, cleanup.chroot.clone(), user.as_ref(), &scratch, &rewrites)?;
    // Kept until the builder is done: the proxy serves this build while it lives.
    let witnessed = witnessed::begin(p.b.witness.as_deref(), &full, &p.drv, isolation == Isolation::Namespaces)?;
    if let Some(w) = &witnessed {
        w.apply(&mut spec);
    }

    let executor = &*p.b.executor;
    let setup = executor.prepare(&spec)?;
    let mut log = open_log(store, &p.drv_path, settings.max_build_log_size)?;
    let start_time = now();
    p.ctx.emit(Event::BuildStarted(p.drv_path.clone(), p.mode));
    let result = run_builder(p, executor, &spec, setup, &mut log);
    drop(witnessed);
    log.finish();
    let stop_time = now();

    if let Err(e) = failure(p, &full, drv_type, result, &log) {
        // CppNix never keeps a builtin's build directory (it may hold
        // privileged things, such as fetchurl's netrc).
        if settings.keep_failed && !p.ctx.cancel.load(Ordering::Relaxed) && !p.drv.is_builtin() {
            cleanup.keep_build_dir(&p.ctx);
        }
        p.ctx.emit(Event::BuildFinished { drv: p.drv_path.clone(), ok: false });
        return Err(e);
    }
    Ok(Ran::Built(Built { locks, cleanup, user, scratch, full, start_time, stop_time }))
}

/// The right platform and the required system features (CppNix
/// `canBuildLocally`, with its message).
fn check_platform(p: &LocalParams, full: &str) -> Result<(), BuildError> {
    let s = &p.job.settings;
    let features: BTreeSet<String> = super::attrs::required_features(&p.drv);
    let platform_ok = p.drv.system == s.system || s.extra_platforms.contains(&p.drv.system) || p.drv.is_builtin();
    let features_ok = features.iter().all(|f| s.system_features.contains(f));
    if platform_ok && features_ok {
        return Ok(());
    }
    Err(BuildError::Rejected(format!(
        "a '{}' with features {{{}}} is required to build '{full}', but I am a '{}' with features {{{}}}",
        p.drv.system,
        features.iter().cloned().collect::<Vec<_>>().join(", "),
        s.system,
        s.system_features.iter().cloned().collect::<Vec<_>>().join(", "),
    )))
}

/// CppNix's rules: `sandbox = true` sandboxes everything and refuses
/// `__noChroot`; `relaxed` leaves out fixed-output and impure derivations
/// and those with `__noChroot`; `false` sandboxes nothing.
fn use_sandbox(mode: SandboxMode, drv_type: DerivationType, drv: &Derivation, full: &str) -> Result<bool, BuildError> {
    let no_chroot = super::attrs::bool_attr(drv, "__noChroot", false);
    match mode {
        SandboxMode::Enabled => {
            if no_chroot {
                return Err(BuildError::Rejected(format!(
                    "derivation '{full}' has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'"
                )));
            }
            Ok(true)
        }
        SandboxMode::Relaxed => Ok(drv_type.is_sandboxed() && !no_chroot),
        SandboxMode::Disabled => Ok(false),
    }
}

/// A build user (root only, with `build-users-group`), waited for when
/// all are busy.
fn build_user(p: &LocalParams) -> Result<Option<BuildUser>, BuildError> {
    let group = &p.job.settings.build_users_group;
    if !rustix::process::geteuid().is_root() || group.is_empty() {
        return Ok(None);
    }
    let state_dir = &p.store.config().state_dir;
    let me = rustix::process::geteuid().as_raw();
    let mut waited = false;
    loop {
        match user_pool::try_acquire(state_dir, group, me)? {
            Some(u) => return Ok(Some(u)),
            None => {
                if !waited {
                    tracing::info!("waiting for a free build user ID for '{}'", p.store.display(&p.drv_path));
                    waited = true;
                }
                if p.ctx.cancel.load(Ordering::Relaxed) {
                    return Err(BuildError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The build directory (`<build-dir or $TMPDIR>/nix-build-…`), and the
/// clean-up of it and of the chroot (`<drv path>.chroot`) when sandboxed.
fn build_dir(
    p: &LocalParams,
    isolation: Isolation,
    user: Option<&BuildUser>,
) -> Result<(PathBuf, Cleanup), BuildError> {
    let tmp_base = p
        .job
        .settings
        .build_dir
        .clone()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TMPDIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let tmp_dir = make_build_dir(&tmp_base, p.drv_path.name(), p.b.next_build_number(), user)?;
    let chroot = (isolation == Isolation::Namespaces).then(|| {
        let mut r = p.store.real_path(&p.drv_path).into_os_string();
        r.push(".chroot");
        PathBuf::from(r)
    });
    let cleanup = Cleanup { tmp_dir: Some(tmp_dir.clone()), chroot, keep: false };
    Ok((tmp_dir, cleanup))
}

/// Placeholders and hash parts → what replaces them.
type Rewrites = BTreeMap<String, String>;

/// Scratch paths for the outputs (the known path, or a fallback beside a
/// valid one or for a floating output), and the rewrites that go with them
/// (placeholders, floating inputs). Leftovers of an earlier attempt are
/// removed.
fn scratch_outputs(
    p: &LocalParams,
    isolation: Isolation,
    chroot: Option<&Path>,
) -> Result<(BTreeMap<String, Scratch>, Rewrites), BuildError> {
    let store = &*p.store;
    let sandboxed = isolation != Isolation::None;
    let mut rewrites = p.input_rewrites.clone();
    let mut scratch: BTreeMap<String, Scratch> = BTreeMap::new();
    for (name, known) in &p.initial {
        let known_valid = match known {
            Some(k) => store.is_valid(k)?,
            None => false,
        };
        let skip = p.mode == BuildModeKey::Normal && known_valid;
        let path = match known {
            None => fallback_path(store, &p.drv_path, &format!("name:{name}"), &output_path_name(&p.drv.name, name))?,
            Some(k) if sandboxed || skip => k.clone(),
            Some(k) if !known_valid && p.mode != BuildModeKey::Repair => k.clone(),
            Some(k) => fallback_path(store, &p.drv_path, &k.to_string(), k.name())?,
        };
        rewrites.insert(hash_placeholder(name), store.display(&path));
        if let Some(k) = known
            && *k != path
        {
            rewrites.insert(k.hash_part().to_owned(), path.hash_part().to_owned());
        }
        let location = match chroot {
            Some(root) => root.join(store.display(&path).trim_start_matches('/')),
            None => store.real_path(&path),
        };
        // Leftovers of an earlier attempt (never a valid path).
        if !skip && !store.is_valid(&path)? && std::fs::symlink_metadata(&location).is_ok() {
            store.delete_tree(&location)?;
        }
        scratch.insert(name.clone(), Scratch { path, location, known: known.clone(), skip });
    }
    Ok((scratch, rewrites))
}

/// The environment (its files written into the build directory), the
/// builder and its arguments, and everything else the executor needs.
#[allow(clippy::too_many_arguments)]
fn exec_spec(
    p: &LocalParams,
    drv_type: DerivationType,
    isolation: Isolation,
    tmp_dir: &Path,
    chroot: Option<PathBuf>,
    user: Option<&BuildUser>,
    scratch: &BTreeMap<String, Scratch>,
    rewrites: &BTreeMap<String, String>,
) -> Result<ExecSpec, BuildError> {
    let store = &*p.store;
    let settings = &p.job.settings;
    let build_dir_inside = if isolation == Isolation::Namespaces {
        PathBuf::from(sandbox::BUILD_DIR_IN_SANDBOX)
    } else {
        tmp_dir.to_owned()
    };
    let env = super::env::build_env(&super::env::EnvInputs {
        drv: &p.drv,
        store,
        build_dir_inside: &build_dir_inside.to_string_lossy(),
        build_dir_host: tmp_dir,
        cores: u64::from(settings.cores),
        fixed_output: drv_type.is_fixed(),
        rewrites,
        input_paths: &p.inputs,
        owner: user.map(|u| (u.uid, u.gid)),
    })?;
    let builder = String::from_utf8_lossy(&super::env::rewrite(&p.drv.builder, rewrites)).into_owned();
    let mut args = vec![builder.rsplit('/').next().unwrap_or(&builder).as_bytes().to_vec()];
    args.extend(p.drv.args.iter().map(|a| super::env::rewrite(a, rewrites)));
    let host_network = drv_type.is_fixed() || drv_type.is_impure() || isolation == Isolation::None;
    let secs = |v: i64| (v > 0).then(|| Duration::from_secs(v as u64));
    Ok(ExecSpec {
        builder,
        args,
        env: env.into_iter().collect(),
        inputs: p.inputs.iter().map(|i| (store.display(i), store.real_path(i))).collect(),
        outputs: scratch
            .iter()
            .filter(|(_, s)| !s.skip)
            .map(|(name, s)| (name.clone(), ExecOutput { path: store.display(&s.path), location: s.location.clone() }))
            .collect(),
        store_dir: store.store_dir().as_str().to_owned(),
        build_dir: tmp_dir.to_owned(),
        build_dir_inside,
        chroot,
        isolation,
        network: if host_network { Network::Host } else { Network::None },
        user: user.map(|u| ExecUser { uid: u.uid, gid: u.gid, groups: u.groups.clone() }),
        sandbox_paths: settings.sandbox_paths.clone(),
        kvm: settings.system_features.contains("kvm"),
        timeout: secs(settings.timeout),
        max_silent: secs(settings.max_silent_time),
        client_minor: p.job.client_minor,
    })
}

/// Runs the builder, its output going to the log and, line by line, to
/// the clients.
fn run_builder(
    p: &LocalParams,
    executor: &dyn Executor,
    spec: &ExecSpec,
    setup: super::executor::Setup,
    log: &mut BuildLog,
) -> Result<RunOutcome, super::executor::ExecError> {
    let drv = p.drv_path.clone();
    let ctx = p.ctx.clone();
    let verbosity = p.job.client_verbosity;
    let mut on_line = |line: String| match log::json_message(&line) {
        None => ctx.emit(Event::Log(drv.clone(), line)),
        // CppNix's daemon passes a builder's messages on as log messages,
        // those the client's verbosity lets through.
        Some(log::JsonMessage::Msg { level, text }) if level <= verbosity => ctx.emit(Event::Note(text)),
        Some(_) => {}
    };
    let mut io = ExecIo { log, on_line: &mut on_line, cancel: &p.ctx.cancel };
    executor.run(spec, setup, &mut io)
}

/// The failure, if the run was one, with CppNix's message.
fn failure(
    p: &LocalParams,
    full: &str,
    drv_type: DerivationType,
    result: Result<RunOutcome, super::executor::ExecError>,
    log: &BuildLog,
) -> Result<(), BuildError> {
    let settings = &p.job.settings;
    // CppNix names the goal by the outputs its first requester wanted.
    let what = || {
        let wanted = p.ctx.me.upgrade().and_then(|g| g.wanted_text());
        let wanted = wanted.unwrap_or_else(|| p.drv.outputs.keys().cloned().collect::<Vec<_>>().join(","));
        format!("building of '{full}!{wanted}' from .drv file")
    };
    match result? {
        RunOutcome::Exited(status) if status.success() => Ok(()),
        RunOutcome::Cancelled => Err(BuildError::Interrupted { what: what() }),
        RunOutcome::TimedOut { silence: true } => {
            Err(BuildError::Silent { what: what(), secs: settings.max_silent_time })
        }
        RunOutcome::TimedOut { silence: false } => Err(BuildError::TimedOut { what: what(), secs: settings.timeout }),
        RunOutcome::LogLimit => Err(BuildError::LogLimit { what: what(), limit: settings.max_build_log_size }),
        RunOutcome::Exited(status) => {
            let mut message = format!("builder for '{full}' {}", exit_text(Some(status)));
            let tail = log.tail();
            if !tail.is_empty() {
                message.push_str(&format!(";\nlast {} log lines:\n", tail.len()));
                for line in &tail {
                    message.push_str(&format!("> {line}\n"));
                }
                message.push_str(&full_logs_hint(full, p.job.client_minor, settings));
            }
            // CppNix's heuristic: under 8 MiB free in the store.
            let free =
                rustix::fs::statvfs(p.store.store_dir().as_str()).map(|st| st.f_bavail.saturating_mul(st.f_frsize));
            if free.is_ok_and(|f| f < 8 << 20) {
                message.push_str("\nnote: build failure may have been caused by lack of free disk space");
            }
            Err(BuildError::BuilderFailed { message, fixed_output: drv_type.is_fixed() })
        }
    }
}

/// The end of a failed build's message, worded as the nix-daemon of the
/// client's version words it: 2.26 (protocol 1.38; 2.24 and 2.25 speak it
/// too) puts the command on a line of its own, `nix-store -l` unless the
/// daemon has `nix-command`; earlier ones, `'nix log …'` in the sentence.
fn full_logs_hint(full: &str, client_minor: u64, settings: &store::nix_conf::Settings) -> String {
    if client_minor < 38 {
        return format!("For full logs, run 'nix log {full}'.");
    }
    let command =
        if settings.is_enabled(store::nix_conf::ExperimentalFeature::NixCommand) { "nix log" } else { "nix-store -l" };
    format!("For full logs, run:\n  {command} {full}")
}

/// `<base>/nix-build-<drv name>-<n>`, 0700, owned by the build user.
fn make_build_dir(base: &Path, drv_name: &str, n: u64, user: Option<&BuildUser>) -> Result<PathBuf, BuildError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut n = n;
    loop {
        let dir = base.join(format!("nix-build-{drv_name}-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                if let Some(u) = user {
                    std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid))
                        .map_err(|e| BuildError::Other(format!("changing owner of '{}': {e}", dir.display())))?;
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1_000_000,
            Err(e) => return Err(BuildError::Other(format!("creating directory '{}': {e}", dir.display()))),
        }
    }
}

/// CppNix's `makeFallbackPath`: a path of the same name that nothing else
/// uses, for outputs built beside a valid (or not yet known) one.
fn fallback_path(store: &LocalStore, drv_path: &StorePath, what: &str, name: &str) -> Result<StorePath, BuildError> {
    let zero = Hash::from_bytes(Algorithm::Sha256, &[0u8; 32]).expect("32 bytes are a SHA-256");
    store
        .store_dir()
        .make_store_path(&format!("rewrite:{drv_path}:{what}"), &zero, name)
        .map_err(|e| BuildError::Other(e.to_string()))
}

fn open_log(store: &LocalStore, drv_path: &StorePath, limit: u64) -> Result<BuildLog, BuildError> {
    let path = store.build_log_path(drv_path);
    BuildLog::create(&path, 10, limit)
        .map_err(|e| BuildError::Other(format!("creating the build log '{}': {e}", path.display())))
}

/// Removes the build directory (unless kept) and the chroot.
pub(super) struct Cleanup {
    tmp_dir: Option<PathBuf>,
    chroot: Option<PathBuf>,
    keep: bool,
}

impl Cleanup {
    /// Keeps the build directory of a failed build, and says so.
    pub(super) fn keep_build_dir(&mut self, ctx: &GoalCtx) {
        self.keep = true;
        if let Some(dir) = &self.tmp_dir {
            ctx.emit(Event::Note(format!("note: keeping build directory '{}'", dir.display())));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = self.tmp_dir.take()
            && !self.keep
        {
            remove_tree(&dir);
        }
        if let Some(root) = self.chroot.take() {
            remove_tree(&root);
        }
    }
}

fn remove_tree(dir: &Path) {
    // Read-only directories a builder left are made writable first.
    if let Err(e) = local_store::delete_path(dir) {
        tracing::warn!("cannot remove '{}': {e}", dir.display());
    }
}
