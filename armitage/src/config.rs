//! Armitage's own settings, in `armitage.toml`: what CppNix has no setting
//! for. Never in nix.conf, which stock clients read too and warn about keys
//! they do not know. Nix's own settings stay in nix.conf, read as CppNix
//! reads it.
//!
//! Where the file is: `--config FILE` (which must exist), else
//! `$ARMITAGE_CONFIG`, else `DIR/etc/armitage.toml` with `--home DIR`, else
//! `/etc/armitage/armitage.toml`. A missing file (other than one named with
//! `--config`) means every default. Unknown keys are errors, so that a typo
//! never passes for a setting.
//!
//! ```toml
//! [daemon]
//! # What `nix store ping` / `nix store info` show as the daemon's version.
//! reported-version = "2.26.3"
//! # The shell builds get as /bin/sh in the sandbox when nix.conf does not set
//! # sandbox-paths (default: found on the machine, see docs/daemon.md).
//! sandbox-shell = "/bin/busybox"
//!
//! [witness]
//! # Fixed-output builds fetch through the witness proxy (default: true).
//! enabled = true
//! # Where its archive (cas/, traces/, indexes) and CA live
//! # (default: <state dir>/witness).
//! dir = "/var/lib/armitage/witness"
//! # The network of sandboxed fixed-output builds: "witnessed" (a namespace
//! # whose only way out is the proxy; needs a root daemon) or "host"
//! # (CppNix's: fetches that ignore the proxy are not witnessed).
//! network = "witnessed"
//! # Collect the witness after each store garbage collection that deletes
//! # paths: what no valid output needs goes (default: false).
//! gc-with-store = false
//! # "online": upstreams are asked, and when one fails the witnessed bytes
//! # for the URL are served; "offline": only witnessed bytes are served.
//! mode = "online"
//! # Serve the witness as a mirror for nix.conf's hashed-mirrors
//! # (`hashed-mirrors = http://127.0.0.1:8090/`; default: not served).
//! mirror-listen = "127.0.0.1:8090"
//!
//! [s3]
//! # The bucket built outputs and witnessed objects are uploaded to, as
//! # CppNix spells an S3 binary cache (default: no uploads). Outputs go
//! # there as a binary cache (narinfo, nar/, with the URL's compression),
//! # witnessed objects under cas/; see docs/s3.md.
//! url = "s3://armitage?endpoint=127.0.0.1:3900&region=garage&scheme=http"
//! # AWS-format credentials for it (default: AWS_ACCESS_KEY_ID and
//! # AWS_SECRET_ACCESS_KEY, then ~/.aws/credentials).
//! credentials-file = "/etc/armitage/s3-credentials"
//! # What goes there (both default to true).
//! upload-outputs = true
//! upload-witness = true
//! # The longest wait between two tries of a failed upload, in seconds.
//! max-retry-delay = 300
//! ```

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the configuration file is by default.
pub const DEFAULT_PATH: &str = "/etc/armitage/armitage.toml";

/// The Nix release whose daemon armitage stands in for: its worker
/// protocol (1.38) and its behaviour where Nix versions differ.
pub const NIX_VERSION: &str = "2.26.3";

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub witness: WitnessConfig,
    #[serde(default)]
    pub s3: S3Config,
}

/// The bucket armitage uploads to (see `crate::upload`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct S3Config {
    /// `s3://bucket?endpoint=…&region=…&scheme=…` with the binary cache's
    /// parameters (`compression`, `write-nar-listing`); None: no uploads.
    pub url: Option<String>,
    /// An AWS-format credentials file; None: the environment and
    /// `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
    /// Built outputs (with their closures) go to the bucket's binary cache.
    pub upload_outputs: bool,
    /// Witnessed objects and kept fixed outputs go to its `cas/`.
    pub upload_witness: bool,
    /// The longest wait between two tries of a failed upload, in seconds.
    pub max_retry_delay: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config { url: None, credentials_file: None, upload_outputs: true, upload_witness: true, max_retry_delay: 300 }
    }
}

/// The witness proxy (see `crate::witness`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct WitnessConfig {
    /// Fixed-output builds fetch through the proxy and their fetches are
    /// recorded. On by default.
    pub enabled: bool,
    /// The archive's and the CA's folder; None: `<state dir>/witness`.
    pub dir: Option<PathBuf>,
    /// The network of sandboxed fixed-output builds.
    pub network: WitnessNetwork,
    /// Collect the witness (`armitage witness gc`) after each garbage
    /// collection of the store that deletes paths.
    pub gc_with_store: bool,
    /// Whether the proxy asks upstreams at all.
    pub mode: WitnessMode,
    /// Where to serve the witness CAS as a `hashed-mirrors` mirror
    /// (`/<algo>/<hex>`), e.g. `127.0.0.1:8090`; None: nowhere.
    pub mirror_listen: Option<std::net::SocketAddr>,
}

/// Whether the witness proxy asks upstreams.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WitnessMode {
    /// Upstreams are asked; when one fails (unreachable, 4xx/5xx), the
    /// witnessed bytes for the URL are served instead.
    #[default]
    Online,
    /// Upstreams are never asked: only witnessed bytes are served.
    Offline,
}

/// The network a sandboxed fixed-output build gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WitnessNetwork {
    /// A network namespace of its own whose only way out is the witness
    /// proxy: a builder that ignores the proxy variables cannot connect.
    #[default]
    Witnessed,
    /// The host's network, as CppNix gives fixed-output builds: fetches
    /// that honour the proxy variables are witnessed, others are not.
    Host,
}

