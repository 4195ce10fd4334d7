//! Turning what a builder produced into valid paths (CppNix
//! `registerOutputs` and `checkOutputs`): each output must exist and look
//! untampered; it is canonicalised and scanned for references to the inputs
//! and the other outputs; content-addressed outputs are hashed (fixed ones
//! checked against their declared hash, floating ones given their final
//! path, self-references rewritten); `allowedReferences` and friends are
//! enforced. [`check`] leaves the outputs in place with their path infos
//! (the derivation as deriver, `ultimate` set) for the after-build pipeline
//! (after.rs) to sign and register in one transaction. [`all_valid`] says
//! whether a derivation's outputs are all valid already.

use local_store::LocalStore;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::derivation::{Derivation, Output};
use store::hash::{Algorithm, Encoding, HashModuloSink};
use store::path_info::PathInfo;
use store::store_path::{StorePath, StoreReferences};
use worker_protocol::BuildStatus;

/// Where one output was built.
#[derive(Debug, Clone)]
pub struct Scratch {
    /// The path the builder was told to write.
    pub path: StorePath,
    /// Where that path is on the host (in the chroot for sandboxed builds).
    pub location: PathBuf,
    /// Its final path when known in advance (input-addressed, fixed output).
    pub known: Option<StorePath>,
    /// Already valid and not being rebuilt: kept as is.
    pub skip: bool,
}

/// A failed registration, with the BuildResult status it maps to
/// ([`OutputError::status`]).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// `hash mismatch`: the path was registered, the build still failed.
    #[error("{0}")]
    HashMismatch(String),
    /// `--check` found the output differs.
    #[error("{0}")]
    NotDeterministic(String),
    #[error("{0}")]
    Other(String),
}

impl OutputError {
    pub fn status(&self) -> BuildStatus {
        match self {
            OutputError::HashMismatch(_) | OutputError::Other(_) => BuildStatus::OutputRejected,
            OutputError::NotDeterministic(_) => BuildStatus::NotDeterministic,
        }
    }
}

/// Output name → path, when every output has a valid path.
pub fn all_valid(
    store: &LocalStore,
    map: &BTreeMap<String, Option<StorePath>>,
) -> local_store::Result<Option<BTreeMap<String, StorePath>>> {
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

impl From<local_store::Error> for OutputError {
    fn from(e: local_store::Error) -> Self {
        OutputError::Other(e.to_string())
    }
}

pub struct RegisterParams<'a> {
    pub store: &'a LocalStore,
    pub drv_path: &'a StorePath,
    pub drv: &'a Derivation,
    pub scratch: &'a BTreeMap<String, Scratch>,
    /// The input closure: what outputs may refer to.
    pub inputs: &'a BTreeSet<StorePath>,
    pub build_uid: Option<u32>,
    pub check: bool,
    /// A check that finds a difference keeps the new output beside the
    /// valid one as `<path>.check` (CppNix does with `keep-failed`).
    pub keep_check: bool,
    pub repair: bool,
}

/// Checked outputs, in place, to be registered.
#[derive(Debug)]
pub struct Checked {
    /// Final paths by output name.
    pub finals: BTreeMap<String, StorePath>,
    /// What to register (none for `--check`, which registers nothing).
    pub infos: Vec<PathInfo>,
    /// A fixed output with the wrong hash: it is registered under the path
    /// its contents have, and the build still fails (as CppNix does).
    pub hash_mismatch: Option<String>,
}

