//! The Linux build sandbox (CppNix's chroot build in
//! src/libstore/build/local-derivation-goal.cc, `startBuilder` and
//! `runChild`): private mount, PID, IPC, UTS and (unless the derivation is
//! fixed-output) network namespaces, a user namespace when the kernel allows
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

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Where the build directory appears inside the sandbox (CppNix's default
/// `sandbox-build-dir`; also the home of the sandbox user in /etc/passwd).
pub const BUILD_DIR_IN_SANDBOX: &str = "/build";
/// The builder's uid inside a user namespace (CppNix's `sandboxUid`).
pub const SANDBOX_UID: u32 = 1000;
/// The builder's gid inside a user namespace (CppNix's `sandboxGid`).
pub const SANDBOX_GID: u32 = 100;

/// A directory or file made visible inside the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BindMount {
    /// Where it appears inside the sandbox (absolute).
    pub target: String,
    /// What it is on the host.
    pub source: PathBuf,
    /// A missing source is skipped instead of failing the build.
    pub optional: bool,
}

impl BindMount {
    /// Parses one `sandbox-paths` entry as CppNix does: `path`,
    /// `target=source`, either with a trailing `?` for "skip when missing".
    /// An empty entry gives nothing.
    pub fn parse(entry: &str) -> Option<BindMount> {
        if entry.is_empty() {
            return None;
        }
        let (entry, optional) = match entry.strip_suffix('?') {
            Some(rest) => (rest, true),
            None => (entry, false),
        };
        let (target, source) = entry.split_once('=').unwrap_or((entry, entry));
        Some(BindMount { target: target.to_owned(), source: PathBuf::from(source), optional })
    }
}

/// How to set up a sandbox for one build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The chroot directory on the host (`<drv path>.chroot`), prepared by [`prepare`].
    pub root: PathBuf,
    /// The store directory (as builders see it, also inside).
    pub store_dir: String,
    /// What to bind-mount: `sandbox-paths`, the build directory (at
    /// `/build`), and the input closure's directories.
    pub bind_mounts: Vec<BindMount>,
    /// No network but a loopback interface (everything but fixed-output derivations).
    pub private_network: bool,
    /// Map the sandbox user through a user namespace (the parent writes the maps).
    pub user_namespace: bool,
    /// The builder's uid/gid inside the sandbox (1000/100 with a user
    /// namespace, as CppNix; else the build user's own).
    pub sandbox_uid: u32,
    pub sandbox_gid: u32,
    /// Who that is on the host (the build user, or the daemon's user).
    pub host_uid: u32,
    pub host_gid: u32,
}

/// Whether the kernel lets us create user namespaces (CppNix's check:
/// `/proc/sys/user/max_user_namespaces` exists and is not 0).
/// Read once per daemon, as CppNix does.
pub fn user_namespaces_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| std::fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|s| s.trim() != "0"))
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
    check_spec(spec)?;
    namespaces::drop_supplementary_groups()?;
    namespaces::unshare(spec)?;
    if spec.user_namespace {
        namespaces::await_id_maps()?;
    }
    let dev_null = namespaces::open_dev_null()?;
    let watch = namespaces::become_pid1()?;
    if spec.private_network {
        namespaces::bring_up_loopback()?;
    }
    namespaces::set_host_and_domain_name()?;
    mounts::build_root(spec)?;
    namespaces::become_sandbox_user(spec, dev_null, &watch)
}

/// `target` as a path below `root` (`target` is absolute, without `..`).
fn in_root(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

/// Whether `target` is a store path (or below one): those are inputs and
/// mounted read-only.
fn is_in_store(store_dir: &str, target: &str) -> bool {
    target.strip_prefix(store_dir.trim_end_matches('/')).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// Paths the sandbox puts somewhere must be absolute and must not climb out
/// of the chroot.
fn check_absolute(what: &str, path: &Path) -> Result<(), String> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{what} '{}' must be an absolute path without '..'", path.display()));
    }
    Ok(())
}

fn check_spec(spec: &SandboxSpec) -> Result<(), String> {
    check_absolute("the chroot directory", &spec.root)?;
    check_absolute("the store directory", Path::new(&spec.store_dir))?;
    if spec.root.parent().is_none() {
        return Err("the chroot directory cannot be '/'".into());
    }
    for b in &spec.bind_mounts {
        check_absolute("the sandbox path", Path::new(&b.target))?;
        if b.target.trim_start_matches('/').is_empty() {
            return Err(format!("cannot bind-mount '{}' over the sandbox's root", b.source.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_syntax() {
        assert_eq!(BindMount::parse(""), None);
        assert_eq!(
            BindMount::parse("/bin/sh"),
            Some(BindMount { target: "/bin/sh".into(), source: "/bin/sh".into(), optional: false })
        );
        assert_eq!(
            BindMount::parse("/bin/sh=/nix/store/x-bash/bin/bash"),
            Some(BindMount { target: "/bin/sh".into(), source: "/nix/store/x-bash/bin/bash".into(), optional: false })
        );
        assert_eq!(
            BindMount::parse("/etc/x=/opt/y?"),
            Some(BindMount { target: "/etc/x".into(), source: "/opt/y".into(), optional: true })
        );
        assert_eq!(BindMount::parse("/lib64?"), Some(BindMount { target: "/lib64".into(), source: "/lib64".into(), optional: true }));
    }

    #[test]
    fn store_targets() {
        assert!(is_in_store("/nix/store", "/nix/store/abc-foo"));
        assert!(is_in_store("/nix/store/", "/nix/store/abc-foo"));
        assert!(!is_in_store("/nix/store", "/nix/store"));
        assert!(!is_in_store("/nix/store", "/nix/store/"));
        assert!(!is_in_store("/nix/store", "/nix/storex/abc"));
        assert!(!is_in_store("/nix/store", "/bin"));
    }

    #[test]
    fn targets_stay_in_root() {
        assert_eq!(in_root(Path::new("/r"), "/bin/sh"), PathBuf::from("/r/bin/sh"));
        assert!(check_absolute("x", Path::new("/a/../b")).is_err());
        assert!(check_absolute("x", Path::new("a")).is_err());
        assert!(check_absolute("x", Path::new("/a/b")).is_ok());
    }
}
