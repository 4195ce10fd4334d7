//! Bad input against the armitage daemon: garbage, truncated requests and
//! uploads, an unknown operation, 2^60 lengths and counts, a NAR nested
//! 100,000 directories deep, a NAR declaring a 2^50-byte file, 1000
//! half-open connections, slow-loris clients trickling a byte a second and
//! clients hanging up mid-NAR. Each bad client gets an error or is closed; the
//! daemon's memory stays within [`MEMORY_BOUND`]; well-behaved clients (stock
//! Nix 2.8 and a scripted one) running at the same time see no failure; an
//! upload that dies half way leaves nothing that blocks a later add of the
//! same path; and the daemon keeps serving afterwards.
//!
//! The clients here speak the protocol from raw sockets
//! (the team notes worker-protocol.md), so that they can stop anywhere.

use compat_tests::nar_str;
use compat_tests::process::{mem, mib, open_fds, threads};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use store::hash::Algorithm;
use store::store_path::{StoreDir, StorePath};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, run, write_file};

/// How much the daemon's resident memory may grow, at its peak (VmHWM) and
/// at the end (VmRSS), while 1000 half-open connections are held and every
/// hostile request of this file is thrown at it. Per connection the daemon
/// keeps a task, a socket and two 64 KiB stream buffers that are only touched
/// as far as bytes arrive (a few KiB each here), and one stalled upload holds
/// a blocked thread with a 256 KiB read buffer: 1000 connections come to well
/// under 64 MiB. Anything proportional to what a client *declares* (2^60,
/// 64 MiB texts, 2^50-byte files) would blow it at once.
const MEMORY_BOUND: u64 = 64 << 20;

/// What one upload stopped half way may cost: a thread (the stack pages it
/// touched), a 256 KiB read buffer touched only as far as bytes arrived, a
/// NAR reader, a staging directory. Measured at about 65 KiB; 600 of them
/// may take 600 × 128 KiB = 75 MiB.
const STALLED_UPLOAD_COST: u64 = 128 << 10;

const WORKER_MAGIC_1: u64 = 0x6e69_7863;
const WORKER_MAGIC_2: u64 = 0x6478_696f;
const STDERR_NEXT: u64 = 0x6f6c_6d67;
const STDERR_READ: u64 = 0x6461_7461;
const STDERR_WRITE: u64 = 0x6461_7416;
const STDERR_LAST: u64 = 0x616c_7473;
const STDERR_ERROR: u64 = 0x6378_7470;
const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
const STDERR_RESULT: u64 = 0x5253_4c54;

const OP_IS_VALID_PATH: u64 = 1;
const OP_ADD_TO_STORE: u64 = 7;
const OP_ADD_TEXT_TO_STORE: u64 = 8;
const OP_SET_OPTIONS: u64 = 19;
const OP_QUERY_PATH_INFO: u64 = 26;
const OP_QUERY_VALID_PATHS: u64 = 31;
const OP_NAR_FROM_PATH: u64 = 38;
const OP_ADD_TO_STORE_NAR: u64 = 39;

/// Protocol versions clients announce: 1.38 (Nix 2.26), 1.34 (Nix 2.8), 1.21 (Nix 2.3).
const V1_38: u64 = 0x126;
const V1_34: u64 = 0x122;
const V1_21: u64 = 0x115;

/// How long any read from the daemon may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

// --- Building messages -------------------------------------------------------

/// Bytes of a message, built field by field.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

impl Msg {
    fn new() -> Msg {
        Msg::default()
    }