impl Default for WitnessConfig {
    fn default() -> Self {
        WitnessConfig {
            enabled: true,
            dir: None,
            network: WitnessNetwork::default(),
            gc_with_store: false,
            mode: WitnessMode::default(),
            mirror_listen: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DaemonConfig {
    /// The version the daemon reports to clients (protocol 1.33 and later:
    /// `nix store ping`, `nix store info`). Scripts compare it with Nix's
    /// versions (`builtins.compareVersions`), so the default is the Nix
    /// version armitage stands in for, followed by armitage's own:
    /// `2.26.3-armitage-0.1.0`, which orders after 2.26.3 and before
    /// 2.26.4.
    pub reported_version: String,
    /// The shell builds get as `/bin/sh` in the sandbox when nix.conf does
    /// not set `sandbox-paths` (CppNix builds one in at compile time). None:
    /// found on the machine (a static busybox or bash, else the host's
    /// /bin/sh with its libraries).
    pub sandbox_shell: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig { reported_version: default_reported_version(), sandbox_shell: None }
    }
}

/// See [`DaemonConfig::reported_version`].
pub fn default_reported_version() -> String {
    format!("{NIX_VERSION}-armitage-{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading '{}': {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("'{}' line {line}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, message: String },
}

impl Config {
    /// Reads the file at `path`; a missing file gives the defaults unless
    /// `must_exist`.
    pub fn load(path: &Path, must_exist: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                tracing::debug!("no configuration file at '{}': using the defaults", path.display());
                return Ok(Config::default());
            }
            Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
        };
        Self::parse(&text).map_err(|(line, message)| ConfigError::Parse { path: path.to_owned(), line, message })
    }

    /// Parses the file's text; an error is its line and a one-line message.
    pub fn parse(text: &str) -> Result<Config, (usize, String)> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map_or(1, |s| text.as_bytes()[..s.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1);
            (line, e.message().trim().replace('\n', " "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_empty() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.daemon.reported_version, format!("2.26.3-armitage-{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(c.daemon.sandbox_shell, None);
    }

    #[test]
    fn daemon_settings() {
        let c = Config::parse("[daemon]\nreported-version = \"2.8.0\"\nsandbox-shell = \"/bin/busybox\"\n").unwrap();
        assert_eq!(c.daemon.reported_version, "2.8.0");
        assert_eq!(c.daemon.sandbox_shell.as_deref(), Some(Path::new("/bin/busybox")));
    }

    #[test]
    fn witness_settings() {
        assert!(Config::default().witness.enabled);
        let c = Config::parse("[witness]\nenabled = false\ndir = \"/w\"\n").unwrap();
        assert!(!c.witness.enabled);
        assert_eq!(c.witness.dir.as_deref(), Some(Path::new("/w")));
        assert!(Config::parse("[witness]\nenable = false\n").is_err());
        assert_eq!(Config::default().witness.network, WitnessNetwork::Witnessed);
        assert_eq!(Config::parse("[witness]\nnetwork = \"host\"\n").unwrap().witness.network, WitnessNetwork::Host);
        assert!(Config::parse("[witness]\nnetwork = \"none\"\n").is_err());
        assert!(Config::parse("[witness]\ngc-with-store = true\n").unwrap().witness.gc_with_store);
        let c = Config::parse("[witness]\nmode = \"offline\"\nmirror-listen = \"127.0.0.1:8090\"\n").unwrap();
        assert_eq!(c.witness.mode, WitnessMode::Offline);
        assert_eq!(c.witness.mirror_listen, Some("127.0.0.1:8090".parse().unwrap()));
        assert!(Config::parse("[witness]\nmode = \"sometimes\"\n").is_err());
    }

    #[test]
    fn s3_settings() {
        assert_eq!(Config::default().s3.url, None);
        let c = Config::parse(
            "[s3]\nurl = \"s3://b?endpoint=127.0.0.1:3900&scheme=http\"\ncredentials-file = \"/c\"\nupload-witness = false\nmax-retry-delay = 2\n",
        )
        .unwrap();
        assert_eq!(c.s3.url.as_deref(), Some("s3://b?endpoint=127.0.0.1:3900&scheme=http"));
        assert_eq!(c.s3.credentials_file.as_deref(), Some(Path::new("/c")));
        assert!(c.s3.upload_outputs && !c.s3.upload_witness);
        assert_eq!(c.s3.max_retry_delay, 2);
        assert!(Config::parse("[s3]\nbucket = \"b\"\n").is_err());
    }

    /// A misspelt key is an error on its line, never silently a default.
    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let (line, message) = Config::parse("[daemon]\n\nreported-versoin = \"2.8.0\"\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(message.contains("reported-versoin"), "{message}");
        assert!(!message.contains('\n'));
        let (line, message) = Config::parse("[demon]\n").unwrap_err();
        assert_eq!(line, 1);
        assert!(message.contains("demon"), "{message}");
    }

    #[test]
    fn a_missing_file_is_the_defaults_unless_named_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("armitage.toml");
        assert_eq!(Config::load(&missing, false).unwrap(), Config::default());
        let e = Config::load(&missing, true).unwrap_err().to_string();
        assert!(e.starts_with(&format!("reading '{}'", missing.display())), "{e}");
    }
}
