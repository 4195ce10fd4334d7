//! File system helpers for store objects: recursive deletion of read-only
//! trees (counting what it frees), recursive fsync, and the flocked
//! `tmp-<pid>-<n>` staging directories new paths are unpacked into (one per
//! add, or one for a run of adds: [`Staged`]).

use super::error::{IoContext, Result};
use super::lock::{LockFile, LockKind};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Deletes a file or tree, making directories writable as needed. Returns
/// the bytes freed as CppNix's `deletePath` counts them: the sizes of the
/// non-directories with one link, or two (the other being, likely, in
/// `.links`, which the collector removes afterwards). A path that does not
/// exist is not an error.
pub fn delete_path(path: &Path) -> Result<u64> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).at("getting attributes of", path),
    };
    let mut freed = 0;
    if !meta.is_dir() {
        std::fs::remove_file(path).at("deleting", path)?;
        return Ok(freed_by(&meta));
    }
    // Iterative post-order walk: (dir, children listed?).
    let mut stack: Vec<(PathBuf, bool)> = vec![(path.to_owned(), false)];
    while let Some((dir, listed)) = stack.pop() {
        if listed {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at("deleting directory", &dir),
            }
            continue;
        }
        let dmeta = std::fs::symlink_metadata(&dir).at("getting attributes of", &dir)?;
        if dmeta.mode() & 0o700 != 0o700 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(dmeta.mode() & 0o7777 | 0o700))
                .at("making writable", &dir)?;
        }
        stack.push((dir.clone(), true));
        for entry in std::fs::read_dir(&dir).at("reading directory", &dir)? {
            let entry = entry.at("reading directory", &dir)?;
            let child = entry.path();
            let ft = entry.file_type().at("getting type of", &child)?;
            if ft.is_dir() {
                stack.push((child, false));
            } else {
                let m = std::fs::symlink_metadata(&child).at("getting attributes of", &child)?;
                std::fs::remove_file(&child).at("deleting", &child)?;
                freed += freed_by(&m);
            }
        }
    }
    Ok(freed)
}

fn freed_by(meta: &std::fs::Metadata) -> u64 {
    if meta.nlink() <= 2 { meta.len() } else { 0 }
}

/// fsyncs every file and directory of a tree (`fsync-store-paths`).
pub fn fsync_tree(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).at("getting attributes of", &p)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).at("reading directory", &p)? {
                stack.push(e.at("reading directory", &p)?.path());
            }
        }
        std::fs::File::open(&p).and_then(|f| f.sync_all()).at("syncing", &p)?;
    }
    Ok(())
}

/// fsyncs the directory containing `path` (so a rename into it is durable).
pub fn fsync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(parent).and_then(|f| f.sync_all()).at("syncing", parent)
}

/// A staging directory `tmp-<pid>-<n>` directly in the store, holding an
/// exclusive flock on itself for its lifetime, as CppNix 2.26's
/// `createTempDirInStore` does, so a 2.26 collector leaves it alone. Removed
/// (with its contents) when dropped.
pub struct StoreTempDir {
    path: PathBuf,
    _lock: LockFile,
}

impl StoreTempDir {
    pub fn new(store_dir: &Path) -> Result<StoreTempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = store_dir.join(format!("tmp-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    // A collector may delete the directory before we lock it
                    // (it takes unlocked `tmp-*` dirs for debris; it holds the
                    // lock until they are gone): then take another, as
                    // CppNix's `createTempDirInStore` does. Nobody else makes
                    // this name, so if it is there, it is ours.
                    let file = match std::fs::File::open(&path) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e).at("opening", &path),
                    };
                    let lock = LockFile::from_file(file, &path);
                    lock.lock(LockKind::Exclusive).at("locking", &path)?;
                    match std::fs::symlink_metadata(&path) {
                        Ok(_) => return Ok(StoreTempDir { path, _lock: lock }),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e).at("getting attributes of", &path),
                    }
                }
                // Left behind by a killed process with our pid: pick another number.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).at("creating directory", &path),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StoreTempDir {
    fn drop(&mut self) {
        if let Err(e) = delete_path(&self.path) {
            tracing::warn!("cannot remove temporary directory: {e}");
        }
    }
}

/// Where one new path is unpacked: an entry of its own in a staging
/// directory that other adds may share. The entry is deleted when dropped
/// unless it was moved into place; the directory goes with its last user.
pub struct Staged {
    path: PathBuf,
    _dir: Arc<StoreTempDir>,
}

impl Staged {
    pub fn new(dir: Arc<StoreTempDir>) -> Staged {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = dir.path().join(format!("x{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        Staged { path, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = delete_path(&self.path) {
            tracing::warn!("cannot remove a staged path: {e}");
        }
    }
}
