//! Substitution through armitage's daemon with stock clients (2.8 and
//! 2.26): a closure built by CppNix in a source store is pushed to binary
//! caches (`nix copy --to file://...` with each compression, signed or
//! not), the caches are served over loopback HTTP, and a fresh armitage
//! store with the same store dir builds the same expression: it must fetch
//! the outputs instead of building them, register them as the source had
//! them, refuse tampered or unsigned substitutes, and fall back to building
//! only when told to. Where CppNix's nix-daemon 2.8 can run the same
//! scenario, its messages are compared.
//!
//! The source store and every target share one store dir (a binary cache
//! serves one store dir): each target is made after the previous one's
//! files are gone ([`Source::target`]). Builders are `/bin/sh` with its
//! builtins only (`PATH` is `/path-not-set`, no sandbox, no build users)
//! and each writes a marker file named after its derivation into a folder
//! outside the store, so a test sees which derivations were built.

use compat_tests::{path_info_by_path, remove_tree, text};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, write_file};

/// Six derivations, seven outputs referring to each other (`sub-c` has a
/// `lib` output too); `@MARKERS@` is the marker folder.
const CLOSURE_NIX: &str = r#"
let
  mk = name: deps: script: derivation ({
    inherit name;
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" ("echo built > @MARKERS@/${name}; " + script) ];
  } // deps);
  lines = what: n: ''i=0; while [ $i -lt ${toString n} ]; do echo "line $i of ${what}"; i=$((i+1)); done'';
  a = mk "sub-a" {} "${lines "a" 3000} > $out";
  b = mk "sub-b" { inherit a; } "{ echo \"b needs $a\"; ${lines "b" 500}; } > $out";
  c = mk "sub-c" { inherit a b; outputs = [ "out" "lib" ]; } "echo \"c needs $a $b\" > $out; echo \"lib of c next to $out\" > $lib";
  d = mk "sub-d" { inherit c; clib = c.lib; } "echo \"d needs $c $clib\" > $out";
  e = mk "sub-e" { inherit b; } "echo \"e needs $b\" > $out";
in mk "sub-top" { inherit d e; } "echo \"top needs $d $e\" > $out"
"#;

/// A derivation on top of [`CLOSURE_NIX`] (`closure.nix` next to it)
/// that may not be substituted (`allowSubstitutes = false`).
const LOCAL_NIX: &str = r#"
derivation {
  name = "sub-local";
  system = "x86_64-linux";
  builder = "/bin/sh";
  top = import ./closure.nix;
  allowSubstitutes = false;
  args = [ "-c" "echo built > @MARKERS@/sub-local; echo \"local needs $top\" > $out" ];
}
"#;

/// The derivations of [`CLOSURE_NIX`] (by name).
const DERIVATIONS: [&str; 6] = ["sub-a", "sub-b", "sub-c", "sub-d", "sub-e", "sub-top"];
/// Its outputs.
const OUTPUTS: usize = 7;
/// The name of the signing key.
const KEY_NAME: &str = "armitage-subst-test-1";

/// nix.conf of every target store (substituters come on top).
const TARGET_CONF: &str = "build-users-group =\nsandbox = false\nrequire-sigs = true\n";

/// A client `tool` of `nix` talking to `daemon`; Nix 2.8's `nix` gets
/// `nix-command`.
fn client(daemon: &Daemon, store: &TestStore, nix: &Nix, tool: &str) -> Command {
    let mut cmd = daemon.client(store, nix, tool);
    if tool == "nix" && nix.version == NixVersion::V2_8 {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd
}

/// The `error:` lines of a client's stderr (continuation lines left out),
/// without trailing blanks (CppNix's "try '--fallback'" message has one).
fn error_lines(stderr: &str) -> Vec<String> {
    stderr.lines().filter(|l| l.starts_with("error:")).map(|l| l.trim_end().to_owned()).collect()
}

/// A closure built by CppNix 2.8 in a store of its own and pushed to
/// binary caches; see the module docs.
struct Source {
    nix: Nix,
    store: TestStore,
    /// The expression, with the marker folder filled in.
    expr: PathBuf,
    markers: PathBuf,
    /// The top derivation's output.
    top: String,
    /// [`LOCAL_NIX`] and its output.
    local_expr: PathBuf,
    local: String,
    /// `nix path-info --json -r` of `top` in the source store, by path.
    infos: Map<String, Value>,
    public_key: String,
    secret_key: PathBuf,
    /// The folder the caches are folders of.
    caches: PathBuf,
}

impl Source {
    /// Builds the closure; `None` (the test is skipped) without Nix 2.8.
    fn build() -> Option<Source> {
        let nix = Nix::find(NixVersion::V2_8)?;
        let store = TestStore::with_conf("build-users-group =\n");
        let markers = store.root().join("markers");
        std::fs::create_dir_all(&markers).expect("create the marker folder");
        let expr = store.work_dir("expr").join("closure.nix");
        write_file(&expr, CLOSURE_NIX.replace("@MARKERS@", markers.to_str().expect("UTF-8 scratch path")));
        let local_expr = expr.with_file_name("local.nix");
        write_file(&local_expr, LOCAL_NIX.replace("@MARKERS@", markers.to_str().expect("UTF-8 scratch path")));
        let top = line(run(store.nix(&nix, "nix-build").arg(&expr).arg("--no-out-link")));
        assert_eq!(marked(&markers), DERIVATIONS.iter().map(|d| d.to_string()).collect::<BTreeSet<_>>());
        let local = line(run(store.nix(&nix, "nix-build").arg(&local_expr).arg("--no-out-link")));
        let json = run(store.nix(&nix, "nix").args(["path-info", "--json", "-r", &top]));
        let infos = path_info_by_path(&json);
        assert_eq!(infos.len(), OUTPUTS, "the closure of {top}: {json}");
        let keys = store.work_dir("keys");
        let (secret_key, public) = (keys.join("secret"), keys.join("public"));
        run(store
            .nix(&nix, "nix-store")
            .arg("--generate-binary-cache-key")
            .arg(KEY_NAME)
            .arg(&secret_key)
            .arg(&public));
        let public_key = std::fs::read_to_string(&public).expect("read the public key").trim().to_owned();
        let caches = store.root().join("caches");
        let source =
            Source { nix, expr, markers, top, local_expr, local, infos, public_key, secret_key, caches, store };
        clear(&source.markers);
        Some(source)
    }

    /// Pushes the closure to a cache folder `name` with `compression`,
    /// signed or not.
    fn push(&self, name: &str, compression: &str, signed: bool) {
        let mut url = format!("file://{}?compression={compression}", self.caches.join(name).display());
        if signed {
            url.push_str(&format!("&secret-key={}", self.secret_key.display()));
        }
        run(self.store.nix(&self.nix, "nix").args(["copy", "--to", &url, &self.top, &self.local]));
        let narinfos = std::fs::read_dir(self.caches.join(name))
            .expect("read the cache")
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".narinfo")))
            .count();
        assert_eq!(narinfos, OUTPUTS + 1, "narinfos in the {name} cache");
    }

    /// A copy of the cache `from` named `to`, for tampering with.
    fn copy_cache(&self, from: &str, to: &str) {
        let status =
            Command::new("cp").arg("-a").arg(self.caches.join(from)).arg(self.caches.join(to)).status().unwrap();
        assert!(status.success(), "copy the {from} cache");
    }

    /// The narinfo file of `path` in the cache `name`.
    fn narinfo(&self, name: &str, path: &str) -> PathBuf {
        let base = path.rsplit('/').next().unwrap();
        self.caches.join(name).join(format!("{}.narinfo", &base[..32]))
    }

    /// The NAR file of `path` in the cache `name`, as its narinfo's `URL:` says.
    fn nar_file(&self, name: &str, path: &str) -> PathBuf {
        let info = std::fs::read_to_string(self.narinfo(name, path)).expect("read the narinfo");
        let url = info.lines().find_map(|l| l.strip_prefix("URL: ")).expect("a URL line");
        self.caches.join(name).join(url)
    }

    /// Rewrites the narinfo of `path` in the cache `name` with `edit`.
    fn edit_narinfo(&self, name: &str, path: &str, edit: impl Fn(&str) -> String) {
        let file = self.narinfo(name, path);
        let before = std::fs::read_to_string(&file).unwrap();
        let after = edit(&before);
        assert_ne!(before, after, "the edit of {} changed nothing", file.display());
        std::fs::write(&file, after).unwrap();
    }

    /// A fresh store with this source's store dir (the files of the
    /// previous one, and of the source itself, removed first), whose
    /// nix.conf has [`TARGET_CONF`] and `conf`. Its daemon must be started
    /// after any previous target's daemon stopped.
    fn target(&self, conf: &str) -> TestStore {
        remove_tree(Path::new(&self.store.store_dir));
        clear(&self.markers);
        let mut target = TestStore::with_conf(&format!("{TARGET_CONF}{conf}"));
        target.store_dir = self.store.store_dir.clone();
        target
    }

    /// nix.conf lines using `url` as the substituter with the key trusted.
    fn conf(&self, url: &str) -> String {
        format!("substituters = {url}\ntrusted-public-keys = {}\n", self.public_key)
    }

    /// Builds the expression through `daemon` with `nix`'s client
    /// (`nix-build` for 2.8, `nix build` for 2.26) and `extra` arguments.
    fn build_through(&self, daemon: &Daemon, target: &TestStore, nix: &Nix, extra: &[&str]) -> std::process::Output {
        let mut cmd = match nix.version {
            NixVersion::V2_8 => {
                let mut c = client(daemon, target, nix, "nix-build");
                c.arg(&self.expr).arg("--no-out-link");
                c
            }
            NixVersion::V2_26 => {
                let mut c = client(daemon, target, nix, "nix");
                c.args(["build", "--no-link", "--print-out-paths", "-f"]).arg(&self.expr);
                c
            }
        };
        output(cmd.args(extra))
    }

    /// The derivations whose builders ran since the target was made.
    fn built(&self) -> BTreeSet<String> {
        marked(&self.markers)
    }

    /// The output path named `name` (`sub-c-lib` for `sub-c`'s `lib`).
    fn output(&self, name: &str) -> String {
        let suffix = format!("-{name}");
        self.infos.keys().find(|p| p.ends_with(&suffix)).unwrap_or_else(|| panic!("no output {name}")).clone()
    }
}