/// Checks the outputs and moves them into place; returns what to register.
pub fn check(p: &RegisterParams) -> Result<Checked, OutputError> {
    let store = p.store;
    let drv_full = store.display(p.drv_path);
    let mut candidates: BTreeSet<StorePath> = p.inputs.clone();
    candidates.extend(p.scratch.values().map(|s| s.path.clone()));

    // Existence, ownership, canonical form, references.
    let mut refs: BTreeMap<String, BTreeSet<StorePath>> = BTreeMap::new();
    let mut finals: BTreeMap<String, StorePath> = BTreeMap::new();
    for (name, s) in p.scratch {
        if s.skip {
            finals.insert(name.clone(), s.known.clone().expect("skipped outputs are known"));
            continue;
        }
        let meta = std::fs::symlink_metadata(&s.location).map_err(|_| {
            OutputError::Other(format!(
                "builder for '{drv_full}' failed to produce output path for output '{name}' at '{}'",
                s.location.display()
            ))
        })?;
        use std::os::unix::fs::MetadataExt;
        if (!meta.file_type().is_symlink() && meta.mode() & 0o022 != 0) || p.build_uid.is_some_and(|u| meta.uid() != u)
        {
            return Err(OutputError::Other(format!(
                "suspicious ownership or permission on '{}' for output '{name}'; rejecting this build output",
                s.location.display()
            )));
        }
        store.canonicalise_output(&s.location, p.build_uid)?;
        let scan = local_store::nar_fs::scan_path(&s.location, &candidates, Algorithm::Sha256)
            .map_err(|e| OutputError::Other(format!("scanning output '{name}' of '{drv_full}': {e}")))?;
        refs.insert(name.clone(), scan.references);
    }

    // Outputs referring to other outputs come after them.
    let order = topo_sort(p, &refs, &drv_full)?;
    // Scratch hash part → final hash part, for outputs placed so far.
    let mut rewrites: BTreeMap<String, String> = BTreeMap::new();
    let mut infos: BTreeMap<String, PathInfo> = BTreeMap::new();
    let mut hash_mismatch: Option<String> = None;
    for name in order {
        let s = &p.scratch[&name];
        let output = &p.drv.outputs[&name];
        let own_refs = &refs[&name];
        let final_path;
        let mut info = match output {
            Output::InputAddressed(path) => {
                final_path = path.clone();
                if s.path != *path {
                    rewrites.insert(s.path.hash_part().to_owned(), path.hash_part().to_owned());
                }
                rewrite_in_place(store, &s.location, &rewrites)?;
                let (nar_hash, nar_size) = local_store::nar_fs::hash_path(&s.location, Algorithm::Sha256)
                    .map_err(|e| OutputError::Other(e.to_string()))?;
                let mut info = PathInfo::new(final_path.clone(), nar_hash, nar_size);
                info.references = final_refs(own_refs, &s.path, &final_path, &rewrites);
                info
            }
            Output::Fixed(ca) => {
                let (info, got) =
                    ca_output(store, p.drv, &name, s, own_refs, ca.method, ca.hash.algorithm(), &mut rewrites)?;
                if got != ca.hash {
                    hash_mismatch = Some(format!(
                        "hash mismatch in fixed-output derivation '{drv_full}':\n  specified: {}\n     got:    {}",
                        ca.hash.to_typed(Encoding::Sri),
                        got.to_typed(Encoding::Sri)
                    ));
                }
                final_path = info.path.clone();
                info
            }
            Output::Floating { method, algorithm } | Output::Impure { method, algorithm } => {
                let (info, _) = ca_output(store, p.drv, &name, s, own_refs, *method, *algorithm, &mut rewrites)?;
                final_path = info.path.clone();
                info
            }
            Output::Deferred => return Err(OutputError::Other(format!("output '{name}' of '{drv_full}' is deferred"))),
        };
        store.canonicalise_output(&s.location, None)?;

        if p.check {
            match store.query_path_info(&final_path)? {
                Some(old) if old.nar_hash != info.nar_hash => {
                    let real = store.real_path(&final_path);
                    if p.keep_check {
                        let mut dst = real.clone().into_os_string();
                        dst.push(".check");
                        let dst = PathBuf::from(dst);
                        if std::fs::symlink_metadata(&dst).is_ok() {
                            store.delete_tree(&dst)?;
                        }
                        std::fs::rename(&s.location, &dst).map_err(|e| {
                            OutputError::Other(format!("moving '{}' to '{}': {e}", s.location.display(), dst.display()))
                        })?;
                        return Err(OutputError::NotDeterministic(format!(
                            "derivation '{drv_full}' may not be deterministic: output '{}' differs from '{}'",
                            real.display(),
                            dst.display()
                        )));
                    }
                    return Err(OutputError::NotDeterministic(format!(
                        "derivation '{drv_full}' may not be deterministic: output '{}' differs",
                        real.display()
                    )));
                }
                _ => {}
            }
            store.delete_tree(&s.location)?;
            finals.insert(name.clone(), final_path);
            continue;
        }
        // Into place (a content-addressed path may already be valid).
        if p.repair || !store.is_valid(&final_path)? {
            store.move_output_into_place(&s.location, &final_path)?;
        } else {
            store.delete_tree(&s.location)?;
        }
        if store.config().auto_optimise_store {
            store.optimise_path(&store.real_path(&final_path))?;
        }
        info.deriver = Some(p.drv_path.clone());
        info.ultimate = true;
        finals.insert(name.clone(), final_path);
        infos.insert(name, info);
    }
    if p.check {
        return match hash_mismatch {
            Some(m) => Err(OutputError::HashMismatch(m)),
            None => Ok(Checked { finals, infos: Vec::new(), hash_mismatch: None }),
        };
    }
    check_outputs(p, &infos)?;
    Ok(Checked { finals, infos: infos.into_values().collect(), hash_mismatch })
}

