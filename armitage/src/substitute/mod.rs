//! Substitution from binary caches (CppNix src/libstore/binary-cache-store.cc,
//! http-binary-cache-store.cc, local-binary-cache-store.cc and
//! build/substitution-goal.cc): `http(s)://` and `file://` caches laid out
//! as `nix copy --to` writes them (`nix-cache-info`, `<hash>.narinfo`,
//! `nar/<file hash>.nar[.xz|.zst|.bz2]`), narinfos checked against
//! `trusted-public-keys`, NARs decompressed, hash-checked and streamed into
//! the store.
//!
//! Blocking API: callers run it on blocking threads. A [`Substituters`] is
//! `Sync`: any number of threads may query and fetch through one at once.
//! HTTP transfers share one connection pool and at most `http-connections`
//! run at a time (further ones wait for a slot); [`Substituters::fetch_all`]
//! fetches a planned closure with several threads itself.
//!
//! The contract kept:
//! - A cache whose `nix-cache-info` names another store dir, that is not a
//!   binary cache, or whose URL we cannot read is skipped with a warning
//!   ([`Substituters::take_warnings`]), as CppNix's `getDefaultSubstituters`
//!   does; caches are tried in `Priority` order (lower first, then as listed).
//! - With `require-sigs`, a narinfo is used only when a trusted key signed
//!   it, its cache is `?trusted=1`, or it is content-addressed and its CA
//!   gives its path (CppNix's `ValidPathInfo::checkSignatures`). A refused
//!   one is passed over in [`Substituters::query`] with CppNix's warning
//!   and refused by [`Substituters::fetch`] with CppNix's error.
//! - [`Substituters::fetch`] registers a path only after its NAR matched
//!   `NarHash`/`NarSize` and the downloaded file matched `FileHash`/
//!   `FileSize` (both checked before the last NAR byte reaches the store);
//!   its references must already be valid: callers substitute references
//!   first ([`Substituters::plan`] gives the order).

mod error;
mod fetch;
mod plan;

// The binary-cache layout, its HTTP client and its decompression live in
// the `binary-cache` crate; the substituter and `builtin:fetchurl` use them.
use binary_cache::{cache, decompress};
pub(crate) use binary_cache::{file, http};

pub use cache::CacheInfo;
pub use error::SubstituteError;
pub use plan::FetchPlan;

use cache::BinaryCache;
use local_store::LocalStore;
use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use store::backend::trust;
use store::narinfo::NarInfo;
use store::path_info::PathInfo;
use store::signing::PublicKeys;
use store::store_path::{StoreDir, StorePath};

/// What a cache offers for a path.
#[derive(Debug, Clone)]
pub struct Substitutable {
    pub info: NarInfo,
    /// The cache's URL (without parameters or trailing slash).
    pub cache: String,
}

/// How substituters are set up.
#[derive(Debug, Clone)]
pub struct SubstituterConfig {
    /// `substituters`, as configured (store URLs with `?param=value`s).
    pub urls: Vec<String>,
    pub public_keys: PublicKeys,
    pub require_sigs: bool,
    pub store_dir: StoreDir,
    /// `http-connections`: HTTP transfers at once (0: no limit).
    pub http_connections: usize,
    /// `connect-timeout` in seconds (0: none).
    pub connect_timeout: u64,
    /// `stalled-download-timeout` in seconds (0: none).
    pub stalled_download_timeout: u64,
    /// `download-attempts`.
    pub download_attempts: u32,
    /// `narinfo-cache-positive-ttl` in seconds.
    pub narinfo_cache_positive_ttl: u64,
    /// `narinfo-cache-negative-ttl` in seconds.
    pub narinfo_cache_negative_ttl: u64,
}

impl SubstituterConfig {
    /// CppNix's defaults, for `urls` and `store_dir`, with no trusted keys.
    pub fn new(urls: Vec<String>, store_dir: StoreDir) -> SubstituterConfig {
        SubstituterConfig {
            urls,
            public_keys: PublicKeys::new(),
            require_sigs: true,
            store_dir,
            http_connections: 25,
            connect_timeout: 0,
            stalled_download_timeout: 300,
            download_attempts: 5,
            narinfo_cache_positive_ttl: 30 * 24 * 3600,
            narinfo_cache_negative_ttl: 3600,
        }
    }

