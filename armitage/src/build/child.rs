//! The build child: the process that becomes the builder. The daemon starts
//! its own executable as `armitage __build-child SPEC` (a fresh,
//! single-threaded process, so setting up namespaces and mounts needs no
//! care about threads), which reads the spec, enters the sandbox if asked,
//! drops to the build user, and execs the builder.
//!
//! It speaks CppNix's convention on its stderr (the log pty): a line
//! starting with `\x02` when the environment is set up (the builder runs
//! next), or a line starting with `\x01` followed by an error message on
//! failure (then exit 1). The daemon reads up to the first of them.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// Everything the build child needs. Written by the daemon to a file only
/// root can read, passed by path, deleted by the child once read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    /// The program to run (a path, or `builtin:<name>`).
    pub builder: String,
    /// `argv[0]` followed by the arguments.
    pub argv: Vec<Vec<u8>>,
    /// The complete environment.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// The working directory (as the builder sees it).
    pub cwd: PathBuf,
    /// Run as this user and group (none: stay who we are).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary groups (when not sandboxed).
    pub groups: Vec<u32>,
    /// Set up a sandbox first.
    pub sandbox: Option<super::sandbox::SandboxSpec>,
    /// The protocol minor of the client whose request started the build
    /// (0: unknown): builtins word some messages after its Nix version.
    #[serde(default)]
    pub client_minor: u64,
}

/// Runs the child side; never returns on success (the builder replaces us).
pub fn run(spec_path: &std::path::Path) -> ! {
    let result = (|| -> Result<std::convert::Infallible, String> {
        let text =
            std::fs::read(spec_path).map_err(|e| format!("reading the build spec '{}': {e}", spec_path.display()))?;
        let _ = std::fs::remove_file(spec_path);
        let spec: ChildSpec = serde_json::from_slice(&text).map_err(|e| format!("parsing the build spec: {e}"))?;
        exec(spec)
    })();
    let message = match result {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let mut err = std::io::stderr().lock();
    // Before the ready line the daemon reads this as the setup failure;
    // after it (the builder could not be executed), as the build's log.
    if READY.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = writeln!(err, "{message}");
    } else {
        let _ = write!(err, "\x01\n{message}\n");
    }
    let _ = err.flush();
    std::process::exit(1);
}

fn exec(spec: ChildSpec) -> Result<std::convert::Infallible, String> {
    use rustix::process;
    // A session of its own: the daemon kills the build by its process group.
    let _ = process::setsid();
    if let Some(sandbox) = &spec.sandbox {
        super::sandbox::enter(sandbox)?;
    } else {
        if let Some(gid) = spec.gid {
            let groups: Vec<rustix::process::Gid> =
                spec.groups.iter().map(|g| rustix::process::Gid::from_raw(*g)).collect();
            rustix::thread::set_thread_groups(&groups).map_err(|e| format!("setgroups failed: {e}"))?;
            rustix::thread::set_thread_res_gid(
                rustix::process::Gid::from_raw(gid),
                rustix::process::Gid::from_raw(gid),
                rustix::process::Gid::from_raw(gid),
            )
            .map_err(|e| format!("setgid failed: {e}"))?;
        }
        if let Some(uid) = spec.uid {
            let u = rustix::process::Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(u, u, u).map_err(|e| format!("setuid failed: {e}"))?;
        }
    }
    std::env::set_current_dir(&spec.cwd)
        .map_err(|e| format!("changing into directory '{}': {e}", spec.cwd.display()))?;
    if let Some(name) = spec.builder.strip_prefix("builtin:") {
        // As in CppNix, a builtin's failure (an unknown one's too) is the
        // build's: its message goes to the log, after the ready line.
        signal_ready();
        let cx = super::builtins::Context { env: &spec.env, client_minor: spec.client_minor };
        let code = match super::builtins::run(name, &cx) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        };
        std::process::exit(code);
    }
    signal_ready();
    let err = exec_builder(&spec);
    Err(format!("executing '{}': {err}", spec.builder))
}

/// Tells the daemon the environment is ready (CppNix's `\2\n`).
static READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn signal_ready() {
    READY.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\x02\n");
    let _ = err.flush();
}

fn exec_builder(spec: &ChildSpec) -> std::io::Error {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&spec.builder);
    if let Some((argv0, rest)) = spec.argv.split_first() {
        cmd.arg0(OsStr::from_bytes(argv0));
        cmd.args(rest.iter().map(|a| OsStr::from_bytes(a)));
    }
    cmd.env_clear();
    cmd.envs(spec.env.iter().map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v))));
    // Replaces this process; returns only on failure.
    cmd.exec()
}
