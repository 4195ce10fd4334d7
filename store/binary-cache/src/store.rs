//! A binary cache behind the [`Store`] seam, writing as CppNix's
//! `BinaryCacheStore::addToStoreCommon` does (src/libstore/binary-cache-store.cc):
//! the NAR is checked against its NAR hash and size while it is compressed
//! into a staged file, then uploaded as `nar/<file hash>.nar<ext>`, its
//! `.ls` listing (with `write-nar-listing`) next, and its `<hash>.narinfo`
//! last, so a reader never finds a narinfo whose NAR is not there yet.
//! A path whose narinfo exists is valid; adding it again only consumes the
//! NAR.
//!
//! Reads here always ask the cache (no remembered narinfos), and a narinfo
//! written here is remembered for the substituter's lookups in this process.
//! Referrers, derivers and the list of all paths are not kept by a cache:
//! those operations answer [`backend::Error::Unsupported`].

use crate::Error;
use crate::cache::{BinaryCache, Upload, temp_name};
use crate::compress::Encoder;
use crate::decompress::{Decoder, Method};
use crate::http::{Client, ClientConfig};
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::backend::{self, Store, trust};
use store::hash::{Algorithm, Encoding, HashSink};
use store::nar::{self, NarReader};
use store::narinfo::NarInfo;
use store::path_info::PathInfo;
use store::realisation::{DrvOutput, Realisation};
use store::signing::SecretKey;
use store::store_path::{StoreDir, StorePath};

/// TTLs that make every narinfo lookup ask the cache.
const ASK: (Duration, Duration) = (Duration::ZERO, Duration::ZERO);

/// How a cache is written: CppNix's binary-cache store settings.
#[derive(Clone)]
pub struct StoreOptions {
    /// `compression` (default `xz`).
    pub compression: Method,
    /// `write-nar-listing`: upload `<hash>.ls` with each NAR.
    pub write_nar_listing: bool,
    /// `secret-key`: narinfos written are signed with these.
    pub secret_keys: Vec<SecretKey>,
    /// Limits every NAR added must keep.
    pub nar_limits: nar::Limits,
    pub http: ClientConfig,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            compression: Method::Xz,
            write_nar_listing: false,
            secret_keys: Vec::new(),
            nar_limits: nar::Limits::default(),
            http: ClientConfig::default(),
        }
    }
}

