//! The operations, one function per request, grouped by family, each
//! answering as CppNix's daemon.cc `performOp` does; [`perform`] is the
//! dispatch table. Every operation takes the connection's [`Session`] and,
//! where it needs them, the daemon's shared state and the request's fields;
//! blocking work runs in `block_in_place` (`common`). No operation knows the
//! connection loop.

mod add;
mod build;
mod common;
mod export;
mod gc;
mod maintenance;
mod options;
mod query;
mod realisations;
mod realise;
mod substitute;

use super::session::{Input, OpResult, Output, Session};
use super::state::DaemonState;
use worker_protocol::Request;

/// Performs one request, inside its work window.
pub async fn perform<R: Input, W: Output>(s: &mut Session<R, W>, d: &DaemonState, request: Request) -> OpResult {
    use Request as Q;
    match request {
        Q::IsValidPath(p) => query::is_valid_path(s, p).await,
        Q::QueryPathHash(p) => query::query_path_hash(s, p).await,
        Q::QueryReferences(p) => query::query_references(s, p).await,
        Q::QueryReferrers(p) => query::query_referrers(s, p).await,
        Q::QueryValidDerivers(p) => query::query_valid_derivers(s, p).await,
        Q::QueryDerivationOutputs(p) => query::query_derivation_outputs(s, p).await,
        Q::QueryDerivationOutputNames(p) => query::query_derivation_output_names(s, p).await,
        Q::QueryDerivationOutputMap(p) => query::query_derivation_output_map(s, p).await,
        Q::QueryDeriver(p) => query::query_deriver(s, p).await,
        Q::QueryPathFromHashPart(h) => query::query_path_from_hash_part(s, h).await,
        Q::QueryAllValidPaths => query::query_all_valid_paths(s).await,
        Q::QueryValidPaths { paths, substitute } => query::query_valid_paths(s, paths, substitute).await,
        Q::QueryPathInfo(p) => query::query_path_info(s, p).await,

        Q::HasSubstitutes(p) => substitute::has_substitutes(s, d, p).await,
        Q::QuerySubstitutablePaths(paths) => substitute::query_substitutable_paths(s, d, paths).await,
        Q::QuerySubstitutablePathInfo(p) => substitute::query_substitutable_path_info(s, d, p).await,
        Q::QuerySubstitutablePathInfos(paths) => substitute::query_substitutable_path_infos(s, d, paths).await,

        Q::AddToStore { name, method, algorithm, references, repair } => {
            add::add_to_store(s, name, method, algorithm, references, repair).await
        }
        Q::AddToStoreLegacy { name, method, algorithm } => add::add_to_store_legacy(s, name, method, algorithm).await,
        Q::AddTextToStore { name, text, references } => add::add_text_to_store(s, name, text, references).await,
        Q::AddToStoreNar { info, repair, dont_check_sigs } => {
            add::add_to_store_nar(s, d, info, repair, dont_check_sigs).await
        }
        Q::AddMultipleToStore { repair, dont_check_sigs } => {
            add::add_multiple_to_store(s, d, repair, dont_check_sigs).await
        }
        Q::ImportPaths => add::import_paths(s, d).await,
        Q::AddBuildLog { drv } => add::add_build_log(s, drv).await,
        Q::AddSignatures { path, sigs } => add::add_signatures(s, path, sigs).await,

        Q::NarFromPath(p) => export::nar_from_path(s, p).await,
        Q::ExportPath(p) => export::export_path(s, p).await,

        Q::AddTempRoot(p) => gc::add_temp_root(s, p).await,
        Q::AddIndirectRoot(link) => gc::add_indirect_root(s, link).await,
        Q::AddPermRoot { path, gc_root } => gc::add_perm_root(s, path, gc_root).await,
        Q::SyncWithGC => gc::sync_with_gc(s).await,
        Q::FindRoots => gc::find_roots(s).await,
        Q::CollectGarbage(gc) => gc::collect_garbage(s, d, gc).await,

        Q::EnsurePath(p) => build::ensure_path(s, d, p).await,
        Q::BuildPaths { paths, mode } => build::build_paths(s, d, paths, mode).await,
        Q::BuildPathsWithResults { paths, mode } => build::build_paths_with_results(s, d, paths, mode).await,
        Q::BuildDerivation { drv_path, drv, mode } => build::build_derivation(s, d, drv_path, drv, mode).await,
        Q::QueryMissing(targets) => build::query_missing(s, d, targets).await,

        Q::OptimiseStore => maintenance::optimise_store(s).await,
        Q::VerifyStore { check_contents, repair } => maintenance::verify_store(s, check_contents, repair).await,

        Q::SetOptions(options) => options::set_options(s, d, options).await,

        Q::RegisterDrvOutputLegacy { id, out_path } => realisations::register_drv_output_legacy(s, id, out_path).await,
        Q::RegisterDrvOutput(json) => realisations::register_drv_output(s, json).await,
        Q::QueryRealisation(id) => realisations::query_realisation(s, id).await,
    }
}
