//! Builds through armitage's daemon with stock Nix 2.8 clients, side by
//! side with CppNix's nix-daemon 2.8 (each on a store of its own, see
//! [`compat_tests::Twins`]): the same outputs, path infos, errors, logs and
//! activities; interruption, concurrency, time limits, repair and the
//! sandbox's walls. The tests of errors and activities also run with Nix
//! 2.26 clients against armitage and nix-daemon 2.26.
//!
//! Legitimate differences from CppNix are asserted as armitage's behaviour
//! and explained where they are: the order of `nix build`'s results with
//! nix-daemon 2.8, the message of a non-fixed `builtin:fetchurl`, and how
//! often progress is reported.
//!
//! Builders are `/bin/sh` (dash here) with nothing but its builtins: the
//! sandbox holds `sandbox-paths` (the shell and the libraries it needs) and
//! the inputs only, and `PATH` is `/path-not-set`.
//!
//! Build users: both daemons kill every process of a build user once a
//! build is done, so two tests using them at once would kill each other's
//! builders. Tests using `build-users-group = nixbld` have names ending in
//! `_with_build_users` and run one at a time (the `build-users` test group
//! of .config/nextest.toml, and [`build_users_lock`] under `cargo test`); the
//! others set `build-users-group =` (builds run as root).

use compat_tests::corrupt;
use compat_tests::users::build_users_lock;
use compat_tests::{Side, Twins, error_blocks, nix_verify, strip_ansi, text};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::{NixVersion, line, output, write_file};

