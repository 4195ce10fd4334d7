//! Compressing NARs for a binary cache, as CppNix's `makeCompressionSink`
//! (src/libutil/compression.cc) does for `compression=` (`xz` by default,
//! `zstd`, `bzip2`, `none`). The output decodes with [`crate::decompress`].

use crate::decompress::Method;
use std::io::{self, Write};

/// A compressing writer over `W`.
pub enum Encoder<W: Write> {
    None(W),
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Bzip2(bzip2::write::BzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// CppNix's default levels: xz 6, zstd 3, bzip2 9.
    pub fn new(method: Method, sink: W) -> io::Result<Encoder<W>> {
        Ok(match method {
            Method::None => Encoder::None(sink),
            Method::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(sink, 6)),
            Method::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(sink, 3)?),
            Method::Bzip2 => Encoder::Bzip2(bzip2::write::BzEncoder::new(sink, bzip2::Compression::best())),
        })
    }

    /// Ends the compressed stream and hands back the sink.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Bzip2(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Bzip2(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decompress::Decoder;
    use std::io::Read;

    #[test]
    fn every_method_round_trips() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for method in [Method::None, Method::Xz, Method::Zstd, Method::Bzip2] {
            let mut enc = Encoder::new(method, Vec::new()).unwrap();
            enc.write_all(&data).unwrap();
            let compressed = enc.finish().unwrap();
            if method != Method::None {
                assert!(compressed.len() < data.len(), "{method:?} compresses");
            }
            let mut out = Vec::new();
            Decoder::new(method, &compressed[..]).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{method:?}");
            assert_eq!(Method::from_name(method.name()), Some(method));
        }
    }
}
