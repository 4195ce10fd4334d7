//! `hashDerivationModulo` (CppNix derivations.cc): the hash that
//! input-addressed output paths are made from. It is the SHA-256 of the
//! derivation's ATerm with every input derivation replaced by that input's
//! own hash modulo, so that what an input is built *by* does not matter,
//! only what it builds:
//!
//! - a fixed-output derivation hashes to
//!   `sha256("fixed:out:<method><algo>:<hex>:<output path>")`, whatever its
//!   builder; two fetchers of the same file are interchangeable;
//! - an impure one to `sha256("impure")`, marked deferred;
//! - anything else to the SHA-256 of its ATerm with inputs replaced, marked
//!   deferred when it is floating content-addressed or depends on something
//!   deferred (its output paths then cannot be known before building).
//!
//! Input derivations are read through a caller-supplied resolver (from a
//! store, from memory), each once: [`DrvHasher`] memoises per `.drv` path, as
//! CppNix's global `drvHashes` does. The walk over inputs is iterative, so a
//! long dependency chain cannot overflow the stack, and a cycle (impossible
//! in a real store, possible from a resolver) is reported.

use super::aterm::{self, Mode};
use super::{Derivation, DerivationError, DerivationType, InputOutputs, Output};
use crate::hash::{Algorithm, Encoding, Hash};
use crate::store_path::{StoreDir, StorePath, StoreReferences, output_path_name};
use std::collections::{BTreeMap, HashMap, HashSet};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether output paths made from a hash modulo are final (CppNix
/// `DrvHash::Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrvHashKind {
    /// Known now.
    Regular,
    /// The derivation is floating or impure, or depends on one: its outputs'
    /// paths are known only after those are built.
    Deferred,
}

/// The hash modulo of each output of a derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvHash {
    pub hashes: BTreeMap<String, Hash>,
    pub kind: DrvHashKind,
}

/// Computes hashes modulo, reading input derivations through `resolve` and
/// remembering the result for each `.drv` path.
pub struct DrvHasher<R> {
    store_dir: StoreDir,
    resolve: R,
    memo: HashMap<StorePath, DrvHash>,
}

