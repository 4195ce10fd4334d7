//! HTTP(S) downloads for binary caches and `builtin:fetchurl` (CppNix's
//! src/libstore/filetransfer.cc): one shared `ureq` agent (rustls, Mozilla's
//! roots, proxies from the environment), at most `http-connections`
//! transfers at once, and retries with exponential back-off for transient
//! failures as CppNix classifies them (connection errors, most 5xx, 408,
//! 429), up to `download-attempts` tries. A retry happens only before any
//! body byte was handed out; a transfer that breaks later fails.
//!
//! 404 and 410 mean "not there"; for binary caches 401/403/407 do too,
//! as CppNix treats them (S3 answers 403 for a missing key).
//!
//! Uploads (`PUT`, for writing to a cache) are tried once: CppNix's
//! `HttpBinaryCacheStore::upsertFile` reports the first failure too.

use crate::Error;
use crate::decompress::{Decoder, Method};
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Delay before the second try; doubled for each one after.
const BASE_RETRY_MS: u64 = 250;

/// How a [`Client`] connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Transfers in flight at once, and idle connections kept (0: no limit).
    pub connections: usize,
    /// Seconds to establish a connection (0: no limit).
    pub connect_timeout: u64,
    /// Seconds without receiving data before a transfer is abandoned (0: no limit).
    pub stalled_timeout: u64,
    /// Tries per request (at least one).
    pub attempts: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { connections: 25, connect_timeout: 0, stalled_timeout: 300, attempts: 5 }
    }
}

/// A pool of HTTP connections shared by every thread of the process that
/// holds it. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    slots: Arc<Slots>,
    attempts: u32,
}

/// What a GET found. Short-lived, one per request: the body is not boxed.
#[allow(clippy::large_enum_variant)]
pub enum Fetched {
    Body(Body),
    /// 404 or 410 (and 401/403/407 when asked to treat them so).
    Missing,
}

