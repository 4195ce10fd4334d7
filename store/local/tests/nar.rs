//! NAR writing, reading, unpacking and listing, checked against the real
//! Nix (2.8 and 2.26: `nix-store --dump`, `nix-hash`, `nix-store --restore`,
//! `nix nar ls`, `nix nar cat`) and, with proptest, against a model of file
//! trees with its own tiny NAR encoder.

use local_store::nar_fs;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use store::hash::Algorithm;
use store::nar::{self, Event, Limits, NarError, NarReader, NodeInfo};
use testkit::{Nix, NixVersion, TestStore};

// ---------------------------------------------------------------------------
// A model of file trees, and its NAR written by hand from the format.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File { executable: bool, contents: Vec<u8> },
    Symlink(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, Node>),
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len().next_multiple_of(8), 0);
}

fn model_nar(node: &Node) -> Vec<u8> {
    fn node_nar(out: &mut Vec<u8>, node: &Node) {
        put_str(out, b"(");
        put_str(out, b"type");
        match node {
            Node::File { executable, contents } => {
                put_str(out, b"regular");
                if *executable {
                    put_str(out, b"executable");
                    put_str(out, b"");
                }
                put_str(out, b"contents");
                put_str(out, contents);
            }
            Node::Symlink(target) => {
                put_str(out, b"symlink");
                put_str(out, b"target");
                put_str(out, target);
            }
            Node::Dir(entries) => {
                put_str(out, b"directory");
                for (name, child) in entries {
                    for tag in [&b"entry"[..], b"(", b"name"] {
                        put_str(out, tag);
                    }
                    put_str(out, name);
                    put_str(out, b"node");
                    node_nar(out, child);
                    put_str(out, b")");
                }
            }
        }
        put_str(out, b")");
    }
    let mut out = Vec::new();
    put_str(&mut out, b"nix-archive-1");
    node_nar(&mut out, node);
    out
}

