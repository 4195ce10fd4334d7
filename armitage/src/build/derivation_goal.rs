//! Making a derivation's outputs valid (CppNix `DerivationGoal`): the
//! derivation itself first, then a fixed-output output from the witness
//! archive (build/witnessed.rs), then substitutes for its outputs, then its
//! inputs (each a goal of its own), then a build slot, and the build: the
//! local build up to its outputs (local.rs), then the after-build pipeline
//! (after.rs). [`Builder::derivation`] and [`Builder::derivation_given`]
//! start these goals.

use super::builder::{Builder, Job};
use super::error::BuildError;
use super::goal::{BuildModeKey, Event, Goal, GoalCtx, GoalKey, Outcome, wait_inputs};
use super::local::{self, LocalParams, Ran};
use super::outputs::all_valid;
use super::witnessed;
use local_store::LocalStore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use store::derivation::Derivation;
use store::derivation::DownstreamPlaceholder;
use store::store_path::StorePath;
use worker_protocol::{BuildStatus, Verbosity};

impl Builder {
    /// The goal making `drv`'s outputs valid (shared with everyone asking).
    pub fn derivation(self: &Arc<Self>, job: &Arc<Job>, drv: StorePath, mode: BuildModeKey) -> Arc<Goal> {
        let key = GoalKey::Derivation(drv.clone(), mode);
        let (b, job) = (self.clone(), job.clone());
        self.goals.get_or_start(key, move |ctx| run(b, job, ctx, drv, mode, None))
    }

    /// The goal building a derivation a client sent (BuildDerivation): its
    /// inputs are its `input_srcs`, which must be valid or substitutable.
    pub fn derivation_given(
        self: &Arc<Self>,
        job: &Arc<Job>,
        drv_path: StorePath,
        drv: Derivation,
        mode: BuildModeKey,
    ) -> Arc<Goal> {
        let key = GoalKey::Derivation(drv_path.clone(), mode);
        let (b, job) = (self.clone(), job.clone());
        let drv = Arc::new(drv);
        self.goals.get_or_start(key, move |ctx| run(b, job, ctx, drv_path, mode, Some(drv)))
    }
}

/// `given`: the derivation as a client sent it (BuildDerivation), instead
/// of the store's `.drv`.
async fn run(
    b: Arc<Builder>,
    job: Arc<Job>,
    ctx: GoalCtx,
    drv_path: StorePath,
    mode: BuildModeKey,
    given: Option<Arc<Derivation>>,
) -> Outcome {
    match body(&b, &job, &ctx, &drv_path, mode, given).await {
        Ok(o) => o,
        Err(e) => Outcome::failed(e.status(), e.to_string()),
    }
}

// The store lookups below run on the worker thread itself: a few rows on
// a pooled read connection (WAL readers do not wait for the writer) and
// small file reads. A blocking thread each cost more than the work, and
// with every goal of a large graph starting at once, hundreds of threads
// (bench/build.sh). Builds themselves run on blocking threads.

async fn body(
    b: &Arc<Builder>,
    job: &Arc<Job>,
    ctx: &GoalCtx,
    drv_path: &StorePath,
    mode: BuildModeKey,
    given: Option<Arc<Derivation>>,
) -> Result<Outcome, BuildError> {
    let store = Arc::new(b.store.session()?);
    let full = store.display(drv_path);
    let (drv, initial) = match given {
        Some(drv) => {
            let map = drv
                .output_paths(store.store_dir())
                .map_err(|e| BuildError::Other(format!("derivation '{full}': {e}")))?;
            map.values().flatten().try_for_each(|p| store.add_temp_root(p))?;
            (drv, map)
        }
        None => match load(b, job, ctx, &store, drv_path, &full).await? {
            Ok(loaded) => loaded,
            Err(outcome) => return Ok(outcome),
        },
    };
    finish(b, job, ctx, &store, drv_path, &full, mode, drv, initial).await
}

/// The derivation (substituted if a cache has it) and its output map.
async fn load(
    b: &Arc<Builder>,
    job: &Arc<Job>,
    ctx: &GoalCtx,
    store: &Arc<LocalStore>,
    drv_path: &StorePath,
    full: &str,
) -> Result<Result<(Arc<Derivation>, BTreeMap<String, Option<StorePath>>), Outcome>, BuildError> {
    store.add_temp_root(drv_path)?;
    let valid = store.is_valid(drv_path)?;
    if !valid {
        let g = b.substitution(job, drv_path.clone(), false);
        let (failed, _) = wait_inputs(&ctx.me, vec![g], true).await;
        if failed > 0 {
            return Ok(Err(Outcome::failed(
                BuildStatus::MiscFailure,
                format!("cannot build missing derivation '{full}'"),
            )));
        }
    }
    let drv = store.read_derivation(drv_path)?;
    let map = store.derivation_output_map(drv_path)?;
    map.values().flatten().try_for_each(|p| store.add_temp_root(p))?;
    Ok(Ok((Arc::new(drv), map)))
}

