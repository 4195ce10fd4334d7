//! Substituting closures: which paths to fetch, from narinfo references,
//! in an order where each comes after its references ([`FetchPlan`]), and
//! fetching such a plan on several threads, each path once its references
//! are in ([`Substituters::fetch_all`]). CppNix does the same with one
//! `PathSubstitutionGoal` per path waiting on its references' goals.

use super::error::SubstituteError;
use super::{Substitutable, Substituters, parallel_map};
use local_store::LocalStore;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use store::path_info::PathInfo;
use store::store_path::StorePath;

/// What to substitute to make some paths valid.
#[derive(Debug, Clone, Default)]
pub struct FetchPlan {
    /// Every path to fetch, each after its references.
    pub fetch: Vec<Substitutable>,
    /// Paths that are not valid and that no cache offers: they, and the
    /// planned paths that refer to them, cannot be substituted.
    pub missing: BTreeSet<StorePath>,
}

impl Substituters {
    /// Plans the substitution of `paths` and everything they refer to that
    /// is not valid in `store`, asking caches in parallel.
    pub fn plan(&self, store: &LocalStore, paths: &[StorePath]) -> Result<FetchPlan, SubstituteError> {
        let mut found: BTreeMap<StorePath, Substitutable> = BTreeMap::new();
        let mut missing = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut frontier: Vec<StorePath> = paths.to_vec();
        while !frontier.is_empty() {
            let mut todo = Vec::new();
            for p in frontier.drain(..) {
                if seen.insert(p.clone()) && !store.is_valid(&p)? {
                    todo.push(p);
                }
            }
            let answers = parallel_map(&todo, self.jobs(), |p| self.query(p));
            for (p, answer) in todo.into_iter().zip(answers) {
                match answer? {
                    Some(s) => {
                        frontier.extend(s.info.references.iter().filter(|r| !seen.contains(*r)).cloned());
                        found.insert(p, s);
                    }
                    None => {
                        missing.insert(p);
                    }
                }
            }
        }
        Ok(FetchPlan { fetch: dependency_order(found, self)?, missing })
    }

    /// Fetches `plan` (each path after its references, as [`Self::plan`]
    /// orders them) on up to `jobs` threads (0: `http-connections`). Stops
    /// starting new fetches at the first failure and returns it; what was
    /// fetched until then stays valid. `progress(path, done, expected)` as
    /// [`Self::fetch`]'s, from any of the threads.
    pub fn fetch_all(
        &self,
        store: &LocalStore,
        plan: &[Substitutable],
        jobs: usize,
        progress: &(dyn Fn(&StorePath, u64, u64) + Sync),
    ) -> Result<Vec<PathInfo>, SubstituteError> {
        let jobs = if jobs == 0 { self.jobs() } else { jobs }.min(plan.len()).max(1);
        let planned: HashSet<&StorePath> = plan.iter().map(|s| &s.info.path).collect();
        let state = Mutex::new(Schedule {
            pending: (0..plan.len()).collect(),
            done: HashSet::new(),
            results: plan.iter().map(|_| None).collect(),
            failure: None,
        });
        let changed = Condvar::new();
        // Whether `i`'s references in the plan are all in.
        let ready = |s: &Schedule, i: usize| {
            let info = &plan[i].info;
            info.references.iter().all(|r| *r == info.path || !planned.contains(r) || s.done.contains(r))
        };
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| {
                    loop {
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        let i = loop {
                            if s.failure.is_some() || s.pending.is_empty() {
                                return;
                            }
                            if let Some(pos) = s.pending.iter().position(|&i| ready(&s, i)) {
                                break s.pending.remove(pos);
                            }
                            s = changed.wait(s).unwrap_or_else(|e| e.into_inner());
                        };
                        drop(s);
                        let path = &plan[i].info.path;
                        let result = self.fetch(store, &plan[i], &mut |done, total| progress(path, done, total));
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        match result {
                            Ok(info) => {
                                s.done.insert(path.clone());
                                s.results[i] = Some(info);
                            }
                            Err(e) => {
                                s.failure.get_or_insert(e);
                            }
                        }
                        changed.notify_all();
                    }
                });
            }
        });
        let s = state.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = s.failure {
            return Err(e);
        }
        Ok(s.results.into_iter().flatten().collect())
    }
}

struct Schedule {
    /// Indices into the plan not started yet, in plan order.
    pending: Vec<usize>,
    done: HashSet<StorePath>,
    results: Vec<Option<PathInfo>>,
    failure: Option<SubstituteError>,
}

/// `found` with each path after its references (those in `found`).
fn dependency_order(
    found: BTreeMap<StorePath, Substitutable>,
    subs: &Substituters,
) -> Result<Vec<Substitutable>, SubstituteError> {
    #[derive(PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&StorePath, Mark> = HashMap::new();
    let mut order: Vec<&StorePath> = Vec::new();
    for root in found.keys() {
        if marks.contains_key(root) {
            continue;
        }
        // Depth-first, iteratively: (path, references still to visit).
        let mut stack: Vec<(&StorePath, Vec<&StorePath>)> = Vec::new();
        let refs_of = |p: &StorePath| -> Vec<&StorePath> {
            found[p].info.references.iter().filter(|r| *r != p && found.contains_key(*r)).collect()
        };
        marks.insert(root, Mark::Visiting);
        stack.push((root, refs_of(root)));
        while let Some((path, refs)) = stack.last_mut() {
            match refs.pop() {
                Some(r) => match marks.get(r) {
                    Some(Mark::Done) => {}
                    Some(Mark::Visiting) => {
                        return Err(SubstituteError::Cycle(subs.config.store_dir.display(r)));
                    }
                    None => {
                        let r = found.get_key_value(r).map(|(k, _)| k).expect("filtered to found paths");
                        marks.insert(r, Mark::Visiting);
                        stack.push((r, refs_of(r)));
                    }
                },
                None => {
                    marks.insert(path, Mark::Done);
                    order.push(path);
                    stack.pop();
                }
            }
        }
    }
    let order: Vec<StorePath> = order.into_iter().cloned().collect();
    let mut found = found;
    Ok(order.iter().filter_map(|p| found.remove(p)).collect())
}
