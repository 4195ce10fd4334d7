//! One local build, start to end, on a blocking thread (CppNix
//! `LocalDerivationGoal`: `tryLocalBuild`, `startBuilder`, `buildDone`):
//! output locks, the platform check, the sandbox decision, a build user,
//! the build directory, scratch paths for the outputs, the environment,
//! the run with its log, registration, clean-up and the post-build hook.

use super::child::ChildSpec;
use super::goal::{BuildModeKey, Event, GoalCtx, Outcome};
use super::log::BuildLog;
use super::outputs::{self, OutputError, RegisterParams, Scratch};
use super::run::{self, RunOutcome, RunParams};
use super::sandbox::{self, BindMount, SandboxSpec};
use super::user_pool::{self, BuildUser};
use super::{Builder, Job};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::derivation::Derivation;
use store::derivation::hash_placeholder;
use store::derivation::DerivationType;
use store::hash::{Algorithm, Hash};
use local_store::LocalStore;
use local_store::lock::PathLocks;
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

/// A failed build: the status and CppNix's message.
struct Failure(BuildStatus, String);

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure(BuildStatus::MiscFailure, e)
    }
}

impl From<local_store::Error> for Failure {
    fn from(e: local_store::Error) -> Self {
        Failure(BuildStatus::MiscFailure, e.to_string())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(super) fn build(p: LocalParams) -> Outcome {
    let start = now();
    let mut outcome = match build_inner(&p) {
        Ok(o) => o,
        Err(Failure(status, msg)) => Outcome::failed(status, msg),
    };
    if outcome.start_time == 0 {
        outcome.start_time = start;
        outcome.stop_time = now();
    }
    outcome
}

fn build_inner(p: &LocalParams) -> Result<Outcome, Failure> {
    let store = &*p.store;
    let full = store.display(&p.drv_path);

    // Output locks (CppNix's `.lock` files, shared with CppNix processes),
    // then the validity check again: someone may have built them meanwhile.
    let lock_paths: Vec<PathBuf> = p.initial.values().flatten().map(|o| store.real_path(o)).collect();
    let mut locks = PathLocks::lock(lock_paths).map_err(|e| format!("locking the outputs of '{full}': {e}"))?;
    if p.mode == BuildModeKey::Normal
        && let Some(outs) = super::derivation_goal::all_valid(store, &p.initial)?
    {
        let mut o = Outcome::new(BuildStatus::AlreadyValid);
        o.outputs = outs;
        return Ok(o);
    }

    let settings = &p.job.settings;
    check_platform(p, &full)?;
    let drv_type = p.drv.derivation_type().map_err(|e| e.to_string())?;
    let use_sandbox = use_sandbox(settings.sandbox, drv_type, &p.drv, &full)?;

    // A build user (root only), waited for when all are busy.
    let is_root = rustix::process::geteuid().is_root();
    let user = if is_root && !settings.build_users_group.is_empty() {
        Some(acquire_user(p, &settings.build_users_group)?)
    } else {
        None
    };

    p.b.auto_gc.maybe_collect(store, settings);

    // The build directory.
    let tmp_base = settings
        .build_dir
        .clone()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TMPDIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let tmp_dir = make_build_dir(&tmp_base, p.drv_path.name(), p.b.next_build_number(), user.as_ref())?;
    let mut cleanup = Cleanup { tmp_dir: Some(tmp_dir.clone()), chroot: None, keep: false };
    let build_dir_inside = if use_sandbox { sandbox::BUILD_DIR_IN_SANDBOX.to_owned() } else { tmp_dir.to_string_lossy().into_owned() };
    let chroot = use_sandbox.then(|| {
        let mut r = store.real_path(&p.drv_path).into_os_string();
        r.push(".chroot");
        PathBuf::from(r)
    });
    cleanup.chroot = chroot.clone();

    // Scratch paths for the outputs, and the rewrites that go with them.
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
            Some(k) if use_sandbox || skip => k.clone(),
            Some(k) if !known_valid && p.mode != BuildModeKey::Repair => k.clone(),
            Some(k) => fallback_path(store, &p.drv_path, &k.to_string(), k.name())?,
        };
        rewrites.insert(hash_placeholder(name), store.display(&path));
        if let Some(k) = known
            && *k != path
        {
            rewrites.insert(k.hash_part().to_owned(), path.hash_part().to_owned());
        }
        let location = match &chroot {
            Some(root) => root.join(store.display(&path).trim_start_matches('/')),
            None => store.real_path(&path),
        };
        // Leftovers of an earlier attempt (never a valid path).
        if !skip && !store.is_valid(&path)? && std::fs::symlink_metadata(&location).is_ok() {
            store.delete_tree(&location)?;
        }
        scratch.insert(name.clone(), Scratch { path, location, known: known.clone(), skip });
    }

