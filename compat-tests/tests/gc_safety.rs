//! Garbage collection while armitage builds (issue 5, GC safety): a
//! collection through the daemon in the middle of a build spares the
//! derivation the client asked for, the inputs it refers to, the output
//! being written and paths held by indirect roots, and still deletes what
//! nothing holds; the build then finishes and registers its output.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, write_file};

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
    let store = TestStore::with_conf("sandbox = false\nbuild-users-group =\nsubstituters =\n");
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
        &format!(
            r#"derivation {{
  name = "slow"; system = "x86_64-linux"; builder = "/bin/sh";
  input = builtins.storePath "{input_path}";
  args = ["-c" "echo partial > $out; echo started > {sig}/started; while [ ! -e {sig}/go ]; do :; done; read x < $input; echo $x built >> $out"];
}}"#
        ),
    );
    let drv = line(run(client("nix-instantiate").arg(&nix_file)));
    let out_path = line(run(client("nix-store").args(["-q", "--outputs", &drv])));

    let build = client("nix-store").args(["--realise", &drv]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
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
