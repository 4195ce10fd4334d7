//! `armitage store optimise` against `nix-store --optimise`, from the same
//! snapshot: the same `.links` entries, the same files sharing inodes, the
//! same summary.

use crate::support::*;
use std::path::Path;
use testkit::{Nix, TestStore};

/// A store whose paths share files: two near-identical trees, a file added
/// on its own that also sits inside a tree, executable and plain files with
/// the same bytes, duplicated symlinks and empty files.
fn store_with_duplicates(nix: &Nix) -> TestStore {
    let store = building_store();
    let work = store.work_dir("in");
    for (name, tweak) in [("one", "1"), ("two", "2")] {
        let tree = work.join(name);
        varied_tree(&tree);
        testkit::write_file(tree.join("a/sibling"), format!("changed {tweak}\n"));
        testkit::write_file(tree.join("same-bytes-exec"), "same bytes\n");
        set_mode(&tree.join("same-bytes-exec"), 0o755);
        testkit::write_file(tree.join("same-bytes"), "same bytes\n");
        testkit::write_file(tree.join("empty-2"), "");
        make_symlink("/etc/hostname", &tree.join("link-abs-2"));
    }
    testkit::write_file(work.join("deep.txt"), "deep\n");
    let mut add = store.nix(nix, "nix-store");
    add.arg("--add").args(["one", "two", "deep.txt"].map(|n| work.join(n)));
    testkit::run(&mut add);
    build_chain(&store, nix, "opt", "1", &[]);
    store
}

fn summary(output: &str) -> String {
    output
        .lines()
        .find(|l| l.contains("freed by hard-linking"))
        .unwrap_or_else(|| panic!("no summary in {output:?}"))
        .to_owned()
}

fn links(store: &TestStore) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(&store.store_dir).join(".links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn optimise_links_what_nix_links() {
    let Some(nix) = nix_2_8() else { return };
    let store = store_with_duplicates(&nix);
    let snapshot = Snapshot::take(&store);
    let (ok, out, err) = run_any(store.nix(&nix, "nix-store").arg("--optimise"));
    assert!(ok, "{err}");
    // Nix prints its summary on stderr; armitage on stdout.
    let theirs = (summary(&format!("{out}{err}")), links(&store), shared_inodes(&store));
    snapshot.restore(&store);
    let ours_out = testkit::run(store.armitage().args(["store", "optimise"]));
    let ours = (summary(&ours_out), links(&store), shared_inodes(&store));
    assert_eq!(ours.1, theirs.1, ".links entries");
    assert_eq!(ours.2, theirs.2, "files sharing an inode");
    let files_linked = |s: &str| s.split(" freed by ").nth(1).map(str::to_owned);
    assert_eq!(files_linked(&ours.0), files_linked(&theirs.0), "summary: {} vs {}", ours.0, theirs.0);
    assert!(theirs.0.starts_with("3.00 MiB freed by"), "the second big.bin is freed: {}", theirs.0);
    assert!(ours.2.len() > 5, "{:?}", ours.2);
    testkit::run(store.nix(&nix, "nix-store").args(["--verify", "--check-contents"]));
    // Nothing left to do, for either tool.
    let again = testkit::run(store.armitage().args(["store", "optimise"]));
    assert_eq!(summary(&again), "0.00 MiB freed by hard-linking 0 files");
    let (_, out, err) = run_any(store.nix(&nix, "nix-store").arg("--optimise"));
    assert_eq!(summary(&format!("{out}{err}")), "0.00 MiB freed by hard-linking 0 files");
    assert_eq!(shared_inodes(&store), ours.2);
}

/// `X MiB freed by hard-linking N files`: CppNix adds up the `st_size` of
/// each file it replaces with a link (`optimisePath_`); armitage adds up
/// allocated blocks.
#[test]
fn optimise_bytes_freed_counts_file_sizes_like_nix() {
    let Some(nix) = nix_2_8() else { return };
    let store = store_with_duplicates(&nix);
    let snapshot = Snapshot::take(&store);
    let (_, out, err) = run_any(store.nix(&nix, "nix-store").arg("--optimise"));
    snapshot.restore(&store);
    let ours = testkit::run(store.armitage().args(["store", "optimise"]));
    assert_eq!(summary(&ours), summary(&format!("{out}{err}")));
}

/// A store Nix optimised is one armitage finds optimised (same link names).
#[test]
fn optimise_after_nix_links_nothing() {
    let Some(nix) = nix_2_8() else { return };
    let store = store_with_duplicates(&nix);
    testkit::run(store.nix(&nix, "nix-store").arg("--optimise"));
    let before = (links(&store), shared_inodes(&store));
    let out = testkit::run(store.armitage().args(["store", "optimise"]));
    assert_eq!(summary(&out), "0.00 MiB freed by hard-linking 0 files");
    assert_eq!((links(&store), shared_inodes(&store)), before);
}