/// Where a [`Client`]'s requests go and whom it trusts, when not the
/// process's proxy variables and Mozilla's roots: `builtin:fetchurl` takes
/// them from the derivation's environment (the witness proxy and the CA
/// bundle that trusts it).
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// `http://host:port` of a forward proxy (CONNECT for https).
    pub proxy: Option<String>,
    /// A PEM bundle of the CAs to verify servers against.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Client {
    pub fn new(config: &ClientConfig) -> Client {
        Self::with_builder(config, ureq::Agent::config_builder())
    }

    /// A client whose requests take `route`: an unusable proxy URL or CA
    /// file is an error naming it.
    pub fn with_route(config: &ClientConfig, route: &Route) -> Result<Client, Error> {
        let mut builder = ureq::Agent::config_builder();
        if let Some(proxy) = &route.proxy {
            let parsed = ureq::Proxy::new(proxy)
                .map_err(|e| Error::Download { url: proxy.clone(), why: format!("not a usable proxy: {e}") })?;
            builder = builder.proxy(Some(parsed));
        }
        if let Some(file) = &route.ca_file {
            let bad = |why: String| Error::Download { url: format!("file://{}", file.display()), why };
            let pem = std::fs::read(file).map_err(|e| bad(format!("cannot read the CA file: {e}")))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(bad("the CA file holds no certificate".into()));
            }
            let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build();
            builder = builder.tls_config(tls);
        }
        Ok(Self::with_builder(config, builder))
    }

    fn with_builder(
        config: &ClientConfig,
        builder: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> Client {
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let idle = if config.connections == 0 { 100 } else { config.connections };
        let agent = builder
            .http_status_as_error(false)
            .user_agent(concat!("armitage/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(secs(config.connect_timeout))
            .timeout_per_read(secs(config.stalled_timeout))
            .max_idle_connections(idle)
            .max_idle_connections_per_host(idle)
            .build()
            .new_agent();
        Client { agent, slots: Arc::new(Slots::new(config.connections)), attempts: config.attempts.max(1) }
    }

    /// GETs `url`, retrying transient failures. The body is decoded as its
    /// `Content-Encoding` says and holds one of the client's connection
    /// slots until dropped. `forbidden_is_missing`: 401/403/407 mean the
    /// file is not there (binary caches), rather than an error.
    pub fn get(&self, url: &str, forbidden_is_missing: bool) -> Result<Fetched, Error> {
        let mut attempt = 1;
        loop {
            let slot = self.slots.acquire();
            let failure = match self.agent.get(url).call() {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match status {
                        200..=299 => {
                            let encoding = response
                                .headers()
                                .get("content-encoding")
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                .unwrap_or_default();
                            let method = Method::from_content_encoding(&encoding).ok_or_else(|| Error::Download {
                                url: url.to_owned(),
                                why: format!("unsupported Content-Encoding '{encoding}'"),
                            })?;
                            let reader = response.into_body().into_reader();
                            let inner = Decoder::new(method, reader).map_err(|e| Error::Download {
                                url: url.to_owned(),
                                why: format!("decoding its Content-Encoding '{encoding}': {e}"),
                            })?;
                            return Ok(Fetched::Body(Body { inner, _slot: slot }));
                        }
                        404 | 410 => return Ok(Fetched::Missing),
                        401 | 403 | 407 if forbidden_is_missing => return Ok(Fetched::Missing),
                        _ => {
                            let reason = response.status().canonical_reason().unwrap_or("");
                            let err = Error::HttpStatus { url: url.to_owned(), status, reason: reason.to_owned() };
                            let transient =
                                status == 408 || status == 429 || (status >= 500 && ![501, 505, 511].contains(&status));
                            (err, transient)
                        }
                    }
                }
                Err(e) => {
                    let transient = !matches!(
                        e,
                        ureq::Error::BadUri(_)
                            | ureq::Error::TooManyRedirects
                            | ureq::Error::RedirectFailed
                            | ureq::Error::RequireHttpsOnly(_)
                            | ureq::Error::InvalidProxyUrl
                    );
                    (Error::Download { url: url.to_owned(), why: describe(&e) }, transient)
                }
            };
            drop(slot);
            let (err, transient) = failure;
            if !transient || attempt >= self.attempts {
                return Err(err);
            }
            let ms = BASE_RETRY_MS << (attempt - 1).min(10);
            tracing::warn!("{err}; retrying in {ms} ms");
            std::thread::sleep(Duration::from_millis(ms));
            attempt += 1;
        }
    }
}

impl Client {
    /// Whether `url` is there (`HEAD`; 401/403/407 mean not, as for caches).
    pub fn head(&self, url: &str) -> Result<bool, Error> {
        let _slot = self.slots.acquire();
        let response =
            self.agent.head(url).call().map_err(|e| Error::Download { url: url.to_owned(), why: describe(&e) })?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            404 | 410 | 401 | 403 | 407 => Ok(false),
            status => Err(Error::HttpStatus {
                url: url.to_owned(),
                status,
                reason: response.status().canonical_reason().unwrap_or("").to_owned(),
            }),
        }
    }

    /// Uploads `body` to `url` (`PUT`).
    pub fn put(&self, url: &str, body: Upload<'_>, content_type: &str) -> Result<(), Error> {
        let _slot = self.slots.acquire();
        let upload_error = |why: String| Error::Upload { url: url.to_owned(), why };
        let request = self.agent.put(url).header("content-type", content_type);
        let sent = match body {
            Upload::Bytes(bytes) => request.send(bytes),
            Upload::Staged(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| upload_error(format!("opening '{}': {e}", path.display())))?;
                request.send(file)
            }
        };
        let response = sent.map_err(|e| upload_error(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(upload_error(format!(
                "HTTP error {} ('{}')",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        Ok(())
    }
}

/// ureq's error, in words (its `Display` is terse for I/O failures).
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::ConnectionFailed => "could not connect".to_owned(),
        ureq::Error::HostNotFound => "could not resolve host".to_owned(),
        other => other.to_string(),
    }
}

/// A response body being read.
pub struct Body {
    inner: Decoder<ureq::BodyReader<'static>>,
    _slot: SlotGuard,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// A counting semaphore for transfers in flight (0: unlimited).
struct Slots {
    limit: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn new(limit: usize) -> Slots {
        Slots { limit, used: Mutex::new(0), freed: Condvar::new() }
    }

    fn acquire(self: &Arc<Self>) -> SlotGuard {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while self.limit != 0 && *used >= self.limit {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        SlotGuard(self.clone())
    }
}

/// One transfer slot, given back when dropped.
struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        self.0.freed.notify_one();
    }
}

/// A file to write into a cache.
pub enum Upload<'a> {
    Bytes(&'a [u8]),
    /// A file staged in `BinaryCache::staging_dir`: moved into place in a
    /// `file://` cache, sent (and left for the caller) to an HTTP one.
    Staged(&'a Path),
}
