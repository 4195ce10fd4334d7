//! A real S3 server for tests: Garage (`scripts/install-test-deps` builds
//! it and exports `ARMITAGE_GARAGE`), one node on loopback with SQLite
//! metadata and replication factor 1, in a folder of its own, started and
//! stopped by the test. [`Garage::start`] lays the node out and imports
//! one key, the same in every Garage started here (so tests in one
//! process may share a credentials file); [`Garage::bucket`] makes a
//! bucket that key owns.
//!
//! Like Nix, a missing Garage skips the test with a message, and fails it
//! when tools are required (`CI`, `ARMITAGE_REQUIRE_NIX=1`).

use crate::TempDir;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The region Garage is configured with (clients must sign for it).
pub const REGION: &str = "garage";

pub struct Garage {
    bin: PathBuf,
    dir: TempDir,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    s3_port: u16,
    pub key_id: String,
    pub secret_key: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn hex(bytes: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:02x}", x as u8)
        })
        .collect()
}

impl Garage {
    /// The Garage binary, or why there is none.
    fn locate() -> Result<PathBuf, String> {
        let bin = std::env::var_os("ARMITAGE_GARAGE").map_or_else(|| PathBuf::from("garage"), PathBuf::from);
        match Command::new(&bin).arg("--version").output() {
            Ok(out) if out.status.success() => Ok(bin),
            Ok(out) => Err(format!("`{} --version` exited with {}", bin.display(), out.status)),
            Err(e) => Err(format!("{} cannot run: {e}", bin.display())),
        }
    }

    /// The Garage binary, or `None` (the test is skipped, saying why; with
    /// `CI` set or through scripts/test, it fails instead).
    pub fn binary() -> Option<PathBuf> {
        match Garage::locate() {
            Ok(bin) => Some(bin),
            Err(why) if crate::must_have_nix() => panic!("Garage is required but {why}"),
            Err(why) => {
                eprintln!("skipped: Garage not available: {why} (run the tests through scripts/test)");
                None
            }
        }
    }

    /// A running single-node Garage with one key, or `None` (the test is
    /// skipped, saying why) when there is no Garage binary.
    pub fn start() -> Option<Garage> {
        let bin = Garage::binary()?;
        let dir = TempDir::new_in(&std::env::temp_dir(), "garage-");
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
            ^ u64::from(std::process::id()) << 32;
        let (s3_port, rpc_port) = (free_port(), free_port());
        let config = format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n\
             [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
            secret = hex(32, seed),
        );
        crate::write_file(dir.path().join("garage.toml"), config);
        let mut garage = Garage {
            bin,
            dir,
            child: None,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            s3_port,
            key_id: format!("GK{}", hex(12, 0x5eed)),
            secret_key: hex(32, 0xc0ffee),
        };
        garage.resume();
        let node = garage.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap_or_default().to_owned();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        let (id, secret) = (garage.key_id.clone(), garage.secret_key.clone());
        garage.cli(&["key", "import", "--yes", "-n", "tests", &id, &secret]);
        Some(garage)
    }

    /// Makes a bucket the key may read, write and own; returns its name.
    pub fn bucket(&self, name: &str) -> String {
        self.cli(&["bucket", "create", name]);
        self.cli(&["bucket", "allow", "--read", "--write", "--owner", name, "--key", &self.key_id]);
        name.to_owned()
    }

    /// The `s3://` URL of `bucket` here, as CppNix spells it.
    pub fn url(&self, bucket: &str) -> String {
        format!("s3://{bucket}?endpoint=127.0.0.1:{}&region={REGION}&scheme=http", self.s3_port)
    }

    /// An AWS credentials file holding the key as profile `default`.
    pub fn credentials_file(&self) -> PathBuf {
        let path = self.dir.path().join("credentials");
        crate::write_file(
            &path,
            format!("[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n", self.key_id, self.secret_key),
        );
        path
    }

    /// Where Garage keeps its data (objects are in `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (kill -9): requests fail until [`Self::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data, and waits until
    /// it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "Garage is already running");
        let log = std::fs::File::create(self.dir.path().join("garage.log")).expect("create garage.log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("garage.log"))
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(Instant::now() < deadline, "Garage did not listen within 30 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Garage's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// Runs `garage ARGS` against this node (tried again for a few seconds
    /// while the node settles); its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(self.dir.path().join("garage.toml"))
                .args(args)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run garage");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "`garage {}` failed: {}\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
