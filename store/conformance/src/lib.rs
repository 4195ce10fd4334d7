//! The conformance suite of the [`Store`] seam: what every backend must do,
//! written once as functions that take a `&dyn Store` and panic on the
//! first broken promise, so that any backend's crate can run them (this
//! crate's `tests/backends.rs` runs them against the local store and the
//! `file://` and `http://` binary caches; an S3 backend adds itself there
//! or runs them from its own tests).
//!
//! Each check expects a fresh, empty store whose backend is in the test's
//! hands, and makes its own paths (input-addressed ones from their
//! contents, content-addressed ones as `builtins.toFile` does), so checks
//! never depend on one another.

use std::collections::BTreeSet;
use std::io::Read;
use store::backend::{Error, Store, TrustError, trust};
use store::content_address::{ContentAddress, ContentAddressMethod};
use store::hash::Algorithm;
use store::path_info::PathInfo;
use store::signing::{self, PublicKeys, SecretKey};
use store::store_path::{StorePath, StoreReferences};

/// A check: panics when the store breaks a promise.
pub type Check = fn(&dyn Store);

/// Every check, by name, for backends that want to run them all in a loop
/// (`unsupported_ops_are_named` needs its list and is not in here).
pub const CHECKS: &[(&str, Check)] = &[
    ("add_with_references", add_with_references),
    ("path_info_fields", path_info_fields),
    ("signatures", signatures),
    ("nar_round_trip", nar_round_trip),
    ("missing_path", missing_path),
    ("hash_mismatch_refused", hash_mismatch_refused),
    ("size_mismatch_refused", size_mismatch_refused),
    ("truncated_nar_refused", truncated_nar_refused),
    ("missing_reference_refused", missing_reference_refused),
    ("false_content_address_refused", false_content_address_refused),
    ("concurrent_adds", concurrent_adds),
    ("add_again_consumes_the_nar", add_again_consumes_the_nar),
];

/// The NAR of one regular file and the input-addressed path it gets here
/// (named `name`, its hash from the contents).
pub fn file_path(store: &dyn Store, name: &str, contents: &[u8]) -> (Vec<u8>, PathInfo) {
    let nar = store::nar::dump_bytes(contents, false);
    let path = store
        .store_dir()
        .make_store_path("output:out", &Algorithm::Sha256.digest(contents), name)
        .expect("a valid name");
    let info = PathInfo::new(path, Algorithm::Sha256.digest(&nar), nar.len() as u64);
    (nar, info)
}

/// A NAR of a directory with an executable, a plain file, a symlink and a
/// subdirectory (entries in CppNix's order), and an input-addressed path.
pub fn tree_path(store: &dyn Store, name: &str) -> (Vec<u8>, PathInfo) {
    let mut nar = NarBytes::default();
    nar.s("nix-archive-1").s("(").s("type").s("directory");
    nar.s("entry").s("(").s("name").s("bin").s("node");
    nar.s("(").s("type").s("directory");
    nar.s("entry").s("(").s("name").s("hello").s("node");
    nar.s("(").s("type").s("regular").s("executable").s("").s("contents").b(b"#!/bin/sh\necho hello\n").s(")");
    nar.s(")").s(")");
    nar.s(")");
    nar.s("entry").s("(").s("name").s("empty").s("node");
    nar.s("(").s("type").s("regular").s("contents").b(b"").s(")").s(")");
    nar.s("entry").s("(").s("name").s("link").s("node");
    nar.s("(").s("type").s("symlink").s("target").s("bin/hello").s(")").s(")");
    nar.s("entry").s("(").s("name").s("notes").s("node");
    nar.s("(").s("type").s("regular").s("contents").b(&[7u8; 1000]).s(")").s(")");
    nar.s(")");
    let nar = nar.0;
    let path =
        store.store_dir().make_store_path("output:out", &Algorithm::Sha256.digest(&nar), name).expect("a valid name");
    let info = PathInfo::new(path, Algorithm::Sha256.digest(&nar), nar.len() as u64);
    (nar, info)
}

