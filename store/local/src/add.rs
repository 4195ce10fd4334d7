//! Adding paths to the store atomically: the NAR is unpacked into a flocked
//! `tmp-<pid>-<n>` staging directory inside the store, verified (NAR hash,
//! size, content address), canonicalised, optionally deduplicated and
//! fsynced, renamed to its final name, and only then registered in one
//! database transaction. A process killed at any point leaves either
//! nothing valid or a complete valid path; what it leaves on disk is
//! invalid, so the next add of the same path replaces it and the collector
//! deletes it.
//!
//! Concurrency as in CppNix's `LocalStore::addToStore`: a temp root is taken
//! before validity is checked, and the output is locked through `<path>.lock`,
//! so two adders of the same path (armitage or CppNix) do the work once.

use super::LocalStore;
use super::canonicalise::{Top, canonicalise, finish_top};
use super::error::{Error, IoContext, Result};
use super::fault::{Phase, phase};
use super::fs_util::{delete_path, fsync_parent, fsync_tree};
use super::lock::PathLocks;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::hash::{Algorithm, Encoding, Hash, HashModuloSink, HashingBufReader};
use store::nar::{self, NarReader};
use store::path_info::PathInfo;
use store::store_path::{StorePath, StoreReferences};

/// Options for adds.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddOptions {
    /// Replace the path even if it is valid (`--repair`).
    pub repair: bool,
}

impl LocalStore {
    /// Imports a path from its NAR, with metadata the caller vouches for
    /// (signature checks are the caller's business). The NAR is consumed
    /// exactly, also when the path is already valid. The registration time
    /// is now unless `info` gives one.
    pub fn add_nar(&self, info: &PathInfo, nar: &mut dyn BufRead, opts: AddOptions) -> Result<()> {
        self.add_temp_root(&info.path)?;
        if !opts.repair && self.is_valid(&info.path)? {
            return skip_nar(nar, &self.shared.config.nar_limits);
        }
        let real = self.real_path(&info.path);
        let mut locks = PathLocks::lock([real.clone()]).at("locking", &real)?;
        if !opts.repair && self.is_valid(&info.path)? {
            locks.set_deletion(true);
            return skip_nar(nar, &self.shared.config.nar_limits);
        }

        let staging = self.staging_entry()?;
        let staged = staging.path().to_owned();
        phase(Phase::Unpacking);
        let mut hashing = HashingBufReader::new(nar, Algorithm::Sha256);
        crate::nar_fs::unpack(&mut hashing, &staged, &self.shared.config.nar_limits)
            .map_err(|e| nar_error(&self.display(&info.path), e))?;
        let (nar_hash, nar_size) = hashing.finish();
        let full = self.display(&info.path);
        if info.nar_hash.algorithm() == Algorithm::Sha256 && nar_hash != info.nar_hash {
            return Err(Error::HashMismatch {
                path: full,
                specified: info.nar_hash.to_typed(Encoding::Nix32),
                got: nar_hash.to_typed(Encoding::Nix32),
            });
        }
        if nar_size != info.nar_size {
            return Err(Error::SizeMismatch { path: full, specified: info.nar_size, got: nar_size });
        }
        if let Some(ca) = &info.ca {
            self.check_content_address(&info.path, ca, &staged)?;
        }
        self.install(&staged, &info.path, &real)?;
        let mut info = info.clone();
        info.nar_hash = nar_hash;
        self.register_valid_paths(std::slice::from_ref(&info))?;
        locks.set_deletion(true);
        Ok(())
    }

