//! Where a derivation and its outputs live: the fields that describe an
//! output (shared by the ATerm and the worker protocol), the `.drv` file's own path,
//! each output's path when it is known in advance, the evaluator's last step
//! that fills output paths into a new derivation (CppNix primops.cc,
//! `derivationStrict`), and the check that a `.drv` carries the right ones
//! (derivations.cc, `Derivation::checkInvariants`).

use super::aterm::{self, ParseErrorKind};
use super::hash_modulo::{BoxError, DrvHashKind, DrvHasher};
use super::{Derivation, DerivationError, DerivationType, Output, hash_placeholder, name_from_drv_path};
use crate::content_address::{ContentAddress, ContentAddressMethod};
use crate::hash::{Algorithm, Hash};
use crate::store_path::{DRV_EXTENSION, StoreDir, StorePath, StoreReferences, output_path_name};
use std::collections::BTreeMap;

/// Which of the three strings after an output's name (in `.drv` files and
/// on the wire) was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutputField {
    Path = 0,
    HashAlgo = 1,
    Hash = 2,
}

impl Output {
    /// Reads an output from its path, hash algorithm and hash fields:
    /// no algorithm means input-addressed (or deferred if the path is
    /// empty); with one, hash `impure` means impure, an empty hash floating,
    /// any other hash fixed (whose written path is only checked to start
    /// with `/`, since it is recomputed from the hash).
    pub fn from_fields(
        store_dir: &StoreDir,
        path: &[u8],
        hash_algo: &[u8],
        hash: &[u8],
    ) -> Result<Output, ParseErrorKind> {
        Self::parse_fields(store_dir, path, hash_algo, hash).map_err(|(_, kind)| kind)
    }

    /// [`Self::from_fields`], also telling which field was wrong.
    pub(super) fn parse_fields(
        store_dir: &StoreDir,
        path: &[u8],
        hash_algo: &[u8],
        hash: &[u8],
    ) -> Result<Output, (OutputField, ParseErrorKind)> {
        use OutputField as F;
        if hash_algo.is_empty() {
            if path.is_empty() {
                return Ok(Output::Deferred);
            }
            return aterm::parse_store_path(store_dir, path).map(Output::InputAddressed).map_err(|e| (F::Path, e));
        }
        let algo = std::str::from_utf8(hash_algo)
            .map_err(|_| (F::HashAlgo, ParseErrorKind::NotUtf8("output hash algorithm")))?;
        let (method, algorithm) =
            ContentAddressMethod::parse_with_algorithm(algo).map_err(|e| (F::HashAlgo, ParseErrorKind::HashAlgo(e)))?;
        match hash {
            b"impure" if !path.is_empty() => Err((F::Path, ParseErrorKind::ImpureWithPath)),
            b"impure" => Ok(Output::Impure { method, algorithm }),
            b"" if !path.is_empty() => Err((F::Path, ParseErrorKind::FloatingWithPath)),
            b"" => Ok(Output::Floating { method, algorithm }),
            digest => {
                aterm::validate_path(path).map_err(|e| (F::Path, e))?;
                let digest =
                    std::str::from_utf8(digest).map_err(|_| (F::Hash, ParseErrorKind::NotUtf8("output hash")))?;
                let hash =
                    Hash::parse_digest(digest, algorithm, false).map_err(|e| (F::Hash, ParseErrorKind::Hash(e)))?;
                Ok(Output::Fixed(ContentAddress { method, hash }))
            }
        }
    }

    /// The path, hash algorithm and hash fields of output `output_name` of
    /// derivation `drv_name`, as CppNix writes them (a fixed output's path
    /// is computed, its hash written in base-16).
    pub fn to_fields(
        &self,
        store_dir: &StoreDir,
        drv_name: &str,
        output_name: &str,
    ) -> Result<[String; 3], DerivationError> {
        Ok(match self {
            Output::InputAddressed(p) => [store_dir.display(p), String::new(), String::new()],
            Output::Fixed(ca) => {
                let path =
                    self.path(store_dir, drv_name, output_name)?.map(|p| store_dir.display(&p)).unwrap_or_default();
                [path, ca.method.render_with_algorithm(ca.hash.algorithm()), ca.hash.to_base16()]
            }
            Output::Floating { method, algorithm } => {
                [String::new(), method.render_with_algorithm(*algorithm), String::new()]
            }
            Output::Deferred => [String::new(), String::new(), String::new()],
            Output::Impure { method, algorithm } => {
                [String::new(), method.render_with_algorithm(*algorithm), "impure".to_owned()]
            }
        })
    }

    /// The output's path if it is known before building: written in the
    /// derivation (input-addressed) or computed from the content address
    /// (fixed); `None` for floating, deferred and impure outputs.
    pub fn path(
        &self,
        store_dir: &StoreDir,
        drv_name: &str,
        output_name: &str,
    ) -> Result<Option<StorePath>, DerivationError> {
        match self {
            Output::InputAddressed(p) => Ok(Some(p.clone())),
            Output::Fixed(ca) => Ok(Some(store_dir.make_path_from_ca(
                &output_path_name(drv_name, output_name),
                ca,
                &StoreReferences::default(),
            )?)),
            Output::Floating { .. } | Output::Deferred | Output::Impure { .. } => Ok(None),
        }
    }
}

