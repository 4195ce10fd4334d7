//! Store derivations (`.drv` files) as CppNix 2.8 and 2.26 read, write and
//! hash them (src/libstore/derivations.cc, downstream-placeholder.cc,
//! parsed-derivations.cc): the [`Derivation`] value, its ATerm text
//! ([`aterm`]), `hashDerivationModulo` ([`DrvHasher`]), output and `.drv`
//! paths, placeholders, `__structuredAttrs` and the JSON of
//! `nix derivation show`.
//!
//! What is text and what is bytes: names (the derivation's, its outputs',
//! the system) are Rust strings; the builder, its arguments and its
//! environment are byte strings, because Nix strings are bytes and those go
//! to `execve` unchanged. A `.drv` whose names are not UTF-8 is refused at
//! parse time; one whose environment is not UTF-8 is read, hashed and
//! printed like any other, and only its JSON form fails (as in CppNix, whose
//! JSON library refuses such strings too).
//!
//! Validation: parsing checks the syntax, every store path and every content
//! address, as CppNix's `parseDerivation` does, and no more. Whether the
//! outputs make a coherent derivation ([`Derivation::derivation_type`]) and
//! whether its output paths are the right ones
//! ([`Derivation::check_invariants`]) are separate steps, as in CppNix.
//! Experimental-feature gating (floating, impure, text-hashed outputs,
//! dynamic inputs) is left to the caller.

pub mod aterm;
mod hash_modulo;
mod json;
mod outputs;
mod placeholder;

pub use aterm::{ParseError, ParseErrorKind};
pub use hash_modulo::{DrvHash, DrvHashKind, DrvHasher, hash_derivation_modulo};
pub use json::show_json;
pub use placeholder::{DownstreamPlaceholder, hash_placeholder};

use crate::content_address::{ContentAddress, ContentAddressMethod};
use crate::hash::Algorithm;
use crate::store_path::{DRV_EXTENSION, StorePath, StorePathError};
use std::collections::{BTreeMap, BTreeSet};

/// A store derivation. Collections are ordered as CppNix orders them (by
/// bytes), so printing walks them in the order `.drv` files list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    /// The name: the `.drv` file's name without `.drv`. Not stored in the
    /// ATerm; it comes from the path (and equals the `name` attribute the
    /// derivation was evaluated from).
    pub name: String,
    pub outputs: BTreeMap<String, Output>,
    /// Derivations whose outputs are inputs, with the outputs wanted.
    pub input_drvs: BTreeMap<StorePath, InputOutputs>,
    /// Store paths that are inputs as they are (sources, `toFile` files).
    pub input_srcs: BTreeSet<StorePath>,
    /// The platform (`platform` in CppNix, `system` in Nix expressions).
    pub system: String,
    pub builder: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub env: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What a derivation wants from one input derivation: some of its outputs,
/// and, for dynamic derivations (2.26, experimental), outputs of the
/// derivations that its outputs are (`dynamic_outputs`, nested to any depth;
/// CppNix's `DerivedPathMap<StringSet>::ChildNode`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputOutputs {
    pub outputs: BTreeSet<String>,
    pub dynamic_outputs: BTreeMap<String, InputOutputs>,
}

impl InputOutputs {
    /// The plain form: these outputs, nothing dynamic.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(outputs: I) -> InputOutputs {
        InputOutputs { outputs: outputs.into_iter().map(Into::into).collect(), dynamic_outputs: BTreeMap::new() }
    }

    /// Whether this input reaches into a dynamic derivation.
    pub fn is_dynamic(&self) -> bool {
        !self.dynamic_outputs.is_empty()
    }
}

/// One output of a derivation, by how its path is determined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The path is computed from the derivation's hash modulo and written in
    /// the `.drv`.
    InputAddressed(StorePath),
    /// Fixed-output: the content hash is known in advance, and with it the
    /// path. (The path in the `.drv` is not kept: it is recomputed from the
    /// content address, as CppNix does.)
    Fixed(ContentAddress),
    /// Floating content-addressed: the path is known after the build.
    Floating { method: ContentAddressMethod, algorithm: Algorithm },
    /// Input-addressed, but depending on floating outputs, so the path can
    /// only be computed once those are built (the `.drv` leaves it empty).
    Deferred,
    /// Impure (experimental): content-addressed and never cached.
    Impure { method: ContentAddressMethod, algorithm: Algorithm },
}

/// The kind of a whole derivation, from the kinds of its outputs (CppNix
/// `BasicDerivation::type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivationType {
    InputAddressed,
    /// Input-addressed with deferred output paths.
    Deferred,
    Fixed,
    Floating,
    Impure,
}

impl DerivationType {
    /// Content-addressed in any way (fixed, floating or impure).
    pub fn is_ca(self) -> bool {
        matches!(self, Self::Fixed | Self::Floating | Self::Impure)
    }

    pub fn is_fixed(self) -> bool {
        self == Self::Fixed
    }

    pub fn is_impure(self) -> bool {
        self == Self::Impure
    }

    /// Whether the output paths are known before building.
    pub fn has_known_output_paths(self) -> bool {
        matches!(self, Self::InputAddressed | Self::Fixed)
    }

    /// Whether the build runs in the sandbox (fixed-output and impure
    /// builds get the network instead).
    pub fn is_sandboxed(self) -> bool {
        matches!(self, Self::InputAddressed | Self::Deferred | Self::Floating)
    }
}

