//! `armitage witness ls/show/verify/gc/ca` on archives made here with
//! witness-proxy's `Archive` (as the daemon's proxy fills them), in a
//! throwaway store's state dir; gc against paths added to that store.
//! Needs no Nix.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use store::hash::Algorithm;
use testkit::TestStore;
use witness_proxy::archive::Archive;
use witness_proxy::record::{Body, BuildRef, Certificate, RECORD_VERSION, Record};

/// Where the daemon keeps the archive of `store` by default.
fn default_dir(store: &TestStore) -> PathBuf {
    store.state_dir.join("witness")
}

fn witness(store: &TestStore) -> Command {
    let mut cmd = store.armitage();
    cmd.arg("witness");
    cmd
}

/// A `.drv` path in `store` for a derivation named `name`.
fn drv_path(store: &TestStore, name: &str, salt: char) -> String {
    store.path_of(&format!("{}-{name}.drv", salt.to_string().repeat(32)))
}

fn build(drv: String, output_hash: String, mode: &str) -> BuildRef {
    BuildRef { drv, output: "out".into(), output_hash, output_hash_mode: mode.into(), network: None }
}

/// A record of a complete 200 response with `body` (stored in the CAS).
fn fetched(archive: &Archive, url: &str, body: &[u8], started_ms: u64, build: Option<BuildRef>) -> Record {
    let (id, size) = archive.cas().put(&mut &body[..]).unwrap();
    Record {
        version: RECORD_VERSION,
        url: url.into(),
        method: "GET".into(),
        status: Some(200),
        redirected_from: None,
        redirect_hop: 0,
        location: None,
        tls_chain: vec![Certificate {
            sha256: "ab".repeat(32),
            subject: "CN=example.org".into(),
            issuer: "CN=Example Root CA".into(),
            not_before: 1_600_000_000,
            not_after: 1_900_000_000,
        }],
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        body: Some(Body { size, sha256: id.to_hex() }),
        started_ms,
        ended_ms: started_ms + 120,
        build,
        error: None,
        replayed_from: None,
        replay_reason: None,
    }
}

/// A record of a fetch that got no response.
fn failed(url: &str, started_ms: u64) -> Record {
    Record {
        version: RECORD_VERSION,
        url: url.into(),
        method: "GET".into(),
        status: None,
        redirected_from: None,
        redirect_hop: 0,
        location: None,
        tls_chain: vec![],
        headers: vec![],
        body: None,
        started_ms,
        ended_ms: started_ms + 5,
        build: None,
        error: Some("connection refused".into()),
        replayed_from: None,
        replay_reason: None,
    }
}

/// Three records: `b` (oldest, example.net), `c` (a failure, no build) and
/// `a` (newest); `a` and `c` share a URL but for its token.
struct Listed {
    a: String,
    b: String,
    c: String,
    drv_a: String,
}

fn fill(store: &TestStore, dir: &Path) -> Listed {
    let archive = Archive::open(dir).unwrap();
    let drv_a = drv_path(store, "a.tar.gz", 'a');
    let hash = Algorithm::Sha256.digest(b"a").to_sri();
    let a = archive
        .put_record(&fetched(
            &archive,
            "https://example.org/a.tar.gz?token=one",
            b"a",
            3_000_000,
            Some(build(drv_a.clone(), hash.clone(), "flat")),
        ))
        .unwrap();
    let drv_b = drv_path(store, "b.tar.gz", 'b');
    let b = archive
        .put_record(&fetched(
            &archive,
            "https://example.net/b.tar.gz",
            b"bb",
            1_000_000,
            Some(build(drv_b, hash, "flat")),
        ))
        .unwrap();
    let c = archive.put_record(&failed("https://example.org/a.tar.gz?token=two", 2_000_000)).unwrap();
    Listed { a, b, c, drv_a }
}

