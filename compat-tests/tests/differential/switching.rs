//! Switching daemons on one store: what CppNix's nix-daemon (2.8, 2.26)
//! added, armitage serves in full (queries, verify, gc) once it takes over,
//! and the other way round; and both daemons serving the same store at
//! once, with clients on both adding concurrently, lose nothing.

use compat_tests::{export_record, export_stream, make_tree, path_info_by_path};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, run, write_file};

const DRV_NIX: &str = r#"
let
  base = derivation {
    name = "switch-base-TAG";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo base > $out" ];
    src = builtins.toFile "switch-src-TAG" "some text for TAG\n";
  };
in derivation {
  name = "switch-top-TAG";
  system = "x86_64-linux";
  builder = "/bin/sh";
  args = [ "-c" "echo ${base} > $out" ];
  input = ./input;
}
"#;

/// A client of `nix`'s `tool` on `daemon`; Nix 2.8's `nix` gets nix-command.
fn client(daemon: &Daemon, store: &TestStore, nix: &Nix, tool: &str) -> Command {
    let mut cmd = daemon.client(store, nix, tool);
    if tool == "nix" && nix.version == NixVersion::V2_8 {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd
}

/// What [`fill`] made, and what must survive a collection.
struct Filled {
    /// Every path made, live or dead.
    all: BTreeSet<String>,
    /// The paths a collection must keep (the closure of the roots).
    live: BTreeSet<String>,
}

/// Fills the store through `daemon` with every kind of path: a tree and a
/// flat fixed file (`--add`, `--add-fixed`), `.drv`s with `toFile` and
/// source inputs (`nix-instantiate`), an output registered with its deriver
/// (`--import`), signatures (`nix store sign`), and a GC root made through
/// the daemon (`--add-root`), plus garbage. `tag` keeps fills apart.
fn fill(daemon: &Daemon, store: &TestStore, nix: &Nix, tag: &str) -> Filled {
    let work = store.work_dir(&format!("fill-{tag}"));
    make_tree(&work.join("tree"), tag.len() as u64 + 5, 25, 3000);
    write_file(work.join("flat"), format!("flat file {tag}\n"));
    write_file(work.join("garbage"), format!("garbage {tag}\n"));
    write_file(work.join("input"), format!("input for {tag}\n"));
    write_file(work.join("drv.nix"), DRV_NIX.replace("TAG", tag));
    let c = |tool: &str| client(daemon, store, nix, tool);
    let tree = line(run(c("nix-store").arg("--add").arg(work.join("tree"))));
    let flat = line(run(c("nix-store").args(["--add-fixed", "sha1"]).arg(work.join("flat"))));
    let garbage = line(run(c("nix-store").arg("--add").arg(work.join("garbage"))));
    let top = line(run(c("nix-instantiate").arg(work.join("drv.nix"))));
    let drvs: BTreeSet<String> = run(c("nix-store").args(["-qR", &top])).lines().map(str::to_owned).collect();
    let out = line(run(c("nix-store").args(["-q", "--outputs", &top])));
    let nar = store::nar::dump_bytes(format!("built {tag}\n").as_bytes(), false);
    let stream = export_stream(&[export_record(&nar, &out, &[], Some(&top))]);
    let imported = run_with_stdin(c("nix-store").arg("--import"), &stream);
    assert_eq!(line(imported), out);
    let keys = store.work_dir("keys");
    if !keys.join("sk").exists() {
        run(c("nix-store")
            .arg("--generate-binary-cache-key")
            .arg("switch-key-1")
            .arg(keys.join("sk"))
            .arg(keys.join("pk")));
    }
    run(c("nix").args(["store", "sign", "--key-file"]).arg(keys.join("sk")).args([&out, &tree]));
    let signed = path_info_by_path(&run(c("nix").args(["path-info", "--json", &out, &tree])));
    for (p, info) in &signed {
        let sigs = info["signatures"].as_array().cloned().unwrap_or_default();
        assert!(
            sigs.iter().any(|s| s.as_str().is_some_and(|s| s.starts_with("switch-key-1:"))),
            "{}: {p} is signed: {info}",
            daemon.name
        );
    }
    let root = work.join("root");
    run(c("nix-store").arg("--add-root").arg(&root).args(["-r", &out]));
    let mut gcroot = store.state_dir.join("gcroots");
    std::fs::create_dir_all(&gcroot).unwrap();
    gcroot.push(format!("tree-{tag}"));
    std::os::unix::fs::symlink(&tree, gcroot).unwrap();
    let mut all: BTreeSet<String> = drvs.clone();
    all.extend([tree.clone(), flat, garbage, out.clone()]);
    // The roots' targets (with keep-derivations, the default, the output's
    // .drvs stay alive too).
    let live: BTreeSet<String> = [tree, out].into_iter().collect();
    Filled { all, live }
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> String {
    let out = compat_tests::output_with_stdin(cmd, input);
    assert!(out.status.success(), "{:?} failed: {}", cmd.get_program(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `nix path-info --json --all` through `daemon`, by path.
fn all_info(daemon: &Daemon, store: &TestStore, nix: &Nix) -> Map<String, Value> {
    path_info_by_path(&run(client(daemon, store, nix, "nix").args(["path-info", "--json", "--all"])))
}

/// `nix-store --verify --check-contents` through `daemon` is clean.
fn assert_verify_clean(daemon: &Daemon, store: &TestStore, nix: &Nix) {
    let out = testkit::output(client(daemon, store, nix, "nix-store").args(["--verify", "--check-contents"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("error") && !err.contains("modified"),
        "{}: verify:\n{err}",
        daemon.name
    );
    let out = testkit::output(client(daemon, store, nix, "nix").args(["store", "verify", "--all", "--no-trust"]));
    assert!(out.status.success(), "{}: nix store verify --all:\n{}", daemon.name, String::from_utf8_lossy(&out.stderr));
}

fn lines(text: String) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

/// One daemon fills the store and stops; the other takes over and sees and
/// uses everything: the same path infos (registration times included: it
/// is the same database), roots, dead paths, clean verification; then it
/// collects exactly the dead paths, and the first daemon, back again, finds
/// the store as the second left it.
fn switch(version: NixVersion, cppnix_first: bool) {
    let Some(nix) = Nix::find(version) else { return };
    let store = TestStore::new();
    let start = |cppnix: bool| if cppnix { Daemon::nix(&store, &nix) } else { Daemon::armitage(&store) };
    let first = start(cppnix_first);
    let filled = fill(&first, &store, &nix, "one");
    let info = all_info(&first, &store, &nix);
    let roots = lines(run(client(&first, &store, &nix, "nix-store").args(["--gc", "--print-roots"])));
    let dead = lines(run(client(&first, &store, &nix, "nix-store").args(["--gc", "--print-dead"])));
    for p in &filled.all {
        assert!(info.contains_key(p), "{p} is valid");
    }
    assert!(first.stop().success());

    let second = start(!cppnix_first);
    assert_eq!(all_info(&second, &store, &nix), info, "{} sees what {version}'s other daemon added", second.name);
    assert_eq!(lines(run(client(&second, &store, &nix, "nix-store").args(["--gc", "--print-roots"]))), roots);
    assert_eq!(lines(run(client(&second, &store, &nix, "nix-store").args(["--gc", "--print-dead"]))), dead);
    assert_verify_clean(&second, &store, &nix);
    // Use it: more paths on top, queries across both fills.
    let more = fill(&second, &store, &nix, "two");
    for p in filled.live.iter().chain(&more.live) {
        let refs = run(client(&second, &store, &nix, "nix-store").args(["-qR", p]));
        assert!(refs.lines().any(|l| l == p), "{p} is in its own closure");
    }
    let dead = lines(run(client(&second, &store, &nix, "nix-store").args(["--gc", "--print-dead"])));
    let before: BTreeSet<String> = all_info(&second, &store, &nix).keys().cloned().collect();
    let gc = testkit::output(client(&second, &store, &nix, "nix-store").arg("--gc"));
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let after_info = all_info(&second, &store, &nix);
    let after: BTreeSet<String> = after_info.keys().cloned().collect();
    assert_eq!(
        before.difference(&after).cloned().collect::<BTreeSet<_>>(),
        dead,
        "{}: exactly the dead paths went",
        second.name
    );
    for p in filled.live.iter().chain(&more.live) {
        assert!(after.contains(p), "{}: the live path {p} survived", second.name);
    }
    assert_verify_clean(&second, &store, &nix);
    assert!(second.stop().success());

    let again = start(cppnix_first);
    assert_eq!(all_info(&again, &store, &nix), after_info, "{} back on the store sees what the other left", again.name);
    assert_verify_clean(&again, &store, &nix);
    // No leftovers of either daemon's work in the store dir.
    let debris: Vec<String> = std::fs::read_dir(&store.store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp-") || n.starts_with("add-") || n.ends_with(".lock"))
        .collect();
    assert!(debris.is_empty(), "left behind: {debris:?}");
}

#[test]
fn nix_2_8_daemon_then_armitage() {
    switch(NixVersion::V2_8, true);
}

#[test]
fn armitage_then_nix_2_8_daemon() {
    switch(NixVersion::V2_8, false);
}

#[test]
fn nix_2_26_daemon_then_armitage() {
    switch(NixVersion::V2_26, true);
}

#[test]
fn armitage_then_nix_2_26_daemon() {
    switch(NixVersion::V2_26, false);
}

/// armitage and nix-daemon serving one store through two sockets, clients
/// on both adding at once (some inputs identical on both sides, so the same
/// path is added through both daemons at the same time): every path a
/// client printed is valid through both daemons, both see the same store,
/// and it verifies clean.
fn both_at_once(version: NixVersion) {
    let Some(nix) = Nix::find(version) else { return };
    let store = TestStore::new();
    let ours = Daemon::armitage(&store);
    let theirs = Daemon::nix(&store, &nix);
    let work = store.work_dir("concurrent");
    let (writers, per_writer) = (4, 12);
    for w in 0..writers {
        for i in 0..per_writer {
            let body = if i % 3 == 0 { format!("shared {i}\n") } else { format!("writer {w} file {i}\n") };
            write_file(work.join(format!("w{w}")).join(format!("f{i}")), body);
        }
        // Writers 2k (armitage) and 2k+1 (nix-daemon) add the same tree and
        // instantiate the same expression.
        make_tree(&work.join(format!("w{w}")).join("tree"), 40 + (w / 2) as u64, 20, 4000);
        write_file(work.join(format!("w{w}.nix")), DRV_NIX.replace("TAG", &format!("w{}", w / 2)));
        write_file(work.join("input"), "shared input\n");
    }
    let mut children = Vec::new();
    for w in 0..writers {
        let daemon = if w % 2 == 0 { &ours } else { &theirs };
        let dir = work.join(format!("w{w}"));
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut add = client(daemon, &store, &nix, "nix-store");
        add.arg("--add").args(&files).stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push((format!("writer {w} on {}", daemon.name), files.len(), add.spawn().unwrap()));
        let mut inst = client(daemon, &store, &nix, "nix-instantiate");
        inst.arg(work.join(format!("w{w}.nix"))).stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push((format!("instantiation {w} on {}", daemon.name), 1, inst.spawn().unwrap()));
    }
    let mut printed = BTreeSet::new();
    for (what, count, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
        let paths = lines(String::from_utf8(out.stdout).unwrap());
        assert_eq!(paths.len(), count, "{what} printed one path per input");
        printed.extend(paths);
    }
    // The two instantiations per expression agree, so .drvs were shared too.
    assert_eq!(printed.iter().filter(|p| p.ends_with(".drv")).count(), 2, "{printed:?}");
    for daemon in [&ours, &theirs] {
        let invalid =
            run(client(daemon, &store, &nix, "nix-store").args(["--check-validity", "--print-invalid"]).args(&printed));
        assert_eq!(invalid, "", "{} does not see paths added through the other daemon", daemon.name);
        assert_verify_clean(daemon, &store, &nix);
    }
    assert_eq!(all_info(&ours, &store, &nix), all_info(&theirs, &store, &nix), "both daemons see the same store");
    let closure = |daemon: &Daemon| {
        printed
            .iter()
            .filter(|p| p.ends_with(".drv"))
            .map(|p| lines(run(client(daemon, &store, &nix, "nix-store").args(["-qR", p]))))
            .collect::<Vec<_>>()
    };
    assert_eq!(closure(&ours), closure(&theirs));
}

#[test]
fn nix_2_8_daemon_and_armitage_at_once() {
    both_at_once(NixVersion::V2_8);
}

#[test]
fn nix_2_26_daemon_and_armitage_at_once() {
    both_at_once(NixVersion::V2_26);
}
