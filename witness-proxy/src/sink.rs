//! What the proxy hands what it sees to. The proxy knows nothing of where
//! records and bodies go; [`crate::archive::Archive`] is the implementation
//! that keeps them on disk, tests may use others.
//!
//! Calls are blocking and short (local file writes of one chunk): the proxy
//! makes them from its tasks directly.

use crate::record::Record;
use std::io;

/// A place for bodies and records.
pub trait Witness: Send + Sync + 'static {
    /// Starts keeping one response body, written as it passes.
    fn body(&self) -> io::Result<Box<dyn BodyWriter>>;
    /// Keeps one exchange's record (its body committed or dropped before);
    /// returns the record's id (sha256 of its canonical CBOR, hex).
    fn record(&self, record: &Record) -> io::Result<String>;
}

/// A body being written. Dropping it without [`BodyWriter::commit`]
/// discards what was written: nothing half-written is ever visible.
pub trait BodyWriter: io::Write + Send {
    /// The body is complete: keep it under its sha256. Returns the sha256
    /// (lower-case hex) and the size.
    fn commit(self: Box<Self>) -> io::Result<(String, u64)>;
}
