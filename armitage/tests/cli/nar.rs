//! `armitage nar dump|cat|ls` against `nix-store --dump`, `nix nar cat` and
//! `nix nar ls`.

use crate::support::*;
use std::path::Path;
use testkit::{Nix, TestStore};

fn assert_dump_matches(store: &TestStore, nix: &Nix, path: &Path) {
    let theirs = run_bytes(store.nix(nix, "nix-store").arg("--dump").arg(path));
    let ours = run_bytes(store.armitage().args(["nar", "dump"]).arg(path));
    assert!(theirs.len() > 8, "nix-store --dump printed almost nothing for {}", path.display());
    assert!(
        ours == theirs,
        "NAR of {} differs from nix-store --dump ({} vs {} bytes)",
        path.display(),
        ours.len(),
        theirs.len()
    );
}

#[test]
fn dump_matches_nix_store_dump() {
    let Some(nix) = nix_2_8() else { return };
    let store = TestStore::new();
    let work = store.work_dir("in");
    varied_tree(&work.join("tree"));
    assert_dump_matches(&store, &nix, &work.join("tree"));
    // Top-level nodes of each kind.
    for sub in ["big.bin", "empty-file", "run.sh", "link-rel", "link-dangling", "link-abs", "empty-dir", "order"] {
        assert_dump_matches(&store, &nix, &work.join("tree").join(sub));
    }
}

/// A NAR of the varied tree, written by Nix.
fn tree_nar(store: &TestStore, nix: &Nix) -> std::path::PathBuf {
    let work = store.work_dir("in");
    varied_tree(&work.join("tree"));
    let nar = run_bytes(store.nix(nix, "nix-store").arg("--dump").arg(work.join("tree")));
    let file = work.join("tree.nar");
    testkit::write_file(&file, nar);
    file
}

#[test]
fn cat_matches_nix_nar_cat() {
    let Some(nix) = nix_2_8() else { return };
    let store = TestStore::new();
    let nar = tree_nar(&store, &nix);
    for path in ["/big.bin", "/empty-file", "/run.sh", "/read-only", "/a/b/c/deep.txt", "/order/é", "/order/B"] {
        let theirs = run_bytes(nix_cli(&store, &nix).args(["nar", "cat"]).arg(&nar).arg(path));
        let ours = run_bytes(store.armitage().args(["nar", "cat"]).arg(&nar).arg(path));
        assert!(ours == theirs, "nar cat {path}: {} bytes from armitage, {} from Nix", ours.len(), theirs.len());
    }
    assert_eq!(run_bytes(store.armitage().args(["nar", "cat"]).arg(&nar).arg("/a/b/c/deep.txt")), b"deep\n");
    // Directories, symlinks and missing paths cannot be cat'ed by either.
    for path in ["/", "/a", "/empty-dir", "/link-rel", "/missing", "/a/missing", "/big.bin/below"] {
        let (nix_ok, _, nix_err) = run_any(nix_cli(&store, &nix).args(["nar", "cat"]).arg(&nar).arg(path));
        let (ours_ok, ours_out, ours_err) = run_any(store.armitage().args(["nar", "cat"]).arg(&nar).arg(path));
        assert!(!nix_ok, "Nix unexpectedly cat'ed {path}");
        assert!(!ours_ok, "armitage unexpectedly cat'ed {path}: {ours_out:?}");
        assert!(nix_err.contains(path) && ours_err.contains(path), "errors should name {path}:\n{nix_err}\n{ours_err}");
        assert!(ours_err.starts_with("error: "), "{ours_err}");
    }
}

