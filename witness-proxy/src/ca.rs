//! The witness CA: one per daemon, made on first start and kept as
//! `witness-ca.key` (mode 0600, never readable by others, not even for a
//! moment) and `witness-ca.pem` in the daemon's state folder, loaded on
//! later starts. It issues the per-host leaf certificates the proxy shows a
//! client after CONNECT: an IP SAN for an IP literal (v4, or v6 with or
//! without brackets), a DNS SAN otherwise, valid from a day ago for about a
//! year and never past the CA itself. Leaves are kept in a bounded cache.
//!
//! A CA that has expired, or will within [`RENEW_BEFORE_DAYS`], is replaced
//! by a new one on load: clients get the CA from the bundle made for each
//! build ([`WitnessCa::cert_pem`]), so a new one costs nothing.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use time::{Duration, OffsetDateTime};

/// The CA's private key, PKCS#8 PEM, mode 0600.
pub const KEY_FILE: &str = "witness-ca.key";
/// The CA's certificate, PEM.
pub const CERT_FILE: &str = "witness-ca.pem";
/// How many leaves are kept; past that the oldest made is dropped.
pub const LEAF_CACHE_SIZE: usize = 1024;
/// A CA closer than this to its end is replaced on load.
pub const RENEW_BEFORE_DAYS: i64 = 30;

const CA_VALID_DAYS: i64 = 10 * 365;
const LEAF_VALID_DAYS: i64 = 365;
/// A cached leaf older than this is made again, long before it expires.
const LEAF_REUSE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
const CA_ORGANIZATION: &str = "Armitage";
const CA_NAME: &str = "Armitage witness CA";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the witness CA key {} is readable by others (mode {mode:03o}): chmod 600 it", path.display())]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("{} is not a usable witness CA: {why} (move it away to have a new CA made)", path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("cannot make a certificate: {0}")]
    Make(#[from] rcgen::Error),
    #[error("rustls refuses a witness certificate: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no certificate can name {host:?}: {why}")]
    Host { host: String, why: String },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CaError + 'a {
    move |source| CaError::Io { action, path: path.to_owned(), source }
}

/// The per-daemon CA and the leaves it made.
pub struct WitnessCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<LeafCache>,
}

impl fmt::Debug for WitnessCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WitnessCa").field("not_before", &self.not_before).field("not_after", &self.not_after).finish()
    }
}

