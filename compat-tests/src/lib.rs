//! Shared pieces of the compatibility suites: trees to add, the local store
//! library opened on a test store, and `nix path-info --json` of either Nix
//! version in one normalised shape.

use serde_json::{Map, Value};
use std::path::Path;
use store::local::{LocalStore, LocalStoreConfig};
use store::store_path::StoreDir;
use testkit::{Nix, NixVersion, TestStore};

/// A small deterministic pseudo-random generator (xorshift64*), so trees and
/// kill timings can be reproduced from a printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the clock, to print and reuse.
    pub fn seed_from_time() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Writes a tree of `files` files spread over nested directories, with
/// sizes up to `max_size`, a few executables and symlinks. Deterministic in `seed`.
pub fn make_tree(root: &Path, seed: u64, files: usize, max_size: usize) {
    let mut rng = Rng::new(seed);
    std::fs::create_dir_all(root).expect("create tree root");
    for i in 0..files {
        let dir = root.join(format!("d{}", rng.below(8))).join(format!("e{}", rng.below(4)));
        std::fs::create_dir_all(&dir).expect("create tree dir");
        let size = rng.below(max_size as u64 + 1) as usize;
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            data.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        data.truncate(size);
        let file = dir.join(format!("f{i}"));
        std::fs::write(&file, &data).expect("write tree file");
        if rng.below(10) == 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        if rng.below(20) == 0 {
            let _ = std::os::unix::fs::symlink(format!("f{i}"), dir.join(format!("l{i}")));
        }
    }
}

/// The store library on a test store.
pub fn open_store(store: &TestStore, ca_derivations: bool) -> LocalStore {
    let mut config = LocalStoreConfig::new(
        StoreDir::new(store.store_dir.clone()).expect("test store dir is canonical"),
        &store.state_dir,
        &store.log_dir,
    );
    config.ca_derivations = ca_derivations;
    LocalStore::open(config).expect("open the test store")
}

/// `nix path-info --json` of `paths` as a map from path to Nix 2.26's
/// object shape, whichever version printed it (2.8 prints an array of
/// objects that leave out empty fields).
pub fn nix_path_info(store: &TestStore, nix: &Nix, paths: &[String]) -> Map<String, Value> {
    let query = |paths: &[&String], derivation: bool| -> Value {
        let mut cmd = store.nix(nix, "nix");
        cmd.args(["--extra-experimental-features", "nix-command", "path-info", "--json"]);
        if derivation {
            cmd.arg("--derivation");
        }
        serde_json::from_str(&testkit::run(cmd.args(paths))).expect("nix path-info prints JSON")
    };
    match nix.version {
        NixVersion::V2_26 => query(&paths.iter().collect::<Vec<_>>(), false).as_object().expect("2.26 prints an object").clone(),
        NixVersion::V2_8 => {
            // 2.8 takes a `.drv` argument to mean its outputs unless told `--derivation`,
            // which in turn refuses paths without a deriver: ask separately.
            let (drvs, others): (Vec<&String>, Vec<&String>) = paths.iter().partition(|p| p.ends_with(".drv"));
            let mut items = Vec::new();
            for (group, derivation) in [(drvs, true), (others, false)] {
                if !group.is_empty() {
                    items.extend(query(&group, derivation).as_array().expect("2.8 prints an array").clone());
                }
            }
            let mut map = Map::new();
            for item in &items {
                let o = item.as_object().expect("objects");
                let get = |k: &str| o.get(k).cloned();
                let mut v = Map::new();
                v.insert("ca".into(), get("ca").unwrap_or(Value::Null));
                v.insert("deriver".into(), get("deriver").unwrap_or(Value::Null));
                v.insert("narHash".into(), get("narHash").unwrap_or(Value::Null));
                v.insert("narSize".into(), get("narSize").unwrap_or(Value::Null));
                v.insert("references".into(), get("references").unwrap_or(Value::Array(vec![])));
                v.insert("registrationTime".into(), get("registrationTime").unwrap_or(Value::Null));
                v.insert("signatures".into(), get("signatures").unwrap_or(Value::Array(vec![])));
                v.insert("ultimate".into(), get("ultimate").unwrap_or(Value::Bool(false)));
                map.insert(o["path"].as_str().expect("path").to_owned(), Value::Object(v));
            }
            map
        }
    }
}

/// `armitage path-info --json` of `paths`.
pub fn armitage_path_info(store: &TestStore, paths: &[String]) -> Map<String, Value> {
    let mut cmd = store.armitage();
    cmd.args(["path-info", "--json"]).args(paths);
    let out: Value = serde_json::from_str(&testkit::run(&mut cmd)).expect("armitage path-info prints JSON");
    out.as_object().expect("an object").clone()
}

/// Runs `nix-store --verify --check-contents` and returns (success, stderr).
pub fn nix_verify(store: &TestStore, nix: &Nix) -> (bool, String) {
    let out = testkit::output(store.nix(nix, "nix-store").args(["--verify", "--check-contents"]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ok = out.status.success() && !stderr.contains("error") && !stderr.contains("modified");
    (ok, stderr)
}

/// Runs `armitage store verify --check-contents` and returns (success, stderr).
pub fn armitage_verify(store: &TestStore) -> (bool, String) {
    let out = testkit::output(store.armitage().args(["store", "verify", "--check-contents"]));
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}
