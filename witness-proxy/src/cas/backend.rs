//! The seam every object store sits behind: [`Cas`] (put, get, has, list,
//! remove), [`CasWriter`] (an object written as it streams past, visible
//! only once committed) and their one error type, [`CasError`].
//!
//! The traits are blocking and object-safe, so that the proxy and the
//! archive hold an `Arc<dyn Cas>` without knowing the backend.

use super::id::ObjectId;
use std::io::{self, Read, Write};
use std::path::PathBuf;

pub type Result<T, E = CasError> = std::result::Result<T, E>;

/// Why a CAS operation failed. Each names the object and, for a local
/// file, the path.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error("object {id} is tampered: its bytes hash to {actual}")]
    Tampered { id: ObjectId, actual: ObjectId },
    #[error("object written as {expected} hashes to {actual}; it was not kept")]
    Mismatch { expected: ObjectId, actual: ObjectId },
    #[error("object {id} is not in the CAS")]
    Missing { id: ObjectId },
    #[error("the {backend} CAS cannot {op}")]
    Unsupported { backend: &'static str, op: &'static str },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: String, path: PathBuf, source: io::Error },
    #[error("cannot write {what}: {source}")]
    Write { what: String, source: io::Error },
    #[error("cannot read object {id}: {source}")]
    Read { id: ObjectId, source: io::Error },
    #[error("cannot read the bytes to store: {0}")]
    Source(io::Error),
    #[error(transparent)]
    S3(#[from] ::s3::Error),
}

impl CasError {
    /// The `CasError` an `io::Error` from a CAS reader or writer carries,
    /// if any (a [`super::VerifyingReader`]'s [`CasError::Tampered`], a
    /// writer's [`CasError::Io`] with its path).
    pub fn in_io(err: &io::Error) -> Option<&CasError> {
        err.get_ref().and_then(|e| e.downcast_ref::<CasError>())
    }

    /// Unwraps the `CasError` an `io::Error` carries, or makes one of a
    /// bare `io::Error` with `otherwise`.
    pub(crate) fn from_io(err: io::Error, otherwise: impl FnOnce(io::Error) -> CasError) -> CasError {
        let kind = err.kind();
        if CasError::in_io(&err).is_none() {
            return otherwise(err);
        }
        match err.into_inner().map(|inner| inner.downcast::<CasError>()) {
            Some(Ok(cas)) => *cas,
            Some(Err(inner)) => otherwise(io::Error::new(kind, inner)),
            None => otherwise(io::Error::from(kind)),
        }
    }

    fn kind(&self) -> io::ErrorKind {
        match self {
            CasError::Tampered { .. } | CasError::Mismatch { .. } => io::ErrorKind::InvalidData,
            CasError::Missing { .. } => io::ErrorKind::NotFound,
            CasError::Unsupported { .. } => io::ErrorKind::Unsupported,
            CasError::Io { source, .. }
            | CasError::Write { source, .. }
            | CasError::Read { source, .. }
            | CasError::Source(source) => source.kind(),
            CasError::S3(e) if e.is_unavailable() => io::ErrorKind::ConnectionRefused,
            CasError::S3(_) => io::ErrorKind::Other,
        }
    }
}

/// Carries the whole `CasError` ([`CasError::in_io`] gets it back).
impl From<CasError> for io::Error {
    fn from(err: CasError) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

/// An object store whose names are the sha256 of the contents.
pub trait Cas: Send + Sync {
    /// The backend's name and place, for messages (`local CAS at /var/...`).
    fn describe(&self) -> String;

    /// Starts an object written as it streams past.
    fn writer(&self) -> Result<Box<dyn CasWriter>>;

    /// Stores everything `reader` yields; returns its name and size.
    fn put(&self, reader: &mut dyn Read) -> Result<(ObjectId, u64)> {
        let mut writer = self.writer()?;
        copy_into(reader, writer.as_mut())?;
        writer.commit()
    }

