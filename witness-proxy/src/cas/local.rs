//! The local-directory CAS backend: `dir/cas/{sha256 hex}`, one read-only
//! (0444) file per object.
//!
//! A write goes to a unique file in `dir/tmp/`, is fsynced, made read-only
//! and renamed into `dir/cas/` under the sha256 of what was written; the
//! directory is fsynced after. A process killed mid-write therefore leaves
//! at most a temp file, never a half object under a name. Two writers of
//! the same bytes both rename onto the same name, which is atomic, so both
//! succeed (and a tampered copy is replaced by good bytes).
//!
//! [`LocalCas::open`] removes temp files not written to for
//! [`STALE_TEMP_AGE`], not all of them: the daemon, a command run beside
//! it, or two archives in one process may share the directory, and a temp
//! file still being written has a recent modification time.

use super::backend::{Cas, CasError, CasWriter, Result};
use super::id::ObjectId;
use super::verify::VerifyingReader;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use store::hash::HashSink;

/// How long a temp file must have gone unwritten before
/// [`LocalCas::open`] deletes it as left behind by a crash.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(15 * 60);

/// A CAS in a local directory.
#[derive(Debug, Clone)]
pub struct LocalCas {
    dir: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
}

fn io_error(action: impl Into<String>, path: &Path, source: io::Error) -> CasError {
    CasError::Io { action: action.into(), path: path.to_owned(), source }
}

impl LocalCas {
    /// Opens (creating as needed) the CAS in `dir`, and removes temp files
    /// older than [`STALE_TEMP_AGE`] from `dir/tmp/`.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalCas> {
        let dir = dir.as_ref().to_owned();
        let cas = LocalCas { objects: dir.join("cas"), tmp: dir.join("tmp"), dir };
        for d in [&cas.objects, &cas.tmp] {
            fs::create_dir_all(d).map_err(|e| io_error("create directory", d, e))?;
        }
        remove_stale_temp_files(&cas.tmp, STALE_TEMP_AGE)?;
        Ok(cas)
    }

    /// The directory the CAS was opened in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the object lives (or would live).
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        self.objects.join(id.to_hex())
    }

    /// Where writes are staged.
    pub fn temp_dir(&self) -> &Path {
        &self.tmp
    }
}

/// Deletes the plain files in `tmp` not modified for `age`; returns how
/// many. A file whose time cannot be read, or lies in the future, is kept.
pub(crate) fn remove_stale_temp_files(tmp: &Path, age: Duration) -> Result<usize> {
    let entries = match fs::read_dir(tmp) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error("list temp directory", tmp, e)),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list temp directory", tmp, e))?;
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let stale = meta.is_file()
            && meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|idle| idle >= age);
        if !stale {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a stale temp file");
                removed += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove stale temp file", &path, e)),
        }
    }
    Ok(removed)
}

/// A new, empty, uniquely named file in `tmp`.
pub(crate) fn create_temp_file(tmp: &Path, prefix: &str) -> Result<(File, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = tmp.join(format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error("create temp file", &path, e)),
        }
    }
}

/// Makes a written temp file durable and read-only, then renames it to
/// `dest` and syncs `dest`'s directory, so that `dest` appears whole or not
/// at all.
pub(crate) fn persist(file: File, temp: &Path, dest: &Path) -> Result<()> {
    file.sync_all().map_err(|e| io_error("sync", temp, e))?;
    file.set_permissions(fs::Permissions::from_mode(0o444)).map_err(|e| io_error("make read-only", temp, e))?;
    drop(file);
    fs::rename(temp, dest).map_err(|e| CasError::Io {
        action: format!("rename {} to", temp.display()),
        path: dest.to_owned(),
        source: e,
    })?;
    if let Some(parent) = dest.parent() {
        // The rename is done and visible; a failed directory sync only
        // weakens durability across a power cut, so it is not an error.
        if let Err(e) = File::open(parent).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %parent.display(), error = %e, "cannot sync directory");
        }
    }
    Ok(())
}

impl Cas for LocalCas {
    fn describe(&self) -> String {
        format!("local CAS at {}", self.dir.display())
    }

    fn writer(&self) -> Result<Box<dyn CasWriter>> {
        let (file, temp) = create_temp_file(&self.tmp, "cas")?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            temp,
            objects: self.objects.clone(),
            hasher: ObjectId::hasher(),
            committed: false,
        }))
    }

    fn get(&self, id: &ObjectId) -> Result<Option<Box<dyn Read + Send>>> {
        let path = self.object_path(id);
        match File::open(&path) {
            Ok(file) => Ok(Some(Box::new(VerifyingReader::new(file, *id)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(format!("open object {id} at"), &path, e)),
        }
    }

    fn has(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.size(id)?.is_some())
    }

    fn size(&self, id: &ObjectId) -> Result<Option<u64>> {
        let path = self.object_path(id);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(format!("stat object {id} at"), &path, e)),
        }
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        let entries = fs::read_dir(&self.objects).map_err(|e| io_error("list objects in", &self.objects, e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list objects in", &self.objects, e))?;
            let name = entry.file_name();
            match name.to_str().map(str::parse::<ObjectId>) {
                Some(Ok(id)) => ids.push(id),
                _ => tracing::warn!(path = %entry.path().display(), "not an object name; ignored"),
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn remove(&self, id: &ObjectId) -> Result<bool> {
        let path = self.object_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(format!("remove object {id} at"), &path, e)),
        }
    }
}

