//! Witnesses copied from one archive into another: what a filter selects
//! goes (records, the bodies they name, kept outputs with their entries),
//! nothing else; everything is checked first, and one tampered, missing or
//! misnamed piece copies nothing; a second copy copies nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use store::hash::{Algorithm, Hash};
use witness_proxy::archive::{Archive, OutputMode, Problem, hash_key, url_key};
use witness_proxy::cas::ObjectId;
use witness_proxy::record::{Body, BuildRef, Record};
use witness_proxy::transfer::{Filter, Refusal, TransferError, TransferReport, copy};

/// A record of a 200 response with `body` (stored in `archive`'s CAS),
/// made for a fixed-output build that declared `declared` (flat).
fn fetched(archive: &Archive, url: &str, body: &[u8], started_ms: u64, declared: Option<&Hash>) -> Record {
    let (id, size) = archive.cas().put(&mut &body[..]).unwrap();
    let build = declared.map(|h| BuildRef {
        drv: "/nix/store/00000000000000000000000000000000-src.drv".into(),
        output: "out".into(),
        output_hash: h.to_sri(),
        output_hash_mode: "flat".into(),
        network: None,
    });
    let mut record = Record::refused(url.into(), "GET", build, String::new(), started_ms);
    record.status = Some(200);
    record.body = Some(Body { size, sha256: id.to_hex() });
    record.ended_ms = started_ms + 10;
    record.error = None;
    record
}

/// An archive with two fetches for builds (`a`: declared sha256, its
/// output kept, which is its body; `b`: declared sha512, its output kept
/// as well), one for no build, and an object nothing names.
struct Source {
    dir: testkit::TempDir,
    archive: Archive,
    a: String,
    b: String,
    daemon: String,
    a_hash: Hash,
    b_hash: Hash,
}

fn source() -> Source {
    let dir = testkit::TempDir::new();
    let archive = Archive::open(dir.path()).unwrap();
    let a_hash = Algorithm::Sha256.digest(b"a tarball");
    let b_hash = Algorithm::Sha512.digest(b"b file");
    let a = archive.put_record(&fetched(&archive, "https://example.org/a", b"a tarball", 1, Some(&a_hash))).unwrap();
    let b = archive.put_record(&fetched(&archive, "https://example.org/b", b"b body", 2, Some(&b_hash))).unwrap();
    let daemon = archive.put_record(&fetched(&archive, "https://example.org/d", b"for the daemon", 3, None)).unwrap();
    archive.put_output(&a_hash, OutputMode::Flat, &mut &b"a tarball"[..]).unwrap();
    archive.put_output(&b_hash, OutputMode::Flat, &mut &b"b file"[..]).unwrap();
    archive.cas().put(&mut &b"named by nothing"[..]).unwrap();
    Source { dir, archive, a, b, daemon, a_hash, b_hash }
}

fn declared(r: &Record) -> Option<Hash> {
    r.build.as_ref().map(|b| b.parsed_output_hash().unwrap())
}

fn record_ids(archive: &Archive) -> Vec<String> {
    archive.all_records().unwrap().into_iter().map(|r| r.id).collect()
}

fn object(bytes: &[u8]) -> ObjectId {
    ObjectId::of(bytes)
}

fn writable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// The one problem a refused copy reports, with nothing copied into `to`.
fn refused(result: Result<TransferReport, TransferError>, to: &Archive) -> Refusal {
    let err = result.unwrap_err();
    let message = err.to_string();
    assert!(message.ends_with("; nothing was copied") && !message.contains('\n'), "{message}");
    let TransferError::Refused { mut problems } = err else { panic!("not refused: {message}") };
    assert_eq!(problems.len(), 1, "{message}");
    assert!(to.cas().list().unwrap().is_empty() && to.all_records().unwrap().is_empty());
    assert!(to.outputs().unwrap().is_empty());
    problems.remove(0)
}

