//! Hashing "modulo" a self-reference: the content hash of a
//! content-addressed path that contains its own hash part is taken with
//! every occurrence of that hash part replaced by NUL bytes (CppNix
//! `HashModuloSink`, src/libutil/references.cc).
//!
//! CppNix 2.8 additionally hashes the offsets of the replaced occurrences
//! (`|<offset>` for each, after the data); 2.26 declares but never fills that
//! list, so its hashes omit them. For data without self-references both are
//! the plain hash. [`HashModuloSink::finish`] returns both, and callers
//! accept either.

use super::{Algorithm, Hash, HashSink};
use std::io::{self, Write};

pub struct HashModuloSink {
    sink: HashSink,
    modulus: Vec<u8>,
    /// Bytes not yet passed on: fewer than `modulus.len()`, so no whole
    /// occurrence can hide in them.
    pending: Vec<u8>,
    /// Bytes passed on so far.
    pos: u64,
    matches: Vec<u64>,
}

/// The two hashes of [`HashModuloSink::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuloHashes {
    /// As CppNix 2.26 computes it (no offsets).
    pub without_offsets: Hash,
    /// As CppNix 2.8 computes it (offsets of the self-references appended).
    pub with_offsets: Hash,
    /// Number of bytes hashed (excluding the offsets).
    pub size: u64,
}

impl HashModuloSink {
    pub fn new(algorithm: Algorithm, modulus: &str) -> Self {
        HashModuloSink {
            sink: HashSink::new(algorithm),
            modulus: modulus.as_bytes().to_vec(),
            pending: Vec::new(),
            pos: 0,
            matches: Vec::new(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        let m = self.modulus.len();
        if m == 0 {
            self.sink.update(data);
            self.pos += data.len() as u64;
            return;
        }
        self.pending.extend_from_slice(data);
        let mut i = 0;
        while i + m <= self.pending.len() {
            if self.pending[i..i + m] == self.modulus[..] {
                self.matches.push(self.pos + i as u64);
                self.pending[i..i + m].fill(0);
                i += m;
            } else {
                i += 1;
            }
        }
        let keep = (m - 1).min(self.pending.len());
        let emit = self.pending.len() - keep;
        self.sink.update(&self.pending[..emit]);
        self.pos += emit as u64;
        self.pending.drain(..emit);
    }

    pub fn finish(mut self) -> ModuloHashes {
        let rest = std::mem::take(&mut self.pending);
        self.sink.update(&rest);
        self.pos += rest.len() as u64;
        let mut with = self.sink.clone();
        for p in &self.matches {
            with.update(format!("|{p}").as_bytes());
        }
        ModuloHashes { without_offsets: self.sink.finish().0, with_offsets: with.finish().0, size: self.pos }
    }
}

impl Write for HashModuloSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_modulus_it_is_the_plain_hash() {
        let mut s = HashModuloSink::new(Algorithm::Sha256, "abcd");
        s.update(b"hello ");
        s.update(b"world");
        let h = s.finish();
        assert_eq!(h.without_offsets, Algorithm::Sha256.digest(b"hello world"));
        assert_eq!(h.with_offsets, h.without_offsets);
        assert_eq!(h.size, 11);
    }

    #[test]
    fn occurrences_split_across_chunks_are_zeroed() {
        let mut s = HashModuloSink::new(Algorithm::Sha256, "abcd");
        for chunk in [&b"xxab"[..], b"cdyyab", b"c", b"dz"] {
            s.update(chunk);
        }
        let h = s.finish();
        let zeroed = b"xx\0\0\0\0yy\0\0\0\0z";
        assert_eq!(h.without_offsets, Algorithm::Sha256.digest(zeroed));
        let mut with = zeroed.to_vec();
        with.extend_from_slice(b"|2|8");
        assert_eq!(h.with_offsets, Algorithm::Sha256.digest(&with));
    }
}
