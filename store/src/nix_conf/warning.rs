//! What reading configuration can warn about, worded as CppNix words it.

use super::features::ExperimentalFeature;
use std::fmt;
use std::path::PathBuf;

/// Something CppNix would warn about while reading configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    UnknownSetting(String),
    UnknownExperimentalFeature(String),
    NeedsExperimentalFeature { setting: String, feature: ExperimentalFeature },
    UnreadableFile { path: PathBuf, error: String },
}

/// CppNix's wording where it has one.
impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnknownSetting(name) => write!(f, "unknown setting '{name}'"),
            Warning::UnknownExperimentalFeature(name) => write!(f, "unknown experimental feature '{name}'"),
            Warning::NeedsExperimentalFeature { setting, feature } => {
                write!(f, "Ignoring setting '{setting}' because experimental feature '{feature}' is not enabled")
            }
            Warning::UnreadableFile { path, error } => {
                write!(f, "ignoring configuration file '{}', which cannot be read: {error}", path.display())
            }
        }
    }
}
