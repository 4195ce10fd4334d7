//! The local store library on its own: what an add leaves behind when it
//! fails, how rows are written, temp roots, and NAR streams.

use local_store::{AddOptions, Error, GcAction, GcOptions, LocalStore, LocalStoreConfig};
use std::collections::BTreeSet;
use std::io::Read;
use store::hash::Algorithm;
use store::path_info::PathInfo;
use store::store_path::StoreDir;

fn open(dir: &std::path::Path) -> LocalStore {
    let config = LocalStoreConfig::new(
        StoreDir::new(dir.join("store").to_str().unwrap()).unwrap(),
        dir.join("var/nix"),
        dir.join("var/log/nix"),
    );
    LocalStore::open(config).unwrap()
}

fn store_entries(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn nar_of(contents: &[u8]) -> (Vec<u8>, PathInfo, LocalStore, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let nar = store::nar::dump_bytes(contents, false);
    let path =
        store.store_dir().make_store_path("output:out", &Algorithm::Sha256.digest(contents), "imported").unwrap();
    let info = PathInfo::new(path, Algorithm::Sha256.digest(&nar), nar.len() as u64);
    (nar, info, store, tmp)
}

#[test]
fn a_failed_import_leaves_nothing() {
    let (nar, mut info, store, tmp) = nar_of(b"contents");
    let before = store_entries(tmp.path());
    info.nar_hash = Algorithm::Sha256.digest(b"something else");
    let err = store.add_nar(&info, &mut &nar[..], AddOptions::default()).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(!store.is_valid(&info.path).unwrap());
    let after = store_entries(tmp.path());
    // Only the (empty, unlocked) lock file may remain, as with CppNix.
    let extra: Vec<_> = after.difference(&before).filter(|n| !n.ends_with(".lock")).collect();
    assert!(extra.is_empty(), "left behind: {extra:?}");

    // A truncated NAR fails the same way.
    let (nar, info, store, tmp) = nar_of(b"more contents");
    let err = store.add_nar(&info, &mut &nar[..nar.len() - 9], AddOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Nar(_)), "{err}");
    assert!(!store.is_valid(&info.path).unwrap());
    assert!(store_entries(tmp.path()).iter().all(|n| n == ".links" || n.ends_with(".lock")));
}

#[test]
fn imports_consume_exactly_the_nar() {
    let (nar, info, store, _tmp) = nar_of(b"payload");
    for _ in 0..2 {
        // The second time the path is valid already and the NAR is skipped.
        let mut stream = nar.clone();
        stream.extend_from_slice(b"NEXT FRAME");
        let mut reader = &stream[..];
        store.add_nar(&info, &mut reader, AddOptions::default()).unwrap();
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT FRAME");
    }
}

#[test]
fn references_must_be_valid() {
    let (nar, mut info, store, _tmp) = nar_of(b"refers");
    let missing = store.store_dir().make_store_path("output:out", &Algorithm::Sha256.digest(b"x"), "missing").unwrap();
    info.references.insert(missing.clone());
    let err = store.add_nar(&info, &mut &nar[..], AddOptions::default()).unwrap_err();
    assert!(matches!(&err, Error::MissingReference { reference, .. } if reference.ends_with("-missing")), "{err}");
    assert!(!store.is_valid(&info.path).unwrap());
}

#[test]
fn rows_follow_cppnix_null_conventions() {
    let (nar, info, store, tmp) = nar_of(b"row");
    store.add_nar(&info, &mut &nar[..], AddOptions::default()).unwrap();
    let db = rusqlite::Connection::open(tmp.path().join("var/nix/db/db.sqlite")).unwrap();
    type Row = (String, Option<i64>, Option<i64>, Option<String>, Option<String>, Option<String>);
    let (hash, nar_size, ultimate, sigs, ca, deriver): Row = db
        .query_row(
            "select hash, narSize, ultimate, sigs, ca, deriver from ValidPaths where path = ?",
            [store.display(&info.path)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();
    assert_eq!(hash, format!("sha256:{}", info.nar_hash.to_base16()));
    assert_eq!(nar_size, Some(nar.len() as i64));
    assert_eq!((ultimate, sigs, ca, deriver), (None, None, None, None));
    assert_eq!(std::fs::read_to_string(tmp.path().join("var/nix/db/schema")).unwrap(), "10");
}

#[test]
fn temp_roots_protect_own_paths_and_go_away_with_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let kept = store.add_text("kept", b"kept", &BTreeSet::new(), AddOptions::default()).unwrap();
    let roots_file = tmp.path().join("var/nix/temproots").join(std::process::id().to_string());
    let recorded = std::fs::read(&roots_file).unwrap();
    assert_eq!(recorded, format!("{}\0", store.display(&kept.path)).into_bytes());
    // The collector spares paths this process holds as temp roots.
    let results = store.collect_garbage(&GcOptions::new(GcAction::DeleteDead), &mut |_| {}).unwrap();
    assert!(!results.paths.contains(&store.display(&kept.path)));
    assert!(store.is_valid(&kept.path).unwrap());
    drop(store);
    assert!(!roots_file.exists(), "the temp roots file outlived the store");
    // Without the root, the next collection takes it.
    let store = open(tmp.path());
    let results = store.collect_garbage(&GcOptions::new(GcAction::DeleteDead), &mut |_| {}).unwrap();
    assert!(results.paths.contains(&store.display(&kept.path)), "{results:?}");
}

/// Each handle's temp roots leave the process's roots file when the handle
/// goes (a daemon's client disconnecting), while other handles' stay.
#[test]
fn session_roots_are_released_with_their_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let base = open(tmp.path());
    let roots_file = tmp.path().join("var/nix/temproots").join(std::process::id().to_string());
    let recorded = || -> BTreeSet<String> {
        std::fs::read(&roots_file)
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let a = base.session();
    let b = base.session();
    let pa = a.add_text("a", b"a", &BTreeSet::new(), AddOptions::default()).unwrap();
    let pb = b.add_text("b", b"b", &BTreeSet::new(), AddOptions::default()).unwrap();
    // A root both hold stays until both let go.
    a.add_temp_root(&pb.path).unwrap();
    let (fa, fb) = (base.display(&pa.path), base.display(&pb.path));
    assert_eq!(recorded(), [fa.clone(), fb.clone()].into());
    drop(a);
    assert_eq!(recorded(), [fb.clone()].into(), "a's own root is gone, the shared one stays");
    drop(b);
    assert!(recorded().is_empty());
    let results = base.collect_garbage(&GcOptions::new(GcAction::DeleteDead), &mut |_| {}).unwrap();
    assert!(results.paths.contains(&fa) && results.paths.contains(&fb), "{results:?}");
}
