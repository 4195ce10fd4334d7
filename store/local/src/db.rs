//! The SQLite database `$state/db/db.sqlite`, opened and written the way
//! CppNix does it (src/libstore/local-store.cc `openDB`, `registerValidPaths`;
//! the team notes local-store.md §2): the same PRAGMAs, WAL, a one-hour
//! busy timeout, and whole-transaction retries on SQLITE_BUSY; column values
//! with CppNix's NULL conventions (NULL narSize for 0, NULL ultimate for
//! false, NULL sigs when empty, base-16 `sha256:` NAR hashes, nix32 in `ca`).

use super::error::{Error, Result};
use super::schema;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::content_address::ContentAddress;
use store::hash::Hash;
use store::path_info::PathInfo;
use store::store_path::{StoreDir, StorePath};

/// How the database is opened (CppNix settings of the same names).
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `fsync-metadata`: `pragma synchronous = normal` (else `off`).
    pub fsync_metadata: bool,
    /// `use-sqlite-wal`: WAL journal (else `truncate`).
    pub use_wal: bool,
}

pub struct Db {
    conn: Connection,
    path: PathBuf,
    store_dir: StoreDir,
}

/// One output row for `DerivationOutputs`.
pub type DrvOutputRows = Vec<(String, StorePath)>;

impl Db {
    /// Opens (and with `create`, initialises) the database.
    pub fn open(path: &Path, store_dir: StoreDir, create: bool, opts: &DbOptions) -> Result<Db> {
        disable_memory_statistics();
        let db_err = |source| Error::Db { path: path.to_owned(), source };
        let mut flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags).map_err(db_err)?;
        conn.busy_timeout(Duration::from_secs(3600)).map_err(db_err)?;
        // Keep each cached statement's plan. Otherwise SQLite marks statements
        // whose plan looked at a bound value (`where path = ?` does) to be
        // re-prepared once their bindings are cleared, which rusqlite does
        // each time a cached statement goes back to the cache: every query
        // would be parsed and planned again (bench/daemon.sh).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(db_err)?;
        conn.execute_batch("pragma foreign_keys = 1;").map_err(db_err)?;
        let sync = if opts.fsync_metadata { "normal" } else { "off" };
        conn.execute_batch(&format!("pragma synchronous = {sync};")).map_err(db_err)?;
        let mode = if opts.use_wal { "wal" } else { "truncate" };
        let prev: String = conn.query_row("pragma main.journal_mode;", [], |r| r.get(0)).map_err(db_err)?;
        if prev != mode {
            // Switching needs the database to itself; SQLite reports a busy
            // database here without waiting (another process opening the
            // fresh store at the same time), so wait a little and retry.
            let mut attempts = 0;
            loop {
                match conn.query_row(&format!("pragma main.journal_mode = {mode};"), [], |r| r.get::<_, String>(0)) {
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::DatabaseBusy && attempts < 200 =>
                    {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    other => {
                        other.map_err(db_err)?;
                        break;
                    }
                }
            }
        }
        if opts.use_wal {
            conn.execute_batch("pragma wal_autocheckpoint = 40000;").map_err(db_err)?;
        }
        if create {
            conn.execute_batch(schema::BASE).map_err(db_err)?;
        }
        conn.execute_batch(schema::SCHEMA_MIGRATIONS).map_err(db_err)?;
        Ok(Db { conn, path: path.to_owned(), store_dir })
    }

