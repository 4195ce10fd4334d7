//! armitage as a remote builder, reached over `ssh-ng://` as CppNix reaches
//! `nix-daemon --stdio`: CppNix's nix-daemon 2.8 handing its builds to
//! armitage through its build hook (BuildDerivation), and stock clients
//! using armitage as their store (`nix build --store ssh-ng://...`).
//!
//! No SSH: a stand-in `ssh` first on `PATH` ignores its arguments and runs
//! `armitage daemon --stdio` on a store of its own (it answers "started"
//! when asked to and has no control master, for Nix 2.26). The host is not
//! `localhost`, for which CppNix runs the remote command with `bash -c`
//! instead of `ssh`.
//!
//! A remote builder gets store paths in the local store's store dir, so
//! the two stores need the same store dir: for the build hook the stand-in
//! runs armitage in a mount namespace of its own where armitage's store
//! (another folder) is mounted over CppNix's store dir. That needs root
//! and `unshare`; without them the hook tests are skipped (and say why).

use compat_tests::text;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{Nix, NixVersion, TestStore, armitage_bin, line, output, write_file};

/// The host name of the remote builder.
const HOST: &str = "armitage-builder";

/// Two derivations: `rb-dep` (with a `builtins.toFile` source) and
/// `rb-top` on it; `@MARKERS@` is the folder each builder leaves a marker
/// in. `-A dep` is `rb-dep` alone.
const REMOTE_NIX: &str = r#"
let
  mk = name: deps: script: derivation ({
    inherit name;
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" ("echo built > @MARKERS@/${name}; " + script) ];
    src = builtins.toFile "rb-src" "a source\n";
  } // deps);
  dep = mk "rb-dep" {} "echo \"dep from $src\" > $out";
in mk "rb-top" { inherit dep; } "echo \"top on $dep\" > $out" // { inherit dep; }
"#;

/// `'...'` for sh.
fn quote(s: impl AsRef<str>) -> String {
    format!("'{}'", s.as_ref().replace('\'', r"'\''"))
}

/// Whether this process may make mount namespaces, or why not.
fn can_mount() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("mounting armitage's store over CppNix's store dir needs root".into());
    }
    let ok =
        Command::new("unshare").args(["--mount", "true"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        return Err("`unshare --mount` does not work here (util-linux, and the right to make mount namespaces)".into());
    }
    Ok(())
}

/// The remote side: a store for armitage and a folder holding the
/// stand-in `ssh`, which logs its arguments.
struct Remote {
    store: TestStore,
    /// Where armitage's store files are.
    physical: PathBuf,
    bin: PathBuf,
    ssh_log: PathBuf,
    daemon_log: PathBuf,
}

impl Remote {
    /// An armitage store for the remote side (the stand-in `ssh` is
    /// written by [`Remote::ssh_runs`]).
    fn new() -> Remote {
        let store = TestStore::with_conf("build-users-group =\nsandbox = false\n");
        let bin = store.work_dir("fake-ssh");
        // Mounted before armitage could make it.
        std::fs::create_dir_all(&store.store_dir).unwrap();
        Remote {
            physical: PathBuf::from(&store.store_dir),
            ssh_log: store.root().join("ssh.log"),
            daemon_log: store.root().join("remote-daemon.log"),
            bin,
            store,
        }
    }

