//! `armitage witness proxy`: the witness proxy on its own, without the
//! daemon, for clients that should be witnessed outside builds (and for the
//! benchmark in bench/witness.py). It opens (or makes) the archive and the
//! CA in the witness folder the other `armitage witness` commands use,
//! listens where told, prints one line saying how to use it, and serves
//! until SIGINT or SIGTERM. Its records name no build.
//!
//! Every HTTPS connection through it is intercepted (never relayed blind),
//! so a client needs only the witness CA to trust it: the certificate file
//! the line names. Upstream servers are verified against `--ssl-cert-file`,
//! else `NIX_SSL_CERT_FILE`, else `SSL_CERT_FILE`, else the system bundle.

use anyhow::{Context, Result};
use armitage::config::WitnessMode;
use armitage::witness;
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use witness_proxy::ca::CERT_FILE;

#[derive(Args)]
pub struct ProxyArgs {
    /// Where to listen (port 0: any free port; the line printed says which).
    /// The proxy asks clients for no credentials: keep it on the loopback.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The CAs upstream servers are verified against [default:
    /// $NIX_SSL_CERT_FILE, else $SSL_CERT_FILE, else the system bundle].
    #[arg(long, value_name = "FILE")]
    ssl_cert_file: Option<PathBuf>,
    /// Never ask an upstream: answer only from the witness (see
    /// docs/witness.md, `mode = "offline"`).
    #[arg(long)]
    offline: bool,
}

/// Serves the proxy with its archive and CA in `dir` (made when missing).
pub fn run(dir: &Path, args: ProxyArgs) -> Result<ExitCode> {
    let roots_file = args.ssl_cert_file.unwrap_or_else(|| witness::roots_file(None));
    let mode = if args.offline { WitnessMode::Offline } else { WitnessMode::Online };
    let proxy = witness::open(dir, &roots_file, mode, None)?.proxy;
    let ca_dir = dir.join("ca");
    if !args.listen.ip().is_loopback() {
        tracing::warn!("listening on {}: anyone who reaches it can fetch through this proxy", args.listen);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tracing::info!("upstream roots '{}'", roots_file.display());
        println!("proxy=http://{addr} ca-bundle={}", ca_dir.join(CERT_FILE).display());
        tokio::select! {
            () = proxy.serve(listener) => {}
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}
