//! Which outputs the witness can hold (fixed-output, hashed flat or
//! recursive), and why keeping or copying one failed.

use crate::witness::WitnessService;
use std::io;
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::derivation::{Derivation, Output};
use witness_proxy::archive::{ArchiveError, OutputMode};
use witness_proxy::cas::{CasError, ObjectId};

/// Why an output could not be kept in, or copied from, the witness.
#[derive(Debug, thiserror::Error)]
pub(super) enum OutputError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Cas(#[from] CasError),
    #[error(transparent)]
    Store(#[from] local_store::Error),
    /// Reading the object failed; the CAS's own message (it names the
    /// object: `object … is tampered: its bytes hash to …`) when it has one.
    #[error("{0}")]
    Object(String),
    #[error("object {0} is no longer in the witness CAS")]
    Gone(ObjectId),
    #[error("cannot read the output '{path}': {message}")]
    Output { path: String, message: String },
}

/// The one output of a fixed-output derivation, its content address and
/// how the witness keeps it; `None` for other derivations and for `text`
/// (and git) hashing.
pub(super) fn fixed_output(drv: &Derivation) -> Option<(&str, &ContentAddress, OutputMode)> {
    if drv.outputs.len() != 1 {
        return None;
    }
    let (name, Output::Fixed(ca)) = drv.outputs.iter().next()? else { return None };
    let mode = match ca.method {
        ContentAddressMethod::Fixed(FileIngestionMethod::Flat) => OutputMode::Flat,
        ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => OutputMode::Recursive,
        ContentAddressMethod::Text | ContentAddressMethod::Fixed(FileIngestionMethod::Git) => return None,
    };
    Some((name, ca, mode))
}

/// Whether the witness can hold `drv`'s output: a fixed-output derivation
/// hashed flat or recursive, with a daemon that has a witness.
pub fn may_hold(witness: Option<&WitnessService>, drv: &Derivation) -> bool {
    witness.is_some() && fixed_output(drv).is_some()
}

/// A failed read of object `id`, in the CAS's words when they are there.
pub(super) fn read_error(id: &ObjectId, e: io::Error) -> OutputError {
    match CasError::in_io(&e) {
        Some(cas) => OutputError::Object(cas.to_string()),
        None => OutputError::Object(format!("cannot read object {id}: {e}")),
    }
}
