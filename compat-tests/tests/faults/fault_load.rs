//! Load: 64 concurrent clients on one armitage daemon, mixing queries, adds
//! and builds for `ARMITAGE_LOAD_SECS` seconds.
//!
//! Duration: `ARMITAGE_LOAD_SECS` (default 60, what CI runs); the long run
//! is `ARMITAGE_LOAD_SECS=300` (5 minutes). `ARMITAGE_LOAD_SEED` replays a
//! run's choices (the seed is printed).
//!
//! 60 of the clients are scripted ([`compat_tests::proto_client`]): each
//! keeps one connection (handshake at 1.38 or 1.34, `SetOptions`) and loops
//! over a random mix of
//!
//! - queries: `IsValidPath`, `QueryPathInfo`, `QueryReferrers` and
//!   `QueryValidPaths` on paths it knows (its own and shared seeds, which
//!   every client refers to) and on paths that do not exist;
//! - adds of fresh content: `AddTextToStore` (half of them referring to a
//!   seed) and `AddToStoreNar`, each followed by an `IsValidPath`;
//! - builds: a fresh `.drv` (a `/bin/sh` builder copying a line of an input
//!   source into its output) added with `AddTextToStore`, then `BuildPaths`
//!   and a `QueryPathInfo` of the output. At most [`MAX_BUILDS_IN_FLIGHT`]
//!   at once over all clients (a client that would exceed it queries
//!   instead): on two cores, builds would otherwise hold every client.
//!
//! The other 4 are stock Nix 2.8 clients looping over `nix-store --add`,
//! `nix-store -q --hash` and (every third round) `nix-build`.
//!
//! Every answer is checked against what the client computed itself: store
//! paths, NAR hashes and sizes, references, content addresses, derivers,
//! referrers, validity, and the bytes a build wrote. Any failed request fails
//! the test, naming the operation and the error. At the end: latency per
//! operation kind (count, p50, p99, max) and throughput are printed; at
//! least a stated number of operations per kind completed; every path any
//! client added or built is valid; the daemon's memory grew by less than
//! [`MEMORY_FIXED`] plus [`MEMORY_PER_PATH`] per path added or built; its
//! sockets and pipes went back to where they were; no
//! staging directories or build directories are left; and the daemon still
//! serves adds and builds.

use compat_tests::process::{mem, mib, open_fds, threads};
use compat_tests::proto_client::{Client, Options, Wire, WirePathInfo};
use compat_tests::{Rng, nar_str};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::derivation::{Derivation, DrvHasher, Output};
use store::hash::Algorithm;
use store::store_path::{StoreDir, StorePath, StoreReferences};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, write_file};
use worker_protocol::Op;

/// Clients in all, of which [`STOCK_CLIENTS`] are stock Nix 2.8 commands.
const CLIENTS: usize = 64;
const STOCK_CLIENTS: usize = 4;

/// Builds in progress at once over all scripted clients (the store's
/// `max-jobs` is 2).
const MAX_BUILDS_IN_FLIGHT: usize = 4;

/// Text paths added before the load starts, known to every client.
const SEEDS: usize = 16;

/// How long one request may take before the test calls the daemon stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How much the daemon's resident memory may grow (at the end, and at its
/// peak) over what it had after the warm-up: [`MEMORY_FIXED`], plus
/// [`MEMORY_PER_PATH`] for each path the clients added or built.
///
/// Fixed: a task and two 64 KiB buffers per connection, a blocking thread
/// per request in progress, the database connections' page caches, NAR
/// buffers of the adds in progress: about 30 MiB.
///
/// Per path: each connection holds a temp root for every path it adds or
/// builds until it closes (as CppNix's per-connection temp roots file
/// does), two copies of the path's name in memory, and around them the
/// allocator's fragmentation: measured at under 1 KiB of RSS per path with
/// connections as long-lived as here (72 MiB for 60,000 paths in 60 s). A
/// leak of 1 KiB per request (two thirds of them are queries) would exceed
/// the bound.
const MEMORY_FIXED: u64 = 64 << 20;
const MEMORY_PER_PATH: u64 = 2 << 10;

/// The least operations per second of load that must complete, per group of
/// kinds (asserted as rate × duration). Observed on this 2-core machine over
/// 60 s while other suites kept its load average at 20: 3,935 requests/s in
/// all: 2,949 queries/s, 882 adds/s, 45 builds/s, and from the stock clients
/// 13.4 `nix-store --add`/s and 4.5 `nix-build`/s. The bounds are about a
/// fifth of that, as the suite runs this test next to others.
struct Minimum {
    group: &'static str,
    kinds: &'static [&'static str],
    per_sec: f64,
}

