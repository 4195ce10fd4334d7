//! The collector's side of the temp-root protocol: while it runs, it
//! listens on `$state/gc-socket/socket` (mode 0666); each client sends full
//! store paths, one per line, and gets the byte `1` back once the root is
//! recorded. A root whose path is being deleted at that moment is
//! acknowledged only after that deletion finished (CppNix gc.cc).

use super::super::error::{IoContext, Result};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Roots known to the running collector, by hash part.
#[derive(Default)]
pub struct Shared {
    pub temp_roots: HashSet<String>,
    /// Hash part of the path being deleted right now.
    pub pending: Option<String>,
}

pub struct RootsServer {
    pub shared: Arc<(Mutex<Shared>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    clients: Arc<Mutex<Vec<UnixStream>>>,
    socket_path: PathBuf,
}

impl RootsServer {
    pub fn start(state_dir: &Path, store_dir: String) -> Result<RootsServer> {
        let dir = state_dir.join("gc-socket");
        std::fs::create_dir_all(&dir).at("creating directory", &dir)?;
        let socket_path = dir.join("socket");
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path).at("binding", &socket_path)?;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666))
            .at("changing mode of", &socket_path)?;
        listener.set_nonblocking(true).at("making non-blocking", &socket_path)?;
        let shared: Arc<(Mutex<Shared>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let thread = {
            let (shared, stop, clients) = (shared.clone(), stop.clone(), clients.clone());
            std::thread::Builder::new()
                .name("gc-roots-server".into())
                .spawn(move || accept_loop(listener, shared, stop, clients, store_dir))
                .at("starting thread for", &socket_path)?
        };
        Ok(RootsServer { shared, stop, thread: Some(thread), clients, socket_path })
    }

    /// Whether `hash_part` is a temp root; if not, marks it as being deleted.
    pub fn claim_for_deletion(&self, hash_part: &str) -> bool {
        let (lock, _) = &*self.shared;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        if s.temp_roots.contains(hash_part) {
            return false;
        }
        s.pending = Some(hash_part.to_owned());
        true
    }

    /// Ends the deletion started by [`Self::claim_for_deletion`].
    pub fn release_pending(&self) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).pending = None;
        cv.notify_all();
    }

    pub fn add_root(&self, hash_part: String) {
        let (lock, _) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).temp_roots.insert(hash_part);
    }
}

impl Drop for RootsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release_pending();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.clients.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        tracing::debug!(socket = %self.socket_path.display(), "GC roots server stopped");
    }
}

fn accept_loop(
    listener: UnixListener,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    stop: Arc<AtomicBool>,
    clients: Arc<Mutex<Vec<UnixStream>>>,
    store_dir: String,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if let Ok(clone) = stream.try_clone() {
                    clients.lock().unwrap_or_else(|e| e.into_inner()).push(clone);
                }
                let (shared, store_dir) = (shared.clone(), store_dir.clone());
                let _ = std::thread::Builder::new()
                    .name("gc-roots-client".into())
                    .spawn(move || serve_client(stream, shared, store_dir));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!("accepting a GC roots connection: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn serve_client(stream: UnixStream, shared: Arc<(Mutex<Shared>, Condvar)>, store_dir: String) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let prefix = format!("{store_dir}/");
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let hash_part = match line.strip_prefix(&prefix) {
            Some(base) if base.len() >= store::store_path::HASH_PART_LEN => {
                base[..store::store_path::HASH_PART_LEN].to_owned()
            }
            _ => {
                tracing::warn!("GC roots client sent a path outside the store: '{line}'");
                return;
            }
        };
        let (lock, cv) = &*shared;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        while s.pending.as_deref() == Some(hash_part.as_str()) {
            s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        tracing::debug!("got new GC root '{line}'");
        s.temp_roots.insert(hash_part);
        drop(s);
        if writer.write_all(b"1").is_err() {
            return;
        }
    }
}
