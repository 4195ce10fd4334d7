//! Deduplication by hard links under `$store/.links`, as CppNix's
//! optimise-store.cc (the team notes local-store.md §6): each regular
//! file or symlink is named in `.links` by the nix32 SHA-256 of its NAR
//! serialisation (so the executable bit is part of the key), and replaced by
//! a hard link to that entry through an atomic rename.

use super::LocalStore;
use super::canonicalise::set_mtime_one;
use super::error::{IoContext, Result};
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use store::hash::Algorithm;
use store::store_path::StorePath;

/// What an optimise run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptimiseStats {
    pub files_linked: u64,
    pub bytes_freed: u64,
}

/// What [`LocalStore::optimise_store_with_events`] reports as it goes: what
/// CppNix's `optimiseStore` turns into its activity (progress over the
/// paths), one sub-activity per path, and a result per file linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimiseEvent<'a> {
    /// Before the first path: how many valid paths there are.
    Start { total: usize },
    /// A valid path is about to be optimised.
    Path(&'a StorePath),
    /// A file was replaced by a hard link: its size and 512-byte blocks.
    FileLinked { size: u64, blocks: u64 },
    /// A path is done (one that vanished meanwhile is skipped without this).
    Done { done: usize, total: usize },
}

impl LocalStore {
    /// Hard-links identical files across all valid paths (`nix-store --optimise`).
    /// `progress` is called with (paths done, paths total).
    pub fn optimise_store(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<OptimiseStats> {
        self.optimise_store_with_events(&mut |e| {
            if let OptimiseEvent::Done { done, total } = e {
                progress(done, total);
            }
        })
    }

    /// [`Self::optimise_store`], reporting each step to `events`.
    pub fn optimise_store_with_events(&self, events: &mut dyn FnMut(OptimiseEvent<'_>)) -> Result<OptimiseStats> {
        let mut inodes = self.link_inodes()?;
        let mut stats = OptimiseStats::default();
        let paths = self.query_all_valid_paths()?;
        let total = paths.len();
        events(OptimiseEvent::Start { total });
        let mut done = 0;
        for path in &paths {
            self.add_temp_root(path)?;
            if !self.is_valid(path)? {
                continue; // collected meanwhile
            }
            events(OptimiseEvent::Path(path));
            self.optimise_tree(&self.real_path(path), &mut inodes, &mut stats, events)?;
            done += 1;
            events(OptimiseEvent::Done { done, total });
        }
        Ok(stats)
    }

    /// Optimises one new tree (for `auto-optimise-store`).
    pub fn optimise_path(&self, root: &Path) -> Result<OptimiseStats> {
        let mut inodes = self.link_inodes()?;
        let mut stats = OptimiseStats::default();
        self.optimise_tree(root, &mut inodes, &mut stats, &mut |_| {})?;
        Ok(stats)
    }

    fn links_dir(&self) -> PathBuf {
        self.shared.config.store_dir.as_path().join(".links")
    }

    /// Inodes already in `.links`: files linked to them are skipped cheaply.
    fn link_inodes(&self) -> Result<HashSet<u64>> {
        let dir = self.links_dir();
        let mut set = HashSet::new();
        for e in std::fs::read_dir(&dir).at("reading directory", &dir)? {
            let e = e.at("reading directory", &dir)?;
            set.insert(std::os::unix::fs::DirEntryExt::ino(&e));
        }
        Ok(set)
    }

    /// Depth first, each directory's entries in the order the directory
    /// lists them (CppNix recurses over `readDirectoryIgnoringInodes`).
    fn optimise_tree(
        &self,
        root: &Path,
        inodes: &mut HashSet<u64>,
        stats: &mut OptimiseStats,
        events: &mut dyn FnMut(OptimiseEvent<'_>),
    ) -> Result<()> {
        let mut stack = vec![root.to_owned()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path).at("getting attributes of", &path)?;
            if meta.is_dir() {
                let mut children = Vec::new();
                for e in std::fs::read_dir(&path).at("reading directory", &path)? {
                    let e = e.at("reading directory", &path)?;
                    if !inodes.contains(&std::os::unix::fs::DirEntryExt::ino(&e)) {
                        children.push(e.path());
                    }
                }
                stack.extend(children.into_iter().rev());
                continue;
            }
            self.optimise_file(&path, &meta, inodes, stats, events)?;
        }
        Ok(())
    }

    fn optimise_file(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        inodes: &mut HashSet<u64>,
        stats: &mut OptimiseStats,
        events: &mut dyn FnMut(OptimiseEvent<'_>),
    ) -> Result<()> {
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_symlink() {
            return Ok(());
        }
        if ft.is_file() && meta.mode() & 0o200 != 0 {
            tracing::warn!("skipping suspicious writable file '{}'", path.display());
            return Ok(());
        }
        if meta.nlink() > 1 && inodes.contains(&meta.ino()) {
            return Ok(());
        }
        let (hash, _) =
            crate::nar_fs::hash_path(path, Algorithm::Sha256).map_err(|e| super::Error::Nar(e.to_string()))?;
        let link = self.links_dir().join(hash.to_nix32());
        if let Ok(lmeta) = std::fs::symlink_metadata(&link)
            && lmeta.len() != meta.len()
        {
            tracing::warn!("removing corrupted link '{}'", link.display());
            std::fs::remove_file(&link).at("removing", &link)?;
        }
        if std::fs::symlink_metadata(&link).is_err() {
            match std::fs::hard_link(path, &link) {
                Ok(()) => {
                    inodes.insert(meta.ino());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                    tracing::info!("cannot link '{}' to '{}': {e}", link.display(), path.display());
                    return Ok(());
                }
                Err(e) => return Err(e).at("linking into", &link),
            }
        }
        let lmeta = std::fs::symlink_metadata(&link).at("getting attributes of", &link)?;
        if lmeta.ino() == meta.ino() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("/"));
        let toggle = dir != self.shared.config.store_dir.as_path();
        let dir_mode = std::fs::symlink_metadata(dir).at("getting attributes of", dir)?.mode() & 0o7777;
        if toggle {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode | 0o200))
                .at("making writable", dir)?;
        }
        let result = self.replace_with_link(path, &link, meta, inodes, stats, events);
        if toggle {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).at("changing mode of", dir)?;
            set_mtime_one(dir)?;
        }
        result
    }

    fn replace_with_link(
        &self,
        path: &Path,
        link: &Path,
        meta: &std::fs::Metadata,
        inodes: &mut HashSet<u64>,
        stats: &mut OptimiseStats,
        events: &mut dyn FnMut(OptimiseEvent<'_>),
    ) -> Result<()> {
        let mut rnd = [0u8; 4];
        let _ = getrandom::fill(&mut rnd);
        let temp = self.shared.config.store_dir.as_path().join(format!(
            ".tmp-link-{}-{}",
            std::process::id(),
            u32::from_le_bytes(rnd)
        ));
        match std::fs::hard_link(link, &temp) {
            Ok(()) => {
                inodes.insert(meta.ino());
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MLINK.raw_os_error()) => {
                if meta.len() != 0 {
                    tracing::info!("'{}' has the maximum number of links", link.display());
                }
                return Ok(());
            }
            Err(e) => return Err(e).at("linking", &temp),
        }
        if let Err(e) = std::fs::rename(&temp, path) {
            let _ = std::fs::remove_file(&temp);
            if e.raw_os_error() == Some(rustix::io::Errno::MLINK.raw_os_error()) {
                return Ok(());
            }
            return Err(e).at("renaming over", path);
        }
        stats.files_linked += 1;
        // CppNix counts every replaced file's size, shared or not.
        stats.bytes_freed += meta.len();
        events(OptimiseEvent::FileLinked { size: meta.len(), blocks: meta.blocks() });
        Ok(())
    }
}
