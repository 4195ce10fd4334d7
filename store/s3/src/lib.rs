//! One S3 bucket, behind a blocking API: what armitage's binary cache
//! (`s3://` substituters and `nix copy --to s3://…`), the witness CAS and
//! the upload queue put on S3-compatible servers (AWS, R2, Garage, MinIO).
//!
//! - `url`: [`S3Url`], `s3://bucket?region=…&endpoint=…&scheme=…&profile=…`
//!   as CppNix spells it (src/libstore/s3-binary-cache-store.cc);
//! - `credentials`: [`Credentials`] from a file armitage's configuration
//!   names, the `AWS_*` environment, or `~/.aws/credentials`;
//! - `runtime`: the process's one tokio runtime for S3 requests, and how
//!   blocking callers wait on it;
//! - `error`: [`Error`], one line naming the request, the key and why;
//! - `bucket`: [`Bucket`] (head, get, put, copy, delete, list);
//! - `body`: a GET's body as a blocking reader, one chunk read ahead;
//! - `upload`: [`Upload`], an object written as it streams past: one PUT up
//!   to the part size, multipart with parts in flight above it.
//!
//! aws-sdk-s3 is async; its calls run on the runtime while the caller's
//! thread waits, so the API here can be called from any thread, including
//! a tokio worker (which is then blocked for the call: async callers use
//! `spawn_blocking`).

mod body;
mod bucket;
mod credentials;
mod error;
mod runtime;
mod upload;
mod url;

pub use bucket::{Bucket, Listed, Tuning};
pub use credentials::{Credentials, set_credentials_file};
pub use error::Error;
pub use upload::Upload;
pub use url::S3Url;