impl<R, E> DrvHasher<R>
where
    R: FnMut(&StorePath) -> Result<Derivation, E>,
    E: Into<BoxError>,
{
    /// A hasher for derivations in `store_dir`, reading input derivations
    /// with `resolve`.
    pub fn new(store_dir: StoreDir, resolve: R) -> Self {
        DrvHasher { store_dir, resolve, memo: HashMap::new() }
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// CppNix `hashDerivationModulo(store, drv, maskOutputs)`. With
    /// `mask_outputs`, the derivation's own output paths and the environment
    /// variables named after its outputs are blanked, which is how output
    /// paths are computed (they cannot depend on themselves).
    pub fn hash_modulo(&mut self, drv: &Derivation, mask_outputs: bool) -> Result<DrvHash, DerivationError> {
        if !hashed_without_inputs(drv)? {
            for input in drv.input_drvs.keys() {
                self.hash_path(input)?;
            }
        }
        hash_with_inputs(drv, &self.store_dir, mask_outputs, &self.memo)
    }

    /// CppNix `pathDerivationModulo`: the (unmasked) hash modulo of the
    /// derivation at `drv_path`, read through the resolver once.
    pub fn hash_path(&mut self, drv_path: &StorePath) -> Result<DrvHash, DerivationError> {
        if let Some(h) = self.memo.get(drv_path) {
            return Ok(h.clone());
        }
        // Depth-first, post-order, with an explicit stack: each frame holds a
        // derivation and the inputs it still waits for.
        struct Frame {
            path: StorePath,
            drv: Derivation,
            waiting: Vec<StorePath>,
        }
        let mut stack: Vec<Frame> = Vec::new();
        let mut on_stack: HashSet<StorePath> = HashSet::new();
        let mut next = Some(drv_path.clone());
        loop {
            if let Some(path) = next.take() {
                let drv = self.load(&path)?;
                let waiting = if hashed_without_inputs(&drv)? {
                    Vec::new()
                } else {
                    drv.input_drvs.keys().filter(|p| !self.memo.contains_key(*p)).cloned().collect()
                };
                on_stack.insert(path.clone());
                stack.push(Frame { path, drv, waiting });
            }
            let Some(top) = stack.last_mut() else { break };
            if let Some(input) = top.waiting.pop() {
                if self.memo.contains_key(&input) {
                    continue;
                }
                if on_stack.contains(&input) {
                    return Err(DerivationError::Cycle(self.store_dir.display(&input)));
                }
                next = Some(input);
                continue;
            }
            let Some(frame) = stack.pop() else { break };
            let hash = hash_with_inputs(&frame.drv, &self.store_dir, false, &self.memo)?;
            on_stack.remove(&frame.path);
            self.memo.insert(frame.path, hash);
        }
        self.memo.get(drv_path).cloned().ok_or_else(|| DerivationError::Cycle(self.store_dir.display(drv_path)))
    }

    /// Records the hash modulo of a `.drv` path computed elsewhere (CppNix
    /// seeds `drvHashes` this way right after writing a derivation).
    pub fn remember(&mut self, drv_path: StorePath, hash: DrvHash) {
        self.memo.insert(drv_path, hash);
    }

    fn load(&mut self, path: &StorePath) -> Result<Derivation, DerivationError> {
        (self.resolve)(path)
            .map_err(|e| DerivationError::Resolve { path: self.store_dir.display(path), source: e.into() })
    }
}

/// One-shot [`DrvHasher::hash_modulo`], for when nothing is worth keeping.
pub fn hash_derivation_modulo<R, E>(
    drv: &Derivation,
    store_dir: &StoreDir,
    mask_outputs: bool,
    resolve: R,
) -> Result<DrvHash, DerivationError>
where
    R: FnMut(&StorePath) -> Result<Derivation, E>,
    E: Into<BoxError>,
{
    DrvHasher::new(store_dir.clone(), resolve).hash_modulo(drv, mask_outputs)
}

/// Whether the hash of `drv` is computed without looking at its inputs
/// (fixed-output and impure derivations).
fn hashed_without_inputs(drv: &Derivation) -> Result<bool, DerivationError> {
    Ok(matches!(drv.derivation_type()?, DerivationType::Fixed | DerivationType::Impure))
}

/// The hash modulo of `drv`, given the hashes of all its inputs in `known`.
fn hash_with_inputs(
    drv: &Derivation,
    store_dir: &StoreDir,
    mask_outputs: bool,
    known: &HashMap<StorePath, DrvHash>,
) -> Result<DrvHash, DerivationError> {
    let ty = drv.derivation_type()?;
    match ty {
        DerivationType::Fixed => {
            let mut hashes = BTreeMap::new();
            for (name, output) in &drv.outputs {
                let Output::Fixed(ca) = output else { continue };
                let path =
                    store_dir.make_path_from_ca(&output_path_name(&drv.name, name), ca, &StoreReferences::default())?;
                let fingerprint = format!(
                    "fixed:out:{}:{}:{}",
                    ca.method.render_with_algorithm(ca.hash.algorithm()),
                    ca.hash.to_base16(),
                    store_dir.display(&path)
                );
                hashes.insert(name.clone(), Algorithm::Sha256.digest(fingerprint));
            }
            return Ok(DrvHash { hashes, kind: DrvHashKind::Regular });
        }
        DerivationType::Impure => {
            let impure = Algorithm::Sha256.digest("impure");
            let hashes = drv.outputs.keys().map(|n| (n.clone(), impure)).collect();
            return Ok(DrvHash { hashes, kind: DrvHashKind::Deferred });
        }
        _ => {}
    }

    // "Deferred" input-addressed derivations do not taint the kind by
    // themselves: only floating outputs and deferred inputs do.
    let mut kind = if ty == DerivationType::Floating { DrvHashKind::Deferred } else { DrvHashKind::Regular };
    // Each input derivation becomes the hex of its hash modulo. Dynamic
    // (nested) outputs are dropped here, as CppNix 2.26 drops them.
    let mut inputs: BTreeMap<String, InputOutputs> = BTreeMap::new();
    for (path, wanted) in &drv.input_drvs {
        let input = known.get(path).ok_or_else(|| DerivationError::Resolve {
            path: store_dir.display(path),
            source: "its hash modulo was not computed".into(),
        })?;
        if input.kind == DrvHashKind::Deferred {
            kind = DrvHashKind::Deferred;
        }
        for output in &wanted.outputs {
            let h = input
                .hashes
                .get(output)
                .ok_or_else(|| DerivationError::MissingOutputHash { output: output.clone(), drv: drv.name.clone() })?;
            inputs.entry(h.encode(Encoding::Base16)).or_default().outputs.insert(output.clone());
        }
    }

    let text = aterm::print(drv, store_dir, Mode::Modulo { mask_outputs, inputs: &inputs })?;
    let hash = Algorithm::Sha256.digest(&text);
    Ok(DrvHash { hashes: drv.outputs.keys().map(|n| (n.clone(), hash)).collect(), kind })
}
