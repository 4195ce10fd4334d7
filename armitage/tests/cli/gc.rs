//! `armitage store gc` against `nix-store --gc` / `--delete`: a store with
//! roots of every kind is snapshotted; Nix collects, the snapshot comes
//! back, armitage collects; the deleted paths, the survivors and the roots
//! left must be the same.

use crate::support::*;
use std::collections::BTreeSet;
use std::path::Path;
use testkit::{Nix, TestStore};

/// The store paths (full) the tests look at.
struct Garden {
    store: TestStore,
    /// Kept by an indirect root (`--add-root --indirect`).
    kept_top: String,
    /// Built but unrooted: dead with its whole closure.
    dead_top: String,
    dead_leaf: String,
    /// Kept by a direct root in `gcroots/` (a `.drv` never built).
    rooted_drv: String,
    /// Kept by a root pointing into the path.
    sub_rooted: String,
    /// Its indirect root's symlink was deleted: dead, and the link stale.
    stale: String,
    /// Kept by a link in `profiles/`.
    profiled: String,
    /// Kept by a root in a folder below `gcroots/`.
    nested: String,
}

fn add(store: &TestStore, nix: &Nix, name: &str) -> String {
    let file = store.work_dir("in").join(name);
    testkit::write_file(&file, format!("contents of {name}\n"));
    testkit::line(testkit::run(store.nix(nix, "nix-store").arg("--add").arg(&file)))
}

fn garden(nix: &Nix) -> Garden {
    let store = building_store();
    let work = store.work_dir("roots");
    let gcroots = store.state_dir.join("gcroots");
    let link = |target: &str, link: &Path| {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        make_symlink(target, link);
    };
    let kept_root = work.join("result");
    build_chain(&store, nix, "kept", "1", &["--add-root", kept_root.to_str().unwrap(), "--indirect"]);
    let kept_top = std::fs::read_link(&kept_root).unwrap().to_str().unwrap().to_owned();
    let dead_top = build_chain(&store, nix, "dead", "2", &[]);
    let dead_closure = testkit::run(store.nix(nix, "nix-store").args(["-qR", &dead_top]));
    let dead_leaf = dead_closure.lines().find(|p| p.ends_with("-dead-leaf")).expect("leaf output").to_owned();
    testkit::write_file(store.work_dir("nix").join("src-drvonly"), "source of drvonly\n");
    let rooted_drv = instantiate(&store, nix, "drvonly", &chain_expr("drvonly", "3")).remove(0);
    link(&rooted_drv, &gcroots.join("drv-root"));
    // A tree, rooted through a link to a file inside it.
    let tree = work.join("tree");
    varied_tree(&tree);
    let sub_rooted = testkit::line(testkit::run(store.nix(nix, "nix-store").arg("--add").arg(&tree)));
    link(&format!("{sub_rooted}/a/b/c/deep.txt"), &gcroots.join("into-a-path"));
    let stale = add(&store, nix, "stale");
    let stale_root = work.join("stale-root");
    testkit::run(store.nix(nix, "nix-store").args([
        "--realise",
        "--add-root",
        stale_root.to_str().unwrap(),
        "--indirect",
        &stale,
    ]));
    std::fs::remove_file(&stale_root).unwrap();
    let profiled = add(&store, nix, "profiled");
    link(&profiled, &store.state_dir.join("profiles/my-profile-1-link"));
    let nested = add(&store, nix, "nested");
    link(&nested, &gcroots.join("some/folder/root"));
    // Roots that keep nothing: outside the store, and to an invalid path.
    link("/etc/hostname", &gcroots.join("not-the-store"));
    link(&format!("{}/00000000000000000000000000000000-gone", store.store_dir), &gcroots.join("invalid"));
    // Junk in the store dir: an invalid path and a name that is no path.
    std::fs::create_dir(Path::new(&store.store_dir).join("11111111111111111111111111111111-junk")).unwrap();
    testkit::write_file(Path::new(&store.store_dir).join("not-a-store-path"), "junk");
    Garden { store, kept_top, dead_top, dead_leaf, rooted_drv, sub_rooted, stale, profiled, nested }
}

