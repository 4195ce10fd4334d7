//! The bucket client against a real S3 server (Garage, one node on
//! loopback): objects of one request and of several parts, listings past
//! one page, and the one-line errors of bad credentials, a missing bucket
//! and a stopped server.

use s3::{Bucket, Credentials, S3Url, Tuning};
use std::io::Read;
use testkit::garage::Garage;

const PART: usize = 5 << 20;

fn bucket_on(garage: &Garage, name: &str) -> Bucket {
    let url = S3Url::parse(&garage.url(name)).unwrap();
    let credentials = Credentials::from_file(&garage.credentials_file(), "default").unwrap();
    Bucket::open(&url, credentials, Tuning { part_size: PART, max_attempts: 2, ..Tuning::default() })
}

use testkit::noise as bytes;

fn get(bucket: &Bucket, key: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    bucket.get(key).unwrap()?.read_to_end(&mut out).unwrap();
    Some(out)
}

#[test]
fn objects_in_one_request_and_in_parts_round_trip() {
    let Some(garage) = Garage::start() else { return };
    let bucket = bucket_on(&garage, &garage.bucket("objects"));
    bucket.check().unwrap();
    for (key, len) in [("empty", 0), ("small", 1000), ("one-part", PART), ("parts", 3 * PART + 17)] {
        let data = bytes(len, len as u64);
        let mut upload = bucket.upload(key, "application/octet-stream");
        for chunk in data.chunks(1_000_003) {
            std::io::Write::write_all(&mut upload, chunk).unwrap();
        }
        assert_eq!(upload.is_multipart(), len > PART, "{key}");
        assert_eq!(upload.finish().unwrap(), len as u64);
        assert_eq!(bucket.head(key).unwrap(), Some(len as u64), "{key}");
        assert!(get(&bucket, key).unwrap() == data, "{key} came back different");
    }
    assert_eq!(bucket.head("never").unwrap(), None);
    assert!(bucket.get("never").unwrap().is_none());

    // Dropped or aborted halfway: nothing under the key.
    let mut dropped = bucket.upload("dropped", "application/octet-stream");
    std::io::Write::write_all(&mut dropped, &bytes(2 * PART, 1)).unwrap();
    assert!(dropped.is_multipart());
    drop(dropped);
    let mut aborted = bucket.upload("aborted", "application/octet-stream");
    std::io::Write::write_all(&mut aborted, &bytes(10, 1)).unwrap();
    aborted.abort();
    assert_eq!((bucket.head("dropped").unwrap(), bucket.head("aborted").unwrap()), (None, None));

    bucket.copy("small", "copied").unwrap();
    assert_eq!(get(&bucket, "copied"), get(&bucket, "small"));
    bucket.delete("copied").unwrap();
    bucket.delete("copied").unwrap();
    assert_eq!(bucket.head("copied").unwrap(), None);
}

#[test]
fn a_listing_goes_past_one_page() {
    let Some(garage) = Garage::start() else { return };
    let bucket = bucket_on(&garage, &garage.bucket("many"));
    let keys: Vec<String> = (0..1005).map(|i| format!("p/{i:05}")).collect();
    std::thread::scope(|s| {
        for chunk in keys.chunks(100) {
            let bucket = &bucket;
            s.spawn(move || {
                for key in chunk {
                    bucket.put_bytes(key, key.as_bytes().to_vec(), "text/plain").unwrap();
                }
            });
        }
    });
    bucket.put_bytes("q/other", Vec::new(), "text/plain").unwrap();
    let listed: Vec<String> = bucket.list("p/").unwrap().into_iter().map(|l| l.key).collect();
    assert_eq!(listed, keys);
}

#[test]
fn bad_credentials_a_missing_bucket_and_a_stopped_server_say_so_in_one_line() {
    let Some(mut garage) = Garage::start() else { return };
    let name = garage.bucket("there");
    let url = S3Url::parse(&garage.url(&name)).unwrap();

    let wrong =
        Credentials { access_key_id: garage.key_id.clone(), secret_access_key: "0".repeat(64), session_token: None };
    let err = Bucket::open(&url, wrong, Tuning::default()).put_bytes("k", b"x".to_vec(), "text/plain").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("access denied") && text.contains("s3://there at http://127.0.0.1:"), "{text}");
    assert!(!text.contains('\n') && !err.is_unavailable(), "{text}");

    let missing = bucket_on(&garage, "not-there");
    let text = missing.check().unwrap_err().to_string();
    assert!(text.contains("the bucket does not exist"), "{text}");
    let text = missing.put_bytes("k", b"x".to_vec(), "text/plain").unwrap_err().to_string();
    assert!(text.contains("cannot PUT 'k' in s3://not-there") && text.contains("does not exist"), "{text}");

    let bucket = bucket_on(&garage, &name);
    bucket.put_bytes("kept", b"kept".to_vec(), "text/plain").unwrap();
    garage.stop();
    let err = bucket.head("kept").unwrap_err();
    let text = err.to_string();
    assert!(err.is_unavailable() && text.contains("cannot be reached") && !text.contains('\n'), "{text}");
    garage.resume();
    assert_eq!(get(&bucket, "kept").as_deref(), Some(&b"kept"[..]), "what was there before the stop");
}
