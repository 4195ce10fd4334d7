//! The operations: one arm per request, each doing its work on the
//! connection's store handle (blocking work runs in `block_in_place`) and
//! answering as CppNix's daemon.cc `performOp` does.

use super::connection::{Connection, OpError, OpResult};
use super::io::{SyncReader, SyncWriter, TunnelReader};
use super::realise::{Target, realise};
use crate::build::{BuildModeKey, Outcome};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use store::content_address::{ContentAddressMethod, FileIngestionMethod};
use local_store::{AddOptions, GcAction, GcOptions, OptimiseEvent, VerifyLine};
use store::path_info::PathInfo;
use store::realisation::{DrvOutput, Realisation};
use store::store_path::StorePath;
use worker_protocol::{
    self as wp, ActivityType, BuildMode, BuildResult, DerivedPath, Field, FramedReader, Request, ResultType, StderrMessage, Verbosity,
    WireWrite, write_unkeyed_path_info,
};
use tokio::io::{AsyncRead, AsyncWrite};

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A lookup of one path's row: a few microseconds on a pooled read
/// connection (WAL readers do not wait for the writer), so it runs on the
/// worker thread itself. `block_in_place` would hand the worker's queue to
/// another thread and back for each such query, which costs more CPU than
/// the query (bench/daemon.sh).
fn quick<T>(f: impl FnOnce() -> T) -> T {
    f()
}

fn failed(msg: impl Into<String>) -> OpError {
    OpError::Failed(msg.into())
}

