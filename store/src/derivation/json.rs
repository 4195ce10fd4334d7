//! The JSON form of derivations that `nix derivation show` prints in CppNix
//! 2.26 (derivations.cc, `Derivation::toJSON`; nix/derivation-show.cc): an
//! object keyed by `.drv` path, each value with `name`, `outputs`,
//! `inputSrcs`, `inputDrvs` (`{"outputs": [...], "dynamicOutputs": {...}}`
//! per input), `system`, `builder`, `args` and `env`.
//!
//! Outputs are written by kind: input-addressed `{"path"}`; fixed
//! `{"path", "method", "hashAlgo", "hash"}` with the hash in bare base-16;
//! floating `{"method", "hashAlgo"}`; deferred `{}`; impure
//! `{"method", "hashAlgo", "impure": true}`. Methods are `flat`, `nar`,
//! `text` and `git`.
//!
//! Keys are inserted in sorted order, so `serde_json::to_string_pretty` of
//! the result reads like CppNix's `dump(2)` whether or not serde_json keeps
//! insertion order. Strings must be UTF-8, as CppNix's JSON library requires.

use super::{Derivation, DerivationError, InputOutputs, Output};
use crate::content_address::{ContentAddressMethod, FileIngestionMethod};
use crate::hash::Algorithm;
use crate::store_path::{StoreDir, StorePath};
use serde_json::{Map, Value, json};

/// What `nix derivation show` prints for these derivations: an object from
/// each full `.drv` path to [`Derivation::to_json`].
pub fn show_json<'a>(
    store_dir: &StoreDir,
    drvs: impl IntoIterator<Item = (&'a StorePath, &'a Derivation)>,
) -> Result<Value, DerivationError> {
    let mut sorted: Vec<_> = drvs.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut root = Map::new();
    for (path, drv) in sorted {
        root.insert(store_dir.display(path), drv.to_json(store_dir)?);
    }
    Ok(Value::Object(root))
}

impl Derivation {
    /// This derivation as `nix derivation show` writes it.
    pub fn to_json(&self, store_dir: &StoreDir) -> Result<Value, DerivationError> {
        let text = |bytes: &[u8], what: &dyn Fn() -> String| {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| DerivationError::NotUtf8 { drv: self.name.clone(), what: what() })
        };

        let mut outputs = Map::new();
        for (name, output) in &self.outputs {
            outputs.insert(name.clone(), self.output_json(store_dir, name, output)?);
        }
        let input_srcs: Vec<Value> = self.input_srcs.iter().map(|p| Value::String(store_dir.display(p))).collect();
        let mut input_drvs = Map::new();
        for (path, node) in &self.input_drvs {
            input_drvs.insert(store_dir.display(path), input_json(node));
        }
        let args = self
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| text(a, &|| format!("argument {i}")).map(Value::String))
            .collect::<Result<Vec<_>, _>>()?;
        let mut env = Map::new();
        for (k, v) in &self.env {
            let key = text(k, &|| "an environment variable name".to_owned())?;
            let value = text(v, &|| format!("environment variable '{key}'"))?;
            env.insert(key, Value::String(value));
        }

        let mut res = Map::new();
        res.insert("args".into(), Value::Array(args));
        res.insert("builder".into(), Value::String(text(&self.builder, &|| "the builder".to_owned())?));
        res.insert("env".into(), Value::Object(env));
        res.insert("inputDrvs".into(), Value::Object(input_drvs));
        res.insert("inputSrcs".into(), Value::Array(input_srcs));
        res.insert("name".into(), Value::String(self.name.clone()));
        res.insert("outputs".into(), Value::Object(outputs));
        res.insert("system".into(), Value::String(self.system.clone()));
        Ok(Value::Object(res))
    }

    fn output_json(&self, store_dir: &StoreDir, name: &str, output: &Output) -> Result<Value, DerivationError> {
        Ok(match output {
            Output::InputAddressed(p) => json!({ "path": store_dir.display(p) }),
            Output::Fixed(ca) => {
                let path = output.path(store_dir, &self.name, name)?.map(|p| store_dir.display(&p));
                json!({
                    "hash": ca.hash.to_base16(),
                    "hashAlgo": ca.hash.algorithm().name(),
                    "method": method_name(ca.method),
                    "path": path,
                })
            }
            Output::Floating { method, algorithm } => method_algo(*method, *algorithm),
            Output::Deferred => json!({}),
            Output::Impure { method, algorithm } => {
                let mut v = method_algo(*method, *algorithm);
                if let Value::Object(m) = &mut v {
                    m.insert("impure".into(), Value::Bool(true));
                }
                v
            }
        })
    }
}

fn method_algo(method: ContentAddressMethod, algorithm: Algorithm) -> Value {
    json!({ "hashAlgo": algorithm.name(), "method": method_name(method) })
}

/// CppNix `ContentAddressMethod::render`.
fn method_name(method: ContentAddressMethod) -> &'static str {
    match method {
        ContentAddressMethod::Text => "text",
        ContentAddressMethod::Fixed(FileIngestionMethod::Flat) => "flat",
        ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => "nar",
        ContentAddressMethod::Fixed(FileIngestionMethod::Git) => "git",
    }
}

fn input_json(node: &InputOutputs) -> Value {
    let dynamic: Map<String, Value> =
        node.dynamic_outputs.iter().map(|(name, child)| (name.clone(), input_json(child))).collect();
    json!({ "dynamicOutputs": dynamic, "outputs": node.outputs })
}
