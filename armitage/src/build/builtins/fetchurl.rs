//! `builtin:fetchurl`, the builder CppNix runs in-process for `<nix/fetchurl.nix>`
//! (CppNix's `builtinFetchurl`, fetchurl.cc): downloads `url` to `$out`, optionally
//! unpacking a NAR (`unpack`, decompressing it first when the URL ends in
//! `.xz`) or making it executable (`executable`). The output hash is checked
//! afterwards like any fixed-output derivation's.
//!
//! `http(s)://` URLs go through the substituters' HTTP client (retries for
//! transient failures, TLS checked against Mozilla's roots as CppNix 2.26
//! does; 2.8 did not check); `file://` URLs are read directly. The
//! derivation's environment routes the transfer as it would route a
//! builder's curl: its proxy variables (`https_proxy`, `http_proxy`,
//! `all_proxy`, either case) and its CA file (`NIX_SSL_CERT_FILE`, else
//! `SSL_CERT_FILE`, when it exists). That is how the daemon's witness proxy
//! sees a `builtin:fetchurl` (build/witnessed/). Not done: `hashed-mirrors`
//! (the builder is given no settings) and netrc.

use crate::substitute::SubstituteError;
use crate::substitute::file;
use crate::substitute::http::{Client, ClientConfig, Fetched, Route};
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
    fetch(&url, Path::new(&out), unpack, executable, &route(&url, &get))
}

/// The proxy and CA file the environment (`get`) gives a transfer of `url`,
/// with curl's choice of variables: `<scheme>_proxy` (only lower case for
/// http, as curl), then `all_proxy`; empty means none.
fn route(url: &str, get: &dyn Fn(&str) -> Option<String>) -> Route {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    let names: &[&str] = match scheme {
        "https" => &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
        "http" => &["http_proxy", "all_proxy", "ALL_PROXY"],
        _ => &[],
    };
    let proxy = names.iter().find_map(|n| get(n).filter(|v| !v.is_empty()));
    let ca_file = ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"]
        .iter()
        .find_map(|n| get(n).filter(|v| !v.is_empty()))
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file());
    Route { proxy, ca_file }
}

/// Downloads `url` to `out` (which must not exist), as [`run`] does,
/// through `route`.
fn fetch(url: &str, out: &Path, unpack: bool, executable: bool, route: &Route) -> Result<(), String> {
    let source = open(url, route)?;
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

fn open(url: &str, route: &Route) -> Result<Box<dyn Read>, String> {
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
    let client = Client::with_route(&ClientConfig { connections: 1, ..ClientConfig::default() }, route)
        .map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::route;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_proxy_is_chosen_by_scheme_as_curl_chooses_it() {
        let get = env(&[("https_proxy", "http://127.0.0.1:1"), ("HTTP_PROXY", "http://127.0.0.1:2")]);
        assert_eq!(route("https://example.org/x", &get).proxy.as_deref(), Some("http://127.0.0.1:1"));
        // curl ignores upper-case HTTP_PROXY (httpoxy).
        assert_eq!(route("http://example.org/x", &get).proxy, None);
        let get = env(&[("http_proxy", ""), ("all_proxy", "http://127.0.0.1:3")]);
        assert_eq!(route("http://example.org/x", &get).proxy.as_deref(), Some("http://127.0.0.1:3"));
        assert_eq!(route("file:///x", &get).proxy, None);
    }

    #[test]
    fn a_ca_file_counts_only_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.crt");
        std::fs::write(&bundle, "").unwrap();
        let missing = dir.path().join("missing.crt");
        let get = env(&[("NIX_SSL_CERT_FILE", missing.to_str().unwrap()), ("SSL_CERT_FILE", bundle.to_str().unwrap())]);
        // The first variable set decides, as in CppNix; a missing file (as
        // nixpkgs' fetchurl names to skip verification) leaves the default roots.
        assert_eq!(route("https://example.org/x", &get).ca_file, None);
        let get = env(&[("SSL_CERT_FILE", bundle.to_str().unwrap())]);
        assert_eq!(route("https://example.org/x", &get).ca_file.as_deref(), Some(bundle.as_path()));
    }
}
