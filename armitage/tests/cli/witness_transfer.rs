//! `armitage witness export` and `import` between two throwaway stores:
//! the witnesses of a closure (records by output path and by deriver, the
//! bodies they name, kept outputs) written to a folder that is an archive
//! itself, checked whole and copied into another store's archive; a
//! tampered object refused with nothing imported; a second import copying
//! nothing. The store is real, the archive filled with witness-proxy's
//! `Archive` (as the daemon's proxy fills it). Needs no Nix.

use crate::support::*;
use local_store::{AddOptions, LocalStore, LocalStoreConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use store::content_address::{ContentAddress, ContentAddressMethod};
use store::hash::{Algorithm, Hash};
use store::path_info::PathInfo;
use store::store_path::{StoreDir, StorePath};
use testkit::TestStore;
use witness_proxy::archive::{Archive, OutputMode};
use witness_proxy::cas::ObjectId;
use witness_proxy::record::{Body, BuildRef, Record};

const TARBALL: &[u8] = b"the release tarball\n";

fn witness(store: &TestStore) -> Command {
    let mut cmd = store.armitage();
    cmd.arg("witness");
    cmd
}

fn archive_dir(store: &TestStore) -> PathBuf {
    store.state_dir.join("witness")
}

fn open_store(store: &TestStore) -> LocalStore {
    let dir = StoreDir::new(store.store_dir.as_str()).unwrap();
    LocalStore::open(LocalStoreConfig::new(dir, &store.state_dir, &store.log_dir)).unwrap()
}

/// A record of a fetch for `build`: a 200 with `body` (stored in the CAS),
/// or, without a body, a refused attempt.
fn record(archive: &Archive, url: &str, body: Option<&[u8]>, started_ms: u64, build: Option<BuildRef>) -> Record {
    let mut r = Record::refused(url.into(), "GET", build, "refused: not through the proxy".into(), started_ms);
    if let Some(body) = body {
        let (id, size) = archive.cas().put(&mut &body[..]).unwrap();
        r.status = Some(200);
        r.body = Some(Body { size, sha256: id.to_hex() });
        r.error = None;
        r.ended_ms = started_ms + 50;
    }
    r
}

fn build(drv: &str, output_hash: String, mode: &str) -> BuildRef {
    BuildRef { drv: drv.into(), output: "out".into(), output_hash, output_hash_mode: mode.into(), network: None }
}

/// A store whose closure of `top` holds a fixed-output path (`src`, its
/// record and kept output in the archive) and `top` itself (a text path
/// referring to `src`, whose deriver a refused record names); the archive
/// also holds witnesses of paths outside that closure.
struct Source {
    store: TestStore,
    top: String,
    /// Not referred to by `top`: its witnesses stay.
    other: String,
    src_record: String,
    top_record: String,
    declared: Hash,
}

fn source() -> Source {
    let store = TestStore::new();
    let work = store.work_dir("in");
    testkit::write_file(work.join("release.tar"), TARBALL);
    testkit::write_file(work.join("other.tar"), "another tarball\n");
    let add = |file: &Path| {
        let out = testkit::run(store.armitage().args(["store", "add", "--fixed", "sha256"]).arg(file));
        testkit::line(out)
    };
    let src = add(&work.join("release.tar"));
    let other = add(&work.join("other.tar"));

    let local = open_store(&store);
    let src_path = local.parse_path(&src).unwrap();
    let top_drv = store.path_of(&format!("{}-top.drv", "d".repeat(32)));
    let top = add_text_with_deriver(&local, "top", format!("uses {src}\n").as_bytes(), &src_path, &top_drv);
    drop(local);

    let archive = Archive::open(archive_dir(&store)).unwrap();
    let declared = Algorithm::Sha256.digest(TARBALL);
    // Named after the derivation and by the declared hash: `src` is its output path.
    let src_drv = store.path_of(&format!("{}-release.tar.drv", "s".repeat(32)));
    let src_build = build(&src_drv, declared.to_sri(), "flat");
    let src_record = archive
        .put_record(&record(&archive, "https://example.org/release.tar", Some(TARBALL), 1_000, Some(src_build)))
        .unwrap();
    archive.put_output(&declared, OutputMode::Flat, &mut &TARBALL[..]).unwrap();
    // `top`'s builder trying to reach the network: found by its deriver.
    let top_build = build(&top_drv, String::new(), "");
    let top_record =
        archive.put_record(&record(&archive, "https://example.org/x", None, 2_000, Some(top_build))).unwrap();
    // The other path's fetch, and one for no build.
    let other_hash = Algorithm::Sha256.digest(b"another tarball\n");
    let other_drv = store.path_of(&format!("{}-other.tar.drv", "c".repeat(32)));
    let other_build = build(&other_drv, other_hash.to_sri(), "flat");
    let other_body = b"another tarball\n";
    archive
        .put_record(&record(&archive, "https://example.org/other.tar", Some(other_body), 3_000, Some(other_build)))
        .unwrap();
    archive.put_output(&other_hash, OutputMode::Flat, &mut &other_body[..]).unwrap();
    archive.put_record(&record(&archive, "https://example.org/daemon", Some(b"for the daemon"), 4_000, None)).unwrap();
    Source { store, top, other, src_record, top_record, declared }
}

/// Adds `contents` as a text path referring to `reference`, registered
/// with `deriver` as the derivation that made it; returns its path.
fn add_text_with_deriver(
    local: &LocalStore,
    name: &str,
    contents: &[u8],
    reference: &StorePath,
    deriver: &str,
) -> String {
    let refs = BTreeSet::from([reference.clone()]);
    let hash = Algorithm::Sha256.digest(contents);
    let path = local.store_dir().make_text_path(name, &hash, &refs).unwrap();
    let nar = store::nar::dump_bytes(contents, false);
    let mut info = PathInfo::new(path.clone(), Algorithm::Sha256.digest(&nar), nar.len() as u64);
    info.references = refs;
    info.ca = Some(ContentAddress { method: ContentAddressMethod::Text, hash });
    info.deriver = Some(local.parse_path(deriver).unwrap());
    local.add_nar(&info, &mut &nar[..], AddOptions::default()).unwrap();
    local.display(&path)
}

fn ids_listed(stdout: &str) -> BTreeSet<String> {
    stdout.lines().map(|l| l.split_whitespace().next().unwrap().to_owned()).collect()
}

fn short(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|id| id[..12].to_owned()).collect()
}

