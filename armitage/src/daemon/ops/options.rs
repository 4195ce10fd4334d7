//! SetOptions: the client's options for the rest of its connection, as the
//! policy lets it set them (`policy::client_options`), with the warnings
//! for what it may not set. A family of its own: it changes the session,
//! not the store.

use crate::daemon::policy;
use crate::daemon::session::{Input, OpResult, Output, Session};
use crate::daemon::state::DaemonState;
use worker_protocol::ClientOptions;

pub async fn set_options<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    options: ClientOptions,
) -> OpResult {
    let (options, warnings) = policy::client_options(s.trust, &d.settings, options);
    for w in &warnings {
        s.warn(w).await?;
    }
    s.options = options;
    s.last().await?;
    Ok(())
}
