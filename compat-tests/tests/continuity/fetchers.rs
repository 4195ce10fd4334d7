//! The fetchers builds use, against an HTTPS origin on the loopback that
//! plays the public internet: its certificate is issued by a test CA that
//! the daemon trusts through nix.conf's `ssl-cert-file` (the daemon runs
//! without `NIX_SSL_CERT_FILE`/`SSL_CERT_FILE`, which would come first).
//! Builds are sandboxed, their builders get the host's curl, tar and git
//! through `sandbox-paths`, and a stock Nix 2.8 client asks
//! `armitage daemon` for them.
//!
//! Each fetcher is witnessed (records naming the derivation, the origin's
//! certificate chain and the body), then with the origin stopped and the
//! output deleted the build is made again from the witness's CAS without
//! its builder, and the archive verifies:
//! - curl with `--insecure`, as nixpkgs' fetchurl does when the hash is known;
//! - curl verifying the certificate: it trusts the witness CA through
//!   the bundle the daemon mounts;
//! - `builtin:fetchurl` (`<nix/fetchurl.nix>` as Nix ships it);
//! - a tarball unpacked with tar into a recursive output (fetchzip's way);
//! - `git clone` over smart HTTP (`git http-backend` behind the origin),
//!   which verifies the certificate, as nixpkgs' fetchgit always does.
//!
//! Then the faults: `kill -9` of the daemon while a body is on its way
//! leaves neither a record claiming it nor an object holding part of it,
//! and a builder that goes around the proxy cannot reach the origin.

use crate::origins::{HttpsOrigin, ORIGIN_CERT_NAME, TEST_CA_NAME, TestCa};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use store::hash::{Algorithm, Hash};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, tool_available, write_file};
use witness_proxy::archive::{Archive, StoredRecord};
use witness_proxy::cas::ObjectId;

/// The variables that would name the daemon's upstream roots before
/// nix.conf's `ssl-cert-file` (and that a developer's shell often sets).
const CA_ENV: [&str; 2] = ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"];

/// `armitage daemon` on a store, started without [`CA_ENV`] so that it
/// trusts what nix.conf says (testkit's `Daemon` passes the test's own
/// environment on); `n` numbers its log (a restarted daemon keeps the
/// first one's).
fn start_daemon(store: &TestStore, n: u32) -> Daemon {
    Daemon::armitage_with(store, &format!("armitage-daemon-{n}.log"), |cmd| {
        for var in CA_ENV {
            cmd.env_remove(var);
        }
    })
}

/// A sandboxed store (`build-users-group =`: builds run as root, see
/// .config/nextest.toml) trusting a test CA through `ssl-cert-file`, its
/// daemon, the HTTPS origin's folder, and a marker file each shell
/// builder appends its name to (its folder is in `sandbox-paths`), so that
/// a test can tell whether a builder ran. `None` (the test is skipped)
/// without Nix 2.8, curl, git, tar, gzip or python3.
struct Setup {
    nix: Nix,
    store: TestStore,
    daemon: Option<Daemon>,
    tls: TestCa,
    served: PathBuf,
    origin_dir: PathBuf,
    marker: PathBuf,
    /// `PATH` for builders: the folders of the host's tools.
    path: String,
}

impl Setup {
    fn new() -> Option<Setup> {
        let nix = Nix::find(NixVersion::V2_8)?;
        for tool in ["curl", "git", "tar", "gzip", "python3"] {
            if !tool_available(tool) {
                return None;
            }
        }
        let store = TestStore::new();
        let tls = TestCa::make(&store.work_dir("tls"));
        let served = store.work_dir("served");
        let origin_dir = store.work_dir("origin");
        let runs = store.work_dir("runs");
        let marker = runs.join("builder-runs");
        std::fs::write(&marker, "").unwrap();

        // The host's tools, the folders they are in, and git's helpers
        // (git-remote-https).
        let which = |tool: &str| line(run(Command::new("sh").args(["-c", &format!("command -v {tool}")])));
        let mut bins: Vec<PathBuf> = Vec::new();
        for tool in ["sh", "curl", "git", "tar", "gzip", "mkdir", "rm"] {
            let dir = Path::new(&which(tool)).parent().unwrap().to_owned();
            if !bins.contains(&dir) {
                bins.push(dir);
            }
        }
        let path = bins.iter().map(|b| b.display().to_string()).collect::<Vec<_>>().join(":");
        let git_exec = PathBuf::from(line(run(Command::new("git").arg("--exec-path"))));
        let conf = format!(
            "build-users-group =\nsandbox = true\nsandbox-paths = {}\nssl-cert-file = {}\n",
            sandbox_paths(&bins.iter().chain([&git_exec, &runs]).cloned().collect::<Vec<_>>()),
            tls.ca_pem.display()
        );
        let nix_conf = store.conf_dir.join("nix.conf");
        let mut text = std::fs::read_to_string(&nix_conf).unwrap();
        text.push_str(&conf);
        std::fs::write(&nix_conf, text).unwrap();
        let daemon = Some(start_daemon(&store, 1));
        Some(Setup { nix, store, daemon, tls, served, origin_dir, marker, path })
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon is running")
    }

