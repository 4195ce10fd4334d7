//! The ATerm text of `.drv` files, read and written byte for byte as CppNix
//! does (derivations.cc, `parseDerivation` and `Derivation::unparse`):
//!
//! ```text
//! Derive([outputs],[inputDrvs],[inputSrcs],"system","builder",[args],[env])
//! ```
//!
//! or, when an input is an output of a dynamic derivation (2.26),
//! `DrvWithVersion("xp-dyn-drv",[outputs],...)` with nested input entries.
//!
//! Writing: the builder, arguments and environment are escaped (`\"`, `\\`,
//! `\n`, `\r`, `\t`); every other string (output names, paths, hashes, the
//! system) is written between quotes as it is, exactly as CppNix does. So a
//! system or output name holding `"` or `\` prints as CppNix would print it,
//! which neither CppNix nor this parser reads back the same; Nix never
//! produces such names.
//!
//! Reading accepts what CppNix 2.26 accepts, including its leniencies (a
//! backslash before any other byte stands for that byte; a missing comma
//! between list items is tolerated; later duplicate environment or input
//! entries replace earlier ones while a duplicate output is ignored; bytes
//! after the closing parenthesis are ignored). On top of that it is bounded:
//! input longer than [`MAX_ATERM_LEN`] and dynamic inputs nested deeper than
//! [`MAX_DYNAMIC_DEPTH`] are refused, and a string missing its closing quote
//! is an error rather than a read past the end.

use super::{Derivation, DerivationError, InputOutputs, Output};
use crate::content_address::CaError;
use crate::hash::HashError;
use crate::store_path::{StoreDir, StorePath, StorePathError};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// The longest `.drv` text accepted (the largest real ones are a few MiB).
pub const MAX_ATERM_LEN: usize = 256 << 20;
/// How deep dynamic-derivation inputs may nest (real ones nest once or twice).
pub const MAX_DYNAMIC_DEPTH: usize = 64;

/// The only versioned ATerm format so far.
const DYN_DRV_VERSION: &str = "xp-dyn-drv";

/// Why a `.drv` text was rejected, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid derivation at byte {offset}: {kind}")]
pub struct ParseError {
    pub offset: usize,
    pub kind: ParseErrorKind,
}

/// What was wrong. Messages keep CppNix's wording where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("expected string '{0}'")]
    Expected(&'static str),
    #[error("derivation does not start with 'Derive' or 'DrvWithVersion'")]
    BadStart,
    #[error("Unknown derivation ATerm format version '{0}'")]
    UnknownVersion(String),
    #[error("unterminated string in derivation")]
    UnterminatedString,
    #[error("bad path '{0}' in derivation")]
    BadPath(String),
    #[error(transparent)]
    StorePath(StorePathError),
    #[error("invalid inputDrvs entry in derivation")]
    BadInputDrvsEntry,
    #[error("impure derivation output should not specify output path")]
    ImpureWithPath,
    #[error("content-addressed derivation output should not specify output path")]
    FloatingWithPath,
    #[error(transparent)]
    HashAlgo(CaError),
    #[error(transparent)]
    Hash(HashError),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("derivation is {0} bytes long, more than the {MAX_ATERM_LEN} bytes allowed")]
    TooLarge(usize),
    #[error("inputs of dynamic derivations nest deeper than {MAX_DYNAMIC_DEPTH} levels")]
    TooDeep,
}

/// Parses a `.drv` text (see the module docs for what is accepted).
pub fn parse(store_dir: &StoreDir, input: &[u8], name: &str) -> Result<Derivation, ParseError> {
    if input.len() > MAX_ATERM_LEN {
        return Err(ParseError { offset: 0, kind: ParseErrorKind::TooLarge(input.len()) });
    }
    Parser { s: input, pos: 0, store_dir }.derivation(name)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    store_dir: &'a StoreDir,
}

type Result<T, E = ParseError> = std::result::Result<T, E>;

