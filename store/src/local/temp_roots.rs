//! Temporary GC roots, with CppNix's protocol (src/libstore/gc.cc
//! `addTempRoot`; /work/shared/docs/local-store.md §3.3–3.4): each process
//! appends NUL-terminated store paths to `$state/temproots/<pid>`, which it
//! holds exclusively locked for its lifetime. While a collector holds
//! `gc.lock` exclusively, a new root is also sent over `gc-socket/socket` and
//! acknowledged, so the collector sees every root either in the file or on
//! the socket.
//!
//! The file is per process, so it is shared by every store handle on the same
//! state dir in this process (one registry entry per temproots path).

use super::error::{IoContext, Result};
use super::lock::{LockFile, LockKind};
use std::collections::HashMap;
use std::io::{Read, Write};
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
}

impl TempRoots {
    /// The process-wide handle for `state_dir`.
    pub fn for_state_dir(state_dir: &Path) -> Arc<TempRoots> {
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        map.entry(state_dir.to_owned())
            .or_insert_with(|| {
                Arc::new(TempRoots {
                    state_dir: state_dir.to_owned(),
                    inner: Mutex::new(Inner { file: None, gc_lock: None, socket: None }),
                })
            })
            .clone()
    }

    /// Gives up a handle; when it was the last one, the roots file is closed
    /// and deleted, as CppNix does when its store object goes away.
    pub fn release(handle: &Arc<TempRoots>) {
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        // One reference in the registry, one the caller's: nobody else uses it.
        if Arc::strong_count(handle) == 2 {
            map.remove(&handle.state_dir);
            let mut inner = handle.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.file.take().is_some() {
                let _ = std::fs::remove_file(handle.file_path());
            }
        }
    }

    fn file_path(&self) -> PathBuf {
        self.state_dir.join("temproots").join(std::process::id().to_string())
    }

    /// Creates and locks this process's roots file (once).
    fn ensure_file(&self, inner: &mut Inner) -> Result<()> {
        if inner.file.is_some() {
            return Ok(());
        }
        let path = self.file_path();
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

    /// Protects `full_path` from garbage collection for the life of this process.
    pub fn add(&self, full_path: &str) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure_file(&mut inner)?;
        let gc_lock_path = self.state_dir.join("gc.lock");
        if inner.gc_lock.is_none() {
            inner.gc_lock = Some(LockFile::open(&gc_lock_path, true).at("opening", &gc_lock_path)?);
        }
        loop {
            let gc_lock = inner.gc_lock.as_ref().expect("opened above");
            if gc_lock.try_lock(LockKind::Shared).at("locking", &gc_lock_path)? {
                let result = append(&mut inner, full_path, &self.file_path());
                if let Some(l) = inner.gc_lock.as_ref() {
                    let _ = l.unlock();
                }
                return result;
            }
            // A collector is running: tell it directly, then record the root.
            match self.send_to_collector(&mut inner, full_path) {
                Ok(true) => return append(&mut inner, full_path, &self.file_path()),
                Ok(false) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(e),
            }
        }
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
            Ok(()) => Err(super::error::Error::Other(format!(
                "garbage collector sent an unexpected reply {:?} for root '{full_path}'",
                ack[0] as char
            ))),
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

fn append(inner: &mut Inner, full_path: &str, file_path: &Path) -> Result<()> {
    let mut record = Vec::with_capacity(full_path.len() + 1);
    record.extend_from_slice(full_path.as_bytes());
    record.push(0);
    let file = inner.file.as_mut().expect("roots file exists");
    file.file().write_all(&record).at("writing temp roots file", file_path)
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
