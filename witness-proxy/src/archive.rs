//! The witness store on disk: one directory holding
//!
//! - `cas/{sha256}`: the bodies, through a [`Cas`] ([`LocalCas`] in the
//!   same directory unless another backend is given);
//! - `traces/{record id}.cbor`: one [`Record`] per exchange, in canonical
//!   CBOR, written to `tmp/` and renamed into place;
//! - `index/url/{sha256 of the redacted URL}` and `index/hash/{algo}-{hex}`
//!   (the declared output hash of the fixed-output derivation a record
//!   served): record ids, one per line, appended with `O_APPEND`;
//! - `index/output/{mode}-{algo}-{hex}`: the object holding the output of
//!   a fixed-output derivation that declared this hash in this mode
//!   ([`OutputMode`]: the file's bytes, or the NAR of the tree), one id
//!   and a newline, written whole by rename ([`Archive::put_output`],
//!   [`Archive::output_for`]).
//!
//! Contract: a record is stored only after [`crate::redact`] has run over
//! its URLs and headers, whatever its maker did. An index line counts only
//! when whole (64 hex digits and a newline): a crash leaves at most a torn
//! last line, which readers skip and the next append ends first. An index
//! may name a record that is gone (gc); readers skip it. A crash between
//! a trace and its index lines leaves a record that [`Archive::verify`]
//! reports and [`Archive::reindex`] indexes.
//!
//! Retention ([`Archive::gc`]): records go only when the caller's `keep`
//! says so, output index entries when no remaining record's build
//! declares their hash and mode, objects when no remaining record nor
//! output index entry names them, and records and entries
//! are deleted before objects, so that no moment (nor crash) leaves a
//! record naming a deleted object. Within one process gc excludes writers
//! (a lock that `record`, a body's commit, an output's commit and gc
//! share) and keeps bodies
//! committed whose record has not arrived yet; a gc run from another
//! process while a proxy writes is not protected against.

use crate::cas::{self, Cas, CasError, LocalCas, ObjectId, STALE_TEMP_AGE};
use crate::record::{Record, RecordError};
use crate::redact::{REDACTED, redact_header, redact_url};
use crate::sink::{BodyWriter, Replay, Witness};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use store::hash::{Algorithm, Hash, HashSink};

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Cas(#[from] CasError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("trace {} is not a readable record: {source}", path.display())]
    BadTrace { path: PathBuf, source: RecordError },
    #[error("`{0}` is not a record id (a sha256 in lower-case hex)")]
    BadId(String),
    #[error("the record's body `{0}` is not a sha256 in lower-case hex; not stored")]
    BadBody(String),
    #[error("cannot collect garbage while trace {} is unreadable ({error}); see verify", path.display())]
    GcBlocked { path: PathBuf, error: String },
    #[error("output declared as {declared} hashes to {actual}; it was not kept")]
    OutputMismatch { declared: String, actual: String },
}

impl From<ArchiveError> for io::Error {
    fn from(err: ArchiveError) -> io::Error {
        match err {
            ArchiveError::Cas(e) => e.into(),
            ArchiveError::Io { ref source, .. } => io::Error::new(source.kind(), err),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

type Result<T, E = ArchiveError> = std::result::Result<T, E>;

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io { action, path: path.to_owned(), source }
}

/// A record together with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub id: String,
    pub record: Record,
}

/// What [`Archive::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub records_kept: usize,
    pub records_removed: usize,
    pub objects_kept: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
}

