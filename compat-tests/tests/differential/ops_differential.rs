//! Every operation the daemon serves, sent by the scripted client
//! (`compat_tests::proto_client`) at client minors 21 to 38 to armitage and
//! to CppNix's nix-daemon 2.26, the answers compared byte for byte: replies,
//! stderr messages (STDERR_READ round trips and STDERR_WRITE data included),
//! errors, and what each daemon does to the connection after an error.
//!
//! Not sent: BuildDerivation, and builds of derivations whose outputs are
//! not valid (armitage does not build yet); opaque valid paths and
//! already-valid outputs are built (that is, found valid) at every minor.
//! After each minor's session as root (trusted), a second one as `nobody`
//! checks what untrusted clients may not do (when the test runs as root).
//! Requests a daemon refuses while reading them get a connection each.
//!
//! Making the two runs comparable: store paths embed the store directory,
//! so two stores in different directories differ in every path, hash and
//! set order. The daemons therefore run one after the other on the same
//! store directory: armitage on its `TestStore`, then the directory is
//! emptied and nix-daemon runs on a second `TestStore` (its own state
//! directory, database, log directory and nix.conf) pointed at the same
//! directory. Nix 2.26 seeds each store with the same content before its
//! daemon starts, and the script is deterministic, so no mapping is needed.
//!
//! What is left out of the comparison is named in [`normalise`] (fields),
//! [`without_leftovers`] and [`DIFFERENCES`] (documented behaviour
//! differences, asserted as such).
//!
//! To look at the exchanges: `OPS_DIFF_TRACE=1` prints each step as it
//! runs, `OPS_DIFF_DUMP=<dir>` writes both runs, normalised, to
//! `<dir>/armitage.txt` and `<dir>/nix.txt`.

use compat_tests::proto_client::{
    AfterError, Client, ClientError, Options, Outcome, Token, Value, Wire, export_record, export_stream,
};
use compat_tests::{base_name, make_tree};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use store::content_address::FileIngestionMethod;
use store::hash::Algorithm;
use store::store_path::{StoreDir, StorePath, StoreReferences};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, run, write_file};
use worker_protocol::Op;

/// The client minors the script runs at: 1.21 (Nix 2.3; STDERR_READ
/// uploads, legacy errors), 1.23 (framed AddToStoreNar), 1.25 (new
/// AddToStore), 1.26 (structured errors), 1.32, 1.34 (Nix 2.8), 1.35 (trust
/// byte), 1.37 and 1.38 (Nix 2.26, features).
const MINORS: [u64; 9] = [21, 23, 25, 26, 32, 34, 35, 37, 38];

/// ca-derivations for realisations; signatures required so that untrusted
/// uploads are checked (trusted clients send `dontCheckSigs`).
const CONF: &str = "experimental-features = nix-command ca-derivations\nrequire-sigs = true\n";

const BUILT_NIX: &str = r#"
let dep = builtins.toFile "dep.txt" "some text";
in derivation {
  name = "built";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo ${dep} > $out; echo dev > $dev" ];
  outputs = [ "out" "dev" ];
}
"#;

const UNBUILT_NIX: &str = r#"
derivation {
  name = "unbuilt";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo never > $out" ];
}
"#;

const CA_NIX: &str = r#"
derivation {
  name = "floating";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo ca > $out" ];
  __contentAddressed = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}
"#;

/// What Nix 2.26 put in a store before its daemon started.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seeds {
    /// `nix-store --add` of a file (`fixed:r:sha256`, no references).
    hello: String,
    /// `builtins.toFile` text, referenced by `built`.
    dep: String,
    built_drv: String,
    /// Valid, refers to `dep`, has `built_drv` as deriver.
    built_out: String,
    built_dev: String,
    /// Instantiated, never built.
    unbuilt_drv: String,
    unbuilt_out: String,
    /// A floating content-addressed derivation, not built.
    ca_drv: String,
    /// Unreferenced paths, one for each session to delete.
    garbage: Vec<String>,
}

fn seed(store: &TestStore, nix: &Nix) -> Seeds {
    let work = store.work_dir("seed");
    write_file(work.join("hello.txt"), "hello, daemon\n");
    write_file(work.join("built.nix"), BUILT_NIX);
    write_file(work.join("unbuilt.nix"), UNBUILT_NIX);
    write_file(work.join("ca.nix"), CA_NIX);
    let nix_store = || store.nix(nix, "nix-store");
    let hello = line(run(nix_store().arg("--add").arg(work.join("hello.txt"))));
    let garbage_files: Vec<PathBuf> = MINORS
        .iter()
        .map(|m| {
            let f = work.join(format!("garbage-{m}"));
            write_file(&f, format!("garbage for the session at 1.{m}\n"));
            f
        })
        .collect();
    let garbage: Vec<String> = run(nix_store().arg("--add").args(&garbage_files)).lines().map(str::to_owned).collect();
    let instantiate = |file: &str| line(run(store.nix(nix, "nix-instantiate").arg(work.join(file))));
    let built_drv = instantiate("built.nix");
    // The build hook of the unpacked 2.26 cannot run; nothing needs it.
    let outs = run(nix_store().args(["--option", "build-hook", "", "-r", &built_drv]));
    let outs: Vec<&str> = outs.lines().collect();
    let built_dev = outs.iter().find(|p| p.ends_with("-built-dev")).expect("dev output").to_string();
    let built_out = outs.iter().find(|p| p.ends_with("-built")).expect("out output").to_string();
    let dep = line(run(nix_store().args(["-q", "--references", &built_out])));
    let unbuilt_drv = instantiate("unbuilt.nix");
    let unbuilt_out = line(run(nix_store().args(["-q", "--outputs", &unbuilt_drv])));
    let ca_drv = instantiate("ca.nix");
    Seeds { hello, dep, built_drv, built_out, built_dev, unbuilt_drv, unbuilt_out, ca_drv, garbage }
}

/// Inputs shared by both runs.
struct Ctx {
    dir: StoreDir,
    seeds: Seeds,
    /// Where the sessions create GC roots (outside the store, the same for both daemons).
    roots: PathBuf,
    /// A well-formed path that is not in the store.
    missing: String,
    /// The NAR of a small directory tree.
    tree_nar: Vec<u8>,
}

impl Ctx {
    fn path(&self, p: &StorePath) -> String {
        self.dir.display(p)
    }

    fn hash_part<'a>(&self, p: &'a str) -> &'a str {
        &p[self.dir.as_str().len() + 1..][..32]
    }
}

/// An input-addressed-looking path whose hash part is derived from `seed`.
fn made_up_path(ctx: &Ctx, seed: &str, name: &str) -> String {
    let digest = Algorithm::Sha256.digest(seed.as_bytes());
    let mut d = [0u8; 20];
    d.copy_from_slice(&digest.as_bytes()[..20]);
    ctx.path(&StorePath::from_digest(&d, name).expect("a valid name"))
}

fn nar_of(contents: &[u8]) -> (Vec<u8>, String) {
    let nar = store::nar::dump_bytes(contents, false);
    let hash = Algorithm::Sha256.digest(&nar).to_base16();
    (nar, hash)
}

/// A `ValidPathInfo` in the minor-16 layout AddToStoreNar and
/// AddMultipleToStore use, without the NAR.
#[allow(clippy::too_many_arguments)]
fn path_info_fields(
    path: &str,
    deriver: &str,
    nar: &[u8],
    refs: &[&str],
    ultimate: bool,
    sigs: &[&str],
    ca: &str,
) -> Wire {
    Wire::new()
        .str(path)
        .str(deriver)
        .str(&Algorithm::Sha256.digest(nar).to_base16())
        .strings(refs)
        .u64(0) // registration time: the daemon's clock decides
        .u64(nar.len() as u64)
        .bool(ultimate)
        .strings(sigs)
        .str(ca)
}

/// One exchange: what the daemon sent for a request, and, after an error,
/// what it did to the connection.
#[derive(Debug, Clone)]
struct Step {
    name: String,
    /// The operation sent (0 for the handshake).
    op: u64,
    tokens: Vec<Token>,
    /// None when the daemon closed the connection instead of answering.
    outcome: Option<Outcome>,
    after: Option<AfterError>,
}

