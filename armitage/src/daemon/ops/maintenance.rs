//! Looking after the store as a whole (CppNix daemon.cc): OptimiseStore
//! (hard-linking identical files, with CppNix's activities) and VerifyStore
//! (repairing is the policy's to allow).

use super::common::blocking;
use crate::daemon::policy;
use crate::daemon::session::{Input, OpResult, Output, Session};
use local_store::{OptimiseEvent, VerifyLine};
use worker_protocol::{ActivityType, Field, ResultType, StderrMessage, Verbosity, WireWrite};

pub async fn optimise_store<R: Input, W: Output>(s: &mut Session<R, W>) -> OpResult {
    let dir = s.store.store_dir().clone();
    let mut events = Vec::new();
    let stats = blocking(|| {
        s.store.optimise_store_with_events(&mut |e| {
            events.push(match e {
                OptimiseEvent::Start { total } => Optimised::Start(total),
                OptimiseEvent::Path(p) => Optimised::Path(dir.display(p)),
                OptimiseEvent::FileLinked { size, blocks } => Optimised::Linked(size, blocks),
                OptimiseEvent::Done { done, total } => Optimised::Done(done, total),
            })
        })
    });
    report_optimisation(s, events).await?;
    let stats = stats?;
    s.info(
        Verbosity::Info,
        &format!("{:.2} MiB freed by hard-linking {} files", stats.bytes_freed as f64 / 1048576.0, stats.files_linked),
    )
    .await?;
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}

pub async fn verify_store<R: Input, W: Output>(s: &mut Session<R, W>, check_contents: bool, repair: bool) -> OpResult {
    policy::verify_store(s.trust, repair)?;
    let report = blocking(|| s.store.verify_store(check_contents, repair, &mut |_, _| {}))?;
    // In CppNix's order and levels (problems are `printError`ed, unprefixed).
    for line in &report.log {
        match line {
            VerifyLine::Info(l) => s.info(Verbosity::Info, l).await?,
            VerifyLine::Error(l) => s.info(Verbosity::Error, l).await?,
        }
    }
    s.last().await?;
    s.writer.write_bool(!report.errors.is_empty()).await?;
    Ok(())
}

/// A step of `optimise_store_with_events`, owned.
enum Optimised {
    Start(usize),
    Path(String),
    Linked(u64, u64),
    Done(usize, usize),
}

/// What CppNix's `optimiseStore` logs: an actOptimiseStore activity with
/// progress over the paths, and for each path a talkative sub-activity
/// with a resFileLinked result (size, blocks) per file it linked.
async fn report_optimisation<R: Input, W: Output>(
    s: &mut Session<R, W>,
    events: Vec<Optimised>,
) -> std::io::Result<()> {
    let top = s.new_activity_id();
    let start = |id, level, kind, text: String| StderrMessage::StartActivity {
        id,
        level,
        kind,
        text,
        fields: Vec::new(),
        parent: 0,
    };
    let progress = |id, done: usize, total: usize| StderrMessage::Result {
        id,
        kind: ResultType::Progress,
        fields: vec![Field::Int(done as u64), Field::Int(total as u64), Field::Int(0), Field::Int(0)],
    };
    s.log(start(top, Verbosity::Error, ActivityType::OptimiseStore, String::new())).await?;
    let mut current = None;
    for e in events {
        match e {
            Optimised::Start(total) => s.log(progress(top, 0, total)).await?,
            Optimised::Path(p) => {
                let id = s.new_activity_id();
                current = Some(id);
                s.log(start(id, Verbosity::Talkative, ActivityType::Unknown, format!("optimising path '{p}'"))).await?;
            }
            Optimised::Linked(size, blocks) => {
                if let Some(id) = current {
                    s.log(StderrMessage::Result {
                        id,
                        kind: ResultType::FileLinked,
                        fields: vec![Field::Int(size), Field::Int(blocks)],
                    })
                    .await?;
                }
            }
            Optimised::Done(done, total) => {
                if let Some(id) = current.take() {
                    s.log(StderrMessage::StopActivity { id }).await?;
                }
                s.log(progress(top, done, total)).await?;
            }
        }
    }
    if let Some(id) = current {
        s.log(StderrMessage::StopActivity { id }).await?;
    }
    s.log(StderrMessage::StopActivity { id: top }).await
}
