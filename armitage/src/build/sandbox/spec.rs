//! What a sandbox is made of (the chroot, the bind mounts, the ids inside
//! and outside) and the checks every path put into it passes.

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

/// The network a sandbox has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum SandboxNetwork {
    /// The host's (fixed-output derivations under `network = host`, as in
    /// CppNix): the host's resolver files are mounted.
    Host,
    /// A namespace of its own with nothing but a loopback interface
    /// (everything but fixed-output derivations).
    Private,
    /// The namespace the daemon prepared, named by a path that opens it
    /// (`/proc/<daemon>/fd/<n>`): the witness's, whose only way out is the
    /// witness proxy's listener inside it. Joined before the user namespace
    /// is made, while the build child is still root.
    Join(PathBuf),
}

impl SandboxNetwork {
    /// Whether the builder is cut off from the host's network (then it
    /// gets `/etc/hosts` with `localhost` and none of the host's resolver
    /// files).
    pub fn is_isolated(&self) -> bool {
        !matches!(self, SandboxNetwork::Host)
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
    /// The network namespace the builder runs in.
    pub network: SandboxNetwork,
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

/// `target` as a path below `root` (`target` is absolute, without `..`).
pub(super) fn in_root(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

/// Whether `target` is a store path (or below one): those are inputs and
/// mounted read-only.
pub(super) fn is_in_store(store_dir: &str, target: &str) -> bool {
    target.strip_prefix(store_dir.trim_end_matches('/')).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// Paths the sandbox puts somewhere must be absolute and must not climb out
/// of the chroot.
pub(super) fn check_absolute(what: &str, path: &Path) -> Result<(), String> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{what} '{}' must be an absolute path without '..'", path.display()));
    }
    Ok(())
}

pub(super) fn check_spec(spec: &SandboxSpec) -> Result<(), String> {
    check_absolute("the chroot directory", &spec.root)?;
    check_absolute("the store directory", Path::new(&spec.store_dir))?;
    if spec.root.parent().is_none() {
        return Err("the chroot directory cannot be '/'".into());
    }
    if let SandboxNetwork::Join(path) = &spec.network {
        check_absolute("the network namespace", path)?;
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
        assert_eq!(
            BindMount::parse("/lib64?"),
            Some(BindMount { target: "/lib64".into(), source: "/lib64".into(), optional: true })
        );
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
