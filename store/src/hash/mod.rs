//! Cryptographic hashes as Nix prints and parses them: the four algorithms,
//! the base-16, nix32, base-64 and SRI forms, `algo:hash` parsing in every
//! form CppNix's `Hash::parseAny` accepts, streaming hashing, and the XOR
//! fold that turns a SHA-256 into a store path's 20-byte hash part.

mod modulo;
pub mod nix32;
mod sink;

pub use modulo::{HashModuloSink, ModuloHashes};
pub use sink::{HashSink, HashingBufReader, HashingReader};

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use std::fmt;
use std::str::FromStr;

/// A hash algorithm Nix knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [Self::Md5, Self::Sha1, Self::Sha256, Self::Sha512];

    /// The name Nix uses (`md5`, `sha1`, `sha256`, `sha512`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub const fn size(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    pub const fn base16_len(self) -> usize {
        self.size() * 2
    }

    pub const fn nix32_len(self) -> usize {
        nix32::encoded_len(self.size())
    }

    pub const fn base64_len(self) -> usize {
        self.size().div_ceil(3) * 4
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, HashError> {
        Self::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| HashError::UnknownAlgorithm(s.to_owned()))
    }
}

/// A textual form of a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Base16,
    Nix32,
    Base64,
    /// `algo-base64`, as in Subresource Integrity.
    Sri,
}

impl FromStr for Encoding {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, HashError> {
        match s {
            "base16" => Ok(Self::Base16),
            "nix32" | "base32" => Ok(Self::Nix32),
            "base64" => Ok(Self::Base64),
            "sri" => Ok(Self::Sri),
            _ => Err(HashError::UnknownEncoding(s.to_owned())),
        }
    }
}

/// Why a hash string was rejected. Messages follow CppNix's where scripts may
/// match on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("unknown hash algorithm '{0}', expect 'md5', 'sha1', 'sha256', or 'sha512'")]
    UnknownAlgorithm(String),
    #[error("unknown hash format '{0}', expect 'base16', 'nix32', 'base64' or 'sri'")]
    UnknownEncoding(String),
    #[error("hash '{0}' does not include a type, nor is the type otherwise known from context")]
    MissingAlgorithm(String),
    #[error("hash '{hash}' should have type '{expected}'")]
    WrongAlgorithm { hash: String, expected: Algorithm },
    #[error("hash '{hash}' has wrong length for hash algorithm '{algorithm}'")]
    WrongLength { hash: String, algorithm: Algorithm },
    #[error("invalid {encoding} hash '{hash}'")]
    Invalid { hash: String, encoding: &'static str },
    #[error("hash '{0}' is not SRI")]
    NotSri(String),
}

/// A digest together with its algorithm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash {
    algorithm: Algorithm,
    bytes: [u8; 64],
}

