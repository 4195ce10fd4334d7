//! Keeping outputs and copying them back, on a real store and archive.

use super::import::copy_output;
use super::keep::keep_output;
use local_store::LocalStore;
use local_store::LocalStoreConfig;
use std::os::unix::fs::PermissionsExt;
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::hash::Algorithm;
use store::store_path::StorePath;
use store::store_path::{StoreDir, StoreReferences};
use witness_proxy::archive::{Archive, OutputMode};

struct Bed {
    dir: tempfile::TempDir,
    store: LocalStore,
    archive: Archive,
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let config = LocalStoreConfig::new(
        StoreDir::new(dir.path().join("store").to_str().unwrap()).unwrap(),
        dir.path().join("var/nix"),
        dir.path().join("var/log/nix"),
    );
    let store = LocalStore::open(config).unwrap();
    let archive = Archive::open(dir.path().join("witness")).unwrap();
    Bed { dir, store, archive }
}

/// A tree with a file, a subdirectory and a symlink; its NAR's hash
/// in `algorithm` and the fixed-output path declaring it.
fn tree(b: &Bed, algorithm: Algorithm) -> (std::path::PathBuf, ContentAddress, StorePath) {
    let tree = b.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("payload.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::write(tree.join("sub/run"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(tree.join("sub/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("payload.bin", tree.join("link")).unwrap();
    let (hash, _) = local_store::nar_fs::hash_path(&tree, algorithm).unwrap();
    let method = FileIngestionMethod::Recursive;
    let path = b.store.store_dir().make_fixed_output_path("tree", method, &hash, &StoreReferences::default()).unwrap();
    (tree, ContentAddress { method: ContentAddressMethod::Fixed(method), hash }, path)
}

fn drv_path(b: &Bed) -> StorePath {
    let dir = b.store.store_dir();
    dir.parse_path(&format!("{}/{}-tree.drv", dir.as_str(), "0".repeat(32))).unwrap()
}

#[test]
fn a_recursive_output_kept_by_sha512_is_copied_back_as_the_same_path() {
    let b = bed();
    let (tree, ca, path) = tree(&b, Algorithm::Sha512);
    // The output where a build leaves it (left there unregistered: the
    // add replaces such a leftover).
    std::fs::create_dir_all(b.store.real_path(&path).parent().unwrap()).unwrap();
    std::fs::rename(&tree, b.store.real_path(&path)).unwrap();
    let id = keep_output(&b.archive, &b.store, &path, &ca, OutputMode::Recursive).unwrap();
    assert_eq!(b.archive.output_for(&ca.hash, OutputMode::Recursive).unwrap(), Some(id));
    assert_eq!(b.archive.output_for(&ca.hash, OutputMode::Flat).unwrap(), None);

    assert!(!b.store.is_valid(&path).unwrap());
    copy_output(&b.archive, &b.store, &drv_path(&b), &path, &ca, OutputMode::Recursive, id).unwrap();
    let info = b.store.path_info(&path).unwrap();
    assert_eq!(info.ca, Some(ca));
    assert!(info.references.is_empty());
    assert_eq!(info.deriver, Some(drv_path(&b)));
    assert_eq!(info.nar_hash, id.to_hash());
    let real = b.store.real_path(&path);
    assert_eq!(std::fs::read(real.join("payload.bin")).unwrap(), vec![7u8; 100_000]);
    assert_eq!(std::fs::read_link(real.join("link")).unwrap(), std::path::Path::new("payload.bin"));
}

#[test]
fn a_tampered_nar_is_refused_by_its_object_name() {
    let b = bed();
    let (tree, ca, path) = tree(&b, Algorithm::Sha256);
    let mut nar = Vec::new();
    local_store::nar_fs::dump(&tree, &mut nar).unwrap();
    let id = b.archive.put_output(&ca.hash, OutputMode::Recursive, &mut &nar[..]).unwrap();
    let object = b.dir.path().join("witness/cas").join(id.to_hex());
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Still a well-formed NAR, of other contents; then one cut short.
    let mut flipped = nar.clone();
    let at = flipped.windows(4).position(|w| w == [7, 7, 7, 7]).unwrap();
    flipped[at] = 8;
    for tampered in [flipped, nar[..nar.len() - 100].to_vec()] {
        std::fs::write(&object, &tampered).unwrap();
        let err = copy_output(&b.archive, &b.store, &drv_path(&b), &path, &ca, OutputMode::Recursive, id)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("object {id} is tampered: its bytes hash to ")), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(!b.store.is_valid(&path).unwrap());
    }
}

#[test]
fn a_flat_output_is_copied_back_from_its_bytes() {
    let b = bed();
    let bytes = b"flat output bytes".repeat(1000);
    let hash = Algorithm::Sha1.digest(&bytes);
    let method = FileIngestionMethod::Flat;
    let path = b.store.store_dir().make_fixed_output_path("f", method, &hash, &StoreReferences::default()).unwrap();
    let ca = ContentAddress { method: ContentAddressMethod::Fixed(method), hash };
    let id = b.archive.put_output(&hash, OutputMode::Flat, &mut &bytes[..]).unwrap();
    copy_output(&b.archive, &b.store, &drv_path(&b), &path, &ca, OutputMode::Flat, id).unwrap();
    assert_eq!(std::fs::read(b.store.real_path(&path)).unwrap(), bytes);
    let nar = store::nar::dump_bytes(&bytes, false);
    assert_eq!(b.store.path_info(&path).unwrap().nar_hash, Algorithm::Sha256.digest(&nar));
}
