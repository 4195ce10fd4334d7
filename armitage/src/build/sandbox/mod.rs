//! The Linux build sandbox (CppNix's chroot build in
//! src/libstore/build/local-derivation-goal.cc, `startBuilder` and
//! `runChild`): private mount, PID, IPC, UTS and (unless the derivation is
//! fixed-output) network namespaces — a fixed-output build under the
//! witness joins the namespace the daemon made for it instead —, a user namespace when the kernel allows
//! it, and a chroot holding only the input closure, `sandbox-paths`, the
//! build directory, a private /tmp and a minimal /dev and /proc.
//!
//! Parent side: [`prepare`] lays out the chroot directory before the child
//! starts (the files, directories and mount points); [`write_id_maps`] maps
//! the sandbox user onto the build user when the child asks (it cannot map
//! other ids itself). Child side: [`enter`] runs in the build child (a fresh
//! single-threaded process) and returns in the process that then becomes
//! the builder.
//!
//! The protocol between them, on top of the build child's `\x01`/`\x02`
//! lines: with a user namespace, [`enter`] writes a line starting with
//! `\x03` on stderr once it has unshared its namespaces and blocks reading
//! one byte from stdin; the parent answers with [`write_id_maps`] for the
//! build child's pid and then writes `1` on the child's stdin. Without a
//! user namespace there is no exchange.
//!
//! Processes: [`enter`] unshares every namespace in the build child itself
//! (so the pid the parent knows is the one whose maps it writes), then forks.
//! The forked process is PID 1 of the new PID namespace; it builds the
//! chroot, switches to the sandbox user and returns (to exec the builder).
//! The build child stays outside the PID namespace, waits for it and exits
//! with its status. PID 1 dies with the build child (parent-death signal),
//! and when PID 1 dies the kernel kills everything else in the namespace, so
//! killing the build child's process group tears the whole build down.
//!
//! Deliberate differences from CppNix: input paths (bind mounts inside the
//! store directory) are mounted read-only; the sandbox runs with
//! `no_new_privs` (CppNix's default `allow-new-privileges = false`, which it
//! applies with its seccomp filter); there is no seccomp filter (the
//! outputs' setuid bits are cleared when they are canonicalised); the store
//! directory is not a shared subtree (nothing adds paths to a running
//! sandbox).

mod mounts;
mod namespaces;
mod prepare;
pub mod shell;
mod spec;

pub use spec::{BUILD_DIR_IN_SANDBOX, BindMount, SANDBOX_GID, SANDBOX_UID, SandboxNetwork, SandboxSpec};

use std::path::PathBuf;

/// Whether the kernel lets us create user namespaces (CppNix's check:
/// `/proc/sys/user/max_user_namespaces` exists and is not 0).
/// Read once per daemon, as CppNix does.
pub fn user_namespaces_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED
        .get_or_init(|| std::fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|s| s.trim() != "0"))
}

/// Parent side, before the child starts: creates the chroot directory
/// `spec.root` (mode 0750, owned by root and the build group; missing
/// parents are created 0700), with `/tmp` (1777), `/etc/passwd`,
/// `/etc/group`, `/etc/hosts` (private network) or `/etc/nsswitch.conf`
/// (fixed-output), the store directory (1775, root and the build group),
/// the skeleton of /dev and /proc, a mount point for every bind mount, and
/// hard links (copies where linking fails) of `non_dir_inputs`, which are
/// store paths (their location inside the sandbox is their own path).
/// A chroot left over from an earlier build is removed first.
pub fn prepare(spec: &SandboxSpec, non_dir_inputs: &[PathBuf]) -> Result<(), String> {
    prepare::prepare(spec, non_dir_inputs)
}

/// Parent side: writes the child's uid/gid maps (called when the child
/// reports, with a `\x03` line, that it created its user namespace; then
/// the parent writes `1` on the child's stdin).
pub fn write_id_maps(child: u32, spec: &SandboxSpec) -> Result<(), String> {
    namespaces::write_id_maps(child, spec)
}

/// Child side: enters the sandbox; returns in the process that execs the
/// builder, which is then PID 1 of the sandbox, inside the chroot (cwd not
/// set), running as `sandbox_uid`/`sandbox_gid` with /dev/null on stdin.
/// The build child itself never returns from here on success: it waits for
/// that process and exits with its status.
pub fn enter(spec: &SandboxSpec) -> Result<(), String> {
    spec::check_spec(spec)?;
    namespaces::drop_supplementary_groups()?;
    if let SandboxNetwork::Join(path) = &spec.network {
        namespaces::join_network(path)?;
    }
    namespaces::unshare(spec)?;
    if spec.user_namespace {
        namespaces::await_id_maps()?;
    }
    let dev_null = namespaces::open_dev_null()?;
    let watch = namespaces::become_pid1()?;
    if spec.network == SandboxNetwork::Private {
        crate::loopback::bring_up()?;
    }
    namespaces::set_host_and_domain_name()?;
    mounts::build_root(spec)?;
    namespaces::become_sandbox_user(spec, dev_null, &watch)
}
