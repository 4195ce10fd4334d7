//! `armitage witness`: the archive the witness proxy keeps of fixed-output
//! fetches (see docs/witness.md): its records listed and shown, the archive
//! verified and collected, the witness CA printed for trusting elsewhere.
//!
//! The archive is `--dir DIR`, else armitage.toml's `[witness] dir`, else
//! `<state dir>/witness`: where the daemon keeps it.

mod proxy;
mod transfer;

use super::global::GlobalOpts;
use anyhow::{Context, Result, bail};
use armitage::witness::retention::{self, output_path};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::hash::Algorithm;
use store::store_path::StorePath;
use witness_proxy::archive::{Archive, GcReport, StoredRecord};
use witness_proxy::redact::redact_url;

#[derive(Args)]
pub struct WitnessArgs {
    /// The witness folder [default: armitage.toml's `[witness] dir`, else <state dir>/witness].
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Armitage's own configuration file, for its `[witness] dir` [env:
    /// ARMITAGE_CONFIG] [default: /etc/armitage/armitage.toml, or
    /// DIR/etc/armitage.toml with --home].
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: WitnessCommand,
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// List the records, oldest first: id, time (UTC), status, method, URL,
    /// body size and sha256, derivation.
    Ls {
        /// Only the records of builds of this derivation (a .drv store path).
        #[arg(long, value_name = "DRV")]
        drv: Option<String>,
        /// Only the records of this URL (with or without its credentials).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Print a JSON array of the records, each with its `id`.
        #[arg(long)]
        json: bool,
    },
    /// Show one record in full, upstream TLS chain included.
    Show {
        /// The record's id, or a prefix of it that no other record has.
        id: String,
        /// Print the record as JSON, with its `id`.
        #[arg(long)]
        json: bool,
    },
    /// Rehash every object and check every record (readable, named after
    /// itself, its body present with its size, indexed); exit status 1 on
    /// any problem.
    Verify,
    /// Remove the records of fixed-output builds whose output path is not
    /// valid in the store, then every object no remaining record names.
    /// Records made for no build (fetches by the daemon itself) and those
    /// whose output path cannot be computed are kept. Best run while no
    /// fixed-output build is fetching: a body the daemon has just stored
    /// may not have its record yet.
    Gc {
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the witness CA certificate (PEM) builds trust; its sha256
    /// fingerprint goes to stderr.
    Ca,
    /// Run the witness proxy on its own (no daemon): records go to the
    /// archive, naming no build. Prints the proxy's URL and the CA file
    /// clients must trust; serves until SIGINT or SIGTERM.
    Proxy(proxy::ProxyArgs),
    /// Copy the witnesses of store paths' closures (their records, the
    /// objects those name, the kept outputs) into a folder of their own,
    /// a witness archive, to carry to a machine without a network.
    Export(transfer::ExportArgs),
    /// Check an exported witness archive whole, then copy what this archive
    /// lacks from it; nothing is copied if any check fails.
    Import(transfer::ImportArgs),
}

impl WitnessArgs {
    pub fn run(self, g: &GlobalOpts) -> Result<ExitCode> {
        let dir = self.archive_dir(g)?;
        match self.command {
            WitnessCommand::Ls { drv, url, json } => ls(&open(&dir)?, drv.as_deref(), url.as_deref(), json),
            WitnessCommand::Show { id, json } => show(g, &open(&dir)?, &id, json),
            WitnessCommand::Verify => verify(&open(&dir)?),
            WitnessCommand::Gc { dry_run } => gc(g, &open(&dir)?, dry_run),
            WitnessCommand::Ca => ca(&dir),
            WitnessCommand::Proxy(args) => proxy::run(&dir, args),
            WitnessCommand::Export(args) => transfer::export(&g.open_store()?, &open(&dir)?, args),
            WitnessCommand::Import(args) => transfer::import(&dir, args),
        }
    }

    /// `--dir`, else armitage.toml's `[witness] dir`, else
    /// `<state dir>/witness` (as the daemon chooses it).
    fn archive_dir(&self, g: &GlobalOpts) -> Result<PathBuf> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        match g.armitage_config(self.config.as_deref())?.witness.dir {
            Some(dir) => Ok(dir),
            None => Ok(g.state_dir()?.join("witness")),
        }
    }
}

