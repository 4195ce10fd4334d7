//! The witness archive on disk: records stored through the `Witness` seam
//! the proxy uses, found again by URL and by declared output hash in every
//! form Nix writes one, redacted before storing, kept or dropped by gc,
//! and checked by verify; fixed-output outputs kept and found by their
//! declared hash and mode.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use store::hash::{Algorithm, Encoding, Hash};
use witness_proxy::archive::{Archive, ArchiveError, OutputMode, Problem};
use witness_proxy::cas::{CasError, ObjectId};
use witness_proxy::record::{Body, BuildRef, RECORD_VERSION, Record};
use witness_proxy::sink::Witness;

fn record(url: &str, started_ms: u64, body: Option<&[u8]>, output_hash: Option<String>) -> Record {
    Record {
        version: RECORD_VERSION,
        url: url.into(),
        method: "GET".into(),
        status: Some(200),
        redirected_from: None,
        redirect_hop: 0,
        location: None,
        tls_chain: Vec::new(),
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        body: body.map(|b| Body { size: b.len() as u64, sha256: ObjectId::of(b).to_string() }),
        started_ms,
        ended_ms: started_ms + 10,
        build: output_hash.map(|h| BuildRef {
            drv: "/nix/store/00000000000000000000000000000000-src.drv".into(),
            output: "out".into(),
            output_hash: h,
            output_hash_mode: "flat".into(),
            network: None,
        }),
        error: None,
        replayed_from: None,
        replay_reason: None,
    }
}

/// Stores `bytes` as a body through the witness seam; returns its sha256.
fn body(archive: &Archive, bytes: &[u8]) -> String {
    let mut w = archive.body().unwrap();
    for chunk in bytes.chunks(3) {
        w.write_all(chunk).unwrap();
    }
    let (sha256, size) = w.commit().unwrap();
    assert_eq!(size, bytes.len() as u64);
    sha256
}