fn ids_listed(stdout: &str) -> Vec<String> {
    stdout.lines().map(|l| l.split_whitespace().next().unwrap().to_owned()).collect()
}

fn short(id: &str) -> String {
    id[..12].to_owned()
}

#[test]
fn witness_ls_lists_by_start_time_and_filters() {
    let store = TestStore::new();
    let r = fill(&store, &default_dir(&store));

    let out = testkit::run(witness(&store).arg("ls"));
    assert_eq!(ids_listed(&out), [short(&r.b), short(&r.c), short(&r.a)], "{out}");
    let line_a = out.lines().nth(2).unwrap();
    for part in [
        "1970-01-01T00:50:00Z",
        " 200 GET https://example.org/a.tar.gz?token=<redacted> ",
        "1 bytes sha256:ca978112ca1b",
        &r.drv_a,
    ] {
        assert!(line_a.contains(part), "{part:?} not in {line_a:?}");
    }
    let line_c = out.lines().nth(1).unwrap();
    assert!(line_c.contains(" --- GET ") && line_c.contains("no body") && line_c.contains("error: connection refused"));

    // By URL, whatever its token: both records of it.
    let out = testkit::run(witness(&store).args(["ls", "--url", "https://example.org/a.tar.gz?token=three"]));
    assert_eq!(ids_listed(&out), [short(&r.c), short(&r.a)], "{out}");
    // By derivation.
    let out = testkit::run(witness(&store).args(["ls", "--drv", &r.drv_a]));
    assert_eq!(ids_listed(&out), [short(&r.a)], "{out}");
    let err = testkit::run_fail(witness(&store).args(["ls", "--drv", "/tmp/not-a-drv"]));
    assert!(err.contains("is not a .drv store path"), "{err}");
    assert!(testkit::run(witness(&store).args(["ls", "--url", "https://elsewhere.example/"])).is_empty());

    // JSON: every record with its id, in the same order.
    let json = run_json(witness(&store).args(["ls", "--json"]));
    let ids: Vec<&str> = json.as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&r.b, &r.c, &r.a]);
    assert_eq!(json[2]["build"]["drv"], r.drv_a.as_str());
}

#[test]
fn witness_archive_is_found_by_flag_config_or_state_dir() {
    let store = TestStore::new();
    let elsewhere = store.work_dir("witness-elsewhere");
    let r = fill(&store, &elsewhere);

    // Nothing at <state dir>/witness: an error, and nothing made there.
    let err = testkit::run_fail(witness(&store).arg("ls"));
    assert!(err.contains("no witness archive at") && err.lines().count() == 1, "{err}");
    assert!(!default_dir(&store).exists());

    let out = testkit::run(witness(&store).arg("ls").arg("--dir").arg(&elsewhere));
    assert_eq!(ids_listed(&out).len(), 3, "{out}");
    // `--dir` before the subcommand, too.
    let out = testkit::run(witness(&store).arg("--dir").arg(&elsewhere).arg("ls"));
    assert_eq!(ids_listed(&out).len(), 3, "{out}");

    testkit::write_file(store.armitage_config(), format!("[witness]\ndir = \"{}\"\n", elsewhere.display()));
    let out = testkit::run(witness(&store).args(["ls", "--drv", &r.drv_a]));
    assert_eq!(ids_listed(&out), [short(&r.a)], "{out}");
}

