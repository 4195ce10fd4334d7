//! A scripted worker-protocol client (worker-protocol.md): connects to a
//! daemon socket, shakes hands at a chosen client version, sends requests
//! built field by field ([`Wire`], raw bytes allowed, so malformed input can
//! be sent too), reads the stderr channel until `STDERR_LAST` or
//! `STDERR_ERROR` (answering `STDERR_READ` from a source the test sets, and
//! collecting every message), then reads typed replies.
//!
//! Everything the daemon sends is also kept as a transcript of wire tokens
//! (each u64, each string, each unframed NAR), labelled with the field it
//! was read as, so that two daemons' answers can be compared token by token
//! (which is byte for byte: strings are checked to carry zero padding)
//! after normalising named fields.
//!
//! Synchronous and blocking, with a read timeout, so a daemon that stops
//! answering fails the test instead of hanging it.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use worker_protocol::stderr::{
    STDERR_ERROR, STDERR_LAST, STDERR_NEXT, STDERR_READ, STDERR_RESULT, STDERR_START_ACTIVITY, STDERR_STOP_ACTIVITY,
    STDERR_WRITE,
};
use worker_protocol::{Field, Op, WORKER_MAGIC_1, WORKER_MAGIC_2};

/// The version word of protocol 1.`minor`.
pub const fn version(minor: u64) -> u64 {
    0x100 | minor
}

/// The longest string or NAR entry the client accepts from a daemon.
const MAX_STRING: u64 = 256 << 20;
/// The most elements in one list the client accepts.
const MAX_ELEMENTS: u64 = 1 << 22;

/// Why talking to the daemon failed (as opposed to the daemon reporting an
/// error, which is a [`DaemonError`]).
#[derive(Debug)]
pub enum ClientError {
    /// The daemon closed the connection (end of file, reset, broken pipe).
    Closed,
    /// The daemon did not answer within the read timeout.
    Timeout,
    Io(io::Error),
    /// The daemon sent something this client cannot make sense of.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Closed => f.write_str("the daemon closed the connection"),
            ClientError::Timeout => f.write_str("the daemon did not answer in time"),
            ClientError::Io(e) => write!(f, "socket error: {e}"),
            ClientError::Protocol(m) => write!(f, "protocol violation by the daemon: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                ClientError::Closed
            }
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
            _ => ClientError::Io(e),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The bytes of a request (or of any client-to-daemon data), built field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wire(Vec<u8>);

impl Wire {
    pub fn new() -> Wire {
        Wire(Vec::new())
    }

    /// A request: the operation word, fields to follow.
    pub fn op(op: Op) -> Wire {
        Wire::new().u64(op as u64)
    }

    /// A request for an operation number that may not exist.
    pub fn op_number(n: u64) -> Wire {
        Wire::new().u64(n)
    }

    pub fn u64(mut self, v: u64) -> Wire {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bool(self, b: bool) -> Wire {
        self.u64(u64::from(b))
    }

    /// A length-prefixed, zero-padded byte string.
    pub fn bytes(mut self, b: &[u8]) -> Wire {
        self = self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len() + (8 - b.len() % 8) % 8, 0);
        self
    }

    pub fn str(self, s: &str) -> Wire {
        self.bytes(s.as_bytes())
    }

    /// A list or set of strings, in the order given.
    pub fn strings<I, S>(mut self, items: I) -> Wire
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let items: Vec<S> = items.into_iter().collect();
        self = self.u64(items.len() as u64);
        for s in &items {
            self = self.str(s.as_ref());
        }
        self
    }