/// What [`Archive::verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub objects_checked: usize,
    pub records_checked: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The object's bytes do not hash to its name; `records` name it.
    TamperedObject {
        id: ObjectId,
        actual: ObjectId,
        records: Vec<String>,
    },
    UnreadableObject {
        id: ObjectId,
        error: String,
    },
    UnreadableTrace {
        path: PathBuf,
        error: String,
    },
    /// The trace's file name is not the id of the record in it.
    MisnamedTrace {
        path: PathBuf,
        id: String,
    },
    BadBodyName {
        record: String,
        body: String,
    },
    /// The record's body names an object the CAS does not have.
    MissingBody {
        record: String,
        object: ObjectId,
    },
    BodySizeMismatch {
        record: String,
        object: ObjectId,
        recorded: u64,
        actual: u64,
    },
    /// An index the record belongs in does not list it.
    NotIndexed {
        record: String,
        index: PathBuf,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TamperedObject { id, actual, records } => {
                write!(f, "object {id} is tampered: its bytes hash to {actual}")?;
                if !records.is_empty() {
                    write!(f, " (body of record {})", records.join(", "))?;
                }
                Ok(())
            }
            Problem::UnreadableObject { id, error } => write!(f, "object {id} cannot be read: {error}"),
            Problem::UnreadableTrace { path, error } => write!(f, "trace {} cannot be read: {error}", path.display()),
            Problem::MisnamedTrace { path, id } => {
                write!(f, "trace {} holds record {id}, not the one its name says", path.display())
            }
            Problem::BadBodyName { record, body } => {
                write!(f, "record {record} names body `{body}`, which is not a sha256 in lower-case hex")
            }
            Problem::MissingBody { record, object } => {
                write!(f, "record {record} names body {object}, which is not in the CAS")
            }
            Problem::BodySizeMismatch { record, object, recorded, actual } => {
                write!(f, "record {record} says body {object} has {recorded} bytes; the CAS has {actual}")
            }
            Problem::NotIndexed { record, index } => write!(f, "record {record} is missing from {}", index.display()),
        }
    }
}

/// A trace that could not be read, and why.
type Unreadable = (PathBuf, String);

/// The index key of a URL: the sha256 (hex) of its redacted form, so a
/// URL with or without its credentials finds the same records.
pub fn url_key(url: &str) -> String {
    Algorithm::Sha256.digest(redact_url(url)).to_base16()
}

/// The index key of a declared output hash: `{algo}-{base16}`.
pub fn hash_key(hash: &Hash) -> String {
    format!("{}-{}", hash.algorithm(), hash.to_base16())
}

/// How a fixed-output derivation's declared hash covers its output, and
/// so what its object holds: the file's bytes (`flat`) or the NAR of the
/// tree (`recursive`). (`text` outputs are not kept.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputMode {
    Flat,
    Recursive,
}

impl fmt::Display for OutputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputMode::Flat => "flat",
            OutputMode::Recursive => "recursive",
        })
    }
}

/// The output index key of a declared hash in a mode:
/// `{mode}-{algo}-{base16}`, so that a flat and a recursive output of the
/// same declared hash are never taken for one another.
pub fn output_key(declared: &Hash, mode: OutputMode) -> String {
    format!("{mode}-{}", hash_key(declared))
}

/// The witness store: see the module header.
pub struct Archive {
    dir: PathBuf,
    traces: PathBuf,
    url_index: PathBuf,
    hash_index: PathBuf,
    output_index: PathBuf,
    tmp: PathBuf,
    cas: Arc<dyn Cas>,
    /// Objects committed through [`Witness::body`] whose record has not
    /// arrived yet: gc keeps them.
    pending: Arc<Mutex<HashSet<ObjectId>>>,
    /// Writers (a record, a body's commit) share it; gc and reindex hold it
    /// alone.
    maintenance: Arc<RwLock<()>>,
    /// Told of each record and kept output once stored ([`Archive::on_kept`]).
    observer: Arc<std::sync::OnceLock<Observer>>,
}

/// What [`Archive::on_kept`]'s observer is told of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// A record, by its id, and the object holding its body, if any.
    Record { id: String, body: Option<ObjectId> },
    /// A fixed-output output kept by [`Archive::put_output`].
    Output(ObjectId),
}

type Observer = Box<dyn Fn(Kept) + Send + Sync>;

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive").field("dir", &self.dir).field("cas", &self.cas.describe()).finish()
    }
}

