//! The CAS conformance suite, written once and run against every backend:
//! each check is one rstest function with one case per backend, each case
//! on a fresh, empty CAS. A new backend adds a [`Backend`] variant (with
//! its way of tampering with a stored object) and a `#[case]` to the
//! template below; it is done when every check passes.
//!
//! Sizes are chosen to cross the S3 backend's part size (5 MiB here):
//! objects written in one PUT and in several parts both pass every check.

use rstest::rstest;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use testkit::garage::Garage;
use witness_proxy::cas::{Cas, CasError, LocalCas, ObjectId, S3Cas};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Local,
    /// A bucket on a real S3 server (Garage), parts of 5 MiB.
    S3,
}

/// The part size of the S3 case: S3's smallest.
const PART: usize = 5 << 20;

/// Replaces an object's stored bytes behind the backend's back.
type Tamper = Box<dyn Fn(&ObjectId, &[u8])>;

/// A fresh CAS of one backend, with what keeps it alive.
struct Subject {
    cas: Arc<dyn Cas>,
    tamper: Tamper,
    _dir: testkit::TempDir,
    _garage: Option<Garage>,
}

impl Backend {
    /// `None`: the backend's server is not there (the test says why).
    fn open(self) -> Option<Subject> {
        let dir = testkit::TempDir::new();
        Some(match self {
            Backend::Local => {
                let local = Arc::new(LocalCas::open(dir.path()).unwrap());
                let cas: Arc<dyn Cas> = local.clone();
                let tamper = Box::new(move |id: &ObjectId, bytes: &[u8]| {
                    let path = local.object_path(id);
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
                    fs::write(&path, bytes).unwrap();
                });
                Subject { cas, tamper, _dir: dir, _garage: None }
            }
            Backend::S3 => {
                let garage = Garage::start()?;
                let url = s3::S3Url::parse(&garage.url(&garage.bucket("cas"))).unwrap();
                let credentials = s3::Credentials::from_file(&garage.credentials_file(), "default").unwrap();
                let tuning = s3::Tuning { part_size: PART, ..s3::Tuning::default() };
                let bucket = s3::Bucket::open(&url, credentials, tuning);
                let cas: Arc<dyn Cas> = Arc::new(S3Cas::open(bucket.clone()).unwrap());
                let tamper = Box::new(move |id: &ObjectId, bytes: &[u8]| {
                    bucket.put_bytes(&S3Cas::key(id), bytes.to_vec(), "application/octet-stream").unwrap();
                });
                Subject { cas, tamper, _dir: dir, _garage: Some(garage) }
            }
        })
    }
}

/// The template: one rstest function per check, one case per backend.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {$(
        #[rstest]
        #[case::local(Backend::Local)]
        #[case::s3(Backend::S3)]
        fn $check(#[case] backend: Backend) {
            let Some(subject) = backend.open() else { return };
            checks::$check(&subject);
        }
    )*};
}

conformance!(
    round_trip_is_byte_identical,
    a_missing_object_is_none,
    has_list_and_remove,
    concurrent_puts_of_the_same_bytes_all_succeed,
    tampered_bytes_are_refused_at_end_of_stream_and_by_verify,
    a_dropped_writer_leaves_nothing,
    put_expected_refuses_a_mismatch_and_keeps_nothing,
    a_failing_source_keeps_nothing,
);

use testkit::noise as bytes;

fn read_all(cas: &dyn Cas, id: &ObjectId) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    cas.get(id).unwrap().expect("the object is there").read_to_end(&mut out)?;
    Ok(out)
}

mod checks {
    use super::*;

