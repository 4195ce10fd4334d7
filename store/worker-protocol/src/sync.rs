//! The blocking (`std::io`) half of the protocol's encoding, for code that
//! runs on a plain thread while the bytes stream past: little-endian `u64`s,
//! strings padded to 8 bytes (worker-protocol.md §2), and the path info that
//! AddMultipleToStore sends before each NAR. Its users are the daemon's
//! uploads (read inside `block_in_place`) and the `nix-store --export`
//! records of ExportPath and ImportPaths (`store::local`'s export module).
//!
//! The async codec (`wire`, `types`) is the other half; the two write the
//! same bytes. No tokio here.

use super::Limits;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use store::content_address::{CaError, ContentAddress};
use store::hash::{Algorithm, Hash, HashError};
use store::path_info::PathInfo;
use store::store_path::{StoreDir, StorePathError};

/// Why a primitive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a string of {len} bytes is longer than {limit}")]
    TooLong { len: u64, limit: u64 },
    #[error("non-zero padding")]
    NonZeroPadding,
    #[error("a string is not UTF-8")]
    NotUtf8,
}

/// Why a path info could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PathInfoError {
    #[error("reading a path's metadata: {0}")]
    Read(#[from] ReadError),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error("{0}")]
    Hash(#[from] HashError),
    #[error("{0}")]
    ContentAddress(#[from] CaError),
    /// More references or signatures than [`Limits::max_elements`].
    #[error("a path lists {count} {what}, more than {max}")]
    TooMany { what: &'static str, count: u64, max: u64 },
}

/// A little-endian `u64`.
pub fn read_u64<R: Read + ?Sized>(r: &mut R) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A string of at most `limit` bytes; its padding must be zeros, as
/// CppNix's `readString` requires.
pub fn read_string<R: Read + ?Sized>(r: &mut R, limit: u64) -> Result<String, ReadError> {
    read_padded_string(r, limit, true)
}

/// A string of at most `limit` bytes whose padding is read but not checked
/// (the export records of ImportPaths have always been read so).
pub fn read_string_skipping_padding<R: Read + ?Sized>(r: &mut R, limit: u64) -> Result<String, ReadError> {
    read_padded_string(r, limit, false)
}

fn read_padded_string<R: Read + ?Sized>(r: &mut R, limit: u64, check_padding: bool) -> Result<String, ReadError> {
    let len = read_u64(r)?;
    if len > limit {
        return Err(ReadError::TooLong { len, limit });
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    let mut pad = [0u8; 8];
    let p = padding(len);
    r.read_exact(&mut pad[..p])?;
    if check_padding && pad[..p].iter().any(|&b| b != 0) {
        return Err(ReadError::NonZeroPadding);
    }
    String::from_utf8(buf).map_err(|_| ReadError::NotUtf8)
}

/// A little-endian `u64`.
pub fn write_u64<W: Write + ?Sized>(w: &mut W, v: u64) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

/// A string: its length, its bytes, zeros up to a multiple of 8.
pub fn write_string<W: Write + ?Sized>(w: &mut W, s: &str) -> io::Result<()> {
    write_u64(w, s.len() as u64)?;
    w.write_all(s.as_bytes())?;
    w.write_all(&[0u8; 8][..padding(s.len() as u64)])
}

fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// A `ValidPathInfo` in the minor ≥ 16 layout, path first (§6.1; what
/// AddMultipleToStore sends before each NAR). The NAR hash may be in any
/// form CppNix accepts.
pub fn read_path_info<R: Read + ?Sized>(r: &mut R, dir: &StoreDir, limits: &Limits) -> Result<PathInfo, PathInfoError> {
    let max = limits.max_string;
    let path = dir.parse_path(&read_string(r, max)?)?;
    let deriver = read_string(r, max)?;
    let hash = read_string(r, max)?;
    let nar_hash = Hash::parse_any(&hash, Some(Algorithm::Sha256))?;
    let count = read_u64(r).map_err(ReadError::from)?;
    if count > limits.max_elements {
        return Err(PathInfoError::TooMany { what: "references", count, max: limits.max_elements });
    }
    let mut references = BTreeSet::new();
    for _ in 0..count {
        references.insert(dir.parse_path(&read_string(r, max)?)?);
    }
    let registration_time = read_u64(r).map_err(ReadError::from)?;
    let nar_size = read_u64(r).map_err(ReadError::from)?;
    let ultimate = read_u64(r).map_err(ReadError::from)? != 0;
    let count = read_u64(r).map_err(ReadError::from)?;
    if count > limits.max_elements {
        return Err(PathInfoError::TooMany { what: "signatures", count, max: limits.max_elements });
    }
    let mut sigs = BTreeSet::new();
    for _ in 0..count {
        sigs.insert(read_string(r, max)?);
    }
    let ca = read_string(r, max)?;
    let mut info = PathInfo::new(path, nar_hash, nar_size);
    info.deriver = if deriver.is_empty() { None } else { Some(dir.parse_path(&deriver)?) };
    info.references = references;
    info.registration_time = i64::try_from(registration_time).unwrap_or(i64::MAX);
    info.ultimate = ultimate;
    info.sigs = sigs;
    info.ca = if ca.is_empty() { None } else { Some(ContentAddress::parse(&ca)?) };
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_with_zero_padding() {
        let mut bytes = Vec::new();
        write_string(&mut bytes, "hello").unwrap();
        write_u64(&mut bytes, 7).unwrap();
        assert_eq!(bytes.len(), 8 + 8 + 8);
        assert_eq!(&bytes[8..16], b"hello\0\0\0");
        let mut r = &bytes[..];
        assert_eq!(read_string(&mut r, 64).unwrap(), "hello");
        assert_eq!(read_u64(&mut r).unwrap(), 7);
        assert!(r.is_empty());
    }

    #[test]
    fn a_long_string_is_refused_before_it_is_read() {
        let mut bytes = Vec::new();
        write_string(&mut bytes, "0123456789").unwrap();
        let err = read_string(&mut &bytes[..], 4).unwrap_err();
        assert_eq!(err.to_string(), "a string of 10 bytes is longer than 4");
    }

    #[test]
    fn padding_is_checked_or_skipped() {
        let mut bytes = Vec::new();
        write_string(&mut bytes, "abc").unwrap();
        bytes[8 + 3] = 1;
        assert_eq!(read_string(&mut &bytes[..], 64).unwrap_err().to_string(), "non-zero padding");
        assert_eq!(read_string_skipping_padding(&mut &bytes[..], 64).unwrap(), "abc");
    }

    #[test]
    fn a_short_stream_is_an_io_error() {
        let bytes = 16u64.to_le_bytes();
        assert!(matches!(read_string(&mut &bytes[..], 64), Err(ReadError::Io(_))));
    }

    #[test]
    fn reads_the_path_info_the_async_codec_writes() {
        let dir = StoreDir::default();
        let path = dir.parse_path("/nix/store/8fx8g9z51y79wk98hj0bgxa58p186zsi-hello").unwrap();
        let dep = dir.parse_path("/nix/store/0000000000000000000000000000000a-dep").unwrap();
        let hash = Hash::parse_any("sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", None).unwrap();
        let mut info = PathInfo::new(path.clone(), hash, 4096);
        info.references = [path.clone(), dep.clone()].into();
        info.deriver = Some(dep);
        info.registration_time = 1700000000;
        info.ultimate = true;
        info.sigs = ["cache.example.org-1:c2ln".to_owned()].into();
        let mut bytes = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        {
            let mut fut = std::pin::pin!(super::super::write_path_info(&mut bytes, &dir, &info, 38));
            while fut.as_mut().poll(&mut cx).is_pending() {}
        }
        let mut r = &bytes[..];
        let read = read_path_info(&mut r, &dir, &Limits::DEFAULT).unwrap();
        assert!(r.is_empty());
        assert_eq!(read, info);
    }

    #[test]
    fn too_many_references_are_refused() {
        let dir = StoreDir::default();
        let mut bytes = Vec::new();
        write_string(&mut bytes, "/nix/store/8fx8g9z51y79wk98hj0bgxa58p186zsi-hello").unwrap();
        write_string(&mut bytes, "").unwrap();
        write_string(&mut bytes, "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s").unwrap();
        write_u64(&mut bytes, 3).unwrap();
        let limits = Limits { max_elements: 2, ..Limits::DEFAULT };
        let err = read_path_info(&mut &bytes[..], &dir, &limits).unwrap_err();
        assert_eq!(err.to_string(), "a path lists 3 references, more than 2");
    }
}
