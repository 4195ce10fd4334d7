//! Garbage collection by reachability, following CppNix 2.26's
//! `collectGarbage` (src/libstore/gc.cc; the team notes local-store.md
//! §7): under an exclusive `gc.lock`, with a roots server for clients that
//! add temp roots meanwhile, every store entry is examined through the
//! closure of its referrers (plus derivation/deriver edges per
//! `keep-derivations`/`keep-outputs`); if nothing in that closure is a root
//! the whole closure is garbage and is deleted referrers first, each path
//! invalidated in the database before its files go.

mod roots;
mod server;

pub use roots::Roots;

use super::LocalStore;
use super::error::{Error, IoContext, Result};
use super::fs_util::delete_path;
use super::lock::{LockFile, LockKind};
use server::RootsServer;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use store::store_path::StorePath;

/// What a collection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// List the live paths.
    ReturnLive,
    /// List the dead paths.
    ReturnDead,
    /// Delete every dead path.
    DeleteDead,
    /// Delete these paths (an error if one is alive).
    DeleteSpecific(BTreeSet<StorePath>),
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub action: GcAction,
    /// Ignore permanent and runtime roots (temp roots still count).
    pub ignore_liveness: bool,
    /// Stop once this many bytes were freed.
    pub max_freed: u64,
}

impl GcOptions {
    pub fn new(action: GcAction) -> GcOptions {
        GcOptions { action, ignore_liveness: false, max_freed: u64::MAX }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcResults {
    /// Full paths deleted (or listed, for the `Return*` actions).
    pub paths: BTreeSet<String>,
    pub bytes_freed: u64,
}

/// Raised internally once `max_freed` is reached.
struct LimitReached;

struct Collection<'a> {
    store: &'a LocalStore,
    opts: &'a GcOptions,
    should_delete: bool,
    keep_outputs: bool,
    keep_derivations: bool,
    roots: HashSet<StorePath>,
    alive: HashSet<StorePath>,
    dead: HashSet<StorePath>,
    server: RootsServer,
    results: GcResults,
    progress: &'a mut dyn FnMut(&str),
    log: &'a mut dyn FnMut(&str),
}

impl LocalStore {
    /// Runs a garbage collection. `progress` is told each path deleted.
    pub fn collect_garbage(&self, opts: &GcOptions, progress: &mut dyn FnMut(&str)) -> Result<GcResults> {
        self.collect_garbage_logged(opts, progress, &mut |line| tracing::info!("{line}"))
    }

    /// [`Self::collect_garbage`], giving `log` the lines CppNix prints at
    /// info level while it collects ("finding garbage collector roots...",
    /// "deleting '…'", ...), in order: its daemon sends them to the client.
    pub fn collect_garbage_logged(
        &self,
        opts: &GcOptions,
        progress: &mut dyn FnMut(&str),
        log: &mut dyn FnMut(&str),
    ) -> Result<GcResults> {
        let should_delete = matches!(opts.action, GcAction::DeleteDead | GcAction::DeleteSpecific(_));
        let (mut keep_outputs, mut keep_derivations) =
            (self.shared.config.keep_outputs, self.shared.config.keep_derivations);
        if matches!(opts.action, GcAction::DeleteSpecific(_)) && opts.ignore_liveness {
            keep_outputs = false;
            keep_derivations = false;
        }
        let state = &self.shared.config.state_dir;
        // A handle on a database that is no longer the one on disk would
        // judge the new store's paths by the old one's records.
        if self.database_replaced() {
            return Err(Error::DatabaseReplaced(state.join("db/db.sqlite")));
        }
        if should_delete {
            // Frees room for SQLite on a full disk; recreated at the next open.
            let _ = std::fs::remove_file(state.join("db/reserved"));
        }
        // Our roots file must be on disk, without roots released since.
        self.shared.temp_roots.revalidate()?;
        self.shared.temp_roots.flush();
        let gc_lock_path = state.join("gc.lock");
        let gc_lock = LockFile::open(&gc_lock_path, true).at("opening", &gc_lock_path)?;
        if !gc_lock.try_lock(LockKind::Exclusive).at("locking", &gc_lock_path)? {
            log("waiting for the big garbage collector lock...");
            gc_lock.lock(LockKind::Exclusive).at("locking", &gc_lock_path)?;
        }
        let server = RootsServer::start(state, self.shared.config.store_dir.as_str().to_owned())?;

        log("finding garbage collector roots...");
        let mut roots = HashSet::new();
        if !opts.ignore_liveness {
            roots.extend(self.find_roots_no_temp(true, &mut *log)?.into_keys());
        }
        for (_, path) in super::temp_roots::read_all_with_owner(state)? {
            if let Ok((p, _)) = self.shared.config.store_dir.split_path(&path) {
                server.add_root(p.hash_part().to_owned());
                roots.insert(p);
            }
        }

        let mut gc = Collection {
            store: self,
            opts,
            should_delete,
            keep_outputs,
            keep_derivations,
            roots,
            alive: HashSet::new(),
            dead: HashSet::new(),
            server,
            results: GcResults::default(),
            progress,
            log,
        };
        gc.run()?;
        let Collection { mut results, alive, dead, log, .. } = gc;
        match opts.action {
            GcAction::ReturnLive => results.paths = alive.iter().map(|p| self.display(p)).collect(),
            GcAction::ReturnDead => results.paths = dead.iter().map(|p| self.display(p)).collect(),
            GcAction::DeleteDead | GcAction::DeleteSpecific(_) => {
                log("deleting unused links...");
                self.delete_unused_links(log)?;
            }
        }
        Ok(results)
    }