/// A text path with its true content address (as `builtins.toFile`).
pub fn text_path(
    store: &dyn Store,
    name: &str,
    contents: &[u8],
    references: &BTreeSet<StorePath>,
) -> (Vec<u8>, PathInfo) {
    let nar = store::nar::dump_bytes(contents, false);
    let ca = ContentAddress { method: ContentAddressMethod::Text, hash: Algorithm::Sha256.digest(contents) };
    let refs = StoreReferences { others: references.clone(), self_ref: false };
    let path = store.store_dir().make_path_from_ca(name, &ca, &refs).expect("a valid name");
    let mut info = PathInfo::new(path, Algorithm::Sha256.digest(&nar), nar.len() as u64);
    info.references = references.clone();
    info.ca = Some(ca);
    (nar, info)
}

#[derive(Default)]
struct NarBytes(Vec<u8>);

impl NarBytes {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self.0.resize(self.0.len().div_ceil(8) * 8, 0);
        self
    }
    fn s(&mut self, s: &str) -> &mut Self {
        self.b(s.as_bytes())
    }
}

fn add(store: &dyn Store, info: &PathInfo, nar: &[u8]) {
    let mut reader = nar;
    store.add_to_store(info, &mut reader).unwrap_or_else(|e| panic!("adding '{}' to {}: {e}", info.path, store.uri()));
}

fn nar_of(store: &dyn Store, path: &StorePath) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .nar_from_path(path, &mut out)
        .unwrap_or_else(|e| panic!("reading the NAR of '{path}' from {}: {e}", store.uri()));
    out
}

fn info_of(store: &dyn Store, path: &StorePath) -> PathInfo {
    store.query_path_info(path).expect("querying").unwrap_or_else(|| panic!("'{path}' is valid in {}", store.uri()))
}

/// The path is not valid and nothing about it can be read.
fn assert_not_added(store: &dyn Store, path: &StorePath) {
    assert!(!store.is_valid(path).expect("asking validity"), "'{path}' must not be valid in {}", store.uri());
    assert!(store.query_path_info(path).expect("querying").is_none());
}

/// A path with a reference is added after it, and its info lists it; the
/// referenced path is queried by its hash part.
pub fn add_with_references(store: &dyn Store) {
    let (nar_a, a) = file_path(store, "dependency", b"I am depended upon\n");
    add(store, &a, &nar_a);
    let (nar_b, mut b) = file_path(store, "dependent", b"I depend\n");
    b.references = [a.path.clone(), b.path.clone()].into();
    add(store, &b, &nar_b);
    assert!(store.is_valid(&a.path).unwrap() && store.is_valid(&b.path).unwrap());
    let got = info_of(store, &b.path);
    assert_eq!(got.references, b.references, "references of the dependent");
    assert!(info_of(store, &a.path).references.is_empty());
    assert_eq!(store.query_path_from_hash_part(a.path.hash_part()).unwrap(), Some(a.path.clone()));
    assert_eq!(store.path_info(&b.path).unwrap().path, b.path);
}

/// What was given is what is queried: NAR hash and size, deriver, content
/// address.
pub fn path_info_fields(store: &dyn Store) {
    let (nar, mut info) = tree_path(store, "fields");
    info.deriver =
        Some(store.store_dir().make_store_path("text", &Algorithm::Sha256.digest("drv"), "fields.drv").unwrap());
    add(store, &info, &nar);
    let got = info_of(store, &info.path);
    assert_eq!(got.path, info.path);
    assert_eq!(got.nar_hash, info.nar_hash);
    assert_eq!(got.nar_size, info.nar_size);
    assert_eq!(got.deriver, info.deriver);
    assert_eq!(got.ca, None);
    assert!(got.sigs.is_empty(), "{:?}", got.sigs);

    let (nar, text) = text_path(store, "hello.txt", b"hello\n", &BTreeSet::new());
    add(store, &text, &nar);
    let got = info_of(store, &text.path);
    assert_eq!(got.ca, text.ca);
    assert!(trust::is_content_addressed(store.store_dir(), &got));
}

