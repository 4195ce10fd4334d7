//! armitage with an `[s3]` bucket on a real S3 server (Garage, started by
//! each test): built outputs and witnessed bytes go up through the upload
//! queue, a build never waits for the bucket (stopped mid-build, the queue
//! uploads once it is back; a kill -9 with a full queue loses nothing),
//! the witness reads back from the bucket what its local archive lost,
//! and stock Nix 2.8 and 2.26 clients substitute from the bucket through
//! another armitage, which refuses a NAR tampered in the bucket.

use crate::origins::Origin;
use crate::witness::{Setup, assert_copied_from_witness, payload};
use compat_tests::remove_tree;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use store::hash::Algorithm;
use testkit::garage::Garage;
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, write_file};
use witness_proxy::cas::ObjectId;

/// A [`Setup`] whose daemon uploads to a bucket of its own on `garage`,
/// signing with `secret_key`.
struct Bucketed {
    s: Setup,
    garage: Garage,
    /// The bucket's `s3://` URL (zstd-compressed NARs).
    url: String,
    bucket: s3::Bucket,
    public_key: String,
}

impl Bucketed {
    fn new() -> Option<Bucketed> {
        let garage = Garage::start()?;
        let nix = Nix::find(NixVersion::V2_8)?;
        let name = garage.bucket("armitage");
        let url = format!("{}&compression=zstd", garage.url(&name));
        let credentials = garage.credentials_file();
        let keys = garage.dir().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (secret, public) = (keys.join("secret"), keys.join("public"));
        run(nix
            .command("nix-store")
            .arg("--generate-binary-cache-key")
            .arg("armitage-test-1")
            .arg(&secret)
            .arg(&public));
        let toml =
            format!("[s3]\nurl = \"{url}\"\ncredentials-file = \"{}\"\nmax-retry-delay = 1\n", credentials.display());
        let s = Setup::with_confs(&format!("secret-key-files = {}\n", secret.display()), &toml)?;
        let bucket = s3::Bucket::open(
            &s3::S3Url::parse(&url).unwrap(),
            s3::Credentials::from_file(&credentials, "default").unwrap(),
            s3::Tuning::default(),
        );
        let public_key = std::fs::read_to_string(&public).unwrap().trim().to_owned();
        Some(Bucketed { s, garage, url, bucket, public_key })
    }

    /// `armitage s3 queue --json` on the daemon's state directory.
    fn queue(&self) -> Value {
        serde_json::from_str(&run(self.s.store.armitage().args(["s3", "queue", "--json"]))).unwrap()
    }

    /// Waits until the queue is empty (nothing pending, nothing failed).
    fn wait_uploaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let q = self.queue();
            let empty = |k: &str| q[k].as_array().is_some_and(Vec::is_empty);
            if empty("pending") && empty("failed") {
                return;
            }
            assert!(Instant::now() < deadline, "the upload queue did not empty:\n{q:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The narinfo of `path` in the bucket, if there is one.
    fn narinfo(&self, path: &str) -> Option<String> {
        let hash = &base(path)[..32];
        let mut body = self.bucket.get(&format!("{hash}.narinfo")).unwrap()?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut body, &mut text).unwrap();
        Some(text)
    }

    /// A derivation `name` whose output names each of `refs`; its
    /// expression's file.
    fn plain(&self, name: &str, refs: &[&Path]) -> PathBuf {
        let imports: String = refs.iter().map(|r| format!(" ${{import {}}}", r.display())).collect();
        let expr = self.s.store.work_dir("expr").join(format!("{name}.nix"));
        write_file(
            &expr,
            format!(
                r#"derivation {{
  name = "{name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo '{name}{imports}' > $out" ];
}}"#
            ),
        );
        expr
    }
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

