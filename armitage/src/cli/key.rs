//! `armitage key generate NAME SECRET PUBLIC` (= `nix-store
//! --generate-binary-cache-key`): an ed25519 key pair in Nix's formats.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::signing::SecretKey;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Generate a signing key pair.
    Generate { name: String, secret_file: PathBuf, public_file: PathBuf },
}

impl KeyCommand {
    pub fn run(self) -> Result<ExitCode> {
        let KeyCommand::Generate { name, secret_file, public_file } = self;
        let secret = SecretKey::generate(&name)?;
        write_new(&secret_file, &secret.to_string(), 0o600)?;
        write_new(&public_file, &secret.to_public_key().to_string(), 0o644)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating '{}'", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing '{}'", path.display()))?;
    Ok(())
}
