//! `builtin:buildenv`, the builder of every profile generation `nix-env`
//! makes (`<nix/buildenv.nix>`): a tree of symlinks into the installed
//! packages. Reproduces CppNix's `builtinBuildenv`, `buildProfile` and
//! `createLinks` (buildenv.cc).
//!
//! - `derivations` lists the packages: repeated `active priority n path₁ …
//!   pathₙ` (words separated by blanks); inactive ones are left out.
//! - Packages are linked in order of priority (a lower number wins), then
//!   of path. A file two packages provide is an error when their priorities
//!   are equal; otherwise the winner's link stays. Directories are merged:
//!   a directory is linked as a whole until a second package brings the
//!   same one, then the link becomes a real directory holding links to
//!   both.
//! - Names starting with `.` and a few files that would only collide
//!   (`propagated-build-inputs`, `nix-support`, `perllocal.pod`,
//!   `info/dir`, `log`, `manifest.nix`, `manifest.json`) are left out;
//!   dangling symlinks and packages that are not directories are skipped
//!   with a warning.
//! - Packages named in a package's `nix-support/propagated-user-env-packages`
//!   are linked afterwards, each with a priority of its own counting from
//!   1000 (so they lose every collision with what was asked for).
//! - `manifest.nix` links to the `manifest` attribute.
//!
//! Directories are read in the order the file system gives, as CppNix
//! does: when several files collide, the first one found is reported.