impl Hash {
    /// Wraps a digest; `None` if its length does not match the algorithm.
    pub fn from_bytes(algorithm: Algorithm, digest: &[u8]) -> Option<Hash> {
        (digest.len() == algorithm.size()).then(|| {
            let mut bytes = [0u8; 64];
            bytes[..digest.len()].copy_from_slice(digest);
            Hash { algorithm, bytes }
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algorithm.size()]
    }

    pub fn to_base16(&self) -> String {
        data_encoding::HEXLOWER.encode(self.as_bytes())
    }

    pub fn to_nix32(&self) -> String {
        nix32::encode(self.as_bytes())
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.as_bytes())
    }

    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algorithm, self.to_base64())
    }

    /// The bare digest in `encoding` (SRI always carries its algorithm).
    pub fn encode(&self, encoding: Encoding) -> String {
        match encoding {
            Encoding::Base16 => self.to_base16(),
            Encoding::Nix32 => self.to_nix32(),
            Encoding::Base64 => self.to_base64(),
            Encoding::Sri => self.to_sri(),
        }
    }

    /// `algo:digest` in `encoding` (SRI: `algo-base64`), as CppNix's
    /// `to_string(format, true)`.
    pub fn to_typed(&self, encoding: Encoding) -> String {
        match encoding {
            Encoding::Sri => self.to_sri(),
            _ => format!("{}:{}", self.algorithm, self.encode(encoding)),
        }
    }

    /// Parses a hash in any form CppNix's `Hash::parseAny` accepts:
    /// `algo:digest` (base-16, nix32 or base-64 told apart by length),
    /// SRI `algo-base64`, or a bare digest when `expected` gives the algorithm.
    /// When both the string and `expected` name an algorithm they must agree.
    pub fn parse_any(s: &str, expected: Option<Algorithm>) -> Result<Hash, HashError> {
        let (prefix, rest, sri) = split_prefix(s);
        let parsed = prefix.map(str::parse::<Algorithm>).transpose()?;
        let algorithm = match (parsed, expected) {
            (None, None) => return Err(HashError::MissingAlgorithm(s.to_owned())),
            (Some(p), Some(e)) if p != e => {
                return Err(HashError::WrongAlgorithm { hash: s.to_owned(), expected: e });
            }
            (Some(a), _) | (None, Some(a)) => a,
        };
        Self::parse_digest(rest, algorithm, sri)
    }

    /// Parses a hash that must carry its algorithm (`algo:digest` or SRI).
    pub fn parse_prefixed(s: &str) -> Result<Hash, HashError> {
        match split_prefix(s) {
            (Some(_), _, _) => Self::parse_any(s, None),
            (None, _, _) => Err(HashError::MissingAlgorithm(s.to_owned())),
        }
    }

    /// Parses an SRI hash (`algo-base64`) only.
    pub fn parse_sri(s: &str) -> Result<Hash, HashError> {
        let (algo, rest) = s.split_once('-').ok_or_else(|| HashError::NotSri(s.to_owned()))?;
        Self::parse_digest(rest, algo.parse()?, true)
    }

    /// Parses a bare digest of a known algorithm, telling base-16, nix32 and
    /// base-64 apart by length (SRI input must be base-64).
    pub fn parse_digest(rest: &str, algorithm: Algorithm, sri: bool) -> Result<Hash, HashError> {
        let mut bytes = [0u8; 64];
        let out = &mut bytes[..algorithm.size()];
        let invalid = |encoding| HashError::Invalid { hash: rest.to_owned(), encoding };
        if !sri && rest.len() == algorithm.base16_len() {
            HEXLOWER_PERMISSIVE.decode_mut(rest.as_bytes(), out).map_err(|_| invalid("base-16"))?;
        } else if !sri && rest.len() == algorithm.nix32_len() {
            nix32::decode_into(rest.as_bytes(), out).map_err(|_| invalid("base-32"))?;
        } else if sri || rest.len() == algorithm.base64_len() {
            let decoded = BASE64.decode(rest.as_bytes()).map_err(|_| invalid(if sri { "SRI" } else { "base-64" }))?;
            if decoded.len() != algorithm.size() {
                return Err(invalid(if sri { "SRI" } else { "base-64" }));
            }
            out.copy_from_slice(&decoded);
        } else {
            return Err(HashError::WrongLength { hash: rest.to_owned(), algorithm });
        }
        Ok(Hash { algorithm, bytes })
    }

    /// XOR-folds the digest into `N` bytes, as CppNix's `compressHash`
    /// (store path hash parts are the SHA-256 of a fingerprint folded to 20).
    pub fn compress<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, b) in self.as_bytes().iter().enumerate() {
            out[i % N] ^= b;
        }
        out
    }
}

/// Splits `algo:rest` or `algo-rest` (SRI). A `:` takes precedence, as in CppNix.
fn split_prefix(s: &str) -> (Option<&str>, &str, bool) {
    if let Some((algo, rest)) = s.split_once(':') {
        (Some(algo), rest, false)
    } else if let Some((algo, rest)) = s.split_once('-') {
        (Some(algo), rest, true)
    } else {
        (None, s, false)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_typed(Encoding::Nix32))
    }
}

/// Displays as `algo:base16`, the form the store database uses.
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.to_base16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_string_digests_in_every_form() {
        let h = Algorithm::Sha256.digest(b"");
        assert_eq!(h.to_base16(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(h.to_nix32(), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        assert_eq!(h.to_sri(), "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        for enc in [Encoding::Base16, Encoding::Nix32, Encoding::Base64, Encoding::Sri] {
            assert_eq!(Hash::parse_any(&h.to_typed(enc), None).unwrap(), h, "{enc:?}");
            if enc != Encoding::Sri {
                assert_eq!(Hash::parse_any(&h.encode(enc), Some(Algorithm::Sha256)).unwrap(), h);
            }
        }
        assert_eq!(Algorithm::Md5.digest(b"").to_base16(), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(Algorithm::Sha1.digest(b"").to_base16(), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert!(Algorithm::Sha512.digest(b"").to_base16().starts_with("cf83e1357eefb8bd"));
    }

    #[test]
    fn parse_errors_are_specific() {
        let h = Algorithm::Sha1.digest(b"x").to_nix32();
        assert!(matches!(Hash::parse_any(&h, None), Err(HashError::MissingAlgorithm(_))));
        assert!(matches!(
            Hash::parse_any(&format!("sha1:{h}"), Some(Algorithm::Sha256)),
            Err(HashError::WrongAlgorithm { .. })
        ));
        assert!(matches!(Hash::parse_any("sha256:abc", None), Err(HashError::WrongLength { .. })));
        assert!(matches!(Hash::parse_any("blake9:abc", None), Err(HashError::UnknownAlgorithm(_))));
        assert!(matches!(Hash::parse_sri("sha256-AAAA"), Err(HashError::Invalid { .. })));
    }

    #[test]
    fn compress_folds_with_xor() {
        let h = Hash::from_bytes(Algorithm::Sha256, &[1u8; 32]).unwrap();
        let c: [u8; 20] = h.compress();
        assert_eq!(&c[..12], &[0u8; 12]); // bytes 0..12 xored with 20..32
        assert_eq!(&c[12..], &[1u8; 8]);
    }
}
