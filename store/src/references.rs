//! Finding which store paths a file tree refers to, as CppNix does after a
//! build (src/libstore/references.cc in 2.8, `RefScanSink` and `search`):
//! the NAR serialisation is streamed through a scanner that looks for the
//! 32-character hash parts of a given set of candidate paths.
//!
//! The contract, identical to CppNix's: a candidate is reported when its hash
//! part occurs anywhere in the byte stream, across chunk boundaries however
//! the stream is cut; no case folding, nothing else is matched (an
//! arbitrary nix32 string that is not a candidate finds nothing). Like
//! CppNix the scanner jumps past any byte outside the nix32 alphabet, so
//! binary data is scanned at a fraction of a comparison per byte.

use crate::hash::nix32;
use crate::store_path::{HASH_PART_LEN, StorePath};
use std::io::{self, Write};

/// Streaming search for candidate hash parts. Feed it with
/// [`update`](Self::update) or as a [`Write`].
pub struct RefScanner {
    /// Candidates that are valid nix32, sorted and deduplicated (others can
    /// never occur in a run of nix32 bytes, so CppNix never finds them).
    candidates: Vec<[u8; HASH_PART_LEN]>,
    found: Vec<bool>,
    left: usize,
    /// Which pairs of leading digits occur among the candidates: a cheap
    /// test that rejects almost every window before a binary search.
    prefixes: [u64; 16],
    /// The last bytes seen (at most `HASH_PART_LEN - 1`): the start of any
    /// occurrence that continues into the next chunk.
    tail: [u8; HASH_PART_LEN - 1],
    tail_len: usize,
}

impl RefScanner {
    /// A scanner for the given hash parts (the 32 characters of a store
    /// path's base name before the dash).
    pub fn new<I, H>(hash_parts: I) -> Self
    where
        I: IntoIterator<Item = H>,
        H: AsRef<[u8]>,
    {
        let mut candidates: Vec<[u8; HASH_PART_LEN]> = hash_parts
            .into_iter()
            .filter_map(|h| <[u8; HASH_PART_LEN]>::try_from(h.as_ref()).ok())
            .filter(|h| h.iter().all(|&c| nix32::is_digit(c)))
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut prefixes = [0u64; 16];
        for c in &candidates {
            let bit = prefix_index(c[0], c[1]);
            prefixes[bit / 64] |= 1 << (bit % 64);
        }
        RefScanner {
            found: vec![false; candidates.len()],
            left: candidates.len(),
            candidates,
            prefixes,
            tail: [0; HASH_PART_LEN - 1],
            tail_len: 0,
        }
    }

    /// A scanner for the hash parts of `paths`.
    pub fn for_paths<'a>(paths: impl IntoIterator<Item = &'a StorePath>) -> Self {
        Self::new(paths.into_iter().map(|p| p.hash_part().as_bytes()))
    }

    /// Scans the next chunk of the stream.
    pub fn update(&mut self, data: &[u8]) {
        if self.left == 0 {
            return;
        }
        // Occurrences that straddle the previous chunk and this one start
        // in the tail and end in the first 31 bytes of `data`.
        let head = data.len().min(HASH_PART_LEN - 1);
        let mut seam = [0u8; 2 * (HASH_PART_LEN - 1)];
        seam[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        seam[self.tail_len..self.tail_len + head].copy_from_slice(&data[..head]);
        self.search(&seam[..self.tail_len + head]);
        self.search(data);
        // Keep the last 31 bytes of tail + data.
        let keep = (self.tail_len + data.len()).min(HASH_PART_LEN - 1);
        let from_data = data.len().min(keep);
        let from_tail = keep - from_data;
        self.tail.copy_within(self.tail_len - from_tail..self.tail_len, 0);
        self.tail[from_tail..keep].copy_from_slice(&data[data.len() - from_data..]);
        self.tail_len = keep;
    }

    /// CppNix's search: try the window at `i`; scanning it from its end, a
    /// non-nix32 byte at `i + j` rules out every window up to it, so jump
    /// past it. Bytes already known to be nix32 are not looked at again.
    fn search(&mut self, s: &[u8]) {
        let mut i = 0;
        // Bytes before this index (from `i`) are known to be nix32.
        let mut checked = 0;
        while i + HASH_PART_LEN <= s.len() {
            let end = i + HASH_PART_LEN;
            match s[checked.max(i)..end].iter().rposition(|&c| !nix32::is_digit(c)) {
                Some(bad) => {
                    i = checked.max(i) + bad + 1;
                }
                None => {
                    checked = end;
                    self.check_window(&s[i..end]);
                    if self.left == 0 {
                        return;
                    }
                    i += 1;
                }
            }
        }
    }

    fn check_window(&mut self, window: &[u8]) {
        let bit = prefix_index(window[0], window[1]);
        if self.prefixes[bit / 64] & (1 << (bit % 64)) == 0 {
            return;
        }
        match self.candidates.binary_search_by(|c| c.as_slice().cmp(window)) {
            Ok(k) if !self.found[k] => {
                self.found[k] = true;
                self.left -= 1;
            }
            _ => {}
        }
    }

    /// Whether `hash_part` has been seen so far.
    pub fn is_found(&self, hash_part: &[u8]) -> bool {
        self.candidates.binary_search_by(|c| c.as_slice().cmp(hash_part)).is_ok_and(|k| self.found[k])
    }

    /// The hash parts seen so far, in byte order.
    pub fn found(&self) -> impl Iterator<Item = &[u8; HASH_PART_LEN]> {
        self.candidates.iter().zip(&self.found).filter(|(_, f)| **f).map(|(c, _)| c)
    }
}

