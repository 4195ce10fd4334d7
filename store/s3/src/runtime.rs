//! The process's tokio runtime for S3 requests, and [`block`]: how a
//! blocking caller waits for one.

use std::future::Future;
use std::sync::LazyLock;
use tokio::runtime::Runtime;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("s3")
        .enable_all()
        .build()
        .expect("cannot start the S3 runtime's threads")
});

/// Runs `future` on the S3 runtime and waits for it on this thread, which
/// may be any thread (a tokio worker is blocked for the while, not broken).
pub(crate) fn block<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    wait(spawn(future))
}

/// Starts `future` on the S3 runtime; [`wait`] gets its output.
pub(crate) fn spawn<F>(future: F) -> std::sync::mpsc::Receiver<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    RUNTIME.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx
}

/// The output of a future [`spawn`]ed.
pub(crate) fn wait<T>(rx: std::sync::mpsc::Receiver<T>) -> T {
    rx.recv().expect("an S3 request's task ended without an answer (it panicked)")
}