/// The archive in `dir`, which must exist: a command that reads it never
/// makes an empty one somewhere unexpected.
fn open(dir: &Path) -> Result<Archive> {
    if !dir.is_dir() {
        bail!(
            "no witness archive at '{}' (the daemon makes it when it starts with the witness enabled; --dir names another)",
            dir.display()
        );
    }
    Archive::open(dir).with_context(|| format!("opening the witness archive at '{}'", dir.display()))
}

fn ls(archive: &Archive, drv: Option<&str>, url: Option<&str>, json: bool) -> Result<ExitCode> {
    let drv = match drv {
        Some(d) => Some(drv_base_name(d)?),
        None => None,
    };
    let url = url.map(redact_url);
    let records: Vec<StoredRecord> = archive
        .all_records()?
        .into_iter()
        .filter(|r| url.as_ref().is_none_or(|u| *u == r.record.url))
        .filter(|r| {
            drv.as_ref().is_none_or(|d| r.record.build.as_ref().is_some_and(|b| base_name(&b.drv) == d.as_str()))
        })
        .collect();
    if json {
        let all: Vec<Value> = records.iter().map(to_json).collect();
        println!("{}", Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    for r in &records {
        println!("{}", summary_line(r));
    }
    Ok(ExitCode::SUCCESS)
}

/// The base name of a `--drv` argument, which must be a .drv store path.
fn drv_base_name(arg: &str) -> Result<String> {
    let base = base_name(arg);
    match StorePath::from_base_name(base) {
        Ok(p) if p.is_derivation() => Ok(base.to_owned()),
        _ => bail!("'{arg}' is not a .drv store path"),
    }
}

fn base_name(path: &str) -> &str {
    let path = path.trim_end_matches('/');
    path.rsplit('/').next().unwrap_or(path)
}

/// One record on one line: id (short), time, status, method, URL, body,
/// derivation, and why it failed when it did.
fn summary_line(r: &StoredRecord) -> String {
    let rec = &r.record;
    let status = rec.status.map_or_else(|| "---".to_owned(), |s| s.to_string());
    let body = match &rec.body {
        Some(b) => format!("{} bytes sha256:{}", b.size, b.sha256.get(..12).unwrap_or(&b.sha256)),
        None => "no body".to_owned(),
    };
    let drv = rec.build.as_ref().map_or("-", |b| b.drv.as_str());
    let mut line = format!(
        "{}  {}  {status} {} {}  {body}  {drv}",
        r.id.get(..12).unwrap_or(&r.id),
        utc_ms(rec.started_ms),
        rec.method,
        rec.url
    );
    if let Some(e) = &rec.error {
        line.push_str("  error: ");
        line.push_str(&e.replace('\n', " "));
    }
    line
}

/// The record's JSON with its `id` added.
fn to_json(r: &StoredRecord) -> Value {
    let mut v = serde_json::to_value(&r.record).expect("a record always converts to JSON");
    if let Value::Object(map) = &mut v {
        map.insert("id".to_owned(), Value::String(r.id.clone()));
    }
    v
}

fn show(g: &GlobalOpts, archive: &Archive, id: &str, json: bool) -> Result<ExitCode> {
    let r = find(archive, id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&r))?);
        return Ok(ExitCode::SUCCESS);
    }
    let rec = &r.record;
    let mut out = vec![
        format!("record:     {}", r.id),
        format!("url:        {}", rec.url),
        format!("method:     {}", rec.method),
        format!("status:     {}", rec.status.map_or_else(|| "none (no response)".to_owned(), |s| s.to_string())),
        format!("started:    {}", utc_ms(rec.started_ms)),
        format!("ended:      {} ({} ms)", utc_ms(rec.ended_ms), rec.ended_ms.saturating_sub(rec.started_ms)),
    ];
    if rec.redirect_hop > 0 || rec.redirected_from.is_some() {
        let from = rec.redirected_from.as_deref().unwrap_or("?");
        out.push(format!("redirected: hop {} from {from}", rec.redirect_hop));
    }
    if let Some(location) = &rec.location {
        out.push(format!("location:   {location}"));
    }
    out.push(match &rec.body {
        Some(b) => format!("body:       {} bytes, sha256 {}", b.size, b.sha256),
        None => "body:       none (not received whole)".to_owned(),
    });
    if let Some(e) = &rec.error {
        out.push(format!("error:      {}", e.replace('\n', " ")));
    }
    match &rec.build {
        Some(b) => {
            out.push(format!("derivation: {}", b.drv));
            out.push(format!("output:     {}, declared {} ({})", b.output, b.output_hash, b.output_hash_mode));
            if let Ok(store_dir) = g.store_dir()
                && let Ok(path) = output_path(&store_dir, b)
            {
                out.push(format!("out path:   {}", store_dir.display(&path)));
            }
        }
        None => out.push("derivation: none (not made for a build)".to_owned()),
    }
    if rec.headers.is_empty() {
        out.push("headers:    none".to_owned());
    } else {
        out.push("headers:".to_owned());
        out.extend(rec.headers.iter().map(|(k, v)| format!("  {k}: {v}")));
    }
    if rec.tls_chain.is_empty() {
        out.push("tls chain:  none (plain HTTP, or no connection)".to_owned());
    } else {
        out.push("tls chain (leaf first):".to_owned());
        for (i, c) in rec.tls_chain.iter().enumerate() {
            out.push(format!("  [{i}] subject: {}", c.subject));
            out.push(format!("      issuer:  {}", c.issuer));
            out.push(format!("      valid:   {} to {}", utc_s(c.not_before), utc_s(c.not_after)));
            out.push(format!("      sha256:  {}", c.sha256));
        }
    }
    println!("{}", out.join("\n"));
    Ok(ExitCode::SUCCESS)
}

