//! Building and planning (CppNix daemon.cc): EnsurePath, BuildPaths,
//! BuildPathsWithResults and BuildDerivation realise their targets through
//! the shared builder (`realise`), and QueryMissing asks the planner
//! (`crate::build::plan`) what realising them would take. Repairs and
//! client-sent derivations are the policy's to allow.

use super::common::{blocking, failed, querying_missing_paths};
use super::realise::{self, Target};
use crate::build::{BuildModeKey, Builder, Outcome};
use crate::daemon::policy;
use crate::daemon::session::{Input, OpError, OpResult, Output, Session};
use crate::daemon::state::DaemonState;
use local_store::LocalStore;
use std::collections::BTreeMap;
use store::derivation::Derivation;
use store::store_path::StorePath;
use worker_protocol::{BuildMode, BuildResult, DerivedPath, StderrMessage, WireWrite};

pub async fn ensure_path<R: Input, W: Output>(s: &mut Session<R, W>, d: &DaemonState, p: StorePath) -> OpResult {
    blocking(|| root_build_targets(&s.store, [&DerivedPath::Opaque(p.clone())]))?;
    let outcomes =
        realise::realise(s, d, vec![Target::Path(DerivedPath::Opaque(p.clone()))], BuildModeKey::Normal).await?;
    if !outcomes[0].success() {
        // CppNix `Store::ensurePath` when no substituter has it.
        return Err(failed(format!("path '{}' does not exist and cannot be created", s.store.display(&p))));
    }
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}

pub async fn build_paths<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    paths: Vec<(String, DerivedPath)>,
    mode: BuildMode,
) -> OpResult {
    policy::build(s.trust, mode)?;
    blocking(|| root_build_targets(&s.store, paths.iter().map(|(_, t)| t)))?;
    let targets: Vec<DerivedPath> = paths.into_iter().map(|(_, t)| t).collect();
    let outcomes = realise::realise(s, d, targets.iter().cloned().map(Target::Path).collect(), mode.into()).await?;
    let (logged, error) = realise::build_paths_error(s.store.store_dir(), &targets, &outcomes);
    for e in logged {
        s.log(StderrMessage::Next(format!("error: {e}\n"))).await?;
    }
    if let Some(e) = error {
        return Err(OpError::BuildFailed(e, realise::exit_status(&outcomes)));
    }
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}

pub async fn build_paths_with_results<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    paths: Vec<(String, DerivedPath)>,
    mode: BuildMode,
) -> OpResult {
    policy::build(s.trust, mode)?;
    blocking(|| root_build_targets(&s.store, paths.iter().map(|(_, t)| t)))?;
    let outcomes =
        realise::realise(s, d, paths.iter().map(|(_, t)| Target::Path(t.clone())).collect(), mode.into()).await?;
    let mut results = Vec::new();
    for ((raw, target), outcome) in paths.iter().zip(&outcomes) {
        let mut r = to_build_result(outcome);
        if let DerivedPath::Built { drv, outputs } = target
            && outcome.success()
        {
            r.built_outputs = blocking(|| realise::built_outputs(&s.store, drv, outputs.as_ref(), outcome));
        }
        // In request order, as nix-daemon 2.26 answers at every
        // minor (2.8 answered in its goal order; clients match the
        // results by their paths).
        results.push((raw.clone(), r));
    }
    s.last().await?;
    s.writer.write_u64_wire(results.len() as u64).await?;
    for (raw, result) in &results {
        s.writer.write_str(raw).await?;
        result.write(&mut s.writer, s.minor).await?;
    }
    Ok(())
}

pub async fn build_derivation<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    drv_path: StorePath,
    drv: Box<Derivation>,
    mode: BuildMode,
) -> OpResult {
    let drv_type = drv.derivation_type().map_err(|e| failed(e.to_string()))?;
    policy::build_derivation(s.trust, drv_type.is_ca(), mode)?;
    blocking(|| s.store.add_temp_root(&drv_path))?;
    let outcomes = realise::realise(s, d, vec![Target::Given(drv_path.clone(), drv)], mode.into()).await?;
    let outcome = &outcomes[0];
    let mut r = to_build_result(outcome);
    if outcome.success() {
        r.built_outputs = blocking(|| given_built_outputs(&s.store, &drv_path, outcome));
    }
    s.last().await?;
    r.write(&mut s.writer, s.minor).await?;
    Ok(())
}

pub async fn query_missing<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    targets: Vec<(String, DerivedPath)>,
) -> OpResult {
    let paths: Vec<DerivedPath> = targets.into_iter().map(|(_, d)| d).collect();
    querying_missing_paths(s).await?;
    let job = d.builder.job(&s.options);
    let subs = Builder::job_substituters(&job).map(|s| &**s);
    let missing = blocking(|| crate::build::plan::query_missing(&s.store, subs, &paths))?;
    let dir = s.store.store_dir().clone();
    s.last().await?;
    missing.write(&mut s.writer, &dir).await?;
    Ok(())
}

/// The temporary roots CppNix's build goals take on what they are given,
/// valid or not: an opaque path (`PathSubstitutionGoal`), a derivation and
/// the known paths of all its outputs (`DerivationGoal`).
fn root_build_targets<'t>(
    store: &LocalStore,
    targets: impl IntoIterator<Item = &'t DerivedPath>,
) -> local_store::Result<()> {
    for target in targets {
        match target {
            DerivedPath::Opaque(p) => store.add_temp_root(p)?,
            DerivedPath::Built { drv, .. } => {
                store.add_temp_root(drv)?;
                if store.is_valid(drv)? {
                    for (_, out) in store.query_derivation_outputs(drv)? {
                        store.add_temp_root(&out)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The reply form of a goal's outcome.
fn to_build_result(o: &Outcome) -> BuildResult {
    let mut r = BuildResult::new(o.status);
    r.error_msg = o.error.clone().unwrap_or_default();
    r.times_built = o.times_built;
    r.is_non_deterministic = o.is_non_deterministic;
    r.start_time = o.start_time;
    r.stop_time = o.stop_time;
    r
}

/// builtOutputs for a BuildDerivation: the realisations recorded for the
/// derivation's outputs if it is in the store, else none (CppNix fills them
/// from the goal's output hashes; clients only read them for CA derivations).
fn given_built_outputs(store: &LocalStore, drv_path: &StorePath, o: &Outcome) -> BTreeMap<String, String> {
    if store.is_valid(drv_path).unwrap_or(false) {
        realise::built_outputs(store, drv_path, None, o)
    } else {
        BTreeMap::new()
    }
}
