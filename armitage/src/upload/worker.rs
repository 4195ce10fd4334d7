//! The worker that empties the upload queue: due jobs, oldest first, each
//! uploaded or set to be tried again. While the bucket cannot be reached,
//! the worker waits out the backoff of the job that found it so, instead
//! of trying (and timing out on) every other job.

use super::queue::{Item, Job, Queue, backoff, now_ms};
use super::roots::Roots;
use binary_cache::BinaryCacheStore;
use local_store::{LiveStore, LocalStore};
use std::collections::{BTreeSet, HashSet};
use std::io::BufReader;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use store::backend::Store;
use store::path_info::PathInfo;
use store::store_path::StorePath;
use witness_proxy::archive::Archive;
use witness_proxy::cas::{Cas, S3Cas};

/// What the worker shares with those who add to the queue.
pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    /// Signalled when items are added.
    pub(super) added: Condvar,
    pub(super) roots: Roots,
    pub(super) url: String,
    pub(super) store: Arc<LiveStore>,
    /// The witness archive objects and records are read from.
    pub(super) archive: Option<Arc<Archive>>,
    pub(super) max_retry_delay: Duration,
}

/// How long the worker sleeps when nothing is queued (it is woken sooner
/// when something is).
const IDLE: Duration = Duration::from_secs(60);

/// Why an upload did not happen.
enum Failure {
    /// Try again later; `unavailable`: the bucket could not be reached.
    Retry { why: String, unavailable: bool },
    /// It can never be done (the path or object is gone).
    Never(String),
}

/// What the worker writes to, opened when first needed.
struct Targets {
    cache: Option<BinaryCacheStore>,
    cas: Option<S3Cas>,
    /// Paths known to be in the binary cache.
    cached: HashSet<StorePath>,
}

pub(super) fn run(u: &Shared) {
    let mut targets = Targets { cache: None, cas: None, cached: HashSet::new() };
    loop {
        let due = {
            let queue = u.queue.lock().unwrap_or_else(PoisonError::into_inner);
            match queue.due(now_ms(), 64) {
                Ok(due) if !due.is_empty() => due,
                Ok(_) => {
                    let wait = match queue.next_due() {
                        Ok(Some(at)) => {
                            Duration::from_millis((at - now_ms()).clamp(10, IDLE.as_millis() as i64) as u64)
                        }
                        _ => IDLE,
                    };
                    drop(u.added.wait_timeout(queue, wait).unwrap_or_else(PoisonError::into_inner));
                    continue;
                }
                Err(e) => {
                    tracing::error!("{e}");
                    drop(u.added.wait_timeout(queue, IDLE).unwrap_or_else(PoisonError::into_inner));
                    continue;
                }
            }
        };
        for job in due {
            let result = upload(u, &mut targets, &job.item);
            let queue = u.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let recorded = match &result {
                Ok(()) => {
                    tracing::info!("uploaded {} to {}", job.item, u.url);
                    queue.done(job.id)
                }
                Err(Failure::Never(why)) => {
                    tracing::error!("cannot upload {}: {why}; given up", job.item);
                    queue.fail(job.id, why)
                }
                Err(Failure::Retry { why, .. }) => {
                    let wait = backoff(job.attempts + 1, u.max_retry_delay);
                    tracing::warn!("cannot upload {} yet: {why}; trying again in {wait:?}", job.item);
                    queue.retry(job.id, why, now_ms() + wait.as_millis() as i64)
                }
            };
            if let Err(e) = recorded {
                tracing::error!("{e}");
            }
            drop(queue);
            if let (Item::Path(full), Ok(()) | Err(Failure::Never(_))) = (&job.item, &result) {
                u.roots.remove(full);
            }
            if let Err(Failure::Retry { unavailable: true, .. }) = result {
                // The others would fail alike: wait for this one's next try.
                pause(u, &job);
                break;
            }
        }
    }
}

/// Waits out `job`'s backoff (its next try is due then).
fn pause(u: &Shared, job: &Job) {
    std::thread::sleep(backoff(job.attempts + 1, u.max_retry_delay));
}

fn upload(u: &Shared, t: &mut Targets, item: &Item) -> Result<(), Failure> {
    match item {
        Item::Path(full) => upload_closure(u, t, full),
        Item::Object(id) => {
            let Some(archive) = &u.archive else { return Err(Failure::Never("the witness is off".into())) };
            let cas = t.cas(u)?;
            if cas.has(id).map_err(cas_failure)? {
                return Ok(());
            }
            let mut reader = archive
                .cas()
                .get(id)
                .map_err(cas_failure)?
                .ok_or_else(|| Failure::Never(format!("object {id} is no longer in the witness archive")))?;
            cas.put_expected(&mut reader, id).map(drop).map_err(cas_failure)
        }
        Item::Trace(id) => {
            let Some(archive) = &u.archive else { return Err(Failure::Never("the witness is off".into())) };
            let path = archive.trace_path(id);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Failure::Never(format!("record {id} is no longer in the witness archive")));
                }
                Err(e) => {
                    return Err(Failure::Retry {
                        why: format!("reading '{}': {e}", path.display()),
                        unavailable: false,
                    });
                }
            };
            let bucket = t.cas(u)?.bucket();
            bucket.put_bytes(&format!("traces/{id}.cbor"), bytes, "application/cbor").map_err(s3_failure)
        }
    }
}