impl Derivation {
    /// Every output with its path when known in advance (CppNix
    /// `outputsAndOptPaths`).
    pub fn output_paths(&self, store_dir: &StoreDir) -> Result<BTreeMap<String, Option<StorePath>>, DerivationError> {
        self.outputs
            .iter()
            .map(|(name, output)| Ok((name.clone(), output.path(store_dir, &self.name, name)?)))
            .collect()
    }

    /// The path of the `.drv` file: a text path over its ATerm, referring
    /// to the input sources and input derivations (CppNix `writeDerivation`).
    pub fn drv_path(&self, store_dir: &StoreDir) -> Result<StorePath, DerivationError> {
        let aterm = self.to_aterm(store_dir)?;
        let name = format!("{}{DRV_EXTENSION}", self.name);
        Ok(store_dir.make_text_path(&name, &Algorithm::Sha256.digest(&aterm), &self.references())?)
    }

    /// Fills in what the evaluator computes last, once every attribute is
    /// in place (`derivationStrict`): the path of a fixed output, the
    /// placeholders of floating and impure outputs, and for input-addressed
    /// derivations the output paths from the masked hash modulo, which are
    /// written both to the outputs and to the environment variables named
    /// after them. Outputs that are input-addressed or deferred on entry are
    /// (re)computed; when an input is deferred they stay deferred and their
    /// variables empty.
    pub fn fill_in_outputs<R, E>(&mut self, hasher: &mut DrvHasher<R>) -> Result<(), DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, E>,
        E: Into<BoxError>,
    {
        let store_dir = hasher.store_dir().clone();
        match self.derivation_type()? {
            DerivationType::Fixed => {
                for (name, output) in &self.outputs {
                    if let Some(path) = output.path(&store_dir, &self.name, name)? {
                        self.env.insert(name.clone().into_bytes(), store_dir.display(&path).into_bytes());
                    }
                }
            }
            DerivationType::Floating | DerivationType::Impure => {
                for name in self.outputs.keys() {
                    self.env.insert(name.clone().into_bytes(), hash_placeholder(name).into_bytes());
                }
            }
            DerivationType::InputAddressed | DerivationType::Deferred => {
                for (name, output) in self.outputs.iter_mut() {
                    *output = Output::Deferred;
                    self.env.insert(name.clone().into_bytes(), Vec::new());
                }
                let modulo = hasher.hash_modulo(self, true)?;
                if modulo.kind == DrvHashKind::Regular {
                    for (name, output) in self.outputs.iter_mut() {
                        let hash = modulo.hashes.get(name).ok_or_else(|| DerivationError::MissingOutputHash {
                            output: name.clone(),
                            drv: self.name.clone(),
                        })?;
                        let path = store_dir.make_output_path(name, hash, &self.name)?;
                        self.env.insert(name.clone().into_bytes(), store_dir.display(&path).into_bytes());
                        *output = Output::InputAddressed(path);
                    }
                }
            }
        }
        Ok(())
    }

    /// CppNix `checkInvariants`, what a store checks before registering a
    /// `.drv`: its name matches its path, each input-addressed output has the
    /// path its masked hash modulo gives, and every input-addressed or fixed
    /// output's path is also in the environment variable named after it.
    pub fn check_invariants<R, E>(&self, drv_path: &StorePath, hasher: &mut DrvHasher<R>) -> Result<(), DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, E>,
        E: Into<BoxError>,
    {
        let store_dir = hasher.store_dir().clone();
        let drv_name = name_from_drv_path(drv_path)?;
        let shown = || store_dir.display(drv_path);
        if drv_name != self.name {
            return Err(DerivationError::NameMismatch { drv_path: shown(), name: self.name.clone() });
        }
        self.derivation_type()?;
        let env_has = |name: &str, path: &StorePath| {
            let ok = self
                .env_var(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(|v| store_dir.parse_path(v).as_ref() == Ok(path));
            if ok {
                Ok(())
            } else {
                Err(DerivationError::WrongEnvVar {
                    drv_path: shown(),
                    var: name.to_owned(),
                    expected: store_dir.display(path),
                })
            }
        };
        let mut modulo = None;
        for (name, output) in &self.outputs {
            match output {
                Output::InputAddressed(actual) => {
                    if modulo.is_none() {
                        modulo = Some(hasher.hash_modulo(self, true)?);
                    }
                    let hash = modulo.as_ref().and_then(|m| m.hashes.get(name)).ok_or_else(|| {
                        DerivationError::MissingOutputHash { output: name.clone(), drv: self.name.clone() }
                    })?;
                    let expected = store_dir.make_output_path(name, hash, drv_name)?;
                    if *actual != expected {
                        return Err(DerivationError::WrongOutputPath {
                            drv_path: shown(),
                            actual: store_dir.display(actual),
                            expected: store_dir.display(&expected),
                        });
                    }
                    env_has(name, actual)?;
                }
                Output::Fixed(_) => {
                    if let Some(path) = output.path(&store_dir, drv_name, name)? {
                        env_has(name, &path)?;
                    }
                }
                Output::Floating { .. } | Output::Deferred | Output::Impure { .. } => {}
            }
        }
        Ok(())
    }
}
