//! Phases of adding a path, announced for crash testing.
//!
//! Every add passes through [`Phase`]s in order. Each is logged at debug
//! level. For fault-injection tests, `ARMITAGE_FAULT_PAUSE` holds a
//! comma-separated list of `<phase>:<ms>`: on entering a listed phase the
//! process prints `armitage: fault-point <phase>` on stderr and then sleeps
//! `<ms>` milliseconds, so a test can tell where a kill landed and hold the
//! process in a phase that is otherwise instantaneous (`:0` only announces).
//! Without the variable this costs one check of a cached value.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Restoring the NAR into a temp dir inside the store.
    Unpacking,
    /// Fixing permissions, timestamps, ownership and xattrs.
    Canonicalising,
    /// Moving the temp copy to its final name.
    Renaming,
    /// Inside the registration transaction, before it commits.
    DbTransaction,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Unpacking => "unpacking",
            Phase::Canonicalising => "canonicalising",
            Phase::Renaming => "renaming",
            Phase::DbTransaction => "db-transaction",
        }
    }
}

fn pause_config() -> &'static [(String, u64)] {
    static CONFIG: OnceLock<Vec<(String, u64)>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let v = std::env::var("ARMITAGE_FAULT_PAUSE").unwrap_or_default();
        v.split(',')
            .filter_map(|item| {
                let (name, ms) = item.split_once(':')?;
                Some((name.trim().to_owned(), ms.trim().parse().ok()?))
            })
            .collect()
    })
}

/// Marks entry into `phase`.
pub fn phase(phase: Phase) {
    tracing::debug!(phase = phase.name(), "entering phase");
    if let Some((name, ms)) = pause_config().iter().find(|(name, _)| name == phase.name()) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "armitage: fault-point {name}");
        let _ = err.flush();
        drop(err);
        std::thread::sleep(Duration::from_millis(*ms));
    }
}
