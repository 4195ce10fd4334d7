//! Failures: every command reports a bad input as one `error:` line (the
//! last on stderr; progress lines may come before it) and a non-zero exit.

use crate::support::*;
use testkit::TestStore;

fn assert_one_error_line(store: &TestStore, args: &[&str], mentions: &str) {
    let out = testkit::output(store.armitage().args(args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "armitage {args:?} succeeded");
    assert_eq!(out.status.code(), Some(1), "armitage {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "armitage {args:?}: one error line expected:\n{stderr}");
    let last = lines.last().unwrap();
    assert!(last.starts_with("error: "), "armitage {args:?}: {stderr}");
    assert!(last.contains(mentions), "armitage {args:?}: the error should mention {mentions:?}: {stderr}");
    assert!(!stderr.contains('\x1b'), "no terminal escapes when stderr is not a terminal: {stderr:?}");
}

#[test]
fn errors_are_one_line() {
    let store = TestStore::new();
    let work = store.work_dir("in");
    testkit::write_file(work.join("file"), "x");
    testkit::write_file(work.join("dir/file"), "x");
    let (file, dir) = (work.join("file"), work.join("dir"));
    let (file, dir) = (file.to_str().unwrap(), dir.to_str().unwrap());
    let missing = "/nonexistent/armitage-test";
    let in_store = format!("{}/00000000000000000000000000000000-missing", store.store_dir);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["nar", "dump", missing], missing),
        (vec!["nar", "cat", missing, "/x"], missing),
        (vec!["nar", "ls", file, "/"], "Nix archive"),
        (vec!["hash", "path", missing], missing),
        (vec!["hash", "path", "--type", "sha3", file], "sha3"),
        (vec!["hash", "file", "--type", "bogus", file], "bogus"),
        (vec!["hash", "file", dir], dir),
        (vec!["store", "add", missing], missing),
        (vec!["store", "add", "--fixed", "sha3", file], "sha3"),
        (vec!["store", "add", "--fixed", "sha256", dir], dir),
        (vec!["path-info", missing], missing),
        (vec!["path-info", &in_store], "is not valid"),
        (vec!["derivation", "show", &in_store], "derivation"),
        (vec!["key", "generate", "k", "/nonexistent/sk", "/nonexistent/pk"], "/nonexistent/sk"),
        (vec!["store", "gc", "--delete", missing], missing),
    ];
    for (args, mentions) in &cases {
        assert_one_error_line(&store, args, mentions);
    }
}

#[test]
fn deleting_a_live_path_is_one_error_line() {
    let Some(nix) = nix_2_8() else { return };
    let store = TestStore::new();
    let work = store.work_dir("in");
    testkit::write_file(work.join("file"), "x");
    let path = testkit::line(testkit::run(store.nix(&nix, "nix-store").arg("--add").arg(work.join("file"))));
    make_symlink(&path, &store.state_dir.join("gcroots/file"));
    assert_one_error_line(&store, &["store", "gc", "--delete", &path], &path);
    assert_one_error_line(&store, &["derivation", "show", &path], "is not a derivation");
}
