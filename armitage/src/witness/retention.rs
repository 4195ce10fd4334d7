//! What the witness keeps: the records (and through them the CAS objects)
//! of builds whose output is a valid store path, and records that name no
//! build. Everything else goes in a collection ([`collect`]): by
//! `armitage witness gc`, and by the daemon after the store's own garbage
//! collection when `[witness] gc-with-store` is set.

use local_store::LocalStore;
use std::collections::HashMap;
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::store_path::{StoreDir, StorePath, StoreReferences, output_path_name};
use witness_proxy::archive::{Archive, ArchiveError, GcReport};
use witness_proxy::record::{BuildRef, Record};

/// Why a collection did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("deciding on record {record}: {source}")]
    Store { record: String, source: local_store::Error },
}

/// Why a record's output path cannot be computed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutputPathError(String);

/// Removes (or, `dry_run`, counts) what no valid output needs. Decided
/// before anything is removed, so that a store error stops the collection
/// instead of keeping or removing by default; records that arrive
/// meanwhile are kept.
pub fn collect(archive: &Archive, store: &LocalStore, dry_run: bool) -> Result<GcReport, RetentionError> {
    let records = archive.all_records()?;
    let mut keep_build: HashMap<BuildKey<'_>, bool> = HashMap::new();
    for r in &records {
        let Some(b) = &r.record.build else { continue };
        if keep_build.contains_key(&build_key(b)) {
            continue;
        }
        let keep =
            output_is_valid(store, b).map_err(|source| RetentionError::Store { record: r.id.clone(), source })?;
        keep_build.insert(build_key(b), keep);
    }
    let keep = |r: &Record| r.build.as_ref().is_none_or(|b| keep_build.get(&build_key(b)).copied().unwrap_or(true));
    Ok(if dry_run { archive.gc_dry_run(keep)? } else { archive.gc(keep)? })
}

/// What decides a record's fate: its build, by value.
type BuildKey<'a> = (&'a str, &'a str, &'a str, &'a str);

fn build_key(b: &BuildRef) -> BuildKey<'_> {
    (&b.drv, &b.output, &b.output_hash, &b.output_hash_mode)
}

/// Whether the build's output path is valid in `store`; `true` (kept)
/// when the record does not say enough to compute it.
fn output_is_valid(store: &LocalStore, b: &BuildRef) -> Result<bool, local_store::Error> {
    match output_path(store.store_dir(), b) {
        Ok(path) => store.is_valid(&path),
        Err(e) => {
            tracing::warn!("cannot compute the output path of {} ({e}): its records are kept", b.drv);
            Ok(true)
        }
    }
}

/// The output path of a fixed-output build, from the record alone
/// (CppNix's `makeFixedOutputPath`): named after the derivation (its
/// `.drv` name without `.drv`, `-<output>` added unless `out`), addressed
/// by the declared hash and mode, without references.
pub fn output_path(store_dir: &StoreDir, b: &BuildRef) -> Result<StorePath, OutputPathError> {
    let fail = |e: &dyn std::fmt::Display| OutputPathError(e.to_string());
    let base = b.drv.trim_end_matches('/').rsplit('/').next().unwrap_or(&b.drv);
    let drv = StorePath::from_base_name(base).map_err(|e| fail(&e))?;
    let Some(drv_name) = drv.name().strip_suffix(".drv") else {
        return Err(OutputPathError(format!("'{}' is not a .drv store path", b.drv)));
    };
    let method = match b.output_hash_mode.as_str() {
        "flat" => ContentAddressMethod::Fixed(FileIngestionMethod::Flat),
        "recursive" => ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
        "git" => ContentAddressMethod::Fixed(FileIngestionMethod::Git),
        "text" => ContentAddressMethod::Text,
        other => return Err(OutputPathError(format!("unknown output hash mode '{other}'"))),
    };
    let ca = ContentAddress { method, hash: b.parsed_output_hash().map_err(|e| fail(&e))? };
    store_dir
        .make_path_from_ca(&output_path_name(drv_name, &b.output), &ca, &StoreReferences::default())
        .map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::hash::Algorithm;

    #[test]
    fn the_output_path_is_the_fixed_output_path_of_the_derivation_name() {
        let dir = StoreDir::new("/nix/store").unwrap();
        let hash = Algorithm::Sha256.digest(b"hello");
        let b = BuildRef {
            drv: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-src.tar.gz.drv".into(),
            output: "out".into(),
            output_hash: hash.to_sri(),
            output_hash_mode: "flat".into(),
            network: None,
        };
        let expected = dir
            .make_fixed_output_path("src.tar.gz", FileIngestionMethod::Flat, &hash, &StoreReferences::default())
            .unwrap();
        assert_eq!(output_path(&dir, &b).unwrap(), expected);
        let recursive = BuildRef { output_hash_mode: "recursive".into(), output: "dev".into(), ..b.clone() };
        let expected = dir
            .make_fixed_output_path("src.tar.gz-dev", FileIngestionMethod::Recursive, &hash, &Default::default())
            .unwrap();
        assert_eq!(output_path(&dir, &recursive).unwrap(), expected);
        assert!(output_path(&dir, &BuildRef { output_hash_mode: "weird".into(), ..b.clone() }).is_err());
        assert!(output_path(&dir, &BuildRef { drv: "/nix/store/x".into(), ..b }).is_err());
    }
}
