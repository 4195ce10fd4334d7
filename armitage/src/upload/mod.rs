//! Uploads to armitage.toml's `[s3]` bucket: built outputs, with their
//! closures, into its binary cache (narinfo, `nar/`, as CppNix lays out an
//! S3 cache), and the witness's objects and records into `cas/` and
//! `traces/`. Everything goes through one queue on local disk
//! ([`queue`]): a build only adds to it (a SQLite insert), a worker thread
//! empties it, retrying with backoff while the bucket is down, so a build
//! never waits for S3 and an outage or a kill -9 loses nothing. A queued
//! path is a garbage-collector root (`<state dir>/gcroots/armitage-uploads/`)
//! until it is uploaded.

pub mod queue;
mod roots;
mod worker;

pub use roots::DIR as ROOTS;

use crate::config::S3Config;
use local_store::{LiveStore, LocalStore};
use queue::{Item, Queue, QueueError};
use roots::Roots;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use store::store_path::StorePath;
use witness_proxy::archive::{Archive, Kept};
use worker::Shared;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("[s3] url: {0}")]
    Url(#[from] s3::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot make the upload roots folder in '{}': {source}", path.display())]
    Roots { path: PathBuf, source: std::io::Error },
}

/// The queue, and the worker emptying it.
pub struct Uploader {
    shared: Arc<Shared>,
    outputs: bool,
}

impl Uploader {
    /// With `[s3] url` set: opens the queue in the store's state directory,
    /// has `archive` (the witness's, with `upload-witness`) tell it of what
    /// it keeps, and starts the worker. Asks nothing of the bucket: it may
    /// be down. `None` without a URL.
    pub fn start(
        config: &S3Config,
        store: Arc<LiveStore>,
        archive: Option<Arc<Archive>>,
    ) -> Result<Option<Arc<Uploader>>, UploadError> {
        let Some(url) = &config.url else { return Ok(None) };
        s3::S3Url::parse(url)?;
        let state_dir = store.config().state_dir.clone();
        let roots = Roots::open(&state_dir, store.store_dir().clone())
            .map_err(|source| UploadError::Roots { path: state_dir.clone(), source })?;
        let queue = Queue::open(&state_dir)?;
        let archive = archive.filter(|_| config.upload_witness);
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            added: Condvar::new(),
            roots,
            url: url.clone(),
            store,
            archive: archive.clone(),
            max_retry_delay: Duration::from_secs(config.max_retry_delay),
        });
        let uploader = Arc::new(Uploader { shared: shared.clone(), outputs: config.upload_outputs });
        uploader.sync_roots();
        if let Some(archive) = &archive {
            let weak = Arc::downgrade(&uploader);
            archive.on_kept(move |kept| {
                if let Some(uploader) = weak.upgrade() {
                    let items = match kept {
                        Kept::Record { id, body } => {
                            body.map(Item::Object).into_iter().chain([Item::Trace(id)]).collect()
                        }
                        Kept::Output(id) => vec![Item::Object(id)],
                    };
                    uploader.add(&items);
                }
            });
        }
        std::thread::Builder::new()
            .name("s3-uploads".into())
            .spawn(move || worker::run(&shared))
            .expect("starting the upload thread");
        tracing::info!("uploading to {url}: queue in '{}'", state_dir.join(queue::FILE).display());
        Ok(Some(uploader))
    }

    /// Queues the outputs a build registered (with their closures), each
    /// rooted first. Never fails the build: a failure is logged.
    pub fn add_outputs<'a>(&self, store: &LocalStore, outputs: impl IntoIterator<Item = &'a StorePath>) {
        if !self.outputs {
            return;
        }
        let mut items = Vec::new();
        for path in outputs {
            let full = store.display(path);
            if let Err(e) = self.shared.roots.add(path, &full) {
                tracing::warn!("cannot root '{full}' until it is uploaded: {e}");
            }
            items.push(Item::Path(full));
        }
        self.add(&items);
    }

    fn add(&self, items: &[Item]) {
        if items.is_empty() {
            return;
        }
        let mut queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        match queue.add(items) {
            Ok(_) => self.shared.added.notify_all(),
            Err(e) => tracing::error!("cannot queue {} for upload: {e}", items[0]),
        }
    }

    /// After a restart: the roots are those of the paths waiting.
    fn sync_roots(&self) {
        let jobs = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner).jobs();
        match jobs {
            Ok(jobs) => {
                let waiting: Vec<String> = jobs
                    .into_iter()
                    .filter(|j| !j.failed)
                    .filter_map(|j| match j.item {
                        Item::Path(p) => Some(p),
                        _ => None,
                    })
                    .collect();
                self.shared.roots.keep_only(&waiting);
            }
            Err(e) => tracing::warn!("cannot read the upload queue: {e}"),
        }
    }
}

/// The upload queue of a state directory, if it has one (`armitage s3 queue`).
pub fn queue_in(state_dir: &Path) -> Result<Option<Queue>, QueueError> {
    Queue::open_existing(state_dir)
}
