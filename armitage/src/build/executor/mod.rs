//! The executor seam: everything one build needs to run, described once
//! ([`ExecSpec`]: builder, arguments, environment, inputs, outputs, build
//! directory, build user, isolation, network, limits), and the
//! [`Executor`] the scheduler hands it to. What happens before (locks, the
//! build directory, the environment) and after (registering the outputs)
//! is the scheduler's; an executor only runs the builder and follows it.
//!
//! Two implementations, chosen by [`Isolation`] in [`LocalExecutor`]:
//! - [`process::Process`] (`Isolation::None`): the builder runs on the
//!   host, as the build user when there is one;
//! - [`namespaces::Namespaces`] (`Isolation::Namespaces`): the Linux
//!   sandbox of [`super::sandbox`] (a chroot in fresh namespaces).
//!
//! A later isolation (a micro-VM) joins as a variant of [`Isolation`], an
//! executor of its own behind [`LocalExecutor`], and a variant of
//! [`Setup`] for what its preparation hands to its run.
//!
//! Shared process machinery (the pseudo-terminal, starting the build child,
//! following its output under the limits) is in [`run`].

pub mod namespaces;
pub mod process;
pub mod run;
mod spec;

pub use spec::{ExecError, ExecIo, ExecOutput, ExecSpec, ExecUser, Executor, Isolation, Network, RunOutcome, Setup};

use std::path::PathBuf;

/// The executors of this machine, by isolation.
pub struct LocalExecutor {
    process: process::Process,
    namespaces: namespaces::Namespaces,
}

impl LocalExecutor {
    /// `exe`: this executable, started as `__build-child`; `spec_dir`: where
    /// the build child's spec files go (root-only).
    pub fn new(exe: PathBuf, spec_dir: PathBuf) -> LocalExecutor {
        let child = run::ChildStarter { exe, spec_dir };
        LocalExecutor { process: process::Process::new(child.clone()), namespaces: namespaces::Namespaces::new(child) }
    }

    fn pick(&self, isolation: Isolation) -> &dyn Executor {
        match isolation {
            Isolation::None => &self.process,
            Isolation::Namespaces => &self.namespaces,
        }
    }
}

impl Executor for LocalExecutor {
    fn prepare(&self, spec: &ExecSpec) -> Result<Setup, ExecError> {
        self.pick(spec.isolation).prepare(spec)
    }

    fn run(&self, spec: &ExecSpec, setup: Setup, io: &mut ExecIo<'_>) -> Result<RunOutcome, ExecError> {
        self.pick(spec.isolation).run(spec, setup, io)
    }
}
