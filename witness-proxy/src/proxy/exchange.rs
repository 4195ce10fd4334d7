//! One request forwarded and recorded: the request made fit for upstream
//! (origin-form, hop-by-hop headers gone, credentials passed on but never
//! recorded), sent on a fresh connection, and the response relayed through
//! a [`Tee`] that finishes the record. A 200 body (not HEAD's) is kept by
//! the witness; 206 and every other status is recorded without a body.
//! Redirects are relayed, not followed: their targets are linked so the
//! next hop's record names where it came from. Offline, or when the
//! upstream fails a GET or HEAD, the answer comes from the witness
//! ([`super::replay`]).

use super::body::{self, ProxyBody};
use super::config::Mode;
use super::records;
use super::redirects::{self, Link};
use super::replay;
use super::shared::Scope;
use super::target::Target;
use super::tee::Tee;
use super::upstream::Upstream;
use crate::redact::redact_url;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

/// Where the upstream request's `Host` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostHeader {
    /// The absolute-form target's authority (RFC 9112 section 3.2.2).
    FromTarget,
    /// The client's own, inside a tunnel; the CONNECT host when it sent none.
    FromClient,
}

/// Forwards `request` to `target` and answers with the upstream's response
/// (or the witness's replay, or a 502 saying why there is neither).
pub(super) async fn forward(
    scope: &Scope,
    request: Request<Incoming>,
    target: Target,
    host: HostHeader,
) -> Response<ProxyBody> {
    let shared = &scope.shared;
    let path = match request.uri().path_and_query().map(|p| p.as_str()) {
        Some(p) if p.starts_with('/') => p.to_owned(),
        _ => "/".to_owned(),
    };
    let url = target.url(&path);
    let method = request.method().clone();
    let mut record = records::begin(&url, method.as_str(), scope.build.as_deref());
    if let Some(link) = shared.redirects.take(scope.redirect_scope(), &url) {
        record.redirected_from = Some(link.from);
        record.redirect_hop = link.hop;
    }
    if method == Method::CONNECT {
        let why = "CONNECT inside a tunnel is not served";
        records::keep_failure(&*shared.witness, record, why.to_owned());
        return body::error(StatusCode::METHOD_NOT_ALLOWED, why);
    }
    if shared.mode() == Mode::Offline {
        return replay::offline(scope, record, &method).await;
    }

    let (mut parts, request_body) = request.into_parts();
    parts.uri = match Uri::try_from(path.as_str()) {
        Ok(uri) => uri,
        Err(e) => {
            let why = format!("the request target is not a URI path: {e}");
            records::keep_failure(&*shared.witness, record, why.clone());
            return body::error(StatusCode::BAD_REQUEST, &why);
        }
    };
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let replace_host = host == HostHeader::FromTarget || !parts.headers.contains_key(header::HOST);
    // A target parsed from a URI always makes a valid header value.
    if let (true, Ok(value)) = (replace_host, HeaderValue::from_str(&target.host_header())) {
        parts.headers.insert(header::HOST, value);
    }

    let Upstream { response, chain, sender } =
        match shared.upstream.send(&target, Request::from_parts(parts, request_body)).await {
            Ok(upstream) => upstream,
            Err(e) => {
                let why = e.to_string();
                let instead = replay::instead(scope, &record, &method, format!("the upstream failed: {why}"));
                if let Some(replayed) = instead.await {
                    return replayed;
                }
                records::keep_failure(&*shared.witness, record, why.clone());
                return body::error(StatusCode::BAD_GATEWAY, &why);
            }
        };
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let instead = replay::instead(scope, &record, &method, format!("the upstream answered {status}"));
        if let Some(replayed) = instead.await {
            return replayed;
        }
    }

    let (mut head, incoming) = response.into_parts();
    record.status = Some(head.status.as_u16());
    record.tls_chain = chain;
    record.headers = recorded_headers(&head.headers);
    if head.status.is_redirection() {
        let location = head.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
        if let Some(next) = location.and_then(|l| redirects::resolve(&url, l)) {
            record.location = Some(redact_url(&next));
            let link = Link { from: record.url.clone(), hop: record.redirect_hop.saturating_add(1) };
            shared.redirects.link(scope.redirect_scope(), next, link);
        }
    }
    let writer = if head.status == StatusCode::OK && method != Method::HEAD {
        match shared.witness.body() {
            Ok(writer) => Some(writer),
            Err(e) => {
                record.error = Some(format!("the body could not be kept: {e}"));
                None
            }
        }
    } else {
        None
    };
    strip_hop_by_hop(&mut head.headers);
    let tee = Tee::new(incoming, writer, record, shared.witness.clone(), shared.limits.stall_timeout, sender);
    Response::from_parts(head, tee.boxed_unsync())
}

/// Headers that concern one connection only (RFC 9110 section 7.6.1),
/// and those the `Connection` header names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The response headers records keep (provenance, never credentials).
fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let names = [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::ETAG,
        header::LAST_MODIFIED,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
    ];
    let mut kept = Vec::new();
    for name in names {
        for value in headers.get_all(&name) {
            kept.push((name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_credentials_stay() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic cHJveHk6cHc="),
            ("transfer-encoding", "chunked"),
            ("authorization", "Basic dTpw"),
            ("cookie", "a=b"),
            ("accept", "*/*"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "authorization", "cookie"]);
    }

    #[test]
    fn only_provenance_headers_are_recorded() {
        let mut h = HeaderMap::new();
        h.append("content-type", HeaderValue::from_static("application/gzip"));
        h.append("set-cookie", HeaderValue::from_static("session=1"));
        h.append("etag", HeaderValue::from_static("\"abc\""));
        h.append("content-range", HeaderValue::from_static("bytes 0-9/100"));
        assert_eq!(
            recorded_headers(&h),
            [
                ("content-type".to_owned(), "application/gzip".to_owned()),
                ("etag".to_owned(), "\"abc\"".to_owned()),
                ("content-range".to_owned(), "bytes 0-9/100".to_owned()),
            ]
        );
    }
}