fn materialise(path: &Path, node: &Node) {
    match node {
        Node::File { executable, contents } => {
            fs::write(path, contents).unwrap();
            let mode = if *executable { 0o755 } else { 0o644 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Symlink(target) => symlink(OsStr::from_bytes(target), path).unwrap(),
        Node::Dir(entries) => {
            fs::create_dir(path).unwrap();
            for (name, child) in entries {
                materialise(&path.join(OsStr::from_bytes(name)), child);
            }
        }
    }
}

/// A directory being rebuilt: its entries so far and its own name.
type OpenDir = (BTreeMap<Vec<u8>, Node>, Option<Vec<u8>>);

/// Rebuilds the model from a NAR with the pull reader.
fn read_model(nar: &[u8]) -> Result<Node, NarError> {
    let mut reader = NarReader::new(nar);
    let mut stack: Vec<OpenDir> = Vec::new();
    let mut name: Option<Vec<u8>> = None;
    let mut root = None;
    let mut finish = |stack: &mut Vec<OpenDir>, name: Option<Vec<u8>>, node| match stack.last_mut() {
        Some((entries, _)) => {
            entries.insert(name.expect("entry name before node"), node);
        }
        None => root = Some(node),
    };
    while let Some(event) = reader.next()? {
        match event {
            Event::Entry { name: n } => name = Some(n.to_vec()),
            Event::Directory => stack.push((BTreeMap::new(), name.take())),
            Event::DirectoryEnd => {
                let (entries, own_name) = stack.pop().expect("balanced directories");
                finish(&mut stack, own_name, Node::Dir(entries));
            }
            Event::Symlink { target } => finish(&mut stack, name.take(), Node::Symlink(target.to_vec())),
            Event::Regular { executable, size, mut contents, .. } => {
                let mut data = Vec::new();
                contents.read_to_end(&mut data).unwrap();
                assert_eq!(data.len() as u64, size);
                finish(&mut stack, name.take(), Node::File { executable, contents: data });
            }
        }
    }
    assert_eq!(reader.offset(), nar.len() as u64);
    Ok(root.expect("a root node"))
}

fn dump_to_vec(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let size = nar_fs::dump(path, &mut out).unwrap_or_else(|e| panic!("dump {}: {e}", path.display()));
    assert_eq!(size, out.len() as u64);
    out
}

/// Total size of the regular files under `path`.
fn file_bytes(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        fs::read_dir(path).unwrap().map(|e| file_bytes(&e.unwrap().path())).sum()
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("nar-").tempdir_in(testkit::scratch_dir()).unwrap()
}

// ---------------------------------------------------------------------------
// Trees to compare with Nix.

fn write_mode(path: &Path, contents: &[u8], mode: u32) {
    testkit::write_file(path, contents);
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

use testkit::noise;

/// A tree with every kind of entry and awkward names. `non_utf8` adds names
/// that are not UTF-8 (Nix 2.8's JSON cannot represent them).
fn varied_tree(root: &Path, non_utf8: bool) {
    fs::create_dir_all(root).unwrap();
    write_mode(&root.join("empty"), b"", 0o644);
    write_mode(&root.join("empty-exec"), b"", 0o755);
    write_mode(&root.join("hello"), b"hello\n", 0o644);
    for n in 1..=9 {
        write_mode(&root.join(format!("pad/{n}")), &b"x".repeat(n), 0o644);
    }
    write_mode(&root.join("bin/tool"), b"#!/bin/sh\necho hi\n", 0o755);
    write_mode(&root.join("owner-exec-only"), b"x", 0o700);
    write_mode(&root.join("group-exec-only"), b"x", 0o654);
    fs::create_dir(root.join("empty-dir")).unwrap();
    let mut deep = root.join("deep");
    for i in 0..20 {
        deep.push(format!("d{i}"));
    }
    write_mode(&deep.join("leaf"), b"deep", 0o644);
    symlink("hello", root.join("link-rel")).unwrap();
    symlink("/nix/store/00000000000000000000000000000000-x/bin/sh", root.join("link-abs")).unwrap();
    symlink("does/not/exist", root.join("link-dangling")).unwrap();
    symlink("bin", root.join("link-dir")).unwrap();
    symlink("..", root.join("link-up")).unwrap();
    symlink("t".repeat(1000), root.join("link-long")).unwrap();
    // Byte order differs from case-insensitive, locale and UTF-16 orders.
    let names = [
        "B",
        "a",
        "Z",
        "z",
        "A",
        "ab",
        "a-b",
        "a.b",
        "a b",
        "a_b",
        "-",
        "~",
        "é",
        "e\u{301}",
        "\u{FF21}",
        "\u{1F600}",
        "\tab",
        "new\nline",
        "quote\"",
        "back\\slash",
        "0",
        "00",
        "9",
    ];
    for (i, name) in names.iter().enumerate() {
        write_mode(&root.join("names").join(name), name.as_bytes(), if i % 3 == 0 { 0o755 } else { 0o644 });
    }
    if non_utf8 {
        for name in [&b"\xff"[..], b"caf\xe9", b"\x80\x81"] {
            write_mode(&root.join("names").join(OsStr::from_bytes(name)), name, 0o644);
        }
    }
    // Unaligned, and larger than the writer's and reader's buffers.
    write_mode(&root.join("big"), &noise((5 << 20) + 3, 7), 0o644);
}

/// The roots to compare: the tree, and a root of each kind.
fn varied_roots(dir: &Path, non_utf8: bool) -> Vec<PathBuf> {
    let tree = dir.join("tree");
    varied_tree(&tree, non_utf8);
    let empty_dir = dir.join("empty-dir-root");
    fs::create_dir(&empty_dir).unwrap();
    let link = dir.join("symlink-root");
    symlink("tree/hello", &link).unwrap();
    vec![tree.clone(), tree.join("hello"), tree.join("bin/tool"), tree.join("empty"), empty_dir, link]
}

fn nixes() -> Vec<Nix> {
    NixVersion::ALL.into_iter().filter_map(Nix::find).collect()
}

fn nix_stdout(cmd: &mut Command) -> Vec<u8> {
    let out = testkit::output(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn nix_cmd(store: &TestStore, nix: &Nix, tool: &str) -> Command {
    let mut cmd = store.nix(nix, tool);
    if tool == "nix" {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd
}

fn nix_restore(store: &TestStore, nix: &Nix, nar: &[u8], target: &Path) {
    let mut child = nix_cmd(store, nix, "nix-store")
        .arg("--restore")
        .arg(target)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(nar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nix-store --restore failed: {}", String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------
// Against the real Nix.

#[test]
fn dump_and_hash_match_nix() {
    for nix in nixes() {
        let store = TestStore::new();
        for root in varied_roots(&store.work_dir("dump"), true) {
            let ours = dump_to_vec(&root);
            let theirs = nix_stdout(nix_cmd(&store, &nix, "nix-store").arg("--dump").arg(&root));
            assert!(ours == theirs, "{}: NAR of {} differs from nix-store --dump", nix.version, root.display());
            for algorithm in Algorithm::ALL {
                let (hash, size) = nar_fs::hash_path(&root, algorithm).unwrap();
                assert_eq!(size, theirs.len() as u64);
                let expected = nix_stdout(
                    nix_cmd(&store, &nix, "nix-hash").args(["--type", algorithm.name(), "--base32"]).arg(&root),
                );
                assert_eq!(
                    hash.to_nix32(),
                    String::from_utf8(expected).unwrap().trim(),
                    "{}: {algorithm} of {}",
                    nix.version,
                    root.display()
                );
            }
        }
    }
}

#[test]
fn nix_restores_our_nars_and_we_restore_theirs() {
    for nix in nixes() {
        let store = TestStore::new();
        let work = store.work_dir("restore");
        for (i, root) in varied_roots(&work.join("src"), true).into_iter().enumerate() {
            let original = dump_to_vec(&root);

            let by_nix = work.join(format!("by-nix-{i}"));
            nix_restore(&store, &nix, &original, &by_nix);
            assert!(dump_to_vec(&by_nix) == original, "{}: restoring {}", nix.version, root.display());

            let theirs = nix_stdout(nix_cmd(&store, &nix, "nix-store").arg("--dump").arg(&root));
            let by_us = work.join(format!("by-us-{i}"));
            let stats = nar_fs::unpack(&theirs[..], &by_us, &Limits::default()).unwrap();
            assert_eq!(stats.nar_size, theirs.len() as u64);
            assert!(dump_to_vec(&by_us) == original, "{}: unpacking {}", nix.version, root.display());
            let again = nix_stdout(nix_cmd(&store, &nix, "nix-store").arg("--dump").arg(&by_us));
            assert!(again == original, "{}: nix-store --dump of our unpack of {}", nix.version, root.display());
        }
    }
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn listings_and_cat_match_nix_nar_ls_and_cat() {
    for nix in nixes() {
        let store = TestStore::new();
        let work = store.work_dir("ls");
        for root in varied_roots(&work.join("src"), false) {
            let nar_bytes = dump_to_vec(&root);
            let nar_file = work.join("x.nar");
            fs::write(&nar_file, &nar_bytes).unwrap();
            let mut paths = vec!["/"];
            if root.ends_with("tree") {
                paths.extend(["/bin", "/names", "/deep/d0/d1", "/hello", "/link-dir", "/big", "/pad"]);
            }
            for path in paths {
                for recursive in [true, false] {
                    let mut cmd = nix_cmd(&store, &nix, "nix");
                    cmd.args(["nar", "ls", "--json"]).args(recursive.then_some("-R")).arg(&nar_file).arg(path);
                    let theirs = json(&nix_stdout(&mut cmd));
                    let mut ours = Vec::new();
                    nar::write_json_listing(&nar_bytes[..], path, recursive, &mut ours, &Limits::default()).unwrap();
                    assert_eq!(
                        json(&ours),
                        theirs,
                        "{}: nar ls {path} (recursive: {recursive}) of {}",
                        nix.version,
                        root.display()
                    );
                    if path == "/" && recursive {
                        let mut ls = Vec::new();
                        nar::write_ls_document(&nar_bytes[..], &mut ls, &Limits::default()).unwrap();
                        assert_eq!(json(&ls), serde_json::json!({"version": 1, "root": theirs}));
                    }
                }
            }
            let files: &[&str] = if root.ends_with("tree") {
                &[
                    "/hello",
                    "/big",
                    "/empty",
                    "/names/é",
                    "/deep/d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/d13/d14/d15/d16/d17/d18/d19/leaf",
                ]
            } else if root.is_file() && !root.is_symlink() {
                &[""] /* 2.8 refuses "/" */
            } else {
                &[]
            };
            for file in files {
                let theirs = nix_stdout(nix_cmd(&store, &nix, "nix").args(["nar", "cat"]).arg(&nar_file).arg(file));
                let mut ours = Vec::new();
                let size = nar::cat(&nar_bytes[..], file, &mut ours, &Limits::default()).unwrap();
                assert_eq!(size, ours.len() as u64);
                assert!(ours == theirs, "{}: nar cat {file}", nix.version);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Behaviour of our own.

#[test]
fn nar_offsets_point_at_the_contents() {
    let tmp = scratch();
    let root = tmp.path().join("tree");
    varied_tree(&root, true);
    let nar_bytes = dump_to_vec(&root);
    let mut reader = NarReader::new(&nar_bytes[..]);
    let mut files = 0;
    while let Some(event) = reader.next().unwrap() {
        if let Event::Regular { size, offset, mut contents, .. } = event {
            let mut data = Vec::new();
            contents.read_to_end(&mut data).unwrap();
            assert_eq!(&nar_bytes[offset as usize..(offset + size) as usize], &data[..]);
            files += 1;
        }
    }
    assert!(files > 30);
}

#[test]
fn list_path_describes_a_directory_and_its_entries() {
    let tmp = scratch();
    let root = tmp.path().join("tree");
    varied_tree(&root, false);
    let nar_bytes = dump_to_vec(&root);
    let limits = Limits::default();
    let bin = nar::list_path(&nar_bytes[..], "/bin", &limits).unwrap();
    assert_eq!(bin.node, NodeInfo::Directory);
    assert_eq!(bin.entries.len(), 1);
    assert_eq!(bin.entries[0].name, b"tool");
    assert!(matches!(bin.entries[0].node, NodeInfo::Regular { executable: true, size: 18, .. }));
    let link = nar::list_path(&nar_bytes[..], "link-dir", &limits).unwrap();
    assert_eq!(link.node, NodeInfo::Symlink { target: b"bin".to_vec() });
    assert!(link.entries.is_empty());
    let top = nar::list_path(&nar_bytes[..], "/", &limits).unwrap();
    let names: Vec<_> = top.entries.iter().map(|e| e.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.contains(&b"empty-dir".to_vec()));

    for missing in ["/nope", "/hello/x", "/link-dir/tool"] {
        let err = nar::list_path(&nar_bytes[..], missing, &limits).unwrap_err();
        assert!(matches!(err, NarError::NotFound(_)), "{missing}: {err}");
    }
    let err = nar::cat(&nar_bytes[..], "/bin", &mut Vec::new(), &limits).unwrap_err();
    assert!(matches!(err, NarError::NotARegularFile(_)), "{err}");
    let err = nar::cat(&nar_bytes[..], "/link-rel", &mut Vec::new(), &limits).unwrap_err();
    assert!(matches!(err, NarError::NotARegularFile(_)), "{err}");
}

#[test]
fn reader_consumes_exactly_the_nar_even_one_byte_at_a_time() {
    let tmp = scratch();
    let root = tmp.path().join("tree");
    varied_tree(&root, true);
    let nar_bytes = dump_to_vec(&root);
    let mut stream = nar_bytes.clone();
    stream.extend_from_slice(b"NEXT MESSAGE");

    let mut rest = &stream[..];
    let stats = nar_fs::unpack(&mut rest, &tmp.path().join("out"), &Limits::default()).unwrap();
    assert_eq!(rest, b"NEXT MESSAGE");
    assert_eq!(stats.nar_size, nar_bytes.len() as u64);
    assert_eq!(stats.bytes, file_bytes(&root));
    assert!(dump_to_vec(&tmp.path().join("out")) == nar_bytes);

    let mut slow = BufReader::with_capacity(1, &stream[..]);
    let mut reader = NarReader::new(&mut slow);
    while reader.next().unwrap().is_some() {}
    let mut left = Vec::new();
    slow.read_to_end(&mut left).unwrap();
    assert_eq!(left, b"NEXT MESSAGE");
}

#[test]
fn reader_keeps_failing_after_an_error() {
    let model = Node::Dir(BTreeMap::from([(b"a".to_vec(), Node::File { executable: false, contents: vec![1; 20] })]));
    let nar_bytes = model_nar(&model);
    // Cut 8 bytes before the end of the contents (after them come 4 bytes
    // of padding and three `)`).
    let cut = &nar_bytes[..nar_bytes.len() - 60];
    let mut reader = NarReader::new(cut);
    assert!(matches!(reader.next(), Ok(Some(Event::Directory))));
    assert!(matches!(reader.next(), Ok(Some(Event::Entry { name: b"a" }))));
    match reader.next() {
        Ok(Some(Event::Regular { size: 20, mut contents, .. })) => {
            let err = contents.copy_to(&mut Vec::new()).unwrap_err();
            assert!(matches!(err, NarError::Truncated { what: "file contents", .. }), "{err}");
        }
        _ => panic!("expected the file"),
    }
    assert!(matches!(reader.next(), Err(NarError::UsedAfterError { .. })));
    assert!(matches!(reader.next(), Err(NarError::UsedAfterError { .. })));
    assert!(!reader.is_done());
}

/// Accepts `left` bytes, then fails.
struct FailingWriter {
    left: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            return Err(std::io::Error::other("disk full"));
        }
        self.left -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn dump_parallel_writes_the_same_bytes_and_passes_on_write_errors() {
    let tmp = scratch();
    let root = tmp.path().join("tree");
    varied_tree(&root, true);
    let expected = dump_to_vec(&root);
    let mut parallel = Vec::new();
    assert_eq!(nar_fs::dump_parallel(&root, &mut parallel).unwrap(), expected.len() as u64);
    assert!(parallel == expected);
    let mut small = Vec::new();
    nar_fs::dump_parallel(&root.join("hello"), &mut small).unwrap();
    assert_eq!(small, dump_to_vec(&root.join("hello")));

    for left in [0, 100, 1 << 20, 3 << 20] {
        let err = nar_fs::dump_parallel(&root, &mut FailingWriter { left }).unwrap_err();
        assert!(matches!(&err, NarError::Write(e) if e.to_string() == "disk full"), "{err}");
        let err = nar_fs::dump(&root, &mut FailingWriter { left }).unwrap_err();
        assert!(matches!(&err, NarError::Write(e) if e.to_string() == "disk full"), "{err}");
    }
}

#[test]
fn dump_rejects_special_files_naming_them() {
    let tmp = scratch();
    let root = tmp.path().join("tree");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("a"), "x").unwrap();
    let fifo = root.join("b-fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    match nar_fs::dump(&root, &mut std::io::sink()) {
        Err(NarError::UnsupportedFileType { path }) => assert_eq!(path, fifo),
        other => panic!("expected an unsupported file type error, got {other:?}"),
    }
    match nar_fs::hash_path(&fifo, Algorithm::Sha256) {
        Err(NarError::UnsupportedFileType { path }) => assert_eq!(path, fifo),
        other => panic!("expected an unsupported file type error, got {other:?}"),
    }
    assert!(matches!(nar_fs::dump(&root.join("missing"), &mut std::io::sink()), Err(NarError::Dump { .. })));
}

#[test]
fn unpack_needs_an_existing_parent() {
    let tmp = scratch();
    let nar_bytes = model_nar(&Node::File { executable: false, contents: b"x".to_vec() });
    let err = nar_fs::unpack(&nar_bytes[..], &tmp.path().join("no/such/dir"), &Limits::default()).unwrap_err();
    assert!(matches!(err, NarError::Unpack { .. }), "{err}");
}

#[test]
fn unpack_sets_the_modes_cppnix_sets() {
    let tmp = scratch();
    let model = Node::Dir(BTreeMap::from([
        (b"exe".to_vec(), Node::File { executable: true, contents: b"#!".to_vec() }),
        (b"plain".to_vec(), Node::File { executable: false, contents: vec![] }),
    ]));
    let out = tmp.path().join("out");
    nar_fs::unpack(&model_nar(&model)[..], &out, &Limits::default()).unwrap();
    let umask = {
        let probe = tmp.path().join("probe");
        fs::write(&probe, "").unwrap();
        0o666 & !fs::metadata(&probe).unwrap().permissions().mode()
    };
    let mode = |p: &str| fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("plain"), 0o666 & !umask);
    assert_eq!(mode("exe"), (0o666 & !umask) | 0o111);
    assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o777 & !umask);
}

// ---------------------------------------------------------------------------
// Properties.

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(prop_oneof![b'a'..=b'e', Just(b'.'), Just(b'-')], 1..4),
        proptest::collection::vec(1u8..=255, 1..12),
    ]
    .prop_filter("valid entry name", |n| !n.contains(&b'/') && n != b"." && n != b"..")
}

/// Random trees; with `big_files`, some files are larger than the
/// writer's and reader's buffers.
fn tree(big_files: bool) -> impl Strategy<Value = Node> {
    let big_weight = if big_files { 1 } else { 0 };
    let leaf = prop_oneof![
        6 => (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(executable, contents)| Node::File { executable, contents }),
        big_weight => (any::<bool>(), 0usize..(1 << 21), any::<u64>())
            .prop_map(|(executable, len, seed)| Node::File { executable, contents: noise(len, seed) }),
        3 => proptest::collection::vec(1u8..=255, 1..60).prop_map(Node::Symlink),
    ];
    leaf.prop_recursive(5, 48, 8, |inner| proptest::collection::btree_map(name(), inner, 0..8).prop_map(Node::Dir))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Writer, reader and unpacker all agree with the model.
    #[test]
    fn write_read_unpack_round_trip(model in tree(true)) {
        let tmp = scratch();
        let expected = model_nar(&model);
        let src = tmp.path().join("src");
        materialise(&src, &model);
        let dumped = dump_to_vec(&src);
        prop_assert!(dumped == expected, "dump differs from the model's NAR");
        prop_assert_eq!(read_model(&dumped).unwrap(), model);
        let out = tmp.path().join("out");
        let stats = nar_fs::unpack(&dumped[..], &out, &Limits::default()).unwrap();
        prop_assert_eq!(stats.nar_size, dumped.len() as u64);
        prop_assert!(dump_to_vec(&out) == expected, "dump of the unpacked tree differs");
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Word { at: usize, value: u64 },
    Truncate { at: usize },
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let word =
        prop_oneof![Just(0u64), Just(1), Just(8), Just(255), Just(256), Just(u64::MAX), Just(1 << 40), any::<u64>()];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), word).prop_map(|(at, value)| Mutation::Word { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 1usize..24).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..24))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

fn mutate(nar: &mut Vec<u8>, m: &Mutation) {
    let len = nar.len();
    match m {
        Mutation::Flip { at, bit } => nar[at % len] ^= 1 << bit,
        Mutation::Word { at, value } => {
            let at = (at % (len / 8)) * 8;
            nar[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        Mutation::Truncate { at } => nar.truncate(at % len),
        Mutation::Delete { at, len: n } => {
            let at = at % len;
            nar.drain(at..(at + n).min(len));
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (len + 1);
            nar.splice(at..at, bytes.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Mutated NARs never make the reader, the listing or the unpacker
    /// panic; they agree on whether the NAR is valid; and a failed unpack
    /// leaves nothing behind.
    #[test]
    fn mutated_nars_are_handled(model in tree(false), mutations in proptest::collection::vec(mutation(), 1..4)) {
        let mut bytes = model_nar(&model);
        for m in &mutations {
            if bytes.len() < 8 {
                break;
            }
            mutate(&mut bytes, m);
        }
        let limits = Limits { max_contents_size: 1 << 24, ..Limits::default() };
        let mut reader = NarReader::with_limits(&bytes[..], limits.clone());
        let read = reader.skip_to_end();
        let mut listing = Vec::new();
        let listed = nar::write_ls_document(&bytes[..], &mut listing, &limits);
        prop_assert_eq!(read.is_ok(), listed.is_ok(), "reader: {:?}, listing: {:?}", read, listed);

        let tmp = scratch();
        let out = tmp.path().join("out");
        match nar_fs::unpack(&bytes[..], &out, &limits) {
            Ok(_) => {
                prop_assert!(read.is_ok());
                prop_assert!(dump_to_vec(&out) == bytes[..reader.offset() as usize], "valid mutant did not round-trip");
            }
            Err(e) => {
                prop_assert!(read.is_err(), "unpack failed on a NAR the reader accepts: {}", e);
                prop_assert!(fs::symlink_metadata(&out).is_err(), "{} left behind after: {}", out.display(), e);
                prop_assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
            }
        }
    }
}

/// `dump_bytes` (a file's NAR built in memory) equals the dump of a real file
/// with the same contents and executable bit.
#[test]
fn dump_bytes_equals_dump_of_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (i, contents) in [&b""[..], b"x", b"exactly8", b"nine byte", &[7u8; 1000]].iter().enumerate() {
        for exe in [false, true] {
            let f = dir.path().join(format!("f{i}{exe}"));
            std::fs::write(&f, contents).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(if exe { 0o755 } else { 0o644 })).unwrap();
            let mut nar = Vec::new();
            nar_fs::dump(&f, &mut nar).unwrap();
            assert_eq!(store::nar::dump_bytes(contents, exe), nar, "contents {contents:?}, executable {exe}");
        }
    }
}