pub async fn perform<R, W>(c: &mut Connection<R, W>, request: Request) -> OpResult
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let dir = c.store.store_dir().clone();
    match request {
        Request::IsValidPath(p) => {
            let valid = quick(|| c.store.is_valid(&p))?;
            c.last().await?;
            c.writer.write_bool(valid).await?;
        }
        Request::HasSubstitutes(p) => {
            let job = c.daemon.builder.job(&c.options);
            let has = crate::build::Builder::job_substituters(&job)
                .is_some_and(|s| blocking(|| s.query_substitutable_paths(std::slice::from_ref(&p))).contains(&p));
            c.last().await?;
            c.writer.write_bool(has).await?;
        }
        Request::QueryPathHash(p) => {
            let info = quick(|| c.store.path_info(&p))?;
            c.last().await?;
            c.writer.write_str(&info.nar_hash.to_base16()).await?;
        }
        Request::QueryReferences(p) => {
            let info = quick(|| c.store.path_info(&p))?;
            c.last().await?;
            write_paths(c, &info.references).await?;
        }
        Request::QueryReferrers(p) => {
            let refs = quick(|| c.store.query_referrers(&p))?;
            c.last().await?;
            write_paths(c, &refs).await?;
        }
        Request::QueryValidDerivers(p) => {
            let drvs = quick(|| c.store.query_valid_derivers(&p))?;
            c.last().await?;
            write_paths(c, &drvs).await?;
        }
        Request::QueryDerivationOutputs(p) => {
            require_valid(c, &p, "is not valid")?;
            let map = blocking(|| c.store.derivation_output_map(&p))?;
            // CppNix `queryDerivationOutputMap`: every output needs a path.
            let mut outs = BTreeSet::new();
            for (name, out) in map {
                let out = out.ok_or_else(|| {
                    failed(format!("cannot operate on output '{name}' of the unbuilt derivation '{}'", dir.display(&p)))
                })?;
                outs.insert(out);
            }
            c.last().await?;
            write_paths(c, &outs).await?;
        }
        Request::QueryDerivationOutputNames(p) => {
            require_valid(c, &p, "is not a valid store path")?;
            let drv = blocking(|| c.store.read_derivation(&p))?;
            c.last().await?;
            c.writer.write_strings(drv.outputs.keys()).await?;
        }
        Request::QueryDerivationOutputMap(p) => {
            require_valid(c, &p, "is not valid")?;
            let map = blocking(|| c.store.derivation_output_map(&p))?;
            c.last().await?;
            c.writer.write_u64_wire(map.len() as u64).await?;
            for (name, path) in &map {
                c.writer.write_str(name).await?;
                c.writer.write_str(&path.as_ref().map(|p| dir.display(p)).unwrap_or_default()).await?;
            }
        }
        Request::QueryDeriver(p) => {
            let info = quick(|| c.store.path_info(&p))?;
            c.last().await?;
            c.writer.write_str(&info.deriver.map(|d| dir.display(&d)).unwrap_or_default()).await?;
        }
        Request::QueryPathFromHashPart(h) => {
            let p = quick(|| c.store.query_path_from_hash_part(&h))?;
            c.last().await?;
            c.writer.write_str(&p.map(|p| dir.display(&p)).unwrap_or_default()).await?;
        }
        Request::QueryAllValidPaths => {
            let all = blocking(|| c.store.query_all_valid_paths())?;
            c.last().await?;
            write_paths(c, &all).await?;
        }
        Request::QueryValidPaths { paths, substitute } => {
            if substitute {
                // CppNix substitutes the missing ones first, through `queryMissing`.
                querying_missing_paths(c).await?;
            }
            let valid = blocking(|| -> local_store::Result<BTreeSet<StorePath>> {
                let mut v = BTreeSet::new();
                for p in paths {
                    if c.store.is_valid(&p)? {
                        v.insert(p);
                    }
                }
                Ok(v)
            })?;
            c.last().await?;
            write_paths(c, &valid).await?;
        }
        Request::QuerySubstitutablePaths(paths) => {
            let job = c.daemon.builder.job(&c.options);
            let paths: Vec<StorePath> = paths.into_iter().collect();
            let found = match crate::build::Builder::job_substituters(&job) {
                Some(subs) => blocking(|| subs.query_substitutable_paths(&paths)),
                None => BTreeSet::new(),
            };
            c.last().await?;
            write_paths(c, &found).await?;
        }
        Request::QuerySubstitutablePathInfo(p) => {
            let job = c.daemon.builder.job(&c.options);
            // Silent, as CppNix's `querySubstitutablePathInfos` (queued
            // warnings would reach another client).
            let found = crate::build::Builder::job_substituters(&job)
                .and_then(|s| blocking(|| s.query_noting(&p, &mut Vec::new()).ok().flatten()));
            c.last().await?;
            match found {
                Some(f) => {
                    c.writer.write_u64_wire(1).await?;
                    write_substitutable(c, &f.info).await?;
                }
                None => c.writer.write_u64_wire(0).await?,
            }
        }
        Request::QuerySubstitutablePathInfos(paths) => {
            let job = c.daemon.builder.job(&c.options);
            let mut found = Vec::new();
            if let Some(subs) = crate::build::Builder::job_substituters(&job) {
                for p in paths.keys() {
                    if let Some(f) = blocking(|| subs.query_noting(p, &mut Vec::new()).ok().flatten()) {
                        found.push(f.info);
                    }
                }
            }
            c.last().await?;
            c.writer.write_u64_wire(found.len() as u64).await?;
            for info in &found {
                c.writer.write_str(&dir.display(&info.path)).await?;
                write_substitutable(c, info).await?;
            }
        }
        Request::QueryPathInfo(p) => {
            let info = quick(|| c.store.query_path_info(&p))?;
            match info {
                Some(info) => {
                    c.last().await?;
                    if c.minor >= 17 {
                        c.writer.write_bool(true).await?;
                    }
                    write_unkeyed_path_info(&mut c.writer, &dir, &info, c.minor).await?;
                }
                None if c.minor >= 17 => {
                    c.last().await?;
                    c.writer.write_bool(false).await?;
                }
                None => return Err(failed(format!("path '{}' is not valid", dir.display(&p)))),
            }
        }
        Request::QueryMissing(targets) => {
            let paths: Vec<DerivedPath> = targets.into_iter().map(|(_, d)| d).collect();
            querying_missing_paths(c).await?;
            let job = c.daemon.builder.job(&c.options);
            let subs = crate::build::Builder::job_substituters(&job).map(|s| &**s);
            let missing = blocking(|| super::missing::query_missing(&c.store, subs, &paths))?;
            c.last().await?;
            missing.write(&mut c.writer, &dir).await?;
        }
        Request::AddTempRoot(p) => {
            blocking(|| c.store.add_temp_root(&p))?;
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::AddIndirectRoot(link) => {
            let link = absolute(&link);
            blocking(|| c.store.add_indirect_root(&link))?;
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::AddPermRoot { path, gc_root } => {
            if !c.trusted() {
                return Err(failed(
                    "you are not privileged to create perm roots\n\nhint: you can just do this client-side without special privileges, and probably want to do that instead.",
                ));
            }
            let root = absolute(&gc_root);
            let made = blocking(|| c.store.add_perm_root(&path, &root))?;
            c.last().await?;
            c.writer.write_str(&made.to_string_lossy()).await?;
        }
        Request::SyncWithGC => {
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::FindRoots => {
            let censor = !c.trusted();
            let mut lines = Vec::new();
            let roots = blocking(|| c.store.find_roots_logged(censor, &mut |l| lines.push(l.to_owned())));
            for line in lines {
                c.info(Verbosity::Info, &line).await?;
            }
            let roots = roots?;
            c.last().await?;
            let n: usize = roots.values().map(BTreeSet::len).sum();
            c.writer.write_u64_wire(n as u64).await?;
            for (target, links) in &roots {
                for link in links {
                    c.writer.write_str(link).await?;
                    c.writer.write_str(&dir.display(target)).await?;
                }
            }
        }
        Request::CollectGarbage(gc) => {
            if gc.ignore_liveness {
                return Err(failed("you are not allowed to ignore liveness"));
            }
            let action = match gc.action {
                0 => GcAction::ReturnLive,
                1 => GcAction::ReturnDead,
                2 => GcAction::DeleteDead,
                _ => GcAction::DeleteSpecific(gc.paths_to_delete),
            };
            let mut opts = GcOptions::new(action);
            opts.max_freed = gc.max_freed;
            let mut lines = Vec::new();
            let results = blocking(|| c.store.collect_garbage_logged(&opts, &mut |_| {}, &mut |l| lines.push(l.to_owned())));
            for line in lines {
                c.info(Verbosity::Info, &line).await?;
            }
            let results = match results {
                // Worded as the nix-daemon of the client's version: 2.23
                // (protocol 1.37) added the second half of the hint.
                Err(local_store::Error::StillAlive(path)) if c.minor < 37 => {
                    return Err(failed(format!(
                        "Cannot delete path '{path}' since it is still alive. To find out why, use: nix-store --query --roots"
                    )));
                }
                other => other?,
            };
            c.last().await?;
            c.writer.write_strings(results.paths.iter()).await?;
            c.writer.write_u64_wire(results.bytes_freed).await?;
            c.writer.write_u64_wire(0).await?;
        }
        Request::SetOptions(options) => {
            super::options::apply(c, options).await?;
            c.last().await?;
        }
        Request::OptimiseStore => {
            let mut events = Vec::new();
            let stats = blocking(|| {
                c.store.optimise_store_with_events(&mut |e| {
                    events.push(match e {
                        OptimiseEvent::Start { total } => Optimised::Start(total),
                        OptimiseEvent::Path(p) => Optimised::Path(dir.display(p)),
                        OptimiseEvent::FileLinked { size, blocks } => Optimised::Linked(size, blocks),
                        OptimiseEvent::Done { done, total } => Optimised::Done(done, total),
                    })
                })
            });
            report_optimisation(c, events).await?;
            let stats = stats?;
            c.info(
                Verbosity::Info,
                &format!("{:.2} MiB freed by hard-linking {} files", stats.bytes_freed as f64 / 1048576.0, stats.files_linked),
            )
            .await?;
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::VerifyStore { check_contents, repair } => {
            if repair && !c.trusted() {
                return Err(failed("you are not privileged to repair paths"));
            }
            let report = blocking(|| c.store.verify_store(check_contents, repair, &mut |_, _| {}))?;
            // In CppNix's order and levels (problems are `printError`ed, unprefixed).
            for line in &report.log {
                match line {
                    VerifyLine::Info(l) => c.info(Verbosity::Info, l).await?,
                    VerifyLine::Error(l) => c.info(Verbosity::Error, l).await?,
                }
            }
            c.last().await?;
            c.writer.write_bool(!report.errors.is_empty()).await?;
        }
        Request::AddSignatures { path, sigs } => {
            blocking(|| c.store.add_signatures(&path, &sigs))?;
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::NarFromPath(p) => {
            if !quick(|| c.store.is_valid(&p))? {
                return Err(failed(format!("path '{}' is not valid", dir.display(&p))));
            }
            c.last().await?;
            let real = c.store.real_path(&p);
            let sent = match c.socket_fd {
                Some(fd) => {
                    tokio::io::AsyncWriteExt::flush(&mut c.writer).await?;
                    blocking(|| local_store::nar_fs::dump(&real, &mut super::io::SocketWriter::new(fd)))
                }
                None => {
                    let handle = tokio::runtime::Handle::current();
                    blocking(|| {
                        let mut out = SyncWriter::new(&mut c.writer, handle);
                        local_store::nar_fs::dump_parallel(&real, &mut out)
                    })
                }
            };
            sent.map_err(|e| OpError::Fatal(format!("sending the NAR of '{}': {e}", dir.display(&p))))?;
        }
        Request::ExportPath(p) => {
            // CppNix `exportPath` starts with `queryPathInfo`: nothing is sent for an invalid path.
            require_valid(c, &p, "is not valid")?;
            let handle = tokio::runtime::Handle::current();
            let minor = c.minor;
            let store = c.store.clone();
            blocking(|| {
                let mut out = super::io::StderrWriteSink::new(&mut c.writer, handle, minor);
                store.export_path(&p, &mut out)?;
                std::io::Write::flush(&mut out).map_err(|e| local_store::Error::Other(e.to_string()))
            })
            .map_err(|e| OpError::Fatal(e.to_string()))?;
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::ImportPaths => {
            let check = !c.trusted();
            let (minor, store, daemon) = (c.minor, c.store.clone(), c.daemon.clone());
            let imported = blocking(|| {
                let mut input = TunnelReader::new(&mut c.reader, &mut c.writer, minor);
                store.import_paths(&mut input, &|info| if check { daemon.check_signatures(info) } else { Ok(()) })
            })?;
            // The client sends only what was asked for: after a failure the
            // stream is still in step and the connection goes on, as CppNix's.
            c.last().await?;
            c.writer.write_strings(imported.iter().map(|p| dir.display(p)).collect::<Vec<_>>()).await?;
        }
        Request::AddToStore { name, method, algorithm, references, repair } => {
            // Anyone may repair a content-addressed add, as with CppNix: the
            // new contents must hash to the same path.
            let handle = tokio::runtime::Handle::current();
            let store = c.store.clone();
            let mut framed = FramedReader::new(&mut c.reader);
            let added = blocking(|| {
                let mut input = SyncReader::buffered(&mut framed, handle.clone());
                store.add_from_dump(&name, method, algorithm, &references, &mut input, AddOptions { repair })
            });
            // Keep the stream in step whatever happened.
            framed.drain().await?;
            let info = added?;
            c.last().await?;
            wp::write_path_info(&mut c.writer, &dir, &info, c.minor).await?;
        }
        Request::AddToStoreLegacy { name, method, algorithm } => {
            let handle = tokio::runtime::Handle::current();
            let store = c.store.clone();
            let reader = &mut c.reader;
            // Always a NAR; for flat hashing it holds one regular file.
            let added = blocking(|| -> local_store::Result<PathInfo> {
                let mut input = SyncReader::direct(reader, handle);
                match method {
                    FileIngestionMethod::Flat => add_flat_from_nar(&store, &name, algorithm, &mut input),
                    _ => store.add_from_dump(
                        &name,
                        ContentAddressMethod::Fixed(method),
                        algorithm,
                        &BTreeSet::new(),
                        &mut input,
                        AddOptions::default(),
                    ),
                }
            })
            .map_err(|e| OpError::Fatal(e.to_string()))?;
            c.last().await?;
            c.writer.write_str(&dir.display(&added.path)).await?;
        }
        Request::AddTextToStore { name, text, references } => {
            let info = blocking(|| c.store.add_text(&name, &text, &references, AddOptions::default()))?;
            c.last().await?;
            c.writer.write_str(&dir.display(&info.path)).await?;
        }
        Request::AddToStoreNar { mut info, repair, dont_check_sigs } => {
            let check = !(dont_check_sigs && c.trusted());
            if !c.trusted() {
                info.ultimate = false;
            }
            // Untrusted repairs are allowed, as with CppNix: the signature or
            // content address check applies to what replaces the path.
            let verdict = if check { c.daemon.check_signatures(&info) } else { Ok(()) };
            let handle = tokio::runtime::Handle::current();
            let (minor, store) = (c.minor, c.store.clone());
            let opts = AddOptions { repair };
            if minor >= 23 {
                let mut framed = FramedReader::new(&mut c.reader);
                let added = blocking(|| {
                    verdict?;
                    let mut input = SyncReader::buffered(&mut framed, handle);
                    store.add_nar(&info, &mut input, opts)
                });
                framed.drain().await?;
                added?;
            } else if minor >= 21 {
                let added = blocking(|| {
                    verdict?;
                    let mut input = TunnelReader::new(&mut c.reader, &mut c.writer, minor);
                    store.add_nar(&info, &mut input, opts)
                });
                // Tunnelled: nothing unasked-for is in the stream, so a
                // failure (a hash mismatch, say) leaves it in step.
                added?;
            } else {
                let reader = &mut c.reader;
                let added = blocking(|| {
                    let mut input = SyncReader::direct(reader, handle);
                    match verdict {
                        Ok(()) => store.add_nar(&info, &mut input, opts),
                        Err(e) => {
                            // Read past the NAR so the stream stays in step.
                            store::nar::NarReader::new(&mut input).skip_to_end().map_err(|n| local_store::Error::Nar(n.to_string()))?;
                            Err(e)
                        }
                    }
                });
                added?;
            }
            c.last().await?;
        }
        Request::AddMultipleToStore { repair, dont_check_sigs } => {
            // Untrusted repairs are allowed, as with CppNix (signatures are checked).
            let check = !(dont_check_sigs && c.trusted());
            let handle = tokio::runtime::Handle::current();
            let (store, daemon, trusted) = (c.store.clone(), c.daemon.clone(), c.trusted());
            let mut framed = FramedReader::new(&mut c.reader);
            let added = blocking(|| -> local_store::Result<()> {
                let mut input = SyncReader::buffered(&mut framed, handle.clone());
                let count = read_u64_sync(&mut input)?;
                for _ in 0..count {
                    let mut info = read_path_info_sync(&mut input, &store, &daemon.limits)?;
                    if !trusted {
                        info.ultimate = false;
                    }
                    if check {
                        daemon.check_signatures(&info)?;
                    }
                    store.add_nar(&info, &mut input, AddOptions { repair })?;
                }
                Ok(())
            });
            framed.drain().await?;
            added?;
            c.last().await?;
        }
        Request::AddBuildLog { drv } => {
            if !c.trusted() {
                let mut framed = FramedReader::new(&mut c.reader);
                framed.drain().await?;
                return Err(failed("you are not privileged to add logs"));
            }
            let handle = tokio::runtime::Handle::current();
            let store = c.store.clone();
            let mut framed = FramedReader::new(&mut c.reader);
            let added = blocking(|| {
                let mut input = SyncReader::buffered(&mut framed, handle);
                store.add_build_log(&drv, &mut input)
            });
            framed.drain().await?;
            added?;
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::RegisterDrvOutputLegacy { id, out_path } => {
            let id = DrvOutput::parse(&id).map_err(|e| failed(e.to_string()))?;
            let out_path = StorePath::from_base_name(&out_path).map_err(|e| failed(e.to_string()))?;
            let r = Realisation { id, out_path, signatures: BTreeSet::new(), dependent_realisations: BTreeMap::new() };
            blocking(|| c.store.register_realisation(&r))?;
            c.last().await?;
        }
        Request::RegisterDrvOutput(json) => {
            let r = Realisation::from_json(&json, "<client>").map_err(|e| failed(e.to_string()))?;
            blocking(|| c.store.register_realisation(&r))?;
            c.last().await?;
        }
        Request::QueryRealisation(id) => {
            let id = DrvOutput::parse(&id).map_err(|e| failed(e.to_string()))?;
            let r = blocking(|| c.store.query_realisation(&id))?;
            c.last().await?;
            if c.minor < 31 {
                let set: BTreeSet<StorePath> = r.into_iter().map(|r| r.out_path).collect();
                write_paths(c, &set).await?;
            } else {
                let set: Vec<String> = r.into_iter().map(|r| r.to_json().to_string()).collect();
                c.writer.write_strings(set.iter()).await?;
            }
        }
        Request::EnsurePath(p) => {
            blocking(|| root_build_targets(c, [&DerivedPath::Opaque(p.clone())]))?;
            let outcomes = realise(c, vec![Target::Path(DerivedPath::Opaque(p.clone()))], BuildModeKey::Normal).await?;
            if !outcomes[0].success() {
                // CppNix `Store::ensurePath` when no substituter has it.
                return Err(failed(format!("path '{}' does not exist and cannot be created", dir.display(&p))));
            }
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::BuildPaths { paths, mode } => {
            if mode == BuildMode::Repair && !c.trusted() {
                return Err(failed("repairing is not allowed because you are not in 'trusted-users'"));
            }
            blocking(|| root_build_targets(c, paths.iter().map(|(_, t)| t)))?;
            let targets: Vec<DerivedPath> = paths.into_iter().map(|(_, t)| t).collect();
            let outcomes = realise(c, targets.iter().cloned().map(Target::Path).collect(), mode.into()).await?;
            let (logged, error) = super::realise::build_paths_error(&dir, &targets, &outcomes);
            for e in logged {
                c.log(StderrMessage::Next(format!("error: {e}\n"))).await?;
            }
            if let Some(e) = error {
                return Err(OpError::BuildFailed(e, super::realise::exit_status(&outcomes)));
            }
            c.last().await?;
            c.writer.write_u64_wire(1).await?;
        }
        Request::BuildPathsWithResults { paths, mode } => {
            if mode == BuildMode::Repair && !c.trusted() {
                return Err(failed("repairing is not allowed because you are not in 'trusted-users'"));
            }
            blocking(|| root_build_targets(c, paths.iter().map(|(_, t)| t)))?;
            let outcomes = realise(c, paths.iter().map(|(_, t)| Target::Path(t.clone())).collect(), mode.into()).await?;
            let mut results = Vec::new();
            for ((raw, target), outcome) in paths.iter().zip(&outcomes) {
                let mut r = to_build_result(outcome);
                if let DerivedPath::Built { drv, outputs } = target
                    && outcome.success()
                {
                    r.built_outputs = blocking(|| super::realise::built_outputs(&c.store, drv, outputs.as_ref(), outcome));
                }
                // In request order, as nix-daemon 2.26 answers at every
                // minor (2.8 answered in its goal order; clients match the
                // results by their paths).
                results.push((raw.clone(), r));
            }
            c.last().await?;
            c.writer.write_u64_wire(results.len() as u64).await?;
            for (raw, result) in &results {
                c.writer.write_str(raw).await?;
                result.write(&mut c.writer, c.minor).await?;
            }
        }
        Request::BuildDerivation { drv_path, drv, mode } => {
            let drv_type = drv.derivation_type().map_err(|e| failed(e.to_string()))?;
            if !(drv_type.is_ca() || c.trusted()) {
                return Err(failed("you are not privileged to build input-addressed derivations"));
            }
            if mode == BuildMode::Repair && !c.trusted() {
                return Err(failed("repairing is not allowed because you are not in 'trusted-users'"));
            }
            blocking(|| c.store.add_temp_root(&drv_path))?;
            let outcomes = realise(c, vec![Target::Given(drv_path.clone(), drv)], mode.into()).await?;
            let outcome = &outcomes[0];
            let mut r = to_build_result(outcome);
            if outcome.success() {
                r.built_outputs = blocking(|| given_built_outputs(&c.store, &drv_path, outcome));
            }
            c.last().await?;
            r.write(&mut c.writer, c.minor).await?;
        }
    }
    Ok(())
}

/// The temporary roots CppNix's build goals take on what they are given,
/// valid or not: an opaque path (`PathSubstitutionGoal`), a derivation and
/// the known paths of all its outputs (`DerivationGoal`).
fn root_build_targets<'t, R, W>(c: &Connection<R, W>, targets: impl IntoIterator<Item = &'t DerivedPath>) -> local_store::Result<()> {
    for target in targets {
        match target {
            DerivedPath::Opaque(p) => c.store.add_temp_root(p)?,
            DerivedPath::Built { drv, .. } => {
                c.store.add_temp_root(drv)?;
                if c.store.is_valid(drv)? {
                    for (_, out) in c.store.query_derivation_outputs(drv)? {
                        c.store.add_temp_root(&out)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// CppNix's validity checks before it looks at a derivation or exports a
/// path; the wording differs by where CppNix checks ("is not valid" from the
/// database, "is not a valid store path" from the store accessor).
fn require_valid<R, W>(c: &Connection<R, W>, p: &StorePath, wording: &str) -> OpResult {
    if quick(|| c.store.is_valid(p))? {
        Ok(())
    } else {
        Err(failed(format!("path '{}' {wording}", c.store.display(p))))
    }
}

/// The activity CppNix's `Store::queryMissing` opens whatever it finds
/// (debug level: clients show it only when that verbose).
async fn querying_missing_paths<R, W>(c: &mut Connection<R, W>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let id = c.new_activity_id();
    c.log(StderrMessage::StartActivity {
        id,
        level: Verbosity::Debug,
        kind: ActivityType::Unknown,
        text: "querying info about missing paths".into(),
        fields: Vec::new(),
        parent: 0,
    })
    .await?;
    c.log(StderrMessage::StopActivity { id }).await
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
async fn report_optimisation<R, W>(c: &mut Connection<R, W>, events: Vec<Optimised>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let top = c.new_activity_id();
    let start = |id, level, kind, text: String| StderrMessage::StartActivity { id, level, kind, text, fields: Vec::new(), parent: 0 };
    let progress = |id, done: usize, total: usize| StderrMessage::Result {
        id,
        kind: ResultType::Progress,
        fields: vec![Field::Int(done as u64), Field::Int(total as u64), Field::Int(0), Field::Int(0)],
    };
    c.log(start(top, Verbosity::Error, ActivityType::OptimiseStore, String::new())).await?;
    let mut current = None;
    for e in events {
        match e {
            Optimised::Start(total) => c.log(progress(top, 0, total)).await?,
            Optimised::Path(p) => {
                let id = c.new_activity_id();
                current = Some(id);
                c.log(start(id, Verbosity::Talkative, ActivityType::Unknown, format!("optimising path '{p}'"))).await?;
            }
            Optimised::Linked(size, blocks) => {
                if let Some(id) = current {
                    c.log(StderrMessage::Result { id, kind: ResultType::FileLinked, fields: vec![Field::Int(size), Field::Int(blocks)] })
                        .await?;
                }
            }
            Optimised::Done(done, total) => {
                if let Some(id) = current.take() {
                    c.log(StderrMessage::StopActivity { id }).await?;
                }
                c.log(progress(top, done, total)).await?;
            }
        }
    }
    if let Some(id) = current {
        c.log(StderrMessage::StopActivity { id }).await?;
    }
    c.log(StderrMessage::StopActivity { id: top }).await
}

/// deriver, references, download size, NAR size (a SubstitutablePathInfo).
async fn write_substitutable<R, W>(c: &mut Connection<R, W>, info: &store::narinfo::NarInfo) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let dir = c.store.store_dir().clone();
    c.writer.write_str(&info.deriver.as_ref().map(|d| dir.display(d)).unwrap_or_default()).await?;
    write_paths(c, &info.references).await?;
    c.writer.write_u64_wire(info.file_size.unwrap_or(0)).await?;
    c.writer.write_u64_wire(info.nar_size).await
}

async fn write_paths<R, W>(c: &mut Connection<R, W>, paths: &BTreeSet<StorePath>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let dir = c.store.store_dir().clone();
    c.writer.write_u64_wire(paths.len() as u64).await?;
    for p in paths {
        c.writer.write_str(&dir.display(p)).await?;
    }
    Ok(())
}


/// The reply form of a goal's outcome.
fn to_build_result(o: &Outcome) -> BuildResult {
    let mut r = BuildResult::new(o.status);
    r.error_msg = o.error.clone().unwrap_or_default();
    r.times_built = o.times_built;
    r.is_non_deterministic = o.is_non_deterministic;
    r.start_time = o.start_time;
    r.stop_time = o.stop_time;
    r
}

/// builtOutputs for a BuildDerivation: the realisations recorded for the
/// derivation's outputs if it is in the store, else none (CppNix fills them
/// from the goal's output hashes; clients only read them for CA derivations).
fn given_built_outputs(store: &local_store::LocalStore, drv_path: &StorePath, o: &Outcome) -> BTreeMap<String, String> {
    if store.is_valid(drv_path).unwrap_or(false) {
        super::realise::built_outputs(store, drv_path, None, o)
    } else {
        BTreeMap::new()
    }
}

/// `p` made absolute against the daemon's working directory (CppNix `absPath`).
fn absolute(p: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(p);
    if path.is_absolute() { path.to_owned() } else { std::env::current_dir().unwrap_or_default().join(path) }
}

/// A flat add from the NAR of one regular file (AddToStore below 1.25). The
/// contents stream from the socket into the store's staging file, so a big
/// file costs disk, not memory (CppNix buffers it whole). The NAR's closing
/// `)` is read after the add: a client that breaks off there gets an error,
/// though the file it sent in full is in the store by then.
fn add_flat_from_nar(
    store: &local_store::LocalStore,
    name: &str,
    algorithm: store::hash::Algorithm,
    input: &mut dyn BufRead,
) -> local_store::Result<PathInfo> {
    let not_one_file = || local_store::Error::Other("flat hashing needs a NAR of a single regular file".into());
    let bad = |e: store::nar::NarError| local_store::Error::Nar(e.to_string());
    let mut reader = store::nar::NarReader::new(input);
    let added = match reader.next().map_err(bad)? {
        Some(store::nar::Event::Regular { mut contents, .. }) => store.add_from_dump(
            name,
            ContentAddressMethod::Fixed(FileIngestionMethod::Flat),
            algorithm,
            &BTreeSet::new(),
            &mut contents,
            AddOptions::default(),
        )?,
        _ => return Err(not_one_file()),
    };
    if reader.next().map_err(bad)?.is_some() {
        return Err(not_one_file());
    }
    Ok(added)
}

fn read_u64_sync(input: &mut dyn BufRead) -> local_store::Result<u64> {
    super::io::sync_u64(input).map_err(|e| local_store::Error::Other(format!("reading a path list: {e}")))
}

/// Reads a path info in the minor-16 layout (§6.1) from a synchronous reader.
fn read_path_info_sync(
    input: &mut dyn BufRead,
    store: &local_store::LocalStore,
    limits: &wp::Limits,
) -> local_store::Result<PathInfo> {
    use super::io::{sync_string, sync_u64};
    let bad = |e: std::io::Error| local_store::Error::Other(format!("reading a path's metadata: {e}"));
    let max = limits.max_string;
    let path = store.parse_path(&sync_string(input, max).map_err(bad)?)?;
    let deriver = sync_string(input, max).map_err(bad)?;
    let hash = sync_string(input, max).map_err(bad)?;
    let nar_hash = store::hash::Hash::parse_any(&hash, Some(store::hash::Algorithm::Sha256))
        .map_err(|e| local_store::Error::Other(e.to_string()))?;
    let nrefs = sync_u64(input).map_err(bad)?;
    if nrefs > limits.max_elements {
        return Err(local_store::Error::Other(format!("a path lists {nrefs} references, more than {}", limits.max_elements)));
    }
    let mut references = BTreeSet::new();
    for _ in 0..nrefs {
        references.insert(store.parse_path(&sync_string(input, max).map_err(bad)?)?);
    }
    let registration_time = sync_u64(input).map_err(bad)?;
    let nar_size = sync_u64(input).map_err(bad)?;
    let ultimate = sync_u64(input).map_err(bad)? != 0;
    let nsigs = sync_u64(input).map_err(bad)?;
    if nsigs > limits.max_elements {
        return Err(local_store::Error::Other(format!("a path lists {nsigs} signatures, more than {}", limits.max_elements)));
    }
    let mut sigs = BTreeSet::new();
    for _ in 0..nsigs {
        sigs.insert(sync_string(input, max).map_err(bad)?);
    }
    let ca = sync_string(input, max).map_err(bad)?;
    let mut info = PathInfo::new(path, nar_hash, nar_size);
    info.deriver = if deriver.is_empty() { None } else { Some(store.parse_path(&deriver)?) };
    info.references = references;
    info.registration_time = i64::try_from(registration_time).unwrap_or(i64::MAX);
    info.ultimate = ultimate;
    info.sigs = sigs;
    info.ca = if ca.is_empty() {
        None
    } else {
        Some(store::content_address::ContentAddress::parse(&ca).map_err(|e| local_store::Error::Other(e.to_string()))?)
    };
    Ok(info)
}
