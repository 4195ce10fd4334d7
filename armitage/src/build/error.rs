//! Why a local build failed, typed, with the BuildResult status each
//! failure maps to ([`BuildError::status`]). The messages are CppNix's
//! (compat tests compare them byte for byte). A leaf: it names the error
//! types of the steps it wraps and nothing else of the scheduler.

use super::env::EnvError;
use super::executor::ExecError;
use super::post_build_hook::HookError;
use super::user_pool::UserPoolError;
use worker_protocol::BuildStatus;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The derivation cannot be built here (the platform or system
    /// features, `__noChroot` with `sandbox = true`).
    #[error("{0}")]
    Rejected(String),
    /// Nobody wanted the build any more while it waited for a build user.
    #[error("cancelled")]
    Cancelled,
    /// Nobody wanted the build any more while it ran (`what`: CppNix's
    /// name of the goal, `building of '…' from .drv file`).
    #[error("{what} was interrupted")]
    Interrupted { what: String },
    /// `max-silent-time` ran out.
    #[error("{what} timed out after {secs} seconds of silence")]
    Silent { what: String, secs: i64 },
    /// `timeout` ran out.
    #[error("{what} timed out after {secs} seconds")]
    TimedOut { what: String, secs: i64 },
    /// The log outgrew `max-build-log-size`.
    #[error("{what} killed after writing more than {limit} bytes of log output")]
    LogLimit { what: String, limit: u64 },
    /// The builder exited unsuccessfully (`message`: the exit status and
    /// the last log lines).
    #[error("{message}")]
    BuilderFailed { message: String, fixed_output: bool },
    /// The builder could not be started.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The builder's environment could not be made.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The post-build hook failed (the outputs stay valid).
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    UserPool(#[from] UserPoolError),
    #[error(transparent)]
    Store(#[from] local_store::Error),
    #[error("{0}")]
    Other(String),
}

impl BuildError {
    /// The BuildResult status CppNix reports for it.
    pub fn status(&self) -> BuildStatus {
        match self {
            BuildError::Rejected(_) => BuildStatus::InputRejected,
            BuildError::Silent { .. } | BuildError::TimedOut { .. } => BuildStatus::TimedOut,
            BuildError::LogLimit { .. } => BuildStatus::LogLimitExceeded,
            // A fixed-output derivation may succeed another time (its
            // download failed); others would fail the same way.
            BuildError::BuilderFailed { fixed_output: true, .. } => BuildStatus::TransientFailure,
            BuildError::BuilderFailed { fixed_output: false, .. } => BuildStatus::PermanentFailure,
            BuildError::Cancelled
            | BuildError::Interrupted { .. }
            | BuildError::Exec(_)
            | BuildError::Env(_)
            | BuildError::Hook(_)
            | BuildError::UserPool(_)
            | BuildError::Store(_)
            | BuildError::Other(_) => BuildStatus::MiscFailure,
        }
    }
}

impl From<String> for BuildError {
    fn from(e: String) -> Self {
        BuildError::Other(e)
    }
}