/// `armitage witness verify`'s last line on the archive `--dir` names (or
/// the store's own), which must pass.
fn verified(store: &TestStore, dir: Option<&Path>) -> String {
    let mut cmd = witness(store);
    if let Some(dir) = dir {
        cmd.arg("--dir").arg(dir);
    }
    testkit::line(testkit::run(cmd.arg("verify")))
}

#[test]
fn witness_export_then_import_carries_a_closures_witnesses() {
    let s = source();
    let carried = s.store.work_dir("usb").join("witnesses");
    let out = testkit::line(testkit::run(witness(&s.store).args(["export", "--to"]).arg(&carried).arg(&s.top)));
    let bytes = TARBALL.len();
    assert_eq!(
        out,
        format!(
            "exported 2 records, 1 object ({bytes} bytes), 1 kept output for the 2 store paths of the closure to '{}'",
            carried.display()
        )
    );
    // A witness archive of its own: the records of `top`'s closure only.
    let listed = testkit::run(witness(&s.store).arg("--dir").arg(&carried).arg("ls"));
    assert_eq!(ids_listed(&listed), short(&[&s.src_record, &s.top_record]), "{listed}");
    assert_eq!(verified(&s.store, Some(&carried)), "1 objects and 2 records checked: no problems");

    // Into the archive of another store, made by the import.
    let there = TestStore::new();
    assert!(!archive_dir(&there).exists());
    let out = testkit::line(testkit::run(witness(&there).arg("import").arg(&carried)));
    let into = archive_dir(&there);
    assert_eq!(
        out,
        format!(
            "imported 2 records, 1 object ({bytes} bytes), 1 kept output from '{}' into '{}'",
            carried.display(),
            into.display()
        )
    );
    let listed = testkit::run(witness(&there).arg("ls"));
    assert_eq!(ids_listed(&listed), short(&[&s.src_record, &s.top_record]), "{listed}");
    assert!(listed.contains("https://example.org/release.tar"), "{listed}");
    assert_eq!(verified(&there, None), "1 objects and 2 records checked: no problems");
    let archive = Archive::open(&into).unwrap();
    assert_eq!(archive.output_for(&s.declared, OutputMode::Flat).unwrap(), Some(ObjectId::of(TARBALL)));
    assert_eq!(archive.records_for_hash(&s.declared).unwrap().len(), 1, "indexed by declared hash");
    drop(archive);

    // Twice: nothing new.
    let out = testkit::line(testkit::run(witness(&there).arg("import").arg(&carried)));
    assert_eq!(
        out,
        format!(
            "nothing to import from '{}': its 2 records, 1 object ({bytes} bytes), 1 kept output are in '{}' already",
            carried.display(),
            into.display()
        )
    );
    assert_eq!(verified(&there, None), "1 objects and 2 records checked: no problems");

    // Exporting the other path into the same folder adds its witnesses.
    let out = testkit::line(testkit::run(witness(&s.store).args(["export", "--to"]).arg(&carried).arg(&s.other)));
    assert!(out.starts_with("exported 1 record, 1 object (16 bytes), 1 kept output for the 1 store path "), "{out}");
    let out = testkit::line(testkit::run(witness(&there).arg("import").arg(&carried)));
    assert!(out.starts_with("imported 1 record, 1 object (16 bytes), 1 kept output from "), "{out}");
    assert!(out.ends_with(" (2 records, 1 object were there already)"), "{out}");
    assert_eq!(verified(&there, None), "2 objects and 3 records checked: no problems");
}

