//! A loopback HTTP/1.1 server for tests: `GET`, `HEAD` and `PUT` on an
//! in-memory map of files, one thread per connection, one request per
//! connection (`Connection: close`). Enough to stand in for an HTTP binary
//! cache; nothing a real client would deploy against.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A running server; it stops with the test process.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let shared = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let files = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &files);
                });
            }
        });
        TestServer { url, files }
    }

    /// A file's contents (the path without the leading `/`).
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().get(name).cloned()
    }

    /// Puts a file in place, as an upload would.
    pub fn put(&self, name: &str, contents: impl Into<Vec<u8>>) {
        self.lock().insert(name.to_owned(), contents.into());
    }

    /// The names of the files, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn serve(stream: TcpStream, files: &Mutex<HashMap<String, Vec<u8>>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("/").to_owned());
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    let name = target.trim_start_matches('/').to_owned();
    let lock = || files.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = stream;
    let respond = |out: &mut TcpStream, status: &str, body: &[u8], send_body: bool| -> std::io::Result<()> {
        write!(out, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
        if send_body {
            out.write_all(body)?;
        }
        out.flush()
    };
    match method.as_str() {
        "GET" | "HEAD" => match lock().get(&name).cloned() {
            Some(body) => respond(&mut out, "200 OK", &body, method == "GET"),
            None => respond(&mut out, "404 Not Found", b"", false),
        },
        "PUT" => {
            let body = if chunked { read_chunked(&mut reader)? } else { read_exact(&mut reader, length)? };
            lock().insert(name, body);
            respond(&mut out, "201 Created", b"", false)
        }
        _ => respond(&mut out, "405 Method Not Allowed", b"", false),
    }
}

fn read_exact(reader: &mut impl Read, length: usize) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        let chunk = read_exact(reader, size + 2)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}