    /// Stores everything `reader` yields if it hashes to `expected`;
    /// otherwise answers [`CasError::Mismatch`] and nothing becomes
    /// visible. Returns the size.
    fn put_expected(&self, reader: &mut dyn Read, expected: &ObjectId) -> Result<u64> {
        let mut writer = self.writer()?;
        copy_into(reader, writer.as_mut())?;
        writer.commit_expecting(expected)
    }

    /// The object's bytes, `None` if there is no such object. The reader
    /// hashes as it reads and, when the bytes do not hash to `id`, its read
    /// at end of stream fails with an `io::Error` carrying
    /// [`CasError::Tampered`] instead of returning 0.
    ///
    /// So a caller that streams the bytes on (to a client, into a file)
    /// must not treat what it passed on as valid until it has read to a
    /// clean end of stream; on that error it must fail what it was doing
    /// (drop the connection without completing the response, delete the
    /// file) rather than let a short or false body pass as good.
    fn get(&self, id: &ObjectId) -> Result<Option<Box<dyn Read + Send>>>;

    /// Reads the whole object and checks its hash: `Ok` when its bytes hash
    /// to `id`, [`CasError::Tampered`] when not, [`CasError::Missing`] when
    /// there is no such object.
    fn verify(&self, id: &ObjectId) -> Result<()> {
        let mut reader = self.get(id)?.ok_or(CasError::Missing { id: *id })?;
        match io::copy(&mut reader, &mut io::sink()) {
            Ok(_) => Ok(()),
            Err(e) => Err(CasError::from_io(e, |source| CasError::Read { id: *id, source })),
        }
    }

    /// Whether the object is there (its bytes are not checked).
    fn has(&self, id: &ObjectId) -> Result<bool>;

    /// The object's size in bytes, `None` if there is no such object.
    fn size(&self, id: &ObjectId) -> Result<Option<u64>>;

    /// Every object's name, sorted.
    fn list(&self) -> Result<Vec<ObjectId>>;

    /// Deletes the object; `false` if there was none.
    fn remove(&self, id: &ObjectId) -> Result<bool>;
}

/// An object being written. Nothing is visible under any name until
/// [`CasWriter::commit`]; dropping the writer discards what was written.
pub trait CasWriter: Write + Send {
    /// The object is complete: makes it visible, atomically, under the
    /// sha256 of what was written. Returns that name and the size.
    fn commit(self: Box<Self>) -> Result<(ObjectId, u64)>;

    /// As [`CasWriter::commit`] when what was written hashes to `expected`;
    /// otherwise discards it and answers [`CasError::Mismatch`].
    fn commit_expecting(self: Box<Self>, expected: &ObjectId) -> Result<u64>;
}

fn copy_into(reader: &mut dyn Read, writer: &mut dyn CasWriter) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CasError::Source(e)),
        };
        writer
            .write_all(&buf[..n])
            .map_err(|e| CasError::from_io(e, |source| CasError::Write { what: "the object".into(), source }))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cas_error_survives_the_trip_through_io_error() {
        let id = ObjectId::of(b"a");
        let actual = ObjectId::of(b"b");
        let io: io::Error = CasError::Tampered { id, actual }.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(
            matches!(CasError::in_io(&io), Some(CasError::Tampered { id: i, actual: a }) if *i == id && *a == actual)
        );
        assert!(matches!(CasError::from_io(io, CasError::Source), CasError::Tampered { .. }));
        let bare = io::Error::other("disk on fire");
        assert_eq!(
            CasError::from_io(bare, CasError::Source).to_string(),
            "cannot read the bytes to store: disk on fire"
        );
        let unsupported = CasError::Unsupported { backend: "s3", op: "list objects" };
        assert_eq!(unsupported.to_string(), "the s3 CAS cannot list objects");
        assert_eq!(io::Error::from(unsupported).kind(), io::ErrorKind::Unsupported);
    }
}
