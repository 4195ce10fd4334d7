//! Temporary GC roots, with CppNix's protocol (src/libstore/gc.cc
//! `addTempRoot`; the team notes local-store.md §3.3–3.4): each process
//! appends NUL-terminated store paths to `$state/temproots/<pid>`, which it
//! holds exclusively locked for its lifetime. While a collector holds
//! `gc.lock` exclusively, a new root is also sent over `gc-socket/socket` and
//! acknowledged, so the collector sees every root either in the file or on
//! the socket.
//!
//! The file is per process and shared by every store handle on the same
//! state dir in this process. Handles take and release roots (a daemon
//! releases a client's roots when it disconnects); the file is rewritten
//! without the released ones when no collector is running, and deleted when
//! nothing is held, so a long-lived process does not keep dead roots. The
//! rewrite waits until released roots in the file are as many as held ones
//! (or until this process collects garbage or lists roots, see
//! [`TempRoots::flush`]): rewriting costs as much as everything held, and
//! doing it whenever any handle let go of anything (each build, each short
//! client) made a daemon with long-lived clients holding 100,000 roots
//! rewrite a 10 MiB file dozens of times a second, under the lock every add
//! takes.

use super::error::{IoContext, Result};
use super::lock::{LockFile, LockKind};
use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// This process's temp roots on one state dir.
pub struct TempRoots {
    state_dir: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: Option<LockFile>,
    gc_lock: Option<LockFile>,
    socket: Option<UnixStream>,
    /// How many handles hold each root.
    held: HashMap<String, usize>,
    /// The file lists roots no longer held.
    dirty: bool,
    /// How many roots the file lists: those held, and released ones not
    /// yet rewritten away.
    in_file: usize,
}

impl TempRoots {
    /// The process-wide handle for `state_dir`.
    pub fn for_state_dir(state_dir: &Path) -> Arc<TempRoots> {
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        map.entry(state_dir.to_owned())
            .or_insert_with(|| {
                Arc::new(TempRoots {
                    state_dir: state_dir.to_owned(),
                    inner: Mutex::new(Inner {
                        file: None,
                        gc_lock: None,
                        socket: None,
                        held: HashMap::new(),
                        dirty: false,
                        in_file: 0,
                    }),
                })
            })
            .clone()
    }

    fn file_path(&self) -> PathBuf {
        self.state_dir.join("temproots").join(std::process::id().to_string())
    }

    fn gc_lock_path(&self) -> PathBuf {
        self.state_dir.join("gc.lock")
    }

