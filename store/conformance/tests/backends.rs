//! The conformance suite against every backend: each check of
//! `store_conformance` is one rstest function with one case per backend
//! (`local`, `file_cache`, `http_cache`, `s3_cache` on a real S3 server,
//! Garage), each case on a fresh, empty store.
//! A new backend adds a `#[case]` to the template below and a [`Backend`]
//! variant; it is done when every check passes.

use binary_cache::BinaryCacheStore;
use binary_cache::test_server::TestServer;
use local_store::{LocalStore, LocalStoreConfig};
use rstest::rstest;
use store::backend::Store;
use store::store_path::StoreDir;
use testkit::garage::Garage;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Local,
    FileCache,
    HttpCache,
    S3Cache,
}

/// A fresh store of one backend, with what keeps it alive.
struct Subject {
    store: Box<dyn Store>,
    _dir: tempfile::TempDir,
    _server: Option<TestServer>,
    _garage: Option<Garage>,
}

impl Backend {
    /// `None`: the backend's server is not there (the test says why).
    fn open(self) -> Option<Subject> {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = StoreDir::new(dir.path().join("store").to_str().unwrap()).unwrap();
        let (mut server, mut garage) = (None, None);
        let store: Box<dyn Store> = match self {
            Backend::Local => {
                let config =
                    LocalStoreConfig::new(store_dir, dir.path().join("var/nix"), dir.path().join("var/log/nix"));
                Box::new(LocalStore::open(config).unwrap())
            }
            Backend::FileCache => {
                let url = format!("file://{}", dir.path().join("cache").display());
                Box::new(BinaryCacheStore::open(&url, store_dir).unwrap())
            }
            Backend::HttpCache => {
                let s = TestServer::start();
                let url = format!("{}/cache?compression=zstd&write-nar-listing=1", s.url);
                server = Some(s);
                Box::new(BinaryCacheStore::open(&url, store_dir).unwrap())
            }
            Backend::S3Cache => {
                let g = Garage::start()?;
                s3::set_credentials_file(Some(g.credentials_file()));
                let url = format!("{}&compression=zstd&write-nar-listing=1", g.url(&g.bucket("cache")));
                garage = Some(g);
                Box::new(BinaryCacheStore::open(&url, store_dir).unwrap())
            }
        };
        Some(Subject { store, _dir: dir, _server: server, _garage: garage })
    }

    /// The operations it cannot do.
    fn unsupported(self) -> &'static [&'static str] {
        match self {
            Backend::Local => &[],
            Backend::FileCache | Backend::HttpCache | Backend::S3Cache => {
                &["queryReferrers", "queryValidDerivers", "queryAllValidPaths"]
            }
        }
    }
}

/// The template: one rstest function per check, one case per backend.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {$(
        #[rstest]
        #[case::local(Backend::Local)]
        #[case::file_cache(Backend::FileCache)]
        #[case::http_cache(Backend::HttpCache)]
        #[case::s3_cache(Backend::S3Cache)]
        fn $check(#[case] backend: Backend) {
            let Some(subject) = backend.open() else { return };
            store_conformance::$check(subject.store.as_ref());
        }
    )*};
}

conformance!(
    add_with_references,
    path_info_fields,
    signatures,
    nar_round_trip,
    missing_path,
    hash_mismatch_refused,
    size_mismatch_refused,
    truncated_nar_refused,
    missing_reference_refused,
    false_content_address_refused,
    concurrent_adds,
    add_again_consumes_the_nar,
);

#[rstest]
#[case::local(Backend::Local)]
#[case::file_cache(Backend::FileCache)]
#[case::http_cache(Backend::HttpCache)]
#[case::s3_cache(Backend::S3Cache)]
fn unsupported_ops_are_named(#[case] backend: Backend) {
    let Some(subject) = backend.open() else { return };
    store_conformance::unsupported_ops_are_named(subject.store.as_ref(), backend.unsupported());
}

/// Every check listed in `CHECKS` has its rstest function above.
#[test]
fn every_check_is_run() {
    let here = include_str!("backends.rs");
    for (name, _) in store_conformance::CHECKS {
        assert!(here.contains(&format!("    {name},\n")), "{name} is not in the conformance! list");
    }
}
