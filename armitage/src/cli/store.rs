//! `armitage store`: add, verify, gc, optimise (= `nix-store --add`,
//! `--add-fixed`, `--verify`, `--gc`, `--delete`, `--optimise`).

use super::global::GlobalOpts;
use super::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use local_store::{AddOptions, GcAction, GcOptions};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use store::content_address::FileIngestionMethod;
use store::hash::Algorithm;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Add files or trees to the store and print their paths.
    Add(AddArgs),
    /// Check the database against the store directory, and optionally contents.
    Verify {
        /// Rehash every path and compare with its registered NAR hash.
        #[arg(long)]
        check_contents: bool,
        /// Fix what can be fixed locally.
        #[arg(long)]
        repair: bool,
    },
    /// Collect garbage.
    Gc(GcArgs),
    /// Hard-link identical files.
    Optimise,
}

#[derive(Args)]
pub struct AddArgs {
    paths: Vec<PathBuf>,
    /// Name of the store path (default: the file's name).
    #[arg(long)]
    name: Option<String>,
    /// Add as a fixed-output path with this hash algorithm (`nix-store
    /// --add-fixed ALGO`): flat (file contents) unless `--recursive`.
    #[arg(long, value_name = "ALGO")]
    fixed: Option<String>,
    /// With `--fixed`: hash the NAR serialisation.
    #[arg(long, requires = "fixed")]
    recursive: bool,
    /// Replace the path even if it is already valid.
    #[arg(long)]
    repair: bool,
}

#[derive(Args)]
pub struct GcArgs {
    /// Print the roots and what they keep alive, delete nothing.
    #[arg(long, group = "mode")]
    print_roots: bool,
    /// Print the paths that would be kept.
    #[arg(long, group = "mode")]
    print_live: bool,
    /// Print the paths that would be deleted.
    #[arg(long, group = "mode")]
    print_dead: bool,
    /// Delete only these paths (an error if one is alive).
    #[arg(long, group = "mode", num_args = 1.., value_name = "PATH")]
    delete: Vec<PathBuf>,
    /// With `--delete`: ignore the permanent and runtime roots.
    #[arg(long, requires = "delete")]
    ignore_liveness: bool,
    /// Stop after freeing this many bytes.
    #[arg(long, value_name = "BYTES")]
    max_freed: Option<u64>,
}

impl StoreCommand {
    pub fn run(self, g: &GlobalOpts) -> Result<ExitCode> {
        match self {
            StoreCommand::Add(a) => add(g, a),
            StoreCommand::Verify { check_contents, repair } => verify(g, check_contents, repair),
            StoreCommand::Gc(a) => gc(g, a),
            StoreCommand::Optimise => optimise(g),
        }
    }
}

fn add(g: &GlobalOpts, args: AddArgs) -> Result<ExitCode> {
    let store = g.open_store()?;
    let (method, algorithm) = match &args.fixed {
        None => (FileIngestionMethod::Recursive, Algorithm::Sha256),
        Some(a) => {
            let method = if args.recursive { FileIngestionMethod::Recursive } else { FileIngestionMethod::Flat };
            (method, a.parse()?)
        }
    };
    if args.name.is_some() && args.paths.len() > 1 {
        bail!("--name needs exactly one path");
    }
    for path in &args.paths {
        let name = match &args.name {
            Some(n) => n.clone(),
            None => path
                .file_name()
                .with_context(|| format!("'{}' has no file name to name the store path after", path.display()))?
                .to_string_lossy()
                .into_owned(),
        };
        let info = store
            .add_path(path, &name, method, algorithm, AddOptions { repair: args.repair })
            .with_context(|| format!("adding '{}' to the store", path.display()))?;
        println!("{}", store.display(&info.path));
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(g: &GlobalOpts, check_contents: bool, repair: bool) -> Result<ExitCode> {
    let store = g.open_store()?;
    eprintln!("reading the Nix store...");
    let progress = Progress::new("checking store hashes");
    let report = store.verify_store(check_contents, repair, &mut |done, total| progress.update(done, total))?;
    progress.finish();
    for note in &report.notes {
        eprintln!("{note}");
    }
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    if report.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("warning: not all store errors were fixed");
        Ok(ExitCode::FAILURE)
    }
}

fn gc(g: &GlobalOpts, args: GcArgs) -> Result<ExitCode> {
    let store = g.open_store()?;
    if args.print_roots {
        // Sorted by link, as `nix-store --gc --print-roots` prints them.
        let mut by_link = BTreeSet::new();
        for (path, links) in store.find_roots(false)? {
            for link in links {
                by_link.insert((link, store.display(&path)));
            }
        }
        for (link, path) in by_link {
            println!("{link} -> {path}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let action = if args.print_live {
        GcAction::ReturnLive
    } else if args.print_dead {
        GcAction::ReturnDead
    } else if !args.delete.is_empty() {
        let mut paths = BTreeSet::new();
        for p in &args.delete {
            paths.insert(super::global::resolve_store_path(&store, p)?);
        }
        GcAction::DeleteSpecific(paths)
    } else {
        GcAction::DeleteDead
    };
    let printing = matches!(action, GcAction::ReturnLive | GcAction::ReturnDead);
    let mut opts = GcOptions::new(action);
    opts.ignore_liveness = args.ignore_liveness;
    if let Some(m) = args.max_freed {
        opts.max_freed = m;
    }
    let progress = Progress::spinner("collecting garbage");
    let results = store.collect_garbage(&opts, &mut |p| progress.tick(p))?;
    progress.finish();
    if printing {
        for p in &results.paths {
            println!("{p}");
        }
    } else {
        println!("{} store paths deleted, {} freed", results.paths.len(), show_bytes(results.bytes_freed));
    }
    Ok(ExitCode::SUCCESS)
}

fn optimise(g: &GlobalOpts) -> Result<ExitCode> {
    let store = g.open_store()?;
    let progress = Progress::new("optimising");
    let stats = store.optimise_store(&mut |done, total| progress.update(done, total))?;
    progress.finish();
    println!("{} freed by hard-linking {} files", show_bytes(stats.bytes_freed), stats.files_linked);
    Ok(ExitCode::SUCCESS)
}

/// Bytes as CppNix's `showBytes`: MiB with two decimals.
pub fn show_bytes(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}