    /// A map of strings, in the order given.
    pub fn string_map<I, K, V>(mut self, pairs: I) -> Wire
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        self = self.u64(pairs.len() as u64);
        for (k, v) in &pairs {
            self = self.str(k.as_ref()).str(v.as_ref());
        }
        self
    }

    /// Bytes as they are, unpadded (an inline NAR, an export stream, or
    /// deliberately malformed input).
    pub fn raw(mut self, b: &[u8]) -> Wire {
        self.0.extend_from_slice(b);
        self
    }

    /// `data` as a framed stream (worker-protocol.md §2.1): frames of at most
    /// `frame` bytes, then the zero terminator.
    pub fn framed(mut self, data: &[u8], frame: usize) -> Wire {
        for chunk in data.chunks(frame.max(1)) {
            self = self.u64(chunk.len() as u64).raw(chunk);
        }
        self.u64(0)
    }

    /// Appends another piece.
    pub fn then(mut self, other: &Wire) -> Wire {
        self.0.extend_from_slice(&other.0);
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// One value as it was read off the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    U64(u64),
    /// A padded string's contents.
    Bytes(Vec<u8>),
    /// Bytes without a length of their own (an unframed NAR).
    Raw(Vec<u8>),
}

/// A value of the transcript with the field it was read as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub label: &'static str,
    pub value: Value,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Value::U64(v) => write!(f, "{}: {v} ({v:#x})", self.label),
            Value::Bytes(b) => write!(f, "{}: {:?}", self.label, String::from_utf8_lossy(b)),
            Value::Raw(b) => {
                write!(
                    f,
                    "{}: {} raw bytes, sha256 {}",
                    self.label,
                    b.len(),
                    store::hash::Algorithm::Sha256.digest(b).to_base16()
                )
            }
        }
    }
}

/// A message of the stderr channel other than the closing LAST or ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stderr {
    Next(String),
    /// The daemon asked for up to this many bytes of the source.
    Read(u64),
    Write(Vec<u8>),
    StartActivity {
        id: u64,
        level: u64,
        kind: u64,
        text: String,
        fields: Vec<Field>,
        parent: u64,
    },
    StopActivity {
        id: u64,
    },
    Result {
        id: u64,
        kind: u64,
        fields: Vec<Field>,
    },
}

/// An error the daemon reported with `STDERR_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonError {
    /// The text as sent (may hold ANSI colours and an `error: ` prefix).
    pub message: String,
    /// The exit status (protocol < 1.26 only).
    pub exit_status: Option<u64>,
    /// The verbosity level (protocol ≥ 1.26 only).
    pub level: Option<u64>,
    /// Trace lines (protocol ≥ 1.26 only).
    pub traces: Vec<String>,
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the stderr channel carried for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub messages: Vec<Stderr>,
    /// `Ok` for `STDERR_LAST` (a reply follows), the error otherwise.
    pub result: Result<(), DaemonError>,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The error, or a panic naming what was expected.
    pub fn expect_err(&self, what: &str) -> &DaemonError {
        match &self.result {
            Err(e) => e,
            Ok(()) => panic!("{what}: the daemon answered STDERR_LAST where an error was expected"),
        }
    }

    /// The STDERR_WRITE data, concatenated.
    pub fn written(&self) -> Vec<u8> {
        self.messages
            .iter()
            .filter_map(|m| if let Stderr::Write(d) = m { Some(d.as_slice()) } else { None })
            .flatten()
            .copied()
            .collect()
    }
}

/// What the daemon said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The daemon's protocol version word.
    pub server_version: u64,
    /// The daemon's feature list (minor ≥ 38).
    pub features: Option<Vec<String>>,
    /// The daemon's Nix version string (minor ≥ 33).
    pub daemon_version: Option<String>,
    /// 0 unknown, 1 trusted, 2 not trusted (minor ≥ 35).
    pub trust: Option<u64>,
    /// Messages sent before the handshake's STDERR_LAST.
    pub startup: Outcome,
}

/// What a daemon did to the connection after reporting an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterError {
    /// It answered the next request.
    Continues,
    /// It closed the connection, after sending these further errors.
    Closes { further_errors: Vec<DaemonError> },
}

