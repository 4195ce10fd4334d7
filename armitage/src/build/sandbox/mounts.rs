//! The sandbox's file system, built in PID 1 inside the new mount namespace
//! (CppNix's `runChild`): every mount made private, the chroot bind-mounted
//! onto itself, the bind mounts (`sandbox-paths`, the build directory, the
//! input closure read-only, /dev nodes, and for fixed-output derivations the
//! host's resolver files), a fresh /proc, /dev/shm and /dev/pts, then
//! `pivot_root` into it with the host's tree detached.
//!
//! [`super::prepare`] has made the mount points already, so this is mostly
//! mount calls; a missing mount point is still made here.

use super::spec::{SandboxSpec, in_root, is_in_store};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// /dev nodes bound from the host unless `/dev` itself is (CppNix's list).
const DEV_NODES: &[&str] = &["/dev/full", "/dev/null", "/dev/random", "/dev/tty", "/dev/urandom", "/dev/zero"];
/// Host files a fixed-output derivation gets for name resolution.
const NETWORK_FILES: &[&str] = &["/etc/resolv.conf", "/etc/services", "/etc/hosts"];
/// CppNix's default `sandbox-shm-size`.
const SHM_SIZE: &str = "size=50%";

/// One bind mount: source on the host, and whether it may be missing.
pub(super) struct Source {
    pub path: PathBuf,
    pub optional: bool,
}

/// Everything bind-mounted, by target (parents sort before their children):
/// the spec's mounts (a later one for the same target wins), then the /dev
/// nodes and network files where the spec has none.
pub(super) fn all_binds(spec: &SandboxSpec) -> BTreeMap<String, Source> {
    let mut binds = BTreeMap::new();
    for b in &spec.bind_mounts {
        binds.insert(b.target.clone(), Source { path: b.source.clone(), optional: b.optional });
    }
    if has_own_dev(spec) {
        // The host's /dev was asked for: no minimal one.
    } else {
        for node in DEV_NODES {
            binds.entry((*node).to_owned()).or_insert(Source { path: PathBuf::from(node), optional: true });
        }
    }
    if !spec.network.is_isolated() {
        for file in NETWORK_FILES {
            // Resolved, as CppNix 2.26 does: /etc/resolv.conf is often a
            // link into /run, which the sandbox does not have.
            if let Ok(real) = std::fs::canonicalize(file) {
                binds.entry((*file).to_owned()).or_insert(Source { path: real, optional: true });
            }
        }
    }
    binds
}

/// Whether the spec bind-mounts the host's /dev (then there is no minimal one).
pub(super) fn has_own_dev(spec: &SandboxSpec) -> bool {
    spec.bind_mounts.iter().any(|b| b.target.trim_end_matches('/') == "/dev")
}

