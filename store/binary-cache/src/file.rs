//! `file://` locations: binary caches in a local directory (CppNix's
//! src/libstore/local-binary-cache-store.cc) and `file://` URLs given to
//! `builtin:fetchurl`. Writing to a cache is [`crate::cache::BinaryCache::upsert`]'s.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The file system path of a `file://` URL: what follows the scheme, with
/// `%XX` escapes decoded (as curl does). `None` when `url` is not `file://`.
pub fn url_to_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file://")?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(percent_decode(rest))))
}

/// Opens `path` for reading; a missing file is `Ok(None)`.
pub fn open(path: &std::path::Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        assert_eq!(url_to_path("file:///a/b%20c"), Some(PathBuf::from("/a/b c")));
        assert_eq!(url_to_path("file:///a/%zz"), Some(PathBuf::from("/a/%zz")));
        assert_eq!(url_to_path("http://x/"), None);
    }
}