#[test]
fn witness_import_refuses_a_tampered_object_and_imports_nothing() {
    let s = source();
    let carried = s.store.work_dir("usb").join("witnesses");
    testkit::run(witness(&s.store).args(["export", "--to"]).arg(&carried).arg(&s.top));
    let object = ObjectId::of(TARBALL);
    let file = carried.join("cas").join(object.to_hex());
    set_mode(&file, 0o644);
    std::fs::write(&file, b"the release tarball, with a backdoor\n").unwrap();

    let there = TestStore::new();
    let stderr = testkit::run_fail(witness(&there).arg("import").arg(&carried));
    // One error line (the CAS's reader warns of the object too).
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let err = errors[0];
    let expected = format!("error: cannot import witnesses from '{}': object {object} is tampered", carried.display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains(&s.src_record) && err.ends_with("; nothing was copied"), "{err}");
    assert!(testkit::run(witness(&there).arg("ls")).is_empty());
    assert_eq!(verified(&there, None), "0 objects and 0 records checked: no problems");
}

#[test]
fn witness_export_of_paths_without_witnesses_makes_an_empty_archive() {
    let s = source();
    let work = s.store.work_dir("in");
    testkit::write_file(work.join("unwitnessed.txt"), "added by hand\n");
    let path = testkit::line(testkit::run(s.store.armitage().args(["store", "add"]).arg(work.join("unwitnessed.txt"))));
    let carried = s.store.work_dir("usb").join("nothing");
    let out = testkit::line(testkit::run(witness(&s.store).args(["export", "--to"]).arg(&carried).arg(&path)));
    assert_eq!(
        out,
        format!(
            "no witnesses for the 1 store path of the closure: '{}' holds an empty witness archive",
            carried.display()
        )
    );
    assert!(testkit::run(witness(&s.store).arg("--dir").arg(&carried).arg("ls")).is_empty());
    assert_eq!(verified(&s.store, Some(&carried)), "0 objects and 0 records checked: no problems");
}

#[test]
fn witness_export_refuses_a_folder_that_is_not_an_archive_and_paths_not_valid() {
    let s = source();
    let busy = s.store.work_dir("busy");
    testkit::write_file(busy.join("notes.txt"), "mine\n");
    let err = testkit::run_fail(witness(&s.store).args(["export", "--to"]).arg(&busy).arg(&s.top));
    assert_eq!(
        err.trim_end(),
        format!("error: cannot export witnesses to '{}': it is neither empty nor a witness archive", busy.display())
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1, "nothing written there");

    let gone = s.store.path_of(&format!("{}-gone", "g".repeat(32)));
    let err = testkit::run_fail(witness(&s.store).args(["export", "--to"]).arg(s.store.work_dir("x")).arg(&gone));
    assert_eq!(err.trim_end(), format!("error: cannot export the witnesses of '{gone}': it is not valid in the store"));

    let err = testkit::run_fail(witness(&s.store).arg("import").arg(&busy));
    assert!(err.contains("is not a witness archive") && err.lines().count() == 1, "{err}");
}
