//! One store, two daemons' worth of tools: paths CppNix (2.8 and 2.26) adds
//! are read by armitage and paths armitage adds are accepted by CppNix,
//! with the database, schema and lock files as either leaves them.

use compat_tests::{armitage_path_info, armitage_verify, make_tree, nix_path_info, nix_verify, open_store};
use local_store::AddOptions;
use std::collections::{BTreeMap, BTreeSet};
use store::hash::Algorithm;
use store::path_info::PathInfo;
use testkit::{Nix, NixVersion, TestStore, line, run, write_file};

const DRV_EXPR: &str = r#"
let
  dep = builtins.toFile "dep.txt" "some text";
in derivation {
  name = "interop";
  system = "x86_64-linux";
  builder = "/bin/sh";
  args = [ "-c" "echo ${dep} > $out" ];
  src = ./input;
  outputs = [ "out" "dev" ];
}
"#;

/// Adds a few kinds of paths with CppNix: a tree, a flat fixed file, and a
/// .drv with references (to a `toFile` text and a source).
fn nix_adds_paths(store: &TestStore, nix: &Nix) -> Vec<String> {
    let work = store.work_dir("nix-input");
    make_tree(&work.join("tree"), 7, 40, 3000);
    write_file(work.join("flat.bin"), b"flat contents\n");
    write_file(work.join("input"), b"source file\n");
    write_file(work.join("drv.nix"), DRV_EXPR);
    let tree = line(run(store.nix(nix, "nix-store").arg("--add").arg(work.join("tree"))));
    let flat = line(run(store.nix(nix, "nix-store").args(["--add-fixed", "sha1"]).arg(work.join("flat.bin"))));
    let drv = line(run(store.nix(nix, "nix-instantiate").arg(work.join("drv.nix"))));
    let mut paths = vec![tree, flat, drv.clone()];
    paths.extend(run(store.nix(nix, "nix-store").args(["-qR", &drv])).lines().map(str::to_owned));
    paths.sort();
    paths.dedup();
    paths
}

fn nix_made_paths_are_read_by_armitage(version: NixVersion) {
    let Some(nix) = Nix::find(version) else { return };
    let store = TestStore::new();
    let paths = nix_adds_paths(&store, &nix);
    assert!(paths.len() >= 5, "expected a drv, its inputs and two added paths: {paths:?}");
    let theirs = nix_path_info(&store, &nix, &paths);
    let ours = armitage_path_info(&store, &paths);
    assert_eq!(ours, theirs, "armitage path-info differs from {version}'s on a store {version} filled");
    let (ok, err) = armitage_verify(&store);
    assert!(ok, "armitage verify of a {version}-made store failed:\n{err}");
    // References straight from the library, too.
    let lib = open_store(&store, false);
    for p in &paths {
        let sp = lib.parse_path(p).unwrap();
        let refs: BTreeSet<String> = lib.path_info(&sp).unwrap().reference_paths(lib.store_dir()).into_iter().collect();
        let nix_refs: BTreeSet<String> =
            run(store.nix(&nix, "nix-store").args(["-q", "--references", p])).lines().map(str::to_owned).collect();
        assert_eq!(refs, nix_refs, "references of {p}");
    }
}

#[test]
fn nix_2_8_made_paths_are_read_by_armitage() {
    nix_made_paths_are_read_by_armitage(NixVersion::V2_8);
}

#[test]
fn nix_2_26_made_paths_are_read_by_armitage() {
    nix_made_paths_are_read_by_armitage(NixVersion::V2_26);
}

/// The `DerivationOutputs` rows, by drv path.
fn derivation_outputs(store: &TestStore) -> BTreeMap<String, Vec<(String, String)>> {
    let db = rusqlite::Connection::open(store.state_dir.join("db/db.sqlite")).unwrap();
    let mut stmt = db
        .prepare("select v.path, d.id, d.path from DerivationOutputs d join ValidPaths v on d.drv = v.id order by 1, 2")
        .unwrap();
    let mut map: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))).unwrap() {
        let (drv, id, path) = row.unwrap();
        map.entry(drv).or_default().push((id, path));
    }
    map
}