#[test]
fn witness_show_prints_one_record() {
    let store = TestStore::new();
    let dir = default_dir(&store);
    let r = fill(&store, &dir);
    let expected = Archive::open(&dir).unwrap().record(&r.a).unwrap().unwrap();

    let json = run_json(witness(&store).args(["show", "--json", &r.a]));
    assert_eq!(json["id"], r.a.as_str());
    let back: Record = serde_json::from_value(json).unwrap();
    assert_eq!(back, expected);
    assert_eq!(back.id(), r.a);

    // A unique prefix will do.
    let text = testkit::run(witness(&store).args(["show", &r.a[..10]]));
    for part in [
        format!("record:     {}", r.a),
        "url:        https://example.org/a.tar.gz?token=<redacted>".to_owned(),
        "status:     200".to_owned(),
        format!("body:       1 bytes, sha256 {}", Algorithm::Sha256.digest(b"a").to_base16()),
        format!("derivation: {}", r.drv_a),
        "  content-type: application/octet-stream".to_owned(),
        "  [0] subject: CN=example.org".to_owned(),
        "      issuer:  CN=Example Root CA".to_owned(),
        "      valid:   2020-09-13T12:26:40Z to 2030-03-17T17:46:40Z".to_owned(),
        format!("      sha256:  {}", "ab".repeat(32)),
    ] {
        assert!(text.contains(&part), "{part:?} not in\n{text}");
    }
    // The output path it was for, computed from the record.
    let out_path = text.lines().find_map(|l| l.strip_prefix("out path:   ")).expect(&text);
    assert!(out_path.starts_with(&format!("{}/", store.store_dir)) && out_path.ends_with("-a.tar.gz"), "{out_path}");

    let text = testkit::run(witness(&store).args(["show", &r.c]));
    assert!(text.contains("error:      connection refused") && text.contains("tls chain:  none"), "{text}");

    let err = testkit::run_fail(witness(&store).args(["show", &"0".repeat(64)]));
    assert!(err.contains("no record 0000"), "{err}");
    let err = testkit::run_fail(witness(&store).args(["show", "XYZ"]));
    assert!(err.contains("is not a record id"), "{err}");
}