    /// Creates and locks this process's roots file (once).
    fn ensure_file(&self, inner: &mut Inner) -> Result<()> {
        if inner.file.is_some() {
            return Ok(());
        }
        let path = self.file_path();
        // The state dir may have been wiped and made again under us.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).at("creating directory", dir)?;
        }
        loop {
            // A file with our pid must be left over from a dead process.
            let _ = std::fs::remove_file(&path);
            let file = LockFile::open(&path, true).at("opening temp roots file", &path)?;
            file.lock(LockKind::Exclusive).at("locking temp roots file", &path)?;
            // A collector that deleted the file before we locked it marked it stale.
            if !file.is_stale().at("checking temp roots file", &path)? {
                inner.file = Some(file);
                return Ok(());
            }
        }
    }

    fn ensure_gc_lock(&self, inner: &mut Inner) -> Result<()> {
        if inner.gc_lock.is_none() {
            let p = self.gc_lock_path();
            inner.gc_lock = Some(LockFile::open(&p, true).at("opening", &p)?);
        }
        Ok(())
    }

    /// Protects `full_path` from garbage collection until it is released.
    pub fn add(&self, full_path: &str) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = inner.held.get_mut(full_path) {
            // Already in the file (or announced to the running collector).
            *n += 1;
            return Ok(());
        }
        self.ensure_file(&mut inner)?;
        self.record(&mut inner, &[full_path])?;
        inner.held.insert(full_path.to_owned(), 1);
        Ok(())
    }

    /// Writes roots into the file (which exists), so that a collector sees
    /// each either in the file or, when one is running, on its socket.
    fn record(&self, inner: &mut Inner, roots: &[&str]) -> Result<()> {
        self.ensure_gc_lock(inner)?;
        let gc_lock_path = self.gc_lock_path();
        let mut rest = roots;
        // As CppNix's addTempRoot: start over from the lock each time, since
        // a collector may end (and stop listening) while we wait for it.
        while !rest.is_empty() {
            let gc_lock = inner.gc_lock.as_ref().expect("opened above");
            if gc_lock.try_lock(LockKind::Shared).at("locking", &gc_lock_path)? {
                let result = append(inner, rest, &self.file_path());
                if let Some(l) = inner.gc_lock.as_ref() {
                    let _ = l.unlock();
                }
                return result;
            }
            // A collector is running: tell it directly, then record the root.
            if self.send_to_collector(inner, rest[0])? {
                append(inner, &rest[..1], &self.file_path())?;
                rest = &rest[1..];
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Makes sure the roots file on disk is the one this process writes:
    /// when it was removed or replaced (the state dir wiped and made again,
    /// tmpfiles cleaning `temproots/`), a new one is made holding every
    /// root still held, and a `gc.lock` that is no longer the one on disk is
    /// opened again. A couple of `stat`s when nothing changed. A daemon
    /// calls this when a client connects and before it collects garbage.
    pub fn revalidate(&self) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.gc_lock.as_ref().is_some_and(|l| !l.is_current()) {
            inner.gc_lock = None;
            inner.socket = None;
        }
        if inner.file.as_ref().is_none_or(LockFile::is_current) {
            return Ok(());
        }
        tracing::info!(
            "the temp roots file '{}' was removed: writing the {} roots held again",
            self.file_path().display(),
            inner.held.len()
        );
        inner.file = None;
        inner.in_file = 0;
        inner.dirty = false;
        self.ensure_file(&mut inner)?;
        let held: Vec<String> = inner.held.keys().cloned().collect();
        self.record(&mut inner, &held.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Drops one hold on each root; roots nobody holds any more leave the
    /// file at the next chance once there are as many of them as held ones
    /// (or nothing is held), unless a collector is running.
    pub fn release<'a>(&self, paths: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for p in paths {
            if let Some(n) = inner.held.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    inner.held.remove(p);
                    inner.dirty = true;
                }
            }
        }
        let released = inner.in_file.saturating_sub(inner.held.len());
        if inner.dirty
            && released >= inner.held.len()
            && let Err(e) = self.rewrite(&mut inner)
        {
            tracing::warn!("cannot rewrite the temp roots file: {e}");
        }
    }

    /// Rewrites the file without the roots released since the last rewrite,
    /// if any (unless a collector is running): before this process reads the
    /// roots itself, so that it sees exactly the roots held.
    pub fn flush(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.dirty
            && let Err(e) = self.rewrite(&mut inner)
        {
            tracing::warn!("cannot rewrite the temp roots file: {e}");
        }
    }

    /// Rewrites (or, when empty, deletes) the roots file with what is still
    /// held, provided no collector is running (it reads the file under the
    /// exclusive `gc.lock`; we hold it shared meanwhile).
    fn rewrite(&self, inner: &mut Inner) -> Result<()> {
        self.ensure_gc_lock(inner)?;
        let gc_lock_path = self.gc_lock_path();
        let gc_lock = inner.gc_lock.as_ref().expect("opened above");
        if !gc_lock.try_lock(LockKind::Shared).at("locking", &gc_lock_path)? {
            return Ok(()); // later
        }
        let path = self.file_path();
        let result = if inner.held.is_empty() {
            if inner.file.take().is_some() {
                let _ = std::fs::remove_file(&path);
            }
            inner.in_file = 0;
            Ok(())
        } else if let Some(file) = inner.file.as_ref() {
            let mut f = file.file();
            let mut record = Vec::new();
            for p in inner.held.keys() {
                record.extend_from_slice(p.as_bytes());
                record.push(0);
            }
            let written = f
                .set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| f.write_all(&record))
                .at("rewriting temp roots file", &path);
            // Even half written, the file holds no more than this.
            inner.in_file = inner.held.len();
            written
        } else {
            Ok(())
        };
        let _ = gc_lock.unlock();
        if result.is_ok() {
            inner.dirty = false;
        }
        result
    }

    /// `Ok(false)` means: the collector is not reachable (yet/anymore), retry.
    fn send_to_collector(&self, inner: &mut Inner, full_path: &str) -> Result<bool> {
        let socket_path = self.state_dir.join("gc-socket/socket");
        if inner.socket.is_none() {
            match UnixStream::connect(&socket_path) {
                Ok(s) => inner.socket = Some(s),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound) => {
                    return Ok(false);
                }
                Err(e) => return Err(e).at("connecting to", &socket_path),
            }
        }
        let sock = inner.socket.as_mut().expect("connected above");
        let mut ack = [0u8; 1];
        let sent = sock.write_all(format!("{full_path}\n").as_bytes()).and_then(|()| sock.read_exact(&mut ack));
        match sent {
            Ok(()) if ack[0] == b'1' => Ok(true),
            Ok(()) => Err(super::error::Error::CollectorReply { reply: ack[0] as char, root: full_path.to_string() }),
            Err(_) => {
                // EPIPE, ECONNRESET or EOF: the collector went away; start over.
                inner.socket = None;
                Ok(false)
            }
        }
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<TempRoots>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Arc<TempRoots>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn append(inner: &mut Inner, roots: &[&str], file_path: &Path) -> Result<()> {
    let mut record = Vec::with_capacity(roots.iter().map(|r| r.len() + 1).sum());
    for root in roots {
        record.extend_from_slice(root.as_bytes());
        record.push(0);
    }
    let file = inner.file.as_mut().expect("roots file exists");
    let mut f = file.file();
    f.seek(std::io::SeekFrom::End(0)).and_then(|_| f.write_all(&record)).at("writing temp roots file", file_path)?;
    inner.in_file += roots.len();
    Ok(())
}

