//! The local store: a store directory, a state directory (SQLite database,
//! locks, GC roots, temp roots) and a log directory, laid out and locked
//! exactly as CppNix 2.8 and 2.26 do (the team notes local-store.md), so
//! armitage and CppNix processes can use the same store at the same time.
//!
//! The file system side of NARs (dumping a tree, unpacking one, hashing and
//! scanning a path) is [`nar_fs`]; the formats themselves are the `store`
//! crate's.
//!
//! Contract: a path is valid iff it has a `ValidPaths` row; its files are
//! complete and canonical before that row is committed, and a row is deleted
//! before any of its files are. Every write is one SQLite transaction.

mod add;
mod backend;
mod build_log;
mod built;
mod canonicalise;
mod db;
mod derivations;
mod error;
mod export;
pub mod fault;
mod fs_util;
pub mod gc;
mod live;
pub mod lock;
pub mod nar_fs;
mod optimise;
mod realisations;
mod schema;
mod temp_roots;
pub mod users;
mod verify;

pub use add::AddOptions;
pub use canonicalise::DEFAULT_IGNORED_XATTRS;
pub use error::{Error, Result};
pub use fs_util::delete_path;
pub use gc::{GcAction, GcOptions, GcResults, Roots};
pub use live::LiveStore;
pub use optimise::{OptimiseEvent, OptimiseStats};
pub use verify::{VerifyLine, VerifyReport};

use db::{Db, DbOptions};
use error::IoContext;
use lock::{LockFile, LockKind};
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use store::path_info::PathInfo;
use store::store_path::{StoreDir, StorePath};
use temp_roots::TempRoots;

/// Where the store lives and the CppNix settings that shape it.
#[derive(Debug, Clone)]
pub struct LocalStoreConfig {
    pub store_dir: StoreDir,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    /// `fsync-metadata` (default true).
    pub fsync_metadata: bool,
    /// `fsync-store-paths` (default false): fsync each new path before registering it.
    pub fsync_store_paths: bool,
    /// `use-sqlite-wal` (default true).
    pub use_sqlite_wal: bool,
    /// Whether the `ca-derivations` experimental feature is on (adds the CA tables).
    pub ca_derivations: bool,
    /// `gc-reserved-space` (default 8 MiB).
    pub gc_reserved_space: u64,
    /// `build-users-group`; when running as root and the group exists, the
    /// store dir is made `root:<group>` 01775.
    pub build_users_group: Option<String>,
    pub keep_outputs: bool,
    pub keep_derivations: bool,
    pub auto_optimise_store: bool,
    pub allow_symlinked_store: bool,
    /// `ignored-acls`.
    pub ignored_xattrs: Vec<String>,
    /// Limits applied to every NAR the store unpacks.
    pub nar_limits: store::nar::Limits,
}

impl LocalStoreConfig {
    /// CppNix's defaults for a store in the given directories.
    pub fn new(store_dir: StoreDir, state_dir: impl Into<PathBuf>, log_dir: impl Into<PathBuf>) -> Self {
        let root = rustix::process::geteuid().is_root();
        LocalStoreConfig {
            store_dir,
            state_dir: state_dir.into(),
            log_dir: log_dir.into(),
            fsync_metadata: true,
            fsync_store_paths: false,
            use_sqlite_wal: true,
            ca_derivations: false,
            gc_reserved_space: 8 * 1024 * 1024,
            build_users_group: root.then(|| "nixbld".to_owned()),
            keep_outputs: false,
            keep_derivations: true,
            auto_optimise_store: false,
            allow_symlinked_store: false,
            ignored_xattrs: DEFAULT_IGNORED_XATTRS.iter().map(|s| s.to_string()).collect(),
            nar_limits: store::nar::Limits::default(),
        }
    }
}

