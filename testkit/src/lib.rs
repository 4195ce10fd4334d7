//! Test support shared by the workspace's test suites: the real Nix
//! binaries (Nix 2.8 from Debian, Nix 2.26.3 unpacked by
//! `scripts/install-test-deps`), throwaway stores they and armitage can share,
//! and the `armitage` binary.
//!
//! Tests that need a Nix that is not there print why and return, unless
//! `ARMITAGE_REQUIRE_NIX=1` (set by `scripts/test`) or `CI` is set, in which
//! case a missing Nix is a failure: CI must never pass by skipping.

pub mod garage;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Nix releases the tests compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NixVersion {
    V2_8,
    V2_26,
}

impl NixVersion {
    pub const ALL: [NixVersion; 2] = [NixVersion::V2_8, NixVersion::V2_26];

    fn env_var(self) -> &'static str {
        match self {
            NixVersion::V2_8 => "ARMITAGE_NIX_2_8",
            NixVersion::V2_26 => "ARMITAGE_NIX_2_26",
        }
    }

    fn version_prefix(self) -> &'static str {
        match self {
            NixVersion::V2_8 => "2.8.",
            NixVersion::V2_26 => "2.26.",
        }
    }
}

impl fmt::Display for NixVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NixVersion::V2_8 => "Nix 2.8",
            NixVersion::V2_26 => "Nix 2.26",
        })
    }
}

/// A real Nix installation: a directory holding `nix`, `nix-store`, ...
#[derive(Debug, Clone)]
pub struct Nix {
    pub version: NixVersion,
    bin: PathBuf,
}

pub(crate) fn must_have_nix() -> bool {
    std::env::var_os("ARMITAGE_REQUIRE_NIX").is_some_and(|v| v == "1") || std::env::var_os("CI").is_some()
}

/// Whether the program `name` runs here (`name --version` succeeds);
/// prints why the calling test is skipped when not, and panics instead when
/// tools are required (`CI` or `ARMITAGE_REQUIRE_NIX=1`, as for Nix).
pub fn tool_available(name: &str) -> bool {
    let why = match Command::new(name).arg("--version").output() {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!("`{name} --version` exited with {}", out.status),
        Err(e) => format!("{name} cannot run: {e}"),
    };
    if must_have_nix() {
        panic!("{name} is required but {why} (scripts/install-test-deps installs it)");
    }
    eprintln!("skipped: {why}");
    false
}

impl Nix {
    /// Finds the given Nix, or prints why the calling test is skipped and
    /// returns `None` (panics instead when Nix is required, see the crate docs).
    pub fn find(version: NixVersion) -> Option<Nix> {
        let found = Self::locate(version);
        match found {
            Ok(nix) => Some(nix),
            Err(why) if must_have_nix() => panic!("{version} is required but {why}"),
            Err(why) => {
                eprintln!("skipped: {version} not available: {why} (run the tests through scripts/test)");
                None
            }
        }
    }