impl StoreOptions {
    /// The defaults with the store URL's `compression`, `write-nar-listing`
    /// and `secret-key` (a file) parameters; others are left to
    /// [`BinaryCache::parse`].
    pub fn from_url(uri: &str) -> Result<StoreOptions, Error> {
        let mut options = StoreOptions::default();
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "compression" => {
                    options.compression =
                        Method::from_name(value).ok_or_else(|| Error::BadCompression(value.to_owned()))?
                }
                "write-nar-listing" => options.write_nar_listing = matches!(value, "true" | "1" | "yes"),
                "secret-key" => {
                    let text = std::fs::read_to_string(value)
                        .map_err(|e| Error::SecretKey { path: value.to_owned(), why: e.to_string() })?;
                    let key = SecretKey::parse(text.trim())
                        .map_err(|e| Error::SecretKey { path: value.to_owned(), why: e.to_string() })?;
                    options.secret_keys.push(key);
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

/// A `file://` or `http(s)://` binary cache to read and write.
pub struct BinaryCacheStore {
    cache: BinaryCache,
    client: Client,
    store_dir: StoreDir,
    options: StoreOptions,
}

impl BinaryCacheStore {
    /// Opens the cache at `uri` for `store_dir` with the URL's options,
    /// making it (its directory, its `nix-cache-info`) if it is new.
    pub fn open(uri: &str, store_dir: StoreDir) -> Result<BinaryCacheStore, Error> {
        BinaryCacheStore::open_with(uri, store_dir, StoreOptions::from_url(uri)?)
    }

    /// [`Self::open`] with `options` instead of the URL's.
    pub fn open_with(uri: &str, store_dir: StoreDir, options: StoreOptions) -> Result<BinaryCacheStore, Error> {
        let cache = BinaryCache::parse(uri)?;
        let client = Client::new(&options.http);
        cache.create(&client, &store_dir)?;
        cache.init(&client, &store_dir)?;
        Ok(BinaryCacheStore { cache, client, store_dir, options })
    }

    pub fn cache(&self) -> &BinaryCache {
        &self.cache
    }

    /// The cache's narinfo for `path`, asked now; `None` if it has none
    /// (or one for another path).
    pub fn narinfo(&self, path: &StorePath) -> Result<Option<Arc<NarInfo>>, Error> {
        Ok(self.cache.narinfo(&self.client, &self.store_dir, path, ASK)?.filter(|n| n.path == *path))
    }

    fn write_narinfo(&self, info: NarInfo) -> Result<(), Error> {
        let text = info.to_text(&self.store_dir);
        let name = format!("{}.narinfo", info.path.hash_part());
        self.cache.upsert(&self.client, &name, Upload::Bytes(text.as_bytes()), "text/x-nix-narinfo")?;
        self.cache.remember_narinfo(&self.store_dir, &info.path.clone(), Some(Arc::new(info)));
        Ok(())
    }

    fn nar_error(&self, path: &StorePath, e: nar::NarError) -> backend::Error {
        backend::Error::Nar(format!("NAR of '{}': {e}", self.store_dir.display(path)))
    }

    /// Reads the NAR from `nar` into a staged compressed file, checking
    /// it is one NAR within the limits.
    fn stage(&self, info: &PathInfo, nar: &mut dyn BufRead) -> backend::Result<Staged> {
        let path = self.cache.staging_dir().join(temp_name("nar"));
        let file = std::fs::File::create(&path).map_err(|e| io_error("creating", &path, e))?;
        let mut staged = Staged { path, nar: None, file: None };
        let encoder = Encoder::new(self.options.compression, Counted::new(BufWriter::new(file)))
            .map_err(|e| io_error("compressing into", &staged.path, e))?;
        let mut tee = Tee { inner: nar, out: encoder, nar: HashSink::new(Algorithm::Sha256), failed: None };
        NarReader::with_limits(&mut tee, self.options.nar_limits.clone())
            .skip_to_end()
            .map_err(|e| self.nar_error(&info.path, e))?;
        if let Some(e) = tee.failed.take() {
            return Err(io_error("writing", &staged.path, e));
        }
        let nar_hash = tee.nar.finish();
        let mut counted = tee.out.finish().map_err(|e| io_error("writing", &staged.path, e))?;
        counted.inner.flush().map_err(|e| io_error("writing", &staged.path, e))?;
        staged.nar = Some(nar_hash);
        staged.file = Some(counted.hash.finish());
        Ok(staged)
    }
}

/// A compressed NAR staged for upload; removed when dropped (a no-op once
/// it was renamed into a `file://` cache).
struct Staged {
    path: PathBuf,
    /// NAR hash and size.
    nar: Option<(store::hash::Hash, u64)>,
    /// File hash and size.
    file: Option<(store::hash::Hash, u64)>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A writer that hashes and counts what it writes.
struct Counted<W> {
    inner: W,
    hash: HashSink,
}

impl<W> Counted<W> {
    fn new(inner: W) -> Self {
        Counted { inner, hash: HashSink::new(Algorithm::Sha256) }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A `BufRead` that hands every byte its reader consumes to `out` and the
/// NAR hash, so the NAR is read exactly once, by the parser that checks it.
struct Tee<'a, W: Write> {
    inner: &'a mut dyn BufRead,
    out: W,
    nar: HashSink,
    /// The first write failure (reported once the NAR is read).
    failed: Option<io::Error>,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<W: Write> BufRead for Tee<'_, W> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if n > 0
            && let Ok(buf) = self.inner.fill_buf()
        {
            let chunk = &buf[..n.min(buf.len())];
            self.nar.update(chunk);
            if self.failed.is_none()
                && let Err(e) = self.out.write_all(chunk)
            {
                self.failed = Some(e);
            }
        }
        self.inner.consume(n);
    }
}

fn io_error(op: &'static str, path: &std::path::Path, e: io::Error) -> backend::Error {
    Error::Io { op, path: path.display().to_string(), why: e.to_string() }.into()
}

impl Store for BinaryCacheStore {
    fn uri(&self) -> String {
        self.cache.url.clone()
    }

    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    fn query_path_info(&self, path: &StorePath) -> backend::Result<Option<PathInfo>> {
        Ok(self.narinfo(path)?.map(|n| PathInfo::from(&*n)))
    }

    fn query_path_from_hash_part(&self, hash_part: &str) -> backend::Result<Option<StorePath>> {
        Ok(self.cache.narinfo_by_hash(&self.client, &self.store_dir, hash_part, ASK)?.map(|n| n.path.clone()))
    }

    fn nar_from_path(&self, path: &StorePath, sink: &mut dyn Write) -> backend::Result<()> {
        let full = self.store_dir.display(path);
        let info = self.narinfo(path)?.ok_or_else(|| backend::Error::InvalidPath(full.clone()))?;
        let corrupt = |why: String| Error::CorruptNar { path: full.clone(), cache: self.cache.url.clone(), why };
        let method = Method::from_name(&info.compression)
            .ok_or_else(|| corrupt(format!("unknown compression method '{}'", info.compression)))?;
        let file = self
            .cache
            .open(&self.client, &info.url)?
            .ok_or_else(|| corrupt(format!("its file '{}' is missing", info.url)))?;
        let mut decoder = Decoder::new(method, file).map_err(|e| corrupt(e.to_string()))?;
        let mut hash = HashSink::new(info.nar_hash.algorithm());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(e.to_string()).into()),
            };
            hash.update(&buf[..n]);
            sink.write_all(&buf[..n]).map_err(|e| Error::Io {
                op: "writing the NAR of",
                path: full.clone(),
                why: e.to_string(),
            })?;
        }
        let (got, size) = hash.finish();
        if size != info.nar_size {
            return Err(corrupt(format!("it is {size} bytes, not {}", info.nar_size)).into());
        }
        if got != info.nar_hash {
            return Err(corrupt(format!(
                "its hash is {}, not {}",
                got.to_typed(Encoding::Nix32),
                info.nar_hash.to_typed(Encoding::Nix32)
            ))
            .into());
        }
        Ok(())
    }

    fn add_to_store(&self, info: &PathInfo, nar: &mut dyn BufRead) -> backend::Result<()> {
        if self.is_valid(&info.path)? {
            return NarReader::with_limits(nar, self.options.nar_limits.clone())
                .skip_to_end()
                .map_err(|e| self.nar_error(&info.path, e));
        }
        let staged = self.stage(info, nar)?;
        let dir = &self.store_dir;
        let full = dir.display(&info.path);
        let (nar_hash, nar_size) = staged.nar.expect("staged");
        let (file_hash, file_size) = staged.file.expect("staged");
        if info.nar_hash.algorithm() == Algorithm::Sha256 && nar_hash != info.nar_hash {
            return Err(backend::Error::HashMismatch {
                path: full,
                specified: info.nar_hash.to_typed(Encoding::Nix32),
                got: nar_hash.to_typed(Encoding::Nix32),
            });
        }
        if nar_size != info.nar_size {
            return Err(backend::Error::SizeMismatch { path: full, specified: info.nar_size, got: nar_size });
        }
        // CppNix's addToStoreCommon: every reference must be in the cache.
        for r in info.references_without_self() {
            if !self.is_valid(r)? {
                return Err(backend::Error::MissingReference { path: full, reference: dir.display(r) });
            }
        }
        trust::require_true_ca(dir, info)?;

        let method = self.options.compression;
        if self.options.write_nar_listing {
            let file = std::fs::File::open(&staged.path).map_err(|e| io_error("reading", &staged.path, e))?;
            let decoder =
                Decoder::new(method, BufReader::new(file)).map_err(|e| io_error("reading", &staged.path, e))?;
            let mut listing = Vec::new();
            nar::write_ls_document(BufReader::new(decoder), &mut listing, &self.options.nar_limits)
                .map_err(|e| self.nar_error(&info.path, e))?;
            let name = format!("{}.ls", info.path.hash_part());
            self.cache.upsert(&self.client, &name, Upload::Bytes(&listing), "application/json")?;
        }
        let url = format!("nar/{}.nar{}", file_hash.to_nix32(), method.extension());
        // Another path (or thread) may have uploaded the same file.
        if !self.cache.exists(&self.client, &url)? {
            self.cache.upsert(&self.client, &url, Upload::Staged(&staged.path), "application/x-nix-nar")?;
        }
        drop(staged);
        let mut narinfo = NarInfo {
            path: info.path.clone(),
            url,
            compression: method.name().to_owned(),
            file_hash: Some(file_hash),
            file_size: Some(file_size),
            nar_hash,
            nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            system: None,
            sigs: info.sigs.clone(),
            ca: info.ca,
        };
        for key in &self.options.secret_keys {
            narinfo.sign(dir, key).map_err(|e| backend::Error::Backend(Box::new(e)))?;
        }
        Ok(self.write_narinfo(narinfo)?)
    }

    fn add_signatures(&self, path: &StorePath, sigs: &BTreeSet<String>) -> backend::Result<()> {
        let info = self.narinfo(path)?.ok_or_else(|| backend::Error::InvalidPath(self.store_dir.display(path)))?;
        let mut info = (*info).clone();
        let before = info.sigs.len();
        info.sigs.extend(sigs.iter().cloned());
        if info.sigs.len() != before {
            self.write_narinfo(info)?;
        }
        Ok(())
    }

    fn query_realisation(&self, id: &DrvOutput) -> backend::Result<Option<Realisation>> {
        let name = format!("realisations/{id}.doi");
        let Some(text) = self.cache.read_small(&self.client, &name)? else { return Ok(None) };
        Ok(Some(Realisation::from_json(&text, &self.cache.file_url(&name)).map_err(Error::from)?))
    }

    fn register_realisation(&self, realisation: &Realisation) -> backend::Result<()> {
        if !self.is_valid(&realisation.out_path)? {
            return Err(backend::Error::InvalidPath(self.store_dir.display(&realisation.out_path)));
        }
        let name = format!("realisations/{}.doi", realisation.id);
        let json = realisation.to_json().to_string();
        Ok(self.cache.upsert(&self.client, &name, Upload::Bytes(json.as_bytes()), "application/json")?)
    }

    fn add_build_log(&self, drv: &StorePath, log: &mut dyn Read) -> backend::Result<()> {
        let name = format!("log/{}", drv.base_name());
        let mut text = Vec::new();
        log.read_to_end(&mut text).map_err(|e| Error::Io {
            op: "reading the log of",
            path: self.store_dir.display(drv),
            why: e.to_string(),
        })?;
        if self.cache.exists(&self.client, &name)? {
            return Ok(());
        }
        Ok(self.cache.upsert(&self.client, &name, Upload::Bytes(&text), "text/plain; charset=utf-8")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::TestServer;

    fn dir() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    /// A NAR of one file and its info.
    fn path_of(contents: &[u8]) -> (Vec<u8>, PathInfo) {
        let nar = store::nar::dump_bytes(contents, false);
        let path = dir().make_store_path("output:out", &Algorithm::Sha256.digest(contents), "hello").unwrap();
        (nar.clone(), PathInfo::new(path, Algorithm::Sha256.digest(&nar), nar.len() as u64))
    }

    #[test]
    fn file_cache_layout_is_cppnix_s() {
        let tmp = tempfile::tempdir().unwrap();
        let uri = format!("file://{}?compression=zstd&write-nar-listing=1", tmp.path().display());
        let cache = BinaryCacheStore::open(&uri, dir()).unwrap();
        assert_eq!(std::fs::read_to_string(tmp.path().join("nix-cache-info")).unwrap(), "StoreDir: /nix/store\n");
        let (nar, info) = path_of(b"hello\n");
        cache.add_to_store(&info, &mut &nar[..]).unwrap();
        let hash = info.path.hash_part();
        let text = std::fs::read_to_string(tmp.path().join(format!("{hash}.narinfo"))).unwrap();
        let written = NarInfo::parse(&dir(), &text, "test").unwrap();
        assert_eq!(written.compression, "zstd");
        assert!(written.url.starts_with("nar/") && written.url.ends_with(".nar.zst"), "{}", written.url);
        let file = std::fs::read(tmp.path().join(&written.url)).unwrap();
        assert_eq!(written.file_size, Some(file.len() as u64));
        assert_eq!(written.file_hash, Some(Algorithm::Sha256.digest(&file)));
        assert_eq!(written.url, format!("nar/{}.nar.zst", Algorithm::Sha256.digest(&file).to_nix32()));
        let listing = std::fs::read_to_string(tmp.path().join(format!("{hash}.ls"))).unwrap();
        assert!(listing.starts_with("{\"version\":1,\"root\":{\"type\":\"regular\""), "{listing}");
        // Nothing staged is left behind.
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // The substituter's reader sees what was written.
        let mut out = Vec::new();
        cache.nar_from_path(&info.path, &mut out).unwrap();
        assert_eq!(out, nar);
    }

    #[test]
    fn http_cache_is_written_with_puts() {
        let server = TestServer::start();
        let cache = BinaryCacheStore::open(&server.url, dir()).unwrap();
        assert_eq!(server.get("nix-cache-info").unwrap(), b"StoreDir: /nix/store\n");
        let (nar, info) = path_of(b"over http\n");
        cache.add_to_store(&info, &mut &nar[..]).unwrap();
        let names = server.names();
        let hash = info.path.hash_part();
        assert!(names.contains(&format!("{hash}.narinfo")), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("nar/") && n.ends_with(".nar.xz")), "{names:?}");
        let drv = dir().parse_path("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello.drv").unwrap();
        cache.add_build_log(&drv, &mut &b"building\n"[..]).unwrap();
        assert_eq!(server.get(&format!("log/{}", drv.base_name())).unwrap(), b"building\n");
        // An existing log is kept.
        cache.add_build_log(&drv, &mut &b"again\n"[..]).unwrap();
        assert_eq!(server.get(&format!("log/{}", drv.base_name())).unwrap(), b"building\n");
    }

    #[test]
    fn a_cache_for_another_store_dir_is_refused() {
        let server = TestServer::start();
        server.put("nix-cache-info", "StoreDir: /other/store\n");
        let e = BinaryCacheStore::open(&server.url, dir()).err().unwrap();
        assert!(matches!(e, Error::StoreDirMismatch { .. }), "{e}");
    }

    #[test]
    fn url_options() {
        let o = StoreOptions::from_url("file:///x?compression=bzip2&write-nar-listing=true&priority=3").unwrap();
        assert_eq!(o.compression, Method::Bzip2);
        assert!(o.write_nar_listing);
        assert!(
            matches!(StoreOptions::from_url("file:///x?compression=br"), Err(Error::BadCompression(m)) if m == "br")
        );
    }
}