impl Archive {
    /// Opens (creating as needed) the archive in `dir`, its objects in a
    /// [`LocalCas`] at `dir/cas/`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Archive> {
        let cas = LocalCas::open(dir.as_ref())?;
        Self::with_cas(dir, Arc::new(cas))
    }

    /// Opens the archive in `dir` with its objects in `cas`.
    pub fn with_cas(dir: impl AsRef<Path>, cas: Arc<dyn Cas>) -> Result<Archive> {
        let dir = dir.as_ref().to_owned();
        let archive = Archive {
            traces: dir.join("traces"),
            url_index: dir.join("index/url"),
            hash_index: dir.join("index/hash"),
            output_index: dir.join("index/output"),
            tmp: dir.join("tmp"),
            dir,
            cas,
            pending: Arc::default(),
            maintenance: Arc::default(),
            observer: Arc::default(),
        };
        for d in [&archive.traces, &archive.url_index, &archive.hash_index, &archive.output_index, &archive.tmp] {
            fs::create_dir_all(d).map_err(io_error("create directory", d))?;
        }
        cas::remove_stale_temp_files(&archive.tmp, STALE_TEMP_AGE)?;
        Ok(archive)
    }

    /// Calls `observer` with each record and output stored from now on,
    /// once it is stored (the daemon's upload queue). One observer per
    /// archive: a second call is refused with `false`.
    pub fn on_kept(&self, observer: impl Fn(Kept) + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(observer)).is_ok()
    }

    fn tell(&self, kept: Kept) {
        if let Some(observer) = self.observer.get() {
            observer(kept);
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cas(&self) -> &Arc<dyn Cas> {
        &self.cas
    }

    /// Where the record's trace is (or would be).
    pub fn trace_path(&self, id: &str) -> PathBuf {
        self.traces.join(format!("{id}.cbor"))
    }

    /// Where the records of a URL are indexed.
    pub fn url_index_path(&self, url: &str) -> PathBuf {
        self.url_index.join(url_key(url))
    }

    /// Where the records of a declared output hash are indexed.
    pub fn hash_index_path(&self, hash: &Hash) -> PathBuf {
        self.hash_index.join(hash_key(hash))
    }

    /// Where the object of an output declared as `declared` in `mode` is
    /// indexed.
    pub fn output_index_path(&self, declared: &Hash, mode: OutputMode) -> PathBuf {
        self.output_index.join(output_key(declared, mode))
    }

    /// Keeps the output of a fixed-output derivation as an object:
    /// `reader` yields the file's bytes (flat) or the NAR of the tree
    /// (recursive), which must hash to `declared` (checked before the
    /// object becomes visible; a mismatch keeps nothing). With a sha256
    /// declared hash the object's id is the declared hash itself. Indexes
    /// the object under `index/output/{mode}-{algo}-{hex}` (so gc keeps it
    /// and [`Archive::output_for`] finds it whatever the algorithm) and
    /// returns its id.
    pub fn put_output(&self, declared: &Hash, mode: OutputMode, reader: &mut dyn Read) -> Result<ObjectId> {
        let expected = ObjectId::from_digest(declared);
        // The declared hash is checked as the bytes pass when it is not
        // the object's own name.
        let mut declared_sink = expected.is_none().then(|| HashSink::new(declared.algorithm()));
        let mut writer = self.cas.writer()?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CasError::Source(e).into()),
            };
            if let Some(sink) = &mut declared_sink {
                sink.update(&buf[..n]);
            }
            writer.write_all(&buf[..n]).map_err(|e| {
                CasError::from_io(e, |source| CasError::Write { what: format!("the {mode} output {declared}"), source })
            })?;
        }
        if let Some(sink) = declared_sink {
            let (actual, _) = sink.finish();
            if actual != *declared {
                // Dropping the writer discards what it staged.
                return Err(ArchiveError::OutputMismatch {
                    declared: declared.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        // Committed and indexed as one step for gc.
        let _writing = self.maintenance.read().unwrap_or_else(PoisonError::into_inner);
        let id = match expected {
            Some(id) => {
                writer.commit_expecting(&id)?;
                id
            }
            None => writer.commit()?.0,
        };
        let index = self.output_index_path(declared, mode);
        if read_output_id(&index)? != Some(id) {
            let (mut file, temp) = cas::create_temp_file(&self.tmp, "output")?;
            if let Err(e) = file.write_all(format!("{id}\n").as_bytes()) {
                let _ = fs::remove_file(&temp);
                return Err(ArchiveError::Io { action: "write", path: temp, source: e });
            }
            if let Err(e) = cas::persist(file, &temp, &index) {
                let _ = fs::remove_file(&temp);
                return Err(e.into());
            }
        }
        tracing::debug!(object = %id, output = %output_key(declared, mode), "kept a fixed-output output");
        self.tell(Kept::Output(id));
        Ok(id)
    }

    /// The object holding the output of a fixed-output derivation declared
    /// as `declared` in `mode`, if the CAS has it: the one the output index
    /// names, else, for a sha256 declared hash, the object of that name
    /// (whose bytes are then the file, or the NAR, by definition; a body
    /// the proxy kept may be one). The object's bytes are not checked
    /// here: read it through [`Cas::get`], which does.
    pub fn output_for(&self, declared: &Hash, mode: OutputMode) -> Result<Option<ObjectId>> {
        let indexed = read_output_id(&self.output_index_path(declared, mode))?;
        for id in indexed.into_iter().chain(ObjectId::from_digest(declared)) {
            if self.cas.has(&id)? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Every object the output index names.
    /// The objects of the kept outputs a collection keeps: those a kept
    /// record's build declares (its hash and mode). The other entries are
    /// removed from the output index (unless `dry_run`): an output no
    /// valid store path's witness needs goes with its records.
    fn collect_outputs(&self, kept: &[StoredRecord], dry_run: bool) -> Result<HashSet<ObjectId>> {
        let declared: HashSet<String> = kept
            .iter()
            .filter_map(|r| r.record.build.as_ref())
            .filter_map(|b| {
                let mode = match b.output_hash_mode.as_str() {
                    "flat" => OutputMode::Flat,
                    "recursive" => OutputMode::Recursive,
                    _ => return None,
                };
                Some(output_key(&b.parsed_output_hash().ok()?, mode))
            })
            .collect();
        let dir = &self.output_index;
        let mut ids = HashSet::new();
        for entry in fs::read_dir(dir).map_err(io_error("list index", dir))? {
            let entry = entry.map_err(io_error("list index", dir))?;
            let path = entry.path();
            if declared.contains(entry.file_name().to_string_lossy().as_ref()) {
                ids.extend(read_output_id(&path)?);
            } else if !dry_run {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::debug!(entry = %path.display(), "gc removed output index entry"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ArchiveError::Io { action: "remove index", path, source: e }),
                }
            }
        }
        Ok(ids)
    }

    /// Stores a record (its URLs and headers redacted first) and indexes
    /// it; returns its id. Storing the same record again changes nothing
    /// but a repeated index line, which readers fold.
    pub fn put_record(&self, record: &Record) -> Result<String> {
        let record = sanitize(record);
        let body = match &record.body {
            Some(body) => {
                Some(ObjectId::from_str(&body.sha256).map_err(|_| ArchiveError::BadBody(body.sha256.clone()))?)
            }
            None => None,
        };
        let bytes = record.to_cbor();
        let id = Algorithm::Sha256.digest(&bytes).to_base16();
        let _writing = self.maintenance.read().unwrap_or_else(PoisonError::into_inner);
        let dest = self.trace_path(&id);
        if !dest.exists() {
            let (mut file, temp) = cas::create_temp_file(&self.tmp, "trace")?;
            if let Err(e) = file.write_all(&bytes) {
                let _ = fs::remove_file(&temp);
                return Err(ArchiveError::Io { action: "write", path: temp, source: e });
            }
            if let Err(e) = cas::persist(file, &temp, &dest) {
                let _ = fs::remove_file(&temp);
                return Err(e.into());
            }
        }
        if let Some(body) = body {
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&body);
        }
        for index in self.index_paths(&id, &record) {
            append_id(&index, &id)?;
        }
        tracing::debug!(record = %id, url = %record.url, "stored witness record");
        self.tell(Kept::Record { id: id.clone(), body });
        Ok(id)
    }

    /// The index files a record belongs in.
    fn index_paths(&self, id: &str, record: &Record) -> Vec<PathBuf> {
        let mut paths = vec![self.url_index_path(&record.url)];
        if let Some(build) = &record.build {
            match build.parsed_output_hash() {
                Ok(hash) => paths.push(self.hash_index_path(&hash)),
                Err(e) => tracing::warn!(
                    record = %id, output_hash = %build.output_hash, error = %e,
                    "declared output hash not understood; record not indexed by hash"
                ),
            }
        }
        paths
    }

    /// The record of this id, `None` if there is none.
    pub fn record(&self, id: &str) -> Result<Option<Record>> {
        if ObjectId::from_str(id).is_err() {
            return Err(ArchiveError::BadId(id.escape_debug().to_string()));
        }
        let path = self.trace_path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ArchiveError::Io { action: "read", path, source: e }),
        };
        Record::from_cbor(&bytes).map(Some).map_err(|source| ArchiveError::BadTrace { path, source })
    }

    /// The records made for this URL (given with or without credentials),
    /// in the order they were stored.
    pub fn records_for_url(&self, url: &str) -> Result<Vec<StoredRecord>> {
        self.records_in(&self.url_index_path(url))
    }

    /// The records made for fixed-output derivations that declared this
    /// output hash (in whichever form they wrote it), in the order they
    /// were stored.
    pub fn records_for_hash(&self, hash: &Hash) -> Result<Vec<StoredRecord>> {
        self.records_in(&self.hash_index_path(hash))
    }

    fn records_in(&self, index: &Path) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        for id in read_ids(index)? {
            // Gone since it was indexed (gc): skipped.
            if let Some(record) = self.record(&id)? {
                out.push(StoredRecord { id, record });
            }
        }
        Ok(out)
    }

    /// Every record, oldest first (by start time, then id). An unreadable
    /// trace is skipped with a warning; [`Archive::verify`] reports it.
    pub fn all_records(&self) -> Result<Vec<StoredRecord>> {
        let (records, bad) = self.scan_traces()?;
        for (path, error) in bad {
            tracing::warn!(path = %path.display(), %error, "unreadable trace skipped");
        }
        Ok(records)
    }

    /// Every trace: the readable ones sorted, and the paths of those that
    /// are not, with why.
    fn scan_traces(&self) -> Result<(Vec<StoredRecord>, Vec<Unreadable>)> {
        let entries = fs::read_dir(&self.traces).map_err(io_error("list traces in", &self.traces))?;
        let mut records = Vec::new();
        let mut bad = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list traces in", &self.traces))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(id) =
                name.to_str().and_then(|n| n.strip_suffix(".cbor")).filter(|id| ObjectId::from_str(id).is_ok())
            else {
                tracing::warn!(path = %path.display(), "not a trace name; ignored");
                continue;
            };
            match self.record(id) {
                Ok(Some(record)) => records.push(StoredRecord { id: id.to_owned(), record }),
                Ok(None) => {} // removed meanwhile
                Err(e) => bad.push((path, e.to_string())),
            }
        }
        records.sort_by(|a, b| (a.record.started_ms, &a.id).cmp(&(b.record.started_ms, &b.id)));
        Ok((records, bad))
    }

    /// Removes the records `keep` refuses, the kept outputs no remaining
    /// record's build declares, and then every object nothing remaining
    /// names (but a body whose record is on its way), and rewrites the
    /// record indexes. Refuses to run while a trace is unreadable,
    /// since the objects it names cannot be known. Writers wait meanwhile.
    pub fn gc(&self, keep: impl Fn(&Record) -> bool) -> Result<GcReport> {
        self.collect(keep, false)
    }

    /// What [`Archive::gc`] would do with the same `keep`, doing nothing:
    /// the same refusal while a trace is unreadable, the same counts.
    pub fn gc_dry_run(&self, keep: impl Fn(&Record) -> bool) -> Result<GcReport> {
        self.collect(keep, true)
    }

    fn collect(&self, keep: impl Fn(&Record) -> bool, dry_run: bool) -> Result<GcReport> {
        let _alone = self.maintenance.write().unwrap_or_else(PoisonError::into_inner);
        let (records, bad) = self.scan_traces()?;
        if let Some((path, error)) = bad.into_iter().next() {
            return Err(ArchiveError::GcBlocked { path, error });
        }
        let (kept, dropped): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| keep(&r.record));
        let mut report = GcReport { records_kept: kept.len(), records_removed: dropped.len(), ..GcReport::default() };

        // Records first: a crash after this leaves unnamed objects, which
        // the next gc removes, never a record without its body.
        if !dry_run {
            for r in &dropped {
                let path = self.trace_path(&r.id);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ArchiveError::Io { action: "remove trace", path, source: e }),
                }
                tracing::debug!(record = %r.id, url = %r.record.url, "gc removed record");
            }
        }

        let objects = self.cas.list()?;
        let mut named: HashSet<ObjectId> = self.pending.lock().unwrap_or_else(PoisonError::into_inner).clone();
        named.extend(kept.iter().filter_map(|r| body_id(&r.record)));
        named.extend(self.collect_outputs(&kept, dry_run)?);
        for id in objects {
            if named.contains(&id) {
                report.objects_kept += 1;
                continue;
            }
            let Some(size) = self.cas.size(&id)? else { continue };
            if dry_run || self.cas.remove(&id)? {
                report.objects_removed += 1;
                report.bytes_freed += size;
                tracing::debug!(object = %id, size, dry_run, "gc removed object");
            }
        }
        if dry_run {
            return Ok(report);
        }

        self.rebuild_indexes(&kept)?;
        tracing::info!(?report, "witness archive gc done");
        Ok(report)
    }

    /// Rewrites every index from the traces (after a crash left a record
    /// unindexed); returns how many records were indexed.
    pub fn reindex(&self) -> Result<usize> {
        let _alone = self.maintenance.write().unwrap_or_else(PoisonError::into_inner);
        let (records, _) = self.scan_traces()?;
        self.rebuild_indexes(&records)?;
        Ok(records.len())
    }

    /// Replaces the index files with ones listing exactly `records`.
    fn rebuild_indexes(&self, records: &[StoredRecord]) -> Result<()> {
        let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
        for r in records {
            for index in self.index_paths(&r.id, &r.record) {
                let lines = files.entry(index).or_default();
                lines.push_str(&r.id);
                lines.push('\n');
            }
        }
        for dir in [&self.url_index, &self.hash_index] {
            let entries = fs::read_dir(dir).map_err(io_error("list index", dir))?;
            for entry in entries {
                let path = entry.map_err(io_error("list index", dir))?.path();
                if !files.contains_key(&path) {
                    fs::remove_file(&path).map_err(io_error("remove index", &path))?;
                }
            }
        }
        for (path, lines) in files {
            if fs::read(&path).is_ok_and(|old| old == lines.as_bytes()) {
                continue;
            }
            let (mut file, temp) = cas::create_temp_file(&self.tmp, "index")?;
            let written = file
                .write_all(lines.as_bytes())
                .and_then(|()| file.sync_all())
                .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o644)))
                .and_then(|()| fs::rename(&temp, &path));
            if let Err(e) = written {
                let _ = fs::remove_file(&temp);
                return Err(ArchiveError::Io { action: "rewrite index", path, source: e });
            }
        }
        Ok(())
    }

    /// Recomputes every object's hash and checks every record: readable,
    /// named after itself, its body an existing object of the recorded
    /// size, listed in its indexes.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let (records, bad) = self.scan_traces()?;
        for (path, error) in bad {
            report.problems.push(Problem::UnreadableTrace { path, error });
        }
        report.records_checked = records.len();

        let mut named_by: HashMap<ObjectId, Vec<String>> = HashMap::new();
        let mut indexes: HashMap<PathBuf, HashSet<String>> = HashMap::new();
        for r in &records {
            let actual_id = r.record.id();
            if actual_id != r.id {
                report.problems.push(Problem::MisnamedTrace { path: self.trace_path(&r.id), id: actual_id });
            }
            if let Some(body) = &r.record.body {
                match ObjectId::from_str(&body.sha256) {
                    Ok(object) => {
                        named_by.entry(object).or_default().push(r.id.clone());
                        match self.cas.size(&object)? {
                            None => report.problems.push(Problem::MissingBody { record: r.id.clone(), object }),
                            Some(actual) if actual != body.size => report.problems.push(Problem::BodySizeMismatch {
                                record: r.id.clone(),
                                object,
                                recorded: body.size,
                                actual,
                            }),
                            Some(_) => {}
                        }
                    }
                    Err(_) => {
                        report.problems.push(Problem::BadBodyName { record: r.id.clone(), body: body.sha256.clone() })
                    }
                }
            }
            for index in self.index_paths(&r.id, &r.record) {
                if !indexes.contains_key(&index) {
                    let ids = read_ids(&index)?.into_iter().collect();
                    indexes.insert(index.clone(), ids);
                }
                if !indexes[&index].contains(&r.id) {
                    report.problems.push(Problem::NotIndexed { record: r.id.clone(), index });
                }
            }
        }

        for id in self.cas.list()? {
            report.objects_checked += 1;
            match self.cas.verify(&id) {
                Ok(()) => {}
                Err(CasError::Tampered { actual, .. }) => report.problems.push(Problem::TamperedObject {
                    id,
                    actual,
                    records: named_by.get(&id).cloned().unwrap_or_default(),
                }),
                // Removed since it was listed: not a problem of the archive.
                Err(CasError::Missing { .. }) => report.objects_checked -= 1,
                Err(e) => report.problems.push(Problem::UnreadableObject { id, error: e.to_string() }),
            }
        }
        for problem in &report.problems {
            tracing::warn!(%problem, "witness archive problem");
        }
        Ok(report)
    }

    /// Every record, as [`Archive::all_records`], and the traces that could
    /// not be read, with why (which `all_records` only warns of).
    pub fn scan_records(&self) -> Result<(Vec<StoredRecord>, Vec<Unreadable>)> {
        self.scan_traces()
    }

    /// Every output index entry: the declared hash, its mode and the object
    /// it names, sorted by entry name. An entry whose name is not
    /// `{mode}-{algo}-{hex}` or that names no object is skipped with a
    /// warning.
    pub fn outputs(&self) -> Result<Vec<(Hash, OutputMode, ObjectId)>> {
        let dir = &self.output_index;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error("list index", dir))? {
            names.push(entry.map_err(io_error("list index", dir))?.file_name());
        }
        names.sort();
        let mut outputs = Vec::new();
        for name in names {
            let parsed = name.to_str().and_then(|key| {
                let (mode, rest) = key.split_once('-')?;
                let mode = [OutputMode::Flat, OutputMode::Recursive].into_iter().find(|m| m.to_string() == mode)?;
                let (algo, hex) = rest.split_once('-')?;
                let hash = Hash::parse_digest(hex, algo.parse().ok()?, false).ok()?;
                (output_key(&hash, mode) == key).then_some((hash, mode))
            });
            let path = dir.join(&name);
            match parsed {
                Some((hash, mode)) => outputs.extend(read_output_id(&path)?.map(|id| (hash, mode, id))),
                None => tracing::warn!(path = %path.display(), "not an output index entry name; ignored"),
            }
        }
        Ok(outputs)
    }
}

