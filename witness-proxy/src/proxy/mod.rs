//! The witness proxy server: an HTTP/1.1 forward proxy on hyper and
//! rustls. This module accepts clients and dispatches their requests:
//! absolute-form ones (`GET http://host/path`) are forwarded
//! ([`exchange`]), CONNECT opens a tunnel that is intercepted, never
//! relayed blind ([`connect`]); anything else is refused. Every request
//! leaves one [`crate::record::Record`] with the witness.
//!
//! A GET or HEAD the upstream fails (no connection, a timeout, a 4xx or
//! 5xx answer) is answered from the witness when it has the URL: the
//! newest complete 200 it kept, its body checked against its sha256 as it
//! streams, or a redirect it saw ([`replay`]). In [`Mode::Offline`]
//! ([`Proxy::set_mode`]) no upstream is contacted at all: requests are
//! answered from the witness or refused with a 504.
//!
//! One proxy may serve many listeners ([`Proxy::serve_for`]: one per build,
//! each naming the build its records are for). Client connections, tunnels
//! included, are bounded per proxy ([`Limits::max_connections`]), request
//! heads by size and header count, and every wait on a peer by a timeout.
//!
//! Submodules, leaves first: [`config`] (what a proxy is made from, its
//! mode), [`target`] (where a request goes), [`sniff`] and [`rewind`]
//! (telling what a tunnel carries), [`body`] (response bodies and the
//! proxy's own answers), [`records`], [`redirects`] (linking hops),
//! [`upstream`] (a fresh connection per request, its TLS chain), [`tee`]
//! (relaying a body while the witness keeps it), [`shared`] (what every
//! task shares), [`replay`] (answering from the witness), [`exchange`],
//! [`connect`].

mod body;
mod config;
mod connect;
mod exchange;
mod records;
mod redirects;
mod replay;
mod rewind;
mod shared;
mod sniff;
mod target;
mod tee;
mod upstream;

pub use config::{Limits, Mode, ModeError, ProxyConfig, ProxyError, roots_from_pem_file};

use crate::record::BuildRef;
use body::ProxyBody;
use exchange::HostHeader;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shared::{Scope, Shared};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use target::Target;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A witness proxy; serve it on as many listeners as needed.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        Ok(Proxy { shared: Arc::new(Shared::new(config)?) })
    }

    /// Whether upstreams are contacted ([`Mode::Online`], the default) or
    /// every request is answered from the witness ([`Mode::Offline`]).
    /// Takes effect for the requests that arrive after it.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.set_mode(mode);
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Serves clients from `listener`, their records naming the configured
    /// build. Runs until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let build = self.shared.default_build.clone();
        self.serve_for(listener, build).await;
    }

    /// Serves clients from `listener`, their records naming `build`.
    pub async fn serve_for(self: Arc<Self>, listener: TcpListener, build: Option<BuildRef>) {
        let scope = Scope { shared: self.shared.clone(), build: build.map(Arc::new) };
        loop {
            let Ok(permit) = scope.shared.connections.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!("cannot accept a proxy client: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_client(scope.clone(), stream, Arc::new(permit)));
        }
    }
}

async fn serve_client(scope: Scope, stream: TcpStream, permit: Arc<OwnedSemaphorePermit>) {
    let server = scope.shared.limits.http1_server();
    let service = service_fn(move |request| {
        let scope = scope.clone();
        let permit = permit.clone();
        async move { Ok::<_, Infallible>(dispatch(scope, request, permit).await) }
    });
    if let Err(e) = server.serve_connection(TokioIo::new(stream), service).with_upgrades().await {
        tracing::debug!("a proxy client's connection ended: {e}");
    }
}

async fn dispatch(scope: Scope, request: Request<Incoming>, permit: Arc<OwnedSemaphorePermit>) -> Response<ProxyBody> {
    if request.method() == Method::CONNECT {
        return connect::tunnel(scope, request, permit);
    }
    if let Some(target) = Target::from_absolute(request.uri()) {
        return exchange::forward(&scope, request, target, HostHeader::FromTarget).await;
    }
    let (status, why) = match request.uri().scheme_str() {
        Some(scheme) => (StatusCode::NOT_IMPLEMENTED, format!("{scheme}:// is not served by the witness proxy")),
        None => (
            StatusCode::BAD_REQUEST,
            "not a proxy request: use an absolute http:// URL or CONNECT host:port".to_owned(),
        ),
    };
    let record = records::begin(&request.uri().to_string(), request.method().as_str(), scope.build.as_deref());
    records::keep_failure(&*scope.shared.witness, record, why.clone());
    body::error(status, &why)
}
