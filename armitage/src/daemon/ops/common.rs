//! What the operation families share: how their blocking work runs, the
//! validity check CppNix makes before it reads a path, and the activity
//! CppNix's `queryMissing` opens.

use crate::daemon::session::{Input, OpError, OpResult, Output, Session};
use store::store_path::StorePath;
use worker_protocol::{ActivityType, StderrMessage, Verbosity};

/// Blocking work (a NAR, a walk of the store, a build's bookkeeping), in
/// `block_in_place`: the worker thread's queue goes to another thread
/// meanwhile.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A lookup of one path's row: a few microseconds on a pooled read
/// connection (WAL readers do not wait for the writer), so it runs on the
/// worker thread itself. `block_in_place` would hand the worker's queue to
/// another thread and back for each such query, which costs more CPU than
/// the query (bench/daemon.sh).
pub fn quick<T>(f: impl FnOnce() -> T) -> T {
    f()
}

/// A failure reported to the client; the connection goes on.
pub fn failed(msg: impl Into<String>) -> OpError {
    OpError::Failed(msg.into())
}

/// CppNix's validity checks before it looks at a derivation or exports a
/// path; the wording differs by where CppNix checks ("is not valid" from the
/// database, "is not a valid store path" from the store accessor).
pub fn require_valid<R: Input, W: Output>(s: &Session<R, W>, p: &StorePath, wording: &str) -> OpResult {
    if quick(|| s.store.is_valid(p))? {
        Ok(())
    } else {
        Err(failed(format!("path '{}' {wording}", s.store.display(p))))
    }
}

/// The activity CppNix's `Store::queryMissing` opens whatever it finds
/// (debug level: clients show it only when that verbose).
pub async fn querying_missing_paths<R: Input, W: Output>(s: &mut Session<R, W>) -> std::io::Result<()> {
    let id = s.new_activity_id();
    s.log(StderrMessage::StartActivity {
        id,
        level: Verbosity::Debug,
        kind: ActivityType::Unknown,
        text: "querying info about missing paths".into(),
        fields: Vec::new(),
        parent: 0,
    })
    .await?;
    s.log(StderrMessage::StopActivity { id }).await
}