/// The record of this id, or of the one id this prefix starts.
fn find(archive: &Archive, id: &str) -> Result<StoredRecord> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        bail!("'{}' is not a record id (lower-case hex)", id.escape_debug());
    }
    if id.len() == 64 {
        return match archive.record(id)? {
            Some(record) => Ok(StoredRecord { id: id.to_owned(), record }),
            None => bail!("no record {id} in the witness archive at '{}'", archive.dir().display()),
        };
    }
    let mut matching: Vec<StoredRecord> = archive.all_records()?.into_iter().filter(|r| r.id.starts_with(id)).collect();
    match matching.len() {
        0 => bail!("no record starting with {id} in the witness archive at '{}'", archive.dir().display()),
        1 => Ok(matching.remove(0)),
        n => bail!("{n} records start with {id}; give more of the id"),
    }
}

fn verify(archive: &Archive) -> Result<ExitCode> {
    let report = archive.verify()?;
    for problem in &report.problems {
        println!("{problem}");
    }
    let problems = match report.problems.len() {
        0 => "no problems".to_owned(),
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    println!("{} objects and {} records checked: {problems}", report.objects_checked, report.records_checked);
    Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn gc(g: &GlobalOpts, archive: &Archive, dry_run: bool) -> Result<ExitCode> {
    let report = retention::collect(archive, &g.open_store()?, dry_run)?;
    print_gc_report(&report, dry_run);
    Ok(ExitCode::SUCCESS)
}

fn print_gc_report(report: &GcReport, dry_run: bool) {
    let (removed, freed) = if dry_run { ("would be removed", "would be freed") } else { ("removed", "freed") };
    println!("records: {} kept, {} {removed}", report.records_kept, report.records_removed);
    println!("objects: {} kept, {} {removed}", report.objects_kept, report.objects_removed);
    println!("{} bytes {freed}", report.bytes_freed);
}

fn ca(dir: &Path) -> Result<ExitCode> {
    let path = dir.join("ca").join(witness_proxy::ca::CERT_FILE);
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no witness CA at '{}' (the daemon makes it when it starts with the witness enabled)", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading '{}'", path.display())),
    };
    let der = pem_certificate(&pem).with_context(|| format!("'{}' holds no PEM certificate", path.display()))?;
    let fingerprint = Algorithm::Sha256.digest(&der).to_base16().to_uppercase();
    let pairs: Vec<&str> = (0..fingerprint.len()).step_by(2).map(|i| &fingerprint[i..i + 2]).collect();
    print!("{pem}");
    eprintln!("sha256 Fingerprint={}", pairs.join(":"));
    Ok(ExitCode::SUCCESS)
}

/// The DER of the first certificate in `pem`.
fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    let (_, rest) = pem.split_once("-----BEGIN CERTIFICATE-----")?;
    let (body, _) = rest.split_once("-----END CERTIFICATE-----")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    data_encoding::BASE64.decode(b64.as_bytes()).ok()
}

/// Unix milliseconds as UTC, to the second: `2026-12-05T10:00:00Z`.
fn utc_ms(ms: u64) -> String {
    utc_s(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

/// Unix seconds as UTC: `2026-12-05T10:00:00Z` (proleptic Gregorian).
fn utc_s(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_s(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_s(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_s(-1), "1969-12-31T23:59:59Z");
        assert_eq!(utc_ms(1_700_000_000_999), "2023-11-14T22:13:20Z");
    }
}
