//! Garbage collection while armitage works (issue 5, GC safety):
//! - a collection through the daemon in the middle of a build spares the
//!   derivation the client asked for, the inputs it refers to, the output
//!   being written and paths held by indirect roots, and still deletes what
//!   nothing holds; the build then finishes and registers its output;
//! - collections running back to back while clients add paths, build
//!   derivations from freshly added sources and hold unrooted paths on open
//!   connections (temp roots) never take a path a live client holds or an
//!   indirect root names, and every client's operation succeeds.

use compat_tests::is_valid_on;
use compat_tests::proto_client::{Client, Wire};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, write_file};
use worker_protocol::Op;

/// Builds run unsandboxed as the daemon's user, with nothing to substitute.
const CONF: &str = "sandbox = false\nbuild-users-group =\nsubstituters =\n";

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gc_during_a_build_spares_what_the_build_needs() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let store = TestStore::with_conf(CONF);
    let daemon = Daemon::armitage(&store);
    let client = |tool: &str| daemon.client(&store, &nix, tool);

    // The builder signals it started, then waits for `go`.
    let signals = store.work_dir("signals");
    let input = store.work_dir("in").join("input");
    write_file(&input, "the input");
    let rooted_src = store.work_dir("in").join("rooted");
    write_file(&rooted_src, "held by an indirect root");
    let garbage_src = store.work_dir("in").join("garbage");
    write_file(&garbage_src, "nothing holds this");
    let input_path = line(run(client("nix-store").arg("--add").arg(&input)));
    let rooted = line(run(client("nix-store").arg("--add").arg(&rooted_src)));
    let garbage = line(run(client("nix-store").arg("--add").arg(&garbage_src)));
    let root_link = store.work_dir("roots").join("rooted");
    run(client("nix-store").args(["--realise", &rooted, "--indirect", "--add-root"]).arg(&root_link));

    let nix_file = store.work_dir("in").join("slow.nix");
    let sig = signals.display();
    write_file(
        &nix_file,
        format!(
            r#"derivation {{
  name = "slow"; system = "x86_64-linux"; builder = "/bin/sh";
  input = builtins.storePath "{input_path}";
  args = ["-c" "echo partial > $out; echo started > {sig}/started; while [ ! -e {sig}/go ]; do :; done; read x < $input; echo $x built >> $out"];
}}"#
        ),
    );
    let drv = line(run(client("nix-instantiate").arg(&nix_file)));
    let out_path = line(run(client("nix-store").args(["-q", "--outputs", &drv])));

    let build =
        client("nix-store").args(["--realise", &drv]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the builder to start", 60, || signals.join("started").exists());

    // Collect everything collectable while the builder runs.
    let gc = output(client("nix-store").arg("--gc"));
    assert!(gc.status.success(), "gc: {}", String::from_utf8_lossy(&gc.stderr));
    let is_valid = |p: &str| output(client("nix-store").args(["--check-validity", p])).status.success();
    assert!(!is_valid(&garbage) && !Path::new(&garbage).exists(), "the collection did run: {garbage} is gone");
    assert!(is_valid(&drv), "the derivation being built survives");
    assert!(is_valid(&input_path) && Path::new(&input_path).exists(), "the build's input survives");
    assert!(is_valid(&rooted), "a path held by an indirect root survives");
    assert!(Path::new(&out_path).exists(), "the output being written (not yet valid) is not collected");

    write_file(signals.join("go"), "");
    let done = build.wait_with_output().unwrap();
    assert!(done.status.success(), "the build finishes after the gc:\n{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(line(String::from_utf8_lossy(&done.stdout)), out_path);
    assert!(is_valid(&out_path), "its output is registered");
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "partial\nthe input built\n");
    let verify = output(client("nix-store").args(["--verify", "--check-contents"]));
    assert!(verify.status.success(), "verify: {}", String::from_utf8_lossy(&verify.stderr));
}

/// AddTextToStore on `c`: the new path.
fn add_text(c: &mut Client, name: &str, text: &str, refs: &[&str]) -> String {
    let outcome = c.call(&Wire::op(Op::AddTextToStore).str(name).str(text).strings(refs)).expect("AddTextToStore");
    assert!(outcome.is_ok(), "AddTextToStore({name}): {:?}", outcome.result);
    c.read_string("path").expect("AddTextToStore's path")
}

