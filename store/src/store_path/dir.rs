//! The store directory and the path computations that depend on it.

use super::{StorePath, StorePathError, StoreReferences, output_path_name};
use crate::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use crate::hash::{Algorithm, Hash};
use std::path::{Path, PathBuf};

/// A store directory such as `/nix/store`: absolute, with no `.`/`..`
/// components, repeated or trailing slashes. Paths inside it are computed
/// from this exact string, so two spellings of one directory would give
/// different store paths; hence the strictness.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir("/nix/store".to_owned())
    }
}

impl StoreDir {
    pub fn new(dir: impl Into<String>) -> Result<StoreDir, StorePathError> {
        let dir = dir.into();
        let ok = dir.starts_with('/')
            && dir.len() > 1
            && !dir.ends_with('/')
            && dir[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if ok { Ok(StoreDir(dir)) } else { Err(StorePathError::BadStoreDir(dir)) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The full path of a store path in this directory.
    pub fn display(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path.base_name())
    }

    /// Same, as a filesystem path.
    pub fn to_path(&self, path: &StorePath) -> PathBuf {
        PathBuf::from(self.display(path))
    }

    /// Parses a full store path, which must sit directly in this directory.
    pub fn parse_path(&self, full: &str) -> Result<StorePath, StorePathError> {
        match full.strip_prefix(&self.0).and_then(|r| r.strip_prefix('/')) {
            Some(base) if !base.contains('/') => StorePath::from_base_name(base),
            _ => Err(StorePathError::NotInStore { path: full.to_owned(), store_dir: self.0.clone() }),
        }
    }

    /// Splits a path at or below a store path into the store path and the
    /// rest (`/nix/store/x-foo/bin/sh` gives `x-foo` and `bin/sh`).
    pub fn split_path<'a>(&self, full: &'a str) -> Result<(StorePath, &'a str), StorePathError> {
        let not_in_store = || StorePathError::NotInStore { path: full.to_owned(), store_dir: self.0.clone() };
        let rest = full.strip_prefix(&self.0).and_then(|r| r.strip_prefix('/')).ok_or_else(not_in_store)?;
        let (base, sub) = rest.split_once('/').unwrap_or((rest, ""));
        Ok((StorePath::from_base_name(base)?, sub.trim_start_matches('/')))
    }

    /// CppNix `makeStorePath`: the SHA-256 of
    /// `<type>:<algo>:<base16 digest>:<store dir>:<name>`, folded to 20 bytes.
    pub fn make_store_path(&self, path_type: &str, inner: &Hash, name: &str) -> Result<StorePath, StorePathError> {
        let fingerprint = format!("{path_type}:{}:{}:{name}", inner.to_typed(crate::hash::Encoding::Base16), self.0);
        let digest = Algorithm::Sha256.digest(fingerprint.as_bytes());
        StorePath::from_digest(&digest.compress::<20>(), name)
    }

    /// A type string with the references appended (CppNix `makeType`).
    fn make_type(&self, mut path_type: String, refs: &StoreReferences) -> String {
        for r in &refs.others {
            path_type.push(':');
            path_type.push_str(&self.display(r));
        }
        if refs.self_ref {
            path_type.push_str(":self");
        }
        path_type
    }

    /// The path of a text file (`builtins.toFile`, `.drv` files): `text`
    /// type with its references, over the SHA-256 of the contents.
    pub fn make_text_path(
        &self,
        name: &str,
        contents_sha256: &Hash,
        refs: &std::collections::BTreeSet<StorePath>,
    ) -> Result<StorePath, StorePathError> {
        let refs = StoreReferences { others: refs.clone(), self_ref: false };
        self.make_store_path(&self.make_type("text".into(), &refs), contents_sha256, name)
    }

    /// The path of a fixed-output object. Recursive SHA-256 is a `source`
    /// path (what `nix-store --add` makes) and may have references; every
    /// other method/algorithm hashes `fixed:out:<prefix><algo>:<hex>:` into an
    /// `output:out` path and must have none.
    pub fn make_fixed_output_path(
        &self,
        name: &str,
        method: FileIngestionMethod,
        hash: &Hash,
        refs: &StoreReferences,
    ) -> Result<StorePath, StorePathError> {
        if method == FileIngestionMethod::Git && hash.algorithm() != Algorithm::Sha1 {
            return Err(StorePathError::GitNeedsSha1);
        }
        if method == FileIngestionMethod::Recursive && hash.algorithm() == Algorithm::Sha256 {
            return self.make_store_path(&self.make_type("source".into(), refs), hash, name);
        }
        if !refs.is_empty() {
            return Err(StorePathError::FixedOutputReferences(name.to_owned()));
        }
        let payload = format!("fixed:out:{}{}:", method.prefix(), hash.to_typed(crate::hash::Encoding::Base16));
        self.make_store_path("output:out", &Algorithm::Sha256.digest(payload.as_bytes()), name)
    }

    /// The path of a content-addressed object with its references
    /// (CppNix `makeFixedOutputPathFromCA`).
    pub fn make_path_from_ca(
        &self,
        name: &str,
        ca: &ContentAddress,
        refs: &StoreReferences,
    ) -> Result<StorePath, StorePathError> {
        match ca.method {
            ContentAddressMethod::Text => {
                if refs.self_ref {
                    return Err(StorePathError::TextSelfReference);
                }
                self.make_text_path(name, &ca.hash, &refs.others)
            }
            ContentAddressMethod::Fixed(method) => self.make_fixed_output_path(name, method, &ca.hash, refs),
        }
    }

    /// The path of an input-addressed derivation output: `output:<id>` over
    /// the derivation's hash modulo, named with [`output_path_name`].
    pub fn make_output_path(&self, output: &str, drv_hash: &Hash, drv_name: &str) -> Result<StorePath, StorePathError> {
        self.make_store_path(&format!("output:{output}"), drv_hash, &output_path_name(drv_name, output))
    }
}
