//! `armitage nar`: `dump` (= `nix-store --dump`), `cat` and `ls`
//! (= `nix nar cat` / `nix nar ls`).

use super::global::GlobalOpts;
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::Value;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use store::nar;

#[derive(Subcommand)]
pub enum NarCommand {
    /// Write the NAR serialisation of a path to standard output.
    Dump { path: PathBuf },
    /// Print the contents of a regular file inside a NAR file.
    Cat { nar: PathBuf, path: String },
    /// List a path inside a NAR file.
    Ls {
        nar: PathBuf,
        path: String,
        /// List subdirectories recursively.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Show type, permissions and size.
        #[arg(short, long)]
        long: bool,
        /// Show directories rather than their contents.
        #[arg(short, long)]
        directory: bool,
        /// Print JSON, as binary caches' `.ls` files describe a NAR.
        #[arg(long)]
        json: bool,
    },
}

impl NarCommand {
    pub fn run(self, _g: &GlobalOpts) -> Result<ExitCode> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match self {
            NarCommand::Dump { path } => {
                local_store::nar_fs::dump(&path, &mut out).with_context(|| format!("dumping '{}'", path.display()))?;
            }
            NarCommand::Cat { nar: file, path } => {
                nar::cat(open(&file)?, &path, &mut out, &nar::Limits::default())
                    .with_context(|| format!("reading '{path}' from '{}'", file.display()))?;
            }
            NarCommand::Ls { nar: file, path, recursive, long, directory, json } => {
                if json {
                    anyhow::ensure!(!directory, "'--directory' is useless with '--json'");
                    nar::write_json_listing(open(&file)?, &path, recursive, &mut out, &nar::Limits::default())
                        .with_context(|| format!("listing '{path}' in '{}'", file.display()))?;
                    writeln!(out)?;
                } else {
                    // Always the full listing: a shallow one leaves the
                    // entries empty, and `-l` needs their type and size.
                    let mut buf = Vec::new();
                    nar::write_json_listing(open(&file)?, &path, true, &mut buf, &nar::Limits::default())
                        .with_context(|| format!("listing '{path}' in '{}'", file.display()))?;
                    let listing: Value = serde_json::from_slice(&buf)?;
                    let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_owned();
                    let opts = TextLs { recursive, long };
                    let is_dir = listing["type"] == "directory";
                    let rel = if is_dir { ".".to_owned() } else { base };
                    opts.show(&mut out, &listing, &rel, directory)?;
                }
            }
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    }
}

fn open(path: &PathBuf) -> Result<BufReader<std::fs::File>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening '{}'", path.display()))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

/// `nix nar ls`'s text output.
struct TextLs {
    recursive: bool,
    long: bool,
}

impl TextLs {
    fn show(&self, out: &mut impl Write, node: &Value, rel: &str, show_directory: bool) -> Result<()> {
        if node["type"] == "directory" && !show_directory {
            self.entries(out, node, rel)
        } else {
            self.line(out, node, rel)
        }
    }

    fn entries(&self, out: &mut impl Write, dir: &Value, rel: &str) -> Result<()> {
        if let Some(entries) = dir["entries"].as_object() {
            for (name, child) in entries {
                self.line(out, child, &format!("{rel}/{name}"))?;
            }
        }
        Ok(())
    }

    fn line(&self, out: &mut impl Write, node: &Value, rel: &str) -> Result<()> {
        let kind = node["type"].as_str().unwrap_or_default();
        if self.long {
            let tp = match kind {
                "regular" if node["executable"] == true => "-r-xr-xr-x",
                "regular" => "-r--r--r--",
                "symlink" => "lrwxrwxrwx",
                _ => "dr-xr-xr-x",
            };
            let size = node["size"].as_u64().unwrap_or(0);
            write!(out, "{tp} {size:>20} {rel}")?;
            if kind == "symlink" {
                write!(out, " -> {}", node["target"].as_str().unwrap_or_default())?;
            }
            writeln!(out)?;
        } else {
            writeln!(out, "{rel}")?;
        }
        if self.recursive && kind == "directory" {
            self.entries(out, node, rel)?;
        }
        Ok(())
    }
}
