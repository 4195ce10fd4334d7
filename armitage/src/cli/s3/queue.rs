//! `armitage s3 queue`: the upload queue as the daemon left it (read from
//! its database; the daemon need not run): what waits, how often it was
//! tried and why it failed, and what was given up.

use super::super::global::GlobalOpts;
use anyhow::{Context, Result};
use armitage::config::Config;
use armitage::upload::queue::{Job, now_ms};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct QueueArgs {
    /// Print a JSON object: `url`, `pending` and `failed` (arrays of jobs).
    #[arg(long)]
    json: bool,
}

pub fn run(g: &GlobalOpts, config: &Config, args: QueueArgs) -> Result<ExitCode> {
    let state_dir = g.state_dir()?;
    let queue = armitage::upload::queue_in(&state_dir)?;
    let jobs = match &queue {
        Some(q) => q.jobs().context("reading the upload queue")?,
        None => Vec::new(),
    };
    let (failed, pending): (Vec<&Job>, Vec<&Job>) = jobs.iter().partition(|j| j.failed);
    if args.json {
        let json = |jobs: &[&Job]| -> Vec<serde_json::Value> {
            jobs.iter()
                .map(|j| {
                    serde_json::json!({
                        "item": j.item.to_string(),
                        "attempts": j.attempts,
                        "added_ms": j.added,
                        "next_try_ms": j.next_try,
                        "last_error": j.last_error,
                    })
                })
                .collect()
        };
        let out = serde_json::json!({ "url": config.s3.url, "pending": json(&pending), "failed": json(&failed) });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &config.s3.url {
        Some(url) => println!("bucket: {url}"),
        None => println!("bucket: none ([s3] url is not set in armitage.toml)"),
    }
    println!("pending: {}, failed: {}", pending.len(), failed.len());
    let now = now_ms();
    for j in &pending {
        let when =
            if j.next_try <= now { "now".to_owned() } else { format!("in {} s", (j.next_try - now + 999) / 1000) };
        match &j.last_error {
            Some(e) => println!("  pending {} (tried {} times, next {when}): {e}", j.item, j.attempts),
            None => println!("  pending {}", j.item),
        }
    }
    for j in &failed {
        println!("  failed {}: {}", j.item, j.last_error.as_deref().unwrap_or("?"));
    }
    Ok(ExitCode::SUCCESS)
}
