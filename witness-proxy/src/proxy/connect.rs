//! CONNECT: the client gets its 200, then the first bytes it sends through
//! the tunnel decide. A TLS ClientHello is intercepted: the client is shown
//! a witness leaf for its SNI (the CONNECT host when it sent none), ALPN
//! `http/1.1` only, and the HTTP/1.1 requests inside are forwarded to
//! `https://host:port` one by one. Plaintext HTTP is served the same way
//! toward `http://host:port`. Anything else is refused, the connection
//! closed and the refusal recorded: no byte is ever tunnelled unseen.
//!
//! Records of a tunnel that carried no request (refused, or a failed TLS
//! handshake with the client) have method `CONNECT` and the CONNECT target
//! (`host:port`) as their URL.

use super::body::{self, ProxyBody};
use super::exchange::{self, HostHeader};
use super::records;
use super::rewind::Rewind;
use super::shared::Scope;
use super::sniff::{SNIFF_BYTES, Sniff, sniff};
use super::target::Target;
use crate::redact::redact_url;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::server::Acceptor;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tokio_rustls::LazyConfigAcceptor;

/// Answers a CONNECT and serves the tunnel once hyper hands it over; the
/// tunnel holds `permit` as long as it lives.
pub(super) fn tunnel(
    scope: Scope,
    request: Request<Incoming>,
    permit: Arc<OwnedSemaphorePermit>,
) -> Response<ProxyBody> {
    let Some(target) = Target::from_connect(request.uri(), true) else {
        let why = "CONNECT needs a host:port target";
        // Redacted as an authority: a CONNECT target may carry userinfo.
        let shown = redact_url(&format!("//{}", request.uri()));
        let record = records::begin(shown.trim_start_matches('/'), "CONNECT", scope.build.as_deref());
        records::keep_failure(&*scope.shared.witness, record, why.to_owned());
        return body::error(StatusCode::BAD_REQUEST, why);
    };
    tokio::spawn(async move {
        let _permit = permit;
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => serve_tunnel(scope, TokioIo::new(upgraded), target).await,
            Err(e) => tracing::debug!("CONNECT {target}: the client left before the tunnel: {e}"),
        }
    });
    body::empty(StatusCode::OK)
}

async fn serve_tunnel<IO>(scope: Scope, mut io: IO, target: Target)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stall = scope.shared.limits.stall_timeout;
    let mut first = [0u8; SNIFF_BYTES];
    let mut seen = 0;
    let kind = loop {
        match sniff(&first[..seen]) {
            Sniff::NeedMore if seen < first.len() => {}
            Sniff::NeedMore | Sniff::Other => {
                break Err(format!("not TLS or HTTP after CONNECT: the client sent \"{}\"", escaped(&first[..seen])));
            }
            known => break Ok(known),
        }
        match timeout(stall, io.read(&mut first[seen..])).await {
            Ok(Ok(0)) => {
                break Err(format!(
                    "not TLS or HTTP after CONNECT: the client closed the tunnel after \"{}\"",
                    escaped(&first[..seen])
                ));
            }
            Ok(Ok(n)) => seen += n,
            Ok(Err(e)) => break Err(format!("reading the tunnel failed: {e}")),
            Err(_) => break Err(format!("not TLS or HTTP after CONNECT: nothing within {}s", stall.as_secs())),
        }
    };
    let io = Rewind::new(first[..seen].to_vec(), io);
    match kind {
        Ok(Sniff::Tls) => intercept(scope, io, target).await,
        Ok(_) => serve_requests(scope, io, target.with_tls(false)).await,
        // Dropping the stream closes the connection.
        Err(why) => refuse(&scope, &target, why),
    }
}

/// The TLS handshake with the client, as the host it asked for.
async fn intercept<IO>(scope: Scope, io: IO, target: Target)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = &scope.shared;
    let stall = shared.limits.stall_timeout;
    let start = match timeout(stall, LazyConfigAcceptor::new(Acceptor::default(), io)).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => return refuse(&scope, &target, format!("no TLS ClientHello after CONNECT: {e}")),
        Err(_) => return refuse(&scope, &target, format!("no TLS ClientHello within {}s", stall.as_secs())),
    };
    let name = start.client_hello().server_name().map(str::to_owned).unwrap_or_else(|| target.host.clone());
    let config = match shared.ca.leaf(&name) {
        Ok(leaf) => match shared.server_config(leaf) {
            Ok(config) => config,
            Err(e) => return refuse(&scope, &target, format!("cannot set up TLS for {name}: {e}")),
        },
        Err(e) => return refuse(&scope, &target, e.to_string()),
    };
    let tls = match timeout(stall, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return refuse(&scope, &target, format!("the TLS handshake with the client failed: {e}")),
        Err(_) => {
            return refuse(&scope, &target, format!("the client's TLS handshake took more than {}s", stall.as_secs()));
        }
    };
    serve_requests(scope, tls, target).await
}

/// The HTTP/1.1 requests a tunnel carries, each forwarded to `target`.
async fn serve_requests<IO>(scope: Scope, io: IO, target: Target)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let server = scope.shared.limits.http1_server();
    let name = target.authority();
    let service = service_fn(move |request| {
        let scope = scope.clone();
        let target = target.clone();
        async move { Ok::<_, Infallible>(exchange::forward(&scope, request, target, HostHeader::FromClient).await) }
    });
    if let Err(e) = server.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!("the tunnel to {name} ended: {e}");
    }
}

/// Records a tunnel that carried no request.
fn refuse(scope: &Scope, target: &Target, why: String) {
    let record = records::begin(&target.authority(), "CONNECT", scope.build.as_deref());
    records::keep_failure(&*scope.shared.witness, record, why);
}

fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}