/// Uploads the closure of `full`, references first, skipping what the
/// cache has: a narinfo never names a reference the cache lacks.
fn upload_closure(u: &Shared, t: &mut Targets, full: &str) -> Result<(), Failure> {
    let store =
        u.store.session().map_err(|e| Failure::Retry { why: format!("opening the store: {e}"), unavailable: false })?;
    let path = store.store_dir().parse_path(full).map_err(|e| Failure::Never(e.to_string()))?;
    let local = |e: local_store::Error| Failure::Retry { why: e.to_string(), unavailable: false };
    if store.query_path_info(&path).map_err(local)?.is_none() {
        return Err(Failure::Never(format!("'{full}' is no longer valid in the store")));
    }
    let closure = store.closure([path]).map_err(local)?;
    for info in references_first(&store, closure).map_err(local)? {
        if t.cached.contains(&info.path) {
            continue;
        }
        let cache = t.cache(u, &store)?;
        if !cache.is_valid(&info.path).map_err(store_failure)? {
            let real = store.real_path(&info.path);
            let (reader, writer) = std::io::pipe()
                .map_err(|e| Failure::Retry { why: format!("creating a pipe: {e}"), unavailable: false })?;
            let dumper = std::thread::spawn(move || {
                let mut writer = writer;
                local_store::nar_fs::dump(&real, &mut writer)
            });
            let added = cache.add_to_store(&info, &mut BufReader::with_capacity(256 * 1024, reader));
            let dumped = dumper.join().expect("the NAR dumper panicked");
            added.map_err(store_failure)?;
            if let Err(e) = dumped {
                return Err(Failure::Retry {
                    why: format!("dumping '{}': {e}", store.display(&info.path)),
                    unavailable: false,
                });
            }
        }
        t.cached.insert(info.path);
    }
    Ok(())
}

/// The closure's path infos, each after those it references.
fn references_first(store: &LocalStore, closure: BTreeSet<StorePath>) -> Result<Vec<PathInfo>, local_store::Error> {
    let mut infos = std::collections::BTreeMap::new();
    for path in &closure {
        if let Some(info) = store.query_path_info(path)? {
            infos.insert(path.clone(), info);
        }
    }
    let mut order = Vec::with_capacity(infos.len());
    let mut seen = HashSet::new();
    for start in infos.keys() {
        // Depth first, emitting a path once all it references are out.
        let mut stack = vec![(start.clone(), false)];
        while let Some((path, expanded)) = stack.pop() {
            if expanded {
                order.push(infos[&path].clone());
                continue;
            }
            if !seen.insert(path.clone()) {
                continue;
            }
            stack.push((path.clone(), true));
            for r in infos[&path].references_without_self() {
                if infos.contains_key(r) && !seen.contains(r) {
                    stack.push((r.clone(), false));
                }
            }
        }
    }
    Ok(order)
}

impl Targets {
    fn cache(&mut self, u: &Shared, store: &LocalStore) -> Result<&BinaryCacheStore, Failure> {
        if self.cache.is_none() {
            self.cache = Some(BinaryCacheStore::open(&u.url, store.store_dir().clone()).map_err(cache_failure)?);
        }
        Ok(self.cache.as_ref().expect("opened"))
    }

    fn cas(&mut self, u: &Shared) -> Result<&S3Cas, Failure> {
        if self.cas.is_none() {
            self.cas = Some(S3Cas::new(s3::Bucket::from_url(&u.url).map_err(s3_failure)?));
        }
        Ok(self.cas.as_ref().expect("opened"))
    }
}

fn s3_failure(e: s3::Error) -> Failure {
    Failure::Retry { unavailable: e.is_unavailable(), why: e.to_string() }
}

fn cache_failure(e: binary_cache::Error) -> Failure {
    match e {
        binary_cache::Error::S3(e) => s3_failure(e),
        e => Failure::Retry { why: e.to_string(), unavailable: false },
    }
}

fn store_failure(e: store::backend::Error) -> Failure {
    if let store::backend::Error::Backend(inner) = &e
        && let Some(cache) = inner.downcast_ref::<binary_cache::Error>()
    {
        return cache_failure(cache.clone());
    }
    Failure::Retry { why: e.to_string(), unavailable: false }
}

fn cas_failure(e: witness_proxy::cas::CasError) -> Failure {
    match e {
        witness_proxy::cas::CasError::S3(e) => s3_failure(e),
        witness_proxy::cas::CasError::Tampered { .. } => Failure::Never(e.to_string()),
        e => Failure::Retry { why: e.to_string(), unavailable: false },
    }
}
