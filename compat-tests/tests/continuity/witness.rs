//! The witness proxy as a build sees it: a fixed-output derivation whose
//! builder fetches with curl, built by a stock Nix 2.8 client through
//! `armitage daemon`, leaves a record naming its derivation and declared
//! hash, and the fetched bytes in the archive's CAS.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use store::hash::Algorithm;
use testkit::{Daemon, Nix, NixVersion, TestStore, line, run, tool_available, write_file};
use witness_proxy::archive::Archive;

/// A plain HTTP origin on loopback serving `dir` (Python's http.server).
struct Origin {
    child: Child,
    port: u16,
}

impl Origin {
    fn serve(dir: &std::path::Path) -> Origin {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut first).expect("read its first line");
        let port = first
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in http.server's first line: {first:?}"));
        Origin { child, port }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_fixed_output_fetch_is_witnessed_with_its_derivation_and_bytes() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    if !tool_available("curl") || !tool_available("python3") {
        return;
    }
    let store = TestStore::new();
    let payload: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let served = store.work_dir("origin");
    std::fs::write(served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&served);
    let daemon = Daemon::armitage(&store);

    let hash = Algorithm::Sha256.digest(&payload);
    let curl = line(run(Command::new("sh").args(["-c", "command -v curl"])));
    let expr = store.work_dir("expr").join("fetch.nix");
    // The builder reads the proxy from the variables the daemon sets; the
    // origin is plain HTTP, so no certificate is involved here.
    write_file(
        &expr,
        format!(
            r#"derivation {{
  name = "payload.bin";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "test -n \"$http_proxy\" && {curl} --fail -sS -o $out http://127.0.0.1:{port}/payload.bin" ];
  outputHashMode = "flat";
  outputHashAlgo = "sha256";
  outputHash = "{hash}";
}}"#,
            curl = curl,
            port = origin.port,
            hash = hash.to_base16(),
        ),
    );
    let out = line(run(daemon.client(&store, &nix, "nix-build").arg(&expr).arg("--no-out-link")));
    assert_eq!(std::fs::read(&out).unwrap(), payload, "the build's output is what the origin served");
    let drv = line(run(daemon.client(&store, &nix, "nix-instantiate").arg(&expr)));

    let archive = Archive::open(store.state_dir.join("witness")).expect("the daemon's witness archive");
    let records = archive.records_for_hash(&hash).expect("records by declared hash");
    assert_eq!(records.len(), 1, "one exchange for the one fetch: {records:#?}");
    let record = &records[0].record;
    assert_eq!(record.url, format!("http://127.0.0.1:{}/payload.bin", origin.port));
    assert_eq!((record.method.as_str(), record.status), ("GET", Some(200)));
    let build = record.build.as_ref().expect("the record names its build");
    assert_eq!(build.drv, drv);
    assert_eq!((build.output.as_str(), build.output_hash_mode.as_str()), ("out", "flat"));
    assert_eq!(build.parsed_output_hash().unwrap(), hash);
    let body = record.body.as_ref().expect("the body was received whole");
    assert_eq!((body.size, body.sha256.as_str()), (payload.len() as u64, hash.to_base16().as_str()));
    let id = body.sha256.parse().unwrap();
    let mut kept = Vec::new();
    archive.cas().get(&id).unwrap().expect("the body is in the CAS").read_to_end(&mut kept).unwrap();
    assert_eq!(kept, payload);
    assert!(archive.verify().unwrap().is_ok());
}
