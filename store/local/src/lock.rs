//! CppNix's lock protocols, all BSD `flock(2)` so that armitage and CppNix
//! processes exclude each other on a shared store (CppNix
//! src/libstore/unix/pathlocks.cc; the team notes local-store.md §3):
//! lock files are opened `O_RDWR|O_CREAT|O_CLOEXEC` with mode 0600, and a
//! per-path lock file that its holder deleted is marked stale by writing one
//! byte into it, so a waiter that then acquires it sees a non-zero size and
//! starts over.
//!
//! flock locks belong to the open file description, so two `LockFile`s on the
//! same path exclude each other even inside one process.

use rustix::fs::{FlockOperation, Mode, OFlags};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Lock modes, as CppNix's `LockType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// An open lock file.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Opens (creating if asked) a lock file with CppNix's flags and mode.
    pub fn open(path: &Path, create: bool) -> io::Result<LockFile> {
        let mut flags = OFlags::RDWR | OFlags::CLOEXEC;
        if create {
            flags |= OFlags::CREATE;
        }
        let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(0o600))?;
        Ok(LockFile { file: File::from(fd), path: path.to_owned() })
    }

    /// Wraps an already open file (e.g. a directory to be flocked).
    pub fn from_file(file: File, path: &Path) -> LockFile {
        LockFile { file, path: path.to_owned() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Takes the lock, blocking until it is free.
    pub fn lock(&self, kind: LockKind) -> io::Result<()> {
        let op = match kind {
            LockKind::Shared => FlockOperation::LockShared,
            LockKind::Exclusive => FlockOperation::LockExclusive,
        };
        loop {
            match rustix::fs::flock(self.file.as_fd(), op) {
                Err(rustix::io::Errno::INTR) => continue,
                r => return r.map_err(Into::into),
            }
        }
    }

    /// Takes the lock if it is free; `false` if someone else holds it.
    pub fn try_lock(&self, kind: LockKind) -> io::Result<bool> {
        let op = match kind {
            LockKind::Shared => FlockOperation::NonBlockingLockShared,
            LockKind::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        loop {
            match rustix::fs::flock(self.file.as_fd(), op) {
                Ok(()) => return Ok(true),
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn unlock(&self) -> io::Result<()> {
        rustix::fs::flock(self.file.as_fd(), FlockOperation::Unlock).map_err(Into::into)
    }

    /// Whether the open file is still the one at its path (see
    /// [`still_at`]).
    pub fn is_current(&self) -> bool {
        still_at(&self.file, &self.path)
    }

    /// Whether the file has been marked stale (non-empty) by a deleter.
    pub fn is_stale(&self) -> io::Result<bool> {
        Ok(self.file.metadata()?.len() != 0)
    }

    /// Unlinks the file and marks the still-open description stale, as
    /// CppNix's `deleteLockFile` does. Errors are ignored there too: removing
    /// a lock file is an optimisation, not a necessity.
    pub fn delete_and_mark_stale(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.write_all(b"d");
    }
}

/// Exclusive locks on a set of store paths through `<path>.lock` files,
/// acquired in sorted order (no deadlock between lockers of overlapping
/// sets). Dropping releases them; after [`PathLocks::set_deletion`] the lock
/// files are deleted on release, as CppNix does after a successful build or
/// import.
#[derive(Debug, Default)]
pub struct PathLocks {
    held: Vec<LockFile>,
    delete_on_release: bool,
}

impl PathLocks {
    /// Locks every path (each `P` through `P.lock`), waiting as needed.
    pub fn lock(paths: impl IntoIterator<Item = PathBuf>) -> io::Result<PathLocks> {
        Self::acquire(paths, true).map(|o| o.expect("blocking lock always acquires"))
    }

    /// Locks every path or none: `None` if any is held elsewhere.
    pub fn try_lock(paths: impl IntoIterator<Item = PathBuf>) -> io::Result<Option<PathLocks>> {
        Self::acquire(paths, false)
    }

    fn acquire(paths: impl IntoIterator<Item = PathBuf>, wait: bool) -> io::Result<Option<PathLocks>> {
        let mut sorted: Vec<PathBuf> = paths.into_iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut locks = PathLocks::default();
        for path in sorted {
            let mut lock_path = path.into_os_string();
            lock_path.push(".lock");
            let lock_path = PathBuf::from(lock_path);
            loop {
                let file = LockFile::open(&lock_path, true)?;
                if !file.try_lock(LockKind::Exclusive)? {
                    if !wait {
                        return Ok(None); // `locks` drops, releasing what we hold
                    }
                    tracing::debug!(path = %lock_path.display(), "waiting for lock");
                    file.lock(LockKind::Exclusive)?;
                }
                if file.is_stale()? {
                    tracing::debug!(path = %lock_path.display(), "lock file became stale; retrying");
                    continue;
                }
                locks.held.push(file);
                break;
            }
        }
        Ok(Some(locks))
    }

    /// Delete the lock files when released.
    pub fn set_deletion(&mut self, delete: bool) {
        self.delete_on_release = delete;
    }
}

impl Drop for PathLocks {
    fn drop(&mut self) {
        for lock in &mut self.held {
            if self.delete_on_release {
                lock.delete_and_mark_stale();
            }
        }
    }
}

/// Whether `file` (open here) is still the file at `path`: not unlinked,
/// not replaced by another file of the same name (a state dir wiped and
/// made again, a database restored from a backup). A file with no links
/// left is gone even if its inode number came back for a new file.
pub(crate) fn still_at(file: &std::fs::File, path: &Path) -> bool {
    let (Ok(open), Ok(on_disk)) = (file.metadata(), std::fs::metadata(path)) else { return false };
    open.nlink() > 0 && open.dev() == on_disk.dev() && open.ino() == on_disk.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_locks_exclude_and_stale_files_are_retried() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let mut a = PathLocks::lock([p.clone()]).unwrap();
        assert!(PathLocks::try_lock([p.clone()]).unwrap().is_none(), "second locker must be excluded");
        a.set_deletion(true);
        drop(a);
        assert!(!dir.path().join("x.lock").exists(), "deleted on release");
        let b = PathLocks::try_lock([p.clone()]).unwrap();
        assert!(b.is_some(), "free again after release");
    }

    #[test]
    fn shared_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big-lock");
        let a = LockFile::open(&p, true).unwrap();
        let b = LockFile::open(&p, true).unwrap();
        a.lock(LockKind::Shared).unwrap();
        assert!(b.try_lock(LockKind::Shared).unwrap());
        b.unlock().unwrap();
        assert!(!b.try_lock(LockKind::Exclusive).unwrap());
        a.unlock().unwrap();
        assert!(b.try_lock(LockKind::Exclusive).unwrap());
    }
}