/// The queue's items (`path /nix/store/…`, `object …`) in `list`.
fn items(q: &Value, list: &str) -> Vec<String> {
    q[list].as_array().unwrap().iter().map(|j| j["item"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn outputs_and_witnessed_bytes_go_to_the_bucket_and_the_witness_reads_them_back() {
    let Some(b) = Bucketed::new() else { return };
    let s = &b.s;
    let payload = payload();
    std::fs::write(s.served.join("payload.bin"), &payload).unwrap();
    let origin = Origin::serve(&s.served);
    let hash = Algorithm::Sha256.digest(&payload);
    let url = format!("http://127.0.0.1:{}/payload.bin", origin.port);
    let fod = s.fod("payload.bin", "flat", &hash, &format!("{{curl}} --fail -sS -o $out {url}"));
    let top = b.plain("uses-payload", &[&fod]);
    let (top_out, _) = s.build_ok(&top);
    let (fod_out, _) = s.build_ok(&fod);
    b.wait_uploaded();

    // The outputs, as a binary cache: each narinfo signed by the daemon's
    // key, the top one naming the fetched one, which is there too.
    let info = b.narinfo(&top_out).expect("the top output's narinfo is in the bucket");
    assert!(info.contains(&format!("References: {}", base(&fod_out))), "{info}");
    assert!(info.contains("Sig: armitage-test-1:"), "signed with the daemon's key:\n{info}");
    assert!(info.contains("Compression: zstd"), "{info}");
    assert!(b.narinfo(&fod_out).is_some(), "the reference went up first");
    // The witnessed body under cas/, its record under traces/.
    let id = ObjectId::of(&payload);
    assert_eq!(b.bucket.head(&format!("cas/{id}")).unwrap(), Some(payload.len() as u64));
    let traces = b.bucket.list("traces/").unwrap();
    assert!(traces.iter().any(|t| t.key.ends_with(".cbor")), "{traces:?}");

    // The local archive loses the object; with the origin gone, the
    // output is made again from the bucket's copy, its builder not run.
    std::fs::remove_file(s.store.state_dir.join("witness/cas").join(id.to_hex())).unwrap();
    s.delete(&top_out);
    s.delete(&fod_out);
    drop(origin);
    let (again, stderr) = s.build_ok(&fod);
    assert_eq!(again, fod_out);
    assert_eq!(std::fs::read(&again).unwrap(), payload);
    assert_eq!(s.builder_runs("payload.bin"), 1, "the builder did not run again:\n{stderr}");
    assert_copied_from_witness(&stderr, &fod_out);
}

#[test]
fn a_build_never_waits_for_a_stopped_bucket_and_its_output_goes_up_when_it_is_back() {
    let Some(mut b) = Bucketed::new() else { return };
    b.garage.stop();
    let expr = b.plain("while-down", &[]);
    let started = Instant::now();
    let (out, _) = b.s.build_ok(&expr);
    assert!(started.elapsed() < Duration::from_secs(20), "the build waited for the bucket: {:?}", started.elapsed());

    // Pending, with why, and rooted: a garbage collection keeps it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let q = loop {
        let q = b.queue();
        if q["pending"][0]["attempts"].as_u64().unwrap_or(0) >= 1 {
            break q;
        }
        assert!(Instant::now() < deadline, "no failed try recorded:\n{q:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(items(&q, "pending"), [format!("path {out}")]);
    let why = q["pending"][0]["last_error"].as_str().unwrap();
    assert!(why.contains("cannot be reached"), "{why}");
    let shown = run(b.s.store.armitage().args(["s3", "queue"]));
    assert!(shown.contains("pending: 1, failed: 0"), "{shown}");
    assert!(shown.contains(&out), "{shown}");
    run(b.s.client("nix-store").arg("--gc"));
    assert!(Path::new(&out).exists(), "a queued output is a GC root");

    b.garage.resume();
    b.wait_uploaded();
    assert!(b.narinfo(&out).is_some());
    let roots = b.s.store.state_dir.join("gcroots/armitage-uploads");
    assert_eq!(std::fs::read_dir(&roots).unwrap().count(), 0, "the root went with the upload");
}

#[test]
fn a_kill_9_with_a_full_queue_loses_nothing() {
    let Some(mut b) = Bucketed::new() else { return };
    b.garage.stop();
    let outs: Vec<String> = (0..3).map(|i| b.s.build_ok(&b.plain(&format!("queued-{i}"), &[])).0).collect();
    run(Command::new("kill").arg("-9").arg(b.s.daemon.pid().to_string()));
    let q = b.queue();
    let pending = items(&q, "pending");
    for out in &outs {
        assert!(pending.contains(&format!("path {out}")), "{out} still queued after kill -9:\n{q:#}");
    }

    b.garage.resume();
    b.s.daemon = Daemon::armitage(&b.s.store);
    b.wait_uploaded();
    for out in &outs {
        assert!(b.narinfo(out).is_some(), "{out} uploaded after the restart");
    }
}

/// The outputs of a two-derivation closure, uploaded by one armitage, are
/// substituted by another on a fresh store with the same store dir, for
/// a Nix 2.8 and a 2.26 client; then a NAR tampered in the bucket is
/// refused and nothing is registered.
#[test]
fn stock_clients_substitute_from_the_bucket_through_armitage() {
    let Some(b) = Bucketed::new() else { return };
    let dep = b.plain("sub-dep", &[]);
    let top = b.plain("sub-top", &[&dep]);
    let (top_out, _) = b.s.build_ok(&top);
    let dep_out = line(run(b.s.client("nix-store").args(["--query", "--references", &top_out])));
    b.wait_uploaded();
    let Bucketed { s, garage, url, bucket, public_key } = b;
    let store_dir = s.store.store_dir.clone();
    drop(s.daemon);
    remove_tree(Path::new(&store_dir));

    let target = |extra: &str| {
        remove_tree(Path::new(&store_dir));
        let mut t = TestStore::with_conf(&format!(
            "require-sigs = true\nsubstituters = {url}\ntrusted-public-keys = {public_key}\n{extra}"
        ));
        t.store_dir = store_dir.clone();
        write_file(
            t.armitage_config(),
            format!("[s3]\ncredentials-file = \"{}\"\n", garage.credentials_file().display()),
        );
        t
    };
    for version in [NixVersion::V2_8, NixVersion::V2_26] {
        let Some(nix) = Nix::find(version) else { continue };
        let t = target("");
        let daemon = Daemon::armitage(&t);
        let out = output(daemon.client(&t, &nix, "nix-store").args(["--realise", &top_out]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{version:?}: nix-store --realise failed:\n{stderr}");
        assert!(stderr.contains("copying path"), "{version:?} was told of the substitution:\n{stderr}");
        assert_eq!(std::fs::read_to_string(&top_out).unwrap(), format!("sub-top {dep_out}\n"));
        let valid = output(daemon.client(&t, &nix, "nix-store").args(["--verify-path", &dep_out]));
        assert!(valid.status.success(), "{version:?}: the reference was substituted too");
    }

    // The dep's NAR replaced in the bucket: refused, nothing registered.
    let hash = &base(&dep_out)[..32];
    let mut body = bucket.get(&format!("{hash}.narinfo")).unwrap().unwrap();
    let mut info = String::new();
    std::io::Read::read_to_string(&mut body, &mut info).unwrap();
    let nar = info.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut bucket.get(nar).unwrap().unwrap(), &mut bytes).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    bucket.put_bytes(nar, bytes, "application/x-nix-nar").unwrap();
    let nix = Nix::find(NixVersion::V2_8).unwrap();
    let t = target("");
    let daemon = Daemon::armitage(&t);
    let out = output(daemon.client(&t, &nix, "nix-store").args(["--realise", &top_out]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a tampered NAR was accepted:\n{stderr}");
    assert!(!Path::new(&dep_out).exists() && !Path::new(&top_out).exists(), "nothing is registered:\n{stderr}");
    assert!(stderr.contains(&dep_out), "the error names the path:\n{stderr}");
}