/// Why a derivation could not be typed, hashed, printed or checked.
/// Messages keep CppNix's wording.
#[derive(Debug, thiserror::Error)]
pub enum DerivationError {
    #[error("must have at least one output")]
    NoOutputs,
    #[error("can't mix derivation output types")]
    MixedOutputTypes,
    #[error("only one fixed output is allowed for now")]
    MultipleFixedOutputs,
    #[error("single fixed output must be named \"out\"")]
    FixedOutputNotOut,
    #[error("all floating outputs must use the same hash algorithm")]
    FloatingAlgorithmsDiffer,
    #[error("store path '{0}' is not a valid derivation path")]
    NotADerivationPath(String),
    #[error("no hash for output '{output}' of derivation '{drv}'")]
    MissingOutputHash { output: String, drv: String },
    #[error("cannot read derivation '{path}': {source}")]
    Resolve { path: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("cannot parse derivation '{path}': {source}")]
    Parse { path: String, source: ParseError },
    #[error("derivation '{0}' depends on itself")]
    Cycle(String),
    #[error("Derivation '{drv_path}' has name '{name}' which does not match its path")]
    NameMismatch { drv_path: String, name: String },
    #[error("derivation '{drv_path}' has incorrect output '{actual}', should be '{expected}'")]
    WrongOutputPath { drv_path: String, actual: String, expected: String },
    #[error("derivation '{drv_path}' has incorrect environment variable '{var}', should be '{expected}'")]
    WrongEnvVar { drv_path: String, var: String, expected: String },
    #[error("cannot process __json attribute of '{drv}': {error}")]
    StructuredAttrs { drv: String, error: String },
    #[error("derivation '{drv}' cannot be written as JSON: {what} is not valid UTF-8")]
    NotUtf8 { drv: String, what: String },
    #[error(transparent)]
    StorePath(#[from] StorePathError),
}

impl Derivation {
    /// The kind of derivation its outputs make, or why they make none.
    pub fn derivation_type(&self) -> Result<DerivationType, DerivationError> {
        let (mut ia, mut fixed, mut floating, mut deferred, mut impure) = (0, 0, 0, 0, 0);
        let mut floating_algo = None;
        for output in self.outputs.values() {
            match output {
                Output::InputAddressed(_) => ia += 1,
                Output::Fixed(_) => fixed += 1,
                Output::Floating { algorithm, .. } => {
                    floating += 1;
                    if *floating_algo.get_or_insert(*algorithm) != *algorithm {
                        return Err(DerivationError::FloatingAlgorithmsDiffer);
                    }
                }
                Output::Deferred => deferred += 1,
                Output::Impure { .. } => impure += 1,
            }
        }
        let kinds = [ia, fixed, floating, deferred, impure];
        match kinds.iter().filter(|&&n| n > 0).count() {
            0 => return Err(DerivationError::NoOutputs),
            1 => {}
            _ => return Err(DerivationError::MixedOutputTypes),
        }
        Ok(if ia > 0 {
            DerivationType::InputAddressed
        } else if fixed > 0 {
            if fixed > 1 {
                return Err(DerivationError::MultipleFixedOutputs);
            }
            if !self.outputs.contains_key("out") {
                return Err(DerivationError::FixedOutputNotOut);
            }
            DerivationType::Fixed
        } else if floating > 0 {
            DerivationType::Floating
        } else if deferred > 0 {
            DerivationType::Deferred
        } else {
            DerivationType::Impure
        })
    }

    /// Whether the builder is built into Nix (`builtin:fetchurl`, ...).
    pub fn is_builtin(&self) -> bool {
        self.builder.starts_with(b"builtin:")
    }

    /// An environment variable.
    pub fn env_var(&self, name: &str) -> Option<&[u8]> {
        self.env.get(name.as_bytes()).map(Vec::as_slice)
    }

    /// What the `.drv` file refers to: its input sources and input
    /// derivations (not its outputs, which need not exist).
    pub fn references(&self) -> BTreeSet<StorePath> {
        self.input_srcs.iter().chain(self.input_drvs.keys()).cloned().collect()
    }

    /// Whether some input is an output of a dynamic derivation, which makes
    /// the ATerm use the versioned `DrvWithVersion("xp-dyn-drv",...)` form.
    pub fn has_dynamic_inputs(&self) -> bool {
        self.input_drvs.values().any(InputOutputs::is_dynamic)
    }

    /// The parsed `__json` variable of a `__structuredAttrs` derivation, or
    /// `None` when there is none. (Output paths are still also in the
    /// environment: CppNix sets `out` and the other outputs there even with
    /// structured attributes.)
    pub fn structured_attrs(&self) -> Result<Option<serde_json::Value>, DerivationError> {
        let Some(json) = self.env_var("__json") else { return Ok(None) };
        serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| DerivationError::StructuredAttrs { drv: self.name.clone(), error: e.to_string() })
    }
}

/// The derivation name of a `.drv` path (its name without `.drv`).
pub fn name_from_drv_path(drv_path: &StorePath) -> Result<&str, DerivationError> {
    drv_path.name().strip_suffix(DRV_EXTENSION).ok_or_else(|| DerivationError::NotADerivationPath(drv_path.to_string()))
}

#[cfg(test)]
mod tests;