fn ids(records: &[witness_proxy::archive::StoredRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

#[test]
fn a_record_and_its_body_go_in_through_the_witness_seam() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let sha256 = body(&archive, b"tarball bytes");
    assert_eq!(sha256, ObjectId::of(b"tarball bytes").to_string());
    let r = record("https://example.org/a.tar.gz", 1, Some(b"tarball bytes"), None);
    let id = Witness::record(&archive, &r).unwrap();
    assert_eq!(id, r.id());
    assert!(dir.path().join(format!("traces/{id}.cbor")).is_file());
    assert!(dir.path().join(format!("cas/{sha256}")).is_file());
    assert_eq!(archive.record(&id).unwrap(), Some(r));
    assert_eq!(ids(&archive.all_records().unwrap()), [id.as_str()]);
    assert!(archive.verify().unwrap().is_ok());
}

#[test]
fn a_body_dropped_before_commit_leaves_nothing() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let mut w = archive.body().unwrap();
    w.write_all(b"half a download").unwrap();
    drop(w);
    assert!(archive.cas().list().unwrap().is_empty());
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn records_are_found_by_url_and_by_each_form_of_the_declared_hash() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let sha256 = Algorithm::Sha256.digest(b"one");
    let sha512 = Algorithm::Sha512.digest(b"two");
    let sha1 = Algorithm::Sha1.digest(b"three");
    // Each declared in another form than it is looked up with.
    let stored = [
        (record("https://a.example/x", 1, None, Some(sha256.to_sri())), sha256),
        (record("https://a.example/x", 2, None, Some(sha512.to_typed(Encoding::Base16))), sha512),
        (record("https://b.example/y", 3, None, Some(sha1.to_typed(Encoding::Nix32))), sha1),
    ];
    let ids: Vec<String> = stored.iter().map(|(r, _)| archive.put_record(r).unwrap()).collect();

    for (i, (_, hash)) in stored.iter().enumerate() {
        for form in [Encoding::Sri, Encoding::Base16, Encoding::Nix32, Encoding::Base64] {
            let query = Hash::parse_any(&hash.to_typed(form), None).unwrap();
            let found = archive.records_for_hash(&query).unwrap();
            assert_eq!(self::ids(&found), [ids[i].as_str()], "{form:?}");
        }
    }
    assert!(archive.records_for_hash(&Algorithm::Sha256.digest(b"other")).unwrap().is_empty());

    let found = archive.records_for_url("https://a.example/x").unwrap();
    assert_eq!(self::ids(&found), [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(found[1].record, stored[1].0);
    assert_eq!(self::ids(&archive.records_for_url("https://b.example/y").unwrap()), [ids[2].as_str()]);
    assert!(archive.records_for_url("https://b.example/z").unwrap().is_empty());
    assert!(dir.path().join("index/hash").join(format!("sha512-{}", sha512.to_base16())).is_file());
}

#[test]
fn credentials_are_redacted_before_storing_and_still_find_the_record() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let mut r = record("https://user:hunter2@git.example/r.tar.gz?private_token=hunter3&ref=main", 1, None, None);
    r.headers.push(("authorization".into(), "Bearer hunter4".into()));
    r.location = Some("https://cdn.example/r.tar.gz?X-Amz-Signature=hunter5".into());
    let id = archive.put_record(&r).unwrap();

    let trace = fs::read(dir.path().join(format!("traces/{id}.cbor"))).unwrap();
    let text = String::from_utf8_lossy(&trace);
    for secret in ["hunter2", "hunter3", "hunter4", "hunter5", "authorization"] {
        assert!(!text.contains(secret), "{secret} was stored");
    }
    let stored = archive.record(&id).unwrap().unwrap();
    assert_eq!(stored.url, "https://<redacted>@git.example/r.tar.gz?private_token=<redacted>&ref=main");
    assert_eq!(stored.location.as_deref(), Some("https://cdn.example/r.tar.gz?X-Amz-Signature=<redacted>"));
    assert_eq!(stored.headers, [("content-type".to_owned(), "application/octet-stream".to_owned())]);
    assert_eq!(id, stored.id());
    // Looked up with the credentials or without.
    for url in [r.url.as_str(), stored.url.as_str()] {
        assert_eq!(ids(&archive.records_for_url(url).unwrap()), [id.as_str()]);
    }
}

#[test]
fn a_malformed_record_id_is_refused_not_looked_up() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    for bad in ["../../etc/passwd", "", &"A".repeat(64)] {
        let err = archive.record(bad).unwrap_err();
        assert!(err.to_string().contains("is not a record id"), "{err}");
    }
    assert_eq!(archive.record(&"0".repeat(64)).unwrap(), None);
}

