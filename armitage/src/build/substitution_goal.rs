//! Making one path valid from a binary cache (CppNix
//! `PathSubstitutionGoal`): ask the substituters, substitute its references
//! first (each its own goal, shared like every goal), then download,
//! check and register it. [`Builder::substitution`] starts these goals.

use super::builder::{Builder, Job};
use super::goal::{Event, Goal, GoalCtx, GoalKey, Outcome, wait_inputs};
use std::sync::Arc;
use store::store_path::StorePath;
use worker_protocol::BuildStatus;

impl Builder {
    /// The goal making `path` valid by substitution.
    pub fn substitution(self: &Arc<Self>, job: &Arc<Job>, path: StorePath, repair: bool) -> Arc<Goal> {
        let key = GoalKey::Substitution(path.clone(), repair);
        let (b, job) = (self.clone(), job.clone());
        self.goals.get_or_start(key, move |ctx| run(b, job, ctx, path, repair))
    }
}

async fn run(b: Arc<Builder>, job: Arc<Job>, ctx: GoalCtx, path: StorePath, repair: bool) -> Outcome {
    let store = match b.store.session() {
        Ok(s) => Arc::new(s),
        Err(e) => return Outcome::failed(BuildStatus::MiscFailure, e.to_string()),
    };
    let full = store.display(&path);
    // A quick lookup: on the worker thread (see derivation_goal's `blocking`).
    match store.add_temp_root(&path).and_then(|()| store.is_valid(&path)) {
        Ok(true) if !repair => {
            let mut o = Outcome::new(BuildStatus::AlreadyValid);
            o.outputs.insert("out".into(), path);
            return o;
        }
        Ok(_) => {}
        Err(e) => return Outcome::failed(BuildStatus::MiscFailure, e.to_string()),
    }
    let no_substituters = || {
        Outcome::failed(
            BuildStatus::NoSubstituters,
            format!("path '{full}' is required, but there is no substituter that can build it"),
        )
    };
    // Repairing a valid path from a cache (CppNix substitutes to a
    // temporary path and swaps it in) is not done: a derivation's repair
    // rebuilds it instead.
    if repair {
        return no_substituters();
    }
    let Some(subs) = Builder::job_substituters(&job).cloned() else { return no_substituters() };
    let (s, p) = (subs.clone(), path.clone());
    // HTTP work holds a blocking thread: at most `http-connections` goals
    // do it at once, the others wait here without a thread.
    let Ok(slot) = b.fetch_slots.clone().acquire_owned().await else {
        return Outcome::failed(BuildStatus::MiscFailure, "the daemon is shutting down");
    };
    let queried = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut notes = Vec::new();
        let found = s.query_noting(&p, &mut notes);
        (found, notes)
    })
    .await;
    // The warnings go to this goal's requesters whatever the answer, before
    // the goal ends: CppNix warns of a substitute it passes over (unsigned,
    // for another path) on each attempt. (Taken from the shared queue only
    // after an answer, they were lost when no cache had the path, or shown
    // to whichever client asked next.)
    for w in subs.take_warnings() {
        ctx.emit(Event::Warning(w));
    }
    let found = match queried {
        Ok((found, notes)) => {
            for n in notes {
                ctx.emit(Event::Warning(n.to_string()));
            }
            found
        }
        Err(e) => return Outcome::failed(BuildStatus::MiscFailure, e.to_string()),
    };
    let found = match found {
        Ok(Some(found)) => found,
        Ok(None) => return no_substituters(),
        Err(e) => return Outcome::failed(BuildStatus::TransientFailure, e.to_string()),
    };

    // References first.
    let refs: Vec<StorePath> = found.info.references.iter().filter(|r| **r != path).cloned().collect();
    if !refs.is_empty() {
        let goals = refs.into_iter().map(|r| b.substitution(&job, r, false)).collect();
        let (failed, _) = wait_inputs(&ctx.me, goals, true).await;
        if failed > 0 {
            // CppNix: `ecIncompleteClosure`, reported as a failed substitution.
            return Outcome::failed(
                BuildStatus::DependencyFailed,
                format!("some references of path '{full}' could not be realised"),
            );
        }
    }

    ctx.emit(Event::SubstituteStarted { path: path.clone(), cache: found.cache.clone() });
    let (st, ctx2, p) = (store.clone(), ctx.clone(), path.clone());
    let cancel = ctx.cancel.clone();
    let Ok(slot) = b.fetch_slots.clone().acquire_owned().await else {
        return Outcome::failed(BuildStatus::MiscFailure, "the daemon is shutting down");
    };
    let fetched = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut progress = |done: u64, expected: u64| {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            ctx2.emit(Event::SubstituteProgress { path: p.clone(), done, expected });
        };
        subs.fetch(&st, &found, &mut progress).map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    let result = match fetched {
        Ok(r) => r,
        Err(e) => Err(e.to_string()),
    };
    ctx.emit(Event::SubstituteFinished { path: path.clone(), ok: result.is_ok() });
    match result {
        Ok(()) => {
            let mut o = Outcome::new(BuildStatus::Substituted);
            o.outputs.insert("out".into(), path);
            o
        }
        Err(e) => Outcome::failed(BuildStatus::TransientFailure, e),
    }
}
