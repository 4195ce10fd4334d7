//! Attributes of a derivation that steer how it is built: booleans
//! (`allowSubstitutes`, `__noChroot`, CppNix `ParsedDerivation::getBoolAttr`)
//! and `requiredSystemFeatures`, from its structured attributes or else its
//! environment. A leaf: the goals and the local build use it.

use std::collections::BTreeSet;
use store::derivation::Derivation;

/// A boolean attribute of a derivation (CppNix
/// `ParsedDerivation::getBoolAttr`): from its structured attributes, else
/// from its environment, where "1" is true.
pub(crate) fn bool_attr(drv: &Derivation, name: &str, default: bool) -> bool {
    match drv.structured_attrs() {
        Ok(Some(json)) => json.get(name).and_then(serde_json::Value::as_bool).unwrap_or(default),
        _ => drv.env_var(name).map_or(default, |v| v == b"1"),
    }
}

/// `allowSubstitutes` (default true; CppNix `substitutesAllowed`).
pub(crate) fn substitutes_allowed(drv: &Derivation) -> bool {
    bool_attr(drv, "allowSubstitutes", true)
}

/// `requiredSystemFeatures`.
pub(crate) fn required_features(drv: &Derivation) -> BTreeSet<String> {
    if let Ok(Some(json)) = drv.structured_attrs() {
        return json
            .get("requiredSystemFeatures")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
    }
    drv.env_var("requiredSystemFeatures")
        .map(|v| String::from_utf8_lossy(v).split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}