    /// Writes the stand-in `ssh` running `command` (a sh command line).
    fn ssh_runs(&self, command: &str) {
        let script = format!(
            "#!/bin/sh\n\
             # Stands in for ssh: ignores the host, options and remote command.\n\
             printf '%s\\n' \"$*\" >> {log}\n\
             for a in \"$@\"; do\n\
             \x20 # No control master (`-O check`, which Nix 2.26 asks first).\n\
             \x20 if [ \"$a\" = -O ]; then exit 255; fi\n\
             \x20 if [ \"$a\" = '-oLocalCommand=echo started' ]; then echo started; fi\n\
             done\n\
             exec {command} 2>>{daemon_log}\n",
            log = quote(self.ssh_log.to_str().unwrap()),
            daemon_log = quote(self.daemon_log.to_str().unwrap()),
        );
        let path = self.bin.join("ssh");
        write_file(&path, script);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `armitage daemon --stdio` on this store, as a sh command line, with
    /// its store dir `store_dir` and `flags`.
    fn armitage_stdio(&self, store_dir: &str, flags: &str) -> String {
        format!(
            "env NIX_CONF_DIR={conf} {bin} --store-dir {dir} --state-dir {state} --log-dir {logs} daemon --stdio {flags}",
            conf = quote(self.store.conf_dir.to_str().unwrap()),
            bin = quote(armitage_bin().to_str().unwrap()),
            dir = quote(store_dir),
            state = quote(self.store.state_dir.to_str().unwrap()),
            logs = quote(self.store.log_dir.to_str().unwrap()),
        )
    }

    /// `command` in a mount namespace where this store's files are at
    /// `store_dir`, as a sh command line.
    fn mounted_at(&self, store_dir: &str, command: &str) -> String {
        format!(
            "unshare --mount sh -c {}",
            quote(format!(
                "mount --bind {} {} && exec {command}",
                quote(self.physical.to_str().unwrap()),
                quote(store_dir)
            ))
        )
    }

    /// `PATH` with the stand-in `ssh` first.
    fn path(&self) -> String {
        format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default())
    }

    /// How often the stand-in ran.
    fn ssh_runs_so_far(&self) -> usize {
        std::fs::read_to_string(&self.ssh_log).map(|s| s.lines().count()).unwrap_or(0)
    }