/// One minor's script against one daemon.
struct Session<'a> {
    daemon: &'a Daemon,
    minor: u64,
    client: Client,
    steps: Vec<Step>,
    /// Connecting as `nobody`.
    untrusted: bool,
}

type Reply<'r> = Box<dyn FnOnce(&mut Client) -> compat_tests::proto_client::Result<()> + 'r>;

fn none<'r>() -> Reply<'r> {
    Box::new(|_| Ok(()))
}
fn one_u64<'r>() -> Reply<'r> {
    Box::new(|c| c.read_u64("reply").map(drop))
}
fn one_string<'r>() -> Reply<'r> {
    Box::new(|c| c.read_string("reply").map(drop))
}
fn strings<'r>() -> Reply<'r> {
    Box::new(|c| c.read_strings("reply").map(drop))
}

/// A connection as `nobody` (uid and gid 65534), whom neither daemon
/// trusts. The daemons take the peer's credentials as they were at connect
/// time, so a thread of its own takes nobody's ids (the raw system calls
/// change the calling thread only) and connects; the socket is then used
/// from the test's thread.
fn connect_as_nobody(socket: &Path) -> std::os::unix::net::UnixStream {
    let path = socket.to_owned();
    std::thread::spawn(move || {
        rustix::thread::set_thread_res_gid(None, rustix::process::Gid::from_raw(65534), None).expect("setresgid");
        rustix::thread::set_thread_res_uid(None, rustix::process::Uid::from_raw(65534), None).expect("setresuid");
        std::os::unix::net::UnixStream::connect(&path)
    })
    .join()
    .expect("the connecting thread")
    .unwrap_or_else(|e| panic!("connecting to {} as nobody: {e}", socket.display()))
}

/// Opens a connection and shakes hands.
fn handshake(daemon: &Daemon, minor: u64, untrusted: bool) -> (Client, compat_tests::proto_client::Hello) {
    let mut client =
        if untrusted { Client::from_stream(connect_as_nobody(&daemon.socket)) } else { Client::open(&daemon.socket) }
            .unwrap_or_else(|e| panic!("{}: connecting: {e}", daemon.name));
    let hello = client
        .handshake(compat_tests::proto_client::version(minor), &[])
        .unwrap_or_else(|e| panic!("{}: handshake at 1.{minor}: {e}", daemon.name));
    (client, hello)
}

/// A connection past the handshake and SetOptions, its transcript cleared.
fn connect(daemon: &Daemon, minor: u64, untrusted: bool) -> Client {
    let (mut client, hello) = handshake(daemon, minor, untrusted);
    assert!(hello.startup.is_ok(), "{}: handshake at 1.{minor} ended in an error: {:?}", daemon.name, hello.startup);
    client.set_options(&Options::default()).unwrap_or_else(|e| panic!("{}: SetOptions at 1.{minor}: {e}", daemon.name));
    client.take_transcript();
    client
}