    fn u64(mut self, v: u64) -> Msg {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(mut self, b: &[u8]) -> Msg {
        self = self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self.0.extend(std::iter::repeat_n(0u8, (8 - b.len() % 8) % 8));
        self
    }

    fn str(self, s: &str) -> Msg {
        self.bytes(s.as_bytes())
    }

    fn strings(mut self, items: &[&str]) -> Msg {
        self = self.u64(items.len() as u64);
        for s in items {
            self = self.str(s);
        }
        self
    }

    fn raw(mut self, b: &[u8]) -> Msg {
        self.0.extend_from_slice(b);
        self
    }

    /// `data` as one frame and the terminator.
    fn framed(self, data: &[u8]) -> Msg {
        let m = if data.is_empty() { self } else { self.u64(data.len() as u64).raw(data) };
        m.u64(0)
    }
}

fn nar_strs(out: &mut Vec<u8>, items: &[&[u8]]) {
    for i in items {
        nar_str(out, i);
    }
}

/// The NAR of one regular file.
fn nar_file(contents: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    nar_strs(&mut n, &[b"nix-archive-1", b"(", b"type", b"regular", b"contents", contents, b")"]);
    n
}

/// A well-formed NAR of a file nested `depth` directories deep.
fn nar_deep(depth: usize) -> Vec<u8> {
    let mut n = Vec::with_capacity(depth * 200);
    nar_str(&mut n, b"nix-archive-1");
    for _ in 0..depth {
        nar_strs(&mut n, &[b"(", b"type", b"directory", b"entry", b"(", b"name", b"d", b"node"]);
    }
    nar_strs(&mut n, &[b"(", b"type", b"regular", b"contents", b"x", b")"]);
    for _ in 0..depth {
        nar_strs(&mut n, &[b")", b")"]);
    }
    n
}

/// The start of a NAR whose single file declares `size` bytes, followed by
/// `sent` bytes of them.
fn nar_declaring(size: u64, sent: usize) -> Vec<u8> {
    let mut n = Vec::new();
    nar_strs(&mut n, &[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
    n.extend_from_slice(&size.to_le_bytes());
    n.extend(std::iter::repeat_n(b'z', sent));
    n
}

/// A store path named `name` with a hash part derived from `seed`.
fn some_path(dir: &StoreDir, name: &str, seed: &str) -> String {
    let digest = Algorithm::Sha256.digest(seed.as_bytes());
    let mut d20 = [0u8; 20];
    d20.copy_from_slice(&digest.as_bytes()[..20]);
    dir.display(&StorePath::from_digest(&d20, name).expect("valid name"))
}

/// `AddToStoreNar`'s fields for `path` whose NAR is `nar` (no NAR yet).
fn add_to_store_nar_header(path: &str, nar: &[u8]) -> Msg {
    Msg::new()
        .u64(OP_ADD_TO_STORE_NAR)
        .str(path)
        .str("")
        .str(&Algorithm::Sha256.digest(nar).to_base16())
        .u64(0)
        .u64(0)
        .u64(nar.len() as u64)
        .u64(0)
        .u64(0)
        .str("")
        .u64(0)
        .u64(0)
}

fn set_options() -> Msg {
    let mut m = Msg::new().u64(OP_SET_OPTIONS);
    // keepFailed, keepGoing, tryFallback, verbosity, maxBuildJobs, maxSilentTime,
    // useBuildHook, verboseBuild, logType, printBuildTrace, buildCores, useSubstitutes
    for v in [0, 0, 0, 3, 1, 0, 1, 0, 0, 0, 1, 0] {
        m = m.u64(v);
    }
    m.u64(0)
}

// --- A raw client --------------------------------------------------------------

struct Client {
    s: UnixStream,
    minor: u64,
}

/// What a reply window ended with.
#[derive(Debug)]
enum Reply {
    Last,
    Error(String),
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { s, minor: 0 }
    }

    /// Connects and completes the handshake announcing `version`.
    fn handshake(socket: &Path, version: u64) -> Client {
        let mut c = Client::connect(socket);
        c.send(&Msg::new().u64(WORKER_MAGIC_1));
        assert_eq!(c.u64(), WORKER_MAGIC_2, "daemon magic");
        let server = c.u64();
        c.minor = (version.min(server)) & 0xff;
        c.send(&Msg::new().u64(version));
        if c.minor >= 38 {
            c.send(&Msg::new().u64(0));
            let n = c.u64();
            for _ in 0..n {
                c.string();
            }
        }
        let mut m = Msg::new();
        if c.minor >= 14 {
            m = m.u64(0);
        }
        if c.minor >= 11 {
            m = m.u64(0);
        }
        c.send(&m);
        if c.minor >= 33 {
            c.string();
        }
        if c.minor >= 35 {
            c.u64();
        }
        match c.reply() {
            Reply::Last => c,
            Reply::Error(e) => panic!("handshake failed: {e}"),
        }
    }

    fn send(&mut self, m: &Msg) {
        self.s.write_all(&m.0).expect("send to the daemon");
    }

    /// Sends, ignoring a daemon that already hung up.
    fn send_lossy(&mut self, m: &Msg) {
        let _ = self.s.write_all(&m.0);
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.s.read_exact(&mut b).expect("read from the daemon");
        u64::from_le_bytes(b)
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = self.u64();
        assert!(len < 1 << 24, "daemon sent a string of {len} bytes");
        let mut b = vec![0u8; (len + (8 - len % 8) % 8) as usize];
        self.s.read_exact(&mut b).expect("read from the daemon");
        b.truncate(len as usize);
        b
    }

    fn string(&mut self) -> String {
        String::from_utf8(self.bytes()).expect("utf-8 from the daemon")
    }

    fn fields(&mut self) {
        for _ in 0..self.u64() {
            match self.u64() {
                0 => {
                    self.u64();
                }
                1 => {
                    self.bytes();
                }
                t => panic!("daemon sent a field of type {t}"),
            }
        }
    }

    /// Reads the stderr channel up to `STDERR_LAST` or `STDERR_ERROR`.
    fn reply(&mut self) -> Reply {
        loop {
            match self.u64() {
                STDERR_LAST => return Reply::Last,
                STDERR_ERROR if self.minor >= 26 => {
                    assert_eq!(self.string(), "Error");
                    self.u64();
                    self.string();
                    let msg = self.string();
                    assert_eq!(self.u64(), 0, "error position");
                    for _ in 0..self.u64() {
                        assert_eq!(self.u64(), 0, "trace position");
                        self.string();
                    }
                    return Reply::Error(msg);
                }
                STDERR_ERROR => {
                    let msg = self.string();
                    self.u64();
                    return Reply::Error(msg);
                }
                STDERR_NEXT => {
                    self.string();
                }
                STDERR_WRITE => {
                    self.bytes();
                }
                STDERR_READ => panic!("daemon asked for data nobody offered"),
                STDERR_START_ACTIVITY => {
                    self.u64();
                    self.u64();
                    self.u64();
                    self.string();
                    self.fields();
                    self.u64();
                }
                STDERR_STOP_ACTIVITY => {
                    self.u64();
                }
                STDERR_RESULT => {
                    self.u64();
                    self.u64();
                    self.fields();
                }
                other => panic!("daemon sent unknown stderr message {other:#x}"),
            }
        }
    }

    fn expect_ok(&mut self, what: &str) {
        if let Reply::Error(e) = self.reply() {
            panic!("{what} failed: {e}");
        }
    }

    /// The daemon reports an error containing `needle`, then hangs up.
    fn expect_error_then_close(&mut self, needle: &str) {
        match self.reply() {
            Reply::Error(e) => assert!(e.contains(needle), "error {e:?} does not mention {needle:?}"),
            Reply::Last => panic!("daemon accepted what should have been refused ({needle})"),
        }
        self.expect_closed();
    }

    /// The daemon hangs up (without sending anything more).
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => panic!("daemon sent {n} more bytes instead of closing: {:?}", &buf[..n.min(64)]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("daemon did not close the connection: {e}"),
            }
        }
    }