#[test]
fn the_filter_picks_records_their_bodies_and_outputs() {
    let src = source();
    let dest_dir = testkit::TempDir::new();
    let dest = Archive::open(dest_dir.path()).unwrap();
    let a_hash = src.a_hash;
    let filter = Filter::new(move |r| declared(r) == Some(a_hash), move |h, _| *h == a_hash);
    let report = copy(&src.archive, &dest, &filter).unwrap();
    // One record; its body is also its output's object.
    let expected = TransferReport {
        records: 1,
        records_copied: 1,
        objects: 1,
        objects_copied: 1,
        bytes: 9,
        bytes_copied: 9,
        outputs: 1,
        outputs_copied: 1,
    };
    assert_eq!(report, expected);
    assert_eq!(record_ids(&dest), std::slice::from_ref(&src.a));
    assert_eq!(dest.cas().list().unwrap(), [object(b"a tarball")]);
    assert_eq!(dest.output_for(&a_hash, OutputMode::Flat).unwrap(), Some(object(b"a tarball")));
    assert_eq!(dest.outputs().unwrap(), [(a_hash, OutputMode::Flat, object(b"a tarball"))]);
    assert_eq!(dest.records_for_hash(&a_hash).unwrap().len(), 1, "indexed");
    assert!(dest.verify().unwrap().is_ok());

    // The other build: its record, body and output, which is another object.
    let b_hash = src.b_hash;
    let filter = Filter::new(move |r| declared(r) == Some(b_hash), move |h, _| *h == b_hash);
    let report = copy(&src.archive, &dest, &filter).unwrap();
    assert_eq!((report.records_copied, report.objects_copied, report.outputs_copied), (1, 2, 1));
    assert_eq!(report.bytes_copied, 12);
    assert_eq!(dest.output_for(&b_hash, OutputMode::Flat).unwrap(), Some(object(b"b file")));
    assert_eq!(dest.output_for(&b_hash, OutputMode::Recursive).unwrap(), None);
    let mut ids = record_ids(&dest);
    ids.sort();
    let mut expected = vec![src.a.clone(), src.b.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(dest.verify().unwrap().is_ok());
}

#[test]
fn everything_copies_the_whole_archive_and_a_second_time_nothing() {
    let src = source();
    let dest_dir = testkit::TempDir::new();
    let dest = Archive::open(dest_dir.path()).unwrap();
    let report = copy(&src.archive, &dest, &Filter::everything()).unwrap();
    assert_eq!((report.records, report.records_copied), (3, 3));
    // Four bodies and outputs (a's body is its output) and the unnamed one.
    assert_eq!((report.objects, report.objects_copied, report.outputs_copied), (5, 5, 2));
    assert_eq!(dest.cas().list().unwrap(), src.archive.cas().list().unwrap());
    assert_eq!(dest.outputs().unwrap(), src.archive.outputs().unwrap());
    assert_eq!(record_ids(&dest), [src.a.clone(), src.b.clone(), src.daemon.clone()]);
    let verified = dest.verify().unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    assert_eq!((verified.records_checked, verified.objects_checked), (3, 5));

    let url_index = dest_dir.path().join("index/url").join(url_key("https://example.org/a"));
    let hash_index = dest_dir.path().join("index/hash").join(hash_key(&src.a_hash));
    let indexes = [fs::read(&url_index).unwrap(), fs::read(&hash_index).unwrap()];
    let again = copy(&src.archive, &dest, &Filter::everything()).unwrap();
    let nothing = TransferReport { records_copied: 0, objects_copied: 0, bytes_copied: 0, outputs_copied: 0, ..report };
    assert_eq!(again, nothing);
    assert_eq!([fs::read(&url_index).unwrap(), fs::read(&hash_index).unwrap()], indexes, "no repeated index line");

    // A record there already but missing from an index (a copy cut short
    // between its trace and its index lines) is indexed again.
    fs::remove_file(&hash_index).unwrap();
    assert!(!dest.verify().unwrap().is_ok());
    assert_eq!(copy(&src.archive, &dest, &Filter::everything()).unwrap(), nothing);
    assert_eq!(dest.records_for_hash(&src.a_hash).unwrap().len(), 1);
    assert!(dest.verify().unwrap().is_ok());
}

#[test]
fn a_filter_that_selects_nothing_copies_nothing() {
    let src = source();
    let dest_dir = testkit::TempDir::new();
    let dest = Archive::open(dest_dir.path()).unwrap();
    let report = copy(&src.archive, &dest, &Filter::new(|_| false, |_, _| false)).unwrap();
    assert!(report.is_empty() && report == TransferReport::default());
    assert!(dest.cas().list().unwrap().is_empty() && dest.all_records().unwrap().is_empty());
}

#[test]
fn a_tampered_body_refuses_the_whole_copy_by_object_name() {
    let src = source();
    let path = src.dir.path().join("cas").join(object(b"b body").to_hex());
    writable(&path);
    fs::write(&path, b"B body").unwrap();
    let dest_dir = testkit::TempDir::new();
    let dest = Archive::open(dest_dir.path()).unwrap();
    let problem = refused(copy(&src.archive, &dest, &Filter::everything()), &dest);
    assert_eq!(
        problem,
        Refusal::Archive(Problem::TamperedObject {
            id: object(b"b body"),
            actual: object(b"B body"),
            records: vec![src.b.clone()]
        })
    );
    assert!(problem.to_string().starts_with(&format!("object {} is tampered", object(b"b body"))));

    // A filter that does not take it is not stopped by it.
    let a_hash = src.a_hash;
    let only_a = Filter::new(move |r| declared(r) == Some(a_hash), |_, _| false);
    assert_eq!(copy(&src.archive, &dest, &only_a).unwrap().records_copied, 1);
}

#[test]
fn an_output_whose_object_lacks_the_declared_hash_is_refused() {
    let src = source();
    // The sha512 output's entry made to name another (sound) object.
    let entry = src.dir.path().join("index/output").join(format!("flat-sha512-{}", src.b_hash.to_base16()));
    fs::remove_file(&entry).unwrap();
    fs::write(&entry, format!("{}\n", object(b"b body"))).unwrap();
    let dest_dir = testkit::TempDir::new();
    let dest = Archive::open(dest_dir.path()).unwrap();
    match refused(copy(&src.archive, &dest, &Filter::everything()), &dest) {
        Refusal::OutputMismatch { output, object: named, actual } => {
            assert_eq!(output, format!("flat-sha512-{}", src.b_hash.to_base16()));
            assert_eq!((named, actual), (object(b"b body"), Algorithm::Sha512.digest(b"b body")));
        }
        other => panic!("{other}"),
    }

    // Naming an object that is not there.
    fs::remove_file(&entry).unwrap();
    fs::write(&entry, format!("{}\n", object(b"nowhere"))).unwrap();
    let problem = refused(copy(&src.archive, &dest, &Filter::everything()), &dest);
    assert_eq!(
        problem.to_string(),
        format!(
            "output flat-sha512-{} names object {}, which is not in the CAS",
            src.b_hash.to_base16(),
            object(b"nowhere")
        )
    );
}

#[test]
fn a_missing_body_a_misnamed_or_unreadable_trace_is_refused() {
    let dest_dir = testkit::TempDir::new();
    let dest = Archive::open(dest_dir.path()).unwrap();

    let src = source();
    src.archive.cas().remove(&object(b"for the daemon")).unwrap();
    let problem = refused(copy(&src.archive, &dest, &Filter::everything()), &dest);
    assert_eq!(
        problem,
        Refusal::Archive(Problem::MissingBody { record: src.daemon.clone(), object: object(b"for the daemon") })
    );

    let src = source();
    let traces = src.dir.path().join("traces");
    let wrong = "f".repeat(64);
    fs::rename(traces.join(format!("{}.cbor", src.a)), traces.join(format!("{wrong}.cbor"))).unwrap();
    let problem = refused(copy(&src.archive, &dest, &Filter::everything()), &dest);
    assert_eq!(
        problem,
        Refusal::Archive(Problem::MisnamedTrace { path: traces.join(format!("{wrong}.cbor")), id: src.a.clone() })
    );

    let src = source();
    let traces = src.dir.path().join("traces");
    fs::write(traces.join(format!("{}.cbor", "e".repeat(64))), b"not CBOR").unwrap();
    // Even a filter that would not take it: the trace might be one it wants.
    let problem = refused(copy(&src.archive, &dest, &Filter::new(|_| false, |_, _| false)), &dest);
    assert!(matches!(problem, Refusal::Archive(Problem::UnreadableTrace { .. })), "{problem}");
}
