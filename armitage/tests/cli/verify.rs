//! `armitage store verify [--check-contents]` against `nix-store --verify
//! [--check-contents]`: each damage is done to a snapshot, checked by Nix,
//! restored, and checked by armitage; exit codes, messages and the valid
//! paths left afterwards must agree.

use crate::support::*;
use std::collections::BTreeSet;
use std::path::Path;
use testkit::{Nix, TestStore};

struct Outcome {
    ok: bool,
    stderr: String,
    valid: BTreeSet<String>,
}

fn nix_verify(store: &TestStore, nix: &Nix, flags: &[&str]) -> Outcome {
    let (ok, _, stderr) = run_any(store.nix(nix, "nix-store").arg("--verify").args(flags));
    Outcome { ok, stderr, valid: valid_paths(store, nix) }
}

fn our_verify(store: &TestStore, nix: &Nix, flags: &[&str]) -> Outcome {
    let (ok, _, stderr) = run_any(store.armitage().args(["store", "verify"]).args(flags));
    Outcome { ok, stderr, valid: valid_paths(store, nix) }
}

/// A store with built paths (with references) and added sources.
fn filled_store(nix: &Nix) -> (TestStore, String, String) {
    let store = building_store();
    let top = build_chain(&store, nix, "v", "1", &[]);
    let tree = store.work_dir("in").join("tree");
    varied_tree(&tree);
    let source = testkit::line(testkit::run(store.nix(nix, "nix-store").arg("--add").arg(&tree)));
    (store, top, source)
}

fn change_a_byte(file: &Path) {
    let dir = file.parent().unwrap();
    set_mode(dir, 0o755);
    set_mode(file, 0o644);
    let mut bytes = std::fs::read(file).unwrap();
    bytes[0] ^= 1;
    std::fs::write(file, bytes).unwrap();
    set_mode(file, 0o444);
    set_mode(dir, 0o555);
}

#[test]
fn verify_sound_store() {
    let Some(nix) = nix_2_8() else { return };
    let (store, _, _) = filled_store(&nix);
    let before = valid_paths(&store, &nix);
    for flags in [&[][..], &["--check-contents"]] {
        let (theirs, ours) = (nix_verify(&store, &nix, flags), our_verify(&store, &nix, flags));
        assert!(theirs.ok, "{}", theirs.stderr);
        assert!(ours.ok, "{}", ours.stderr);
        assert_eq!(ours.valid, before);
        assert!(!ours.stderr.contains("error"), "{}", ours.stderr);
    }
}

#[test]
fn verify_check_contents_finds_a_modified_file() {
    let Some(nix) = nix_2_8() else { return };
    let (store, _, source) = filled_store(&nix);
    change_a_byte(&Path::new(&source).join("a/b/c/deep.txt"));
    let before = valid_paths(&store, &nix);
    // Without --check-contents neither looks inside.
    let (theirs, ours) = (nix_verify(&store, &nix, &[]), our_verify(&store, &nix, &[]));
    assert!(theirs.ok && ours.ok, "{}\n{}", theirs.stderr, ours.stderr);
    let (theirs, ours) =
        (nix_verify(&store, &nix, &["--check-contents"]), our_verify(&store, &nix, &["--check-contents"]));
    assert!(!theirs.ok, "Nix missed the change:\n{}", theirs.stderr);
    assert!(!ours.ok, "armitage missed the change:\n{}", ours.stderr);
    let quoted = format!("'{source}' was modified!");
    assert!(theirs.stderr.contains(&quoted), "{}", theirs.stderr);
    assert!(ours.stderr.contains(&quoted), "{}", ours.stderr);
    assert_eq!((theirs.valid, ours.valid), (before.clone(), before), "a modified path stays valid");
}

/// Deletes the files of a path, as a person might by hand.
fn delete_files(path: &str) {
    testkit::run(std::process::Command::new("chmod").args(["-R", "u+w", path]));
    std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path)).unwrap();
}

#[test]
fn verify_forgets_a_disappeared_path() {
    let Some(nix) = nix_2_8() else { return };
    let (store, _, source) = filled_store(&nix);
    delete_files(&source);
    let snapshot = Snapshot::take(&store);
    let theirs = nix_verify(&store, &nix, &[]);
    snapshot.restore(&store);
    let ours = our_verify(&store, &nix, &[]);
    assert!(theirs.ok, "{}", theirs.stderr);
    assert!(ours.ok, "{}", ours.stderr);
    let note = format!("path '{source}' disappeared, removing from database...");
    assert!(theirs.stderr.contains(&note), "{}", theirs.stderr);
    assert!(ours.stderr.contains(&note), "{}", ours.stderr);
    assert!(!ours.valid.contains(&source));
    assert_eq!(ours.valid, theirs.valid);
    testkit::run_fail(store.nix(&nix, "nix-store").args(["--query", "--hash", &source]));
}

#[test]
fn verify_keeps_a_disappeared_path_with_referrers() {
    let Some(nix) = nix_2_8() else { return };
    let (store, top, _) = filled_store(&nix);
    let refs = testkit::run(store.nix(&nix, "nix-store").args(["--query", "--references", &top]));
    let dep = refs.lines().find(|r| *r != top).expect("the top output has references").to_owned();
    delete_files(&dep);
    let snapshot = Snapshot::take(&store);
    let theirs = nix_verify(&store, &nix, &[]);
    snapshot.restore(&store);
    let ours = our_verify(&store, &nix, &[]);
    assert_eq!(ours.ok, theirs.ok, "exit status: Nix said\n{}\narmitage said\n{}", theirs.stderr, ours.stderr);
    assert!(theirs.stderr.contains(&dep) && ours.stderr.contains(&dep), "{}\n{}", theirs.stderr, ours.stderr);
    assert_eq!(ours.valid, theirs.valid);
}
