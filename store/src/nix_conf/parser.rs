//! The `nix.conf` line syntax (CppNix `parseConfigFiles`/`applyConfig` in
//! src/libutil/config.cc), producing `name = value` assignments in order,
//! with includes expanded in place.
//!
//! - `#` starts a comment anywhere on a line; blank lines are skipped.
//! - A line is split into tokens at spaces, tabs and carriage returns.
//! - `name = value...`: the second token must be `=`; the value is the
//!   remaining tokens joined by single spaces (so it may be empty).
//! - `include PATH` / `!include PATH` read another file, relative to the
//!   including file's directory. A missing file is an error for `include`
//!   and skipped for `!include`. A file that exists but cannot be read is
//!   skipped by CppNix; we skip it too but report a warning.
//!
//! Include cycles, which make CppNix recurse until it crashes, are errors.

use super::warning::Warning;
use std::path::{Component, Path, PathBuf};

/// Why a configuration file could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("syntax error in configuration line '{text}' in '{origin}' at line {line}")]
    Syntax { text: String, origin: String, line: usize },
    #[error("file '{path}' included from '{from}' not found")]
    IncludeNotFound { path: PathBuf, from: String },
    #[error("file '{path}' included from '{from}' includes itself (through {chain})")]
    IncludeCycle { path: PathBuf, from: String, chain: String },
    #[error("cannot read configuration file '{path}': {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// One `name = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub value: String,
    /// The file (or `NIX_CONFIG`) it came from.
    pub origin: String,
    /// 1-based line number in `origin`.
    pub line: usize,
}

/// The assignments of a configuration text and everything it includes.
#[derive(Debug, Default)]
pub struct Parsed {
    pub assignments: Vec<Assignment>,
    /// Included files that exist but could not be read.
    pub warnings: Vec<Warning>,
}

/// Parses a configuration file and its includes. Reading the file itself
/// must succeed (callers decide whether a missing `nix.conf` matters).
pub fn parse_file(path: &Path) -> Result<Parsed, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|source| ParseError::Read { path: path.into(), source })?;
    let mut parsed = Parsed::default();
    let mut stack = vec![identity(path)];
    parse_into(&text, &path.display().to_string(), dir_of(path), &mut stack, &mut parsed)?;
    Ok(parsed)
}

/// Parses configuration text that is not a file (`NIX_CONFIG`, daemon
/// options). `origin` names it in messages; relative includes are resolved
/// against `base_dir`.
pub fn parse_str(text: &str, origin: &str, base_dir: &Path) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed::default();
    parse_into(text, origin, base_dir, &mut Vec::new(), &mut parsed)?;
    Ok(parsed)
}

fn parse_into(
    text: &str,
    origin: &str,
    dir: &Path,
    stack: &mut Vec<PathBuf>,
    out: &mut Parsed,
) -> Result<(), ParseError> {
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let tokens: Vec<&str> = content.split([' ', '\t', '\r']).filter(|t| !t.is_empty()).collect();
        let syntax = || ParseError::Syntax { text: content.to_owned(), origin: origin.to_owned(), line };
        match tokens.as_slice() {
            [] => {}
            [keyword @ ("include" | "!include"), rest @ ..] => {
                let [target] = rest else { return Err(syntax()) };
                include(&lexical_join(dir, target), *keyword == "include", origin, stack, out)?;
            }
            [name, "=", value @ ..] => out.assignments.push(Assignment {
                name: (*name).to_owned(),
                value: value.join(" "),
                origin: origin.to_owned(),
                line,
            }),
            _ => return Err(syntax()),
        }
    }
    Ok(())
}

fn include(
    path: &Path,
    required: bool,
    from: &str,
    stack: &mut Vec<PathBuf>,
    out: &mut Parsed,
) -> Result<(), ParseError> {
    // CppNix tests existence with lstat and then reads, ignoring read errors.
    if std::fs::symlink_metadata(path).is_err() {
        return if required {
            Err(ParseError::IncludeNotFound { path: path.into(), from: from.to_owned() })
        } else {
            Ok(())
        };
    }
    let id = identity(path);
    if stack.contains(&id) {
        let chain: Vec<String> = stack.iter().map(|p| p.display().to_string()).collect();
        return Err(ParseError::IncludeCycle { path: path.into(), from: from.to_owned(), chain: chain.join(" -> ") });
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            stack.push(id);
            let result = parse_into(&text, &path.display().to_string(), dir_of(path), stack, out);
            stack.pop();
            result
        }
        Err(e) => {
            out.warnings.push(Warning::UnreadableFile { path: path.into(), error: e.to_string() });
            Ok(())
        }
    }
}

/// What identifies a file for cycle detection: its real path when it has one.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `dir/target` with `.` and `..` resolved textually, as CppNix's `absPath`
/// and `canonPath` do (symlinks are not followed).
fn lexical_join(dir: &Path, target: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in dir.join(target).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_comments_and_values() {
        let text = "a = b\n\t c   =  d  e #f\n# only\n\n g =\nh = x#y\r\n";
        let parsed = parse_str(text, "inline", Path::new("/")).unwrap();
        let got: Vec<(&str, &str, usize)> =
            parsed.assignments.iter().map(|a| (a.name.as_str(), a.value.as_str(), a.line)).collect();
        assert_eq!(got, [("a", "b", 1), ("c", "d e", 2), ("g", "", 5), ("h", "x", 6)]);
    }

    #[test]
    fn syntax_errors_name_origin_and_line() {
        for bad in ["a=b", "a b", "a", "include", "include a b", "= a"] {
            let err = parse_str(&format!("x = 1\n{bad}\n"), "NIX_CONFIG", Path::new("/")).unwrap_err();
            assert!(matches!(&err, ParseError::Syntax { line: 2, .. }), "{bad}: {err}");
            assert!(err.to_string().starts_with("syntax error in configuration line '"), "{err}");
            assert!(err.to_string().contains("in 'NIX_CONFIG' at line 2"), "{err}");
        }
    }

    #[test]
    fn lexical_join_resolves_dots() {
        assert_eq!(lexical_join(Path::new("/etc/nix"), "../x/./y.conf"), Path::new("/etc/x/y.conf"));
        assert_eq!(lexical_join(Path::new("/etc/nix"), "/abs.conf"), Path::new("/abs.conf"));
    }
}
