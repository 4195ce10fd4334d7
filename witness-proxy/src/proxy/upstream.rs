//! The upstream side of one exchange: a fresh connection per request
//! (TCP, then TLS verified against the configured roots for `https`), the
//! request sent over HTTP/1.1, and the response head with the certificate
//! chain the upstream showed. No pooling: each record's chain is the one
//! that connection saw.

use super::records::error_chain;
use super::target::Target;
use crate::record::Certificate;
use data_encoding::HEXLOWER;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub(super) enum UpstreamError {
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("connecting to {target} took more than {}s", .after.as_secs())]
    ConnectTimeout { target: String, after: Duration },
    #[error("{host:?} cannot be a TLS server name")]
    ServerName { host: String },
    #[error("TLS with {target} failed: {source}")]
    Tls { target: String, source: io::Error },
    #[error("HTTP with {target} failed: {}", error_chain(.source))]
    Http { target: String, source: hyper::Error },
    #[error("{target} sent no response head within {}s", .after.as_secs())]
    Stalled { target: String, after: Duration },
}

/// A response head from upstream, its body still to come.
pub(super) struct Upstream {
    pub response: Response<Incoming>,
    /// The upstream's chain, leaf first; empty over plain HTTP.
    pub chain: Vec<Certificate>,
    /// Kept until the body is done, so the connection lives as long.
    pub sender: http1::SendRequest<Incoming>,
}

/// How to reach upstreams.
pub(super) struct Connector {
    pub tls: TlsConnector,
    pub connect_timeout: Duration,
    pub stall_timeout: Duration,
    pub head_bytes: usize,
}

impl Connector {
    /// Sends `request` (origin-form) to `target` on a new connection.
    pub async fn send(&self, target: &Target, request: Request<Incoming>) -> Result<Upstream, UpstreamError> {
        let name = target.authority();
        let tcp = match timeout(self.connect_timeout, TcpStream::connect((target.host.as_str(), target.port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(UpstreamError::Connect { target: name, source }),
            Err(_) => return Err(UpstreamError::ConnectTimeout { target: name, after: self.connect_timeout }),
        };
        let _ = tcp.set_nodelay(true);
        if !target.tls {
            return self.exchange(tcp, Vec::new(), target, request).await;
        }
        let server_name =
            target.server_name().ok_or_else(|| UpstreamError::ServerName { host: target.host.clone() })?;
        let tls = match timeout(self.connect_timeout, self.tls.connect(server_name, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(source)) => return Err(UpstreamError::Tls { target: name, source }),
            Err(_) => return Err(UpstreamError::ConnectTimeout { target: name, after: self.connect_timeout }),
        };
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default().iter().map(describe).collect();
        self.exchange(tls, chain, target, request).await
    }

    async fn exchange<IO>(
        &self,
        io: IO,
        chain: Vec<Certificate>,
        target: &Target,
        request: Request<Incoming>,
    ) -> Result<Upstream, UpstreamError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| UpstreamError::Http { target: target.authority(), source };
        let (mut sender, connection) =
            http1::Builder::new().max_buf_size(self.head_bytes).handshake(TokioIo::new(io)).await.map_err(http)?;
        let authority = target.authority();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection to {authority} ended: {e}");
            }
        });
        let response = match timeout(self.stall_timeout, sender.send_request(request)).await {
            Ok(response) => response.map_err(http)?,
            Err(_) => return Err(UpstreamError::Stalled { target: target.authority(), after: self.stall_timeout }),
        };
        Ok(Upstream { response, chain, sender })
    }
}

/// A certificate as records keep it: its DER's sha256, and what
/// `x509-parser` reads of it (empty names, zero times when it cannot).
pub(super) fn describe(der: &CertificateDer<'_>) -> Certificate {
    let sha256 = HEXLOWER.encode(&Sha256::digest(der.as_ref())[..]);
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, x509)) => Certificate {
            sha256,
            subject: x509.subject().to_string(),
            issuer: x509.issuer().to_string(),
            not_before: x509.validity().not_before.timestamp(),
            not_after: x509.validity().not_after.timestamp(),
        },
        Err(e) => {
            tracing::debug!("an upstream certificate does not parse: {e}");
            Certificate { sha256, subject: String::new(), issuer: String::new(), not_before: 0, not_after: 0 }
        }
    }
}
