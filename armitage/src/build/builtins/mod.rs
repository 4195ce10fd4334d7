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
mod context;
pub mod fetchurl;
mod messages;
pub mod unpack_channel;

pub use context::Context;
pub use messages::{arg, sys_error, warn, what};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_builtins_fail_as_in_cppnix() {
        let cx = Context { env: &[], client_minor: 0 };
        let err = run("frobnicate", &cx).unwrap_err();
        assert_eq!(err, "\x1b[31;1merror:\x1b[0m unsupported builtin builder '\x1b[35;1mfrobnicate\x1b[0m'");
    }
}
