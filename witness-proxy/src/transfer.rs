//! Moving witnesses from one archive to another (to carry them to a machine
//! with no network, and in again there): [`copy`] takes what a [`Filter`]
//! selects from one [`Archive`]:
//!
//! - the records it accepts;
//! - the objects their bodies name;
//! - the output index entries it accepts, with their objects;
//! - with [`Filter::everything`], every other object too.
//!
//! Contract: everything selected is checked before anything is copied:
//! every trace readable (an unreadable one may be a record the filter
//! wants), each selected record named after itself and its body present
//! with its recorded size, each selected object's bytes hashing to its
//! name and each output's object to its declared hash. Any problem refuses
//! the whole transfer ([`TransferError::Refused`]) with nothing copied.
//! Then the copy goes objects first, through the destination's
//! [`Cas`](crate::cas::Cas) (each object checked again as it streams and
//! visible only once whole), then outputs ([`Archive::put_output`]), then
//! records ([`Archive::put_record`]): a crash or an error midway leaves
//! objects no record names (which gc removes), never a record without its
//! body. Each record is indexed as the proxy indexes its own, by appending,
//! and no index is rewritten, so a daemon may go on writing to the
//! destination meanwhile (a reindex there would drop what it appends).
//! What the destination has already is not copied again, so a second
//! transfer of the same selection copies nothing; a record there already
//! but missing from its indexes (a copy cut short) is indexed again.

use crate::archive::{Archive, ArchiveError, OutputMode, Problem, StoredRecord, output_key};
use crate::cas::{CasError, ObjectId};
use crate::record::Record;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;
use store::hash::{Hash, HashSink};

/// Whether a record is taken.
type TakeRecord<'a> = Box<dyn Fn(&Record) -> bool + 'a>;
/// Whether an output (declared hash, mode) is taken.
type TakeOutput<'a> = Box<dyn Fn(&Hash, OutputMode) -> bool + 'a>;

/// What [`copy`] takes from an archive.
pub struct Filter<'a> {
    records: TakeRecord<'a>,
    outputs: TakeOutput<'a>,
    unnamed_objects: bool,
}

impl<'a> Filter<'a> {
    /// The records `records` accepts (with the objects their bodies name)
    /// and the output index entries (declared hash, mode) `outputs` accepts.
    pub fn new(records: impl Fn(&Record) -> bool + 'a, outputs: impl Fn(&Hash, OutputMode) -> bool + 'a) -> Filter<'a> {
        Filter { records: Box::new(records), outputs: Box::new(outputs), unnamed_objects: false }
    }

    /// Every record, every output, and the objects nothing names as well.
    pub fn everything() -> Filter<'static> {
        Filter { records: Box::new(|_| true), outputs: Box::new(|_, _| true), unnamed_objects: true }
    }
}

/// What [`copy`] took (everything selected) and copied (what the
/// destination lacked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferReport {
    pub records: usize,
    pub records_copied: usize,
    /// Distinct objects: bodies, outputs, and the unnamed ones when taken.
    pub objects: usize,
    pub objects_copied: usize,
    pub bytes: u64,
    pub bytes_copied: u64,
    /// Output index entries.
    pub outputs: usize,
    pub outputs_copied: usize,
}

impl TransferReport {
    /// Whether the filter selected nothing at all.
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.objects == 0 && self.outputs == 0
    }
}

/// One reason a transfer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A problem [`Archive::verify`] would report too.
    Archive(Problem),
    /// An output index entry names an object the archive does not have.
    MissingOutput { output: String, object: ObjectId },
    /// An output's object does not hash to the declared hash.
    OutputMismatch { output: String, object: ObjectId, actual: Hash },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Archive(problem) => problem.fmt(f),
            Refusal::MissingOutput { output, object } => {
                write!(f, "output {output} names object {object}, which is not in the CAS")
            }
            Refusal::OutputMismatch { output, object, actual } => {
                write!(f, "output {output} is object {object}, whose bytes hash to {actual}, not the declared hash")
            }
        }
    }
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Cas(#[from] CasError),
    /// The checks found problems; nothing was copied. The first is shown.
    #[error("{}", refused(problems))]
    Refused { problems: Vec<Refusal> },
}

