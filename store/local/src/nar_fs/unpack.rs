//! Restoring a NAR into the file system (CppNix's `restorePath`), safely
//! whatever the NAR contains.
//!
//! The contract:
//! - the target must not exist; it is created (directory, file or symlink)
//!   relative to a descriptor of its parent directory;
//! - everything below it is created relative to descriptors of directories
//!   this function made, with `mkdirat`, `openat(O_CREAT | O_EXCL |
//!   O_NOFOLLOW)` and `symlinkat`, so no path is ever resolved through a
//!   symlink, in particular not through one the NAR itself created; the
//!   reader has already refused names that are empty, `.`, `..`, contain `/`
//!   or NUL, or repeat;
//! - on any error, everything created is removed again (without following
//!   symlinks) and the target does not exist afterwards.
//!
//! Modes are CppNix's: directories 0777 and files 0666 less the umask,
//! executables get 0111 added. The local store canonicalises them afterwards.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RawDir, SeekFrom};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use store::nar::{Event, Limits, NarError, NarReader};

/// What [`unpack`] restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnpackStats {
    /// Files, directories and symlinks created.
    pub entries: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Size of the NAR read.
    pub nar_size: u64,
}

const OPEN_DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
const CREATE_FILE: OFlags =
    OFlags::WRONLY.union(OFlags::CREATE).union(OFlags::EXCL).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Restores the NAR read from `nar` at `target`, which must not exist.
/// Reads exactly the NAR's bytes from `nar`. On error nothing it created is
/// left behind.
pub fn unpack<R: BufRead>(nar: R, target: &Path, limits: &Limits) -> Result<UnpackStats, NarError> {
    let (parent_path, name) = match (target.parent(), target.file_name()) {
        (Some(parent), Some(name)) => (if parent.as_os_str().is_empty() { Path::new(".") } else { parent }, name),
        _ => return Err(NarError::BadTarget(target.to_owned())),
    };
    let parent = rfs::open(parent_path, OPEN_DIR, Mode::empty())
        .map_err(|e| NarError::Unpack { path: parent_path.to_owned(), source: e.into() })?;
    match rfs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => return Err(NarError::TargetExists(target.to_owned())),
        Err(Errno::NOENT) => {}
        Err(e) => {
            return Err(NarError::Unpack { path: target.to_owned(), source: e.into() });
        }
    }
    let mut unpacker = Unpacker {
        target,
        parent: parent.as_fd(),
        dirs: Vec::new(),
        name: name.as_bytes().to_vec(),
        created_root: false,
        stats: UnpackStats::default(),
    };
    let mut reader = NarReader::with_limits(nar, limits.clone());
    match unpacker.run(&mut reader) {
        Ok(()) => {
            unpacker.stats.nar_size = reader.offset();
            Ok(unpacker.stats)
        }
        Err(e) => {
            unpacker.dirs.clear();
            let cleanup = match unpacker.created_root {
                true => remove_tree(parent.as_fd(), name.as_bytes()),
                false => Ok(()),
            };
            if let Err(cleanup) = cleanup {
                tracing::warn!("cannot remove '{}' after a failed unpack: {cleanup}", target.display());
            }
            Err(e)
        }
    }
}

/// How one step of unpacking failed.
enum Failure {
    Nar(NarError),
    /// A file system call on the current path.
    Fs(io::Error),
}

impl From<NarError> for Failure {
    fn from(e: NarError) -> Self {
        Failure::Nar(e)
    }
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Self {
        Failure::Fs(e.into())
    }
}

struct Unpacker<'a> {
    target: &'a Path,
    parent: BorrowedFd<'a>,
    /// Descriptors of the directories created and still open, outermost first.
    dirs: Vec<OwnedFd>,
    /// Name of the node about to be created, in the innermost directory
    /// (or in `parent` for the root).
    name: Vec<u8>,
    created_root: bool,
    stats: UnpackStats,
}

