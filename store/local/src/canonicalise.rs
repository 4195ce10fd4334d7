//! Canonicalisation of new store objects before they become valid, as
//! CppNix's `canonicalisePathMetaData` (src/libstore/posix-fs-canonicalise.cc;
//! the team notes local-store.md §4): only regular files, directories and
//! symlinks; extended attributes removed except the ignored ones; permission
//! bits 0444 or 0555 (0555 when the owner could execute); mtime 1; owned by
//! the store's user. Walks with an explicit stack, so deep trees cannot
//! exhaust ours.

use super::error::{Error, IoContext, Result};
use rustix::fs::{AtFlags, Timespec, Timestamps, UTIME_OMIT};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Extended attributes CppNix leaves alone (`ignored-acls` default).
pub const DEFAULT_IGNORED_XATTRS: &[&str] = &["security.selinux", "system.nfs4_acl", "security.csm"];

/// What to do with the top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Top {
    /// Canonicalise it like everything else (build outputs, which are not
    /// renamed afterwards).
    Canonical,
    /// Leave the top directory's mode writable and its mtime alone: it is
    /// about to be renamed, which needs write permission on a directory for
    /// non-root users and updates its mtime; [`finish_top`] completes it.
    BeforeRename,
}

/// Canonicalises `root` and everything below it.
pub fn canonicalise(root: &Path, top: Top, ignored_xattrs: &[String]) -> Result<()> {
    let euid = rustix::process::geteuid();
    let egid = rustix::process::getegid();
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    let mut first = true;
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).at("getting attributes of", &path)?;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
            return Err(Error::UnsupportedFileType(path));
        }
        remove_xattrs(&path, ignored_xattrs)?;
        let defer_top = first && top == Top::BeforeRename && ft.is_dir();
        first = false;
        if !ft.is_symlink() && !defer_top {
            fix_mode(&path, meta.mode())?;
        }
        if meta.mtime() != 1 && !defer_top {
            set_mtime_one(&path)?;
        }
        if meta.uid() != euid.as_raw() {
            rustix::fs::chownat(rustix::fs::CWD, &path, Some(euid), Some(egid), AtFlags::SYMLINK_NOFOLLOW)
                .at("changing owner of", &path)?;
        }
        if ft.is_dir() {
            for entry in std::fs::read_dir(&path).at("reading directory", &path)? {
                stack.push(entry.at("reading directory", &path)?.path());
            }
        }
    }
    Ok(())
}

/// Completes a top directory canonicalised with [`Top::BeforeRename`].
pub fn finish_top(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).at("getting attributes of", path)?;
    if !meta.file_type().is_symlink() {
        fix_mode(path, meta.mode())?;
    }
    if meta.mtime() != 1 {
        set_mtime_one(path)?;
    }
    Ok(())
}

fn fix_mode(path: &Path, mode: u32) -> Result<()> {
    let perm = mode & 0o7777;
    if perm != 0o444 && perm != 0o555 {
        let new = 0o444 | if mode & 0o100 != 0 { 0o111 } else { 0 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(new)).at("changing mode of", path)?;
    }
    Ok(())
}

/// Sets the mtime to 1 (1970-01-01T00:00:01Z), keeping the atime; never
/// follows a symlink.
pub(crate) fn set_mtime_one(path: &Path) -> Result<()> {
    let times = Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: 1, tv_nsec: 0 },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .at("changing modification time of", path)
}

fn remove_xattrs(path: &Path, ignored: &[String]) -> Result<()> {
    let mut buf = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::NODATA) => return Ok(()),
            Err(e) => return Err(e).at("querying extended attributes of", path),
        }
    };
    for name in buf[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let text = String::from_utf8_lossy(name);
        if ignored.iter().any(|i| i.as_str() == text) {
            continue;
        }
        match rustix::fs::lremovexattr(path, name) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(e).at("removing extended attribute of", path),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn modes_and_mtimes_become_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("x");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("exe"), "x").unwrap();
        std::fs::set_permissions(root.join("exe"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::write(root.join("plain"), "x").unwrap();
        std::fs::set_permissions(root.join("plain"), std::fs::Permissions::from_mode(0o666)).unwrap();
        symlink("plain", root.join("link")).unwrap();
        canonicalise(&root, Top::Canonical, &[]).unwrap();
        let mode = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("exe"), 0o555);
        assert_eq!(mode("plain"), 0o444);
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o7777, 0o555);
        for p in ["exe", "plain", "link", ""] {
            assert_eq!(std::fs::symlink_metadata(root.join(p)).unwrap().mtime(), 1, "{p}");
        }
        // Make it removable again for the tempdir cleanup.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn top_dir_stays_writable_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("x");
        std::fs::create_dir(&root).unwrap();
        canonicalise(&root, Top::BeforeRename, &[]).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o200, 0o200);
        finish_top(&root).unwrap();
        let meta = std::fs::metadata(&root).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.mtime()), (0o555, 1));
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn fifos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(canonicalise(&fifo, Top::Canonical, &[]), Err(Error::UnsupportedFileType(_))));
    }
}