impl WitnessCa {
    /// Loads the CA kept in `dir`, or makes one there (creating `dir`, 0700,
    /// when missing) when there is none, when half of one is there (a crash
    /// while it was being made) or when it is about to expire.
    pub fn load_or_create(dir: &Path) -> Result<WitnessCa, CaError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        let have_key = key_path.try_exists().map_err(io_error("look at", &key_path))?;
        let have_cert = cert_path.try_exists().map_err(io_error("look at", &cert_path))?;
        if have_key && have_cert {
            let ca = Self::load(&key_path, &cert_path)?;
            let renew_at = ca.not_after - Duration::days(RENEW_BEFORE_DAYS);
            if OffsetDateTime::now_utc() < renew_at {
                return Ok(ca);
            }
            tracing::info!(not_after = %ca.not_after, "the witness CA in {} is about to expire: making a new one", dir.display());
        } else if have_key || have_cert {
            tracing::warn!("half a witness CA in {} (a crash while it was made?): making a new one", dir.display());
        }
        Self::create(dir, &key_path, &cert_path)
    }

    fn create(dir: &Path, key_path: &Path, cert_path: &Path) -> Result<WitnessCa, CaError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error("create", dir))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc();
        let params = ca_params(now - Duration::days(1), now + Duration::days(CA_VALID_DAYS));
        let cert = params.self_signed(&key)?;
        // The key first: a crash between the two leaves a key without its
        // certificate, which the next start replaces.
        write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
        tracing::info!("made a new witness CA in {}", dir.display());
        let (not_before, not_after) = (params.not_before, params.not_after);
        Ok(Self::assemble(cert.pem(), cert.der().clone(), params, key, not_before, not_after))
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<WitnessCa, CaError> {
        let invalid = |path: &Path, why: String| CaError::Invalid { path: path.to_owned(), why };
        let mode = fs::metadata(key_path).map_err(io_error("look at", key_path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyMode { path: key_path.to_owned(), mode });
        }
        let key_pem = fs::read_to_string(key_path).map_err(io_error("read", key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(key_path, format!("not a private key: {e}")))?;
        let cert_pem = fs::read_to_string(cert_path).map_err(io_error("read", cert_path))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(cert_path, format!("no PEM certificate: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| invalid(cert_path, format!("not an X.509 certificate: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(cert_path, format!("its key is not the one in {}", key_path.display())));
        }
        let time = |t: &x509_parser::time::ASN1Time| {
            OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| invalid(cert_path, format!("validity: {e}")))
        };
        let (not_before, not_after) = (time(&x509.validity().not_before)?, time(&x509.validity().not_after)?);
        let params = ca_params(not_before, not_after);
        let ca_subject = x509.subject().as_raw().to_vec();
        let ca = Self::assemble(cert_pem, cert_der.clone(), params, key, not_before, not_after);
        // Leaves name their issuer by the subject rebuilt from `ca_params`;
        // a CA made otherwise would issue leaves no client can chain.
        let (probe, _) = ca.make_leaf_der("witness-ca.invalid")?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&probe)
            .map_err(|e| invalid(cert_path, format!("its leaves do not parse: {e}")))?;
        if leaf.issuer().as_raw() != ca_subject.as_slice() {
            return Err(invalid(cert_path, "its subject is not the one Armitage gives its CA".to_owned()));
        }
        Ok(ca)
    }

    fn assemble(
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        params: CertificateParams,
        key: KeyPair,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> WitnessCa {
        WitnessCa {
            cert_pem,
            cert_der,
            issuer: Issuer::new(params, key),
            not_before,
            not_after,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            leaves: Mutex::new(LeafCache::default()),
        }
    }

    /// The CA certificate, PEM, for the bundles clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A leaf certificate and key for `host` (a DNS name, or an IP address,
    /// a v6 one with or without brackets), made on first use and cached.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = normalize_host(host);
        if let Some(hit) = self.leaves.lock().unwrap_or_else(PoisonError::into_inner).get(&host) {
            return Ok(hit);
        }
        let (cert, key) = self.make_leaf_der(&host)?;
        let made = Arc::new(CertifiedKey::from_der(vec![cert], key, &self.provider)?);
        Ok(self.leaves.lock().unwrap_or_else(PoisonError::into_inner).insert(host, made))
    }

    fn make_leaf_der(&self, host: &str) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                let refused = |why: String| CaError::Host { host: host.to_owned(), why };
                DnsName::try_from(host).map_err(|e| refused(e.to_string()))?;
                params.distinguished_name.push(DnType::CommonName, host);
                SanType::DnsName(rcgen::string::Ia5String::try_from(host).map_err(|e| refused(e.to_string()))?)
            }
        };
        params.subject_alt_names = vec![san];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = (now - Duration::days(1)).max(self.not_before);
        params.not_after = (now + Duration::days(LEAF_VALID_DAYS)).min(self.not_after);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))))
    }
}

/// The CA's parameters, the same when made and when loaded: leaves name
/// their issuer by this subject.
fn ca_params(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

/// Lower case, no brackets around a v6 address, no final dot.
fn normalize_host(host: &str) -> String {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Writes `path` whole or not at all, through a temporary file created with
/// `mode` (so a key is never readable by others, not even while written).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error("remove", &tmp)(e)),
        _ => {}
    }
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("rename into place", path))
}

/// Leaves by host, the oldest made dropped first past [`LEAF_CACHE_SIZE`].
#[derive(Default)]
struct LeafCache {
    by_host: HashMap<String, (Arc<CertifiedKey>, Instant)>,
    order: VecDeque<String>,
}

