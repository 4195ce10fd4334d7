//! The store as it is on disk now, for a long-running process that hands
//! out a handle per client.
//!
//! CppNix's daemon opens the store in each connection's process (its
//! `LocalStore` constructor in src/libstore/local-store.cc), so every client
//! sees the store as it is on disk when it connects: admins and test suites
//! wipe a state dir and run `nix-store --init`, restore `db.sqlite` from a
//! backup, or let tmpfiles clean `temproots/`, all under a running daemon.
//! [`LiveStore::session`] gives the same guarantee in one process: before
//! each new handle it checks (a few `stat`s) whether the database file was
//! replaced or removed, and if so opens the store again (creating what is
//! missing, as CppNix would), and it makes this process's temp-roots file
//! again, with every root still held, if it was removed. Handles made
//! earlier keep the store they were made on until they are dropped, as a
//! CppNix connection keeps the database its process opened.

use super::{LocalStore, LocalStoreConfig, Result};
use std::sync::{Arc, Mutex};
use store::store_path::StoreDir;

pub struct LiveStore {
    /// What the store is opened (again) with; it never changes.
    config: LocalStoreConfig,
    current: Mutex<Arc<LocalStore>>,
}

impl LiveStore {
    pub fn new(store: LocalStore) -> LiveStore {
        LiveStore { config: store.config().clone(), current: Mutex::new(Arc::new(store)) }
    }

    /// A handle with temp roots of its own on the store as it is on disk
    /// now (see the module documentation).
    pub fn session(&self) -> Result<LocalStore> {
        Ok(self.current()?.session())
    }

    /// The store as it is on disk now, opened again if its database was
    /// replaced or removed since it was last opened.
    pub fn current(&self) -> Result<Arc<LocalStore>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.database_replaced() {
            tracing::info!(
                "the store database in '{}' was replaced or removed: opening the store again",
                self.config.state_dir.display()
            );
            *current = Arc::new(LocalStore::open(self.config.clone())?);
        }
        current.shared.temp_roots.revalidate()?;
        Ok(current.clone())
    }

    pub fn config(&self) -> &LocalStoreConfig {
        &self.config
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.config.store_dir
    }
}
