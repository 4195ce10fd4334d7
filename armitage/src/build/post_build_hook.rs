//! `post-build-hook` (CppNix `runPostBuildHook`): after a build registered
//! its outputs, the hook runs with `DRV_PATH` and `OUT_PATHS` (space
//! separated) in the daemon's environment; its output (stdout and stderr
//! together) goes to the clients as post-build log lines. A failing hook
//! fails the build (the outputs stay valid), as in CppNix.

use super::goal::{Event, GoalCtx};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use store::store_path::StorePath;

pub(super) fn run(hook: &str, drv: &StorePath, drv_full: &str, outs: &[String], ctx: &GoalCtx) -> Result<(), String> {
    ctx.emit(Event::HookStarted(drv.clone()));
    let result = run_inner(hook, drv, drv_full, outs, ctx);
    ctx.emit(Event::HookFinished(drv.clone()));
    result
}

fn run_inner(hook: &str, drv: &StorePath, drv_full: &str, outs: &[String], ctx: &GoalCtx) -> Result<(), String> {
    let (reader, writer) = std::io::pipe().map_err(|e| format!("running post-build-hook '{hook}': {e}"))?;
    let writer2 = writer.try_clone().map_err(|e| format!("running post-build-hook '{hook}': {e}"))?;
    let mut cmd = Command::new(hook);
    cmd.env("DRV_PATH", drv_full).env("OUT_PATHS", outs.join(" ")).stdin(Stdio::null()).stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().map_err(|e| format!("executing '{hook}': {e}"))?;
    drop(cmd);
    for line in BufReader::new(reader).split(b'\n') {
        let Ok(line) = line else { break };
        ctx.emit(Event::HookLine(drv.clone(), String::from_utf8_lossy(&line).into_owned()));
    }
    let status = child.wait().map_err(|e| format!("waiting for post-build-hook '{hook}': {e}"))?;
    if !status.success() {
        return Err(format!("program '{hook}' {}", super::run::exit_text(Some(status))));
    }
    Ok(())
}