    /// `armitage path-info --json` of `path` in this store seen at
    /// `store_dir` (in a mount namespace when that is not where it is).
    fn path_info(&self, store_dir: &str, path: &str) -> serde_json::Value {
        let query = format!(
            "{} --store-dir {} --state-dir {} --log-dir {} path-info --json {}",
            quote(armitage_bin().to_str().unwrap()),
            quote(store_dir),
            quote(self.store.state_dir.to_str().unwrap()),
            quote(self.store.log_dir.to_str().unwrap()),
            quote(path)
        );
        let command = if Path::new(store_dir) == self.physical { query } else { self.mounted_at(store_dir, &query) };
        let out = output(Command::new("sh").args(["-c", &command]));
        assert!(out.status.success(), "armitage path-info {path}: {}", text(&out.stderr));
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("path-info prints JSON");
        all.get(path).cloned().unwrap_or_else(|| panic!("{path} is not valid in armitage's store: {all}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon_log).unwrap_or_default()
    }
}

/// CppNix's nix-daemon on `store` with `path` as its `PATH` (its build hook
/// looks for `ssh` there). Killed (by its PID) when dropped.
struct CppNixDaemon {
    child: Child,
    socket: PathBuf,
}

impl CppNixDaemon {
    fn start(store: &TestStore, nix: &Nix, path: &str) -> CppNixDaemon {
        let socket = store.root().join("nix-daemon.sock");
        let log = std::fs::File::create(store.root().join("nix-daemon.log")).unwrap();
        let mut child = store
            .nix(nix, "nix-daemon")
            .env("PATH", path)
            .env("NIX_DAEMON_SOCKET_PATH", &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nix-daemon");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "nix-daemon exited before listening");
            assert!(Instant::now() < deadline, "nix-daemon did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        CppNixDaemon { child, socket }
    }

    fn client(&self, store: &TestStore, nix: &Nix, tool: &str) -> Command {
        let mut cmd = nix.command(tool);
        store.client_env(&mut cmd);
        cmd.env("NIX_REMOTE", "daemon").env("NIX_DAEMON_SOCKET_PATH", &self.socket);
        cmd
    }
}

impl Drop for CppNixDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local side of the build hook tests: a CppNix store that may not
/// build (`max-jobs = 0`) and has armitage as its one builder, and the
/// expression (with its marker folder).
struct Local {
    store: TestStore,
    markers: PathBuf,
    expr: PathBuf,
}

impl Local {
    fn new() -> Local {
        let store = TestStore::with_conf(&format!(
            "build-users-group =\nsandbox = false\nmax-jobs = 0\nbuilders = ssh-ng://{HOST} x86_64-linux\n"
        ));
        let markers = store.root().join("markers");
        std::fs::create_dir_all(&markers).unwrap();
        let expr = store.work_dir("expr").join("remote.nix");
        write_file(&expr, REMOTE_NIX.replace("@MARKERS@", markers.to_str().unwrap()));
        Local { store, markers, expr }
    }

    fn built(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.markers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// CppNix's nix-daemon 2.8 with `max-jobs = 0` and armitage as its builder
/// (`builders = ssh-ng://...`): `nix-build` of two derivations runs both
/// builds on armitage (BuildDerivation from CppNix's build hook, after it
/// copied the inputs there), and the outputs come back into CppNix's store
/// as armitage registered them.
#[test]
fn cppnix_builds_remotely_on_armitage() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    if let Err(why) = can_mount() {
        eprintln!("skipped: {why}");
        return;
    }
    let local = Local::new();
    let remote = Remote::new();
    let dir = local.store.store_dir.clone();
    remote.ssh_runs(&remote.mounted_at(&dir, &remote.armitage_stdio(&dir, "")));
    let daemon = CppNixDaemon::start(&local.store, &nix, &remote.path());
    let out = output(daemon.client(&local.store, &nix, "nix-build").arg(&local.expr).arg("--no-out-link"));
    let err = text(&out.stderr);
    assert!(out.status.success(), "nix-build through the build hook:\n{err}\narmitage's log:\n{}", remote.log());
    let top = line(text(&out.stdout));
    assert!(remote.ssh_runs_so_far() >= 1, "the stand-in ssh ran");
    assert!(err.contains(&format!("on 'ssh-ng://{HOST}'")), "the client is told where:\n{err}");
    assert_eq!(local.built(), ["rb-dep", "rb-top"], "both builders ran");

    let outs = line(text(&output(daemon.client(&local.store, &nix, "nix-store").args(["-qR", &top])).stdout));
    let outs: Vec<&str> = outs.lines().collect();
    assert_eq!(outs.len(), 3, "rb-top, rb-dep and rb-src: {outs:?}");
    for p in outs {
        // In armitage's store (its own files), as built there...
        let base = p.rsplit('/').next().unwrap();
        assert!(remote.physical.join(base).exists(), "{p} is in armitage's store folder");
        let ours = remote.path_info(&dir, p);
        // ... and in CppNix's, the same.
        let hash = line(text(&output(daemon.client(&local.store, &nix, "nix-store").args(["-q", "--hash", p])).stdout));
        let parse = |h: &str| store::hash::Hash::parse_any(h, None).unwrap_or_else(|e| panic!("a hash: {h}: {e}"));
        let ours_hash = ours["narHash"].as_str().unwrap_or_else(|| panic!("{p}: a narHash: {ours}"));
        assert_eq!(parse(ours_hash), parse(&hash), "{p}: armitage's NAR hash and CppNix's");
        assert_eq!(
            std::fs::read(remote.physical.join(base)).unwrap(),
            std::fs::read(p).unwrap(),
            "{p}: the same contents in both stores"
        );
        if !p.ends_with("-rb-src") {
            assert_eq!(ours["ultimate"], serde_json::Value::Bool(true), "{p} was built by armitage: {ours}");
        }
    }
    let verify = output(daemon.client(&local.store, &nix, "nix-store").args(["--verify", "--check-contents"]));
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

/// An untrusted client may not BuildDerivation an input-addressed
/// derivation (its outputs could then be anything): CppNix's hook against
/// `armitage daemon --stdio --force-untrusted` fails with CppNix's
/// message, as against `nix-daemon --stdio --force-untrusted` of 2.26
/// (2.8's has no such flag).
#[test]
fn untrusted_build_derivation_is_refused() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    if let Err(why) = can_mount() {
        eprintln!("skipped: {why}");
        return;
    }
    const REFUSED: &str = "you are not privileged to build input-addressed derivations";
    let nix_2_26 = Nix::find(NixVersion::V2_26);
    let mut errors = Vec::new();
    for cppnix in [false, true] {
        let local = Local::new();
        let remote = Remote::new();
        let dir = local.store.store_dir.clone();
        let command = if cppnix {
            let Some(n) = &nix_2_26 else { continue };
            format!(
                "env NIX_REMOTE=local NIX_STORE_DIR={} NIX_STATE_DIR={} NIX_LOG_DIR={} NIX_CONF_DIR={} \
                 NIX_CONFIG='extra-experimental-features = daemon-trust-override' {} --stdio --force-untrusted",
                quote(&dir),
                quote(remote.store.state_dir.to_str().unwrap()),
                quote(remote.store.log_dir.to_str().unwrap()),
                quote(remote.store.conf_dir.to_str().unwrap()),
                quote(n.command("nix-daemon").get_program().to_str().unwrap()),
            )
        } else {
            remote.armitage_stdio(&dir, "--force-untrusted")
        };
        remote.ssh_runs(&remote.mounted_at(&dir, &command));
        let daemon = CppNixDaemon::start(&local.store, &nix, &remote.path());
        // rb-dep only: its one input is content-addressed, which an
        // untrusted client may copy.
        let out = output(daemon.client(&local.store, &nix, "nix-build").arg(&local.expr).args([
            "-A",
            "dep",
            "--no-out-link",
        ]));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "an untrusted BuildDerivation succeeded (cppnix: {cppnix}):\n{err}");
        assert!(
            err.contains(REFUSED),
            "the client is told why (cppnix: {cppnix}):\n{err}\nremote's log:\n{}",
            remote.log()
        );
        assert!(local.built().is_empty(), "nothing is built");
        let lines: Vec<String> = err.lines().filter(|l| l.contains(REFUSED)).map(str::to_owned).collect();
        errors.push(lines);
    }
    if errors.len() == 2 {
        assert_eq!(errors[0], errors[1], "the refusal as the client shows it, armitage's and nix-daemon 2.26's");
    }
}

/// `nix build --store ssh-ng://...` (clients 2.8 and 2.26) with armitage
/// at the other end: the derivations are written to armitage's store and
/// built there (BuildPaths), and the outputs are valid in it.
#[test]
fn nix_build_with_an_ssh_ng_store() {
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { continue };
        let remote = Remote::new();
        let markers = remote.store.root().join("markers");
        std::fs::create_dir_all(&markers).unwrap();
        let expr = remote.store.work_dir("expr").join("remote.nix");
        write_file(&expr, REMOTE_NIX.replace("@MARKERS@", markers.to_str().unwrap()));
        let dir = remote.store.store_dir.clone();
        remote.ssh_runs(&remote.armitage_stdio(&dir, ""));
        let mut cmd = nix.command("nix");
        remote.store.client_env(&mut cmd);
        cmd.env("PATH", remote.path());
        if version == NixVersion::V2_8 {
            cmd.args(["--extra-experimental-features", "nix-command"]);
        }
        cmd.args(["build", "--store", &format!("ssh-ng://{HOST}"), "--no-link", "--json", "-f"]).arg(&expr);
        let out = output(&mut cmd);
        let err = text(&out.stderr);
        assert!(
            out.status.success(),
            "{version}: nix build --store ssh-ng://:\n{err}\narmitage's log:\n{}",
            remote.log()
        );
        assert!(remote.ssh_runs_so_far() >= 1, "{version}: the stand-in ssh ran");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nix build --json");
        let top =
            json[0]["outputs"]["out"].as_str().unwrap_or_else(|| panic!("{version}: an output: {json}")).to_owned();
        let mut built: Vec<String> = std::fs::read_dir(&markers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        built.sort();
        assert_eq!(built, ["rb-dep", "rb-top"], "{version}: armitage built both");
        let info = remote.path_info(&dir, &top);
        assert_eq!(info["ultimate"], serde_json::Value::Bool(true), "{version}: {top} was built by armitage: {info}");
        let drv = json[0]["drvPath"].as_str().expect("a drvPath");
        remote.path_info(&dir, drv);
        let contents = std::fs::read_to_string(&top).unwrap();
        assert!(contents.starts_with("top on ") && contents.contains("-rb-dep"), "{version}: {contents}");
    }
}
