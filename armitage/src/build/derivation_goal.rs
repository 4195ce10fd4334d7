//! Making a derivation's outputs valid (CppNix `DerivationGoal`): the
//! derivation itself first, then substitutes for its outputs, then its
//! inputs (each a goal of its own), then a build slot, and the build.

use super::goal::{BuildModeKey, Event, GoalCtx, GoalKey, Outcome, wait_inputs};
use super::local::{self, LocalParams};
use super::{Builder, Job};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use store::derivation::Derivation;
use store::derivation::DownstreamPlaceholder;
use local_store::LocalStore;
use store::store_path::StorePath;
use worker_protocol::{BuildStatus, Verbosity};

/// `given`: the derivation as a client sent it (BuildDerivation), instead
/// of the store's `.drv`.
pub(super) async fn run(
    b: Arc<Builder>,
    job: Arc<Job>,
    ctx: GoalCtx,
    drv_path: StorePath,
    mode: BuildModeKey,
    given: Option<Arc<Derivation>>,
) -> Outcome {
    match body(&b, &job, &ctx, &drv_path, mode, given).await {
        Ok(o) => o,
        Err(e) => Outcome::failed(BuildStatus::MiscFailure, e),
    }
}

// The store lookups below run on the worker thread itself: a few rows on
// a pooled read connection (WAL readers do not wait for the writer) and
// small file reads. A blocking thread each cost more than the work, and
// with every goal of a large graph starting at once, hundreds of threads
// (bench/build.sh). Builds themselves run on blocking threads.

fn text(e: local_store::Error) -> String {
    e.to_string()
}

