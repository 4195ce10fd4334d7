//! How a setting's text becomes a typed value and back (CppNix's
//! `BaseSetting<T>::parse`/`appendOrSet`/`to_string` in
//! src/libutil/config.cc): booleans, integers with an optional binary unit
//! suffix, strings, whitespace-separated lists and sets, the sandbox mode and
//! the experimental feature set. The text form (`SettingValue::render`) is
//! what `nix show-config` prints.

use super::features::ExperimentalFeature;
use super::warning::Warning;
use std::collections::BTreeSet;
use std::fmt;

/// Why a setting's value was rejected. Messages are CppNix's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("Boolean setting '{name}' has invalid value '{value}'")]
    InvalidBool { name: String, value: String },
    #[error("setting '{name}' has invalid value '{value}'")]
    InvalidValue { name: String, value: String },
    #[error("option '{name}' has invalid value '{value}'")]
    InvalidSandboxMode { name: String, value: String },
    #[error("configuration setting '{name}' should be 'auto' or an integer")]
    InvalidMaxJobs { name: String, value: String },
}

/// What a value parser may need besides the text: the number of CPUs for
/// `max-jobs = auto`, and somewhere to put warnings.
pub(crate) struct Context<'a> {
    pub cores: u32,
    pub warnings: &'a mut Vec<Warning>,
}

/// A type a setting can have.
pub(crate) trait SettingValue: Sized {
    /// Whether `extra-NAME` may append to it (lists and sets only).
    const APPENDABLE: bool = false;

    fn parse(name: &str, text: &str, cx: &mut Context<'_>) -> Result<Self, SettingError>;

    /// Adds `more` to the value (only called when [`Self::APPENDABLE`]).
    fn append(&mut self, more: Self) {
        *self = more;
    }

    /// The text `nix show-config` prints for the value.
    fn render(&self) -> String;
}

impl SettingValue for bool {
    fn parse(name: &str, text: &str, _: &mut Context<'_>) -> Result<bool, SettingError> {
        match text {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(SettingError::InvalidBool { name: name.to_owned(), value: text.to_owned() }),
        }
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for String {
    fn parse(_: &str, text: &str, _: &mut Context<'_>) -> Result<String, SettingError> {
        Ok(text.to_owned())
    }

    fn render(&self) -> String {
        self.clone()
    }
}

/// An optional string: empty text means unset.
impl SettingValue for Option<String> {
    fn parse(_: &str, text: &str, _: &mut Context<'_>) -> Result<Self, SettingError> {
        Ok((!text.is_empty()).then(|| text.to_owned()))
    }

    fn render(&self) -> String {
        self.clone().unwrap_or_default()
    }
}

/// An ordered list; duplicates are kept.
impl SettingValue for Vec<String> {
    const APPENDABLE: bool = true;

    fn parse(_: &str, text: &str, _: &mut Context<'_>) -> Result<Self, SettingError> {
        Ok(tokens(text).map(str::to_owned).collect())
    }

    fn append(&mut self, more: Self) {
        self.extend(more);
    }

    fn render(&self) -> String {
        self.join(" ")
    }
}

/// A sorted set.
impl SettingValue for BTreeSet<String> {
    const APPENDABLE: bool = true;

    fn parse(_: &str, text: &str, _: &mut Context<'_>) -> Result<Self, SettingError> {
        Ok(tokens(text).map(str::to_owned).collect())
    }

    fn append(&mut self, more: Self) {
        self.extend(more);
    }

    fn render(&self) -> String {
        self.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
    }
}

/// Unknown features are dropped with a warning; `flakes` brings
/// `fetch-tree` with it (2.26).
impl SettingValue for BTreeSet<ExperimentalFeature> {
    const APPENDABLE: bool = true;

    fn parse(_: &str, text: &str, cx: &mut Context<'_>) -> Result<Self, SettingError> {
        let mut set = BTreeSet::new();
        for name in tokens(text) {
            match name.parse::<ExperimentalFeature>() {
                Ok(f) => {
                    set.insert(f);
                    if f == ExperimentalFeature::Flakes {
                        set.insert(ExperimentalFeature::FetchTree);
                    }
                }
                Err(unknown) => cx.warnings.push(Warning::UnknownExperimentalFeature(unknown)),
            }
        }
        Ok(set)
    }

    fn append(&mut self, more: Self) {
        self.extend(more);
    }

    fn render(&self) -> String {
        let names: BTreeSet<&str> = self.iter().map(|f| f.name()).collect();
        names.into_iter().collect::<Vec<_>>().join(" ")
    }
}

/// Splits at the whitespace CppNix's `tokenizeString` uses.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split([' ', '\t', '\n', '\r']).filter(|t| !t.is_empty())
}

/// Integers accept a `K`, `M`, `G` or `T` suffix (powers of 1024, either
/// case), as in 2.26's `string2IntWithUnitPrefix`; 2.8 accepted digits only.
/// Unlike CppNix, a result that overflows is an error rather than wrapping.
fn parse_int<T: TryFrom<i128>>(name: &str, text: &str) -> Result<T, SettingError> {
    let invalid = || SettingError::InvalidValue { name: name.to_owned(), value: text.to_owned() };
    let (digits, shift) = match text.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&text[..text.len() - 1], 10),
        Some('M') => (&text[..text.len() - 1], 20),
        Some('G') => (&text[..text.len() - 1], 30),
        Some('T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let n: i128 = digits.parse().map_err(|_| invalid())?;
    T::try_from(n << shift).map_err(|_| invalid())
}

macro_rules! integer_settings {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            fn parse(name: &str, text: &str, _: &mut Context<'_>) -> Result<Self, SettingError> {
                parse_int(name, text)
            }

            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

integer_settings!(u32, u64, i64);

/// `max-jobs`: a number, or `auto` for the number of CPUs.
pub(crate) fn parse_max_jobs(name: &str, text: &str, cx: &mut Context<'_>) -> Result<u32, SettingError> {
    match text {
        "auto" => Ok(cx.cores.max(1)),
        _ => text.parse().map_err(|_| SettingError::InvalidMaxJobs { name: name.to_owned(), value: text.to_owned() }),
    }
}

/// The `sandbox` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// `true`: every build is sandboxed.
    Enabled,
    /// `relaxed`: fixed-output derivations and those with `__noChroot`
    /// run outside the sandbox.
    Relaxed,
    /// `false`.
    Disabled,
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SandboxMode::Enabled => "true",
            SandboxMode::Relaxed => "relaxed",
            SandboxMode::Disabled => "false",
        })
    }
}

