//! The environment a builder runs in, as CppNix sets it up
//! (local-derivation-goal.cc `initEnv`, `initTmpDir`,
//! `writeStructuredAttrs`, `exportReferencesGraph`): `PATH=/path-not-set`,
//! `HOME=/homeless-shelter`, `NIX_STORE`, `NIX_BUILD_CORES`, the
//! derivation's variables (or `passAsFile` files), `NIX_BUILD_TOP`/`TMPDIR`/
//! `TEMPDIR`/`TMP`/`TEMP`/`PWD` pointing at the build directory, `NIX_LOG_FD`,
//! `TERM`, the impure variables of fixed-output derivations, and for
//! structured attributes `.attrs.json`/`.attrs.sh`.

use local_store::LocalStore;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use store::derivation::Derivation;
use store::hash::Algorithm;
use store::store_path::StorePath;

/// The home directory builders see (it must not exist).
pub const HOME_DIR: &str = "/homeless-shelter";

/// Inputs to environment construction.
pub struct EnvInputs<'a> {
    pub drv: &'a Derivation,
    pub store: &'a LocalStore,
    /// The build directory as the builder sees it (`/build` in the sandbox).
    pub build_dir_inside: &'a str,
    /// The build directory on the host (where files are written).
    pub build_dir_host: &'a Path,
    pub cores: u64,
    /// Fixed-output derivation (gets `NIX_OUTPUT_CHECKED` and impure variables).
    pub fixed_output: bool,
    /// Placeholder → output path rewrites (`builtins.placeholder`).
    pub rewrites: &'a BTreeMap<String, String>,
    /// The input closure (for `exportReferencesGraph`).
    pub input_paths: &'a BTreeSet<StorePath>,
    /// Owner of the files written for the builder.
    pub owner: Option<(u32, u32)>,
}

/// Why the environment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The derivation asks for what cannot be given (its structured
    /// attributes, `exportReferencesGraph`).
    #[error("{0}")]
    Invalid(String),
    /// Writing a file into the build directory.
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] local_store::Error),
}

/// Applies `rewrites` (placeholders and hash parts) to a byte string.
pub fn rewrite(s: &[u8], rewrites: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = s.to_vec();
    for (from, to) in rewrites {
        if from.is_empty() {
            continue;
        }
        let from = from.as_bytes();
        let mut result = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(from) {
                result.extend_from_slice(to.as_bytes());
                i += from.len();
            } else {
                result.push(out[i]);
                i += 1;
            }
        }
        out = result;
    }
    out
}

fn write_owned(path: &Path, data: &[u8], owner: Option<(u32, u32)>) -> Result<(), EnvError> {
    std::fs::write(path, data).map_err(|e| EnvError::Io(format!("writing '{}': {e}", path.display())))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| EnvError::Io(format!("changing owner of '{}': {e}", path.display())))?;
    }
    Ok(())
}

