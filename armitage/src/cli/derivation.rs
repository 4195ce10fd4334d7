//! `armitage derivation show` (= `nix derivation show`, Nix 2.26's JSON).

use super::global::GlobalOpts;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use store::derivation::{Derivation, show_json};

#[derive(Subcommand)]
pub enum DerivationCommand {
    /// Print derivations as JSON.
    Show {
        /// `.drv` files in the store.
        drvs: Vec<PathBuf>,
    },
}

impl DerivationCommand {
    pub fn run(self, g: &GlobalOpts) -> Result<ExitCode> {
        let DerivationCommand::Show { drvs } = self;
        let store = g.open_store()?;
        let mut parsed = Vec::new();
        for d in &drvs {
            let path = super::global::resolve_store_path(&store, d)?;
            anyhow::ensure!(path.is_derivation(), "'{}' is not a derivation", store.display(&path));
            let real = store.real_path(&path);
            let text = std::fs::read(&real).with_context(|| format!("reading '{}'", real.display()))?;
            let drv = Derivation::parse_at(store.store_dir(), &text, &path)
                .with_context(|| format!("parsing '{}'", store.display(&path)))?;
            parsed.push((path, drv));
        }
        let json = show_json(store.store_dir(), parsed.iter().map(|(p, d)| (p, d)))?;
        println!("{json}");
        Ok(ExitCode::SUCCESS)
    }
}
