//! What every task of one proxy shares (the CA, the witness, the upstream
//! connector, the redirect links, the connection budget, the mode), and the scope a
//! listener serves: the build its records name.

use super::config::{Limits, Mode, ProxyConfig, ProxyError};
use super::redirects::Redirects;
use super::upstream::Connector;
use crate::ca::WitnessCa;
use crate::record::BuildRef;
use crate::sink::Witness;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

/// The one protocol offered and spoken on both sides.
pub(super) const HTTP11: &[u8] = b"http/1.1";

pub(super) struct Shared {
    pub ca: Arc<WitnessCa>,
    pub witness: Arc<dyn Witness>,
    pub limits: Limits,
    pub upstream: Connector,
    pub provider: Arc<CryptoProvider>,
    pub redirects: Redirects,
    pub connections: Arc<Semaphore>,
    pub default_build: Option<BuildRef>,
    /// [`Mode::Offline`]: never contact an upstream.
    offline: AtomicBool,
}

impl Shared {
    pub fn new(config: ProxyConfig) -> Result<Shared, ProxyError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(config.upstream_roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![HTTP11.to_vec()];
        let limits = config.limits;
        Ok(Shared {
            ca: config.ca,
            witness: config.witness,
            upstream: Connector {
                tls: TlsConnector::from(Arc::new(client)),
                connect_timeout: limits.connect_timeout,
                stall_timeout: limits.stall_timeout,
                head_bytes: limits.head_bytes(),
            },
            provider,
            redirects: Redirects::default(),
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            default_build: config.build,
            limits,
            offline: AtomicBool::new(false),
        })
    }

    pub fn mode(&self) -> Mode {
        if self.offline.load(Ordering::Relaxed) { Mode::Offline } else { Mode::Online }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.offline.store(mode == Mode::Offline, Ordering::Relaxed);
    }

    /// A TLS server configuration showing `leaf` to the client.
    pub fn server_config(&self, leaf: Arc<rustls::sign::CertifiedKey>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneLeaf(leaf)));
        config.alpn_protocols = vec![HTTP11.to_vec()];
        Ok(Arc::new(config))
    }
}

/// The same leaf whatever the ClientHello says: it was chosen from the
/// hello already (its SNI, or the CONNECT host).
#[derive(Debug)]
struct OneLeaf(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneLeaf {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// One listener's view of the proxy: the shared parts and the build its
/// records are for.
#[derive(Clone)]
pub(super) struct Scope {
    pub shared: Arc<Shared>,
    pub build: Option<Arc<BuildRef>>,
}

impl Scope {
    /// The key redirect links are kept under: one build's chains never
    /// link to another's.
    pub fn redirect_scope(&self) -> &str {
        self.build.as_deref().map(|b| b.drv.as_str()).unwrap_or_default()
    }
}
