//! What the proxy hands what it sees to, and asks for what it saw before.
//! The proxy knows nothing of where records and bodies go;
//! [`crate::archive::Archive`] is the implementation that keeps them on
//! disk, tests may use others.
//!
//! Calls are blocking and short (local file writes of one chunk, a few
//! small files read): the proxy makes them from its tasks directly, or on
//! a blocking thread where they may read more ([`Witness::replay`] and the
//! body it returns).

use crate::record::Record;
use std::io::{self, Read};

/// A place for bodies and records.
pub trait Witness: Send + Sync + 'static {
    /// Starts keeping one response body, written as it passes.
    fn body(&self) -> io::Result<Box<dyn BodyWriter>>;
    /// Keeps one exchange's record (its body committed or dropped before);
    /// returns the record's id (sha256 of its canonical CBOR, hex).
    fn record(&self, record: &Record) -> io::Result<String>;
    /// What the proxy may answer a GET of `url` (redacted) with when it
    /// does not ask the upstream (offline) or the upstream fails: the
    /// newest earlier record of that URL that a replay can serve, if any.
    /// A witness that keeps nothing to replay answers `None`, the default.
    fn replay(&self, url: &str) -> io::Result<Option<Replay>> {
        let _ = url;
        Ok(None)
    }
}

/// A body being written. Dropping it without [`BodyWriter::commit`]
/// discards what was written: nothing half-written is ever visible.
pub trait BodyWriter: io::Write + Send {
    /// The body is complete: keep it under its sha256. Returns the sha256
    /// (lower-case hex) and the size.
    fn commit(self: Box<Self>) -> io::Result<(String, u64)>;
}

/// An earlier exchange the proxy can answer with again: a 200 whose body
/// the witness still has, or a redirect.
pub struct Replay {
    /// The earlier record's id.
    pub id: String,
    /// The earlier record: its status, headers and [`Record::body`] (size
    /// and sha256) are what the replay answers with.
    pub record: Record,
    /// A 200's body, read through a reader that checks the bytes against
    /// [`Record::body`]'s sha256 as they pass and fails at the end of the
    /// stream if they do not match ([`crate::cas::Cas::get`]'s contract);
    /// `None` for a redirect.
    pub body: Option<Box<dyn Read + Send>>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").field("id", &self.id).field("status", &self.record.status).finish_non_exhaustive()
    }
}
