//! Shared helpers: finding Nix, running commands for bytes, the file trees
//! the tests feed to both tools, and whole-store snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{Nix, NixVersion, TestStore};

pub fn nix_2_8() -> Option<Nix> {
    Nix::find(NixVersion::V2_8)
}

pub fn nix_2_26() -> Option<Nix> {
    Nix::find(NixVersion::V2_26)
}

/// The `nix` command of `nix` on `store`, with `nix-command` enabled (Nix 2.8
/// needs it on the command line).
pub fn nix_cli(store: &TestStore, nix: &Nix) -> Command {
    let mut cmd = store.nix(nix, "nix");
    cmd.args(["--extra-experimental-features", "nix-command"]);
    cmd
}

/// Runs a command that must succeed; returns its raw stdout.
pub fn run_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = testkit::output(cmd);
    assert!(out.status.success(), "{:?} failed ({}):\n{}", cmd, out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Runs a command; returns (succeeded, stdout, stderr).
pub fn run_any(cmd: &mut Command) -> (bool, String, String) {
    let out = testkit::output(cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses a command's stdout as JSON.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    let text = testkit::run(cmd);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{cmd:?} printed invalid JSON ({e}):\n{text}"))
}

/// Deterministic bytes that do not compress or repeat (an LCG).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn make_symlink(target: &str, link: &Path) {
    symlink(target, link).unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

/// Names whose byte order (NAR order) differs from case-insensitive,
/// numeric and locale orders.
pub const AWKWARD_NAMES: [&str; 12] = ["B", "a", "_u", "Z", "é", "z", "10", "9", "a.b", "a-b", "A", "ab"];

/// A tree with every kind of NAR node: nested and empty directories, empty,
/// executable and multi-MiB files, relative, dangling and absolute symlinks,
/// and names in awkward orders.
pub fn varied_tree(root: &Path) {
    testkit::write_file(root.join("a/b/c/deep.txt"), "deep\n");
    testkit::write_file(root.join("a/sibling"), "sibling\n");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    testkit::write_file(root.join("empty-file"), "");
    testkit::write_file(root.join("run.sh"), "#!/bin/sh\necho hi\n");
    set_mode(&root.join("run.sh"), 0o755);
    testkit::write_file(root.join("read-only"), "ro\n");
    set_mode(&root.join("read-only"), 0o444);
    testkit::write_file(root.join("big.bin"), pseudo_random(3 * 1024 * 1024 + 13, 1));
    make_symlink("a/b/c/deep.txt", &root.join("link-rel"));
    make_symlink("a/b", &root.join("link-dir"));
    make_symlink("does/not/exist", &root.join("link-dangling"));
    make_symlink("/etc/hostname", &root.join("link-abs"));
    for (i, name) in AWKWARD_NAMES.iter().enumerate() {
        testkit::write_file(root.join("order").join(name), format!("{i}\n"));
    }
    std::fs::create_dir_all(root.join("order/é-dir/Ω")).expect("mkdir");
}

/// Every file (not directory) below `root`, relative, sorted.
pub fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.symlink_metadata().expect("lstat").is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(root).expect("below root").to_owned());
            }
        }
    }
    out.sort();
    out
}

/// The names in the store directory (store paths and anything else), apart
/// from `.links`.
pub fn store_entries(store: &TestStore) -> BTreeSet<String> {
    std::fs::read_dir(&store.store_dir)
        .expect("read store dir")
        .map(|e| e.expect("dir entry").file_name().into_string().expect("utf-8 name"))
        .filter(|n| n != ".links")
        .collect()
}

/// The valid paths, as Nix reads them from the database.
pub fn valid_paths(store: &TestStore, nix: &Nix) -> BTreeSet<String> {
    testkit::run(nix_cli(store, nix).args(["path-info", "--all"])).lines().map(str::to_owned).collect()
}

