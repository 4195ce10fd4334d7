//! The environment variables that decide which configuration is read and
//! some defaults, captured as a value so loading never reads the process
//! environment behind the caller's back.

use std::path::PathBuf;

/// Where configuration comes from and the env-derived defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEnv {
    /// `NIX_CONF_DIR` (default `/etc/nix`): `nix.conf` is read from here, and
    /// `builders` and `netrc-file` default to files in it.
    pub conf_dir: PathBuf,
    /// Per-user files read after `nix.conf`, the last one first (CppNix's
    /// `getUserConfigFiles`). [`ConfigEnv::from_vars`] fills this in as
    /// CppNix does; the default is none.
    pub user_conf_files: Vec<PathBuf>,
    /// `NIX_CONFIG`: configuration text applied last.
    pub nix_config: Option<String>,
    /// Relative includes in `NIX_CONFIG` are resolved against this.
    pub cwd: PathBuf,
    /// `NIX_REMOTE`: the default of `store`.
    pub nix_remote: Option<String>,
    /// `NIX_IGNORE_SYMLINK_STORE=1`: the default of `allow-symlinked-store`.
    pub ignore_symlink_store: bool,
    /// `NIX_REMOTE_SYSTEMS`: colon-separated machine files, the old way of
    /// setting `builders`.
    pub remote_systems: Option<String>,
}

impl Default for ConfigEnv {
    /// `/etc/nix`, no user files, nothing else set.
    fn default() -> Self {
        ConfigEnv {
            conf_dir: PathBuf::from("/etc/nix"),
            user_conf_files: Vec::new(),
            nix_config: None,
            cwd: PathBuf::from("/"),
            nix_remote: None,
            ignore_symlink_store: false,
            remote_systems: None,
        }
    }
}

impl ConfigEnv {
    /// Reads the variables through `var` as CppNix 2.26 does: an empty
    /// `NIX_CONF_DIR` counts as unset; user files come from
    /// `NIX_USER_CONF_FILES`, else `$NIX_CONFIG_HOME` (or
    /// `$XDG_CONFIG_HOME/nix`, or `$HOME/.config/nix`) and each of
    /// `$XDG_CONFIG_DIRS` (default `/etc/xdg`) + `/nix`, with `nix.conf`
    /// appended.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, cwd: PathBuf) -> ConfigEnv {
        let conf_dir = var("NIX_CONF_DIR").filter(|d| !d.is_empty()).unwrap_or_else(|| "/etc/nix".to_owned());
        let user_conf_files = match var("NIX_USER_CONF_FILES") {
            Some(files) => files.split(':').filter(|f| !f.is_empty()).map(PathBuf::from).collect(),
            None => {
                let home_dir = var("NIX_CONFIG_HOME")
                    .or_else(|| var("XDG_CONFIG_HOME").map(|d| format!("{d}/nix")))
                    .or_else(|| var("HOME").map(|h| format!("{h}/.config/nix")));
                let xdg_dirs = var("XDG_CONFIG_DIRS").unwrap_or_else(|| "/etc/xdg".to_owned());
                home_dir
                    .into_iter()
                    .chain(xdg_dirs.split(':').filter(|d| !d.is_empty()).map(|d| format!("{d}/nix")))
                    .map(|d| PathBuf::from(d).join("nix.conf"))
                    .collect()
            }
        };
        ConfigEnv {
            conf_dir: PathBuf::from(conf_dir),
            user_conf_files,
            nix_config: var("NIX_CONFIG"),
            cwd,
            nix_remote: var("NIX_REMOTE"),
            ignore_symlink_store: var("NIX_IGNORE_SYMLINK_STORE").as_deref() == Some("1"),
            remote_systems: var("NIX_REMOTE_SYSTEMS"),
        }
    }

    /// The running process's environment and working directory.
    pub fn from_process() -> ConfigEnv {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Self::from_vars(|name| std::env::var(name).ok(), cwd)
    }

    /// `$NIX_CONF_DIR/nix.conf`.
    pub fn conf_file(&self) -> PathBuf {
        self.conf_dir.join("nix.conf")
    }
}