/// The first problem, how many more, and that nothing was copied.
fn refused(problems: &[Refusal]) -> String {
    let first = problems.first().map_or_else(|| "refused".to_owned(), Refusal::to_string);
    match problems.len() {
        0 | 1 => format!("{first}; nothing was copied"),
        2 => format!("{first} (and 1 more problem); nothing was copied"),
        n => format!("{first} (and {} more problems); nothing was copied", n - 1),
    }
}

/// An output index entry to copy.
struct Output {
    declared: Hash,
    mode: OutputMode,
    object: ObjectId,
}

/// Everything selected, checked.
struct Plan {
    records: Vec<StoredRecord>,
    /// Every object taken, with its size.
    objects: BTreeMap<ObjectId, u64>,
    outputs: Vec<Output>,
}

/// Copies what `filter` selects from `from` into `to`, after checking all
/// of it (see the module header).
pub fn copy(from: &Archive, to: &Archive, filter: &Filter<'_>) -> Result<TransferReport, TransferError> {
    let plan = plan(from, filter)?;
    let mut report = TransferReport {
        records: plan.records.len(),
        objects: plan.objects.len(),
        bytes: plan.objects.values().sum(),
        outputs: plan.outputs.len(),
        ..TransferReport::default()
    };

    let output_objects: HashMap<ObjectId, &Output> = plan.outputs.iter().map(|o| (o.object, o)).collect();
    for (id, size) in &plan.objects {
        if to.cas().has(id)? {
            continue;
        }
        // An output's object goes in with its entry, below.
        if !output_objects.contains_key(id) {
            let mut reader = from.cas().get(id)?.ok_or(CasError::Missing { id: *id })?;
            to.cas().put_expected(&mut reader, id)?;
        }
        report.objects_copied += 1;
        report.bytes_copied += size;
    }
    for o in &plan.outputs {
        if to.output_for(&o.declared, o.mode)? == Some(o.object) {
            continue;
        }
        let mut reader = from.cas().get(&o.object)?.ok_or(CasError::Missing { id: o.object })?;
        to.put_output(&o.declared, o.mode, &mut reader)?;
        report.outputs_copied += 1;
    }
    for r in &plan.records {
        let there = to.record(&r.id)?.is_some();
        if there && indexed(to, r)? {
            continue;
        }
        let stored = to.put_record(&r.record)?;
        if stored != r.id {
            // Only a record carrying credentials changes when stored.
            tracing::warn!(record = %r.id, stored = %stored, "record was redacted when copied");
        }
        if !there {
            report.records_copied += 1;
        }
    }
    tracing::info!(?report, from = %from.dir().display(), to = %to.dir().display(), "witnesses copied");
    Ok(report)
}

/// Whether the record is in the URL index and, when its build declared a
/// hash, in that hash's index.
fn indexed(archive: &Archive, r: &StoredRecord) -> Result<bool, ArchiveError> {
    let lists = |records: Vec<StoredRecord>| records.iter().any(|listed| listed.id == r.id);
    if !lists(archive.records_for_url(&r.record.url)?) {
        return Ok(false);
    }
    match r.record.build.as_ref().and_then(|b| b.parsed_output_hash().ok()) {
        Some(hash) => Ok(lists(archive.records_for_hash(&hash)?)),
        None => Ok(true),
    }
}