fn marked(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read the marker folder")
        .map(|e| e.expect("a marker").file_name().to_string_lossy().into_owned())
        .collect()
}

fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read the marker folder") {
        std::fs::remove_file(e.unwrap().path()).expect("remove a marker");
    }
}

/// Field `key` of a 2.8 path-info object (2.8 leaves out empty ones).
fn field<'a>(info: &'a Value, key: &str) -> Option<&'a Value> {
    info.get(key).filter(|v| !v.is_null())
}

fn references(info: &Value) -> BTreeSet<String> {
    field(info, "references")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|r| r.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Checks the target's copy of the source's closure: valid paths as the
/// source had them (NAR hash and size, references, deriver), not
/// ultimately trusted, signed by the test key when the cache was, and
/// their contents as registered (`nix-store --verify --check-contents`).
fn assert_same_closure(src: &Source, daemon: &Daemon, target: &TestStore, signed: bool) {
    let json = run(client(daemon, target, &src.nix, "nix").args(["path-info", "--json", "-r", &src.top]));
    let infos = path_info_by_path(&json);
    assert_eq!(
        infos.keys().collect::<Vec<_>>(),
        src.infos.keys().collect::<Vec<_>>(),
        "the closure of the top output in the target"
    );
    for (path, ours) in &infos {
        let theirs = &src.infos[path];
        for key in ["narHash", "narSize", "deriver"] {
            assert_eq!(field(ours, key), field(theirs, key), "{key} of {path}: {ours}");
        }
        assert_eq!(references(ours), references(theirs), "references of {path}");
        assert_ne!(field(ours, "ultimate"), Some(&Value::Bool(true)), "{path} was substituted, not built: {ours}");
        let sigs: Vec<&str> = field(ours, "signatures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if signed {
            assert!(
                sigs.len() == 1 && sigs[0].starts_with(&format!("{KEY_NAME}:")),
                "{path} keeps the cache's signature: {ours}"
            );
        }
    }
    let out = output(client(daemon, target, &src.nix, "nix-store").args(["--verify", "--check-contents"]));
    let err = text(&out.stderr);
    assert!(out.status.success() && !err.contains("error") && !err.contains("modified"), "verify:\n{err}");
}

/// Whether `path` is valid in the target, by `nix-store --check-validity`.
fn is_valid(daemon: &Daemon, target: &TestStore, nix: &Nix, path: &str) -> bool {
    output(client(daemon, target, nix, "nix-store").args(["--check-validity", path])).status.success()
}

/// Asserts that a client built or substituted everything and printed the top output.
fn assert_ok(what: &str, out: &std::process::Output, top: &str, daemon: &Daemon) {
    assert!(out.status.success(), "{what} failed:\n{}\ndaemon log:\n{}", text(&out.stderr), daemon.log());
    assert_eq!(line(text(&out.stdout)), top, "{what} prints the top output");
}

/// `python3 -m http.server` serving a folder on a free loopback port;
/// killed (by its PID) when dropped.
struct StaticServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl StaticServer {
    /// `None` (with the reason printed) when python3 cannot run.
    fn start(dir: &Path, log: PathBuf) -> Option<StaticServer> {
        if Command::new("python3").arg("--version").output().is_err() {
            eprintln!("skipped: python3 is not installed (needed to serve the binary caches over HTTP)");
            return None;
        }
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
                .arg(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start python3 -m http.server");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(StaticServer { child, port, log });
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("python3 -m http.server did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// The URL of the cache folder `name`.
    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// The request lines served so far.
    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Source, caches and server for a test; `None` when it is skipped.
fn setup(caches: &[(&str, &str, bool)]) -> Option<(Source, StaticServer)> {
    let src = Source::build()?;
    for (name, compression, signed) in caches {
        src.push(name, compression, *signed);
    }
    let server = StaticServer::start(&src.caches, src.store.root().join("http.log"))?;
    Some((src, server))
}

/// `nix-build`/`nix build` of the closure into a fresh armitage store from
/// a signed cache of each compression (2.8 and 2.26 clients in turn): the
/// outputs are fetched over HTTP, nothing is built, and the target has the
/// source's paths.
#[test]
fn substitutes_a_closure_from_each_compression() {
    let caches = [("xz", "xz", true), ("zstd", "zstd", true), ("bzip2", "bzip2", true), ("none", "none", true)];
    let Some((src, server)) = setup(&caches) else { return };
    let nix_2_26 = Nix::find(NixVersion::V2_26);
    for (i, (name, _, _)) in caches.iter().enumerate() {
        let nix = match (&nix_2_26, i % 2) {
            (Some(n), 1) => n.clone(),
            _ => src.nix.clone(),
        };
        let what = format!(
            "{} of the closure from the {name} cache with {}",
            if nix.version == NixVersion::V2_26 { "nix build" } else { "nix-build" },
            nix.version
        );
        let url = server.url(name);
        let target = src.target(&src.conf(&url));
        let daemon = Daemon::armitage(&target);
        let out = src.build_through(&daemon, &target, &nix, &[]);
        assert_ok(&what, &out, &src.top, &daemon);
        let err = text(&out.stderr);
        assert!(src.built().is_empty(), "{what}: nothing is built, but builders ran for {:?}:\n{err}", src.built());
        // Fetched, as the client shows it.
        for p in src.infos.keys() {
            assert!(
                err.contains(&format!("copying path '{p}' from '{url}'")),
                "{what}: no copying line for {p}:\n{err}"
            );
        }
        assert!(!err.contains("error:"), "{what}: errors:\n{err}");
        let nar = src.nar_file(name, &src.top);
        let nar_url = nar.strip_prefix(&src.caches).unwrap().display().to_string();
        assert!(server.requests().contains(&format!("GET /{nar_url} ")), "{what}: {nar_url} was not downloaded");
        assert_same_closure(&src, &daemon, &target, true);
        // Built again: all valid, nothing to do.
        let again = src.build_through(&daemon, &target, &nix, &[]);
        assert_ok(&format!("{what}, again"), &again, &src.top, &daemon);
        assert!(!text(&again.stderr).contains("copying path"), "{what}, again: {}", text(&again.stderr));
    }
}

/// The "will be fetched" summary of a dry run, and `nix-store -r` of an
/// output path (an opaque path: BuildPaths) and `builtins.storePath` of one
/// (EnsurePath): the summaries are CppNix 2.8's word for word, and the
/// paths are substituted without building anything.
#[test]
fn dry_runs_and_opaque_paths() {
    let Some((src, server)) = setup(&[("xz", "xz", true)]) else { return };
    let url = server.url("xz");
    let nix_2_26 = Nix::find(NixVersion::V2_26);
    // What each dry run prints on stderr, for armitage and nix-daemon 2.8.
    let dry_runs = |cppnix: bool| -> Vec<(String, String)> {
        let target = src.target(&src.conf(&url));
        let daemon = if cppnix { Daemon::nix(&target, &src.nix) } else { Daemon::armitage(&target) };
        let mut shown = Vec::new();
        let mut runs: Vec<(String, Command)> = Vec::new();
        let mut c = client(&daemon, &target, &src.nix, "nix-store");
        c.args(["-r", "--dry-run", &src.top]);
        runs.push(("nix-store -r --dry-run".into(), c));
        let mut c = client(&daemon, &target, &src.nix, "nix-build");
        c.arg(&src.expr).args(["--no-out-link", "--dry-run"]);
        runs.push(("nix-build --dry-run".into(), c));
        // allowSubstitutes = false: built, though the cache has its output.
        let mut c = client(&daemon, &target, &src.nix, "nix-build");
        c.arg(&src.local_expr).args(["--no-out-link", "--dry-run"]);
        runs.push(("nix-build --dry-run of sub-local".into(), c));
        if let Some(n) = &nix_2_26 {
            let mut c = client(&daemon, &target, n, "nix");
            c.args(["build", "--dry-run", "--no-link", "-f"]).arg(&src.expr);
            runs.push(("nix build --dry-run (2.26)".into(), c));
        }
        // The "S" column: QuerySubstitutablePaths, which asks only caches
        // that want mass queries (file:// caches do not say they do).
        let mut c = client(&daemon, &target, &src.nix, "nix-env");
        c.arg("-f").arg(&src.expr).args([
            "-qa",
            "--status",
            "--option",
            "substituters",
            &format!("{url}?want-mass-query=1"),
        ]);
        runs.push(("nix-env -qa --status".into(), c));
        for (what, mut c) in runs {
            let out = output(&mut c);
            assert!(out.status.success(), "{what} against {}: {}", daemon.name, text(&out.stderr));
            shown.push((what, format!("{}{}", text(&out.stderr), text(&out.stdout))));
        }
        assert!(src.built().is_empty(), "a dry run builds nothing");
        assert!(!is_valid(&daemon, &target, &src.nix, &src.top), "a dry run fetches nothing");
        shown
    };
    let ours = dry_runs(false);
    let theirs = dry_runs(true);
    for ((what, o), (_, t)) in ours.iter().zip(&theirs) {
        let summary = |s: &str| -> Vec<String> {
            let mut lines: Vec<String> = s.lines().filter(|l| !l.starts_with("warning:")).map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(summary(o), summary(t), "{what}: armitage (left) and nix-daemon 2.8 differ");
        if what.starts_with("nix-env") {
            assert_eq!(o.trim(), "--S  sub-top", "{what}: not installed, not present, substitutable");
        } else {
            assert!(o.contains(&format!("these {OUTPUTS} paths will be fetched (")), "{what}:\n{o}");
        }
        if what.contains("sub-local") {
            assert!(o.contains("this derivation will be built:"), "{what}:\n{o}");
        }
    }

    // nix-store -r of the top output: BuildPaths of an opaque path.
    let target = src.target(&src.conf(&url));
    let daemon = Daemon::armitage(&target);
    let out = output(client(&daemon, &target, &src.nix, "nix-store").args(["-r", &src.top]));
    assert_ok("nix-store -r of the top output", &out, &src.top, &daemon);
    assert!(src.built().is_empty(), "nix-store -r builds nothing: {:?}", src.built());
    assert!(text(&out.stderr).contains(&format!("copying path '{}' from '{url}'", src.top)), "{}", text(&out.stderr));
    assert_same_closure(&src, &daemon, &target, true);

    // allowSubstitutes = false: built, its inputs fetched.
    let out = output(client(&daemon, &target, &src.nix, "nix-build").arg(&src.local_expr).arg("--no-out-link"));
    assert_ok("nix-build of sub-local", &out, &src.local, &daemon);
    assert_eq!(src.built(), BTreeSet::from(["sub-local".to_owned()]), "{}", text(&out.stderr));
    drop(daemon);

    // builtins.storePath in read-write mode: EnsurePath of an invalid path.
    let target = src.target(&src.conf(&url));
    let daemon = Daemon::armitage(&target);
    let e = src.output("sub-e");
    let expr = format!("builtins.toString (builtins.storePath \"{e}\")");
    let out = output(client(&daemon, &target, &src.nix, "nix-instantiate").args([
        "--eval",
        "--read-write-mode",
        "-E",
        &expr,
    ]));
    assert!(out.status.success(), "builtins.storePath: {}\n{}", text(&out.stderr), daemon.log());
    assert_eq!(line(text(&out.stdout)), format!("\"{e}\""));
    for p in [&e, &src.output("sub-b"), &src.output("sub-a")] {
        assert!(is_valid(&daemon, &target, &src.nix, p), "{p} (the closure of sub-e) is substituted");
    }
    assert!(!is_valid(&daemon, &target, &src.nix, &src.top), "only what was asked for is fetched");
    assert!(src.built().is_empty());
}

/// Tampered caches: a narinfo whose NarHash or references were changed
/// after signing is passed over (the top output is built, the rest
/// fetched); accepted without its signature (`?trusted=1`), its NAR does
/// not match and the path is refused. A NAR file with a flipped byte
/// (compressed, and uncompressed with no FileHash to catch it first) is
/// refused too. Refused without `--fallback`: the build fails with
/// CppNix's message and nothing is registered; with it: the top output is
/// built.
#[test]
fn tampered_substitutes_are_refused() {
    let Some((src, server)) = setup(&[("xz", "xz", true), ("none", "none", true)]) else { return };
    let top = src.top.clone();
    // Tampered copies of the caches.
    src.copy_cache("xz", "bad-narhash");
    src.edit_narinfo("bad-narhash", &top, |t| {
        let at = t.find("NarHash: sha256:").unwrap() + 16;
        let flipped = if &t[at..=at] == "0" { "1" } else { "0" };
        format!("{}{flipped}{}", &t[..at], &t[at + 1..])
    });
    src.copy_cache("xz", "bad-refs");
    let dropped = src.output("sub-e");
    let dropped_base = dropped.rsplit('/').next().unwrap().to_owned();
    src.edit_narinfo("bad-refs", &top, |t| {
        t.replace(&format!(" {dropped_base}"), "").replace(&format!("{dropped_base} "), "")
    });
    src.copy_cache("xz", "bad-nar-xz");
    let nar = src.nar_file("bad-nar-xz", &top);
    let mut bytes = std::fs::read(&nar).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&nar, bytes).unwrap();
    src.copy_cache("none", "bad-nar-none");
    let nar = src.nar_file("bad-nar-none", &top);
    let mut bytes = std::fs::read(&nar).unwrap();
    let at = bytes.windows(9).position(|w| w == b"top needs").expect("the top output's text in its NAR");
    bytes[at] = b'T';
    std::fs::write(&nar, bytes).unwrap();
    src.edit_narinfo("bad-nar-none", &top, |t| {
        t.lines()
            .filter(|l| !l.starts_with("FileHash:") && !l.starts_with("FileSize:"))
            .map(|l| format!("{l}\n"))
            .collect()
    });

    let unsigned_warning = |url: &str| {
        format!(
            "warning: the substitute for '{top}' from '{url}' is not signed by any of the keys in 'trusted-public-keys'"
        )
    };
    // Passed over: the top output is built, the rest fetched.
    for name in ["bad-narhash", "bad-refs"] {
        let url = server.url(name);
        let target = src.target(&src.conf(&url));
        let daemon = Daemon::armitage(&target);
        let out = src.build_through(&daemon, &target, &src.nix, &[]);
        assert_ok(name, &out, &top, &daemon);
        let err = text(&out.stderr);
        assert_eq!(src.built(), BTreeSet::from(["sub-top".to_owned()]), "{name}: only the top is built:\n{err}");
        assert!(err.contains(&unsigned_warning(&url)), "{name}: the client is told why:\n{err}");
        // Passing a substitute over is no error (CppNix says "no substituter
        // can build it" at debug level only).
        assert!(!err.contains("error:"), "{name}: errors for a build that succeeded:\n{err}");
        assert!(!err.contains(&format!("copying path '{top}'")), "{name}:\n{err}");
        let info =
            path_info_by_path(&run(client(&daemon, &target, &src.nix, "nix").args(["path-info", "--json", &top])));
        assert_eq!(field(&info[&top], "ultimate"), Some(&Value::Bool(true)), "{name}: the top output was built here");
        assert_eq!(references(&info[&top]), references(&src.infos[&top]), "{name}: the built output's own references");
    }

    let some_failed = format!(
        "error: some substitutes for the outputs of derivation '{}' failed (usually happens due to networking issues); try '--fallback' to build derivation from source",
        field(&src.infos[&top], "deriver").and_then(Value::as_str).unwrap()
    );
    // Refused: (cache, the first error line armitage prints, whether
    // nix-daemon 2.8 prints the same one).
    let cases = [
        ("bad-narhash?trusted=1", format!("error: hash mismatch importing path '{top}';"), true),
        ("bad-nar-xz", format!("error: hash mismatch in file downloaded from '{}/", server.url("bad-nar-xz")), false),
        ("bad-nar-none", format!("error: hash mismatch importing path '{top}';"), true),
    ];
    for (name, first, cppnix_same) in &cases {
        let url = server.url(name);
        let mut errors = Vec::new();
        for cppnix in [false, true] {
            let target = src.target(&src.conf(&url));
            let daemon = if cppnix { Daemon::nix(&target, &src.nix) } else { Daemon::armitage(&target) };
            let out = src.build_through(&daemon, &target, &src.nix, &[]);
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{name} with {}: a refused substitute fails the build:\n{err}", daemon.name);
            assert!(src.built().is_empty(), "{name} with {}: nothing is built without --fallback", daemon.name);
            assert!(
                !is_valid(&daemon, &target, &src.nix, &top),
                "{name} with {}: {top} is not registered",
                daemon.name
            );
            // (CppNix leaves the unpacked, invalid path behind for the GC.)
            assert!(cppnix || !Path::new(&top).exists(), "{name}: nothing is left at {top}");
            // armitage fetches every other path; CppNix without keep-going
            // stops its other goals at the first failure, so what it fetched
            // by then depends on timing.
            if !cppnix {
                for p in src.infos.keys().filter(|p| **p != top) {
                    assert!(is_valid(&daemon, &target, &src.nix, p), "{name} with {}: {p} is fetched", daemon.name);
                }
            }
            let out = output(client(&daemon, &target, &src.nix, "nix-store").args(["--verify", "--check-contents"]));
            assert!(out.status.success(), "{name} with {}: verify:\n{}", daemon.name, text(&out.stderr));
            if !cppnix {
                // --fallback: the top is built.
                let out = src.build_through(&daemon, &target, &src.nix, &["--fallback"]);
                assert_ok(&format!("{name} with --fallback"), &out, &top, &daemon);
                assert_eq!(
                    src.built(),
                    BTreeSet::from(["sub-top".to_owned()]),
                    "{name} with --fallback builds the top"
                );
            }
            errors.push(error_lines(&err));
        }
        let (ours, theirs) = (&errors[0], &errors[1]);
        assert!(
            ours.first().is_some_and(|l| l.starts_with(first.as_str())),
            "{name}: armitage's first error: {ours:#?}"
        );
        assert_eq!(ours.last(), Some(&some_failed), "{name}: armitage's last error");
        assert_eq!(ours.last(), theirs.last(), "{name}: the last error, armitage's and nix-daemon 2.8's");
        if *cppnix_same {
            assert_eq!(ours.first(), theirs.first(), "{name}: the first error, armitage's and nix-daemon 2.8's");
        }
    }
}

/// An unsigned cache: with `require-sigs = true` its substitutes are
/// passed over with CppNix's warning and everything is built; marked
/// `?trusted=1` it is used.
#[test]
fn unsigned_caches_need_trust() {
    let Some((src, server)) = setup(&[("unsigned", "zstd", false)]) else { return };
    let url = server.url("unsigned");
    let target = src.target(&src.conf(&url));
    let daemon = Daemon::armitage(&target);
    let out = src.build_through(&daemon, &target, &src.nix, &[]);
    assert_ok("a build with an unsigned cache", &out, &src.top, &daemon);
    let err = text(&out.stderr);
    assert_eq!(src.built().len(), DERIVATIONS.len(), "everything is built:\n{err}");
    assert!(!err.contains("copying path"), "nothing is fetched:\n{err}");
    assert!(!err.contains("error:"), "errors for a build that succeeded:\n{err}");
    assert!(
        err.contains(&format!(
            "warning: the substitute for '{}' from '{url}' is not signed by any of the keys in 'trusted-public-keys'",
            src.top
        )),
        "the client is told why:\n{err}"
    );
    drop(daemon);

    let trusted = format!("{url}?trusted=1");
    let target = src.target(&src.conf(&trusted));
    let daemon = Daemon::armitage(&target);
    let out = src.build_through(&daemon, &target, &src.nix, &[]);
    assert_ok("a build with an unsigned cache marked trusted", &out, &src.top, &daemon);
    assert!(src.built().is_empty(), "nothing is built: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("copying path '{}' from '{url}'", src.top)), "{}", text(&out.stderr));
    assert_same_closure(&src, &daemon, &target, false);
}

/// A static file server that breaks one file: for `broken` it sends the
/// headers (with the full length) and half the body, then closes.
fn breaking_server(dir: PathBuf, broken: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (dir, broken) = (dir.clone(), broken.clone());
            std::thread::spawn(move || serve_one(conn, &dir, &broken));
        }
    });
    port
}

fn serve_one(mut conn: TcpStream, dir: &Path, broken: &str) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let rel = target.trim_start_matches('/');
    let file = (!rel.split('/').any(|c| c == ".." || c.is_empty())).then(|| dir.join(rel));
    match file.and_then(|f| std::fs::read(f).ok()) {
        Some(body) => {
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let send = if rel == broken { &body[..body.len() / 2] } else { &body[..] };
            let _ = conn.write_all(send);
        }
        None => {
            let _ = write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    }
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// A cache that breaks off the download of the top output's NAR midway:
/// without `--fallback` the build fails with the message CppNix's
/// nix-daemon 2.8 gives, and nothing is registered; with it, the top
/// output is built (the rest was fetched).
#[test]
fn fallback_builds_when_a_download_breaks() {
    let Some(src) = Source::build() else { return };
    src.push("xz", "xz", true);
    let top = src.top.clone();
    let nar = src.nar_file("xz", &top);
    let rel = nar.strip_prefix(src.caches.join("xz")).unwrap().display().to_string();
    let port = breaking_server(src.caches.join("xz"), rel);
    let url = format!("http://127.0.0.1:{port}");
    let deriver = field(&src.infos[&top], "deriver").and_then(Value::as_str).unwrap().to_owned();
    let some_failed = format!(
        "error: some substitutes for the outputs of derivation '{deriver}' failed (usually happens due to networking issues); try '--fallback' to build derivation from source"
    );
    let mut last_errors = Vec::new();
    for cppnix in [false, true] {
        // Few retries, so that CppNix gives up soon.
        let target = src.target(&format!("{}download-attempts = 2\n", src.conf(&url)));
        let daemon = if cppnix { Daemon::nix(&target, &src.nix) } else { Daemon::armitage(&target) };
        let out = src.build_through(&daemon, &target, &src.nix, &[]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{}: a broken download fails the build:\n{err}", daemon.name);
        assert!(src.built().is_empty(), "{}: nothing is built without --fallback", daemon.name);
        assert!(!is_valid(&daemon, &target, &src.nix, &top), "{}: {top} is not registered", daemon.name);
        assert!(cppnix || !Path::new(&top).exists(), "nothing is left at {top}");
        let errors = error_lines(&err);
        assert_eq!(errors.last(), Some(&some_failed), "{}: the last error:\n{err}", daemon.name);
        last_errors.push(errors.last().cloned());
        // The output path itself (an opaque path): its substitution fails.
        // armitage ends with the download's error; CppNix prints it (in
        // curl's words) and ends with "build of '<path>' failed".
        let out = output(client(&daemon, &target, &src.nix, "nix-store").args(["-r", &top]));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{}: nix-store -r of {top} succeeded", daemon.name);
        assert!(!is_valid(&daemon, &target, &src.nix, &top), "{}: {top} is not registered", daemon.name);
        if !cppnix {
            let last = error_lines(&err).pop().unwrap_or_default();
            assert!(last.starts_with(&format!("error: unable to download '{url}/nar/")), "nix-store -r:\n{err}");
        }
        if !cppnix {
            let out = src.build_through(&daemon, &target, &src.nix, &["--fallback"]);
            assert_ok("a build with --fallback", &out, &top, &daemon);
            assert_eq!(src.built(), BTreeSet::from(["sub-top".to_owned()]), "--fallback builds the top output only");
            let out = output(client(&daemon, &target, &src.nix, "nix-store").args(["--verify", "--check-contents"]));
            assert!(out.status.success(), "verify:\n{}", text(&out.stderr));
        }
    }
    assert_eq!(last_errors[0], last_errors[1], "armitage's and nix-daemon 2.8's last error");
}
