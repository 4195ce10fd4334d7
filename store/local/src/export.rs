//! The `nix-store --export` format (CppNix src/libstore/export-import.cc):
//! per path, `u64 1`, its NAR, the export magic, the path, its references,
//! its deriver and an obsolete signature flag; `u64 0` ends the stream.
//! Used by the ExportPath and ImportPaths operations of old clients. The
//! primitives are the protocol's (`worker_protocol::sync`).

use super::LocalStore;
use super::add::{AddOptions, nar_error};
use super::error::{Error, IoContext, Result};
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use store::hash::{Algorithm, HashingBufReader};
use store::path_info::PathInfo;
use store::store_path::StorePath;
use worker_protocol::{EXPORT_MAGIC, sync};

fn put_u64(w: &mut dyn Write, v: u64) -> std::io::Result<()> {
    sync::write_u64(w, v)
}

fn put_str(w: &mut dyn Write, s: &str) -> std::io::Result<()> {
    sync::write_string(w, s)
}

fn get_u64(r: &mut dyn BufRead) -> Result<u64> {
    sync::read_u64(r).map_err(|e| Error::BadExport(format!("reading an export stream: {e}")))
}

fn get_str(r: &mut dyn BufRead, limit: u64) -> Result<String> {
    sync::read_string_skipping_padding(r, limit).map_err(|e| match e {
        sync::ReadError::TooLong { len, .. } => {
            Error::BadExport(format!("export stream: string of {len} bytes is too long"))
        }
        sync::ReadError::NotUtf8 => Error::BadExport("export stream: a string is not UTF-8".into()),
        e => Error::BadExport(format!("reading an export stream: {e}")),
    })
}

impl LocalStore {
    /// Writes one export record of a valid path (what the ExportPath
    /// operation streams; `nix-store --export` adds the framing `1`s and the
    /// final `0`).
    pub fn export_path(&self, path: &StorePath, out: &mut dyn Write) -> Result<()> {
        let info = self.path_info(path)?;
        let real = self.real_path(path);
        let mut hashing = store::hash::HashSink::new(Algorithm::Sha256);
        {
            let mut tee = TeeWrite { a: &mut *out, b: &mut hashing };
            crate::nar_fs::dump(&real, &mut tee).map_err(|e| nar_error(&self.display(path), e))?;
        }
        let (hash, _) = hashing.finish();
        if hash != info.nar_hash {
            return Err(Error::BadExport(format!(
                "hash of path '{}' has changed from '{}' to '{}'!",
                self.display(path),
                info.nar_hash.to_typed(store::hash::Encoding::Nix32),
                hash.to_typed(store::hash::Encoding::Nix32)
            )));
        }
        let w = &mut *out;
        (|| -> std::io::Result<()> {
            put_u64(w, EXPORT_MAGIC)?;
            put_str(w, &self.display(path))?;
            put_u64(w, info.references.len() as u64)?;
            for r in &info.references {
                put_str(w, &self.display(r))?;
            }
            put_str(w, &info.deriver.as_ref().map(|d| self.display(d)).unwrap_or_default())?;
            put_u64(w, 0)
        })()
        .at("writing the export of", self.real_path(path))
    }

    /// Imports an export stream. `check` sees each path's metadata before it
    /// is installed (signature policy is the caller's).
    pub fn import_paths(
        &self,
        input: &mut dyn BufRead,
        check: &dyn Fn(&PathInfo) -> Result<()>,
    ) -> Result<Vec<StorePath>> {
        let mut imported = Vec::new();
        let limit = 64 * 1024;
        loop {
            match get_u64(input)? {
                0 => break,
                1 => {}
                _ => {
                    return Err(Error::BadExport(
                        "input doesn't look like something created by 'nix-store --export'".into(),
                    ));
                }
            }
            // The NAR comes before its metadata: stage it while hashing.
            let staging = self.staging_entry()?;
            let staged = staging.path().to_owned();
            let mut hashing = HashingBufReader::new(&mut *input, Algorithm::Sha256);
            crate::nar_fs::unpack(&mut hashing, &staged, &self.shared.config.nar_limits)
                .map_err(|e| nar_error("an imported path", e))?;
            let (nar_hash, nar_size) = hashing.finish();
            if get_u64(input)? != EXPORT_MAGIC {
                return Err(Error::BadExport("Nix archive cannot be imported; wrong format".into()));
            }
            let path = self.parse_path(&get_str(input, limit)?)?;
            let n = get_u64(input)?;
            if n > 1 << 20 {
                return Err(Error::BadExport("export stream: too many references".into()));
            }
            let mut references = BTreeSet::new();
            for _ in 0..n {
                references.insert(self.parse_path(&get_str(input, limit)?)?);
            }
            let deriver = get_str(input, limit)?;
            if get_u64(input)? == 1 {
                get_str(input, limit)?; // an obsolete signature
            }
            let mut info = PathInfo::new(path, nar_hash, nar_size);
            info.references = references;
            info.deriver = if deriver.is_empty() { None } else { Some(self.parse_path(&deriver)?) };
            check(&info)?;
            self.install_staged(&staged, &info, AddOptions::default())?;
            imported.push(info.path);
        }
        Ok(imported)
    }
}

struct TeeWrite<'a> {
    a: &'a mut dyn Write,
    b: &'a mut dyn Write,
}

impl Write for TeeWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.a.write_all(buf)?;
        self.b.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.a.flush()
    }
}