    // The environment, arguments and builder.
    let owner = user.as_ref().map(|u| (u.uid, u.gid));
    let env = super::env::build_env(&super::env::EnvInputs {
        drv: &p.drv,
        store,
        build_dir_inside: &build_dir_inside,
        build_dir_host: &tmp_dir,
        cores: u64::from(settings.cores),
        fixed_output: drv_type.is_fixed(),
        rewrites: &rewrites,
        input_paths: &p.inputs,
        owner,
    })?;
    let builder = String::from_utf8_lossy(&super::env::rewrite(&p.drv.builder, &rewrites)).into_owned();
    let mut argv = vec![builder.rsplit('/').next().unwrap_or(&builder).as_bytes().to_vec()];
    argv.extend(p.drv.args.iter().map(|a| super::env::rewrite(a, &rewrites)));

    // The sandbox.
    if chroot.is_some() {
        sandbox::shell::check_builder(&builder, &settings.sandbox_paths)?;
    }
    let sandbox_spec = match &chroot {
        Some(root) => Some(prepare_sandbox(p, root, &tmp_dir, user.as_ref(), drv_type)?),
        None => None,
    };

    let spec = ChildSpec {
        builder: builder.clone(),
        argv,
        env: env.into_iter().collect(),
        cwd: PathBuf::from(&build_dir_inside),
        uid: if use_sandbox { None } else { user.as_ref().map(|u| u.uid) },
        gid: if use_sandbox { None } else { user.as_ref().map(|u| u.gid) },
        groups: user.as_ref().map(|u| u.groups.clone()).unwrap_or_default(),
        sandbox: sandbox_spec,
        client_minor: p.job.client_minor,
    };

    let mut log = open_log(store, &p.drv_path, settings.max_build_log_size)?;
    let spec_dir = store.config().state_dir.join("builds");
    make_private_dir(&spec_dir)?;
    let secs = |v: i64| (v > 0).then(|| Duration::from_secs(v as u64));
    let run_params = RunParams {
        exe: &p.b.exe,
        spec_dir: &spec_dir,
        spec: &spec,
        pty_owner: user.as_ref().map(|u| u.uid),
        timeout: secs(settings.timeout),
        max_silent: secs(settings.max_silent_time),
        cancel: &p.ctx.cancel,
    };

