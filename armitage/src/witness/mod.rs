//! The daemon's witness: the proxy every fixed-output build fetches
//! through, the archive its records and bodies go to, and the CA bundle
//! builds trust it with. Started once per daemon ([`WitnessService::start`]);
//! each fixed-output build gets a listener of its own on the loopback
//! ([`WitnessService::listen_for`]), so every exchange is attributed to its
//! derivation without proxy authentication.
//!
//! Builds reach the proxy through the usual proxy variables. Under
//! `network = witnessed` (the default) a sandboxed fixed-output build runs
//! in a network namespace of its own whose only way out is its listener
//! ([`netns`]): a builder that ignores the variables cannot connect
//! anywhere. Under `network = host`, without a sandbox, or with a daemon
//! that cannot make namespaces (not root), the build keeps the host's
//! network (CppNix's behaviour for fixed-output derivations), its listener
//! is on the host's loopback, and a builder that ignores the variables is
//! not stopped.

pub mod bypass;
pub mod netns;
pub mod retention;

use crate::config::{WitnessConfig, WitnessMode, WitnessNetwork};
use netns::BuildNetns;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::content_address::{ContentAddressMethod, FileIngestionMethod};
use store::derivation::{Derivation, Output};
use witness_proxy::archive::{Archive, ArchiveError};
use witness_proxy::ca::WitnessCa;
use witness_proxy::cas::{Cas, LocalCas, Tiered};
use witness_proxy::proxy::{Limits, Mode, Proxy, ProxyConfig, roots_from_pem_file};
use witness_proxy::record::BuildRef;

/// Where the bundle sits inside a sandbox: CppNix's place for
/// `ssl-cert-file` in fixed-output sandboxes, and nixpkgs' OpenSSL default.
pub const BUNDLE_IN_SANDBOX: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The roots the daemon verifies upstreams with when nothing names others.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why the witness could not start.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness CA in '{}': {source}", dir.display())]
    Ca { dir: PathBuf, source: witness_proxy::ca::CaError },
    #[error("witness archive in '{}': {source}", dir.display())]
    Archive { dir: PathBuf, source: witness_proxy::archive::ArchiveError },
    #[error("upstream roots: {0}")]
    Roots(#[from] witness_proxy::proxy::ProxyError),
    #[error("writing the witness CA bundle '{}': {source}", path.display())]
    Bundle { path: PathBuf, source: io::Error },
    #[error("serving the witness mirror on {addr}: {source}")]
    Mirror { addr: std::net::SocketAddr, source: io::Error },
}

/// The proxy, the archive and the bundle, shared by all builds.
pub struct WitnessService {
    proxy: Arc<Proxy>,
    archive: Arc<Archive>,
    bundle: PathBuf,
    runtime: tokio::runtime::Handle,
    /// Whether sandboxed builds get a namespace of their own (configured,
    /// and this daemon can make them).
    namespaces: bool,
    /// `[witness] gc-with-store`.
    gc_with_store: bool,
}

/// A build's own proxy listener; dropping it stops serving it.
pub struct BuildListener {
    /// `http://127.0.0.1:<port>`, for the proxy variables.
    pub url: String,
    /// The namespace it is in, when not the host's.
    netns: Option<BuildNetns>,
    /// The proxy's task, and those of the namespace's catchers.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BuildListener {
    /// The path that opens the listener's network namespace, when it has
    /// one of its own (the build must join it to reach the listener).
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.netns.as_ref().map(BuildNetns::path)
    }
}

impl Drop for BuildListener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl WitnessService {
    /// Opens (or makes) the archive and the CA under the configured folder
    /// (default `<state dir>/witness`), and writes the bundle builds trust:
    /// the witness CA first, then the upstream roots. Upstreams are
    /// verified against the CA file CppNix would use: `NIX_SSL_CERT_FILE`,
    /// else `SSL_CERT_FILE`, else `ssl_cert_file` (nix.conf's
    /// `ssl-cert-file`), else the system bundle. Must be called inside the
    /// daemon's runtime.
    /// With `remote` (the `[s3]` bucket's CAS), an object the archive
    /// lacks is read from there.
    pub fn start(
        config: &WitnessConfig,
        state_dir: &Path,
        ssl_cert_file: Option<&Path>,
        remote: Option<Arc<dyn Cas>>,
    ) -> Result<WitnessService, WitnessError> {
        let dir = config.dir.clone().unwrap_or_else(|| state_dir.join("witness"));
        let roots_file = roots_file(ssl_cert_file);
        let Opened { proxy, archive, ca_pem } = open(&dir, &roots_file, config.mode, remote)?;
        let bundle = dir.join("ca-bundle.crt");
        write_bundle(&bundle, &ca_pem, &roots_file)?;
        if let Some(addr) = config.mirror_listen {
            let fail = |source| WitnessError::Mirror { addr, source };
            let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
            listener.set_nonblocking(true).map_err(fail)?;
            let listener = tokio::net::TcpListener::from_std(listener).map_err(fail)?;
            tokio::spawn(witness_proxy::mirror::serve_mirror(archive.clone(), listener));
            tracing::info!("witness mirror on http://{addr}/ (nix.conf: hashed-mirrors = http://{addr}/)");
        }
        let namespaces = config.network == WitnessNetwork::Witnessed
            && match netns::supported() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        "network = witnessed: {e}; fixed-output builds keep the host's network (their fetches \
                         through the proxy are witnessed, others are not)"
                    );
                    false
                }
            };
        tracing::info!("witness proxy ready: archive '{}', upstream roots '{}'", dir.display(), roots_file.display());
        Ok(WitnessService {
            proxy,
            archive,
            bundle,
            runtime: tokio::runtime::Handle::current(),
            namespaces,
            gc_with_store: config.gc_with_store,
        })
    }

    /// The archive the proxy writes to.
    pub fn archive(&self) -> &Arc<Archive> {
        &self.archive
    }

    /// After a garbage collection of `store` that deleted paths: collects
    /// the witness too when `[witness] gc-with-store` says so (logged;
    /// a failure leaves the archive as it was). Blocking.
    pub fn after_store_gc(&self, store: &local_store::LocalStore) {
        if !self.gc_with_store {
            return;
        }
        match retention::collect(&self.archive, store, false) {
            Ok(report) => tracing::info!(
                "witness collected after the store's: {} records and {} objects ({} bytes) removed",
                report.records_removed,
                report.objects_removed,
                report.bytes_freed
            ),
            Err(e) => tracing::warn!("cannot collect the witness after the store's garbage collection: {e}"),
        }
    }

    /// The CA bundle on the host (witness CA first).
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// A listener serving `build` alone: in a network namespace of its own
    /// for a `sandboxed` build under `network = witnessed`, else on the
    /// host's loopback. Its records say which (`network`: `witnessed` or
    /// `host`).
    pub fn listen_for(&self, mut build: BuildRef, sandboxed: bool) -> io::Result<BuildListener> {
        let own_namespace = sandboxed && self.namespaces;
        build.network = Some(if own_namespace { "witnessed" } else { "host" }.to_owned());
        let (netns, std_listener, catchers) = if own_namespace {
            let (netns, inside) = BuildNetns::new()?;
            (Some(netns), inside.listener, Some(inside.catchers))
        } else {
            (None, std::net::TcpListener::bind(("127.0.0.1", 0))?, None)
        };
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let _entered = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let mut tasks = match catchers {
            Some(catchers) => bypass::spawn(catchers, self.archive.clone(), build.clone())?,
            None => Vec::new(),
        };
        tasks.push(self.runtime.spawn(self.proxy.clone().serve_for(listener, Some(build))));
        Ok(BuildListener { url: format!("http://127.0.0.1:{port}"), netns, tasks })
    }
}

