//! `armitage daemon`: the Nix daemon. Where CppNix's `nix-daemon` would
//! run, with the same defaults and environment variables; `--home DIR` runs
//! a private one with embedded defaults and prints how to point Nix at it.

use super::global::GlobalOpts;
use anyhow::{Context, Result};
use armitage::daemon::{self, DaemonState, Trust};
use armitage::witness::WitnessService;
use clap::Args;
use local_store::{LocalStore, LocalStoreConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use store::nix_conf::{ConfigEnv, Host, Settings};

#[derive(Args)]
pub struct DaemonArgs {
    /// Socket to listen on [env: NIX_DAEMON_SOCKET_PATH] [default: <state dir>/daemon-socket/socket].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Configuration file to read instead of $NIX_CONF_DIR/nix.conf.
    #[arg(long, value_name = "FILE")]
    nix_conf: Option<PathBuf>,
    /// Armitage's own configuration file [env: ARMITAGE_CONFIG] [default:
    /// /etc/armitage/armitage.toml, or DIR/etc/armitage.toml with --home].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve one connection on standard input and output (as `nix-daemon --stdio`).
    #[arg(long)]
    stdio: bool,
    /// With --stdio: trust the client.
    #[arg(long, requires = "stdio", conflicts_with = "force_untrusted")]
    force_trusted: bool,
    /// With --stdio: do not trust the client.
    #[arg(long, requires = "stdio")]
    force_untrusted: bool,
}

impl DaemonArgs {
    pub fn run(self, g: &GlobalOpts) -> Result<ExitCode> {
        daemon::memory::limit_arenas();
        let home = g.home_dir()?;
        if let Some(home) = &home {
            // Written again once the daemon listens; a stale one must not
            // tell a waiting script that it does.
            let _ = std::fs::remove_file(home.join("env"));
        }
        let own = g.armitage_config(self.config.as_deref())?;
        let mut host = Host::detect();
        match armitage::build::sandbox::shell::sandbox_paths(own.daemon.sandbox_shell.as_deref()) {
            Ok(paths) => host.sandbox_paths = paths,
            Err(e) if own.daemon.sandbox_shell.is_some() => anyhow::bail!("sandbox-shell: {e}"),
            Err(e) => tracing::warn!(
                "no shell for the sandbox's /bin/sh ({e}): set 'sandbox-paths = /bin/sh=<a static shell>' in nix.conf, or install busybox-static"
            ),
        }
        let settings = self.settings(home.as_deref(), &host)?;
        let store_dir = g.store_dir()?;
        let state_dir = g.state_dir()?;
        let log_dir = g.log_dir()?;
        let config = LocalStoreConfig::from_settings(store_dir.clone(), &state_dir, &log_dir, &settings);
        let store =
            LocalStore::open(config).with_context(|| format!("opening the store at '{}'", store_dir.as_str()))?;
        let fd_limit = daemon::raise_fd_limit();
        tracing::debug!(fd_limit, "open files limit");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .max_blocking_threads(daemon::BLOCKING_THREADS)
            .build()
            .context("starting the runtime")?;
        if let Some(file) = &own.s3.credentials_file {
            s3::set_credentials_file(Some(file.clone()));
        }
        let remote_cas = match &own.s3.url {
            Some(url) => {
                let bucket = s3::Bucket::from_url(url).context("[s3] url")?;
                Some(Arc::new(witness_proxy::cas::S3Cas::new(bucket)) as Arc<dyn witness_proxy::cas::Cas>)
            }
            None => None,
        };
        let witness = if own.witness.enabled {
            let _entered = runtime.enter();
            let ssl_cert_file = settings.ignored.get("ssl-cert-file").filter(|f| !f.is_empty()).map(PathBuf::from);
            match WitnessService::start(&own.witness, &state_dir, ssl_cert_file.as_deref(), remote_cas) {
                Ok(w) => Some(Arc::new(w)),
                Err(e) => {
                    tracing::warn!("fixed-output builds are not witnessed: {e}");
                    None
                }
            }
        } else {
            None
        };
        let state = Arc::new(
            DaemonState::new(store, settings, own.daemon.reported_version, witness, &own.s3)
                .map_err(anyhow::Error::msg)?,
        );
        if self.stdio {
            // As nix-daemon --stdio: the peer is trusted unless told otherwise.
            let trust = if self.force_untrusted { Trust::NotTrusted } else { Trust::Trusted };
            let _ = self.force_trusted;
            runtime.block_on(daemon::serve_stdio(state, trust));
            return Ok(ExitCode::SUCCESS);
        }
        let socket = match (&self.socket, &home) {
            (Some(s), _) => s.clone(),
            (None, Some(_)) => daemon::default_socket(&state_dir),
            (None, None) => std::env::var_os("NIX_DAEMON_SOCKET_PATH")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| daemon::default_socket(&state_dir)),
        };
        runtime.block_on(async move {
            let listener = match daemon::socket_from_systemd().context("taking the socket from systemd")? {
                Some(l) => {
                    tracing::info!("listening on the socket passed by systemd");
                    l
                }
                None => daemon::bind(&socket).with_context(|| format!("binding to '{}'", socket.display()))?,
            };
            if let Some(home) = &home {
                // Also kept in DIR/env, for `. DIR/env` in another shell.
                let env = format!(
                    "export NIX_REMOTE=daemon NIX_DAEMON_SOCKET_PATH={} NIX_STORE_DIR={} NIX_STATE_DIR={} NIX_LOG_DIR={}",
                    socket.display(),
                    store_dir.as_str(),
                    state_dir.display(),
                    log_dir.display()
                );
                let env_file = home.join("env");
                std::fs::write(&env_file, format!("{env}\n")).with_context(|| format!("writing '{}'", env_file.display()))?;
                println!("{env}");
            }
            tracing::info!("daemon listening on '{}'", socket.display());
            daemon::serve(listener, state, shutdown_signal()).await;
            tracing::info!("shutting down");
            anyhow::Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }

    /// nix.conf as CppNix reads it; in `--home` mode without a conf file of
    /// its own (`DIR/etc/nix.conf`), embedded defaults that need no root:
    /// the daemon's own user is trusted, no build users, no substituters.
    fn settings(&self, home: Option<&std::path::Path>, host: &Host) -> Result<Settings> {
        let env = ConfigEnv::from_process();
        let home_conf = home.map(|h| h.join("etc/nix.conf")).filter(|f| f.exists());
        let loaded =
            match self.nix_conf.as_ref().or(home_conf.as_ref()) {
                Some(file) => store::nix_conf::load_file(file, &env, host)
                    .with_context(|| format!("reading '{}'", file.display()))?,
                None if home.is_some() => {
                    let mut s = Settings::new(host, &env);
                    let me = std::env::var("USER")
                        .ok()
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| rustix::process::getuid().as_raw().to_string());
                    let mut warnings = Vec::new();
                    s.set("trusted-users", &format!("root {me}"), &mut warnings)?;
                    s.set("substituters", "", &mut warnings)?;
                    if !host.is_root {
                        s.set("build-users-group", "", &mut warnings)?;
                    }
                    store::nix_conf::Loaded { settings: s, warnings }
                }
                None => store::nix_conf::load(&env, host)
                    .with_context(|| format!("reading '{}'", env.conf_file().display()))?,
            };
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        Ok(loaded.settings)
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