    let start_time = now();
    p.ctx.emit(Event::BuildStarted(p.drv_path.clone(), p.mode));
    let result = match run::start(&run_params) {
        Ok(mut running) => {
            let drv = p.drv_path.clone();
            let ctx = p.ctx.clone();
            let verbosity = p.job.client_verbosity;
            let r = run::follow(&mut running, &run_params, &mut log, &mut |line| match super::log::json_message(&line) {
                None => ctx.emit(Event::Log(drv.clone(), line)),
                // CppNix's daemon passes a builder's messages on as log
                // messages, those the client's verbosity lets through.
                Some(super::log::JsonMessage::Msg { level, text }) if level <= verbosity => ctx.emit(Event::Note(text)),
                Some(_) => {}
            });
            drop(running);
            Ok(r)
        }
        Err(e) => Err(e),
    };
    log.finish();
    if let Some(u) = &user {
        kill_user(u.uid);
    }
    let stop_time = now();
    // CppNix names the goal by the outputs its first requester wanted.
    let wanted = p.ctx.me.upgrade().and_then(|g| g.wanted_text());
    let wanted = wanted.unwrap_or_else(|| p.drv.outputs.keys().cloned().collect::<Vec<_>>().join(","));
    let what = format!("building of '{full}!{wanted}' from .drv file");
    let failure = match result {
        Err(e) => Some(Failure(BuildStatus::MiscFailure, e)),
        Ok(RunOutcome::Cancelled) => Some(Failure(BuildStatus::MiscFailure, format!("{what} was interrupted"))),
        Ok(RunOutcome::TimedOut { silence: true }) => Some(Failure(
            BuildStatus::TimedOut,
            format!("{what} timed out after {} seconds of silence", settings.max_silent_time),
        )),
        Ok(RunOutcome::TimedOut { silence: false }) => {
            Some(Failure(BuildStatus::TimedOut, format!("{what} timed out after {} seconds", settings.timeout)))
        }
        Ok(RunOutcome::LogLimit) => Some(Failure(
            BuildStatus::LogLimitExceeded,
            format!("{what} killed after writing more than {} bytes of log output", settings.max_build_log_size),
        )),
        Ok(RunOutcome::Exited(status)) if !status.success() => {
            let mut msg = format!("builder for '{full}' {}", run::exit_text(Some(status)));
            let tail = log.tail();
            if !tail.is_empty() {
                msg.push_str(&format!(";\nlast {} log lines:\n", tail.len()));
                for line in &tail {
                    msg.push_str(&format!("> {line}\n"));
                }
                msg.push_str(&full_logs_hint(&full, p.job.client_minor, settings));
            }
            // CppNix's heuristic: under 8 MiB free in the store.
            let free = rustix::fs::statvfs(store.store_dir().as_str()).map(|st| st.f_bavail.saturating_mul(st.f_frsize));
            if free.is_ok_and(|f| f < 8 << 20) {
                msg.push_str("\nnote: build failure may have been caused by lack of free disk space");
            }
            let status = if drv_type.is_fixed() { BuildStatus::TransientFailure } else { BuildStatus::PermanentFailure };
            Some(Failure(status, msg))
        }
        Ok(RunOutcome::Exited(_)) => None,
    };
    if let Some(f) = failure {
        // CppNix never keeps a builtin's build directory (it may hold
        // privileged things, such as fetchurl's netrc).
        cleanup.keep = settings.keep_failed && !p.ctx.cancel.load(Ordering::Relaxed) && !p.drv.is_builtin();
        if cleanup.keep {
            p.ctx.emit(Event::Note(format!("note: keeping build directory '{}'", tmp_dir.display())));
        }
        p.ctx.emit(Event::BuildFinished { drv: p.drv_path.clone(), ok: false });
        return Err(f);
    }

