//! `min-free`/`max-free` (CppNix `LocalStore::autoGC`): before a build,
//! when the store's file system has less than `min-free` bytes available,
//! collect garbage until `max-free` are; checked at most every
//! `min-free-check-interval` seconds, one collection at a time.

use local_store::{GcAction, GcOptions, LocalStore};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use store::nix_conf::Settings;

#[derive(Default)]
pub(super) struct AutoGc {
    last_check: Mutex<Option<Instant>>,
}

impl AutoGc {
    pub(super) fn maybe_collect(&self, store: &LocalStore, settings: &Settings) {
        if settings.min_free == 0 {
            return;
        }
        // Holding the lock for the collection keeps other builds from
        // starting one of their own meanwhile.
        let mut last = self.last_check.lock().unwrap_or_else(|e| e.into_inner());
        let interval = Duration::from_secs(settings.min_free_check_interval);
        if last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        *last = Some(Instant::now());
        let real = store.store_dir().as_str().to_owned();
        let avail = match rustix::fs::statvfs(real.as_str()) {
            Ok(st) => st.f_bavail.saturating_mul(st.f_frsize),
            Err(e) => {
                tracing::warn!("cannot get the free space of '{real}': {e}");
                return;
            }
        };
        if avail >= settings.min_free {
            return;
        }
        let to_free = settings.max_free.saturating_sub(avail);
        tracing::info!(
            "running auto-GC to free {to_free} bytes ({avail} bytes available, min-free is {})",
            settings.min_free
        );
        let mut opts = GcOptions::new(GcAction::DeleteDead);
        opts.max_freed = to_free;
        match store.collect_garbage(&opts, &mut |_| {}) {
            Ok(r) => tracing::info!("auto-GC freed {} bytes", r.bytes_freed),
            Err(e) => tracing::warn!("auto-GC failed: {e}"),
        }
    }
}
