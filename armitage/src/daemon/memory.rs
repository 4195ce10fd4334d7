//! Giving freed heap back to the system. The daemon is one long-lived
//! process (CppNix forks a short-lived one per connection, whose memory goes
//! back when it exits): glibc's malloc keeps what a burst of work freed in
//! its arenas, one per thread that allocated, so after a big build or a
//! thousand connections the daemon would sit on tens of MiB it no longer
//! uses. Two measures: fewer arenas, and a `malloc_trim` once the daemon
//! has had no connection for a moment.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How long the daemon must be without connections before it trims.
const IDLE_BEFORE_TRIM: Duration = Duration::from_secs(1);
/// Arenas malloc may use unless `MALLOC_ARENA_MAX` says otherwise (glibc's
/// default is 8 per core, each holding on to its own free memory).
const ARENA_MAX: libc::c_int = 4;

static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Bumped by every connection that opens, so that a trim scheduled when the
/// count reached zero knows whether the daemon stayed idle since.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Limits malloc's arenas; call once at start, before threads are made.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
    }
}

/// Marks a connection open until the guard drops; when the last one closes
/// and none opens for [`IDLE_BEFORE_TRIM`], free heap is returned.
pub struct Open(());

// Making one is an event (it counts as an open connection), not a default.
#[allow(clippy::new_without_default)]
impl Open {
    pub fn new() -> Open {
        EPOCH.fetch_add(1, Ordering::SeqCst);
        OPEN.fetch_add(1, Ordering::SeqCst);
        Open(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if OPEN.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let epoch = EPOCH.load(Ordering::SeqCst);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            tokio::time::sleep(IDLE_BEFORE_TRIM).await;
            if OPEN.load(Ordering::SeqCst) == 0 && EPOCH.load(Ordering::SeqCst) == epoch {
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        });
    }
}

fn trim() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only releases free memory of malloc's arenas.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(released = released != 0, "idle: returned free heap to the system");
    }
}
