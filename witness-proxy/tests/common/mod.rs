//! What the proxy tests share: an in-memory witness (records and bodies,
//! sha256 with sha2, independent of the on-disk archive) or the on-disk
//! archive itself, a test CA the origins' certificates come from, an HTTPS
//! and a plain HTTP origin on loopback (that count their requests, and can
//! be made to fail or stop), a proxy in front of them, and the real `curl`
//! driving it.
//!
//! A missing `curl` makes a test print why and return, unless `CI` or
//! `ARMITAGE_REQUIRE_NIX=1` is set (as `scripts/test` and CI do): then it
//! fails, so CI never passes by skipping.

use bytes::Bytes;
use data_encoding::HEXLOWER;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use witness_proxy::archive::Archive;
use witness_proxy::ca::WitnessCa;
use witness_proxy::proxy::{Limits, Proxy, ProxyConfig, roots_from_pem_file};
use witness_proxy::record::{BuildRef, Record};
use witness_proxy::sink::{BodyWriter, Witness};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// The login `/secret` wants, and the token its URL carries.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "hunter2pw";
pub const TOKEN: &str = "s3cr3tT0kenXyz";
/// `/big`'s size, sent in [`BIG_CHUNK`] pieces without a length.
pub const BIG_SIZE: usize = 8 << 20;
const BIG_CHUNK: usize = 64 << 10;

pub fn sha256_hex(bytes: &[u8]) -> String {
    HEXLOWER.encode(&Sha256::digest(bytes)[..])
}

/// `/file`'s bytes.
pub fn file_bytes() -> Vec<u8> {
    (0..50_000u32).map(|i| (i.wrapping_mul(7) % 251) as u8).collect()
}

/// `/big`'s bytes.
pub fn big_bytes() -> Vec<u8> {
    (0..BIG_SIZE).map(|i| (i % 253) as u8).collect()
}

pub fn test_build() -> BuildRef {
    BuildRef {
        drv: "/nix/store/00000000000000000000000000000000-src.tar.gz.drv".into(),
        output: "out".into(),
        output_hash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".into(),
        output_hash_mode: "flat".into(),
        network: None,
    }
}

/// Whether `curl` runs here (see [`testkit::tool_available`]).
pub fn curl_available() -> bool {
    testkit::tool_available("curl")
}

// ---------------------------------------------------------------- witness