    /// The settings of a loaded nix.conf (`substituters` as the URLs), with
    /// the keys the caller trusts (`trusted-public-keys` and the public
    /// halves of `secret-key-files`).
    pub fn from_settings(
        settings: &store::nix_conf::Settings,
        store_dir: StoreDir,
        public_keys: PublicKeys,
    ) -> SubstituterConfig {
        SubstituterConfig {
            urls: settings.substituters.clone(),
            public_keys,
            require_sigs: settings.require_sigs,
            store_dir,
            http_connections: usize::try_from(settings.http_connections).unwrap_or(usize::MAX),
            connect_timeout: settings.connect_timeout,
            stalled_download_timeout: settings.stalled_download_timeout,
            download_attempts: settings.download_attempts,
            narinfo_cache_positive_ttl: settings.narinfo_cache_positive_ttl.into(),
            narinfo_cache_negative_ttl: settings.narinfo_cache_negative_ttl.into(),
        }
    }
}

/// The configured substituters, in priority order.
pub struct Substituters {
    config: SubstituterConfig,
    /// As listed (duplicates and unsupported URLs left out).
    caches: Vec<BinaryCache>,
    client: http::Client,
    warnings: Mutex<Warnings>,
}

#[derive(Default)]
struct Warnings {
    pending: Vec<String>,
    seen: HashSet<String>,
}

impl Substituters {
    /// Sets up the substituters; no I/O happens until the first query. A URL
    /// that is not a binary cache we can read is left out with a warning.
    pub fn new(config: SubstituterConfig) -> Result<Substituters, SubstituteError> {
        let client = http::Client::new(&http::ClientConfig {
            connections: config.http_connections,
            connect_timeout: config.connect_timeout,
            stalled_timeout: config.stalled_download_timeout,
            attempts: config.download_attempts,
        });
        let subs = Substituters { caches: Vec::new(), client, warnings: Mutex::default(), config };
        let mut caches: Vec<BinaryCache> = Vec::new();
        for url in subs.config.urls.iter().filter(|u| !u.is_empty()) {
            match BinaryCache::parse(url) {
                Ok(c) if caches.iter().any(|d| d.url == c.url) => {}
                Ok(c) => caches.push(c),
                Err(e) => subs.warn(&e.into()),
            }
        }
        Ok(Substituters { caches, ..subs })
    }

    /// Whether any substituter is configured.
    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    pub fn config(&self) -> &SubstituterConfig {
        &self.config
    }