/// An object staged in `tmp/`; removed there when dropped uncommitted.
struct LocalWriter {
    /// `None` once committing has taken it.
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    objects: PathBuf,
    hasher: HashSink,
    committed: bool,
}

impl LocalWriter {
    fn file(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file.as_mut().ok_or_else(|| io::Error::other("the object was already committed"))
    }

    fn finish(mut self: Box<Self>, expected: Option<&ObjectId>) -> Result<(ObjectId, u64)> {
        let temp = self.temp.clone();
        let Some(file) = self.file.take() else {
            return Err(io_error("commit", &temp, io::Error::other("the object was already committed")));
        };
        let (id, size) = ObjectId::finish(self.hasher.clone());
        if let Some(expected) = expected.filter(|e| **e != id) {
            // Dropping `self` removes the temp file.
            return Err(CasError::Mismatch { expected: *expected, actual: id });
        }
        let file = file.into_inner().map_err(|e| io_error("write", &temp, e.into_error()))?;
        persist(file, &temp, &self.objects.join(id.to_hex()))?;
        self.committed = true;
        tracing::debug!(object = %id, size, "stored CAS object");
        Ok((id, size))
    }
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file()?.write(buf).map_err(|e| io_error("write", &self.temp, e))?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush().map_err(|e| io_error("write", &self.temp, e).into())
    }
}

impl CasWriter for LocalWriter {
    fn commit(self: Box<Self>) -> Result<(ObjectId, u64)> {
        self.finish(None)
    }

    fn commit_expecting(self: Box<Self>, expected: &ObjectId) -> Result<u64> {
        self.finish(Some(expected)).map(|(_, size)| size)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.file = None;
        match fs::remove_file(&self.temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.temp.display(), error = %e, "cannot remove an uncommitted temp file"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp_files(cas: &LocalCas) -> usize {
        fs::read_dir(cas.temp_dir()).unwrap().count()
    }

    #[test]
    fn objects_are_read_only_files_named_by_their_hash() {
        let dir = testkit::TempDir::new();
        let cas = LocalCas::open(dir.path()).unwrap();
        let (id, size) = cas.put(&mut &b"bytes"[..]).unwrap();
        assert_eq!((id, size), (ObjectId::of(b"bytes"), 5));
        let path = dir.path().join("cas").join(id.to_string());
        assert_eq!(cas.object_path(&id), path);
        assert_eq!(fs::read(&path).unwrap(), b"bytes");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o444);
        assert_eq!(temp_files(&cas), 0);
    }

    #[test]
    fn a_killed_write_leaves_only_a_temp_file_which_open_removes_once_stale() {
        let dir = testkit::TempDir::new();
        let cas = LocalCas::open(dir.path()).unwrap();
        // What kill -9 leaves: the writer's destructor never runs.
        let mut w = cas.writer().unwrap();
        w.write_all(b"half an obj").unwrap();
        w.flush().unwrap();
        std::mem::forget(w);
        assert!(cas.list().unwrap().is_empty());
        assert_eq!(temp_files(&cas), 1);

        // Fresh: kept (it may be another process's write in progress).
        let cas = LocalCas::open(dir.path()).unwrap();
        assert_eq!(temp_files(&cas), 1);

        let temp = fs::read_dir(cas.temp_dir()).unwrap().next().unwrap().unwrap().path();
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(1);
        File::options().write(true).open(&temp).unwrap().set_modified(old).unwrap();
        let cas = LocalCas::open(dir.path()).unwrap();
        assert_eq!(temp_files(&cas), 0);
        assert!(cas.list().unwrap().is_empty());
    }

    #[test]
    fn stray_names_in_the_object_directory_are_not_listed() {
        let dir = testkit::TempDir::new();
        let cas = LocalCas::open(dir.path()).unwrap();
        fs::write(dir.path().join("cas/README"), b"x").unwrap();
        let (id, _) = cas.put(&mut &b"y"[..]).unwrap();
        assert_eq!(cas.list().unwrap(), vec![id]);
    }

    #[test]
    fn io_errors_name_the_path() {
        let dir = testkit::TempDir::new();
        fs::write(dir.path().join("cas"), b"a file where a directory should be").unwrap();
        let err = LocalCas::open(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("cannot create directory "), "{text}");
        assert!(text.contains(&dir.path().join("cas").display().to_string()), "{text}");
    }
}