/// Signatures given with the path are kept, more can be added, and the
/// trust check accepts them with the signer's key.
pub fn signatures(store: &dyn Store) {
    let dir = store.store_dir();
    let (nar, mut info) = file_path(store, "signed", b"signed contents\n");
    let fp = signing::fingerprint(dir, &info.path, &info.nar_hash, info.nar_size, &info.references).unwrap();
    let first = SecretKey::generate("first-1").unwrap();
    let second = SecretKey::generate("second-1").unwrap();
    let sig1 = first.sign(fp.as_bytes()).to_string();
    let sig2 = second.sign(fp.as_bytes()).to_string();
    info.sigs.insert(sig1.clone());
    add(store, &info, &nar);
    assert_eq!(info_of(store, &info.path).sigs, [sig1.clone()].into());
    store.add_signatures(&info.path, &[sig2.clone()].into()).expect("adding a signature");
    // Adding one it has changes nothing.
    store.add_signatures(&info.path, &[sig1.clone()].into()).expect("adding a signature again");
    let got = info_of(store, &info.path);
    assert_eq!(got.sigs, [sig1, sig2].into());
    let keys: PublicKeys = [second.to_public_key()].into_iter().collect();
    assert_eq!(trust::count_trusted_signatures(dir, &got, &keys), 1);
    assert!(trust::verdict(dir, &got, &keys).is_trusted());
    assert!(!trust::verdict(dir, &got, &PublicKeys::new()).is_trusted());
}

/// The NAR read back is byte for byte the NAR added.
pub fn nar_round_trip(store: &dyn Store) {
    let (nar, info) = tree_path(store, "tree");
    add(store, &info, &nar);
    assert_eq!(nar_of(store, &info.path), nar, "the NAR of a tree");
    let (nar, info) = file_path(store, "big", &vec![0x5a; 3 << 20]);
    add(store, &info, &nar);
    assert!(nar_of(store, &info.path) == nar, "the NAR of a 3 MiB file");
}

/// A path never added: not valid, no info, no NAR, no signatures to add to.
pub fn missing_path(store: &dyn Store) {
    let (_, info) = file_path(store, "missing", b"never added\n");
    assert_not_added(store, &info.path);
    assert_eq!(store.query_path_from_hash_part(info.path.hash_part()).unwrap(), None);
    let full = store.store_dir().display(&info.path);
    match store.path_info(&info.path) {
        Err(Error::InvalidPath(p)) => assert_eq!(p, full),
        other => panic!("path_info of a missing path: {other:?}"),
    }
    match store.nar_from_path(&info.path, &mut Vec::new()) {
        Err(Error::InvalidPath(p)) => assert_eq!(p, full),
        other => panic!("nar_from_path of a missing path: {other:?}"),
    }
    match store.add_signatures(&info.path, &["k:c2ln".to_owned()].into()) {
        Err(Error::InvalidPath(p)) => assert_eq!(p, full),
        other => panic!("add_signatures on a missing path: {other:?}"),
    }
}

/// A NAR that does not match its NAR hash is refused with CppNix's words.
pub fn hash_mismatch_refused(store: &dyn Store) {
    let (_, info) = file_path(store, "mismatch", b"the real contents\n");
    let other = store::nar::dump_bytes(b"the fake contents\n", false);
    assert_eq!(other.len() as u64, info.nar_size, "same size, other bytes");
    match store.add_to_store(&info, &mut &other[..]) {
        Err(e @ Error::HashMismatch { .. }) => {
            assert!(e.to_string().starts_with("hash mismatch importing path '"), "{e}")
        }
        other => panic!("a NAR with the wrong hash: {other:?}"),
    }
    assert_not_added(store, &info.path);
}

/// A NAR longer or shorter than its NAR size is refused.
pub fn size_mismatch_refused(store: &dyn Store) {
    let (nar, mut info) = file_path(store, "wrong-size", b"sized\n");
    info.nar_size += 8;
    match store.add_to_store(&info, &mut &nar[..]) {
        Err(Error::SizeMismatch { specified, got, .. }) => {
            assert_eq!((specified, got), (info.nar_size, nar.len() as u64))
        }
        other => panic!("a NAR with the wrong size: {other:?}"),
    }
    assert_not_added(store, &info.path);
}

/// A NAR cut short is refused as a NAR error, and nothing is registered.
pub fn truncated_nar_refused(store: &dyn Store) {
    let (nar, info) = tree_path(store, "truncated");
    for cut in [0, 13, nar.len() / 2, nar.len() - 8] {
        match store.add_to_store(&info, &mut &nar[..cut]) {
            Err(Error::Nar(_)) => {}
            other => panic!("a NAR cut at {cut} of {}: {other:?}", nar.len()),
        }
        assert_not_added(store, &info.path);
    }
    // Not a NAR at all.
    assert!(matches!(store.add_to_store(&info, &mut &b"not a NAR, not at all!!"[..]), Err(Error::Nar(_))));
    assert_not_added(store, &info.path);
}