    pub fn round_trip_is_byte_identical(s: &Subject) {
        let cas = s.cas.as_ref();
        for data in [Vec::new(), b"hello".to_vec(), bytes(100_003, 1)] {
            let (id, size) = cas.put(&mut &data[..]).unwrap();
            assert_eq!((id, size), (ObjectId::of(&data), data.len() as u64));
            assert_eq!(read_all(cas, &id).unwrap(), data);
            assert_eq!(cas.size(&id).unwrap(), Some(data.len() as u64));
            cas.verify(&id).unwrap();
        }

        // More than two parts, written in odd-sized chunks.
        let big = bytes(2 * PART + 12_345, 2);
        let mut w = cas.writer().unwrap();
        let mut rest = &big[..];
        for chunk in [1usize, 7, 4093, 65_537, 3, 1_048_583].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*chunk).min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        let (id, size) = w.commit().unwrap();
        assert_eq!((id, size), (ObjectId::of(&big), big.len() as u64));
        assert!(cas.has(&id).unwrap());
        let back = read_all(cas, &id).unwrap();
        assert!(back == big, "the object of more than two parts came back different");
    }

    pub fn a_missing_object_is_none(s: &Subject) {
        let cas = s.cas.as_ref();
        let id = ObjectId::of(b"never stored");
        assert!(cas.get(&id).unwrap().is_none());
        assert!(!cas.has(&id).unwrap());
        assert_eq!(cas.size(&id).unwrap(), None);
        assert!(!cas.remove(&id).unwrap());
        assert!(matches!(cas.verify(&id), Err(CasError::Missing { id: i }) if i == id));
        assert!(cas.list().unwrap().is_empty());
    }

    pub fn has_list_and_remove(s: &Subject) {
        let cas = s.cas.as_ref();
        let mut ids: Vec<ObjectId> = (0..3).map(|i| cas.put(&mut &bytes(1000 + i, i as u64)[..]).unwrap().0).collect();
        ids.sort();
        assert_eq!(cas.list().unwrap(), ids);
        assert!(ids.iter().all(|id| cas.has(id).unwrap()));

        assert!(cas.remove(&ids[1]).unwrap());
        assert!(!cas.has(&ids[1]).unwrap());
        assert!(cas.get(&ids[1]).unwrap().is_none());
        assert!(!cas.remove(&ids[1]).unwrap());
        assert_eq!(cas.list().unwrap(), [ids[0], ids[2]]);
    }

    pub fn concurrent_puts_of_the_same_bytes_all_succeed(s: &Subject) {
        let data = bytes(1024 * 1024 + 1, 9);
        let expected = ObjectId::of(&data);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (cas, data) = (&s.cas, &data);
                    scope.spawn(move || {
                        let mut w = cas.writer().unwrap();
                        for chunk in data.chunks(8191 + t) {
                            w.write_all(chunk).unwrap();
                        }
                        w.commit().unwrap()
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), (expected, data.len() as u64));
            }
        });
        assert_eq!(s.cas.list().unwrap(), [expected]);
        assert!(read_all(s.cas.as_ref(), &expected).unwrap() == data);
    }

    pub fn tampered_bytes_are_refused_at_end_of_stream_and_by_verify(s: &Subject) {
        let cas = s.cas.as_ref();
        let data = bytes(70_000, 3);
        let (id, _) = cas.put(&mut &data[..]).unwrap();
        for tampered in [
            {
                let mut t = data.clone();
                t[12_345] ^= 1;
                t
            },
            data[..1000].to_vec(),
            Vec::new(),
        ] {
            (s.tamper)(&id, &tampered);
            let err = read_all(cas, &id).expect_err("tampered bytes must not end cleanly");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            match CasError::in_io(&err) {
                Some(CasError::Tampered { id: i, actual }) => {
                    assert_eq!((*i, *actual), (id, ObjectId::of(&tampered)));
                }
                other => panic!("expected Tampered, got {other:?}"),
            }
            match cas.verify(&id) {
                Err(CasError::Tampered { id: i, actual }) => assert_eq!((i, actual), (id, ObjectId::of(&tampered))),
                other => panic!("expected Tampered from verify, got {other:?}"),
            }
        }
        // Putting the good bytes again makes the object good again.
        cas.put(&mut &data[..]).unwrap();
        cas.verify(&id).unwrap();
    }

    pub fn a_dropped_writer_leaves_nothing(s: &Subject) {
        let cas = s.cas.as_ref();
        // Past one part: a multipart upload has begun.
        let data = bytes(PART + 200_000, 4);
        let mut w = cas.writer().unwrap();
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        drop(w);
        assert!(cas.list().unwrap().is_empty());
        assert!(!cas.has(&ObjectId::of(&data)).unwrap());
    }

    pub fn put_expected_refuses_a_mismatch_and_keeps_nothing(s: &Subject) {
        let cas = s.cas.as_ref();
        let mut kept = Vec::new();
        // In one request, and in parts sent before the hash is known.
        for data in [bytes(5000, 5), bytes(2 * PART + 1, 6)] {
            let right = ObjectId::of(&data);
            let wrong = ObjectId::of(b"something else");

            match cas.put_expected(&mut &data[..], &wrong) {
                Err(CasError::Mismatch { expected, actual }) => assert_eq!((expected, actual), (wrong, right)),
                other => panic!("expected Mismatch, got {other:?}"),
            }
            let mut w = cas.writer().unwrap();
            w.write_all(&data).unwrap();
            assert!(matches!(w.commit_expecting(&wrong), Err(CasError::Mismatch { .. })));
            assert_eq!(cas.list().unwrap(), kept);
            assert!(!cas.has(&right).unwrap() && !cas.has(&wrong).unwrap());

            assert_eq!(cas.put_expected(&mut &data[..], &right).unwrap(), data.len() as u64);
            kept.push(right);
            kept.sort();
            assert_eq!(cas.list().unwrap(), kept);
        }
    }

    pub fn a_failing_source_keeps_nothing(s: &Subject) {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, "upstream went away"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(b'x');
                self.0 -= n;
                Ok(n)
            }
        }
        let err = s.cas.put(&mut Failing(PART + 100_000)).unwrap_err();
        assert!(matches!(err, CasError::Source(ref e) if e.kind() == io::ErrorKind::ConnectionReset), "{err}");
        assert!(s.cas.list().unwrap().is_empty());
    }
}