/// References with scratch paths of other outputs replaced by their finals,
/// and a self-reference under the final path.
fn final_refs(
    refs: &BTreeSet<StorePath>,
    scratch: &StorePath,
    final_path: &StorePath,
    rewrites: &BTreeMap<String, String>,
) -> BTreeSet<StorePath> {
    refs.iter()
        .map(|r| {
            if r == scratch {
                final_path.clone()
            } else if let Some(h) = rewrites.get(r.hash_part()) {
                StorePath::from_base_name(&format!("{h}-{}", r.name())).unwrap_or_else(|_| r.clone())
            } else {
                r.clone()
            }
        })
        .collect()
}

/// Replaces hash parts in an output's contents (names, symlink targets,
/// file contents), through a NAR round trip, as CppNix's `rewriteOutput`.
fn rewrite_in_place(
    store: &LocalStore,
    location: &Path,
    rewrites: &BTreeMap<String, String>,
) -> Result<(), OutputError> {
    if rewrites.is_empty() {
        return Ok(());
    }
    let mut nar = Vec::new();
    local_store::nar_fs::dump(location, &mut nar).map_err(|e| OutputError::Other(e.to_string()))?;
    let map: BTreeMap<String, String> = rewrites.clone();
    let rewritten = super::env::rewrite(&nar, &map);
    if rewritten == nar {
        return Ok(());
    }
    store.delete_tree(location)?;
    local_store::nar_fs::unpack(&mut &rewritten[..], location, &store::nar::Limits::default())
        .map_err(|e| OutputError::Other(e.to_string()))?;
    Ok(())
}

