//! The chroot directory, laid out by the parent before the build child
//! starts (CppNix's `startBuilder`): its files (/tmp, /etc), the store
//! directory the outputs are written to, the skeleton of /dev and /proc,
//! the mount points of every bind mount, and links to non-directory inputs.
//! Making the mount points here leaves only mount calls to the child.

use super::mounts::{all_binds, has_own_dev, make_mount_point};
use super::spec::{BUILD_DIR_IN_SANDBOX, SandboxSpec, check_absolute, check_spec, in_root};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

pub(super) fn prepare(spec: &SandboxSpec, non_dir_inputs: &[std::path::PathBuf]) -> Result<(), String> {
    check_spec(spec)?;
    let root = &spec.root;
    let as_root = rustix::process::geteuid().is_root();
    let chown_to_build_group = |path: &Path| -> Result<(), String> {
        if as_root {
            std::os::unix::fs::chown(path, Some(0), Some(spec.host_gid))
                .map_err(|e| format!("cannot change ownership of '{}': {e}", path.display()))?;
        }
        Ok(())
    };

    match std::fs::symlink_metadata(root) {
        Ok(_) => {
            std::fs::remove_dir_all(root).map_err(|e| format!("removing the old chroot '{}': {e}", root.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("getting attributes of path '{}': {e}", root.display())),
    }
    // A parent made here is for the chroot only (CppNix 2.26 puts the root
    // in a 0700 directory of its own).
    if let Some(parent) = root.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot create '{}': {e}", parent.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o750)
        .create(root)
        .map_err(|e| format!("cannot create '{}': {e}", root.display()))?;
    set_mode(root, 0o750)?;
    chown_to_build_group(root)?;

    // Many builders want a writable /tmp (they should use $TMPDIR).
    make_dir(&root.join("tmp"), 0o1777)?;

    make_dir(&root.join("etc"), 0o755)?;
    write_file(
        &root.join("etc/passwd"),
        &format!(
            "root:x:0:0:Nix build user:{home}:/noshell\n\
             nixbld:x:{uid}:{gid}:Nix build user:{home}:/noshell\n\
             nobody:x:65534:65534:Nobody:/:/noshell\n",
            uid = spec.sandbox_uid,
            gid = spec.sandbox_gid,
            home = BUILD_DIR_IN_SANDBOX,
        ),
    )?;
    write_file(&root.join("etc/group"), &format!("root:x:0:\nnixbld:!:{}:\nnogroup:x:65534:\n", spec.sandbox_gid))?;
    if spec.network.is_isolated() {
        write_file(&root.join("etc/hosts"), "127.0.0.1 localhost\n::1 localhost\n")?;
    } else {
        // Fixed-output derivations resolve names through files and DNS only.
        write_file(&root.join("etc/nsswitch.conf"), "hosts: files dns\nservices: files\n")?;
    }

    // The outputs are written here; only the build group may add to it.
    let store = in_root(root, &spec.store_dir);
    std::fs::create_dir_all(&store).map_err(|e| format!("cannot create '{}': {e}", store.display()))?;
    set_mode(&store, 0o1775)?;
    chown_to_build_group(&store)?;

    if !has_own_dev(spec) {
        make_dir(&root.join("dev"), 0o755)?;
        make_dir(&root.join("dev/shm"), 0o755)?;
        make_dir(&root.join("dev/pts"), 0o755)?;
        for (name, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let link = root.join("dev").join(name);
            std::os::unix::fs::symlink(to, &link).map_err(|e| format!("creating '{}': {e}", link.display()))?;
        }
    }
    make_dir(&root.join("proc"), 0o555)?;

    for (target, source) in all_binds(spec) {
        if source.path == Path::new("/proc") {
            continue;
        }
        let meta = match std::fs::metadata(&source.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && source.optional => continue,
            Err(e) => return Err(format!("getting attributes of path '{}': {e}", source.path.display())),
        };
        let point = in_root(root, &target);
        make_mount_point(&point, meta.is_dir())
            .map_err(|e| format!("creating mount point '{}': {e}", point.display()))?;
    }

    // Only directories can be bind-mounted cheaply; other inputs are linked.
    for input in non_dir_inputs {
        let Some(input_str) = input.to_str() else {
            return Err(format!("input path '{}' is not valid UTF-8", input.display()));
        };
        check_absolute("the input path", input)?;
        link_or_copy(input, &in_root(root, input_str))?;
    }
    Ok(())
}

fn make_dir(path: &Path, mode: u32) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create '{}': {e}", path.display())),
    }
    // The umask may have taken bits away.
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("changing the mode of '{}': {e}", path.display()))
}

fn write_file(path: &Path, content: &str) -> Result<(), String> {
    std::fs::write(path, content).map_err(|e| format!("writing '{}': {e}", path.display()))?;
    set_mode(path, 0o644)
}

/// Hard-links `from` at `to`; copies when linking is refused (too many
/// links, a file system without hard links across directories, another
/// file system), as CppNix's `linkOrCopy`. A symlink is linked or copied
/// as a symlink.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create '{}': {e}", parent.display()))?;
    }
    let err = match std::fs::hard_link(from, to) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let linking_refused = matches!(err.raw_os_error(), Some(libc::EMLINK | libc::EPERM | libc::EXDEV));
    if !linking_refused {
        return Err(format!("linking '{}' to '{}': {err}", to.display(), from.display()));
    }
    let meta =
        std::fs::symlink_metadata(from).map_err(|e| format!("getting attributes of path '{}': {e}", from.display()))?;
    let copied = if meta.file_type().is_symlink() {
        std::fs::read_link(from).and_then(|dest| std::os::unix::fs::symlink(dest, to))
    } else {
        std::fs::copy(from, to).map(drop)
    };
    copied.map_err(|e| format!("copying '{}' to '{}': {e}", from.display(), to.display()))
}
