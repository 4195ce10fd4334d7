//! The archive as a hashed mirror (`witness_proxy::mirror`), asked by the
//! real `curl` the way CppNix's `hashed-mirrors` asks: GET and HEAD of
//! `/<algo>/<base16>` for bodies and kept flat outputs, 404 for what it
//! does not have, 400 for what is not such a path, and tampered bytes
//! never served whole.

#[allow(dead_code)]
mod common;

use common::curl_available;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::hash::{Algorithm, Hash};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use witness_proxy::archive::{Archive, OutputMode};
use witness_proxy::cas::ObjectId;
use witness_proxy::mirror::{MirrorLimits, serve_mirror, serve_mirror_with};

/// A body the proxy kept (an object by sha256 alone) and a flat output
/// declared by sha512 and sha1.
fn body_bytes() -> Vec<u8> {
    (0..200_000u32).map(|i| (i.wrapping_mul(13) % 241) as u8).collect()
}

fn output_bytes() -> Vec<u8> {
    b"a flat fixed-output file\n".repeat(1000)
}

struct Mirror {
    dir: tempfile::TempDir,
    archive: Arc<Archive>,
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mirror {
    async fn start(limits: Option<MirrorLimits>) -> Mirror {
        let dir = tempfile::tempdir().unwrap();
        let archive = Arc::new(Archive::open(dir.path().join("witness")).unwrap());
        archive.cas().put(&mut &body_bytes()[..]).unwrap();
        for algorithm in [Algorithm::Sha512, Algorithm::Sha1] {
            let declared = algorithm.digest(output_bytes());
            archive.put_output(&declared, OutputMode::Flat, &mut &output_bytes()[..]).unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = match limits {
            Some(limits) => tokio::spawn(serve_mirror_with(archive.clone(), listener, limits)),
            None => tokio::spawn(serve_mirror(archive.clone(), listener)),
        };
        Mirror { dir, archive, port, task }
    }

    /// The URL CppNix asks a mirror for `hash`.
    fn url(&self, hash: &Hash) -> String {
        format!("http://127.0.0.1:{}/{}/{}", self.port, hash.algorithm(), hash.to_base16())
    }

    /// curl (no proxy) with `args`: (status printed, success, output file's
    /// bytes, stderr).
    async fn curl(&self, args: &[&str]) -> (String, bool, Option<Vec<u8>>, String) {
        let out = self.dir.path().join("out");
        let _ = fs::remove_file(&out);
        let mut all: Vec<String> =
            ["-q", "-sS", "--noproxy", "*", "--max-time", "30", "-w", "%{http_code}", "-o"].map(String::from).to_vec();
        all.push(out.display().to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        let output =
            tokio::task::spawn_blocking(move || Command::new("curl").args(&all).output().unwrap()).await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (stdout, output.status.success(), fs::read(&out).ok(), stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_flat_outputs_are_served_by_their_hash() {
    if !curl_available() {
        return;
    }
    let m = Mirror::start(None).await;
    let cases = [
        (Algorithm::Sha256.digest(body_bytes()), body_bytes()),
        (Algorithm::Sha512.digest(output_bytes()), output_bytes()),
        (Algorithm::Sha1.digest(output_bytes()), output_bytes()),
        // A flat output by its sha256 is its object.
        (Algorithm::Sha256.digest(output_bytes()), output_bytes()),
    ];
    for (hash, bytes) in cases {
        let url = m.url(&hash);
        let (code, ok, got, stderr) = m.curl(&["--fail", &url]).await;
        assert!(ok && code == "200", "{url}: {code} {stderr}");
        assert!(got.as_deref() == Some(&bytes[..]), "{url}: other bytes");

        // Upper-case hex is the same hash.
        let upper = url.replace(&hash.to_base16(), &hash.to_base16().to_uppercase());
        let (code, _, got, _) = m.curl(&[&upper]).await;
        assert_eq!(code, "200");
        assert!(got.as_deref() == Some(&bytes[..]));

        let (code, ok, _, _) = m.curl(&["--head", &url]).await;
        assert!(ok && code == "200", "HEAD {url}: {code}");
        let head = fs::read_to_string(m.dir.path().join("out")).unwrap().to_ascii_lowercase();
        assert!(head.contains(&format!("content-length: {}", bytes.len())), "{head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hashes_are_404_and_other_paths_400() {
    if !curl_available() {
        return;
    }
    let m = Mirror::start(None).await;
    for hash in [
        Algorithm::Sha256.digest(b"never seen"),
        Algorithm::Sha512.digest(b"never seen"),
        Algorithm::Md5.digest(b"never seen"),
        // The body's bytes, but no output was declared by their sha1.
        Algorithm::Sha1.digest(body_bytes()),
    ] {
        let (code, ok, said, _) = m.curl(&[&m.url(&hash)]).await;
        assert_eq!((code.as_str(), ok), ("404", true), "{}", m.url(&hash));
        let said = String::from_utf8(said.unwrap()).unwrap();
        assert_eq!(
            said,
            format!("witness mirror: the witness has no flat output {}:{}\n", hash.algorithm(), hash.to_base16())
        );
        let (_, ok, _, _) = m.curl(&["--fail", &m.url(&hash)]).await;
        assert!(!ok, "curl --fail succeeded on a 404");
    }
    let sha256 = Algorithm::Sha256.digest(body_bytes()).to_base16();
    for path in [
        "/".to_owned(),
        "/sha256".to_owned(),
        "/sha3/00".to_owned(),
        "/sha256/00".to_owned(),
        format!("/sha256/{}", "z".repeat(64)),
        format!("/nar/sha256/{sha256}"),
        format!("/sha256/{sha256}/x"),
    ] {
        let (code, _, said, _) = m.curl(&[&format!("http://127.0.0.1:{}{path}", m.port)]).await;
        assert_eq!(code, "400", "{path}");
        let said = String::from_utf8(said.unwrap()).unwrap();
        assert!(said.starts_with("witness mirror: `") && said.ends_with('\n') && said.lines().count() == 1, "{said}");
    }
    let (code, _, _, _) = m.curl(&["-X", "POST", &format!("http://127.0.0.1:{}/sha256/{sha256}", m.port)]).await;
    assert_eq!(code, "405");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_objects_are_never_served_whole() {
    if !curl_available() {
        return;
    }
    let m = Mirror::start(None).await;
    for (hash, bytes) in [
        (Algorithm::Sha256.digest(body_bytes()), body_bytes()),
        (Algorithm::Sha512.digest(output_bytes()), output_bytes()),
    ] {
        let id = ObjectId::of(&bytes);
        let path = m.dir.path().join("witness/cas").join(id.to_hex());
        let mut evil = bytes.clone();
        evil[10] ^= 1;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, &evil).unwrap();

        let (code, ok, got, stderr) = m.curl(&[&m.url(&hash)]).await;
        assert!(!ok, "curl succeeded on tampered bytes: {code}");
        // Cut off mid-body (18), or before the head went out (52).
        assert!(stderr.contains("(18)") || stderr.contains("(52)"), "{stderr}");
        let got = got.map_or(0, |g| g.len());
        assert!(got < bytes.len(), "a complete wrong file arrived ({got} bytes)");
        assert!(m.archive.cas().verify(&id).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_and_the_mirror_serves_on() {
    if !curl_available() {
        return;
    }
    let limits = MirrorLimits { max_connections: 2, header_timeout: Duration::from_secs(1), ..MirrorLimits::default() };
    let m = Mirror::start(Some(limits)).await;
    // Two clients that send half a request head and wait.
    let mut silent = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(("127.0.0.1", m.port)).await.unwrap();
        stream.write_all(b"GET /sha256/").await.unwrap();
        silent.push(stream);
    }
    let started = Instant::now();
    let hash = Algorithm::Sha256.digest(body_bytes());
    let (code, ok, got, stderr) = m.curl(&[&m.url(&hash)]).await;
    assert!(ok && code == "200", "{code} {stderr}");
    assert!(got.as_deref() == Some(&body_bytes()[..]));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "served past the connection limit after {waited:?}");
    assert!(waited < Duration::from_secs(10), "silent clients held the mirror for {waited:?}");
}
