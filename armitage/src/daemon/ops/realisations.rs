//! Realisations of content-addressed derivations' outputs (CppNix
//! daemon.cc's RegisterDrvOutput and QueryRealisation): the legacy
//! (id, path) form below 1.31 and JSON from 1.31.

use super::common::{blocking, failed};
use crate::daemon::session::{Input, OpResult, Output, Session};
use std::collections::{BTreeMap, BTreeSet};
use store::realisation::{DrvOutput, Realisation};
use store::store_path::StorePath;
use worker_protocol::WireWrite;

pub async fn register_drv_output_legacy<R: Input, W: Output>(
    s: &mut Session<R, W>,
    id: String,
    out_path: String,
) -> OpResult {
    let id = DrvOutput::parse(&id).map_err(|e| failed(e.to_string()))?;
    let out_path = StorePath::from_base_name(&out_path).map_err(|e| failed(e.to_string()))?;
    let r = Realisation { id, out_path, signatures: BTreeSet::new(), dependent_realisations: BTreeMap::new() };
    blocking(|| s.store.register_realisation(&r))?;
    s.last().await?;
    Ok(())
}

pub async fn register_drv_output<R: Input, W: Output>(s: &mut Session<R, W>, json: String) -> OpResult {
    let r = Realisation::from_json(&json, "<client>").map_err(|e| failed(e.to_string()))?;
    blocking(|| s.store.register_realisation(&r))?;
    s.last().await?;
    Ok(())
}

pub async fn query_realisation<R: Input, W: Output>(s: &mut Session<R, W>, id: String) -> OpResult {
    let id = DrvOutput::parse(&id).map_err(|e| failed(e.to_string()))?;
    let r = blocking(|| s.store.query_realisation(&id))?;
    s.last().await?;
    if s.minor < 31 {
        let set: BTreeSet<StorePath> = r.into_iter().map(|r| r.out_path).collect();
        s.write_paths(set.iter()).await?;
    } else {
        let set: Vec<String> = r.into_iter().map(|r| r.to_json().to_string()).collect();
        s.writer.write_strings(set.iter()).await?;
    }
    Ok(())
}
