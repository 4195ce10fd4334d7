//! Making and keeping the proxy's records: one per exchange, begun when
//! the request arrives and handed to the witness when it ends, whichever
//! way it ends. URLs are redacted before they enter a record.

use crate::record::{BuildRef, Record};
use crate::redact::redact_url;
use crate::sink::Witness;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A record of a request to `url` (not yet redacted), started now.
pub(super) fn begin(url: &str, method: &str, build: Option<&BuildRef>) -> Record {
    Record::new(redact_url(url), method, build.cloned(), now_ms())
}

/// Ends `record` now and hands it to the witness; a witness that cannot
/// keep it is logged, the exchange goes on.
pub(super) fn keep(witness: &dyn Witness, mut record: Record) {
    record.ended_ms = now_ms();
    match &record.error {
        Some(why) => tracing::info!(method = %record.method, url = %record.url, status = ?record.status, "{why}"),
        None => tracing::debug!(method = %record.method, url = %record.url, status = ?record.status, "exchange"),
    }
    if let Err(e) = witness.record(&record) {
        tracing::error!(url = %record.url, "cannot keep the record of an exchange: {e}");
    }
}

/// A record of an exchange that failed before any response: `why`.
pub(super) fn keep_failure(witness: &dyn Witness, mut record: Record, why: String) {
    record.error = Some(why);
    keep(witness, record);
}

/// An error and its sources on one line (hyper's own text is terse:
/// "connection error"; the cause is in its source).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
