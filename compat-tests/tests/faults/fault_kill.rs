//! kill -9 of `armitage daemon` at random moments of a mixed workload of
//! stock Nix 2.8 clients on its socket: in each round, at once, adds of
//! fresh files and trees (one of a few MiB, so kills land mid-transfer),
//! imports of exports prepared once up front in a separate source store,
//! `nix-build`s of fresh two-step derivations (a builder that sleeps a
//! little) and a `nix-store --gc` with garbage to collect. The daemon is
//! killed by its PID after a random delay, the clients are waited for, and
//! the daemon is restarted on the same store. Then:
//!
//! 1. SQLite's `integrity_check` (and `foreign_key_check`) pass on the database;
//! 2. every valid path is intact: `armitage store verify --check-contents`
//!    and CppNix's `nix-store --verify --check-contents` (2.8 and 2.26 in
//!    turn, on the same store) find nothing wrong;
//! 3. every client either succeeded (it printed what it should and its
//!    paths are valid) or failed, and every path the round could make is
//!    either not valid or valid with the NAR hash of what was meant (computed
//!    up front by CppNix from the inputs): nothing half-made is valid;
//! 4. the debris of the kill blocks nothing: the failed operations, run
//!    again, all succeed, and a collection leaves nothing in the store dir
//!    but `.links` and (as CppNix's) `.lock` files.
//!
//! Every path a round may make is a GC root (a symlink in
//! `gcroots/fault-kill`, made before it exists) for that round, so that the
//! round's own collection cannot take what a client was told is there.
//! Builds run as root without build users (so that no other test's builders
//! are killed); the builders a kill orphans are waited for before their
//! derivations are built again.
//!
//! The number of kills is `ARMITAGE_FAULT_KILLS` (default 20, the CI run;
//! the long run is `ARMITAGE_FAULT_KILLS=200`). The kill delays are random
//! fractions of a span that starts as long as the workload took in a first
//! round without a kill and then follows the machine's pace (see the test);
//! the seed of those fractions and of the inputs is printed, and
//! `ARMITAGE_FAULT_SEED=<seed>` repeats them (the timing of the machine
//! decides the rest).

use compat_tests::{Rng, armitage_verify, base_name, make_tree, nix_verify, text};
use rusqlite::OptionalExtension;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, write_file};

/// Kills in a run unless `ARMITAGE_FAULT_KILLS` says otherwise.
const DEFAULT_KILLS: u64 = 20;
/// How long clients may take to end once the daemon is gone (or, without a
/// kill, to finish): a client still running then hangs.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Bounds of the span the kill delays are spread over.
const MIN_SPAN: Duration = Duration::from_millis(50);
const MAX_SPAN: Duration = Duration::from_secs(10);

/// Where in a round's workload its kill came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landed {
    BeforeAnyEnded,
    WhileSomeHad,
    AfterAllHad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Add,
    Import,
    Build,
    Gc,
}

/// One client command of a round.
#[derive(Clone)]
struct Op {
    kind: Kind,
    label: String,
    tool: &'static str,
    args: Vec<String>,
    stdin: Option<PathBuf>,
    /// The store paths it prints when it succeeds (not checked for a GC).
    prints: Option<BTreeSet<String>>,
    /// The paths valid once it succeeded.
    makes: Vec<String>,
}

/// One round's clients and what they may make.
struct Round {
    /// Its inputs (removed at its end).
    work: PathBuf,
    ops: Vec<Op>,
    /// Every path the clients may make → its `sha256:<base16>` NAR hash.
    expected: BTreeMap<String, String>,
}

/// A prepared `nix-store --export` stream and what is in it.
struct Export {
    file: PathBuf,
    /// Path → `sha256:<base16>` NAR hash, as the source store registered it.
    paths: BTreeMap<String, String>,
}

