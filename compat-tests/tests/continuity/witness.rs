//! The witness proxy as a build sees it: a fixed-output derivation whose
//! builder fetches with curl, built by a stock Nix 2.8 client through
//! `armitage daemon`, leaves a record naming its derivation and declared
//! hash, and the fetched bytes in the archive's CAS. Its output is kept
//! there too, found by the declared hash: with the output deleted and the
//! upstream gone, the build is made again from the witness without running
//! its builder (flat and recursive, sha256 and sha512); a tampered object
//! is refused by name and the builder runs instead.

use crate::origins::Origin;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use store::hash::{Algorithm, Hash};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, tool_available, write_file};
use witness_proxy::archive::Archive;
use witness_proxy::cas::ObjectId;

/// A store served by `armitage daemon`, a Nix 2.8 client, an origin's
/// folder, and a marker file each builder here appends a line to, so that
/// a test can tell whether a builder ran. Builds run as root
/// (`build-users-group =`: tests building with build users at once kill
/// each other's builders, see .config/nextest.toml). `None` (the test is
/// skipped) without Nix 2.8, curl or python3.
pub(crate) struct Setup {
    pub(crate) nix: Nix,
    pub(crate) store: TestStore,
    pub(crate) daemon: Daemon,
    curl: String,
    mkdir: String,
    pub(crate) served: PathBuf,
    marker: PathBuf,
}

impl Setup {
    pub(crate) fn new() -> Option<Setup> {
        Self::with_armitage_toml("")
    }

    /// As [`Setup::new`], with `toml` as the daemon's armitage.toml.
    pub(crate) fn with_armitage_toml(toml: &str) -> Option<Setup> {
        Self::with_confs("", toml)
    }

    /// As [`Setup::with_armitage_toml`], with `nix_conf` added to nix.conf.
    pub(crate) fn with_confs(nix_conf: &str, toml: &str) -> Option<Setup> {
        let nix = Nix::find(NixVersion::V2_8)?;
        if !tool_available("curl") || !tool_available("python3") {
            return None;
        }
        let store = TestStore::with_conf(&format!("build-users-group =\n{nix_conf}"));
        if !toml.is_empty() {
            write_file(store.armitage_config(), toml);
        }
        let served = store.work_dir("origin");
        let marker = store.work_dir("runs").join("builder-runs");
        std::fs::write(&marker, "").unwrap();
        let daemon = Daemon::armitage(&store);
        let which = |tool: &str| line(run(Command::new("sh").args(["-c", &format!("command -v {tool}")])));
        let (curl, mkdir) = (which("curl"), which("mkdir"));
        Some(Setup { nix, store, daemon, curl, mkdir, served, marker })
    }

    /// A fixed-output derivation named `name` whose builder notes that it
    /// ran, then runs `fetch` (a shell command without `PATH`: `{curl}` and
    /// `{mkdir}` name the host's; the proxy variables must be set).
    pub(crate) fn fod(&self, name: &str, mode: &str, hash: &Hash, fetch: &str) -> PathBuf {
        self.fod_expr(name, mode, hash, fetch, false)
    }

    /// As [`Setup::fod`], with an input: a derivation `tool` (named
    /// `{name}-tool`, its builder noting that it ran too).
    fn fod_with_input(&self, name: &str, mode: &str, hash: &Hash, fetch: &str) -> PathBuf {
        self.fod_expr(name, mode, hash, fetch, true)
    }

