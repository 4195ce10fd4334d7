//! Queued paths are garbage-collector roots until uploaded: a symlink per
//! path in `<state dir>/gcroots/armitage-uploads/`, which the collector
//! finds as it finds every root under `gcroots/`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use store::store_path::{StoreDir, StorePath};

/// Where queued paths are rooted, under the state directory.
pub const DIR: &str = "gcroots/armitage-uploads";

pub struct Roots {
    dir: PathBuf,
    store_dir: StoreDir,
}

impl Roots {
    /// The roots folder of `state_dir`, made if missing.
    pub fn open(state_dir: &Path, store_dir: StoreDir) -> io::Result<Roots> {
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Roots { dir, store_dir })
    }

    /// Roots `path` (whose full path is `full`).
    pub fn add(&self, path: &StorePath, full: &str) -> io::Result<()> {
        match std::os::unix::fs::symlink(full, self.dir.join(path.to_string())) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Removes the root of `full`, if any.
    pub fn remove(&self, full: &str) {
        if let Ok(path) = self.store_dir.parse_path(full) {
            let _ = std::fs::remove_file(self.dir.join(path.to_string()));
        }
    }

    /// Makes the roots exactly `waiting` (full paths): after a kill between
    /// rooting and queueing, or between uploading and unrooting.
    pub fn keep_only(&self, waiting: &[String]) {
        let wanted: BTreeSet<String> =
            waiting.iter().filter_map(|full| self.store_dir.parse_path(full).ok()).map(|p| p.to_string()).collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if !wanted.contains(&*entry.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        for full in waiting {
            if let Ok(path) = self.store_dir.parse_path(full)
                && let Err(e) = self.add(&path, full)
            {
                tracing::warn!("cannot root '{full}' until it is uploaded: {e}");
            }
        }
    }
}