/// Groups of files (paths relative to the store dir, `.links` included)
/// that share an inode, for inodes with more than one name.
pub fn shared_inodes(store: &TestStore) -> BTreeSet<BTreeSet<String>> {
    let dir = Path::new(&store.store_dir);
    let mut by_inode: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for file in files_below(dir) {
        let meta = dir.join(&file).symlink_metadata().expect("lstat");
        by_inode.entry(meta.ino()).or_default().insert(file.to_string_lossy().into_owned());
    }
    by_inode.into_values().filter(|names| names.len() > 1).collect()
}

/// A copy of a whole `TestStore` folder (store, database, roots, work dirs),
/// put back in place so that store paths stay the same: lets Nix and
/// armitage each run the same operation on the same starting store.
pub struct Snapshot {
    dir: tempfile::TempDir,
}

impl Snapshot {
    pub fn take(store: &TestStore) -> Snapshot {
        let dir = tempfile::Builder::new().prefix("snapshot-").tempdir_in(testkit::scratch_dir()).expect("temp dir");
        copy_all(store.root(), dir.path());
        Snapshot { dir }
    }

    pub fn restore(&self, store: &TestStore) {
        make_writable(store.root());
        for entry in std::fs::read_dir(store.root()).expect("read store root") {
            let path = entry.expect("dir entry").path();
            if path.symlink_metadata().expect("lstat").is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        }
        copy_all(self.dir.path(), store.root());
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        make_writable(self.dir.path());
    }
}

fn copy_all(from: &Path, to: &Path) {
    let mut src = from.as_os_str().to_owned();
    src.push("/.");
    testkit::run(Command::new("cp").arg("-a").arg(src).arg(to));
}

fn make_writable(dir: &Path) {
    testkit::run(Command::new("chmod").args(["-R", "u+w"]).arg(dir));
}

/// A store for tests that build with Nix. Builds run as the calling user,
/// not as `nixbld` users: the build-user locks live in each store's state
/// dir, so concurrent tests would share `nixbld1`, and Nix kills every
/// process of its build user after a build, including the other test's
/// builder.
pub fn building_store() -> TestStore {
    TestStore::with_conf("build-users-group =")
}

/// Writes `expr` to a `.nix` file in the store's work dir and instantiates it
/// with `nix`; returns the printed `.drv` paths.
pub fn instantiate(store: &TestStore, nix: &Nix, name: &str, expr: &str) -> Vec<String> {
    let file = store.work_dir("nix").join(format!("{name}.nix"));
    testkit::write_file(&file, expr);
    let out = testkit::run(store.nix(nix, "nix-instantiate").arg(&file));
    out.lines().map(str::to_owned).collect()
}

/// A Nix expression for a chain of derivations built by `/bin/sh` (with
/// no `PATH`: builtins only), the last
/// one referring to the ones before it, prefixed `name`. `salt` makes the
/// store paths distinct between calls.
pub fn chain_expr(name: &str, salt: &str) -> String {
    format!(
        r#"
let
  sh = args: derivation ({{ builder = "/bin/sh"; system = "x86_64-linux"; salt = "{salt}"; }} // args);
  leaf = sh {{ name = "{name}-leaf"; src = ./src-{name}; args = ["-c" "echo leaf > $out"]; }};
  mid = sh {{ name = "{name}-mid"; inherit leaf; outputs = ["out" "dev"];
              args = ["-c" "echo $leaf > $out; echo dev > $dev"]; }};
in sh {{ name = "{name}-top"; inherit mid; middev = mid.dev; args = ["-c" "echo $mid $middev > $out"]; }}
"#
    )
}

/// Instantiates and builds `chain_expr(name, salt)` with `nix`; returns the
/// top output path. `root_args` go to `nix-store --realise` (e.g. an
/// `--add-root`).
pub fn build_chain(store: &TestStore, nix: &Nix, name: &str, salt: &str, root_args: &[&str]) -> String {
    testkit::write_file(store.work_dir("nix").join(format!("src-{name}")), format!("source of {name}\n"));
    let drv = instantiate(store, nix, name, &chain_expr(name, salt));
    let out = testkit::run(store.nix(nix, "nix-store").arg("--realise").args(root_args).args(&drv));
    testkit::line(out)
}