/// Bit for a window's first two bytes in `RefScanner::prefixes`: their low
/// five bits (some digits share a bit with letters, which only makes the
/// filter a little less selective).
fn prefix_index(a: u8, b: u8) -> usize {
    (usize::from(a & 31) << 5) | usize::from(b & 31)
}

impl Write for RefScanner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that passes everything to two writers (say, a [`HashSink`](crate::hash::HashSink) and
/// a [`RefScanner`]).
pub struct Tee<A, B> {
    pub first: A,
    pub second: B,
}

impl<A: Write, B: Write> Tee<A, B> {
    pub fn new(first: A, second: B) -> Self {
        Tee { first, second }
    }

    pub fn into_inner(self) -> (A, B) {
        (self.first, self.second)
    }
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.first.write_all(buf)?;
        self.second.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.first.flush()?;
        self.second.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    const B: &[u8; 32] = b"zyxwvsrqpnmlkjihgfdcba9876543210";

    fn scan(chunks: &[&[u8]]) -> Vec<[u8; 32]> {
        let mut s = RefScanner::new([A, B]);
        for c in chunks {
            s.update(c);
        }
        s.found().copied().collect()
    }

    #[test]
    fn finds_hash_parts_inside_text() {
        let data = [b"prefix /nix/store/".as_slice(), A, b"-hello/bin".as_slice()].concat();
        assert_eq!(scan(&[&data]), vec![*A]);
        assert!(
            scan(&[b"nothing here at all, and a long run of nix32: 0000000000000000000000000000000000000000"])
                .is_empty()
        );
    }

    #[test]
    fn finds_hash_parts_split_across_chunks_of_any_size() {
        let data = [b"xx\x00".as_slice(), A, b"\xffe".as_slice(), B, b"!".as_slice()].concat();
        for size in 1..data.len() {
            let chunks: Vec<&[u8]> = data.chunks(size).collect();
            assert_eq!(scan(&chunks), vec![*A, *B], "chunk size {size}");
        }
    }

    #[test]
    fn ignores_candidates_that_are_not_nix32_and_near_misses() {
        let mut s = RefScanner::new([b"e".repeat(32), A.to_vec()]);
        s.update(&b"e".repeat(64));
        s.update(&A[..31]);
        s.update(b"e");
        assert_eq!(s.found().count(), 0);
    }

    #[test]
    fn overlapping_runs_are_all_tried() {
        // A candidate preceded by other nix32 characters: the window only
        // matches after sliding one byte at a time.
        let data = [b"00000".as_slice(), B, b"11".as_slice()].concat();
        assert_eq!(scan(&[&data]), vec![*B]);
    }
}
