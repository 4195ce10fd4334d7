//! Namespaces and identity: unsharing the namespaces, the user-namespace
//! handshake with the parent (and the parent's half, the id maps), the fork
//! that makes PID 1 of the PID namespace, the loopback interface, the host
//! and domain names, and the switch to the sandbox user.
//!
//! CppNix clones the builder with all the namespace flags at once from a
//! helper process; the build child is already a fresh single-threaded
//! process, so it unshares in place (the parent knows its pid and writes its
//! maps) and forks once for the PID namespace.

use super::spec::{SandboxNetwork, SandboxSpec};
use rustix::fd::{AsFd, OwnedFd};
use rustix::process::{Pid, Signal};
use std::io::Write;

/// Drops the supplementary groups while that is still possible (not in a
/// user namespace, where `setgroups` is denied): the builder must not keep
/// the daemon's groups. Only root can; others keep theirs (mapped to
/// `nogroup` inside, CppNix's known limitation).
pub(super) fn drop_supplementary_groups() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    rustix::thread::set_thread_groups(&[]).map_err(|e| format!("setgroups failed: {e}"))
}

/// Joins the network namespace the daemon prepared. Before [`unshare`]:
/// joining takes `CAP_SYS_ADMIN` over the namespace, which the build child
/// has as root and loses in a user namespace of its own.
pub(super) fn join_network(path: &std::path::Path) -> Result<(), String> {
    use rustix::fs::{Mode, OFlags};
    let what = |e| format!("cannot join the build's network namespace '{}': {e}", path.display());
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(what)?;
    rustix::thread::move_into_link_name_space(fd.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .map_err(what)
}

/// Unshares the user (when asked), mount, PID, IPC, UTS and (for a private
/// network) network namespaces. The PID namespace is for the children.
pub(super) fn unshare(spec: &SandboxSpec) -> Result<(), String> {
    use rustix::thread::UnshareFlags;
    let mut flags = UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if spec.network == SandboxNetwork::Private {
        flags |= UnshareFlags::NEWNET;
    }
    if spec.user_namespace {
        flags |= UnshareFlags::NEWUSER;
    }
    // SAFETY: the danger of unshare is `CLONE_FILES` splitting the file
    // descriptor table between threads; it is not among the flags, and the
    // build child is single-threaded anyway.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(|e| {
        let hint = if spec.user_namespace
            && matches!(e, rustix::io::Errno::PERM | rustix::io::Errno::INVAL | rustix::io::Errno::NOSPC)
        {
            "; check /proc/sys/user/max_user_namespaces"
        } else {
            ""
        };
        format!("cannot create the build's namespaces: {e}{hint}")
    })
}

/// The child's half of the handshake: asks the parent for the id maps (a
/// `\x03` line on stderr) and waits for its `1` on stdin.
pub(super) fn await_id_maps() -> Result<(), String> {
    {
        let mut err = std::io::stderr().lock();
        err.write_all(b"\x03\n")
            .and_then(|()| err.flush())
            .map_err(|e| format!("asking for the user namespace maps: {e}"))?;
    }
    let stdin = std::io::stdin();
    let mut byte = [0u8; 1];
    // Straight from the descriptor: std's stdin would buffer.
    let n = loop {
        match rustix::io::read(stdin.as_fd(), &mut byte) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other,
        }
    };
    match n {
        Ok(1) if byte[0] == b'1' => Ok(()),
        _ => Err("user namespace initialisation failed".into()),
    }
}

/// The parent's half: maps the sandbox user and group to the host's, one id
/// each, and denies `setgroups` inside (CppNix's `startBuilder`).
pub(super) fn write_id_maps(child: u32, spec: &SandboxSpec) -> Result<(), String> {
    write_proc(child, "uid_map", &format!("{} {} 1", spec.sandbox_uid, spec.host_uid))?;
    write_proc(child, "setgroups", "deny")?;
    write_proc(child, "gid_map", &format!("{} {} 1", spec.sandbox_gid, spec.host_gid))
}