impl<'a> Session<'a> {
    fn open(daemon: &'a Daemon, minor: u64, untrusted: bool) -> Session<'a> {
        let (mut client, hello) = handshake(daemon, minor, untrusted);
        let handshake = Step {
            name: "handshake".into(),
            op: 0,
            tokens: client.take_transcript(),
            outcome: Some(hello.startup),
            after: None,
        };
        let options =
            client.set_options(&Options::default()).unwrap_or_else(|e| panic!("{}: SetOptions: {e}", daemon.name));
        let set_options = Step {
            name: "SetOptions".into(),
            op: Op::SetOptions as u64,
            tokens: client.take_transcript(),
            outcome: Some(options),
            after: None,
        };
        Session { daemon, minor, client, steps: vec![handshake, set_options], untrusted }
    }

    /// Sends `wire`, reads the stderr channel and, on success, the reply
    /// with `reply`; after an error, probes the connection (and reconnects
    /// if the daemon closed it, so the script can go on).
    fn step(&mut self, name: impl Into<String>, wire: Wire, reply: Reply<'_>) {
        self.step_with_source(name, wire, None, reply)
    }

    fn step_with_source(
        &mut self,
        name: impl Into<String>,
        wire: Wire,
        source: Option<(Vec<u8>, usize)>,
        reply: Reply<'_>,
    ) {
        let name = name.into();
        let who = format!("{} at 1.{}: {name}", self.daemon.name, self.minor);
        if let Some((data, chunk)) = &source {
            self.client.set_source(data.clone());
            self.client.read_chunk = *chunk;
        }
        let daemon = self.daemon;
        let fail = |what: String| -> ! { panic!("{who}: {what}\n{} log:\n{}", daemon.name, tail(&daemon.log())) };
        let (outcome, mut tokens, after) = match self.client.call(&wire) {
            Ok(outcome) if outcome.is_ok() => {
                reply(&mut self.client).unwrap_or_else(|e| fail(format!("reading the reply: {e}")));
                (Some(outcome), self.client.take_transcript(), None)
            }
            Ok(outcome) => {
                let tokens = self.client.take_transcript();
                let after = self.client.probe().unwrap_or_else(|e| fail(format!("probing after the error: {e}")));
                // The probe's own tokens are not part of the step: `after` says it all.
                self.client.take_transcript();
                (Some(outcome), tokens, Some(after))
            }
            // The daemon hung up instead of answering.
            Err(ClientError::Closed) => (None, self.client.take_transcript(), None),
            Err(e) => fail(e.to_string()),
        };
        if source.is_some() {
            // How much of the source the daemon did not ask for.
            tokens.push(Token { label: "sourceLeft", value: Value::U64(self.client.source_left() as u64) });
            self.client.set_source(Vec::new());
            self.client.read_chunk = usize::MAX;
        }
        if outcome.is_none() || after.as_ref().is_some_and(|a| *a != AfterError::Continues) {
            self.client = connect(self.daemon, self.minor, self.untrusted);
        }
        if std::env::var_os("OPS_DIFF_TRACE").is_some() {
            eprintln!("{who}: {:?} {after:?}\n{}", outcome.as_ref().map(|o| &o.result), describe(&tokens));
        }
        self.steps.push(Step { name, op: op_of(&wire), tokens, outcome, after });
    }

    /// A request the daemon refuses while reading it, sent on a connection
    /// of its own since the daemon may close it.
    fn closing_step(&mut self, name: impl Into<String>, wire: Wire) {
        let name = name.into();
        let who = format!("{} at 1.{}: {name}", self.daemon.name, self.minor);
        let mut client = connect(self.daemon, self.minor, self.untrusted);
        let outcome = match client.call(&wire) {
            Ok(o) => Some(o),
            Err(ClientError::Closed) => None,
            Err(e) => panic!("{who}: {e}"),
        };
        let mut tokens = client.take_transcript();
        let after = match &outcome {
            Some(o) if !o.is_ok() => Some(client.probe().unwrap_or_else(|e| panic!("{who}: probing: {e}"))),
            // A request expected to fail succeeded: keep what follows, up to
            // the end of the connection.
            Some(_) => {
                let (rest, closed) = client
                    .read_until_closed(Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("{who}: reading on: {e}"));
                tokens.push(Token { label: "afterLast", value: Value::Raw(rest) });
                tokens.push(Token { label: "closed", value: Value::U64(u64::from(closed)) });
                None
            }
            None => None,
        };
        if std::env::var_os("OPS_DIFF_TRACE").is_some() {
            eprintln!("{who}: {:?} {after:?}\n{}", outcome.as_ref().map(|o| &o.result), describe(&tokens));
        }
        self.steps.push(Step { name, op: op_of(&wire), tokens, outcome, after });
    }
}

/// The operation word a request starts with.
fn op_of(wire: &Wire) -> u64 {
    let b = wire.as_bytes();
    u64::from_le_bytes(b[..8].try_into().expect("a request starts with its operation"))
}

/// The last lines of a daemon's log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The script for one minor. Every name is unique within a session.
fn script(s: &mut Session, ctx: &Ctx) {
    let m = s.minor;
    let seeds = &ctx.seeds;
    let (hello, missing) = (seeds.hello.as_str(), ctx.missing.as_str());

    // Queries on seeded paths.
    for (what, p) in [("hello", hello), ("missing", missing)] {
        s.step(format!("IsValidPath({what})"), Wire::op(Op::IsValidPath).str(p), one_u64());
        s.step(format!("HasSubstitutes({what})"), Wire::op(Op::HasSubstitutes).str(p), one_u64());
        s.step(format!("QueryPathHash({what})"), Wire::op(Op::QueryPathHash).str(p), one_string());
        s.step(
            format!("QuerySubstitutablePathInfo({what})"),
            Wire::op(Op::QuerySubstitutablePathInfo).str(p),
            Box::new(|c| {
                if c.read_u64("found")? == 1 {
                    c.read_substitutable_info()?;
                }
                Ok(())
            }),
        );
    }
    for (what, p) in [
        ("built_out", seeds.built_out.as_str()),
        ("hello", hello),
        ("built_drv", &seeds.built_drv),
        ("missing", missing),
    ] {
        s.step(
            format!("QueryPathInfo({what})"),
            Wire::op(Op::QueryPathInfo).str(p),
            Box::new(|c| {
                if c.read_bool("valid")? {
                    c.read_path_info()?;
                }
                Ok(())
            }),
        );
        s.step(format!("QueryReferences({what})"), Wire::op(Op::QueryReferences).str(p), strings());
        s.step(format!("QueryDeriver({what})"), Wire::op(Op::QueryDeriver).str(p), one_string());
    }
    for (what, p) in [("dep", seeds.dep.as_str()), ("built_out", &seeds.built_out), ("missing", missing)] {
        s.step(format!("QueryReferrers({what})"), Wire::op(Op::QueryReferrers).str(p), strings());
        s.step(format!("QueryValidDerivers({what})"), Wire::op(Op::QueryValidDerivers).str(p), strings());
    }
    for (what, p) in [
        ("built_drv", seeds.built_drv.as_str()),
        ("unbuilt_drv", &seeds.unbuilt_drv),
        ("ca_drv", &seeds.ca_drv),
        ("hello", hello),
        ("missing_drv", &missing.replace("-missing", "-missing.drv")),
    ] {
        s.step(format!("QueryDerivationOutputs({what})"), Wire::op(Op::QueryDerivationOutputs).str(p), strings());
        s.step(
            format!("QueryDerivationOutputNames({what})"),
            Wire::op(Op::QueryDerivationOutputNames).str(p),
            strings(),
        );
        s.step(
            format!("QueryDerivationOutputMap({what})"),
            Wire::op(Op::QueryDerivationOutputMap).str(p),
            Box::new(|c| c.read_string_map("output", "outputPath").map(drop)),
        );
    }
    for (what, h) in [
        ("hello", ctx.hash_part(hello)),
        ("missing", ctx.hash_part(missing)),
        ("short", "abc"),
        ("empty", ""),
        ("uppercase", "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
    ] {
        s.step(format!("QueryPathFromHashPart({what})"), Wire::op(Op::QueryPathFromHashPart).str(h), one_string());
    }
    s.step("QueryAllValidPaths", Wire::op(Op::QueryAllValidPaths), strings());
    let mut qvp = Wire::op(Op::QueryValidPaths).strings([missing, hello, &seeds.built_out]);
    if m >= 27 {
        qvp = qvp.bool(false);
    }
    s.step("QueryValidPaths", qvp, strings());
    if m >= 27 {
        s.step(
            "QueryValidPaths(substitute)",
            Wire::op(Op::QueryValidPaths).strings([missing, hello]).bool(true),
            strings(),
        );
    }
    s.step("QuerySubstitutablePaths", Wire::op(Op::QuerySubstitutablePaths).strings([missing, hello]), strings());
    let qspi = if m >= 22 {
        Wire::op(Op::QuerySubstitutablePathInfos)
            .string_map([(missing, ""), (hello, "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s")])
    } else {
        Wire::op(Op::QuerySubstitutablePathInfos).strings([missing, hello])
    };
    s.step("QuerySubstitutablePathInfos", qspi, Box::new(|c| c.read_substitutable_infos().map(drop)));

    // QueryMissing and builds of what is already there.
    let all_outputs = if m >= 30 { format!("{}!*", seeds.built_drv) } else { seeds.built_drv.clone() };
    let targets = [
        hello.to_owned(),
        missing.to_owned(),
        format!("{}!out", seeds.built_drv),
        all_outputs.clone(),
        format!("{}!out", seeds.unbuilt_drv),
        format!("{}!out", seeds.ca_drv),
    ];
    s.step("QueryMissing", Wire::op(Op::QueryMissing).strings(&targets), Box::new(|c| c.read_missing().map(drop)));
    if m >= 30 {
        // A bare derivation is the .drv file itself from 1.30.
        s.step(
            "QueryMissing(bare drv)",
            Wire::op(Op::QueryMissing).strings([&seeds.unbuilt_drv]),
            Box::new(|c| c.read_missing().map(drop)),
        );
    }
    let build = |paths: &[&str]| {
        let w = Wire::op(Op::BuildPaths).strings(paths);
        if m >= 15 { w.u64(0) } else { w }
    };
    s.step("BuildPaths(valid)", build(&[hello, &format!("{}!out", seeds.built_drv), &all_outputs]), one_u64());
    s.step("BuildPaths(missing)", build(&[missing]), one_u64());
    s.step(
        "BuildPathsWithResults",
        Wire::op(Op::BuildPathsWithResults)
            .strings([
                hello,
                &format!("{}!out", seeds.built_drv),
                &format!("{}!dev,out", seeds.built_drv),
                &all_outputs,
                missing,
            ])
            .u64(0),
        Box::new(|c| c.read_keyed_build_results().map(drop)),
    );
    s.step("EnsurePath(hello)", Wire::op(Op::EnsurePath).str(hello), one_u64());
    s.step("EnsurePath(missing)", Wire::op(Op::EnsurePath).str(missing), one_u64());

    // Adding paths, in the encodings of this minor.
    let text = format!("text added at 1.{m}, referring to {hello}\n");
    s.step(
        "AddTextToStore",
        Wire::op(Op::AddTextToStore).str(&format!("text-{m}")).str(&text).strings([hello]),
        one_string(),
    );
    let flat = format!("flat file added at 1.{m}\n");
    if m >= 25 {
        let add = |name: &str, cam: &str, refs: &[&str], data: &[u8]| {
            Wire::op(Op::AddToStore).str(name).str(cam).strings(refs).bool(false).framed(data, 7)
        };
        let vpi: fn() -> Reply<'static> = || Box::new(|c| c.read_valid_path_info().map(drop));
        s.step(
            "AddToStore(text:sha256)",
            add(&format!("cam-text-{m}"), "text:sha256", &[hello], text.as_bytes()),
            vpi(),
        );
        s.step("AddToStore(fixed:r:sha256)", add(&format!("tree-{m}"), "fixed:r:sha256", &[], &ctx.tree_nar), vpi());
        s.step(
            "AddToStore(fixed:r:sha256, refs)",
            add(&format!("tree-refs-{m}"), "fixed:r:sha256", &[hello], &ctx.tree_nar),
            vpi(),
        );
        s.step("AddToStore(fixed:sha256)", add(&format!("flat-{m}"), "fixed:sha256", &[], flat.as_bytes()), vpi());
        s.step("AddToStore(fixed:sha1)", add(&format!("flat-sha1-{m}"), "fixed:sha1", &[], flat.as_bytes()), vpi());
        s.step(
            "AddToStore(fixed:r:sha512)",
            add(&format!("tree-sha512-{m}"), "fixed:r:sha512", &[], &ctx.tree_nar),
            vpi(),
        );
        s.step("AddToStore(fixed:md5, empty)", add(&format!("empty-{m}"), "fixed:md5", &[], b""), vpi());
    } else {
        let add = |name: &str, fixed: bool, recursive: u64, algo: &str, nar: &[u8]| {
            Wire::op(Op::AddToStore).str(name).bool(fixed).u64(recursive).str(algo).raw(nar)
        };
        let flat_nar = store::nar::dump_bytes(flat.as_bytes(), false);
        s.step(
            "AddToStore(legacy, not fixed)",
            add(&format!("tree-{m}"), false, 1, "sha256", &ctx.tree_nar),
            one_string(),
        );
        s.step(
            "AddToStore(legacy, r:sha1)",
            add(&format!("tree-sha1-{m}"), true, 1, "sha1", &ctx.tree_nar),
            one_string(),
        );
        s.step(
            "AddToStore(legacy, flat sha256)",
            add(&format!("flat-{m}"), true, 0, "sha256", &flat_nar),
            one_string(),
        );
        s.step("AddToStore(legacy, flat md5)", add(&format!("flat-md5-{m}"), true, 0, "md5", &flat_nar), one_string());
    }

    // AddToStoreNar: framed from 1.23, pulled with STDERR_READ before.
    let nar_upload = |info: Wire, nar: &[u8], frame: usize| {
        let w = Wire::op(Op::AddToStoreNar).then(&info).bool(false).bool(true);
        if m >= 23 { (w.framed(nar, frame), None) } else { (w, Some((nar.to_vec(), frame))) }
    };
    let (nar, _) = nar_of(format!("uploaded at 1.{m}\n").as_bytes());
    let uploaded = made_up_path(ctx, &format!("nar-{m}"), &format!("nar-{m}"));
    let info =
        path_info_fields(&uploaded, &seeds.built_drv, &nar, &[hello, &uploaded], true, &["test:c2lnbmF0dXJl"], "");
    let (w, src) = nar_upload(info, &nar, 1000);
    s.step_with_source("AddToStoreNar", w, src, none());
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (big_nar, _) = nar_of(&big);
    let big_path = made_up_path(ctx, &format!("big-{m}"), &format!("big-{m}"));
    let (w, src) = nar_upload(path_info_fields(&big_path, "", &big_nar, &[], false, &[], ""), &big_nar, 10_000);
    s.step_with_source("AddToStoreNar(big, small answers)", w, src, none());
    let bad_path = made_up_path(ctx, &format!("bad-{m}"), &format!("bad-{m}"));
    let (other_nar, _) = nar_of(b"other contents\n");
    // The info describes one NAR, another of the same size is sent.
    let lying = path_info_fields(&bad_path, "", &other_nar, &[], false, &[], "");
    let (bad_nar, _) = nar_of(b"OTHER contents\n");
    let (w, src) = nar_upload(lying, &bad_nar, 1000);
    s.step_with_source("AddToStoreNar(hash mismatch)", w, src, none());
    s.step("IsValidPath(hash mismatch)", Wire::op(Op::IsValidPath).str(&bad_path), one_u64());
    let ca_contents = format!("content-addressed upload at 1.{m}\n");
    let (ca_nar, _) = nar_of(ca_contents.as_bytes());
    let ca_hash = Algorithm::Sha256.digest(&ca_nar);
    let ca_path = ctx.path(
        &ctx.dir
            .make_fixed_output_path(
                &format!("ca-nar-{m}"),
                FileIngestionMethod::Recursive,
                &ca_hash,
                &StoreReferences::default(),
            )
            .expect("a CA path"),
    );
    let ca = format!("fixed:r:sha256:{}", ca_hash.to_nix32());
    let (w, src) = nar_upload(path_info_fields(&ca_path, "", &ca_nar, &[], false, &[], &ca), &ca_nar, 1000);
    s.step_with_source("AddToStoreNar(ca)", w, src, none());
    for (what, p) in [("uploaded", &uploaded), ("big", &big_path), ("ca", &ca_path)] {
        s.step(
            format!("QueryPathInfo({what})"),
            Wire::op(Op::QueryPathInfo).str(p),
            Box::new(|c| {
                if c.read_bool("valid")? {
                    c.read_path_info()?;
                }
                Ok(())
            }),
        );
    }

    // AddMultipleToStore (framed, items in the minor-16 layout).
    let (nar_a, _) = nar_of(format!("first of many at 1.{m}\n").as_bytes());
    let (nar_b, _) = nar_of(format!("second of many at 1.{m}\n").as_bytes());
    let path_a = made_up_path(ctx, &format!("multi-a-{m}"), &format!("multi-a-{m}"));
    let path_b = made_up_path(ctx, &format!("multi-b-{m}"), &format!("multi-b-{m}"));
    let stream = Wire::new()
        .u64(2)
        .then(&path_info_fields(&path_a, "", &nar_a, &[hello], false, &[], ""))
        .raw(&nar_a)
        .then(&path_info_fields(&path_b, "", &nar_b, &[&path_a], false, &["a:b"], ""))
        .raw(&nar_b);
    s.step(
        "AddMultipleToStore",
        Wire::op(Op::AddMultipleToStore).bool(false).bool(true).framed(stream.as_bytes(), 100),
        none(),
    );
    s.step(
        "AddMultipleToStore(empty)",
        Wire::op(Op::AddMultipleToStore).bool(false).bool(true).framed(Wire::new().u64(0).as_bytes(), 100),
        none(),
    );
    s.step("QueryReferrers(multi a)", Wire::op(Op::QueryReferrers).str(&path_a), strings());

    // ImportPaths, pulled with STDERR_READ; ExportPath, pushed with STDERR_WRITE.
    let (imp_nar, _) = nar_of(format!("imported at 1.{m}\n").as_bytes());
    let imported = made_up_path(ctx, &format!("import-{m}"), &format!("import-{m}"));
    let (imp_big_nar, _) = nar_of(&big[..70_000]);
    let imported_big = made_up_path(ctx, &format!("import-big-{m}"), &format!("import-big-{m}"));
    let export = export_stream(&[
        export_record(&imp_nar, &imported, &[hello], &seeds.built_drv),
        export_record(&imp_big_nar, &imported_big, &[&imported], ""),
    ]);
    s.step_with_source("ImportPaths", Wire::op(Op::ImportPaths), Some((export.into_bytes(), 5000)), strings());
    s.step("ExportPath(hello)", Wire::op(Op::ExportPath).str(hello).u64(0), one_u64());
    s.step("ExportPath(imported)", Wire::op(Op::ExportPath).str(&imported).u64(0), one_u64());
    s.step("ExportPath(missing)", Wire::op(Op::ExportPath).str(missing).u64(0), one_u64());
    s.step(
        "NarFromPath(built_out)",
        Wire::op(Op::NarFromPath).str(&seeds.built_out),
        Box::new(|c| c.read_nar().map(drop)),
    );
    s.step("NarFromPath(tree)", Wire::op(Op::NarFromPath).str(&imported_big), Box::new(|c| c.read_nar().map(drop)));

    // Signatures, logs, realisations.
    s.step(
        "AddSignatures",
        Wire::op(Op::AddSignatures).str(hello).strings([format!("key-{m}:c2ln"), "key:c2ln".into()]),
        one_u64(),
    );
    s.step(
        "QueryPathInfo(hello, signed)",
        Wire::op(Op::QueryPathInfo).str(hello),
        Box::new(|c| {
            c.read_bool("valid")?;
            c.read_path_info().map(drop)
        }),
    );
    let log = format!("a build log sent at 1.{m}\nsecond line\n");
    s.step(
        "AddBuildLog",
        Wire::op(Op::AddBuildLog).str(base_name(&seeds.built_drv)).framed(log.as_bytes(), 5),
        one_u64(),
    );
    let drv_hash = Algorithm::Sha256.digest(format!("drv-{m}").as_bytes()).to_base16();
    let id = format!("sha256:{drv_hash}!out");
    let register = |id: &str, out: &str| {
        if m >= 31 {
            let json = format!(
                r#"{{"dependentRealisations":{{}},"id":"{id}","outPath":"{}","signatures":[]}}"#,
                base_name(out)
            );
            Wire::op(Op::RegisterDrvOutput).str(&json)
        } else {
            Wire::op(Op::RegisterDrvOutput).str(id).str(base_name(out))
        }
    };
    let realisation_reply: fn() -> Reply<'static> = || Box::new(|c| c.read_strings("realisation").map(drop));
    s.step("QueryRealisation(before)", Wire::op(Op::QueryRealisation).str(&id), realisation_reply());
    s.step("RegisterDrvOutput", register(&id, &seeds.built_out), none());
    s.step("RegisterDrvOutput(again)", register(&id, &seeds.built_out), none());
    s.step("QueryRealisation", Wire::op(Op::QueryRealisation).str(&id), realisation_reply());
    let dev_id = format!("sha256:{drv_hash}!dev");
    s.step("RegisterDrvOutput(dev)", register(&dev_id, &seeds.built_dev), none());
    s.step("QueryRealisation(dev)", Wire::op(Op::QueryRealisation).str(&dev_id), realisation_reply());
    s.step("RegisterDrvOutput(conflict)", register(&id, hello), none());
    s.step(
        "QueryRealisation(unknown)",
        Wire::op(Op::QueryRealisation).str(&format!("sha256:{}!out", "0".repeat(64))),
        realisation_reply(),
    );
    s.step("QueryRealisation(malformed)", Wire::op(Op::QueryRealisation).str("not-an-id"), realisation_reply());

    // GC roots.
    s.step("AddTempRoot", Wire::op(Op::AddTempRoot).str(&seeds.unbuilt_drv), one_u64());
    let indirect = ctx.roots.join(format!("indirect-{m}"));
    let _ = std::fs::remove_file(&indirect);
    std::os::unix::fs::symlink(&seeds.built_dev, &indirect).expect("create an indirect root's link");
    s.step("AddIndirectRoot", Wire::op(Op::AddIndirectRoot).str(indirect.to_str().unwrap()), one_u64());
    let perm = ctx.roots.join(format!("perm-{m}"));
    let _ = std::fs::remove_file(&perm);
    s.step("AddPermRoot", Wire::op(Op::AddPermRoot).str(&imported).str(perm.to_str().unwrap()), one_string());
    s.step("AddPermRoot(again)", Wire::op(Op::AddPermRoot).str(&imported).str(perm.to_str().unwrap()), one_string());
    let file_root = ctx.roots.join(format!("file-{m}"));
    write_file(&file_root, "a regular file");
    s.step(
        "AddPermRoot(over a file)",
        Wire::op(Op::AddPermRoot).str(hello).str(file_root.to_str().unwrap()),
        one_string(),
    );
    s.step(
        "AddPermRoot(in the store)",
        Wire::op(Op::AddPermRoot).str(hello).str(&format!("{}/root-{m}", ctx.dir.as_str())),
        one_string(),
    );
    s.step("SyncWithGC", Wire::op(Op::SyncWithGC), one_u64());
    s.step("FindRoots", Wire::op(Op::FindRoots), Box::new(|c| c.read_roots().map(drop)));

    // Garbage collection.
    let gc = |action: u64, paths: &[&str], ignore_liveness: bool| {
        Wire::op(Op::CollectGarbage).u64(action).strings(paths).bool(ignore_liveness).u64(u64::MAX).u64(0).u64(0).u64(0)
    };
    let gc_reply: fn() -> Reply<'static> = || Box::new(|c| c.read_gc_result().map(drop));
    s.step("CollectGarbage(live)", gc(0, &[], false), gc_reply());
    s.step("CollectGarbage(dead)", gc(1, &[], false), gc_reply());
    let index = MINORS.iter().position(|x| *x == m).expect("a known minor");
    s.step("CollectGarbage(delete specific)", gc(3, &[&seeds.garbage[index]], false), gc_reply());
    s.step("CollectGarbage(delete live)", gc(3, &[&uploaded], false), gc_reply());
    s.step("CollectGarbage(ignore liveness)", gc(1, &[], true), gc_reply());
    if m == *MINORS.last().unwrap() {
        s.step("CollectGarbage(delete dead)", gc(2, &[], false), gc_reply());
        s.step("QueryAllValidPaths(after GC)", Wire::op(Op::QueryAllValidPaths), strings());
    }

    // Verify and optimise.
    s.step("VerifyStore", Wire::op(Op::VerifyStore).bool(false).bool(false), one_u64());
    s.step("VerifyStore(check contents)", Wire::op(Op::VerifyStore).bool(true).bool(false), one_u64());
    s.step("OptimiseStore", Wire::op(Op::OptimiseStore), one_u64());

    // Requests refused while they are read.
    let outside = "/not/a/store/path-x";
    s.closing_step("IsValidPath(outside the store)", Wire::op(Op::IsValidPath).str(outside));
    s.closing_step(
        "QueryPathInfo(not a path)",
        Wire::op(Op::QueryPathInfo).str(&format!("{}/not-a-hash", ctx.dir.as_str())),
    );
    s.closing_step("unknown op 99", Wire::op_number(99).str(hello));
    s.closing_step("QueryFailedPaths (removed)", Wire::op_number(24));
    s.closing_step("ClearFailedPaths (removed)", Wire::op_number(25));
    s.closing_step("BuildPaths(bad mode)", Wire::op(Op::BuildPaths).strings([hello]).u64(7));
    s.closing_step("NarFromPath(missing)", Wire::op(Op::NarFromPath).str(missing));
    if m >= 31 {
        // CppNix closes the connection after this one (see `DIFFERENCES`).
        s.closing_step("RegisterDrvOutput(malformed JSON)", Wire::op(Op::RegisterDrvOutput).str("{not json"));
    }
}

/// What a client the daemon does not trust may and may not do (worker-protocol.md §9).
fn untrusted_script(s: &mut Session, ctx: &Ctx) {
    let m = s.minor;
    let seeds = &ctx.seeds;
    let hello = seeds.hello.as_str();
    let options = Options {
        overrides: [
            ("build-timeout", "10"),
            ("sandbox", "false"),
            ("substituters", "http://example.invalid"),
            ("plugin-files", ""),
            ("experimental-features", "nix-command"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Options::default()
    };
    s.step("untrusted SetOptions(restricted)", options.request(m), none());
    s.step(
        "untrusted QueryPathInfo(hello)",
        Wire::op(Op::QueryPathInfo).str(hello),
        Box::new(|c| {
            c.read_bool("valid")?;
            c.read_path_info().map(drop)
        }),
    );
    s.step(
        "untrusted AddSignatures",
        Wire::op(Op::AddSignatures).str(hello).strings([format!("untrusted-{m}:c2ln")]),
        one_u64(),
    );
    s.step("untrusted VerifyStore(repair)", Wire::op(Op::VerifyStore).bool(false).bool(true), one_u64());
    s.step("untrusted FindRoots", Wire::op(Op::FindRoots), Box::new(|c| c.read_roots().map(drop)));
    s.step(
        "untrusted CollectGarbage(dead)",
        Wire::op(Op::CollectGarbage)
            .u64(1)
            .strings(Vec::<String>::new())
            .bool(false)
            .u64(u64::MAX)
            .u64(0)
            .u64(0)
            .u64(0),
        Box::new(|c| c.read_gc_result().map(drop)),
    );
    s.step(
        "untrusted AddTextToStore",
        Wire::op(Op::AddTextToStore).str(&format!("untrusted-text-{m}")).str("text\n").strings([hello]),
        one_string(),
    );

    // Uploads: signature checks are forced (require-sigs is on), `ultimate` dropped.
    let nar_upload = |info: Wire, nar: &[u8], repair: bool| {
        let w = Wire::op(Op::AddToStoreNar).then(&info).bool(repair).bool(true);
        if m >= 23 { (w.framed(nar, 1000), None) } else { (w, Some((nar.to_vec(), 1000))) }
    };
    let (nar, _) = nar_of(format!("unsigned upload at 1.{m}\n").as_bytes());
    let unsigned = made_up_path(ctx, &format!("unsigned-{m}"), &format!("unsigned-{m}"));
    let (w, src) = nar_upload(path_info_fields(&unsigned, "", &nar, &[], true, &[], ""), &nar, false);
    s.step_with_source("untrusted AddToStoreNar(unsigned)", w, src, none());
    let (ca_nar, _) = nar_of(format!("untrusted content-addressed upload at 1.{m}\n").as_bytes());
    let ca_hash = Algorithm::Sha256.digest(&ca_nar);
    let ca_path = ctx.path(
        &ctx.dir
            .make_fixed_output_path(
                &format!("untrusted-ca-{m}"),
                FileIngestionMethod::Recursive,
                &ca_hash,
                &StoreReferences::default(),
            )
            .expect("a CA path"),
    );
    let ca = format!("fixed:r:sha256:{}", ca_hash.to_nix32());
    let (w, src) = nar_upload(path_info_fields(&ca_path, "", &ca_nar, &[], true, &[], &ca), &ca_nar, false);
    s.step_with_source("untrusted AddToStoreNar(ca)", w, src, none());
    s.step(
        "untrusted QueryPathInfo(ca)",
        Wire::op(Op::QueryPathInfo).str(&ca_path),
        Box::new(|c| {
            if c.read_bool("valid")? {
                c.read_path_info()?;
            }
            Ok(())
        }),
    );
    let (w, src) = nar_upload(path_info_fields(&ca_path, "", &ca_nar, &[], false, &[], &ca), &ca_nar, true);
    s.step_with_source("untrusted AddToStoreNar(ca, repair)", w, src, none());
    let stream = Wire::new().u64(1).then(&path_info_fields(&unsigned, "", &nar, &[], false, &[], "")).raw(&nar);
    s.step(
        "untrusted AddMultipleToStore(unsigned)",
        Wire::op(Op::AddMultipleToStore).bool(false).bool(true).framed(stream.as_bytes(), 100),
        none(),
    );
    let export = export_stream(&[export_record(&nar, &unsigned, &[], "")]);
    s.step_with_source(
        "untrusted ImportPaths(unsigned)",
        Wire::op(Op::ImportPaths),
        Some((export.into_bytes(), 5000)),
        strings(),
    );
    if m >= 25 {
        let add = |name: &str, repair: bool| {
            Wire::op(Op::AddToStore)
                .str(name)
                .str("fixed:r:sha256")
                .strings(Vec::<String>::new())
                .bool(repair)
                .framed(&ctx.tree_nar, 50)
        };
        s.step(
            "untrusted AddToStore",
            add(&format!("untrusted-tree-{m}"), false),
            Box::new(|c| c.read_valid_path_info().map(drop)),
        );
        s.step(
            "untrusted AddToStore(repair)",
            add(&format!("untrusted-tree-{m}"), true),
            Box::new(|c| c.read_valid_path_info().map(drop)),
        );
    }
    let drv_hash = Algorithm::Sha256.digest(format!("untrusted-drv-{m}").as_bytes()).to_base16();
    let id = format!("sha256:{drv_hash}!out");
    let register = if m >= 31 {
        let json =
            format!(r#"{{"dependentRealisations":{{}},"id":"{id}","outPath":"{}","signatures":[]}}"#, base_name(hello));
        Wire::op(Op::RegisterDrvOutput).str(&json)
    } else {
        Wire::op(Op::RegisterDrvOutput).str(&id).str(base_name(hello))
    };
    s.step("untrusted RegisterDrvOutput", register, none());
    s.step(
        "untrusted QueryRealisation",
        Wire::op(Op::QueryRealisation).str(&id),
        Box::new(|c| c.read_strings("realisation").map(drop)),
    );

    // Refused while the request is read, or leaving it unread: own connections.
    let mode_repair = |op: Op| Wire::op(op).strings([hello]).u64(1);
    s.closing_step("untrusted BuildPaths(repair)", mode_repair(Op::BuildPaths));
    s.closing_step("untrusted BuildPathsWithResults(repair)", mode_repair(Op::BuildPathsWithResults));
    let perm = ctx.roots.join(format!("untrusted-perm-{m}"));
    s.closing_step("untrusted AddPermRoot", Wire::op(Op::AddPermRoot).str(hello).str(perm.to_str().unwrap()));
    s.closing_step(
        "untrusted AddBuildLog",
        Wire::op(Op::AddBuildLog).str(base_name(&seeds.built_drv)).framed(b"a log\n", 5),
    );
}

/// Runs the script at every minor against a daemon.
fn run_daemon(daemon: &Daemon, store: &TestStore, ctx: &Ctx) -> BTreeMap<u64, Vec<Step>> {
    let mut runs = BTreeMap::new();
    let as_root = rustix::process::getuid().is_root();
    if !as_root {
        eprintln!("untrusted sessions skipped: connecting as another user needs root");
    }
    for minor in MINORS {
        let mut s = Session::open(daemon, minor, false);
        script(&mut s, ctx);
        let Session { client, mut steps, .. } = s;
        client.shutdown();
        drop(client);
        wait_for_temp_roots_to_go(store, &daemon.name);
        if as_root {
            let mut u = Session::open(daemon, minor, true);
            for step in &mut u.steps {
                step.name = format!("untrusted {}", step.name);
            }
            untrusted_script(&mut u, ctx);
            let Session { client, steps: more, .. } = u;
            client.shutdown();
            drop(client);
            wait_for_temp_roots_to_go(store, &daemon.name);
            steps.extend(more);
        }
        runs.insert(minor, steps);
    }
    runs
}

/// Both daemons drop a connection's temporary roots when it ends, but
/// CppNix's worker process may take a moment to exit: the next session's
/// GC must not see them.
fn wait_for_temp_roots_to_go(store: &TestStore, who: &str) {
    let dir = store.state_dir.join("temproots");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{who}: temporary roots still there after the session ended");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The one helper for error texts: the daemons agree on what they say but
/// not on how it is decorated. CppNix colours names and paths with ANSI
/// escapes and, before 1.26, sends the fully formatted text with a
/// (coloured) `error: ` prefix; armitage sends plain text. Both are reduced
/// to the plain message without the prefix and trailing whitespace.
fn normalise_error_text(text: &str) -> String {
    let plain = without_ansi(text);
    let plain = plain.trim_end();
    plain.strip_prefix("error: ").unwrap_or(plain).to_owned()
}

/// The text without ANSI CSI sequences (colours).
fn without_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // A CSI sequence ends at its first byte in 0x40..=0x7e.
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
            continue;
        }
        plain.push(ch);
    }
    plain
}

/// The fields left out of the comparison, by label:
/// - `registrationTime`: the daemons' clocks;
/// - `daemonVersion`: "2.26.3" against "armitage <version>";
/// - `errorMessage`: through [`normalise_error_text`];
/// - `logLine`: without ANSI colour escapes (CppNix colours `warning:`);
/// - `activityId`, `parentActivityId`: opaque ids (CppNix: pid << 32 + n),
///   replaced by their order of first appearance;
/// - `rootLink` `{temp:<pid>}`: the pid of the process holding a temporary root.
///
/// And two shapes:
/// - consecutive STDERR_WRITE messages are joined: CppNix sends one per
///   write call of its serialiser (each length, string and padding apart,
///   empty strings included), armitage one per buffer; clients concatenate;
/// - `FindRoots` pairs are sorted: CppNix's `Roots` is an `unordered_map`,
///   so its order is arbitrary.
fn normalise(step: &str, tokens: &[Token]) -> Vec<Token> {
    let mut ids: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    for t in tokens {
        let value = match (t.label, &t.value) {
            ("registrationTime", Value::U64(_)) => Value::U64(0),
            ("daemonVersion", Value::Bytes(_)) => Value::Bytes(b"<daemon version>".to_vec()),
            ("errorMessage" | "errorTrace", Value::Bytes(b)) => {
                Value::Bytes(normalise_error_text(&String::from_utf8_lossy(b)).into_bytes())
            }
            ("logLine", Value::Bytes(b)) => Value::Bytes(without_ansi(&String::from_utf8_lossy(b)).into_bytes()),
            ("activityId" | "parentActivityId", Value::U64(id)) if *id != 0 => {
                let n = ids.len() as u64 + 1;
                Value::U64(*ids.entry(*id).or_insert(n))
            }
            ("rootLink", Value::Bytes(b)) if b.starts_with(b"{temp:") => Value::Bytes(b"{temp:<pid>}".to_vec()),
            (_, v) => v.clone(),
        };
        // A write following a write: append its data to the previous one.
        if t.label == "writeData" && out.len() >= 2 && out[out.len() - 2].label == "writeData" {
            out.pop(); // this message's code
            if let (Value::Bytes(prev), Value::Bytes(more)) = (&mut out.last_mut().expect("a write").value, &value) {
                prev.extend_from_slice(more);
            }
            continue;
        }
        out.push(Token { label: t.label, value });
    }
    if step.ends_with("FindRoots") {
        // count, then (link, target) pairs
        let start = out.iter().position(|t| t.label == "rootLink").unwrap_or(out.len());
        let mut pairs: Vec<(Token, Token)> = out[start..].chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
        pairs.sort_by(|a, b| (&a.0.value, &a.1.value).cmp(&(&b.0.value, &b.1.value)));
        out.truncate(start);
        out.extend(pairs.into_iter().flat_map(|(a, b)| [a, b]));
    }
    out
}

const ACTIVITY_LABELS: &[&str] = &[
    "activityId",
    "activityLevel",
    "activityType",
    "activityText",
    "fieldCount",
    "fieldType",
    "fieldInt",
    "fieldString",
    "parentActivityId",
    "resultType",
];

/// The tokens without activity messages (START, STOP and RESULT).
fn without_activities(tokens: &[Token]) -> Vec<Token> {
    use worker_protocol::stderr::{STDERR_RESULT, STDERR_START_ACTIVITY, STDERR_STOP_ACTIVITY};
    let mut out = Vec::new();
    let mut skipping = false;
    for t in tokens {
        if t.label == "stderr" {
            skipping = matches!(t.value, Value::U64(STDERR_START_ACTIVITY | STDERR_STOP_ACTIVITY | STDERR_RESULT));
            if skipping {
                continue;
            }
        } else if skipping && ACTIVITY_LABELS.contains(&t.label) {
            continue;
        }
        skipping = false;
        out.push(t.clone());
    }
    out
}

/// Documented differences, each checked by [`check_difference`] instead of
/// a token by token comparison: (step name prefix, why).
const DIFFERENCES: &[(&str, &str)] = &[
    (
        "QueryReferences(built_",
        "CppNix 2.26's daemon crashes (SIGSEGV) on QueryReferences of a valid path: daemon.cc iterates \
         `store->queryPathInfo(path)->references`, the references of a temporary `ref` that is gone \
         before the loop runs. Armitage answers with the references QueryPathInfo reports.",
    ),
    (
        "RegisterDrvOutput(malformed JSON)",
        "CppNix passes nlohmann's parse error text on and then closes the connection: that exception \
         is not a nix::Error, so it escapes performOp's handler. Armitage reports the JSON error and, \
         the request having been read whole, carries on.",
    ),
    (
        "BuildPaths",
        "CppNix's build scheduler reports its progress (actRealise, actBuilds and actCopyPaths with \
         their progress and expected-size results) even when everything is already valid; armitage \
         has no scheduler yet, so activity messages are left out of BuildPaths, \
         BuildPathsWithResults and EnsurePath and the rest is compared.",
    ),
    ("EnsurePath", "as BuildPaths"),
    (
        "untrusted BuildPaths",
        "BuildPaths and BuildPathsWithResults in repair mode from an untrusted client: CppNix refuses \
         while it reads the request, so it sends the error twice and closes the connection; armitage \
         has read the request whole and carries on.",
    ),
    (
        "untrusted AddPermRoot",
        "CppNix refuses before it reads the path and the root, so they are left in the stream and it \
         closes the connection, sending the error twice; armitage reads them and carries on.",
    ),
    (
        "untrusted AddBuildLog",
        "CppNix refuses without reading the framed log, then takes the frames for requests (here a \
         string length it cannot allocate: \"Nix daemon out of memory\") and closes the connection; \
         armitage drains the log and carries on.",
    ),
    (
        "CollectGarbage(delete live)",
        "Armitage words a live path's error as the nix-daemon of the client's version: the hint's \
         second half (\"and nix-store --query --referrers\") came with Nix 2.23, protocol 1.37, so \
         clients speaking an earlier minor get it without, as their own nix-daemon said it; the rest \
         of the reply is the same.",
    ),
    (
        "NarFromPath(missing)",
        "CppNix sends STDERR_LAST before it opens the path, so for a path that is not valid the \
         client gets STDERR_LAST and then, where the NAR should be, the error (twice) and the end \
         of the connection. Armitage checks first and reports \"path '…' is not valid\" as an error.",
    ),
];

/// Whether the step has a documented difference, and if so whether it holds.
fn check_difference(minor: u64, a: &Step, b: &Step, theirs: &[Step]) -> Option<Vec<String>> {
    let (prefix, _) = DIFFERENCES.iter().find(|(prefix, _)| a.name.starts_with(prefix))?;
    let mut problems = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("1.{minor} {}: documented difference does not hold: {what}", a.name));
        }
    };
    match *prefix {
        "QueryReferences(built_" => {
            expect(b.outcome.is_none(), format!("nix-daemon 2.26 answered: {:?}", b.outcome));
            // Armitage's answer: the references CppNix gives in QueryPathInfo.
            let info_step = format!("QueryPathInfo{}", &a.name["QueryReferences".len()..]);
            let their_refs: Vec<&Value> = theirs
                .iter()
                .find(|s| s.name == info_step)
                .map(|s| s.tokens.iter().filter(|t| t.label == "reference").map(|t| &t.value).collect())
                .unwrap_or_default();
            let our_refs: Vec<&Value> = a.tokens.iter().filter(|t| t.label == "reply").map(|t| &t.value).collect();
            expect(a.outcome.as_ref().is_some_and(Outcome::is_ok), format!("armitage: {:?}", a.outcome));
            expect(our_refs == their_refs, format!("armitage: {our_refs:?}; CppNix's QueryPathInfo: {their_refs:?}"));
        }
        "RegisterDrvOutput(malformed JSON)" => {
            let failed = |s: &Step| s.outcome.as_ref().is_some_and(|o| !o.is_ok());
            expect(failed(a) && failed(b), format!("armitage: {:?}; nix-daemon: {:?}", a.outcome, b.outcome));
            expect(a.after == Some(AfterError::Continues), format!("armitage after the error: {:?}", a.after));
            expect(
                b.after == Some(AfterError::Closes { further_errors: vec![] }),
                format!("nix-daemon after the error: {:?}", b.after),
            );
        }
        "untrusted BuildPaths" | "untrusted AddPermRoot" | "untrusted AddBuildLog" => {
            // The same error first; then CppNix closes, armitage goes on.
            let diff = token_difference(&normalise(&a.name, &a.tokens), &normalise(&b.name, &b.tokens));
            expect(diff.is_none(), diff.unwrap_or_default());
            expect(a.after == Some(AfterError::Continues), format!("armitage after the error: {:?}", a.after));
            expect(
                matches!(b.after, Some(AfterError::Closes { .. })),
                format!("nix-daemon after the error: {:?}", b.after),
            );
        }
        "CollectGarbage(delete live)" => {
            let before_1_37 = |mut t: Token| {
                if minor < 37
                    && t.label == "errorMessage"
                    && let Value::Bytes(m) = &t.value
                {
                    let m = String::from_utf8_lossy(m).replace(" and nix-store --query --referrers", "");
                    t.value = Value::Bytes(m.into_bytes());
                }
                t
            };
            let theirs: Vec<Token> = normalise(&b.name, &b.tokens).into_iter().map(before_1_37).collect();
            let diff = token_difference(&normalise(&a.name, &a.tokens), &theirs);
            expect(diff.is_none(), diff.unwrap_or_default());
            expect(
                a.after == b.after,
                format!("after the error, armitage: {:?}; nix-daemon 2.26: {:?}", a.after, b.after),
            );
        }
        "NarFromPath(missing)" => {
            let ours_err =
                a.outcome.as_ref().and_then(|o| o.result.clone().err()).map(|e| normalise_error_text(&e.message));
            expect(
                ours_err.as_deref().is_some_and(|m| m.starts_with("path '") && m.ends_with("' is not valid")),
                format!("armitage: {:?}", a.outcome),
            );
            expect(a.after == Some(AfterError::Continues), format!("armitage after the error: {:?}", a.after));
            expect(b.outcome.as_ref().is_some_and(Outcome::is_ok), format!("nix-daemon: {:?}", b.outcome));
            let closed = b.tokens.iter().any(|t| t.label == "closed" && t.value == Value::U64(1));
            let rest = b.tokens.iter().find(|t| t.label == "afterLast").map(|t| format!("{t}"));
            expect(closed, format!("nix-daemon after STDERR_LAST: {rest:?}, not closed"));
        }
        _ => {
            // Build operations: all but the activities.
            let (na, nb) = (
                without_activities(&normalise(&a.name, &a.tokens)),
                without_activities(&normalise(&b.name, &b.tokens)),
            );
            if let Some(diff) = token_difference(&na, &nb) {
                problems.push(format!("1.{minor} {} (activities left out): {diff}", a.name));
            }
            if a.after != b.after && !repeated_error_before_close(a, b) {
                problems.push(format!(
                    "1.{minor} {}: after the error, armitage: {:?}; nix-daemon 2.26: {:?}",
                    a.name, a.after, b.after
                ));
            }
        }
    }
    Some(problems)
}