    /// Everything the daemon sends until it hangs up (for the pre-handshake cases).
    fn drain_until_closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("daemon did not close the connection: {e}"),
            }
        }
    }

    fn add_text(&mut self, name: &str, text: &str) -> String {
        self.send(&Msg::new().u64(OP_ADD_TEXT_TO_STORE).str(name).str(text).u64(0));
        self.expect_ok("AddTextToStore");
        self.string()
    }

    fn is_valid(&mut self, path: &str) -> bool {
        self.send(&Msg::new().u64(OP_IS_VALID_PATH).str(path));
        self.expect_ok("IsValidPath");
        self.u64() != 0
    }

    /// QueryPathInfo: the NAR size, if valid.
    fn nar_size(&mut self, path: &str) -> Option<u64> {
        self.send(&Msg::new().u64(OP_QUERY_PATH_INFO).str(path));
        self.expect_ok("QueryPathInfo");
        if self.u64() == 0 {
            return None;
        }
        self.string(); // deriver
        self.string(); // NAR hash
        for _ in 0..self.u64() {
            self.string();
        }
        self.u64(); // registration time
        let size = self.u64();
        self.u64(); // ultimate
        for _ in 0..self.u64() {
            self.string();
        }
        self.string(); // CA
        Some(size)
    }

    /// Adds `nar` as `path` with AddToStoreNar (framed, minor ≥ 23).
    fn add_nar(&mut self, path: &str, nar: &[u8]) {
        self.send(&add_to_store_nar_header(path, nar).framed(nar));
        self.expect_ok("AddToStoreNar");
    }
}

// --- The daemon seen from outside -------------------------------------------------

