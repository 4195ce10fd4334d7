//! The stderr (logger) channel the daemon writes while it works on a
//! request (worker-protocol.md §4): log lines, activities and their results,
//! data requests, and the closing LAST or ERROR.

use super::wire::WireWrite;
use tokio::io::AsyncWrite;

pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
pub const STDERR_READ: u64 = 0x6461_7461;
pub const STDERR_WRITE: u64 = 0x6461_7416;
pub const STDERR_LAST: u64 = 0x616c_7473;
pub const STDERR_ERROR: u64 = 0x6378_7470;
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Verbosity levels as Nix ≥ 2.4 numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u64)]
pub enum Verbosity {
    Error = 0,
    Warn = 1,
    Notice = 2,
    Info = 3,
    Talkative = 4,
    Chatty = 5,
    Debug = 6,
    Vomit = 7,
}

/// Activity types (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum ActivityType {
    Unknown = 0,
    CopyPath = 100,
    FileTransfer = 101,
    Realise = 102,
    CopyPaths = 103,
    Builds = 104,
    Build = 105,
    OptimiseStore = 106,
    VerifyPaths = 107,
    Substitute = 108,
    QueryPathInfo = 109,
    PostBuildHook = 110,
    BuildWaiting = 111,
}

/// Result types (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum ResultType {
    FileLinked = 100,
    BuildLogLine = 101,
    UntrustedPath = 102,
    CorruptedPath = 103,
    SetPhase = 104,
    Progress = 105,
    SetExpected = 106,
    PostBuildLogLine = 107,
}

/// A field of an activity or result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Int(u64),
    Str(String),
}

/// One message on the stderr channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StderrMessage {
    /// A log line (printed by the client whatever its verbosity).
    Next(String),
    /// Ask the client for up to `n` bytes of its source.
    Read(u64),
    /// Data for the client's sink.
    Write(Vec<u8>),
    StartActivity {
        id: u64,
        level: Verbosity,
        kind: ActivityType,
        text: String,
        fields: Vec<Field>,
        parent: u64,
    },
    StopActivity {
        id: u64,
    },
    Result {
        id: u64,
        kind: ResultType,
        fields: Vec<Field>,
    },
    /// The work finished; the reply follows.
    Last,
    /// The work failed; no reply follows.
    Error {
        message: String,
        exit_status: u64,
    },
}

async fn write_fields<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, fields: &[Field]) -> std::io::Result<()> {
    w.write_u64_wire(fields.len() as u64).await?;
    for f in fields {
        match f {
            Field::Int(i) => {
                w.write_u64_wire(0).await?;
                w.write_u64_wire(*i).await?;
            }
            Field::Str(s) => {
                w.write_u64_wire(1).await?;
                w.write_str(s).await?;
            }
        }
    }
    Ok(())
}

/// An error as CppNix's `showErrorInfo` formats it for clients before 1.26:
/// `error: ` before the first line, the others indented to line up with it,
/// trailing whitespace trimmed from every line.
fn legacy_error_text(message: &str) -> String {
    const PREFIX: &str = "error: ";
    message
        .trim_end()
        .split('\n')
        .enumerate()
        .map(|(i, line)| {
            let indent = if i == 0 { PREFIX } else { "       " };
            format!("{indent}{line}").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl StderrMessage {
    /// Encodes the message for a client at `minor`. Activities do not exist
    /// before 1.20: a started activity with text becomes a `<text>...` line
    /// and stops and results are dropped, as CppNix does. Errors are
    /// structured from 1.26, a message and an exit status before.
    pub async fn write<W: AsyncWrite + Unpin + ?Sized>(&self, w: &mut W, minor: u64) -> std::io::Result<()> {
        match self {
            StderrMessage::Next(s) => {
                w.write_u64_wire(STDERR_NEXT).await?;
                w.write_str(s).await
            }
            StderrMessage::Read(n) => {
                w.write_u64_wire(STDERR_READ).await?;
                w.write_u64_wire(*n).await
            }
            StderrMessage::Write(data) => {
                w.write_u64_wire(STDERR_WRITE).await?;
                w.write_bytes(data).await
            }
            StderrMessage::StartActivity { id, level, kind, text, fields, parent } => {
                if minor < 20 {
                    if !text.is_empty() {
                        w.write_u64_wire(STDERR_NEXT).await?;
                        w.write_str(&format!("{text}...\n")).await?;
                    }
                    return Ok(());
                }
                w.write_u64_wire(STDERR_START_ACTIVITY).await?;
                w.write_u64_wire(*id).await?;
                w.write_u64_wire(*level as u64).await?;
                w.write_u64_wire(*kind as u64).await?;
                w.write_str(text).await?;
                write_fields(w, fields).await?;
                w.write_u64_wire(*parent).await
            }
            StderrMessage::StopActivity { id } => {
                if minor < 20 {
                    return Ok(());
                }
                w.write_u64_wire(STDERR_STOP_ACTIVITY).await?;
                w.write_u64_wire(*id).await
            }
            StderrMessage::Result { id, kind, fields } => {
                if minor < 20 {
                    return Ok(());
                }
                w.write_u64_wire(STDERR_RESULT).await?;
                w.write_u64_wire(*id).await?;
                w.write_u64_wire(*kind as u64).await?;
                write_fields(w, fields).await
            }
            StderrMessage::Last => w.write_u64_wire(STDERR_LAST).await,
            StderrMessage::Error { message, exit_status } => {
                w.write_u64_wire(STDERR_ERROR).await?;
                if minor >= 26 {
                    w.write_str("Error").await?;
                    w.write_u64_wire(Verbosity::Error as u64).await?;
                    w.write_str("Error").await?;
                    w.write_str(message).await?;
                    w.write_u64_wire(0).await?; // no position
                    w.write_u64_wire(0).await // no traces
                } else {
                    w.write_str(&legacy_error_text(message)).await?;
                    w.write_u64_wire(*exit_status).await
                }
            }
        }
    }
}