impl LocalStoreConfig {
    /// The store settings from a loaded nix.conf.
    pub fn from_settings(
        store_dir: StoreDir,
        state_dir: impl Into<PathBuf>,
        log_dir: impl Into<PathBuf>,
        settings: &store::nix_conf::Settings,
    ) -> Self {
        let mut c = Self::new(store_dir, state_dir, log_dir);
        c.fsync_metadata = settings.fsync_metadata;
        c.fsync_store_paths = settings.fsync_store_paths;
        c.use_sqlite_wal = settings.use_sqlite_wal;
        c.ca_derivations = settings.is_enabled(store::nix_conf::ExperimentalFeature::CaDerivations);
        c.gc_reserved_space = settings.gc_reserved_space;
        c.build_users_group = Some(settings.build_users_group.clone()).filter(|g| !g.is_empty());
        c.keep_outputs = settings.keep_outputs;
        c.keep_derivations = settings.keep_derivations;
        c.auto_optimise_store = settings.auto_optimise_store;
        c.allow_symlinked_store = settings.allow_symlinked_store;
        c.ignored_xattrs = settings.ignored_acls.iter().cloned().collect();
        c
    }
}

/// An open local store. Holds the big-lock shared for its lifetime.
///
/// A handle owns the temp roots it takes: they last until it is dropped.
/// [`LocalStore::session`] makes another handle on the same store with roots
/// of its own (a daemon makes one per client connection, as CppNix's
/// per-connection processes each have their own roots).
pub struct LocalStore {
    shared: Arc<Shared>,
    roots: Mutex<BTreeSet<String>>,
    /// With [`LocalStore::reuse_staging`]: the staging directory this
    /// handle's adds unpack into, until [`LocalStore::release_staging`].
    staging: Option<Mutex<Option<Arc<fs_util::StoreTempDir>>>>,
}

struct Shared {
    config: LocalStoreConfig,
    /// The connection that writes. SQLite serialises writers anyway; keeping
    /// ours behind one lock keeps transactions short and ordered.
    writer: Mutex<Db>,
    /// Idle read connections: WAL lets them read while the writer writes.
    readers: Mutex<Vec<Db>>,
    _big_lock: LockFile,
    temp_roots: Arc<TempRoots>,
    /// Hashes modulo of `.drv`s checked on registration, so that checking a
    /// new derivation does not re-read its whole input closure (CppNix's
    /// `drvHashes`). Bounded by [`DRV_HASH_CACHE`].
    drv_hashes: Mutex<std::collections::HashMap<StorePath, store::derivation::DrvHash>>,
    /// `db/db.sqlite` as it was when opened, to notice it being replaced
    /// or removed on disk ([`LocalStore::database_replaced`]). (SQLite
    /// itself notices too: a connection to a moved database closes without
    /// checkpointing or deleting the WAL files, whose names are the new
    /// database's.)
    db_file: std::fs::File,
}

/// Entries kept in [`Shared::drv_hashes`] before it is emptied.
const DRV_HASH_CACHE: usize = 100_000;

/// Idle read connections kept for reuse.
const IDLE_READERS: usize = 8;

/// A read connection borrowed from the pool; returned when dropped.
struct Reader<'a> {
    db: Option<Db>,
    pool: &'a Mutex<Vec<Db>>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db.as_ref().expect("present until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < IDLE_READERS {
                pool.push(db);
            }
        }
    }
}

