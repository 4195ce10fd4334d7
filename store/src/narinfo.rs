//! The `.narinfo` files of binary caches (CppNix src/libstore/nar-info.cc):
//! one `Key: value` line per field, describing a store path and where its
//! (compressed) NAR is.
//!
//! Parsing accepts what CppNix accepts: unknown keys are ignored, hashes may
//! be in any prefixed form (`algo:` base-16/nix32/base-64, or SRI), a missing
//! `Compression` means `bzip2`, `Deriver: unknown-deriver` means none, and a
//! repeated key overrides the earlier one except that a second non-empty
//! `References` or `CA` is an error. It is more lenient in two harmless ways:
//! blank lines are skipped and `Key:value` without the space is read.
//! `StorePath`, `URL`, `NarHash` and a non-zero `NarSize` are mandatory, and
//! every line must end in a newline.
//!
//! Printing writes the fields in CppNix's order and forms (hashes as
//! `sha256:<nix32>`, references as base names, signatures sorted), so a file
//! CppNix wrote prints back byte for byte. `System` is printed as Nix 2.8
//! does (2.26 neither prints nor reads it); `FileHash`/`FileSize` are printed
//! when known.

use crate::content_address::{CaError, ContentAddress};
use crate::hash::{Encoding, Hash, HashError};
use crate::signing::{self, PublicKeys, SecretKey, SigningError};
use crate::store_path::{StoreDir, StorePath, StorePathError};
use std::collections::BTreeSet;
use std::fmt;

/// The compression CppNix assumes when a narinfo names none.
pub const DEFAULT_COMPRESSION: &str = "bzip2";

/// A parsed `.narinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub path: StorePath,
    /// Where the NAR is, relative to the cache root (`nar/<hash>.nar.xz`).
    pub url: String,
    /// `xz`, `bzip2`, `zstd`, `none`, ...
    pub compression: String,
    /// Hash of the file at `url` (the compressed NAR).
    pub file_hash: Option<Hash>,
    pub file_size: Option<u64>,
    pub nar_hash: Hash,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
    pub system: Option<String>,
    /// Signatures as written (`name:base64`); kept as text because CppNix
    /// keeps and forwards signatures it cannot decode.
    pub sigs: BTreeSet<String>,
    pub ca: Option<ContentAddress>,
}

/// A narinfo that could not be parsed; the message follows CppNix 2.26's
/// "NAR info file '...' is corrupt: ..." with the reason and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("NAR info file '{whence}' is corrupt: {problem}")]
pub struct NarInfoError {
    /// The file or URL the text came from, as given to [`NarInfo::parse`].
    pub whence: String,
    pub problem: Problem,
}