    // Registration.
    let registered = outputs::register(&RegisterParams {
        store,
        drv_path: &p.drv_path,
        drv: &p.drv,
        scratch: &scratch,
        inputs: &p.inputs,
        build_uid: user.as_ref().map(|u| u.uid),
        check: p.mode == BuildModeKey::Check,
        keep_check: settings.keep_failed,
        repair: p.mode == BuildModeKey::Repair,
        secret_keys: &p.b.secret_keys,
    });
    let outputs = match registered {
        Ok(o) => o,
        Err(e) => {
            p.ctx.emit(Event::BuildFinished { drv: p.drv_path.clone(), ok: false });
            let (status, msg) = match e {
                OutputError::HashMismatch(m) => (BuildStatus::OutputRejected, m),
                OutputError::NotDeterministic(m) => (BuildStatus::NotDeterministic, m),
                OutputError::Other(m) => (BuildStatus::OutputRejected, m),
            };
            if settings.keep_failed && !p.drv.is_builtin() {
                cleanup.keep = true;
                p.ctx.emit(Event::Note(format!("note: keeping build directory '{}'", tmp_dir.display())));
            }
            let mut o = Outcome::failed(status, msg);
            o.times_built = 1;
            o.start_time = start_time;
            o.stop_time = stop_time;
            o.is_non_deterministic = status == BuildStatus::NotDeterministic;
            return Ok(o);
        }
    };
    if p.initial.values().any(Option::is_none) {
        register_realisations(store, &p.drv, &outputs)?;
    }
    locks.set_deletion(true);
    drop(locks);
    drop(cleanup);
    p.ctx.emit(Event::BuildFinished { drv: p.drv_path.clone(), ok: true });

    if !settings.post_build_hook.is_empty() {
        let outs: Vec<String> = outputs.values().map(|o| store.display(o)).collect();
        super::post_build_hook::run(&settings.post_build_hook, &p.drv_path, &full, &outs, &p.ctx)
            .map_err(|e| Failure(BuildStatus::MiscFailure, e))?;
    }

    let mut o = Outcome::new(BuildStatus::Built);
    o.outputs = outputs;
    o.times_built = 1;
    o.start_time = start_time;
    o.stop_time = stop_time;
    Ok(o)
}

/// The end of a failed build's message, worded as the nix-daemon of the
/// client's version words it: 2.26 (protocol 1.38; 2.24 and 2.25 speak it
/// too) puts the command on a line of its own, `nix-store -l` unless the
/// daemon has `nix-command`; earlier ones, `'nix log …'` in the sentence.
fn full_logs_hint(full: &str, client_minor: u64, settings: &store::nix_conf::Settings) -> String {
    if client_minor < 38 {
        return format!("For full logs, run 'nix log {full}'.");
    }
    let command = if settings.is_enabled(store::nix_conf::ExperimentalFeature::NixCommand) { "nix log" } else { "nix-store -l" };
    format!("For full logs, run:\n  {command} {full}")
}

/// Floating content-addressed outputs: records which path each output
/// became, keyed by the derivation's hash modulo and the output name, so
/// that later requests find it (CppNix `registerOutputs` with
/// ca-derivations).
fn register_realisations(store: &LocalStore, drv: &Derivation, outputs: &BTreeMap<String, StorePath>) -> Result<(), Failure> {
    let mut hasher = store::derivation::DrvHasher::new(store.store_dir().clone(), |q: &StorePath| store.read_derivation(q));
    let hashes = hasher.hash_modulo(drv, true).map_err(|e| Failure(BuildStatus::MiscFailure, e.to_string()))?.hashes;
    for (name, path) in outputs {
        let Some(hash) = hashes.get(name) else { continue };
        let r = store::realisation::Realisation {
            id: store::realisation::DrvOutput { drv_hash: *hash, output: name.clone() },
            out_path: path.clone(),
            signatures: BTreeSet::new(),
            dependent_realisations: BTreeMap::new(),
        };
        store.register_realisation(&r)?;
    }
    Ok(())
}

/// The right platform and the required system features (CppNix
/// `canBuildLocally`, with its message).
fn check_platform(p: &LocalParams, full: &str) -> Result<(), Failure> {
    let s = &p.job.settings;
    let features: BTreeSet<String> = required_features(&p.drv);
    let platform_ok = p.drv.system == s.system || s.extra_platforms.contains(&p.drv.system) || p.drv.is_builtin();
    let features_ok = features.iter().all(|f| s.system_features.contains(f));
    if platform_ok && features_ok {
        return Ok(());
    }
    Err(Failure(
        BuildStatus::InputRejected,
        format!(
            "a '{}' with features {{{}}} is required to build '{full}', but I am a '{}' with features {{{}}}",
            p.drv.system,
            features.iter().cloned().collect::<Vec<_>>().join(", "),
            s.system,
            s.system_features.iter().cloned().collect::<Vec<_>>().join(", "),
        ),
    ))
}