#[test]
fn a_torn_index_line_is_skipped_and_does_not_eat_the_next() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let url = "https://example.org/f";
    let first = archive.put_record(&record(url, 1, None, None)).unwrap();
    // A crash in the middle of an append.
    let index = archive.url_index_path(url);
    fs::OpenOptions::new().append(true).open(&index).unwrap().write_all(&first.as_bytes()[..30]).unwrap();
    assert_eq!(ids(&archive.records_for_url(url).unwrap()), [first.as_str()]);

    let second = archive.put_record(&record(url, 2, None, None)).unwrap();
    assert_eq!(ids(&archive.records_for_url(url).unwrap()), [first.as_str(), second.as_str()]);
    // The torn line stays a line of its own.
    let text = fs::read_to_string(&index).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn gc_keeps_what_is_kept_and_the_objects_kept_records_name() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let url = "https://example.org/shared";
    body(&archive, b"shared");
    body(&archive, b"only dropped");
    let kept = archive.put_record(&record(url, 1, Some(b"shared"), None)).unwrap();
    let dropped_shared = archive.put_record(&record(url, 2, Some(b"shared"), None)).unwrap();
    let dropped = archive.put_record(&record("https://example.org/gone", 3, Some(b"only dropped"), None)).unwrap();
    let kept_no_body = archive.put_record(&record("https://example.org/head", 4, None, None)).unwrap();
    // An object no record names (a crash between body and record).
    let (orphan, _) = archive.cas().put(&mut &b"orphan"[..]).unwrap();
    // A body whose record is still on its way.
    let in_flight = body(&archive, b"in flight");

    let keep_ids = [kept.clone(), kept_no_body.clone()];
    let report = archive.gc(|r| keep_ids.contains(&r.id())).unwrap();
    assert_eq!((report.records_kept, report.records_removed), (2, 2));
    assert_eq!((report.objects_kept, report.objects_removed), (2, 2));
    assert_eq!(report.bytes_freed, (b"only dropped".len() + b"orphan".len()) as u64);

    assert_eq!(ids(&archive.all_records().unwrap()), [kept.as_str(), kept_no_body.as_str()]);
    assert_eq!(archive.record(&dropped_shared).unwrap(), None);
    assert_eq!(archive.record(&dropped).unwrap(), None);
    let objects = archive.cas().list().unwrap();
    assert!(objects.contains(&ObjectId::of(b"shared")));
    assert!(objects.contains(&in_flight.parse().unwrap()));
    assert!(!objects.contains(&orphan) && !objects.contains(&ObjectId::of(b"only dropped")));
    // The indexes no longer list what went.
    assert_eq!(ids(&archive.records_for_url(url).unwrap()), [kept.as_str()]);
    assert_eq!(fs::read_to_string(archive.url_index_path(url)).unwrap(), format!("{kept}\n"));
    assert!(!archive.url_index_path("https://example.org/gone").exists());
    assert!(archive.verify().unwrap().is_ok());

    // Once its record arrives, the in-flight body is named; keeping
    // everything removes nothing more.
    archive.put_record(&record("https://example.org/late", 5, Some(b"in flight"), None)).unwrap();
    let report = archive.gc(|_| true).unwrap();
    assert_eq!((report.records_removed, report.objects_removed), (0, 0));
}

#[test]
fn gc_refuses_to_run_over_an_unreadable_trace() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    archive.put_record(&record("https://example.org/a", 1, None, None)).unwrap();
    fs::write(dir.path().join("traces").join(format!("{}.cbor", "e".repeat(64))), b"\xff garbage").unwrap();
    let err = archive.gc(|_| false).unwrap_err();
    assert!(err.to_string().starts_with("cannot collect garbage while trace"), "{err}");
    assert_eq!(archive.all_records().unwrap().len(), 1);
}

#[test]
fn verify_reports_a_tampered_body_a_missing_one_and_an_unindexed_record() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    body(&archive, b"good bytes");
    body(&archive, b"will vanish");
    let tampered = archive.put_record(&record("https://example.org/t", 1, Some(b"good bytes"), None)).unwrap();
    let missing = archive.put_record(&record("https://example.org/m", 2, Some(b"will vanish"), None)).unwrap();
    let report = archive.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.objects_checked, report.records_checked), (2, 2));

    let good = ObjectId::of(b"good bytes");
    let path = dir.path().join("cas").join(good.to_string());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, b"evil bytes").unwrap();
    archive.cas().remove(&ObjectId::of(b"will vanish")).unwrap();
    fs::remove_file(archive.url_index_path("https://example.org/t")).unwrap();

    let report = archive.verify().unwrap();
    let problems = &report.problems;
    assert!(problems.contains(&Problem::TamperedObject {
        id: good,
        actual: ObjectId::of(b"evil bytes"),
        records: vec![tampered.clone()],
    }));
    assert!(problems.contains(&Problem::MissingBody { record: missing, object: ObjectId::of(b"will vanish") }));
    assert!(problems.contains(&Problem::NotIndexed {
        record: tampered.clone(),
        index: archive.url_index_path("https://example.org/t"),
    }));
    assert_eq!(problems.len(), 3, "{problems:?}");
    for p in problems {
        assert!(!p.to_string().contains('\n'));
    }

    // Reindexing puts the record back in its index.
    assert_eq!(archive.reindex().unwrap(), 2);
    assert_eq!(ids(&archive.records_for_url("https://example.org/t").unwrap()), [tampered.as_str()]);
    assert_eq!(archive.verify().unwrap().problems.len(), 2);
}

