//! `armitage witness export` and `import`: the witnesses of store paths'
//! closures carried to a machine without a network (docs/witness.md,
//! "Moving witnesses to an air-gapped machine").
//!
//! Export takes, for every path of the closures: the records made for it
//! (those whose build's output path is that path, computed as `witness gc`
//! does, and those made for the derivation the store names as its
//! deriver), the objects their bodies name, and the kept output of a
//! fixed-output path with its output index entry. It writes them to a
//! folder that is a witness archive itself, so `armitage witness --dir DIR
//! ls` and `verify` read it. Import checks that folder whole before the
//! archive sees any of it, then copies in what the archive lacks
//! ([`witness_proxy::transfer`]).

use anyhow::{Context, Result, bail};
use armitage::witness::retention::output_path;
use clap::Args;
use local_store::LocalStore;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::content_address::{ContentAddressMethod, FileIngestionMethod};
use store::store_path::StorePath;
use witness_proxy::archive::{Archive, OutputMode};
use witness_proxy::record::{BuildRef, Record};
use witness_proxy::transfer::{self, Filter, TransferReport};

#[derive(Args)]
pub struct ExportArgs {
    /// The folder to write, as a witness archive: made if missing, else
    /// empty or a witness archive already (then added to).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Store paths (or symlinks into the store, like ./result) whose
    /// closures' witnesses are exported.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

#[derive(Args)]
pub struct ImportArgs {
    /// A witness archive, as `armitage witness export` writes one.
    #[arg(value_name = "DIR")]
    from: PathBuf,
}

/// Exports from `archive` the witnesses of the closures of `args.paths`
/// in `store`.
pub fn export(store: &LocalStore, archive: &Archive, args: ExportArgs) -> Result<ExitCode> {
    let mut roots = BTreeSet::new();
    for arg in &args.paths {
        let path = crate::cli::global::resolve_store_path(store, arg)?;
        if !store.is_valid(&path)? {
            bail!("cannot export the witnesses of '{}': it is not valid in the store", store.display(&path));
        }
        roots.insert(path);
    }
    let closure = store.closure(roots).context("reading the closure to export from the store")?;
    let mut derivers = BTreeSet::new();
    let mut outputs = HashSet::new();
    for path in &closure {
        let info = store.path_info(path)?;
        derivers.extend(info.deriver);
        if let Some(ca) = info.ca
            && let Some(mode) = output_mode(ca.method)
        {
            outputs.insert((ca.hash, mode));
        }
    }

    let store_dir = store.store_dir();
    let needed = |r: &Record| {
        r.build.as_ref().is_some_and(|b| {
            drv_path(b).is_some_and(|drv| derivers.contains(&drv))
                || output_path(store_dir, b).is_ok_and(|out| closure.contains(&out))
        })
    };
    let filter = Filter::new(needed, |hash, mode| outputs.contains(&(*hash, mode)));
    let to = export_destination(&args.to, archive)?;
    let report = transfer::copy(archive, &to, &filter)
        .with_context(|| format!("cannot export witnesses to '{}'", args.to.display()))?;

    let paths = plural(closure.len(), "store path", "store paths");
    if report.is_empty() {
        let left = if to.cas().list()?.is_empty() && to.all_records()?.is_empty() {
            "holds an empty witness archive"
        } else {
            "is unchanged"
        };
        println!("no witnesses for the {paths} of the closure: '{}' {left}", args.to.display());
    } else {
        let taken = counts(report.records, report.objects, report.bytes, report.outputs);
        println!("exported {taken} for the {paths} of the closure to '{}'", args.to.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks the folder `from` whole, then copies into the archive at
/// `archive_dir` (made if missing) what it lacks.
pub fn import(archive_dir: &Path, args: ImportArgs) -> Result<ExitCode> {
    let from_dir = &args.from;
    if !is_archive(from_dir) {
        bail!(
            "cannot import witnesses from '{}': it is not a witness archive (no cas/ and traces/)",
            from_dir.display()
        );
    }
    if same_folder(from_dir, archive_dir) {
        bail!("cannot import witnesses from '{}': it is the archive they would go to", from_dir.display());
    }
    let from =
        Archive::open(from_dir).with_context(|| format!("opening the witness archive at '{}'", from_dir.display()))?;
    let to = Archive::open(archive_dir)
        .with_context(|| format!("opening the witness archive at '{}'", archive_dir.display()))?;
    let report = transfer::copy(&from, &to, &Filter::everything())
        .with_context(|| format!("cannot import witnesses from '{}'", from_dir.display()))?;

    let (from, to) = (from_dir.display(), archive_dir.display());
    let TransferReport { records_copied, objects_copied, bytes_copied, outputs_copied, .. } = report;
    if records_copied == 0 && objects_copied == 0 && outputs_copied == 0 {
        let all = counts(report.records, report.objects, report.bytes, report.outputs);
        println!("nothing to import from '{from}': its {all} are in '{to}' already");
    } else {
        let copied = counts(records_copied, objects_copied, bytes_copied, outputs_copied);
        let there = (report.records - records_copied, report.objects - objects_copied);
        let already = match there {
            (0, 0) => String::new(),
            (records, objects) => format!(" ({} were there already)", counts(records, objects, 0, 0)),
        };
        println!("imported {copied} from '{from}' into '{to}'{already}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The archive to export to at `dir`: made if missing; an existing folder
/// must be empty or an archive, and not the one exported from.
fn export_destination(dir: &Path, from: &Archive) -> Result<Archive> {
    let refuse = |why: &str| anyhow::anyhow!("cannot export witnesses to '{}': {why}", dir.display());
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !is_archive(dir) {
                return Err(refuse("it is neither empty nor a witness archive"));
            }
            if same_folder(dir, from.dir()) {
                return Err(refuse("it is the archive they are exported from"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) if dir.exists() && !dir.is_dir() => return Err(refuse("it is not a folder")),
        Err(e) => return Err(refuse(&e.to_string())),
    }
    Archive::open(dir).with_context(|| format!("cannot make a witness archive at '{}'", dir.display()))
}

/// Whether `dir` has an archive's `cas/` and `traces/`.
fn is_archive(dir: &Path) -> bool {
    dir.join("cas").is_dir() && dir.join("traces").is_dir()
}

fn same_folder(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// The derivation a record's build names, if its `drv` is a store path.
fn drv_path(b: &BuildRef) -> Option<StorePath> {
    let base = b.drv.trim_end_matches('/').rsplit('/').next()?;
    StorePath::from_base_name(base).ok()
}

/// How a fixed-output path's content address covers what the archive
/// keeps of it; `None` for the kinds it keeps nothing of.
fn output_mode(method: ContentAddressMethod) -> Option<OutputMode> {
    match method {
        ContentAddressMethod::Fixed(FileIngestionMethod::Flat) => Some(OutputMode::Flat),
        ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => Some(OutputMode::Recursive),
        _ => None,
    }
}

/// `2 records, 3 objects (120 bytes), 1 kept output`; the bytes only
/// when there are objects, the outputs only when there are some.
fn counts(records: usize, objects: usize, bytes: u64, outputs: usize) -> String {
    let mut out = format!("{}, {}", plural(records, "record", "records"), plural(objects, "object", "objects"));
    if objects > 0 && bytes > 0 {
        out.push_str(&format!(" ({})", plural(usize::try_from(bytes).unwrap_or(usize::MAX), "byte", "bytes")));
    }
    if outputs > 0 {
        out.push_str(&format!(", {}", plural(outputs, "kept output", "kept outputs")));
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_english() {
        assert_eq!(counts(1, 2, 15, 1), "1 record, 2 objects (15 bytes), 1 kept output");
        assert_eq!(counts(0, 0, 0, 0), "0 records, 0 objects");
        assert_eq!(counts(2, 1, 1, 0), "2 records, 1 object (1 byte)");
    }

    #[test]
    fn a_records_derivation_is_its_drv_store_path() {
        let b = BuildRef {
            drv: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-src.tar.gz.drv".into(),
            output: "out".into(),
            output_hash: String::new(),
            output_hash_mode: "flat".into(),
            network: None,
        };
        assert_eq!(drv_path(&b).unwrap().base_name(), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-src.tar.gz.drv");
        assert!(drv_path(&BuildRef { drv: "not a path".into(), ..b }).is_none());
    }
}