/// The fields of a `SetOptions` request (worker-protocol.md §7.19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub keep_failed: bool,
    pub keep_going: bool,
    pub try_fallback: bool,
    pub verbosity: u64,
    pub max_build_jobs: u64,
    pub max_silent_time: u64,
    pub verbose_build: u64,
    pub build_cores: u64,
    pub use_substitutes: bool,
    pub overrides: Vec<(String, String)>,
}

impl Default for Options {
    /// What a legacy command (`nix-store`) sends by default.
    fn default() -> Options {
        Options {
            keep_failed: false,
            keep_going: false,
            try_fallback: false,
            verbosity: 3,
            max_build_jobs: 1,
            max_silent_time: 0,
            verbose_build: 0,
            build_cores: 0,
            use_substitutes: true,
            overrides: Vec::new(),
        }
    }
}

impl Options {
    /// The request at `minor` (overrides exist from 1.12).
    pub fn request(&self, minor: u64) -> Wire {
        let w = Wire::op(Op::SetOptions)
            .bool(self.keep_failed)
            .bool(self.keep_going)
            .bool(self.try_fallback)
            .u64(self.verbosity)
            .u64(self.max_build_jobs)
            .u64(self.max_silent_time)
            .u64(1) // obsolete useBuildHook
            .u64(self.verbose_build)
            .u64(0) // obsolete logType
            .u64(0) // obsolete printBuildTrace
            .u64(self.build_cores)
            .bool(self.use_substitutes);
        if minor >= 12 { w.string_map(self.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str()))) } else { w }
    }
}

/// `UnkeyedValidPathInfo` as read (worker-protocol.md §6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePathInfo {
    pub deriver: String,
    pub nar_hash: String,
    pub references: Vec<String>,
    pub registration_time: u64,
    pub nar_size: u64,
    pub ultimate: bool,
    pub sigs: Vec<String>,
    pub ca: String,
}

/// A `BuildResult` as read (worker-protocol.md §6.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireBuildResult {
    pub status: u64,
    pub error_msg: String,
    pub built_outputs: Vec<(String, String)>,
}

/// The reply of `QueryMissing` (worker-protocol.md §6.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMissing {
    pub will_build: Vec<String>,
    pub will_substitute: Vec<String>,
    pub unknown: Vec<String>,
    pub download_size: u64,
    pub nar_size: u64,
}

/// A `SubstitutablePathInfo` as read (worker-protocol.md §6.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSubstitutable {
    pub deriver: String,
    pub references: Vec<String>,
    pub download_size: u64,
    pub nar_size: u64,
}

/// A connection to a daemon.
pub struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// The negotiated minor (0 before the handshake).
    pub minor: u64,
    transcript: Vec<Token>,
    source: Vec<u8>,
    source_pos: usize,
    /// The most bytes given per STDERR_READ answer (the daemon's ask is the
    /// other bound).
    pub read_chunk: usize,
}

impl Client {
    /// Connects without shaking hands (for tests of the handshake itself).
    pub fn open(socket: &Path) -> Result<Client> {
        Client::from_stream(UnixStream::connect(socket)?)
    }

