//! A full disk: the store directory is a small tmpfs made for the test
//! (the state dir, with the SQLite database, stays on the normal disk),
//! served by `armitage daemon` to a stock Nix 2.8 client. An add, an import
//! and a build that do not fit must fail with an error saying space ran
//! out, leave nothing valid, half-made or staged behind, and corrupt
//! nothing already valid; once space is freed the same three succeed.
//!
//! Needs root (to mount); otherwise the test prints why and returns.

use compat_tests::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, write_file};

/// The size of the store's filesystem.
const STORE_FS_MIB: u64 = 12;
/// The size of each thing that must not fit at first: the added file, the
/// imported path and the build output.
const BIG_MIB: u64 = 3;

/// Unmounts the tmpfs on the store dir when dropped, even if the test
/// panicked.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `mib` MiB on `dir`, or says why it cannot.
    fn tmpfs(dir: &Path, mib: u64) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Mount(dir.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            // Something still has it open (a daemon that has not died yet):
            // detach it so the temp folder can go.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Bytes free on the filesystem holding `dir`.
fn free_bytes(dir: &str) -> u64 {
    let out = run(Command::new("df").args(["--output=avail", "-B1"]).arg(dir));
    out.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("cannot read df output:\n{out}"))
}

/// `len` bytes of pseudo-random data from `seed` (xorshift: every file is
/// different and nothing about it is compressible).
fn random_bytes(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len as usize + 8);
    while (v.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len as usize);
    v
}

fn says_no_space(s: &str) -> bool {
    let l = s.to_lowercase();
    l.contains("no space left on device") || l.contains("no space")
}

struct Env<'a> {
    nix: &'a Nix,
    store: &'a TestStore,
    daemon: &'a Daemon,
}