/// What `filter` selects from `from`, every piece of it checked.
fn plan(from: &Archive, filter: &Filter<'_>) -> Result<Plan, TransferError> {
    let mut problems = Vec::new();
    let (records, unreadable) = from.scan_records()?;
    for (path, error) in unreadable {
        problems.push(Refusal::Archive(Problem::UnreadableTrace { path, error }));
    }
    let records: Vec<StoredRecord> = records.into_iter().filter(|r| (filter.records)(&r.record)).collect();

    let mut objects: BTreeMap<ObjectId, u64> = BTreeMap::new();
    let mut named_by: HashMap<ObjectId, Vec<String>> = HashMap::new();
    // Records whose body has another size than they say (record, object,
    // recorded, actual): a problem of the record unless the object is
    // tampered, which is reported instead.
    let mut sizes = Vec::new();
    for r in &records {
        let actual = r.record.id();
        if actual != r.id {
            problems.push(Refusal::Archive(Problem::MisnamedTrace { path: from.trace_path(&r.id), id: actual }));
        }
        let Some(body) = &r.record.body else { continue };
        let Ok(object) = ObjectId::from_str(&body.sha256) else {
            problems.push(Refusal::Archive(Problem::BadBodyName { record: r.id.clone(), body: body.sha256.clone() }));
            continue;
        };
        named_by.entry(object).or_default().push(r.id.clone());
        match from.cas().size(&object)? {
            None => problems.push(Refusal::Archive(Problem::MissingBody { record: r.id.clone(), object })),
            Some(size) => {
                objects.insert(object, size);
                if size != body.size {
                    sizes.push((r.id.clone(), object, body.size, size));
                }
            }
        }
    }

    let mut outputs = Vec::new();
    for (declared, mode, object) in from.outputs()? {
        if !(filter.outputs)(&declared, mode) {
            continue;
        }
        match from.cas().size(&object)? {
            Some(size) => {
                objects.insert(object, size);
                outputs.push(Output { declared, mode, object });
            }
            None => problems.push(Refusal::MissingOutput { output: output_key(&declared, mode), object }),
        }
    }

    if filter.unnamed_objects {
        for id in from.cas().list()? {
            if let Some(size) = from.cas().size(&id)? {
                objects.entry(id).or_insert(size);
            }
        }
    }

    // Every object read whole: its name, and for an output its declared
    // hash too, in the same pass.
    let declared_for: HashMap<ObjectId, Vec<&Output>> = outputs.iter().fold(HashMap::new(), |mut map, o| {
        map.entry(o.object).or_default().push(o);
        map
    });
    // Tampered objects first: the problem the others follow from.
    let mut found = Vec::new();
    let mut tampered = HashSet::new();
    for id in objects.keys() {
        let wanted = declared_for.get(id).map_or(&[][..], Vec::as_slice);
        match check_object(from, id, wanted) {
            Ok(mismatches) => problems.extend(mismatches),
            Err(CasError::Tampered { actual, .. }) => {
                tampered.insert(*id);
                found.push(Refusal::Archive(Problem::TamperedObject {
                    id: *id,
                    actual,
                    records: named_by.get(id).cloned().unwrap_or_default(),
                }));
            }
            Err(e) => found.push(Refusal::Archive(Problem::UnreadableObject { id: *id, error: e.to_string() })),
        }
    }
    for (record, object, recorded, actual) in sizes {
        if !tampered.contains(&object) {
            problems.push(Refusal::Archive(Problem::BodySizeMismatch { record, object, recorded, actual }));
        }
    }
    found.append(&mut problems);

    if !found.is_empty() {
        return Err(TransferError::Refused { problems: found });
    }
    Ok(Plan { records, objects, outputs })
}

/// Reads the object whole: [`CasError::Tampered`] when its bytes do not
/// hash to its name; otherwise the outputs in `declared` whose declared
/// hash its bytes do not have.
fn check_object(from: &Archive, id: &ObjectId, declared: &[&Output]) -> Result<Vec<Refusal>, CasError> {
    let mut reader = from.cas().get(id)?.ok_or(CasError::Missing { id: *id })?;
    let mut sinks: Vec<HashSink> = declared.iter().map(|o| HashSink::new(o.declared.algorithm())).collect();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CasError::from_io(e, |source| CasError::Read { id: *id, source })),
        };
        for sink in &mut sinks {
            sink.update(&buf[..n]);
        }
    }
    let mut mismatches = Vec::new();
    for (o, sink) in declared.iter().zip(sinks) {
        let (actual, _) = sink.finish();
        if actual != o.declared {
            mismatches.push(Refusal::OutputMismatch { output: output_key(&o.declared, o.mode), object: *id, actual });
        }
    }
    Ok(mismatches)
}