    /// Adds a content-addressed path from the "dump" CppNix's `AddToStore`
    /// sends: a NAR for recursive (`r:`) hashing, the raw bytes for flat and
    /// text hashing. The path is known only once the dump has been read, so
    /// it is staged first and then installed under the path's lock.
    pub fn add_from_dump(
        &self,
        name: &str,
        method: ContentAddressMethod,
        algorithm: Algorithm,
        references: &BTreeSet<StorePath>,
        dump: &mut dyn BufRead,
        opts: AddOptions,
    ) -> Result<PathInfo> {
        store::store_path::check_name(name)?;
        let staging = self.staging_entry()?;
        let staged = staging.path().to_owned();
        phase(Phase::Unpacking);
        let (nar_hash, nar_size, ca_hash) = match method {
            ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => {
                let mut ca = HashingBufReader::new(dump, algorithm);
                let mut nar = HashingBufReader::new(&mut ca, Algorithm::Sha256);
                crate::nar_fs::unpack(&mut nar, &staged, &self.shared.config.nar_limits)
                    .map_err(|e| nar_error(name, e))?;
                let (nar_hash, nar_size) = nar.finish();
                let ca_hash = if algorithm == Algorithm::Sha256 { nar_hash } else { ca.finish().0 };
                (nar_hash, nar_size, ca_hash)
            }
            ContentAddressMethod::Fixed(FileIngestionMethod::Flat) | ContentAddressMethod::Text => {
                let ca_hash = write_flat(dump, &staged, algorithm, self.shared.config.nar_limits.max_contents_size)?;
                let (nar_hash, nar_size) =
                    crate::nar_fs::hash_path(&staged, Algorithm::Sha256).map_err(|e| nar_error(name, e))?;
                (nar_hash, nar_size, ca_hash)
            }
            ContentAddressMethod::Fixed(FileIngestionMethod::Git) => {
                return Err(Error::GitHashingUnsupported(Some(name.to_string())));
            }
        };
        let ca = ContentAddress { method, hash: ca_hash };
        let refs = StoreReferences { others: references.clone(), self_ref: false };
        let path = self.shared.config.store_dir.make_path_from_ca(name, &ca, &refs)?;
        let mut info = PathInfo::new(path, nar_hash, nar_size);
        info.references = references.clone();
        info.ca = Some(ca);

        self.install_staged(&staged, &info, opts)?;
        drop(staging);
        self.path_info(&info.path)
    }

    /// Installs a verified staged tree as `info.path` and registers it,
    /// under the path's lock, unless the path is valid already.
    pub(super) fn install_staged(&self, staged: &Path, info: &PathInfo, opts: AddOptions) -> Result<()> {
        self.add_temp_root(&info.path)?;
        let real = self.real_path(&info.path);
        let mut locks = PathLocks::lock([real.clone()]).at("locking", &real)?;
        if opts.repair || !self.is_valid(&info.path)? {
            self.install(staged, &info.path, &real)?;
            self.register_valid_paths(std::slice::from_ref(info))?;
        }
        locks.set_deletion(true);
        Ok(())
    }

    /// Canonicalises a staged tree and moves it to `real`.
    fn install(&self, staged: &Path, path: &StorePath, real: &Path) -> Result<()> {
        phase(Phase::Canonicalising);
        canonicalise(staged, Top::BeforeRename, &self.shared.config.ignored_xattrs)?;
        if self.shared.config.auto_optimise_store {
            self.optimise_path(staged)?;
        }
        if self.shared.config.fsync_store_paths {
            fsync_tree(staged)?;
        }
        phase(Phase::Renaming);
        // An invalid leftover (a crashed add, a half-deleted path) is in the way.
        delete_path(real)?;
        std::fs::rename(staged, real).at("moving into place", real)?;
        finish_top(real)?;
        if self.shared.config.fsync_store_paths {
            fsync_parent(real)?;
        }
        tracing::debug!(path = %self.display(path), "path in place");
        Ok(())
    }

    /// Checks that the unpacked tree has the content address `ca` claims
    /// (self-references hashed modulo the path's hash part).
    fn check_content_address(&self, path: &StorePath, ca: &ContentAddress, tree: &Path) -> Result<()> {
        let mut sink = HashModuloSink::new(ca.hash.algorithm(), path.hash_part());
        match ca.method {
            ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => {
                crate::nar_fs::dump(tree, &mut sink).map_err(|e| nar_error(&self.display(path), e))?;
            }
            ContentAddressMethod::Text | ContentAddressMethod::Fixed(FileIngestionMethod::Flat) => {
                let mut f = std::fs::File::open(tree).at("opening", tree)?;
                std::io::copy(&mut f, &mut sink).at("reading", tree)?;
            }
            ContentAddressMethod::Fixed(FileIngestionMethod::Git) => {
                return Err(Error::GitHashingUnsupported(Some(self.display(path).to_string())));
            }
        }
        let got = sink.finish();
        if got.without_offsets != ca.hash && got.with_offsets != ca.hash {
            return Err(Error::CaMismatch {
                path: self.display(path),
                specified: ca.hash.to_typed(Encoding::Nix32),
                got: got.without_offsets.to_typed(Encoding::Nix32),
            });
        }
        Ok(())
    }