    /// A client on a connection made elsewhere (by another user, say: a
    /// daemon takes the peer's credentials as they were at connect time).
    pub fn from_stream(stream: UnixStream) -> Result<Client> {
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client {
            stream,
            reader,
            minor: 0,
            transcript: Vec::new(),
            source: Vec::new(),
            source_pos: 0,
            read_chunk: usize::MAX,
        })
    }

    /// Connects and shakes hands as a client of protocol 1.`minor` with no features.
    pub fn connect(socket: &Path, minor: u64) -> Result<(Client, Hello)> {
        let mut c = Client::open(socket)?;
        let hello = c.handshake(version(minor), &[])?;
        Ok((c, hello))
    }

    /// Changes the read timeout (30 s by default).
    pub fn set_timeout(&self, timeout: Duration) -> Result<()> {
        Ok(self.stream.set_read_timeout(Some(timeout))?)
    }

    /// The handshake (worker-protocol.md §3.1) as clients up to 2.22 do it:
    /// the magic, then the daemon's answer, then our version and the rest.
    pub fn handshake(&mut self, client_version: u64, features: &[&str]) -> Result<Hello> {
        self.send(&Wire::new().u64(WORKER_MAGIC_1))?;
        let magic = self.read_u64("magic")?;
        if magic != WORKER_MAGIC_2 {
            return Err(ClientError::Protocol(format!("bad magic {magic:#x}")));
        }
        let server_version = self.read_u64("serverVersion")?;
        self.minor = (client_version.min(server_version)) & 0xff;
        self.send(&Wire::new().u64(client_version))?;
        let mut hello = Hello {
            server_version,
            features: None,
            daemon_version: None,
            trust: None,
            startup: Outcome { messages: Vec::new(), result: Ok(()) },
        };
        if self.minor >= 38 {
            self.send(&Wire::new().strings(features))?;
            hello.features = Some(self.read_strings("feature")?);
        }
        let mut rest = Wire::new();
        if self.minor >= 14 {
            rest = rest.u64(0); // no CPU affinity
        }
        if self.minor >= 11 {
            rest = rest.u64(0); // obsolete reserveSpace
        }
        self.send(&rest)?;
        if self.minor >= 33 {
            hello.daemon_version = Some(self.read_string("daemonVersion")?);
        }
        if self.minor >= 35 {
            hello.trust = Some(self.read_u64("trust")?);
        }
        hello.startup = self.read_stderr()?;
        Ok(hello)
    }

    /// Sends bytes and flushes.
    pub fn send(&mut self, wire: &Wire) -> Result<()> {
        self.stream.write_all(wire.as_bytes())?;
        Ok(self.stream.flush()?)
    }

    /// Sends a request and reads the stderr channel to its end.
    pub fn call(&mut self, wire: &Wire) -> Result<Outcome> {
        self.send(wire)?;
        self.read_stderr()
    }

    /// `SetOptions`, which must succeed.
    pub fn set_options(&mut self, options: &Options) -> Result<Outcome> {
        let out = self.call(&options.request(self.minor))?;
        if let Err(e) = &out.result {
            return Err(ClientError::Protocol(format!("SetOptions failed: {e}")));
        }
        Ok(out)
    }

    /// The data STDERR_READ requests are answered from (replacing what was left).
    pub fn set_source(&mut self, data: Vec<u8>) {
        self.source = data;
        self.source_pos = 0;
    }

    /// How many bytes of the source the daemon has not asked for.
    pub fn source_left(&self) -> usize {
        self.source.len() - self.source_pos
    }

    /// Reads stderr messages until `STDERR_LAST` or `STDERR_ERROR`,
    /// answering `STDERR_READ` from the source.
    pub fn read_stderr(&mut self) -> Result<Outcome> {
        let mut messages = Vec::new();
        loop {
            let code = self.read_u64("stderr")?;
            let msg = match code {
                STDERR_LAST => return Ok(Outcome { messages, result: Ok(()) }),
                STDERR_ERROR => {
                    let error = self.read_error()?;
                    return Ok(Outcome { messages, result: Err(error) });
                }
                STDERR_NEXT => Stderr::Next(self.read_string("logLine")?),
                STDERR_READ => {
                    let n = self.read_u64("readLength")?;
                    let take = (n as usize).min(self.read_chunk).min(self.source_left());
                    if take == 0 {
                        return Err(ClientError::Protocol(format!(
                            "the daemon asked for {n} bytes but the source is exhausted (messages so far: {messages:?})"
                        )));
                    }
                    let chunk = self.source[self.source_pos..self.source_pos + take].to_vec();
                    self.source_pos += take;
                    self.send(&Wire::new().bytes(&chunk))?;
                    Stderr::Read(n)
                }
                STDERR_WRITE => Stderr::Write(self.read_bytes("writeData")?),
                STDERR_START_ACTIVITY => {
                    let id = self.read_u64("activityId")?;
                    let level = self.read_u64("activityLevel")?;
                    let kind = self.read_u64("activityType")?;
                    let text = self.read_string("activityText")?;
                    let fields = self.read_fields()?;
                    let parent = self.read_u64("parentActivityId")?;
                    Stderr::StartActivity { id, level, kind, text, fields, parent }
                }
                STDERR_STOP_ACTIVITY => Stderr::StopActivity { id: self.read_u64("activityId")? },
                STDERR_RESULT => {
                    let id = self.read_u64("activityId")?;
                    let kind = self.read_u64("resultType")?;
                    let fields = self.read_fields()?;
                    Stderr::Result { id, kind, fields }
                }
                other => return Err(ClientError::Protocol(format!("unknown stderr message {other:#x}"))),
            };
            messages.push(msg);
        }
    }

    fn read_fields(&mut self) -> Result<Vec<Field>> {
        let n = self.read_count("fieldCount")?;
        let mut fields = Vec::new();
        for _ in 0..n {
            match self.read_u64("fieldType")? {
                0 => fields.push(Field::Int(self.read_u64("fieldInt")?)),
                1 => fields.push(Field::Str(self.read_string("fieldString")?)),
                t => return Err(ClientError::Protocol(format!("unknown activity field type {t}"))),
            }
        }
        Ok(fields)
    }

    fn read_error(&mut self) -> Result<DaemonError> {
        if self.minor >= 26 {
            let tag = self.read_string("errorType")?;
            if tag != "Error" {
                return Err(ClientError::Protocol(format!("error type tag {tag:?} is not \"Error\"")));
            }
            let level = self.read_u64("errorLevel")?;
            let _name = self.read_string("errorName")?;
            let message = self.read_string("errorMessage")?;
            if self.read_u64("errorHasPosition")? != 0 {
                return Err(ClientError::Protocol("an error carries a position".into()));
            }
            let n = self.read_count("errorTraceCount")?;
            let mut traces = Vec::new();
            for _ in 0..n {
                if self.read_u64("traceHasPosition")? != 0 {
                    return Err(ClientError::Protocol("an error trace carries a position".into()));
                }
                traces.push(self.read_string("errorTrace")?);
            }
            Ok(DaemonError { message, exit_status: None, level: Some(level), traces })
        } else {
            let message = self.read_string("errorMessage")?;
            let status = self.read_u64("errorExitStatus")?;
            Ok(DaemonError { message, exit_status: Some(status), level: None, traces: Vec::new() })
        }
    }

    /// After an error: whether the daemon still answers. Sends `SyncWithGC`
    /// (no fields, answered with 1) and reads what comes back; a daemon
    /// that closes may send more errors first (CppNix repeats the error when
    /// it fails while reading a request).
    pub fn probe(&mut self) -> Result<AfterError> {
        // The daemon may have closed already: then this write fails, but
        // what it sent before closing can still be read.
        let _ = self.send(&Wire::op(Op::SyncWithGC));
        let mut further_errors = Vec::new();
        loop {
            match self.read_stderr() {
                Ok(Outcome { result: Ok(()), .. }) if further_errors.is_empty() => {
                    let one = self.read_u64("syncWithGcReply")?;
                    return if one == 1 {
                        Ok(AfterError::Continues)
                    } else {
                        Err(ClientError::Protocol(format!("SyncWithGC answered {one}")))
                    };
                }
                Ok(Outcome { result: Ok(()), .. }) => {
                    return Err(ClientError::Protocol("STDERR_LAST after a repeated error".into()));
                }
                Ok(Outcome { result: Err(e), .. }) => further_errors.push(e),
                Err(ClientError::Closed) => return Ok(AfterError::Closes { further_errors }),
                Err(e) => return Err(e),
            }
        }
    }

    /// The tokens read since the last call.
    pub fn take_transcript(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.transcript)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.reader.read_exact(buf)?;
        Ok(())
    }

    fn raw_u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn raw_bytes(&mut self, limit: u64) -> Result<Vec<u8>> {
        let len = self.raw_u64()?;
        if len > limit {
            return Err(ClientError::Protocol(format!("a string of {len} bytes")));
        }
        let mut data = vec![0u8; len as usize];
        self.fill(&mut data)?;
        let mut pad = [0u8; 8];
        let p = ((8 - len % 8) % 8) as usize;
        self.fill(&mut pad[..p])?;
        if pad.iter().any(|&b| b != 0) {
            return Err(ClientError::Protocol("non-zero padding".into()));
        }
        Ok(data)
    }

    fn record(&mut self, label: &'static str, value: Value) {
        self.transcript.push(Token { label, value });
    }

    pub fn read_u64(&mut self, label: &'static str) -> Result<u64> {
        let v = self.raw_u64()?;
        self.record(label, Value::U64(v));
        Ok(v)
    }

    /// A bool as CppNix reads it: any non-zero value is true.
    pub fn read_bool(&mut self, label: &'static str) -> Result<bool> {
        Ok(self.read_u64(label)? != 0)
    }

    pub fn read_bytes(&mut self, label: &'static str) -> Result<Vec<u8>> {
        let b = self.raw_bytes(MAX_STRING)?;
        self.record(label, Value::Bytes(b.clone()));
        Ok(b)
    }

    pub fn read_string(&mut self, label: &'static str) -> Result<String> {
        let b = self.read_bytes(label)?;
        String::from_utf8(b).map_err(|_| ClientError::Protocol(format!("{label} is not UTF-8")))
    }

    fn read_count(&mut self, label: &'static str) -> Result<u64> {
        let n = self.read_u64(label)?;
        if n > MAX_ELEMENTS {
            return Err(ClientError::Protocol(format!("{label}: {n} elements")));
        }
        Ok(n)
    }

    /// A list or set of strings, each labelled `label`.
    pub fn read_strings(&mut self, label: &'static str) -> Result<Vec<String>> {
        let n = self.read_count("count")?;
        (0..n).map(|_| self.read_string(label)).collect()
    }

    pub fn read_string_map(&mut self, key: &'static str, value: &'static str) -> Result<Vec<(String, String)>> {
        let n = self.read_count("count")?;
        (0..n).map(|_| Ok((self.read_string(key)?, self.read_string(value)?))).collect()
    }

    /// `UnkeyedValidPathInfo` at the connection's minor.
    pub fn read_path_info(&mut self) -> Result<WirePathInfo> {
        let deriver = self.read_string("deriver")?;
        let nar_hash = self.read_string("narHash")?;
        let references = self.read_strings("reference")?;
        let registration_time = self.read_u64("registrationTime")?;
        let nar_size = self.read_u64("narSize")?;
        let (mut ultimate, mut sigs, mut ca) = (false, Vec::new(), String::new());
        if self.minor >= 16 {
            ultimate = self.read_bool("ultimate")?;
            sigs = self.read_strings("signature")?;
            ca = self.read_string("ca")?;
        }
        Ok(WirePathInfo { deriver, nar_hash, references, registration_time, nar_size, ultimate, sigs, ca })
    }

    /// `ValidPathInfo`: the path, then the unkeyed info.
    pub fn read_valid_path_info(&mut self) -> Result<(String, WirePathInfo)> {
        let path = self.read_string("path")?;
        Ok((path, self.read_path_info()?))
    }

    /// A `BuildResult` at the connection's minor.
    pub fn read_build_result(&mut self) -> Result<WireBuildResult> {
        let status = self.read_u64("buildStatus")?;
        let error_msg = self.read_string("buildErrorMsg")?;
        if self.minor >= 29 {
            self.read_u64("timesBuilt")?;
            self.read_bool("isNonDeterministic")?;
            self.read_u64("startTime")?;
            self.read_u64("stopTime")?;
        }
        if self.minor >= 37 {
            for label in ["cpuUser", "cpuSystem"] {
                if self.read_u64(label)? != 0 {
                    self.read_u64(label)?;
                }
            }
        }
        let built_outputs =
            if self.minor >= 28 { self.read_string_map("drvOutputId", "realisation")? } else { Vec::new() };
        Ok(WireBuildResult { status, error_msg, built_outputs })
    }

    /// The reply of `BuildPathsWithResults`: derived path and result, in order.
    pub fn read_keyed_build_results(&mut self) -> Result<Vec<(String, WireBuildResult)>> {
        let n = self.read_count("count")?;
        (0..n).map(|_| Ok((self.read_string("derivedPath")?, self.read_build_result()?))).collect()
    }

    /// The reply of `QueryMissing`.
    pub fn read_missing(&mut self) -> Result<WireMissing> {
        Ok(WireMissing {
            will_build: self.read_strings("willBuild")?,
            will_substitute: self.read_strings("willSubstitute")?,
            unknown: self.read_strings("unknown")?,
            download_size: self.read_u64("downloadSize")?,
            nar_size: self.read_u64("narSize")?,
        })
    }

    /// A `SubstitutablePathInfo`.
    pub fn read_substitutable_info(&mut self) -> Result<WireSubstitutable> {
        Ok(WireSubstitutable {
            deriver: self.read_string("deriver")?,
            references: self.read_strings("reference")?,
            download_size: self.read_u64("downloadSize")?,
            nar_size: self.read_u64("narSize")?,
        })
    }

    /// The reply of `QuerySubstitutablePathInfos`: (path, info) pairs.
    pub fn read_substitutable_infos(&mut self) -> Result<Vec<(String, WireSubstitutable)>> {
        let n = self.read_count("count")?;
        (0..n).map(|_| Ok((self.read_string("path")?, self.read_substitutable_info()?))).collect()
    }

    /// The reply of `FindRoots`: (link, target) pairs.
    pub fn read_roots(&mut self) -> Result<Vec<(String, String)>> {
        let n = self.read_count("count")?;
        (0..n).map(|_| Ok((self.read_string("rootLink")?, self.read_string("rootTarget")?))).collect()
    }

    /// The reply of `CollectGarbage`: paths, bytes freed (the obsolete zero is checked).
    pub fn read_gc_result(&mut self) -> Result<(Vec<String>, u64)> {
        let paths = self.read_strings("gcPath")?;
        let freed = self.read_u64("bytesFreed")?;
        self.read_u64("obsolete")?;
        Ok((paths, freed))
    }

    /// An unframed NAR (`NarFromPath`), found by following its grammar
    /// (worker-protocol.md §2.2); recorded as one token.
    pub fn read_nar(&mut self) -> Result<Vec<u8>> {
        let mut nar = Vec::new();
        self.nar_expect(&mut nar, b"nix-archive-1")?;
        self.nar_node(&mut nar, 0)?;
        self.record("nar", Value::Raw(nar.clone()));
        Ok(nar)
    }

    fn nar_str(&mut self, nar: &mut Vec<u8>) -> Result<Vec<u8>> {
        let s = self.raw_bytes(MAX_STRING)?;
        nar.extend_from_slice(&(s.len() as u64).to_le_bytes());
        nar.extend_from_slice(&s);
        nar.resize(nar.len() + (8 - s.len() % 8) % 8, 0);
        Ok(s)
    }

    fn nar_expect(&mut self, nar: &mut Vec<u8>, want: &[u8]) -> Result<()> {
        let got = self.nar_str(nar)?;
        if got != want {
            return Err(ClientError::Protocol(format!(
                "NAR: expected {:?}, got {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&got)
            )));
        }
        Ok(())
    }

    fn nar_node(&mut self, nar: &mut Vec<u8>, depth: usize) -> Result<()> {
        if depth > 256 {
            return Err(ClientError::Protocol("NAR nested too deeply".into()));
        }
        self.nar_expect(nar, b"(")?;
        self.nar_expect(nar, b"type")?;
        match self.nar_str(nar)?.as_slice() {
            b"regular" => loop {
                match self.nar_str(nar)?.as_slice() {
                    b"executable" => self.nar_expect(nar, b"")?,
                    b"contents" => {
                        self.nar_str(nar)?;
                    }
                    b")" => return Ok(()),
                    other => {
                        return Err(ClientError::Protocol(format!(
                            "NAR: unexpected {:?}",
                            String::from_utf8_lossy(other)
                        )));
                    }
                }
            },
            b"symlink" => {
                self.nar_expect(nar, b"target")?;
                self.nar_str(nar)?;
                self.nar_expect(nar, b")")
            }
            b"directory" => loop {
                match self.nar_str(nar)?.as_slice() {
                    b")" => return Ok(()),
                    b"entry" => {
                        self.nar_expect(nar, b"(")?;
                        self.nar_expect(nar, b"name")?;
                        self.nar_str(nar)?;
                        self.nar_expect(nar, b"node")?;
                        self.nar_node(nar, depth + 1)?;
                        self.nar_expect(nar, b")")?;
                    }
                    other => {
                        return Err(ClientError::Protocol(format!(
                            "NAR: unexpected {:?}",
                            String::from_utf8_lossy(other)
                        )));
                    }
                }
            },
            other => Err(ClientError::Protocol(format!("NAR: unknown node type {:?}", String::from_utf8_lossy(other)))),
        }
    }

    /// Whether the daemon has closed the connection, waiting at most
    /// `wait` for it to do so; bytes it sends instead are an error.
    pub fn wait_closed(&mut self, wait: Duration) -> Result<bool> {
        self.stream.set_read_timeout(Some(wait))?;
        let mut b = [0u8; 1];
        let r = self.reader.read(&mut b);
        self.stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        match r {
            Ok(0) => Ok(true),
            Ok(_) => {
                Err(ClientError::Protocol(format!("unexpected byte {:#x} while waiting for the daemon to close", b[0])))
            }
            Err(e) => match ClientError::from(e) {
                ClientError::Closed => Ok(true),
                ClientError::Timeout => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Everything the daemon sends until it closes the connection, waiting
    /// at most `wait` for more; also whether it closed (rather than went quiet).
    pub fn read_until_closed(&mut self, wait: Duration) -> Result<(Vec<u8>, bool)> {
        self.stream.set_read_timeout(Some(wait))?;
        let mut rest = Vec::new();
        let r = self.reader.read_to_end(&mut rest);
        self.stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        match r {
            Ok(_) => Ok((rest, true)),
            Err(e) => match ClientError::from(e) {
                ClientError::Closed => Ok((rest, true)),
                ClientError::Timeout => Ok((rest, false)),
                other => Err(other),
            },
        }
    }

    /// Closes our side.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// An export record as `nix-store --export` writes it for one path
/// (worker-protocol.md §7.32), without the leading `1` marker.
pub fn export_record(nar: &[u8], path: &str, references: &[&str], deriver: &str) -> Wire {
    Wire::new().raw(nar).u64(worker_protocol::EXPORT_MAGIC).str(path).strings(references).str(deriver).u64(0)
}

/// A `nix-store --export` stream of records (each preceded by `1`, ended by `0`).
pub fn export_stream(records: &[Wire]) -> Wire {
    let mut w = Wire::new();
    for r in records {
        w = w.u64(1).then(r);
    }
    w.u64(0)
}