impl LeafCache {
    fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let (leaf, made) = self.by_host.get(host)?;
        (made.elapsed() < LEAF_REUSE).then(|| leaf.clone())
    }

    /// Keeps `leaf` unless a fresh one for `host` was made meanwhile;
    /// returns the one kept.
    fn insert(&mut self, host: String, leaf: Arc<CertifiedKey>) -> Arc<CertifiedKey> {
        if let Some(kept) = self.get(&host) {
            return kept;
        }
        if self.by_host.insert(host.clone(), (leaf.clone(), Instant::now())).is_none() {
            self.order.push_back(host);
        }
        while self.by_host.len() > LEAF_CACHE_SIZE {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.by_host.remove(&oldest);
                }
                None => break,
            }
        }
        leaf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    fn verify(ca_pem: &str, leaf: &CertifiedKey, name: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier.verify_server_cert(leaf.end_entity_cert()?, &[], &name, &[], UnixTime::now()).map(|_| ())
    }

    #[test]
    fn leaves_verify_against_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = WitnessCa::load_or_create(dir.path()).unwrap();
        let leaf = ca.leaf("Example.ORG.").unwrap();
        verify(ca.cert_pem(), &leaf, "example.org").unwrap();
        assert!(verify(ca.cert_pem(), &leaf, "other.example").is_err(), "a leaf names one host");
        assert!(Arc::ptr_eq(&leaf, &ca.leaf("example.org").unwrap()), "leaves are cached");
    }

    #[test]
    fn ip_hosts_get_ip_sans() {
        let dir = tempfile::tempdir().unwrap();
        let ca = WitnessCa::load_or_create(dir.path()).unwrap();
        verify(ca.cert_pem(), &ca.leaf("127.0.0.1").unwrap(), "127.0.0.1").unwrap();
        verify(ca.cert_pem(), &ca.leaf("[::1]").unwrap(), "::1").unwrap();
        verify(ca.cert_pem(), &ca.leaf("::1").unwrap(), "::1").unwrap();
        assert!(verify(ca.cert_pem(), &ca.leaf("127.0.0.1").unwrap(), "127.0.0.2").is_err());
    }

    #[test]
    fn leaves_stay_within_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = WitnessCa::load_or_create(dir.path()).unwrap();
        let leaf = ca.leaf("example.org").unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(leaf.end_entity_cert().unwrap()).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let validity = x509.validity();
        assert!(validity.not_before.timestamp() <= now - 23 * 3600);
        assert!(validity.not_after.timestamp() >= now + 300 * 24 * 3600);
        assert!(validity.not_after.timestamp() <= ca.not_after.unix_timestamp());
    }

    #[test]
    fn names_no_certificate_can_hold_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = WitnessCa::load_or_create(dir.path()).unwrap();
        for bad in ["", "exa mple.org", "ex\u{e4}mple.org", "a/b"] {
            assert!(matches!(ca.leaf(bad), Err(CaError::Host { .. })), "{bad:?}");
        }
    }

    #[test]
    fn files_have_their_modes_and_a_reload_gives_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = WitnessCa::load_or_create(&state).unwrap();
        let mode = |name: &str| fs::metadata(state.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CERT_FILE) & 0o022, 0, "no one else writes the certificate");
        assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o077, 0);
        assert_eq!(fs::read_to_string(state.join(CERT_FILE)).unwrap(), first.cert_pem());

        let again = WitnessCa::load_or_create(&state).unwrap();
        assert_eq!(again.cert_pem(), first.cert_pem());
        verify(first.cert_pem(), &again.leaf("example.org").unwrap(), "example.org").unwrap();
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        WitnessCa::load_or_create(dir.path()).unwrap();
        fs::set_permissions(dir.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let err = WitnessCa::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, CaError::KeyMode { mode: 0o644, .. }), "{err}");
    }

    #[test]
    fn half_a_ca_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = WitnessCa::load_or_create(dir.path()).unwrap();
        fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let second = WitnessCa::load_or_create(dir.path()).unwrap();
        assert_ne!(first.cert_pem(), second.cert_pem());
        assert_eq!(WitnessCa::load_or_create(dir.path()).unwrap().cert_pem(), second.cert_pem());
    }

    #[test]
    fn a_certificate_that_is_not_the_keys_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        WitnessCa::load_or_create(a.path()).unwrap();
        WitnessCa::load_or_create(b.path()).unwrap();
        fs::copy(b.path().join(CERT_FILE), a.path().join(CERT_FILE)).unwrap();
        let err = WitnessCa::load_or_create(a.path()).unwrap_err();
        assert!(matches!(err, CaError::Invalid { .. }), "{err}");
    }

    #[test]
    fn the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ca = WitnessCa::load_or_create(dir.path()).unwrap();
        let leaf = ca.leaf("example.org").unwrap();
        let mut cache = LeafCache::default();
        for i in 0..LEAF_CACHE_SIZE + 10 {
            cache.insert(format!("h{i}.example"), leaf.clone());
        }
        assert_eq!(cache.by_host.len(), LEAF_CACHE_SIZE);
        assert!(cache.get("h0.example").is_none() && cache.get("h1033.example").is_some());
    }
}
