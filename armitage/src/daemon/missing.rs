//! What realising some targets would take (CppNix `Store::queryMissing`),
//! with the configured substituters: paths a cache has go to
//! "will substitute" (with their download and unpacked sizes and their own
//! missing references), derivations whose outputs no cache has to "will
//! build" (and their inputs are looked at in turn), the rest to "unknown".

use crate::substitute::Substituters;
use std::collections::HashSet;
use store::derivation::Derivation;
use store::local::LocalStore;
use store::store_path::StorePath;
use store::worker_protocol::{DerivedPath, Missing};

pub fn query_missing(store: &LocalStore, subs: Option<&Substituters>, targets: &[DerivedPath]) -> store::local::Result<Missing> {
    let mut missing = Missing::default();
    let mut done: HashSet<String> = HashSet::new();
    let mut todo: Vec<DerivedPath> = targets.to_vec();
    // Silent, as CppNix's `queryMissing`: the substitution warns if it
    // passes a substitute over (queued warnings would reach another client).
    let offered = |p: &StorePath| subs.and_then(|s| s.query_noting(p, &mut Vec::new()).ok().flatten());
    while let Some(target) = todo.pop() {
        if !done.insert(format!("{target:?}")) {
            continue;
        }
        match target {
            DerivedPath::Opaque(p) => {
                if store.is_valid(&p)? {
                    continue;
                }
                match offered(&p) {
                    Some(found) => {
                        missing.download_size += found.info.file_size.unwrap_or(0);
                        missing.nar_size += found.info.nar_size;
                        for r in found.info.references.iter().filter(|r| **r != p) {
                            todo.push(DerivedPath::Opaque(r.clone()));
                        }
                        missing.will_substitute.insert(p);
                    }
                    None => {
                        missing.unknown.insert(p);
                    }
                }
            }
            DerivedPath::Built { drv, outputs } => {
                if !store.is_valid(&drv)? {
                    missing.unknown.insert(drv);
                    continue;
                }
                let mut known = true;
                let mut invalid = Vec::new();
                for (name, path) in store.derivation_output_map(&drv)? {
                    if outputs.as_ref().is_some_and(|o| !o.contains(&name)) {
                        continue;
                    }
                    match path {
                        Some(path) if store.is_valid(&path)? => {}
                        Some(path) => invalid.push(path),
                        None => known = false,
                    }
                }
                if known && invalid.is_empty() {
                    continue;
                }
                let parsed = store.read_derivation(&drv)?;
                // CppNix `queryMissing` looks for substitutes only when the
                // derivation allows them (`allowSubstitutes`).
                if known && substitutes_allowed(&parsed) {
                    let found: Vec<_> = invalid.iter().filter_map(offered).collect();
                    if found.len() == invalid.len() {
                        for f in found {
                            missing.download_size += f.info.file_size.unwrap_or(0);
                            missing.nar_size += f.info.nar_size;
                            for r in f.info.references.iter().filter(|r| **r != f.info.path) {
                                todo.push(DerivedPath::Opaque(r.clone()));
                            }
                            missing.will_substitute.insert(f.info.path);
                        }
                        continue;
                    }
                }
                missing.will_build.insert(drv);
                for (input, wanted) in parsed.input_drvs {
                    todo.push(DerivedPath::Built { drv: input, outputs: Some(wanted.outputs) });
                }
                for src in parsed.input_srcs {
                    todo.push(DerivedPath::Opaque(src));
                }
            }
        }
    }
    Ok(missing)
}

/// `allowSubstitutes` (default true), as the derivation goal reads it.
fn substitutes_allowed(drv: &Derivation) -> bool {
    if let Ok(Some(json)) = drv.structured_attrs() {
        return json.get("allowSubstitutes").and_then(serde_json::Value::as_bool).unwrap_or(true);
    }
    drv.env_var("allowSubstitutes").is_none_or(|v| v == b"1")
}
