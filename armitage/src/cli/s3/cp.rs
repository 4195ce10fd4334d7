//! `armitage s3 cp`: a file, or a folder's files, to or from a bucket, with
//! the client the daemon's uploads use (what bench/s3.py measures against
//! `aws s3 cp`). An object's URL is the bucket's as CppNix spells it with
//! the key as its path: `s3://bucket/some/key?endpoint=…&region=…`.

use anyhow::{Context, Result, bail};
use clap::Args;
use s3::Bucket;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Args)]
pub struct CpArgs {
    /// What to copy: a local file (a folder with --recursive), or an
    /// object `s3://bucket/key?…` (a prefix with --recursive).
    from: String,
    /// Where to: an object or a local path, the other side of FROM.
    to: String,
    /// Copy every file under the folder, or every object under the prefix.
    #[arg(long)]
    recursive: bool,
    /// Objects in flight at once with --recursive (awscli's default is 10).
    #[arg(long, default_value_t = 10, value_name = "N")]
    jobs: usize,
}

/// An object's place: its bucket, and its key (a prefix with --recursive).
struct Remote {
    bucket: Bucket,
    key: String,
}

impl Remote {
    fn parse(arg: &str) -> Result<Option<Remote>> {
        let Some(rest) = arg.strip_prefix("s3://") else { return Ok(None) };
        let (path, query) = rest.split_once('?').map_or((rest, None), |(p, q)| (p, Some(q)));
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        let url = match query {
            Some(q) => format!("s3://{bucket}?{q}"),
            None => format!("s3://{bucket}"),
        };
        Ok(Some(Remote { bucket: Bucket::from_url(&url)?, key: key.to_owned() }))
    }
}

pub fn run(args: CpArgs) -> Result<ExitCode> {
    let (count, bytes) = match (Remote::parse(&args.from)?, Remote::parse(&args.to)?) {
        (Some(_), Some(_)) => bail!("cannot copy '{}' to '{}': one side must be a local path", args.from, args.to),
        (None, None) => bail!("cannot copy '{}' to '{}': one side must be an s3:// URL", args.from, args.to),
        (None, Some(to)) if args.recursive => {
            let from = Path::new(&args.from);
            let files = files_under(from)?;
            let jobs = files.into_iter().map(|(rel, path)| (path, join_key(&to.key, &rel))).collect();
            in_parallel(jobs, args.jobs, |(path, key)| upload(&to.bucket, path, key))?
        }
        (None, Some(to)) => {
            let key = if to.key.is_empty() || to.key.ends_with('/') {
                let name = Path::new(&args.from).file_name().context("the source names no file")?;
                format!("{}{}", to.key, name.to_string_lossy())
            } else {
                to.key.clone()
            };
            (1, upload(&to.bucket, &PathBuf::from(&args.from), &key)?)
        }
        (Some(from), None) if args.recursive => {
            let prefix = if from.key.is_empty() || from.key.ends_with('/') {
                from.key.clone()
            } else {
                format!("{}/", from.key)
            };
            let listed = from.bucket.list(&prefix)?;
            let to = Path::new(&args.to);
            let jobs = listed.into_iter().map(|o| (to.join(&o.key[prefix.len()..]), o.key)).collect();
            in_parallel(jobs, args.jobs, |(path, key)| download(&from.bucket, key, path))?
        }
        (Some(from), None) => {
            let mut to = PathBuf::from(&args.to);
            if to.is_dir() {
                to.push(from.key.rsplit('/').next().unwrap_or(&from.key));
            }
            (1, download(&from.bucket, &from.key, &to)?)
        }
    };
    eprintln!("copied {count} file(s), {bytes} bytes");
    Ok(ExitCode::SUCCESS)
}

fn join_key(prefix: &str, rel: &str) -> String {
    match prefix {
        "" => rel.to_owned(),
        p if p.ends_with('/') => format!("{p}{rel}"),
        p => format!("{p}/{rel}"),
    }
}

fn upload(bucket: &Bucket, path: &Path, key: &str) -> Result<u64> {
    let mut file = File::open(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    Ok(bucket.put(key, &mut file, "application/octet-stream")?)
}

/// Writes the object into a temporary file beside `path`, renamed into
/// place once whole: a failed copy leaves no partial file. Not synced to
/// disk, as neither cp(1) nor `aws s3 cp` syncs.
fn download(bucket: &Bucket, key: &str, path: &Path) -> Result<u64> {
    let mut body =
        bucket.get(key)?.with_context(|| format!("cannot copy '{key}' in {}: no such object", bucket.describe()))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create '{}'", dir.display()))?;
    let name = path.file_name().with_context(|| format!("'{}' names no file", path.display()))?;
    let temp = dir.join(format!(".{}.part-{}", name.to_string_lossy(), std::process::id()));
    let copied = File::create(&temp)
        .and_then(|mut file| std::io::copy(&mut body, &mut file))
        .and_then(|size| std::fs::rename(&temp, path).map(|()| size));
    if copied.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let size = copied.with_context(|| format!("cannot copy '{key}' to '{}'", path.display()))?;
    Ok(size)
}

/// Every file under `root`, with its path relative to it (`/`-separated).
fn files_under(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).with_context(|| format!("cannot read '{}'", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read '{}'", dir.display()))?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `copy` on every job with `threads` at once; the count and the
/// bytes copied, or the first error.
fn in_parallel<J: Send>(jobs: Vec<J>, threads: usize, copy: impl Fn(&J) -> Result<u64> + Sync) -> Result<(u64, u64)> {
    let queue = Mutex::new(jobs.into_iter());
    let totals = Mutex::new((0u64, 0u64));
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    if first_error.lock().unwrap().is_some() {
                        return;
                    }
                    let Some(job) = queue.lock().unwrap().next() else { return };
                    match copy(&job) {
                        Ok(bytes) => {
                            let mut t = totals.lock().unwrap();
                            t.0 += 1;
                            t.1 += bytes;
                        }
                        Err(e) => {
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(totals.into_inner().unwrap()),
    }
}
