//! The executor without isolation: the builder runs on the host, as the
//! build user when there is one, in the build directory. A program is
//! started straight from the daemon (a fork, no re-exec of armitage, no
//! spec file: most of a build's own overhead saved, bench/build.sh); a
//! builtin (`builtin:<name>`) runs in the build child, which runs it in
//! place of a program.

use super::run::{self, ChildStarter};
use super::spec::{ExecError, ExecIo, ExecSpec, Executor, RunOutcome, Setup};

/// Runs builders on the host.
pub struct Process {
    child: ChildStarter,
}

impl Process {
    pub fn new(child: ChildStarter) -> Process {
        Process { child }
    }
}

impl Executor for Process {
    fn prepare(&self, _spec: &ExecSpec) -> Result<Setup, ExecError> {
        self.child.prepare()?;
        Ok(Setup::Nothing)
    }

    fn run(&self, spec: &ExecSpec, _setup: Setup, io: &mut ExecIo<'_>) -> Result<RunOutcome, ExecError> {
        let child_spec = run::child_spec(spec, None);
        let pty_owner = spec.user.as_ref().map(|u| u.uid);
        let started = if spec.builder.starts_with("builtin:") {
            self.child.start(&child_spec, pty_owner)
        } else {
            run::start_direct(&child_spec, pty_owner)
        };
        run::follow_to_end(spec, started, io)
    }
}