/// Builds the environment and writes its files into the build directory.
pub fn build_env(i: &EnvInputs) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, EnvError> {
    let mut env: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let set = |env: &mut BTreeMap<Vec<u8>, Vec<u8>>, k: &str, v: &str| {
        env.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    };
    set(&mut env, "PATH", "/path-not-set");
    set(&mut env, "HOME", HOME_DIR);
    set(&mut env, "NIX_STORE", i.store.store_dir().as_str());
    set(&mut env, "NIX_BUILD_CORES", &i.cores.to_string());

    let structured = i.drv.structured_attrs().map_err(|e| EnvError::Invalid(e.to_string()))?;
    if structured.is_none() {
        let pass_as_file: BTreeSet<Vec<u8>> = i
            .drv
            .env_var("passAsFile")
            .map(|v| v.split(|b| b.is_ascii_whitespace()).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect())
            .unwrap_or_default();
        for (k, v) in &i.drv.env {
            if pass_as_file.contains(k) {
                let name = format!(".attr-{}", Algorithm::Sha256.digest(k).to_nix32());
                write_owned(&i.build_dir_host.join(&name), &rewrite(v, i.rewrites), i.owner)?;
                let mut key = k.clone();
                key.extend_from_slice(b"Path");
                env.insert(key, format!("{}/{name}", i.build_dir_inside).into_bytes());
            } else {
                env.insert(k.clone(), v.clone());
            }
        }
    }
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        set(&mut env, k, i.build_dir_inside);
    }
    if i.fixed_output {
        set(&mut env, "NIX_OUTPUT_CHECKED", "1");
        for var in impure_env_vars(i.drv, structured.as_ref()) {
            let value = std::env::var(&var).unwrap_or_default();
            set(&mut env, &var, &value);
        }
    }
    set(&mut env, "NIX_LOG_FD", "2");
    set(&mut env, "TERM", "xterm-256color");

    if let Some(json) = structured {
        let json = prepare_structured_attrs(i, json)?;
        let sh = structured_attrs_shell(&json);
        write_owned(&i.build_dir_host.join(".attrs.sh"), &rewrite(sh.as_bytes(), i.rewrites), i.owner)?;
        set(&mut env, "NIX_ATTRS_SH_FILE", &format!("{}/.attrs.sh", i.build_dir_inside));
        let text = serde_json::to_string(&json).map_err(|e| EnvError::Invalid(e.to_string()))?;
        write_owned(&i.build_dir_host.join(".attrs.json"), &rewrite(text.as_bytes(), i.rewrites), i.owner)?;
        set(&mut env, "NIX_ATTRS_JSON_FILE", &format!("{}/.attrs.json", i.build_dir_inside));
    } else {
        export_references_graph(i)?;
    }
    // Placeholders in the environment become output paths.
    for v in env.values_mut() {
        *v = rewrite(v, i.rewrites);
    }
    Ok(env)
}

