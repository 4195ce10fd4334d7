//! Running a build's process and following it (CppNix `startBuilder`, the
//! worker's child handling), for the executors: the child's stdout and
//! stderr go to a pseudo-terminal in raw mode (builders see a terminal, as
//! with CppNix). A builder is started either straight from the daemon
//! ([`start_direct`]) or as the build child ([`ChildStarter`]: the spec goes
//! to a root-only file, and the setup handshake is read: `\x02` ready,
//! `\x01` failed, `\x03` asking the parent for user-namespace maps). Then
//! the output is logged line by line while `timeout` and `max-silent-time`
//! are enforced and cancellation is honoured ([`follow`]). Killing is by
//! process group (the child is a session leader; a sandbox's PID 1 dies
//! with it), and by build user ([`kill_user`]).

use super::super::child::ChildSpec;
use super::spec::{ExecError, ExecIo, ExecSpec, RunOutcome};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Starts `armitage __build-child SPEC` (builtins, sandboxes): the spec
/// goes to a file only root can read, in `spec_dir`.
#[derive(Debug, Clone)]
pub struct ChildStarter {
    /// The executable to start as `__build-child`.
    pub exe: PathBuf,
    /// Where the spec files go (root-only).
    pub spec_dir: PathBuf,
}

impl ChildStarter {
    /// Makes the spec directory (0700), before a build starts.
    pub fn prepare(&self) -> Result<(), ExecError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = &self.spec_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| ExecError::Prepare(format!("creating directory '{}': {e}", dir.display())))
    }
}

/// The limits a run is followed under.
pub struct Limits {
    pub timeout: Option<Duration>,
    pub max_silent: Option<Duration>,
}

/// The build child's spec for `spec`, entering `sandbox` when given (then
/// the sandbox user is who runs the builder).
pub fn child_spec(spec: &ExecSpec, sandbox: Option<super::super::sandbox::SandboxSpec>) -> ChildSpec {
    let user = if sandbox.is_some() { None } else { spec.user.as_ref() };
    ChildSpec {
        builder: spec.builder.clone(),
        argv: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.build_dir_inside.clone(),
        uid: user.map(|u| u.uid),
        gid: user.map(|u| u.gid),
        groups: spec.user.as_ref().map(|u| u.groups.clone()).unwrap_or_default(),
        sandbox,
        client_minor: spec.client_minor,
    }
}

/// Follows a started build to its end, then kills whatever the build user
/// left running.
pub fn follow_to_end(
    spec: &ExecSpec,
    started: Result<Running, ExecError>,
    io: &mut ExecIo<'_>,
) -> Result<RunOutcome, ExecError> {
    let result = started.map(|mut running| {
        let limits = Limits { timeout: spec.timeout, max_silent: spec.max_silent };
        follow(&mut running, &limits, io)
    });
    if let Some(u) = &spec.user {
        kill_user(u.uid);
    }
    result
}

fn open_pty(owner: Option<u32>) -> Result<(OwnedFd, OwnedFd), ExecError> {
    open_pty_inner(owner).map_err(ExecError::Terminal)
}

fn open_pty_inner(owner: Option<u32>) -> Result<(OwnedFd, OwnedFd), String> {
    use rustix::pty;
    let master = pty::openpt(pty::OpenptFlags::RDWR | pty::OpenptFlags::NOCTTY | pty::OpenptFlags::CLOEXEC)
        .map_err(|e| format!("opening pseudoterminal master: {e}"))?;
    pty::grantpt(&master).map_err(|e| format!("granting the pseudoterminal: {e}"))?;
    pty::unlockpt(&master).map_err(|e| format!("unlocking the pseudoterminal: {e}"))?;
    let name = pty::ptsname(&master, Vec::new()).map_err(|e| format!("naming the pseudoterminal: {e}"))?;
    let name = {
        use std::os::unix::ffi::OsStrExt;
        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()))
    };
    if let Some(uid) = owner {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("changing mode of pseudoterminal slave: {e}"))?;
        std::os::unix::fs::chown(&name, Some(uid), Some(0))
            .map_err(|e| format!("changing owner of pseudoterminal slave: {e}"))?;
    }
    let slave = rustix::fs::open(
        &name,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("opening pseudoterminal slave: {e}"))?;
    // Raw mode: no \n -> \r\n translation, no echo.
    let mut term = rustix::termios::tcgetattr(&slave).map_err(|e| format!("getting pseudoterminal attributes: {e}"))?;
    term.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &term)
        .map_err(|e| format!("putting pseudoterminal into raw mode: {e}"))?;
    Ok((master, slave))
}

