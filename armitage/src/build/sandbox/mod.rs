//! The Linux build sandbox (CppNix's chroot build in
//! src/libstore/build/local-derivation-goal.cc, `startBuilder` and
//! `runChild`): private mount, PID, IPC, UTS and (unless the derivation is
//! fixed-output) network namespaces, a user namespace when the kernel allows
//! it, and a chroot holding only the input closure, `sandbox-paths`, the
//! build directory, a private /tmp and a minimal /dev and /proc.
//!
//! Parent side: [`prepare`] builds the chroot directory before the child
//! starts; [`write_id_maps`] maps the sandbox user onto the build user when
//! the child asks (it cannot map other ids itself). Child side: [`enter`]
//! runs in the build child (a fresh single-threaded process) and returns in
//! the process that then becomes the builder.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

/// Parent side, before the child starts: creates the chroot directory
/// (`/tmp`, `/etc/passwd`, `/etc/group`, `/etc/hosts`, the store dir, links
/// for non-directory inputs) as CppNix does.
pub fn prepare(_spec: &SandboxSpec, _non_dir_inputs: &[PathBuf]) -> Result<(), String> {
    Err("the build sandbox is not implemented yet".into())
}

/// Parent side: writes the child's uid/gid maps (called when the child
/// reports, with a `\x03` line, that it created its user namespace).
pub fn write_id_maps(_child: u32, _spec: &SandboxSpec) -> Result<(), String> {
    Err("the build sandbox is not implemented yet".into())
}

/// Child side: enters the sandbox; returns in the process that execs the builder.
pub fn enter(_spec: &SandboxSpec) -> Result<(), String> {
    Err("the build sandbox is not implemented yet".into())
}
