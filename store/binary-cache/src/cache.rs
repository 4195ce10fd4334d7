//! One binary cache: where it is (`http(s)://`, `file://` or `s3://`), its store URL
//! parameters (`priority`, `want-mass-query`, `trusted`), what its
//! `nix-cache-info` says (CppNix's `BinaryCacheStore::init`), and its
//! narinfos.
//!
//! Lookups are remembered process-wide, like CppNix's narinfo disk cache
//! (src/libstore/nar-info-disk-cache.cc) but in memory: a `nix-cache-info`
//! for a week, a narinfo for `narinfo-cache-positive-ttl` and a miss for
//! `narinfo-cache-negative-ttl` seconds (each [`BinaryCache::narinfo`] call
//! says which TTLs apply, so a TTL of 0 always asks the cache). A cache that
//! could not be reached is tried again after a minute, as CppNix disables
//! one for 60 seconds.
//!
//! Writing ([`BinaryCache::upsert`]) is atomic for readers: a `file://`
//! cache gets each file under a temporary name in the cache and renamed
//! into place, an HTTP cache gets one `PUT` per file, an S3 bucket one
//! object per file (in one request or in parts, visible once complete).

use crate::Error;
use crate::file;
pub use crate::http::Upload;
use crate::http::{Client, Fetched};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use store::narinfo::NarInfo;
use store::store_path::{StoreDir, StorePath};

/// How long what a `nix-cache-info` says is remembered (CppNix: 7 days).
const CACHE_INFO_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a cache that could not be reached is left alone.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(60);
/// Largest `nix-cache-info` and narinfo read.
const MAX_INFO_FILE: u64 = 16 << 20;
/// Remembered narinfo lookups before the memory is emptied.
const MAX_REMEMBERED: usize = 200_000;

/// A binary cache, as given in `substituters`.
pub struct BinaryCache {
    /// The URL without parameters or trailing slash (CppNix's `getUri`).
    pub url: String,
    location: Location,
    /// `?priority=` (overrides `nix-cache-info`).
    priority: Option<i32>,
    /// `?want-mass-query=` (overrides `nix-cache-info`).
    want_mass_query: Option<bool>,
    /// `?trusted=1`: its paths need no signature.
    pub trusted: bool,
    state: Mutex<State>,
}

enum Location {
    /// Files are fetched by URL (the cache's `url`).
    Http,
    File(PathBuf),
    /// Files are objects of the bucket, keyed by their names in the cache.
    S3(s3::Bucket),
}

enum State {
    Unknown,
    Ready(CacheInfo),
    /// Not usable (wrong store dir, not a cache): for good.
    Unusable(Error),
    /// Not reachable: tried again after [`RETRY_UNREACHABLE`].
    Unreachable(Error, Instant),
}

/// What the cache's `nix-cache-info` and URL parameters say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheInfo {
    /// Lower is tried first (CppNix's default is 0 when nothing says).
    pub priority: i32,
    pub want_mass_query: bool,
}

/// `nix-cache-info` as written.
#[derive(Debug, Clone, Default)]
struct InfoFile {
    store_dir: Option<String>,
    priority: Option<i32>,
    want_mass_query: Option<bool>,
}

/// (cache URL, store dir, hash part).
type NarInfoKey = (String, String, String);

#[derive(Default)]
struct Memory {
    info_files: HashMap<String, (InfoFile, Instant)>,
    /// The narinfo or its absence, and when that was learnt.
    narinfos: HashMap<NarInfoKey, (Option<Arc<NarInfo>>, Instant)>,
}

static MEMORY: LazyLock<Mutex<Memory>> = LazyLock::new(Mutex::default);

fn memory() -> std::sync::MutexGuard<'static, Memory> {
    MEMORY.lock().unwrap_or_else(|e| e.into_inner())
}