/// Output name → path, when every output has a valid path.
pub(super) fn all_valid(store: &LocalStore, map: &BTreeMap<String, Option<StorePath>>) -> local_store::Result<Option<BTreeMap<String, StorePath>>> {
    let mut outs = BTreeMap::new();
    for (name, path) in map {
        match path {
            Some(p) if store.is_valid(p)? => {
                outs.insert(name.clone(), p.clone());
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(outs))
}

/// `allowSubstitutes` (default true; CppNix `substitutesAllowed`).
pub(crate) fn substitutes_allowed(drv: &Derivation) -> bool {
    super::bool_attr(drv, "allowSubstitutes", true)
}

async fn body(
    b: &Arc<Builder>,
    job: &Arc<Job>,
    ctx: &GoalCtx,
    drv_path: &StorePath,
    mode: BuildModeKey,
    given: Option<Arc<Derivation>>,
) -> Result<Outcome, String> {
    let store = Arc::new(b.store.session().map_err(text)?);
    let full = store.display(drv_path);
    let (drv, initial) = match given {
        Some(drv) => {
            let map = drv.output_paths(store.store_dir()).map_err(|e| format!("derivation '{full}': {e}"))?;
            map.values().flatten().try_for_each(|p| store.add_temp_root(p)).map_err(text)?;
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
) -> Result<Result<(Arc<Derivation>, BTreeMap<String, Option<StorePath>>), Outcome>, String> {
    store.add_temp_root(drv_path).map_err(text)?;
    let valid = store.is_valid(drv_path).map_err(text)?;
    if !valid {
        let g = b.substitution(job, drv_path.clone(), false);
        let (failed, _) = wait_inputs(&ctx.me, vec![g], true).await;
        if failed > 0 {
            return Ok(Err(Outcome::failed(BuildStatus::MiscFailure, format!("cannot build missing derivation '{full}'"))));
        }
    }
    let drv = store.read_derivation(drv_path).map_err(text)?;
    let map = store.derivation_output_map(drv_path).map_err(text)?;
    map.values().flatten().try_for_each(|p| store.add_temp_root(p)).map_err(text)?;
    Ok(Ok((Arc::new(drv), map)))
}

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
) -> Result<Outcome, String> {
    match (mode, all_valid(store, &initial).map_err(text)?) {
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
                Some(p) if store.is_valid(p).map_err(text)? => outputs_good &= contents_good(job, ctx, store, p).await?,
                _ => outputs_good = false,
            }
        }
    }

    // Substitutes for the outputs.
    let all_known = initial.values().all(Option::is_some);
    if mode != BuildModeKey::Check && job.settings.substitute && substitutes_allowed(&drv) && job.substituters.is_some() && all_known {
        let repair = mode == BuildModeKey::Repair;
        let mut wanted = Vec::new();
        for p in initial.values().flatten() {
            if repair || !store.is_valid(p).map_err(text)? {
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
            return Ok(Outcome::failed(
                BuildStatus::TransientFailure,
                format!(
                    "some substitutes for the outputs of derivation '{full}' failed (usually happens due to networking issues); try '--fallback' to build derivation from source "
                ),
            ));
        }
        if failed == 0 && mode == BuildModeKey::Normal {
            if let Some(outputs) = all_valid(store, &initial).map_err(text)? {
                let mut o = Outcome::new(BuildStatus::Substituted);
                o.outputs = outputs;
                return Ok(o);
            }
        }
    }

    if mode == BuildModeKey::Repair && outputs_good {
        return repair_closure(b, job, ctx, store, drv_path, full, &initial).await;
    }

    // The inputs.
    ctx.emit(Event::BuildPlanned(drv_path.clone()));
    let input_mode = if mode == BuildModeKey::Repair { BuildModeKey::Repair } else { BuildModeKey::Normal };
    let mut goals = Vec::new();
    for (input, wanted) in &drv.input_drvs {
        let g = b.derivation(job, input.clone(), input_mode);
        g.want(Some(&wanted.outputs));
        goals.push(g);
    }
    for src in &drv.input_srcs {
        store.add_temp_root(src).map_err(text)?;
        if !store.is_valid(src).map_err(text)? {
            goals.push(b.substitution(job, src.clone(), false));
        }
    }
    let (failed, results) = wait_inputs(&ctx.me, goals, job.settings.keep_going).await;
    if failed > 0 {
        ctx.emit(Event::BuildAbandoned(drv_path.clone()));
        return Ok(Outcome::failed(
            BuildStatus::DependencyFailed,
            format!("{failed} dependencies of derivation '{full}' failed to build"),
        ));
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
                format!("derivation '{}' does not have an output named '{name}' (wanted by '{full}')", store.display(input))
            })?;
            input_roots.insert(path.clone());
            if let Ok(ph) = DownstreamPlaceholder::unknown_ca_output(input, name) {
                input_rewrites.insert(ph.render(), store.display(path));
            }
        }
    }
    let inputs = store.closure(input_roots).map_err(text)?;

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
    let outcome = tokio::task::spawn_blocking(move || {
        let o = local::build(params);
        drop((slot, share));
        o
    })
    .await
    .map_err(|e| format!("internal error: {e}"))?;
    if mode == BuildModeKey::Repair && outcome.success() {
        let mut checked = job.contents_good.lock().unwrap_or_else(|e| e.into_inner());
        for p in outcome.outputs.values() {
            checked.insert(p.clone(), true);
        }
    }
    Ok(outcome)
}

/// Whether a valid path's contents still have the NAR hash it was
/// registered with (CppNix `Worker::pathContentsGood`): checked once per
/// request, which is told `checking path '…'...` and, when they do not,
/// `path '…' is corrupted or missing!`.
async fn contents_good(job: &Job, ctx: &GoalCtx, store: &Arc<LocalStore>, path: &StorePath) -> Result<bool, String> {
    if let Some(good) = job.contents_good.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        return Ok(*good);
    }
    let full = store.display(path);
    ctx.emit(Event::Message(Verbosity::Info, format!("checking path '{full}'...")));
    let (s, p) = (store.clone(), path.clone());
    let good = tokio::task::spawn_blocking(move || -> Result<bool, String> {
        let info = s.path_info(&p).map_err(text)?;
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
) -> Result<Outcome, String> {
    let outputs: BTreeSet<StorePath> = initial.values().flatten().cloned().collect();
    let mut closure = store.closure(outputs.iter().cloned()).map_err(text)?;
    closure.retain(|p| !outputs.contains(p));
    let mut producers: BTreeMap<StorePath, StorePath> = BTreeMap::new();
    for d in store.closure([drv_path.clone()]).map_err(text)? {
        if d.is_derivation() {
            for p in store.derivation_output_map(&d).map_err(text)?.into_values().flatten() {
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
    o.outputs = all_valid(store, initial).map_err(text)?.unwrap_or_default();
    Ok(o)
}