fn describe(tokens: &[Token]) -> String {
    tokens.iter().map(|t| format!("    {t}\n")).collect()
}

/// Where two normalised transcripts part, shown with some context.
fn token_difference(na: &[Token], nb: &[Token]) -> Option<String> {
    if na == nb {
        return None;
    }
    let first = na.iter().zip(nb).position(|(x, y)| x != y).unwrap_or(na.len().min(nb.len()));
    let from = first.saturating_sub(3);
    Some(format!(
        "replies differ at token {first}\n  armitage:\n{}  nix-daemon 2.26:\n{}",
        describe(&na[from..na.len().min(first + 6)]),
        describe(&nb[from..nb.len().min(first + 6)]),
    ))
}

/// The error CppNix sends again before closing the connection when a request
/// cannot be read (daemon.cc `processConnection`: `stopWork(&e)` in
/// performOp's handler, then again in the outer one). Armitage sends it once,
/// as worker-protocol.md §5 recommends; the first one is compared as usual.
fn repeated_error_before_close(a: &Step, b: &Step) -> bool {
    let first =
        |s: &Step| s.outcome.as_ref().and_then(|o| o.result.clone().err()).map(|e| normalise_error_text(&e.message));
    match (&a.after, &b.after) {
        (Some(AfterError::Closes { further_errors: ours }), Some(AfterError::Closes { further_errors: theirs })) => {
            ours.is_empty() && theirs.len() == 1 && Some(normalise_error_text(&theirs[0].message)) == first(b)
        }
        _ => false,
    }
}

