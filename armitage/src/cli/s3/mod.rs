//! `armitage s3`: the bucket armitage uploads to (see docs/s3.md): the
//! upload queue shown, and objects copied to and from S3 with the same
//! client the daemon uses.

mod cp;
mod queue;

use super::global::GlobalOpts;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct S3Args {
    /// Armitage's own configuration file, for its `[s3]` section [env:
    /// ARMITAGE_CONFIG] [default: /etc/armitage/armitage.toml, or
    /// DIR/etc/armitage.toml with --home].
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: S3Command,
}

#[derive(Subcommand)]
enum S3Command {
    /// Show the upload queue: what waits to go to the bucket, what failed
    /// and why.
    Queue(queue::QueueArgs),
    /// Copy a file to or from a bucket (`s3://bucket/key?endpoint=…`).
    Cp(cp::CpArgs),
}

impl S3Args {
    pub fn run(self, g: &GlobalOpts) -> Result<ExitCode> {
        let config = g.armitage_config(self.config.as_deref())?;
        if let Some(file) = &config.s3.credentials_file {
            ::s3::set_credentials_file(Some(file.clone()));
        }
        match self.command {
            S3Command::Queue(args) => queue::run(g, &config, args),
            S3Command::Cp(args) => cp::run(args),
        }
    }
}