/// A started build child.
pub struct Running {
    child: Child,
    master: std::fs::File,
    stdin: Option<std::process::ChildStdin>,
    killed: bool,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the whole build: the child's process group (and so a sandbox).
    pub fn kill(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        self.killed = true;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.killed && self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
        let _ = self.child.wait();
    }
}

impl ChildStarter {
    /// Starts the build child for `spec` and completes the setup handshake
    /// (the sandbox's user-namespace maps, when it has one). Lines the
    /// child prints before it is ready (sandbox setup chatter) are logged
    /// at debug level.
    pub fn start(&self, spec: &ChildSpec, pty_owner: Option<u32>) -> Result<Running, ExecError> {
        let spec_file = self.spec_dir.join(format!("build-{}-{}.json", std::process::id(), unique()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&spec_file)
                .map_err(|source| ExecError::SpecFile { path: spec_file.clone(), source })?;
            let json = serde_json::to_vec(spec).map_err(|e| ExecError::Internal(e.to_string()))?;
            f.write_all(&json).map_err(|e| ExecError::SpecWrite(e.to_string()))?;
        }
        let (master, slave) = open_pty(pty_owner)?;
        let slave2 = slave.try_clone().map_err(|e| ExecError::Terminal(e.to_string()))?;
        let child = Command::new(&self.exe)
            .arg("__build-child")
            .arg(&spec_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(slave))
            .stderr(Stdio::from(slave2))
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_file(&spec_file);
                ExecError::Spawn(e)
            })?;
        let mut running = Running { stdin: None, master: std::fs::File::from(master), child, killed: false };
        running.stdin = running.child.stdin.take();
        // The handshake: lines until \x02 (ready) or \x01 (failure).
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match running.master.read(&mut byte) {
                Ok(0) => return Err(ExecError::EndedEarly),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    let _ = std::fs::remove_file(&spec_file);
                    return Err(ExecError::EndedEarlyWith(exit_text(running.child.wait().ok())));
                }
                Err(e) => return Err(ExecError::Read(e)),
            }
            if byte[0] != b'\n' {
                line.push(byte[0]);
                continue;
            }
            match line.first() {
                Some(2) => return Ok(running),
                Some(1) => {
                    // The error message follows, up to the end of the output.
                    let mut rest = Vec::new();
                    let _ = read_to_eio(&mut running.master, &mut rest);
                    let _ = running.child.wait();
                    let msg = String::from_utf8_lossy(&rest).trim_end().to_owned();
                    return Err(ExecError::SetupFailed(msg));
                }
                Some(3) => {
                    let sandbox = spec
                        .sandbox
                        .as_ref()
                        .ok_or_else(|| ExecError::IdMaps("the build process asked for user namespace maps".into()))?;
                    super::super::sandbox::write_id_maps(running.child.id(), sandbox).map_err(ExecError::IdMaps)?;
                    if let Some(stdin) = running.stdin.as_mut() {
                        stdin
                            .write_all(b"1")
                            .map_err(|e| ExecError::IdMaps(format!("signalling the build process: {e}")))?;
                    }
                }
                _ => tracing::debug!("sandbox setup: {}", String::from_utf8_lossy(&line)),
            }
            line.clear();
        }
    }
}

