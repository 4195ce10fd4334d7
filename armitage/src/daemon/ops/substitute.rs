//! Questions about the substituters a client's options select (CppNix
//! daemon.cc's HasSubstitutes, QuerySubstitutablePaths and
//! QuerySubstitutablePathInfo(s)). Asked silently, as CppNix's
//! `querySubstitutablePathInfos`: warnings queued here would reach another
//! client.

use super::common::blocking;
use crate::build::Builder;
use crate::daemon::session::{Input, OpResult, Output, Session};
use crate::daemon::state::DaemonState;
use std::collections::{BTreeMap, BTreeSet};
use store::content_address::ContentAddress;
use store::narinfo::NarInfo;
use store::store_path::StorePath;
use worker_protocol::WireWrite;

pub async fn has_substitutes<R: Input, W: Output>(s: &mut Session<R, W>, d: &DaemonState, p: StorePath) -> OpResult {
    let job = d.builder.job(&s.options);
    let has = Builder::job_substituters(&job)
        .is_some_and(|subs| blocking(|| subs.query_substitutable_paths(std::slice::from_ref(&p))).contains(&p));
    s.last().await?;
    s.writer.write_bool(has).await?;
    Ok(())
}

pub async fn query_substitutable_paths<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    paths: BTreeSet<StorePath>,
) -> OpResult {
    let job = d.builder.job(&s.options);
    let paths: Vec<StorePath> = paths.into_iter().collect();
    let found = match Builder::job_substituters(&job) {
        Some(subs) => blocking(|| subs.query_substitutable_paths(&paths)),
        None => BTreeSet::new(),
    };
    s.last().await?;
    s.write_paths(found.iter()).await?;
    Ok(())
}

pub async fn query_substitutable_path_info<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    p: StorePath,
) -> OpResult {
    let job = d.builder.job(&s.options);
    let found = Builder::job_substituters(&job)
        .and_then(|subs| blocking(|| subs.query_noting(&p, &mut Vec::new()).ok().flatten()));
    s.last().await?;
    match found {
        Some(f) => {
            s.writer.write_u64_wire(1).await?;
            write_substitutable(s, &f.info).await?;
        }
        None => s.writer.write_u64_wire(0).await?,
    }
    Ok(())
}

pub async fn query_substitutable_path_infos<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    paths: BTreeMap<StorePath, Option<ContentAddress>>,
) -> OpResult {
    let job = d.builder.job(&s.options);
    let mut found = Vec::new();
    if let Some(subs) = Builder::job_substituters(&job) {
        for p in paths.keys() {
            if let Some(f) = blocking(|| subs.query_noting(p, &mut Vec::new()).ok().flatten()) {
                found.push(f.info);
            }
        }
    }
    s.last().await?;
    s.writer.write_u64_wire(found.len() as u64).await?;
    for info in &found {
        let path = s.store.display(&info.path);
        s.writer.write_str(&path).await?;
        write_substitutable(s, info).await?;
    }
    Ok(())
}

/// deriver, references, download size, NAR size (a SubstitutablePathInfo).
async fn write_substitutable<R: Input, W: Output>(s: &mut Session<R, W>, info: &NarInfo) -> std::io::Result<()> {
    let deriver = info.deriver.as_ref().map(|d| s.store.display(d)).unwrap_or_default();
    s.writer.write_str(&deriver).await?;
    s.write_paths(info.references.iter()).await?;
    s.writer.write_u64_wire(info.file_size.unwrap_or(0)).await?;
    s.writer.write_u64_wire(info.nar_size).await
}