impl LocalStore {
    /// Opens the store, creating what is missing, as CppNix's `LocalStore`
    /// constructor does.
    pub fn open(config: LocalStoreConfig) -> Result<LocalStore> {
        let store = config.store_dir.as_path();
        let state = config.state_dir.as_path();
        let db_dir = state.join("db");
        mkdirs(store)?;
        mkdirs(&store.join(".links"))?;
        let profiles = state.join("profiles");
        mkdirs(&profiles)?;
        mkdirs(&state.join("temproots"))?;
        mkdirs(&db_dir)?;
        let gcroots = state.join("gcroots");
        if !gcroots.exists() {
            mkdirs(&gcroots)?;
            // Another process opening the fresh store may have made it first.
            match std::os::unix::fs::symlink(&profiles, gcroots.join("profiles")) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(e).at("creating symlink", gcroots.join("profiles"));
                }
                _ => {}
            }
        }
        for per_user in [profiles.join("per-user"), gcroots.join("per-user")] {
            mkdirs(&per_user)?;
            let mode = std::fs::metadata(&per_user).at("getting attributes of", &per_user)?.mode() & 0o777;
            if mode != 0o755 {
                std::fs::set_permissions(&per_user, std::fs::Permissions::from_mode(0o755))
                    .at("changing mode of", &per_user)?;
            }
        }
        create_user_dirs(&profiles, &gcroots);
        set_store_dir_permissions(&config)?;
        if !config.allow_symlinked_store {
            check_not_symlinked(store)?;
        }
        reserve_space(&db_dir.join("reserved"), config.gc_reserved_space);

        let big_lock_path = db_dir.join("big-lock");
        let big_lock = LockFile::open(&big_lock_path, true).at("opening lock file", &big_lock_path)?;
        if !big_lock.try_lock(LockKind::Shared).at("locking", &big_lock_path)? {
            tracing::info!("waiting for the big Nix store lock...");
            big_lock.lock(LockKind::Shared).at("locking", &big_lock_path)?;
        }

        let db = open_db(&config, &db_dir, &big_lock)?;
        if config.ca_derivations {
            ensure_ca_schema(&db, &db_dir)?;
        }
        let db_path = db_dir.join("db.sqlite");
        let db_file = std::fs::File::open(&db_path).at("opening", &db_path)?;
        Ok(LocalStore {
            shared: Arc::new(Shared {
                temp_roots: TempRoots::for_state_dir(state),
                config,
                writer: Mutex::new(db),
                readers: Mutex::new(Vec::new()),
                _big_lock: big_lock,
                drv_hashes: Mutex::new(std::collections::HashMap::new()),
                db_file,
            }),
            roots: Mutex::new(BTreeSet::new()),
            staging: None,
        })
    }

    /// Another handle on this store, with temp roots of its own.
    pub fn session(&self) -> LocalStore {
        LocalStore { shared: self.shared.clone(), roots: Mutex::new(BTreeSet::new()), staging: None }
    }

    /// Lets this handle's adds share one staging directory until
    /// [`Self::release_staging`] (or the handle's end), instead of making and
    /// removing one per add: on a client sending path after path, the
    /// directory's creation and removal cost more than the path.
    pub fn reuse_staging(mut self) -> LocalStore {
        self.staging = Some(Mutex::new(None));
        self
    }

    /// Whether this handle holds a staging directory for reuse.
    pub fn holds_staging(&self) -> bool {
        self.staging.as_ref().is_some_and(|s| s.lock().unwrap_or_else(|e| e.into_inner()).is_some())
    }

    /// Gives up the reused staging directory; it is removed once no add is
    /// using it.
    pub fn release_staging(&self) {
        if let Some(s) = &self.staging {
            s.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// A place to unpack one new path into.
    fn staging_entry(&self) -> Result<fs_util::Staged> {
        let store_dir = self.shared.config.store_dir.as_path();
        let Some(slot) = &self.staging else {
            return Ok(fs_util::Staged::new(Arc::new(fs_util::StoreTempDir::new(store_dir)?)));
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        // A collector that does not honour the lock (CppNix 2.8's) may have
        // removed it: make another.
        if let Some(dir) = slot.as_ref().filter(|d| d.path().is_dir()) {
            return Ok(fs_util::Staged::new(dir.clone()));
        }
        let dir = Arc::new(fs_util::StoreTempDir::new(store_dir)?);
        *slot = Some(dir.clone());
        Ok(fs_util::Staged::new(dir))
    }

    /// Whether `db/db.sqlite` on disk is no longer the database this handle
    /// opened: removed, or replaced by another file (the state dir wiped and
    /// made again, a backup restored). Two `stat`s. CppNix opens the store
    /// in each connection's process, so each client sees the store as it is
    /// on disk when it connects; [`LiveStore`] gives a daemon the same.
    pub fn database_replaced(&self) -> bool {
        !lock::still_at(&self.shared.db_file, &self.shared.config.state_dir.join("db/db.sqlite"))
    }

    pub fn config(&self) -> &LocalStoreConfig {
        &self.shared.config
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.shared.config.store_dir
    }

    /// The writing connection.
    fn db(&self) -> MutexGuard<'_, Db> {
        self.shared.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reading connection, from the pool or newly opened.
    fn reader(&self) -> Result<Reader<'_>> {
        let pooled = self.shared.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let db = match pooled {
            Some(db) => db,
            None => {
                let c = &self.shared.config;
                let path = c.state_dir.join("db/db.sqlite");
                // Opened by name: once the file there is another database,
                // a handle on this one must not read from it. Checked before
                // and after, so that the file was ours all along.
                let replaced = || self.database_replaced().then(|| Error::DatabaseReplaced(path.clone()));
                if let Some(e) = replaced() {
                    return Err(e);
                }
                let opts = DbOptions { fsync_metadata: c.fsync_metadata, use_wal: c.use_sqlite_wal };
                let db = Db::open(&path, c.store_dir.clone(), false, &opts)?;
                if let Some(e) = replaced() {
                    return Err(e);
                }
                // A small page cache: a reader's cache is dropped whenever anyone
                // writes (WAL), and the pool keeps several readers, each of
                // which would otherwise grow to SQLite's 2 MiB default.
                db.conn().execute_batch("pragma cache_size = -512;")?;
                db
            }
        };
        Ok(Reader { db: Some(db), pool: &self.shared.readers })
    }

    /// The file system location of a store path.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.shared.config.store_dir.to_path(path)
    }

    /// Parses a full path in this store.
    pub fn parse_path(&self, full: &str) -> Result<StorePath> {
        Ok(self.shared.config.store_dir.parse_path(full)?)
    }

    pub fn display(&self, path: &StorePath) -> String {
        self.shared.config.store_dir.display(path)
    }

    pub fn is_valid(&self, path: &StorePath) -> Result<bool> {
        self.reader()?.is_valid(path)
    }

    pub fn query_path_info(&self, path: &StorePath) -> Result<Option<PathInfo>> {
        self.reader()?.query_path_info(path)
    }

    /// Like [`Self::query_path_info`], but a missing path is an error
    /// (CppNix's "path '…' is not valid").
    pub fn path_info(&self, path: &StorePath) -> Result<PathInfo> {
        self.query_path_info(path)?.ok_or_else(|| Error::InvalidPath(self.display(path)))
    }

    pub fn query_referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>> {
        self.reader()?.query_referrers(path)
    }

    pub fn query_valid_derivers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>> {
        self.reader()?.query_valid_derivers(path)
    }

    pub fn query_derivation_outputs(&self, drv: &StorePath) -> Result<Vec<(String, StorePath)>> {
        self.reader()?.query_derivation_outputs(drv)
    }

    /// The valid path with this hash part, if any. The hash part must be
    /// 32 characters long (CppNix `queryPathFromHashPart`).
    pub fn query_path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>> {
        if hash_part.len() != 32 {
            return Err(Error::InvalidHashPart);
        }
        self.reader()?.query_path_from_hash_part(hash_part)
    }

    pub fn query_all_valid_paths(&self) -> Result<BTreeSet<StorePath>> {
        self.reader()?.query_all_valid_paths()
    }

    /// The closure of `paths` under references (each path included).
    pub fn closure(&self, paths: impl IntoIterator<Item = StorePath>) -> Result<BTreeSet<StorePath>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<StorePath> = paths.into_iter().collect();
        while let Some(p) = todo.pop() {
            if seen.contains(&p) {
                continue;
            }
            let info = self.path_info(&p)?;
            todo.extend(info.references.into_iter().filter(|r| !seen.contains(r)));
            seen.insert(p);
        }
        Ok(seen)
    }

    /// Protects a path from garbage collection for the life of this handle.
    pub fn add_temp_root(&self, path: &StorePath) -> Result<()> {
        let full = self.display(path);
        let mut roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        if roots.contains(&full) {
            return Ok(());
        }
        self.shared.temp_roots.add(&full)?;
        roots.insert(full);
        Ok(())
    }

    pub fn add_signatures(&self, path: &StorePath, sigs: &BTreeSet<String>) -> Result<()> {
        self.db().add_signatures(path, sigs)
    }

    /// Registers paths whose files are already in place and canonical. As
    /// CppNix's `addValidPath`/`registerValidPaths`: a path claiming a
    /// content address must be the path that address gives, and a `.drv`
    /// must pass `checkInvariants` (checked while its outputs are read).
    pub fn register_valid_paths(&self, infos: &[PathInfo]) -> Result<()> {
        for info in infos {
            self.check_content_addressed(info)?;
        }
        self.db().register_valid_paths(infos, &|drv| self.derivation_output_rows(drv))
    }

    /// CppNix `ValidPathInfo::isContentAddressed`, as `addValidPath` uses it.
    fn check_content_addressed(&self, info: &PathInfo) -> Result<()> {
        Ok(store::backend::trust::require_true_ca(self.store_dir(), info)?)
    }

    /// `pragma integrity_check` problems (empty when the database is sound).
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.reader()?.integrity_check()
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        let roots = std::mem::take(&mut *self.roots.lock().unwrap_or_else(|e| e.into_inner()));
        self.shared.temp_roots.release(roots.iter().map(String::as_str));
    }
}