/// With the derivation loaded: already valid (or not checkable), the
/// repair's content check, substitutes, a repair of the closure, the
/// inputs, a build slot, the build.
#[allow(clippy::too_many_arguments)]
async fn finish(
    b: &Arc<Builder>,
    job: &Arc<Job>,
    ctx: &GoalCtx,
    store: &Arc<LocalStore>,
    drv_path: &StorePath,
    full: &str,
    mode: BuildModeKey,
    drv: Arc<Derivation>,
    initial: BTreeMap<String, Option<StorePath>>,
) -> Result<Outcome, BuildError> {
    match (mode, all_valid(store, &initial)?) {
        (BuildModeKey::Normal, Some(outputs)) => {
            let mut o = Outcome::new(BuildStatus::AlreadyValid);
            o.outputs = outputs;
            return Ok(o);
        }
        (BuildModeKey::Check, None) => {
            return Ok(Outcome::failed(
                BuildStatus::MiscFailure,
                format!("some outputs of '{full}' are not valid, so checking is not possible"),
            ));
        }
        _ => {}
    }

    // A repair first checks the contents of the valid outputs (CppNix
    // `checkPathValidity` with its hash check): it rebuilds only when one
    // is missing or corrupted.
    let mut outputs_good = true;
    if mode == BuildModeKey::Repair {
        for p in initial.values() {
            match p {
                Some(p) if store.is_valid(p)? => outputs_good &= contents_good(job, ctx, store, p).await?,
                _ => outputs_good = false,
            }
        }
    }

    if mode == BuildModeKey::Normal
        && let Some(outcome) = from_witness(b, ctx, store, drv_path, &drv, &initial).await?
    {
        return Ok(outcome);
    }

    if let Some(outcome) = substitute_outputs(b, job, ctx, store, full, mode, &drv, &initial).await? {
        return Ok(outcome);
    }

    if mode == BuildModeKey::Repair && outputs_good {
        return repair_closure(b, job, ctx, store, drv_path, full, &initial).await;
    }

    let (inputs, input_rewrites) = match build_inputs(b, job, ctx, store, drv_path, full, mode, &drv).await? {
        Ok(inputs) => inputs,
        Err(outcome) => return Ok(outcome),
    };

    // A build slot: the global pool and this client's share.
    if job.settings.max_jobs == 0 || b.settings.max_jobs == 0 {
        return Ok(Outcome::failed(
            BuildStatus::MiscFailure,
            "unable to start any build; either increase '--max-jobs' or enable remote builds.\nhttps://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html",
        ));
    }
    let share = job.share.clone().acquire_owned().await.map_err(|e| e.to_string())?;
    let slot = b.slots.clone().acquire_owned().await.map_err(|e| e.to_string())?;

    let params = LocalParams {
        b: b.clone(),
        job: job.clone(),
        store: store.clone(),
        drv_path: drv_path.clone(),
        drv: drv.clone(),
        initial,
        inputs,
        input_rewrites,
        mode,
        ctx: ctx.clone(),
    };
    let outcome = build_locally(params, (slot, share)).await?;
    if mode == BuildModeKey::Repair && outcome.success() {
        let mut checked = job.contents_good.lock().unwrap_or_else(|e| e.into_inner());
        for p in outcome.outputs.values() {
            checked.insert(p.clone(), true);
        }
    }
    Ok(outcome)
}

/// A fixed-output output copied from the witness archive, its builder not
/// run: before substitutes (it is local, and there offline) and before
/// the inputs, which it does not need.
async fn from_witness(
    b: &Arc<Builder>,
    ctx: &GoalCtx,
    store: &Arc<LocalStore>,
    drv_path: &StorePath,
    drv: &Arc<Derivation>,
    initial: &BTreeMap<String, Option<StorePath>>,
) -> Result<Option<Outcome>, BuildError> {
    if !witnessed::may_hold(b.witness.as_deref(), drv) {
        return Ok(None);
    }
    let (b, ctx, store, drv_path, drv, initial) =
        (b.clone(), ctx.clone(), store.clone(), drv_path.clone(), drv.clone(), initial.clone());
    tokio::task::spawn_blocking(move || {
        witnessed::import(b.witness.as_deref(), &store, &drv_path, &drv, &initial, &ctx)
    })
    .await
    .map_err(|e| BuildError::Other(format!("internal error: {e}")))
}