/// What the sandbox needs for `/bin/sh` (only what exists on this
/// machine), symlinks resolved (`/bin/sh=/usr/bin/dash`): CppNix 2.26 puts
/// a symlink in the sandbox as a symlink, whose target would be missing.
fn sandbox_paths() -> String {
    ["/bin/sh", "/lib", "/lib64", "/usr/lib", "/usr/lib64"]
        .iter()
        .filter_map(|p| {
            let real = std::fs::canonicalize(p).ok()?;
            Some(if real == Path::new(p) { p.to_string() } else { format!("{p}={}", real.display()) })
        })
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
/// (`preferLocalBuild`: nix-daemon 2.26 offers other builds to its build
/// hook first, which cannot run here: its binaries are started through
/// their own loader.)
const PRELUDE: &str = r#"
let
  mk = name: script: extra: derivation ({
    inherit name;
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" script ];
    preferLocalBuild = true;
  } // extra);
in
"#;

/// `body` (an expression that may use `mk`) after the prelude, as
/// `<name>.nix` ([`Twins::nix_file`]).
fn nix_file(tw: &Twins, name: &str, body: &str) -> PathBuf {
    tw.nix_file(name, &format!("{PRELUDE}{body}\n"))
}

/// `error: build of 'a', 'b' failed` lists the paths in path order, so in
/// hash order, which differs between the stores: sorted after mapping.
fn sort_build_of(block: &str) -> String {
    match block.strip_prefix("error: build of ").and_then(|r| r.strip_suffix(" failed")) {
        Some(list) => {
            let mut items: Vec<&str> = list.split(", ").collect();
            items.sort();
            format!("error: build of {} failed", items.join(", "))
        }
        None => block.to_owned(),
    }
}

/// Both sides' outputs must have failed; their error messages (ours mapped
/// into theirs' terms) must be the same multiset, and the exit codes the
/// same. Returns theirs' messages.
fn same_errors(tw: &Twins, what: &str, outs: &[std::process::Output; 2]) -> Vec<String> {
    let [ours, theirs] = mapped_errors(tw, what, outs);
    assert_errors_eq(tw, what, outs, &ours, &theirs);
    theirs
}

/// Both sides' error messages (ours mapped into theirs' terms), in order;
/// both must have failed.
fn mapped_errors(tw: &Twins, what: &str, [o, t]: &[std::process::Output; 2]) -> [Vec<String>; 2] {
    let (oe, te) = (text(&o.stderr), text(&t.stderr));
    assert!(!o.status.success(), "{what}: armitage's side succeeded:\n{oe}");
    assert!(!t.status.success(), "{what}: {}'s side succeeded:\n{te}", tw.cppnix.name);
    assert_eq!(o.status.code(), t.status.code(), "{what}: exit codes (armitage's first)");
    tw.map.borrow_mut().learn(oe.as_bytes(), te.as_bytes());
    let ours: Vec<String> =
        error_blocks(&tw.map.borrow().to_theirs_str(&oe)).iter().map(|b| sort_build_of(b)).collect();
    let theirs: Vec<String> = error_blocks(&te).iter().map(|b| sort_build_of(b)).collect();
    assert!(!theirs.is_empty(), "{what}: no error from {}:\n{te}", tw.cppnix.name);
    [ours, theirs]
}

/// `ours` and `theirs` as multisets (the order of errors of parallel builds
/// varies).
fn assert_errors_eq(tw: &Twins, what: &str, [o, t]: &[std::process::Output; 2], ours: &[String], theirs: &[String]) {
    let (mut a, mut b) = (ours.to_vec(), theirs.to_vec());
    a.sort();
    b.sort();
    assert_eq!(
        a,
        b,
        "{what}: armitage's errors (mapped, left) differ from {}'s\n--- armitage's stderr:\n{}\n--- theirs:\n{}\n--- armitage's daemon log:\n{}",
        tw.cppnix.name,
        text(&o.stderr),
        text(&t.stderr),
        tw.armitage.log()
    );
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

/// Both stores hold the same valid paths (mapped).
fn same_valid_paths(tw: &Twins, what: &str) {
    tw.same_lines(&format!("{what}: nix path-info --all"), "nix", |_, c| {
        c.args(["path-info", "--all"]);
    });
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
/// needing earlier ones); `all` is every node. Each builder spins a little
/// between a `+ <store>` and a `- <store>` line appended to
/// `/shared/events` (a `sandbox-paths` directory), which shows how many
/// ran at once.
const BEGIN: &str = "echo + $NIX_STORE >> /shared/events";
const END: &str = "i=0; while [ $i -lt 10000 ]; do i=$((i+1)); done; echo - $NIX_STORE >> /shared/events";
/// The first ten leaves spin longer (a tenth of a second or more), so that
/// a second build slot in use shows, however long a daemon takes between
/// builds.
const LONG_END: &str = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo - $NIX_STORE >> /shared/events";

fn graph_nix() -> String {
    let mut s = String::from("rec {\n");
    let mut rng = compat_tests::Rng::new(42);
    for i in 0..100 {
        let end = if i < 10 { LONG_END } else { END };
        s.push_str(&format!("  n{i} = mk \"leaf-{i}\" \"{BEGIN}; echo leaf-{i} > $out; {end}\" {{}};\n"));
    }
    for i in 100..200u64 {
        let mut deps = BTreeSet::new();
        let n = 2 + rng.below(2);
        while deps.len() < n as usize {
            // Mostly recent nodes, so that the graph is deep.
            let d = if rng.below(3) == 0 { rng.below(i) } else { i - 1 - rng.below(10.min(i)) };
            deps.insert(d);
        }
        let mut script = format!("{BEGIN}; ");
        for d in &deps {
            script.push_str(&format!(
                "read x < ${{n{d}}}; case $x in leaf-{d}|join-{d}) ;; *) echo bad input {d}: $x; exit 1;; esac; "
            ));
        }
        script.push_str(&format!("echo join-{i} > $out; "));
        for d in &deps {
            script.push_str(&format!("echo ${{n{d}}} >> $out; "));
        }
        script.push_str(END);
        let extra = if i % 10 == 0 {
            script.push_str("; echo $out > $dev");
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

/// The most builders running at once in each store, from `/shared/events`.
fn most_at_once(events: &str) -> BTreeMap<String, i32> {
    let mut running: BTreeMap<String, i32> = BTreeMap::new();
    let mut most: BTreeMap<String, i32> = BTreeMap::new();
    for l in events.lines() {
        let (sign, store) = l.split_once(' ').expect("a sign and a store");
        let n = running.entry(store.to_owned()).or_default();
        *n += if sign == "+" { 1 } else { -1 };
        let m = most.entry(store.to_owned()).or_default();
        *m = (*m).max(*n);
    }
    most
}

#[test]
fn graph_of_200_derivations_with_nix_2_8() {
    graph_of_200_derivations(NixVersion::V2_8);
}

#[test]
fn graph_of_200_derivations_with_nix_2_26() {
    graph_of_200_derivations(NixVersion::V2_26);
}

fn graph_of_200_derivations(version: NixVersion) {
    let shared = Shared::new(&format!("graph-{version:?}"));
    shared.set("events", "");
    let extra = format!("extra-sandbox-paths = /shared={}", shared.path().display());
    let Some(tw) = Twins::with_conf(version, &conf(true, false, &extra)) else { return };
    let file = nix_file(&tw, "graph", &graph_nix());
    let drvs = instantiate(&tw, &file, "all");
    assert_eq!(drvs.len(), 200);
    let outputs = outputs_of(&tw, &drvs);
    assert_eq!(outputs.len(), 210);

    // A third each through `nix build`, `nix-build` and `nix-store --realise`.
    let built = tw.both("nix", |_, c| {
        c.args(["build", "--no-link", "-f"]).arg(&file).arg("part1");
    });
    tw.both_succeeded("nix build part1", &built);
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

    // max-jobs = 2: two builds at a time, never more.
    let events = std::fs::read_to_string(shared.path().join("events")).unwrap();
    assert_eq!(events.lines().count(), 2 * 2 * 200, "each builder ran once on each side");
    let most = most_at_once(&events);
    for side in Side::BOTH {
        let n = most.get(&tw.store(side).store_dir).copied().unwrap_or_default();
        assert_eq!(n, 2, "{}: at most {n} builds at once", tw.daemon(side).name);
    }
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
fn failures_with_keep_going_and_their_logs_with_nix_2_8() {
    failures_with_keep_going_and_their_logs(NixVersion::V2_8);
}

#[test]
fn failures_with_keep_going_and_their_logs_with_nix_2_26() {
    failures_with_keep_going_and_their_logs(NixVersion::V2_26);
}

fn failures_with_keep_going_and_their_logs(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, &conf(true, false, "")) else { return };
    let file = nix_file(&tw, "failing", FAILING_NIX);
    let drvs = instantiate(&tw, &file, "top");
    let bad_drv = instantiate(&tw, &file, "bad").remove(0);
    let names = |n: &[&str]| -> BTreeSet<String> { n.iter().map(|s| s.to_string()).collect() };

    // nix-build (BuildPaths) reports every failed target.
    let outs = tw.both("nix-build", |_, c| {
        c.arg(&file).args(["-A", "top", "--keep-going", "--no-out-link"]);
    });
    let errors = same_errors(&tw, "nix-build --keep-going", &outs);
    assert_eq!(failed_names(&errors), names(&["bad", "bad2", "after-bad", "after-after", "mixed"]), "{errors:#?}");
    let builder_error = errors.iter().find(|e| e.contains("builder for") && e.contains("-bad.drv")).unwrap();
    assert!(builder_error.contains("failed with exit code 3"), "{builder_error}");
    assert!(builder_error.contains("> second line"), "{builder_error}");
    let only_ok2_valid = |what: &str| {
        for side in Side::BOTH {
            for o in outputs_of(&tw, &drvs) {
                assert_eq!(
                    is_valid(&tw, side, &o),
                    o.ends_with("-ok-2"),
                    "{what}: {o} on {}'s side",
                    tw.daemon(side).name
                );
            }
        }
    };
    only_ok2_valid("nix-build --keep-going");

    // `nix build` (BuildPathsWithResults): Nix 2.8 throws the error of the
    // first failed result, which is not logged otherwise. Legitimate
    // difference: nix-daemon 2.8 returns the results ordered by its goals
    // (by derivation name), armitage in the order asked for (as nix-daemon
    // 2.26 does), which is by path here, so by hash: the last error is
    // either failed target's. The others are the same. Nix 2.26 reports
    // every failed result itself.
    let outs = tw.both("nix", |_, c| {
        c.args(["build", "--keep-going", "--no-link", "-f"]).arg(&file).arg("top");
    });
    let [mut ours, mut theirs] = mapped_errors(&tw, "nix build --keep-going", &outs);
    if version == NixVersion::V2_8 {
        let (our_last, their_last) = (ours.pop().unwrap(), theirs.pop().unwrap());
        assert!(their_last.ends_with("-after-after.drv' failed to build"), "{their_last}");
        assert!(
            our_last.ends_with("-after-after.drv' failed to build")
                || our_last.ends_with("-mixed.drv' failed to build"),
            "{our_last}"
        );
        assert_eq!(failed_names(&theirs), names(&["bad", "bad2", "after-bad"]), "{theirs:#?}");
    } else {
        assert_eq!(failed_names(&theirs), names(&["bad", "bad2", "after-bad", "after-after", "mixed"]), "{theirs:#?}");
    }
    assert_errors_eq(&tw, "nix build --keep-going", &outs, &ours, &theirs);
    only_ok2_valid("nix build --keep-going");
    same_valid_paths(&tw, "after the failed builds");

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
fn fixed_output_hash_mismatch_and_match_with_nix_2_8() {
    fixed_output_hash_mismatch_and_match(NixVersion::V2_8);
}

#[test]
fn fixed_output_hash_mismatch_and_match_with_nix_2_26() {
    fixed_output_hash_mismatch_and_match(NixVersion::V2_26);
}

fn fixed_output_hash_mismatch_and_match(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, &conf(true, false, "")) else { return };
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
    let mismatch =
        errors.iter().find(|e| e.contains("hash mismatch in fixed-output derivation")).expect("a hash mismatch");
    let got = store::hash::Algorithm::Sha256.digest(b"fixed content\n").to_sri();
    let wanted = store::hash::Algorithm::Sha256.digest(b"other content\n").to_sri();
    assert!(
        mismatch.contains(&format!("specified: {wanted}")) && mismatch.contains(&format!("got:    {got}")),
        "{mismatch}"
    );
    let wrong_out = outputs_of(&tw, &instantiate(&tw, &file, "wrong"));
    for side in Side::BOTH {
        assert!(!is_valid(&tw, side, &wrong_out[0]), "the declared path of the failed fixed output is not valid");
    }
    // (Both register what was built under the path of its real hash.)
    same_valid_paths(&tw, "after the hash mismatch");

    let path = line(tw.same("nix-build of a fixed output with the right hash", "nix-build", |_, c| {
        c.arg(&file).args(["-A", "right", "--no-out-link"]);
    }));
    assert_eq!(read_path(&tw, Side::Ours, &path), "fixed content\n");
    let infos = tw.same_path_info("path-info of the fixed output", |side, c| {
        c.arg(tw.path(side, &path));
    });
    assert_eq!(
        infos[&path]["ca"].as_str(),
        Some(format!("fixed:sha256:{}", store::hash::Algorithm::Sha256.digest(b"fixed content\n").to_nix32()).as_str())
    );
}

// ---------------------------------------------------------------------------
// 4. --rebuild.

#[test]
fn rebuild_checks_determinism_with_nix_2_8() {
    rebuild_checks_determinism(NixVersion::V2_8);
}

#[test]
fn rebuild_checks_determinism_with_nix_2_26() {
    rebuild_checks_determinism(NixVersion::V2_26);
}

fn rebuild_checks_determinism(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, &conf(true, false, "")) else { return };
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
        tw.both_succeeded(&format!("nix build {attr}"), &outs);
    }
    let outs = tw.both("nix", |_, c| {
        c.args(["build", "--rebuild", "--no-link", "-f"]).arg(&file).arg("det");
    });
    tw.both_succeeded("nix build --rebuild det", &outs);
    let outs = tw.both("nix", |_, c| {
        c.args(["build", "--rebuild", "--no-link", "-f"]).arg(&file).arg("nondet");
    });
    let errors = same_errors(&tw, "nix build --rebuild nondet", &outs);
    assert!(
        errors.iter().any(|e| e.contains("may not be deterministic: output '") && e.contains("-nondet' differs")),
        "{errors:#?}"
    );
    // The output is still valid (and unchanged).
    let out = outputs_of(&tw, &instantiate(&tw, &file, "nondet"));
    for side in Side::BOTH {
        assert!(is_valid(&tw, side, &out[0]));
    }
    same_valid_paths(&tw, "after the failed check");
    // nix-build --check says the same.
    let outs = tw.both("nix-build", |_, c| {
        c.arg(&file).args(["-A", "nondet", "--check", "--no-out-link"]);
    });
    same_errors(&tw, "nix-build --check nondet", &outs);
    // With --keep-failed, the differing output is kept beside the valid
    // one, as `<path>.check`, and named in the message.
    let outs = tw.both("nix-build", |_, c| {
        c.arg(&file).args(["-A", "nondet", "--check", "--keep-failed", "--no-out-link"]);
    });
    let errors = same_errors(&tw, "nix-build --check --keep-failed nondet", &outs);
    assert!(errors.iter().any(|e| e.ends_with(&format!("differs from '{}.check'", out[0]))), "{errors:#?}");
    for side in Side::BOTH {
        let check = format!("{}.check", tw.path(side, &out[0]));
        assert!(Path::new(&check).exists(), "{}: {check} is kept", tw.daemon(side).name);
        assert_ne!(std::fs::read(&check).unwrap(), std::fs::read(tw.path(side, &out[0])).unwrap());
    }
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

/// The events of a client's stderr, with runs of progress results
/// collapsed into one `progress`: CppNix's worker sends its four counters
/// (builds' and copies' progress, 105, and the expected transfer and copy
/// sizes, 106) on every change of any, armitage only those that changed.
fn json_events(stderr: &str) -> Vec<String> {
    let mut events: Vec<String> = Vec::new();
    for e in stderr.lines().filter_map(json_event) {
        let e = if e == "result 105" || e == "result 106" { "progress".to_owned() } else { e };
        if e == "progress" && events.last() == Some(&e) {
            continue;
        }
        events.push(e);
    }
    events
}

#[test]
fn build_logs_and_activities_with_nix_2_8() {
    build_logs_and_activities(NixVersion::V2_8);
}

#[test]
fn build_logs_and_activities_with_nix_2_26() {
    build_logs_and_activities(NixVersion::V2_26);
}

fn build_logs_and_activities(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, &conf(true, false, "")) else { return };
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
    tw.both_succeeded("nix build -L", &outs);
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
    tw.both_succeeded("nix build --log-format internal-json", &outs);
    let [o, t] = [json_events(&text(&outs[0].stderr)), json_events(&text(&outs[1].stderr))];
    assert_eq!(
        o,
        t,
        "activity and result types: armitage's (left) differ from {}'s:\n{}\n---\n{}",
        tw.cppnix.name,
        text(&outs[0].stderr),
        text(&outs[1].stderr)
    );
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

// ---------------------------------------------------------------------------
// Processes and build directories, for the interruption and time-limit tests.

/// The pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The uids of the members of the `nixbld` group.
fn build_user_uids() -> BTreeSet<u32> {
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let members: BTreeSet<String> = group
        .lines()
        .find(|l| l.starts_with("nixbld:"))
        .and_then(|l| l.rsplit(':').next())
        .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && members.contains(f[0])).then(|| f[2].parse().ok()).flatten()
        })
        .collect()
}

/// The pids of the processes running as one of `uids`.
fn processes_of(uids: &BTreeSet<u32>) -> Vec<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Ok(meta) = std::fs::metadata(entry.path())
            && uids.contains(&meta.uid())
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// Waits (up to `secs`) until `cond` holds.
fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The build directories (`nix-build-<name>-*`) left in the temp dirs the
/// daemons use.
fn build_dirs(name: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec![PathBuf::from("/tmp")];
    if let Some(t) = std::env::var_os("TMPDIR") {
        dirs.push(PathBuf::from(t));
    }
    let mut found = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&format!("nix-build-{name}")) {
                found.push(e.path());
            }
        }
    }
    found
}

