//! Shared pieces of the compatibility suites: trees to add, the local store
//! library opened on a test store, `nix path-info --json` of either Nix
//! version in one normalised shape, and (at the end) armitage and CppNix's
//! nix-daemon side by side on two stores ([`Twins`]), compared through a
//! [`PathMap`] that translates one store's paths into the other's.

pub mod docs;
pub mod process;
pub mod proto_client;
pub mod users;

use local_store::{LocalStore, LocalStoreConfig};
use serde_json::{Map, Value};
use std::path::Path;
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
        NixVersion::V2_26 => {
            query(&paths.iter().collect::<Vec<_>>(), false).as_object().expect("2.26 prints an object").clone()
        }
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

// ---------------------------------------------------------------------------
// Daemons side by side: armitage and CppNix's nix-daemon, each on its own
// store, driven by the same stock client commands.

/// Which of the two daemons of [`Twins`] a command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// armitage.
    Ours,
    /// CppNix's nix-daemon of the client's version.
    Theirs,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Ours, Side::Theirs];
}

/// Translates store paths of one test store into the other's.
///
/// The two stores have different store dirs, so the same content gets a
/// different store path hash in each (the hash covers the store dir), and
/// so does anything that embeds store paths (a `.drv`, a derivation's
/// output path). Both dirs have the same length, so sizes agree. Outputs
/// are compared after rewriting ours' store dir to theirs' and each of ours'
/// hash parts to the one of the corresponding path in theirs; the pairs are
/// learnt from outputs that name the same thing on both sides (paths with
/// the same name, see [`PathMap::learn`]) or paired explicitly. The pairing
/// is a bijection: a hash learnt once must stay paired with the same hash.
/// This is the one helper the side-by-side suites compare through.
pub struct PathMap {
    ours_dir: String,
    theirs_dir: String,
    /// Other folders (outside the stores) rewritten likewise, ours first.
    other_dirs: Vec<(String, String)>,
    to_theirs: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    to_ours: std::collections::HashMap<Vec<u8>, Vec<u8>>,
}

const HASH_LEN: usize = 32;

fn is_nix32(c: u8) -> bool {
    store::hash::nix32::is_digit(c)
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"+-._?=".contains(&c)
}