/// Records and bodies, in memory.
#[derive(Default)]
pub struct MemoryWitness {
    records: Mutex<Vec<Record>>,
    bodies: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl MemoryWitness {
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    pub fn kept(&self, sha256: &str) -> Option<Vec<u8>> {
        self.bodies.lock().unwrap().get(sha256).cloned()
    }

    pub fn kept_count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    /// The records once there are `n` (panics after 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Record> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = self.records();
            if records.len() >= n {
                return records;
            }
            assert!(Instant::now() < deadline, "{} records, not {n}: {records:#?}", records.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Witness for MemoryWitness {
    fn body(&self) -> io::Result<Box<dyn BodyWriter>> {
        Ok(Box::new(MemoryBody { bytes: Vec::new(), into: self.bodies.clone() }))
    }

    fn record(&self, record: &Record) -> io::Result<String> {
        self.records.lock().unwrap().push(record.clone());
        Ok(sha256_hex(&serde_json::to_vec(record).map_err(io::Error::other)?))
    }
}

struct MemoryBody {
    bytes: Vec<u8>,
    into: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Write for MemoryBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BodyWriter for MemoryBody {
    fn commit(self: Box<Self>) -> io::Result<(String, u64)> {
        let sha256 = sha256_hex(&self.bytes);
        let size = self.bytes.len() as u64;
        self.into.lock().unwrap().insert(sha256.clone(), self.bytes);
        Ok((sha256, size))
    }
}

// ---------------------------------------------------------------- origins

/// A CA for test origins.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }
}

/// An origin server on loopback.
pub struct Origin {
    pub port: u16,
    /// sha256 of its certificate, for an HTTPS one.
    pub leaf_sha256: Option<String>,
    control: Arc<Control>,
    task: JoinHandle<()>,
}

/// What a test changes of an origin while it runs, and what it counts.
#[derive(Default)]
struct Control {
    requests: AtomicUsize,
    /// A status every request is answered with; 0: none, the routes serve.
    fail_with: AtomicU16,
}

impl Control {
    /// Counts `request` and answers it: with the failure status when one
    /// is set, else by [`route`].
    async fn serve(self: Arc<Self>, request: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        match StatusCode::from_u16(self.fail_with.load(Ordering::SeqCst)) {
            Ok(status) => Ok(full(status, "failing on purpose\n")),
            Err(_) => route(request).await,
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Requests the origin received so far (before TLS fails, none).
    pub fn requests(&self) -> usize {
        self.control.requests.load(Ordering::SeqCst)
    }

    /// Answers every request with `status` from now on (`None`: serves
    /// its routes again).
    pub fn fail_with(&self, status: Option<StatusCode>) {
        self.control.fail_with.store(status.map_or(0, |s| s.as_u16()), Ordering::SeqCst);
    }

    /// Stops listening: connections to its port are refused from now on.
    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// An HTTPS origin with a certificate from `ca` for localhost and
    /// 127.0.0.1.
    pub async fn https(ca: &TestCa) -> Origin {
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        let leaf_sha256 = Some(sha256_hex(&cert));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let control = Arc::new(Control::default());
        let served = control.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let control = served.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |request| control.clone().serve(request));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Origin { port, leaf_sha256, control, task }
    }

    /// A plain HTTP origin.
    pub async fn http() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let control = Arc::new(Control::default());
        let served = control.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let control = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| control.clone().serve(request));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        Origin { port, leaf_sha256: None, control, task }
    }
}

fn full(status: StatusCode, bytes: impl Into<Bytes>) -> Response<TestBody> {
    let mut response = Response::new(Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// The origins' routes:
/// - `/file`: [`file_bytes`], with HEAD and single `bytes=a-b` ranges;
/// - `/big`: [`big_bytes`] in chunks, no length;
/// - `/redirect`: 302 to `/file`;
/// - `/secret?token=...`: 200 only with [`USER`]'s login and [`TOKEN`];
/// - `/cut`: announces 1000 bytes, sends 100 and breaks off;
/// - `/drip`: 1 KiB every 20 ms, for 10 s.
async fn route(request: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let path = request.uri().path();
    let response = match path {
        "/file" => file_response(&request),
        "/big" => Response::new(Pattern { sent: 0 }.boxed_unsync()),
        "/redirect" => {
            let mut response = full(StatusCode::FOUND, "moved\n");
            response.headers_mut().insert(header::LOCATION, header::HeaderValue::from_static("/file"));
            response
        }
        "/secret" => {
            let want = format!("Basic {}", data_encoding::BASE64.encode(format!("{USER}:{PASSWORD}").as_bytes()));
            let auth_ok = request.headers().get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes() == want.as_bytes());
            let token_ok = request.uri().query() == Some(&format!("token={TOKEN}"));
            match (auth_ok, token_ok) {
                (true, true) => full(StatusCode::OK, "the secret\n"),
                _ => full(StatusCode::UNAUTHORIZED, "who are you\n"),
            }
        }
        "/cut" => {
            let mut response = Response::new(
                Cut { sent: false, pause: Box::pin(tokio::time::sleep(Duration::from_millis(200))) }.boxed_unsync(),
            );
            response.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("1000"));
            response
        }
        "/drip" => {
            Response::new(Drip { left: 500, pause: Box::pin(tokio::time::sleep(Duration::ZERO)) }.boxed_unsync())
        }
        _ => full(StatusCode::NOT_FOUND, "no such thing\n"),
    };
    Ok(response)
}

fn file_response(request: &Request<Incoming>) -> Response<TestBody> {
    let bytes = file_bytes();
    let len = bytes.len();
    let range = request.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        (a <= b && b < len).then_some((a, b))
    });
    let (mut response, length) = match range {
        Some((a, b)) => {
            let mut response = full(StatusCode::PARTIAL_CONTENT, bytes[a..=b].to_vec());
            let content_range = format!("bytes {a}-{b}/{len}");
            response.headers_mut().insert(header::CONTENT_RANGE, content_range.parse().unwrap());
            (response, b + 1 - a)
        }
        None => (full(StatusCode::OK, bytes), len),
    };
    if request.method() == Method::HEAD {
        *response.body_mut() = Empty::new().map_err(|never| match never {}).boxed_unsync();
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, length.into());
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::ETAG, header::HeaderValue::from_static("\"file-v1\""));
    headers.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    response
}

/// `/big`: [`BIG_SIZE`] bytes of a pattern, in [`BIG_CHUNK`] frames.
struct Pattern {
    sent: usize,
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.sent >= BIG_SIZE {
            return Poll::Ready(None);
        }
        let end = (this.sent + BIG_CHUNK).min(BIG_SIZE);
        let chunk: Vec<u8> = (this.sent..end).map(|i| (i % 253) as u8).collect();
        this.sent = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// `/cut`: 100 bytes, then (once the head and those bytes are out) an
/// error that makes the server drop the connection.
struct Cut {
    sent: bool,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Cut {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if !this.sent {
            this.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 100])))));
        }
        match this.pause.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("cut".into()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `/drip`: `left` chunks of 1 KiB, one every 20 ms.
struct Drip {
    left: usize,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Drip {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        match this.pause.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.left -= 1;
                this.pause.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(20));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'd'; 1024])))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

