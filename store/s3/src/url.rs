//! `s3://` store URLs, as CppNix's S3 binary-cache store reads them:
//! `s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http&profile=P`.
//! `endpoint` may also be a whole URL (`http://127.0.0.1:3900`), as newer
//! CppNix releases accept; `scheme` (default `https`) applies to an
//! endpoint without one. Without an endpoint the bucket is on AWS in
//! `region` (default `us-east-1`). Addressing is always path-style.
//! Parameters of the binary cache (`compression`, `secret-key`, …) are
//! left to whoever reads them.

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub region: String,
    /// Where the server is (scheme, host and port); `None`: AWS.
    pub endpoint: Option<String>,
    /// The credentials profile (`[profile]` in a credentials file).
    pub profile: Option<String>,
}

impl S3Url {
    pub fn parse(url: &str) -> Result<S3Url, Error> {
        let bad = |why: &str| Error::BadUrl { url: url.to_owned(), why: why.to_owned() };
        let rest = url.strip_prefix("s3://").ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() {
            return Err(bad("it names no bucket"));
        }
        if bucket.contains('/') {
            return Err(bad("a bucket name has no '/' (keys under a prefix are not supported)"));
        }
        let valid = bucket.len() <= 63
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
        if !valid {
            return Err(bad("a bucket name is up to 63 lower-case letters, digits, '-' and '.'"));
        }
        let mut s3 = S3Url { bucket: bucket.to_owned(), region: "us-east-1".into(), endpoint: None, profile: None };
        let mut scheme = "https".to_owned();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "region" if !value.is_empty() => s3.region = value.to_owned(),
                "endpoint" if !value.is_empty() => s3.endpoint = Some(value.to_owned()),
                "scheme" => match value {
                    "http" | "https" => scheme = value.to_owned(),
                    _ => return Err(bad(&format!("scheme '{value}' is neither http nor https"))),
                },
                "profile" if !value.is_empty() => s3.profile = Some(value.to_owned()),
                "region" | "endpoint" | "profile" => return Err(bad(&format!("parameter '{key}' is empty"))),
                _ => {}
            }
        }
        if let Some(endpoint) = &mut s3.endpoint
            && !endpoint.contains("://")
        {
            *endpoint = format!("{scheme}://{endpoint}");
        }
        Ok(s3)
    }

    /// `s3://bucket`, the store's URL without parameters (CppNix's `getUri`).
    pub fn base(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Some(endpoint) => write!(f, "s3://{} at {endpoint}", self.bucket),
            None => write!(f, "s3://{} in {}", self.bucket, self.region),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_cppnix_spells_them() {
        let u = S3Url::parse("s3://cache?region=garage&endpoint=127.0.0.1:3900&scheme=http&compression=zstd").unwrap();
        assert_eq!(u.bucket, "cache");
        assert_eq!(u.region, "garage");
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(u.to_string(), "s3://cache at http://127.0.0.1:3900");
        let aws = S3Url::parse("s3://nix-cache/?profile=ci").unwrap();
        assert_eq!((aws.region.as_str(), aws.endpoint, aws.profile.as_deref()), ("us-east-1", None, Some("ci")));
        let full = S3Url::parse("s3://b?endpoint=https://r2.example:8443").unwrap();
        assert_eq!(full.endpoint.as_deref(), Some("https://r2.example:8443"));
        assert_eq!(S3Url::parse("s3://b?endpoint=h").unwrap().endpoint.as_deref(), Some("https://h"));
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("https://b", "does not start with s3://"),
            ("s3://", "names no bucket"),
            ("s3://b/prefix", "no '/'"),
            ("s3://Bucket", "lower-case"),
            ("s3://b?scheme=ftp", "neither http nor https"),
            ("s3://b?endpoint=", "'endpoint' is empty"),
        ] {
            let err = S3Url::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