    /// The HTTPS origin, serving [`Setup::served`].
    fn origin(&self) -> HttpsOrigin {
        HttpsOrigin::serve(&self.served, &self.tls, &self.origin_dir)
    }

    fn origin_log(&self) -> String {
        std::fs::read_to_string(self.origin_dir.join("origin.log")).unwrap_or_default()
    }

    /// A fixed-output derivation named `name` whose builder (`/bin/sh -c`,
    /// with [`Setup::path`]) notes that it ran, then runs `script`.
    fn fod(&self, name: &str, mode: &str, hash: &Hash, script: &str) -> PathBuf {
        let script = format!("echo {name} >> {}; {script}", self.marker.display());
        self.expr(
            name,
            &format!(
                r#"derivation {{
  name = "{name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" {script} ];
  PATH = "{path}";
  outputHashMode = "{mode}";
  outputHashAlgo = "{algo}";
  outputHash = "{hash}";
}}"#,
                script = nix_string(&script),
                path = self.path,
                algo = hash.algorithm(),
                hash = hash.to_base16(),
            ),
        )
    }

    /// `text` as the file `<name>.nix`.
    fn expr(&self, name: &str, text: &str) -> PathBuf {
        let expr = self.store.work_dir("expr").join(format!("{name}.nix"));
        write_file(&expr, text);
        expr
    }

    fn client(&self, tool: &str) -> Command {
        let daemon = self.daemon();
        let mut cmd = self.nix.command(tool);
        self.store.client_env(&mut cmd);
        cmd.env("NIX_REMOTE", "daemon").env("NIX_DAEMON_SOCKET_PATH", &daemon.socket);
        cmd
    }

    /// `nix-build --no-out-link`, whatever its outcome.
    fn build(&self, expr: &Path) -> Output {
        output(self.client("nix-build").arg(expr).arg("--no-out-link"))
    }

    /// A build that must succeed: its output path and the client's stderr.
    fn build_ok(&self, expr: &Path) -> (String, String) {
        let out = self.build(expr);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "nix-build {} failed:\n{stderr}\ndaemon log:\n{}\norigin log:\n{}",
            expr.display(),
            self.daemon().log(),
            self.origin_log()
        );
        (line(String::from_utf8(out.stdout).unwrap()), stderr)
    }

    fn drv(&self, expr: &Path) -> String {
        line(run(self.client("nix-instantiate").arg(expr)))
    }

    fn delete(&self, path: &str) {
        run(self.client("nix-store").args(["--delete", path]));
        assert!(!Path::new(path).exists(), "{path} was deleted");
    }

    /// How many times the builder of derivation `name` ran.
    fn builder_runs(&self, name: &str) -> usize {
        std::fs::read_to_string(&self.marker).unwrap().lines().filter(|l| *l == name).count()
    }

    fn archive(&self) -> Archive {
        Archive::open(self.store.state_dir.join("witness")).expect("the daemon's witness archive")
    }

    /// The records of derivation `drv`'s exchanges with `url`; there is at
    /// least one, and each is a whole 200 from the origin (the test CA's
    /// chain seen by the proxy).
    fn witnessed(&self, drv: &str, method: &str, url: &str) -> Vec<StoredRecord> {
        let all = self.archive().all_records().unwrap();
        let records: Vec<StoredRecord> =
            all.iter().filter(|r| r.record.url == url && r.record.method == method).cloned().collect();
        assert!(!records.is_empty(), "a record of {method} {url} among {all:#?}");
        for r in &records {
            let record = &r.record;
            let build = record.build.as_ref().unwrap_or_else(|| panic!("the record names its build: {record:#?}"));
            assert_eq!(build.drv, drv, "the record names the derivation");
            assert_eq!(build.network.as_deref(), Some("witnessed"), "a sandboxed build has its own namespace");
            assert_eq!(record.status, Some(200), "{record:#?}");
            assert!(record.error.is_none() && record.body.is_some(), "the body was received whole: {record:#?}");
            let leaf = record.tls_chain.first().unwrap_or_else(|| panic!("the origin's chain: {record:#?}"));
            assert!(
                leaf.subject.contains(ORIGIN_CERT_NAME) && leaf.issuer.contains(TEST_CA_NAME),
                "the proxy talked to the origin, whose certificate the test CA issued: {leaf:#?}"
            );
        }
        records
    }

    /// Deletes `out` (built from `expr`), stops the origin and builds
    /// again: the same path, made from the witness archive without the
    /// builder (`builder`, when it is a shell builder that notes its runs),
    /// no new exchange, and the archive verifies. Returns the rebuild's
    /// output.
    fn made_again_without_the_origin(
        &self,
        origin: HttpsOrigin,
        expr: &Path,
        out: &str,
        builder: Option<&str>,
    ) -> String {
        let runs = builder.map(|name| self.builder_runs(name));
        let records = self.archive().all_records().unwrap().len();
        self.delete(out);
        let port = origin.port;
        drop(origin);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the origin is gone");

        let (again, stderr) = self.build_ok(expr);
        assert_eq!(again, out, "the same output path");
        if let (Some(name), Some(runs)) = (builder, runs) {
            assert_eq!(self.builder_runs(name), runs, "the builder did not run again:\n{stderr}");
        }
        assert!(
            stderr.contains(&format!("copying '{out}' from the witness archive")),
            "the client is told the output came from the witness:\n{stderr}"
        );
        let archive = self.archive();
        assert_eq!(archive.all_records().unwrap().len(), records, "no new exchange");
        let report = archive.verify().unwrap();
        assert!(report.is_ok(), "the archive verifies: {report:#?}");
        assert!(report.records_checked >= 1 && report.objects_checked >= 1, "{report:#?}");
        assert_eq!(line(run(self.client("nix-store").args(["--verify-path", out]))), "");
        again
    }
}

