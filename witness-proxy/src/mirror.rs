//! The witness archive as a hashed mirror, the way CppNix's
//! `hashed-mirrors` setting uses one: before fetching the URL of a flat
//! fixed-output derivation, `builtin:fetchurl` asks each mirror for
//! `<mirror>/<algo>/<base16 of the declared hash>` (`algo` one of `md5`,
//! `sha1`, `sha256`, `sha512`), and the bytes it gets are the file.
//!
//! [`serve_mirror`] answers GET and HEAD of `/<algo>/<hex>` (hex in
//! either case) over plain HTTP/1.1: for sha256 the CAS object of that
//! name (a flat file's bytes are exactly the object), else, and for the
//! other algorithms, the object the archive's output index keeps for a
//! flat output declared with that hash ([`Archive::output_for`]). The
//! bytes stream through the CAS's checking reader: an object that does not
//! hash to its name is never passed off as good, the transfer is aborted
//! and the object named in the log (`object_body`). 404 when the
//! archive has no such output, 400 for any other path, 405 for another
//! method. Connections are bounded ([`MirrorLimits`]), and so is the wait
//! for a request head.

use crate::archive::{Archive, OutputMode};
use crate::cas::ObjectId;
use crate::object_body::{BoxError, ObjectBody};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use store::hash::{Algorithm, Hash};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// A request head is a line and a few headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

type MirrorBody = UnsyncBoxBody<Bytes, BoxError>;

/// Bounds on what clients can make a mirror hold.
#[derive(Debug, Clone)]
pub struct MirrorLimits {
    /// Connections served at once; more wait in the listener's backlog.
    pub max_connections: usize,
    /// Longest wait for a request head.
    pub header_timeout: Duration,
    /// Longest a client may take no bytes of a body before the mirror
    /// stops reading the object for it.
    pub stall_timeout: Duration,
}

impl Default for MirrorLimits {
    fn default() -> Self {
        MirrorLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
        }
    }
}

/// Serves `archive` as a hashed mirror on `listener` with the default
/// [`MirrorLimits`]. Runs until the task is dropped.
pub async fn serve_mirror(archive: Arc<Archive>, listener: TcpListener) {
    serve_mirror_with(archive, listener, MirrorLimits::default()).await;
}

/// Serves `archive` as a hashed mirror on `listener` within `limits`.
pub async fn serve_mirror_with(archive: Arc<Archive>, listener: TcpListener, limits: MirrorLimits) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!("cannot accept a hashed-mirror client: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let archive = archive.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stall = limits.stall_timeout;
            let service = service_fn(move |request| {
                let archive = archive.clone();
                async move { Ok::<_, Infallible>(answer(archive, request, stall).await) }
            });
            let mut server = http1::Builder::new();
            server
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS);
            if let Err(e) = server.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("a hashed-mirror client's connection ended: {e}");
            }
        });
    }
}

/// What a request path names: `/<algo>/<base16 digest>`.
fn parse_path(path: &str) -> Result<Hash, String> {
    let shape = || format!("`{}` is not /<algo>/<base16 hash>", path.escape_debug());
    let (algo, hex) = path.strip_prefix('/').and_then(|p| p.split_once('/')).ok_or_else(shape)?;
    let algorithm: Algorithm =
        algo.parse().map_err(|_| format!("`{}` is not md5, sha1, sha256 nor sha512", algo.escape_debug()))?;
    if hex.len() != algorithm.base16_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{}` is not a {algorithm} in base 16 ({} hex digits)",
            hex.escape_debug(),
            algorithm.base16_len()
        ));
    }
    Hash::parse_digest(hex, algorithm, false).map_err(|e| e.to_string())
}

/// The object a flat output declared as `hash` is, its size, and (for a
/// GET) its bytes.
type Found = (ObjectId, u64, Option<Box<dyn Read + Send>>);

fn find(archive: &Archive, hash: &Hash, open: bool) -> Result<Option<Found>, String> {
    let cas = archive.cas();
    let direct = ObjectId::from_digest(hash).filter(|id| cas.has(id).unwrap_or(false));
    let id = match direct {
        Some(id) => id,
        None => match archive.output_for(hash, OutputMode::Flat).map_err(|e| e.to_string())? {
            Some(id) => id,
            None => return Ok(None),
        },
    };
    // Gone meanwhile (gc): as if it never was.
    let Some(size) = cas.size(&id).map_err(|e| e.to_string())? else { return Ok(None) };
    if !open {
        return Ok(Some((id, size, None)));
    }
    match cas.get(&id).map_err(|e| e.to_string())? {
        Some(reader) => Ok(Some((id, size, Some(reader)))),
        None => Ok(None),
    }
}

async fn answer(archive: Arc<Archive>, request: Request<Incoming>, stall: Duration) -> Response<MirrorBody> {
    let head_only = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
    };
    let path = request.uri().path().to_owned();
    let hash = match parse_path(&path) {
        Ok(hash) => hash,
        Err(why) => return text(StatusCode::BAD_REQUEST, &why),
    };
    let name = hash.to_typed(store::hash::Encoding::Base16);
    let looked_up = tokio::task::spawn_blocking(move || find(&archive, &hash, !head_only)).await;
    let (id, size, reader) = match looked_up {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return text(StatusCode::NOT_FOUND, &format!("the witness has no flat output {name}")),
        Ok(Err(why)) => {
            tracing::warn!("hashed mirror: cannot look up {name}: {why}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot look up {name}: {why}"));
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("looking up {name} failed: {e}")),
    };
    let mut response = match reader {
        Some(reader) => {
            let on_end = Box::new(move |outcome: Result<(), String>| match outcome {
                Ok(()) => tracing::debug!(object = %id, "hashed mirror served {name}"),
                Err(why) => tracing::warn!(object = %id, "hashed mirror: {name} not served whole: {why}"),
            });
            Response::new(ObjectBody::new(reader, id.to_hex(), size, stall, on_end).boxed_unsync())
        }
        None => Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync()),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, size.into());
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response
}

/// An answer of one line of text.
fn text(status: StatusCode, why: &str) -> Response<MirrorBody> {
    let body = Full::new(Bytes::from(format!("witness mirror: {why}\n")));
    let mut response = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_an_algorithm_and_a_base16_digest() {
        let sha256 = Algorithm::Sha256.digest(b"x");
        assert_eq!(parse_path(&format!("/sha256/{}", sha256.to_base16())), Ok(sha256));
        assert_eq!(parse_path(&format!("/sha256/{}", sha256.to_base16().to_uppercase())), Ok(sha256));
        for algorithm in Algorithm::ALL {
            let hash = algorithm.digest(b"x");
            assert_eq!(parse_path(&format!("/{algorithm}/{}", hash.to_base16())), Ok(hash));
        }
        let nix32 = sha256.to_nix32();
        for (path, why) in [
            ("/", "is not /<algo>/<base16 hash>"),
            ("/sha256", "is not /<algo>/<base16 hash>"),
            ("/sha3/00", "is not md5, sha1, sha256 nor sha512"),
            ("/sha256/00", "is not a sha256 in base 16 (64 hex digits)"),
            (&format!("/sha256/{nix32}"), "is not a sha256 in base 16 (64 hex digits)"),
            (&format!("/sha256/{}", "g".repeat(64)), "is not a sha256 in base 16 (64 hex digits)"),
            (&format!("/sha256/{}/x", sha256.to_base16()), "is not a sha256 in base 16 (64 hex digits)"),
        ] {
            let err = parse_path(path).unwrap_err();
            assert!(err.ends_with(why), "{path}: {err}");
        }
    }
}
