//! The options every subcommand takes (where the store is, how much to log)
//! and what they resolve to: the store's directories, the opened local
//! store, armitage.toml, a command-line path as a store path.

use ::store::store_path::StoreDir;
use anyhow::{Context, Result};
use armitage::config::Config;
use clap::Args;
use local_store::{LocalStore, LocalStoreConfig};
use std::path::{Path, PathBuf};

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
        let config =
            LocalStoreConfig::from_settings(store_dir.clone(), self.state_dir()?, self.log_dir()?, &loaded.settings);
        LocalStore::open(config).with_context(|| format!("opening the store at '{}'", store_dir.as_str()))
    }

    /// armitage.toml (see [`armitage::config`] for where it is looked for):
    /// `file` (a `--config FILE`, which must exist), else
    /// `$ARMITAGE_CONFIG`, else `DIR/etc/armitage.toml` with `--home DIR`,
    /// else the default path.
    pub fn armitage_config(&self, file: Option<&Path>) -> Result<Config> {
        let (path, must_exist) = match (file, std::env::var_os("ARMITAGE_CONFIG").filter(|v| !v.is_empty())) {
            (Some(file), _) => (file.to_owned(), true),
            (None, Some(file)) => (PathBuf::from(file), false),
            (None, None) => match self.home()? {
                Some(home) => (home.join("etc/armitage.toml"), false),
                None => (PathBuf::from(armitage::config::DEFAULT_PATH), false),
            },
        };
        Ok(Config::load(&path, must_exist)?)
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
