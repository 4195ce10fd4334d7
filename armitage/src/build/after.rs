//! The after-build pipeline, in one place (CppNix `buildDone`,
//! `registerOutputs`, `runPostBuildHook`): once a builder succeeded, its
//! outputs are checked and moved into place (outputs.rs), signed with
//! `secret-key-files`, registered in one transaction (and, for floating
//! content-addressed outputs, their realisations); the output locks and
//! the build directory are released; then the post-build hook runs.
//! Attestations of a build join here, between signing and registering.
//! A fixed-output output is kept in the witness archive once registered
//! (build/witnessed.rs), so that it can be made again without its
//! upstream; with an `[s3]` bucket, the outputs join the upload queue
//! (crate::upload).

use super::error::BuildError;
use super::goal::{BuildModeKey, Event, Outcome};
use super::local::{Built, LocalParams};
use super::outputs::{self, OutputError, RegisterParams};
use local_store::LocalStore;
use std::collections::{BTreeMap, BTreeSet};
use store::derivation::Derivation;
use store::path_info::PathInfo;
use store::signing::SecretKey;
use store::store_path::StorePath;
use worker_protocol::BuildStatus;

/// Registers what `built` produced and runs the post-build hook.
pub(super) fn run(p: &LocalParams, built: Built) -> Result<Outcome, BuildError> {
    let Built { mut locks, mut cleanup, user, scratch, full, start_time, stop_time } = built;
    let store = &*p.store;
    let settings = &p.job.settings;

    let params = RegisterParams {
        store,
        drv_path: &p.drv_path,
        drv: &p.drv,
        scratch: &scratch,
        inputs: &p.inputs,
        build_uid: user.as_ref().map(|u| u.uid),
        check: p.mode == BuildModeKey::Check,
        keep_check: settings.keep_failed,
        repair: p.mode == BuildModeKey::Repair,
    };
    let outputs = match register(&params, &p.b.secret_keys) {
        Ok(o) => o,
        Err(e) => {
            p.ctx.emit(Event::BuildFinished { drv: p.drv_path.clone(), ok: false });
            if settings.keep_failed && !p.drv.is_builtin() {
                cleanup.keep_build_dir(&p.ctx);
            }
            let status = e.status();
            let mut o = Outcome::failed(status, e.to_string());
            o.times_built = 1;
            o.start_time = start_time;
            o.stop_time = stop_time;
            o.is_non_deterministic = status == BuildStatus::NotDeterministic;
            return Ok(o);
        }
    };
    if p.initial.values().any(Option::is_none) {
        register_realisations(store, &p.drv, &outputs)?;
    }
    locks.set_deletion(true);
    drop(locks);
    drop(cleanup);
    if p.mode != BuildModeKey::Check {
        super::witnessed::keep(p.b.witness.as_deref(), store, &p.drv, &outputs);
        if let Some(uploads) = &p.b.uploads {
            uploads.add_outputs(store, outputs.values());
        }
    }
    p.ctx.emit(Event::BuildFinished { drv: p.drv_path.clone(), ok: true });

    if !settings.post_build_hook.is_empty() {
        let outs: Vec<String> = outputs.values().map(|o| store.display(o)).collect();
        super::post_build_hook::run(&settings.post_build_hook, &p.drv_path, &full, &outs, &p.ctx)?;
    }
    drop(user);

    let mut o = Outcome::new(BuildStatus::Built);
    o.outputs = outputs;
    o.times_built = 1;
    o.start_time = start_time;
    o.stop_time = stop_time;
    Ok(o)
}

/// Checks the outputs, signs and registers them (nothing is registered
/// for `--check`); returns their final paths by output name.
fn register(p: &RegisterParams, keys: &[SecretKey]) -> Result<BTreeMap<String, StorePath>, OutputError> {
    let mut checked = outputs::check(p)?;
    if !p.check {
        for info in &mut checked.infos {
            sign(p.store, info, keys);
        }
        p.store.register_valid_paths(&checked.infos)?;
    }
    if let Some(m) = checked.hash_mismatch {
        return Err(OutputError::HashMismatch(m));
    }
    Ok(checked.finals)
}

/// Signs a path with each of `secret-key-files`.
fn sign(store: &LocalStore, info: &mut PathInfo, keys: &[SecretKey]) {
    if keys.is_empty() {
        return;
    }
    let Ok(fp) =
        store::signing::fingerprint(store.store_dir(), &info.path, &info.nar_hash, info.nar_size, &info.references)
    else {
        return;
    };
    for k in keys {
        info.sigs.insert(k.sign(fp.as_bytes()).to_string());
    }
}

/// Floating content-addressed outputs: records which path each output
/// became, keyed by the derivation's hash modulo and the output name, so
/// that later requests find it (CppNix `registerOutputs` with
/// ca-derivations).
fn register_realisations(
    store: &LocalStore,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
) -> Result<(), BuildError> {
    let mut hasher =
        store::derivation::DrvHasher::new(store.store_dir().clone(), |q: &StorePath| store.read_derivation(q));
    let hashes = hasher.hash_modulo(drv, true).map_err(|e| BuildError::Other(e.to_string()))?.hashes;
    for (name, path) in outputs {
        let Some(hash) = hashes.get(name) else { continue };
        let r = store::realisation::Realisation {
            id: store::realisation::DrvOutput { drv_hash: *hash, output: name.clone() },
            out_path: path.clone(),
            signatures: BTreeSet::new(),
            dependent_realisations: BTreeMap::new(),
        };
        store.register_realisation(&r)?;
    }
    Ok(())
}
