//! armitage and CppNix working on one store at the same time: concurrent
//! adds lose nothing, and each side's garbage collector honours the other
//! side's temp roots through the `gc.lock`/`gc-socket` protocol.

use compat_tests::{armitage_verify, make_tree, nix_verify, open_store};
use local_store::{GcAction, GcOptions};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use testkit::{Nix, NixVersion, TestStore, line, run, write_file};

/// Writers of both kinds add files (some identical across writers, so the
/// same path is added by armitage and CppNix at once) and trees.
fn concurrent_adds_lose_nothing(version: NixVersion) {
    let Some(nix) = Nix::find(version) else { return };
    let store = TestStore::new();
    let work = store.work_dir("inputs");
    let per_writer = 25;
    let writers = 3;
    // Inputs: writer w gets files w-0..; files named shared-* are identical for all.
    for w in 0..writers * 2 {
        for i in 0..per_writer {
            let (name, body) = if i % 5 == 0 {
                (format!("shared-{i}"), format!("shared contents {i}"))
            } else {
                (format!("w{w}-{i}"), format!("writer {w} file {i}"))
            };
            write_file(work.join(format!("w{w}")).join(&name), body);
        }
        make_tree(&work.join(format!("w{w}")).join("tree"), w as u64 + 100, 30, 4000);
    }
    // Create the store first: several CppNix processes creating a fresh store
    // at once race on writing `db/schema` in place (a CppNix limitation).
    drop(open_store(&store, false));
    let mut children = Vec::new();
    for w in 0..writers * 2 {
        let dir = work.join(format!("w{w}"));
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut cmd = if w % 2 == 0 {
            let mut c = store.armitage();
            c.args(["store", "add"]);
            c
        } else {
            let mut c = store.nix(&nix, "nix-store");
            c.arg("--add");
            c
        };
        cmd.args(&files).stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push((w, cmd.spawn().expect("spawn a writer")));
    }
    let mut printed = BTreeSet::new();
    for (w, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "writer {w} failed: {}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), per_writer + 1, "writer {w} printed one path per input");
        printed.extend(lines);
    }
    // Every printed path is valid and intact, by both tools.
    let lib = open_store(&store, false);
    for p in &printed {
        let sp = lib.parse_path(p).unwrap();
        assert!(lib.is_valid(&sp).unwrap(), "{p} was printed but is not valid");
    }
    let nix_valid = run(store.nix(&nix, "nix-store").args(["--check-validity", "--print-invalid"]).args(&printed));
    assert_eq!(nix_valid, "", "{version} sees invalid paths");
    let (ok, err) = nix_verify(&store, &nix);
    assert!(ok, "{version} verify after concurrent adds:\n{err}");
    let (ok, err) = armitage_verify(&store);
    assert!(ok, "armitage verify after concurrent adds:\n{err}");
    assert!(lib.integrity_check().unwrap().is_empty());
    // No staging debris was left behind.
    let debris: Vec<_> = std::fs::read_dir(&store.store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp-") || n.starts_with("add-"))
        .collect();
    assert!(debris.is_empty(), "staging dirs left behind: {debris:?}");
}

#[test]
fn concurrent_adds_with_nix_2_8_lose_nothing() {
    concurrent_adds_lose_nothing(NixVersion::V2_8);
}

#[test]
fn concurrent_adds_with_nix_2_26_lose_nothing() {
    concurrent_adds_lose_nothing(NixVersion::V2_26);
}

/// While armitage's collector runs (held at its first deletion), CppNix adds
/// a path: it cannot take `gc.lock` shared, so it must hand its temp root to
/// armitage's roots socket, and the collector must spare the path.
fn armitage_gc_honours_nix_temp_roots(version: NixVersion) {
    let Some(nix) = Nix::find(version) else { return };
    let store = TestStore::new();
    let work = store.work_dir("inputs");
    write_file(work.join("garbage"), "garbage");
    write_file(work.join("new"), "added during gc");
    let garbage = line(run(store.nix(&nix, "nix-store").arg("--add").arg(work.join("garbage"))));

    let lib = open_store(&store, false);
    let (at_first_deletion, proceed) = (mpsc::channel::<()>(), mpsc::channel::<()>());
    let (tx_first, rx_first) = at_first_deletion;
    let (tx_go, rx_go) = proceed;
    let (nix_store, new_file) = (store.nix(&nix, "nix-store"), work.join("new"));
    let lib = &lib;
    std::thread::scope(|s| {
        let gc = s.spawn(move || {
            let mut first = true;
            lib.collect_garbage(&GcOptions::new(GcAction::DeleteDead), &mut |_| {
                if std::mem::take(&mut first) {
                    tx_first.send(()).unwrap();
                    rx_go.recv().unwrap();
                }
            })
        });
        rx_first.recv().unwrap();
        let mut nix_store = nix_store;
        let added = line(run(nix_store.arg("--add").arg(&new_file)));
        tx_go.send(()).unwrap();
        let results = gc.join().unwrap().unwrap();
        assert!(results.paths.contains(&garbage), "the garbage path was collected: {results:?}");
        assert!(!results.paths.contains(&added), "the path {version} added during GC was deleted");
        assert!(std::path::Path::new(&added).exists());
        assert!(lib.is_valid(&lib.parse_path(&added).unwrap()).unwrap());
    });
    let (ok, err) = nix_verify(&store, &nix);
    assert!(ok, "{err}");
}

#[test]
fn armitage_gc_honours_nix_2_8_temp_roots() {
    armitage_gc_honours_nix_temp_roots(NixVersion::V2_8);
}

#[test]
fn armitage_gc_honours_nix_2_26_temp_roots() {
    armitage_gc_honours_nix_temp_roots(NixVersion::V2_26);
}

/// While CppNix's collector is held at its test synchronisation point
/// (after it read the roots), armitage adds a path: armitage must send its
/// temp root over CppNix's socket, and the path survives the collection.
fn nix_gc_honours_armitage_temp_roots(version: NixVersion) {
    let Some(nix) = Nix::find(version) else { return };
    let store = TestStore::new();
    let work = store.work_dir("inputs");
    write_file(work.join("garbage"), "garbage");
    write_file(work.join("new"), "added during gc");
    let garbage = line(run(store.nix(&nix, "nix-store").arg("--add").arg(work.join("garbage"))));
    let fifo = work.join("gc-sync");
    rustix_mkfifo(&fifo);
    let sync_var = match version {
        NixVersion::V2_8 => "_NIX_TEST_GC_SYNC",
        NixVersion::V2_26 => "_NIX_TEST_GC_SYNC_2",
    };
    let gc = store
        .nix(&nix, "nix-store")
        .arg("--gc")
        .env(sync_var, &fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the collector holds gc.lock (our shared lock attempt fails).
    let gc_lock = store.state_dir.join("gc.lock");
    wait_for(|| gc_lock.exists() && !flock_shared_free(&gc_lock));
    let added = line(run(store.armitage().args(["store", "add"]).arg(work.join("new"))));
    // Release the collector (it blocks opening the FIFO for reading).
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    let out = gc.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&garbage), "{version} collected the garbage path:\n{stderr}");
    assert!(!stderr.contains(&added), "{version} deleted the path armitage added during its GC:\n{stderr}");
    let still = run(store.nix(&nix, "nix-store").args(["--check-validity", "--print-invalid", &added]));
    assert_eq!(still, "");
    let (ok, err) = armitage_verify(&store);
    assert!(ok, "{err}");
}

#[test]
fn nix_2_8_gc_honours_armitage_temp_roots() {
    nix_gc_honours_armitage_temp_roots(NixVersion::V2_8);
}

#[test]
fn nix_2_26_gc_honours_armitage_temp_roots() {
    nix_gc_honours_armitage_temp_roots(NixVersion::V2_26);
}

fn rustix_mkfifo(path: &std::path::Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("run mkfifo");
    assert!(status.success());
}

/// Whether a shared flock on `path` can be taken right now (taken and
/// released immediately).
fn flock_shared_free(path: &std::path::Path) -> bool {
    let f = local_store::lock::LockFile::open(path, false).unwrap();
    let free = f.try_lock(local_store::lock::LockKind::Shared).unwrap();
    if free {
        f.unlock().unwrap();
    }
    free
}

fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out waiting");
}
