//! `builtin:fetchurl`, the builder CppNix runs in-process for `<nix/fetchurl.nix>`
//! (CppNix's `builtinFetchurl`, fetchurl.cc): downloads `url` to `$out`, optionally
//! unpacking a NAR (`unpack`, decompressing it first when the URL ends in
//! `.xz`) or making it executable (`executable`). The output hash is checked
//! afterwards like any fixed-output derivation's.
//!
//! `http(s)://` URLs go through the substituters' HTTP client (retries for
//! transient failures, TLS checked against Mozilla's roots as CppNix 2.26
//! does; 2.8 did not check); `file://` URLs are read directly. Not done:
//! `hashed-mirrors` (the builder is given no settings) and netrc.

use crate::substitute::SubstituteError;
use crate::substitute::file;
use crate::substitute::http::{Client, ClientConfig, Fetched};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Runs in the build child with the derivation's environment.
pub fn run(env: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    let get = |name: &str| {
        env.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let attr = |name: &str| get(name).ok_or_else(|| format!("attribute '{name}' missing"));
    let out = attr("out")?;
    let url = attr("url")?;
    let unpack = get("unpack").as_deref() == Some("1");
    let executable = get("executable").as_deref() == Some("1");
    // CppNix reads it (to try `hashed-mirrors` for flat hashes) before
    // fetching, so a fetchurl that is not fixed-output fails here.
    attr("outputHashMode")?;
    fetch(&url, Path::new(&out), unpack, executable)
}

/// Downloads `url` to `out` (which must not exist), as [`run`] does.
pub fn fetch(url: &str, out: &Path, unpack: bool, executable: bool) -> Result<(), String> {
    let source = open(url)?;
    let source: Box<dyn Read> = if unpack && url.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(source))
    } else {
        source
    };
    if unpack {
        local_store::nar_fs::unpack(BufReader::with_capacity(256 * 1024, source), out, &store::nar::Limits::default())
            .map_err(|e| format!("unpacking the NAR downloaded from '{url}' to '{}': {e}", out.display()))?;
    } else {
        write_file(source, out).map_err(|e| format!("downloading '{url}' to '{}': {e}", out.display()))?;
    }
    if executable {
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("making '{}' executable: {e}", out.display()))?;
    }
    Ok(())
}

fn open(url: &str) -> Result<Box<dyn Read>, String> {
    if let Some(path) = file::url_to_path(url) {
        return match file::open(&path) {
            Ok(Some(f)) => Ok(Box::new(f)),
            Ok(None) => Err(format!("unable to download '{url}': file '{}' does not exist", path.display())),
            Err(e) => Err(format!("unable to download '{url}': {e}")),
        };
    }
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!("unable to download '{url}': only http://, https:// and file:// URLs are supported"));
    }
    // One transfer at a time; CppNix's defaults otherwise.
    let client = Client::new(&ClientConfig { connections: 1, ..ClientConfig::default() });
    match client.get(url, false).map_err(|e| e.to_string())? {
        Fetched::Body(body) => Ok(Box::new(body)),
        Fetched::Missing => {
            Err(SubstituteError::HttpStatus { url: url.to_owned(), status: 404, reason: "Not Found".into() }
                .to_string())
        }
    }
}

/// Writes `source` to a new file `out` (mode 0666 less the umask, as
/// CppNix's `writeFile`).
fn write_file(mut source: impl Read, out: &Path) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(out)?;
    io::copy(&mut source, &mut file)?;
    file.flush()
}