/// The `(hash part, name)` of every `<dir>/<hash>-<name>` in `text`.
fn store_paths_in(dir: &str, text: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let prefix = format!("{dir}/");
    let prefix = prefix.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = find_bytes(&text[i..], prefix) {
        let start = i + at + prefix.len();
        let hash = &text[start..text.len().min(start + HASH_LEN)];
        if hash.len() == HASH_LEN && hash.iter().all(|c| is_nix32(*c)) && text.get(start + HASH_LEN) == Some(&b'-') {
            let name_start = start + HASH_LEN + 1;
            let name_len = text[name_start..].iter().take_while(|c| is_name_char(**c)).count();
            found.push((hash.to_vec(), text[name_start..name_start + name_len].to_vec()));
        }
        i = start;
    }
    found
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl PathMap {
    pub fn new(ours_dir: &str, theirs_dir: &str) -> PathMap {
        assert_eq!(ours_dir.len(), theirs_dir.len(), "side-by-side stores need store dirs of the same length");
        PathMap {
            ours_dir: ours_dir.to_owned(),
            theirs_dir: theirs_dir.to_owned(),
            other_dirs: Vec::new(),
            to_theirs: Default::default(),
            to_ours: Default::default(),
        }
    }

    /// Pairs ours' and theirs' paths that `ours` and `theirs` (two answers
    /// to the same question) name with the same name, where that name occurs
    /// with exactly one hash on each side and neither hash is paired yet.
    pub fn learn(&mut self, ours: &[u8], theirs: &[u8]) {
        let group = |dir: &str, text: &[u8]| {
            let mut by_name: std::collections::BTreeMap<Vec<u8>, std::collections::BTreeSet<Vec<u8>>> =
                std::collections::BTreeMap::new();
            for (hash, name) in store_paths_in(dir, text) {
                by_name.entry(name).or_default().insert(hash);
            }
            by_name
        };
        let (ours, theirs) = (group(&self.ours_dir, ours), group(&self.theirs_dir, theirs));
        for (name, our_hashes) in &ours {
            let Some(their_hashes) = theirs.get(name) else { continue };
            if our_hashes.len() != 1 || their_hashes.len() != 1 {
                continue;
            }
            let (o, t) = (our_hashes.first().unwrap(), their_hashes.first().unwrap());
            if !self.to_theirs.contains_key(o) && !self.to_ours.contains_key(t) {
                self.to_theirs.insert(o.clone(), t.clone());
                self.to_ours.insert(t.clone(), o.clone());
            }
        }
    }

    /// Pairs two full paths (ours, theirs) that must correspond; panics if
    /// either is already paired with something else.
    pub fn pair(&mut self, ours: &str, theirs: &str) {
        let hash = |dir: &str, p: &str| -> Vec<u8> {
            let rest =
                p.strip_prefix(dir).and_then(|r| r.strip_prefix('/')).unwrap_or_else(|| panic!("{p} is not in {dir}"));
            rest.as_bytes()[..HASH_LEN].to_vec()
        };
        let (o, t) = (hash(&self.ours_dir, ours), hash(&self.theirs_dir, theirs));
        if let Some(prev) = self.to_theirs.get(&o) {
            assert_eq!(prev, &t, "{ours} is already paired with another path than {theirs}");
        }
        if let Some(prev) = self.to_ours.get(&t) {
            assert_eq!(prev, &o, "{theirs} is already paired with another path than {ours}");
        }
        self.to_theirs.insert(o.clone(), t.clone());
        self.to_ours.insert(t, o);
    }

    /// Also rewrites the folder `ours` (outside the stores: a work dir, a
    /// state dir) to `theirs` and back, as a whole path component.
    pub fn map_dir(&mut self, ours: &str, theirs: &str) {
        self.other_dirs.push((ours.to_owned(), theirs.to_owned()));
    }

    /// `ours` in theirs' terms.
    pub fn to_theirs(&self, ours: &[u8]) -> Vec<u8> {
        let mut text = translate(ours, &self.ours_dir, &self.theirs_dir, &self.to_theirs);
        for (o, t) in &self.other_dirs {
            text = replace_dir(&text, o, t);
        }
        text
    }

    /// `theirs` in ours' terms.
    pub fn to_ours(&self, theirs: &[u8]) -> Vec<u8> {
        let mut text = translate(theirs, &self.theirs_dir, &self.ours_dir, &self.to_ours);
        for (o, t) in &self.other_dirs {
            text = replace_dir(&text, t, o);
        }
        text
    }

    pub fn to_theirs_str(&self, ours: &str) -> String {
        String::from_utf8(self.to_theirs(ours.as_bytes())).expect("translation keeps UTF-8")
    }

    pub fn to_ours_str(&self, theirs: &str) -> String {
        String::from_utf8(self.to_ours(theirs.as_bytes())).expect("translation keeps UTF-8")
    }
}

fn dir_ends(c: Option<&u8>) -> bool {
    c.is_none_or(|c| !(c.is_ascii_alphanumeric() || b"-_.+".contains(c)))
}

/// `text` with the folder `from` (a whole path component) replaced by `to`.
fn replace_dir(text: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from = from.as_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(from) && dir_ends(text.get(i + from.len())) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

/// Rewrites `from_dir` (as a whole path component) to `to_dir` and every
/// hash part in `hashes` that
/// starts a store path's base name (followed by `-`, not preceded by a
/// letter or digit) to its pair. Hashes not in `hashes` stay as they are,
/// so that a comparison shows them.
fn translate(
    text: &[u8],
    from_dir: &str,
    to_dir: &str,
    hashes: &std::collections::HashMap<Vec<u8>, Vec<u8>>,
) -> Vec<u8> {
    let from = from_dir.as_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(from) && dir_ends(text.get(i + from.len())) {
            out.extend_from_slice(to_dir.as_bytes());
            i += from.len();
            continue;
        }
        let boundary = i == 0 || !text[i - 1].is_ascii_alphanumeric();
        if boundary
            && i + HASH_LEN < text.len()
            && text[i + HASH_LEN] == b'-'
            && let Some(to) = hashes.get(&text[i..i + HASH_LEN])
        {
            out.extend_from_slice(to);
            i += HASH_LEN;
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// armitage and CppNix's nix-daemon of one version, each serving a fresh
/// [`TestStore`] on its own socket, and the client of that version for
/// both. Results are compared through a [`PathMap`]; theirs' paths are the
/// canonical ones tests hold on to ([`Twins::path`] gives a side's own).
pub struct Twins {
    pub nix: Nix,
    pub ours: TestStore,
    pub theirs: TestStore,
    pub armitage: testkit::Daemon,
    pub cppnix: testkit::Daemon,
    pub map: std::cell::RefCell<PathMap>,
}

impl Twins {
    /// Both daemons on default test stores; `None` when the Nix version is
    /// missing and the test is skipped.
    pub fn start(version: NixVersion) -> Option<Twins> {
        Self::with_conf(version, "")
    }

    /// Both daemons on stores whose nix.conf has `extra` appended.
    pub fn with_conf(version: NixVersion, extra: &str) -> Option<Twins> {
        Self::with_confs(version, extra, "")
    }

    /// As [`Twins::with_conf`], armitage reading `armitage_toml` as its
    /// own configuration (when not empty).
    pub fn with_confs(version: NixVersion, extra: &str, armitage_toml: &str) -> Option<Twins> {
        let nix = Nix::find(version)?;
        let ours = TestStore::with_conf(extra);
        let theirs = TestStore::with_conf(extra);
        if !armitage_toml.is_empty() {
            testkit::write_file(ours.armitage_config(), armitage_toml);
        }
        let armitage = testkit::Daemon::armitage(&ours);
        let cppnix = testkit::Daemon::nix(&theirs, &nix);
        let mut map = PathMap::new(&ours.store_dir, &theirs.store_dir);
        // Work dirs, roots and caches live next to each store.
        map.map_dir(
            ours.root().to_str().expect("UTF-8 scratch path"),
            theirs.root().to_str().expect("UTF-8 scratch path"),
        );
        let map = std::cell::RefCell::new(map);
        Some(Twins { nix, ours, theirs, armitage, cppnix, map })
    }

    pub fn version(&self) -> NixVersion {
        self.nix.version
    }

    pub fn store(&self, side: Side) -> &TestStore {
        match side {
            Side::Ours => &self.ours,
            Side::Theirs => &self.theirs,
        }
    }

    pub fn daemon(&self, side: Side) -> &testkit::Daemon {
        match side {
            Side::Ours => &self.armitage,
            Side::Theirs => &self.cppnix,
        }
    }

    /// A stock client `tool` talking to `side`'s daemon; Nix 2.8's `nix`
    /// gets `--extra-experimental-features nix-command`.
    pub fn client(&self, side: Side, tool: &str) -> std::process::Command {
        let mut cmd = self.daemon(side).client(self.store(side), &self.nix, tool);
        if tool == "nix" && self.nix.version == NixVersion::V2_8 {
            cmd.args(["--extra-experimental-features", "nix-command"]);
        }
        cmd
    }

    /// Writes a Nix file `<name>.nix` in theirs' work dir (ours' is the same
    /// path once mapped); returns its path.
    pub fn nix_file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let file = self.theirs.work_dir("nix").join(format!("{name}.nix"));
        testkit::write_file(&file, text);
        file
    }

    /// `side`'s version of a path given in theirs' terms (or any text
    /// holding such paths).
    pub fn path(&self, side: Side, theirs: &str) -> String {
        match side {
            Side::Ours => self.map.borrow().to_ours_str(theirs),
            Side::Theirs => theirs.to_owned(),
        }
    }

    /// Runs `tool` on both sides, with arguments (and anything else) set by
    /// `args` for each; returns the raw outputs, ours first.
    pub fn both(&self, tool: &str, args: impl Fn(Side, &mut std::process::Command)) -> [std::process::Output; 2] {
        Side::BOTH.map(|side| {
            let mut cmd = self.client(side, tool);
            args(side, &mut cmd);
            testkit::output(&mut cmd)
        })
    }

    /// Runs `tool` on both sides; both must succeed and print the same
    /// (after translation). Returns theirs' stdout.
    pub fn same(&self, what: &str, tool: &str, args: impl Fn(Side, &mut std::process::Command)) -> String {
        let outs = self.both(tool, args);
        self.both_succeeded(what, &outs);
        let [o, t] = outs;
        self.assert_same(what, &String::from_utf8_lossy(&o.stdout), &String::from_utf8_lossy(&t.stdout))
    }

    /// Like [`Twins::same`], for output whose lines are ordered by store
    /// path (so by hash, which differs between the stores): the sets of
    /// lines are compared.
    pub fn same_lines(&self, what: &str, tool: &str, args: impl Fn(Side, &mut std::process::Command)) -> String {
        let outs = self.both(tool, args);
        self.both_succeeded(what, &outs);
        let [o, t] = outs;
        let (o, t) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&t.stdout).into_owned());
        self.assert_same_lines(what, &o, &t);
        t
    }

    /// Runs `tool` on both sides; both must fail, with the same `error:`
    /// lines on stderr (after translation). Returns theirs' stderr.
    pub fn same_failure(&self, what: &str, tool: &str, args: impl Fn(Side, &mut std::process::Command)) -> String {
        let [o, t] = self.both(tool, args);
        let (oe, te) =
            (String::from_utf8_lossy(&o.stderr).into_owned(), String::from_utf8_lossy(&t.stderr).into_owned());
        assert!(!o.status.success(), "{what}: armitage's side succeeded, {}'s failed:\n{te}", self.cppnix.name);
        assert!(!t.status.success(), "{what}: {} succeeded, armitage's side failed:\n{oe}", self.cppnix.name);
        self.map.borrow_mut().learn(oe.as_bytes(), te.as_bytes());
        let errors =
            |s: &str| s.lines().filter(|l| l.starts_with("error")).map(str::to_owned).collect::<Vec<_>>().join("\n");
        let ours = errors(&self.map.borrow().to_theirs_str(&oe));
        assert_eq!(ours, errors(&te), "{what}: the errors differ (armitage's first; full stderr:\n{oe}\n---\n{te})");
        te
    }

    /// Both commands (ours first) must have succeeded; a failure shows its
    /// stderr and that daemon's log.
    pub fn both_succeeded(&self, what: &str, [o, t]: &[std::process::Output; 2]) {
        for (out, name) in [(o, &self.armitage.name), (t, &self.cppnix.name)] {
            assert!(
                out.status.success(),
                "{what} failed against {name} ({}):\n{}\n(daemon log:\n{})",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                if name == &self.armitage.name { self.armitage.log() } else { self.cppnix.log() }
            );
        }
    }

    /// Asserts that `ours` and `theirs` are the same after translation
    /// (learning from them first). Returns `theirs`.
    pub fn assert_same(&self, what: &str, ours: &str, theirs: &str) -> String {
        self.map.borrow_mut().learn(ours.as_bytes(), theirs.as_bytes());
        let translated = self.map.borrow().to_theirs_str(ours);
        assert_eq!(
            translated, theirs,
            "{what}: armitage's answer (translated, left) differs from {}'s",
            self.cppnix.name
        );
        theirs.to_owned()
    }

    /// Like [`Twins::assert_same`] for the sets of lines.
    pub fn assert_same_lines(&self, what: &str, ours: &str, theirs: &str) {
        self.map.borrow_mut().learn(ours.as_bytes(), theirs.as_bytes());
        let translated = self.map.borrow().to_theirs_str(ours);
        let set = |s: &str| s.lines().map(str::to_owned).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(
            set(&translated),
            set(theirs),
            "{what}: armitage's lines (translated, left) differ from {}'s",
            self.cppnix.name
        );
    }

    /// Asserts that two byte strings are the same after translation.
    pub fn assert_same_bytes(&self, what: &str, ours: &[u8], theirs: &[u8]) {
        self.map.borrow_mut().learn(ours, theirs);
        let translated = self.map.borrow().to_theirs(ours);
        if translated != theirs {
            panic!(
                "{what}: armitage's bytes (translated) differ from {}'s:\n{}\n---\n{}",
                self.cppnix.name,
                String::from_utf8_lossy(&translated),
                String::from_utf8_lossy(theirs)
            );
        }
    }

    /// The NAR of a path, read from `side`'s disk (path in theirs' terms).
    pub fn nar(&self, side: Side, theirs_path: &str) -> Vec<u8> {
        let mut nar = Vec::new();
        let p = self.path(side, theirs_path);
        local_store::nar_fs::dump(Path::new(&p), &mut nar).unwrap_or_else(|e| panic!("dump {p}: {e}"));
        nar
    }

    /// `nix path-info --json` with `args` on both sides, compared path by
    /// path. Left out: `registrationTime` (when the path was added). When a
    /// path's NAR differs between the stores (its contents name store
    /// paths, whose hashes depend on the store dir) its `narHash` and the
    /// hash in its `ca` differ too and are left out; the NARs are then
    /// compared after translation instead. References are compared as sets.
    /// Signatures cover the full store
    /// path, so only their key names are compared (tests check their
    /// validity with `nix store verify --sigs-needed`). Returns theirs'
    /// result, keyed by path.
    pub fn same_path_info(&self, what: &str, args: impl Fn(Side, &mut std::process::Command)) -> Map<String, Value> {
        let outs = self.both("nix", |side, cmd| {
            cmd.args(["path-info", "--json"]);
            args(side, cmd);
        });
        self.both_succeeded(what, &outs);
        let [o, t] = outs;
        let (o, t) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&t.stdout).into_owned());
        self.map.borrow_mut().learn(o.as_bytes(), t.as_bytes());
        let ours = path_info_by_path(&self.map.borrow().to_theirs_str(&o));
        let theirs = path_info_by_path(&t);
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{what}: armitage's paths (translated, left) differ from {}'s",
            self.cppnix.name
        );
        for (path, theirs_info) in &theirs {
            let mut a = ours[path].as_object().expect("an object").clone();
            let mut b = theirs_info.as_object().expect("an object").clone();
            for info in [&mut a, &mut b] {
                info.remove("registrationTime");
                // Listed in path order, which follows the hashes.
                if let Some(Value::Array(refs)) = info.get_mut("references") {
                    refs.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
                }
                if let Some(Value::Array(sigs)) = info.get_mut("signatures") {
                    for s in sigs.iter_mut() {
                        let key = s.as_str().and_then(|s| s.split(':').next()).unwrap_or_default().to_owned();
                        *s = Value::String(key);
                    }
                }
            }
            let (nar_o, nar_t) = (self.nar(Side::Ours, path), self.nar(Side::Theirs, path));
            if nar_o != nar_t {
                self.assert_same_bytes(&format!("{what}: the NAR of {path}"), &nar_o, &nar_t);
                for info in [&mut a, &mut b] {
                    info.remove("narHash");
                    if let Some(Value::String(ca)) = info.get_mut("ca") {
                        *ca = ca.rsplit_once(':').map(|(method, _)| method.to_owned()).unwrap_or_default();
                    }
                }
            }
            assert_eq!(a, b, "{what}: path info of {path}: armitage's (left) differs from {}'s", self.cppnix.name);
        }
        theirs
    }
}

