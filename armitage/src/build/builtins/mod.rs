//! The builders CppNix runs inside itself instead of executing a program
//! (`builder = "builtin:<name>"`), dispatched by name as CppNix's
//! `LocalDerivationGoal::runChild` does (local-derivation-goal.cc): they run
//! in the build child, after the sandbox is entered and the "ready" line is
//! written, with the derivation's environment (placeholders already
//! rewritten).
//!
//! Their failures reach the client the way CppNix's do: the exception's
//! text (`error: ...`, coloured as CppNix colours it) goes to the build log,
//! the child exits with 1, and the build fails with "builder for '…' failed
//! with exit code 1" and the last log lines. Their warnings are sent as
//! CppNix's JSON log messages (`@nix {"action":"msg",...}` lines, which the
//! daemon forwards to the client instead of logging them).
//!
//! An unknown name fails the same way, with CppNix's "unsupported builtin
//! builder '…'".

pub mod buildenv;
pub mod fetchurl;
pub mod unpack_channel;

use std::fmt::Display;
use std::io::Write;

/// What a builtin runs with.
pub struct Context<'a> {
    /// The derivation's environment.
    pub env: &'a [(Vec<u8>, Vec<u8>)],
    /// The protocol minor of the client whose request started the build
    /// (0: unknown, taken as the newest). Some messages changed between
    /// Nix releases; they are worded as the nix-daemon of the client's
    /// version words them.
    pub client_minor: u64,
}

impl Context<'_> {
    /// An attribute of the derivation (an environment variable), as bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.env.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_slice())
    }

    /// An attribute that must be there (CppNix's "attribute '…' missing").
    pub fn attr(&self, name: &str) -> Result<&[u8], String> {
        self.get(name).ok_or_else(|| format!("attribute '{}' missing", arg(name)))
    }

    /// Whether the client speaks the protocol of Nix 2.15 or later
    /// (protocol 1.35), where some builtin messages changed.
    pub fn new_wording(&self) -> bool {
        self.client_minor == 0 || self.client_minor >= 35
    }
}

/// Runs the builtin `name`. The error is the text CppNix writes to the log
/// for it (see [`what`]).
pub fn run(name: &str, cx: &Context) -> Result<(), String> {
    let result = match name {
        "fetchurl" => fetchurl::run(cx.env),
        "buildenv" => buildenv::run(cx, &mut warn),
        "unpack-channel" => unpack_channel::run(cx),
        _ => Err(format!("unsupported builtin builder '{}'", arg(name))),
    };
    result.map_err(|msg| what(&msg))
}

/// An argument in a CppNix error message: its message formatter shows
/// every argument in magenta (`hintfmt`), and clients strip the colours
/// when their stderr is not a terminal.
pub fn arg(value: impl Display) -> String {
    format!("\x1b[35;1m{value}\x1b[0m")
}

/// The message of CppNix's `SysError`: what was being done, then the
/// system's description of the error (as `strerror` words it).
pub fn sys_error(doing: impl Display, e: &std::io::Error) -> String {
    format!("\x1b[0m{doing}: {}", arg(strerror(e)))
}

/// `strerror` of an I/O error: Rust's text without " (os error N)".
fn strerror(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if e.raw_os_error().is_some() => text[..at].to_owned(),
        _ => text,
    }
}

/// A message as CppNix's `Error::what()` prints it: a red `error:` prefix,
/// continuation lines indented under the message, trailing blanks trimmed.
pub fn what(msg: &str) -> String {
    const PREFIX: &str = "\x1b[31;1merror:\x1b[0m ";
    const INDENT: &str = "       ";
    msg.trim_end()
        .split('\n')
        .enumerate()
        .map(|(i, line)| format!("{}{line}", if i == 0 { PREFIX } else { INDENT }).trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends a warning to the client as CppNix's builtins do (`warn()` through
/// the JSON logger): an `@nix` message line of level 1 on stderr.
pub fn warn(text: String) {
    let msg = format!("\x1b[35;1mwarning:\x1b[0m {text}");
    let line = serde_json::json!({ "action": "msg", "level": 1, "msg": msg });
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "@nix {line}");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_indents_continuation_lines_as_cppnix() {
        assert_eq!(what("one line"), "\x1b[31;1merror:\x1b[0m one line");
        assert_eq!(what("first:\n\n  A\n  B\n"), "\x1b[31;1merror:\x1b[0m first:\n\n         A\n         B");
    }

    #[test]
    fn sys_error_has_strerror_text() {
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(sys_error("opening 'x'", &e), "\x1b[0mopening 'x': \x1b[35;1mNo such file or directory\x1b[0m");
    }

    #[test]
    fn unknown_builtins_fail_as_in_cppnix() {
        let cx = Context { env: &[], client_minor: 0 };
        let err = run("frobnicate", &cx).unwrap_err();
        assert_eq!(err, "\x1b[31;1merror:\x1b[0m unsupported builtin builder '\x1b[35;1mfrobnicate\x1b[0m'");
    }
}