#[test]
fn an_output_with_a_sha256_declared_hash_is_the_object_of_that_name() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let bytes = b"the output file";
    let declared = Algorithm::Sha256.digest(bytes);
    assert_eq!(archive.output_for(&declared, OutputMode::Flat).unwrap(), None);
    let id = archive.put_output(&declared, OutputMode::Flat, &mut &bytes[..]).unwrap();
    assert_eq!(id.to_hash(), declared);
    assert_eq!(archive.output_for(&declared, OutputMode::Flat).unwrap(), Some(id));
    assert_eq!(
        fs::read_to_string(dir.path().join(format!("index/output/flat-sha256-{}", declared.to_base16()))).unwrap(),
        format!("{id}\n")
    );
    // Putting it again changes nothing.
    assert_eq!(archive.put_output(&declared, OutputMode::Flat, &mut &bytes[..]).unwrap(), id);
    assert_eq!(archive.cas().list().unwrap(), [id]);

    // Bytes that do not hash to the declared hash are not kept.
    let other = Algorithm::Sha256.digest(b"something else");
    let err = archive.put_output(&other, OutputMode::Recursive, &mut &bytes[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::Cas(CasError::Mismatch { .. })), "{err}");
    assert_eq!(archive.cas().list().unwrap(), [id]);
    assert!(!archive.output_index_path(&other, OutputMode::Recursive).exists());

    // A body the proxy kept under that name is found as well, whatever the
    // mode: with sha256 the name says what the bytes are.
    let fetched = body(&archive, b"a fetched tarball");
    let hash = Algorithm::Sha256.digest(b"a fetched tarball");
    assert_eq!(archive.output_for(&hash, OutputMode::Flat).unwrap(), Some(fetched.parse().unwrap()));
}

#[test]
fn an_output_with_another_algorithm_is_found_by_its_hash_and_mode_only() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let file = b"flat bytes";
    let nar = store::nar::dump_bytes(b"recursive bytes", false);
    let flat_hash = Algorithm::Sha512.digest(file);
    let nar_hash = Algorithm::Sha1.digest(&nar);
    let flat = archive.put_output(&flat_hash, OutputMode::Flat, &mut &file[..]).unwrap();
    let recursive = archive.put_output(&nar_hash, OutputMode::Recursive, &mut &nar[..]).unwrap();
    assert_eq!((flat, recursive), (ObjectId::of(file), ObjectId::of(&nar)));
    assert_eq!(archive.output_for(&flat_hash, OutputMode::Flat).unwrap(), Some(flat));
    assert_eq!(archive.output_for(&nar_hash, OutputMode::Recursive).unwrap(), Some(recursive));
    // The same hash in the other mode is another output.
    assert_eq!(archive.output_for(&flat_hash, OutputMode::Recursive).unwrap(), None);
    assert_eq!(archive.output_for(&nar_hash, OutputMode::Flat).unwrap(), None);

    // The declared hash is checked before the object becomes visible.
    let wrong = Algorithm::Sha512.digest(b"not these bytes");
    let err = archive.put_output(&wrong, OutputMode::Flat, &mut &b"these bytes"[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::OutputMismatch { .. }), "{err}");
    assert!(err.to_string().contains("it was not kept"), "{err}");
    assert!(!archive.cas().has(&ObjectId::of(b"these bytes")).unwrap());
    assert_eq!(archive.output_for(&wrong, OutputMode::Flat).unwrap(), None);

    // An entry whose object is gone finds nothing.
    archive.cas().remove(&flat).unwrap();
    assert_eq!(archive.output_for(&flat_hash, OutputMode::Flat).unwrap(), None);
}