    fn locate(version: NixVersion) -> Result<Nix, String> {
        let bin = match std::env::var_os(version.env_var()) {
            Some(dir) => PathBuf::from(dir),
            None if version == NixVersion::V2_8 => PathBuf::from("/usr/bin"),
            None => return Err(format!("{} is not set", version.env_var())),
        };
        // `nix --version`, never `nix-store --version`: nix-store opens the
        // default store before it looks at its arguments, so on a machine
        // whose /nix/var/nix does not exist yet, the first tests to start
        // raced each other to create it and the losers printed no version
        // ("'/nix/var/nix/db/schema' is corrupt", "database is busy").
        let nix = bin.join("nix");
        let out =
            Command::new(&nix).arg("--version").output().map_err(|e| format!("{} cannot run: {e}", nix.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v = text.trim().rsplit(' ').next().unwrap_or_default();
        if !out.status.success() || !v.starts_with(version.version_prefix()) {
            return Err(format!(
                "`{} --version` printed {v:?} ({}): {}",
                nix.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Nix { version, bin })
    }

    /// The folder holding this Nix's tools.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A command for one of Nix's tools (`nix`, `nix-store`, `nix-hash`, ...)
    /// with a clean environment apart from `PATH`.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd
    }
}

/// The real user id, from the `Uid:` line of `/proc/self/status`.
pub fn real_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
    uid.and_then(|u| u.parse().ok()).expect("a Uid: line in /proc/self/status")
}

/// Sends SIGTERM to `pid`.
pub fn signal_term(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// A directory removed with everything in it when dropped. testkit keeps
/// the format crate's tests free of file system crates (`cargo tree -p
/// store` lists dev-dependencies too).
pub struct TempDir(PathBuf);

// Making one creates a directory: an action, not a default value.
#[allow(clippy::new_without_default)]
impl TempDir {
    /// A new empty directory in the system's temp dir.
    pub fn new() -> TempDir {
        Self::new_in(&std::env::temp_dir(), "armitage-")
    }

    /// A new empty directory in `parent`, named `prefix` and a unique tail.
    pub fn new_in(parent: &Path, prefix: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let path = parent.join(format!("{prefix}{}-{n}-{nanos:08x}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("create a temp dir in {}: {e}", parent.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The folder tests create their stores in: world-traversable so that build
/// users can reach a store inside it.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::var_os("ARMITAGE_TEST_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/armitage-tests-{}", real_uid())));
    std::fs::create_dir_all(&dir).expect("create the test scratch dir");
    dir
}

/// A throwaway store (store, state, log and conf dirs under one temp folder),
/// removed when dropped.
pub struct TestStore {
    tmp: TempDir,
    pub store_dir: String,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub home: PathBuf,
}

impl TestStore {
    /// A store with the default test nix.conf.
    pub fn new() -> TestStore {
        Self::with_conf("")
    }

    /// A store whose nix.conf has `extra` appended to the defaults (no
    /// substituters, no sandbox, `nix-command` enabled).
    pub fn with_conf(extra: &str) -> TestStore {
        let tmp = TempDir::new_in(&scratch_dir(), "store-");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp store dir");
        let root = tmp.path();
        let store = TestStore {
            store_dir: root.join("store").to_str().expect("utf-8 scratch path").to_owned(),
            state_dir: root.join("var/nix"),
            log_dir: root.join("var/log/nix"),
            conf_dir: root.join("etc"),
            home: root.join("home"),
            tmp,
        };
        for dir in [&store.state_dir, &store.log_dir, &store.conf_dir, &store.home] {
            std::fs::create_dir_all(dir).expect("create store subdir");
        }
        std::fs::write(
            store.conf_dir.join("nix.conf"),
            format!(
                "substituters =\nsandbox = false\nexperimental-features = nix-command\n\
                 require-sigs = false\n{extra}\n"
            ),
        )
        .expect("write nix.conf");
        store
    }

    /// The folder holding everything of this store.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Where armitage run by [`TestStore::armitage`] reads armitage.toml.
    pub fn armitage_config(&self) -> PathBuf {
        self.conf_dir.join("armitage.toml")
    }

    /// A scratch folder for inputs, next to (not inside) the store.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join("work").join(name);
        std::fs::create_dir_all(&p).expect("create work dir");
        p
    }

    /// The full path of a store path's base name in this store.
    pub fn path_of(&self, base_name: &str) -> String {
        format!("{}/{base_name}", self.store_dir)
    }

    /// A Nix tool acting directly on this store (`NIX_REMOTE=local`).
    pub fn nix(&self, nix: &Nix, tool: &str) -> Command {
        let mut cmd = nix.command(tool);
        self.set_env(&mut cmd);
        cmd.env("NIX_REMOTE", "local");
        cmd
    }

    /// The armitage CLI on this store (dirs given as flags), reading its
    /// own configuration from [`TestStore::armitage_config`] (missing
    /// unless a test writes it: the defaults), never the machine's.
    pub fn armitage(&self) -> Command {
        let mut cmd = Command::new(armitage_bin());
        self.set_env(&mut cmd);
        cmd.env("ARMITAGE_CONFIG", self.armitage_config());
        cmd.arg("--store-dir").arg(&self.store_dir);
        cmd.arg("--state-dir").arg(&self.state_dir);
        cmd.arg("--log-dir").arg(&self.log_dir);
        cmd
    }

    fn set_env(&self, cmd: &mut Command) {
        cmd.env("NIX_STORE_DIR", &self.store_dir)
            .env("NIX_STATE_DIR", &self.state_dir)
            .env("NIX_LOG_DIR", &self.log_dir)
            .env("NIX_CONF_DIR", &self.conf_dir)
            .env("HOME", &self.home)
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("NIX_PATH", "")
            .env("TZ", "UTC");
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The `armitage` binary of this build (`ARMITAGE_BIN` overrides): it sits
/// next to the `deps/` folder the running test binary is in.
pub fn armitage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ARMITAGE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("armitage");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo build) before running tests", bin.display());
    bin
}

/// Runs a command; panics with its stderr unless it succeeds. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    if !out.status.success() {
        panic!("{} failed ({}):\n{}", describe(cmd), out.status, String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs a command that must fail; returns its stderr.
pub fn run_fail(cmd: &mut Command) -> String {
    let out = output(cmd);
    if out.status.success() {
        panic!("{} unexpectedly succeeded:\n{}", describe(cmd), String::from_utf8_lossy(&out.stdout));
    }
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command and returns its raw output, whatever its status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)))
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Trims a single trailing newline from tool output.
pub fn line(s: impl AsRef<str>) -> String {
    s.as_ref().trim_end_matches('\n').to_owned()
}

/// Writes a file, creating parent dirs.
pub fn write_file(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dirs");
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A daemon serving a [`TestStore`] on a socket of its own: armitage, or
/// CppNix's `nix-daemon` of some version. Killed (by its PID) when dropped.
pub struct Daemon {
    child: std::process::Child,
    pub socket: PathBuf,
    /// Which daemon this is, for messages.
    pub name: String,
    stderr_log: PathBuf,
}

impl Daemon {
    /// `armitage daemon` on `store`, with its nix.conf.
    pub fn armitage(store: &TestStore) -> Daemon {
        Self::armitage_with(store, "armitage-daemon.log", |_| {})
    }

    /// As [`Daemon::armitage`], its stderr in `log_name` (beside the
    /// store), its command adjusted by `adjust` before it starts (an
    /// environment of its own, say).
    pub fn armitage_with(store: &TestStore, log_name: &str, adjust: impl FnOnce(&mut Command)) -> Daemon {
        let socket = store.root().join("armitage.sock");
        let log = store.root().join(log_name);
        let mut cmd = store.armitage();
        cmd.arg("daemon").arg("--socket").arg(&socket);
        adjust(&mut cmd);
        Self::start(cmd, socket, "armitage".into(), log)
    }

    /// CppNix's `nix-daemon` of `nix` on `store` (`NIX_REMOTE=local`, or it
    /// would connect to itself).
    ///
    /// A fresh store is initialised first, as any installed store is:
    /// CppNix 2.8 opens the store in each connection's process, and two
    /// first connections racing to create it fail one of them ("'…/db/schema'
    /// is corrupt": one reads the schema file while the other writes it), so
    /// its client sees the connection reset before the handshake.
    pub fn nix(store: &TestStore, nix: &Nix) -> Daemon {
        if !store.state_dir.join("db/schema").exists() {
            run(store.nix(nix, "nix-store").arg("--init"));
        }
        let socket = store.root().join("nix-daemon.sock");
        let log = store.root().join("nix-daemon.log");
        let mut cmd = store.nix(nix, "nix-daemon");
        cmd.env("NIX_DAEMON_SOCKET_PATH", &socket);
        Self::start(cmd, socket, format!("nix-daemon ({})", nix.version), log)
    }

    fn start(mut cmd: Command, socket: PathBuf, name: String, stderr_log: PathBuf) -> Daemon {
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(&stderr_log).expect("create daemon log");
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(log);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}) before listening:\n{}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                );
            }
            assert!(std::time::Instant::now() < deadline, "{name} did not start listening on {}", socket.display());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Daemon { child, socket, name, stderr_log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// A Nix client tool talking to this daemon (`NIX_REMOTE=daemon`), with
    /// `store`'s directories and nix.conf.
    pub fn client(&self, store: &TestStore, nix: &Nix, tool: &str) -> Command {
        let mut cmd = nix.command(tool);
        store.client_env(&mut cmd);
        cmd.env("NIX_REMOTE", "daemon").env("NIX_DAEMON_SOCKET_PATH", &self.socket);
        cmd
    }

    /// `kill -9`, waits for it, and returns what it wrote on stderr.
    pub fn kill_9(mut self) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for the daemon");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{} killed by SIGKILL", self.name);
        self.log()
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal_term(self.child.id());
        let status = self.child.wait().expect("wait for the daemon");
        std::mem::forget(self);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestStore {
    /// The environment a client of this store's daemon needs.
    pub fn client_env(&self, cmd: &mut Command) {
        self.set_env(cmd);
    }
}

/// A plain HTTP origin on loopback serving a folder (Python's
/// http.server), killed when dropped: the upstream of the witness tests.
pub struct HttpOrigin {
    child: std::process::Child,
    pub port: u16,
}

impl HttpOrigin {
    /// On a port of the system's choice.
    pub fn serve(dir: &Path) -> HttpOrigin {
        Self::serve_on(dir, 0)
    }

    /// On `port` (0: any). http.server reuses the address, so an origin
    /// can come back on the port of one just stopped.
    pub fn serve_on(dir: &Path, port: u16) -> HttpOrigin {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut first)
            .expect("read its first line");
        let port = first
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in http.server's first line: {first:?}"));
        HttpOrigin { child, port }
    }
}

impl Drop for HttpOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pseudo-random bytes (xorshift) that do not repeat in any short period,
/// the same for the same seed: big test files that are not all alike.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
