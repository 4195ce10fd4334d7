//! The executor with the Linux sandbox ([`super::super::sandbox`]): the
//! chroot is laid out on the host before the build starts (the input
//! closure's directories, `sandbox-paths`, the build directory at `/build`,
//! /dev/kvm with the `kvm` feature, the host's resolver files when the
//! build gets the host's network); the build child then enters it (fresh
//! namespaces, a user namespace when the kernel allows it; the network
//! namespace the witness made, for a witnessed fixed-output build) and runs
//! the builder as the sandbox user.

use super::super::sandbox::{self, BindMount, SandboxNetwork, SandboxSpec};
use super::run::ChildStarter;
use super::spec::{ExecError, ExecIo, ExecSpec, Executor, Network, RunOutcome, Setup};
use std::path::{Path, PathBuf};

/// Runs builders in the namespace sandbox.
pub struct Namespaces {
    child: ChildStarter,
}

impl Namespaces {
    pub fn new(child: ChildStarter) -> Namespaces {
        Namespaces { child }
    }
}

/// The sandbox for `spec` in `root`, and the inputs that are not
/// directories (linked into the chroot rather than bind-mounted).
fn sandbox_spec(spec: &ExecSpec, root: &Path) -> (SandboxSpec, Vec<PathBuf>) {
    let mut binds: Vec<BindMount> = spec.sandbox_paths.iter().filter_map(|e| BindMount::parse(e)).collect();
    // CppNix's minimal /dev has /dev/kvm when 'kvm' is a system feature
    // (builders needing it ask for the feature; without /dev/kvm they fail).
    let own_dev = binds.iter().any(|b| b.target.trim_end_matches('/') == "/dev");
    if !own_dev && spec.kvm && Path::new("/dev/kvm").exists() {
        binds.push(BindMount { target: "/dev/kvm".into(), source: PathBuf::from("/dev/kvm"), optional: true });
    }
    binds.push(BindMount {
        target: sandbox::BUILD_DIR_IN_SANDBOX.into(),
        source: spec.build_dir.clone(),
        optional: false,
    });
    if spec.network == Network::Host {
        for f in ["/etc/resolv.conf", "/etc/services", "/etc/hosts"] {
            binds.push(BindMount { target: f.into(), source: PathBuf::from(f), optional: true });
        }
    }
    let mut non_dir = Vec::new();
    for (inside, real) in &spec.inputs {
        let is_dir = std::fs::symlink_metadata(real).map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            binds.push(BindMount { target: inside.clone(), source: real.clone(), optional: false });
        } else {
            non_dir.push(real.clone());
        }
    }
    let user_namespace = sandbox::user_namespaces_supported();
    let (host_uid, host_gid) = match &spec.user {
        Some(u) => (u.uid, u.gid),
        None => (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()),
    };
    let (sandbox_uid, sandbox_gid) =
        if user_namespace { (sandbox::SANDBOX_UID, sandbox::SANDBOX_GID) } else { (host_uid, host_gid) };
    let sandbox = SandboxSpec {
        root: root.to_owned(),
        store_dir: spec.store_dir.trim_end_matches('/').to_owned(),
        bind_mounts: binds,
        network: match &spec.network {
            Network::None => SandboxNetwork::Private,
            Network::Host => SandboxNetwork::Host,
            Network::Namespace(path) => SandboxNetwork::Join(path.clone()),
        },
        user_namespace,
        sandbox_uid,
        sandbox_gid,
        host_uid,
        host_gid,
    };
    (sandbox, non_dir)
}

impl Executor for Namespaces {
    fn prepare(&self, spec: &ExecSpec) -> Result<Setup, ExecError> {
        sandbox::shell::check_builder(&spec.builder, &spec.sandbox_paths).map_err(ExecError::Prepare)?;
        let root = spec
            .chroot
            .as_deref()
            .ok_or_else(|| ExecError::Internal("internal error: a sandboxed build without a chroot".into()))?;
        let (sandbox, non_dir) = sandbox_spec(spec, root);
        sandbox::prepare(&sandbox, &non_dir).map_err(ExecError::Prepare)?;
        self.child.prepare()?;
        Ok(Setup::Sandbox(sandbox))
    }

    fn run(&self, spec: &ExecSpec, setup: Setup, io: &mut ExecIo<'_>) -> Result<RunOutcome, ExecError> {
        let Setup::Sandbox(sandbox) = setup else {
            return Err(ExecError::Internal("internal error: the sandbox was not prepared".into()));
        };
        let child_spec = super::run::child_spec(spec, Some(sandbox));
        let started = self.child.start(&child_spec, spec.user.as_ref().map(|u| u.uid));
        super::run::follow_to_end(spec, started, io)
    }
}