/// Staging directories left in the store.
fn debris(store: &TestStore) -> Vec<String> {
    std::fs::read_dir(&store.store_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("tmp-") || n.starts_with("add-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until no staging directory is left (failing uploads clean up on
/// their own thread, just after the error is sent).
fn assert_no_debris(store: &TestStore) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = debris(store);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "staging directories left in the store: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon still answers a fresh, well-behaved client.
fn assert_serving(daemon: &Daemon, tag: &str) {
    let mut c = Client::handshake(&daemon.socket, V1_38);
    c.send(&set_options());
    c.expect_ok("SetOptions");
    let name: String = tag.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' }).collect();
    let p = c.add_text(&format!("still-serving-{name}"), &format!("still serving after {tag}"));
    assert!(c.is_valid(&p), "{p} is valid after {tag}");
}

fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

// --- The hostile cases, each usable alone or alongside other clients -------------

fn garbage_before_the_handshake(socket: &Path) {
    // Not the magic: closed without a word.
    let mut c = Client::connect(socket);
    let mut rng = compat_tests::Rng::new(0x6a72_6261_6765);
    let noise: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    c.send_lossy(&Msg::new().raw(&noise));
    assert!(c.drain_until_closed().is_empty(), "nothing is sent to a client that did not say the magic");

    // The magic, then a version that is no version, or one too old.
    for version in [0xdead_beef_u64, 0x109, u64::MAX, 0x0126_0000] {
        let mut c = Client::connect(socket);
        c.send(&Msg::new().u64(WORKER_MAGIC_1));
        assert_eq!(c.u64(), WORKER_MAGIC_2);
        c.u64();
        c.send_lossy(&Msg::new().u64(version).raw(&noise[..64]));
        let rest = c.drain_until_closed();
        assert!(rest.is_empty(), "version {version:#x}: daemon went on with {} bytes", rest.len());
    }

    // A feature list of 2^60 strings in the handshake.
    let mut c = Client::connect(socket);
    c.send(&Msg::new().u64(WORKER_MAGIC_1).u64(V1_38).u64(1 << 60));
    assert_eq!(c.u64(), WORKER_MAGIC_2);
    c.u64();
    assert!(c.drain_until_closed().is_empty());
}

fn garbage_after_the_handshake(socket: &Path) {
    for version in [V1_38, V1_34, V1_21] {
        // Random op words: an unknown operation.
        let mut c = Client::handshake(socket, version);
        c.send(&Msg::new().u64(0x7a7a_7a7a_7a7a_7a7a).raw(b"garbage!garbage!"));
        c.expect_error_then_close("invalid operation");
    }
    for op in [0, 2, 15, 17, 48, 99, 1000, u64::MAX] {
        let mut c = Client::handshake(socket, V1_38);
        c.send(&Msg::new().u64(op));
        c.expect_error_then_close(&format!("invalid operation {op}"));
    }
    // Removed operations.
    let mut c = Client::handshake(socket, V1_38);
    c.send(&Msg::new().u64(24));
    c.expect_error_then_close("Removed operation 24");
    // A store path that is not one.
    let mut c = Client::handshake(socket, V1_38);
    c.send(&Msg::new().u64(OP_IS_VALID_PATH).str("/etc/passwd"));
    c.expect_error_then_close("");
    // Non-zero padding.
    let mut c = Client::handshake(socket, V1_38);
    c.send(&Msg::new().u64(OP_IS_VALID_PATH).u64(3).raw(b"abc\x01\0\0\0\0"));
    c.expect_error_then_close("padding");
}

fn huge_lengths(socket: &Path, dir: &StoreDir) {
    let huge = 1u64 << 60;
    // A path string of 2^60 bytes.
    let mut c = Client::handshake(socket, V1_38);
    c.send(&Msg::new().u64(OP_IS_VALID_PATH).u64(huge).raw(b"/nix/sto"));
    c.expect_error_then_close("longer than the limit");
    // A text of 2^60 bytes.
    let mut c = Client::handshake(socket, V1_34);
    c.send(&Msg::new().u64(OP_ADD_TEXT_TO_STORE).str("t").u64(huge));
    c.expect_error_then_close("longer than the limit");
    // A set of 2^60 paths.
    let mut c = Client::handshake(socket, V1_38);
    c.send(&Msg::new().u64(OP_QUERY_VALID_PATHS).u64(huge));
    c.expect_error_then_close("more than the limit");
    // u64::MAX as a length.
    let mut c = Client::handshake(socket, V1_38);
    c.send(&Msg::new().u64(OP_IS_VALID_PATH).u64(u64::MAX));
    c.expect_error_then_close("longer than the limit");
    // A 2^60-byte frame that carries a NAR start, then the client gives up:
    // the upload fails on the short stream and the connection ends.
    let nar = nar_file(b"framed");
    let path = some_path(dir, "huge-frame", "huge-frame");
    let mut c = Client::handshake(socket, V1_38);
    c.send(&add_to_store_nar_header(&path, &nar).u64(huge).raw(&nar[..40]));
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    match c.reply() {
        Reply::Error(_) => c.expect_closed(),
        Reply::Last => panic!("an upload cut short was accepted"),
    }
    // A NAR string of 2^60 bytes (the magic's length).
    let mut bad = Vec::new();
    bad.extend_from_slice(&huge.to_le_bytes());
    bad.extend_from_slice(b"nix-arch");
    let mut c = Client::handshake(socket, V1_38);
    c.send(&add_to_store_nar_header(&path, &bad).framed(&bad));
    match c.reply() {
        Reply::Error(e) => assert!(e.contains("Nix archive"), "{e}"),
        Reply::Last => panic!("a NAR with a 2^60-byte tag was accepted"),
    }
    assert!(!c.is_valid(&path), "the connection goes on after a refused framed upload");
}

/// Requests cut at many points: the daemon sees end-of-file mid-request and
/// closes without a reply.
fn truncated_requests(socket: &Path, dir: &StoreDir) {
    let path = some_path(dir, "cut", "cut");
    let requests = [
        Msg::new().u64(OP_IS_VALID_PATH).str(&path),
        Msg::new().u64(OP_ADD_TEXT_TO_STORE).str("cut").str(&"text ".repeat(100)).strings(&[&path]),
        set_options(),
    ];
    for request in &requests {
        let stride = (request.0.len() / 40).max(1);
        for cut in (1..request.0.len()).step_by(stride) {
            let mut c = Client::handshake(socket, V1_38);
            c.send(&Msg::new().raw(&request.0[..cut]));
            c.s.shutdown(std::net::Shutdown::Write).unwrap();
            c.expect_closed();
        }
    }
    // The handshake itself, cut anywhere.
    let hello = Msg::new().u64(WORKER_MAGIC_1).u64(V1_38).u64(0).u64(0).u64(0);
    for cut in 1..hello.0.len() {
        let mut c = Client::connect(socket);
        c.send(&Msg::new().raw(&hello.0[..cut]));
        c.s.shutdown(std::net::Shutdown::Write).unwrap();
        c.drain_until_closed();
    }
}

/// Uploads that die half way through the NAR, framed and unframed, then the
/// same path added in full: nothing left behind blocks it.
fn uploads_cut_mid_nar(socket: &Path, dir: &StoreDir, store: &TestStore) {
    let contents: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let nar = nar_file(&contents);
    let path = some_path(dir, "cut-upload", "cut-upload");
    let stride = nar.len() / 7;
    for cut in (8..nar.len()).step_by(stride) {
        // Framed: the frame says more than is sent; the client hangs up.
        let mut c = Client::handshake(socket, V1_38);
        c.send(&add_to_store_nar_header(&path, &nar).u64(nar.len() as u64).raw(&nar[..cut]));
        drop(c);
        // Framed: a whole frame, then the stream ends without the terminator.
        let mut c = Client::handshake(socket, V1_38);
        c.send(&add_to_store_nar_header(&path, &nar).u64(cut as u64).raw(&nar[..cut]));
        c.s.shutdown(std::net::Shutdown::Write).unwrap();
        match c.reply() {
            Reply::Error(_) => c.expect_closed(),
            Reply::Last => panic!("a framed upload cut at {cut} was accepted"),
        }
        // Framed and complete, but the NAR inside is cut: a clean error, and
        // the connection goes on.
        let mut c = Client::handshake(socket, V1_38);
        c.send(&add_to_store_nar_header(&path, &nar).framed(&nar[..cut]));
        match c.reply() {
            Reply::Error(e) => assert!(e.contains("NAR"), "{e}"),
            Reply::Last => panic!("a NAR cut at {cut} was accepted"),
        }
        assert!(!c.is_valid(&path));
        // Unframed (legacy AddToStore at 1.21): the client hangs up mid-NAR.
        let mut c = Client::handshake(socket, V1_21);
        c.send(&Msg::new().u64(OP_ADD_TO_STORE).str("cut-legacy").u64(1).u64(1).str("sha256").raw(&nar[..cut]));
        drop(c);
        // The same, flat (the file's contents stream into the store).
        let mut c = Client::handshake(socket, V1_21);
        c.send(&Msg::new().u64(OP_ADD_TO_STORE).str("cut-flat").u64(1).u64(0).str("sha256").raw(&nar[..cut]));
        drop(c);
    }
    // The same path, in full, from a client that stopped mid-upload and is
    // still connected: the lock it held goes with it.
    let mut stalled = Client::handshake(socket, V1_38);
    stalled.send(&add_to_store_nar_header(&path, &nar).u64(nar.len() as u64).raw(&nar[..nar.len() / 2]));
    std::thread::sleep(Duration::from_millis(200));
    drop(stalled);
    let mut c = Client::handshake(socket, V1_38);
    c.add_nar(&path, &nar);
    assert_eq!(c.nar_size(&path), Some(nar.len() as u64));
    let real = Path::new(&store.store_dir).join(path.rsplit('/').next().unwrap());
    assert_eq!(std::fs::read(&real).expect("the added file"), contents);
    // And the legacy add of the same contents.
    let mut c = Client::handshake(socket, V1_21);
    c.send(&Msg::new().u64(OP_ADD_TO_STORE).str("cut-legacy").u64(1).u64(1).str("sha256").raw(&nar));
    c.expect_ok("AddToStore");
    let legacy = c.string();
    assert!(c.is_valid(&legacy));
    c.send(&Msg::new().u64(OP_ADD_TO_STORE).str("cut-flat").u64(1).u64(0).str("sha256").raw(&nar));
    c.expect_ok("AddToStore (flat)");
    let flat = c.string();
    let real = Path::new(&store.store_dir).join(flat.rsplit('/').next().unwrap());
    assert_eq!(std::fs::read(&real).expect("the added flat file"), contents);
    assert_no_debris(store);
}

/// Clients that ask for a large NAR and then read none or part of it, stay
/// a while, and hang up: the daemon's writer gives up on them alone.
fn clients_that_stop_reading(socket: &Path, dir: &StoreDir) {
    let contents: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 253) as u8).collect();
    let nar = nar_file(&contents);
    let path = some_path(dir, "big-reply", "big-reply");
    let mut c = Client::handshake(socket, V1_38);
    c.add_nar(&path, &nar);
    let mut readers = Vec::new();
    for read in [0usize, 100, 1 << 20] {
        let mut c = Client::handshake(socket, V1_38);
        c.send(&Msg::new().u64(OP_NAR_FROM_PATH).str(&path));
        let mut buf = vec![0u8; read];
        c.s.read_exact(&mut buf).expect("the start of the reply");
        readers.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(readers);
    // The reply in full, to a client that reads it.
    let mut c = Client::handshake(socket, V1_38);
    c.send(&Msg::new().u64(OP_NAR_FROM_PATH).str(&path));
    c.expect_ok("NarFromPath");
    let mut got = vec![0u8; nar.len()];
    c.s.read_exact(&mut got).expect("the NAR");
    assert!(got == nar, "NarFromPath sends the NAR that was added");
    assert!(c.is_valid(&path), "the connection goes on after NarFromPath");
}

/// Sends `m` from another thread (the daemon may refuse and hang up long
/// before a big upload is through), while the caller reads the reply.
fn send_in_background(c: &Client, m: Msg) -> std::thread::JoinHandle<()> {
    let mut s = c.s.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = s.write_all(&m.0);
    })
}