/// What a collection leaves.
#[derive(Debug, PartialEq, Eq)]
struct After {
    entries: BTreeSet<String>,
    valid: BTreeSet<String>,
    auto_roots: BTreeSet<String>,
}

fn after(store: &TestStore, nix: &Nix) -> After {
    let auto_roots = std::fs::read_dir(store.state_dir.join("gcroots/auto"))
        .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    After { entries: store_entries(store), valid: valid_paths(store, nix), auto_roots }
}

/// Every valid path's references are valid: nothing was deleted from under
/// a survivor.
fn assert_closed(store: &TestStore, nix: &Nix) {
    let valid: Vec<String> = valid_paths(store, nix).into_iter().collect();
    if !valid.is_empty() {
        testkit::run(store.nix(nix, "nix-store").arg("-qR").args(&valid));
    }
    testkit::run(store.nix(nix, "nix-store").args(["--verify", "--check-contents"]));
}

#[test]
fn gc_print_roots_live_dead_match_nix() {
    let Some(nix) = nix_2_8() else { return };
    let g = garden(&nix);
    let before = after(&g.store, &nix);
    let snapshot = Snapshot::take(&g.store);
    // CppNix's collector lists the store dir entries that are not store
    // paths as deleted, live or dead alike, and deletes them even when only
    // printing (`deleteFromStore` in gc.cc); armitage neither lists them nor
    // deletes them while printing.
    let paths_only = |out: String| -> String {
        out.lines().filter(|l| !l.ends_with("/not-a-store-path")).map(|l| format!("{l}\n")).collect()
    };
    for flag in ["--print-roots", "--print-live", "--print-dead"] {
        let theirs = testkit::run(g.store.nix(&nix, "nix-store").args(["--gc", flag]));
        let mut theirs_after = after(&g.store, &nix);
        snapshot.restore(&g.store);
        let ours = testkit::run(g.store.armitage().args(["store", "gc", flag]));
        let ours_after = after(&g.store, &nix);
        assert_eq!(paths_only(ours.clone()), paths_only(theirs), "gc {flag}");
        assert!(!ours.contains("/not-a-store-path"), "{ours}");
        // Both remove the stale indirect root while looking for roots.
        assert_eq!(
            (&ours_after.entries, &ours_after.valid),
            (&before.entries, &before.valid),
            "gc {flag} deletes nothing"
        );
        theirs_after.entries.insert("not-a-store-path".to_owned());
        assert_eq!(ours_after, theirs_after, "gc {flag}");
    }
    let live = testkit::run(g.store.armitage().args(["store", "gc", "--print-live"]));
    let dead = testkit::run(g.store.armitage().args(["store", "gc", "--print-dead"]));
    for p in [&g.kept_top, &g.rooted_drv, &g.sub_rooted, &g.profiled, &g.nested] {
        assert!(live.lines().any(|l| l == p), "{p} should be live:\n{live}");
    }
    for p in [&g.dead_top, &g.dead_leaf, &g.stale] {
        assert!(dead.lines().any(|l| l == p), "{p} should be dead:\n{dead}");
    }
}

#[test]
fn gc_deletes_what_nix_deletes() {
    let Some(nix) = nix_2_8() else { return };
    let g = garden(&nix);
    let before = store_entries(&g.store);
    let snapshot = Snapshot::take(&g.store);
    let theirs_out = testkit::run(g.store.nix(&nix, "nix-store").arg("--gc"));
    let theirs = after(&g.store, &nix);
    snapshot.restore(&g.store);
    let ours_out = testkit::run(g.store.armitage().args(["store", "gc"]));
    let ours = after(&g.store, &nix);
    let deleted = |a: &After| before.difference(&a.entries).cloned().collect::<BTreeSet<_>>();
    assert_eq!(deleted(&ours), deleted(&theirs), "deleted entries");
    assert_eq!(ours, theirs);
    // The summary: "N store paths deleted, X MiB freed".
    let count = |s: &str| s.split(" store paths deleted").next().unwrap().to_owned();
    assert_eq!(count(&ours_out), count(&theirs_out), "{ours_out} vs {theirs_out}");
    let base = |p: &str| p.rsplit('/').next().unwrap().to_owned();
    for p in [&g.kept_top, &g.rooted_drv, &g.sub_rooted, &g.profiled, &g.nested] {
        assert!(ours.entries.contains(&base(p)), "{p} was deleted");
    }
    for p in [&g.dead_top, &g.dead_leaf, &g.stale] {
        assert!(!ours.entries.contains(&base(p)), "{p} survived");
    }
    assert!(ours.auto_roots.len() == 1, "the stale indirect root is gone, the live one stays: {:?}", ours.auto_roots);
    assert_closed(&g.store, &nix);
}