    fn fod_expr(&self, name: &str, mode: &str, hash: &Hash, fetch: &str, input: bool) -> PathBuf {
        let marker = self.marker.display();
        let script = format!(
            "echo {name} >> {marker}; test -n \\\"$http_proxy\\\" && {fetch}",
            fetch = fetch.replace("{curl}", &self.curl).replace("{mkdir}", &self.mkdir),
        );
        let (tool, tool_attr) = if input {
            let tool = format!(
                r#"tool = derivation {{
    name = "{name}-tool";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo {name}-tool >> {marker}; echo tool > $out" ];
  }};"#
            );
            (tool, "tool = tool;")
        } else {
            (String::new(), "")
        };
        let expr = self.store.work_dir("expr").join(format!("{name}.nix"));
        write_file(
            &expr,
            format!(
                r#"let
  {tool}
in derivation {{
  name = "{name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "{script}" ];
  outputHashMode = "{mode}";
  outputHashAlgo = "{algo}";
  outputHash = "{hash}";
  {tool_attr}
}}"#,
                algo = hash.algorithm(),
                hash = hash.to_base16(),
            ),
        );
        expr
    }

    pub(crate) fn client(&self, tool: &str) -> Command {
        self.daemon.client(&self.store, &self.nix, tool)
    }

    /// `nix-build --no-out-link`, whatever its outcome.
    pub(crate) fn build(&self, expr: &Path) -> Output {
        output(self.client("nix-build").arg(expr).arg("--no-out-link"))
    }

    /// A build that must succeed: its output path and the client's stderr.
    pub(crate) fn build_ok(&self, expr: &Path) -> (String, String) {
        let out = self.build(expr);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "nix-build {} failed:\n{stderr}", expr.display());
        (line(String::from_utf8(out.stdout).unwrap()), stderr)
    }

    pub(crate) fn drv(&self, expr: &Path) -> String {
        line(run(self.client("nix-instantiate").arg(expr)))
    }

    pub(crate) fn delete(&self, path: &str) {
        run(self.client("nix-store").args(["--delete", path]));
        assert!(!Path::new(path).exists(), "{path} was deleted");
    }

    /// How many times the builder of derivation `name` ran.
    pub(crate) fn builder_runs(&self, name: &str) -> usize {
        std::fs::read_to_string(&self.marker).unwrap().lines().filter(|l| *l == name).count()
    }

    pub(crate) fn archive(&self) -> Archive {
        Archive::open(self.store.state_dir.join("witness")).expect("the daemon's witness archive")
    }

    /// Where the daemon's witness keeps object `id`.
    fn object_path(&self, id: &ObjectId) -> PathBuf {
        self.store.state_dir.join("witness/cas").join(id.to_hex())
    }
}

/// 200 kB that are not text.
pub(crate) fn payload() -> Vec<u8> {
    (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect()
}

/// The client was told where the output came from.
pub(crate) fn assert_copied_from_witness(stderr: &str, out: &str) {
    assert!(
        stderr.contains(&format!("copying '{out}' from the witness archive")),
        "the client is told the output came from the witness:\n{stderr}"
    );
}

#[test]
fn a_fixed_output_fetch_is_witnessed_with_its_derivation_and_bytes() {
    let Some(s) = Setup::new() else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let hash = Algorithm::Sha256.digest(&payload);
    // The builder reads the proxy from the variables the daemon sets; the
    // origin is plain HTTP, so no certificate is involved here.
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let expr = s.fod("payload.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}"));
    let (out, _) = s.build_ok(&expr);
    assert_eq!(std::fs::read(&out).unwrap(), payload, "the build's output is what the origin served");
    let drv = s.drv(&expr);

    let archive = s.archive();
    let records = archive.records_for_hash(&hash).expect("records by declared hash");
    assert_eq!(records.len(), 1, "one exchange for the one fetch: {records:#?}");
    let record = &records[0].record;
    assert_eq!(record.url, url);
    assert_eq!((record.method.as_str(), record.status), ("GET", Some(200)));
    let build = record.build.as_ref().expect("the record names its build");
    assert_eq!(build.drv, drv);
    assert_eq!((build.output.as_str(), build.output_hash_mode.as_str()), ("out", "flat"));
    assert_eq!(build.parsed_output_hash().unwrap(), hash);
    let body = record.body.as_ref().expect("the body was received whole");
    assert_eq!((body.size, body.sha256.as_str()), (payload.len() as u64, hash.to_base16().as_str()));
    let id = body.sha256.parse().unwrap();
    let mut kept = Vec::new();
    archive.cas().get(&id).unwrap().expect("the body is in the CAS").read_to_end(&mut kept).unwrap();
    assert_eq!(kept, payload);
    assert!(archive.verify().unwrap().is_ok());
}

