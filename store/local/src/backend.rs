//! The local store behind the [`Store`] seam: each operation is the
//! [`LocalStore`] method of the same purpose, its errors mapped to the
//! seam's where a caller could act on the difference (hash and size
//! mismatches, missing references, invalid paths, refused trust), the rest
//! carried as they are.

use super::{AddOptions, Error, LocalStore};
use std::collections::BTreeSet;
use std::io::{BufRead, Read, Write};
use store::backend::{self, Store};
use store::path_info::PathInfo;
use store::realisation::{DrvOutput, Realisation};
use store::store_path::{StoreDir, StorePath};

impl From<Error> for backend::Error {
    fn from(e: Error) -> backend::Error {
        match e {
            Error::InvalidPath(p) => backend::Error::InvalidPath(p),
            Error::HashMismatch { path, specified, got } => backend::Error::HashMismatch { path, specified, got },
            Error::SizeMismatch { path, specified, got } => backend::Error::SizeMismatch { path, specified, got },
            Error::MissingReference { path, reference } => backend::Error::MissingReference { path, reference },
            Error::Untrusted(t) => backend::Error::Untrusted(t),
            Error::Nar(why) => backend::Error::Nar(why),
            other => backend::Error::Backend(Box::new(other)),
        }
    }
}

impl Store for LocalStore {
    fn uri(&self) -> String {
        "local".to_owned()
    }

    fn store_dir(&self) -> &StoreDir {
        LocalStore::store_dir(self)
    }

    fn query_path_info(&self, path: &StorePath) -> backend::Result<Option<PathInfo>> {
        Ok(LocalStore::query_path_info(self, path)?)
    }

    fn is_valid(&self, path: &StorePath) -> backend::Result<bool> {
        Ok(LocalStore::is_valid(self, path)?)
    }

    fn query_path_from_hash_part(&self, hash_part: &str) -> backend::Result<Option<StorePath>> {
        Ok(LocalStore::query_path_from_hash_part(self, hash_part)?)
    }

    fn nar_from_path(&self, path: &StorePath, sink: &mut dyn Write) -> backend::Result<()> {
        self.add_temp_root(path)?;
        LocalStore::path_info(self, path)?;
        crate::nar_fs::dump(&self.real_path(path), sink)
            .map_err(|e| Error::Nar(format!("NAR of '{}': {e}", self.display(path))))?;
        Ok(())
    }

    fn add_to_store(&self, info: &PathInfo, nar: &mut dyn BufRead) -> backend::Result<()> {
        Ok(self.add_nar(info, nar, AddOptions::default())?)
    }

    fn add_signatures(&self, path: &StorePath, sigs: &BTreeSet<String>) -> backend::Result<()> {
        Ok(LocalStore::add_signatures(self, path, sigs)?)
    }

    fn query_realisation(&self, id: &DrvOutput) -> backend::Result<Option<Realisation>> {
        Ok(LocalStore::query_realisation(self, id)?)
    }

    fn register_realisation(&self, realisation: &Realisation) -> backend::Result<()> {
        Ok(LocalStore::register_realisation(self, realisation)?)
    }

    fn add_build_log(&self, drv: &StorePath, log: &mut dyn Read) -> backend::Result<()> {
        Ok(LocalStore::add_build_log(self, drv, log)?)
    }

    fn add_temp_root(&self, path: &StorePath) -> backend::Result<()> {
        Ok(LocalStore::add_temp_root(self, path)?)
    }

    fn query_referrers(&self, path: &StorePath) -> backend::Result<BTreeSet<StorePath>> {
        Ok(LocalStore::query_referrers(self, path)?)
    }

    fn query_valid_derivers(&self, path: &StorePath) -> backend::Result<BTreeSet<StorePath>> {
        Ok(LocalStore::query_valid_derivers(self, path)?)
    }

    fn query_all_valid_paths(&self) -> backend::Result<BTreeSet<StorePath>> {
        Ok(LocalStore::query_all_valid_paths(self)?)
    }
}