/// A NAR nested 100,000 directories deep: refused at the reader's depth
/// limit, framed (the connection goes on) and unframed (it ends).
fn deep_nar(socket: &Path, dir: &StoreDir) {
    let nar = nar_deep(100_000);
    let path = some_path(dir, "deep", "deep");
    let mut c = Client::handshake(socket, V1_38);
    let sender = send_in_background(&c, add_to_store_nar_header(&path, &nar).framed(&nar));
    match c.reply() {
        Reply::Error(e) => assert!(e.contains("nested in more than"), "{e}"),
        Reply::Last => panic!("a NAR 100,000 directories deep was accepted"),
    }
    sender.join().unwrap();
    assert!(!c.is_valid(&path));

    // AddToStore (≥ 1.25, framed, recursive).
    let mut c = Client::handshake(socket, V1_38);
    let m = Msg::new().u64(OP_ADD_TO_STORE).str("deep").str("fixed:r:sha256").u64(0).u64(0).framed(&nar);
    let sender = send_in_background(&c, m);
    match c.reply() {
        Reply::Error(e) => assert!(e.contains("nested in more than"), "{e}"),
        Reply::Last => panic!("a NAR 100,000 directories deep was accepted"),
    }
    sender.join().unwrap();
    assert!(!c.is_valid(&path));

    // Legacy AddToStore (unframed): the stream is lost, so the daemon hangs up.
    let mut c = Client::handshake(socket, V1_21);
    let m = Msg::new().u64(OP_ADD_TO_STORE).str("deep").u64(1).u64(1).str("sha256").raw(&nar);
    let sender = send_in_background(&c, m);
    c.expect_error_then_close("nested in more than");
    sender.join().unwrap();
}

/// A NAR whose file declares 2^50 bytes (over the 1 TiB contents limit),
/// and one declaring 2^39 bytes (under it) that stops after 1 MiB.
fn huge_declared_file(socket: &Path, dir: &StoreDir) {
    let path = some_path(dir, "huge-file", "huge-file");
    let nar = nar_declaring(1 << 50, 4096);
    let mut c = Client::handshake(socket, V1_38);
    c.send(&add_to_store_nar_header(&path, &nar).framed(&nar));
    match c.reply() {
        Reply::Error(e) => assert!(e.contains("exceed"), "{e}"),
        Reply::Last => panic!("a 2^50-byte file was accepted"),
    }
    assert!(!c.is_valid(&path));
    // Same through legacy AddToStore: refused, and the connection ends.
    let mut c = Client::handshake(socket, V1_21);
    c.send_lossy(&Msg::new().u64(OP_ADD_TO_STORE).str("huge").u64(1).u64(1).str("sha256").raw(&nar));
    c.expect_error_then_close("exceed");
    // 2^39 declared, 1 MiB sent: streamed to disk, never buffered, then
    // refused as truncated.
    let nar = nar_declaring(1 << 39, 1 << 20);
    let mut c = Client::handshake(socket, V1_38);
    c.send(&add_to_store_nar_header(&path, &nar).framed(&nar));
    match c.reply() {
        Reply::Error(e) => assert!(e.contains("NAR"), "{e}"),
        Reply::Last => panic!("a truncated NAR was accepted"),
    }
    assert!(!c.is_valid(&path));
}

// --- The tests ----------------------------------------------------------------------

fn nix_2_8() -> Option<Nix> {
    Nix::find(NixVersion::V2_8)
}

fn store_dir(store: &TestStore) -> StoreDir {
    StoreDir::new(store.store_dir.clone()).unwrap()
}

#[test]
fn garbage_and_unknown_operations_get_an_error_or_a_closed_connection() {
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    garbage_before_the_handshake(&daemon.socket);
    garbage_after_the_handshake(&daemon.socket);
    assert_serving(&daemon, "garbage");
}

