//! Primitive encodings: little-endian u64s, padded byte strings, lists,
//! sets and maps (worker-protocol.md §2), as extension traits on tokio's
//! async streams.

use super::ProtoError;
use std::collections::{BTreeMap, BTreeSet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bounds on what a peer may make us allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest string (paths, names, hashes, options).
    pub max_string: u64,
    /// Longest text payload (AddTextToStore, realisation JSON, a .drv's ATerm).
    pub max_text: u64,
    /// Most elements in one list, set or map.
    pub max_elements: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits { max_string: 64 * 1024, max_text: 64 << 20, max_elements: 1 << 20 };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a string's buffer starts with before its bytes arrive.
const FIRST_CHUNK: u64 = 64 * 1024;

fn eof(e: std::io::Error) -> ProtoError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { ProtoError::Eof } else { ProtoError::Io(e) }
}

/// Reading primitives.
#[allow(async_fn_in_trait)]
pub trait WireRead: AsyncRead + Unpin {
    async fn read_u64_le_wire(&mut self) -> Result<u64, ProtoError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b).await.map_err(eof)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Any non-zero value is true.
    async fn read_bool(&mut self) -> Result<bool, ProtoError> {
        Ok(self.read_u64_le_wire().await? != 0)
    }

    /// A u64 that must fit in `limit` (CppNix's narrowing `readNum`).
    async fn read_bounded(&mut self, what: &'static str, limit: u64) -> Result<u64, ProtoError> {
        let v = self.read_u64_le_wire().await?;
        if v > limit {
            return Err(ProtoError::OutOfRange { what, value: v });
        }
        Ok(v)
    }

    /// A padded byte string of at most `limit` bytes. Memory grows with the
    /// bytes that actually arrive, not with the length announced: a peer
    /// that declares 64 MiB and goes silent costs one chunk, not 64 MiB.
    async fn read_bytes_limited(&mut self, what: &'static str, limit: u64) -> Result<Vec<u8>, ProtoError> {
        let len = self.read_u64_le_wire().await?;
        if len > limit {
            return Err(ProtoError::TooLong { what, len, limit });
        }
        let mut buf = Vec::with_capacity(len.min(FIRST_CHUNK) as usize);
        (&mut *self).take(len).read_to_end(&mut buf).await.map_err(eof)?;
        if buf.len() as u64 != len {
            return Err(ProtoError::Eof);
        }
        let pad = (8 - len % 8) % 8;
        if pad > 0 {
            let mut p = [0u8; 8];
            self.read_exact(&mut p[..pad as usize]).await.map_err(eof)?;
            if p.iter().any(|&b| b != 0) {
                return Err(ProtoError::BadPadding);
            }
        }
        Ok(buf)
    }

    /// A padded UTF-8 string.
    async fn read_string_limited(&mut self, what: &'static str, limit: u64) -> Result<String, ProtoError> {
        let bytes = self.read_bytes_limited(what, limit).await?;
        String::from_utf8(bytes).map_err(|_| ProtoError::BadValue(format!("{what} is not valid UTF-8")))
    }

    async fn read_string(&mut self, what: &'static str, limits: &Limits) -> Result<String, ProtoError> {
        self.read_string_limited(what, limits.max_string).await
    }

    /// A count of list elements, bounded.
    async fn read_count(&mut self, what: &'static str, limits: &Limits) -> Result<u64, ProtoError> {
        let count = self.read_u64_le_wire().await?;
        if count > limits.max_elements {
            return Err(ProtoError::TooMany { what, count, limit: limits.max_elements });
        }
        Ok(count)
    }

    async fn read_strings(&mut self, what: &'static str, limits: &Limits) -> Result<Vec<String>, ProtoError> {
        let n = self.read_count(what, limits).await?;
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.read_string(what, limits).await?);
        }
        Ok(v)
    }

    async fn read_string_set(&mut self, what: &'static str, limits: &Limits) -> Result<BTreeSet<String>, ProtoError> {
        Ok(self.read_strings(what, limits).await?.into_iter().collect())
    }

    async fn read_string_map(
        &mut self,
        what: &'static str,
        limits: &Limits,
    ) -> Result<BTreeMap<String, String>, ProtoError> {
        let n = self.read_count(what, limits).await?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.read_string(what, limits).await?;
            let v = self.read_string(what, limits).await?;
            m.insert(k, v);
        }
        Ok(m)
    }
}

impl<R: AsyncRead + Unpin + ?Sized> WireRead for R {}

/// Writing primitives. Writes go to a buffer in practice; callers flush.
#[allow(async_fn_in_trait)]
pub trait WireWrite: AsyncWrite + Unpin {
    async fn write_u64_wire(&mut self, v: u64) -> std::io::Result<()> {
        self.write_all(&v.to_le_bytes()).await
    }

    async fn write_bool(&mut self, v: bool) -> std::io::Result<()> {
        self.write_u64_wire(u64::from(v)).await
    }

    async fn write_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.write_u64_wire(b.len() as u64).await?;
        self.write_all(b).await?;
        let pad = (8 - b.len() % 8) % 8;
        self.write_all(&[0u8; 8][..pad]).await
    }

    async fn write_str(&mut self, s: &str) -> std::io::Result<()> {
        self.write_bytes(s.as_bytes()).await
    }

    async fn write_strings<I, S>(&mut self, items: I) -> std::io::Result<()>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: ExactSizeIterator,
        S: AsRef<str>,
    {
        let it = items.into_iter();
        self.write_u64_wire(it.len() as u64).await?;
        for s in it {
            self.write_str(s.as_ref()).await?;
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin + ?Sized> WireWrite for W {}
