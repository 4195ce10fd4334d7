//! Placeholders: strings standing for output paths that are not known when
//! a derivation is written, replaced by the real paths at build time.
//!
//! - `builtins.placeholder "out"` and the environment variables of floating
//!   outputs: `/` + nix32 of `sha256("nix-output:<output>")` (CppNix
//!   derivations.cc, `hashPlaceholder`), the same for every derivation;
//! - downstream placeholders, which a dependent derivation uses for an
//!   output of a floating content-addressed input (downstream-placeholder.cc):
//!   `sha256("nix-upstream-output:<drv hash part>:<output path name>")`, and
//!   for an output of a derivation that is itself an output (dynamic
//!   derivations) `sha256("nix-computed-output:<nix32 of the parent
//!   placeholder folded to 20 bytes>:<output>")`; rendered as `/` + nix32.

use super::{DerivationError, name_from_drv_path};
use crate::hash::nix32;
use crate::hash::{Algorithm, Hash};
use crate::store_path::{StorePath, output_path_name};

/// The placeholder for output `output_name` of the derivation being built
/// (`builtins.placeholder`).
pub fn hash_placeholder(output_name: &str) -> String {
    let hash = Algorithm::Sha256.digest(format!("nix-output:{output_name}"));
    format!("/{}", hash.to_nix32())
}

/// A placeholder for an output of another derivation whose path is not known
/// yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownstreamPlaceholder {
    hash: Hash,
}

impl DownstreamPlaceholder {
    /// Output `output_name` of the floating content-addressed (or deferred,
    /// or impure) derivation at `drv_path`.
    pub fn unknown_ca_output(drv_path: &StorePath, output_name: &str) -> Result<Self, DerivationError> {
        let drv_name = name_from_drv_path(drv_path)?;
        let clear = format!("nix-upstream-output:{}:{}", drv_path.hash_part(), output_path_name(drv_name, output_name));
        Ok(DownstreamPlaceholder { hash: Algorithm::Sha256.digest(clear) })
    }

    /// Output `output_name` of the derivation that `self` stands for
    /// (dynamic derivations: the derivation is itself an output).
    pub fn unknown_derivation(&self, output_name: &str) -> Self {
        let folded: [u8; 20] = self.hash.compress();
        let clear = format!("nix-computed-output:{}:{output_name}", nix32::encode(&folded));
        DownstreamPlaceholder { hash: Algorithm::Sha256.digest(clear) }
    }

    /// The string that appears in derivations: `/` + nix32 of the hash.
    pub fn render(&self) -> String {
        format!("/{}", self.hash.to_nix32())
    }
}