/// The witness's settings live in armitage.toml: the archive goes where
/// it says, and stock clients, which read nix.conf, have nothing to warn
/// about.
#[test]
fn witness_settings_are_armitages_own_and_stock_clients_do_not_warn() {
    let dir = testkit::TempDir::new();
    let archive_dir = dir.path().join("archive");
    let toml = format!("[witness]\nenabled = true\ndir = \"{}\"\n", archive_dir.display());
    let Some(s) = Setup::with_armitage_toml(&toml) else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let hash = Algorithm::Sha256.digest(&payload);
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let expr = s.fod("configured.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}"));
    let (_, stderr) = s.build_ok(&expr);
    let ping = output(s.client("nix").args(["store", "ping"]));
    for text in [stderr, String::from_utf8_lossy(&ping.stderr).into_owned()] {
        assert!(!text.contains("unknown setting"), "a stock client warned:\n{text}");
    }
    let archive = Archive::open(&archive_dir).unwrap();
    assert_eq!(archive.records_for_hash(&hash).unwrap().len(), 1, "the record is in the configured archive");
    assert!(!s.store.state_dir.join("witness").exists(), "nothing in the default place");
}

/// A flat output built through the origin, deleted, and made again with
/// the origin gone: same path, same bytes, the builder did not run again,
/// no new exchange.
fn flat_output_made_again_without_the_origin(algorithm: Algorithm) {
    let Some(s) = Setup::new() else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let hash = algorithm.digest(&payload);
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let expr = s.fod("payload.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}"));
    let (out, _) = s.build_ok(&expr);
    assert_eq!(s.builder_runs("payload.bin"), 1);
    let archive = s.archive();
    let kept = archive.output_for(&hash, witness_proxy::archive::OutputMode::Flat).unwrap();
    assert_eq!(kept, Some(ObjectId::of(&payload)), "the output is kept under its bytes' sha256");
    if algorithm == Algorithm::Sha256 {
        assert_eq!(kept.unwrap().to_hash(), hash, "with sha256 the object's name is the declared hash");
    }

    s.delete(&out);
    drop(origin);
    let (again, stderr) = s.build_ok(&expr);
    assert_eq!(again, out);
    assert_eq!(std::fs::read(&again).unwrap(), payload, "the same bytes");
    assert_eq!(s.builder_runs("payload.bin"), 1, "the builder did not run again:\n{stderr}");
    assert_copied_from_witness(&stderr, &out);
    assert_eq!(archive.records_for_hash(&hash).unwrap().len(), 1, "no new exchange");
    let verified = line(run(s.client("nix-store").args(["--verify-path", &out])));
    assert_eq!(verified, "");
    let info = line(run(s.client("nix-store").args(["--query", "--deriver", &out])));
    assert_eq!(info, s.drv(&expr));
}

#[test]
fn a_flat_output_is_made_again_from_the_witness_with_its_origin_gone() {
    flat_output_made_again_without_the_origin(Algorithm::Sha256);
}

#[test]
fn a_flat_output_declared_by_sha512_is_found_through_the_output_index() {
    flat_output_made_again_without_the_origin(Algorithm::Sha512);
}

#[test]
fn a_recursive_output_is_made_again_from_its_nar_in_the_witness() {
    let Some(s) = Setup::new() else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    // The declared hash: the NAR's sha256 of the tree the builder makes,
    // made here first.
    let tree = s.store.work_dir("expected-tree");
    std::fs::write(tree.join("payload.bin"), &payload).unwrap();
    let (hash, _) = local_store::nar_fs::hash_path(&tree, Algorithm::Sha256).unwrap();
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let fetch = format!("{{mkdir}} $out && {{curl}} --fail -sS -o $out/payload.bin {url}");
    let expr = s.fod("payload-tree", "recursive", &hash, &fetch);
    let (out, _) = s.build_ok(&expr);
    assert_eq!(std::fs::read(Path::new(&out).join("payload.bin")).unwrap(), payload);
    assert_eq!(s.builder_runs("payload-tree"), 1);
    let archive = s.archive();
    let kept = archive.output_for(&hash, witness_proxy::archive::OutputMode::Recursive).unwrap();
    assert_eq!(kept.map(|id| id.to_hash()), Some(hash), "the NAR is kept, named by the declared hash");

    s.delete(&out);
    drop(origin);
    let (again, stderr) = s.build_ok(&expr);
    assert_eq!(again, out);
    assert_eq!(std::fs::read(Path::new(&again).join("payload.bin")).unwrap(), payload);
    assert_eq!(s.builder_runs("payload-tree"), 1, "the builder did not run again:\n{stderr}");
    assert_copied_from_witness(&stderr, &out);
    assert_eq!(local_store::nar_fs::hash_path(Path::new(&again), Algorithm::Sha256).unwrap().0, hash);
    assert_eq!(line(run(s.client("nix-store").args(["--verify-path", &out]))), "");
}