/// `sandbox-paths` giving builders the host's programs and the libraries
/// they load (whichever of /bin, /usr, /lib, /lib64 and /etc/alternatives
/// exist, links resolved: `/bin=/usr/bin`), and `extra` folders not under
/// those, each at its own path.
fn sandbox_paths(extra: &[PathBuf]) -> String {
    let mut entries: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in ["/bin", "/usr", "/lib", "/lib64", "/etc/alternatives"] {
        if let Ok(real) = std::fs::canonicalize(p) {
            entries.push((PathBuf::from(p), real));
        }
    }
    for p in extra {
        let covered = entries.iter().any(|(target, real)| p.starts_with(target) || p.starts_with(real));
        if !covered {
            entries.push((p.clone(), std::fs::canonicalize(p).unwrap()));
        }
    }
    entries
        .iter()
        .map(|(target, real)| {
            if target == real {
                target.display().to_string()
            } else {
                format!("{}={}", target.display(), real.display())
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` as a Nix string literal.
fn nix_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace("${", "\\${"))
}

/// `len` bytes that are not text, different for each `seed`.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A tree with a plain file, an executable one and a subfolder.
fn make_source_tree(dir: &Path) {
    write_file(dir.join("README"), "fetched over HTTPS through the witness\n");
    write_file(dir.join("data/payload.bin"), payload(7, 100_000));
    let script = dir.join("bin/run.sh");
    write_file(&script, "#!/bin/sh\necho hello\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A flat output fetched with curl from the HTTPS origin (`curl_flags`
/// added), witnessed, then made again from the CAS with the origin gone.
fn curl_flat_fetch(name: &str, curl_flags: &str) {
    let Some(s) = Setup::new() else { return };
    let payload = payload(1, 300_000);
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = s.origin();
    let url = origin.url("/payload.bin");
    let hash = Algorithm::Sha256.digest(&payload);
    let expr = s.fod(name, "flat", &hash, &format!("curl -fsSL {curl_flags} -o $out {url}"));
    let (out, _) = s.build_ok(&expr);
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    assert_eq!(s.builder_runs(name), 1);

    let records = s.witnessed(&s.drv(&expr), "GET", &url);
    assert_eq!(records.len(), 1, "one exchange: {records:#?}");
    let body = records[0].record.body.as_ref().unwrap();
    assert_eq!((body.size, body.sha256.as_str()), (payload.len() as u64, hash.to_base16().as_str()));

    let again = s.made_again_without_the_origin(origin, &expr, &out, Some(name));
    assert_eq!(std::fs::read(again).unwrap(), payload);
}

/// nixpkgs' fetchurl passes `--insecure` when it knows the hash.
#[test]
fn an_insecure_curl_fetch_over_https_is_witnessed_and_made_again_without_the_origin() {
    curl_flat_fetch("insecure-curl.bin", "--insecure");
}

/// Without `--insecure` the builder's curl checks the proxy's certificate
/// for 127.0.0.1, issued by the witness CA: it trusts it through the
/// bundle the daemon mounts at /etc/ssl/certs/ca-certificates.crt and
/// names in `SSL_CERT_FILE`; the proxy trusts the origin through the test
/// CA of `ssl-cert-file`.
#[test]
fn a_verifying_curl_fetch_over_https_trusts_the_witness_ca_and_is_made_again() {
    curl_flat_fetch("verifying-curl.bin", "");
}

#[test]
fn builtin_fetchurl_over_https_is_witnessed_and_made_again_without_the_origin() {
    let Some(s) = Setup::new() else { return };
    let payload = payload(2, 250_000);
    std::fs::write(s.served.join("release.bin"), &payload).unwrap();
    let origin = s.origin();
    let url = origin.url("/release.bin");
    let hash = Algorithm::Sha256.digest(&payload);
    let expr = s.expr(
        "builtin-fetchurl",
        &format!(r#"import <nix/fetchurl.nix> {{ url = "{url}"; sha256 = "{}"; }}"#, hash.to_nix32()),
    );
    let drv = s.drv(&expr);
    let shown = run(s.client("nix").args(["show-derivation", &drv]));
    assert!(shown.contains("\"builder\": \"builtin:fetchurl\""), "a builtin:fetchurl derivation:\n{shown}");
    let (out, _) = s.build_ok(&expr);
    assert_eq!(std::fs::read(&out).unwrap(), payload);

    let records = s.witnessed(&drv, "GET", &url);
    assert_eq!(records.len(), 1, "one exchange: {records:#?}");
    assert_eq!(records[0].record.body.as_ref().unwrap().sha256, hash.to_base16());

    let again = s.made_again_without_the_origin(origin, &expr, &out, None);
    assert_eq!(std::fs::read(again).unwrap(), payload);
}

/// fetchzip's way: the tarball fetched (`--insecure`, as fetchurl) and
/// unpacked by the host's tar into the output, declared by its NAR hash.
#[test]
fn a_tarball_unpacked_into_a_recursive_output_is_witnessed_and_made_again_without_the_origin() {
    let Some(s) = Setup::new() else { return };
    let tree = s.store.work_dir("source");
    make_source_tree(&tree);
    let tarball = s.served.join("source.tar.gz");
    run(Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(&tree).arg("."));
    let (hash, _) = local_store::nar_fs::hash_path(&tree, Algorithm::Sha256).unwrap();
    let origin = s.origin();
    let url = origin.url("/source.tar.gz");
    let script = format!(
        "mkdir $out && curl -fsSL --insecure -o source.tar.gz {url} && tar -xzf source.tar.gz -C $out --no-same-owner"
    );
    let expr = s.fod("source-tree", "recursive", &hash, &script);
    let (out, _) = s.build_ok(&expr);
    assert_eq!(std::fs::read(Path::new(&out).join("data/payload.bin")).unwrap(), payload(7, 100_000));
    assert_eq!(s.builder_runs("source-tree"), 1);

    let records = s.witnessed(&s.drv(&expr), "GET", &url);
    let tarball_hash = Algorithm::Sha256.digest(std::fs::read(&tarball).unwrap());
    assert_eq!(records[0].record.body.as_ref().unwrap().sha256, tarball_hash.to_base16(), "the tarball's bytes");
    let kept = s.archive().output_for(&hash, witness_proxy::archive::OutputMode::Recursive).unwrap();
    assert_eq!(kept.map(|id| id.to_hash()), Some(hash), "the output's NAR is kept");

    let again = s.made_again_without_the_origin(origin, &expr, &out, Some("source-tree"));
    assert_eq!(local_store::nar_fs::hash_path(Path::new(&again), Algorithm::Sha256).unwrap().0, hash);
    assert!(Path::new(&again).join("bin/run.sh").metadata().unwrap().permissions().mode() & 0o111 != 0);
}

/// fetchgit's way: `git clone` over smart HTTP, which always verifies the
/// certificate (git reads `GIT_SSL_CAINFO`, the daemon's bundle), and the
/// checkout without `.git` as a recursive output.
#[test]
fn a_git_clone_over_smart_http_is_witnessed_and_made_again_without_the_origin() {
    let Some(s) = Setup::new() else { return };
    let tree = s.store.work_dir("source");
    make_source_tree(&tree);
    let repo = s.served.join("git/repo.git");
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.env("HOME", s.store.work_dir("git-home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
            .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
            .args(["-c", "user.name=Witness Test", "-c", "user.email=witness@test.invalid"])
            .arg(format!("--git-dir={}", repo.display()))
            .arg(format!("--work-tree={}", tree.display()))
            .args(args);
        run(&mut cmd)
    };
    run(Command::new("git").args(["init", "--quiet", "--bare"]).arg(&repo));
    git(&["add", "--all"]);
    git(&["commit", "--quiet", "-m", "the tree the build fetches"]);
    let (hash, _) = local_store::nar_fs::hash_path(&tree, Algorithm::Sha256).unwrap();

    let origin = s.origin();
    let url = origin.url("/git/repo.git");
    let script = format!("git clone --quiet {url} $out && rm -rf $out/.git");
    let expr = s.fod("git-checkout", "recursive", &hash, &script);
    let (out, _) = s.build_ok(&expr);
    assert_eq!(std::fs::read(Path::new(&out).join("data/payload.bin")).unwrap(), payload(7, 100_000));
    assert_eq!(s.builder_runs("git-checkout"), 1);

    // The smart protocol's two exchanges, both for this derivation.
    let drv = s.drv(&expr);
    s.witnessed(&drv, "GET", &format!("{url}/info/refs?service=git-upload-pack"));
    s.witnessed(&drv, "POST", &format!("{url}/git-upload-pack"));

    let again = s.made_again_without_the_origin(origin, &expr, &out, Some("git-checkout"));
    assert_eq!(local_store::nar_fs::hash_path(Path::new(&again), Algorithm::Sha256).unwrap().0, hash);
}

/// Files in the archive's temp folder and their sizes.
fn temp_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(|e| e.ok()).filter_map(|e| Some((e.path(), e.metadata().ok()?.len()))).collect()
}

/// The daemon killed while the proxy writes a body to the CAS: the client
/// fails, and the restarted daemon's archive has no record claiming the
/// body, no object holding part of it (the half-written temp file is no
/// object), and verifies; with the origin whole again the build succeeds.
#[test]
fn kill_9_of_the_daemon_mid_download_leaves_no_half_record_and_no_half_object() {
    let Some(mut s) = Setup::new() else { return };
    let payload = payload(3, 24 << 20);
    std::fs::write(s.served.join("big.bin"), &payload).unwrap();
    std::fs::write(s.served.join(".trickle"), "").unwrap();
    let origin = s.origin();
    let url = origin.url("/slow/big.bin");
    let hash = Algorithm::Sha256.digest(&payload);
    let expr = s.fod("big.bin", "flat", &hash, &format!("curl -fsSL --insecure -o $out {url}"));
    let drv = s.drv(&expr);
    let out = line(run(s.client("nix-store").args(["--query", "--outputs", &drv])));

    let client_log = s.store.work_dir("client").join("nix-build.log");
    let mut client = s
        .client("nix-build")
        .arg(&expr)
        .arg("--no-out-link")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&client_log).unwrap())
        .spawn()
        .unwrap();
    // The body is on its way into the CAS: a temp file past 1 MiB.
    let tmp = s.store.state_dir.join("witness/tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !temp_files(&tmp).iter().any(|(_, len)| *len >= 1 << 20) {
        if let Ok(Some(status)) = client.try_wait() {
            panic!("the build ended ({status}) before the download was under way:\n{}", s.daemon().log());
        }
        assert!(Instant::now() < deadline, "no body reached the CAS's temp folder:\n{}", s.daemon().log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = s.daemon.take().unwrap().kill_9();
    assert!(!log.contains("panicked"), "the daemon panicked before it was killed:\n{log}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            panic!("the client still runs 60 s after the daemon was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let client_stderr = std::fs::read_to_string(&client_log).unwrap();
    assert!(status.code().is_some_and(|c| c != 0), "the client failed with an error ({status}):\n{client_stderr}");
    assert!(client_stderr.contains("error:"), "the client says why:\n{client_stderr}");

    s.daemon = Some(start_daemon(&s.store, 2));
    let archive = s.archive();
    let report = archive.verify().unwrap();
    assert!(report.is_ok(), "the archive verifies after the kill: {report:#?}");
    let claims: Vec<StoredRecord> =
        archive.records_for_url(&url).unwrap().into_iter().filter(|r| r.record.body.is_some()).collect();
    assert!(claims.is_empty(), "no record claims the body: {claims:#?}");
    let objects = archive.cas().list().unwrap();
    assert!(!objects.contains(&ObjectId::of(&payload)), "the body is not in the CAS");
    let left = temp_files(&tmp);
    let partial: Vec<&(PathBuf, u64)> = left.iter().filter(|(_, len)| *len >= 1 << 20).collect();
    assert!(!partial.is_empty(), "the half-written body is still a temp file: {left:?}");
    for (path, len) in &partial {
        assert!(*len < payload.len() as u64, "{} holds part of the body", path.display());
        let bytes = std::fs::read(path).unwrap();
        assert!(!objects.contains(&ObjectId::of(&bytes)), "the temp file {} counts as no object", path.display());
    }
    let in_cas = std::fs::read_dir(s.store.state_dir.join("witness/cas")).unwrap().count();
    assert_eq!(in_cas, objects.len(), "every file in the CAS is an object, and each verified");
    assert!(!Path::new(&out).exists(), "no output");

    // The origin whole again: the build goes through and is witnessed
    // once, completely.
    std::fs::remove_file(s.served.join(".trickle")).unwrap();
    let (built, _) = s.build_ok(&expr);
    assert_eq!(built, out);
    assert_eq!(Algorithm::Sha256.digest(std::fs::read(&built).unwrap()), hash);
    let whole: Vec<StoredRecord> =
        archive.records_for_url(&url).unwrap().into_iter().filter(|r| r.record.body.is_some()).collect();
    assert_eq!(whole.len(), 1, "one whole exchange: {whole:#?}");
    assert_eq!(whole[0].record.body.as_ref().unwrap().sha256, hash.to_base16());
    assert!(archive.verify().unwrap().is_ok());
    drop(origin);
}

/// Under `network = witnessed` a sandboxed fixed-output build's only way
/// out is the proxy: curl told to ignore the proxy variables connects to
/// nothing, the build fails, and the origin never sees the request.
#[test]
fn a_builder_that_bypasses_the_proxy_cannot_reach_the_origin() {
    let Some(s) = Setup::new() else { return };
    // A daemon that cannot make network namespaces says so and keeps the
    // host's network for fixed-output builds.
    if s.daemon().log().contains("keep the host's network") {
        let why = format!("this daemon cannot make network namespaces:\n{}", s.daemon().log());
        assert!(std::env::var_os("CI").is_none(), "network = witnessed is required but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let payload = payload(4, 10_000);
    std::fs::write(s.served.join("direct.bin"), &payload).unwrap();
    let origin = s.origin();
    let url = origin.url("/direct.bin");
    // The origin answers a fetch from the host.
    run(Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "--noproxy", "*", "--cacert"])
        .arg(&s.tls.ca_pem)
        .arg(&url));
    assert!(s.origin_log().contains("GET /direct.bin"), "the origin logs requests:\n{}", s.origin_log());
    std::fs::write(s.origin_dir.join("origin.log"), "").unwrap();

    let hash = Algorithm::Sha256.digest(&payload);
    let expr = s.fod("bypass.bin", "flat", &hash, &format!("curl -fsSL --insecure --noproxy '*' -o $out {url}"));
    let failed = s.build(&expr);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "the builder reached the origin around the proxy:\n{stderr}");
    assert_eq!(s.builder_runs("bypass.bin"), 1, "the builder ran:\n{stderr}");
    let out = line(run(s.client("nix-store").args(["--query", "--outputs", &s.drv(&expr)])));
    assert!(!Path::new(&out).exists());
    assert!(!s.origin_log().contains("/direct.bin"), "the origin saw no request:\n{}", s.origin_log());
    let bodies: Vec<StoredRecord> =
        s.archive().records_for_url(&url).unwrap().into_iter().filter(|r| r.record.body.is_some()).collect();
    assert!(bodies.is_empty(), "nothing was fetched: {bodies:#?}");
}