/// `N store paths deleted, X MiB freed`: CppNix counts the sizes of the
/// regular files and symlinks it unlinks (`st_size`, in `_deletePath`);
/// armitage counts allocated blocks, directories included.
#[test]
fn gc_bytes_freed_counts_file_sizes_like_nix() {
    let Some(nix) = nix_2_8() else { return };
    let g = garden(&nix);
    let snapshot = Snapshot::take(&g.store);
    let theirs = testkit::run(g.store.nix(&nix, "nix-store").arg("--gc"));
    snapshot.restore(&g.store);
    let ours = testkit::run(g.store.armitage().args(["store", "gc"]));
    assert_eq!(ours, theirs);
}

#[test]
fn gc_delete_specific_paths_matches_nix_store_delete() {
    let Some(nix) = nix_2_8() else { return };
    let g = garden(&nix);
    let snapshot = Snapshot::take(&g.store);
    // Dead paths nothing refers to go; live ones, and dead ones that other
    // (dead but valid) paths refer to, stay: both refuse.
    for (path, should_work) in
        [(&g.dead_top, true), (&g.stale, true), (&g.dead_leaf, false), (&g.kept_top, false), (&g.profiled, false)]
    {
        snapshot.restore(&g.store);
        let (theirs_ok, _, theirs_err) = run_any(g.store.nix(&nix, "nix-store").args(["--delete", path]));
        let theirs = after(&g.store, &nix);
        snapshot.restore(&g.store);
        let (ours_ok, _, ours_err) = run_any(g.store.armitage().args(["store", "gc", "--delete", path]));
        let ours = after(&g.store, &nix);
        assert_eq!((ours_ok, theirs_ok), (should_work, should_work), "delete {path}:\n{theirs_err}\n{ours_err}");
        assert_eq!(ours, theirs, "after deleting {path}");
        if should_work {
            assert!(!ours.valid.contains(path.as_str()), "{path} is still valid");
        } else {
            assert!(ours.valid.contains(path.as_str()), "{path} was deleted");
            assert!(ours_err.contains("since it is still alive"), "{ours_err}");
        }
        assert_closed(&g.store, &nix);
    }
}

#[test]
fn gc_max_freed_stops_early() {
    let Some(nix) = nix_2_8() else { return };
    let g = garden(&nix);
    let before = valid_paths(&g.store, &nix);
    let dead: BTreeSet<String> =
        testkit::run(g.store.armitage().args(["store", "gc", "--print-dead"])).lines().map(str::to_owned).collect();
    let snapshot = Snapshot::take(&g.store);
    testkit::run(g.store.nix(&nix, "nix-store").args(["--gc", "--max-freed", "1"]));
    let theirs = before.difference(&valid_paths(&g.store, &nix)).count();
    snapshot.restore(&g.store);
    testkit::run(g.store.armitage().args(["store", "gc", "--max-freed", "1"]));
    let ours: BTreeSet<String> = before.difference(&valid_paths(&g.store, &nix)).cloned().collect();
    assert!(theirs >= 1 && theirs < dead.len(), "Nix deleted {theirs} of {} dead paths", dead.len());
    // Which path goes first depends on directory order; how far it goes does not.
    assert!(!ours.is_empty() && ours.len() < dead.len(), "armitage deleted {ours:?} of {dead:?}");
    assert!(ours.is_subset(&dead), "{ours:?}");
    assert_closed(&g.store, &nix);
    // A limit above everything is no limit.
    snapshot.restore(&g.store);
    testkit::run(g.store.armitage().args(["store", "gc", "--max-freed", &u64::MAX.to_string()]));
    assert!(valid_paths(&g.store, &nix).is_disjoint(&dead));
}
