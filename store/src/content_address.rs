//! Content addresses as Nix writes them in the `ca` column, narinfo `CA:`
//! fields and derivation `hashAlgo` fields (CppNix
//! src/libstore/content-address.cc): `text:sha256:<nix32>`,
//! `fixed:<algo>:<nix32>`, `fixed:r:<algo>:<nix32>`, `fixed:git:sha1:<nix32>`.

use crate::hash::{Algorithm, Hash, HashError};
use std::fmt;

/// How a file system object is turned into bytes to hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileIngestionMethod {
    /// The file's contents (a regular file only).
    Flat,
    /// Its NAR serialisation (`r:`; `NixArchive` in CppNix 2.26).
    Recursive,
    /// Git's object hashing (`git:`, experimental in CppNix).
    Git,
}

impl FileIngestionMethod {
    /// The prefix in type strings and `hashAlgo` fields: ``, `r:` or `git:`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Flat => "",
            Self::Recursive => "r:",
            Self::Git => "git:",
        }
    }
}

/// Content-addressing method, including text hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentAddressMethod {
    Text,
    Fixed(FileIngestionMethod),
}

impl ContentAddressMethod {
    /// The method part of a derivation's `hashAlgo` (`text:`, `r:`, `git:` or
    /// empty for flat), as CppNix's `renderPrefix`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Text => "text:",
            Self::Fixed(m) => m.prefix(),
        }
    }

    /// Parses a derivation output's `hashAlgo` (`r:sha256`, `sha256`,
    /// `text:sha256`, `git:sha1`) into method and algorithm.
    pub fn parse_with_algorithm(s: &str) -> Result<(ContentAddressMethod, Algorithm), CaError> {
        let (method, algo) = if let Some(rest) = s.strip_prefix("r:") {
            (Self::Fixed(FileIngestionMethod::Recursive), rest)
        } else if let Some(rest) = s.strip_prefix("git:") {
            (Self::Fixed(FileIngestionMethod::Git), rest)
        } else if let Some(rest) = s.strip_prefix("text:") {
            (Self::Text, rest)
        } else {
            (Self::Fixed(FileIngestionMethod::Flat), s)
        };
        Ok((method, algo.parse()?))
    }

    /// `<prefix><algo>`, the inverse of [`Self::parse_with_algorithm`].
    pub fn render_with_algorithm(self, algorithm: Algorithm) -> String {
        format!("{}{algorithm}", self.prefix())
    }
}

/// Why a content address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    #[error("not a content address because it is not in the form '<prefix>:<rest>': {0}")]
    NoPrefix(String),
    #[error("content address prefix '{0}' is unrecognized; recognized prefixes are 'text' or 'fixed'")]
    UnknownPrefix(String),
    #[error("content address hash must be in form '<algo>:<hash>', but found: {0}")]
    NoAlgorithm(String),
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// A content address: method plus hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentAddress {
    pub method: ContentAddressMethod,
    pub hash: Hash,
}

impl ContentAddress {
    pub fn parse(s: &str) -> Result<ContentAddress, CaError> {
        let (prefix, rest) = s.split_once(':').ok_or_else(|| CaError::NoPrefix(s.to_owned()))?;
        let (method, rest) = match prefix {
            "text" => (ContentAddressMethod::Text, rest),
            "fixed" => {
                if let Some(r) = rest.strip_prefix("r:") {
                    (ContentAddressMethod::Fixed(FileIngestionMethod::Recursive), r)
                } else if let Some(r) = rest.strip_prefix("git:") {
                    (ContentAddressMethod::Fixed(FileIngestionMethod::Git), r)
                } else {
                    (ContentAddressMethod::Fixed(FileIngestionMethod::Flat), rest)
                }
            }
            _ => return Err(CaError::UnknownPrefix(prefix.to_owned())),
        };
        let (algo, digest) = rest.split_once(':').ok_or_else(|| CaError::NoAlgorithm(s.to_owned()))?;
        let hash = Hash::parse_digest(digest, algo.parse()?, false)?;
        Ok(ContentAddress { method, hash })
    }
}

/// `text:`/`fixed:[r:|git:]` + `algo:nix32`, as CppNix's `ContentAddress::render`.
impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.method {
            ContentAddressMethod::Text => f.write_str("text:")?,
            ContentAddressMethod::Fixed(m) => write!(f, "fixed:{}", m.prefix())?,
        }
        write!(f, "{}:{}", self.hash.algorithm(), self.hash.to_nix32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_every_method() {
        let h = Algorithm::Sha256.digest(b"abc");
        for (method, prefix) in [
            (ContentAddressMethod::Text, "text:"),
            (ContentAddressMethod::Fixed(FileIngestionMethod::Flat), "fixed:"),
            (ContentAddressMethod::Fixed(FileIngestionMethod::Recursive), "fixed:r:"),
            (ContentAddressMethod::Fixed(FileIngestionMethod::Git), "fixed:git:"),
        ] {
            let ca = ContentAddress { method, hash: h };
            let s = ca.to_string();
            assert_eq!(s, format!("{prefix}sha256:{}", h.to_nix32()));
            assert_eq!(ContentAddress::parse(&s).unwrap(), ca);
        }
        assert!(matches!(ContentAddress::parse("sha256"), Err(CaError::NoPrefix(_))));
        assert!(matches!(ContentAddress::parse("blob:sha256:x"), Err(CaError::UnknownPrefix(_))));
        assert!(matches!(ContentAddress::parse("fixed:sha256"), Err(CaError::NoAlgorithm(_))));
    }

    #[test]
    fn hash_algo_fields() {
        let cases = [
            ("r:sha256", ContentAddressMethod::Fixed(FileIngestionMethod::Recursive), Algorithm::Sha256),
            ("sha1", ContentAddressMethod::Fixed(FileIngestionMethod::Flat), Algorithm::Sha1),
            ("text:sha256", ContentAddressMethod::Text, Algorithm::Sha256),
        ];
        for (s, m, a) in cases {
            assert_eq!(ContentAddressMethod::parse_with_algorithm(s).unwrap(), (m, a));
            assert_eq!(m.render_with_algorithm(a), s);
        }
    }
}
