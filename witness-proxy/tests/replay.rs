//! Request-level replay, end to end on loopback with real parts: the real
//! `curl` through a [`witness_proxy::proxy::Proxy`] whose witness is the
//! on-disk archive. A URL fetched once is answered from the witness when
//! its origin stops, answers 4xx/5xx, or is never asked (offline), its
//! bytes checked against the record; tampered bytes never arrive whole.

#[allow(dead_code)]
mod common;

use common::{BIG_SIZE, Setup, big_bytes, curl_available, file_bytes, sha256_hex};
use hyper::StatusCode;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use witness_proxy::archive::{Archive, StoredRecord};
use witness_proxy::cas::ObjectId;
use witness_proxy::proxy::Mode;

/// The records of `url` once there are `n` (panics after 10 s).
async fn records_of(archive: &Archive, url: &str, n: usize) -> Vec<StoredRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = archive.records_for_url(url).unwrap();
        if records.len() >= n {
            return records;
        }
        assert!(Instant::now() < deadline, "{} records of {url}, not {n}: {records:#?}", records.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A header's value in a `curl -D` dump (its last response's, names in any
/// case).
fn dumped_header(dump: &Path, name: &str) -> Option<String> {
    let text = fs::read_to_string(dump).unwrap();
    let last = text.rsplit("HTTP/1.1 ").next().unwrap_or_default().to_owned();
    last.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Fetches `url` through the proxy into `name` (headers into `name.h`):
/// curl's stdout (the status) and whether it succeeded.
async fn fetch(s: &Setup<Archive>, url: &str, name: &str, extra: &[&str]) -> (String, bool, String) {
    let out = s.path(name);
    let dump = s.path(&format!("{name}.h"));
    let mut args = vec![url, "-o", out.to_str().unwrap(), "-D", dump.to_str().unwrap()];
    args.extend_from_slice(extra);
    let curl = s.curl(&args).await;
    (curl.stdout(), curl.output.status.success(), curl.stderr())
}

/// Fetches `url` once online and returns the id of its record.
async fn witness(s: &Setup<Archive>, url: &str, expected: &[u8]) -> String {
    let (status, ok, stderr) = fetch(s, url, "first", &[]).await;
    assert!(ok && status == "200", "{status} {stderr}");
    assert!(fs::read(s.path("first")).unwrap() == expected);
    let records = records_of(&s.witness, url, 1).await;
    let first = &records[0];
    assert_eq!(first.record.body.as_ref().map(|b| b.sha256.as_str()), Some(sha256_hex(expected).as_str()));
    first.id.clone()
}

/// The response in `name` was replayed from record `from`: the witness
/// header, the recorded headers, the bytes; its own record says so.
#[track_caller]
fn assert_replayed(s: &Setup<Archive>, name: &str, from: &str, records: &[StoredRecord], reason: &str) {
    let dump = s.path(&format!("{name}.h"));
    assert_eq!(dumped_header(&dump, "x-armitage-witness"), Some(format!("replayed {from}")));
    assert_eq!(dumped_header(&dump, "content-length").as_deref(), Some("50000"));
    assert_eq!(dumped_header(&dump, "content-type").as_deref(), Some("application/octet-stream"));
    assert_eq!(dumped_header(&dump, "etag").as_deref(), Some("\"file-v1\""));
    assert!(fs::read(s.path(name)).unwrap() == file_bytes(), "replayed bytes differ");
    let replay = records.last().unwrap();
    assert_ne!(replay.id, from);
    let r = &replay.record;
    assert_eq!((r.status, r.replayed_from.as_deref(), r.error.as_deref()), (Some(200), Some(from), None));
    assert!(r.replay_reason.as_deref().is_some_and(|why| why.starts_with(reason)), "{r:#?}");
    assert_eq!(r.body.as_ref().map(|b| b.sha256.clone()), Some(sha256_hex(&file_bytes())));
    assert!(r.tls_chain.is_empty(), "nothing came from an upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_origin_is_replaced_by_the_witness() {
    if !curl_available() {
        return;
    }
    let mut s = Setup::with_archive().await;
    let url = format!("http://127.0.0.1:{}/file", s.http.port);
    let first = witness(&s, &url, &file_bytes()).await;
    s.http.stop().await;

    // Twice: a replay is never the source of the next one.
    for n in 2..=3 {
        let (status, ok, stderr) = fetch(&s, &url, "again", &[]).await;
        assert!(ok && status == "200", "{status} {stderr}");
        let records = records_of(&s.witness, &url, n).await;
        assert_replayed(&s, "again", &first, &records, "the upstream failed: cannot connect to 127.0.0.1:");
    }
    assert!(s.witness.verify().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answering_4xx_or_5xx_is_replaced_by_the_witness_in_a_tunnel() {
    if !curl_available() {
        return;
    }
    let s = Setup::with_archive().await;
    let url = format!("https://localhost:{}/file", s.https.port);
    let first = witness(&s, &url, &file_bytes()).await;
    for (n, status) in [(2, StatusCode::INTERNAL_SERVER_ERROR), (3, StatusCode::NOT_FOUND)] {
        s.https.fail_with(Some(status));
        let (code, ok, stderr) = fetch(&s, &url, "again", &["--fail"]).await;
        assert!(ok && code == "200", "{code} {stderr}");
        let records = records_of(&s.witness, &url, n).await;
        assert_replayed(&s, "again", &first, &records, &format!("the upstream answered {status}"));
        assert_eq!(s.https.requests(), n, "the origin was asked first");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_the_origin_is_never_asked_and_the_witness_answers() {
    if !curl_available() {
        return;
    }
    let s = Setup::with_archive().await;
    let url = format!("https://localhost:{}/file", s.https.port);
    let redirect = format!("https://localhost:{}/redirect", s.https.port);
    let first = witness(&s, &url, &file_bytes()).await;
    // A redirect to it, followed once online.
    let (code, ok, stderr) = fetch(&s, &redirect, "followed", &["-L"]).await;
    assert!(ok && code == "200", "{code} {stderr}");
    let hop0 = records_of(&s.witness, &redirect, 1).await[0].id.clone();
    let newest = records_of(&s.witness, &url, 2).await[1].id.clone();
    let asked = s.https.requests();
    assert_eq!(asked, 3);

    s.proxy.set_mode(Mode::Offline);
    assert_eq!(s.proxy.mode(), Mode::Offline);
    let (code, ok, stderr) = fetch(&s, &url, "offline", &[]).await;
    assert!(ok && code == "200", "{code} {stderr}");
    let records = records_of(&s.witness, &url, 3).await;
    assert_replayed(&s, "offline", &newest, &records, "the proxy is offline");
    assert_ne!(first, newest);

    // The redirect is replayed too, and the hop after it linked to it.
    let (code, ok, stderr) = fetch(&s, &redirect, "offline-redirect", &["-L"]).await;
    assert!(ok && code == "200", "{code} {stderr}");
    let hops = records_of(&s.witness, &redirect, 2).await;
    let r = &hops[1].record;
    assert_eq!((r.status, r.replayed_from.as_deref()), (Some(302), Some(hop0.as_str())));
    assert_eq!(r.location.as_deref(), Some(url.as_str()));
    let records = records_of(&s.witness, &url, 4).await;
    assert_replayed(&s, "offline-redirect", &newest, &records, "the proxy is offline");
    assert_eq!((records[3].record.redirect_hop, records[3].record.redirected_from.as_deref()), (1, Some(&*redirect)));

    // HEAD: the head alone.
    let head = s.curl(&["--head", &url]).await;
    let printed = head.assert_ok().stdout().to_ascii_lowercase();
    assert!(printed.starts_with("http/1.1 200"), "{printed}");
    assert!(printed.contains("content-length: 50000"), "{printed}");
    assert!(printed.contains(&format!("x-armitage-witness: replayed {newest}")), "{printed}");

    assert_eq!(s.https.requests(), asked, "offline, the origin is never asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_with_nothing_witnessed_is_a_clear_error() {
    if !curl_available() {
        return;
    }
    let s = Setup::with_archive().await;
    s.proxy.set_mode(Mode::Offline);
    let url = format!("http://127.0.0.1:{}/file", s.http.port);
    let (code, _, _) = fetch(&s, &url, "nothing", &[]).await;
    assert_eq!(code, "504");
    let said = fs::read_to_string(s.path("nothing")).unwrap();
    assert_eq!(said, format!("witness proxy: offline: {url} was never witnessed\n"));
    let records = records_of(&s.witness, &url, 1).await;
    assert_eq!(records[0].record.error, Some(format!("offline: {url} was never witnessed")));
    assert_eq!(records[0].record.replayed_from, None);

    // With --fail, as fetchers run it, the fetch fails.
    let (_, ok, stderr) = fetch(&s, &url, "nothing", &["--fail"]).await;
    assert!(!ok, "curl --fail succeeded");
    assert!(stderr.contains("504"), "{stderr}");

    // A POST is never answered from the witness.
    let (code, _, _) = fetch(&s, &url, "post", &["-X", "POST", "--data", "x"]).await;
    assert_eq!(code, "504");
    let said = fs::read_to_string(s.path("post")).unwrap();
    assert!(said.contains("offline: POST is never answered from the witness"), "{said}");
    assert_eq!(s.http.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_witnessed_body_the_upstream_failure_passes_through() {
    if !curl_available() {
        return;
    }
    let mut s = Setup::with_archive().await;
    let url = format!("http://127.0.0.1:{}/file", s.http.port);
    s.http.fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    let (code, _, _) = fetch(&s, &url, "failing", &[]).await;
    assert_eq!(code, "503");
    assert_eq!(fs::read_to_string(s.path("failing")).unwrap(), "failing on purpose\n");
    assert_eq!(dumped_header(&s.path("failing.h"), "x-armitage-witness"), None);

    s.http.stop().await;
    let (code, _, _) = fetch(&s, &url, "stopped", &[]).await;
    assert_eq!(code, "502");
    let said = fs::read_to_string(s.path("stopped")).unwrap();
    assert!(said.starts_with("witness proxy: cannot connect to 127.0.0.1:"), "{said}");
    let records = records_of(&s.witness, &url, 2).await;
    assert!(records.iter().all(|r| r.record.replayed_from.is_none() && r.record.body.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_object_is_never_served_whole() {
    if !curl_available() {
        return;
    }
    let mut s = Setup::with_archive().await;
    let small = format!("http://127.0.0.1:{}/file", s.http.port);
    let big = format!("http://127.0.0.1:{}/big", s.http.port);
    let mut witnessed = Vec::new();
    for (url, bytes) in [(&small, file_bytes()), (&big, big_bytes())] {
        witness(&s, url, &bytes).await;
        witnessed.push((url, bytes));
    }
    s.http.stop().await;

    for (url, bytes) in witnessed {
        // One byte flipped, the size kept.
        let id = ObjectId::of(&bytes);
        let path = s.path("witness/cas").join(id.to_hex());
        let mut evil = bytes.clone();
        evil[bytes.len() / 2] ^= 0x20;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, &evil).unwrap();

        let (code, ok, stderr) = fetch(&s, url, "tampered", &[]).await;
        assert!(!ok, "curl succeeded on tampered bytes: {code}");
        // Cut off mid-body (18), or before the head went out (52).
        assert!(stderr.contains("(18)") || stderr.contains("(52)"), "{stderr}");
        let got = fs::metadata(s.path("tampered")).map(|m| m.len()).unwrap_or(0);
        assert!(got < bytes.len() as u64, "a complete wrong file arrived ({got} bytes)");
        if bytes.len() == BIG_SIZE {
            assert!(got > 0, "a big object streams before its end is checked");
        }

        let records = records_of(&s.witness, url, 2).await;
        let r = &records[1].record;
        assert!(r.replayed_from.is_some() && r.body.is_none(), "{r:#?}");
        let why = r.error.as_deref().unwrap_or_default();
        assert!(
            why.starts_with(&format!("the replay broke off: object {id} is tampered: its bytes hash to ")),
            "{why}"
        );
    }
}