/// Makes a mount point for a directory or a file (never truncating an
/// existing file: it may be a hard link into the store).
pub(super) fn make_mount_point(target: &Path, is_dir: bool) -> std::io::Result<()> {
    if is_dir {
        return std::fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(target).map(drop)
}

/// Builds the sandbox's tree and pivots into it.
pub(super) fn build_root(spec: &SandboxSpec) -> Result<(), String> {
    let root = &spec.root;
    // Mounts under a shared subtree would propagate out of the namespace
    // (systemd makes / shared).
    rustix::mount::mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
        .map_err(|e| format!("unable to make '/' private: {e}"))?;
    // pivot_root needs the new root to be a mount point.
    rustix::mount::mount_bind(root, root).map_err(|e| format!("unable to bind mount '{}': {e}", root.display()))?;

    let binds = all_binds(spec);
    for (target, source) in &binds {
        if source.path == Path::new("/proc") {
            continue; // CppNix: a fresh /proc is mounted below.
        }
        bind(&source.path, &in_root(root, target), source.optional, is_in_store(&spec.store_dir, target))?;
    }

    let proc_dir = root.join("proc");
    mount_fresh("proc", &proc_dir, "proc", MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, None)
        .map_err(|e| format!("mounting /proc: {e}"))?;

    // A tmpfs of its own, so that whatever the builder leaves in /dev/shm
    // goes away with it.
    if Path::new("/dev/shm").exists() {
        mount_fresh("none", &root.join("dev/shm"), "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, Some(SHM_SIZE))
            .map_err(|e| format!("mounting /dev/shm: {e}"))?;
    }

    // A devpts instance of its own (the host's ptys stay out of reach).
    let ptmx = root.join("dev/ptmx");
    if Path::new("/dev/pts/ptmx").exists()
        && std::fs::symlink_metadata(&ptmx).is_err()
        && !binds.contains_key("/dev/pts")
    {
        let pts = root.join("dev/pts");
        match mount_fresh(
            "none",
            &pts,
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some("newinstance,mode=0620"),
        ) {
            Ok(()) => {
                std::os::unix::fs::symlink("/dev/pts/ptmx", &ptmx)
                    .map_err(|e| format!("creating '{}': {e}", ptmx.display()))?;
                // Some kernels create it with mode 0.
                rustix::fs::chmod(pts.join("ptmx"), rustix::fs::Mode::from_raw_mode(0o666))
                    .map_err(|e| format!("changing the mode of /dev/pts/ptmx: {e}"))?;
            }
            Err(Errno::INVAL) => {
                // No multiple devpts instances: the host's, as CppNix.
                bind(Path::new("/dev/pts"), &pts, false, false)?;
                bind(Path::new("/dev/ptmx"), &ptmx, false, false)?;
            }
            Err(e) => return Err(format!("mounting /dev/pts: {e}")),
        }
    }

    pivot(root)
}

/// Mounts a new file system instance, making the mount point if needed.
fn mount_fresh(
    source: &str,
    target: &Path,
    fs_type: &str,
    flags: MountFlags,
    data: Option<&str>,
) -> rustix::io::Result<()> {
    let data = data.map(|d| std::ffi::CString::new(d).expect("mount options have no NUL"));
    let mount = || rustix::mount::mount(source, target, fs_type, flags, data.as_deref());
    match mount() {
        Err(Errno::NOENT) => {
            std::fs::create_dir_all(target).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::NOENT))?;
            mount()
        }
        other => other,
    }
}

/// Bind-mounts `source` (recursively) on `target`, skipping an optional
/// source that does not exist; read-only for input paths.
fn bind(source: &Path, target: &Path, optional: bool, read_only: bool) -> Result<(), String> {
    let failed = |e: Errno| format!("bind mount from '{}' to '{}' failed: {e}", source.display(), target.display());
    match rustix::mount::mount_bind_recursive(source, target) {
        Ok(()) => {}
        Err(Errno::NOENT) => {
            // The source is missing, or the mount point is.
            let meta = match std::fs::metadata(source) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => return Ok(()),
                Err(e) => return Err(format!("getting attributes of path '{}': {e}", source.display())),
            };
            make_mount_point(target, meta.is_dir())
                .map_err(|e| format!("creating mount point '{}': {e}", target.display()))?;
            rustix::mount::mount_bind_recursive(source, target).map_err(failed)?;
        }
        Err(e) => return Err(failed(e)),
    }
    if read_only {
        remount_read_only(target)?;
    }
    Ok(())
}

/// Makes a bind mount read-only. The flags the mount already has must be
/// repeated: inside a user namespace those inherited from the host are
/// locked, and dropping one is refused. (Access-time flags are kept by the
/// kernel when none is given.)
fn remount_read_only(target: &Path) -> Result<(), String> {
    use rustix::fs::StatVfsMountFlags as Have;
    let have = rustix::fs::statvfs(target)
        .map_err(|e| format!("getting the mount flags of '{}': {e}", target.display()))?
        .f_flag;
    let mut flags = MountFlags::BIND | MountFlags::RDONLY;
    for (had, keep) in
        [(Have::NOSUID, MountFlags::NOSUID), (Have::NODEV, MountFlags::NODEV), (Have::NOEXEC, MountFlags::NOEXEC)]
    {
        if have.contains(had) {
            flags |= keep;
        }
    }
    rustix::mount::mount_remount(target, flags, "").map_err(|e| format!("making '{}' read-only: {e}", target.display()))
}

/// Makes `root` the root of the mount namespace and detaches the host's
/// tree (`pivot_root(".", ".")` stacks the old root on the new one, so no
/// directory for it is needed).
fn pivot(root: &Path) -> Result<(), String> {
    rustix::process::chdir(root).map_err(|e| format!("cannot change directory to '{}': {e}", root.display()))?;
    rustix::process::pivot_root(".", ".")
        .map_err(|e| format!("cannot pivot old root directory onto '{}': {e}", root.display()))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| format!("cannot unmount real root filesystem: {e}"))?;
    rustix::process::chdir("/").map_err(|e| format!("cannot change directory to '/': {e}"))
}
