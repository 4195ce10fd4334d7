//! `nix.conf`: the file syntax ([`parser`]), typed values (booleans,
//! sizes, lists, sets, [`SandboxMode`]), the settings a daemon honours with
//! CppNix's names and defaults ([`Settings`]), and loading them the way
//! CppNix's `loadConfFile` does ([`load`]).
//!
//! Loading reads `$NIX_CONF_DIR/nix.conf` (or a given file; a missing one is
//! no error), then the per-user files, then `NIX_CONFIG`. Within each, the
//! `experimental-features` lines are applied first (2.26), then the rest in
//! order, later assignments overriding earlier ones and `extra-NAME`
//! appending. Everything CppNix would print as a warning is returned in
//! [`Loaded::warnings`] instead: unknown settings (once each, by name, after
//! everything is read), unknown experimental features, settings whose
//! feature is off, and files that exist but cannot be read.
//!
//! All inputs are parameters ([`ConfigEnv`], [`Host`]): nothing here reads
//! the process environment except [`ConfigEnv::from_process`] and
//! [`Host::detect`].

mod env;
mod features;
mod host;
pub mod parser;
mod settings;
mod value;
mod warning;

pub use env::ConfigEnv;
pub use features::ExperimentalFeature;
pub use host::Host;
pub use parser::{Assignment, ParseError};
pub use settings::{CACHE_NIXOS_ORG_KEY, SETTINGS, SettingInfo, Settings, is_known, lookup};
pub use value::{SandboxMode, SettingError};
pub use warning::Warning;

use std::path::Path;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum NixConfError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A value a setting does not accept, with where it was written.
    #[error("{origin}:{line}: {source}")]
    Setting { origin: String, line: usize, source: SettingError },
}

/// Settings together with the warnings reading them produced.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<Warning>,
}

/// Loads the daemon's configuration from `$NIX_CONF_DIR/nix.conf`.
pub fn load(env: &ConfigEnv, host: &Host) -> Result<Loaded, NixConfError> {
    load_file(&env.conf_file(), env, host)
}

/// Loads configuration with `conf_file` in place of `nix.conf`.
pub fn load_file(conf_file: &Path, env: &ConfigEnv, host: &Host) -> Result<Loaded, NixConfError> {
    let mut settings = Settings::new(host, env);
    let mut warnings = Vec::new();
    apply_file(&mut settings, conf_file, &mut warnings)?;
    for file in env.user_conf_files.iter().rev() {
        apply_file(&mut settings, file, &mut warnings)?;
    }
    if let Some(text) = &env.nix_config {
        let parsed = parser::parse_str(text, "NIX_CONFIG", &env.cwd)?;
        warnings.extend(parsed.warnings);
        apply(&mut settings, &parsed.assignments, &mut warnings)?;
    }
    warnings.extend(settings.unknown.keys().map(|name| Warning::UnknownSetting(name.clone())));
    Ok(Loaded { settings, warnings })
}

/// Applies a configuration file; a missing one is skipped and an unreadable
/// one warned about, as CppNix ignores both.
fn apply_file(settings: &mut Settings, path: &Path, warnings: &mut Vec<Warning>) -> Result<(), NixConfError> {
    let parsed = match parser::parse_file(path) {
        Ok(parsed) => parsed,
        Err(ParseError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(ParseError::Read { path, source }) => {
            warnings.push(Warning::UnreadableFile { path, error: source.to_string() });
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    warnings.extend(parsed.warnings);
    apply(settings, &parsed.assignments, warnings)
}

/// Applies assignments as CppNix 2.26's `applyConfig`: the
/// `experimental-features` ones first, so that settings gated on a feature
/// see it wherever it is enabled, then all others in order.
pub fn apply(
    settings: &mut Settings,
    assignments: &[Assignment],
    warnings: &mut Vec<Warning>,
) -> Result<(), NixConfError> {
    let is_features =
        |a: &&Assignment| matches!(a.name.as_str(), "experimental-features" | "extra-experimental-features");
    let (features, others): (Vec<&Assignment>, Vec<&Assignment>) = assignments.iter().partition(is_features);
    for a in features.into_iter().chain(others) {
        settings.set(&a.name, &a.value, warnings).map_err(|source| NixConfError::Setting {
            origin: a.origin.clone(),
            line: a.line,
            source,
        })?;
    }
    Ok(())
}
