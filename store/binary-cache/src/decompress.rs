//! Decompressing what binary caches serve: the `Compression:` of a narinfo
//! (`xz`, `zstd`, `bzip2`, `none`; CppNix's `makeDecompressionSink` in
//! src/libutil/compression.cc) and the `Content-Encoding` of HTTP responses.
//!
//! A [`Decoder`] keeps its source reachable ([`Decoder::source_mut`]) so the
//! caller can read the rest of the compressed file after the compressed
//! stream ends, for checking the file's hash and size.

use std::io::{self, BufReader, Read};

/// A compression method a cache may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    None,
    Xz,
    Zstd,
    Bzip2,
}

impl Method {
    /// The method a narinfo's `Compression:` names (empty means none, as
    /// CppNix's `makeDecompressionSink` treats it). `None` when unknown.
    pub fn from_name(name: &str) -> Option<Method> {
        match name {
            "" | "none" => Some(Method::None),
            "xz" => Some(Method::Xz),
            "zstd" => Some(Method::Zstd),
            "bzip2" => Some(Method::Bzip2),
            _ => None,
        }
    }

    /// The name a narinfo's `Compression:` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Xz => "xz",
            Method::Zstd => "zstd",
            Method::Bzip2 => "bzip2",
        }
    }

    /// What CppNix's `BinaryCacheStore` appends to `nar/<hash>.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            Method::None => "",
            Method::Xz => ".xz",
            Method::Zstd => ".zst",
            Method::Bzip2 => ".bz2",
        }
    }

    /// The method an HTTP `Content-Encoding` names, as CppNix passes the
    /// header's value to `makeDecompressionSink` (`identity` is none).
    pub fn from_content_encoding(value: &str) -> Option<Method> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" | "none" => Some(Method::None),
            "xz" | "x-xz" => Some(Method::Xz),
            "zstd" => Some(Method::Zstd),
            "bzip2" | "x-bzip2" => Some(Method::Bzip2),
            _ => None,
        }
    }
}

/// A decompressing reader over `R`.
pub enum Decoder<R: Read> {
    None(R),
    Xz(liblzma::read::XzDecoder<R>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<R>>>),
    Bzip2(bzip2::read::MultiBzDecoder<R>),
}

impl<R: Read> Decoder<R> {
    pub fn new(method: Method, source: R) -> io::Result<Decoder<R>> {
        Ok(match method {
            Method::None => Decoder::None(source),
            // Concatenated streams decode as one, as the `xz` tool does.
            Method::Xz => Decoder::Xz(liblzma::read::XzDecoder::new_multi_decoder(source)),
            Method::Zstd => Decoder::Zstd(Box::new(zstd::stream::read::Decoder::new(source)?)),
            Method::Bzip2 => Decoder::Bzip2(bzip2::read::MultiBzDecoder::new(source)),
        })
    }

    /// The compressed source. Bytes the decoder buffered but has not
    /// decoded yet are not seen again through it.
    pub fn source_mut(&mut self) -> &mut R {
        match self {
            Decoder::None(r) => r,
            Decoder::Xz(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut().get_mut(),
            Decoder::Bzip2(d) => d.get_mut(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(r) => r.read(buf),
            Decoder::Xz(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Bzip2(d) => d.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(method: Method, compressed: &[u8]) {
        let mut out = Vec::new();
        Decoder::new(method, compressed).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello, hello, hello\n", "{method:?}");
    }

    #[test]
    fn decodes_every_method() {
        let data = b"hello, hello, hello\n";
        round_trip(Method::None, data);
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&data[..], 6).read_to_end(&mut xz).unwrap();
        round_trip(Method::Xz, &xz);
        round_trip(Method::Zstd, &zstd::encode_all(&data[..], 3).unwrap());
        let mut bz = Vec::new();
        bzip2::read::BzEncoder::new(&data[..], bzip2::Compression::default()).read_to_end(&mut bz).unwrap();
        round_trip(Method::Bzip2, &bz);
    }

    #[test]
    fn names() {
        assert_eq!(Method::from_name("xz"), Some(Method::Xz));
        assert_eq!(Method::from_name(""), Some(Method::None));
        assert_eq!(Method::from_name("br"), None);
        assert_eq!(Method::from_content_encoding("identity"), Some(Method::None));
        assert_eq!(Method::from_content_encoding("gzip"), None);
    }
}