impl Unpacker<'_> {
    fn run<R: BufRead>(&mut self, reader: &mut NarReader<R>) -> Result<(), NarError> {
        loop {
            let step = match reader.next() {
                Ok(Some(event)) => self.apply(event),
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            };
            match step {
                Ok(()) => {}
                Err(Failure::Nar(e)) => return Err(e),
                // Someone else created the target since it was checked.
                Err(Failure::Fs(e)) if !self.created_root && e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(NarError::TargetExists(self.target.to_owned()));
                }
                Err(Failure::Fs(source)) => {
                    let mut path = self.target.to_owned();
                    path.extend(reader.path_components().map(OsStr::from_bytes));
                    return Err(NarError::Unpack { path, source });
                }
            }
        }
    }

    fn apply<R: BufRead>(&mut self, event: Event<'_, R>) -> Result<(), Failure> {
        let at = self.dirs.last().map_or(self.parent, |d| d.as_fd());
        match event {
            Event::Entry { name } => {
                self.name.clear();
                self.name.extend_from_slice(name);
            }
            Event::Directory => {
                rfs::mkdirat(at, self.name.as_slice(), Mode::from_raw_mode(0o777))?;
                self.created_root = true;
                let dir = rfs::openat(at, self.name.as_slice(), OPEN_DIR, Mode::empty())?;
                self.dirs.push(dir);
                self.stats.entries += 1;
            }
            Event::DirectoryEnd => {
                self.dirs.pop();
            }
            Event::Symlink { target } => {
                rfs::symlinkat(target, at, self.name.as_slice())?;
                self.created_root = true;
                self.stats.entries += 1;
            }
            Event::Regular { executable, mut contents, .. } => {
                let fd = rfs::openat(at, self.name.as_slice(), CREATE_FILE, Mode::from_raw_mode(0o666))?;
                self.created_root = true;
                self.stats.entries += 1;
                if executable {
                    let st = rfs::fstat(&fd)?;
                    rfs::fchmod(&fd, Mode::from_raw_mode(st.st_mode | 0o111))?;
                }
                let mut file = std::fs::File::from(fd);
                loop {
                    let chunk = contents.chunk()?;
                    if chunk.is_empty() {
                        break;
                    }
                    file.write_all(chunk).map_err(Failure::Fs)?;
                    let n = chunk.len();
                    contents.consume(n);
                    self.stats.bytes += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Removes `name` in `parent` and, if it is a directory, everything in it,
/// never following a symlink; iterative, so any depth is fine.
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    match rfs::unlinkat(parent, name, AtFlags::empty()) {
        Err(Errno::ISDIR | Errno::PERM) => {}
        other => return other,
    }
    let mut stack = vec![(rfs::openat(parent, name, OPEN_DIR, Mode::empty())?, name.to_vec())];
    let mut buf: Vec<u8> = Vec::with_capacity(32 << 10);
    while let Some((dir, _)) = stack.last() {
        // Start over each time: entries already removed are gone, and the
        // subdirectory just emptied has been removed too.
        rfs::seek(dir, SeekFrom::Start(0))?;
        let mut subdir = None;
        let mut entries = RawDir::new(dir, buf.spare_capacity_mut());
        while let Some(entry) = entries.next() {
            let entry = entry?;
            let entry_name = entry.file_name().to_bytes();
            if entry_name == b"." || entry_name == b".." {
                continue;
            }
            match rfs::unlinkat(dir, entry_name, AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::ISDIR | Errno::PERM) => {
                    subdir = Some(entry_name.to_vec());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        match subdir {
            Some(sub) => {
                let fd = rfs::openat(dir, sub.as_slice(), OPEN_DIR, Mode::empty())?;
                stack.push((fd, sub));
            }
            None => {
                let Some((_, emptied)) = stack.pop() else { break };
                let at = stack.last().map_or(parent, |(d, _)| d.as_fd());
                rfs::unlinkat(at, emptied.as_slice(), AtFlags::REMOVEDIR)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_removes_nested_dirs_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let t = tmp.path().join("t");
        let mut deep = t.clone();
        for i in 0..40 {
            deep.push(format!("d{i}"));
            std::fs::create_dir_all(&deep).unwrap();
            for j in 0..5 {
                std::fs::write(deep.join(format!("f{j}")), "y").unwrap();
            }
            std::os::unix::fs::symlink(&outside, deep.join("link")).unwrap();
        }
        let parent = rfs::open(tmp.path(), OPEN_DIR, Mode::empty()).unwrap();
        remove_tree(parent.as_fd(), b"t").unwrap();
        assert!(!t.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"x");
    }

    #[test]
    fn unpack_refuses_an_existing_target_and_leaves_it_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t");
        std::fs::write(&t, "mine").unwrap();
        let err = unpack(&b""[..], &t, &Limits::default()).unwrap_err();
        assert!(matches!(err, NarError::TargetExists(_)), "{err}");
        assert_eq!(std::fs::read(&t).unwrap(), b"mine");
    }
}