const MINIMUMS: &[Minimum] = &[
    Minimum {
        group: "queries",
        kinds: &["IsValidPath", "QueryPathInfo", "QueryReferrers", "QueryValidPaths"],
        per_sec: 500.0,
    },
    Minimum { group: "adds", kinds: &["AddTextToStore", "AddToStoreNar"], per_sec: 150.0 },
    Minimum { group: "builds", kinds: &["BuildPaths"], per_sec: 8.0 },
    Minimum { group: "stock adds", kinds: &["nix-store --add"], per_sec: 2.5 },
    Minimum { group: "stock builds", kinds: &["nix-build"], per_sec: 0.8 },
];

/// Requests per second in all (observed 3,935).
const MIN_TOTAL_PER_SEC: f64 = 700.0;

// --- What the clients know -------------------------------------------------------

/// A path a client added or built, with what `QueryPathInfo` must say of it.
#[derive(Debug, Clone)]
struct Known {
    path: String,
    deriver: String,
    /// Base-16 SHA-256 of the NAR, as on the wire.
    nar_hash: String,
    nar_size: u64,
    references: BTreeSet<String>,
    ca: String,
}

/// What the clients share.
struct Shared {
    dir: StoreDir,
    system: String,
    seeds: Vec<Known>,
    deadline: Instant,
    /// Set when a client fails: everybody stops.
    stop: AtomicBool,
    builds_in_flight: AtomicUsize,
    /// Requests completed so far, all clients.
    done: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }

    fn fail(&self, who: String, error: String) {
        self.failures.lock().unwrap().push(format!("{who}: {error}"));
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Latencies of completed requests, by kind.
#[derive(Default)]
struct Stats(BTreeMap<&'static str, Vec<Duration>>);

impl Stats {
    /// Runs one request, timing it when it succeeds; an error names the kind.
    fn time<T>(&mut self, kind: &'static str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
        let start = Instant::now();
        let r = f().map_err(|e| format!("{kind}: {e}"))?;
        self.record(kind, start.elapsed());
        Ok(r)
    }

    fn record(&mut self, kind: &'static str, latency: Duration) {
        self.0.entry(kind).or_default().push(latency);
    }

    fn merge(&mut self, other: Stats) {
        for (k, mut v) in other.0 {
            self.0.entry(k).or_default().append(&mut v);
        }
    }

    fn count(&self, kind: &str) -> usize {
        self.0.get(kind).map_or(0, Vec::len)
    }

    fn total(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

// --- NARs and paths -----------------------------------------------------------------

/// The NAR of one regular file.
fn nar_file(contents: &[u8], executable: bool) -> Vec<u8> {
    let mut n = Vec::with_capacity(contents.len() + 128);
    for s in [&b"nix-archive-1"[..], b"(", b"type", b"regular"] {
        nar_str(&mut n, s);
    }
    if executable {
        nar_str(&mut n, b"executable");
        nar_str(&mut n, b"");
    }
    nar_str(&mut n, b"contents");
    nar_str(&mut n, contents);
    nar_str(&mut n, b")");
    n
}

fn sha256_hex(data: &[u8]) -> String {
    Algorithm::Sha256.digest(data).to_base16()
}

/// A path that nobody adds.
fn missing_path(dir: &StoreDir, rng: &mut Rng) -> String {
    let digest = Algorithm::Sha256.digest(rng.next_u64().to_le_bytes());
    dir.display(&StorePath::from_digest(&digest.compress::<20>(), "never-added").expect("valid name"))
}

/// Printable text of `len` bytes with no backslash (the builder `echo`es it).
fn some_text(rng: &mut Rng, first_line: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_+=\n";
    let mut s = format!("{first_line}\n");
    s.extend((0..len).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char));
    s
}

/// `text` added as `name` referring to `refs`: the path and its info.
fn text_known(dir: &StoreDir, name: &str, text: &str, refs: &BTreeSet<String>) -> Known {
    let hash = Algorithm::Sha256.digest(text.as_bytes());
    let ref_paths: BTreeSet<StorePath> = refs.iter().map(|r| dir.parse_path(r).expect("a store path")).collect();
    let path = dir.display(&dir.make_text_path(name, &hash, &ref_paths).expect("a text path"));
    let nar = nar_file(text.as_bytes(), false);
    Known {
        path,
        deriver: String::new(),
        nar_hash: sha256_hex(&nar),
        nar_size: nar.len() as u64,
        references: refs.clone(),
        ca: ContentAddress { method: ContentAddressMethod::Text, hash }.to_string(),
    }
}

/// A NAR to add as `name` (recursive SHA-256, no references): path and info.
fn nar_known(dir: &StoreDir, name: &str, nar: &[u8]) -> Known {
    let hash = Algorithm::Sha256.digest(nar);
    let path = dir.display(
        &dir.make_fixed_output_path(name, FileIngestionMethod::Recursive, &hash, &StoreReferences::default())
            .expect("a source path"),
    );
    Known {
        path,
        deriver: String::new(),
        nar_hash: hash.to_base16(),
        nar_size: nar.len() as u64,
        references: BTreeSet::new(),
        ca: ContentAddress { method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive), hash }.to_string(),
    }
}

/// What the builder writes: the first line of its source, then where it came from.
fn build_output(src_text: &str, src: &str) -> String {
    format!("{}\nfrom {src}\n", src_text.lines().next().unwrap_or(""))
}

const BUILD_SCRIPT: &str = r#"read -r l < "$src"; echo "$l" > "$out"; echo "from $src" >> "$out""#;

/// A derivation named `name` whose output is [`build_output`] of `src`.
fn load_derivation(dir: &StoreDir, system: &str, name: &str, src: &str) -> Derivation {
    let env: BTreeMap<Vec<u8>, Vec<u8>> =
        [("builder", "/bin/sh"), ("name", name), ("out", ""), ("src", src), ("system", system)]
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
    let mut drv = Derivation {
        name: name.to_owned(),
        outputs: BTreeMap::from([("out".to_owned(), Output::Deferred)]),
        input_drvs: BTreeMap::new(),
        input_srcs: BTreeSet::from([dir.parse_path(src).expect("a store path")]),
        system: system.to_owned(),
        builder: b"/bin/sh".to_vec(),
        args: vec![b"-c".to_vec(), BUILD_SCRIPT.as_bytes().to_vec()],
        env,
    };
    let mut hasher = DrvHasher::new(dir.clone(), |p: &StorePath| {
        Err::<Derivation, String>(format!("no input derivations, asked for {p:?}"))
    });
    drv.fill_in_outputs(&mut hasher).expect("output paths of a plain derivation");
    drv
}

// --- Requests -----------------------------------------------------------------------

/// A scripted client's connection and what it has learnt.
struct Worker<'a> {
    id: usize,
    c: Client,
    rng: Rng,
    shared: &'a Shared,
    stats: Stats,
    /// Seeds, and every path this client added or built.
    known: Vec<Known>,
    /// Text paths this client added, with their text (sources for builds).
    texts: Vec<(String, String)>,
    /// For each seed and each text this client added, the paths this client
    /// made that refer to it.
    referrers: HashMap<String, Vec<String>>,
    n: u64,
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

impl<'a> Worker<'a> {
    fn connect(socket: &Path, id: usize, seed: u64, shared: &'a Shared) -> Result<Worker<'a>, String> {
        let minor = [38, 34][id % 2];
        let (c, _) = Client::connect(socket, minor).map_err(|e| format!("handshake: {e}"))?;
        c.set_timeout(REQUEST_TIMEOUT).map_err(err)?;
        let mut w = Worker {
            id,
            c,
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            shared,
            stats: Stats::default(),
            known: shared.seeds.clone(),
            texts: Vec::new(),
            referrers: HashMap::new(),
            n: 0,
        };
        w.c.set_options(&Options::default()).map_err(|e| format!("SetOptions: {e}"))?;
        w.c.take_transcript();
        Ok(w)
    }

    /// Sends a request and reads the stderr channel: a daemon error is an error.
    fn request(&mut self, wire: &Wire) -> Result<(), String> {
        let outcome = self.c.call(wire).map_err(err)?;
        // The transcript is for differential tests; here it would only grow.
        self.c.take_transcript();
        outcome.result.map_err(|e| format!("the daemon reported: {}", e.message))
    }

    /// Runs one request on this connection, timing it when it succeeds; an
    /// error names the kind.
    fn timed<T>(&mut self, kind: &'static str, f: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        let start = Instant::now();
        let r = f(self).map_err(|e| format!("{kind}: {e}"))?;
        self.stats.record(kind, start.elapsed());
        self.shared.done.fetch_add(1, Ordering::Relaxed);
        Ok(r)
    }

    fn is_valid(&mut self, path: &str) -> Result<bool, String> {
        self.timed("IsValidPath", |w| {
            w.request(&Wire::op(Op::IsValidPath).str(path))?;
            w.c.read_bool("valid").map_err(err)
        })
    }

    fn path_info(&mut self, path: &str) -> Result<Option<WirePathInfo>, String> {
        self.timed("QueryPathInfo", |w| {
            w.request(&Wire::op(Op::QueryPathInfo).str(path))?;
            if w.c.read_bool("valid").map_err(err)? { Ok(Some(w.c.read_path_info().map_err(err)?)) } else { Ok(None) }
        })
    }

    fn referrers_of(&mut self, path: &str) -> Result<BTreeSet<String>, String> {
        self.timed("QueryReferrers", |w| {
            w.request(&Wire::op(Op::QueryReferrers).str(path))?;
            Ok(w.c.read_strings("referrer").map_err(err)?.into_iter().collect())
        })
    }

    fn valid_paths(&mut self, paths: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
        let mut wire = Wire::op(Op::QueryValidPaths).strings(paths);
        if self.c.minor >= 27 {
            wire = wire.bool(false);
        }
        self.timed("QueryValidPaths", |w| {
            w.request(&wire)?;
            Ok(w.c.read_strings("validPath").map_err(err)?.into_iter().collect())
        })
    }

    fn add_text(
        &mut self,
        kind: &'static str,
        name: &str,
        text: &str,
        refs: &BTreeSet<String>,
    ) -> Result<String, String> {
        self.timed(kind, |w| {
            w.request(&Wire::op(Op::AddTextToStore).str(name).str(text).strings(refs))?;
            w.c.read_string("path").map_err(err)
        })
    }

    fn add_nar(&mut self, k: &Known, nar: &[u8]) -> Result<(), String> {
        let mut wire = Wire::op(Op::AddToStoreNar)
            .str(&k.path)
            .str("")
            .str(&k.nar_hash)
            .strings(&k.references)
            .u64(0)
            .u64(k.nar_size)
            .bool(false)
            .u64(0) // no signatures
            .str(&k.ca)
            .bool(false)
            .bool(true);
        wire = if self.c.minor >= 23 { wire.framed(nar, 32 << 10) } else { wire.raw(nar) };
        self.timed("AddToStoreNar", |w| w.request(&wire))
    }

    fn build(&mut self, drv_path: &str) -> Result<(), String> {
        self.timed("BuildPaths", |w| {
            w.request(&Wire::op(Op::BuildPaths).strings([format!("{drv_path}!out")]).u64(0))?;
            match w.c.read_u64("result").map_err(err)? {
                1 => Ok(()),
                other => Err(format!("answered {other}, not 1")),
            }
        })
    }

    // --- The mix ---------------------------------------------------------------

    fn run(&mut self) -> Result<(), String> {
        while self.shared.running() {
            match self.rng.below(100) {
                0..18 => self.check_valid()?,
                18..36 => self.check_path_info()?,
                36..50 => self.check_referrers()?,
                50..64 => self.check_valid_paths()?,
                64..80 => self.add_text_path()?,
                80..94 => self.add_nar_path()?,
                _ => {
                    let slot = self.shared.builds_in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < MAX_BUILDS_IN_FLIGHT).then_some(n + 1)
                    });
                    if slot.is_ok() {
                        let r = self.build_one();
                        self.shared.builds_in_flight.fetch_sub(1, Ordering::AcqRel);
                        r?;
                    } else {
                        self.check_path_info()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn random_known(&mut self) -> Known {
        let i = self.rng.below(self.known.len() as u64) as usize;
        self.known[i].clone()
    }

    fn fresh_name(&mut self, what: &str) -> String {
        self.n += 1;
        format!("load-{what}-{}-{}", self.id, self.n)
    }

    fn check_valid(&mut self) -> Result<(), String> {
        if self.rng.below(8) == 0 {
            let p = missing_path(&self.shared.dir, &mut self.rng);
            if self.is_valid(&p)? {
                return Err(format!("IsValidPath: {p}, never added, is valid"));
            }
        } else {
            let k = self.random_known();
            if !self.is_valid(&k.path)? {
                return Err(format!("IsValidPath: {} is not valid", k.path));
            }
        }
        Ok(())
    }

    fn check_path_info(&mut self) -> Result<(), String> {
        let k = self.random_known();
        let info = self.path_info(&k.path)?.ok_or_else(|| format!("QueryPathInfo: {} is not valid", k.path))?;
        let refs: BTreeSet<String> = info.references.iter().cloned().collect();
        let got = (info.deriver.as_str(), info.nar_hash.as_str(), info.nar_size, &refs, info.ca.as_str());
        let want = (
            k.deriver.as_str(),
            k.nar_hash.as_str(),
            k.nar_size,
            &k.references,
            if self.c.minor >= 16 { k.ca.as_str() } else { "" },
        );
        if got != want {
            return Err(format!(
                "QueryPathInfo({}): (deriver, NAR hash, NAR size, references, ca) are {got:?}, expected {want:?}",
                k.path
            ));
        }
        Ok(())
    }

    /// The referrers of a seed (a quarter of the time: every client refers
    /// to them, so they have thousands by the end) include those this
    /// client made; those of any other path are exactly those it made
    /// (nobody else refers to its paths).
    fn check_referrers(&mut self) -> Result<(), String> {
        let path = if self.rng.below(4) == 0 {
            self.shared.seeds[self.rng.below(SEEDS as u64) as usize].path.clone()
        } else {
            self.random_known().path
        };
        let got = self.referrers_of(&path)?;
        let mine: BTreeSet<String> = self.referrers.get(&path).into_iter().flatten().cloned().collect();
        if self.shared.seeds.iter().any(|s| s.path == path) {
            let absent: Vec<&String> = mine.difference(&got).collect();
            if !absent.is_empty() {
                return Err(format!("QueryReferrers({path}) lacks {absent:?} (of {} referrers)", got.len()));
            }
            let stray: Vec<&String> = got.iter().filter(|p| !p.starts_with(self.shared.dir.as_str())).collect();
            if !stray.is_empty() {
                return Err(format!("QueryReferrers({path}) answered non-store paths {stray:?}"));
            }
        } else if got != mine {
            return Err(format!("QueryReferrers({path}) answered {got:?}, expected {mine:?}"));
        }
        Ok(())
    }

    fn check_valid_paths(&mut self) -> Result<(), String> {
        let n = 1 + self.rng.below(8);
        let sample: BTreeSet<String> = (0..n).map(|_| self.random_known().path).collect();
        let mut asked = sample.clone();
        asked.insert(missing_path(&self.shared.dir, &mut self.rng));
        let got = self.valid_paths(&asked)?;
        if got != sample {
            return Err(format!("QueryValidPaths({asked:?}) answered {got:?}, expected {sample:?}"));
        }
        Ok(())
    }

    fn add_text_path(&mut self) -> Result<(), String> {
        let name = self.fresh_name("text");
        let len = self.rng.below(2048) as usize;
        let text = some_text(&mut self.rng, &format!("text {name}"), len);
        let mut refs = BTreeSet::new();
        let seed =
            (self.rng.below(2) == 0).then(|| self.shared.seeds[self.rng.below(SEEDS as u64) as usize].path.clone());
        if let Some(s) = &seed {
            refs.insert(s.clone());
        }
        let k = text_known(&self.shared.dir, &name, &text, &refs);
        let path = self.add_text("AddTextToStore", &name, &text, &refs)?;
        if path != k.path {
            return Err(format!("AddTextToStore({name}) answered {path}, expected {}", k.path));
        }
        if !self.is_valid(&path)? {
            return Err(format!("IsValidPath: {path}, just added, is not valid"));
        }
        if let Some(s) = seed {
            self.referrers.entry(s).or_default().push(path.clone());
        }
        self.texts.push((path, text));
        self.known.push(k);
        Ok(())
    }

    fn add_nar_path(&mut self) -> Result<(), String> {
        let name = self.fresh_name("nar");
        let len = self.rng.below(64 << 10) as usize;
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            data.extend_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        data.truncate(len);
        let nar = nar_file(&data, self.rng.below(4) == 0);
        let k = nar_known(&self.shared.dir, &name, &nar);
        self.add_nar(&k, &nar)?;
        if !self.is_valid(&k.path)? {
            return Err(format!("IsValidPath: {}, just added with AddToStoreNar, is not valid", k.path));
        }
        self.known.push(k);
        Ok(())
    }

    fn build_one(&mut self) -> Result<(), String> {
        // The source: a text this client added, or a seed's.
        let (src, src_text) = if self.texts.is_empty() || self.rng.below(4) == 0 {
            let i = self.rng.below(SEEDS as u64) as usize;
            (self.shared.seeds[i].path.clone(), seed_text(i))
        } else {
            self.texts[self.rng.below(self.texts.len() as u64) as usize].clone()
        };
        let name = self.fresh_name("build");
        let dir = self.shared.dir.clone();
        let drv = load_derivation(&dir, &self.shared.system, &name, &src);
        let aterm = String::from_utf8(drv.to_aterm(&dir).map_err(err)?).expect("an ATerm of UTF-8 strings");
        let want_drv = dir.display(&drv.drv_path(&dir).map_err(err)?);
        let refs = BTreeSet::from([src.clone()]);
        let drv_path = self.add_text("AddTextToStore(.drv)", &format!("{name}.drv"), &aterm, &refs)?;
        if drv_path != want_drv {
            return Err(format!("AddTextToStore({name}.drv) answered {drv_path}, expected {want_drv}"));
        }
        self.build(&drv_path)?;
        let Some(Output::InputAddressed(out)) = drv.outputs.get("out") else {
            unreachable!("an input-addressed output")
        };
        let out = dir.display(out);
        let contents = build_output(&src_text, &src);
        let nar = nar_file(contents.as_bytes(), false);
        let k = Known {
            path: out.clone(),
            deriver: drv_path.clone(),
            nar_hash: sha256_hex(&nar),
            nar_size: nar.len() as u64,
            references: refs,
            ca: String::new(),
        };
        // The output as built: info and bytes.
        let info = self
            .path_info(&out)?
            .ok_or_else(|| format!("BuildPaths({drv_path}!out) succeeded but {out} is not valid"))?;
        let refs: BTreeSet<String> = info.references.iter().cloned().collect();
        if (info.nar_hash.as_str(), info.nar_size, &refs) != (k.nar_hash.as_str(), k.nar_size, &k.references) {
            let on_disk = std::fs::read_to_string(&out).unwrap_or_else(|e| format!("<{e}>"));
            return Err(format!(
                "{out}: NAR hash {}, size {}, references {refs:?}; expected {}, {}, {:?} (the output holds {on_disk:?}, expected {contents:?})",
                info.nar_hash, info.nar_size, k.nar_hash, k.nar_size, k.references
            ));
        }
        let mine = self.referrers.entry(src).or_default();
        mine.push(drv_path.clone());
        mine.push(out);
        self.known.push(text_known(&dir, &format!("{name}.drv"), &aterm, &k.references));
        self.known.push(k);
        Ok(())
    }
}

fn seed_text(i: usize) -> String {
    format!("seed {i} of the load test\nshared by every client\n")
}

// --- Stock clients ----------------------------------------------------------------

/// A stock Nix 2.8 client's loop: `nix-store --add`, `nix-store -q --hash`,
/// and every third round a `nix-build` of a fresh derivation.
fn stock_loop(
    daemon: &Daemon,
    store: &TestStore,
    nix: &Nix,
    shared: &Shared,
    id: usize,
    stats: &mut Stats,
) -> Result<usize, String> {
    let work = store.work_dir(&format!("stock-{id}"));
    let dir = &shared.dir;
    let run = |stats: &mut Stats, kind: &'static str, cmd: &mut std::process::Command| -> Result<String, String> {
        let r = stats.time(kind, || {
            let out = output(cmd);
            if out.status.success() {
                Ok(line(String::from_utf8_lossy(&out.stdout)))
            } else {
                Err(format!("{} ({}):\n{}", describe(cmd), out.status, String::from_utf8_lossy(&out.stderr)))
            }
        })?;
        shared.done.fetch_add(1, Ordering::Relaxed);
        Ok(r)
    };
    let mut rounds = 0;
    while shared.running() {
        let name = format!("stock-{id}-{rounds}");
        let contents = format!("stock client {id} round {rounds}\n");
        let file = work.join(&name);
        write_file(&file, &contents);
        let k = nar_known(dir, &name, &nar_file(contents.as_bytes(), false));
        let p = run(stats, "nix-store --add", daemon.client(store, nix, "nix-store").arg("--add").arg(&file))?;
        if p != k.path {
            return Err(format!("nix-store --add {name}: printed {p}, expected {}", k.path));
        }
        let hash = run(stats, "nix-store -q", daemon.client(store, nix, "nix-store").args(["-q", "--hash", &p]))?;
        let want = format!("sha256:{}", Algorithm::Sha256.digest(nar_file(contents.as_bytes(), false)).to_nix32());
        if hash != want {
            return Err(format!("nix-store -q --hash {p}: printed {hash}, expected {want}"));
        }
        if rounds % 3 == 0 {
            let expr = work.join(format!("{name}.nix"));
            write_file(
                &expr,
                format!(
                    "derivation {{ name = \"{name}\"; system = \"{}\"; builder = \"/bin/sh\"; args = [ \"-c\" \"echo built {name} > $out\" ]; }}\n",
                    shared.system
                ),
            );
            let out = run(stats, "nix-build", daemon.client(store, nix, "nix-build").arg("--no-out-link").arg(&expr))?;
            let got = std::fs::read_to_string(&out).map_err(|e| format!("nix-build {name} printed {out:?}: {e}"))?;
            if got != format!("built {name}\n") {
                return Err(format!("nix-build {name}: {out} holds {got:?}"));
            }
        }
        rounds += 1;
    }
    Ok(rounds)
}

fn describe(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

// --- The daemon seen from outside ------------------------------------------------------

/// What each of a process's descriptors is open on.
fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The CPU time (user and system) a process has used, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    // Fields after the command (which is in parentheses and may hold spaces):
    // state is the 3rd field, utime the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')').expect("a command in parentheses") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // In USER_HZ, which Linux fixes at 100 for what it reports in /proc.
    ticks as f64 / 100.0
}

/// Staging directories left in the store, and build directories of this
/// daemon left in the temporary directory.
fn debris(store: &TestStore, pid: u32) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let mut left: Vec<String> = names(Path::new(&store.store_dir))
        .into_iter()
        .filter(|n| n.starts_with("tmp-") || n.starts_with("add-"))
        .collect();
    let tmp = std::env::temp_dir();
    left.extend(
        names(&tmp)
            .into_iter()
            .filter(|n| n.starts_with("nix-build-") && n.contains(&format!("-{pid}-")))
            .map(|n| tmp.join(n).display().to_string()),
    );
    left
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn load_secs() -> u64 {
    std::env::var("ARMITAGE_LOAD_SECS")
        .ok()
        .map(|s| s.parse().expect("ARMITAGE_LOAD_SECS is a number of seconds"))
        .unwrap_or(60)
}

// --- The test --------------------------------------------------------------------------

#[test]
fn sixty_four_clients_mixing_queries_adds_and_builds_see_no_failure() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let secs = load_secs();
    let seed = std::env::var("ARMITAGE_LOAD_SEED")
        .ok()
        .map(|s| s.parse().expect("a number"))
        .unwrap_or_else(Rng::seed_from_time);
    eprintln!("load: {CLIENTS} clients ({STOCK_CLIENTS} stock Nix 2.8) for {secs} s, seed {seed} (ARMITAGE_LOAD_SEED)");
    let store = TestStore::with_conf("build-users-group =\nmax-jobs = 2\n");
    let daemon = Daemon::armitage(&store);
    let pid = daemon.pid();
    let dir = StoreDir::new(store.store_dir.clone()).expect("a canonical store dir");
    let system = format!("{}-linux", std::env::consts::ARCH);

    // Seeds, and a warm-up: a few of every request on one connection.
    let seeds: Vec<Known> =
        (0..SEEDS).map(|i| text_known(&dir, &format!("load-seed-{i}"), &seed_text(i), &BTreeSet::new())).collect();
    let warm_shared = Shared {
        dir: dir.clone(),
        system: system.clone(),
        seeds: seeds.clone(),
        deadline: Instant::now() + Duration::from_secs(3600),
        stop: AtomicBool::new(false),
        builds_in_flight: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
    };
    {
        let mut w = Worker::connect(&daemon.socket, 0, seed, &warm_shared).expect("a warm-up connection");
        for (i, k) in seeds.iter().enumerate() {
            let p = w
                .add_text("AddTextToStore", &format!("load-seed-{i}"), &seed_text(i), &BTreeSet::new())
                .expect("add a seed");
            assert_eq!(p, k.path, "seed {i}");
        }
        w.known = seeds.clone();
        for _ in 0..3 {
            w.add_text_path().and_then(|_| w.add_nar_path()).and_then(|_| w.build_one()).expect("warm-up");
            w.check_path_info()
                .and_then(|_| w.check_referrers())
                .and_then(|_| w.check_valid_paths())
                .expect("warm-up queries");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = mem(pid);
    let fds_before = open_fds(pid);
    let fds_before_list = fd_targets(pid);
    let threads_before = threads(pid);

    let shared = Shared { deadline: Instant::now() + Duration::from_secs(secs), ..warm_shared };
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut known_paths: Vec<String> = Vec::new();
    let mut stock_rounds = 0;
    let mut peak_threads = 0;
    let mut peak_fds = 0;
    // The daemon's RSS, the requests done and the daemon's CPU time, every
    // tenth of the run: a plateau or a leak, a steady pace or a slowdown
    // (and whether a slowdown is the daemon's or the machine's).
    let mut samples: Vec<(u64, u64, usize, f64)> = Vec::new();
    std::thread::scope(|scope| {
        let scripted: Vec<_> = (STOCK_CLIENTS..CLIENTS)
            .map(|id| {
                let (shared, socket) = (&shared, &daemon.socket);
                scope.spawn(move || {
                    let mut w = match Worker::connect(socket, id, seed, shared) {
                        Ok(w) => w,
                        Err(e) => {
                            shared.fail(format!("client {id}"), e);
                            return (Stats::default(), Vec::new());
                        }
                    };
                    if let Err(e) = w.run() {
                        shared.fail(format!("client {id} (protocol 1.{})", w.c.minor), e);
                    }
                    (w.stats, w.known.into_iter().skip(SEEDS).map(|k| k.path).collect::<Vec<_>>())
                })
            })
            .collect();
        let stock: Vec<_> = (0..STOCK_CLIENTS)
            .map(|id| {
                let (shared, daemon, store, nix) = (&shared, &daemon, &store, &nix);
                scope.spawn(move || {
                    let mut stats = Stats::default();
                    let rounds = stock_loop(daemon, store, nix, shared, id, &mut stats).unwrap_or_else(|e| {
                        shared.fail(format!("stock client {id}"), e);
                        0
                    });
                    (stats, rounds)
                })
            })
            .collect();
        // Watch the daemon while the load runs.
        while shared.running() {
            peak_threads = peak_threads.max(threads(pid));
            peak_fds = peak_fds.max(open_fds(pid));
            let t = started.elapsed().as_secs();
            if samples.last().is_none_or(|(last, ..)| t >= last + secs.div_ceil(10)) {
                samples.push((t, mem(pid).rss, shared.done.load(Ordering::Relaxed), cpu_secs(pid)));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for h in scripted {
            let (s, paths) = h.join().expect("a scripted client panicked");
            stats.merge(s);
            known_paths.extend(paths);
        }
        for h in stock {
            let (s, rounds) = h.join().expect("a stock client panicked");
            stats.merge(s);
            stock_rounds += rounds;
        }
    });
    let elapsed = started.elapsed();
    let done_at_end = shared.done.load(Ordering::Relaxed);
    let failures = shared.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed request(s) under load (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n\n")
    );

    // The figures.
    let total = stats.total();
    let mut table = format!(
        "load: {CLIENTS} clients for {:.1} s (seed {seed})\n{:<22} {:>8} {:>10} {:>10} {:>10}\n",
        elapsed.as_secs_f64(),
        "op",
        "count",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for (kind, v) in &mut stats.0 {
        v.sort();
        table.push_str(&format!(
            "{kind:<22} {:>8} {:>10} {:>10} {:>10}\n",
            v.len(),
            ms(percentile(v, 50)),
            ms(percentile(v, 99)),
            ms(*v.last().unwrap())
        ));
    }
    table.push_str(&format!(
        "total {total} ops, {:.1} ops/s; {stock_rounds} stock rounds\n",
        total as f64 / elapsed.as_secs_f64()
    ));
    eprintln!("{table}");

    // Enough got done.
    let mut short = Vec::new();
    for m in MINIMUMS {
        let done: usize = m.kinds.iter().map(|k| stats.count(k)).sum();
        let min = (m.per_sec * secs as f64).ceil() as usize;
        if done < min.max(1) {
            short.push(format!("{}: {done} < {} ({} /s over {secs} s)", m.group, min.max(1), m.per_sec));
        }
    }
    let min_total = (MIN_TOTAL_PER_SEC * secs as f64).ceil() as usize;
    if total < min_total {
        short.push(format!("total: {total} < {min_total} ({MIN_TOTAL_PER_SEC} /s over {secs} s)"));
    }
    assert!(short.is_empty(), "too few operations completed:\n{}\n{table}", short.join("\n"));

    // Every path a client added or built is still valid.
    let mut c = Worker::connect(&daemon.socket, 0, seed, &shared).expect("a connection after the load");
    for chunk in known_paths.chunks(2000) {
        let asked: BTreeSet<String> = chunk.iter().cloned().collect();
        let got = c.valid_paths(&asked).expect("QueryValidPaths after the load");
        let lost: Vec<&String> = asked.difference(&got).collect();
        assert!(
            lost.is_empty(),
            "{} paths added or built under load are not valid: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
    }
    drop(c);

    // Memory, descriptors, threads, debris.
    let after = mem(pid);
    samples.push((elapsed.as_secs(), after.rss, done_at_end, cpu_secs(pid)));
    eprintln!(
        "during the load (time: daemon RSS, requests/s and daemon CPU ms per request since the previous sample):\n  {}",
        samples
            .windows(2)
            .map(|w| {
                let ((t0, _, n0, c0), (t1, rss, n1, c1)) = (w[0], w[1]);
                let n = (n1 - n0).max(1) as f64;
                format!("{t1} s: {}, {:.0}/s, {:.2} ms", mib(rss), n / (t1 - t0).max(1) as f64, (c1 - c0) * 1000.0 / n)
            })
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let paths = (known_paths.len() + stats.count("nix-store --add") + 2 * stats.count("nix-build")) as u64;
    let grown = after.rss.saturating_sub(before.rss);
    let memory_bound = MEMORY_FIXED + MEMORY_PER_PATH * paths;
    eprintln!(
        "daemon: RSS {} after warm-up, {} after the load ({:.1} KiB per path added or built, {paths} paths), peak {}; \
         threads {threads_before} -> peak {peak_threads} -> {}; fds {fds_before} -> peak {peak_fds} -> {}; \
         database {} and its WAL {}",
        mib(before.rss),
        mib(after.rss),
        grown as f64 / 1024.0 / paths.max(1) as f64,
        mib(after.hwm),
        threads(pid),
        open_fds(pid),
        mib(std::fs::metadata(store.state_dir.join("db/db.sqlite")).map_or(0, |m| m.len())),
        mib(std::fs::metadata(store.state_dir.join("db/db.sqlite-wal")).map_or(0, |m| m.len())),
    );
    assert!(grown < memory_bound, "RSS grew by {} (bound {} for {paths} paths)", mib(grown), mib(memory_bound));
    assert!(
        after.hwm.saturating_sub(before.rss) < memory_bound,
        "peak RSS grew by {} (bound {} for {paths} paths)",
        mib(after.hwm.saturating_sub(before.rss)),
        mib(memory_bound)
    );

    // Every connection's socket, every build's pipes and files are closed.
    // Database descriptors may stay: the store keeps up to 8 idle read
    // connections (the database and its WAL each), and SQLite does not close
    // the descriptor of a connection closed while another one holds a lock
    // on the file (that would drop the process's locks) but keeps it for the
    // next connection to reuse: at most one per connection open at once, so
    // per request in progress.
    let deadline = Instant::now() + Duration::from_secs(20);
    let is_db = |t: &&String| t.contains("/db/db.sqlite");
    loop {
        let now = fd_targets(pid);
        let (db, rest): (Vec<&String>, Vec<&String>) = now.iter().partition(is_db);
        let (db_before, rest_before): (Vec<&String>, Vec<&String>) = fds_before_list.iter().partition(is_db);
        if rest == rest_before && db.len() <= db_before.len() + 3 * CLIENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon holds {} fds after the load (had {fds_before}: {fds_before_list:?}): {now:?}",
            now.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = debris(&store, pid);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind after the load: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Still serving: adds, queries and a build on a fresh connection.
    let mut w = Worker::connect(&daemon.socket, 1, seed, &shared).expect("a connection after the load");
    w.add_text_path()
        .and_then(|_| w.add_nar_path())
        .and_then(|_| w.build_one())
        .expect("the daemon serves after the load");
    w.check_path_info()
        .and_then(|_| w.check_referrers())
        .and_then(|_| w.check_valid_paths())
        .expect("the daemon answers after the load");
    drop(w);
    assert!(daemon.stop().success(), "the daemon exits cleanly on SIGTERM");
}