/// Hashes a content-addressed output (self-references modulo its scratch
/// hash part), computes its final path and rewrites it there.
#[allow(clippy::too_many_arguments)]
fn ca_output(
    store: &LocalStore,
    drv: &Derivation,
    name: &str,
    s: &Scratch,
    own_refs: &BTreeSet<StorePath>,
    method: ContentAddressMethod,
    algorithm: Algorithm,
    rewrites: &mut BTreeMap<String, String>,
) -> Result<(PathInfo, store::hash::Hash), OutputError> {
    let meta = std::fs::symlink_metadata(&s.location).map_err(|e| OutputError::Other(e.to_string()))?;
    let method = match method {
        ContentAddressMethod::Fixed(m) => m,
        ContentAddressMethod::Text => FileIngestionMethod::Flat,
    };
    if method == FileIngestionMethod::Flat {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o100 != 0 {
            return Err(OutputError::Other(format!(
                "output path '{}' should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)",
                s.location.display()
            )));
        }
    }
    rewrite_in_place(store, &s.location, rewrites)?;
    let mut sink = HashModuloSink::new(algorithm, s.path.hash_part());
    match method {
        FileIngestionMethod::Recursive => {
            local_store::nar_fs::dump(&s.location, &mut sink).map_err(|e| OutputError::Other(e.to_string()))?;
        }
        FileIngestionMethod::Flat => {
            let mut f = std::fs::File::open(&s.location).map_err(|e| OutputError::Other(e.to_string()))?;
            std::io::copy(&mut f, &mut sink).map_err(|e| OutputError::Other(e.to_string()))?;
        }
        FileIngestionMethod::Git => return Err(OutputError::Other("git-hashed outputs are not supported".into())),
    }
    let got = sink.finish().without_offsets;
    let self_ref = own_refs.contains(&s.path);
    let others: BTreeSet<StorePath> =
        final_refs(own_refs, &s.path, &s.path, rewrites).into_iter().filter(|r| *r != s.path).collect();
    let refs = StoreReferences { others: others.clone(), self_ref };
    let out_name = store::store_path::output_path_name(&drv.name, name);
    let ca = ContentAddress { method: ContentAddressMethod::Fixed(method), hash: got };
    let final_path = store
        .store_dir()
        .make_path_from_ca(&out_name, &ca, &refs)
        .map_err(|e| OutputError::Other(format!("output '{name}': {e}")))?;
    if final_path != s.path {
        rewrites.insert(s.path.hash_part().to_owned(), final_path.hash_part().to_owned());
        let single: BTreeMap<String, String> =
            [(s.path.hash_part().to_owned(), final_path.hash_part().to_owned())].into();
        rewrite_in_place(store, &s.location, &single)?;
    }
    let (nar_hash, nar_size) = local_store::nar_fs::hash_path(&s.location, Algorithm::Sha256)
        .map_err(|e| OutputError::Other(e.to_string()))?;
    let mut info = PathInfo::new(final_path.clone(), nar_hash, nar_size);
    info.ca = Some(ca);
    info.references = others;
    if self_ref {
        info.references.insert(final_path);
    }
    Ok((info, got))
}

fn topo_sort(
    p: &RegisterParams,
    refs: &BTreeMap<String, BTreeSet<StorePath>>,
    drv_full: &str,
) -> Result<Vec<String>, OutputError> {
    let by_scratch: BTreeMap<&StorePath, &String> = p.scratch.iter().map(|(n, s)| (&s.path, n)).collect();
    let mut order = Vec::new();
    let mut state: BTreeMap<&String, u8> = BTreeMap::new();
    fn visit<'a>(
        name: &'a String,
        refs: &'a BTreeMap<String, BTreeSet<StorePath>>,
        by_scratch: &BTreeMap<&StorePath, &'a String>,
        state: &mut BTreeMap<&'a String, u8>,
        order: &mut Vec<String>,
        drv_full: &str,
        parent: &str,
    ) -> Result<(), OutputError> {
        match state.get(name) {
            Some(2) => return Ok(()),
            Some(1) => {
                return Err(OutputError::Other(format!(
                    "cycle detected in build of '{drv_full}' in the references of output '{name}' from output '{parent}'"
                )));
            }
            _ => {}
        }
        state.insert(name, 1);
        if let Some(rs) = refs.get(name) {
            for r in rs {
                if let Some(dep) = by_scratch.get(r)
                    && *dep != name
                {
                    visit(dep, refs, by_scratch, state, order, drv_full, name)?;
                }
            }
        }
        state.insert(name, 2);
        order.push(name.clone());
        Ok(())
    }
    for name in p.scratch.keys() {
        if refs.contains_key(name) {
            visit(name, refs, &by_scratch, &mut state, &mut order, drv_full, name)?;
        }
    }
    Ok(order)
}