fn armitage_made_paths_are_accepted_by_nix(version: NixVersion) {
    let Some(nix) = Nix::find(version) else { return };
    let store = TestStore::new();
    // A derivation made by Nix, deleted, then re-added by armitage: the same
    // path, and armitage must write the same DerivationOutputs rows.
    let nix_paths = nix_adds_paths(&store, &nix);
    let drv_path = nix_paths.iter().find(|p| p.ends_with(".drv")).unwrap().clone();
    let rows_by_nix = derivation_outputs(&store);
    let drv_text = std::fs::read(&drv_path).unwrap();
    let drv_refs = run(store.nix(&nix, "nix-store").args(["-q", "--references", &drv_path]));
    run(store.nix(&nix, "nix-store").args(["--delete", &drv_path]));

    let lib = open_store(&store, false);
    let refs: BTreeSet<_> = drv_refs.lines().map(|l| lib.parse_path(l).unwrap()).collect();
    let drv_name = lib.parse_path(&drv_path).unwrap().name().to_owned();
    let readded = lib.add_text(&drv_name, &drv_text, &refs, AddOptions::default()).unwrap();
    assert_eq!(lib.display(&readded.path), drv_path);
    assert_eq!(derivation_outputs(&store), rows_by_nix, "DerivationOutputs rows differ from {version}'s");

    // A tree through the CLI, and a NAR import with a deriver, references
    // and a signature through the library.
    let work = store.work_dir("armitage-input");
    make_tree(&work.join("tree"), 11, 60, 5000);
    let tree = line(run(store.armitage().arg("store").arg("add").arg(work.join("tree"))));
    let tree_path = lib.parse_path(&tree).unwrap();
    let text = lib
        .add_text(
            "note.txt",
            format!("refers to {tree}").as_bytes(),
            &[tree_path.clone()].into(),
            AddOptions::default(),
        )
        .unwrap();

    make_tree(&work.join("imported"), 12, 10, 2000);
    let mut nar = Vec::new();
    local_store::nar_fs::dump(&work.join("imported"), &mut nar).unwrap();
    let imported_path =
        lib.store_dir().make_store_path("output:out", &Algorithm::Sha256.digest(b"some output"), "imported").unwrap();
    let mut info = PathInfo::new(imported_path.clone(), Algorithm::Sha256.digest(&nar), nar.len() as u64);
    info.references = [tree_path.clone(), text.path.clone(), imported_path.clone()].into();
    info.deriver = Some(readded.path.clone());
    info.sigs = ["cache.example.org-1:c2lnbmF0dXJlIGJ5dGVzIHRoYXQgYXJlIG5vdCBjaGVja2Vk".to_owned()].into();
    info.ultimate = true;
    lib.add_nar(&info, &mut &nar[..], AddOptions::default()).unwrap();
    let imported = lib.display(&imported_path);

    let (ok, err) = nix_verify(&store, &nix);
    assert!(ok, "{version} nix-store --verify --check-contents failed on armitage's paths:\n{err}");
    let ours = [tree.clone(), lib.display(&text.path), imported.clone(), drv_path.clone()];
    assert_eq!(
        nix_path_info(&store, &nix, &ours),
        armitage_path_info(&store, &ours),
        "{version} reads armitage's registrations differently"
    );
    let nix_refs: BTreeSet<String> =
        run(store.nix(&nix, "nix-store").args(["-q", "--references", &imported])).lines().map(str::to_owned).collect();
    assert_eq!(nix_refs, [tree.clone(), lib.display(&text.path), imported.clone()].into());
    assert_eq!(line(run(store.nix(&nix, "nix-store").args(["-q", "--deriver", &imported]))), drv_path);
    let dumped = testkit::output(store.nix(&nix, "nix-store").args(["--dump", &imported])).stdout;
    assert!(dumped == nar, "{version} dumps armitage's import differently");
}

#[test]
fn armitage_made_paths_are_accepted_by_nix_2_8() {
    armitage_made_paths_are_accepted_by_nix(NixVersion::V2_8);
}

#[test]
fn armitage_made_paths_are_accepted_by_nix_2_26() {
    armitage_made_paths_are_accepted_by_nix(NixVersion::V2_26);
}

/// (type, name) of every schema object.
fn schema_objects(store: &TestStore) -> BTreeSet<(String, String)> {
    let db = rusqlite::Connection::open(store.state_dir.join("db/db.sqlite")).unwrap();
    let mut stmt = db.prepare("select type, name from sqlite_master where name not like 'sqlite_%'").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// A fresh store made by armitage has exactly the schema objects CppNix
/// 2.26 makes (with and without `ca-derivations`), both Nix versions open
/// it, and armitage opens stores either version made.
#[test]
fn schemas_match_and_open_both_ways() {
    let (Some(nix28), Some(nix226)) = (Nix::find(NixVersion::V2_8), Nix::find(NixVersion::V2_26)) else { return };
    for ca in [false, true] {
        let conf = if ca { "experimental-features = nix-command ca-derivations" } else { "" };
        let by_nix = TestStore::with_conf(conf);
        run(by_nix.nix(&nix226, "nix-store").args(["--verify"]));
        let by_us = TestStore::with_conf(conf);
        drop(open_store(&by_us, ca));
        assert_eq!(schema_objects(&by_us), schema_objects(&by_nix), "schema objects (ca-derivations = {ca})");
        assert_eq!(std::fs::read_to_string(by_us.state_dir.join("db/schema")).unwrap(), "10");
        if ca {
            assert_eq!(std::fs::read_to_string(by_us.state_dir.join("db/ca-schema")).unwrap(), "3");
        }
        for nix in [&nix28, &nix226] {
            let (ok, err) = nix_verify(&by_us, nix);
            assert!(ok, "{} cannot use a store armitage created (ca = {ca}):\n{err}", nix.version);
        }
        // 2.8 made with CA: no SchemaMigrations table; armitage adds it, 2.8 still opens.
        let by_old = TestStore::with_conf(conf);
        run(by_old.nix(&nix28, "nix-store").args(["--verify"]));
        let lib = open_store(&by_old, ca);
        let p = lib.add_text("x", b"x", &BTreeSet::new(), AddOptions::default()).unwrap();
        drop(lib);
        let (ok, err) = nix_verify(&by_old, &nix28);
        assert!(ok, "Nix 2.8 cannot reopen its store after armitage used it (ca = {ca}):\n{err}");
        let (ok, err) = nix_verify(&by_old, &nix226);
        assert!(ok, "Nix 2.26 cannot open a 2.8 store armitage used (ca = {ca}):\n{err}");
        assert!(
            by_old
                .nix(&nix28, "nix-store")
                .args(["--check-validity", &format!("{}/{}", by_old.store_dir, p.path)])
                .status()
                .unwrap()
                .success()
        );
    }
}
