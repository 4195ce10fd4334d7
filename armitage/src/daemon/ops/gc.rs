//! Garbage collection and its roots (CppNix daemon.cc): temporary,
//! indirect and permanent roots, finding the roots, and collecting. Who may
//! do what is the policy's (perm roots, censored roots, liveness).

use super::common::{blocking, failed};
use crate::daemon::policy;
use crate::daemon::session::{Input, OpResult, Output, Session};
use crate::daemon::state::DaemonState;
use local_store::{GcAction, GcOptions};
use std::collections::BTreeSet;
use store::store_path::StorePath;
use worker_protocol::{GcRequest, Verbosity, WireWrite};

pub async fn add_temp_root<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    blocking(|| s.store.add_temp_root(&p))?;
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}

pub async fn add_indirect_root<R: Input, W: Output>(s: &mut Session<R, W>, link: String) -> OpResult {
    let link = absolute(&link);
    blocking(|| s.store.add_indirect_root(&link))?;
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}

pub async fn add_perm_root<R: Input, W: Output>(s: &mut Session<R, W>, path: StorePath, gc_root: String) -> OpResult {
    policy::add_perm_root(s.trust)?;
    let root = absolute(&gc_root);
    let made = blocking(|| s.store.add_perm_root(&path, &root))?;
    s.last().await?;
    s.writer.write_str(&made.to_string_lossy()).await?;
    Ok(())
}

pub async fn sync_with_gc<R: Input, W: Output>(s: &mut Session<R, W>) -> OpResult {
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}

pub async fn find_roots<R: Input, W: Output>(s: &mut Session<R, W>) -> OpResult {
    let censor = policy::censor_roots(s.trust);
    let mut lines = Vec::new();
    let roots = blocking(|| s.store.find_roots_logged(censor, &mut |l| lines.push(l.to_owned())));
    for line in lines {
        s.info(Verbosity::Info, &line).await?;
    }
    let roots = roots?;
    let dir = s.store.store_dir().clone();
    s.last().await?;
    let n: usize = roots.values().map(BTreeSet::len).sum();
    s.writer.write_u64_wire(n as u64).await?;
    for (target, links) in &roots {
        for link in links {
            s.writer.write_str(link).await?;
            s.writer.write_str(&dir.display(target)).await?;
        }
    }
    Ok(())
}

pub async fn collect_garbage<R: Input, W: Output>(s: &mut Session<R, W>, d: &DaemonState, gc: GcRequest) -> OpResult {
    policy::collect_garbage(gc.ignore_liveness)?;
    let action = match gc.action {
        0 => GcAction::ReturnLive,
        1 => GcAction::ReturnDead,
        2 => GcAction::DeleteDead,
        _ => GcAction::DeleteSpecific(gc.paths_to_delete),
    };
    let mut opts = GcOptions::new(action);
    opts.max_freed = gc.max_freed;
    let mut lines = Vec::new();
    let results = blocking(|| s.store.collect_garbage_logged(&opts, &mut |_| {}, &mut |l| lines.push(l.to_owned())));
    for line in lines {
        s.info(Verbosity::Info, &line).await?;
    }
    let results = match results {
        // Worded as the nix-daemon of the client's version: 2.23
        // (protocol 1.37) added the second half of the hint.
        Err(local_store::Error::StillAlive(path)) if s.minor < 37 => {
            return Err(failed(format!(
                "Cannot delete path '{path}' since it is still alive. To find out why, use: nix-store --query --roots"
            )));
        }
        other => other?,
    };
    if let Some(witness) = d.builder.witness()
        && !results.paths.is_empty()
    {
        blocking(|| witness.after_store_gc(&s.store));
    }
    s.last().await?;
    s.writer.write_strings(results.paths.iter()).await?;
    s.writer.write_u64_wire(results.bytes_freed).await?;
    s.writer.write_u64_wire(0).await?;
    Ok(())
}

/// `p` made absolute against the daemon's working directory (CppNix `absPath`).
fn absolute(p: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(p);
    if path.is_absolute() { path.to_owned() } else { std::env::current_dir().unwrap_or_default().join(path) }
}
