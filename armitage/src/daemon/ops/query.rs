//! Questions about the local store: validity, path infos, references and
//! referrers, derivers and derivation outputs, hash parts (CppNix
//! daemon.cc's query operations). Most are one row of the database, asked
//! on the worker thread ([`quick`]).

use super::common::{blocking, failed, querying_missing_paths, quick, require_valid};
use crate::daemon::session::{Input, OpResult, Output, Session};
use std::collections::BTreeSet;
use store::store_path::StorePath;
use worker_protocol::{WireWrite, write_unkeyed_path_info};

pub async fn is_valid_path<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    let valid = quick(|| s.store.is_valid(&p))?;
    s.last().await?;
    s.writer.write_bool(valid).await?;
    Ok(())
}

pub async fn query_path_hash<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    let info = quick(|| s.store.path_info(&p))?;
    s.last().await?;
    s.writer.write_str(&info.nar_hash.to_base16()).await?;
    Ok(())
}

pub async fn query_references<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    let info = quick(|| s.store.path_info(&p))?;
    s.last().await?;
    s.write_paths(info.references.iter()).await?;
    Ok(())
}

pub async fn query_referrers<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    let refs = quick(|| s.store.query_referrers(&p))?;
    s.last().await?;
    s.write_paths(refs.iter()).await?;
    Ok(())
}

pub async fn query_valid_derivers<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    let drvs = quick(|| s.store.query_valid_derivers(&p))?;
    s.last().await?;
    s.write_paths(drvs.iter()).await?;
    Ok(())
}

pub async fn query_derivation_outputs<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    require_valid(s, &p, "is not valid")?;
    let map = blocking(|| s.store.derivation_output_map(&p))?;
    // CppNix `queryDerivationOutputMap`: every output needs a path.
    let mut outs = BTreeSet::new();
    for (name, out) in map {
        let out = out.ok_or_else(|| {
            failed(format!("cannot operate on output '{name}' of the unbuilt derivation '{}'", s.store.display(&p)))
        })?;
        outs.insert(out);
    }
    s.last().await?;
    s.write_paths(outs.iter()).await?;
    Ok(())
}

pub async fn query_derivation_output_names<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    require_valid(s, &p, "is not a valid store path")?;
    let drv = blocking(|| s.store.read_derivation(&p))?;
    s.last().await?;
    s.writer.write_strings(drv.outputs.keys()).await?;
    Ok(())
}

pub async fn query_derivation_output_map<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    require_valid(s, &p, "is not valid")?;
    let map = blocking(|| s.store.derivation_output_map(&p))?;
    let dir = s.store.store_dir().clone();
    s.last().await?;
    s.writer.write_u64_wire(map.len() as u64).await?;
    for (name, path) in &map {
        s.writer.write_str(name).await?;
        s.writer.write_str(&path.as_ref().map(|p| dir.display(p)).unwrap_or_default()).await?;
    }
    Ok(())
}

pub async fn query_deriver<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    let info = quick(|| s.store.path_info(&p))?;
    let deriver = info.deriver.map(|d| s.store.display(&d)).unwrap_or_default();
    s.last().await?;
    s.writer.write_str(&deriver).await?;
    Ok(())
}

pub async fn query_path_from_hash_part<R: Input, W: Output>(s: &mut Session<R, W>, hash_part: String) -> OpResult {
    let p = quick(|| s.store.query_path_from_hash_part(&hash_part))?;
    let p = p.map(|p| s.store.display(&p)).unwrap_or_default();
    s.last().await?;
    s.writer.write_str(&p).await?;
    Ok(())
}

pub async fn query_all_valid_paths<R: Input, W: Output>(s: &mut Session<R, W>) -> OpResult {
    let all = blocking(|| s.store.query_all_valid_paths())?;
    s.last().await?;
    s.write_paths(all.iter()).await?;
    Ok(())
}

pub async fn query_valid_paths<R: Input, W: Output>(
    s: &mut Session<R, W>,
    paths: BTreeSet<StorePath>,
    substitute: bool,
) -> OpResult {
    if substitute {
        // CppNix substitutes the missing ones first, through `queryMissing`.
        querying_missing_paths(s).await?;
    }
    let valid = blocking(|| -> local_store::Result<BTreeSet<StorePath>> {
        let mut v = BTreeSet::new();
        for p in paths {
            if s.store.is_valid(&p)? {
                v.insert(p);
            }
        }
        Ok(v)
    })?;
    s.last().await?;
    s.write_paths(valid.iter()).await?;
    Ok(())
}

pub async fn query_path_info<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    let info = quick(|| s.store.query_path_info(&p))?;
    let dir = s.store.store_dir().clone();
    match info {
        Some(info) => {
            s.last().await?;
            if s.minor >= 17 {
                s.writer.write_bool(true).await?;
            }
            write_unkeyed_path_info(&mut s.writer, &dir, &info, s.minor).await?;
        }
        None if s.minor >= 17 => {
            s.last().await?;
            s.writer.write_bool(false).await?;
        }
        None => return Err(failed(format!("path '{}' is not valid", dir.display(&p)))),
    }
    Ok(())
}