impl Witness for Archive {
    fn body(&self) -> io::Result<Box<dyn BodyWriter>> {
        Ok(Box::new(ArchiveBody {
            writer: self.cas.writer()?,
            pending: self.pending.clone(),
            maintenance: self.maintenance.clone(),
        }))
    }

    fn record(&self, record: &Record) -> io::Result<String> {
        Ok(self.put_record(record)?)
    }

    fn replay(&self, url: &str) -> io::Result<Option<Replay>> {
        Ok(self.replay_for(url)?)
    }
}

impl Archive {
    /// What a proxy can answer a GET of `url` (redacted or not) with: the
    /// newest record of that URL that is a complete GET, not itself a
    /// replay, answered either 200 with a body the CAS has (opened for
    /// reading: [`Cas::get`] checks the bytes as they are read) or with a
    /// redirect whose target was not redacted.
    pub fn replay_for(&self, url: &str) -> Result<Option<Replay>> {
        for id in read_ids(&self.url_index_path(url))?.into_iter().rev() {
            // Gone since it was indexed (gc): skipped.
            let Some(record) = self.record(&id)? else { continue };
            if record.method != "GET" || record.error.is_some() || record.replayed_from.is_some() {
                continue;
            }
            match record.status {
                Some(200) => {
                    let Some(object) = body_id(&record) else { continue };
                    if let Some(body) = self.cas.get(&object)? {
                        return Ok(Some(Replay { id, record, body: Some(body) }));
                    }
                }
                Some(301 | 302 | 303 | 307 | 308)
                    if record.location.as_deref().is_some_and(|l| !l.contains(REDACTED)) =>
                {
                    return Ok(Some(Replay { id, record, body: None }));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// A body on its way into the archive's CAS.
struct ArchiveBody {
    writer: Box<dyn cas::CasWriter>,
    pending: Arc<Mutex<HashSet<ObjectId>>>,
    maintenance: Arc<RwLock<()>>,
}

impl Write for ArchiveBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl BodyWriter for ArchiveBody {
    fn commit(self: Box<Self>) -> io::Result<(String, u64)> {
        let ArchiveBody { writer, pending, maintenance } = *self;
        // Committed and marked pending as one step, so that a gc cannot
        // see the object before it is marked.
        let _writing = maintenance.read().unwrap_or_else(PoisonError::into_inner);
        let (id, size) = writer.commit()?;
        pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
        Ok((id.to_hex(), size))
    }
}

/// The record with its URLs redacted and credential headers dropped.
fn sanitize(record: &Record) -> Record {
    let mut clean = record.clone();
    clean.url = redact_url(&clean.url);
    clean.location = clean.location.as_deref().map(redact_url);
    clean.redirected_from = clean.redirected_from.as_deref().map(redact_url);
    clean.headers = std::mem::take(&mut clean.headers)
        .into_iter()
        .filter_map(|(name, value)| redact_header(&name, &value).map(|value| (name, value)))
        .collect();
    if clean != *record {
        tracing::warn!(url = %clean.url, "record carried credentials; redacted before storing");
    }
    clean
}

fn body_id(record: &Record) -> Option<ObjectId> {
    record.body.as_ref().and_then(|b| ObjectId::from_str(&b.sha256).ok())
}

/// Appends `id` as a line of its own. A torn last line (a crash mid-append)
/// is ended first, so that it stays one unreadable line and does not eat
/// this one.
fn append_id(path: &Path, id: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(io_error("open index", path))?;
    let len = file.metadata().map_err(io_error("stat index", path))?.len();
    let mut line = String::with_capacity(id.len() + 2);
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1).map_err(io_error("read index", path))?;
        if last[0] != b'\n' {
            tracing::warn!(path = %path.display(), "index ends in a torn line; ending it");
            line.push('\n');
        }
    }
    line.push_str(id);
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io_error("append to index", path))
}

/// The object an output index entry names: one whole line of 64 lower-case
/// hex digits; `None` when there is no entry (or, with a warning, when it
/// is not one).
fn read_output_id(path: &Path) -> Result<Option<ObjectId>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ArchiveError::Io { action: "read index", path: path.to_owned(), source: e }),
    };
    let id = bytes
        .strip_suffix(b"\n")
        .and_then(|line| std::str::from_utf8(line).ok())
        .and_then(|line| ObjectId::from_str(line).ok());
    if id.is_none() {
        tracing::warn!(path = %path.display(), "output index entry is not an object id; ignored");
    }
    Ok(id)
}

