//! Upstreams on the loopback for the witness tests, playing the public
//! internet: [`Origin`], a plain HTTP one (testkit's, Python's http.server), and
//! [`HttpsOrigin`], an HTTPS one with a certificate of a test CA
//! ([`TestCa`], made here with rcgen) that also serves git's smart HTTP
//! protocol (`git http-backend` as a CGI program) and, on request, sends a
//! body at a trickle.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use testkit::HttpOrigin as Origin;

/// The test's own certificate authority and the certificate it issued the
/// HTTPS origin (for IP 127.0.0.1 and DNS localhost), as PEM files.
pub struct TestCa {
    /// The CA's certificate: what the daemon is told to trust.
    pub ca_pem: PathBuf,
    /// The origin's certificate and key.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// The subject common names, to tell the origin's chain in a record.
pub const TEST_CA_NAME: &str = "Armitage test origin CA";
pub const ORIGIN_CERT_NAME: &str = "loopback test origin";

impl TestCa {
    /// A new CA and origin certificate, written into `dir`.
    pub fn make(dir: &Path) -> TestCa {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, TEST_CA_NAME);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().expect("the origin's key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("the origin's names");
        leaf.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf.distinguished_name = DistinguishedName::new();
        leaf.distinguished_name.push(DnType::CommonName, ORIGIN_CERT_NAME);
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).expect("the origin's certificate");

        let tls =
            TestCa { ca_pem: dir.join("ca.pem"), cert_pem: dir.join("origin.pem"), key_pem: dir.join("origin.key") };
        std::fs::write(&tls.ca_pem, ca_cert.pem()).unwrap();
        std::fs::write(&tls.cert_pem, cert.pem()).unwrap();
        std::fs::write(&tls.key_pem, key.serialize_pem()).unwrap();
        tls
    }
}

/// The HTTPS origin's program: a threaded http.server whose connections
/// are wrapped in TLS in their own thread (a client that never finishes
/// its handshake holds up no other), serving
/// - `/git/<repo>/...`: git's smart HTTP protocol, `git http-backend` run
///   as a CGI program on the bare repositories under `<root>/git`;
/// - `/slow/<file>`: `<root>/<file>`, at a trickle after its first 2 MiB
///   while `<root>/.trickle` exists (whole otherwise);
/// - anything else: the file under `<root>`.
///
/// It prints its port on its first line.
const HTTPS_ORIGIN_PY: &str = r#"
import http.server, os, ssl, subprocess, sys, time

root, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)

def read_chunked(rfile):
    body = b""
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += rfile.read(size)
        rfile.readline()

class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.requestline, format % args))

    def do_GET(self):
        if self.path.startswith("/git/"):
            return self.git()
        if self.path.startswith("/slow/"):
            return self.slow()
        return super().do_GET()

    def do_POST(self):
        if self.path.startswith("/git/"):
            return self.git()
        self.send_error(405)

    def slow(self):
        path = os.path.join(root, self.path[len("/slow/"):])
        if not os.path.isfile(path):
            return self.send_error(404)
        trickle = os.path.exists(os.path.join(root, ".trickle"))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.end_headers()
        with open(path, "rb") as f:
            if trickle:
                self.wfile.write(f.read(2 << 20))
                self.wfile.flush()
                while True:
                    chunk = f.read(16 << 10)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self.wfile.write(f.read())

    def git(self):
        path, _, query = self.path[len("/git"):].partition("?")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = read_chunked(self.rfile)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": os.path.join(root, "git"),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
        }
        for name, value in self.headers.items():
            env["HTTP_" + name.upper().replace("-", "_")] = value
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        sys.stderr.write(out.stderr.decode(errors="replace"))
        head, sep, payload = out.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = out.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        try:
            request = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write("TLS handshake with %s failed: %s\n" % (client_address, e))
            return
        try:
            self.RequestHandlerClass(request, client_address, self)
        finally:
            request.close()

server = Server(("127.0.0.1", int(sys.argv[4])), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// An HTTPS origin on loopback serving `root` ([`HTTPS_ORIGIN_PY`]), with
/// the certificate of a [`TestCa`]. Stopped (killed) when dropped; what it
/// logs goes to `origin.log` next to its script.
pub struct HttpsOrigin {
    child: Child,
    pub port: u16,
}

impl HttpsOrigin {
    /// Serves `root`; its script and log go into `work`.
    pub fn serve(root: &Path, tls: &TestCa, work: &Path) -> HttpsOrigin {
        let script = work.join("origin.py");
        std::fs::write(&script, HTTPS_ORIGIN_PY).unwrap();
        let log = std::fs::File::create(work.join("origin.log")).unwrap();
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(&script)
            .arg(root)
            .arg(&tls.cert_pem)
            .arg(&tls.key_pem)
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the HTTPS origin (python3)");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut first).expect("read its port");
        let port = first.trim().parse().unwrap_or_else(|_| {
            let log = std::fs::read_to_string(work.join("origin.log")).unwrap_or_default();
            panic!("the HTTPS origin printed no port ({first:?}):\n{log}")
        });
        HttpsOrigin { child, port }
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for HttpsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
