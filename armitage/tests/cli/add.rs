//! `armitage store add [--fixed ALGO [--recursive]]` against `nix-store
//! --add` and `nix-store --add-fixed [--recursive] ALGO`, on one store so the
//! printed paths must be the same; whichever adds second finds the path valid.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use testkit::{Nix, TestStore};

/// Inputs of each kind for `--add` (anything) and flat `--add-fixed` (files).
fn inputs(store: &TestStore) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let work = store.work_dir("in");
    varied_tree(&work.join("tree"));
    let any = ["tree", "tree/run.sh", "tree/empty-file", "tree/link-abs", "tree/empty-dir", "tree/order"];
    let files = ["tree/big.bin", "tree/run.sh", "tree/empty-file"];
    (any.iter().map(|p| work.join(p)).collect(), files.iter().map(|p| work.join(p)).collect())
}

/// The store's own record of a path, as Nix 2.8 reads it.
fn recorded(store: &TestStore, nix: &Nix, path: &str) -> serde_json::Value {
    let mut v = run_json(nix_cli(store, nix).args(["path-info", "--json", path]));
    let info = v[0].take();
    assert_eq!(info["path"], path, "{info}");
    serde_json::json!({ "narHash": info["narHash"], "narSize": info["narSize"], "ca": info["ca"], "references": info["references"] })
}

/// Adds `paths` with Nix then armitage (or the reverse) and checks both
/// print the same path, which is then valid with the same record.
fn add_both(
    store: &TestStore,
    nix: &Nix,
    nix_first: bool,
    nix_args: &[&str],
    ours: &[&str],
    paths: &[PathBuf],
) -> Vec<String> {
    let by_nix = || testkit::run(store.nix(nix, "nix-store").args(nix_args).args(paths));
    let by_us = || testkit::run(store.armitage().args(["store", "add"]).args(ours).args(paths));
    let (theirs, ours_out) = if nix_first {
        let t = by_nix();
        (t, by_us())
    } else {
        let o = by_us();
        (by_nix(), o)
    };
    assert_eq!(ours_out, theirs, "armitage store add {ours:?} vs nix-store {nix_args:?} (nix first: {nix_first})");
    let printed: Vec<String> = ours_out.lines().map(str::to_owned).collect();
    assert_eq!(printed.len(), paths.len());
    for p in &printed {
        assert!(p.starts_with(&format!("{}/", store.store_dir)), "{p}");
        testkit::run(store.nix(nix, "nix-store").args(["--verify-path", p]));
    }
    printed
}

#[test]
fn add_matches_nix_store_add() {
    let Some(nix) = nix_2_8() else { return };
    // Nix first: armitage must find (and print) the same path.
    let store_a = TestStore::new();
    let (any, _) = inputs(&store_a);
    let paths_a = add_both(&store_a, &nix, true, &["--add"], &[], &any);
    // Armitage first: Nix must agree with the path, the database record and
    // the contents armitage wrote.
    let store_b = TestStore::new();
    let (any, _) = inputs(&store_b);
    let paths_b = add_both(&store_b, &nix, false, &["--add"], &[], &any);
    testkit::run(store_b.nix(&nix, "nix-store").args(["--verify", "--check-contents"]));
    for (a, b) in paths_a.iter().zip(&paths_b) {
        assert_eq!(recorded(&store_b, &nix, b), recorded(&store_a, &nix, a), "record of {b}");
        assert_eq!(
            run_bytes(store_b.nix(&nix, "nix-store").arg("--dump").arg(b)),
            run_bytes(store_a.nix(&nix, "nix-store").arg("--dump").arg(a)),
            "contents of {b}"
        );
    }
    // The tree went in with its canonical permissions.
    let tree = std::path::Path::new(&paths_b[0]);
    assert_eq!(tree.join("run.sh").metadata().unwrap().permissions().mode() & 0o7777, 0o555);
    assert_eq!(tree.join("read-only").metadata().unwrap().permissions().mode() & 0o7777, 0o444);
}

#[test]
fn add_fixed_matches_nix_store_add_fixed() {
    let Some(nix) = nix_2_8() else { return };
    for nix_first in [true, false] {
        let store = TestStore::new();
        let (any, files) = inputs(&store);
        for algo in ["md5", "sha1", "sha256", "sha512"] {
            add_both(&store, &nix, nix_first, &["--add-fixed", algo], &["--fixed", algo], &files);
            add_both(
                &store,
                &nix,
                nix_first,
                &["--add-fixed", "--recursive", algo],
                &["--fixed", algo, "--recursive"],
                &any,
            );
        }
        testkit::run(store.nix(&nix, "nix-store").args(["--verify", "--check-contents"]));
    }
}
