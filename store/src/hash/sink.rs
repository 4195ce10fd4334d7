//! Streaming hashing: a `Write` sink that also counts bytes (NAR hash and
//! size come from one pass), and a `Read` adaptor that hashes what passes.

use super::{Algorithm, Hash};
use digest::Digest;
use std::io::{self, Read, Write};

#[derive(Clone)]
enum State {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Incremental hasher for any [`Algorithm`], counting the bytes it saw.
#[derive(Clone)]
pub struct HashSink {
    state: State,
    len: u64,
}

impl HashSink {
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match algorithm {
            Algorithm::Md5 => State::Md5(Default::default()),
            Algorithm::Sha1 => State::Sha1(Default::default()),
            Algorithm::Sha256 => State::Sha256(Default::default()),
            Algorithm::Sha512 => State::Sha512(Default::default()),
        };
        HashSink { state, len: 0 }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        match &mut self.state {
            State::Md5(h) => h.update(data),
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
            State::Sha512(h) => h.update(data),
        }
    }

    /// The digest and the number of bytes hashed.
    pub fn finish(self) -> (Hash, u64) {
        let (algorithm, digest): (Algorithm, Vec<u8>) = match self.state {
            State::Md5(h) => (Algorithm::Md5, h.finalize().to_vec()),
            State::Sha1(h) => (Algorithm::Sha1, h.finalize().to_vec()),
            State::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            State::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        let hash = Hash::from_bytes(algorithm, &digest).expect("digest length matches its algorithm");
        (hash, self.len)
    }
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.update(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Passes reads through while hashing them.
pub struct HashingReader<R> {
    inner: R,
    sink: HashSink,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader { inner, sink: HashSink::new(algorithm) }
    }

    /// The digest and length of everything read so far.
    pub fn finish(self) -> (Hash, u64) {
        self.sink.finish()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.update(&buf[..n]);
        Ok(n)
    }
}

/// A `BufRead` adaptor that hashes exactly the bytes its user consumes, so
/// that a NAR read from a protocol stream is hashed without reading (or
/// hashing) anything past its end.
pub struct HashingBufReader<R> {
    inner: R,
    sink: HashSink,
}

impl<R: io::BufRead> HashingBufReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingBufReader { inner, sink: HashSink::new(algorithm) }
    }

    /// The digest and length of everything consumed so far.
    pub fn finish(self) -> (Hash, u64) {
        self.sink.finish()
    }
}

impl<R: io::BufRead> Read for HashingBufReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for HashingBufReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let n = amt.min(buf.len());
            self.sink.update(&buf[..n]);
        }
        self.inner.consume(amt);
    }
}

impl Algorithm {
    /// Hashes a byte string in one go.
    pub fn digest(self, data: impl AsRef<[u8]>) -> Hash {
        let mut sink = HashSink::new(self);
        sink.update(data.as_ref());
        sink.finish().0
    }
}
