//! What a store knows about a valid path: its NAR hash and size, references,
//! deriver, signatures and content address (CppNix `ValidPathInfo`).

use crate::content_address::ContentAddress;
use crate::hash::Hash;
use crate::narinfo::NarInfo;
use crate::store_path::{StoreDir, StorePath};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    pub deriver: Option<StorePath>,
    /// SHA-256 of the path's NAR serialisation.
    pub nar_hash: Hash,
    pub references: BTreeSet<StorePath>,
    /// Unix seconds.
    pub registration_time: i64,
    pub nar_size: u64,
    /// Built locally ("ultimately trusted").
    pub ultimate: bool,
    /// `keyname:base64sig` strings.
    pub sigs: BTreeSet<String>,
    pub ca: Option<ContentAddress>,
}

impl PathInfo {
    pub fn new(path: StorePath, nar_hash: Hash, nar_size: u64) -> PathInfo {
        PathInfo {
            path,
            deriver: None,
            nar_hash,
            references: BTreeSet::new(),
            registration_time: 0,
            nar_size,
            ultimate: false,
            sigs: BTreeSet::new(),
            ca: None,
        }
    }

    /// The references other than the path itself.
    pub fn references_without_self(&self) -> impl Iterator<Item = &StorePath> {
        self.references.iter().filter(move |r| **r != self.path)
    }

    /// The full paths of the references, in order.
    pub fn reference_paths(&self, dir: &StoreDir) -> Vec<String> {
        self.references.iter().map(|r| dir.display(r)).collect()
    }
}

/// What a narinfo says about its path (not yet registered: no
/// registration time, not ultimately trusted).
impl From<&NarInfo> for PathInfo {
    fn from(n: &NarInfo) -> PathInfo {
        let mut info = PathInfo::new(n.path.clone(), n.nar_hash, n.nar_size);
        info.references = n.references.clone();
        info.deriver = n.deriver.clone();
        info.sigs = n.sigs.clone();
        info.ca = n.ca;
        info
    }
}