impl BinaryCache {
    /// Parses a substituter URL. Only `http://`, `https://`, `file://` and
    /// `s3://` are binary caches we can read. An `s3://` URL needs
    /// credentials ([`s3::Credentials::find`]); nothing is asked of the
    /// server yet.
    pub fn parse(uri: &str) -> Result<BinaryCache, Error> {
        let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
        let mut base = base.trim_end_matches('/');
        let location = if base.starts_with("http://") || base.starts_with("https://") {
            Location::Http
        } else if base.starts_with("s3://") {
            let bucket = s3::Bucket::from_url(uri)
                .map_err(|e| Error::UnsupportedStore { url: uri.to_owned(), why: e.to_string() })?;
            Location::S3(bucket)
        } else if let Some(dir) = file::url_to_path(base) {
            if !dir.is_absolute() {
                return Err(Error::UnsupportedStore {
                    url: uri.to_owned(),
                    why: "a file:// cache needs an absolute path".into(),
                });
            }
            Location::File(dir)
        } else {
            let why = if base.contains("://") {
                "only http://, https://, file:// and s3:// binary caches are supported"
            } else {
                "it is not a binary cache URL"
            };
            return Err(Error::UnsupportedStore { url: uri.to_owned(), why: why.into() });
        };
        if let Some(bucket) = base.strip_prefix("s3://") {
            base = &base[..5 + bucket.find('/').unwrap_or(bucket.len())];
        }
        let mut cache = BinaryCache {
            url: if base.is_empty() { uri.to_owned() } else { base.to_owned() },
            location,
            priority: None,
            want_mass_query: None,
            trusted: false,
            state: Mutex::new(State::Unknown),
        };
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let bad = || Error::UnsupportedStore {
                url: uri.to_owned(),
                why: format!("invalid value '{value}' for parameter '{key}'"),
            };
            match key {
                "priority" => cache.priority = Some(value.parse().map_err(|_| bad())?),
                "want-mass-query" => cache.want_mass_query = Some(parse_bool(value).ok_or_else(bad)?),
                "trusted" => cache.trusted = parse_bool(value).ok_or_else(bad)?,
                // Settings of other kinds of stores, or for writing (compression,
                // secret-key, ...): nothing to do when reading.
                _ => {}
            }
        }
        Ok(cache)
    }

    /// Reads `nix-cache-info` (once) and checks the cache serves `store_dir`.
    pub fn init(&self, client: &Client, store_dir: &StoreDir) -> Result<CacheInfo, Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            State::Ready(info) => return Ok(*info),
            State::Unusable(e) => return Err(e.clone()),
            State::Unreachable(e, at) if at.elapsed() < RETRY_UNREACHABLE => return Err(e.clone()),
            _ => {}
        }
        // Holding the lock: other threads wait for this answer rather than ask too.
        let result = self.info_file(client).and_then(|file| {
            if let Some(theirs) = file.store_dir.as_deref().filter(|d| *d != store_dir.as_str()) {
                return Err(Error::StoreDirMismatch {
                    url: self.url.clone(),
                    theirs: theirs.to_owned(),
                    ours: store_dir.as_str().to_owned(),
                });
            }
            Ok(CacheInfo {
                priority: self.priority.or(file.priority).unwrap_or(0),
                want_mass_query: self.want_mass_query.or(file.want_mass_query).unwrap_or(false),
            })
        });
        *state = match &result {
            Ok(info) => State::Ready(*info),
            Err(e @ (Error::Download { .. } | Error::HttpStatus { .. } | Error::Io { .. })) => {
                State::Unreachable(e.clone(), Instant::now())
            }
            Err(e @ Error::S3(s3)) if s3.is_unavailable() => State::Unreachable(e.clone(), Instant::now()),
            Err(e) => State::Unusable(e.clone()),
        };
        result
    }

    fn info_file(&self, client: &Client) -> Result<InfoFile, Error> {
        if let Some((file, at)) = memory().info_files.get(&self.url)
            && at.elapsed() < CACHE_INFO_TTL
        {
            return Ok(file.clone());
        }
        let file = match self.read_small(client, "nix-cache-info")? {
            Some(text) => self.parse_info_file(&text)?,
            None => match &self.location {
                Location::Http | Location::S3(_) => return Err(Error::NotACache(self.url.clone())),
                // CppNix would create it with our store dir; reading only, we take
                // an existing directory without one as meant for our store.
                Location::File(dir) if dir.is_dir() => InfoFile::default(),
                Location::File(_) => return Err(Error::NotACache(self.url.clone())),
            },
        };
        memory().info_files.insert(self.url.clone(), (file.clone(), Instant::now()));
        Ok(file)
    }

    fn parse_info_file(&self, text: &str) -> Result<InfoFile, Error> {
        let mut file = InfoFile::default();
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match name {
                "StoreDir" => file.store_dir = Some(value.to_owned()),
                "WantMassQuery" => file.want_mass_query = Some(value == "1"),
                "Priority" => {
                    file.priority = Some(value.parse().map_err(|_| Error::BadCacheInfo {
                        url: self.url.clone(),
                        why: format!("Priority '{value}' is not a number"),
                    })?)
                }
                _ => {}
            }
        }
        Ok(file)
    }

    /// The narinfo of `path`, if the cache has one. Remembered as the
    /// module docs say.
    pub fn narinfo(
        &self,
        client: &Client,
        store_dir: &StoreDir,
        path: &StorePath,
        ttl: (Duration, Duration),
    ) -> Result<Option<Arc<NarInfo>>, Error> {
        self.narinfo_by_hash(client, store_dir, path.hash_part(), ttl)
    }

    /// [`Self::narinfo`] by the hash part of the path (32 base-32 digits;
    /// anything else is not there).
    pub fn narinfo_by_hash(
        &self,
        client: &Client,
        store_dir: &StoreDir,
        hash_part: &str,
        ttl: (Duration, Duration),
    ) -> Result<Option<Arc<NarInfo>>, Error> {
        if hash_part.len() != 32 || !hash_part.bytes().all(store::hash::nix32::is_digit) {
            return Ok(None);
        }
        let path = hash_part;
        let key = (self.url.clone(), store_dir.as_str().to_owned(), path.to_owned());
        if let Some((info, at)) = memory().narinfos.get(&key) {
            let ttl = if info.is_some() { ttl.0 } else { ttl.1 };
            if at.elapsed() < ttl {
                return Ok(info.clone());
            }
        }
        let name = format!("{path}.narinfo");
        let info = match self.read_small(client, &name)? {
            Some(text) => Some(Arc::new(NarInfo::parse(store_dir, &text, &self.file_url(&name))?)),
            None => None,
        };
        let mut memory = memory();
        if memory.narinfos.len() >= MAX_REMEMBERED {
            memory.narinfos.clear();
        }
        memory.narinfos.insert(key, (info.clone(), Instant::now()));
        Ok(info)
    }

    /// Where a file of the cache is: `rel` relative to the cache, or (for
    /// HTTP caches) an absolute `http(s)://` URL, as CppNix's `makeRequest`.
    pub fn file_url(&self, rel: &str) -> String {
        if rel.starts_with("http://") || rel.starts_with("https://") {
            return rel.to_owned();
        }
        format!("{}/{rel}", self.url)
    }

    /// Opens a file of the cache for streaming; `None` if it is not there.
    pub fn open(&self, client: &Client, rel: &str) -> Result<Option<Box<dyn Read + Send>>, Error> {
        match &self.location {
            Location::Http => {
                let url = self.checked_url(rel)?;
                match client.get(&url, true)? {
                    Fetched::Body(body) => Ok(Some(Box::new(body))),
                    Fetched::Missing => Ok(None),
                }
            }
            Location::S3(bucket) => Ok(bucket.get(&self.checked_name(rel)?)?),
            Location::File(_) => {
                // A narinfo names a file inside the cache; nothing else is read.
                let path = self.checked_file(rel)?;
                let file = file::open(&path).map_err(|source| Error::Io {
                    op: "reading",
                    path: path.display().to_string(),
                    why: source.to_string(),
                })?;
                Ok(file.map(|f| Box::new(f) as Box<dyn Read + Send>))
            }
        }
    }

    /// A whole small file of the cache as text.
    pub fn read_small(&self, client: &Client, rel: &str) -> Result<Option<String>, Error> {
        let Some(reader) = self.open(client, rel)? else { return Ok(None) };
        let mut bytes = Vec::new();
        let url = self.file_url(rel);
        reader
            .take(MAX_INFO_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Download { url: url.clone(), why: e.to_string() })?;
        if bytes.len() as u64 > MAX_INFO_FILE {
            return Err(Error::Download { url, why: format!("larger than {MAX_INFO_FILE} bytes") });
        }
        String::from_utf8(bytes).map(Some).map_err(|_| Error::Download { url, why: "not UTF-8 text".into() })
    }
}

