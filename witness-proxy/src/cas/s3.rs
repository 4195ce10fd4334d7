//! The S3 CAS backend: objects under `cas/{sha256 hex}` in a bucket (the
//! seed's layout: `cas/`, `traces/`, … side by side with a binary cache's
//! files in the same bucket).
//!
//! Nothing is visible under a name before its bytes are known to hash to
//! it. [`Cas::put_expected`] (what the upload queue uses: the name is known)
//! streams straight to `cas/{name}` and completes the upload only once the
//! bytes hash to the name. A [`Cas::writer`] (name unknown until the end)
//! holds up to one part in memory and then sends it in one PUT under the
//! name; a larger object is sent in parts to `cas/.incoming/{unique}`,
//! copied on the server to its name at commit and the incoming key
//! deleted. A process killed mid-write leaves at most an incomplete
//! multipart upload or an `.incoming/` key, never a name; [`S3Cas::open`]
//! deletes `.incoming/` keys older than [`super::STALE_TEMP_AGE`].

use super::backend::{Cas, CasError, CasWriter, Result};
use super::id::ObjectId;
use super::local::STALE_TEMP_AGE;
use super::verify::VerifyingReader;
use ::s3::{Bucket, Upload};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use store::hash::HashSink;

const PREFIX: &str = "cas/";
const INCOMING: &str = "cas/.incoming/";
const CONTENT_TYPE: &str = "application/octet-stream";

/// A CAS in an S3 bucket.
#[derive(Clone)]
pub struct S3Cas {
    bucket: Bucket,
}

impl S3Cas {
    /// The CAS in `bucket`: checks the bucket answers, and deletes
    /// incoming keys left by writers killed long enough ago.
    pub fn open(bucket: Bucket) -> Result<S3Cas> {
        bucket.check()?;
        let cas = S3Cas::new(bucket);
        let now = std::time::SystemTime::now();
        for stale in cas.bucket.list(INCOMING)? {
            let age = stale.modified.and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if age >= STALE_TEMP_AGE {
                cas.bucket.delete(&stale.key)?;
            }
        }
        Ok(cas)
    }

    /// The CAS in `bucket`, asking nothing of the server until used (a
    /// daemon starts while its bucket is down).
    pub fn new(bucket: Bucket) -> S3Cas {
        S3Cas { bucket }
    }

    /// The key of an object.
    pub fn key(id: &ObjectId) -> String {
        format!("{PREFIX}{id}")
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }
}

fn incoming_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{INCOMING}{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl Cas for S3Cas {
    fn describe(&self) -> String {
        format!("S3 CAS in {}", self.bucket.describe())
    }

    fn writer(&self) -> Result<Box<dyn CasWriter>> {
        let upload = self.bucket.upload(&incoming_key(), CONTENT_TYPE);
        Ok(Box::new(S3Writer { bucket: self.bucket.clone(), upload, hasher: Box::new(ObjectId::hasher()) }))
    }

    fn put_expected(&self, reader: &mut dyn Read, expected: &ObjectId) -> Result<u64> {
        let upload = self.bucket.upload(&S3Cas::key(expected), CONTENT_TYPE);
        let mut writer = S3Writer { bucket: self.bucket.clone(), upload, hasher: Box::new(ObjectId::hasher()) };
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CasError::Source(e)),
            };
            writer
                .write_all(&buf[..n])
                .map_err(|e| CasError::from_io(e, |e| CasError::Write { what: S3Cas::key(expected), source: e }))?;
        }
        let (actual, size) = ObjectId::finish(*writer.hasher);
        if actual != *expected {
            writer.upload.abort();
            return Err(CasError::Mismatch { expected: *expected, actual });
        }
        writer.upload.finish()?;
        Ok(size)
    }

    fn get(&self, id: &ObjectId) -> Result<Option<Box<dyn Read + Send>>> {
        let body = self.bucket.get(&S3Cas::key(id))?;
        Ok(body.map(|body| Box::new(VerifyingReader::new(body, *id)) as Box<dyn Read + Send>))
    }

    fn has(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.bucket.head(&S3Cas::key(id))?.is_some())
    }

    fn size(&self, id: &ObjectId) -> Result<Option<u64>> {
        Ok(self.bucket.head(&S3Cas::key(id))?)
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        let mut ids: Vec<ObjectId> = self
            .bucket
            .list(PREFIX)?
            .into_iter()
            .filter_map(|listed| listed.key.strip_prefix(PREFIX).and_then(|name| name.parse().ok()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn remove(&self, id: &ObjectId) -> Result<bool> {
        let key = S3Cas::key(id);
        if self.bucket.head(&key)?.is_none() {
            return Ok(false);
        }
        self.bucket.delete(&key)?;
        Ok(true)
    }
}

struct S3Writer {
    bucket: Bucket,
    upload: Upload,
    hasher: Box<HashSink>,
}

impl Write for S3Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.upload.write_all(buf)?;
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl S3Writer {
    fn finish(self, expected: Option<&ObjectId>) -> Result<(ObjectId, u64)> {
        let S3Writer { bucket, mut upload, hasher } = self;
        let (id, size) = ObjectId::finish(*hasher);
        if let Some(expected) = expected.filter(|e| **e != id) {
            upload.abort();
            return Err(CasError::Mismatch { expected: *expected, actual: id });
        }
        let key = S3Cas::key(&id);
        if upload.set_key(&key) {
            upload.finish()?;
            return Ok((id, size));
        }
        let incoming = upload.key().to_owned();
        upload.finish()?;
        let copied = bucket.copy(&incoming, &key);
        if let Err(e) = bucket.delete(&incoming) {
            tracing::warn!(key = incoming, error = %e, "cannot delete an incoming object (removed once stale)");
        }
        copied?;
        Ok((id, size))
    }
}

impl CasWriter for S3Writer {
    fn commit(self: Box<Self>) -> Result<(ObjectId, u64)> {
        self.finish(None)
    }

    fn commit_expecting(self: Box<Self>, expected: &ObjectId) -> Result<u64> {
        self.finish(Some(expected)).map(|(_, size)| size)
    }
}
