//! `armitage witness proxy`: the proxy on its own, in a throwaway store's
//! default witness folder, fetched through by curl from a loopback origin
//! (Python's http.server); `armitage witness ls` then shows the record.
//! Skipped without curl or python3. Needs no Nix.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{HttpOrigin, TestStore, tool_available};
use witness_proxy::ca::{CERT_FILE, WitnessCa};

/// A child process killed (if still running) when dropped, so that a
/// failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `key=` in the proxy's line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the proxy's line {line:?}"))
}

#[test]
fn witness_proxy_serves_and_records_until_terminated() {
    if !tool_available("curl") || !tool_available("python3") {
        return;
    }
    let store = TestStore::new();
    let site = store.work_dir("site");
    testkit::write_file(site.join("hello.txt"), "hello through the witness\n");
    let origin = HttpOrigin::serve(&site);
    let port = origin.port;
    // Upstream roots: any CA will do for a plain HTTP origin.
    let roots_dir = store.work_dir("roots");
    WitnessCa::load_or_create(&roots_dir).expect("a CA for the upstream roots");

    let mut child = store
        .armitage()
        .args(["witness", "proxy", "--listen", "127.0.0.1:0", "--ssl-cert-file"])
        .arg(roots_dir.join(CERT_FILE))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start armitage witness proxy");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut proxy = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read the proxy's line");
    assert_eq!(line.lines().count(), 1, "{line:?}");
    let url = field(&line, "proxy");
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{line:?}");
    // Made in the default witness folder, where the daemon keeps it.
    let witness_dir = store.state_dir.join("witness");
    let bundle = PathBuf::from(field(&line, "ca-bundle"));
    assert_eq!(bundle, witness_dir.join("ca").join(CERT_FILE));
    let pem = std::fs::read_to_string(&bundle).expect("the CA bundle named");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    let target = format!("http://127.0.0.1:{port}/hello.txt");
    let body = testkit::run(Command::new("curl").args(["-sS", "--fail", "--max-time", "30", "--proxy", url, &target]));
    assert_eq!(body, "hello through the witness\n");

    // The record is written once the exchange ends: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let json = crate::support::run_json(store.armitage().args(["witness", "ls", "--json"]));
        let records = json.as_array().expect("a JSON array").clone();
        if !records.is_empty() || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["url"], target.as_str());
    assert_eq!(r["method"], "GET");
    assert_eq!(r["status"], 200);
    assert_eq!(r["body"]["size"], 26);
    assert!(r["build"].is_null(), "{r}");
    let listed = testkit::run(store.armitage().args(["witness", "ls"]));
    assert!(listed.contains(&format!(" 200 GET {target} ")), "{listed}");

    // SIGTERM: it stops, successfully.
    testkit::signal_term(proxy.0.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = proxy.0.try_wait().expect("wait for the proxy") {
            break status;
        }
        assert!(Instant::now() < deadline, "the proxy did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
