//! Ed25519 signatures over store path metadata, as CppNix makes and checks
//! them (src/libstore/crypto.cc in 2.8, src/libutil/signature/local-keys.cc
//! in 2.26; the fingerprint is `ValidPathInfo::fingerprint` in
//! src/libstore/path-info.cc).
//!
//! Keys and signatures are text of the form `<name>:<base64>`: a secret key
//! holds libsodium's 64 bytes (32-byte seed, then the 32-byte public key), a
//! public key its 32 bytes, a signature 64 bytes. What is signed is a path's
//! [`fingerprint`]. Base-64 is decoded as leniently as CppNix does (padding
//! optional, newlines skipped) so key files with a trailing newline load.
//!
//! Where we are stricter than CppNix: a secret key whose public half does not
//! match its seed is rejected (CppNix would load it and make signatures nobody
//! can verify), and verification uses `verify_strict`, which, like libsodium,
//! refuses small-order keys and `R` points.

use crate::hash::Hash;
use crate::store_path::{StoreDir, StorePath};
use data_encoding::BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::collections::BTreeMap;
use std::fmt;

/// Length of a decoded secret key: seed followed by public key.
pub const SECRET_KEY_BYTES: usize = 64;
/// Length of a decoded public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Length of a decoded signature.
pub const SIGNATURE_BYTES: usize = 64;

/// Which kind of `<name>:<base64>` value an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Public,
    Signature,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Secret => "secret key",
            KeyKind::Public => "public key",
            KeyKind::Signature => "signature",
        })
    }
}

/// Why a key or signature was rejected, or signing could not happen. Secret
/// key payloads never appear in messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("{kind} is corrupt: expected '<name>:<base64>' but the name or the base-64 part is empty (name '{name}')")]
    Corrupt { kind: KeyKind, name: String },
    #[error("invalid character in Base64 string: '{c}' while decoding {kind} named '{name}'")]
    BadBase64 { kind: KeyKind, name: String, c: char },
    #[error("{kind} named '{name}' is not valid: it decodes to {len} bytes, expected {expected}")]
    WrongLength { kind: KeyKind, name: String, len: usize, expected: usize },
    #[error("public key named '{0}' is not a valid Ed25519 point")]
    BadPublicKey(String),
    #[error("secret key named '{0}' is not valid: its public half does not belong to its seed")]
    MismatchedSecretKey(String),
    #[error("key generation failed: cannot read random bytes from the OS: {0}")]
    Randomness(String),
    #[error("cannot calculate fingerprint of path '{0}' because its size is not known")]
    UnknownNarSize(String),
}

/// Splits `name:payload` as CppNix does: no colon, or an empty name, gives
/// nothing (`BorrowedCryptoValue::parse`).
fn split_named(s: &str) -> Option<(&str, &str)> {
    s.split_once(':').filter(|(name, _)| !name.is_empty())
}

/// Parses `name:base64` into the name and exactly `N` decoded bytes.
fn parse_named<const N: usize>(s: &str, kind: KeyKind) -> Result<(String, [u8; N]), SigningError> {
    let corrupt = |name: &str| SigningError::Corrupt { kind, name: name.to_owned() };
    let (name, payload) = split_named(s).ok_or_else(|| corrupt(""))?;
    if payload.is_empty() {
        return Err(corrupt(name));
    }
    let bytes =
        base64_decode_lenient(payload).map_err(|c| SigningError::BadBase64 { kind, name: name.to_owned(), c })?;
    let len = bytes.len();
    let bytes = <[u8; N]>::try_from(bytes).map_err(|_| SigningError::WrongLength {
        kind,
        name: name.to_owned(),
        len,
        expected: N,
    })?;
    Ok((name.to_owned(), bytes))
}

/// CppNix's `base64Decode`: stops at the first `=`, skips newlines, does not
/// require padding and drops leftover bits. Returns the offending character.
fn base64_decode_lenient(s: &str) -> Result<Vec<u8>, char> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.chars() {
        let digit = match c {
            '=' => break,
            '\n' => continue,
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            _ => return Err(c),
        };
        acc = (acc << 6 | digit) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// A named Ed25519 secret key (`name:base64(seed || public key)`).
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses the contents of a secret key file (a trailing newline is fine).
    pub fn parse(s: &str) -> Result<SecretKey, SigningError> {
        let (name, bytes) = parse_named::<SECRET_KEY_BYTES>(s, KeyKind::Secret)?;
        let key =
            SigningKey::from_keypair_bytes(&bytes).map_err(|_| SigningError::MismatchedSecretKey(name.clone()))?;
        Ok(SecretKey { name, key })
    }

    /// A fresh key from the operating system's randomness, as
    /// `nix-store --generate-binary-cache-key` makes.
    pub fn generate(name: &str) -> Result<SecretKey, SigningError> {
        if name.is_empty() || name.contains(':') {
            return Err(SigningError::Corrupt { kind: KeyKind::Secret, name: name.to_owned() });
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SigningError::Randomness(e.to_string()))?;
        Ok(SecretKey { name: name.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key, under the same name.
    pub fn to_public_key(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Signs `data` (normally a [`fingerprint`]).
    pub fn sign(&self, data: &[u8]) -> Signature {
        Signature { key_name: self.name.clone(), bytes: self.key.sign(data).to_bytes() }
    }
}

/// `name:base64`, the secret key file format.
impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(&self.key.to_keypair_bytes()))
    }
}

/// Never prints the secret.
impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A named Ed25519 public key (`name:base64(32 bytes)`), the form of
/// `trusted-public-keys` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn parse(s: &str) -> Result<PublicKey, SigningError> {
        let (name, bytes) = parse_named::<PUBLIC_KEY_BYTES>(s, KeyKind::Public)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| SigningError::BadPublicKey(name.clone()))?;
        Ok(PublicKey { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        self.key.as_bytes()
    }

    /// Whether `sig` was made by this key over `data`. A signature under
    /// another key name is not this key's, whatever its bytes.
    pub fn verify(&self, data: &[u8], sig: &Signature) -> bool {
        sig.key_name == self.name
            && self.key.verify_strict(data, &ed25519_dalek::Signature::from_bytes(&sig.bytes)).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

/// A detached signature with the name of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    key_name: String,
    bytes: [u8; SIGNATURE_BYTES],
}

impl Signature {
    pub fn parse(s: &str) -> Result<Signature, SigningError> {
        let (key_name, bytes) = parse_named::<SIGNATURE_BYTES>(s, KeyKind::Signature)?;
        Ok(Signature { key_name, bytes })
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub fn as_bytes(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.bytes
    }
}

/// `name:base64`, the form of narinfo `Sig:` lines and the `sigs` column.
impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(&self.bytes))
    }
}