/// These files take their whole content in one `write`.
fn write_proc(pid: u32, name: &str, content: &str) -> Result<(), String> {
    use rustix::fs::{Mode, OFlags};
    let path = format!("/proc/{pid}/{name}");
    let fd = rustix::fs::open(&path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening '{path}': {e}"))?;
    match rustix::io::write(&fd, content.as_bytes()) {
        Ok(n) if n == content.len() => Ok(()),
        Ok(_) => Err(format!("writing '{path}': short write")),
        Err(e) => Err(format!("writing '{path}': {e}")),
    }
}

/// The host's /dev/null, opened before the chroot: the builder's stdin.
pub(super) fn open_dev_null() -> Result<OwnedFd, String> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening /dev/null: {e}"))
}

/// Tells PID 1 whether the build child (its parent) is still there: the
/// build child holds the write end of a pipe until it dies.
pub(super) struct ParentWatch(std::io::PipeReader);

impl ParentWatch {
    /// Arms the parent-death signal and exits at once if the parent is
    /// already gone (it may have died before the signal was armed). To be
    /// called again after every change of credentials, which disarms it.
    pub(super) fn arm(&self) -> Result<(), String> {
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
            .map_err(|e| format!("setting the parent-death signal: {e}"))?;
        use rustix::event::{PollFd, PollFlags};
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            // Nobody is ever written to the pipe: readable means closed.
            Ok(n) if n > 0 => std::process::exit(1),
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(format!("watching the build process: {e}")),
        }
    }
}

/// Forks the process that becomes PID 1 of the new PID namespace and
/// returns in it. The build child itself waits for it and exits with its
/// status, never returning.
pub(super) fn become_pid1() -> Result<ParentWatch, String> {
    let (reader, writer) = std::io::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    // SAFETY: the build child is single-threaded (a fresh process that
    // only read its spec), so no lock can be held by another thread across
    // the fork; the child goes on with ordinary code and ends in exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("cannot fork the sandbox's init process: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(writer);
        let watch = ParentWatch(reader);
        watch.arm()?;
        return Ok(watch);
    }
    drop(reader);
    let pid = Pid::from_raw(pid).ok_or("fork returned a bad pid")?;
    wait_and_mirror(pid, writer)
}

/// The build child after the fork: waits for PID 1 and ends the same way
/// (exit code, or the signal that killed it).
fn wait_and_mirror(pid: Pid, _watch: std::io::PipeWriter) -> ! {
    // The sandbox's stdin is /dev/null; the parent's pipe is not needed.
    if let Ok(null) = open_dev_null() {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    let status = loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, status))) => break status,
            Ok(None) | Err(rustix::io::Errno::INTR) => continue,
            Err(_) => std::process::exit(1),
        }
    };
    if let Some(code) = status.exit_status() {
        std::process::exit(code);
    }
    if let Some(sig) = status.terminating_signal() {
        // No core of ours: PID 1 may already have left one.
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Core,
            rustix::process::Rlimit { current: Some(0), maximum: None },
        );
        // SAFETY: restoring the default action of a signal we do not
        // handle; nothing else runs in this process.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        if let Some(signal) = Signal::from_named_raw(sig) {
            let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(1)
}

/// CppNix's fixed values: host name `localhost`, domain name `(none)` (the
/// kernel's default).
pub(super) fn set_host_and_domain_name() -> Result<(), String> {
    rustix::system::sethostname(b"localhost").map_err(|e| format!("cannot set host name: {e}"))?;
    rustix::system::setdomainname(b"(none)").map_err(|e| format!("cannot set domain name: {e}"))
}

/// The last steps in PID 1, inside the chroot: become the sandbox user,
/// take /dev/null as stdin, forbid gaining privileges, re-arm the
/// parent-death signal (changing credentials disarmed it).
pub(super) fn become_sandbox_user(spec: &SandboxSpec, dev_null: OwnedFd, watch: &ParentWatch) -> Result<(), String> {
    use rustix::process::{Gid, Uid};
    let gid = Gid::from_raw(spec.sandbox_gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(|e| format!("setgid failed: {e}"))?;
    let uid = Uid::from_raw(spec.sandbox_uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(|e| format!("setuid failed: {e}"))?;
    rustix::stdio::dup2_stdin(&dev_null).map_err(|e| format!("redirecting stdin to /dev/null: {e}"))?;
    drop(dev_null);
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("setting no_new_privs: {e}"))?;
    watch.arm()
}