/// `nix path-info --json` output of either version as a map from path to
/// info (Nix 2.8 prints an array of objects with a `path` field).
pub fn path_info_by_path(json: &str) -> Map<String, Value> {
    let value: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("path-info prints JSON ({e}): {json}"));
    match value {
        Value::Object(map) => map,
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                let mut o = item.as_object().expect("path-info array items are objects").clone();
                let path = o.remove("path").and_then(|p| p.as_str().map(str::to_owned)).expect("a path field");
                (path, Value::Object(o))
            })
            .collect(),
        other => panic!("unexpected path-info output: {other}"),
    }
}

/// One record of `nix-store --export`'s format (CppNix `Store::exportPath`):
/// the NAR, the export magic, the path, its references, its deriver and no
/// signature. A stream is `1` + record for each path, then `0`.
pub fn export_record(nar: &[u8], path: &str, references: &[String], deriver: Option<&str>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
        out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(nar);
    out.extend_from_slice(&0x4558_494e_u64.to_le_bytes());
    string(&mut out, path.as_bytes());
    out.extend_from_slice(&(references.len() as u64).to_le_bytes());
    for r in references {
        string(&mut out, r.as_bytes());
    }
    string(&mut out, deriver.unwrap_or_default().as_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

/// An export stream of `records` (see [`export_record`]).
pub fn export_stream(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(r);
    }
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

/// Runs `cmd` with `input` on its stdin; returns its output.
pub fn output_with_stdin(cmd: &mut std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for the command");
    writer.join().expect("stdin writer");
    out
}

/// A command's output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Removes ANSI escape sequences (colours) from a client's output.
pub fn strip_ansi(s: &str) -> String {
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

/// The `error: ...` messages of a client's stderr, colours removed, each
/// with its indented continuation lines (trimmed, one per line).
pub fn error_blocks(stderr: &str) -> Vec<String> {
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

/// The last component of a path (a store path's base name).
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Overwrites a file of a valid store path (as root), leaving it read-only.
pub fn corrupt(path: &str, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod +w");
    std::fs::write(path, contents).expect("overwrite");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).expect("chmod -w");
}

/// A NAR string: length, bytes, zero padding.
pub fn nar_str(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
    out.extend(std::iter::repeat_n(0u8, (8 - b.len() % 8) % 8));
}

/// IsValidPath on `c`.
pub fn is_valid_on(c: &mut proto_client::Client, path: &str) -> bool {
    let request = proto_client::Wire::op(worker_protocol::Op::IsValidPath).str(path);
    let outcome = c.call(&request).expect("IsValidPath");
    assert!(outcome.is_ok(), "IsValidPath({path}): {:?}", outcome.result);
    c.read_u64("valid").expect("IsValidPath's answer") != 0
}

/// Removes a folder holding store paths (made read-only by the store).
pub fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let status = std::process::Command::new("chmod").arg("-R").arg("u+w").arg(dir).status().expect("run chmod");
    assert!(status.success(), "chmod -R u+w {}", dir.display());
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
}