/// What is wrong in a narinfo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("expecting ':' at line {line}")]
    MissingColon { line: usize },
    #[error("expecting '\\n' at line {line}")]
    MissingNewline { line: usize },
    #[error("bad hash in {field} at line {line}: {source}")]
    BadHash { field: &'static str, line: usize, source: HashError },
    #[error("invalid {field} '{value}' at line {line}")]
    BadSize { field: &'static str, value: String, line: usize },
    #[error("bad store path in {field} at line {line}: {source}")]
    BadPath { field: &'static str, line: usize, source: StorePathError },
    #[error("bad CA at line {line}: {source}")]
    BadCa { line: usize, source: CaError },
    #[error("extra {field} at line {line}")]
    Repeated { field: &'static str, line: usize },
    #[error("{0} missing")]
    Missing(&'static str),
    #[error("NarSize missing or zero")]
    ZeroNarSize,
}

impl NarInfo {
    /// Parses narinfo text. `whence` names its origin in error messages.
    pub fn parse(store_dir: &StoreDir, text: &str, whence: &str) -> Result<NarInfo, NarInfoError> {
        parse(store_dir, text).map_err(|problem| NarInfoError { whence: whence.to_owned(), problem })
    }

    /// The narinfo text, as CppNix's `NarInfo::to_string`.
    pub fn to_text(&self, store_dir: &StoreDir) -> String {
        Text { info: self, store_dir }.to_string()
    }

    /// The string signatures are made over (see [`signing::fingerprint`]).
    pub fn fingerprint(&self, store_dir: &StoreDir) -> Result<String, SigningError> {
        signing::fingerprint(store_dir, &self.path, &self.nar_hash, self.nar_size, &self.references)
    }

    /// Adds `key`'s signature.
    pub fn sign(&mut self, store_dir: &StoreDir, key: &SecretKey) -> Result<(), SigningError> {
        let sig = key.sign(self.fingerprint(store_dir)?.as_bytes());
        self.sigs.insert(sig.to_string());
        Ok(())
    }

    /// How many signatures verify against `keys`.
    pub fn count_valid_signatures(&self, store_dir: &StoreDir, keys: &PublicKeys) -> Result<usize, SigningError> {
        let fp = self.fingerprint(store_dir)?;
        Ok(keys.count_valid(fp.as_bytes(), self.sigs.iter().map(String::as_str)))
    }
}

/// A narinfo with the store directory its paths are printed in.
struct Text<'a> {
    info: &'a NarInfo,
    store_dir: &'a StoreDir,
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.info;
        writeln!(f, "StorePath: {}", self.store_dir.display(&info.path))?;
        writeln!(f, "URL: {}", info.url)?;
        writeln!(f, "Compression: {}", info.compression)?;
        if let Some(h) = &info.file_hash {
            writeln!(f, "FileHash: {}", h.to_typed(Encoding::Nix32))?;
        }
        if let Some(n) = info.file_size {
            writeln!(f, "FileSize: {n}")?;
        }
        writeln!(f, "NarHash: {}", info.nar_hash.to_typed(Encoding::Nix32))?;
        writeln!(f, "NarSize: {}", info.nar_size)?;
        let refs: Vec<&str> = info.references.iter().map(StorePath::base_name).collect();
        writeln!(f, "References: {}", refs.join(" "))?;
        if let Some(d) = &info.deriver {
            writeln!(f, "Deriver: {d}")?;
        }
        if let Some(system) = &info.system {
            writeln!(f, "System: {system}")?;
        }
        for sig in &info.sigs {
            writeln!(f, "Sig: {sig}")?;
        }
        if let Some(ca) = &info.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

fn parse(store_dir: &StoreDir, text: &str) -> Result<NarInfo, Problem> {
    let mut path = None;
    let mut url = None;
    let mut compression = None;
    let mut file_hash = None;
    let mut file_size = None;
    let mut nar_hash = None;
    let mut nar_size = 0;
    let mut references = BTreeSet::new();
    let mut deriver = None;
    let mut system = None;
    let mut sigs = BTreeSet::new();
    let mut ca = None;

    let mut rest = text;
    let mut line = 0;
    while !rest.is_empty() {
        line += 1;
        let (current, next) = rest.split_once('\n').ok_or(Problem::MissingNewline { line })?;
        rest = next;
        if current.is_empty() {
            continue;
        }
        let (key, value) = current.split_once(':').ok_or(Problem::MissingColon { line })?;
        let value = value.strip_prefix(' ').unwrap_or(value);
        let hash = |field| Hash::parse_prefixed(value).map_err(|source| Problem::BadHash { field, line, source });
        let size = |field| value.parse::<u64>().map_err(|_| Problem::BadSize { field, value: value.to_owned(), line });
        let base_name =
            |field, s: &str| StorePath::from_base_name(s).map_err(|source| Problem::BadPath { field, line, source });
        match key {
            "StorePath" => {
                let p = store_dir.parse_path(value).map_err(|source| Problem::BadPath {
                    field: "StorePath",
                    line,
                    source,
                })?;
                path = Some(p);
            }
            "URL" => url = Some(value.to_owned()),
            "Compression" => compression = Some(value.to_owned()),
            "FileHash" => file_hash = Some(hash("FileHash")?),
            "FileSize" => file_size = Some(size("FileSize")?),
            "NarHash" => nar_hash = Some(hash("NarHash")?),
            "NarSize" => nar_size = size("NarSize")?,
            "References" => {
                if !references.is_empty() {
                    return Err(Problem::Repeated { field: "References", line });
                }
                for r in value.split(' ').filter(|r| !r.is_empty()) {
                    references.insert(base_name("References", r)?);
                }
            }
            "Deriver" => {
                deriver = match value {
                    "unknown-deriver" => None,
                    d => Some(base_name("Deriver", d)?),
                }
            }
            "System" => system = Some(value.to_owned()),
            "Sig" => {
                sigs.insert(value.to_owned());
            }
            "CA" => {
                if ca.is_some() {
                    return Err(Problem::Repeated { field: "CA", line });
                }
                if !value.is_empty() {
                    ca = Some(ContentAddress::parse(value).map_err(|source| Problem::BadCa { line, source })?);
                }
            }
            _ => {}
        }
    }

    let path = path.ok_or(Problem::Missing("StorePath"))?;
    let nar_hash = nar_hash.ok_or(Problem::Missing("NarHash"))?;
    let url = url.filter(|u| !u.is_empty()).ok_or(Problem::Missing("URL"))?;
    if nar_size == 0 {
        return Err(Problem::ZeroNarSize);
    }
    Ok(NarInfo {
        path,
        url,
        compression: compression.filter(|c| !c.is_empty()).unwrap_or_else(|| DEFAULT_COMPRESSION.to_owned()),
        file_hash,
        file_size,
        nar_hash,
        nar_size,
        references,
        deriver,
        system,
        sigs,
        ca,
    })
}