/// Size of what a failed `AddToStoreNar(hash mismatch)` leaves behind in
/// CppNix's store: the NAR's one file, "OTHER contents\n".
const LEFTOVER_SIZE: u64 = 15;

/// Whether a store entry is the leftover of a failed `AddToStoreNar(hash
/// mismatch)` (the path, not its `.lock`).
fn is_leftover(text: &[u8]) -> bool {
    let text = String::from_utf8_lossy(text);
    let text = text.trim_end_matches(['\n', '\'']);
    text.rsplit_once("-bad-").is_some_and(|(_, minor)| minor.parse::<u64>().is_ok())
}

/// A documented difference in the garbage collector's answers: CppNix's
/// `addToStore` unpacks an upload in place and leaves it there when the
/// hash does not match (invalid, temp-rooted by the connection, later dead
/// and deleted), where armitage unpacks to a temporary name and removes it.
/// Those entries are taken out of CppNix's GC answers (paths, "deleting"
/// lines and the bytes freed); returns how many were.
fn without_leftovers(tokens: &[Token]) -> (Vec<Token>, usize) {
    let mut out = Vec::new();
    let mut removed = 0;
    let mut deleted_bytes = 0;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match (&t.label, &t.value) {
            (&"gcPath", Value::Bytes(b)) if is_leftover(b) => {
                removed += 1;
                i += 1;
                continue;
            }
            (&"logLine", Value::Bytes(b)) if b.starts_with(b"deleting '") && is_leftover(b) => {
                out.pop(); // its message code
                deleted_bytes += LEFTOVER_SIZE;
                removed += 1;
                i += 1;
                continue;
            }
            _ => {}
        }
        out.push(t.clone());
        i += 1;
    }
    let gc_paths = out.iter().filter(|t| t.label == "gcPath").count() as u64;
    for t in &mut out {
        match (t.label, &mut t.value) {
            ("count", Value::U64(n)) => *n = gc_paths,
            ("bytesFreed", Value::U64(n)) => *n = n.saturating_sub(deleted_bytes),
            _ => {}
        }
    }
    (out, removed)
}