#[derive(Default)]
struct Stats {
    kills: u64,
    ok: BTreeMap<Kind, u64>,
    failed: BTreeMap<Kind, u64>,
    retried: u64,
    /// Valid paths checked by both verifiers, summed over the checks.
    paths_verified: u64,
    /// Round paths found valid after a kill whose hash was compared.
    tracked_valid_after_kill: u64,
    /// Round paths found not valid after a kill.
    tracked_invalid_after_kill: u64,
    /// Failed clients all of whose paths were valid (killed after registering).
    failed_but_made: u64,
    /// Build directories the killed daemons left in the temp dir.
    leaked_build_dirs: u64,
    /// Kills that came before any client had ended, while some had, and
    /// after all had.
    kills_early: u64,
    kills_mid: u64,
    kills_late: u64,
    /// Time spent in each part of the rounds.
    phases: BTreeMap<&'static str, Duration>,
}

impl Stats {
    /// Adds the time since `since` to `phase`; restarts `since`.
    fn lap(&mut self, phase: &'static str, since: &mut Instant) {
        *self.phases.entry(phase).or_default() += since.elapsed();
        *since = Instant::now();
    }
}

/// `len` bytes of pseudo-random data from `seed` (nothing compressible).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

fn lines(b: &[u8]) -> BTreeSet<String> {
    text(b).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

fn kill_9(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a PID");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

/// The derivations one build client builds: `top` refers to `dep`, both
/// unique to the round (`@NONCE@`), the builder sleeps a little at the end.
const BUILD_NIX: &str = r#"
rec {
  dep = derivation {
    name = "@NAME@-dep";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo @NONCE@ > $out" ];
    preferLocalBuild = true;
  };
  top = derivation {
    name = "@NAME@-top";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir $out
      echo ${dep} > $out/dep
      i=0
      while [ $i -lt @LINES@ ]; do echo "line $i @NONCE@"; i=$((i+1)); done > $out/data
      /bin/sleep @SLEEP@
      echo done > $out/done
    '' ];
    preferLocalBuild = true;
  };
}
"#;

struct Fault {
    nix28: Nix,
    nix226: Nix,
    store: TestStore,
    daemon: Option<Daemon>,
    exports: Vec<Export>,
    roots: PathBuf,
    seed: u64,
    /// In every name this run makes (build dirs are found by it).
    tag: String,
    rng: Rng,
    stats: Stats,
}

impl Fault {
    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon is running")
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.store.state_dir.join("db/db.sqlite")).expect("open the database")
    }

    /// A client of the daemon (Nix 2.8).
    fn client(&self, tool: &str) -> std::process::Command {
        self.daemon().client(&self.store, &self.nix28, tool)
    }

    /// CppNix 2.8 directly on the store (for computations only).
    fn local(&self, tool: &str) -> std::process::Command {
        self.store.nix(&self.nix28, tool)
    }

    /// Makes the exports to import: in a source store of its own (its own
    /// state dir, the same store dir, as an export names its paths), whose
    /// paths are deleted again once exported.
    fn prepare_exports(&mut self) {
        let src_state = self.store.root().join("source-state");
        let src = |tool: &str| {
            let mut c = self.local(tool);
            c.env("NIX_STATE_DIR", &src_state);
            c
        };
        let dir = self.store.work_dir("exports");
        let blob = dir.join(format!("{}-import-blob", self.tag));
        write_file(&blob, random_bytes(self.seed ^ 0xb10b, 3 << 20));
        let tree = dir.join(format!("{}-import-tree", self.tag));
        make_tree(&tree, self.seed ^ 0x7ee, 150, 6000);
        let files: Vec<String> =
            run(src("nix-store").arg("--add").arg(&blob).arg(&tree)).lines().map(str::to_owned).collect();
        assert_eq!(files.len(), 2);
        write_file(dir.join("import-builder.sh"), format!("echo {} imported builder\n", self.tag));
        let nix_file = dir.join("import.nix");
        write_file(
            &nix_file,
            format!(
                "derivation {{ name = \"{}-import\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ ./import-builder.sh ]; }}\n",
                self.tag
            ),
        );
        let drv = line(run(src("nix-instantiate").arg(&nix_file)));
        let closure: Vec<String> = run(src("nix-store").args(["-qR", &drv])).lines().map(str::to_owned).collect();
        assert_eq!(closure.len(), 2, "the derivation and its builder script: {closure:?}");

        let src_db = rusqlite::Connection::open(src_state.join("db/db.sqlite")).expect("open the source database");
        let mut exports = Vec::new();
        for (name, paths) in [("files", &files), ("closure", &closure)] {
            let out = output(src("nix-store").arg("--export").args(paths));
            assert!(out.status.success(), "nix-store --export: {}", text(&out.stderr));
            let file = dir.join(format!("{name}.export"));
            write_file(&file, &out.stdout);
            let paths = paths
                .iter()
                .map(|p| {
                    let hash: String = src_db
                        .query_row("select hash from ValidPaths where path = ?1", [p], |r| r.get(0))
                        .expect("the source store's NAR hash");
                    (p.clone(), hash)
                })
                .collect();
            exports.push(Export { file, paths });
        }
        drop(src_db);
        run(src("nix-store").arg("--delete").args(&files).args(&closure));
        for p in files.iter().chain(&closure) {
            assert!(!Path::new(p).exists(), "{p} is still on disk after deleting it from the source store");
        }
        self.exports = exports;
    }

    /// Runs `ops` at once; with `kill`, kills the daemon by its PID that
    /// long after starting them and restarts it once all clients ended.
    /// Returns each op's output and whether it ended before the kill.
    fn run_ops(&mut self, ops: &[Op], kill: Option<Duration>) -> Vec<(Output, bool)> {
        let (tx, rx) = mpsc::channel();
        let mut pids = Vec::new();
        let start = Instant::now();
        for (i, op) in ops.iter().enumerate() {
            let mut cmd = self.client(op.tool);
            cmd.args(&op.args).stdout(Stdio::piped()).stderr(Stdio::piped());
            match &op.stdin {
                Some(f) => cmd.stdin(std::fs::File::open(f).expect("open the export")),
                None => cmd.stdin(Stdio::null()),
            };
            let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", op.label));
            pids.push(child.id());
            let tx = tx.clone();
            std::thread::spawn(move || {
                let out = child.wait_with_output().expect("wait for a client");
                let _ = tx.send((i, out));
            });
        }
        drop(tx);
        let mut results: Vec<Option<(Output, bool)>> = (0..ops.len()).map(|_| None).collect();
        let mut pending = ops.len();
        if let Some(delay) = kill {
            let at = start + delay;
            while pending > 0 {
                let Some(left) = at.checked_duration_since(Instant::now()) else { break };
                match rx.recv_timeout(left) {
                    Ok((i, out)) => {
                        results[i] = Some((out, true));
                        pending -= 1;
                    }
                    Err(_) => break,
                }
            }
            let daemon = self.daemon.take().expect("the daemon is running");
            kill_9(daemon.pid());
            let log = daemon.log();
            drop(daemon);
            self.stats.kills += 1;
            assert!(!log.contains("panicked"), "the daemon panicked before it was killed:\n{log}");
        }
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        while pending > 0 {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((i, out)) => {
                    results[i] = Some((out, kill.is_none()));
                    pending -= 1;
                }
                Err(_) => {
                    let hung: Vec<&str> = ops
                        .iter()
                        .zip(&results)
                        .filter(|(_, r)| r.is_none())
                        .map(|(op, _)| op.label.as_str())
                        .collect();
                    for (pid, r) in pids.iter().zip(&results) {
                        if r.is_none() {
                            kill_9(*pid);
                        }
                    }
                    panic!("clients still running {CLIENT_TIMEOUT:?} after the kill: {hung:?}");
                }
            }
        }
        if kill.is_some() {
            self.daemon = Some(Daemon::armitage(&self.store));
        }
        results.into_iter().map(|r| r.expect("every client ended")).collect()
    }

    /// The checks of a client that succeeded.
    fn check_success(&self, db: &rusqlite::Connection, op: &Op, out: &Output) {
        if let Some(prints) = &op.prints {
            assert_eq!(&lines(&out.stdout), prints, "{} printed other paths than it should", op.label);
        }
        for p in &op.makes {
            assert!(valid_hash(db, p).is_some(), "{} succeeded but {p} is not valid", op.label);
        }
    }

    /// The database is sound and both verifiers find every valid path
    /// intact. Returns how many paths are valid.
    fn check_store(&mut self, after: &str, nix: &Nix) -> u64 {
        let db = self.db();
        let integrity: Vec<String> = db
            .prepare("pragma integrity_check")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(integrity, ["ok"], "SQLite integrity check after {after}");
        let fk: Vec<String> = db
            .prepare("pragma foreign_key_check")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(fk.is_empty(), "foreign key violations after {after} in tables {fk:?}");
        let valid: i64 = db.query_row("select count(*) from ValidPaths", [], |r| r.get(0)).unwrap();
        drop(db);
        let (ok, err) = armitage_verify(&self.store);
        assert!(ok, "armitage store verify --check-contents after {after}:\n{err}\n{}", self.daemon().log());
        let (ok, err) = nix_verify(&self.store, nix);
        assert!(ok, "{} nix-store --verify --check-contents after {after}:\n{err}", nix.version);
        self.stats.paths_verified += valid as u64;
        valid as u64
    }

    /// Store dir entries that are neither valid paths, `.links` nor lock files.
    fn debris(&self) -> Vec<String> {
        let db = self.db();
        let mut bad = Vec::new();
        for e in std::fs::read_dir(&self.store.store_dir).expect("list the store dir") {
            let name = e.expect("a store dir entry").file_name().to_string_lossy().into_owned();
            // CppNix, too, leaves a path's `.lock` file behind.
            if name == ".links" || (name.ends_with(".lock") && !name.starts_with('.')) {
                continue;
            }
            if valid_hash(&db, &self.store.path_of(&name)).is_none() {
                bad.push(name);
            }
        }
        bad
    }

    /// Round `r`'s inputs (in its work dir), its clients in a random order,
    /// and every path they may make with its NAR hash, each made a GC root;
    /// garbage for its collection is added meanwhile.
    fn prepare(&mut self, r: u64) -> Round {
        let tag = self.tag.clone();
        let work = self.store.work_dir(&format!("round-{r}"));

        // Garbage for the round's collection.
        let garbage: Vec<PathBuf> = (0..3)
            .map(|i| {
                let f = work.join(format!("{tag}-garbage-{r}-{i}"));
                write_file(&f, random_bytes(self.seed ^ (r << 8) ^ i, if i == 0 { 1 << 20 } else { 100 }));
                f
            })
            .collect();
        let mut garbage_add = self.client("nix-store");
        garbage_add.arg("--add").args(&garbage);
        let garbage_add = spawn(garbage_add);

        // The inputs and where they must go.
        let mut expected: BTreeMap<String, String> = BTreeMap::new();
        let mut ops = Vec::new();
        let big = work.join(format!("{tag}-big-{r}"));
        let big_len = (1 << 20) + self.rng.below(4 << 20) as usize;
        write_file(&big, random_bytes(self.seed ^ (r << 16), big_len));
        let tree = work.join(format!("{tag}-tree-{r}"));
        make_tree(&tree, self.seed ^ (r << 24), 120, 8000);
        let mut adds = vec![big, tree];
        for i in 0..2 {
            let f = work.join(format!("{tag}-small-{r}-{i}"));
            write_file(&f, format!("small file {i} of round {r}, seed {}\n", self.seed));
            adds.push(f);
        }

        let builds: Vec<PathBuf> = (0..2)
            .map(|i| {
                let f = work.join(format!("build-{i}.nix"));
                let nonce = format!("{}-{r}-{i}", self.seed);
                let sleep = format!("0.{:02}", 5 + self.rng.below(20));
                write_file(
                    &f,
                    BUILD_NIX
                        .replace("@NAME@", &format!("{tag}-{r}-{i}"))
                        .replace("@NONCE@", &nonce)
                        .replace("@LINES@", "2000")
                        .replace("@SLEEP@", &sleep),
                );
                f
            })
            .collect();
        let expr = format!(
            "[ {} ]",
            builds
                .iter()
                .map(|f| format!("(let d = import {}; in [ d.top.outPath d.dep.outPath ])", f.display()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let eval: Vec<Vec<String>> = serde_json::from_str(&run(self
            .local("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E", &expr])))
        .expect("nix-instantiate --eval prints JSON");
        // What the builders must write, mirrored here to hash.
        let mut mirrors = Vec::new();
        for (i, outs) in eval.iter().enumerate() {
            let (top, dep) = (&outs[0], &outs[1]);
            let nonce = format!("{}-{r}-{i}", self.seed);
            let m = work.join(format!("expect-{i}"));
            write_file(m.join("dep"), format!("{nonce}\n"));
            let data: String = (0..2000).map(|n| format!("line {n} {nonce}\n")).collect();
            write_file(m.join("top/dep"), format!("{dep}\n"));
            write_file(m.join("top/data"), data);
            write_file(m.join("top/done"), "done\n");
            mirrors.push((m.join("top"), top.clone()));
            mirrors.push((m.join("dep"), dep.clone()));
        }

        let hashed: Vec<&PathBuf> = adds.iter().chain(mirrors.iter().map(|(m, _)| m)).collect();
        let hashes: Vec<String> =
            run(self.local("nix-hash").args(["--type", "sha256"]).args(&hashed)).lines().map(str::to_owned).collect();
        assert_eq!(hashes.len(), hashed.len());
        let fixed_paths: Vec<std::process::Child> = adds
            .iter()
            .zip(&hashes)
            .map(|(input, hash)| {
                let name = input.file_name().unwrap().to_str().unwrap();
                let mut c = self.local("nix-store");
                c.args(["--print-fixed-path", "--recursive", "sha256", hash, name]);
                spawn(c)
            })
            .collect();
        for ((input, hash), fixed) in adds.iter().zip(&hashes).zip(fixed_paths) {
            let name = input.file_name().unwrap().to_str().unwrap();
            let path = line(finish(fixed, "nix-store --print-fixed-path"));
            expected.insert(path.clone(), format!("sha256:{hash}"));
            ops.push(Op {
                kind: Kind::Add,
                label: format!("nix-store --add {name}"),
                tool: "nix-store",
                args: vec!["--add".into(), input.display().to_string()],
                stdin: None,
                prints: Some([path.clone()].into()),
                makes: vec![path],
            });
        }
        for ((_, path), hash) in mirrors.iter().zip(&hashes[adds.len()..]) {
            expected.insert(path.clone(), format!("sha256:{hash}"));
        }
        for (i, outs) in eval.iter().enumerate() {
            ops.push(Op {
                kind: Kind::Build,
                label: format!("nix-build {}", builds[i].file_name().unwrap().to_string_lossy()),
                tool: "nix-build",
                args: vec![
                    builds[i].display().to_string(),
                    "-A".into(),
                    "top".into(),
                    "-o".into(),
                    work.join(format!("result-{i}")).display().to_string(),
                ],
                stdin: None,
                prints: Some([outs[0].clone()].into()),
                makes: outs.clone(),
            });
        }
        for e in &self.exports {
            expected.extend(e.paths.clone());
            ops.push(Op {
                kind: Kind::Import,
                label: format!("nix-store --import < {}", e.file.file_name().unwrap().to_string_lossy()),
                tool: "nix-store",
                args: vec!["--import".into()],
                stdin: Some(e.file.clone()),
                prints: Some(e.paths.keys().cloned().collect()),
                makes: e.paths.keys().cloned().collect(),
            });
        }
        ops.push(Op {
            kind: Kind::Gc,
            label: "nix-store --gc".into(),
            tool: "nix-store",
            args: vec!["--gc".into()],
            stdin: None,
            prints: None,
            makes: vec![],
        });
        // A different start order each round.
        for i in (1..ops.len()).rev() {
            ops.swap(i, self.rng.below(i as u64 + 1) as usize);
        }

        finish(garbage_add, "nix-store --add of the garbage");

        // Everything the round may make is a root (before it exists) and
        // not valid yet.
        {
            let db = self.db();
            for p in expected.keys() {
                assert!(valid_hash(&db, p).is_none(), "{p} is valid before round {r} made it");
                std::os::unix::fs::symlink(p, self.roots.join(base_name(p))).expect("make a GC root");
            }
        }

        Round { work, ops, expected }
    }

    /// One round: the workload, killed after `kill` (none: the warm-up, which
    /// must succeed in full), then the checks. Returns how long the
    /// workload's clients took (to the kill, or to the last one's end) and
    /// where in it the kill came.
    fn round(&mut self, r: u64, kill: Option<Duration>) -> (Duration, Option<Landed>) {
        let round_start = Instant::now();
        let mut lap = Instant::now();
        let Round { work, ops, expected } = self.prepare(r);

        // The workload, and the kill.
        self.stats.lap("preparing inputs", &mut lap);
        let started = Instant::now();
        let results = self.run_ops(&ops, kill);
        let workload = kill.unwrap_or_else(|| started.elapsed());
        // Builders of the killed daemon live on (as CppNix's do without build
        // users): let them end before their derivations are built again.
        wait_for_processes_mentioning(&format!("{}-{r}-", self.seed));
        self.stats.lap("workload, kill and restart", &mut lap);
        let what = match kill {
            Some(d) => format!("kill {} (after {} ms)", self.stats.kills, d.as_millis()),
            None => "the warm-up round".to_owned(),
        };
        let nix = if r.is_multiple_of(2) { self.nix28.clone() } else { self.nix226.clone() };
        self.check_store(&what, &nix);
        self.stats.lap("integrity and verify", &mut lap);

        // Each client: success with its paths valid, or failure.
        let db = self.db();
        let mut failed = Vec::new();
        let mut done_before = 0;
        for (op, (out, before_kill)) in ops.iter().zip(&results) {
            if *before_kill {
                done_before += 1;
                assert!(
                    out.status.success(),
                    "{} failed in {what} though it ended before the kill:\n{}",
                    op.label,
                    text(&out.stderr)
                );
            }
            if out.status.success() {
                *self.stats.ok.entry(op.kind).or_default() += 1;
                self.check_success(&db, op, out);
            } else {
                *self.stats.failed.entry(op.kind).or_default() += 1;
                if !op.makes.is_empty() && op.makes.iter().all(|p| valid_hash(&db, p).is_some()) {
                    self.stats.failed_but_made += 1;
                }
                failed.push(op.clone());
            }
        }
        // Whatever is valid is what was meant, to the hash; the rest is not valid.
        for (p, hash) in &expected {
            match valid_hash(&db, p) {
                Some(got) => {
                    assert_eq!(&got, hash, "{p} is valid after {what} with another NAR hash than it should have");
                    if kill.is_some() {
                        self.stats.tracked_valid_after_kill += 1;
                    }
                }
                None if kill.is_some() => self.stats.tracked_invalid_after_kill += 1,
                None => {}
            }
        }
        drop(db);
        let landed = kill.map(|_| match done_before {
            0 => {
                self.stats.kills_early += 1;
                Landed::BeforeAnyEnded
            }
            n if n == ops.len() => {
                self.stats.kills_late += 1;
                Landed::AfterAllHad
            }
            _ => {
                self.stats.kills_mid += 1;
                Landed::WhileSomeHad
            }
        });
        let failed_labels: Vec<&str> = failed.iter().map(|o| o.label.as_str()).collect();
        eprintln!(
            "{what}: {} clients succeeded ({done_before} before the kill), {} failed {failed_labels:?}",
            ops.len() - failed.len(),
            failed.len()
        );
        if kill.is_none() {
            assert!(failed.is_empty(), "clients failed without a kill");
        }

        // What failed succeeds now, over whatever the kill left behind.
        self.stats.lap("client outcomes", &mut lap);
        let retry: Vec<Op> = failed.into_iter().filter(|o| o.kind != Kind::Gc).collect();
        if !retry.is_empty() {
            let results = self.run_ops(&retry, None);
            let db = self.db();
            for (op, (out, _)) in retry.iter().zip(&results) {
                assert!(
                    out.status.success(),
                    "{} failed when run again after {what}:\n{}\ndaemon log:\n{}",
                    op.label,
                    text(&out.stderr),
                    self.daemon().log()
                );
                self.check_success(&db, op, out);
                self.stats.retried += 1;
            }
            for (p, hash) in &expected {
                let got = valid_hash(&db, p);
                assert_eq!(got.as_ref(), Some(hash), "{p} after the retries of {what}");
            }
        }

        self.stats.lap("retries", &mut lap);
        // Unrooted, the round's paths go with the collection, and so does all
        // the debris: nothing is left but `.links` and lock files.
        for e in std::fs::read_dir(&self.roots).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::fs::remove_dir_all(&work).expect("remove the round's inputs");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let out = output(self.client("nix-store").arg("--gc"));
            assert!(out.status.success(), "nix-store --gc after {what}:\n{}", text(&out.stderr));
            let left = self.debris();
            let valid: i64 = self.db().query_row("select count(*) from ValidPaths", [], |r| r.get(0)).unwrap();
            if left.is_empty() && valid == 0 {
                break;
            }
            // A connection the daemon has not closed yet may still hold a
            // temp root for a moment.
            assert!(
                attempts < 5,
                "after {what} and a collection, the store dir holds entries that are not valid paths: {left:?}, \
                 and {valid} paths are still valid\ndaemon log:\n{}",
                self.daemon().log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.stats.lap("collection and debris", &mut lap);
        let log = self.daemon().log();
        assert!(!log.contains("panicked"), "the daemon panicked after {what}:\n{log}");

        // Build directories of builds the kill interrupted (CppNix, too,
        // leaves them): they block nothing, but do not keep them.
        let prefix = format!("nix-build-{}-", self.tag);
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    self.stats.leaked_build_dirs += 1;
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        if r.is_multiple_of(10) {
            eprintln!("round {r} took {:.1} s", round_start.elapsed().as_secs_f64());
        }
        (workload, landed)
    }
}

/// Waits until no process has `needle` in its command line.
fn wait_for_processes_mentioning(needle: &str) {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        let running: Vec<String> = std::fs::read_dir("/proc")
            .expect("list /proc")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| text(&c).replace('\0', " "))
            .filter(|c| c.contains(needle))
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "builders still running {CLIENT_TIMEOUT:?} after the kill: {running:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a command with its output captured.
fn spawn(mut cmd: std::process::Command) -> std::process::Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// Waits for a [`spawn`]ed command, which must succeed; returns its stdout.
fn finish(child: std::process::Child, what: &str) -> String {
    let out = child.wait_with_output().expect("wait for a command");
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, text(&out.stderr));
    text(&out.stdout)
}

/// The NAR hash a path is registered with, if it is valid.
fn valid_hash(db: &rusqlite::Connection, path: &str) -> Option<String> {
    db.query_row("select hash from ValidPaths where path = ?1", [path], |r| r.get(0))
        .optional()
        .expect("query the database")
}

#[test]
fn kill_9_of_the_daemon_during_a_mixed_workload() {
    let (Some(nix28), Some(nix226)) = (Nix::find(NixVersion::V2_8), Nix::find(NixVersion::V2_26)) else {
        return;
    };
    let kills = env_u64("ARMITAGE_FAULT_KILLS").unwrap_or(DEFAULT_KILLS);
    let seed = env_u64("ARMITAGE_FAULT_SEED").unwrap_or_else(Rng::seed_from_time);
    eprintln!("fault_kill: {kills} kills, seed {seed} (ARMITAGE_FAULT_SEED={seed} repeats it)");
    let started = Instant::now();
    // Builds run as root (no build users), so this test never kills the
    // builders of tests running beside it.
    let store = TestStore::with_conf("build-users-group =\nmax-jobs = 4\n");
    let roots = store.state_dir.join("gcroots/fault-kill");
    std::fs::create_dir_all(&roots).unwrap();
    let mut f = Fault {
        nix28,
        nix226,
        store,
        daemon: None,
        exports: Vec::new(),
        roots,
        seed,
        tag: format!("fk{:04x}", seed % 0x10000),
        rng: Rng::new(seed),
        stats: Stats::default(),
    };
    f.prepare_exports();
    f.daemon = Some(Daemon::armitage(&f.store));

    // The warm-up round measures how long the workload takes here. Each kill
    // comes after a random fraction of a span that starts there and follows
    // the machine's pace: longer after a kill that came before any client
    // had ended, shorter after one that came after all had. It settles where
    // both are as likely, so that most kills land while clients are at work.
    let (warm_up, _) = f.round(0, None);
    eprintln!("the workload takes {} ms without a kill", warm_up.as_millis());
    let mut span = warm_up.as_secs_f64();
    for r in 1..=kills {
        let delay = Duration::from_secs_f64(span * f.rng.below(1_000_000) as f64 / 1e6);
        match f.round(r, Some(delay)).1 {
            Some(Landed::BeforeAnyEnded) => span = (span * 1.25).min(MAX_SPAN.as_secs_f64()),
            Some(Landed::AfterAllHad) => span = (span * 0.8).max(MIN_SPAN.as_secs_f64()),
            _ => {}
        }
    }
    eprintln!("fault_kill: kill delays ended up spread over {} ms", (span * 1000.0) as u64);
    let leftover = f.debris();
    assert!(leftover.is_empty(), "{leftover:?}");
    f.daemon.take().unwrap().stop();

    let s = &f.stats;
    let sum = |m: &BTreeMap<Kind, u64>| m.values().sum::<u64>();
    eprintln!(
        "fault_kill: {} kills in {:.1} s (seed {seed}; {} before any client ended, {} while some had, {} after all had); client operations: {} succeeded {:?}, {} failed {:?}, \
         {} of them with all their paths made, {} run again and succeeded; {} valid paths verified by both verifiers; round paths after a kill: \
         {} valid with the right hash, {} not valid; {} build dirs left by killed builds",
        s.kills,
        started.elapsed().as_secs_f64(),
        s.kills_early,
        s.kills_mid,
        s.kills_late,
        sum(&s.ok),
        s.ok,
        sum(&s.failed),
        s.failed,
        s.failed_but_made,
        s.retried,
        s.paths_verified,
        s.tracked_valid_after_kill,
        s.tracked_invalid_after_kill,
        s.leaked_build_dirs
    );
    let phases: Vec<String> = s.phases.iter().map(|(p, d)| format!("{p} {:.1} s", d.as_secs_f64())).collect();
    eprintln!("fault_kill: time by phase: {}", phases.join(", "));
    assert_eq!(s.kills, kills);
    // Kills that all came after every client had finished would prove
    // little: at least a quarter must have caught clients at work.
    assert!(
        (s.kills_early + s.kills_mid) * 4 >= kills,
        "only {} of {kills} kills came while clients were at work",
        s.kills_early + s.kills_mid
    );
}
