//! Store paths: `<store dir>/<32 nix32 chars>-<name>`, their validation, and
//! how Nix computes them for sources, text files, fixed outputs and
//! derivation outputs (CppNix's src/libstore/path.cc and store-api.cc,
//! `makeStorePath` and friends). The store directory is always a value,
//! never a constant.

mod dir;

pub use dir::StoreDir;

use crate::hash::nix32;
use std::collections::BTreeSet;
use std::fmt;

/// Characters of a store path's hash part.
pub const HASH_PART_LEN: usize = 32;
/// Longest name CppNix accepts (255 minus the hash part and its dash).
pub const MAX_NAME_LEN: usize = 211;
/// Suffix of derivation files.
pub const DRV_EXTENSION: &str = ".drv";

/// Why a store path or name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    #[error("'{0}' is too short to be a valid store path")]
    TooShort(String),
    #[error("store path '{path}' contains illegal base-32 character '{c}'")]
    BadHashChar { path: String, c: char },
    #[error("store path '{0}' has no '-' after its hash part")]
    MissingDash(String),
    #[error("store path name must not be empty")]
    EmptyName,
    #[error("store path name '{0}' must be no longer than 211 characters")]
    NameTooLong(String),
    #[error("store path name '{0}' is not valid: it cannot be '.', '..' or start with '.-' or '..-'")]
    DotName(String),
    #[error("store path name '{name}' contains illegal character '{c}'")]
    BadNameChar { name: String, c: char },
    #[error("path '{path}' is not in the Nix store '{store_dir}'")]
    NotInStore { path: String, store_dir: String },
    #[error("store directory '{0}' must be an absolute path without '.', '..', '//' or a trailing '/'")]
    BadStoreDir(String),
    #[error("self-reference not allowed with text hashing")]
    TextSelfReference,
    #[error("fixed output '{0}' is not allowed to refer to other store paths")]
    FixedOutputReferences(String),
    #[error("git file ingestion must use a SHA-1 hash")]
    GitNeedsSha1,
}

/// Checks a store path name with CppNix 2.26's rules (`checkName`): 1 to 211
/// characters from `[A-Za-z0-9+-._?=]`, and not `.`, `..`, nor a first
/// dash-separated component of `.` or `..`. (2.8 allowed those dot names;
/// 2.26 refuses them and so do we: they are unusable as file names.)
pub fn check_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(name.to_owned()));
    }
    let b = name.as_bytes();
    if b[0] == b'.' {
        let first = name.split('-').next().unwrap_or(name);
        if first == "." || first == ".." {
            return Err(StorePathError::DotName(name.to_owned()));
        }
    }
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(StorePathError::BadNameChar { name: name.to_owned(), c });
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

/// A store path without its directory: the hash part and the name. Ordered
/// and compared by its base name, as CppNix's `StorePath` is, so sets of them
/// iterate in the order CppNix prints them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base: Box<str>,
}

impl StorePath {
    /// Parses `<hash>-<name>`.
    pub fn from_base_name(base: &str) -> Result<StorePath, StorePathError> {
        if base.len() < HASH_PART_LEN + 2 {
            return Err(StorePathError::TooShort(base.to_owned()));
        }
        if let Some(&c) = base.as_bytes()[..HASH_PART_LEN].iter().find(|&&c| !nix32::is_digit(c)) {
            return Err(StorePathError::BadHashChar { path: base.to_owned(), c: c as char });
        }
        if base.as_bytes()[HASH_PART_LEN] != b'-' {
            return Err(StorePathError::MissingDash(base.to_owned()));
        }
        check_name(&base[HASH_PART_LEN + 1..])?;
        Ok(StorePath { base: base.into() })
    }

    /// Builds a path from its 20-byte digest and a name.
    pub fn from_digest(digest: &[u8; 20], name: &str) -> Result<StorePath, StorePathError> {
        check_name(name)?;
        Ok(StorePath { base: format!("{}-{name}", nix32::encode(digest)).into() })
    }

    /// The 32 nix32 characters before the dash.
    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_PART_LEN]
    }

    /// The 20-byte digest the hash part encodes.
    pub fn digest(&self) -> [u8; 20] {
        let mut d = [0; 20];
        nix32::decode_into(self.hash_part().as_bytes(), &mut d)
            .expect("hash part was validated when the path was made");
        d
    }

    pub fn name(&self) -> &str {
        &self.base[HASH_PART_LEN + 1..]
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.base
    }

    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(DRV_EXTENSION)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.base)
    }
}

/// The references of a content-addressed object: other paths, and whether it
/// refers to itself (which changes its `source` path type).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReferences {
    pub others: BTreeSet<StorePath>,
    pub self_ref: bool,
}

impl StoreReferences {
    pub fn is_empty(&self) -> bool {
        !self.self_ref && self.others.is_empty()
    }
}

/// The name of a derivation output's path: the derivation name, with
/// `-<output>` appended unless the output is `out` (CppNix `outputPathName`).
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" { drv_name.to_owned() } else { format!("{drv_name}-{output}") }
}

#[cfg(test)]
mod tests;
