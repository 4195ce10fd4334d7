//! Hostile peers against the witness proxy, on loopback: origins and
//! clients written as raw tokio TCP peers. Each test checks the proxy gives
//! up within its limits, records what happened, and still serves a normal
//! request afterwards.

#[allow(dead_code)]
mod common;

use common::{Setup, curl_available, file_bytes, sha256_hex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use witness_proxy::proxy::Limits;

const STALL: Duration = Duration::from_secs(1);

fn small_limits() -> Limits {
    Limits {
        max_connections: 4,
        max_head_bytes: 8192,
        connect_timeout: Duration::from_secs(2),
        stall_timeout: STALL,
        ..Limits::default()
    }
}

/// A raw origin: each connection gets its request head read, then `answer`.
async fn raw_origin<F, Fut>(answer: F) -> u16
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                answer(stream, head).await;
            });
        }
    });
    port
}

/// Sends `GET url` through the proxy on a raw connection and reads the
/// whole answer (until the proxy closes or `limit` passes).
async fn raw_get(proxy_port: u16, url: &str, limit: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", proxy_port)).await.unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    answer
}

/// The proxy still relays a normal request to the plain origin.
async fn assert_healthy(s: &Setup) {
    let url = format!("http://127.0.0.1:{}/file", s.http.port);
    let answer = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            let answer = raw_get(s.proxy_port, &url, Duration::from_secs(3)).await;
            if answer.starts_with(b"HTTP/1.1 200") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the proxy serves a normal request afterwards");
    assert!(answer.ends_with(&file_bytes()), "the body came through whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_response_headers_are_cut_off_with_a_502() {
    let s = Setup::with_limits(small_limits()).await;
    let port = raw_origin(|mut stream, _| async move {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
        for i in 0.. {
            let line = format!("X-Endless-{i}: {}\r\n", "a".repeat(64));
            if stream.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/endless");
    let started = Instant::now();
    let answer = raw_get(s.proxy_port, &url, Duration::from_secs(4)).await;
    assert!(started.elapsed() < STALL + Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(answer.starts_with(b"HTTP/1.1 502"), "{}", String::from_utf8_lossy(&answer));
    let records = s.witness.wait_for(1).await;
    let r = records.iter().find(|r| r.url == url).expect("a record of the endless head");
    assert!(r.error.is_some() && r.body.is_none(), "{r:#?}");
    assert_healthy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_announced_is_never_recorded_past_its_length() {
    let s = Setup::with_limits(small_limits()).await;
    let port = raw_origin(|mut stream, _| async move {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n").await;
        let _ = stream.write_all(&[b'x'; 200]).await;
        let _ = stream.shutdown().await;
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/long");
    let answer = raw_get(s.proxy_port, &url, Duration::from_secs(4)).await;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert!(answer.len() - split <= 100, "the client got {} body bytes", answer.len() - split);
    let records = s.witness.wait_for(1).await;
    let r = records.iter().find(|r| r.url == url).expect("a record");
    if let Some(body) = &r.body {
        assert_eq!((body.size, body.sha256.as_str()), (100, sha256_hex(&[b'x'; 100]).as_str()));
    }
    assert_healthy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_is_followed_hop_by_hop_until_curl_gives_up() {
    if !curl_available() {
        return;
    }
    let s = Setup::with_limits(small_limits()).await;
    let port = raw_origin(|mut stream, head| async move {
        let next = if head.starts_with("GET /a ") { "/b" } else { "/a" };
        let answer =
            format!("HTTP/1.1 302 Found\r\nLocation: {next}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/a");
    let curl = s.curl(&["-L", "--max-redirs", "5", &url, "-o", "/dev/null"]).await;
    assert!(!curl.output.status.success(), "curl followed the loop forever?");
    let records = s.witness.wait_for(6).await;
    let hops: Vec<_> = records.iter().filter(|r| r.url.starts_with(&format!("http://127.0.0.1:{port}/"))).collect();
    assert_eq!(hops.len(), 6, "{records:#?}");
    assert!(hops.iter().all(|r| r.status == Some(302)), "{hops:#?}");
    assert_healthy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connect_tunnel_is_closed_after_the_stall_timeout() {
    let s = Setup::with_limits(small_limits()).await;
    let mut stream = TcpStream::connect(("127.0.0.1", s.proxy_port)).await.unwrap();
    stream.write_all(b"CONNECT example.invalid:443 HTTP/1.1\r\nHost: example.invalid:443\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the tunnel is still open after 4 s");
    assert!(started.elapsed() < STALL + Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    let records = s.witness.wait_for(1).await;
    let r = records.iter().find(|r| r.method == "CONNECT").expect("a CONNECT record");
    assert_eq!(r.url, "example.invalid:443");
    assert!(r.error.is_some(), "{r:#?}");
    assert_healthy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_past_max_connections_do_not_wedge_the_proxy() {
    let s = Setup::with_limits(small_limits()).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(("127.0.0.1", s.proxy_port)).await.unwrap());
    }
    // The silent ones time out (header_read_timeout) and free their
    // permits; the normal request then gets through.
    let started = Instant::now();
    assert_healthy(&s).await;
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_tls_handshake_stalls_is_given_up_after_the_connect_timeout() {
    if !curl_available() {
        return;
    }
    let s = Setup::with_limits(small_limits()).await;
    // Accepts, reads the ClientHello, never answers it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            held.push(stream);
        }
    });
    let started = Instant::now();
    let curl = s.curl(&["-o", "/dev/null", &format!("https://127.0.0.1:{port}/stalled")]).await;
    let waited = started.elapsed();
    assert_eq!(curl.stdout(), "502", "the client is told the upstream failed: {}", curl.stderr());
    let connect_timeout = small_limits().connect_timeout;
    assert!(waited >= connect_timeout && waited < connect_timeout + Duration::from_secs(3), "took {waited:?}");
    // Kept before the 502 was sent, so there by now.
    let records = s.witness.wait_for(1).await;
    let r = records.iter().find(|r| r.url.ends_with("/stalled")).expect("a record of the request");
    assert_eq!(r.status, None);
    assert!(r.error.is_some() && r.body.is_none(), "{r:#?}");
    assert_healthy(&s).await;
}