    /// Adds a file or tree as a content-addressed path, as `nix-store --add`
    /// (recursive SHA-256) and `--add-fixed` do. The tree is read twice (to
    /// name the path, then to copy it); if it changes in between the add fails.
    pub fn add_path(
        &self,
        src: &Path,
        name: &str,
        method: FileIngestionMethod,
        algorithm: Algorithm,
        opts: AddOptions,
    ) -> Result<PathInfo> {
        let (nar_hash, nar_size) =
            crate::nar_fs::hash_path(src, Algorithm::Sha256).map_err(|e| nar_error(&src.display().to_string(), e))?;
        let ca_hash = match method {
            FileIngestionMethod::Recursive if algorithm == Algorithm::Sha256 => nar_hash,
            FileIngestionMethod::Recursive => {
                crate::nar_fs::hash_path(src, algorithm).map_err(|e| nar_error(&src.display().to_string(), e))?.0
            }
            FileIngestionMethod::Flat => hash_file(src, algorithm)?,
            FileIngestionMethod::Git => {
                return Err(Error::GitHashingUnsupported(None));
            }
        };
        let path =
            self.shared.config.store_dir.make_fixed_output_path(name, method, &ca_hash, &StoreReferences::default())?;
        let mut info = PathInfo::new(path, nar_hash, nar_size);
        info.ca = Some(ContentAddress { method: ContentAddressMethod::Fixed(method), hash: ca_hash });

        self.add_temp_root(&info.path)?;
        if !opts.repair && self.is_valid(&info.path)? {
            return self.path_info(&info.path);
        }
        let (reader, writer) = std::io::pipe().at("creating a pipe for", src)?;
        let src_owned = src.to_owned();
        let dumper = std::thread::spawn(move || {
            let mut writer = writer;
            crate::nar_fs::dump(&src_owned, &mut writer)
        });
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        let added = self.add_nar(&info, &mut reader, opts);
        drop(reader);
        let dumped = dumper.join().map_err(|_| Error::ThreadPanicked("NAR dumping"))?;
        match (added, dumped) {
            (Ok(()), Ok(_)) => self.path_info(&info.path),
            (Err(Error::HashMismatch { .. } | Error::SizeMismatch { .. }), _) => {
                Err(Error::ChangedWhileAdding(src.to_owned()))
            }
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(nar_error(&src.display().to_string(), e)),
        }
    }

    /// Adds a text file with the given references (`builtins.toFile`,
    /// `.drv` files, the `AddTextToStore` operation).
    pub fn add_text(
        &self,
        name: &str,
        contents: &[u8],
        references: &BTreeSet<StorePath>,
        opts: AddOptions,
    ) -> Result<PathInfo> {
        let hash = Algorithm::Sha256.digest(contents);
        let path = self.shared.config.store_dir.make_text_path(name, &hash, references)?;
        let nar = nar::dump_bytes(contents, false);
        let mut info = PathInfo::new(path, Algorithm::Sha256.digest(&nar), nar.len() as u64);
        info.references = references.clone();
        info.ca = Some(ContentAddress { method: ContentAddressMethod::Text, hash });
        self.add_nar(&info, &mut &nar[..], opts)?;
        self.path_info(&info.path)
    }
}

/// Writes a flat dump to a new file at `dest`, hashing it; at most `limit` bytes.
fn write_flat(src: &mut dyn BufRead, dest: &Path, algorithm: Algorithm, limit: u64) -> Result<Hash> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(dest).at("creating", dest)?;
    let mut sink = store::hash::HashSink::new(algorithm);
    let mut total = 0u64;
    loop {
        let chunk = src.fill_buf().at("reading the contents for", dest)?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        total += n as u64;
        if total > limit {
            return Err(Error::TooLarge { path: dest.to_owned(), limit });
        }
        sink.update(chunk);
        file.write_all(chunk).at("writing", dest)?;
        src.consume(n);
    }
    Ok(sink.finish().0)
}

fn hash_file(path: &Path, algorithm: Algorithm) -> Result<Hash> {
    let meta = std::fs::symlink_metadata(path).at("getting attributes of", path)?;
    if !meta.is_file() {
        return Err(Error::NotRegularFile(path.to_owned()));
    }
    let mut f = std::fs::File::open(path).at("opening", path)?;
    let mut sink = store::hash::HashSink::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at("reading", path)?;
        if n == 0 {
            break;
        }
        sink.update(&buf[..n]);
    }
    Ok(sink.finish().0)
}

/// Reads past a NAR the caller does not need.
pub(super) fn skip_nar(nar: &mut dyn BufRead, limits: &nar::Limits) -> Result<()> {
    NarReader::with_limits(nar, limits.clone()).skip_to_end().map_err(|e| Error::Nar(e.to_string()))
}

pub(super) fn nar_error(what: &str, e: nar::NarError) -> Error {
    Error::Nar(format!("NAR of '{what}': {e}"))
}
