//! What a [`super::Proxy`] is made from: the witness CA, the roots it
//! trusts upstream, where records go, the build they are for, and the limits
//! that keep a proxy's memory and tasks bounded whatever its peers do; and
//! its [`Mode`], online or offline.

use crate::ca::WitnessCa;
use crate::record::BuildRef;
use crate::sink::Witness;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot read the upstream CA file {}: {source}", path.display())]
    RootsFile {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the upstream CA file {} holds no usable certificate", path.display())]
    NoRoots { path: PathBuf },
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Everything a proxy needs.
pub struct ProxyConfig {
    pub ca: Arc<WitnessCa>,
    /// The CAs upstream servers are verified against.
    pub upstream_roots: RootCertStore,
    pub witness: Arc<dyn Witness>,
    /// The build records are made for, unless a listener says otherwise
    /// ([`super::Proxy::serve_for`]).
    pub build: Option<BuildRef>,
    pub limits: Limits,
}

/// Whether a proxy asks upstreams at all ([`super::Proxy::set_mode`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Requests go upstream; a GET or HEAD the upstream fails (no
    /// connection, a timeout, a 4xx or 5xx answer) is answered from the
    /// witness when it has the URL.
    #[default]
    Online,
    /// No upstream is ever contacted: GETs and HEADs are answered from the
    /// witness, or refused with a 504 when it never saw the URL.
    Offline,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A witness mode that is neither `online` nor `offline`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("witness mode `{0}` is neither `online` nor `offline`")]
pub struct ModeError(pub String);

impl std::str::FromStr for Mode {
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Mode, ModeError> {
        [Mode::Online, Mode::Offline].into_iter().find(|m| m.name() == s).ok_or_else(|| ModeError(s.to_owned()))
    }
}

/// Bounds on what peers can make a proxy hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Client connections served at once (CONNECT tunnels included); more
    /// wait in the listener's backlog.
    pub max_connections: usize,
    /// The buffer for one request or response head (at least 8 KiB).
    pub max_head_bytes: usize,
    /// Header lines in one request.
    pub max_headers: usize,
    /// Connecting to an upstream, TLS handshake included.
    pub connect_timeout: Duration,
    /// Longest wait for a peer: a request head, the bytes after CONNECT, a
    /// client TLS handshake, an upstream's response head or body chunk.
    pub stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
        }
    }
}

/// hyper panics on a smaller buffer.
const MIN_HEAD_BYTES: usize = 8192;

impl Limits {
    pub(super) fn head_bytes(&self) -> usize {
        self.max_head_bytes.max(MIN_HEAD_BYTES)
    }

    /// The HTTP/1.1 server side, for clients and for requests in tunnels.
    pub(super) fn http1_server(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.stall_timeout)
            .max_buf_size(self.head_bytes())
            .max_headers(self.max_headers);
        builder
    }
}

/// The certificates of a PEM file (a CA bundle), as roots to verify
/// upstream servers against.
pub fn roots_from_pem_file(path: &Path) -> Result<RootCertStore, ProxyError> {
    let bad = |source| ProxyError::RootsFile { path: path.to_owned(), source };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(bad)? {
        // A bundle may hold certificates webpki cannot use; skip those.
        if let Err(e) = roots.add(cert.map_err(bad)?) {
            tracing::debug!("skipped a certificate of {}: {e}", path.display());
        }
    }
    if roots.is_empty() {
        return Err(ProxyError::NoRoots { path: path.to_owned() });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_they_are_written() {
        for mode in [Mode::Online, Mode::Offline] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        assert_eq!(Mode::default(), Mode::Online);
        let err = "Offline".parse::<Mode>().unwrap_err();
        assert_eq!(err.to_string(), "witness mode `Offline` is neither `online` nor `offline`");
    }
}