use super::context::Context;
use super::messages::{arg, sys_error};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One path of one entry of `derivations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub path: OsString,
    pub active: bool,
    pub priority: i32,
}

/// Runs the builtin: `warn` gets the warnings.
pub fn run(cx: &Context, warn: &mut dyn FnMut(String)) -> Result<(), String> {
    let out = PathBuf::from(OsStr::from_bytes(cx.attr("out")?));
    std::fs::create_dir_all(&out).map_err(|e| sys_error(format!("creating directory '{}'", arg(out.display())), &e))?;
    let packages = parse_derivations(cx.attr("derivations")?)?;
    let conflict = if cx.new_wording() { ConflictWording::Nix2_15 } else { ConflictWording::Nix2_8 };
    build_profile(&out, packages, conflict, warn)?;
    let manifest = OsStr::from_bytes(cx.attr("manifest")?);
    let link = out.join("manifest.nix");
    std::os::unix::fs::symlink(manifest, &link).map_err(|e| {
        sys_error(
            format!("creating symlink from '{}' to '{}'", arg(link.display()), arg(Path::new(manifest).display())),
            &e,
        )
    })
}

/// Parses the `derivations` attribute: words separated by blanks, repeated
/// `active priority n path₁ … pathₙ`. A package is active unless its word
/// is `false`.
pub fn parse_derivations(text: &[u8]) -> Result<Vec<Package>, String> {
    let mut words = text.split(|c| b" \t\n\r".contains(c)).filter(|w| !w.is_empty());
    let mut packages = Vec::new();
    while let Some(active) = words.next() {
        let active = active != b"false";
        let mut number = |what: &str| -> Result<i64, String> {
            let word = words
                .next()
                .ok_or_else(|| format!("the 'derivations' attribute ends before the {what} of a package"))?;
            leading_int(word).ok_or_else(|| {
                format!(
                    "the 'derivations' attribute has '{}' where the {what} of a package should be",
                    arg(String::from_utf8_lossy(word))
                )
            })
        };
        let priority =
            i32::try_from(number("priority")?).map_err(|_| "a package's priority is out of range".to_owned())?;
        let count = number("number of outputs")?;
        for _ in 0..count {
            let path =
                words.next().ok_or("the 'derivations' attribute ends before the last output path of a package")?;
            packages.push(Package { path: OsString::from_vec(path.to_vec()), active, priority });
        }
    }
    Ok(packages)
}

/// A number as C++'s `stoi` reads it: an optional sign and digits, the
/// rest of the word ignored; none when there are no digits.
fn leading_int(word: &[u8]) -> Option<i64> {
    let (negative, digits) = match word.first() {
        Some(b'-') => (true, &word[1..]),
        Some(b'+') => (false, &word[1..]),
        _ => (false, word),
    };
    let len = digits.iter().take_while(|c| c.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    let mut n: i64 = 0;
    for d in &digits[..len] {
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

/// How a same-priority collision is reported: Nix 2.15 (protocol 1.35)
/// replaced 2.8's one-line message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictWording {
    Nix2_8,
    Nix2_15,
}

/// The links made so far and their packages' priorities.
struct State<'w> {
    priorities: HashMap<PathBuf, i32>,
    conflict: ConflictWording,
    warn: &'w mut dyn FnMut(String),
}

/// Links `packages` into `out` (CppNix `buildProfile`).
pub fn build_profile(
    out: &Path,
    mut packages: Vec<Package>,
    conflict: ConflictWording,
    warn: &mut dyn FnMut(String),
) -> Result<(), String> {
    let mut state = State { priorities: HashMap::new(), conflict, warn };
    let mut done: HashSet<OsString> = HashSet::new();
    let mut postponed: BTreeSet<OsString> = BTreeSet::new();
    packages.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.path.as_bytes().cmp(b.path.as_bytes())));
    let mut add =
        |state: &mut State, dir: &OsStr, priority: i32, postponed: &mut BTreeSet<OsString>| -> Result<(), String> {
            if !done.insert(dir.to_owned()) {
                return Ok(());
            }
            create_links(state, Path::new(dir), out, priority)?;
            let list = Path::new(dir).join("nix-support/propagated-user-env-packages");
            match read_file(&list) {
                Ok(text) => {
                    for p in text.split(|c| *c == b' ' || *c == b'\n').filter(|w| !w.is_empty()) {
                        if !done.contains(OsStr::from_bytes(p)) {
                            postponed.insert(OsString::from_vec(p.to_vec()));
                        }
                    }
                    Ok(())
                }
                Err((_, e)) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(()),
                Err((doing, e)) => Err(sys_error(format!("{doing} '{}'", arg(list.display())), &e)),
            }
        };
    for p in packages.iter().filter(|p| p.active) {
        add(&mut state, &p.path, p.priority, &mut postponed)?;
    }
    let mut counter = 1000;
    while !postponed.is_empty() {
        for dir in std::mem::take(&mut postponed) {
            add(&mut state, &dir, counter, &mut postponed)?;
            counter += 1;
        }
    }
    Ok(())
}

/// Reads a whole file; the error says whether opening or reading failed.
fn read_file(path: &Path) -> Result<Vec<u8>, (&'static str, std::io::Error)> {
    let mut file = std::fs::File::open(path).map_err(|e| ("opening file", e))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(|e| ("reading from file", e))?;
    Ok(text)
}

/// Files left out of profiles (useless there, or colliding between most
/// packages), by the end of their path.
const SKIPPED: [&str; 7] = [
    "/propagated-build-inputs",
    "/nix-support",
    "/perllocal.pod",
    "/info/dir",
    "/log",
    "/manifest.nix",
    "/manifest.json",
];

fn is_dir(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_dir()
}

/// Links what `src_dir` holds into `dst_dir` (CppNix `createLinks`).
fn create_links(state: &mut State, src_dir: &Path, dst_dir: &Path, priority: i32) -> Result<(), String> {
    let entries = match std::fs::read_dir(src_dir) {
        Ok(entries) => entries,
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            (state.warn)(format!(
                "not including '{}' in the user environment because it's not a directory",
                src_dir.display()
            ));
            return Ok(());
        }
        Err(e) => return Err(sys_error(format!("opening directory '{}'", arg(src_dir.display())), &e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| sys_error(format!("reading directory '{}'", arg(src_dir.display())), &e))?;
        names.push(entry.file_name());
    }
    for name in names {
        if name.as_bytes().first() == Some(&b'.') {
            continue;
        }
        let src = src_dir.join(&name);
        let dst = dst_dir.join(&name);
        let src_meta = match std::fs::metadata(&src) {
            Ok(m) => m,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                (state.warn)(format!("skipping dangling symlink '{}'", dst.display()));
                continue;
            }
            Err(e) => return Err(sys_error(format!("getting status of '{}'", arg(src.display())), &e)),
        };
        if SKIPPED.iter().any(|s| src.as_os_str().as_bytes().ends_with(s.as_bytes())) {
            continue;
        }
        let dst_meta = match std::fs::symlink_metadata(&dst) {
            Ok(m) => Some(m),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => None,
            Err(e) => return Err(sys_error(format!("getting status of '{}'", arg(dst.display())), &e)),
        };
        if is_dir(&src_meta) {
            match &dst_meta {
                Some(m) if m.file_type().is_dir() => {
                    create_links(state, &src, &dst, priority)?;
                    continue;
                }
                Some(m) if m.file_type().is_symlink() => {
                    // Another package's directory: make it a real one
                    // holding links to both.
                    let target = std::fs::canonicalize(&dst)
                        .map_err(|e| sys_error(format!("getting status of '{}'", arg(dst.display())), &e))?;
                    let target_is_dir = std::fs::symlink_metadata(&target)
                        .map_err(|e| sys_error(format!("getting status of '{}'", arg(target.display())), &e))?
                        .file_type()
                        .is_dir();
                    if !target_is_dir {
                        return Err(format!(
                            "collision between '{}' and non-directory '{}'",
                            arg(src.display()),
                            arg(target.display())
                        ));
                    }
                    std::fs::remove_file(&dst)
                        .map_err(|e| sys_error(format!("unlinking '{}'", arg(dst.display())), &e))?;
                    mkdir(&dst)?;
                    let previous = *state.priorities.entry(dst.clone()).or_insert(0);
                    create_links(state, &target, &dst, previous)?;
                    create_links(state, &src, &dst, priority)?;
                    continue;
                }
                _ => {}
            }
        } else if let Some(m) = &dst_meta {
            if m.file_type().is_symlink() {
                let previous = *state.priorities.entry(dst.clone()).or_insert(0);
                if previous == priority {
                    let existing = std::fs::read_link(&dst)
                        .map_err(|e| sys_error(format!("reading symbolic link '{}'", arg(dst.display())), &e))?;
                    return Err(conflict(state.conflict, &src, &existing, priority));
                }
                if previous < priority {
                    continue;
                }
                std::fs::remove_file(&dst).map_err(|e| sys_error(format!("unlinking '{}'", arg(dst.display())), &e))?;
            } else if m.file_type().is_dir() {
                return Err(format!(
                    "collision between non-directory '{}' and directory '{}'",
                    arg(src.display()),
                    arg(dst.display())
                ));
            }
        }
        std::os::unix::fs::symlink(&src, &dst).map_err(|e| {
            sys_error(format!("creating symlink from '{}' to '{}'", arg(dst.display()), arg(src.display())), &e)
        })?;
        state.priorities.insert(dst, priority);
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dir)
        .map_err(|e| sys_error(format!("creating directory '{}'", arg(dir.display())), &e))
}

/// The same-priority collision of `src` with the link already there (to
/// `existing`), in the words of the nix-daemon the client goes with.
fn conflict(wording: ConflictWording, src: &Path, existing: &Path, priority: i32) -> String {
    match wording {
        // The exact text clients and scripts see from Nix 2.8's daemon.
        ConflictWording::Nix2_8 => format!(
            "packages '{}' and '{}' have the same priority {}; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' \
             to change the priority of one of the conflicting packages (0 being the highest priority)",
            arg(src.display()),
            arg(existing.display()),
            arg(priority)
        ),
        // Nix 2.15 and later name the link already there first.
        ConflictWording::Nix2_15 => format!(
            "Unable to build profile. There is a conflict for the following files:\n\n  {}\n  {}",
            arg(existing.display()),
            arg(src.display())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn pkg(path: &Path, priority: i32) -> Package {
        Package { path: path.as_os_str().to_owned(), active: true, priority }
    }

    /// A package dir with `files` (relative paths) holding their own names.
    fn make(root: &Path, name: &str, files: &[&str]) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        for f in files {
            let p = dir.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        dir
    }

    /// Every path under `root` with what it is: `d` or `-> target`.
    fn tree(root: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            for n in names {
                let p = dir.join(&n);
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let meta = fs::symlink_metadata(&p).unwrap();
                if meta.file_type().is_symlink() {
                    out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
                } else if meta.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(root, &p, out);
                } else {
                    out.push(rel);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out
    }

    fn build(out: &Path, packages: Vec<Package>) -> (Result<(), String>, Vec<String>) {
        let mut warnings = Vec::new();
        fs::create_dir_all(out).unwrap();
        let r = build_profile(out, packages, ConflictWording::Nix2_15, &mut |w| warnings.push(w));
        (r, warnings)
    }

    #[test]
    fn parses_the_derivations_attribute() {
        let got = parse_derivations(b"true 5 1 /s/a\nfalse -3 2 /s/b /s/c  true 7junk 0 ").unwrap();
        let p = |path: &str, active, priority| Package { path: path.into(), active, priority };
        assert_eq!(got, vec![p("/s/a", true, 5), p("/s/b", false, -3), p("/s/c", false, -3)]);
        assert_eq!(parse_derivations(b"").unwrap(), vec![]);
        assert!(parse_derivations(b"true 5").unwrap_err().contains("ends before the number of outputs"));
        assert!(parse_derivations(b"true 5 2 /s/a").unwrap_err().contains("ends before the last output path"));
        assert!(parse_derivations(b"true x 1 /s/a").unwrap_err().contains("priority"));
        assert!(parse_derivations(b"true 99999999999 1 /s/a").unwrap_err().contains("out of range"));
    }

    #[test]
    fn links_files_and_merges_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let a = make(tmp.path(), "a", &["bin/a", "share/a/doc", "lib/liba", "info/a.info", "info/dir"]);
        let b =
            make(tmp.path(), "b", &["bin/b", "share/b/doc", ".hidden", "nix-support/setup-hook", "log", "info/dir"]);
        let out = tmp.path().join("out");
        let (r, warnings) = build(&out, vec![pkg(&b, 5), pkg(&a, 5)]);
        r.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (a, b) = (a.display(), b.display());
        assert_eq!(
            tree(&out),
            vec![
                "bin/".to_owned(),
                format!("bin/a -> {a}/bin/a"),
                format!("bin/b -> {b}/bin/b"),
                "info/".to_owned(),
                format!("info/a.info -> {a}/info/a.info"),
                format!("lib -> {a}/lib"),
                "share/".to_owned(),
                format!("share/a -> {a}/share/a"),
                format!("share/b -> {b}/share/b"),
            ]
        );
    }

    #[test]
    fn lower_priority_numbers_win_and_equal_ones_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let a = make(tmp.path(), "a", &["bin/tool"]);
        let b = make(tmp.path(), "b", &["bin/tool"]);
        let out = tmp.path().join("out1");
        build(&out, vec![pkg(&a, 6), pkg(&b, 5)]).0.unwrap();
        assert_eq!(fs::read_link(out.join("bin/tool")).unwrap(), b.join("bin/tool"));
        let out = tmp.path().join("out2");
        build(&out, vec![pkg(&a, 4), pkg(&b, 5)]).0.unwrap();
        assert_eq!(fs::read_link(out.join("bin/tool")).unwrap(), a.join("bin/tool"));

        // Same priority: sorted by path, so `a` is linked first and `b`
        // collides with it.
        let out = tmp.path().join("out3");
        let err = build(&out, vec![pkg(&b, 5), pkg(&a, 5)]).0.unwrap_err();
        assert_eq!(err, conflict(ConflictWording::Nix2_15, &b.join("bin/tool"), &a.join("bin/tool"), 5));
        assert!(err.starts_with("Unable to build profile. There is a conflict for the following files:\n\n  "));
        assert!(err.find(&a.display().to_string()) < err.find(&b.display().to_string()), "{err}");
        let old = conflict(ConflictWording::Nix2_8, &b.join("bin/tool"), &a.join("bin/tool"), 5);
        assert!(old.starts_with(&format!(
            "packages '{}' and '{}'",
            arg(b.join("bin/tool").display()),
            arg(a.join("bin/tool").display())
        )));
        assert!(old.contains(&format!("have the same priority {};", arg(5))));
    }

    #[test]
    fn a_file_against_a_directory_is_a_collision() {
        let tmp = tempfile::tempdir().unwrap();
        let a = make(tmp.path(), "a", &["share/x/f"]);
        let b = make(tmp.path(), "b", &["share/y/f"]);
        let c = make(tmp.path(), "c", &["share"]);
        let out = tmp.path().join("out");
        // a's share is linked, b's expands it into a directory, c's file
        // meets that directory.
        let err = build(&out, vec![pkg(&a, 1), pkg(&b, 2), pkg(&c, 3)]).0.unwrap_err();
        assert!(err.starts_with("collision between non-directory"), "{err}");
        // A directory against a linked file.
        let out = tmp.path().join("out2");
        let err = build(&out, vec![pkg(&c, 1), pkg(&a, 2)]).0.unwrap_err();
        assert!(err.starts_with("collision between"), "{err}");
        assert!(err.contains("and non-directory"), "{err}");
    }

    #[test]
    fn expanded_directories_keep_the_first_package_priority() {
        let tmp = tempfile::tempdir().unwrap();
        let a = make(tmp.path(), "a", &["share/doc/x", "share/doc/same"]);
        let b = make(tmp.path(), "b", &["share/doc/y", "share/doc/same"]);
        let out = tmp.path().join("out");
        build(&out, vec![pkg(&a, 3), pkg(&b, 8)]).0.unwrap();
        assert_eq!(fs::read_link(out.join("share/doc/same")).unwrap(), a.join("share/doc/same"));
        assert_eq!(fs::read_link(out.join("share/doc/y")).unwrap(), b.join("share/doc/y"));
        assert!(fs::symlink_metadata(out.join("share")).unwrap().is_dir());
    }

    #[test]
    fn propagated_packages_come_later_and_lose() {
        let tmp = tempfile::tempdir().unwrap();
        let dep = make(tmp.path(), "dep", &["bin/tool", "bin/dep-only"]);
        let dep2 = make(tmp.path(), "dep2", &["bin/dep2"]);
        let top = make(tmp.path(), "top", &["bin/tool"]);
        // Separated by blanks and newlines; the package itself is done.
        fs::create_dir_all(top.join("nix-support")).unwrap();
        let list = format!("{} {}\n{}\n", dep.display(), top.display(), dep2.display());
        fs::write(top.join("nix-support/propagated-user-env-packages"), list).unwrap();
        let out = tmp.path().join("out");
        build(&out, vec![pkg(&top, 5)]).0.unwrap();
        assert_eq!(fs::read_link(out.join("bin/tool")).unwrap(), top.join("bin/tool"));
        assert_eq!(fs::read_link(out.join("bin/dep-only")).unwrap(), dep.join("bin/dep-only"));
        assert_eq!(fs::read_link(out.join("bin/dep2")).unwrap(), dep2.join("bin/dep2"));
        assert!(!out.join("nix-support").exists());
    }

    #[test]
    fn inactive_packages_are_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let a = make(tmp.path(), "a", &["bin/a"]);
        let out = tmp.path().join("out");
        build(&out, vec![Package { active: false, ..pkg(&a, 5) }]).0.unwrap();
        assert!(tree(&out).is_empty());
    }

    #[test]
    fn dangling_links_and_files_are_skipped_with_warnings() {
        let tmp = tempfile::tempdir().unwrap();
        let a = make(tmp.path(), "a", &["bin/a"]);
        std::os::unix::fs::symlink("/nonexistent/target", a.join("bin/broken")).unwrap();
        let file = tmp.path().join("plain-file");
        fs::write(&file, "not a package").unwrap();
        let out = tmp.path().join("out");
        let (r, warnings) = build(&out, vec![pkg(&a, 5), pkg(&file, 5)]);
        r.unwrap();
        // `bin` is linked as a whole: nothing looks inside it yet.
        assert_eq!(
            warnings,
            vec![format!("not including '{}' in the user environment because it's not a directory", file.display())]
        );
        assert_eq!(tree(&out), vec![format!("bin -> {}/bin", a.display())]);
        // Expanded, its dangling link is skipped.
        let b = make(tmp.path(), "b", &["bin/b"]);
        let out = tmp.path().join("out2");
        let (r, warnings) = build(&out, vec![pkg(&a, 5), pkg(&b, 5)]);
        r.unwrap();
        assert_eq!(warnings, vec![format!("skipping dangling symlink '{}'", out.join("bin/broken").display())]);
    }

    #[test]
    fn a_missing_package_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let err = build(&out, vec![pkg(&tmp.path().join("missing"), 5)]).0.unwrap_err();
        assert!(err.contains("opening directory"), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
    }

    #[test]
    fn runs_from_the_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let a = make(tmp.path(), "a", &["bin/a"]);
        let out = tmp.path().join("out");
        let env: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"out".to_vec(), out.as_os_str().as_bytes().to_vec()),
            (b"derivations".to_vec(), format!("true 5 1 {}", a.display()).into_bytes()),
            (b"manifest".to_vec(), b"/some/manifest".to_vec()),
        ];
        let cx = Context { env: &env, client_minor: 34 };
        run(&cx, &mut |w| panic!("warned: {w}")).unwrap();
        assert_eq!(
            tree(&out),
            vec![format!("bin -> {}/bin", a.display()), "manifest.nix -> /some/manifest".to_owned()]
        );
        // The manifest is read last, once the tree is made.
        let out2 = tmp.path().join("out2");
        let env = vec![(b"out".to_vec(), out2.as_os_str().as_bytes().to_vec()), env[1].clone()];
        let err = run(&Context { env: &env, client_minor: 34 }, &mut |_| {}).unwrap_err();
        assert_eq!(err, format!("attribute '{}' missing", arg("manifest")));
        assert_eq!(tree(&out2), vec![format!("bin -> {}/bin", a.display())]);
    }
}
