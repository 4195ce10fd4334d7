//! Nix's base-32 encoding ("nix32"): the alphabet without `e o t u`, bits
//! taken from the *end* of the byte string first, so it is not RFC 4648.
//! Mirrors `printHash32` / the base-32 branch of `Hash::Hash` in CppNix's
//! src/libutil/hash.cc.

/// The 32 digits, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Digit value of each byte, or 0xff for bytes outside the alphabet.
const DECODE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Whether `c` is a nix32 digit.
#[inline]
pub fn is_digit(c: u8) -> bool {
    DECODE[c as usize] != 0xff
}

/// Length of the encoding of `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    if len == 0 { 0 } else { (len * 8 - 1) / 5 + 1 }
}

/// Encodes `bytes` into nix32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = bytes[i] >> j;
        let high = if i + 1 < bytes.len() { (bytes[i + 1] as u16) << (8 - j) } else { 0 };
        out.push(ALPHABET[((low as u16 | high) & 0x1f) as usize] as char);
    }
    out
}

/// Why a nix32 string did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("character {0:?} is not a nix32 digit")]
    BadDigit(char),
    #[error("nix32 string of {got} characters cannot hold {want} bytes")]
    BadLength { got: usize, want: usize },
    #[error("nix32 string has bits set beyond its {0} bytes")]
    Overflow(usize),
}

/// Decodes a nix32 string into exactly `out.len()` bytes.
pub fn decode_into(s: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    if s.len() != encoded_len(out.len()) {
        return Err(DecodeError::BadLength { got: s.len(), want: out.len() });
    }
    out.fill(0);
    for (n, &c) in s.iter().rev().enumerate() {
        let digit = DECODE[c as usize];
        if digit == 0xff {
            return Err(DecodeError::BadDigit(c as char));
        }
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= digit << j;
        let carry = (digit as u16) >> (8 - j);
        if i + 1 < out.len() {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(DecodeError::Overflow(out.len()));
        }
    }
    Ok(())
}

/// Decodes a nix32 string of unknown byte length (the length is derived from
/// the string's, as `encoded_len` inverted).
pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    let bytes = s.len() * 5 / 8;
    if encoded_len(bytes) != s.len() {
        return Err(DecodeError::BadLength { got: s.len(), want: bytes });
    }
    let mut out = vec![0; bytes];
    decode_into(s.as_bytes(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_cppnix() {
        assert_eq!(encoded_len(16), 26); // md5
        assert_eq!(encoded_len(20), 32); // sha1, store path hash part
        assert_eq!(encoded_len(32), 52); // sha256
        assert_eq!(encoded_len(64), 103); // sha512
    }

    #[test]
    fn round_trips_and_rejects_overflow() {
        let bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37)).collect();
        let s = encode(&bytes);
        assert_eq!(decode(&s).unwrap(), bytes);
        // The first digit carries only 1 significant bit for 32 bytes (52*5 = 260 bits).
        let mut bad = s.into_bytes();
        bad[0] = b'z';
        assert_eq!(decode_into(&bad, &mut [0; 32]), Err(DecodeError::Overflow(32)));
        assert_eq!(decode("e000"), Err(DecodeError::BadDigit('e')));
        assert_eq!(decode("000"), Err(DecodeError::BadLength { got: 3, want: 1 }));
    }

    #[test]
    fn zero_bytes_encode_to_zeros() {
        assert_eq!(encode(&[0; 20]), "0".repeat(32));
    }
}
