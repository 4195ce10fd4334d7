//! Answering from the witness instead of the upstream: when the proxy is
//! offline, or the upstream failed a GET or HEAD (no connection, a
//! timeout, a 4xx or 5xx answer). The witness names the newest earlier
//! record of the URL that can be replayed ([`Witness::replay`]): a 200 is
//! answered with its recorded headers (type, entity tag, date, encoding),
//! its length and its body from the CAS, checked as it streams and
//! aborted if it does not hash to its name ([`ObjectBody`]); a redirect
//! with its status and target. Every such answer carries
//! `x-armitage-witness: replayed <record id>` and leaves a record of its
//! own naming the record it replayed ([`Record::replayed_from`]) and why.
//!
//! [`Witness::replay`]: crate::sink::Witness::replay

use super::body::{self, ProxyBody};
use super::records;
use super::redirects::Link;
use super::shared::Scope;
use crate::object_body::ObjectBody;
use crate::record::{Body as BodyRecord, Record};
use crate::sink::Replay;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};

/// The header naming the record a replayed answer comes from.
pub(super) const WITNESS_HEADER: &str = "x-armitage-witness";

/// The recorded response headers a replay sends again.
const REPLAYED_HEADERS: [&str; 4] = ["content-type", "etag", "last-modified", "content-encoding"];

/// Answers `method` to `record.url` when the proxy is offline: from the
/// witness, or a 504 saying why not.
pub(super) async fn offline(scope: &Scope, record: Record, method: &Method) -> Response<ProxyBody> {
    let why = if !replayable(method) {
        format!("offline: {method} is never answered from the witness, only GET and HEAD")
    } else {
        match answer(scope, &record, method, "the proxy is offline".to_owned()).await {
            Ok(Some(response)) => return response,
            Ok(None) => format!("offline: {} was never witnessed", record.url),
            Err(why) => format!("offline: {why}"),
        }
    };
    records::keep_failure(&*scope.shared.witness, record, why.clone());
    body::error(StatusCode::GATEWAY_TIMEOUT, &why)
}

/// An answer from the witness in place of the upstream's, which failed
/// `why`; `None` when there is none (the caller answers as it would have).
pub(super) async fn instead(
    scope: &Scope,
    record: &Record,
    method: &Method,
    why: String,
) -> Option<Response<ProxyBody>> {
    if !replayable(method) {
        return None;
    }
    match answer(scope, record, method, why).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(url = %record.url, "no replay: {e}");
            None
        }
    }
}

fn replayable(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The witness's answer to `method` (GET or HEAD) of `base.url`, replayed
/// because of `reason`; `Ok(None)` when it has none, `Err` when it cannot
/// be asked.
async fn answer(
    scope: &Scope,
    base: &Record,
    method: &Method,
    reason: String,
) -> Result<Option<Response<ProxyBody>>, String> {
    let witness = scope.shared.witness.clone();
    let url = base.url.clone();
    let found = tokio::task::spawn_blocking(move || witness.replay(&url)).await;
    let replay = match found {
        Ok(Ok(Some(replay))) => replay,
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(e)) => return Err(format!("cannot look {} up in the witness: {e}", base.url)),
        Err(e) => return Err(format!("looking {} up in the witness failed: {e}", base.url)),
    };
    let Some(status) = replay.record.status.and_then(|s| StatusCode::from_u16(s).ok()) else {
        return Err(format!("the witness offered record {} of {}, which has no status", replay.id, base.url));
    };
    tracing::info!(url = %base.url, from = %replay.id, %status, "replaying from the witness: {reason}");

    let mut record = base.clone();
    record.status = Some(status.as_u16());
    record.replayed_from = Some(replay.id.clone());
    record.replay_reason = Some(reason);
    let Replay { id, record: earlier, body } = replay;
    let mut sent: Vec<(String, String)> =
        earlier.headers.iter().filter(|(name, _)| REPLAYED_HEADERS.contains(&name.as_str())).cloned().collect();

    let witness = scope.shared.witness.clone();
    let mut response = match (earlier.body, body) {
        (Some(kept), Some(reader)) if status == StatusCode::OK => {
            sent.push(("content-length".to_owned(), kept.size.to_string()));
            record.headers = sent.clone();
            if method == Method::HEAD {
                records::keep(&*witness, record);
                body::empty(status)
            } else {
                let (size, object) = (kept.size, kept.sha256.clone());
                let on_end = Box::new(move |outcome: Result<(), String>| {
                    match outcome {
                        Ok(()) => record.body = Some(BodyRecord { size, sha256: kept.sha256 }),
                        Err(why) => record.error = Some(format!("the replay broke off: {why}")),
                    }
                    records::keep(&*witness, record);
                });
                let body = ObjectBody::new(reader, object, size, scope.shared.limits.stall_timeout, on_end);
                let mut response = Response::new(body.boxed_unsync());
                *response.status_mut() = status;
                response
            }
        }
        (_, None) if status.is_redirection() && earlier.location.is_some() => {
            let location = earlier.location.unwrap_or_default();
            sent.push(("content-length".to_owned(), "0".to_owned()));
            record.headers = sent.clone();
            record.location = Some(location.clone());
            let link = Link { from: record.url.clone(), hop: record.redirect_hop.saturating_add(1) };
            scope.shared.redirects.link(scope.redirect_scope(), location.clone(), link);
            sent.push(("location".to_owned(), location));
            records::keep(&*witness, record);
            body::empty(status)
        }
        _ => return Err(format!("the witness offered record {id} of {}, which cannot be replayed", base.url)),
    };
    let headers = response.headers_mut();
    for (name, value) in sent {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::debug!(record = %id, "a recorded header cannot be sent again: {name}: {value:?}"),
        }
    }
    if let Ok(value) = HeaderValue::from_str(&format!("replayed {id}")) {
        headers.insert(HeaderName::from_static(WITNESS_HEADER), value);
    }
    Ok(Some(response))
}