#[test]
fn lengths_of_2_pow_60_are_refused_before_anything_is_allocated() {
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    let before = mem(daemon.pid());
    huge_lengths(&daemon.socket, &store_dir(&store));
    let after = mem(daemon.pid());
    assert!(
        after.hwm.saturating_sub(before.rss) < MEMORY_BOUND,
        "peak RSS grew by {} on huge lengths",
        mib(after.hwm - before.rss)
    );
    assert_serving(&daemon, "huge lengths");

    // Lengths under the limits but never sent in full: 100 texts declared at
    // 64 MiB each (6.25 GiB together) with 8 bytes sent. Buffers grow with
    // what arrives, so not even address space is taken for the rest.
    let before = mem(daemon.pid());
    let held = hold(&daemon.socket, &store_dir(&store), &[(HalfOpen::DeclaredText, 100)]);
    assert_serving(&daemon, "declared texts");
    let after = mem(daemon.pid());
    assert!(
        after.size.saturating_sub(before.size) < 1 << 30,
        "the daemon's address space grew by {} for 100 declared 64 MiB texts",
        mib(after.size - before.size)
    );
    drop(held);
}

#[test]
fn truncated_requests_uploads_and_replies_end_cleanly_and_leave_no_debris() {
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    truncated_requests(&daemon.socket, &store_dir(&store));
    uploads_cut_mid_nar(&daemon.socket, &store_dir(&store), &store);
    clients_that_stop_reading(&daemon.socket, &store_dir(&store));
    assert_serving(&daemon, "truncated requests");
}

#[test]
fn a_nar_100000_directories_deep_is_refused() {
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    deep_nar(&daemon.socket, &store_dir(&store));
    assert_no_debris(&store);
    assert_serving(&daemon, "a deep NAR");
}

#[test]
fn a_nar_declaring_a_2_pow_50_byte_file_is_refused() {
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    let before = mem(daemon.pid());
    huge_declared_file(&daemon.socket, &store_dir(&store));
    assert_no_debris(&store);
    let after = mem(daemon.pid());
    assert!(after.hwm.saturating_sub(before.rss) < MEMORY_BOUND, "peak RSS grew by {}", mib(after.hwm - before.rss));
    assert_serving(&daemon, "a huge declared file");
}

/// A flat add from a client older than 1.25 (Nix 2.3's `nix-store
/// --add-fixed sha256 f`) carries its one file as a NAR: 256 MiB of it are
/// streamed to disk, not held in memory.
#[test]
fn a_big_legacy_flat_upload_is_streamed_not_buffered() {
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    let before = mem(daemon.pid());
    let size: u64 = 256 << 20;
    let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 241) as u8).collect();
    let mut expected = store::hash::HashSink::new(Algorithm::Sha256);
    for _ in 0..size / chunk.len() as u64 {
        expected.update(&chunk);
    }
    let mut c = Client::handshake(&daemon.socket, V1_21);
    let mut head = Msg::new().u64(OP_ADD_TO_STORE).str("big-flat").u64(1).u64(0).str("sha256");
    for t in ["nix-archive-1", "(", "type", "regular", "contents"] {
        head = head.str(t);
    }
    let mut s = c.s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        s.write_all(&head.u64(size).0)?;
        for _ in 0..size / chunk.len() as u64 {
            s.write_all(&chunk)?;
        }
        s.write_all(&Msg::new().str(")").0)
    });
    c.expect_ok("AddToStore of a 256 MiB flat file");
    sender.join().unwrap().expect("the upload is sent");
    let path = c.string();
    let dir = store_dir(&store);
    let hash = expected.finish().0;
    let want = dir
        .make_fixed_output_path(
            "big-flat",
            store::content_address::FileIngestionMethod::Flat,
            &hash,
            &Default::default(),
        )
        .unwrap();
    assert_eq!(path, dir.display(&want));
    let real = Path::new(&store.store_dir).join(want.base_name());
    assert_eq!(std::fs::metadata(&real).unwrap().len(), size);
    let after = mem(daemon.pid());
    eprintln!("256 MiB legacy flat upload: RSS {} before, peak {}", mib(before.rss), mib(after.hwm));
    assert!(
        after.hwm.saturating_sub(before.rss) < MEMORY_BOUND,
        "peak RSS grew by {} for a 256 MiB upload",
        mib(after.hwm - before.rss)
    );
    assert_serving(&daemon, "a big flat upload");
}

/// How the half-open connections of the big test stop.
#[derive(Debug, Clone, Copy)]
enum HalfOpen {
    /// Connected, nothing sent.
    Connected,
    /// The magic sent, the daemon's answer never read.
    Magic,
    /// Handshake done (at some version), then silence.
    Handshaken(u64),
    /// Half a store path sent.
    MidRequest,
    /// An AddTextToStore declaring 64 MiB of text, 8 bytes of it sent.
    DeclaredText,
    /// An AddToStoreNar whose NAR stops half way through a frame.
    MidUpload,
}

fn open_half(socket: &Path, kind: HalfOpen, dir: &StoreDir, i: usize) -> Client {
    match kind {
        HalfOpen::Connected => Client::connect(socket),
        HalfOpen::Magic => {
            let mut c = Client::connect(socket);
            c.send(&Msg::new().u64(WORKER_MAGIC_1));
            c
        }
        HalfOpen::Handshaken(v) => Client::handshake(socket, v),
        HalfOpen::MidRequest => {
            let mut c = Client::handshake(socket, V1_38);
            let p = some_path(dir, "half", &format!("half-{i}"));
            c.send(&Msg::new().u64(OP_IS_VALID_PATH).u64(p.len() as u64).raw(&p.as_bytes()[..20]));
            c
        }
        HalfOpen::DeclaredText => {
            let mut c = Client::handshake(socket, V1_34);
            c.send(&Msg::new().u64(OP_ADD_TEXT_TO_STORE).str("t").u64(64 << 20).raw(b"12345678"));
            c
        }
        HalfOpen::MidUpload => {
            let mut c = Client::handshake(socket, V1_38);
            let nar = nar_file(&vec![b'u'; 4096]);
            let p = some_path(dir, "stalled", &format!("stalled-{i}"));
            c.send(&add_to_store_nar_header(&p, &nar).u64(nar.len() as u64).raw(&nar[..200]));
            c
        }
    }
}

