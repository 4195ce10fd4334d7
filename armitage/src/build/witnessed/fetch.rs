//! A fixed-output build's own proxy listener, and the variables and CA
//! bundle that point its builder at it.

use super::super::error::BuildError;
use super::super::executor::{ExecSpec, Isolation, Network};
use crate::witness::{BUNDLE_IN_SANDBOX, BuildListener, WitnessService, build_ref};
use std::path::PathBuf;
use store::derivation::Derivation;

/// Proxy variables (curl reads only the lower-case `http_proxy`; Maven
/// only upper case): every scheme goes to the witness, none bypasses it.
const PROXY_VARS: [&str; 8] =
    ["http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY"];
const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];
/// Where nixpkgs' fetchers, OpenSSL, curl and git look for the CA bundle.
const CA_VARS: [&str; 4] = ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE", "NIX_GIT_SSL_CAINFO", "GIT_SSL_CAINFO"];

/// A fixed-output build's witness, alive while the builder runs.
pub struct WitnessedFetch {
    listener: BuildListener,
    bundle: PathBuf,
}

/// The witness for `drv` when it is fixed-output and the daemon has one;
/// a `sandboxed` build's listener is in a network namespace of its own
/// under `network = witnessed`.
pub fn begin(
    witness: Option<&WitnessService>,
    full: &str,
    drv: &Derivation,
    sandboxed: bool,
) -> Result<Option<WitnessedFetch>, BuildError> {
    let (Some(witness), Some(build)) = (witness, build_ref(full, drv)) else { return Ok(None) };
    let listener = witness
        .listen_for(build, sandboxed)
        .map_err(|e| BuildError::Other(format!("opening the witness proxy's listener for '{full}': {e}")))?;
    Ok(Some(WitnessedFetch { listener, bundle: witness.bundle().to_owned() }))
}

impl WitnessedFetch {
    /// Sets the variables in the builder's environment, mounts the bundle
    /// (inside a sandbox; without one the builder reads it on the host),
    /// and puts the build in the listener's network namespace when it has
    /// one.
    pub fn apply(&self, spec: &mut ExecSpec) {
        if let Some(path) = self.listener.netns_path() {
            spec.network = Network::Namespace(path);
        }
        let env = &mut spec.env;
        let mut set = |k: &str, v: &str| match env.iter_mut().find(|(name, _)| name == k.as_bytes()) {
            Some((_, value)) => *value = v.as_bytes().to_vec(),
            None => env.push((k.as_bytes().to_vec(), v.as_bytes().to_vec())),
        };
        for k in PROXY_VARS {
            set(k, &self.listener.url);
        }
        for k in NO_PROXY_VARS {
            set(k, "");
        }
        let bundle = match spec.isolation {
            Isolation::Namespaces => {
                spec.sandbox_paths.insert(format!("{BUNDLE_IN_SANDBOX}={}", self.bundle.display()));
                BUNDLE_IN_SANDBOX.to_owned()
            }
            Isolation::None => self.bundle.display().to_string(),
        };
        for k in CA_VARS {
            set(k, &bundle);
        }
    }
}
