//! Command line: global options, the subcommands (each mirroring a Nix
//! command so the two can be compared), and shared helpers.

mod daemon;
mod derivation;
mod global;
mod hash;
mod key;
mod logging;
mod nar;
mod path_info;
mod progress;
mod s3;
mod store;
mod witness;

pub use global::GlobalOpts;
pub use logging::init_logging;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "armitage", version, about = "A Nix daemon and store, compatible with CppNix")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with NAR files (like `nix-store --dump` and `nix nar`).
    #[command(subcommand)]
    Nar(nar::NarCommand),
    /// Hash files and trees (like `nix-hash`).
    #[command(subcommand)]
    Hash(hash::HashCommand),
    /// Manage the store (like `nix-store --add/--verify/--gc/--optimise`).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Show what the store knows about paths (like `nix path-info`).
    PathInfo(path_info::PathInfoArgs),
    /// Work with derivations (like `nix derivation`).
    #[command(subcommand)]
    Derivation(derivation::DerivationCommand),
    /// Signing keys (like `nix-store --generate-binary-cache-key`).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Run the Nix daemon (like `nix-daemon`).
    Daemon(daemon::DaemonArgs),
    /// The witness archive of fixed-output fetches: records, verify, gc, its CA.
    Witness(witness::WitnessArgs),
    /// The S3 bucket outputs and witnessed objects go to: the upload queue, copies.
    S3(s3::S3Args),
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Nar(c) => c.run(g),
        Command::Hash(c) => c.run(),
        Command::Store(c) => c.run(g),
        Command::PathInfo(c) => c.run(g),
        Command::Derivation(c) => c.run(g),
        Command::Key(c) => c.run(),
        Command::Daemon(c) => c.run(g),
        Command::Witness(c) => c.run(g),
        Command::S3(c) => c.run(g),
    }
}