/// Slow-loris clients: `n` connections, each sending one byte per second of
/// a handshake and an add (a valid byte stream, so the daemon has no reason
/// to hang up), until `stop` is set; returns the bytes each one sent.
fn slow_loris(socket: &Path, dir: &StoreDir, n: usize, stop: &std::sync::atomic::AtomicBool) -> usize {
    let mut clients: Vec<(UnixStream, Vec<u8>)> = (0..n)
        .map(|i| {
            let p = some_path(dir, "loris", &format!("loris-{i}"));
            let nar = nar_file(format!("slow loris {i}").as_bytes());
            let bytes = Msg::new()
                .u64(WORKER_MAGIC_1)
                .u64(V1_38)
                .u64(0)
                .u64(0)
                .u64(0)
                .raw(&add_to_store_nar_header(&p, &nar).0)
                .u64(nar.len() as u64)
                .raw(&nar)
                .u64(0)
                .0;
            (Client::connect(socket).s, bytes)
        })
        .collect();
    let mut sent = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for (s, bytes) in &mut clients {
            if let Some(&b) = bytes.get(sent) {
                s.write_all(&[b]).expect("the daemon keeps a slow-loris connection open");
            }
        }
        sent += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    sent
}

/// Uploads whose clients hang up mid-NAR (framed and unframed), while other
/// clients work: each is dropped without a trace (checked at the end of the
/// test, once every held connection is gone).
fn disconnects_mid_nar(socket: &Path, dir: &StoreDir) {
    let nar = nar_file(&vec![b'd'; 100_000]);
    for (i, cut) in [16, 300, 4096, 50_000, nar.len() - 8].into_iter().enumerate() {
        let p = some_path(dir, "gone", &format!("gone-{i}"));
        let mut c = Client::handshake(socket, V1_38);
        c.send(&add_to_store_nar_header(&p, &nar).u64(nar.len() as u64).raw(&nar[..cut]));
        drop(c);
        let mut c = Client::handshake(socket, V1_21);
        c.send(&Msg::new().u64(OP_ADD_TO_STORE).str(&format!("gone-{i}")).u64(1).u64(1).str("sha256").raw(&nar[..cut]));
        drop(c);
    }
}

/// Opens `n` half-open connections of each kind; the i-th connection is
/// numbered i.
fn hold(socket: &Path, dir: &StoreDir, kinds: &[(HalfOpen, usize)]) -> Vec<Client> {
    let mut held = Vec::new();
    for &(kind, n) in kinds {
        for _ in 0..n {
            held.push(open_half(socket, kind, dir, held.len()));
        }
    }
    held
}

/// The stock client's loop: `nix-store --add` and `nix-store -q` through the daemon.
fn nix_loop(daemon: &Daemon, store: &TestStore, nix: &Nix, rounds: usize, tag: &str) -> usize {
    let work = store.work_dir(&format!("nix-loop-{tag}"));
    for i in 0..rounds {
        let f = work.join(format!("f{i}"));
        write_file(&f, format!("stock client {tag} round {i}"));
        let p = line(run(daemon.client(store, nix, "nix-store").arg("--add").arg(&f)));
        assert!(p.starts_with(&store.store_dir), "round {i}: {p}");
        let hash = line(run(daemon.client(store, nix, "nix-store").args(["-q", "--hash", &p])));
        assert!(hash.starts_with("sha256:"), "round {i}: {hash}");
        let refs = run(daemon.client(store, nix, "nix-store").args(["-q", "--references", &p]));
        assert_eq!(refs, "", "round {i}");
    }
    rounds
}

/// The scripted client's loop, on one connection.
fn scripted_loop(socket: &Path, rounds: usize, tag: &str) -> usize {
    let mut c = Client::handshake(socket, V1_38);
    c.send(&set_options());
    c.expect_ok("SetOptions");
    for i in 0..rounds {
        let text = format!("scripted client {tag} round {i}");
        let p = c.add_text(&format!("scripted-{i}"), &text);
        assert!(c.is_valid(&p), "round {i}: {p} not valid");
        assert!(c.nar_size(&p).is_some_and(|n| n > text.len() as u64), "round {i}: no info for {p}");
    }
    rounds
}

