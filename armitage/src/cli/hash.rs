//! `armitage hash path|file` (= `nix-hash [--flat]`): the hash of a path's
//! NAR serialisation, or of a file's contents.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use store::hash::{Algorithm, Encoding, HashSink};

#[derive(Subcommand)]
pub enum HashCommand {
    /// Hash the NAR serialisation of paths (`nix-hash PATH`).
    Path(HashArgs),
    /// Hash the contents of regular files (`nix-hash --flat PATH`).
    File(HashArgs),
}

#[derive(Args)]
pub struct HashArgs {
    paths: Vec<PathBuf>,
    /// Hash algorithm: md5, sha1, sha256 or sha512.
    #[arg(long = "type", default_value = "md5")]
    algorithm: String,
    /// Print in Nix's base-32 (nix32).
    #[arg(long, group = "format")]
    base32: bool,
    /// Print in base-16 (the default, as nix-hash).
    #[arg(long, group = "format")]
    base16: bool,
    /// Print in base-64.
    #[arg(long, group = "format")]
    base64: bool,
    /// Print as SRI (`algo-base64`).
    #[arg(long, group = "format")]
    sri: bool,
}

impl HashCommand {
    pub fn run(self) -> Result<ExitCode> {
        let (args, flat) = match self {
            HashCommand::Path(a) => (a, false),
            HashCommand::File(a) => (a, true),
        };
        let algorithm: Algorithm = args.algorithm.parse()?;
        let encoding = if args.base32 {
            Encoding::Nix32
        } else if args.base64 {
            Encoding::Base64
        } else if args.sri {
            Encoding::Sri
        } else {
            Encoding::Base16
        };
        for path in &args.paths {
            let hash = if flat {
                let mut sink = HashSink::new(algorithm);
                let mut f = std::fs::File::open(path).with_context(|| format!("opening '{}'", path.display()))?;
                std::io::copy(&mut f, &mut sink).with_context(|| format!("reading '{}'", path.display()))?;
                sink.finish().0
            } else {
                local_store::nar_fs::hash_path(path, algorithm)
                    .with_context(|| format!("hashing '{}'", path.display()))?
                    .0
            };
            println!("{}", hash.encode(encoding));
        }
        Ok(ExitCode::SUCCESS)
    }
}
