//! Phases of adding a path, announced for crash testing.
//!
//! Every add passes through [`Phase`]s in order. Each is logged at debug
//! level. For fault-injection tests, `ARMITAGE_FAULT_PAUSE=<phase>:<ms>`
//! makes the process print `armitage: fault-point <phase>` on stderr when it
//! enters that phase and then sleep `<ms>` milliseconds, so a test can kill it
//! at a known point (with `:0` it only announces). Without the variable this
//! costs one check of a cached value.

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

fn pause_config() -> &'static Option<(String, u64)> {
    static CONFIG: OnceLock<Option<(String, u64)>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let v = std::env::var("ARMITAGE_FAULT_PAUSE").ok()?;
        let (name, ms) = v.split_once(':')?;
        Some((name.to_owned(), ms.parse().ok()?))
    })
}

/// Marks entry into `phase`.
pub fn phase(phase: Phase) {
    tracing::debug!(phase = phase.name(), "entering phase");
    if let Some((name, ms)) = pause_config() {
        if name == phase.name() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "armitage: fault-point {name}");
            let _ = err.flush();
            drop(err);
            std::thread::sleep(Duration::from_millis(*ms));
        }
    }
}
