//! `armitage path-info` (= `nix path-info`): what the store records about
//! paths, as text or as the JSON Nix 2.26 prints.

use super::global::GlobalOpts;
use anyhow::Result;
use clap::Args;
use local_store::LocalStore;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use store::hash::Encoding;
use store::path_info::PathInfo;
use store::store_path::StorePath;

#[derive(Args)]
pub struct PathInfoArgs {
    paths: Vec<PathBuf>,
    /// Print JSON (Nix 2.26's format: an object keyed by store path).
    #[arg(long)]
    json: bool,
    /// Include the closure of the paths.
    #[arg(short, long)]
    recursive: bool,
    /// Print the NAR size.
    #[arg(short = 's', long)]
    size: bool,
    /// Print the closure size.
    #[arg(short = 'S', long)]
    closure_size: bool,
    /// Print signatures.
    #[arg(long)]
    sigs: bool,
}

impl PathInfoArgs {
    pub fn run(self, g: &GlobalOpts) -> Result<ExitCode> {
        let store = g.open_store()?;
        let mut paths = BTreeSet::new();
        for p in &self.paths {
            let sp = super::global::resolve_store_path(&store, p)?;
            if !store.is_valid(&sp)? {
                anyhow::bail!("path '{}' is not valid", store.display(&sp));
            }
            paths.insert(sp);
        }
        if self.recursive {
            paths = store.closure(paths)?;
        }
        let infos: Vec<PathInfo> = paths.iter().map(|p| store.path_info(p)).collect::<Result<_, _>>()?;
        let infos = dependencies_first(infos);
        if self.json {
            let mut root = Map::new();
            for info in &infos {
                root.insert(store.display(&info.path), self.to_json(&store, info)?);
            }
            println!("{}", Value::Object(root));
            return Ok(ExitCode::SUCCESS);
        }
        let width = infos.iter().map(|i| store.display(&i.path).len()).max().unwrap_or(0);
        for info in &infos {
            let mut line = store.display(&info.path);
            if self.size || self.closure_size || self.sigs {
                line = format!("{line:<width$}");
            }
            if self.size {
                line.push_str(&format!("\t{:>11}", info.nar_size));
            }
            if self.closure_size {
                line.push_str(&format!("\t{:>11}", closure_size(&store, info)?));
            }
            if self.sigs {
                line.push('\t');
                let mut sigs: Vec<String> = Vec::new();
                if info.ultimate {
                    sigs.push("ultimate".into());
                }
                if let Some(ca) = &info.ca {
                    sigs.push(format!("ca:{ca}"));
                }
                sigs.extend(info.sigs.iter().cloned());
                line.push_str(&sigs.join(" "));
            }
            println!("{line}");
        }
        Ok(ExitCode::SUCCESS)
    }

    fn to_json(&self, store: &LocalStore, info: &PathInfo) -> Result<Value> {
        let mut v = json!({
            "ca": info.ca.map(|c| c.to_string()),
            "deriver": info.deriver.as_ref().map(|d| store.display(d)),
            "narHash": info.nar_hash.to_typed(Encoding::Sri),
            "narSize": info.nar_size,
            "references": info.reference_paths(store.store_dir()),
            "registrationTime": info.registration_time,
            "signatures": info.sigs.iter().collect::<Vec<_>>(),
            "ultimate": info.ultimate,
        });
        if self.closure_size {
            v["closureSize"] = json!(closure_size(store, info)?);
        }
        Ok(v)
    }
}

/// Orders paths as CppNix's `StorePathsCommand` does (`topoSortPaths`, then
/// reversed): a depth-first walk over the set in store path order, each path
/// after the references it has in the set.
fn dependencies_first(infos: Vec<PathInfo>) -> Vec<PathInfo> {
    let by_path: BTreeMap<StorePath, PathInfo> = infos.into_iter().map(|i| (i.path.clone(), i)).collect();
    let mut visited = BTreeSet::new();
    let mut sorted = Vec::with_capacity(by_path.len());
    for start in by_path.keys() {
        // Iterative post-order walk: (path, references pushed?).
        let mut stack = vec![(start, false)];
        while let Some((path, expanded)) = stack.pop() {
            if expanded {
                sorted.push(by_path[path].clone());
                continue;
            }
            if !visited.insert(path) {
                continue;
            }
            stack.push((path, true));
            // Reversed so that the smallest reference is walked first.
            for r in by_path[path].references.iter().rev() {
                if r != path && by_path.contains_key(r) && !visited.contains(r) {
                    stack.push((r, false));
                }
            }
        }
    }
    sorted
}

fn closure_size(store: &LocalStore, info: &PathInfo) -> Result<u64> {
    let mut total = 0;
    for p in store.closure([info.path.clone()])? {
        total += store.path_info(&p)?.nar_size;
    }
    Ok(total)
}