    /// Removes `.links` entries nothing else links to any more. Their bytes
    /// were already counted when their last other link went (CppNix counts
    /// files with two links as freed); reports what hard linking still saves.
    fn delete_unused_links(&self, log: &mut dyn FnMut(&str)) -> Result<()> {
        let dir = self.shared.config.store_dir.as_path().join(".links");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).at("reading directory", &dir),
        };
        let (mut actual, mut unshared) = (0i64, 0i64);
        for e in entries {
            let path = e.at("reading directory", &dir)?.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.nlink() != 1 {
                actual += meta.len() as i64;
                unshared += (meta.nlink() as i64 - 1) * meta.len() as i64;
                continue;
            }
            std::fs::remove_file(&path).at("deleting", &path)?;
        }
        let overhead = std::fs::metadata(&dir).map(|m| m.blocks() as i64 * 512).unwrap_or(0);
        log(&format!(
            "note: currently hard linking saves {:.2} MiB",
            (unshared - actual - overhead) as f64 / (1024.0 * 1024.0)
        ));
        Ok(())
    }

    /// The closure under references, plus outputs of derivations
    /// (`include_outputs`) and derivers (`include_derivers`).
    fn gc_closure(
        &self,
        start: &StorePath,
        include_outputs: bool,
        include_derivers: bool,
    ) -> Result<HashSet<StorePath>> {
        let mut seen = HashSet::new();
        let mut todo = vec![start.clone()];
        while let Some(p) = todo.pop() {
            if !seen.insert(p.clone()) {
                continue;
            }
            let Some(info) = self.query_path_info(&p)? else { continue };
            todo.extend(info.references.iter().cloned());
            if include_outputs && p.is_derivation() {
                for (_, out) in self.query_derivation_outputs(&p)? {
                    if self.is_valid(&out)? {
                        todo.push(out);
                    }
                }
            }
            if include_derivers && let Some(d) = info.deriver.filter(|d| self.is_valid(d).unwrap_or(false)) {
                todo.push(d);
            }
        }
        Ok(seen)
    }
}