/// Substitutes for the outputs (unless checking, or substitutes are off
/// or not allowed); the outcome when that made them valid, or when a
/// failed substitute ends the goal (without `fallback`).
#[allow(clippy::too_many_arguments)]
async fn substitute_outputs(
    b: &Arc<Builder>,
    job: &Arc<Job>,
    ctx: &GoalCtx,
    store: &Arc<LocalStore>,
    full: &str,
    mode: BuildModeKey,
    drv: &Derivation,
    initial: &BTreeMap<String, Option<StorePath>>,
) -> Result<Option<Outcome>, BuildError> {
    let all_known = initial.values().all(Option::is_some);
    if mode != BuildModeKey::Check
        && job.settings.substitute
        && super::attrs::substitutes_allowed(drv)
        && job.substituters.is_some()
        && all_known
    {
        let repair = mode == BuildModeKey::Repair;
        let mut wanted = Vec::new();
        for p in initial.values().flatten() {
            if repair || !store.is_valid(p)? {
                wanted.push(p.clone());
            }
        }
        let goals = wanted.into_iter().map(|p| b.substitution(job, p, repair)).collect();
        let (failed, results) = wait_inputs(&ctx.me, goals, true).await;
        let unavailable = results
            .iter()
            .filter(|(_, o)| matches!(o.status, BuildStatus::NoSubstituters | BuildStatus::DependencyFailed))
            .count();
        if failed > unavailable && !job.settings.fallback {
            return Ok(Some(Outcome::failed(
                BuildStatus::TransientFailure,
                format!(
                    "some substitutes for the outputs of derivation '{full}' failed (usually happens due to networking issues); try '--fallback' to build derivation from source "
                ),
            )));
        }
        if failed == 0
            && mode == BuildModeKey::Normal
            && let Some(outputs) = all_valid(store, initial)?
        {
            let mut o = Outcome::new(BuildStatus::Substituted);
            o.outputs = outputs;
            return Ok(Some(o));
        }
    }

    Ok(None)
}

/// The inputs, each a goal of its own (without `keep-going`, the first
/// failure stops the rest); then the input closure and the paths of
/// floating inputs for their placeholders. The outcome instead when an
/// input failed.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
async fn build_inputs(
    b: &Arc<Builder>,
    job: &Arc<Job>,
    ctx: &GoalCtx,
    store: &Arc<LocalStore>,
    drv_path: &StorePath,
    full: &str,
    mode: BuildModeKey,
    drv: &Derivation,
) -> Result<Result<(BTreeSet<StorePath>, BTreeMap<String, String>), Outcome>, BuildError> {
    ctx.emit(Event::BuildPlanned(drv_path.clone()));
    let input_mode = if mode == BuildModeKey::Repair { BuildModeKey::Repair } else { BuildModeKey::Normal };
    let mut goals = Vec::new();
    for (input, wanted) in &drv.input_drvs {
        let g = b.derivation(job, input.clone(), input_mode);
        g.want(Some(&wanted.outputs));
        goals.push(g);
    }
    for src in &drv.input_srcs {
        store.add_temp_root(src)?;
        if !store.is_valid(src)? {
            goals.push(b.substitution(job, src.clone(), false));
        }
    }
    let (failed, results) = wait_inputs(&ctx.me, goals, job.settings.keep_going).await;
    if failed > 0 {
        ctx.emit(Event::BuildAbandoned(drv_path.clone()));
        return Ok(Err(Outcome::failed(
            BuildStatus::DependencyFailed,
            format!("{failed} dependencies of derivation '{full}' failed to build"),
        )));
    }

    // The input closure, and the paths of floating inputs for their placeholders.
    let mut input_roots: BTreeSet<StorePath> = drv.input_srcs.clone();
    let mut input_rewrites: BTreeMap<String, String> = BTreeMap::new();
    for (input, wanted) in &drv.input_drvs {
        let outcome = results
            .iter()
            .find(|(g, _)| matches!(&g.key, GoalKey::Derivation(p, _) if p == input))
            .map(|(_, o)| o.clone())
            .ok_or_else(|| format!("internal error: no result for input '{}'", store.display(input)))?;
        for name in &wanted.outputs {
            let path = outcome.outputs.get(name).ok_or_else(|| {
                format!(
                    "derivation '{}' does not have an output named '{name}' (wanted by '{full}')",
                    store.display(input)
                )
            })?;
            input_roots.insert(path.clone());
            if let Ok(ph) = DownstreamPlaceholder::unknown_ca_output(input, name) {
                input_rewrites.insert(ph.render(), store.display(path));
            }
        }
    }
    let inputs = store.closure(input_roots)?;
    Ok(Ok((inputs, input_rewrites)))
}