/// Trusted public keys by name (`trusted-public-keys`, plus the public
/// halves of `secret-key-files`). A later key with the same name does not
/// replace an earlier one, as in CppNix's `getDefaultPublicKeys`.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys(BTreeMap<String, PublicKey>);

impl PublicKeys {
    pub fn new() -> PublicKeys {
        PublicKeys::default()
    }

    /// Parses every key of a `trusted-public-keys`-style list.
    pub fn parse_all<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<PublicKeys, SigningError> {
        let mut set = PublicKeys::new();
        for k in keys {
            set.insert(PublicKey::parse(k)?);
        }
        Ok(set)
    }

    /// Adds a key unless one with its name is already trusted.
    pub fn insert(&mut self, key: PublicKey) {
        self.0.entry(key.name.clone()).or_insert(key);
    }

    pub fn get(&self, name: &str) -> Option<&PublicKey> {
        self.0.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Checks one signature in text form, as CppNix's `verifyDetached`:
    /// `Ok(false)` when no trusted key has its name (or it has no name), an
    /// error when the named key is trusted but the signature is malformed,
    /// else whether it verifies.
    pub fn verify(&self, data: &[u8], sig: &str) -> Result<bool, SigningError> {
        let Some(key) = split_named(sig).and_then(|(name, _)| self.0.get(name)) else {
            return Ok(false);
        };
        Ok(key.verify(data, &Signature::parse(sig)?))
    }

    /// How many of `sigs` are valid signatures of `data` by trusted keys.
    /// A malformed signature counts as invalid (CppNix throws instead, which
    /// fails the whole check even when another signature is good).
    pub fn count_valid<'a>(&self, data: &[u8], sigs: impl IntoIterator<Item = &'a str>) -> usize {
        sigs.into_iter().filter(|s| self.verify(data, s).unwrap_or(false)).count()
    }
}

impl FromIterator<PublicKey> for PublicKeys {
    fn from_iter<I: IntoIterator<Item = PublicKey>>(iter: I) -> Self {
        let mut set = PublicKeys::new();
        for k in iter {
            set.insert(k);
        }
        set
    }
}

/// What is signed for a store path:
/// `1;<store path>;<algo>:<nix32 NAR hash>;<NAR size>;<ref>,<ref>,...`, with
/// references as full paths in sorted order. CppNix refuses a NAR size of 0
/// (unknown) and prints the NAR hash with whatever algorithm it has (SHA-256
/// in practice).
pub fn fingerprint<'a>(
    store_dir: &StoreDir,
    path: &StorePath,
    nar_hash: &Hash,
    nar_size: u64,
    references: impl IntoIterator<Item = &'a StorePath>,
) -> Result<String, SigningError> {
    if nar_size == 0 {
        return Err(SigningError::UnknownNarSize(store_dir.display(path)));
    }
    let mut refs: Vec<String> = references.into_iter().map(|r| store_dir.display(r)).collect();
    refs.sort_unstable();
    refs.dedup();
    Ok(format!(
        "1;{};{}:{};{nar_size};{}",
        store_dir.display(path),
        nar_hash.algorithm(),
        nar_hash.to_nix32(),
        refs.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_base64_matches_cppnix() {
        assert_eq!(base64_decode_lenient("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode_lenient("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode_lenient("aGVs\nbG8=\n").unwrap(), b"hello");
        assert_eq!(base64_decode_lenient("aGVsbG8=garbage!").unwrap(), b"hello");
        assert_eq!(base64_decode_lenient("aGVs bG8"), Err(' '));
        for data in [&b""[..], b"a", b"ab", b"abc", &[0xff; 64]] {
            assert_eq!(base64_decode_lenient(&BASE64.encode(data)).unwrap(), data);
        }
    }
}
