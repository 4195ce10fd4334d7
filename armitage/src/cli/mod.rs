//! Command line: global options, the subcommands (each mirroring a Nix
//! command so the two can be compared), and shared helpers.

mod daemon;
mod derivation;
mod hash;
mod key;
mod nar;
mod path_info;
mod progress;
mod store;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use local_store::{LocalStore, LocalStoreConfig};
use ::store::store_path::StoreDir;

#[derive(Parser)]
#[command(name = "armitage", version, about = "A Nix daemon and store, compatible with CppNix")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

/// Where the store is. For each directory: its flag, else `--home`, else its
/// environment variable (`NIX_STORE_DIR`, `NIX_STATE_DIR`, `NIX_LOG_DIR`), else
/// CppNix's default.
#[derive(Args)]
pub struct GlobalOpts {
    /// Store directory [env: NIX_STORE_DIR] [default: /nix/store].
    #[arg(long, global = true)]
    store_dir: Option<PathBuf>,
    /// State directory: database, GC roots, locks [env: NIX_STATE_DIR] [default: /nix/var/nix].
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Log directory [env: NIX_LOG_DIR] [default: /nix/var/log/nix].
    #[arg(long, global = true)]
    log_dir: Option<PathBuf>,
    /// Keep store, state and logs under this folder (DIR/store, DIR/var/nix,
    /// DIR/var/log/nix): a private store that needs no root.
    #[arg(long, global = true, env = "ARMITAGE_HOME")]
    home: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
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
    }
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,armitage=info,store=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARMITAGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(NixStyle)
        .init();
}

/// Log lines as Nix prints them: plain for information, `warning: ` and
/// `error: ` prefixes, the level name for debug and trace. No colour codes.
struct NixStyle;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for NixStyle
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        match *event.metadata().level() {
            tracing::Level::ERROR => write!(writer, "error: ")?,
            tracing::Level::WARN => write!(writer, "warning: ")?,
            tracing::Level::INFO => {}
            tracing::Level::DEBUG => write!(writer, "debug: ")?,
            tracing::Level::TRACE => write!(writer, "trace: ")?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

impl GlobalOpts {
    /// The `--home` folder, created and made absolute.
    pub fn home_dir(&self) -> Result<Option<PathBuf>> {
        self.home()
    }

    fn home(&self) -> Result<Option<PathBuf>> {
        let Some(home) = &self.home else { return Ok(None) };
        std::fs::create_dir_all(home).with_context(|| format!("creating '{}'", home.display()))?;
        Ok(Some(std::fs::canonicalize(home).with_context(|| format!("resolving '{}'", home.display()))?))
    }

    /// One directory: its flag, else under `--home`, else its environment
    /// variable (ignored when empty, as CppNix 2.26 does), else the default.
    fn dir(&self, flag: &Option<PathBuf>, under_home: &str, var: &str, default: &str) -> Result<PathBuf> {
        if let Some(d) = flag {
            return Ok(d.clone());
        }
        if let Some(h) = self.home()? {
            return Ok(h.join(under_home));
        }
        Ok(std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| default.into()))
    }

    /// The store directory as a validated `StoreDir`.
    pub fn store_dir(&self) -> Result<StoreDir> {
        let dir = self.dir(&self.store_dir, "store", "NIX_STORE_DIR", "/nix/store")?;
        let s = dir.to_str().with_context(|| format!("store directory '{}' is not UTF-8", dir.display()))?;
        Ok(StoreDir::new(s)?)
    }

    pub fn state_dir(&self) -> Result<PathBuf> {
        self.dir(&self.state_dir, "var/nix", "NIX_STATE_DIR", "/nix/var/nix")
    }

    pub fn log_dir(&self) -> Result<PathBuf> {
        self.dir(&self.log_dir, "var/log/nix", "NIX_LOG_DIR", "/nix/var/log/nix")
    }

    /// Opens the local store these options point at, with the settings of
    /// nix.conf (`$NIX_CONF_DIR/nix.conf`, then `NIX_CONFIG`).
    pub fn open_store(&self) -> Result<LocalStore> {
        let store_dir = self.store_dir()?;
        let env = ::store::nix_conf::ConfigEnv::from_process();
        let loaded = ::store::nix_conf::load(&env, &::store::nix_conf::Host::detect())
            .with_context(|| format!("reading '{}'", env.conf_file().display()))?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let config = LocalStoreConfig::from_settings(store_dir.clone(), self.state_dir()?, self.log_dir()?, &loaded.settings);
        LocalStore::open(config).with_context(|| format!("opening the store at '{}'", store_dir.as_str()))
    }
}

/// Resolves a command-line path argument to a store path: a path in the
/// store (or below one), or a symlink such as `./result` leading into it.
pub fn resolve_store_path(store: &LocalStore, arg: &Path) -> Result<::store::store_path::StorePath> {
    let dir = store.store_dir();
    let text = arg.to_string_lossy();
    if let Ok((p, _)) = dir.split_path(&text) {
        return Ok(p);
    }
    // Follow symlinks outside the store until we land in it (CppNix
    // `followLinksToStorePath`).
    let mut current = std::path::absolute(arg).with_context(|| format!("resolving '{}'", arg.display()))?;
    for _ in 0..40 {
        let s = current.to_string_lossy().into_owned();
        if let Ok((p, _)) = dir.split_path(&s) {
            return Ok(p);
        }
        match std::fs::read_link(&current) {
            Ok(target) => {
                current = current.parent().unwrap_or(Path::new("/")).join(target);
            }
            Err(_) => break,
        }
    }
    anyhow::bail!("path '{}' is not in the Nix store", arg.display())
}