/// The ids an index lists, first appearance first: whole lines of 64
/// lower-case hex digits only.
fn read_ids(path: &Path) -> Result<Vec<String>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ArchiveError::Io { action: "read index", path: path.to_owned(), source: e }),
    };
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let mut lines = bytes.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let whole = lines.peek().is_some(); // the piece after the last newline is unended
        let id = std::str::from_utf8(line).ok().filter(|s| ObjectId::from_str(s).is_ok());
        match id {
            Some(id) if whole => {
                if seen.insert(id) {
                    ids.push(id.to_owned());
                }
            }
            _ if line.is_empty() => {}
            _ => tracing::warn!(path = %path.display(), "skipped a torn or foreign index line"),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_count_only_when_whole() {
        let dir = testkit::TempDir::new();
        let path = dir.path().join("index");
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        fs::write(&path, format!("{a}\nnot an id\n{a}\n{}", &b[..20])).unwrap();
        assert_eq!(read_ids(&path).unwrap(), std::slice::from_ref(&a));
        // The next append ends the torn line before its own.
        append_id(&path, &b).unwrap();
        assert_eq!(read_ids(&path).unwrap(), [a.clone(), b.clone()]);
        // A full id without its newline is torn too.
        fs::write(&path, format!("{a}\n{b}")).unwrap();
        assert_eq!(read_ids(&path).unwrap(), [a]);
        assert!(read_ids(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn problems_read_as_one_line() {
        let id = ObjectId::of(b"a");
        let actual = ObjectId::of(b"b");
        let p = Problem::TamperedObject { id, actual, records: vec!["r1".into()] };
        assert_eq!(p.to_string(), format!("object {id} is tampered: its bytes hash to {actual} (body of record r1)"));
    }
}
