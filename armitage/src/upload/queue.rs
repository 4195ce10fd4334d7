//! The upload queue: what waits to go to the bucket, in a SQLite database
//! in the state directory (`<state dir>/s3-queue.sqlite`), so that it
//! survives kill -9 and restarts. An item is added once (adding it again
//! while it waits changes nothing; adding a failed one makes it wait
//! again); it leaves the queue when uploaded. A try that fails sets its
//! next try later (see [`backoff`]); an item that can never go (its path
//! was deleted) stays as failed, with why, until added again.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use witness_proxy::cas::ObjectId;

/// The database's file in the state directory.
pub const FILE: &str = "s3-queue.sqlite";

/// What is uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A store path (its full path) and its closure, into the binary cache.
    Path(String),
    /// A witness object, into `cas/`.
    Object(ObjectId),
    /// A witness record (its id), into `traces/`.
    Trace(String),
}

impl Item {
    fn kind(&self) -> &'static str {
        match self {
            Item::Path(_) => "path",
            Item::Object(_) => "object",
            Item::Trace(_) => "trace",
        }
    }

    fn name(&self) -> String {
        match self {
            Item::Path(p) => p.clone(),
            Item::Object(id) => id.to_hex(),
            Item::Trace(id) => id.clone(),
        }
    }

    fn from_row(kind: &str, name: String) -> Option<Item> {
        match kind {
            "path" => Some(Item::Path(name)),
            "object" => name.parse().ok().map(Item::Object),
            "trace" => Some(Item::Trace(name)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// An item in the queue, with its tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub item: Item,
    /// When it was added (ms since the epoch).
    pub added: i64,
    /// Tries that failed.
    pub attempts: u32,
    /// When it is tried next (ms since the epoch).
    pub next_try: i64,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// Given up: it is not tried again until added again.
    pub failed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("upload queue '{}': {source}", path.display())]
pub struct QueueError {
    path: PathBuf,
    source: rusqlite::Error,
}

pub type Result<T> = std::result::Result<T, QueueError>;

pub struct Queue {
    conn: Connection,
    path: PathBuf,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The wait after `attempts` failed tries: 1 s, doubling, at most `max`.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(20)).min(max.max(Duration::from_millis(100)))
}

impl Queue {
    /// Opens the queue in `state_dir`, making it if it is new.
    pub fn open(state_dir: &Path) -> Result<Queue> {
        Self::open_at(&state_dir.join(FILE), true)
    }

    /// Opens the queue in `state_dir` if there is one (for reading it).
    pub fn open_existing(state_dir: &Path) -> Result<Option<Queue>> {
        let path = state_dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        Self::open_at(&path, false).map(Some)
    }

    fn open_at(path: &Path, create: bool) -> Result<Queue> {
        let err = |source| QueueError { path: path.to_owned(), source };
        let flags = if create {
            rusqlite::OpenFlags::default()
        } else {
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        // Durable before the build that added an item returns.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS jobs (
                 id INTEGER PRIMARY KEY,
                 kind TEXT NOT NULL,
                 name TEXT NOT NULL,
                 added INTEGER NOT NULL,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 next_try INTEGER NOT NULL,
                 last_error TEXT,
                 failed INTEGER NOT NULL DEFAULT 0,
                 UNIQUE (kind, name)
             );",
        )
        .map_err(err)?;
        Ok(Queue { conn, path: path.to_owned() })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> QueueError + '_ {
        |source| QueueError { path: self.path.clone(), source }
    }

    /// Adds `items`, in one transaction; returns how many were not waiting
    /// already.
    pub fn add(&mut self, items: &[Item]) -> Result<usize> {
        let now = now_ms();
        let path = self.path.clone();
        let err = |source| QueueError { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        let mut added = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO jobs (kind, name, added, next_try) VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT (kind, name) DO UPDATE SET failed = 0, attempts = 0, next_try = ?3
                     WHERE failed = 1",
                )
                .map_err(err)?;
            for item in items {
                added += insert.execute(params![item.kind(), item.name(), now]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(added)
    }

    /// Up to `limit` waiting jobs due at `now`, oldest first.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<Job>> {
        self.select("WHERE failed = 0 AND next_try <= ?1 ORDER BY id LIMIT ?2", params![now, limit as i64])
    }

    /// When the next waiting job is due, if any waits.
    pub fn next_due(&self) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT MIN(next_try) FROM jobs WHERE failed = 0", [], |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map(Option::flatten)
            .map_err(self.err())
    }

    /// Every job, waiting then failed, oldest first.
    pub fn jobs(&self) -> Result<Vec<Job>> {
        self.select("ORDER BY failed, id", [])
    }

    fn select(&self, tail: &str, params: impl rusqlite::Params) -> Result<Vec<Job>> {
        let sql = format!("SELECT id, kind, name, added, attempts, next_try, last_error, failed FROM jobs {tail}");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, bool>(7)?,
                ))
            })
            .map_err(self.err())?;
        let mut jobs = Vec::new();
        for row in rows {
            let (id, kind, name, added, attempts, next_try, last_error, failed) = row.map_err(self.err())?;
            match Item::from_row(&kind, name) {
                Some(item) => jobs.push(Job { id, item, added, attempts, next_try, last_error, failed }),
                None => tracing::warn!("upload queue: job {id} of unknown kind '{kind}' left alone"),
            }
        }
        Ok(jobs)
    }

    /// The job was uploaded: it leaves the queue.
    pub fn done(&self, id: i64) -> Result<()> {
        self.conn.execute("DELETE FROM jobs WHERE id = ?1", [id]).map(drop).map_err(self.err())
    }

    /// The job's try failed with `error`; it is tried again at `next_try`.
    pub fn retry(&self, id: i64, error: &str, next_try: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE jobs SET attempts = attempts + 1, last_error = ?2, next_try = ?3 WHERE id = ?1",
                params![id, error, next_try],
            )
            .map(drop)
            .map_err(self.err())
    }

    /// The job can never be uploaded, because of `error`.
    pub fn fail(&self, id: i64, error: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE jobs SET attempts = attempts + 1, last_error = ?2, failed = 1 WHERE id = ?1",
                params![id, error],
            )
            .map(drop)
            .map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_wait_retry_fail_and_come_back_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Queue::open_existing(dir.path()).unwrap().is_none());
        let mut q = Queue::open(dir.path()).unwrap();
        let object = ObjectId::of(b"x");
        let items = [Item::Path("/nix/store/aaaa-a".into()), Item::Object(object), Item::Trace("ab".into())];
        assert_eq!(q.add(&items).unwrap(), 3);
        assert_eq!(q.add(&items[..1]).unwrap(), 0, "a waiting item is not added twice");
        let due = q.due(now_ms(), 10).unwrap();
        assert_eq!(due.iter().map(|j| j.item.clone()).collect::<Vec<_>>(), items);

        q.retry(due[0].id, "the server cannot be reached", now_ms() + 60_000).unwrap();
        q.fail(due[1].id, "gone").unwrap();
        q.done(due[2].id).unwrap();
        assert!(q.due(now_ms(), 10).unwrap().is_empty());
        assert!(q.next_due().unwrap().unwrap() > now_ms());
        drop(q);

        // What a restart finds.
        let mut q = Queue::open_existing(dir.path()).unwrap().unwrap();
        let jobs = q.jobs().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!((jobs[0].attempts, jobs[0].failed), (1, false));
        assert_eq!(jobs[0].last_error.as_deref(), Some("the server cannot be reached"));
        assert_eq!((&jobs[1].item, jobs[1].failed), (&Item::Object(object), true));
        assert_eq!(q.add(&[Item::Object(object)]).unwrap(), 1, "a failed item added again waits again");
        assert_eq!(q.due(now_ms(), 10).unwrap()[0].item, Item::Object(object));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(4, max), Duration::from_secs(8));
        assert_eq!(backoff(40, max), max);
        assert_eq!(backoff(3, Duration::from_secs(2)), Duration::from_secs(2));
    }
}
