//! Messages worded and coloured as CppNix's builtins print them: arguments
//! in magenta, `SysError` texts, the red `error:` prefix, JSON-logged warnings.

use std::fmt::Display;
use std::io::Write;

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
}
