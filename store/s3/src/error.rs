//! Why an S3 operation failed, in one line: the request, the key, the
//! bucket and the reason (the server's, or the connection's root cause).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("'{url}' is not an S3 URL: {why}")]
    BadUrl { url: String, why: String },
    #[error("S3 credentials: {0}")]
    Credentials(String),
    #[error("cannot {op}{} {at}: {why}", quoted(key))]
    Request {
        op: &'static str,
        key: String,
        /// The bucket and where it is.
        at: String,
        why: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// The server could not be reached or answered 5xx: worth trying
        /// again later (the SDK already retried with backoff).
        unavailable: bool,
    },
    #[error("cannot read '{key}' from {at}: {why}")]
    Body { key: String, at: String, why: String },
}

impl Error {
    /// Whether trying again later may succeed: the server was down or
    /// overloaded, not refusing.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Request { unavailable, .. } => *unavailable,
            Error::Body { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Request { status, .. } => *status,
            _ => None,
        }
    }

    pub(crate) fn request<E>(op: &'static str, key: &str, at: &str, err: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let (why, unavailable) = match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                (format!("the server cannot be reached: {}", root_cause(&err)), true)
            }
            SdkError::ServiceError(service) => {
                let e = service.err();
                let why = match (e.code(), status) {
                    (Some("NoSuchBucket"), _) => "the bucket does not exist".to_owned(),
                    (Some(code @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied")), _) => {
                        format!("access denied ({code}: check the credentials)")
                    }
                    (None, Some(403)) => "access denied (HTTP 403: check the credentials)".to_owned(),
                    (Some("NotFound") | None, Some(404)) if key.is_empty() => "the bucket does not exist".to_owned(),
                    (Some(code), _) => match e.message() {
                        Some(message) => format!("{code}: {message}"),
                        None => code.to_owned(),
                    },
                    (None, Some(status)) => format!("HTTP {status}"),
                    (None, None) => root_cause(&err),
                };
                (why, status.is_some_and(|s| s >= 500))
            }
            _ => (root_cause(&err), status.is_some_and(|s| s >= 500)),
        };
        Error::Request { op, key: key.to_owned(), at: at.to_owned(), why, status, unavailable }
    }
}

/// `'key' in` for a request about one key; `` for one about the bucket.
fn quoted(key: &str) -> String {
    if key.is_empty() { String::new() } else { format!(" '{key}' in") }
}

/// The innermost error's message ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut at = err;
    while let Some(inner) = at.source() {
        at = inner;
    }
    at.to_string()
}
