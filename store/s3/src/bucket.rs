//! [`Bucket`]: one bucket on one server, with the blocking operations the
//! binary cache, the witness CAS and the upload queue need (streamed
//! writes, [`Bucket::upload`] and [`Bucket::put`], are `upload`'s).

use crate::body::BodyReader;
use crate::runtime::block;
use crate::{Credentials, Error, S3Url};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// How requests are made.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Objects up to this size go in one PUT; larger ones in parts of this
    /// size (S3 wants at least 5 MiB but for the last).
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub concurrency: usize,
    /// Attempts per request (the SDK's standard retries: exponential
    /// backoff with jitter on throttling, 5xx and connection errors).
    pub max_attempts: u32,
    pub connect_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { part_size: 8 << 20, concurrency: 4, max_attempts: 4, connect_timeout: Duration::from_secs(5) }
    }
}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// One bucket. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct Bucket {
    pub(crate) client: aws_sdk_s3::Client,
    pub(crate) name: String,
    /// For messages: `s3://bucket at http://…`.
    pub(crate) at: String,
    pub(crate) tuning: Tuning,
}

impl Bucket {
    /// The bucket of an `s3://` URL, with credentials [`Credentials::find`]
    /// finds for its profile. Nothing is asked of the server yet. One
    /// client per URL in a process (substituters are set up per session).
    pub fn from_url(url: &str) -> Result<Bucket, Error> {
        static OPENED: LazyLock<Mutex<HashMap<String, Bucket>>> = LazyLock::new(Mutex::default);
        if let Some(bucket) = OPENED.lock().unwrap_or_else(|e| e.into_inner()).get(url) {
            return Ok(bucket.clone());
        }
        let parsed = S3Url::parse(url)?;
        let credentials = Credentials::find(parsed.profile.as_deref())?;
        let bucket = Bucket::open(&parsed, credentials, Tuning::default());
        OPENED.lock().unwrap_or_else(|e| e.into_inner()).insert(url.to_owned(), bucket.clone());
        Ok(bucket)
    }

    pub fn open(url: &S3Url, credentials: Credentials, tuning: Tuning) -> Bucket {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let credentials = aws_sdk_s3::config::Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            credentials.session_token,
            None,
            "armitage",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(url.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(true)
            .retry_config(RetryConfig::standard().with_max_attempts(tuning.max_attempts.max(1)))
            .timeout_config(TimeoutConfig::builder().connect_timeout(tuning.connect_timeout).build())
            // Checksums only where S3 requires them: S3-compatible servers
            // differ in which they accept, and the bytes are hashed anyway.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &url.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Bucket {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            name: url.bucket.clone(),
            at: url.to_string(),
            tuning,
        }
    }

    /// `s3://bucket at http://…`, for messages.
    pub fn describe(&self) -> &str {
        &self.at
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Asks the server whether the bucket is there and the credentials
    /// may use it: one clear error when not.
    pub fn check(&self) -> Result<(), Error> {
        let request = self.client.head_bucket().bucket(&self.name);
        block(request.send()).map(drop).map_err(|e| Error::request("use", "", &self.at, e))
    }

    /// The object's size, `None` when there is no such key.
    pub fn head(&self, key: &str) -> Result<Option<u64>, Error> {
        let request = self.client.head_object().bucket(&self.name).key(key);
        match block(request.send()) {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(Error::request("HEAD", key, &self.at, e)),
        }
    }

    /// The object's bytes as they arrive, `None` when there is no such key.
    pub fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, Error> {
        let request = self.client.get_object().bucket(&self.name).key(key);
        match block(request.send()) {
            Ok(out) => Ok(Some(Box::new(BodyReader::new(out.body, key, &self.at)))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(Error::request("GET", key, &self.at, e)),
        }
    }

    /// Writes (or replaces) `key` with `bytes`, in one PUT.
    pub fn put_bytes(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), Error> {
        let request = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .content_type(content_type)
            .content_length(bytes.len() as i64)
            .body(ByteStream::from(bytes));
        block(request.send()).map(drop).map_err(|e| Error::request("PUT", key, &self.at, e))
    }

    /// Copies `from` to `to` on the server (Garage shares the blocks).
    pub fn copy(&self, from: &str, to: &str) -> Result<(), Error> {
        let request = self.client.copy_object().bucket(&self.name).key(to).copy_source(format!("{}/{from}", self.name));
        block(request.send()).map(drop).map_err(|e| Error::request("copy into", to, &self.at, e))
    }

    /// Deletes `key`; deleting a missing key succeeds (S3 says nothing).
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        let request = self.client.delete_object().bucket(&self.name).key(key);
        block(request.send()).map(drop).map_err(|e| Error::request("DELETE", key, &self.at, e))
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request =
                self.client.list_objects_v2().bucket(&self.name).prefix(prefix).set_continuation_token(token.take());
            let page = block(request.send()).map_err(|e| Error::request("list", prefix, &self.at, e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    let modified = object.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok());
                    listed.push(Listed {
                        key: key.to_owned(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        modified,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}
