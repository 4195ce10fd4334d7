//! Derivations as the store knows them: reading `.drv` files, their output
//! map (`DerivationOutputs` rows, realisations for floating outputs).
//! What a set of build targets is missing needs the substituters: the
//! daemon's `missing` module.

use super::LocalStore;
use super::error::{Error, IoContext, Result};
use std::collections::BTreeMap;
use store::derivation::{Derivation, DrvHasher};
use store::realisation::DrvOutput;
use store::store_path::StorePath;

impl LocalStore {
    /// Parses a `.drv` file in the store (it need not be valid).
    pub fn read_derivation(&self, drv: &StorePath) -> Result<Derivation> {
        let real = self.real_path(drv);
        let text = std::fs::read(&real).at("reading derivation", &real)?;
        // CppNix `readDerivationCommon`, which nests the parser's formatted
        // error, `error: ` prefix included.
        Derivation::parse_at(self.store_dir(), &text, drv)
            .map_err(|e| Error::DerivationParse { path: self.display(drv).to_string(), why: e.to_string() })
    }

    /// `DerivationOutputs` rows for a `.drv` about to be registered: every
    /// output whose path is known statically (input-addressed and fixed).
    /// The derivation must pass CppNix's `checkInvariants` (its output
    /// paths are the ones this store dir gives), with CppNix's wording.
    pub(super) fn derivation_output_rows(&self, drv: &StorePath) -> Result<Vec<(String, StorePath)>> {
        let parsed = self.read_derivation(drv)?;
        self.check_invariants(drv, &parsed)?;
        let outputs = parsed
            .output_paths(self.store_dir())
            .map_err(|e| Error::Derivation { path: self.display(drv), why: e.to_string() })?;
        Ok(outputs.into_iter().filter_map(|(name, path)| path.map(|p| (name, p))).collect())
    }

    /// [`Derivation::check_invariants`], with the hashes modulo of input
    /// derivations remembered across registrations.
    fn check_invariants(&self, drv: &StorePath, parsed: &Derivation) -> Result<()> {
        let mut hasher = DrvHasher::new(self.store_dir().clone(), |p: &StorePath| self.read_derivation(p));
        {
            let cache = self.shared.drv_hashes.lock().unwrap_or_else(|e| e.into_inner());
            for input in parsed.input_drvs.keys() {
                if let Some(h) = cache.get(input) {
                    hasher.remember(input.clone(), h.clone());
                }
            }
        }
        parsed.check_invariants(drv, &mut hasher)?;
        let mut known = Vec::new();
        for input in parsed.input_drvs.keys() {
            known.push((input.clone(), hasher.hash_path(input)?));
        }
        known.push((drv.clone(), hasher.hash_modulo(parsed, false)?));
        let mut cache = self.shared.drv_hashes.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() + known.len() > super::DRV_HASH_CACHE {
            cache.clear();
        }
        cache.extend(known);
        Ok(())
    }

    /// The known output paths of a valid derivation, by output name (CppNix
    /// `queryPartialDerivationOutputMap`): the database's rows, and with
    /// `ca-derivations` every output, realised or not (`None`).
    pub fn derivation_output_map(&self, drv: &StorePath) -> Result<BTreeMap<String, Option<StorePath>>> {
        let mut map: BTreeMap<String, Option<StorePath>> =
            self.query_derivation_outputs(drv)?.into_iter().map(|(n, p)| (n, Some(p))).collect();
        if !self.shared.config.ca_derivations {
            return Ok(map);
        }
        let parsed = self.read_derivation(drv)?;
        let mut hasher = DrvHasher::new(self.store_dir().clone(), |p: &StorePath| self.read_derivation(p));
        let hashes = hasher
            .hash_modulo(&parsed, true)
            .map_err(|e| Error::Derivation { path: self.display(drv), why: e.to_string() })?;
        for (output, hash) in hashes.hashes {
            if map.get(&output).is_some_and(Option::is_some) {
                continue;
            }
            let id = DrvOutput { drv_hash: hash, output: output.clone() };
            let path = self.query_realisation(&id)?.map(|r| r.out_path);
            map.insert(output, path);
        }
        Ok(map)
    }
}