#[test]
fn witness_verify_fails_on_a_tampered_object() {
    let store = TestStore::new();
    let dir = default_dir(&store);
    fill(&store, &dir);
    let out = testkit::output(witness(&store).arg("verify"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "2 objects and 3 records checked: no problems");

    let object = dir.join("cas").join(Algorithm::Sha256.digest(b"bb").to_base16());
    set_mode(&object, 0o644);
    std::fs::write(&object, b"bB").unwrap();
    let out = testkit::output(witness(&store).arg("verify"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("object ") && lines[0].contains(" is tampered: its bytes hash to "), "{stdout}");
    assert_eq!(lines[1], "2 objects and 3 records checked: 1 problem");
}

/// Adds `file` to `store` as a fixed-output path (`--recursive`: NAR
/// hashing); returns the path and its content address (`fixed:...`).
fn add_fixed(store: &TestStore, file: &Path, recursive: bool) -> (String, String) {
    let mut cmd = store.armitage();
    cmd.args(["store", "add", "--fixed", "sha256"]);
    if recursive {
        cmd.arg("--recursive");
    }
    let path = testkit::line(testkit::run(cmd.arg(file)));
    let info = run_json(store.armitage().args(["path-info", "--json", &path]));
    let ca = info[&path]["ca"].as_str().unwrap().to_owned();
    (path, ca)
}

/// The declared hash and mode of a derivation whose output has `ca`.
fn declared(ca: &str) -> (String, &'static str) {
    match ca.strip_prefix("fixed:r:") {
        Some(hash) => (hash.to_owned(), "recursive"),
        None => (ca.strip_prefix("fixed:").unwrap().to_owned(), "flat"),
    }
}

#[test]
fn witness_gc_keeps_the_records_of_valid_outputs() {
    let store = TestStore::new();
    let work = store.work_dir("in");
    testkit::write_file(work.join("kept.txt"), "kept\n");
    testkit::write_file(work.join("kept-tree/file"), "in a tree\n");
    let (flat_path, flat_ca) = add_fixed(&store, &work.join("kept.txt"), false);
    let (tree_path, tree_ca) = add_fixed(&store, &work.join("kept-tree"), true);

    let dir = default_dir(&store);
    let archive = Archive::open(&dir).unwrap();
    let (hash, mode) = declared(&flat_ca);
    let flat = fetched(
        &archive,
        "https://example.org/kept.txt",
        b"kept\n",
        1,
        Some(build(drv_path(&store, "kept.txt", 'k'), hash, mode)),
    );
    let (hash, mode) = declared(&tree_ca);
    let tree = fetched(
        &archive,
        "https://example.org/kept-tree.tar",
        b"a tarball",
        2,
        Some(build(drv_path(&store, "kept-tree", 'x'), hash, mode)),
    );
    // Its output was never added: the record and its body go.
    let gone = fetched(
        &archive,
        "https://example.org/gone.txt",
        b"gone\n",
        3,
        Some(build(drv_path(&store, "gone.txt", 'g'), Algorithm::Sha256.digest(b"gone\n").to_sri(), "flat")),
    );
    // Made for no build: kept.
    let daemon = fetched(&archive, "https://example.org/daemon", b"for the daemon", 4, None);
    let ids: Vec<String> = [&flat, &tree, &gone, &daemon].iter().map(|r| archive.put_record(r).unwrap()).collect();
    drop(archive);

    let object = |body: &[u8]| dir.join("cas").join(Algorithm::Sha256.digest(body).to_base16());
    let trace = |id: &str| dir.join("traces").join(format!("{id}.cbor"));
    let report = "records: 3 kept, 1 would be removed\nobjects: 3 kept, 1 would be removed\n5 bytes would be freed\n";
    assert_eq!(testkit::run(witness(&store).args(["gc", "--dry-run"])), report);
    assert!(ids.iter().all(|id| trace(id).exists()) && object(b"gone\n").exists(), "a dry run removes nothing");

    let out = testkit::run(witness(&store).arg("gc"));
    assert_eq!(out, "records: 3 kept, 1 removed\nobjects: 3 kept, 1 removed\n5 bytes freed\n");
    assert!(!trace(&ids[2]).exists() && !object(b"gone\n").exists());
    for (id, body) in [(&ids[0], &b"kept\n"[..]), (&ids[1], b"a tarball"), (&ids[3], b"for the daemon")] {
        assert!(trace(id).exists() && object(body).exists(), "{id}");
    }
    let listed = testkit::run(witness(&store).arg("ls"));
    assert_eq!(ids_listed(&listed), [short(&ids[0]), short(&ids[1]), short(&ids[3])], "{listed}");
    testkit::run(witness(&store).arg("verify"));

    // The output paths gc found valid are the ones added.
    for (id, path) in [(&ids[0], &flat_path), (&ids[1], &tree_path)] {
        let text = testkit::run(witness(&store).args(["show", id]));
        assert!(text.contains(&format!("out path:   {path}\n")), "{path} not in\n{text}");
    }

    // Once the flat output is gone, so is its record.
    testkit::run(store.armitage().args(["store", "gc", "--delete", &flat_path]));
    let out = testkit::run(witness(&store).arg("gc"));
    assert_eq!(out, "records: 2 kept, 1 removed\nobjects: 2 kept, 1 removed\n5 bytes freed\n");
}

#[test]
fn witness_ca_prints_the_certificate_and_its_fingerprint() {
    let store = TestStore::new();
    let err = testkit::run_fail(witness(&store).arg("ca"));
    assert!(err.contains("no witness CA at"), "{err}");

    let ca = witness_proxy::ca::WitnessCa::load_or_create(&default_dir(&store).join("ca")).unwrap();
    let out = testkit::output(witness(&store).arg("ca"));
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), ca.cert_pem());
    let hex = Algorithm::Sha256.digest(ca.cert_der()).to_base16().to_uppercase();
    let pairs: Vec<&str> = (0..64).step_by(2).map(|i| &hex[i..i + 2]).collect();
    assert_eq!(String::from_utf8(out.stderr).unwrap(), format!("sha256 Fingerprint={}\n", pairs.join(":")));
}