fn impure_env_vars(drv: &Derivation, structured: Option<&Value>) -> Vec<String> {
    match structured {
        Some(json) => json
            .get("impureEnvVars")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        None => drv
            .env_var("impureEnvVars")
            .map(|v| String::from_utf8_lossy(v).split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    }
}

/// `exportReferencesGraph = [ name1 path1 name2 path2 ... ]`: each name gets
/// a file in the build directory with the closure of its path in the
/// `nix-store --register-validity` format (deriver left empty).
fn export_references_graph(i: &EnvInputs) -> Result<(), EnvError> {
    let Some(spec) = i.drv.env_var("exportReferencesGraph") else { return Ok(()) };
    let spec = String::from_utf8_lossy(spec).into_owned();
    let tokens: Vec<&str> = spec.split_whitespace().collect();
    if !tokens.len().is_multiple_of(2) {
        return Err(EnvError::Invalid(format!("odd number of tokens in 'exportReferencesGraph': '{spec}'")));
    }
    for pair in tokens.chunks(2) {
        let (name, path) = (pair[0], pair[1]);
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid_name {
            return Err(EnvError::Invalid(format!("invalid file name '{name}' in 'exportReferencesGraph'")));
        }
        let (sp, _) =
            i.store.store_dir().split_path(path).map_err(|_| {
                EnvError::Invalid(format!("'exportReferencesGraph' contains a non-store path '{path}'"))
            })?;
        let closure = export_references(i, &sp)?;
        let mut text = String::new();
        for p in &closure {
            let info = i.store.path_info(p)?;
            text.push_str(&format!("{}\n\n{}\n", i.store.display(p), info.references.len()));
            for r in &info.references {
                text.push_str(&format!("{}\n", i.store.display(r)));
            }
        }
        write_owned(&i.build_dir_host.join(name), text.as_bytes(), i.owner)?;
    }
    Ok(())
}

/// The closure of `path` for `exportReferencesGraph`: it must be an input;
/// a derivation's closure includes its outputs (CppNix `exportReferences`).
fn export_references(i: &EnvInputs, path: &StorePath) -> Result<BTreeSet<StorePath>, EnvError> {
    if !i.input_paths.contains(path) {
        return Err(EnvError::Invalid(format!(
            "cannot export references of path '{}' because it is not in the input closure of the derivation",
            i.store.display(path)
        )));
    }
    let mut start = BTreeSet::from([path.clone()]);
    if path.is_derivation() {
        for (_, out) in i.store.derivation_output_map(path)? {
            if let Some(out) = out.filter(|o| i.store.is_valid(o).unwrap_or(false)) {
                start.insert(out);
            }
        }
    }
    Ok(i.store.closure(start)?)
}

/// The structured attributes with `outputs` (placeholders, rewritten later)
/// and `exportReferencesGraph` closures filled in (CppNix `prepareStructuredAttrs`).
fn prepare_structured_attrs(i: &EnvInputs, mut json: Value) -> Result<Value, EnvError> {
    let obj = json.as_object_mut().ok_or_else(|| EnvError::Invalid("__json is not an object".into()))?;
    let mut outputs = Map::new();
    for name in i.drv.outputs.keys() {
        outputs.insert(name.clone(), Value::String(store::derivation::hash_placeholder(name)));
    }
    obj.insert("outputs".into(), Value::Object(outputs));
    if let Some(Value::Object(graphs)) = obj.get("exportReferencesGraph").cloned() {
        for (key, paths) in graphs {
            let mut closure = BTreeSet::new();
            for p in paths.as_array().into_iter().flatten().filter_map(Value::as_str) {
                let (sp, _) = i.store.store_dir().split_path(p).map_err(|e| EnvError::Invalid(e.to_string()))?;
                closure.extend(export_references(i, &sp)?);
            }
            let mut infos = Vec::new();
            for p in &closure {
                let info = i.store.path_info(p)?;
                let mut o = Map::new();
                o.insert(
                    "closureSize".into(),
                    Value::from(
                        i.store
                            .closure([p.clone()])?
                            .iter()
                            .map(|q| i.store.path_info(q).map(|x| x.nar_size).unwrap_or(0))
                            .sum::<u64>(),
                    ),
                );
                o.insert("narHash".into(), Value::String(info.nar_hash.to_typed(store::hash::Encoding::Nix32)));
                o.insert("narSize".into(), Value::from(info.nar_size));
                o.insert("path".into(), Value::String(i.store.display(p)));
                o.insert(
                    "references".into(),
                    Value::Array(info.reference_paths(i.store.store_dir()).into_iter().map(Value::String).collect()),
                );
                infos.push(Value::Object(o));
            }
            obj.insert(key, Value::Array(infos));
        }
    }
    Ok(json)
}

fn shell_escape(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn simple_shell_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(shell_escape(s)),
        Value::Number(n) => {
            let f = n.as_f64()?;
            (f.ceil() == f).then(|| format!("{}", f as i64))
        }
        Value::Null => Some("''".into()),
        Value::Bool(b) => Some(if *b { "1".into() } else { String::new() }),
        _ => None,
    }
}

/// `.attrs.sh`: the attributes bash can hold, as `declare` lines (CppNix
/// `writeStructuredAttrsShell`).
fn structured_attrs_shell(json: &Value) -> String {
    let mut out = String::new();
    let Some(obj) = json.as_object() else { return out };
    for (key, value) in obj {
        let valid = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            continue;
        }
        if let Some(s) = simple_shell_value(value) {
            out.push_str(&format!("declare {key}={s}\n"));
        } else if let Value::Array(items) = value {
            let parts: Option<Vec<String>> = items.iter().map(simple_shell_value).collect();
            if let Some(parts) = parts {
                let joined: String = parts.iter().map(|p| format!("{p} ")).collect();
                out.push_str(&format!("declare -a {key}=({joined})\n"));
            }
        } else if let Value::Object(items) = value {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|(k, v)| simple_shell_value(v).map(|s| format!("[{}]={s} ", shell_escape(k))))
                .collect();
            if let Some(parts) = parts {
                out.push_str(&format!("declare -A {key}=({})\n", parts.concat()));
            }
        }
    }
    out
}