/// Paths that are not canonical: Nix 2.8 rejects them, Nix 2.26 (and
/// armitage) canonicalise them.
#[test]
fn cat_and_ls_canonicalise_paths_like_nix_2_26() {
    let (Some(nix8), Some(nix26)) = (nix_2_8(), nix_2_26()) else { return };
    let store = TestStore::new();
    let nar = tree_nar(&store, &nix8);
    for path in ["a/b/c/deep.txt", "/a/b/c/deep.txt/", "//a/./b/../b/c/deep.txt"] {
        let theirs = run_bytes(nix_cli(&store, &nix26).args(["nar", "cat"]).arg(&nar).arg(path));
        let ours = run_bytes(store.armitage().args(["nar", "cat"]).arg(&nar).arg(path));
        assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs), "nar cat {path}");
        let theirs = testkit::run(nix_cli(&store, &nix26).args(["nar", "ls", "-l"]).arg(&nar).arg(path));
        let ours = testkit::run(store.armitage().args(["nar", "ls", "-l"]).arg(&nar).arg(path));
        assert_eq!(ours, theirs, "nar ls -l {path}");
    }
}

const LS_PATHS: [&str; 8] =
    ["/", "/a", "/a/b/c/deep.txt", "/run.sh", "/link-abs", "/empty-dir", "/order", "/order/é-dir"];

#[test]
fn ls_text_matches_nix_nar_ls() {
    let nixes: Vec<Nix> = [nix_2_8(), nix_2_26()].into_iter().flatten().collect();
    let Some(first) = nixes.first() else { return };
    let store = TestStore::new();
    let nar = tree_nar(&store, first);
    let flag_sets: [&[&str]; 6] = [&[], &["-R"], &["-l"], &["-R", "-l"], &["-d"], &["-d", "-l"]];
    for path in LS_PATHS {
        for flags in flag_sets {
            let ours = testkit::run(store.armitage().args(["nar", "ls"]).args(flags).arg(&nar).arg(path));
            assert!(!ours.is_empty() || path == "/empty-dir", "nar ls {flags:?} {path} printed nothing");
            for nix in &nixes {
                let theirs = testkit::run(nix_cli(&store, nix).args(["nar", "ls"]).args(flags).arg(&nar).arg(path));
                assert_eq!(ours, theirs, "nar ls {flags:?} {path} vs {}", nix.version);
            }
        }
    }
    // Spot-check the format itself, so a shared mistake cannot hide.
    let long = testkit::run(store.armitage().args(["nar", "ls", "-l"]).arg(&nar).arg("/"));
    assert!(long.contains(&format!("-r-xr-xr-x {:>20} ./run.sh\n", 18)), "{long}");
    assert!(long.contains("lrwxrwxrwx                    0 ./link-abs -> /etc/hostname\n"), "{long}");
    let order = testkit::run(store.armitage().args(["nar", "ls"]).arg(&nar).arg("/order"));
    let names: Vec<&str> = order.lines().map(|l| l.trim_start_matches("./")).collect();
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(names, sorted, "entries must be in byte order");
}

#[test]
fn ls_json_matches_nix_nar_ls() {
    let nixes: Vec<Nix> = [nix_2_8(), nix_2_26()].into_iter().flatten().collect();
    let Some(first) = nixes.first() else { return };
    let store = TestStore::new();
    let nar = tree_nar(&store, first);
    let flag_sets: [&[&str]; 2] = [&["--json"], &["--json", "-R"]];
    for path in LS_PATHS {
        for flags in flag_sets {
            let ours = run_json(store.armitage().args(["nar", "ls"]).args(flags).arg(&nar).arg(path));
            for nix in &nixes {
                let theirs = run_json(nix_cli(&store, nix).args(["nar", "ls"]).args(flags).arg(&nar).arg(path));
                assert_eq!(ours, theirs, "nar ls {flags:?} {path} vs {}", nix.version);
            }
        }
    }
    let big = run_json(store.armitage().args(["nar", "ls", "--json"]).arg(&nar).arg("/big.bin"));
    assert_eq!(big["size"], 3 * 1024 * 1024 + 13);
    assert!(big["narOffset"].as_u64().is_some_and(|o| o > 0), "{big}");
}