fn mkdirs(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).at("creating directory", path)
}

/// `profiles/per-user/<user>` and `gcroots/per-user/<user>` for whoever
/// opens the store (CppNix 2.8's `LocalStore::createUser`, run by its
/// constructor): 0755, owned by the user. Nix 2.8's nix-channel puts the
/// channels profile there without creating the folder. Best effort: a user
/// who may not create them still opens the store.
fn create_user_dirs(profiles: &Path, gcroots: &Path) {
    let uid = rustix::process::geteuid().as_raw();
    let Some(name) =
        users::user_name(uid).or_else(|| std::env::var("USER").ok()).filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return;
    };
    let gid = rustix::process::getegid().as_raw();
    for dir in [profiles.join("per-user").join(&name), gcroots.join("per-user").join(&name)] {
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)))
            .and_then(|()| std::os::unix::fs::chown(&dir, Some(uid), Some(gid)));
        if let Err(e) = made {
            tracing::debug!("cannot create '{}': {e}", dir.display());
        }
    }
}

/// Root with an existing build users group: the store dir is
/// `root:<group>` with mode 01775, as CppNix sets it.
fn set_store_dir_permissions(config: &LocalStoreConfig) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let Some(group) = config.build_users_group.as_deref().filter(|g| !g.is_empty()) else { return Ok(()) };
    let Some(gid) = users::group_gid(group) else {
        tracing::warn!("the group '{group}' specified in 'build-users-group' does not exist");
        return Ok(());
    };
    let dir = config.store_dir.as_path();
    let meta = std::fs::metadata(dir).at("getting attributes of", dir)?;
    if meta.uid() != 0 || meta.gid() != gid || meta.mode() & 0o7777 != 0o1775 {
        std::os::unix::fs::chown(dir, Some(0), Some(gid)).at("changing ownership of", dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1775)).at("changing permissions on", dir)?;
    }
    Ok(())
}