fn required_features(drv: &Derivation) -> BTreeSet<String> {
    if let Ok(Some(json)) = drv.structured_attrs() {
        return json
            .get("requiredSystemFeatures")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
    }
    drv.env_var("requiredSystemFeatures")
        .map(|v| String::from_utf8_lossy(v).split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// CppNix's rules: `sandbox = true` sandboxes everything and refuses
/// `__noChroot`; `relaxed` leaves out fixed-output and impure derivations
/// and those with `__noChroot`; `false` sandboxes nothing.
fn use_sandbox(mode: SandboxMode, drv_type: DerivationType, drv: &Derivation, full: &str) -> Result<bool, Failure> {
    let no_chroot = super::bool_attr(drv, "__noChroot", false);
    match mode {
        SandboxMode::Enabled => {
            if no_chroot {
                return Err(Failure(
                    BuildStatus::InputRejected,
                    format!("derivation '{full}' has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'"),
                ));
            }
            Ok(true)
        }
        SandboxMode::Relaxed => Ok(drv_type.is_sandboxed() && !no_chroot),
        SandboxMode::Disabled => Ok(false),
    }
}

fn acquire_user(p: &LocalParams, group: &str) -> Result<BuildUser, Failure> {
    let state_dir = &p.store.config().state_dir;
    let me = rustix::process::geteuid().as_raw();
    let mut waited = false;
    loop {
        match user_pool::try_acquire(state_dir, group, me) {
            Ok(Some(u)) => return Ok(u),
            Ok(None) => {
                if !waited {
                    tracing::info!("waiting for a free build user ID for '{}'", p.store.display(&p.drv_path));
                    waited = true;
                }
                if p.ctx.cancel.load(Ordering::Relaxed) {
                    return Err(Failure(BuildStatus::MiscFailure, "cancelled".into()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(Failure(BuildStatus::MiscFailure, e.to_string())),
        }
    }
}

/// `<base>/nix-build-<drv name>-<n>`, 0700, owned by the build user.
fn make_build_dir(base: &Path, drv_name: &str, n: u64, user: Option<&BuildUser>) -> Result<PathBuf, Failure> {
    use std::os::unix::fs::DirBuilderExt;
    let mut n = n;
    loop {
        let dir = base.join(format!("nix-build-{drv_name}-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                if let Some(u) = user {
                    std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid))
                        .map_err(|e| format!("changing owner of '{}': {e}", dir.display()))?;
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1_000_000,
            Err(e) => return Err(Failure(BuildStatus::MiscFailure, format!("creating directory '{}': {e}", dir.display()))),
        }
    }
}

fn make_private_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Failure(BuildStatus::MiscFailure, format!("creating directory '{}': {e}", dir.display())))
}

/// CppNix's `makeFallbackPath`: a path of the same name that nothing else
/// uses, for outputs built beside a valid (or not yet known) one.
fn fallback_path(store: &LocalStore, drv_path: &StorePath, what: &str, name: &str) -> Result<StorePath, Failure> {
    let zero = Hash::from_bytes(Algorithm::Sha256, &[0u8; 32]).expect("32 bytes are a SHA-256");
    store
        .store_dir()
        .make_store_path(&format!("rewrite:{drv_path}:{what}"), &zero, name)
        .map_err(|e| Failure(BuildStatus::MiscFailure, e.to_string()))
}

/// The log file of a derivation: `<log dir>/drvs/<2 chars>/<rest>.bz2`.
pub fn log_path(store: &LocalStore, drv_path: &StorePath) -> PathBuf {
    let base = drv_path.to_string();
    let (a, b) = base.split_at(2);
    store.config().log_dir.join("drvs").join(a).join(format!("{b}.bz2"))
}

fn open_log(store: &LocalStore, drv_path: &StorePath, limit: u64) -> Result<BuildLog, Failure> {
    let path = log_path(store, drv_path);
    BuildLog::create(&path, 10, limit)
        .map_err(|e| Failure(BuildStatus::MiscFailure, format!("creating the build log '{}': {e}", path.display())))
}

/// Lays out the chroot; returns the spec the build child enters.
fn prepare_sandbox(p: &LocalParams, root: &Path, tmp_dir: &Path, user: Option<&BuildUser>, drv_type: DerivationType) -> Result<SandboxSpec, Failure> {
    let store = &*p.store;
    let settings = &p.job.settings;
    let mut binds: Vec<BindMount> = settings.sandbox_paths.iter().filter_map(|e| BindMount::parse(e)).collect();
    // CppNix's minimal /dev has /dev/kvm when 'kvm' is a system feature
    // (builders needing it ask for the feature; without /dev/kvm they fail).
    let own_dev = binds.iter().any(|b| b.target.trim_end_matches('/') == "/dev");
    if !own_dev && settings.system_features.contains("kvm") && Path::new("/dev/kvm").exists() {
        binds.push(BindMount { target: "/dev/kvm".into(), source: PathBuf::from("/dev/kvm"), optional: true });
    }
    binds.push(BindMount { target: sandbox::BUILD_DIR_IN_SANDBOX.into(), source: tmp_dir.to_owned(), optional: false });
    if drv_type.is_fixed() || drv_type.is_impure() {
        for f in ["/etc/resolv.conf", "/etc/services", "/etc/hosts"] {
            binds.push(BindMount { target: f.into(), source: PathBuf::from(f), optional: true });
        }
    }
    let mut non_dir = Vec::new();
    for input in &p.inputs {
        let real = store.real_path(input);
        let is_dir = std::fs::symlink_metadata(&real).map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            binds.push(BindMount { target: store.display(input), source: real, optional: false });
        } else {
            non_dir.push(real);
        }
    }
    let user_namespace = sandbox::user_namespaces_supported();
    let (host_uid, host_gid) = match user {
        Some(u) => (u.uid, u.gid),
        None => (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()),
    };
    let (sandbox_uid, sandbox_gid) = if user_namespace { (sandbox::SANDBOX_UID, sandbox::SANDBOX_GID) } else { (host_uid, host_gid) };
    let spec = SandboxSpec {
        root: root.to_owned(),
        store_dir: store.store_dir().as_str().trim_end_matches('/').to_owned(),
        bind_mounts: binds,
        private_network: !(drv_type.is_fixed() || drv_type.is_impure()),
        user_namespace,
        sandbox_uid,
        sandbox_gid,
        host_uid,
        host_gid,
    };
    sandbox::prepare(&spec, &non_dir).map_err(|e| Failure(BuildStatus::MiscFailure, e))?;
    Ok(spec)
}

/// Kills every process of a build user (CppNix `killUser`): builders that
/// left their process group must not outlive the build.
fn kill_user(uid: u32) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/bin/true");
    // SAFETY: the closure runs in the forked child and only makes system
    // calls (setresuid, kill, _exit); it never returns to exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setresuid(uid, uid, uid) != 0 {
                libc::_exit(1);
            }
            // One call signals every process of the user at once (not
            // this one); ESRCH means there were none. Retried only when
            // interrupted, as CppNix does.
            while libc::kill(-1, libc::SIGKILL) != 0 && *libc::__errno_location() == libc::EINTR {}
            libc::_exit(0);
        });
    }
    if let Ok(mut child) = cmd.spawn() {
        let _ = child.wait();
    }
}

/// Removes the build directory (unless kept) and the chroot.
struct Cleanup {
    tmp_dir: Option<PathBuf>,
    chroot: Option<PathBuf>,
    keep: bool,
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
