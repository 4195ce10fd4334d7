//! Checking the store against itself, as `nix-store --verify` does (CppNix
//! `LocalStore::verifyStore`): valid paths whose files vanished are removed
//! from the database when nothing valid refers to them; with
//! `check_contents`, every path's NAR is rehashed and compared with the
//! registered hash, and `.links` entries with their names. Without
//! substituters nothing can be repaired from elsewhere, so `repair` fixes
//! what can be fixed locally (missing sizes, corrupt links) and reports the rest.

use super::LocalStore;
use super::error::{IoContext, Result};
use super::lock::{LockFile, LockKind};
use std::collections::{BTreeSet, HashSet};
use store::hash::{Algorithm, Encoding};
use store::store_path::StorePath;

/// What `verify_store` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Problems that remain (one line each).
    pub errors: Vec<String>,
    /// Things fixed or noted along the way (one line each).
    pub notes: Vec<String>,
    pub paths_checked: usize,
    /// Everything above and the phases, in the order CppNix logs them
    /// (its daemon sends these lines to the client).
    pub log: Vec<VerifyLine>,
}

/// A line `verify_store` logs: CppNix prints the problems at error level
/// (without an `error: ` prefix) and the rest at info level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyLine {
    Info(String),
    Error(String),
}

impl VerifyReport {
    fn error(&mut self, line: String) {
        self.log.push(VerifyLine::Error(line.clone()));
        self.errors.push(line);
    }

    fn note(&mut self, line: String) {
        self.log.push(VerifyLine::Info(line.clone()));
        self.notes.push(line);
    }

    fn phase(&mut self, line: &str) {
        self.log.push(VerifyLine::Info(line.to_owned()));
    }
}

impl LocalStore {
    /// `progress(done, total)` is called while checking contents.
    pub fn verify_store(
        &self,
        check_contents: bool,
        repair: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        report.phase("reading the Nix store...");
        // A consistent view: no collector deletes while we look.
        let gc_lock_path = self.shared.config.state_dir.join("gc.lock");
        let gc_lock = LockFile::open(&gc_lock_path, true).at("opening", &gc_lock_path)?;
        gc_lock.lock(LockKind::Shared).at("locking", &gc_lock_path)?;

        let store_dir = self.shared.config.store_dir.as_path();
        let mut on_disk = HashSet::new();
        for e in std::fs::read_dir(store_dir).at("reading directory", store_dir)? {
            let name = e.at("reading directory", store_dir)?.file_name();
            if let Ok(p) = StorePath::from_base_name(&name.to_string_lossy()) {
                on_disk.insert(p);
            }
        }
        report.phase("checking path existence...");
        for problem in self.integrity_check()? {
            report.error(format!("database integrity check: {problem}"));
        }

        let all = self.query_all_valid_paths()?;
        let mut done = HashSet::new();
        let mut valid = BTreeSet::new();
        for p in &all {
            self.verify_existence(p, &on_disk, &mut done, &mut valid, &mut report)?;
        }

        if check_contents {
            report.phase("checking link hashes...");
            self.verify_links(repair, &mut report)?;
            report.phase("checking store hashes...");
            let total = valid.len();
            for (i, p) in valid.iter().enumerate() {
                self.verify_contents(p, repair, &mut report)?;
                report.paths_checked += 1;
                progress(i + 1, total);
            }
        }
        Ok(report)
    }

    fn verify_existence(
        &self,
        path: &StorePath,
        on_disk: &HashSet<StorePath>,
        done: &mut HashSet<StorePath>,
        valid: &mut BTreeSet<StorePath>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        // Iterative over referrers: a missing path can be dropped only once
        // every referrer has been dropped too.
        let mut stack = vec![(path.clone(), false)];
        while let Some((p, expanded)) = stack.pop() {
            if !expanded {
                if !done.insert(p.clone()) {
                    continue;
                }
                if on_disk.contains(&p) {
                    valid.insert(p);
                    continue;
                }
                stack.push((p.clone(), true));
                for r in self.query_referrers(&p)? {
                    if r != p {
                        stack.push((r, false));
                    }
                }
                continue;
            }
            let referrers = self.query_referrers(&p)?;
            let full = self.display(&p);
            if referrers.iter().any(|r| *r != p && valid.contains(r)) {
                report.error(format!("path '{full}' disappeared, but it still has valid referrers!"));
                valid.insert(p);
            } else {
                report.note(format!("path '{full}' disappeared, removing from database..."));
                self.db().invalidate_paths(std::slice::from_ref(&p))?;
            }
        }
        Ok(())
    }

    fn verify_links(&self, repair: bool, report: &mut VerifyReport) -> Result<()> {
        let links = self.shared.config.store_dir.as_path().join(".links");
        let Ok(entries) = std::fs::read_dir(&links) else { return Ok(()) };
        for e in entries {
            let path = e.at("reading directory", &links)?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let (hash, _) =
                crate::nar_fs::hash_path(&path, Algorithm::Sha256).map_err(|e| super::Error::Nar(e.to_string()))?;
            if hash.to_nix32() != name {
                let line = format!(
                    "link '{}' was modified! expected hash '{name}', got '{}'",
                    path.display(),
                    hash.to_nix32()
                );
                if repair {
                    // CppNix prints the damage, then the repair (and counts no error).
                    report.log.push(VerifyLine::Error(line));
                    std::fs::remove_file(&path).at("removing", &path)?;
                    report.note(format!("removed link '{}'", path.display()));
                } else {
                    report.error(line);
                }
            }
        }
        Ok(())
    }

    fn verify_contents(&self, path: &StorePath, repair: bool, report: &mut VerifyReport) -> Result<()> {
        let Some(mut info) = self.query_path_info(path)? else { return Ok(()) };
        let full = self.display(path);
        let real = self.real_path(path);
        let (hash, size) = match crate::nar_fs::hash_path(&real, info.nar_hash.algorithm()) {
            Ok(r) => r,
            Err(e) => {
                report.error(format!("cannot read '{full}': {e}"));
                return Ok(());
            }
        };
        if hash != info.nar_hash {
            report.error(format!(
                "path '{full}' was modified! expected hash '{}', got '{}'",
                info.nar_hash.to_typed(Encoding::Nix32),
                hash.to_typed(Encoding::Nix32)
            ));
            if repair {
                // Nothing to substitute from and no builds: CppNix's
                // `repairPath` fails the same way, logged as an error.
                report.log.push(VerifyLine::Error(format!("error: cannot repair path '{full}'")));
            }
        } else if info.nar_size == 0 {
            report.note(format!("updating size field on '{full}' to {size}"));
            info.nar_size = size;
            self.register_valid_paths(std::slice::from_ref(&info))?;
        }
        Ok(())
    }
}
