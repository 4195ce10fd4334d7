//! Keeping a fixed-output build's output in the witness CAS, findable by
//! its declared hash.

use super::output::{OutputError, fixed_output};
use crate::witness::WitnessService;
use local_store::LocalStore;
use std::collections::BTreeMap;
use std::io;
use store::content_address::ContentAddress;
use store::derivation::Derivation;
use store::store_path::StorePath;
use witness_proxy::archive::{Archive, OutputMode};
use witness_proxy::cas::ObjectId;

/// Keeps the output of a fixed-output build that just succeeded in the
/// witness CAS, findable by its declared hash. Never fails the build: a
/// failure is logged.
pub fn keep(
    witness: Option<&WitnessService>,
    store: &LocalStore,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
) {
    let (Some(witness), Some((name, ca, mode))) = (witness, fixed_output(drv)) else { return };
    let Some(path) = outputs.get(name) else { return };
    let full = store.display(path);
    match keep_output(witness.archive(), store, path, ca, mode) {
        Ok(id) => tracing::info!("kept '{full}' in the witness archive as object {id}"),
        Err(e) => tracing::warn!("cannot keep '{full}' in the witness archive: {e}"),
    }
}

pub(super) fn keep_output(
    archive: &Archive,
    store: &LocalStore,
    path: &StorePath,
    ca: &ContentAddress,
    mode: OutputMode,
) -> Result<ObjectId, OutputError> {
    let real = store.real_path(path);
    let output_error = |message: String| OutputError::Output { path: store.display(path), message };
    match mode {
        OutputMode::Flat => {
            let mut file = std::fs::File::open(&real).map_err(|e| output_error(e.to_string()))?;
            Ok(archive.put_output(&ca.hash, mode, &mut file)?)
        }
        OutputMode::Recursive => {
            // The NAR is dumped on a thread of its own into a pipe the
            // archive reads (the dumper writes, the archive pulls).
            let (reader, writer) = io::pipe().map_err(|e| output_error(format!("creating a pipe: {e}")))?;
            let dumper = std::thread::spawn(move || {
                let mut writer = writer;
                local_store::nar_fs::dump(&real, &mut writer)
            });
            let mut reader = reader;
            let kept = archive.put_output(&ca.hash, mode, &mut reader);
            // A failed put stops reading: the dumper then fails on the
            // closed pipe and ends. A failed dump ends the NAR short, and
            // the put fails on the declared hash.
            drop(reader);
            let dumped = dumper.join().map_err(|_| output_error("the NAR dumper panicked".into()))?;
            match (kept, dumped) {
                (Ok(id), Ok(_)) => Ok(id),
                (Err(kept), Ok(_)) => Err(kept.into()),
                (Ok(_), Err(dumped)) => Err(output_error(dumped.to_string())),
                (Err(kept), Err(dumped)) => Err(output_error(format!("{dumped} ({kept})"))),
            }
        }
    }
}