/// A directory outside both stores that both sandboxes get (a
/// `sandbox-paths` entry), for files the tests change between builds.
/// Removed when dropped.
struct Shared(PathBuf);

impl Shared {
    fn new(name: &str) -> Shared {
        let dir = testkit::scratch_dir().join(format!("shared-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the shared dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Shared(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn set(&self, name: &str, contents: &str) {
        write_file(self.0.join(name), contents);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// 6. Interrupting the client.

/// A builder that hangs (reading its terminal, which nobody writes to)
/// when `/control/mode` says so, with a child process that hangs too.
fn hanging_nix(marker: &str) -> String {
    format!(
        r#"{{
  hang = mk "{marker}" "read mode < /control/mode; echo started {marker}; if [ $mode = hang ]; then (read y <&2) & read x <&2; fi; echo done > $out" {{}};
}}"#
    )
}

#[test]
fn interrupted_client_with_build_users() {
    let _serial = build_users_lock();
    let shared = Shared::new("interrupt");
    shared.set("mode", "hang\n");
    let extra = format!("extra-sandbox-paths = /control={}", shared.path().display());
    let Some(tw) = Twins::with_conf(NixVersion::V2_8, &conf(true, true, &extra)) else { return };
    let marker = format!("sigint-{}", std::process::id());
    let file = nix_file(&tw, "hang", &hanging_nix(&marker));
    let drv = instantiate(&tw, &file, "hang").remove(0);
    let out = outputs_of(&tw, std::slice::from_ref(&drv)).remove(0);
    let users = build_user_uids();
    assert!(!users.is_empty(), "the nixbld group has members");
    for side in Side::BOTH {
        let name = &tw.daemon(side).name;
        shared.set("mode", "hang\n");
        let mut client = tw.client(side, "nix-build");
        client.arg(&file).args(["-A", "hang", "--no-out-link"]);
        client.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let child = client.spawn().expect("start nix-build");
        // Both the builder and its child hang.
        let started = wait_until(30, || processes_with(&format!("started {marker}")).len() >= 2);
        assert!(started, "{name}: the builder did not start");
        assert!(!build_dirs(&marker).is_empty(), "{name}: no build directory while building");
        let chroot = format!("{}.chroot", tw.path(side, &drv));
        assert!(Path::new(&chroot).exists(), "{name}: no chroot while building");
        let running_as: Vec<(u32, String)> = processes_of(&users);
        assert!(
            running_as.iter().any(|(_, c)| c.contains(&marker)),
            "{name}: the builder runs as a build user: {running_as:?}"
        );
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT the client");
        let result = child.wait_with_output().expect("wait for the client");
        assert!(!result.status.success(), "{name}: the interrupted client succeeded");
        // No process of the build survives, nothing is registered, the
        // build directory and the chroot are gone.
        let gone = wait_until(20, || processes_with(&marker).is_empty() && processes_of(&users).is_empty());
        assert!(
            gone,
            "{name}: processes of the build survive: {:?} (build users': {:?})",
            processes_with(&marker),
            processes_of(&users)
        );
        assert!(!is_valid(&tw, side, &out), "{name}: the interrupted build's output is valid");
        let left = wait_until(10, || build_dirs(&marker).is_empty());
        assert!(left, "{name}: build directories left: {:?}", build_dirs(&marker));
        assert!(wait_until(10, || !Path::new(&chroot).exists()), "{name}: {chroot} is left");
        // Again, with a builder that finishes.
        shared.set("mode", "finish\n");
        let built = output(tw.client(side, "nix-build").arg(&file).args(["-A", "hang", "--no-out-link"]));
        assert!(built.status.success(), "{name}: the rerun failed:\n{}", text(&built.stderr));
        assert_eq!(line(text(&built.stdout)), tw.path(side, &out));
        assert_eq!(read_path(&tw, side, &out), "done\n");
    }
}

// ---------------------------------------------------------------------------
// 7. Two clients, one graph.

#[test]
fn two_clients_build_each_derivation_once() {
    let Some(nix) = testkit::Nix::find(NixVersion::V2_8) else { return };
    let store = testkit::TestStore::with_conf(&conf(false, false, ""));
    let counter_dir = store.work_dir("counter");
    let counter = counter_dir.join("built");
    // 40 nodes; each spins a little so that the two clients overlap.
    let mut s = String::from("rec {\n");
    let spin = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done";
    for i in 0..40 {
        let deps: Vec<String> = if i < 10 { vec![] } else { vec![format!("n{}", i - 10), format!("n{}", i / 2)] };
        let reads: String = deps.iter().map(|d| format!("read x < ${{{d}}}; ")).collect();
        s.push_str(&format!(
            "  n{i} = mk \"node-{i}\" \"{reads}{spin}; echo node-{i} >> {}; echo node-{i} > $out\" {{}};\n",
            counter.display()
        ));
    }
    let all: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
    s.push_str(&format!("  all = [ {} ];\n}}", all.join(" ")));
    let file = store.work_dir("nix").join("graph.nix");
    write_file(&file, format!("{PRELUDE}{s}\n"));
    let daemon = testkit::Daemon::armitage(&store);
    let clients: Vec<std::process::Child> = (0..2)
        .map(|_| {
            daemon
                .client(&store, &nix, "nix-build")
                .arg(&file)
                .args(["-A", "all", "--no-out-link"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a client")
        })
        .collect();
    let outs: Vec<std::process::Output> = clients.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outs {
        assert!(o.status.success(), "a client failed:\n{}\n--- daemon log:\n{}", text(&o.stderr), daemon.log());
    }
    assert_eq!(outs[0].stdout, outs[1].stdout, "both clients print the same outputs");
    assert_eq!(text(&outs[0].stdout).lines().count(), 40);
    let built = std::fs::read_to_string(&counter).expect("the counter file");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in built.lines() {
        *counts.entry(l).or_default() += 1;
    }
    assert_eq!(counts.len(), 40, "every derivation was built: {counts:?}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "derivations built more than once: {twice:?}");
}

// ---------------------------------------------------------------------------
// 8. Time limits.

#[test]
fn timeout_and_max_silent_time() {
    let Some(tw) = Twins::with_conf(NixVersion::V2_8, &conf(true, false, "")) else { return };
    let marker = format!("limits-{}", std::process::id());
    let file = nix_file(
        &tw,
        "limits",
        &format!(
            r#"{{
  silent = mk "silent-{marker}" "echo going quiet; read x <&2; echo never > $out" {{}};
  chatty = mk "chatty-{marker}" "echo going quiet; read x <&2; echo never > $out" {{ chatty = "1"; }};
  split = mk "split-{marker}" "echo going quiet; read x <&2; echo never > $out" {{ outputs = [ "out" "dev" ]; }};
}}"#
        ),
    );
    // nix-build wants `out`; nix-store --realise wants every output, which
    // CppNix writes `*`.
    let split_drv = instantiate(&tw, &file, "split").remove(0);
    for (attr, flag, what, realise) in [
        ("silent", "--max-silent-time", "seconds of silence", false),
        ("chatty", "--timeout", "seconds", false),
        ("split", "--max-silent-time", "seconds of silence", false),
        ("split", "--timeout", "seconds", true),
    ] {
        let outs = if realise {
            tw.both("nix-store", |side, c| {
                c.args(["--realise", &tw.path(side, &split_drv), flag, "1"]);
            })
        } else {
            tw.both("nix-build", |_, c| {
                c.arg(&file).args(["-A", attr, flag, "1", "--no-out-link"]);
            })
        };
        let errors = same_errors(
            &tw,
            &format!("{} {attr} {flag} 1", if realise { "nix-store --realise" } else { "nix-build" }),
            &outs,
        );
        let timed_out = errors.iter().find(|e| e.contains("timed out after")).expect("a time-out error");
        assert!(timed_out.ends_with(&format!("from .drv file timed out after 1 {what}")), "{timed_out}");
        assert!(
            wait_until(10, || processes_with(&marker).is_empty()),
            "processes of the timed-out builds survive: {:?}",
            processes_with(&marker)
        );
        assert!(wait_until(10, || build_dirs(&format!("{attr}-{marker}")).is_empty()), "build directories left");
    }
}

// ---------------------------------------------------------------------------
// 9. --repair.

#[test]
fn repair_restores_corrupted_outputs() {
    let Some(tw) = Twins::with_conf(NixVersion::V2_8, &conf(true, false, "")) else { return };
    let file = nix_file(
        &tw,
        "repair",
        r#"rec {
  dep = mk "repair-dep" "echo dependency > $out" {};
  top = mk "repair-top" "read x < ${dep}; echo ${dep} > $out" {};
}"#,
    );
    let top = line(tw.same("nix-build -A top", "nix-build", |_, c| {
        c.arg(&file).args(["-A", "top", "--no-out-link"]);
    }));
    let drvs = instantiate(&tw, &file, "top");
    let dep = outputs_of(&tw, &instantiate(&tw, &file, "dep")).remove(0);
    let top_text = read_path(&tw, Side::Theirs, &top);

    // A corrupted input, repaired through the top derivation.
    for side in Side::BOTH {
        corrupt(&tw.path(side, &dep), "corrupted\n");
        let (ok, err) = nix_verify(tw.store(side), &tw.nix);
        assert!(!ok, "{}: verify sees the corruption: {err}", tw.daemon(side).name);
    }
    let outs = tw.both("nix-store", |side, c| {
        c.args(["--realise", "--repair", &tw.path(side, &drvs[0])]);
    });
    tw.both_succeeded("nix-store --realise --repair", &outs);
    for side in Side::BOTH {
        assert_eq!(read_path(&tw, side, &dep), "dependency\n", "{}", tw.daemon(side).name);
        let (ok, err) = nix_verify(tw.store(side), &tw.nix);
        assert!(ok, "{}: verify after the repair: {err}", tw.daemon(side).name);
    }

    // A corrupted output, repaired by nix-build --repair.
    for side in Side::BOTH {
        corrupt(&tw.path(side, &top), "corrupted as well\n");
    }
    let again = line(tw.same("nix-build --repair", "nix-build", |_, c| {
        c.arg(&file).args(["-A", "top", "--repair", "--no-out-link"]);
    }));
    assert_eq!(again, top);
    for side in Side::BOTH {
        assert_eq!(tw.map.borrow().to_theirs_str(&read_path(&tw, side, &top)), top_text, "{}", tw.daemon(side).name);
        let (ok, err) = nix_verify(tw.store(side), &tw.nix);
        assert!(ok, "{}: verify after the second repair: {err}", tw.daemon(side).name);
    }
    tw.same_path_info("path-info after the repairs", |side, c| {
        c.args([tw.path(side, &top), tw.path(side, &dep)]);
    });
    same_valid_paths(&tw, "after the repairs");
}

// ---------------------------------------------------------------------------
// 10. The sandbox's walls.

/// A loopback HTTP server answering every GET with `body`, recording the
/// request paths.
struct Server {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(body: &'static str) -> Server {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        // Serves until the test process ends.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                seen.lock().unwrap().push(request.split_whitespace().nth(1).unwrap_or_default().to_owned());
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Server { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Probes of what a sandboxed builder can see and do; each prints one line
/// into `$out` (`yes`/`no` for attempts). `@SECRET@` is a host file, `@MARK@`
/// names the files escapes would leave on the host.
const PROBES: &str = r#"
try() { if eval "$2" 2>/dev/null; then echo "$1: yes"; else echo "$1: no"; fi; }
try 'write /tmp' 'echo x > /tmp/escape-@MARK@'
try 'write the store dir' 'echo x > $NIX_STORE/escape-@MARK@'
try 'append to an input' 'echo x >> @DEP@'
try 'write /' 'echo x > /escape-@MARK@'
try 'read a host file' 'read s < @SECRET@'
try 'see /root' '[ -e /root ]'
try 'see /home' '[ -e /home ]'
try 'see /usr/bin' '[ -e /usr/bin ]'
try 'see /var/lib' '[ -e /var/lib ]'
try 'see /etc/shadow' '[ -e /etc/shadow ]'
for p in /proc/[0-9]*; do echo "process $p"; done
while read k v; do case $k in Uid:|Gid:|Groups:) echo $k $v;; esac; done < /proc/self/status
while read l; do case $l in *:*) echo "interface ${l%%:*}";; esac; done < /proc/net/dev
read h < /proc/sys/kernel/hostname; echo "hostname $h"
for f in /dev/* /etc/*; do echo "file $f"; done
"#;

#[test]
fn sandbox_walls_with_build_users() {
    let _serial = build_users_lock();
    let shared = Shared::new("walls");
    shared.set("secret", "the host's secret\n");
    let server = Server::start("fetched over loopback\n");
    let mark = format!("walls-{}", std::process::id());
    // CppNix's walls, side by side: armitage's fixed-output builds keep
    // the host's network as CppNix's do (`network = host`). Its default,
    // a namespace whose only way out is the witness proxy, is tested in
    // the continuity tests (fetchers.rs).
    let Some(tw) = Twins::with_confs(NixVersion::V2_8, &conf(true, true, ""), "[witness]\nnetwork = \"host\"\n") else {
        return;
    };
    let probes = PROBES
        .replace("@MARK@", &mark)
        .replace("@SECRET@", &shared.path().join("secret").display().to_string())
        .replace("${l", "''${l")
        .replace("@DEP@", "${dep}");
    let fetched = "fetched over loopback\n";
    let body = format!(
        r#"rec {{
  dep = mk "walls-dep" "echo an input > $out" {{}};
  probe = mk "walls-probe" ''{probes}
    echo done > $out'' {{}};
  hostNetwork = mk "walls-fod-network" "n=private; while read l; do case $l in *:*) case \${{l%%:*}} in lo) ;; *) n=host;; esac;; esac; done < /proc/net/dev; echo $n > $out" {{
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{}"; }};
  fetched = derivation {{
    name = "walls-fetched"; system = "builtin"; builder = "builtin:fetchurl";
    url = "http://127.0.0.1:{port}/fod";
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{}";
  }};
  fetchedNonFixed = derivation {{
    name = "walls-fetched-non-fixed"; system = "builtin"; builder = "builtin:fetchurl";
    url = "http://127.0.0.1:{port}/non-fixed";
    outputHashMode = "flat";
  }};
}}"#,
        sha256_hex("host\n"),
        sha256_hex(fetched),
        port = server.port,
    );
    let file = nix_file(&tw, "walls", &body);
    // The probes write their findings to stdout, so into the log.
    let outs = tw.both("nix-build", |_, c| {
        c.arg(&file).args(["-A", "probe", "--no-out-link"]);
    });
    tw.both_succeeded("nix-build of the probes", &outs);
    let drv = instantiate(&tw, &file, "probe").remove(0);
    let log = tw.same("the probes' log", "nix-store", |side, c| {
        c.args(["--read-log", &tw.path(side, &drv)]);
    });
    let has = |l: &str| log.lines().any(|x| x == l);
    for l in [
        "append to an input: no",
        "write /: no",
        "read a host file: no",
        "see /root: no",
        "see /home: no",
        "see /usr/bin: no",
        "see /var/lib: no",
        "see /etc/shadow: no",
        "process /proc/1",
        "Uid: 1000 1000 1000 1000",
        "Gid: 100 100 100 100",
        "Groups:",
        "interface lo",
        "hostname localhost",
    ] {
        assert!(has(l), "the probes say {l:?}? Their log:\n{log}");
    }
    assert_eq!(log.lines().filter(|l| l.starts_with("process ")).count(), 1, "the builder sees only itself:\n{log}");
    assert_eq!(log.lines().filter(|l| l.starts_with("interface ")).count(), 1, "only a loopback interface:\n{log}");
    // What the builder could write stayed in the sandbox.
    assert!(!Path::new(&format!("/tmp/escape-{mark}")).exists(), "a builder wrote the host's /tmp");
    assert!(!Path::new(&format!("/escape-{mark}")).exists(), "a builder wrote the host's /");
    for side in Side::BOTH {
        let escaped = Path::new(&tw.store(side).store_dir).join(format!("escape-{mark}"));
        assert!(!escaped.exists(), "{}: a builder wrote {}", tw.daemon(side).name, escaped.display());
    }

    // Fixed-output derivations have the host's network: they see its
    // interfaces, and reach a server on its loopback.
    let has_other_interfaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(i, _)| i.trim().to_owned()))
        .any(|i| i != "lo");
    if has_other_interfaces {
        tw.same("nix-build of a fixed output looking at the network", "nix-build", |_, c| {
            c.arg(&file).args(["-A", "hostNetwork", "--no-out-link"]);
        });
    } else {
        eprintln!(
            "skipped: the host has no interface but lo, so a fixed output cannot tell its network from a private one"
        );
    }
    let path = line(tw.same("nix-build of builtin:fetchurl from the loopback", "nix-build", |_, c| {
        c.arg(&file).args(["-A", "fetched", "--no-out-link"]);
    }));
    assert_eq!(read_path(&tw, Side::Ours, &path), fetched);
    assert_eq!(server.requests(), ["/fod", "/fod"], "each daemon fetched once");
    // Other derivations do not reach it: the download is tried (and
    // refused: a private network's loopback has no server). The messages
    // differ: armitage's HTTP client is not CppNix's curl.
    let outs = tw.both("nix-build", |_, c| {
        c.arg(&file).args(["-A", "fetchedNonFixed", "--no-out-link"]);
    });
    for (o, side) in outs.iter().zip(Side::BOTH) {
        assert!(!o.status.success(), "{}: a non-fixed builtin:fetchurl succeeded", tw.daemon(side).name);
        let err = text(&o.stderr);
        assert!(
            err.contains("unable to download") || err.contains("Couldn't connect"),
            "{}: {err}",
            tw.daemon(side).name
        );
    }
    assert_eq!(server.requests(), ["/fod", "/fod"], "no request from a non-fixed derivation");
}