/// A witness proxy and its archive, opened in a witness folder.
pub struct Opened {
    pub proxy: Arc<Proxy>,
    pub archive: Arc<Archive>,
    /// The witness CA's certificate (PEM): what clients must trust.
    pub ca_pem: String,
}

/// Opens (or makes) the CA and the archive in `dir` and the proxy on them,
/// verifying upstreams against `roots_file`, in `mode`: the daemon's and
/// `armitage witness proxy`'s. With `remote`, the archive reads objects it
/// lacks from there ([`Tiered`]).
pub fn open(
    dir: &Path,
    roots_file: &Path,
    mode: WitnessMode,
    remote: Option<Arc<dyn Cas>>,
) -> Result<Opened, WitnessError> {
    let ca =
        WitnessCa::load_or_create(&dir.join("ca")).map_err(|source| WitnessError::Ca { dir: dir.into(), source })?;
    let archive_error = |source| WitnessError::Archive { dir: dir.into(), source };
    let archive = match remote {
        None => Archive::open(dir),
        Some(remote) => LocalCas::open(dir)
            .map_err(ArchiveError::from)
            .and_then(|local| Archive::with_cas(dir, Arc::new(Tiered::new(Arc::new(local), remote)))),
    };
    let archive = Arc::new(archive.map_err(archive_error)?);
    let ca_pem = ca.cert_pem().to_owned();
    let proxy = Proxy::new(ProxyConfig {
        ca: Arc::new(ca),
        upstream_roots: roots_from_pem_file(roots_file)?,
        witness: archive.clone(),
        build: None,
        limits: Limits::default(),
    })?;
    if mode == WitnessMode::Offline {
        proxy.set_mode(Mode::Offline);
    }
    Ok(Opened { proxy: Arc::new(proxy), archive, ca_pem })
}

/// What a fixed-output derivation's records say of it: its path, its one
/// output and the hash it declares. None for any other derivation.
pub fn build_ref(drv_path: &str, drv: &Derivation) -> Option<BuildRef> {
    let (name, Output::Fixed(ca)) = drv.outputs.iter().next()? else { return None };
    Some(BuildRef {
        drv: drv_path.to_owned(),
        output: name.clone(),
        output_hash: ca.hash.to_string(),
        output_hash_mode: mode_name(ca.method).to_owned(),
        network: None,
    })
}

/// How the declared hash covers the output, in the words records use.
fn mode_name(method: ContentAddressMethod) -> &'static str {
    match method {
        ContentAddressMethod::Text => "text",
        ContentAddressMethod::Fixed(FileIngestionMethod::Flat) => "flat",
        ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => "recursive",
        ContentAddressMethod::Fixed(FileIngestionMethod::Git) => "git",
    }
}

/// CppNix's choice of CA file (2.26's `caFile`): `NIX_SSL_CERT_FILE`,
/// `SSL_CERT_FILE`, `ssl-cert-file`, the system bundle.
pub fn roots_file(ssl_cert_file: Option<&Path>) -> PathBuf {
    ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|v| !v.is_empty()).map(PathBuf::from))
        .or_else(|| ssl_cert_file.map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from(SYSTEM_BUNDLE))
}

/// Writes the witness CA then the roots into `path`, atomically, readable
/// by build users (it holds only certificates).
fn write_bundle(path: &Path, ca_pem: &str, roots_file: &Path) -> Result<(), WitnessError> {
    let fail = |source| WitnessError::Bundle { path: path.to_owned(), source };
    let roots = std::fs::read(roots_file).map_err(fail)?;
    let mut text = ca_pem.as_bytes().to_vec();
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(&roots);
    let tmp = path.with_extension("crt.tmp");
    std::fs::write(&tmp, &text).map_err(fail)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
