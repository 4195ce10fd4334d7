//! Realisations of content-addressed derivation outputs (CppNix
//! src/libstore/realisation.cc): which store path a derivation output
//! (identified by the derivation's hash modulo and the output name,
//! `sha256:<hex>!<output>`) was built to, as the JSON the protocol and
//! binary caches carry.

use crate::hash::{Encoding, Hash};
use crate::store_path::StorePath;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealisationError {
    #[error("Invalid derivation output id {0}")]
    BadId(String),
    #[error("Drv output info file '{whence}' is corrupt: {why}")]
    Corrupt { whence: String, why: String },
}

/// A derivation output: the derivation's hash modulo and an output name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DrvOutput {
    pub drv_hash: Hash,
    pub output: String,
}

impl DrvOutput {
    pub fn parse(s: &str) -> Result<DrvOutput, RealisationError> {
        let (hash, output) = s.split_once('!').ok_or_else(|| RealisationError::BadId(s.to_owned()))?;
        let drv_hash = Hash::parse_prefixed(hash).map_err(|_| RealisationError::BadId(s.to_owned()))?;
        Ok(DrvOutput { drv_hash, output: output.to_owned() })
    }

    /// `sha256:<hex>`, as stored in the `Realisations.drvPath` column.
    pub fn hash_string(&self) -> String {
        self.drv_hash.to_typed(Encoding::Base16)
    }
}

impl fmt::Display for DrvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}!{}", self.hash_string(), self.output)
    }
}

/// Where a derivation output was realised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realisation {
    pub id: DrvOutput,
    pub out_path: StorePath,
    pub signatures: BTreeSet<String>,
    pub dependent_realisations: BTreeMap<DrvOutput, StorePath>,
}

impl Realisation {
    /// The JSON CppNix writes (keys sorted; `outPath` is a base name).
    pub fn to_json(&self) -> Value {
        let deps: Map<String, Value> =
            self.dependent_realisations.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
        json!({
            "dependentRealisations": deps,
            "id": self.id.to_string(),
            "outPath": self.out_path.to_string(),
            "signatures": self.signatures.iter().collect::<Vec<_>>(),
        })
    }

    /// Parses realisation JSON; only `id` and `outPath` are required.
    pub fn from_json(text: &str, whence: &str) -> Result<Realisation, RealisationError> {
        let corrupt = |why: String| RealisationError::Corrupt { whence: whence.to_owned(), why };
        let v: Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        let field = |name: &str| -> Result<&str, RealisationError> {
            v.get(name).and_then(Value::as_str).ok_or_else(|| corrupt(format!("missing field {name}")))
        };
        let id = DrvOutput::parse(field("id")?)?;
        let out_path = StorePath::from_base_name(field("outPath")?).map_err(|e| corrupt(e.to_string()))?;
        let mut signatures = BTreeSet::new();
        if let Some(sigs) = v.get("signatures").and_then(Value::as_array) {
            for s in sigs {
                signatures.insert(s.as_str().ok_or_else(|| corrupt("a signature is not a string".into()))?.to_owned());
            }
        }
        let mut dependent_realisations = BTreeMap::new();
        if let Some(deps) = v.get("dependentRealisations").and_then(Value::as_object) {
            for (k, p) in deps {
                let p = p.as_str().ok_or_else(|| corrupt("a dependency is not a string".into()))?;
                dependent_realisations
                    .insert(DrvOutput::parse(k)?, StorePath::from_base_name(p).map_err(|e| corrupt(e.to_string()))?);
            }
        }
        Ok(Realisation { id, out_path, signatures, dependent_realisations })
    }

    /// What signatures sign: the JSON without `signatures`.
    pub fn fingerprint(&self) -> String {
        let mut v = self.to_json();
        if let Some(o) = v.as_object_mut() {
            o.remove("signatures");
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_minimal_form() {
        let id = "sha256:82b8b84bfe1b5e9f7b06b7a87c3a3c7f2b1c5b8e1d9a0e1f2a3b4c5d6e7f3545!out";
        let text = format!(r#"{{"id":"{id}","outPath":"hs9kx0i9r0s7k7qj3lqhyd7wv8h9jvl2-simple-b"}}"#);
        let r = Realisation::from_json(&text, "test").unwrap();
        assert_eq!(r.id.to_string(), id);
        assert_eq!(r.id.output, "out");
        assert_eq!(
            r.to_json().to_string(),
            format!(
                r#"{{"dependentRealisations":{{}},"id":"{id}","outPath":"hs9kx0i9r0s7k7qj3lqhyd7wv8h9jvl2-simple-b","signatures":[]}}"#
            )
        );
        assert_eq!(Realisation::from_json(&r.to_json().to_string(), "x").unwrap(), r);
        assert!(matches!(DrvOutput::parse("sha256:abc"), Err(RealisationError::BadId(_))));
        assert!(matches!(Realisation::from_json(r#"{"id":"x"}"#, "w"), Err(RealisationError::BadId(_))));
    }
}
