//! `armitage hash path|file` against `nix-hash [--flat]` and Nix 2.26's
//! `nix hash path|file`.

use crate::support::*;
use std::path::PathBuf;
use testkit::{Nix, TestStore};

const ALGORITHMS: [&str; 4] = ["md5", "sha1", "sha256", "sha512"];

/// Inputs of each kind, hashed several to an invocation.
fn inputs(store: &TestStore) -> Vec<PathBuf> {
    let work = store.work_dir("in");
    varied_tree(&work.join("tree"));
    ["tree", "tree/big.bin", "tree/empty-file", "tree/run.sh", "tree/link-abs", "tree/empty-dir", "tree/order"]
        .iter()
        .map(|p| work.join(p))
        .collect()
}

fn files(store: &TestStore) -> Vec<PathBuf> {
    let tree = store.work_dir("in").join("tree");
    ["big.bin", "empty-file", "run.sh", "a/b/c/deep.txt"].iter().map(|p| tree.join(p)).collect()
}

fn compare(store: &TestStore, nix: &Nix, ours: &[&str], theirs: &[&str], paths: &[PathBuf]) {
    let expected = testkit::run(store.nix(nix, "nix-hash").args(theirs).args(paths));
    let got = testkit::run(store.armitage().arg("hash").args(ours).args(paths));
    assert_eq!(got.lines().count(), paths.len(), "one hash per path: {got}");
    assert_eq!(got, expected, "armitage hash {ours:?} vs {} nix-hash {theirs:?}", nix.version);
}

#[test]
fn hash_path_matches_nix_hash() {
    let Some(nix) = nix_2_8() else { return };
    let store = TestStore::new();
    let paths = inputs(&store);
    // Default algorithm (md5) and encoding (base-16), as nix-hash.
    compare(&store, &nix, &["path"], &[], &paths);
    for algo in ALGORITHMS {
        compare(&store, &nix, &["path", "--type", algo], &["--type", algo], &paths);
        compare(&store, &nix, &["path", "--type", algo, "--base32"], &["--type", algo, "--base32"], &paths);
    }
}

#[test]
fn hash_file_matches_nix_hash_flat() {
    let Some(nix) = nix_2_8() else { return };
    let store = TestStore::new();
    inputs(&store);
    let files = files(&store);
    compare(&store, &nix, &["file"], &["--flat"], &files);
    for algo in ALGORITHMS {
        compare(&store, &nix, &["file", "--type", algo], &["--flat", "--type", algo], &files);
        compare(&store, &nix, &["file", "--type", algo, "--base32"], &["--flat", "--type", algo, "--base32"], &files);
    }
    // Known value, so that Nix and armitage cannot agree on a wrong answer.
    let empty = store.work_dir("in").join("tree/empty-file");
    let sha256 = testkit::run(store.armitage().args(["hash", "file", "--type", "sha256"]).arg(&empty));
    assert_eq!(sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n");
}

/// Nix 2.8's nix-hash has no `--sri`, `--base64` or `--base16`; 2.26's has.
#[test]
fn hash_encodings_match_nix_2_26() {
    let Some(nix) = nix_2_26() else { return };
    let store = TestStore::new();
    let paths = inputs(&store);
    let files = files(&store);
    for algo in ALGORITHMS {
        for enc in ["--sri", "--base64", "--base16", "--base32"] {
            compare(&store, &nix, &["path", "--type", algo, enc], &["--type", algo, enc], &paths);
            compare(&store, &nix, &["file", "--type", algo, enc], &["--flat", "--type", algo, enc], &files);
        }
    }
    // `nix hash path|file` print SRI sha256 by default.
    for (ours, theirs, inputs) in [("path", "path", &paths), ("file", "file", &files)] {
        let expected = testkit::run(nix_cli(&store, &nix).args(["hash", theirs]).args(inputs));
        let got = testkit::run(store.armitage().args(["hash", ours, "--type", "sha256", "--sri"]).args(inputs));
        assert_eq!(got, expected, "nix hash {theirs}");
        assert!(got.starts_with("sha256-"), "{got}");
        let expected =
            testkit::run(nix_cli(&store, &nix).args(["hash", theirs, "--type", "sha1", "--base32"]).args(inputs));
        let got = testkit::run(store.armitage().args(["hash", ours, "--type", "sha1", "--base32"]).args(inputs));
        assert_eq!(got, expected, "nix hash {theirs} --type sha1 --base32");
    }
}

#[test]
fn hash_file_of_a_directory_fails_like_nix_hash_flat() {
    let Some(nix) = nix_2_8() else { return };
    let store = TestStore::new();
    let dir = store.work_dir("in");
    testkit::run_fail(store.nix(&nix, "nix-hash").arg("--flat").arg(&dir));
    let err = testkit::run_fail(store.armitage().args(["hash", "file"]).arg(&dir));
    assert!(err.starts_with("error: ") && err.contains(dir.to_str().unwrap()), "{err}");
}