/// Compares two daemons' steps; returns the differences found.
fn compare(minor: u64, ours: &[Step], theirs: &[Step]) -> Vec<String> {
    let mut problems = Vec::new();
    let names = |s: &[Step]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if names(ours) != names(theirs) {
        problems.push(format!(
            "1.{minor}: the scripts diverged:\n  armitage: {:?}\n  nix: {:?}",
            names(ours),
            names(theirs)
        ));
        return problems;
    }
    for (a, b) in ours.iter().zip(theirs) {
        if let Some(p) = check_difference(minor, a, b, theirs) {
            problems.extend(p);
            continue;
        }
        if a.outcome.is_none() != b.outcome.is_none() {
            let said =
                |s: &Step| if s.outcome.is_none() { "closed the connection without an answer" } else { "answered" };
            problems.push(format!("1.{minor} {}: armitage {}; nix-daemon 2.26 {}", a.name, said(a), said(b)));
        }
        let (na, mut nb) = (normalise(&a.name, &a.tokens), normalise(&b.name, &b.tokens));
        if a.name.contains("CollectGarbage") {
            nb = without_leftovers(&nb).0;
        }
        if let Some(diff) = token_difference(&na, &nb) {
            problems.push(format!("1.{minor} {}: {diff}", a.name));
        }
        if a.after != b.after && !repeated_error_before_close(a, b) {
            problems.push(format!(
                "1.{minor} {}: after the error, armitage: {:?}; nix-daemon 2.26: {:?}",
                a.name, a.after, b.after
            ));
        }
    }
    problems
}

