//! Building derivations: the scheduler (one goal per derivation across all
//! clients, a global pool of build slots), the build environment, running
//! builders (in the sandbox or not) behind an executor, their logs, and
//! registering outputs.
//!
//! [`Builder`] is shared by all connections. A client's request makes a
//! [`Job`] (the daemon's settings with what the client may change, and the
//! client's share of the build slots) and asks for goals through it; goals
//! are shared by everyone who asks for the same derivation, and use the
//! job of whoever started them.
//!
//! One local build goes: `derivation_goal` (the derivation, substitutes,
//! inputs, a build slot) → `local` (locks, build user, build directory,
//! scratch outputs, environment, an [`executor::ExecSpec`] run by the
//! builder's [`executor::Executor`]) → `after` (register and sign the
//! outputs, then the post-build hook).
//!
//! This file only declares modules and re-exports: no child uses anything
//! defined here, so the modules of build/ import one another without cycles
//! (shared types live in leaves: `goal`, `attrs`, `error`, `executor`'s
//! `spec`).

pub mod builtins;
pub mod child;
pub mod env;
pub mod executor;
pub mod goal;
pub mod log;
pub mod outputs;
pub mod plan;
pub mod sandbox;
pub mod user_pool;

mod after;
mod attrs;
mod auto_gc;
mod builder;
mod derivation_goal;
mod error;
mod local;
mod post_build_hook;
mod substitution_goal;
mod witnessed;

#[cfg(test)]
mod tests;

pub(crate) use attrs::substitutes_allowed;
pub use builder::{Builder, Job};
pub use error::BuildError;
pub use goal::{BuildModeKey, Event, Goal, GoalKey, Observer, Outcome};