/// Reads every process's temp roots as (pid, full path), as the collector
/// does: a file whose lock can be taken belongs to a dead process and is
/// deleted (and marked stale); hidden files are ignored.
pub fn read_all_with_owner(state_dir: &Path) -> Result<Vec<(String, String)>> {
    let dir = state_dir.join("temproots");
    let mut roots = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(roots),
        Err(e) => return Err(e).at("reading", &dir),
    };
    let own = std::process::id().to_string();
    for entry in entries {
        let entry = entry.at("reading", &dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let mut file = match LockFile::open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at("opening", &path),
        };
        if name != own && file.try_lock(LockKind::Exclusive).at("locking", &path)? {
            tracing::debug!(path = %path.display(), "removing stale temp roots file");
            file.delete_and_mark_stale();
            continue;
        }
        let mut data = Vec::new();
        file.file().read_to_end(&mut data).at("reading", &path)?;
        roots.extend(
            data.split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| (name.to_string(), String::from_utf8_lossy(s).into_owned())),
        );
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(roots: &TempRoots) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read(roots.file_path())
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Releases next to many held roots do not rewrite the file each time,
    /// only once released roots are as many as held ones; a flush rewrites
    /// it at once; and nothing held means no file.
    #[test]
    fn released_roots_leave_the_file_once_they_are_as_many_as_held_ones() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("temproots")).unwrap();
        let roots = TempRoots::for_state_dir(tmp.path());
        let held: Vec<String> = (0..10).map(|i| format!("/s/held-{i}")).collect();
        for p in &held {
            roots.add(p).unwrap();
        }
        for i in 0..9 {
            let p = format!("/s/gone-{i}");
            roots.add(&p).unwrap();
            roots.release([p.as_str()]);
        }
        assert_eq!(listed(&roots).len(), 19, "9 released roots next to 10 held ones stay listed");
        roots.flush();
        assert_eq!(listed(&roots), held, "a flush leaves the held roots only");
        for i in 0..10 {
            let p = format!("/s/gone-again-{i}");
            roots.add(&p).unwrap();
            roots.release([p.as_str()]);
        }
        assert_eq!(listed(&roots), held, "the 10th released root made the file be rewritten");
        roots.release(held.iter().map(String::as_str));
        assert!(!roots.file_path().exists(), "nothing held, no file");
    }

    /// A roots file (or its whole folder) removed under the process is
    /// written again, with every root still held, when revalidated; a file
    /// still in place is left alone.
    #[test]
    fn a_removed_roots_file_is_made_again_with_the_roots_held() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir_all(state.join("temproots")).unwrap();
        let roots = TempRoots::for_state_dir(&state);
        roots.add("/s/a").unwrap();
        roots.add("/s/b").unwrap();
        roots.add("/s/gone").unwrap();
        roots.release(["/s/gone"]);
        roots.flush();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&roots.file_path());
        roots.revalidate().unwrap();
        assert_eq!(inode(&roots.file_path()), before, "an intact file is kept");

        std::fs::remove_file(roots.file_path()).unwrap();
        roots.revalidate().unwrap();
        assert_eq!(listed(&roots), ["/s/a", "/s/b"]);

        std::fs::remove_dir_all(&state).unwrap();
        roots.revalidate().unwrap();
        assert_eq!(listed(&roots), ["/s/a", "/s/b"], "the folder is made again too");
        roots.add("/s/c").unwrap();
        assert_eq!(listed(&roots), ["/s/a", "/s/b", "/s/c"], "later roots go to the new file");
    }
}
