//! `post-build-hook` (CppNix `runPostBuildHook`): after a build registered
//! its outputs, the hook runs with `DRV_PATH` and `OUT_PATHS` (space
//! separated) in the daemon's environment; its output (stdout and stderr
//! together) goes to the clients as post-build log lines. A failing hook
//! fails the build (the outputs stay valid), as in CppNix.

use super::executor::run::exit_text;
use super::goal::{Event, GoalCtx};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use store::store_path::StorePath;

/// Why the hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("running post-build-hook '{hook}': {source}")]
    Pipe { hook: String, source: std::io::Error },
    #[error("executing '{hook}': {source}")]
    Exec { hook: String, source: std::io::Error },
    #[error("waiting for post-build-hook '{hook}': {source}")]
    Wait { hook: String, source: std::io::Error },
    /// It ran and failed (`status`: CppNix's `statusToString`).
    #[error("program '{hook}' {status}")]
    Failed { hook: String, status: String },
}

pub(super) fn run(
    hook: &str,
    drv: &StorePath,
    drv_full: &str,
    outs: &[String],
    ctx: &GoalCtx,
) -> Result<(), HookError> {
    ctx.emit(Event::HookStarted(drv.clone()));
    let result = run_inner(hook, drv, drv_full, outs, ctx);
    ctx.emit(Event::HookFinished(drv.clone()));
    result
}

fn run_inner(hook: &str, drv: &StorePath, drv_full: &str, outs: &[String], ctx: &GoalCtx) -> Result<(), HookError> {
    let pipe_failed = |source| HookError::Pipe { hook: hook.to_owned(), source };
    let (reader, writer) = std::io::pipe().map_err(pipe_failed)?;
    let writer2 = writer.try_clone().map_err(pipe_failed)?;
    let mut cmd = Command::new(hook);
    cmd.env("DRV_PATH", drv_full).env("OUT_PATHS", outs.join(" ")).stdin(Stdio::null()).stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().map_err(|source| HookError::Exec { hook: hook.to_owned(), source })?;
    drop(cmd);
    for line in BufReader::new(reader).split(b'\n') {
        let Ok(line) = line else { break };
        ctx.emit(Event::HookLine(drv.clone(), String::from_utf8_lossy(&line).into_owned()));
    }
    let status = child.wait().map_err(|source| HookError::Wait { hook: hook.to_owned(), source })?;
    if !status.success() {
        return Err(HookError::Failed { hook: hook.to_owned(), status: exit_text(Some(status)) });
    }
    Ok(())
}