fn check_not_symlinked(store: &Path) -> Result<()> {
    let mut p = Some(store);
    while let Some(path) = p.filter(|p| *p != Path::new("/")) {
        let meta = std::fs::symlink_metadata(path).at("getting attributes of", path)?;
        if meta.file_type().is_symlink() {
            return Err(Error::SymlinkedStore(path.to_owned()));
        }
        p = path.parent();
    }
    Ok(())
}

/// Keeps `size` bytes reserved so a full disk can still be garbage
/// collected (the collector deletes this file first). Errors are ignored, as
/// in CppNix.
fn reserve_space(path: &Path, size: u64) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return;
    }
    let Ok(file) = std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode_0600().open(path) else {
        return;
    };
    if rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size).is_err() {
        let _ = file.set_len(size);
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn read_number(path: &Path) -> Result<Option<u32>> {
    match std::fs::read_to_string(path) {
        // CppNix writes these files in place: empty means another process
        // is creating the store right now, as if the file were not there yet.
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::Corrupt { path: path.to_owned(), why: format!("expected a number, found {s:?}") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at("reading", path),
    }
}

/// Opens the database, creating or upgrading it like CppNix (schema file
/// `db/schema` holds `10`; 6–9 are migrated under the exclusive big-lock).
fn open_db(config: &LocalStoreConfig, db_dir: &Path, big_lock: &LockFile) -> Result<Db> {
    let schema_path = db_dir.join("schema");
    let db_path = db_dir.join("db.sqlite");
    let opts = DbOptions { fsync_metadata: config.fsync_metadata, use_wal: config.use_sqlite_wal };
    let store_dir = config.store_dir.clone();
    match read_number(&schema_path)?.unwrap_or(0) {
        v if v > schema::SCHEMA_VERSION => Err(Error::SchemaTooNew { found: v, supported: schema::SCHEMA_VERSION }),
        0 => {
            let db = Db::open(&db_path, store_dir, true, &opts)?;
            write_number(&schema_path, schema::SCHEMA_VERSION)?;
            Ok(db)
        }
        v if v == schema::SCHEMA_VERSION => Db::open(&db_path, store_dir, false, &opts),
        v if v < 6 => Err(Error::SchemaTooOld(v)),
        _ => {
            if !big_lock.try_lock(LockKind::Exclusive).at("locking", big_lock.path())? {
                tracing::info!("waiting for exclusive access to the Nix store...");
                big_lock.unlock().at("unlocking", big_lock.path())?;
                big_lock.lock(LockKind::Exclusive).at("locking", big_lock.path())?;
            }
            // Someone else may have upgraded while we waited.
            let current = read_number(&schema_path)?.unwrap_or(0);
            let db = Db::open(&db_path, store_dir, false, &opts)?;
            db.migrate_legacy(current)?;
            write_number(&schema_path, schema::SCHEMA_VERSION)?;
            big_lock.lock(LockKind::Shared).at("locking", big_lock.path())?;
            Ok(db)
        }
    }
}

fn ensure_ca_schema(db: &Db, db_dir: &Path) -> Result<()> {
    let ca_schema = db_dir.join("ca-schema");
    match read_number(&ca_schema)? {
        Some(v) if v > schema::CA_SCHEMA_VERSION => {
            return Err(Error::SchemaTooNew { found: v, supported: schema::CA_SCHEMA_VERSION });
        }
        Some(v) if v != 0 && v < schema::CA_SCHEMA_VERSION => {
            return Err(Error::Corrupt {
                path: ca_schema,
                why: format!(
                    "content-addressed schema version {v} predates Nix 2.4; open the store once with CppNix 2.4 to 2.25 to migrate it"
                ),
            });
        }
        _ => {}
    }
    db.ensure_ca_schema()?;
    write_number(&ca_schema, schema::CA_SCHEMA_VERSION)
}

fn write_number(path: &Path, n: u32) -> Result<()> {
    // A temporary name of our own: several processes (or threads) may
    // create a fresh store at once, and a shared one could be renamed away
    // under another writer.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n_tmp = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n_tmp}", std::process::id()));
    std::fs::write(&tmp, n.to_string()).at("writing", &tmp)?;
    std::fs::rename(&tmp, path).at("renaming into", path)
}