    /// Creates the content-addressed derivation tables if needed and records
    /// them the way both CppNix generations look for them: the
    /// `SchemaMigrations` row (2.26) and, written by the caller, `ca-schema` (≤ 2.25).
    pub fn ensure_ca_schema(&self) -> Result<()> {
        let done: Option<String> = self
            .conn
            .query_row("select migration from SchemaMigrations where migration = ?", [schema::CA_MIGRATION], |r| {
                r.get(0)
            })
            .optional()?;
        if done.is_none() {
            self.with_txn(|tx| {
                tx.execute_batch(schema::CA)?;
                tx.execute("insert or ignore into SchemaMigrations values (?)", [schema::CA_MIGRATION])?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The raw connection, for modules with queries of their own.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// CppNix's legacy migrations from schema 6–9 to 10 (the caller holds
    /// the big-lock exclusively).
    pub fn migrate_legacy(&self, from: u32) -> Result<()> {
        if from < 8 {
            self.with_txn(|tx| {
                Ok(tx.execute_batch(
                    "alter table ValidPaths add column ultimate integer; alter table ValidPaths add column sigs text;",
                )?)
            })?;
        }
        if from < 9 {
            self.with_txn(|tx| Ok(tx.execute_batch("drop table if exists FailedPaths;")?))?;
        }
        if from < 10 {
            self.with_txn(|tx| Ok(tx.execute_batch("alter table ValidPaths add column ca text;")?))?;
        }
        Ok(())
    }

    /// Runs `f` in an immediate transaction, retrying the whole transaction
    /// after a short random sleep when SQLite reports the database busy
    /// (CppNix `retrySQLite`).
    pub fn with_txn<T>(&self, mut f: impl FnMut(&rusqlite::Transaction) -> Result<T>) -> Result<T> {
        retry_busy(|| {
            // `new_unchecked` only skips the `&mut` borrow: a `Db` is never used by two
            // threads at once (the store keeps it behind a mutex). Immediate, so that
            // a writer never has to upgrade a read snapshot (SQLITE_BUSY_SNAPSHOT).
            let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    fn full(&self, p: &StorePath) -> String {
        self.store_dir.display(p)
    }

    fn parse(&self, s: &str) -> Result<StorePath> {
        Ok(self.store_dir.parse_path(s)?)
    }

    pub fn is_valid(&self, path: &StorePath) -> Result<bool> {
        retry_busy(|| {
            let mut stmt = self.conn.prepare_cached("select 1 from ValidPaths where path = ? limit 1")?;
            Ok(stmt.exists([self.full(path)])?)
        })
    }

    fn path_id(tx: &Connection, full: &str) -> Result<Option<i64>> {
        let mut stmt = tx.prepare_cached("select id from ValidPaths where path = ?")?;
        Ok(stmt.query_row([full], |r| r.get(0)).optional()?)
    }

    pub fn query_path_info(&self, path: &StorePath) -> Result<Option<PathInfo>> {
        retry_busy(|| self.query_path_info_once(path))
    }

    fn query_path_info_once(&self, path: &StorePath) -> Result<Option<PathInfo>> {
        let full = self.full(path);
        // One statement, so one read transaction (each takes and releases a
        // WAL read lock, two `fcntl`s): the row and its references, the
        // latter joined by spaces (store paths have none).
        let mut stmt = self.conn.prepare_cached(
            "select hash, registrationTime, deriver, narSize, ultimate, sigs, ca, \
             (select group_concat(r.path, ' ') from Refs join ValidPaths r on Refs.reference = r.id \
              where Refs.referrer = v.id) \
             from ValidPaths v where v.path = ?",
        )?;
        let row = stmt
            .query_row([&full], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .optional()?;
        let Some((hash, time, deriver, nar_size, ultimate, sigs, ca, refs)) = row else {
            return Ok(None);
        };
        let corrupt = |why: String| Error::Corrupt { path: self.path.clone(), why };
        let nar_hash = Hash::parse_prefixed(&hash).map_err(|e| corrupt(format!("hash of '{full}': {e}")))?;
        let deriver = match deriver.as_deref() {
            None | Some("") => None,
            Some(d) => Some(self.parse(d).map_err(|e| corrupt(format!("deriver of '{full}': {e}")))?),
        };
        let ca = match ca.as_deref() {
            None | Some("") => None,
            Some(c) => Some(ContentAddress::parse(c).map_err(|e| corrupt(format!("ca of '{full}': {e}")))?),
        };
        let mut info = PathInfo::new(path.clone(), nar_hash, nar_size.unwrap_or(0).max(0) as u64);
        info.registration_time = time;
        info.deriver = deriver;
        info.ultimate = ultimate.unwrap_or(0) != 0;
        info.sigs = sigs.unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        info.ca = ca;
        for r in refs.as_deref().unwrap_or_default().split(' ').filter(|r| !r.is_empty()) {
            info.references.insert(self.parse(r)?);
        }
        Ok(Some(info))
    }

    /// Paths that refer to `path` (including itself if it refers to itself).
    pub fn query_referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>> {
        retry_busy(|| {
            let mut stmt = self.conn.prepare_cached(
                "select path from Refs join ValidPaths on referrer = id \
                 where reference = (select id from ValidPaths where path = ?)",
            )?;
            let rows = stmt.query_map([self.full(path)], |r| r.get::<_, String>(0))?;
            rows.map(|r| self.parse(&r?)).collect()
        })
    }

    /// Valid derivations that list `path` as an output.
    pub fn query_valid_derivers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>> {
        retry_busy(|| {
            let mut stmt = self.conn.prepare_cached(
                "select v.path from DerivationOutputs d join ValidPaths v on d.drv = v.id where d.path = ?",
            )?;
            let rows = stmt.query_map([self.full(path)], |r| r.get::<_, String>(0))?;
            rows.map(|r| self.parse(&r?)).collect()
        })
    }

    /// The `DerivationOutputs` rows of a valid derivation, by output name.
    pub fn query_derivation_outputs(&self, drv: &StorePath) -> Result<Vec<(String, StorePath)>> {
        retry_busy(|| {
            let mut stmt = self.conn.prepare_cached(
                "select id, path from DerivationOutputs where drv = (select id from ValidPaths where path = ?) order by id",
            )?;
            let rows = stmt.query_map([self.full(drv)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|r| {
                let (name, p) = r?;
                Ok((name, self.parse(&p)?))
            })
            .collect()
        })
    }

    /// The valid path whose hash part is `hash_part`, if any (CppNix's
    /// range query on the unique path index).
    pub fn query_path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>> {
        let prefix = format!("{}/{hash_part}", self.store_dir.as_str());
        retry_busy(|| {
            let mut stmt = self.conn.prepare_cached("select path from ValidPaths where path >= ? limit 1")?;
            let found: Option<String> = stmt.query_row([&prefix], |r| r.get(0)).optional()?;
            match found {
                Some(p) if p.starts_with(&prefix) => Ok(Some(self.parse(&p)?)),
                _ => Ok(None),
            }
        })
    }

    pub fn query_all_valid_paths(&self) -> Result<BTreeSet<StorePath>> {
        retry_busy(|| {
            let mut stmt = self.conn.prepare_cached("select path from ValidPaths")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|r| self.parse(&r?)).collect()
        })
    }

    /// Registers (or updates) a batch of paths in one transaction, as CppNix's
    /// `registerValidPaths`: existing rows keep their registration time and
    /// deriver; each reference must be valid already or part of the batch;
    /// `.drv` paths get their `DerivationOutputs` rows from `drv_outputs`;
    /// a reference cycle within the batch aborts the transaction.
    pub fn register_valid_paths(
        &self,
        infos: &[PathInfo],
        drv_outputs: &dyn Fn(&StorePath) -> Result<DrvOutputRows>,
    ) -> Result<()> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        // Derivation outputs are read from disk before the transaction starts.
        let mut outputs = HashMap::new();
        for info in infos.iter().filter(|i| i.path.is_derivation()) {
            outputs.insert(info.path.clone(), drv_outputs(&info.path)?);
        }
        check_acyclic(infos)?;
        self.with_txn(|tx| {
            let mut ids = HashMap::new();
            for info in infos {
                let full = self.full(&info.path);
                let nar_size = (info.nar_size != 0).then_some(info.nar_size as i64);
                let ultimate = info.ultimate.then_some(1i64);
                let sigs = (!info.sigs.is_empty()).then(|| info.sigs.iter().cloned().collect::<Vec<_>>().join(" "));
                let ca = info.ca.map(|c| c.to_string());
                let hash = info.nar_hash.to_string();
                let id = if let Some(id) = Self::path_id(tx, &full)? {
                    tx.prepare_cached(
                        "update ValidPaths set narSize = ?, hash = ?, ultimate = ?, sigs = ?, ca = ? where path = ?",
                    )?
                    .execute(params![nar_size, hash, ultimate, sigs, ca, full])?;
                    id
                } else {
                    let time = if info.registration_time != 0 { info.registration_time } else { now };
                    let deriver = info.deriver.as_ref().map(|d| self.full(d));
                    tx.prepare_cached(
                        "insert into ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) \
                         values (?, ?, ?, ?, ?, ?, ?, ?)",
                    )?
                    .execute(params![full, hash, time, deriver, nar_size, ultimate, sigs, ca])?;
                    let id = tx.last_insert_rowid();
                    if let Some(rows) = outputs.get(&info.path) {
                        let mut stmt = tx.prepare_cached(
                            "insert or replace into DerivationOutputs (drv, id, path) values (?, ?, ?)",
                        )?;
                        for (name, out) in rows {
                            stmt.execute(params![id, name, self.full(out)])?;
                        }
                    }
                    id
                };
                ids.insert(info.path.clone(), id);
            }
            for info in infos {
                let referrer = ids[&info.path];
                for r in &info.references {
                    let reference = match ids.get(r) {
                        Some(id) => *id,
                        None => Self::path_id(tx, &self.full(r))?.ok_or_else(|| Error::MissingReference {
                            path: self.full(&info.path),
                            reference: self.full(r),
                        })?,
                    };
                    tx.prepare_cached("insert or replace into Refs (referrer, reference) values (?, ?)")?
                        .execute(params![referrer, reference])?;
                }
            }
            super::fault::phase(super::fault::Phase::DbTransaction);
            Ok(())
        })
    }

    /// Removes a path's row (its references and derivation outputs cascade).
    /// Fails if another valid path still refers to it.
    pub fn invalidate_paths(&self, paths: &[StorePath]) -> Result<()> {
        self.with_txn(|tx| {
            for path in paths {
                let full = self.full(path);
                let mut referrers = tx.prepare_cached(
                    "select v.path from Refs r join ValidPaths v on r.referrer = v.id \
                     where r.reference = (select id from ValidPaths where path = ?) and v.path != ?",
                )?;
                let others: Vec<String> =
                    referrers.query_map([&full, &full], |r| r.get(0))?.collect::<Result<_, _>>()?;
                if let Some(referrer) = others.into_iter().find(|o| !paths.iter().any(|p| self.full(p) == *o)) {
                    return Err(Error::PathInUse { path: full, referrer });
                }
            }
            for path in paths {
                tx.prepare_cached("delete from ValidPaths where path = ?")?.execute([self.full(path)])?;
            }
            Ok(())
        })
    }

    /// Adds signatures to a valid path.
    pub fn add_signatures(&self, path: &StorePath, sigs: &BTreeSet<String>) -> Result<()> {
        self.with_txn(|tx| {
            let full = self.full(path);
            let old: Option<Option<String>> = tx
                .prepare_cached("select sigs from ValidPaths where path = ?")?
                .query_row([&full], |r| r.get(0))
                .optional()?;
            let Some(old) = old else { return Err(Error::InvalidPath(full)) };
            let mut all: BTreeSet<String> = old.unwrap_or_default().split_whitespace().map(str::to_owned).collect();
            all.extend(sigs.iter().cloned());
            let joined = (!all.is_empty()).then(|| all.into_iter().collect::<Vec<_>>().join(" "));
            tx.prepare_cached("update ValidPaths set sigs = ? where path = ?")?.execute(params![joined, full])?;
            Ok(())
        })
    }

    /// `pragma integrity_check` (for fault tests and `store verify`).
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("pragma integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let problems: Vec<String> = rows.collect::<Result<_, _>>()?;
        Ok(problems.into_iter().filter(|p| p != "ok").collect())
    }
}

/// Turns off SQLite's memory statistics, once, before the first connection
/// initialises the library: they put every allocation SQLite makes, in
/// every connection of the process, behind one global mutex, on which a
/// daemon's threads queue (bench/daemon.sh). Nothing here reads them. Too
/// late if something else in the process opened SQLite first; harmless then.
fn disable_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int. sqlite3_config must
        // not run while another thread initialises or uses SQLite: every
        // connection this crate opens waits for this `Once` first, and once
        // SQLite is initialised the call only reads a flag and refuses.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int);
        }
    });
}

/// Rejects a batch whose references (within the batch, ignoring
/// self-references) form a cycle, as CppNix's topological sort does.
fn check_acyclic(infos: &[PathInfo]) -> Result<()> {
    let index: HashMap<&StorePath, usize> = infos.iter().enumerate().map(|(i, p)| (&p.path, i)).collect();
    // 0 = unvisited, 1 = on the stack, 2 = done. Iterative DFS: bounded stack.
    let mut state = vec![0u8; infos.len()];
    for start in 0..infos.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
        let children = |i: usize| -> Vec<usize> {
            infos[i].references_without_self().filter_map(|r| index.get(r).copied()).collect()
        };
        state[start] = 1;
        stack.push((start, children(start)));
        while let Some((node, pending)) = stack.last_mut() {
            match pending.pop() {
                Some(next) if state[next] == 1 => {
                    return Err(Error::ReferenceCycle(infos[next].path.to_string()));
                }
                Some(next) if state[next] == 0 => {
                    state[next] = 1;
                    let c = children(next);
                    stack.push((next, c));
                }
                Some(_) => {}
                None => {
                    state[*node] = 2;
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}

/// Retries `f` while SQLite says the database is busy or locked, sleeping
/// 0–99 ms between attempts and warning at most every 10 s (CppNix's
/// `retrySQLite` / `handleSQLiteBusy`).
pub(crate) fn retry_busy<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut last_warning = std::time::Instant::now();
    loop {
        match f() {
            Err(Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                if last_warning.elapsed() > Duration::from_secs(10) {
                    tracing::warn!("SQLite database is busy");
                    last_warning = std::time::Instant::now();
                }
                let mut b = [0u8; 1];
                let _ = getrandom::fill(&mut b);
                std::thread::sleep(Duration::from_millis(u64::from(b[0]) % 100));
            }
            r => return r,
        }
    }
}