#[test]
fn the_copy_from_the_witness_needs_none_of_the_derivations_inputs() {
    let Some(s) = Setup::new() else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let hash = Algorithm::Sha256.digest(&payload);
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let expr = s.fod_with_input("payload.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}"));
    let (out, _) = s.build_ok(&expr);
    let tool = line(run(s.client("nix-build").arg(&expr).args(["-A", "tool", "--no-out-link"])));
    assert_eq!((s.builder_runs("payload.bin"), s.builder_runs("payload.bin-tool")), (1, 1));

    s.delete(&out);
    s.delete(&tool);
    drop(origin);
    let (again, stderr) = s.build_ok(&expr);
    assert_eq!(again, out);
    assert_eq!(std::fs::read(&again).unwrap(), payload);
    assert_eq!(s.builder_runs("payload.bin-tool"), 1, "the input was not built again:\n{stderr}");
    assert_eq!(s.builder_runs("payload.bin"), 1, "the builder did not run again:\n{stderr}");
    assert!(!Path::new(&tool).exists(), "the input stays missing");
    assert_copied_from_witness(&stderr, &out);
}

#[test]
fn a_tampered_object_is_refused_by_name_and_the_builder_runs_instead() {
    let Some(s) = Setup::new() else { return };
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let port = origin.port;
    let hash = Algorithm::Sha256.digest(&payload);
    let url = format!("http://127.0.0.1:{port}/payload.bin");
    let expr = s.fod("payload.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}"));
    let (out, _) = s.build_ok(&expr);
    assert_eq!(s.builder_runs("payload.bin"), 1);

    s.delete(&out);
    drop(origin);
    let id = ObjectId::from_digest(&hash).unwrap();
    let object = s.object_path(&id);
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut tampered = payload.clone();
    tampered[1000] ^= 1;
    std::fs::write(&object, &tampered).unwrap();

    let failed = s.build(&expr);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "the builder cannot fetch with the origin gone:\n{stderr}");
    assert_eq!(s.builder_runs("payload.bin"), 2, "the builder ran instead:\n{stderr}");
    // The replay of the URL broke off at the tampered bytes: what the
    // builder wrote stays where it wrote it (outside a sandbox, at the
    // output path), invalid, as CppNix leaves a failed build's output.
    let valid = output(s.client("nix-store").args(["--check-validity", &out]));
    assert!(!valid.status.success(), "{out} is not valid after the failed build");
    let refused = format!("object {id} is tampered");
    assert!(stderr.contains(&refused), "the client is told which object was refused:\n{stderr}");
    let warning = stderr.lines().find(|l| l.contains(&refused)).unwrap();
    assert!(warning.contains(&out) && warning.ends_with("building it instead"), "one line: {warning}");
    assert!(s.daemon.log().contains(&refused), "the daemon's log names it:\n{}", s.daemon.log());

    // With the origin back, the build fetches again, and the witness has
    // good bytes under the name once more.
    let _origin = Origin::serve_on(&s.served, port);
    let (again, _) = s.build_ok(&expr);
    assert_eq!(again, out);
    assert_eq!(std::fs::read(&again).unwrap(), payload);
    assert_eq!(s.builder_runs("payload.bin"), 3);
    assert!(s.archive().cas().verify(&id).is_ok(), "the object is whole again");
}