fn empty_store_dir(dir: &Path) {
    // Store paths are read-only; the test runs as the store's owner.
    fn make_writable(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::symlink_metadata(p).is_ok_and(|md| md.is_dir()) {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
    make_writable(dir);
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("emptying {}: {e}", dir.display()));
}

#[test]
fn every_op_at_every_minor_matches_nix_daemon_2_26() {
    let Some(nix) = Nix::find(NixVersion::V2_26) else { return };
    let ours = TestStore::with_conf(CONF);
    let mut theirs = TestStore::with_conf(CONF);
    // One store directory for both, in turn (see the module docs).
    theirs.store_dir = ours.store_dir.clone();
    let roots = ours.work_dir("roots");

    let seeds = seed(&ours, &nix);
    let tree = ours.work_dir("tree");
    make_tree(&tree, 11, 12, 300);
    let mut tree_nar = Vec::new();
    local_store::nar_fs::dump(&tree, &mut tree_nar).expect("dump the tree");
    let dir = StoreDir::new(ours.store_dir.clone()).expect("a store dir");
    let missing = format!("{}/{}-missing", ours.store_dir, "0".repeat(32));
    let ctx = Ctx { dir, seeds, roots, missing, tree_nar };

    let started = Instant::now();
    let daemon = Daemon::armitage(&ours);
    let by_armitage = run_daemon(&daemon, &ours, &ctx);
    assert!(daemon.stop().success(), "armitage exits cleanly");
    let armitage_time = started.elapsed();

    empty_store_dir(Path::new(&ours.store_dir));
    let seeds = seed(&theirs, &nix);
    assert_eq!(seeds, ctx.seeds, "Nix 2.26 seeded both stores with the same paths");
    let started = Instant::now();
    let daemon = Daemon::nix(&theirs, &nix);
    let by_nix = run_daemon(&daemon, &theirs, &ctx);
    drop(daemon);
    eprintln!("script run in {armitage_time:?} by armitage, {:?} by nix-daemon", started.elapsed());

    // Every operation the daemon serves, at every minor (BuildDerivation
    // would build: armitage does not build yet).
    for minor in MINORS {
        let sent: std::collections::BTreeSet<u64> = by_armitage[&minor].iter().map(|s| s.op).collect();
        let unsent: Vec<Op> =
            Op::ALL.into_iter().filter(|op| *op != Op::BuildDerivation && !sent.contains(&(*op as u64))).collect();
        assert!(unsent.is_empty(), "1.{minor}: the script does not send {unsent:?}");
    }
    let mut problems = Vec::new();
    for minor in MINORS {
        problems.extend(compare(minor, &by_armitage[&minor], &by_nix[&minor]));
    }
    // OPS_DIFF_DUMP=<dir>: every step of both runs, normalised, one file per daemon.
    if let Some(dir) = std::env::var_os("OPS_DIFF_DUMP") {
        for (who, runs) in [("armitage", &by_armitage), ("nix", &by_nix)] {
            let mut text = String::new();
            for (minor, steps) in runs.iter() {
                for step in steps {
                    text.push_str(&format!(
                        "== 1.{minor} {} after={:?}\n{}",
                        step.name,
                        step.after,
                        describe(&normalise(&step.name, &step.tokens))
                    ));
                }
            }
            std::fs::write(Path::new(&dir).join(format!("{who}.txt")), text).expect("write the dump");
        }
    }
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}