/// `allowedReferences`, `allowedRequisites`, `disallowedReferences`,
/// `disallowedRequisites` (and `outputChecks` with `maxSize` and
/// `maxClosureSize` under structured attributes), CppNix's `checkOutputs`.
fn check_outputs(p: &RegisterParams, infos: &BTreeMap<String, PathInfo>) -> Result<(), OutputError> {
    let store = p.store;
    let by_path: BTreeMap<StorePath, &PathInfo> = infos.values().map(|i| (i.path.clone(), i)).collect();
    let closure = |start: &StorePath| -> Result<(BTreeSet<StorePath>, u64), OutputError> {
        let mut done = BTreeSet::new();
        let mut size = 0;
        let mut todo = vec![start.clone()];
        while let Some(path) = todo.pop() {
            if !done.insert(path.clone()) {
                continue;
            }
            match by_path.get(&path) {
                Some(i) => {
                    size += i.nar_size;
                    todo.extend(i.references.iter().cloned());
                }
                None => {
                    let i = store.path_info(&path)?;
                    size += i.nar_size;
                    todo.extend(i.references);
                }
            }
        }
        Ok((done, size))
    };
    let structured = p.drv.structured_attrs().map_err(|e| OutputError::Other(e.to_string()))?;
    for (name, info) in infos {
        #[derive(Default)]
        struct Checks {
            ignore_self: bool,
            max_size: Option<u64>,
            max_closure: Option<u64>,
            lists: [Option<Vec<String>>; 4],
        }
        let mut checks = Checks::default();
        match &structured {
            Some(json) => {
                let Some(oc) = json.get("outputChecks").and_then(|o| o.get(name)) else { continue };
                checks.max_size = oc.get("maxSize").and_then(Value::as_u64);
                checks.max_closure = oc.get("maxClosureSize").and_then(Value::as_u64);
                for (i, key) in
                    ["allowedReferences", "allowedRequisites", "disallowedReferences", "disallowedRequisites"]
                        .iter()
                        .enumerate()
                {
                    if let Some(v) = oc.get(*key) {
                        let list = v
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                            .ok_or_else(|| {
                                OutputError::Other(format!(
                                    "attribute '{key}' of derivation '{}' must be a list of strings",
                                    store.display(p.drv_path)
                                ))
                            })?;
                        checks.lists[i] = Some(list);
                    }
                }
            }
            None => {
                checks.ignore_self = true;
                for (i, key) in
                    ["allowedReferences", "allowedRequisites", "disallowedReferences", "disallowedRequisites"]
                        .iter()
                        .enumerate()
                {
                    checks.lists[i] = p
                        .drv
                        .env_var(key)
                        .map(|v| String::from_utf8_lossy(v).split_whitespace().map(str::to_owned).collect());
                }
            }
        }
        if let Some(max) = checks.max_size.filter(|m| info.nar_size > *m) {
            return Err(OutputError::Other(format!(
                "path '{}' is too large at {} bytes; limit is {max} bytes",
                store.display(&info.path),
                info.nar_size
            )));
        }
        if let Some(max) = checks.max_closure {
            let size = closure(&info.path)?.1;
            if size > max {
                return Err(OutputError::Other(format!(
                    "closure of path '{}' is too large at {size} bytes; limit is {max} bytes",
                    store.display(&info.path)
                )));
            }
        }
        for (i, list) in checks.lists.iter().enumerate() {
            let Some(list) = list else { continue };
            let (allowed, recursive) = [(true, false), (true, true), (false, false), (false, true)][i];
            let mut spec = BTreeSet::new();
            for item in list {
                if let Ok(sp) = store.parse_path(item) {
                    spec.insert(sp);
                } else if let Some(o) = infos.get(item) {
                    spec.insert(o.path.clone());
                } else {
                    return Err(OutputError::Other(format!(
                        "derivation contains an illegal reference specifier '{item}'"
                    )));
                }
            }
            let mut used = if recursive { closure(&info.path)?.0 } else { info.references.clone() };
            if recursive && checks.ignore_self {
                used.remove(&info.path);
            }
            let bad: Vec<String> = used
                .iter()
                .filter(|u| if allowed { !spec.contains(*u) } else { spec.contains(*u) })
                .map(|u| format!("\n  {}", store.display(u)))
                .collect();
            if !bad.is_empty() {
                return Err(OutputError::Other(format!(
                    "output '{}' is not allowed to refer to the following paths:{}",
                    store.display(&info.path),
                    bad.concat()
                )));
            }
        }
    }
    Ok(())
}