#[test]
fn collections_back_to_back_never_take_what_live_clients_hold() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let store = TestStore::with_conf(CONF);
    let daemon = Daemon::armitage(&store);
    let client = |tool: &str| daemon.client(&store, &nix, tool);
    let stop = AtomicBool::new(false);
    let collections = AtomicUsize::new(0);
    let roots = store.work_dir("roots");
    const ROUNDS: usize = 12;

    let (built, held, littered) = std::thread::scope(|scope| {
        // Collections, one after another, until the clients are done.
        let gc = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = output(client("nix-store").arg("--gc"));
                assert!(out.status.success(), "gc: {}", String::from_utf8_lossy(&out.stderr));
                collections.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Litter: paths nothing holds once their client is gone.
        let litter = scope.spawn(|| {
            let mut made = Vec::new();
            for i in 0..ROUNDS * 2 {
                let f = store.work_dir("litter").join(format!("l{i}"));
                write_file(&f, format!("litter {i}"));
                made.push(line(run(client("nix-store").arg("--add").arg(&f))));
            }
            made
        });
        // Builds from sources added by the same client (temp roots from
        // instantiation to build), kept by `-o` (indirect roots).
        let builds = scope.spawn(|| {
            let mut outs = Vec::new();
            for i in 0..ROUNDS {
                let dir = store.work_dir(&format!("build-{i}"));
                write_file(dir.join("src.txt"), format!("source {i}"));
                write_file(
                    dir.join("default.nix"),
                    format!(
                        r#"derivation {{
  name = "from-src-{i}"; system = "x86_64-linux"; builder = "/bin/sh";
  src = ./src.txt;
  args = ["-c" "read x < $src; echo \"$x built\" > $out"];
}}"#
                    ),
                );
                let link = roots.join(format!("result-{i}"));
                let out = output(client("nix-build").arg(dir.join("default.nix")).arg("-o").arg(&link));
                assert!(out.status.success(), "build {i} while collecting: {}", String::from_utf8_lossy(&out.stderr));
                outs.push((i, line(String::from_utf8_lossy(&out.stdout))));
            }
            outs
        });
        // A client holding unrooted paths on its open connection, adding
        // more that refer to the earlier ones, checking they stay valid.
        let holder = scope.spawn(|| {
            let (mut c, _) = Client::connect(&daemon.socket, 38).expect("connect");
            let mut paths: Vec<String> = Vec::new();
            for i in 0..ROUNDS * 4 {
                let refs: Vec<&str> = paths.last().map(|p| p.as_str()).into_iter().collect();
                let p = add_text(&mut c, &format!("held-{i}"), &format!("held {i} after {refs:?}"), &refs);
                paths.push(p);
                std::thread::sleep(Duration::from_millis(30));
                for p in &paths {
                    assert!(is_valid_on(&mut c, p), "{p}, added on a connection still open, was collected");
                }
            }
            (c, paths)
        });
        let built = builds.join().expect("every build succeeded");
        let held = holder.join().expect("the holder's paths stayed valid");
        let littered = litter.join().expect("every add succeeded");
        stop.store(true, Ordering::Relaxed);
        gc.join().expect("every collection succeeded");
        (built, held, littered)
    });
    let collections = collections.into_inner();
    eprintln!(
        "{collections} collections ran during {ROUNDS} builds, {} held adds, {} litter adds",
        held.1.len(),
        littered.len()
    );
    assert!(collections >= 3, "only {collections} collections overlapped the clients");

    let is_valid = |p: &str| output(client("nix-store").args(["--check-validity", p])).status.success();
    // The connection is still open: one more collection spares its paths.
    run(client("nix-store").arg("--gc"));
    let (mut c, paths) = held;
    for p in &paths {
        assert!(is_valid_on(&mut c, p) && is_valid(p), "{p} held by a live client was collected");
    }
    for (i, out) in &built {
        assert!(is_valid(out), "{out}, rooted by result-{i}, was collected");
        assert_eq!(std::fs::read_to_string(out).unwrap(), format!("source {i} built\n"));
    }
    // Once the holder hangs up and the litter's clients are gone, a
    // collection takes them (so the collections above could have).
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    run(client("nix-store").arg("--gc"));
    for p in paths.iter().chain(&littered) {
        assert!(!is_valid(p) && !Path::new(p).exists(), "{p} is held by nothing and was not collected");
    }
    for (_, out) in &built {
        assert!(is_valid(out), "{out} is still rooted");
    }
    let verify = output(client("nix-store").args(["--verify", "--check-contents"]));
    assert!(verify.status.success(), "verify: {}", String::from_utf8_lossy(&verify.stderr));
}