    /// Warnings since the last call, each once: caches left out (wrong
    /// store dir, unreachable, not a cache) and substitutes passed over
    /// (unsigned, another path). Also logged through `tracing`.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.lock().unwrap_or_else(|e| e.into_inner()).pending)
    }

    fn warn(&self, e: &SubstituteError) {
        let text = e.to_string();
        let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if w.seen.insert(text.clone()) {
            tracing::warn!("{text}");
            w.pending.push(text);
        }
    }

    /// The usable caches in priority order with what they say about
    /// themselves; the others are warned about. Caches not asked yet are
    /// asked in parallel.
    pub fn caches(&self) -> Vec<(String, CacheInfo)> {
        self.usable().into_iter().map(|(c, i)| (c.url.clone(), i)).collect()
    }

    fn usable(&self) -> Vec<(&BinaryCache, CacheInfo)> {
        let results = parallel_map(&self.caches, self.caches.len(), |c| c.init(&self.client, &self.config.store_dir));
        let mut usable = Vec::new();
        for (cache, result) in self.caches.iter().zip(results) {
            match result {
                Ok(info) => usable.push((cache, info)),
                Err(e) => self.warn(&e.into()),
            }
        }
        // Stable: equal priorities stay in the order they were listed.
        usable.sort_by_key(|(_, info)| info.priority);
        usable
    }

    fn ttls(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.config.narinfo_cache_positive_ttl),
            Duration::from_secs(self.config.narinfo_cache_negative_ttl),
        )
    }

    /// What the first cache (in priority order) that has an acceptable
    /// substitute for `path` says about it. Substitutes that lack a trusted
    /// signature, or describe another path, are passed over with a warning.
    /// A cache that fails to answer is an error unless a later one has the
    /// path (then it is a warning), as CppNix without `fallback`.
    pub fn query(&self, path: &StorePath) -> Result<Option<Substitutable>, SubstituteError> {
        let mut notes = Vec::new();
        let result = self.query_noting(path, &mut notes);
        for n in &notes {
            self.warn(n);
        }
        result
    }

    /// [`Self::query`], handing what it would warn about `path` (substitutes
    /// passed over, caches that failed to answer) to the caller in `notes`
    /// instead of queueing it for [`Self::take_warnings`]: a substitution
    /// warns its own requester each time, as CppNix's
    /// `PathSubstitutionGoal` does, and queries that CppNix makes silently
    /// (`queryMissing`, `querySubstitutablePathInfos`) can drop them rather
    /// than leave them for another client to see.
    pub fn query_noting(
        &self,
        path: &StorePath,
        notes: &mut Vec<SubstituteError>,
    ) -> Result<Option<Substitutable>, SubstituteError> {
        let mut failures = Vec::new();
        for (cache, _) in self.usable() {
            match self.query_one(cache, path, notes) {
                Ok(Some(found)) => {
                    notes.extend(failures);
                    return Ok(Some(found));
                }
                Ok(None) => {}
                Err(e) => failures.push(e),
            }
        }
        let mut failures = failures.into_iter();
        match failures.next() {
            Some(first) => {
                notes.extend(failures);
                Err(first)
            }
            None => Ok(None),
        }
    }

    fn query_one(
        &self,
        cache: &BinaryCache,
        path: &StorePath,
        notes: &mut Vec<SubstituteError>,
    ) -> Result<Option<Substitutable>, SubstituteError> {
        let dir = &self.config.store_dir;
        let Some(info) = cache.narinfo(&self.client, dir, path, self.ttls())? else { return Ok(None) };
        if info.path != *path {
            notes.push(SubstituteError::WrongPath {
                cache: cache.url.clone(),
                wanted: dir.display(path),
                got: dir.display(&info.path),
            });
            return Ok(None);
        }
        if !self.is_acceptable(cache, &info) {
            notes.push(SubstituteError::NotSigned { path: dir.display(path), cache: cache.url.clone() });
            return Ok(None);
        }
        Ok(Some(Substitutable { info: (*info).clone(), cache: cache.url.clone() }))
    }

    /// Which of `paths` some cache that wants mass queries
    /// (`WantMassQuery: 1`) has, as CppNix's `querySubstitutablePaths`.
    /// Caches that fail to answer are warned about and count as not having them.
    pub fn query_substitutable_paths(&self, paths: &[StorePath]) -> BTreeSet<StorePath> {
        let caches: Vec<&BinaryCache> =
            self.usable().into_iter().filter(|(_, i)| i.want_mass_query).map(|(c, _)| c).collect();
        let mut found = BTreeSet::new();
        for cache in caches {
            let todo: Vec<&StorePath> = paths.iter().filter(|p| !found.contains(*p)).collect();
            let results = parallel_map(&todo, self.jobs(), |p| {
                cache.narinfo(&self.client, &self.config.store_dir, p, self.ttls())
            });
            for (p, r) in todo.into_iter().zip(results) {
                match r {
                    Ok(Some(info)) if info.path == *p => {
                        found.insert(p.clone());
                    }
                    Ok(_) => {}
                    Err(e) => self.warn(&e.into()),
                }
            }
        }
        found
    }

    /// Downloads `from.info.path` from the cache `from.cache`, verifies it
    /// and adds it to `store`; returns what the store now has. A path that
    /// is already valid is not downloaded. `progress(done, expected)` gets
    /// the NAR bytes received so far and the NAR size.
    pub fn fetch(
        &self,
        store: &LocalStore,
        from: &Substitutable,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PathInfo, SubstituteError> {
        let cache = self
            .caches
            .iter()
            .find(|c| c.url == from.cache)
            .ok_or_else(|| SubstituteError::UnknownCache(from.cache.clone()))?;
        let info = &from.info;
        store.add_temp_root(&info.path)?;
        if store.is_valid(&info.path)? {
            return Ok(store.path_info(&info.path)?);
        }
        if !self.is_acceptable(cache, info) {
            return Err(SubstituteError::LacksSignature(store.display(&info.path)));
        }
        for r in info.references.iter().filter(|r| **r != info.path) {
            store.add_temp_root(r)?;
            if !store.is_valid(r)? {
                return Err(SubstituteError::MissingReference {
                    path: store.display(&info.path),
                    reference: store.display(r),
                });
            }
        }
        fetch::fetch(store, &self.client, cache, info, progress)
    }

    /// Whether `info` from `cache` may be used (see the module docs).
    fn is_acceptable(&self, cache: &BinaryCache, info: &NarInfo) -> bool {
        if cache.trusted || !self.config.require_sigs {
            return true;
        }
        let dir = &self.config.store_dir;
        let verdict = trust::verdict(dir, &PathInfo::from(info), &self.config.public_keys);
        if verdict.false_ca() {
            tracing::warn!("path '{}' claims to be content-addressed but isn't", dir.display(&info.path));
        }
        verdict.is_trusted()
    }

    /// Threads for parallel lookups and fetches.
    pub(crate) fn jobs(&self) -> usize {
        match self.config.http_connections {
            0 => 25,
            n => n,
        }
    }
}

/// `f` over `items` on up to `jobs` threads; results in `items`' order.
pub(crate) fn parallel_map<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 || jobs <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was mapped"))
        .collect()
}