impl Collection<'_> {
    fn run(&mut self) -> Result<()> {
        match &self.opts.action {
            GcAction::DeleteSpecific(paths) => {
                for p in paths.clone() {
                    match self.delete_referrers_closure(&p) {
                        Ok(()) | Err(Ok(LimitReached)) => {}
                        Err(Err(e)) => return Err(e),
                    }
                    if !self.dead.contains(&p) {
                        return Err(Error::StillAlive(self.store.display(&p)));
                    }
                }
                Ok(())
            }
            _ if self.opts.max_freed == 0 => Ok(()),
            _ => {
                (self.log)(if self.should_delete { "deleting garbage..." } else { "determining live/dead paths..." });
                let dir = self.store.shared.config.store_dir.as_path().to_owned();
                for entry in std::fs::read_dir(&dir).at("reading directory", &dir)? {
                    let name = entry.at("reading directory", &dir)?.file_name();
                    let name = name.to_string_lossy().into_owned();
                    if name == ".links" {
                        continue;
                    }
                    let step = match StorePath::from_base_name(&name) {
                        Ok(p) => self.delete_referrers_closure(&p),
                        Err(_) if self.should_delete => self.delete_from_store(&name),
                        Err(_) => Ok(()),
                    };
                    match step {
                        Ok(()) => {}
                        Err(Ok(LimitReached)) => break,
                        Err(Err(e)) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    /// Decides `start` by the closure of its referrers (and the derivation
    /// edges): all garbage, or all spared because one of them is alive.
    fn delete_referrers_closure(&mut self, start: &StorePath) -> Result<(), Result<LimitReached, Error>> {
        let result = self.visit_referrers_closure(start);
        self.server.release_pending();
        result
    }

    fn visit_referrers_closure(&mut self, start: &StorePath) -> Result<(), Result<LimitReached, Error>> {
        let store = self.store;
        let mut visited: Vec<StorePath> = Vec::new();
        let mut seen = HashSet::new();
        let mut todo = VecDeque::from([start.clone()]);
        seen.insert(start.clone());
        while let Some(path) = todo.pop_front() {
            if self.alive.contains(&path) {
                self.alive.insert(start.clone());
                return Ok(());
            }
            if self.dead.contains(&path) {
                continue;
            }
            if self.roots.contains(&path) {
                return self.mark_alive(&path, start).map_err(Err);
            }
            if let GcAction::DeleteSpecific(paths) = &self.opts.action
                && !paths.contains(&path)
            {
                // Only the given paths may go; a referrer outside them keeps them.
                return Ok(());
            }
            if !self.server.claim_for_deletion(path.hash_part()) {
                return self.mark_alive(&path, start).map_err(Err);
            }
            visited.push(path.clone());
            if store.is_valid(&path).map_err(Err)? {
                let mut next: Vec<StorePath> = store.query_referrers(&path).map_err(Err)?.into_iter().collect();
                if self.keep_derivations && path.is_derivation() {
                    for (_, out) in store.query_derivation_outputs(&path).map_err(Err)? {
                        if let Some(info) = store.query_path_info(&out).map_err(Err)?
                            && info.deriver.as_ref() == Some(&path)
                        {
                            next.push(out);
                        }
                    }
                }
                if self.keep_outputs {
                    next.extend(store.query_valid_derivers(&path).map_err(Err)?);
                }
                for n in next {
                    if seen.insert(n.clone()) {
                        todo.push_back(n);
                    }
                }
            }
        }
        self.server.release_pending();
        for path in self.topo_sort_referrers_first(visited).map_err(Err)? {
            if self.alive.contains(&path) || self.dead.contains(&path) {
                continue;
            }
            if self.should_delete && !self.server.claim_for_deletion(path.hash_part()) {
                // A client made it a temp root while we were deciding: it and
                // everything it needs stay (CppNix only guards the last visited path).
                self.mark_alive(&path, &path).map_err(Err)?;
                continue;
            }
            self.dead.insert(path.clone());
            if self.should_delete {
                match store.db().invalidate_paths(std::slice::from_ref(&path)) {
                    Ok(()) => {}
                    Err(Error::PathInUse { path, referrer }) => {
                        tracing::error!("BUG: cannot delete '{path}': still referenced by '{referrer}'");
                        continue;
                    }
                    Err(e) => return Err(Err(e)),
                }
                let deleted = self.delete_from_store(path.base_name());
                self.server.release_pending();
                deleted?;
            }
        }
        Ok(())
    }

    fn mark_alive(&mut self, path: &StorePath, start: &StorePath) -> Result<()> {
        self.alive.insert(path.clone());
        self.alive.insert(start.clone());
        match self.store.gc_closure(path, self.keep_outputs, self.keep_derivations) {
            Ok(c) => self.alive.extend(c),
            Err(Error::InvalidPath(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Orders paths so that every path comes before the paths it refers to.
    fn topo_sort_referrers_first(&self, paths: Vec<StorePath>) -> Result<Vec<StorePath>> {
        let set: HashSet<&StorePath> = paths.iter().collect();
        let mut refs: HashMap<&StorePath, Vec<StorePath>> = HashMap::new();
        for p in &paths {
            let r = match self.store.query_path_info(p)? {
                Some(info) => info.references.into_iter().filter(|r| r != p && set.contains(r)).collect(),
                None => Vec::new(),
            };
            refs.insert(p, r);
        }
        // Post-order over references gives references first; reverse it.
        let mut order = Vec::with_capacity(paths.len());
        let mut done: HashSet<&StorePath> = HashSet::new();
        for p in &paths {
            let mut stack: Vec<(&StorePath, usize)> = vec![(p, 0)];
            while let Some((node, i)) = stack.pop() {
                if i == 0 && done.contains(node) {
                    continue;
                }
                done.insert(node);
                let children = &refs[node];
                if let Some(child) = children.get(i) {
                    stack.push((node, i + 1));
                    if let Some(c) = set.get(child)
                        && !done.contains(c)
                    {
                        stack.push((c, 0));
                    }
                } else {
                    order.push(node.clone());
                }
            }
        }
        order.reverse();
        Ok(order)
    }

    /// Deletes a store entry's files (a `tmp-*` dir only if nobody holds it).
    fn delete_from_store(&mut self, base_name: &str) -> Result<(), Result<LimitReached, Error>> {
        let real = self.store.shared.config.store_dir.as_path().join(base_name);
        // A `tmp-*` dir stays locked by us until it is gone: an add that
        // created it but has not locked it yet waits, then finds it deleted
        // and makes another (`StoreTempDir::new`).
        let mut _tmp_dir_lock = None;
        if base_name.starts_with("tmp-") {
            let lock = std::fs::File::open(&real).ok().map(|f| LockFile::from_file(f, &real));
            if !lock.as_ref().is_some_and(|l| l.try_lock(LockKind::Exclusive).unwrap_or(false)) {
                tracing::debug!("skipping locked tempdir '{}'", real.display());
                return Ok(());
            }
            _tmp_dir_lock = lock;
        }
        let full = format!("{}/{base_name}", self.store.shared.config.store_dir.as_str());
        (self.log)(&format!("deleting '{full}'"));
        (self.progress)(&full);
        let freed = delete_path(&real).map_err(Err)?;
        self.results.paths.insert(full);
        self.results.bytes_freed += freed;
        if self.results.bytes_freed > self.opts.max_freed {
            (self.log)(&format!("deleted more than {} bytes; stopping", self.opts.max_freed));
            return Err(Ok(LimitReached));
        }
        Ok(())
    }
}
