//! Dumping a path once to hash its NAR and find the store paths it refers
//! to (CppNix's `scanForReferences`, src/libstore/references.cc).

use super::dump;
use std::collections::BTreeSet;
use std::path::Path;
use store::hash::{Algorithm, Hash, HashSink};
use store::nar::NarError;
use store::references::{RefScanner, Tee};
use store::store_path::StorePath;

/// What [`scan_path`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    /// The candidates whose hash part occurs in the NAR serialisation.
    pub references: BTreeSet<StorePath>,
    pub nar_hash: Hash,
    pub nar_size: u64,
}

/// Dumps `path` once, hashing the NAR with `algorithm` and scanning it for
/// the hash parts of `candidates` (CppNix's `scanForReferences`).
pub fn scan_path(path: &Path, candidates: &BTreeSet<StorePath>, algorithm: Algorithm) -> Result<ScanResult, NarError> {
    let mut tee = Tee::new(HashSink::new(algorithm), RefScanner::for_paths(candidates));
    dump(path, &mut tee)?;
    let (sink, scanner) = tee.into_inner();
    let (nar_hash, nar_size) = sink.finish();
    let references = candidates.iter().filter(|p| scanner.is_found(p.hash_part().as_bytes())).cloned().collect();
    Ok(ScanResult { references, nar_hash, nar_size })
}