// ---------------------------------------------------------------- setup

/// A proxy with an HTTPS origin its roots trust, one they do not, a plain
/// origin, and a folder for curl's output; its witness in memory unless
/// it is the on-disk archive ([`Setup::with_archive`]).
pub struct Setup<W: Witness = MemoryWitness> {
    pub witness: Arc<W>,
    pub proxy: Arc<Proxy>,
    pub proxy_port: u16,
    pub witness_ca_pem: PathBuf,
    pub origin_ca_pem: PathBuf,
    pub https: Origin,
    pub untrusted: Origin,
    pub http: Origin,
    pub dir: tempfile::TempDir,
    proxy_task: JoinHandle<()>,
}

impl<W: Witness> Drop for Setup<W> {
    fn drop(&mut self) {
        self.proxy_task.abort();
    }
}

/// What curl did: its exit status, stdout (`-w` output) and stderr.
pub struct Curl {
    pub output: Output,
}

impl Curl {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.output.status.success(), "curl failed ({}): {}", self.output.status, self.stderr());
        self
    }
}

impl Setup {
    pub async fn new() -> Setup {
        Setup::with_limits(test_limits()).await
    }

    /// A setup whose proxy has `limits`.
    pub async fn with_limits(limits: Limits) -> Setup {
        Setup::start(limits, |_| Arc::new(MemoryWitness::default())).await
    }
}

impl Setup<Archive> {
    /// A setup whose witness is an archive in the test's folder
    /// (`witness/`).
    pub async fn with_archive() -> Setup<Archive> {
        Setup::start(test_limits(), |dir| Arc::new(Archive::open(dir.join("witness")).unwrap())).await
    }
}

/// The limits of [`Setup::new`].
pub fn test_limits() -> Limits {
    Limits { connect_timeout: Duration::from_secs(5), stall_timeout: Duration::from_secs(20), ..Limits::default() }
}

impl<W: Witness> Setup<W> {
    /// A setup whose proxy has `limits` and the witness `witness` makes
    /// (given the test's folder).
    pub async fn start(limits: Limits, witness: impl FnOnce(&Path) -> Arc<W>) -> Setup<W> {
        let dir = tempfile::tempdir().unwrap();
        let origin_ca = TestCa::new("test origin CA");
        let origin_ca_pem = dir.path().join("origin-ca.pem");
        std::fs::write(&origin_ca_pem, &origin_ca.pem).unwrap();
        let stranger = TestCa::new("a CA nobody trusts");

        let ca = Arc::new(WitnessCa::load_or_create(&dir.path().join("state")).unwrap());
        let witness_ca_pem = dir.path().join("witness-ca-bundle.pem");
        std::fs::write(&witness_ca_pem, ca.cert_pem()).unwrap();
        let witness = witness(dir.path());
        let proxy = Proxy::new(ProxyConfig {
            ca,
            upstream_roots: roots_from_pem_file(&origin_ca_pem).unwrap(),
            witness: witness.clone(),
            build: Some(test_build()),
            limits,
        })
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let proxy = Arc::new(proxy);
        let proxy_task = tokio::spawn(proxy.clone().serve(listener));
        Setup {
            witness,
            proxy,
            proxy_port,
            witness_ca_pem,
            origin_ca_pem,
            https: Origin::https(&origin_ca).await,
            untrusted: Origin::https(&stranger).await,
            http: Origin::http().await,
            dir,
            proxy_task,
        }
    }

    /// A path in the test's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs curl through the proxy, trusting the witness CA, with `args`.
    pub async fn curl(&self, args: &[&str]) -> Curl {
        let ca = self.witness_ca_pem.clone();
        self.curl_trusting(&ca, args).await
    }

    /// Runs curl through the proxy, trusting the CAs in `cacert`.
    pub async fn curl_trusting(&self, cacert: &std::path::Path, args: &[&str]) -> Curl {
        let mut all: Vec<String> = ["-q", "-sS", "--max-time", "60", "-w", "%{http_code}"].map(String::from).to_vec();
        all.extend(["--proxy".to_owned(), format!("http://127.0.0.1:{}", self.proxy_port)]);
        all.extend(["--cacert".to_owned(), cacert.display().to_string()]);
        all.extend(args.iter().map(|a| a.to_string()));
        let output = tokio::task::spawn_blocking(move || {
            let mut command = Command::new("curl");
            command.args(&all);
            for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
                command.env_remove(var).env_remove(var.to_ascii_uppercase());
            }
            command.output().expect("curl runs")
        })
        .await
        .unwrap();
        Curl { output }
    }
}
