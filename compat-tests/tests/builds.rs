//! Builds through armitage's daemon with stock Nix 2.8 clients, side by
//! side with CppNix's nix-daemon 2.8 (each on a store of its own, see
//! [`compat_tests::Twins`]): the same outputs, path infos, errors, logs and
//! activities; interruption, concurrency, time limits, repair and the
//! sandbox's walls.
//!
//! Builders are `/bin/sh` (dash here) with nothing but its builtins: the
//! sandbox holds `sandbox-paths` (the shell and the libraries it needs) and
//! the inputs only, and `PATH` is `/path-not-set`.
//!
//! Build users: both daemons kill every process of a build user once a
//! build is done, so two tests using them at once would kill each other's
//! builders. Tests using `build-users-group = nixbld` have names ending in
//! `_with_build_users` and run one at a time (the `build-users` test group
//! of .config/nextest.toml, and [`BUILD_USERS`] under `cargo test`); the
//! others set `build-users-group =` (builds run as root).

use compat_tests::{PathMap, Side, Twins, nix_verify};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::{NixVersion, line, output, write_file};

/// Serialises the build-user tests when they share a process (`cargo test`).
static BUILD_USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn build_users_lock() -> std::sync::MutexGuard<'static, ()> {
    BUILD_USERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the sandbox needs for `/bin/sh` (only what exists on this machine).
