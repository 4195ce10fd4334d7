//! The witness proxy end to end, real parts only, on loopback: the real
//! `curl` through a [`witness_proxy::proxy::Proxy`] to an HTTPS origin
//! (certificate from a test CA the proxy trusts upstream), one it does not
//! trust, and a plain HTTP origin; the records and bodies land in an
//! in-memory witness (`common`).

#[allow(dead_code)]
mod common;

use common::{
    BIG_SIZE, MemoryWitness, PASSWORD, Setup, TOKEN, USER, big_bytes, curl_available, file_bytes, sha256_hex,
    test_build,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use witness_proxy::record::Record;

/// The one record of `url`.
fn record_of<'a>(records: &'a [Record], url: &str) -> &'a Record {
    let found: Vec<&Record> = records.iter().filter(|r| r.url == url).collect();
    assert_eq!(found.len(), 1, "records of {url}: {records:#?}");
    found[0]
}

fn header<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The record's body is `expected`, kept whole by the witness.
#[track_caller]
fn assert_kept(witness: &MemoryWitness, record: &Record, expected: &[u8]) {
    let body = record.body.as_ref().unwrap_or_else(|| panic!("no body in {record:#?}"));
    assert_eq!(body.size, expected.len() as u64);
    assert_eq!(body.sha256, sha256_hex(expected));
    assert!(witness.kept(&body.sha256).as_deref() == Some(expected), "the witness kept other bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_connect_is_relayed_and_recorded() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let out = s.path("file");
    let url = format!("https://localhost:{}/file", s.https.port);
    let curl = s.curl(&[&url, "-o", out.to_str().unwrap()]).await;
    assert_eq!(curl.assert_ok().stdout(), "200");
    assert_eq!(std::fs::read(&out).unwrap(), file_bytes());

    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &url);
    assert_eq!((r.method.as_str(), r.status, r.error.as_deref()), ("GET", Some(200), None));
    assert_kept(&s.witness, r, &file_bytes());
    assert_eq!(r.build, Some(test_build()));
    assert_eq!(r.redirect_hop, 0);
    assert!(r.started_ms <= r.ended_ms && r.started_ms > 0);
    let leaf = r.tls_chain.first().expect("the upstream's chain is recorded");
    assert_eq!(Some(&leaf.sha256), s.https.leaf_sha256.as_ref());
    assert_eq!(leaf.subject, "CN=localhost");
    assert_eq!(leaf.issuer, "CN=test origin CA");
    assert!(leaf.not_before < leaf.not_after);
    assert_eq!(header(r, "content-type"), Some("application/octet-stream"));
    assert_eq!(header(r, "etag"), Some("\"file-v1\""));
    assert_eq!(header(r, "content-length"), Some("50000"));
    assert_eq!(header(r, "accept-ranges"), None, "only provenance headers are recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_relayed_and_their_hops_linked() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let out = s.path("file");
    let first = format!("https://localhost:{}/redirect", s.https.port);
    let second = format!("https://localhost:{}/file", s.https.port);
    let curl = s.curl(&["-L", &first, "-o", out.to_str().unwrap()]).await;
    assert_eq!(curl.assert_ok().stdout(), "200");
    assert_eq!(std::fs::read(&out).unwrap(), file_bytes());

    let records = s.witness.wait_for(2).await;
    let hop0 = record_of(&records, &first);
    assert_eq!((hop0.status, hop0.redirect_hop, hop0.redirected_from.as_deref()), (Some(302), 0, None));
    assert_eq!(hop0.location.as_deref(), Some(second.as_str()));
    assert!(hop0.body.is_none(), "only 200 bodies are kept");
    let hop1 = record_of(&records, &second);
    assert_eq!((hop1.status, hop1.redirect_hop), (Some(200), 1));
    assert_eq!(hop1.redirected_from.as_deref(), Some(first.as_str()));
    assert_kept(&s.witness, hop1, &file_bytes());
    assert_eq!(s.witness.kept_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hosts_get_a_certificate_with_an_ip_san() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let out = s.path("file");
    let url = format!("https://127.0.0.1:{}/file", s.https.port);
    let curl = s.curl(&[&url, "-o", out.to_str().unwrap()]).await;
    assert_eq!(curl.assert_ok().stdout(), "200");
    assert_eq!(std::fs::read(&out).unwrap(), file_bytes());
    let records = s.witness.wait_for(1).await;
    assert_kept(&s.witness, record_of(&records, &url), &file_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_range_requests_pass_through_and_ranges_are_not_kept() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let url = format!("https://localhost:{}/file", s.https.port);
    let head = s.curl(&["--head", &url]).await;
    let printed = head.assert_ok().stdout();
    assert!(printed.starts_with("HTTP/1.1 200"), "{printed}");
    assert!(printed.to_ascii_lowercase().contains("content-length: 50000"), "{printed}");

    let out = s.path("range");
    let range = s.curl(&["-r", "0-99", &url, "-o", out.to_str().unwrap()]).await;
    assert_eq!(range.assert_ok().stdout(), "206");
    assert_eq!(std::fs::read(&out).unwrap(), file_bytes()[..100]);

    let records = s.witness.wait_for(2).await;
    let head = records.iter().find(|r| r.method == "HEAD").expect("a HEAD record");
    assert_eq!((head.status, head.body.as_ref(), head.error.as_deref()), (Some(200), None, None));
    assert_eq!(header(head, "content-length"), Some("50000"));
    let partial = records.iter().find(|r| r.method == "GET").expect("a GET record");
    assert_eq!((partial.status, partial.body.as_ref(), partial.error.as_deref()), (Some(206), None, None));
    assert_eq!(header(partial, "content-range"), Some("bytes 0-99/50000"));
    assert_eq!(s.witness.kept_count(), 0, "a range is never kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_forwarded_but_never_recorded() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let login = format!("{USER}:{PASSWORD}");
    let https = format!("https://localhost:{}/secret?token={TOKEN}", s.https.port);
    let curl = s.curl(&["-u", &login, "-b", "session=c00kieValue", &https]).await;
    assert_eq!(curl.assert_ok().stdout(), "the secret\n200");
    let http = format!("http://{login}@127.0.0.1:{}/secret?token={TOKEN}", s.http.port);
    let curl = s.curl(&[&http]).await;
    assert_eq!(curl.assert_ok().stdout(), "the secret\n200");

    let records = s.witness.wait_for(2).await;
    assert!(records.iter().all(|r| r.status == Some(200)), "{records:#?}");
    assert!(records.iter().any(|r| r.url == format!("https://localhost:{}/secret?token=<redacted>", s.https.port)));
    let json = serde_json::to_string(&records).unwrap();
    let basic = data_encoding::BASE64.encode(login.as_bytes());
    for secret in [PASSWORD, TOKEN, basic.as_str(), "c00kieValue"] {
        assert!(!json.contains(secret), "{secret:?} is in the records: {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_an_untrusted_certificate_gets_a_502() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let url = format!("https://localhost:{}/file", s.untrusted.port);
    let curl = s.curl(&[&url, "-o", s.path("file").to_str().unwrap()]).await;
    assert_eq!(curl.assert_ok().stdout(), "502");
    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &url);
    assert_eq!((r.status, r.body.as_ref()), (None, None));
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.contains("TLS") && error.contains("certificate"), "{error}");
    assert_eq!(s.witness.kept_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gets_a_502() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{closed}/file");
    let curl = s.curl(&[&url, "-o", s.path("file").to_str().unwrap()]).await;
    assert_eq!(curl.assert_ok().stdout(), "502");
    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &url);
    assert!(r.error.as_deref().is_some_and(|e| e.starts_with("cannot connect to")), "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refusing_the_witness_ca_is_recorded() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let url = format!("https://localhost:{}/file", s.https.port);
    let curl = s.curl_trusting(&s.origin_ca_pem, &[&url]).await;
    assert!(!curl.output.status.success(), "curl accepted a leaf it cannot chain");
    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &format!("localhost:{}", s.https.port));
    assert_eq!(r.method, "CONNECT");
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("the TLS handshake with the client failed"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_connect_is_refused_and_recorded() {
    let s = Setup::new().await;
    let target = format!("localhost:{}", s.https.port);
    let mut client = TcpStream::connect(("127.0.0.1", s.proxy_port)).await.unwrap();
    client.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "the proxy closed before its answer");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    client.write_all(b"\x00\x01SSH garbage\r\n").await.unwrap();
    let mut rest = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => assert!(rest.is_empty(), "the proxy answered garbage: {rest:?}"),
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the proxy kept a tunnel carrying garbage open"),
    }
    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &target);
    assert_eq!((r.method.as_str(), r.status), ("CONNECT", None));
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("not TLS or HTTP after CONNECT"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_in_absolute_form_is_relayed_and_recorded() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let out = s.path("file");
    let url = format!("http://127.0.0.1:{}/file", s.http.port);
    let curl = s.curl(&[&url, "-o", out.to_str().unwrap()]).await;
    assert_eq!(curl.assert_ok().stdout(), "200");
    assert_eq!(std::fs::read(&out).unwrap(), file_bytes());
    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &url);
    assert!(r.tls_chain.is_empty());
    assert_kept(&s.witness, r, &file_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_inside_connect_is_served() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let out = s.path("file");
    let url = format!("http://127.0.0.1:{}/file", s.http.port);
    let curl = s.curl(&["--proxytunnel", &url, "-o", out.to_str().unwrap()]).await;
    assert_eq!(curl.assert_ok().stdout(), "200");
    assert_eq!(std::fs::read(&out).unwrap(), file_bytes());
    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &url);
    assert!(r.tls_chain.is_empty());
    assert_kept(&s.witness, r, &file_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_stream_through() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let out = s.path("big");
    let url = format!("https://localhost:{}/big", s.https.port);
    let curl = s.curl(&[&url, "-o", out.to_str().unwrap()]).await;
    assert_eq!(curl.assert_ok().stdout(), "200");
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), BIG_SIZE);
    assert!(got == big_bytes(), "the big body changed on its way");
    let records = s.witness.wait_for(1).await;
    assert_kept(&s.witness, record_of(&records, &url), &big_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_upstream_breaks_off_is_not_kept() {
    if !curl_available() {
        return;
    }
    let s = Setup::new().await;
    let url = format!("https://localhost:{}/cut", s.https.port);
    let curl = s.curl(&[&url, "-o", s.path("cut").to_str().unwrap()]).await;
    assert!(!curl.output.status.success(), "curl took a cut body for whole: {}", curl.stdout());
    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &url);
    assert_eq!((r.status, r.body.as_ref()), (Some(200), None));
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("the upstream body broke off"), "{error}");
    assert_eq!(s.witness.kept_count(), 0);
}

/// Sends `head` to the proxy on a new connection.
async fn raw_request(s: &Setup, head: &str) -> TcpStream {
    let mut client = TcpStream::connect(("127.0.0.1", s.proxy_port)).await.unwrap();
    client.write_all(head.as_bytes()).await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_leaves_no_body() {
    let s = Setup::new().await;
    let url = format!("http://127.0.0.1:{}/drip", s.http.port);
    let mut client = raw_request(&s, &format!("GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")).await;
    let mut got = Vec::new();
    while got.len() < 2048 {
        let mut buf = [0u8; 4096];
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "the proxy closed first");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    drop(client);
    let records = s.witness.wait_for(1).await;
    let r = record_of(&records, &url);
    assert_eq!((r.status, r.body.as_ref()), (Some(200), None));
    let error = r.error.as_deref().unwrap_or_default();
    assert_eq!(error, "the client went away before the body was complete");
    assert_eq!(s.witness.kept_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_for_a_proxy_are_refused_and_recorded() {
    let s = Setup::new().await;
    let mut client = raw_request(&s, "GET /x?token=abcdef HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    let mut client = raw_request(&s, "GET ftp://example.org/f HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 501"), "{}", String::from_utf8_lossy(&answer));

    let records = s.witness.wait_for(2).await;
    let r = record_of(&records, "/x?token=<redacted>");
    assert!(r.error.as_deref().is_some_and(|e| e.starts_with("not a proxy request")), "{r:#?}");
    let r = record_of(&records, "ftp://example.org/f");
    assert!(r.error.as_deref().is_some_and(|e| e.contains("ftp:// is not served")), "{r:#?}");
}