#[test]
fn a_thousand_half_open_connections_and_hostile_clients_leave_good_clients_unharmed() {
    let Some(nix) = nix_2_8() else { return };
    raise_fd_limit();
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    let pid = daemon.pid();
    let dir = store_dir(&store);

    // Warm up: the runtime's threads, the database readers, a first add.
    nix_loop(&daemon, &store, &nix, 2, "warm-up");
    scripted_loop(&daemon.socket, 5, "warm-up");
    std::thread::sleep(Duration::from_millis(300));
    let before = mem(pid);
    let fds_before = open_fds(pid);
    let threads_before = threads(pid);
    let loris_stop = std::sync::atomic::AtomicBool::new(false);

    std::thread::scope(|scope| {
        // Well-behaved clients, all along.
        let stock = scope.spawn(|| nix_loop(&daemon, &store, &nix, 15, "during"));
        let scripted =
            scope.spawn(|| (0..4).map(|k| scripted_loop(&daemon.socket, 50, &format!("during-{k}"))).sum::<usize>());
        // And one more for 12 s at least, so that the slow-loris clients get
        // past the handshake into a request while good clients work.
        let steady = scope.spawn(|| {
            let until = Instant::now() + Duration::from_secs(12);
            let mut rounds = 0;
            for k in 0.. {
                if Instant::now() >= until {
                    break;
                }
                rounds += scripted_loop(&daemon.socket, 10, &format!("steady-{k}"));
                std::thread::sleep(Duration::from_millis(50));
            }
            rounds
        });
        // Hostile clients, all along.
        let hostile = scope.spawn(|| {
            garbage_before_the_handshake(&daemon.socket);
            garbage_after_the_handshake(&daemon.socket);
            huge_lengths(&daemon.socket, &dir);
            deep_nar(&daemon.socket, &dir);
            huge_declared_file(&daemon.socket, &dir);
            disconnects_mid_nar(&daemon.socket, &dir);
        });
        // Slow-loris clients, until the good clients are done.
        let loris = scope.spawn(|| slow_loris(&daemon.socket, &dir, 16, &loris_stop));

        // 1000 half-open connections, held.
        let kinds = [
            (HalfOpen::Connected, 200),
            (HalfOpen::Magic, 200),
            (HalfOpen::Handshaken(V1_38), 100),
            (HalfOpen::Handshaken(V1_34), 50),
            (HalfOpen::Handshaken(V1_21), 50),
            (HalfOpen::MidRequest, 150),
            (HalfOpen::DeclaredText, 150),
            (HalfOpen::MidUpload, 100),
        ];
        let held = hold(&daemon.socket, &dir, &kinds);
        assert_eq!(held.len(), 1000);
        // Give the daemon time to take every connection as far as it goes.
        std::thread::sleep(Duration::from_secs(2));
        let fds_held = open_fds(pid);
        assert!(
            fds_held >= fds_before + 1000,
            "the daemon holds {fds_held} fds for 1000 connections (had {fds_before})"
        );

        assert_serving(&daemon, "1000 half-open connections");
        hostile.join().expect("hostile clients were answered as expected");
        let stock_rounds = stock.join().expect("the stock Nix 2.8 client saw no failure");
        let scripted_rounds = scripted.join().expect("the scripted client saw no failure")
            + steady.join().expect("the steady scripted client saw no failure");
        loris_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let loris_bytes = loris.join().expect("the slow-loris clients were not cut off");

        let during = mem(pid);
        eprintln!(
            "daemon memory: before {} RSS; with 1000 half-open connections and hostile clients {} RSS, \
             peak {}, VmSize {} -> {}; {} threads -> {}; fds {fds_before} -> {fds_held}; \
             good clients: {stock_rounds} stock rounds, {scripted_rounds} scripted rounds; \
             16 slow-loris clients sent {loris_bytes} bytes each, one a second",
            mib(before.rss),
            mib(during.rss),
            mib(during.hwm),
            mib(before.size),
            mib(during.size),
            threads_before,
            threads(pid),
        );
        assert!(
            during.rss.saturating_sub(before.rss) < MEMORY_BOUND,
            "RSS grew by {} (bound {})",
            mib(during.rss - before.rss),
            mib(MEMORY_BOUND)
        );
        assert!(
            during.hwm.saturating_sub(before.rss) < MEMORY_BOUND,
            "peak RSS grew by {} (bound {})",
            mib(during.hwm - before.rss),
            mib(MEMORY_BOUND)
        );
        drop(held);
    });

    // Everything let go: the connections' descriptors are released, and the
    // daemon serves as before.
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds(pid) > fds_before + 20 {
        assert!(Instant::now() < deadline, "the daemon still holds {} fds (had {fds_before})", open_fds(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Idle, the daemon hands freed heap back (daemon::memory).
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("daemon memory after the connections closed and 2 s idle: {} RSS", mib(mem(pid).rss));
    assert_serving(&daemon, "the half-open connections closed");
    nix_loop(&daemon, &store, &nix, 2, "after");
    assert_no_debris(&store);
    // The paths the stalled uploads were adding can be added now.
    let mut c = Client::handshake(&daemon.socket, V1_38);
    let nar = nar_file(&vec![b'u'; 4096]);
    for i in [900, 999] {
        let p = some_path(&dir, "stalled", &format!("stalled-{i}"));
        c.add_nar(&p, &nar);
        assert!(c.is_valid(&p));
    }
    assert!(daemon.stop().success(), "the daemon exits cleanly on SIGTERM");
}

#[test]
fn more_stalled_uploads_than_tokios_default_blocking_pool_do_not_wedge_the_daemon() {
    // Each upload that stops half way holds a thread; with tokio's default
    // cap of 512 blocking threads, the 513th took the thread that a worker's
    // queue needed and every client hung.
    let Some(nix) = nix_2_8() else { return };
    raise_fd_limit();
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    let pid = daemon.pid();
    let dir = store_dir(&store);
    scripted_loop(&daemon.socket, 5, "warm-up");
    let before = mem(pid);
    let held = hold(&daemon.socket, &dir, &[(HalfOpen::MidUpload, 600)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while threads(pid) < 600 {
        assert!(Instant::now() < deadline, "only {} daemon threads for 600 stalled uploads", threads(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    scripted_loop(&daemon.socket, 20, "stalled");
    nix_loop(&daemon, &store, &nix, 3, "stalled");
    let during = mem(pid);
    eprintln!(
        "daemon memory with 600 stalled uploads: before {} RSS, during {} RSS, peak {}; {} threads",
        mib(before.rss),
        mib(during.rss),
        mib(during.hwm),
        threads(pid)
    );
    let bound = 600 * STALLED_UPLOAD_COST;
    assert!(
        during.hwm.saturating_sub(before.rss) < bound,
        "peak RSS grew by {} (bound {})",
        mib(during.hwm - before.rss),
        mib(bound)
    );
    drop(held);
    assert_no_debris(&store);
    let mut c = Client::handshake(&daemon.socket, V1_38);
    let nar = nar_file(&vec![b'u'; 4096]);
    for i in [0, 599] {
        let p = some_path(&dir, "stalled", &format!("stalled-{i}"));
        c.add_nar(&p, &nar);
        assert!(c.is_valid(&p));
    }
}

#[test]
fn the_daemon_raises_its_open_files_limit_to_the_hard_limit() {
    // 1000 clients need 1000 descriptors; the usual soft limit is 1024.
    let store = TestStore::new();
    let socket = store.root().join("fd-limit.sock");
    let mut armitage = store.armitage();
    armitage.arg("daemon").arg("--socket").arg(&socket);
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg("ulimit -Sn 256 && exec \"$0\" \"$@\"").arg(armitage.get_program()).args(armitage.get_args());
    for (k, v) in armitage.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.stderr(std::process::Stdio::null()).spawn().expect("start the daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("an open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "soft open files limit raised to the hard one: {line}");
}