/// A name for a temporary file no other thread or process picks.
pub fn temp_name(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(".tmp-{}-{}-{what}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl BinaryCache {
    /// The cache's directory, for a `file://` cache.
    pub fn dir(&self) -> Option<&Path> {
        match &self.location {
            Location::File(dir) => Some(dir),
            Location::Http | Location::S3(_) => None,
        }
    }

    /// Where to stage a file before [`Self::upsert`]ing it: inside a
    /// `file://` cache (so that it is renamed into place), the temporary
    /// directory for an HTTP or S3 one.
    pub fn staging_dir(&self) -> PathBuf {
        match &self.location {
            Location::File(dir) => dir.clone(),
            Location::Http | Location::S3(_) => std::env::temp_dir(),
        }
    }

    /// Makes a cache to write to: its directory (`file://`) and, when it
    /// has none, a `nix-cache-info` naming `store_dir` (CppNix's
    /// `BinaryCacheStore::init`).
    pub fn create(&self, client: &Client, store_dir: &StoreDir) -> Result<(), Error> {
        if let Location::File(dir) = &self.location {
            std::fs::create_dir_all(dir).map_err(|e| io_error("creating directory", dir, e))?;
        }
        if self.read_small(client, "nix-cache-info")?.is_none() {
            let text = format!("StoreDir: {}\n", store_dir.as_str());
            self.upsert(client, "nix-cache-info", Upload::Bytes(text.as_bytes()), "text/x-nix-cache-info")?;
        }
        Ok(())
    }

    /// Whether the cache has the file `rel`.
    pub fn exists(&self, client: &Client, rel: &str) -> Result<bool, Error> {
        match &self.location {
            Location::Http => client.head(&self.checked_url(rel)?),
            Location::File(_) => Ok(self.checked_file(rel)?.exists()),
            Location::S3(bucket) => Ok(bucket.head(&self.checked_name(rel)?)?.is_some()),
        }
    }

    /// Writes (or replaces) the file `rel` of the cache.
    pub fn upsert(&self, client: &Client, rel: &str, body: Upload<'_>, content_type: &str) -> Result<(), Error> {
        match &self.location {
            Location::Http => client.put(&self.checked_url(rel)?, body, content_type),
            Location::S3(bucket) => {
                let key = self.checked_name(rel)?;
                match body {
                    Upload::Bytes(bytes) => bucket.put_bytes(&key, bytes.to_vec(), content_type)?,
                    Upload::Staged(path) => {
                        let mut file = std::fs::File::open(path).map_err(|e| io_error("reading", path, e))?;
                        bucket.put(&key, &mut file, content_type)?;
                    }
                }
                Ok(())
            }
            Location::File(_) => {
                let dest = self.checked_file(rel)?;
                let dir = dest.parent().expect("a file in the cache has a parent");
                std::fs::create_dir_all(dir).map_err(|e| io_error("creating directory", dir, e))?;
                let staged = match body {
                    Upload::Staged(path) => path.to_owned(),
                    Upload::Bytes(bytes) => {
                        let tmp = dir.join(temp_name("upload"));
                        if let Err(e) = std::fs::write(&tmp, bytes) {
                            let _ = std::fs::remove_file(&tmp);
                            return Err(io_error("writing", &tmp, e));
                        }
                        tmp
                    }
                };
                std::fs::rename(&staged, &dest).map_err(|e| {
                    let _ = std::fs::remove_file(&staged);
                    io_error("renaming into", &dest, e)
                })
            }
        }
    }

    /// Records what the cache now says about a path, so that lookups in
    /// this process see a narinfo just written.
    pub fn remember_narinfo(&self, store_dir: &StoreDir, path: &StorePath, info: Option<Arc<NarInfo>>) {
        let key = (self.url.clone(), store_dir.as_str().to_owned(), path.hash_part().to_owned());
        memory().narinfos.insert(key, (info, Instant::now()));
    }

    /// The URL of `rel` in an HTTP cache.
    fn checked_url(&self, rel: &str) -> Result<String, Error> {
        let url = self.file_url(rel);
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(Error::BadFileName { url: self.url.clone(), name: rel.to_owned() });
        }
        Ok(url)
    }

    /// The path of `rel` in a `file://` cache, refusing names outside it.
    fn checked_file(&self, rel: &str) -> Result<PathBuf, Error> {
        let Location::File(dir) = &self.location else { unreachable!("only for file:// caches") };
        Ok(dir.join(self.checked_name(rel)?))
    }

    /// `rel` when it names a file inside the cache (no absolute name, no
    /// `..`): a `file://` cache's relative path, an S3 cache's key.
    fn checked_name(&self, rel: &str) -> Result<String, Error> {
        let inside = Path::new(rel).components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || rel.is_empty() || rel.contains("//") || rel.ends_with('/') {
            return Err(Error::BadFileName { url: self.url.clone(), name: rel.to_owned() });
        }
        Ok(rel.to_owned())
    }
}

fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Io { op, path: path.display().to_string(), why: e.to_string() }
}

/// A store URL's boolean parameter, as CppNix's `Setting<bool>` reads it.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_parameters() {
        let c = BinaryCache::parse("https://cache.example/sub/?priority=10&trusted=1&compression=zstd").unwrap();
        assert_eq!(c.url, "https://cache.example/sub");
        assert_eq!(c.priority, Some(10));
        assert!(c.trusted);
        assert_eq!(c.file_url("x.narinfo"), "https://cache.example/sub/x.narinfo");
        assert_eq!(c.file_url("https://other/nar/y"), "https://other/nar/y");
        let f = BinaryCache::parse("file:///var/cache?want-mass-query=true").unwrap();
        assert_eq!(f.url, "file:///var/cache");
        assert_eq!(f.want_mass_query, Some(true));
        for bad in ["daemon", "ssh://host", "s3://Bucket", "file://relative", "https://x?priority=high"] {
            assert!(BinaryCache::parse(bad).is_err(), "{bad}");
        }
    }
}