/// The local build (on a blocking thread, holding the build slot until
/// it ends, post-build hook included): up to its outputs (local.rs), then
/// the after-build pipeline (after.rs).
async fn build_locally<S: Send + 'static>(params: LocalParams, slot: S) -> Result<Outcome, BuildError> {
    tokio::task::spawn_blocking(move || {
        let begun = local::now();
        let result = local::build(&params).and_then(|ran| match ran {
            Ran::Done(o) => Ok(o),
            Ran::Built(built) => super::after::run(&params, built),
        });
        let o = local::outcome(result, begun);
        drop(slot);
        o
    })
    .await
    .map_err(|e| BuildError::Other(format!("internal error: {e}")))
}

/// Whether a valid path's contents still have the NAR hash it was
/// registered with (CppNix `Worker::pathContentsGood`): checked once per
/// request, which is told `checking path '…'...` and, when they do not,
/// `path '…' is corrupted or missing!`.
async fn contents_good(
    job: &Job,
    ctx: &GoalCtx,
    store: &Arc<LocalStore>,
    path: &StorePath,
) -> Result<bool, BuildError> {
    if let Some(good) = job.contents_good.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        return Ok(*good);
    }
    let full = store.display(path);
    ctx.emit(Event::Message(Verbosity::Info, format!("checking path '{full}'...")));
    let (s, p) = (store.clone(), path.clone());
    let good = tokio::task::spawn_blocking(move || -> Result<bool, BuildError> {
        let info = s.path_info(&p)?;
        let real = s.real_path(&p);
        if std::fs::symlink_metadata(&real).is_err() {
            return Ok(false);
        }
        // A registration without a hash (all zeros) passes, as in CppNix.
        if info.nar_hash.as_bytes().iter().all(|b| *b == 0) {
            return Ok(true);
        }
        let (current, _) = local_store::nar_fs::hash_path(&real, info.nar_hash.algorithm())
            .map_err(|e| format!("hashing '{}': {e}", real.display()))?;
        Ok(current == info.nar_hash)
    })
    .await
    .map_err(|e| format!("internal error: {e}"))??;
    job.contents_good.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone(), good);
    if !good {
        ctx.emit(Event::Message(Verbosity::Error, format!("path '{full}' is corrupted or missing!")));
    }
    Ok(good)
}

/// A repair whose outputs are good repairs the rest of their closure
/// (CppNix `DerivationGoal::repairClosure`): each corrupted path by
/// repairing the derivation among this one's inputs that produced it, or
/// else from a cache; nothing is rebuilt when all is good.
async fn repair_closure(
    b: &Arc<Builder>,
    job: &Arc<Job>,
    ctx: &GoalCtx,
    store: &Arc<LocalStore>,
    drv_path: &StorePath,
    full: &str,
    initial: &BTreeMap<String, Option<StorePath>>,
) -> Result<Outcome, BuildError> {
    let outputs: BTreeSet<StorePath> = initial.values().flatten().cloned().collect();
    let mut closure = store.closure(outputs.iter().cloned())?;
    closure.retain(|p| !outputs.contains(p));
    let mut producers: BTreeMap<StorePath, StorePath> = BTreeMap::new();
    for d in store.closure([drv_path.clone()])? {
        if d.is_derivation() {
            for p in store.derivation_output_map(&d)?.into_values().flatten() {
                producers.insert(p, d.clone());
            }
        }
    }
    let mut goals = Vec::new();
    for p in &closure {
        if contents_good(job, ctx, store, p).await? {
            continue;
        }
        ctx.emit(Event::Message(
            Verbosity::Error,
            format!("found corrupted or missing path '{}' in the output closure of '{full}'", store.display(p)),
        ));
        goals.push(match producers.get(p) {
            Some(d) => {
                let g = b.derivation(job, d.clone(), BuildModeKey::Repair);
                g.want(None);
                g
            }
            None => b.substitution(job, p.clone(), true),
        });
    }
    if !goals.is_empty() {
        let (failed, _) = wait_inputs(&ctx.me, goals, job.settings.keep_going).await;
        if failed > 0 {
            return Ok(Outcome::failed(
                BuildStatus::MiscFailure,
                format!("some paths in the output closure of derivation '{full}' could not be repaired"),
            ));
        }
    }
    let mut o = Outcome::new(BuildStatus::AlreadyValid);
    o.outputs = all_valid(store, initial)?.unwrap_or_default();
    Ok(o)
}
