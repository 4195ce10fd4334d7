//! The witness as a substitutor at the request level, and its upkeep, as
//! stock clients meet them through `armitage daemon`: a URL whose origin is
//! gone is answered from the witness for a derivation that never fetched it
//! (its output is not in the witness, only the bytes of the URL);
//! `mode = "offline"` never asks an origin; `mirror-listen` serves the CAS
//! to a stock Nix's `hashed-mirrors`; `gc-with-store` collects the witness
//! with the store.

use crate::origins::Origin;
use crate::witness::{Setup, payload};
use std::path::Path;
use store::hash::Algorithm;
use testkit::{Nix, NixVersion, TestStore, line, output, run, write_file};
use witness_proxy::cas::ObjectId;
use witness_proxy::record::{Body, Record};

#[test]
fn a_url_whose_origin_is_gone_is_replayed_for_a_derivation_that_never_fetched_it() {
    let Some(s) = Setup::new() else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let flat = s.fod(
        "payload.bin",
        "flat",
        &Algorithm::Sha256.digest(&payload),
        &format!("{{curl}} --fail -sS -o $out {url}"),
    );
    s.build_ok(&flat);
    drop(origin);

    // Another derivation, another output (a directory holding the file):
    // nothing in the witness for its declared hash, only the URL's bytes.
    let tree = s.store.work_dir("expected-tree");
    std::fs::write(tree.join("payload.bin"), &payload).unwrap();
    let (hash, _) = local_store::nar_fs::hash_path(&tree, Algorithm::Sha256).unwrap();
    let fetch = format!("{{mkdir}} $out && {{curl}} --fail -sS -o $out/payload.bin {url}");
    let expr = s.fod("payload-dir", "recursive", &hash, &fetch);
    let (out, stderr) = s.build_ok(&expr);
    assert_eq!(s.builder_runs("payload-dir"), 1, "its builder ran:\n{stderr}");
    assert_eq!(std::fs::read(Path::new(&out).join("payload.bin")).unwrap(), payload);
    let records = s.archive().records_for_url(&url).unwrap();
    let replays: Vec<_> = records.iter().filter(|r| r.record.replayed_from.is_some()).collect();
    assert_eq!(replays.len(), 1, "one replay recorded: {records:#?}");
    let original = records.iter().find(|r| r.record.replayed_from.is_none() && r.record.status == Some(200)).unwrap();
    assert_eq!(replays[0].record.replayed_from.as_deref(), Some(original.id.as_str()));
    let build = replays[0].record.build.as_ref().unwrap();
    assert!(build.drv.ends_with("-payload-dir.drv"));
    // Without a sandbox the build had the host's network: a fetch around
    // the proxy would not have been seen, and its records say so.
    assert_eq!(build.network.as_deref(), Some("host"));
}

#[test]
fn offline_no_origin_is_asked_and_only_witnessed_bytes_are_served() {
    let Some(s) = Setup::with_armitage_toml("[witness]\nmode = \"offline\"\n") else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let hash = Algorithm::Sha256.digest(&payload);
    let expr = s.fod("payload.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}"));

    // Nothing witnessed: refused, though the origin is up.
    let failed = s.build(&expr);
    assert!(!failed.status.success(), "{}", String::from_utf8_lossy(&failed.stderr));
    let records = s.archive().records_for_url(&url).unwrap();
    assert_eq!(records.len(), 1);
    let why = records[0].record.error.as_deref().unwrap_or("");
    assert!(why.contains("offline") && why.contains("never witnessed"), "{why}");

    // Witnessed bytes for the URL (as another machine's witness would
    // bring them: `armitage witness import`), with the origin gone.
    drop(origin);
    let archive = s.archive();
    let (id, size) = archive.cas().put(&mut &payload[..]).unwrap();
    let mut seen = Record::new(url.clone(), "GET", None, 1_700_000_000_000);
    (seen.status, seen.ended_ms) = (Some(200), 1_700_000_000_100);
    seen.body = Some(Body { size, sha256: id.to_hex() });
    archive.put_record(&seen).unwrap();
    let (out, _) = s.build_ok(&expr);
    assert_eq!(std::fs::read(&out).unwrap(), payload);
}

#[test]
fn a_stock_nix_fetches_a_flat_output_from_the_witness_mirror() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(s) = Setup::with_armitage_toml(&format!("[witness]\nmirror-listen = \"127.0.0.1:{port}\"\n")) else {
        return;
    };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let hash = Algorithm::Sha256.digest(&payload);
    s.build_ok(&s.fod("payload.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}")));
    drop(origin);

    // CppNix 2.8 on a store of its own: its builtin:fetchurl asks the
    // hashed mirrors first, and the URL itself is gone.
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let other = TestStore::with_conf("build-users-group =\n");
    let expr = other.work_dir("expr").join("mirrored.nix");
    write_file(&expr, format!("import <nix/fetchurl.nix> {{ url = \"{url}\"; sha256 = \"{}\"; }}", hash.to_base16()));
    let out = line(run(other.nix(&nix, "nix-build").arg(&expr).args([
        "--no-out-link",
        "--option",
        "hashed-mirrors",
        &format!("http://127.0.0.1:{port}/"),
    ])));
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    // A hash the witness does not hold is not found there.
    let unknown = format!("http://127.0.0.1:{port}/sha256/{}", "0".repeat(64));
    let status =
        output(std::process::Command::new("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &unknown]));
    assert_eq!(status.stdout, b"404");
}

#[test]
fn the_witness_is_collected_with_the_store_when_asked() {
    let Some(s) = Setup::with_armitage_toml("[witness]\ngc-with-store = true\n") else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let hash = Algorithm::Sha256.digest(&payload);
    let (out, _) = s.build_ok(&s.fod("payload.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}")));
    let archive = s.archive();
    let id = ObjectId::of(&payload);
    assert_eq!(archive.records_for_url(&url).unwrap().len(), 1);
    assert!(archive.cas().has(&id).unwrap());

    s.delete(&out);
    assert!(archive.records_for_url(&url).unwrap().is_empty(), "the record went with the output");
    assert!(!archive.cas().has(&id).unwrap(), "and the bytes with it");
    assert!(s.daemon.log().contains("witness collected after the store's"), "{}", s.daemon.log());
}