/// Without a sandbox or a builtin builder there is nothing to set up but
/// the session, the build user and the working directory: the builder is
/// started straight from the daemon (a fork, no re-exec of armitage, no
/// spec file), which saves most of a build's own overhead (bench/build.sh).
pub fn start_direct(spec: &ChildSpec, pty_owner: Option<u32>) -> Result<Running, ExecError> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let (master, slave) = open_pty(pty_owner)?;
    let slave2 = slave.try_clone().map_err(|e| ExecError::Terminal(e.to_string()))?;
    let mut cmd = Command::new(&spec.builder);
    if let Some((argv0, rest)) = spec.argv.split_first() {
        cmd.arg0(OsStr::from_bytes(argv0));
        cmd.args(rest.iter().map(|a| OsStr::from_bytes(a)));
    }
    cmd.env_clear()
        .envs(spec.env.iter().map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v))))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::from(slave2));
    let (uid, gid) = (spec.uid, spec.gid);
    if uid.is_none() && gid.is_none() {
        // Nobody to become: a process group of its own is all (the daemon
        // kills the build by it), which lets std use posix_spawn instead of
        // forking the whole multi-threaded daemon.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|source| ExecError::Exec { builder: spec.builder.clone(), source })?;
        return Ok(Running { stdin: None, master: std::fs::File::from(master), child, killed: false });
    }
    let groups: Vec<libc::gid_t> = spec.groups.clone();
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own: the daemon kills the build by its group.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(gid) = gid
                && (libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setresgid(gid, gid, gid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(uid) = uid
                && libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ExecError::Exec { builder: spec.builder.clone(), source })?;
    Ok(Running { stdin: None, master: std::fs::File::from(master), child, killed: false })
}

fn read_to_eio(f: &mut std::fs::File, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// CppNix's `statusToString`.
pub fn exit_text(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.success() => "succeeded".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("failed with exit code {code}"),
            (None, Some(sig)) => format!("failed due to signal {sig} ({})", signal_name(sig)),
            _ => "died abnormally".into(),
        },
        None => "died abnormally".into(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "Hangup",
        2 => "Interrupt",
        3 => "Quit",
        6 => "Aborted",
        9 => "Killed",
        11 => "Segmentation fault",
        13 => "Broken pipe",
        14 => "Alarm clock",
        15 => "Terminated",
        _ => "Unknown signal",
    }
}

/// Follows a started build to its end, feeding its output to `log` and
/// every finished line to `on_line`.
pub fn follow(running: &mut Running, limits: &Limits, io: &mut ExecIo<'_>) -> RunOutcome {
    let started = Instant::now();
    let mut last_output = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited: Option<ExitStatus> = None;
    loop {
        if io.cancel.load(Ordering::Relaxed) {
            running.kill();
            return RunOutcome::Cancelled;
        }
        if exited.is_none()
            && let Ok(Some(status)) = running.child.try_wait()
        {
            exited = Some(status);
            // Stragglers of the build must not outlive it (they would
            // also keep the log open).
            running.kill();
        }
        let now = Instant::now();
        if let Some(t) = limits.max_silent
            && now.duration_since(last_output) >= t
        {
            running.kill();
            return RunOutcome::TimedOut { silence: true };
        }
        if let Some(t) = limits.timeout
            && now.duration_since(started) >= t
        {
            running.kill();
            return RunOutcome::TimedOut { silence: false };
        }
        let master_fd = running.master.as_fd();
        let mut fds = [PollFd::new(&master_fd, PollFlags::IN)];
        let wait = rustix::event::Timespec { tv_sec: 0, tv_nsec: 100_000_000 };
        match rustix::event::poll(&mut fds, Some(&wait)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        match running.master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                last_output = Instant::now();
                for line in io.log.feed(&buf[..n]) {
                    (io.on_line)(line);
                }
                if io.log.over_limit() {
                    running.kill();
                    return RunOutcome::LogLimit;
                }
            }
            // EIO: every holder of the slave side is gone.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if let Some(line) = io.log.finish() {
        (io.on_line)(line);
    }
    let status = match exited {
        Some(s) => s,
        None => match running.child.wait() {
            Ok(s) => s,
            Err(_) => return RunOutcome::Cancelled,
        },
    };
    running.killed = true;
    RunOutcome::Exited(status)
}

/// Kills every process of a build user (CppNix `killUser`): builders that
/// left their process group must not outlive the build.
pub fn kill_user(uid: u32) {
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