impl<'a> Parser<'a> {
    fn derivation(&mut self, name: &str) -> Result<Derivation> {
        self.expect("D")?;
        let dynamic = match self.peek() {
            Some(b'e') => {
                self.expect("erive(")?;
                false
            }
            Some(b'r') => {
                self.expect("rvWithVersion(")?;
                let at = self.pos;
                let version = self.string()?;
                if *version != *DYN_DRV_VERSION.as_bytes() {
                    let v = String::from_utf8_lossy(&version).into_owned();
                    return Err(error(at, ParseErrorKind::UnknownVersion(v)));
                }
                self.expect(",")?;
                true
            }
            _ => return Err(self.err(ParseErrorKind::BadStart)),
        };

        let mut outputs = BTreeMap::new();
        self.expect("[")?;
        while !self.end_of_list() {
            self.expect("(")?;
            let id = self.text("output name")?;
            let output = self.output()?;
            // CppNix `emplace`s: the first of two same-named outputs wins.
            outputs.entry(id).or_insert(output);
        }

        let mut input_drvs = BTreeMap::new();
        self.expect(",[")?;
        while !self.end_of_list() {
            self.expect("(")?;
            let path = self.store_path()?;
            self.expect(",")?;
            let node = self.input_node(dynamic, 0)?;
            self.expect(")")?;
            input_drvs.insert(path, node);
        }

        self.expect(",")?;
        self.expect("[")?;
        let mut input_srcs = BTreeSet::new();
        while !self.end_of_list() {
            input_srcs.insert(self.store_path()?);
        }

        self.expect(",")?;
        let system = self.text("system")?;
        self.expect(",")?;
        let builder = self.string()?.into_owned();

        self.expect(",[")?;
        let mut args = Vec::new();
        while !self.end_of_list() {
            args.push(self.string()?.into_owned());
        }

        self.expect(",[")?;
        let mut env = BTreeMap::new();
        while !self.end_of_list() {
            self.expect("(")?;
            let key = self.string()?.into_owned();
            self.expect(",")?;
            let value = self.string()?.into_owned();
            self.expect(")")?;
            env.insert(key, value);
        }
        self.expect(")")?;

        Ok(Derivation { name: name.to_owned(), outputs, input_drvs, input_srcs, system, builder, args, env })
    }

    /// The rest of an output entry after its name: `,"path","algo","hash")`.
    fn output(&mut self) -> Result<Output> {
        self.expect(",")?;
        let path_at = self.pos;
        let path = self.string()?;
        self.expect(",")?;
        let algo_at = self.pos;
        let algo = self.string()?;
        self.expect(",")?;
        let hash_at = self.pos;
        let hash = self.string()?;
        self.expect(")")?;

        let offsets = [path_at, algo_at, hash_at];
        Output::parse_fields(self.store_dir, &path, &algo, &hash)
            .map_err(|(field, kind)| error(offsets[field as usize], kind))
    }

    /// The outputs wanted from one input derivation: `["out",...]`, or in
    /// the versioned format also `(["out"],[("out",<node>),...])`.
    fn input_node(&mut self, dynamic: bool, depth: usize) -> Result<InputOutputs> {
        if depth > MAX_DYNAMIC_DEPTH {
            return Err(self.err(ParseErrorKind::TooDeep));
        }
        let mut node = InputOutputs::default();
        match self.peek() {
            Some(b'(') if dynamic => {
                self.expect("(")?;
                node.outputs = self.output_names()?;
                self.expect(",[")?;
                while !self.end_of_list() {
                    self.expect("(")?;
                    let name = self.text("output name")?;
                    self.expect(",")?;
                    let child = self.input_node(dynamic, depth + 1)?;
                    self.expect(")")?;
                    node.dynamic_outputs.insert(name, child);
                }
                self.expect(")")?;
            }
            Some(b'[') | None => node.outputs = self.output_names()?,
            _ if dynamic => return Err(self.err(ParseErrorKind::BadInputDrvsEntry)),
            _ => node.outputs = self.output_names()?,
        }
        Ok(node)
    }

