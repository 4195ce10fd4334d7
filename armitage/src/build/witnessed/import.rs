//! Making a missing fixed-output output valid from the witness CAS,
//! without its builder.

use super::super::goal::{Event, GoalCtx, Outcome};
use super::output::{OutputError, fixed_output, read_error};
use crate::witness::WitnessService;
use local_store::{AddOptions, LocalStore};
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use store::content_address::ContentAddress;
use store::derivation::Derivation;
use store::hash::{Algorithm, HashSink};
use store::path_info::PathInfo;
use store::store_path::StorePath;
use witness_proxy::archive::{Archive, OutputMode};
use witness_proxy::cas::ObjectId;
use worker_protocol::{BuildStatus, Verbosity};

/// Makes the missing output of a fixed-output derivation valid from the
/// witness archive, without its builder, when the witness holds it: the
/// outcome then. `None` when there is nothing to copy, or the copy failed
/// (warned about): the build goes on as usual. Blocking.
///
/// The outcome is `Built`, as after a build: CppNix's build results have
/// no status for an output made from a witness (`Substituted` would tell
/// the client that a substituter had it).
///
/// Not to be called under the output's lock: the store's add takes it
/// itself (flock: a second lock on it by the same process would wait for
/// ever) and checks validity again under it.
pub fn import(
    witness: Option<&WitnessService>,
    store: &LocalStore,
    drv_path: &StorePath,
    drv: &Derivation,
    initial: &BTreeMap<String, Option<StorePath>>,
    ctx: &GoalCtx,
) -> Option<Outcome> {
    let (witness, (name, ca, mode)) = (witness?, fixed_output(drv)?);
    let path = initial.get(name)?.as_ref()?;
    let full = store.display(path);
    let archive = witness.archive();
    let id = match archive.output_for(&ca.hash, mode) {
        Ok(id) => id?,
        Err(e) => {
            tracing::warn!("looking '{full}' up in the witness archive: {e}");
            return None;
        }
    };
    ctx.emit(Event::Message(Verbosity::Info, format!("copying '{full}' from the witness archive")));
    let start_time = unix_now();
    if let Err(e) = copy_output(archive, store, drv_path, path, ca, mode, id) {
        let message = format!("cannot copy '{full}' from the witness archive: {e}; building it instead");
        tracing::warn!("{message}");
        ctx.emit(Event::Warning(message));
        return None;
    }
    tracing::info!("copied '{full}' from the witness archive (object {id}); its builder did not run");
    let mut o = Outcome::new(BuildStatus::Built);
    o.outputs.insert(name.to_owned(), path.clone());
    o.start_time = start_time;
    o.stop_time = unix_now();
    Some(o)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Adds object `id` as the output `path` (the file of a flat output, the
/// NAR of a recursive one), with the derivation's content address and no
/// references.
pub(super) fn copy_output(
    archive: &Archive,
    store: &LocalStore,
    drv_path: &StorePath,
    path: &StorePath,
    ca: &ContentAddress,
    mode: OutputMode,
    id: ObjectId,
) -> Result<(), OutputError> {
    let cas = archive.cas();
    let size = cas.size(&id)?.ok_or(OutputError::Gone(id))?;
    let open = || -> Result<Box<dyn Read + Send>, OutputError> { cas.get(&id)?.ok_or(OutputError::Gone(id)) };
    let (nar_hash, nar_size, stream): (_, _, Box<dyn Read + Send>) = match mode {
        // The object is the NAR: its name is the NAR hash.
        OutputMode::Recursive => (id.to_hash(), size, open()?),
        // The NAR of the file, hashed in a first pass (which reads the
        // object to its end, and so checks it), then streamed.
        OutputMode::Flat => {
            let (head, tail) = store::nar::file_frame(size, false);
            let mut sink = HashSink::new(Algorithm::Sha256);
            sink.update(&head);
            io::copy(&mut open()?, &mut sink).map_err(|e| read_error(&id, e))?;
            sink.update(&tail);
            let (nar_hash, nar_size) = sink.finish();
            let stream = io::Cursor::new(head).chain(open()?).chain(io::Cursor::new(tail));
            (nar_hash, nar_size, Box::new(stream))
        }
    };
    let mut info = PathInfo::new(path.clone(), nar_hash, nar_size);
    info.ca = Some(*ca);
    info.deriver = Some(drv_path.clone());
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let added = store.add_nar(&info, &mut reader, AddOptions::default());
    // The object is checked at its end of stream, which the NAR reader
    // stops short of when the bytes are not the NAR they should be: read
    // on to there, so that a tampered object is named as such.
    let drained = io::copy(&mut reader, &mut io::sink());
    match (added, drained) {
        (_, Err(e)) => Err(read_error(&id, e)),
        (added, Ok(_)) => Ok(added?),
    }
}
