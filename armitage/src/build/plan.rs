//! Planning: what realising some targets would take (CppNix
//! `Store::queryMissing`; the daemon's QueryMissing), with the configured
//! substituters: paths a cache has go to "will substitute" (with their
//! download and unpacked sizes and their own missing references),
//! derivations whose outputs no cache has to "will build" (and their inputs
//! are looked at in turn), the rest to "unknown".
//!
//! The walk goes level by level and asks the caches about a whole level at
//! once (`http-connections` in parallel): one narinfo round trip after
//! another made a 300-path closure cost 300 round trips (bench/build.sh).

use crate::substitute::{Substitutable, Substituters, parallel_map};
use local_store::LocalStore;
use std::collections::{BTreeSet, HashMap, HashSet};
use store::derivation::Derivation;
use store::store_path::StorePath;
use worker_protocol::{DerivedPath, Missing};

/// A derivation whose outputs might all be substituted.
struct Candidate {
    drv: StorePath,
    parsed: Derivation,
    invalid: Vec<StorePath>,
}

pub fn query_missing(
    store: &LocalStore,
    subs: Option<&Substituters>,
    targets: &[DerivedPath],
) -> local_store::Result<Missing> {
    let mut missing = Missing::default();
    let mut done: HashSet<String> = HashSet::new();
    let mut todo: Vec<DerivedPath> = targets.to_vec();
    while !todo.is_empty() {
        let mut opaque: Vec<StorePath> = Vec::new();
        let mut candidates: Vec<Candidate> = Vec::new();
        for target in std::mem::take(&mut todo) {
            if !done.insert(format!("{target:?}")) {
                continue;
            }
            match target {
                DerivedPath::Opaque(p) => {
                    if !store.is_valid(&p)? {
                        opaque.push(p);
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
                    if known && subs.is_some() && crate::build::substitutes_allowed(&parsed) {
                        candidates.push(Candidate { drv, parsed, invalid });
                    } else {
                        will_build(&mut missing, &mut todo, drv, parsed);
                    }
                }
            }
        }

        // One round of questions for the whole level.
        let mut asked: Vec<StorePath> = opaque.clone();
        asked.extend(candidates.iter().flat_map(|c| c.invalid.iter().cloned()));
        let asked: Vec<StorePath> = asked.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        let answers: HashMap<StorePath, Substitutable> = match subs {
            Some(s) if !asked.is_empty() => {
                // Silent, as CppNix's `queryMissing`: the substitution warns
                // if it passes a substitute over.
                let found = parallel_map(&asked, s.jobs(), |p| s.query_noting(p, &mut Vec::new()).ok().flatten());
                asked.iter().cloned().zip(found).filter_map(|(p, f)| f.map(|f| (p, f))).collect()
            }
            _ => HashMap::new(),
        };

        for p in opaque {
            match answers.get(&p) {
                Some(found) => will_substitute(&mut missing, &mut todo, found),
                None => {
                    missing.unknown.insert(p);
                }
            }
        }
        for c in candidates {
            if c.invalid.iter().all(|p| answers.contains_key(p)) {
                for p in &c.invalid {
                    will_substitute(&mut missing, &mut todo, &answers[p]);
                }
            } else {
                will_build(&mut missing, &mut todo, c.drv, c.parsed);
            }
        }
    }
    Ok(missing)
}

fn will_substitute(missing: &mut Missing, todo: &mut Vec<DerivedPath>, found: &Substitutable) {
    let info = &found.info;
    if !missing.will_substitute.insert(info.path.clone()) {
        return;
    }
    missing.download_size += info.file_size.unwrap_or(0);
    missing.nar_size += info.nar_size;
    for r in info.references.iter().filter(|r| **r != info.path) {
        todo.push(DerivedPath::Opaque(r.clone()));
    }
}

fn will_build(missing: &mut Missing, todo: &mut Vec<DerivedPath>, drv: StorePath, parsed: Derivation) {
    missing.will_build.insert(drv);
    for (input, wanted) in parsed.input_drvs {
        todo.push(DerivedPath::Built { drv: input, outputs: Some(wanted.outputs) });
    }
    for src in parsed.input_srcs {
        todo.push(DerivedPath::Opaque(src));
    }
}