#[test]
fn gc_keeps_the_outputs_a_kept_record_declares() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let declared = Algorithm::Sha512.digest(b"output");
    let id = archive.put_output(&declared, OutputMode::Flat, &mut &b"output"[..]).unwrap();
    let other = Algorithm::Sha256.digest(b"other output");
    let other_id = archive.put_output(&other, OutputMode::Recursive, &mut &b"other output"[..]).unwrap();
    // The record of the build that declared the first (the same hash in
    // another notation), and an object nothing names.
    let mut fetch = record("https://example.org/output", 1, None, None);
    fetch.build = Some(BuildRef {
        drv: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-output.drv".into(),
        output: "out".into(),
        output_hash: declared.to_sri(),
        output_hash_mode: "flat".into(),
        network: None,
    });
    archive.put_record(&fetch).unwrap();
    archive.cas().put(&mut &b"unnamed"[..]).unwrap();

    // Kept: the record, so its build's output; the other output goes.
    let dry = archive.gc_dry_run(|_| true).unwrap();
    assert_eq!((dry.objects_kept, dry.objects_removed), (1, 2));
    assert_eq!(archive.output_for(&other, OutputMode::Recursive).unwrap(), Some(other_id), "a dry run removes nothing");
    let report = archive.gc(|_| true).unwrap();
    assert_eq!((report.objects_kept, report.objects_removed), (1, 2));
    assert_eq!(archive.cas().list().unwrap(), [id]);
    assert_eq!(archive.output_for(&declared, OutputMode::Flat).unwrap(), Some(id));
    assert_eq!(archive.output_for(&other, OutputMode::Recursive).unwrap(), None);
    assert!(archive.verify().unwrap().is_ok());

    // The record gone, its output goes with it.
    let report = archive.gc(|_| false).unwrap();
    assert_eq!((report.records_removed, report.objects_removed), (1, 1));
    assert_eq!(archive.output_for(&declared, OutputMode::Flat).unwrap(), None);
    assert!(archive.cas().list().unwrap().is_empty());
}

#[test]
fn a_replay_is_the_newest_complete_get_whose_body_is_kept_or_a_plain_redirect() {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let url = "https://example.org/src.tar.gz";
    assert!(Witness::replay(&archive, url).unwrap().is_none());

    body(&archive, b"old bytes");
    body(&archive, b"gone bytes");
    let good = archive.put_record(&record(url, 1, Some(b"old bytes"), None)).unwrap();
    // Newer, each unusable: its object gone, a failure, a HEAD, a 404, a
    // replay of its own, a GET whose body did not arrive whole.
    archive.put_record(&record(url, 2, Some(b"gone bytes"), None)).unwrap();
    archive.cas().remove(&ObjectId::of(b"gone bytes")).unwrap();
    let mut failed = record(url, 3, None, None);
    (failed.status, failed.error) = (None, Some("connection refused".into()));
    let head = Record { method: "HEAD".into(), ..record(url, 4, None, None) };
    let missing = Record { status: Some(404), ..record(url, 5, None, None) };
    let replayed = Record { replayed_from: Some(good.clone()), ..record(url, 6, Some(b"old bytes"), None) };
    let broken = Record { error: Some("the client went away".into()), ..record(url, 7, None, None) };
    for r in [failed, head, missing, replayed, broken] {
        archive.put_record(&r).unwrap();
    }

    let replay = Witness::replay(&archive, url).unwrap().unwrap();
    assert_eq!(replay.id, good);
    assert_eq!(replay.record.started_ms, 1);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut replay.body.unwrap(), &mut bytes).unwrap();
    assert_eq!(bytes, b"old bytes");

    // A redirect is replayed when its target was kept whole, not when it
    // was redacted.
    let moved = "https://example.org/moved";
    let redirect = |started_ms, location: &str| Record {
        status: Some(302),
        location: Some(location.into()),
        ..record(moved, started_ms, None, None)
    };
    let plain = archive.put_record(&redirect(1, "https://cdn.example/src.tar.gz")).unwrap();
    archive.put_record(&redirect(2, "https://cdn.example/src.tar.gz?X-Amz-Signature=abc")).unwrap();
    let replay = Witness::replay(&archive, moved).unwrap().unwrap();
    assert_eq!((replay.id, replay.body.is_none()), (plain, true));
}