    fn output_names(&mut self) -> Result<BTreeSet<String>> {
        self.expect("[")?;
        let mut names = BTreeSet::new();
        while !self.end_of_list() {
            names.insert(self.text("output name")?);
        }
        Ok(names)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn err(&self, kind: ParseErrorKind) -> ParseError {
        error(self.pos, kind)
    }

    fn expect(&mut self, literal: &'static str) -> Result<()> {
        if self.s[self.pos..].starts_with(literal.as_bytes()) {
            self.pos += literal.len();
            Ok(())
        } else {
            Err(self.err(ParseErrorKind::Expected(literal)))
        }
    }

    /// CppNix's `endOfList`: consumes a `,` (more to come) or `]` (done);
    /// anything else is taken as the start of the next item.
    fn end_of_list(&mut self) -> bool {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                false
            }
            Some(b']') => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    /// A quoted string, unescaped: `\n`, `\r` and `\t` stand for control
    /// characters, a backslash before anything else for that byte.
    fn string(&mut self) -> Result<Cow<'a, [u8]>> {
        let start = self.pos;
        self.expect("\"")?;
        let s: &'a [u8] = self.s;
        let body_start = self.pos;
        let mut i = body_start;
        let mut escaped = false;
        loop {
            match s.get(i) {
                None => return Err(error(start, ParseErrorKind::UnterminatedString)),
                Some(b'"') => break,
                Some(b'\\') => {
                    if i + 1 >= s.len() {
                        return Err(error(start, ParseErrorKind::UnterminatedString));
                    }
                    escaped = true;
                    i += 2;
                }
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        let body = &s[body_start..i];
        if !escaped {
            return Ok(Cow::Borrowed(body));
        }
        let mut out = Vec::with_capacity(body.len());
        let mut bytes = body.iter();
        while let Some(&c) = bytes.next() {
            if c != b'\\' {
                out.push(c);
                continue;
            }
            // The scan above guarantees a byte after every backslash.
            out.push(match bytes.next() {
                Some(b'n') => b'\n',
                Some(b'r') => b'\r',
                Some(b't') => b'\t',
                Some(&other) => other,
                None => b'\\',
            });
        }
        Ok(Cow::Owned(out))
    }

    /// A string that must be UTF-8 (names and the system).
    fn text(&mut self, what: &'static str) -> Result<String> {
        let at = self.pos;
        let bytes = self.string()?.into_owned();
        String::from_utf8(bytes).map_err(|_| error(at, ParseErrorKind::NotUtf8(what)))
    }

    fn store_path(&mut self) -> Result<StorePath> {
        let at = self.pos;
        let s = self.string()?;
        parse_store_path(self.store_dir, &s).map_err(|kind| error(at, kind))
    }
}

fn error(offset: usize, kind: ParseErrorKind) -> ParseError {
    ParseError { offset, kind }
}

/// CppNix `validatePath`: a path in a derivation must start with `/`.
pub(super) fn validate_path(s: &[u8]) -> Result<(), ParseErrorKind> {
    if s.first() == Some(&b'/') {
        Ok(())
    } else {
        Err(ParseErrorKind::BadPath(String::from_utf8_lossy(s).into_owned()))
    }
}

/// A full store path written in a derivation.
pub(super) fn parse_store_path(store_dir: &StoreDir, s: &[u8]) -> Result<StorePath, ParseErrorKind> {
    validate_path(s)?;
    let s = std::str::from_utf8(s).map_err(|_| ParseErrorKind::BadPath(String::from_utf8_lossy(s).into_owned()))?;
    store_dir.parse_path(s).map_err(ParseErrorKind::StorePath)
}

/// How to print: the `.drv` file itself, or the text `hashDerivationModulo`
/// hashes (outputs optionally masked, input derivations replaced by their
/// hashes).
pub(super) enum Mode<'a> {
    Plain,
    Modulo { mask_outputs: bool, inputs: &'a BTreeMap<String, InputOutputs> },
}

/// `Derivation::unparse`. Fails only when a fixed output's path cannot be
/// computed (a name that is not a valid store path name, git hashing with
/// other than SHA-1).
pub(super) fn print(drv: &Derivation, store_dir: &StoreDir, mode: Mode<'_>) -> Result<Vec<u8>, DerivationError> {
    let mask = matches!(mode, Mode::Modulo { mask_outputs: true, .. });
    let mut s = Vec::with_capacity(4096);
    // Like CppNix, the versioned form is chosen by the derivation's own
    // inputs, also when they are replaced by hashes that drop the nesting.
    if drv.has_dynamic_inputs() {
        s.extend_from_slice(b"DrvWithVersion(");
        unquoted(&mut s, DYN_DRV_VERSION.as_bytes());
        s.push(b',');
    } else {
        s.extend_from_slice(b"Derive(");
    }

    s.push(b'[');
    for (i, (name, output)) in drv.outputs.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.push(b'(');
        unquoted(&mut s, name.as_bytes());
        let [mut path, algo, hash] = output.to_fields(store_dir, &drv.name, name)?;
        if mask {
            path.clear();
        }
        for field in [path, algo, hash] {
            s.push(b',');
            unquoted(&mut s, field.as_bytes());
        }
        s.push(b')');
    }

    s.extend_from_slice(b"],[");
    match mode {
        Mode::Plain => {
            let inputs = drv.input_drvs.iter().map(|(p, n)| (store_dir.display(p), n));
            print_inputs(&mut s, inputs);
        }
        Mode::Modulo { inputs, .. } => print_inputs(&mut s, inputs.iter().map(|(h, n)| (h.clone(), n))),
    }
    s.extend_from_slice(b"],");

    s.push(b'[');
    for (i, p) in drv.input_srcs.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        unquoted(&mut s, store_dir.display(p).as_bytes());
    }
    s.push(b']');