/// A path whose references are not in the store is refused, naming the
/// first missing one.
pub fn missing_reference_refused(store: &dyn Store) {
    let (_, absent) = file_path(store, "absent", b"not here\n");
    let (nar, mut info) = file_path(store, "dangling", b"refers to what is not here\n");
    info.references = [absent.path.clone()].into();
    match store.add_to_store(&info, &mut &nar[..]) {
        Err(Error::MissingReference { path, reference }) => {
            assert_eq!(path, store.store_dir().display(&info.path));
            assert_eq!(reference, store.store_dir().display(&absent.path));
        }
        other => panic!("a path with a missing reference: {other:?}"),
    }
    assert_not_added(store, &info.path);
}

/// A path that claims a content address which does not give it is refused
/// by the one trust check.
pub fn false_content_address_refused(store: &dyn Store) {
    let (nar, true_info) = text_path(store, "claims.txt", b"claimed\n", &BTreeSet::new());
    let mut info = true_info.clone();
    // The same contents and content address under another path.
    info.path =
        store.store_dir().make_store_path("output:out", &Algorithm::Sha256.digest("elsewhere"), "claims.txt").unwrap();
    match store.add_to_store(&info, &mut &nar[..]) {
        Err(Error::Untrusted(TrustError::FalseContentAddress(p))) => {
            assert_eq!(p, store.store_dir().display(&info.path))
        }
        other => panic!("a false content address: {other:?}"),
    }
    assert_not_added(store, &info.path);
    // The true one is taken.
    add(store, &true_info, &nar);
}

/// Eight threads add the same path at once: each add succeeds, and the
/// store ends with one valid path whose NAR is the one added.
pub fn concurrent_adds(store: &dyn Store) {
    let (nar, info) = tree_path(store, "contended");
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..8).map(|_| s.spawn(|| store.add_to_store(&info, &mut &nar[..]).map_err(|e| e.to_string()))).collect();
        handles.into_iter().map(|h| h.join().expect("an adding thread")).collect()
    });
    for r in &results {
        assert!(r.is_ok(), "a concurrent add failed: {r:?}");
    }
    let got = info_of(store, &info.path);
    assert_eq!((got.nar_hash, got.nar_size), (info.nar_hash, info.nar_size));
    assert_eq!(nar_of(store, &info.path), nar);
}

/// Adding a valid path again succeeds and reads exactly its NAR from the
/// stream, leaving what follows it.
pub fn add_again_consumes_the_nar(store: &dyn Store) {
    let (nar, info) = tree_path(store, "twice");
    add(store, &info, &nar);
    let mut stream = nar.clone();
    stream.extend_from_slice(b"what follows");
    let mut reader = &stream[..];
    store.add_to_store(&info, &mut reader).expect("adding a valid path again");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "what follows");
}

/// The operations in `unsupported` answer `Unsupported` naming themselves
/// and the store; the others of the same group do not.
pub fn unsupported_ops_are_named(store: &dyn Store, unsupported: &[&str]) {
    let (nar, info) = file_path(store, "asked", b"asked about\n");
    add(store, &info, &nar);
    let ops: [(&str, Result<(), Error>); 3] = [
        ("queryReferrers", store.query_referrers(&info.path).map(drop)),
        ("queryValidDerivers", store.query_valid_derivers(&info.path).map(drop)),
        ("queryAllValidPaths", store.query_all_valid_paths().map(drop)),
    ];
    for (name, result) in ops {
        match result {
            Err(Error::Unsupported { op, backend }) => {
                assert!(unsupported.contains(&name), "{name} answered Unsupported from {}", store.uri());
                assert_eq!(op, name);
                assert_eq!(backend, store.uri());
                let e = Error::Unsupported { op, backend };
                assert_eq!(e.to_string(), format!("operation '{name}' is not supported by store '{}'", store.uri()));
            }
            Err(e) => panic!("{name} from {}: {e}", store.uri()),
            Ok(()) => assert!(!unsupported.contains(&name), "{name} is meant to be unsupported by {}", store.uri()),
        }
    }
}