fn sandbox_paths() -> String {
    ["/bin/sh", "/lib", "/lib64", "/usr/lib", "/usr/lib64"]
        .iter()
        .filter(|p| Path::new(p).exists())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// nix.conf lines for both stores.
fn conf(sandbox: bool, build_users: bool, extra: &str) -> String {
    format!(
        "sandbox = {sandbox}\nsandbox-paths = {}\nbuild-users-group = {}\nmax-jobs = 2\n{extra}\n",
        sandbox_paths(),
        if build_users { "nixbld" } else { "" }
    )
}

/// The start of every test's Nix file: `mk name script extra`.
const PRELUDE: &str = r#"
let
  mk = name: script: extra: derivation ({
    inherit name;
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" script ];
  } // extra);
in
"#;

/// Writes `body` (an expression that may use `mk`) as `<name>.nix` in
/// theirs' work dir (ours' is the same path once mapped); returns its path.
fn nix_file(tw: &Twins, name: &str, body: &str) -> PathBuf {
    let file = tw.theirs.work_dir("nix").join(format!("{name}.nix"));
    write_file(&file, format!("{PRELUDE}{body}\n"));
    file
}

/// Removes ANSI escape sequences (colours) from a client's output.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `error: ...` messages of a client's stderr, each with its indented
/// continuation lines (trimmed), ANSI escapes removed.
fn error_blocks(stderr: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    let mut in_error = false;
    for l in strip_ansi(stderr).lines() {
        if l.starts_with("error:") {
            blocks.push(l.trim_end().to_owned());
            in_error = true;
        } else if in_error && l.starts_with(' ') {
            let last = blocks.last_mut().expect("a block");
            last.push('\n');
            last.push_str(l.trim());
        } else {
            in_error = false;
        }
    }
    blocks
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Both sides' outputs must have failed; their error messages (ours mapped
/// into theirs' terms) must be the same multiset. Returns theirs' messages.
fn same_errors(tw: &Twins, what: &str, [o, t]: &[std::process::Output; 2]) -> Vec<String> {
    let (oe, te) = (text(&o.stderr), text(&t.stderr));
    assert!(!o.status.success(), "{what}: armitage's side succeeded:\n{oe}");
    assert!(!t.status.success(), "{what}: {}'s side succeeded:\n{te}", tw.cppnix.name);
    tw.map.borrow_mut().learn(oe.as_bytes(), te.as_bytes());
    let mut ours: Vec<String> = error_blocks(&tw.map.borrow().to_theirs_str(&oe));
    let mut theirs = error_blocks(&te);
    ours.sort();
    theirs.sort();
    assert!(!theirs.is_empty(), "{what}: no error from {}:\n{te}", tw.cppnix.name);
    assert_eq!(
        ours,
        theirs,
        "{what}: armitage's errors (mapped, left) differ from {}'s\n--- armitage's stderr:\n{oe}\n--- theirs:\n{te}\n--- armitage's daemon log:\n{}",
        tw.cppnix.name,
        tw.armitage.log()
    );
    theirs
}

/// Both must have succeeded.
fn both_ok(tw: &Twins, what: &str, outs: &[std::process::Output; 2]) {
    for (out, side) in outs.iter().zip(Side::BOTH) {
        assert!(
            out.status.success(),
            "{what} failed against {} ({}):\n{}\n--- daemon log:\n{}",
            tw.daemon(side).name,
            out.status,
            text(&out.stderr),
            tw.daemon(side).log()
        );
    }
}

/// `nix-instantiate <file> -A <attr>` on both sides; returns theirs' `.drv`
/// paths. (The `.drv` files are not compared byte for byte: their input
/// lists are ordered by path, so by hash, which differs between the stores.)
fn instantiate(tw: &Twins, file: &Path, attr: &str) -> Vec<String> {
    let out = tw.same_lines(&format!("nix-instantiate -A {attr}"), "nix-instantiate", |_, c| {
        c.arg(file).args(["-A", attr]);
    });
    let drvs: Vec<String> = out.lines().map(str::to_owned).collect();
    drvs
}

/// The output paths of `drvs` (theirs' terms), learnt on both sides.
fn outputs_of(tw: &Twins, drvs: &[String]) -> Vec<String> {
    let out = tw.same_lines("nix-store -q --outputs", "nix-store", |side, c| {
        c.args(["-q", "--outputs"]).args(drvs.iter().map(|d| tw.path(side, d)));
    });
    out.lines().map(str::to_owned).collect()
}

/// Whether a path (theirs' terms) is valid on `side` (asked directly of
/// the store's database, through Nix 2.8 in local mode).
fn is_valid(tw: &Twins, side: Side, path: &str) -> bool {
    output(tw.store(side).nix(&tw.nix, "nix-store").args(["--check-validity", &tw.path(side, path)])).status.success()
}

fn read_path(tw: &Twins, side: Side, path: &str) -> String {
    let p = tw.path(side, path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {p}: {e}"))
}

// ---------------------------------------------------------------------------
// 1. A graph of 200 derivations.

/// 100 leaves and 100 joins; join j reads (and names, so refers to) two or
/// three earlier nodes; every tenth join has a second output `dev` naming
/// `out`. The nodes are split in thirds (`part1`..`part3`, the later ones
/// needing earlier ones); `all` is every node.
fn graph_nix() -> String {
    let mut s = String::from("rec {\n");
    let mut rng = compat_tests::Rng::new(42);
    for i in 0..100 {
        s.push_str(&format!("  n{i} = mk \"leaf-{i}\" \"echo leaf-{i} > $out\" {{}};\n"));
    }
    for i in 100..200u64 {
        let mut deps = BTreeSet::new();
        let n = 2 + rng.below(2);
        while deps.len() < n as usize {
            // Mostly recent nodes, so that the graph is deep.
            let d = if rng.below(3) == 0 { rng.below(i) } else { i - 1 - rng.below(10.min(i)) };
            deps.insert(d);
        }
        let mut script = String::new();
        for d in &deps {
            script.push_str(&format!(
                "read x < ${{n{d}}}; case $x in leaf-{d}|join-{d}) ;; *) echo bad input {d}: $x; exit 1;; esac; "
            ));
        }
        script.push_str(&format!("echo join-{i} > $out; "));
        for d in &deps {
            script.push_str(&format!("echo ${{n{d}}} >> $out; "));
        }
        let extra = if i % 10 == 0 {
            script.push_str("echo $out > $dev");
            "{ outputs = [ \"out\" \"dev\" ]; }"
        } else {
            "{}"
        };
        s.push_str(&format!("  n{i} = mk \"join-{i}\" \"{script}\" {extra};\n"));
    }
    for (part, range) in [("part1", 0..67), ("part2", 67..134), ("part3", 134..200)] {
        let names: Vec<String> = range.map(|i| format!("n{i}")).collect();
        s.push_str(&format!("  {part} = [ {} ];\n", names.join(" ")));
    }
    let all: Vec<String> = (0..200).map(|i| format!("n{i}")).collect();
    s.push_str(&format!("  all = [ {} ];\n}}", all.join(" ")));
    s
}

#[test]
fn graph_of_200_derivations() {
    let Some(tw) = Twins::with_conf(NixVersion::V2_8, &conf(true, false, "")) else { return };
    let file = nix_file(&tw, "graph", &graph_nix());
    let drvs = instantiate(&tw, &file, "all");
    assert_eq!(drvs.len(), 200);
    let outputs = outputs_of(&tw, &drvs);
    assert_eq!(outputs.len(), 210);

    // A third each through `nix build`, `nix-build` and `nix-store --realise`.
    let built = tw.both("nix", |_, c| {
        c.args(["build", "--no-link", "-f"]).arg(&file).arg("part1");
    });
    both_ok(&tw, "nix build part1", &built);
    let printed = tw.same_lines("nix-build -A part2", "nix-build", |_, c| {
        c.arg(&file).args(["-A", "part2", "--no-out-link"]);
    });
    assert!(printed.lines().count() >= 67, "one line per derivation:\n{printed}");
    let part3 = instantiate(&tw, &file, "part3");
    let printed = tw.same_lines("nix-store --realise part3", "nix-store", |side, c| {
        c.arg("--realise").args(part3.iter().map(|d| tw.path(side, d)));
    });
    assert!(printed.lines().count() >= 66, "one line per output:\n{printed}");

    // Everything is built, on both sides.
    for side in Side::BOTH {
        let missing: Vec<&String> = outputs.iter().filter(|o| !is_valid(&tw, side, o)).collect();
        assert!(missing.is_empty(), "outputs missing on {}'s side: {missing:?}", tw.daemon(side).name);
    }
    let valid = outputs.clone();
    let infos = tw.same_path_info("path-info of the graph's outputs", |side, c| {
        c.args(valid.iter().map(|o| tw.path(side, o)));
    });
    assert_eq!(infos.len(), valid.len());
    // Spot checks: a join refers to its inputs, a dev output to its out.
    let join = valid.iter().find(|o| o.ends_with("-join-150")).expect("join-150");
    let refs = infos[join]["references"].as_array().expect("references").len();
    assert!((2..=3).contains(&refs), "join-150 has {refs} references");
    let dev = valid.iter().find(|o| o.ends_with("-join-150-dev")).expect("join-150-dev");
    assert_eq!(infos[dev]["references"].as_array().unwrap().len(), 1);
    assert_eq!(read_path(&tw, Side::Theirs, dev).trim(), join);
    assert_eq!(tw.map.borrow().to_theirs_str(&read_path(&tw, Side::Ours, dev)).trim(), join);
}

// ---------------------------------------------------------------------------
// 2. Failures with --keep-going, and their logs.

/// `bad` and `bad2` fail; `after-bad` and `after-after` (through it) and
/// `mixed` depend on a failure; `ok-1` and `ok-2` build.
const FAILING_NIX: &str = r#"rec {
  ok1 = mk "ok-1" "echo ok-1 > $out" {};
  bad = mk "bad" "echo first line; echo second line >&2; echo third line; exit 3" {};
  afterBad = mk "after-bad" "read x < ${bad}; echo after > $out" {};
  afterAfter = mk "after-after" "read x < ${afterBad}; echo after-after > $out" {};
  bad2 = mk "bad2" "echo the only line; exit 1" {};
  ok2 = mk "ok-2" "read x < ${ok1}; echo ok-2 > $out" {};
  mixed = mk "mixed" "read x < ${ok2}; read y < ${bad2}; echo mixed > $out" {};
  top = [ afterAfter ok2 mixed ];
}"#;

/// The derivations (by name) that error messages say failed.
fn failed_names(errors: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in errors {
        for marker in ["builder for '", "dependencies of derivation '"] {
            if let Some(at) = e.find(marker) {
                let rest = &e[at + marker.len()..];
                let path = &rest[..rest.find('\'').expect("a closing quote")];
                let base = path.rsplit('/').next().unwrap();
                names.insert(base[33..].trim_end_matches(".drv").to_owned());
            }
        }
    }
    names
}

#[test]
fn failures_with_keep_going_and_their_logs() {
    let Some(tw) = Twins::with_conf(NixVersion::V2_8, &conf(true, false, "")) else { return };
    let file = nix_file(&tw, "failing", FAILING_NIX);
    let drvs = instantiate(&tw, &file, "top");
    let bad_drv = {
        let text = std::fs::read_to_string(tw.path(Side::Theirs, drvs.iter().find(|d| d.ends_with("-mixed.drv")).unwrap())).unwrap();
        drop(text);
        line(tw.same("nix-instantiate -A bad", "nix-instantiate", |_, c| {
            c.arg(&file).args(["-A", "bad"]);
        }))
    };
    let expected_failed: BTreeSet<String> =
        ["bad", "bad2", "after-bad", "after-after", "mixed"].iter().map(|s| s.to_string()).collect();

    // nix-build, then nix build (the failures are built again).
    for (tool, args) in [
        ("nix-build", vec![file.to_str().unwrap(), "-A", "top", "--keep-going", "--no-out-link"]),
        ("nix", vec!["build", "--keep-going", "--no-link", "-f", file.to_str().unwrap(), "top"]),
    ] {
        let outs = tw.both(tool, |_, c| {
            c.args(&args);
        });
        let errors = same_errors(&tw, &format!("{tool} --keep-going"), &outs);
        assert_eq!(failed_names(&errors), expected_failed, "{errors:#?}");
        let builder_error = errors.iter().find(|e| e.contains("builder for") && e.contains("-bad.drv")).unwrap();
        assert!(builder_error.contains("failed with exit code 3"), "{builder_error}");
        assert!(builder_error.contains("> second line"), "{builder_error}");
        for side in Side::BOTH {
            let outputs = outputs_of(&tw, &drvs);
            for o in &outputs {
                let ok = o.ends_with("-ok-2");
                assert_eq!(is_valid(&tw, side, o), ok, "{o} on {}'s side", tw.daemon(side).name);
            }
        }
    }

    // The failing build's log, as `nix log` and `nix-store --read-log` read
    // it (from the log dir: the daemon store is also a local FS store).
    let log = tw.same("nix log", "nix", |side, c| {
        c.args(["log", &tw.path(side, &bad_drv)]);
    });
    assert_eq!(log, "first line\nsecond line\nthird line\n");
    let read_log = tw.same("nix-store --read-log", "nix-store", |side, c| {
        c.args(["--read-log", &tw.path(side, &bad_drv)]);
    });
    assert_eq!(read_log, log);
    let base = tw.path(Side::Ours, &bad_drv).rsplit('/').next().unwrap().to_owned();
    let file = tw.ours.log_dir.join("drvs").join(&base[..2]).join(format!("{}.bz2", &base[2..]));
    assert!(file.exists(), "armitage's log of the failed build is at {}", file.display());
}

// ---------------------------------------------------------------------------
// 3. Fixed-output derivations.

fn sha256_hex(data: &str) -> String {
    store::hash::Algorithm::Sha256.digest(data.as_bytes()).to_base16()
}

#[test]
fn fixed_output_hash_mismatch_and_match() {
    let Some(tw) = Twins::with_conf(NixVersion::V2_8, &conf(true, false, "")) else { return };
    let body = format!(
        r#"{{
  right = mk "fixed-right" "echo fixed content > $out" {{ outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{}"; }};
  wrong = mk "fixed-wrong" "echo fixed content > $out" {{ outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{}"; }};
}}"#,
        sha256_hex("fixed content\n"),
        sha256_hex("other content\n")
    );
    let file = nix_file(&tw, "fixed", &body);
    let outs = tw.both("nix-build", |_, c| {
        c.arg(&file).args(["-A", "wrong", "--no-out-link"]);
    });
    let errors = same_errors(&tw, "nix-build of a fixed output with the wrong hash", &outs);
    let mismatch = errors.iter().find(|e| e.contains("hash mismatch in fixed-output derivation")).expect("a hash mismatch");
    let got = store::hash::Algorithm::Sha256.digest(b"fixed content\n").to_sri();
    let wanted = store::hash::Algorithm::Sha256.digest(b"other content\n").to_sri();
    assert!(mismatch.contains(&format!("specified: {wanted}")) && mismatch.contains(&format!("got:    {got}")), "{mismatch}");
    let wrong_out = outputs_of(&tw, &instantiate(&tw, &file, "wrong"));
    for side in Side::BOTH {
        assert!(!is_valid(&tw, side, &wrong_out[0]), "the declared path of the failed fixed output is not valid");
    }

    let path = line(tw.same("nix-build of a fixed output with the right hash", "nix-build", |_, c| {
        c.arg(&file).args(["-A", "right", "--no-out-link"]);
    }));
    assert_eq!(read_path(&tw, Side::Ours, &path), "fixed content\n");
    let infos = tw.same_path_info("path-info of the fixed output", |side, c| {
        c.arg(tw.path(side, &path));
    });
    assert_eq!(infos[&path]["ca"].as_str(), Some(format!("fixed:sha256:{}", store::hash::Algorithm::Sha256.digest(b"fixed content\n").to_nix32()).as_str()));
}

// ---------------------------------------------------------------------------
// 4. --rebuild.

#[test]
fn rebuild_checks_determinism() {
    let Some(tw) = Twins::with_conf(NixVersion::V2_8, &conf(true, false, "")) else { return };
    let file = nix_file(
        &tw,
        "rebuild",
        r#"{
  det = mk "det" "echo the same every time > $out" {};
  nondet = mk "nondet" "read u < /proc/sys/kernel/random/uuid; echo $u > $out" {};
}"#,
    );
    for attr in ["det", "nondet"] {
        let outs = tw.both("nix", |_, c| {
            c.args(["build", "--no-link", "-f"]).arg(&file).arg(attr);
        });
        both_ok(&tw, &format!("nix build {attr}"), &outs);
    }
    let outs = tw.both("nix", |_, c| {
        c.args(["build", "--rebuild", "--no-link", "-f"]).arg(&file).arg("det");
    });
    both_ok(&tw, "nix build --rebuild det", &outs);
    let outs = tw.both("nix", |_, c| {
        c.args(["build", "--rebuild", "--no-link", "-f"]).arg(&file).arg("nondet");
    });
    let errors = same_errors(&tw, "nix build --rebuild nondet", &outs);
    assert!(errors.iter().any(|e| e.contains("may not be deterministic: output '") && e.contains("-nondet' differs")), "{errors:#?}");
    // The output is still valid (and unchanged).
    let out = outputs_of(&tw, &instantiate(&tw, &file, "nondet"));
    for side in Side::BOTH {
        assert!(is_valid(&tw, side, &out[0]));
    }
    // nix-build --check says the same.
    let outs = tw.both("nix-build", |_, c| {
        c.arg(&file).args(["-A", "nondet", "--check", "--no-out-link"]);
    });
    same_errors(&tw, "nix-build --check nondet", &outs);
}

// ---------------------------------------------------------------------------
// 5. Build logs and activities.

/// A line of `--log-format internal-json` output, reduced to what must be
/// the same: the action and the activity or result type (ids differ).
fn json_event(l: &str) -> Option<String> {
    let json = l.strip_prefix("@nix ")?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let action = v["action"].as_str()?;
    Some(match action {
        "start" => format!("start {}", v["type"]),
        "result" => format!("result {}", v["type"]),
        "stop" => "stop".to_owned(),
        "msg" => format!("msg {}", v["level"]),
        other => other.to_owned(),
    })
}

/// The events of a client's stderr, consecutive duplicate progress
/// results (type 105) collapsed.
fn json_events(stderr: &str) -> Vec<String> {
    let mut events: Vec<String> = Vec::new();
    for e in stderr.lines().filter_map(json_event) {
        if e == "result 105" && events.last() == Some(&e) {
            continue;
        }
        events.push(e);
    }
    events
}

#[test]
fn build_logs_and_activities() {
    let Some(tw) = Twins::with_conf(NixVersion::V2_8, &conf(true, false, "")) else { return };
    let file = nix_file(
        &tw,
        "logs",
        r#"rec {
  first = mk "talker" "echo hello from the builder; echo to stderr >&2; echo a > $out" {};
  second = mk "listener" "read x < ${first}; echo got $x; echo b > $out" {};
  third = mk "closer" "read x < ${second}; echo closing; echo c > $out" {};
}"#,
    );
    let outs = tw.both("nix", |_, c| {
        c.args(["build", "-L", "--no-link", "-f"]).arg(&file).arg("first");
    });
    both_ok(&tw, "nix build -L", &outs);
    for (out, side) in outs.iter().zip(Side::BOTH) {
        let err = strip_ansi(&text(&out.stderr));
        for l in ["talker> hello from the builder", "talker> to stderr"] {
            assert!(err.lines().any(|x| x == l), "{}: no line {l:?} in\n{err}", tw.daemon(side).name);
        }
    }
    // A chain of two builds (one after the other: a fixed order).
    let outs = tw.both("nix", |_, c| {
        c.args(["build", "--no-link", "--log-format", "internal-json", "-v", "-f"]).arg(&file).arg("third");
    });
    both_ok(&tw, "nix build --log-format internal-json", &outs);
    let [o, t] = [json_events(&text(&outs[0].stderr)), json_events(&text(&outs[1].stderr))];
    assert_eq!(o, t, "activity and result types: armitage's (left) differ from {}'s:\n{}\n---\n{}", tw.cppnix.name, text(&outs[0].stderr), text(&outs[1].stderr));
    assert_eq!(o.iter().filter(|e| *e == "start 105").count(), 2, "two builds: {o:#?}");
    let lines = |s: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.strip_prefix("@nix ")?).ok())
            .filter(|v| v["action"] == "result" && v["type"] == 101)
            .map(|v| v["fields"][0].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(lines(&text(&outs[0].stderr)), ["got a", "closing"]);
    assert_eq!(lines(&text(&outs[0].stderr)), lines(&text(&outs[1].stderr)));
}
