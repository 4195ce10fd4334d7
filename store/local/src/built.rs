//! What the build engine needs from the store to turn a builder's output
//! into a valid path: canonicalising it in place (with CppNix's ownership
//! check for build users), moving it to its final name, and deleting
//! leftovers. Registration itself is `register_valid_paths`.

use super::LocalStore;
use super::canonicalise::{Top, canonicalise};
use super::error::{Error, IoContext, Result};
use super::fs_util::{delete_path, fsync_parent, fsync_tree};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use store::store_path::StorePath;

impl LocalStore {
    /// Canonicalises a build output where it lies. With `build_uid`, every
    /// file must be owned by the build user (or root) unless it is a hard
    /// link seen before, as CppNix checks ("invalid ownership").
    pub fn canonicalise_output(&self, path: &Path, build_uid: Option<u32>) -> Result<()> {
        if let Some(uid) = build_uid {
            let mut seen = std::collections::HashSet::new();
            let mut stack = vec![path.to_owned()];
            while let Some(p) = stack.pop() {
                let meta = std::fs::symlink_metadata(&p).at("getting attributes of", &p)?;
                if meta.uid() != uid && meta.uid() != 0 && !(meta.file_type().is_file() && seen.contains(&meta.ino())) {
                    return Err(Error::InvalidOwnership(p));
                }
                if meta.is_dir() {
                    for e in std::fs::read_dir(&p).at("reading directory", &p)? {
                        stack.push(e.at("reading directory", &p)?.path());
                    }
                } else {
                    seen.insert(meta.ino());
                }
            }
        }
        canonicalise(path, Top::Canonical, &self.shared.config.ignored_xattrs)
    }

    /// Moves a canonical built output to `path`'s place in the store,
    /// replacing an invalid leftover; fsyncs when `fsync-store-paths`.
    pub fn move_output_into_place(&self, from: &Path, path: &StorePath) -> Result<()> {
        let real = self.real_path(path);
        if from != real {
            delete_path(&real)?;
            // A canonical directory is read-only: moving it needs write permission on it.
            let meta = std::fs::symlink_metadata(from).at("getting attributes of", from)?;
            if meta.is_dir() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(from, std::fs::Permissions::from_mode(0o755)).at("making writable", from)?;
            }
            std::fs::rename(from, &real).at("moving output into place", &real)?;
            super::canonicalise::finish_top(&real)?;
        }
        if self.shared.config.fsync_store_paths {
            fsync_tree(&real)?;
            fsync_parent(&real)?;
        }
        Ok(())
    }

    /// Deletes a file or tree (making read-only directories writable first).
    pub fn delete_tree(&self, path: &Path) -> Result<()> {
        delete_path(path).map(|_| ())
    }
}
