//! The body type of every response the proxy sends, and the short
//! responses it makes itself (a CONNECT's 200, errors as plain text).

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Response, StatusCode, header};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: a relayed upstream body or one the proxy made.
pub(super) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A response with no body.
pub(super) fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// An error the proxy answers itself, its reason as one line of text.
pub(super) fn error(status: StatusCode, why: &str) -> Response<ProxyBody> {
    let text = format!("witness proxy: {why}\n");
    let mut response = Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