    s.push(b',');
    unquoted(&mut s, drv.system.as_bytes());
    s.push(b',');
    quoted(&mut s, &drv.builder);

    s.extend_from_slice(b",[");
    for (i, a) in drv.args.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        quoted(&mut s, a);
    }
    s.extend_from_slice(b"],[");
    for (i, (k, v)) in drv.env.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.push(b'(');
        quoted(&mut s, k);
        s.push(b',');
        let masked = mask && std::str::from_utf8(k).is_ok_and(|k| drv.outputs.contains_key(k));
        quoted(&mut s, if masked { b"" } else { v });
        s.push(b')');
    }
    s.extend_from_slice(b"])");
    Ok(s)
}

fn print_inputs<'n>(s: &mut Vec<u8>, inputs: impl Iterator<Item = (String, &'n InputOutputs)>) {
    for (i, (key, node)) in inputs.enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.push(b'(');
        unquoted(s, key.as_bytes());
        print_node(s, node);
        s.push(b')');
    }
}

/// CppNix `unparseDerivedPathMapNode`: `,[outputs]`, or with dynamic outputs
/// `,([outputs],[("out",<node>),...])`. Recursion is bounded by the nesting
/// depth the parser allows, or by whoever built a deeper value in memory.
fn print_node(s: &mut Vec<u8>, node: &InputOutputs) {
    s.push(b',');
    if !node.is_dynamic() {
        names(s, &node.outputs);
        return;
    }
    s.push(b'(');
    names(s, &node.outputs);
    s.extend_from_slice(b",[");
    for (i, (name, child)) in node.dynamic_outputs.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.push(b'(');
        unquoted(s, name.as_bytes());
        print_node(s, child);
        s.push(b')');
    }
    s.extend_from_slice(b"])");
}

fn names(s: &mut Vec<u8>, names: &BTreeSet<String>) {
    s.push(b'[');
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        unquoted(s, n.as_bytes());
    }
    s.push(b']');
}

/// CppNix `printUnquotedString`: between quotes, unescaped.
fn unquoted(s: &mut Vec<u8>, v: &[u8]) {
    s.push(b'"');
    s.extend_from_slice(v);
    s.push(b'"');
}

/// CppNix `printString`: between quotes, with `"`, `\`, LF, CR and TAB escaped.
fn quoted(s: &mut Vec<u8>, v: &[u8]) {
    s.reserve(v.len() + 2);
    s.push(b'"');
    for &c in v {
        match c {
            b'"' | b'\\' => s.extend_from_slice(&[b'\\', c]),
            b'\n' => s.extend_from_slice(b"\\n"),
            b'\r' => s.extend_from_slice(b"\\r"),
            b'\t' => s.extend_from_slice(b"\\t"),
            _ => s.push(c),
        }
    }
    s.push(b'"');
}

impl Derivation {
    /// Parses a `.drv` file's contents; `name` is the derivation's name
    /// (see [`super::name_from_drv_path`]).
    pub fn parse(store_dir: &StoreDir, aterm: &[u8], name: &str) -> Result<Derivation, ParseError> {
        parse(store_dir, aterm, name)
    }

    /// Parses the `.drv` file at `drv_path`, taking the name from the path.
    pub fn parse_at(store_dir: &StoreDir, aterm: &[u8], drv_path: &StorePath) -> Result<Derivation, DerivationError> {
        let name = super::name_from_drv_path(drv_path)?;
        parse(store_dir, aterm, name)
            .map_err(|source| DerivationError::Parse { path: store_dir.display(drv_path), source })
    }

    /// The ATerm text CppNix writes to the `.drv` file (`unparse`).
    pub fn to_aterm(&self, store_dir: &StoreDir) -> Result<Vec<u8>, DerivationError> {
        print(self, store_dir, Mode::Plain)
    }
}