impl Env<'_> {
    fn client(&self, tool: &str) -> Command {
        self.daemon.client(self.store, self.nix, tool)
    }

    fn valid(&self, path: &str) -> bool {
        output(self.client("nix-store").args(["--check-validity", path])).status.success()
    }

    fn path_info_ok(&self, path: &str) -> bool {
        output(self.client("nix").args(["path-info", path])).status.success()
    }

    /// A command that must fail for lack of space: checks its status and
    /// message, and returns its stderr.
    fn must_fail_for_space(&self, what: &str, out: &Output) -> String {
        let err = text(&out.stderr);
        eprintln!("{what} failed as it should ({} bytes free now):\n{err}", free_bytes(&self.store.store_dir));
        assert!(!out.status.success(), "{what} succeeded on a full store:\n{}", text(&out.stdout));
        assert!(
            says_no_space(&err),
            "{what} failed, but its error does not say space ran out:\n{err}\ndaemon log:\n{}",
            self.daemon.log()
        );
        err
    }

    /// Every entry of the store dir is a valid path, a lock file or `.links`; no staging
    /// (`tmp-*`, `.tmp*`) or half-made path is left. The daemon may finish
    /// the request after the client has gone, so this waits a little for
    /// leftovers to go before failing.
    fn no_debris(&self, after: &str, leftover: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut bad = Vec::new();
            for e in std::fs::read_dir(&self.store.store_dir).expect("list the store dir") {
                let name = e.expect("store dir entry").file_name().to_string_lossy().into_owned();
                // CppNix, too, leaves a path's empty `.lock` file behind
                // when adding it fails: not a partial path.
                if name == ".links"
                    || (name.ends_with(".lock") && !name.starts_with('.'))
                    || leftover == Some(self.store.path_of(&name).as_str())
                {
                    continue;
                }
                if name.starts_with("tmp-") || name.starts_with('.') || !self.valid(&self.store.path_of(&name)) {
                    bad.push(name);
                }
            }
            if bad.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "after {after}, the store dir holds entries that are not valid paths: {bad:?}\ndaemon log:\n{}",
                    self.daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Both verifiers find every valid path intact.
    fn verify(&self, after: &str) {
        let out = output(self.client("nix-store").args(["--verify", "--check-contents"]));
        let err = text(&out.stderr);
        assert!(
            out.status.success() && !err.contains("was modified") && !err.contains("error"),
            "after {after}: nix-store --verify --check-contents through the daemon ({}):\n{err}",
            out.status
        );
        let out = output(self.store.armitage().args(["store", "verify", "--check-contents"]));
        assert!(
            out.status.success(),
            "after {after}: armitage store verify --check-contents ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// All the checks after a failure.
    /// `leftover` may stay on disk (invalid): a failed build's output, as
    /// CppNix leaves it without a sandbox (deleted before the next attempt).
    fn after_failure(&self, what: &str, path: &str, leftover_allowed: bool) {
        assert!(!self.valid(path), "{path} is valid after {what} failed");
        assert!(!self.path_info_ok(path), "nix path-info {path} succeeds after {what} failed");
        if !leftover_allowed {
            assert!(!Path::new(path).exists(), "{path} is on disk after {what} failed");
        }
        self.no_debris(what, if leftover_allowed { Some(path) } else { None });
        self.verify(what);
    }
}

const BUILD_NIX: &str = r#"
derivation {
  name = "too-big";
  system = "x86_64-linux";
  builder = "/bin/sh";
  # 64 KiB blocks; dd says what went wrong when the disk is full.
  args = [ "-c" "/bin/dd if=/dev/zero of=$out bs=65536 count=@COUNT@ || exit 1" ];
  preferLocalBuild = true;
}
"#;

#[test]
fn full_store_filesystem_with_nix_2_8() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else {
        return;
    };
    let store = TestStore::with_conf("build-users-group =\n");
    let mount = match Mount::tmpfs(Path::new(&store.store_dir), STORE_FS_MIB) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount a small tmpfs on the store dir: {why}");
            return;
        }
    };
    let big = BIG_MIB << 20;

    let daemon = Daemon::armitage(&store);
    let env = Env { nix: &nix, store: &store, daemon: &daemon };

    // The NAR export to import: made while the store is empty, then the
    // path is deleted again.
    let src = store.work_dir("import").join("imported-blob");
    write_file(&src, random_bytes(1, big));
    let imported = line(run(env.client("nix-store").arg("--add").arg(&src)));
    let export = store.work_dir("import").join("blob.nar-export");
    let bytes = output(env.client("nix-store").args(["--export", &imported])).stdout;
    assert!(bytes.len() as u64 > big, "the export holds the file");
    write_file(&export, bytes);
    run(env.client("nix-store").args(["--delete", &imported]));
    assert!(!env.valid(&imported), "{imported} still valid after nix-store --delete");

    // The build's derivation goes in while there is room (it is small).
    let nix_file = store.work_dir("build").join("too-big.nix");
    write_file(&nix_file, BUILD_NIX.replace("@COUNT@", &(big / 65536).to_string()));
    let drv = line(run(env.client("nix-instantiate").arg(&nix_file)));
    let build_out = line(run(env.client("nix-store").args(["-q", "--outputs", &drv])));

    // Fill the store with 1 MiB files until less than BIG_MIB - 1 MiB is free.
    let work = store.work_dir("fill");
    let mut fillers = Vec::new();
    while free_bytes(&store.store_dir) > big - (1 << 20) {
        let f = work.join(format!("filler-{}", fillers.len()));
        write_file(&f, random_bytes(100 + fillers.len() as u64, 1 << 20));
        let out = output(env.client("nix-store").arg("--add").arg(&f));
        if !out.status.success() {
            // The disk filled up earlier than df said: that add must be a
            // clean failure too.
            env.must_fail_for_space("nix-store --add of a filler", &out);
            break;
        }
        fillers.push(line(text(&out.stdout)));
        assert!(fillers.len() < 64, "the store never fills up: df says {} bytes free", free_bytes(&store.store_dir));
    }
    assert!(!fillers.is_empty(), "no filler fitted");
    env.verify("filling the store");

    // 1. An add that does not fit.
    let big_file = work.join("big-file");
    write_file(&big_file, random_bytes(2, big));
    // Where it would go (computed, not added).
    let hash = line(run(store.nix(&nix, "nix-hash").args(["--type", "sha256", "--base32"]).arg(&big_file)));
    let big_path = line(run(store.nix(&nix, "nix-store").args([
        "--print-fixed-path",
        "--recursive",
        "sha256",
        &hash,
        "big-file",
    ])));
    let out = output(env.client("nix-store").arg("--add").arg(&big_file));
    env.must_fail_for_space("nix-store --add of a file bigger than the free space", &out);
    env.after_failure("the failed add", &big_path, false);

    // 2. An import that does not fit.
    let out = output(env.client("nix-store").arg("--import").stdin(std::fs::File::open(&export).unwrap()));
    env.must_fail_for_space("nix-store --import of a path bigger than the free space", &out);
    env.after_failure("the failed import", &imported, false);

    // 3. A build whose output does not fit.
    let out = output(env.client("nix-store").args(["--realise", &drv]));
    let err = text(&out.stderr);
    env.must_fail_for_space("building a derivation writing more than the free space", &out);
    assert!(err.contains("builder for") && err.contains("failed"), "no 'builder for ... failed' in:\n{err}");
    assert!(err.contains("No space left on device"), "the builder's own dd error is not in the log tail:\n{err}");
    assert!(
        err.contains("note: build failure may have been caused by lack of free disk space"),
        "CppNix's disk-full note is missing:\n{err}"
    );
    env.after_failure("the failed build", &build_out, true);

    // 4. Free the space; the same three now succeed.
    run(env.client("nix-store").arg("--delete").args(&fillers));
    for f in &fillers {
        assert!(!env.valid(f), "{f} still valid after nix-store --delete");
    }
    assert!(free_bytes(&store.store_dir) > 3 * big, "deleting the fillers freed the space");

    let added = line(run(env.client("nix-store").arg("--add").arg(&big_file)));
    assert_eq!(added, big_path);
    assert_eq!(std::fs::read(&added).unwrap(), random_bytes(2, big), "the added file's contents");

    let out = output(env.client("nix-store").arg("--import").stdin(std::fs::File::open(&export).unwrap()));
    assert!(out.status.success(), "nix-store --import after freeing space:\n{}", text(&out.stderr));
    assert_eq!(line(text(&out.stdout)), imported);
    assert_eq!(std::fs::read(&imported).unwrap(), random_bytes(1, big), "the imported file's contents");

    let built = line(run(env.client("nix-store").args(["--realise", &drv])));
    assert_eq!(built, build_out);
    assert_eq!(std::fs::metadata(&built).unwrap().len(), big, "the build output's size");

    for p in [&big_path, &imported, &build_out] {
        assert!(env.valid(p), "{p} is not valid after it succeeded");
        assert!(env.path_info_ok(p), "nix path-info {p} fails after it succeeded");
    }
    env.no_debris("the retries", None);
    env.verify("the retries");

    drop(daemon);
    drop(mount);
}
