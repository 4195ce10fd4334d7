//! An object's name: the sha256 of its bytes, written as 64 lower-case hex
//! digits. Parsing accepts exactly that form, so that one object has one
//! name (and one file name) only.

use std::fmt;
use std::str::FromStr;
use store::hash::{Algorithm, Hash, HashSink};

/// The sha256 of an object's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

/// Why a string is not an object name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectIdError {
    #[error("object name `{name}` has {len} characters; a sha256 in hex has 64")]
    WrongLength { name: String, len: usize },
    #[error("object name `{0}` is not lower-case hex")]
    NotHex(String),
}

impl ObjectId {
    pub const fn from_bytes(bytes: [u8; 32]) -> ObjectId {
        ObjectId(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The name of `data`.
    pub fn of(data: impl AsRef<[u8]>) -> ObjectId {
        Self::from_digest(&Algorithm::Sha256.digest(data)).expect("a sha256 digest is a sha256")
    }

    /// The name a sha256 [`Hash`] gives; `None` for another algorithm.
    pub fn from_digest(hash: &Hash) -> Option<ObjectId> {
        if hash.algorithm() != Algorithm::Sha256 {
            return None;
        }
        hash.as_bytes().try_into().ok().map(ObjectId)
    }

    /// The same digest as a store [`Hash`] (sha256).
    pub fn to_hash(&self) -> Hash {
        Hash::from_bytes(Algorithm::Sha256, &self.0).expect("32 bytes are a sha256")
    }

    /// Lower-case hex, as [`fmt::Display`] writes it.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// A hasher whose [`HashSink::finish`] gives an object's name through
    /// [`ObjectId::from_digest`].
    pub(crate) fn hasher() -> HashSink {
        HashSink::new(Algorithm::Sha256)
    }

    /// The name of what `hasher` saw, and its size.
    pub(crate) fn finish(hasher: HashSink) -> (ObjectId, u64) {
        let (hash, size) = hasher.finish();
        (Self::from_digest(&hash).expect("the hasher is a sha256"), size)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl FromStr for ObjectId {
    type Err = ObjectIdError;

    fn from_str(s: &str) -> Result<ObjectId, ObjectIdError> {
        if s.len() != 64 {
            // Keep the message on one short line for a long or binary name.
            let name: String = s.chars().take(80).collect();
            return Err(ObjectIdError::WrongLength { name: name.escape_debug().to_string(), len: s.len() });
        }
        if !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ObjectIdError::NotHex(s.escape_debug().to_string()));
        }
        let mut bytes = [0u8; 32];
        data_encoding::HEXLOWER
            .decode_mut(s.as_bytes(), &mut bytes)
            .map_err(|_| ObjectIdError::NotHex(s.to_owned()))?;
        Ok(ObjectId(bytes))
    }
}

impl TryFrom<&str> for ObjectId {
    type Error = ObjectIdError;
    fn try_from(s: &str) -> Result<ObjectId, ObjectIdError> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names_are_sha256_in_lower_case_hex() {
        let id = ObjectId::of(b"");
        assert_eq!(id.to_string(), EMPTY);
        assert_eq!(format!("{id:?}"), format!("ObjectId({EMPTY})"));
        assert_eq!(EMPTY.parse::<ObjectId>().unwrap(), id);
        assert_eq!(ObjectId::from_digest(&id.to_hash()), Some(id));
        assert_eq!(ObjectId::from_digest(&Algorithm::Sha1.digest(b"")), None);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!("abc".parse::<ObjectId>(), Err(ObjectIdError::WrongLength { name: "abc".into(), len: 3 }));
        let upper = EMPTY.to_uppercase();
        assert_eq!(upper.parse::<ObjectId>(), Err(ObjectIdError::NotHex(upper.clone())));
        let mut bad = EMPTY.to_owned();
        bad.replace_range(0..1, "g");
        let err = bad.parse::<ObjectId>().unwrap_err();
        assert_eq!(err.to_string(), format!("object name `{bad}` is not lower-case hex"));
        let err = "x".repeat(70).parse::<ObjectId>().unwrap_err();
        assert!(err.to_string().contains("has 70 characters; a sha256 in hex has 64"), "{err}");
        // Non-ASCII whose byte length is 64 is not hex either.
        let wide = "é".repeat(32);
        assert!(matches!(wide.parse::<ObjectId>(), Err(ObjectIdError::NotHex(_))));
    }
}