/// Exactly `true`, `relaxed` or `false` (no `yes`/`1` here, as in CppNix).
impl SettingValue for SandboxMode {
    fn parse(name: &str, text: &str, _: &mut Context<'_>) -> Result<Self, SettingError> {
        match text {
            "true" => Ok(SandboxMode::Enabled),
            "relaxed" => Ok(SandboxMode::Relaxed),
            "false" => Ok(SandboxMode::Disabled),
            _ => Err(SettingError::InvalidSandboxMode { name: name.to_owned(), value: text.to_owned() }),
        }
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(warnings: &mut Vec<Warning>) -> Context<'_> {
        Context { cores: 3, warnings }
    }

    #[test]
    fn integers_take_unit_suffixes() {
        assert_eq!(parse_int::<u64>("n", "8"), Ok(8));
        assert_eq!(parse_int::<u64>("n", "+8"), Ok(8));
        assert_eq!(parse_int::<u64>("n", "2k"), Ok(2048));
        assert_eq!(parse_int::<u64>("n", "3G"), Ok(3 << 30));
        assert_eq!(parse_int::<u64>("n", "1T"), Ok(1 << 40));
        assert_eq!(parse_int::<i64>("n", "-1"), Ok(-1));
        for bad in ["", "K", "1X", "-1", "1.5", " 1", "99999999999999999999", "17179869184T"] {
            assert_eq!(
                parse_int::<u64>("n", bad),
                Err(SettingError::InvalidValue { name: "n".into(), value: bad.into() }),
                "{bad:?}"
            );
        }
        assert!(parse_int::<u32>("n", "4G").is_err());
    }

    #[test]
    fn booleans_and_max_jobs() {
        let mut w = Vec::new();
        for t in ["true", "yes", "1"] {
            assert_eq!(bool::parse("b", t, &mut cx(&mut w)), Ok(true));
        }
        for f in ["false", "no", "0"] {
            assert_eq!(bool::parse("b", f, &mut cx(&mut w)), Ok(false));
        }
        let err = bool::parse("b", "True", &mut cx(&mut w)).unwrap_err();
        assert_eq!(err.to_string(), "Boolean setting 'b' has invalid value 'True'");
        assert_eq!(parse_max_jobs("max-jobs", "auto", &mut cx(&mut w)), Ok(3));
        assert_eq!(parse_max_jobs("max-jobs", "0", &mut cx(&mut w)), Ok(0));
        assert!(matches!(parse_max_jobs("max-jobs", "1K", &mut cx(&mut w)), Err(SettingError::InvalidMaxJobs { .. })));
        assert!(SandboxMode::parse("sandbox", "yes", &mut cx(&mut w)).is_err());
    }

    #[test]
    fn features_warn_on_unknown_names() {
        let mut w = Vec::new();
        let set = BTreeSet::<ExperimentalFeature>::parse("x", "flakes nope ca-derivations", &mut cx(&mut w)).unwrap();
        assert_eq!(set.render(), "ca-derivations fetch-tree flakes");
        assert_eq!(w, [Warning::UnknownExperimentalFeature("nope".into())]);
    }
}
