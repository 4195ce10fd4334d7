//! The witness proxy's content-addressed store: response bodies kept as
//! objects named by the sha256 of their bytes.
//!
//! The contract every backend keeps, checked once for all of them by
//! `tests/cas_conformance.rs`:
//!
//! - an object becomes visible only once complete and under the name its
//!   bytes hash to ([`CasWriter::commit`]); a writer dropped before that, or
//!   a process killed while writing, leaves nothing under any name;
//! - what [`Cas::get`] hands out is checked as it is read: bytes that do not
//!   hash to the name end in an error at end of stream, never in a clean EOF
//!   ([`VerifyingReader`]);
//! - putting the same bytes twice, even at once, succeeds both times;
//! - an operation a backend cannot do answers [`CasError::Unsupported`].
//!
//! Modules, leaves first: `id` ([`ObjectId`]), `backend` (the [`Cas`] and
//! [`CasWriter`] traits, [`CasError`]), `verify` ([`VerifyingReader`]),
//! `local` ([`LocalCas`], a directory), `s3` ([`S3Cas`], a bucket), `tiered`
//! ([`Tiered`], a local CAS in front of a remote one).

mod backend;
mod id;
mod local;
mod s3;
mod tiered;
mod verify;

pub use backend::{Cas, CasError, CasWriter, Result};
pub use id::{ObjectId, ObjectIdError};
pub use local::{LocalCas, STALE_TEMP_AGE};
pub(crate) use local::{create_temp_file, persist, remove_stale_temp_files};
pub use s3::S3Cas;
pub use tiered::Tiered;
pub use verify::VerifyingReader;
