//! Profiles and channels with stock Nix clients (2.8 and 2.26) through
//! armitage, side by side with CppNix's nix-daemon of the same version
//! (each on a store of its own, see [`compat_tests::Twins`]): `nix-env`
//! (install, uninstall, upgrade, rollback, `--set`, `--set-flag priority`,
//! queries, generations, a collision and its resolution),
//! `nix-collect-garbage -d`, `nix profile` (2.26) and `nix-channel`.
//!
//! Every `nix-env` change builds a `builtin:buildenv` derivation in the
//! daemon, and `nix-channel --update` a `builtin:unpack-channel` one
//! (armitage/src/build/builtins/). Compared after each step: the profile's
//! generation links and their targets, the tree of the current generation
//! (every path, symlink targets, file contents), the manifest, exit codes,
//! and `error:` and `warning:` lines, ours translated into theirs' terms.
//!
//! Legitimate differences, asserted as armitage's behaviour where they are:
//! the two paths of a same-priority collision come in path order, so in
//! hash order, which differs between the stores (compared as a pair); and
//! armitage refuses a `channelName` holding a `/` for every client,
//! as Nix 2.24.7 and later do, where nix-daemon 2.8 renames the channel
//! wherever the name leads.
//!
//! The builders are `/bin/sh` with the host's coreutils (`sandbox = false`
//! in the test nix.conf) and `preferLocalBuild` (nix-daemon 2.26 offers
//! other builds to its build hook, which cannot start here); they build as
//! root (`build-users-group =`, see .config/nextest.toml).

use compat_tests::{Side, Twins, error_blocks, strip_ansi, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::{NixVersion, line, write_file};

const CONF: &str = "build-users-group =\n";

/// The packages: `hello` (files, a hidden one and a `log` left out),
/// `tools` (a `lib` with a dangling symlink), `withprop` (propagating
/// `propagated`, whose `lib` merges with tools'), `clash` (another
/// `bin/hello`). `version` names hello's version.
fn packages(version: &str) -> String {
    format!(
        r#"
let
  mk = name: script: extra: derivation ({{
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ("PATH=/bin:/usr/bin\nset -e\n" + script) ];
    preferLocalBuild = true;
  }} // extra);
  propagated = mk "propagated-1.0" ''
    mkdir -p $out/bin $out/lib
    echo propagated > $out/bin/propagated
    echo lib > $out/lib/libpropagated
  '' {{}};
in {{
  hello = mk "hello-{version}" ''
    mkdir -p $out/bin $out/share/doc/hello $out/share/man/man1
    echo "hello {version}" > $out/bin/hello
    echo doc > $out/share/doc/hello/README
    echo man > $out/share/man/man1/hello.1
    echo hidden > $out/.hidden
    echo log > $out/log
  '' {{}};
  tools = mk "tools-1.0" ''
    mkdir -p $out/bin $out/share/doc/tools $out/lib
    echo a > $out/bin/tool-a
    echo b > $out/bin/tool-b
    echo doc > $out/share/doc/tools/README
    echo lib > $out/lib/libtools
    ln -s /nonexistent/dangling $out/lib/broken
  '' {{}};
  withprop = mk "withprop-1.0" ''
    mkdir -p $out/bin $out/nix-support
    echo withprop > $out/bin/withprop
    echo ${{propagated}} > $out/nix-support/propagated-user-env-packages
  '' {{}};
  clash = mk "clash-1.0" ''
    mkdir -p $out/bin
    echo clash > $out/bin/hello
  '' {{}};
}}
"#
    )
}

/// The directory holding the test profiles of a side (inside its state
/// dir, where `nix-collect-garbage -d` looks).
fn profiles_dir(tw: &Twins, side: Side) -> PathBuf {
    let dir = tw.store(side).state_dir.join("profiles/test");
    std::fs::create_dir_all(&dir).expect("create the profiles dir");
    dir
}

/// Every entry under `root` (symlinks not followed), sorted: `path/` for a
/// directory, `path -> target` for a symlink, `path = contents` for a file.
fn tree(root: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").file_name())
            .collect();
        names.sort();
        for name in names {
            let p = dir.join(&name);
            let rel = p.strip_prefix(root).expect("under the root").display().to_string();
            let meta = std::fs::symlink_metadata(&p).expect("lstat");
            if meta.file_type().is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&p).expect("readlink").display()));
            } else if meta.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.push(format!("{rel} = {}", text(&std::fs::read(&p).expect("read"))));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.join("\n")
}

/// A profile's generation links (`name`, `name-N-link`) and their targets.
fn generations(dir: &Path, name: &str) -> Vec<(String, String)> {
    let mut links: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n == name || n.strip_prefix(name).is_some_and(|r| r.starts_with('-') && r.ends_with("-link")))
        .filter_map(|n| {
            let target = std::fs::read_link(dir.join(&n)).ok()?;
            Some((n, target.display().to_string()))
        })
        .collect();
    links.sort();
    links
}

/// The profile `name` in `dirs` (ours, theirs) must be the same on both
/// sides: its generations (the targets of same-numbered generations are
/// paired: they are the same user environment), the tree of the current
/// generation and its manifest.
fn same_profile(tw: &Twins, what: &str, dirs: [&Path; 2], name: &str) {
    let [ours, theirs] = dirs.map(|d| generations(d, name));
    for (n, t) in &theirs {
        if let Some((_, o)) = ours.iter().find(|(m, _)| m == n)
            && n != name
            && t.starts_with(&tw.theirs.store_dir)
            && o.starts_with(&tw.ours.store_dir)
        {
            tw.map.borrow_mut().pair(o, t);
        }
    }
    let listing = |links: &[(String, String)]| links.iter().map(|(n, t)| format!("{n} -> {t}\n")).collect::<String>();
    tw.assert_same(&format!("{what}: the generations"), &listing(&ours), &listing(&theirs));
    let current = |side: Side| {
        let dir = dirs[if side == Side::Ours { 0 } else { 1 }];
        let link = dir.join(name);
        std::fs::symlink_metadata(&link).ok()?;
        Some(std::fs::canonicalize(&link).unwrap_or_else(|e| panic!("{what}: resolve {}: {e}", link.display())))
    };
    match (current(Side::Ours), current(Side::Theirs)) {
        (Some(o), Some(t)) => {
            tw.assert_same(&format!("{what}: the current generation's tree"), &tree(&o), &tree(&t));
            for manifest in ["manifest.nix", "manifest.json"] {
                if let (Ok(mo), Ok(mt)) = (std::fs::read(o.join(manifest)), std::fs::read(t.join(manifest))) {
                    tw.assert_same_bytes(&format!("{what}: {manifest}"), &mo, &mt);
                }
            }
        }
        (None, None) => {}
        (o, t) => panic!("{what}: the profile exists on one side only (ours: {o:?}, theirs: {t:?})"),
    }
}

/// Both must have succeeded; their warnings must be the same (translated,
/// in any order). Returns theirs' stdout.
fn both_ok(tw: &Twins, what: &str, outs: &[Output; 2]) -> String {
    tw.both_succeeded(what, outs);
    same_warnings(tw, what, outs);
    text(&outs[1].stdout)
}

fn same_warnings(tw: &Twins, what: &str, [o, t]: &[Output; 2]) {
    let (oe, te) = (strip_ansi(&text(&o.stderr)), strip_ansi(&text(&t.stderr)));
    tw.map.borrow_mut().learn(oe.as_bytes(), te.as_bytes());
    let warnings = |s: &str| {
        let mut w: Vec<String> =
            s.lines().filter(|l| l.starts_with("warning:")).map(without_client_temp_dirs).collect();
        w.sort();
        w
    };
    assert_eq!(
        warnings(&tw.map.borrow().to_theirs_str(&oe)),
        warnings(&te),
        "{what}: the warnings differ (armitage's first; full stderr:\n{oe}\n---\n{te})"
    );
}

/// `text` with the client's temporary folders (`/tmp/nix-<pid>-<n>`, where
/// Nix 2.26's `nix profile` builds a profile) named alike.
fn without_client_temp_dirs(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("/tmp/nix-") {
        out.push_str(&rest[..at + 9]);
        rest = &rest[at + 9..];
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '-')).unwrap_or(rest.len());
        if n > 0 {
            out.push_str("<pid>");
            rest = &rest[n..];
        }
    }
    out.push_str(rest);
    out
}

/// The `error: ...` messages of a client's stderr (see
/// [`compat_tests::error_blocks`]), with the two files of a collision sorted.
fn collision_blocks(stderr: &str) -> Vec<String> {
    error_blocks(stderr).into_iter().map(|b| normalise_block(b.lines().map(str::to_owned).collect())).collect()
}

fn normalise_block(mut lines: Vec<String>) -> String {
    // 2.26: the files of a conflict, one per line after an empty one.
    if let Some(at) = lines.iter().position(|l| l.ends_with("There is a conflict for the following files:"))
        && at + 3 < lines.len()
    {
        lines[at + 2..at + 4].sort();
    }
    // 2.8: "packages 'A' and 'B' have the same priority".
    for l in &mut lines {
        if let Some(start) = l.find("packages '")
            && let Some(mid) = l[start..].find("' and '").map(|m| start + m)
            && let Some(end) = l[mid..].find("' have the same priority").map(|e| mid + e)
        {
            let (a, b) = (l[start + 10..mid].to_owned(), l[mid + 7..end].to_owned());
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            *l = format!("{}packages '{a}' and '{b}'{}", &l[..start], &l[end..]);
        }
    }
    lines.join("\n")
}

/// Both must have failed with the same exit code and the same errors.
/// Returns theirs' errors.
fn same_failure(tw: &Twins, what: &str, outs: &[Output; 2]) -> Vec<String> {
    let [o, t] = outs;
    let (oe, te) = (text(&o.stderr), text(&t.stderr));
    assert!(!o.status.success(), "{what}: armitage's side succeeded:\n{oe}");
    assert!(!t.status.success(), "{what}: {}'s side succeeded:\n{te}", tw.cppnix.name);
    assert_eq!(o.status.code(), t.status.code(), "{what}: the exit codes (armitage's first):\n{oe}\n---\n{te}");
    tw.map.borrow_mut().learn(strip_ansi(&oe).as_bytes(), strip_ansi(&te).as_bytes());
    let ours = collision_blocks(&tw.map.borrow().to_theirs_str(&oe));
    let theirs = collision_blocks(&te);
    assert!(!theirs.is_empty(), "{what}: no error from {}:\n{te}", tw.cppnix.name);
    assert_eq!(ours, theirs, "{what}: the errors differ (armitage's first; full stderr:\n{oe}\n---\n{te})");
    same_warnings(tw, what, outs);
    theirs
}

/// The client tool `tool` of this Nix, with `NIX_BIN_DIR` naming its own
/// folder (nix-channel runs nix-build and nix-env from there).
fn client(tw: &Twins, side: Side, tool: &str) -> Command {
    let mut cmd = tw.client(side, tool);
    let bin = Path::new(cmd.get_program()).parent().expect("a bin dir").to_owned();
    cmd.env("NIX_BIN_DIR", bin);
    cmd
}

fn both(tw: &Twins, tool: &str, args: impl Fn(Side, &mut Command)) -> [Output; 2] {
    Side::BOTH.map(|side| {
        let mut cmd = client(tw, side, tool);
        args(side, &mut cmd);
        testkit::output(&mut cmd)
    })
}

/// `nix-env --list-generations` without the dates (when each side made a
/// generation differs by seconds).
fn generation_numbers(listing: &str) -> String {
    listing
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let current = if words.last() == Some(&"(current)") { " (current)" } else { "" };
            format!("{}{current}\n", words.first().copied().unwrap_or_default())
        })
        .collect()
}

fn nix_env_profiles(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, CONF) else { return };
    let work = tw.theirs.work_dir("profiles");
    write_file(work.join("x.nix"), packages("1.0"));
    write_file(work.join("v2.nix"), packages("2.0"));
    let x = work.join("x.nix");
    let dirs = [profiles_dir(&tw, Side::Ours), profiles_dir(&tw, Side::Theirs)];
    let dir = |side: Side| dirs[if side == Side::Ours { 0 } else { 1 }].clone();
    let profile = |side: Side| dir(side).join("prof");
    let check = |what: &str| same_profile(&tw, what, [&dirs[0], &dirs[1]], "prof");
    let nix_env = |what: &str, args: &[&str]| {
        let outs = both(&tw, "nix-env", |side, c| {
            c.arg("-p").arg(profile(side)).args(args);
        });
        let out = both_ok(&tw, what, &outs);
        check(what);
        out
    };

    // A profile given relative to the working directory.
    let rel = [tw.ours.work_dir("rel"), tw.theirs.work_dir("rel")];
    let outs = both(&tw, "nix-env", |side, c| {
        c.current_dir(&rel[if side == Side::Ours { 0 } else { 1 }])
            .args(["-p", "./prof", "-f"])
            .arg(&x)
            .args(["-iA", "hello"]);
    });
    both_ok(&tw, "nix-env -p ./prof -iA hello", &outs);
    same_profile(&tw, "nix-env -p ./prof", [&rel[0], &rel[1]], "prof");

    // Three packages, one propagating a fourth; directories merge, and the
    // dangling symlink met on the way is a warning.
    let outs = both(&tw, "nix-env", |side, c| {
        c.arg("-p").arg(profile(side)).arg("-f").arg(&x).args(["-iA", "hello", "tools", "withprop"]);
    });
    both_ok(&tw, "nix-env -iA hello tools withprop", &outs);
    assert!(
        strip_ansi(&text(&outs[1].stderr)).contains("warning: skipping dangling symlink"),
        "the dangling symlink is a warning:\n{}",
        text(&outs[1].stderr)
    );
    check("nix-env -iA hello tools withprop");
    let t = tree(&std::fs::canonicalize(profile(Side::Theirs)).expect("the profile"));
    for entry in ["bin/propagated -> ", "lib/libpropagated -> ", "lib/libtools -> ", "share/doc/tools -> "] {
        assert!(t.contains(entry), "{entry} in the profile:\n{t}");
    }
    assert!(!t.contains("log ") && !t.contains(".hidden") && !t.contains("nix-support"), "{t}");

    tw.same("nix-env -q", "nix-env", |side, c| {
        c.arg("-p").arg(profile(side)).arg("-q");
    });
    tw.same("nix-env -q --out-path", "nix-env", |side, c| {
        c.arg("-p").arg(profile(side)).args(["-q", "--out-path"]);
    });

    // Same priority: a collision, the profile unchanged. A builtin's build
    // directory is never kept.
    let outs = both(&tw, "nix-env", |side, c| {
        c.arg("-p").arg(profile(side)).arg("-f").arg(&x).args(["-iA", "clash", "--keep-failed"]);
    });
    let errors = same_failure(&tw, "nix-env -iA clash (a collision)", &outs);
    for (o, side) in outs.iter().zip(Side::BOTH) {
        assert!(!text(&o.stderr).contains("keeping build directory"), "{}: {}", tw.daemon(side).name, text(&o.stderr));
    }
    let message = match version {
        NixVersion::V2_8 => "have the same priority 5; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME'",
        NixVersion::V2_26 => "Unable to build profile. There is a conflict for the following files:",
    };
    assert!(errors.iter().any(|e| e.contains(message)), "the collision's message: {errors:?}");
    check("after the collision");

    // Resolved by a priority.
    nix_env("nix-env --set-flag priority 10 hello", &["--set-flag", "priority", "10", "hello"]);
    let outs = both(&tw, "nix-env", |side, c| {
        c.arg("-p").arg(profile(side)).arg("-f").arg(&x).args(["-iA", "clash"]);
    });
    both_ok(&tw, "nix-env -iA clash after --set-flag", &outs);
    check("nix-env -iA clash after --set-flag");
    let hello =
        std::fs::read_link(std::fs::canonicalize(profile(Side::Theirs)).expect("the profile").join("bin/hello"));
    assert!(hello.expect("bin/hello").to_string_lossy().contains("-clash-1.0/"), "clash's bin/hello wins");

    nix_env("nix-env -e tools clash", &["-e", "tools", "clash"]);
    let outs = both(&tw, "nix-env", |side, c| {
        c.arg("-p").arg(profile(side)).arg("-f").arg(work.join("v2.nix")).arg("--upgrade");
    });
    both_ok(&tw, "nix-env --upgrade", &outs);
    check("nix-env --upgrade");
    nix_env("nix-env --rollback", &["--rollback"]);
    let [o, t] = both(&tw, "nix-env", |side, c| {
        c.arg("-p").arg(profile(side)).arg("--list-generations");
    });
    both_ok(&tw, "nix-env --list-generations", &[o.clone(), t.clone()]);
    tw.assert_same(
        "nix-env --list-generations",
        &generation_numbers(&text(&o.stdout)),
        &generation_numbers(&text(&t.stdout)),
    );

    // --set: the profile points at a package itself.
    let hello_out = line(tw.same("nix-build -A hello", "nix-build", |_, c| {
        c.arg(&x).args(["-A", "hello", "--no-out-link"]);
    }));
    let outs = both(&tw, "nix-env", |side, c| {
        c.arg("-p").arg(profile(side)).arg("--set").arg(tw.path(side, &hello_out));
    });
    both_ok(&tw, "nix-env --set", &outs);
    check("nix-env --set");
    assert_eq!(
        std::fs::canonicalize(profile(Side::Theirs)).expect("the profile"),
        Path::new(&hello_out),
        "--set makes the package the profile"
    );

    nix_env("nix-env --delete-generations 1 2", &["--delete-generations", "1", "2"]);
    nix_env("nix-env --rollback (from 6 to 5)", &["--rollback"]);

    // The garbage collector: every generation but the current one goes,
    // and what is left is still whole.
    let outs = both(&tw, "nix-collect-garbage", |_, c| {
        c.arg("-d");
    });
    both_ok(&tw, "nix-collect-garbage -d", &outs);
    check("nix-collect-garbage -d");
    same_profile(&tw, "nix-collect-garbage -d: the relative profile", [&rel[0], &rel[1]], "prof");
    let kept = |side: Side| generations(&dir(side), "prof").len();
    assert_eq!(kept(Side::Theirs), 2, "the profile and its current generation");
    let summary = |o: &Output| {
        text(&o.stdout).lines().filter(|l| l.contains("store paths deleted")).map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(summary(&outs[0]), summary(&outs[1]), "nix-collect-garbage -d: what was deleted (armitage's first)");
    tw.same_lines("nix-store -qR of the profile", "nix-store", |side, c| {
        c.arg("-qR").arg(profile(side));
    });
}

#[test]
fn nix_env_profiles_nix_2_8() {
    nix_env_profiles(NixVersion::V2_8);
}

#[test]
fn nix_env_profiles_nix_2_26() {
    nix_env_profiles(NixVersion::V2_26);
}

/// `nix profile` (Nix 2.26): the client builds the profile itself and adds
/// it to the store; generations and trees must still be the same.
#[test]
fn nix_profile_nix_2_26() {
    let Some(tw) = Twins::with_conf(NixVersion::V2_26, CONF) else { return };
    let work = tw.theirs.work_dir("profiles");
    write_file(work.join("x.nix"), packages("1.0"));
    let x = work.join("x.nix");
    let dirs = [profiles_dir(&tw, Side::Ours), profiles_dir(&tw, Side::Theirs)];
    let profile = |side: Side| dirs[if side == Side::Ours { 0 } else { 1 }].join("nixprof");
    let step = |what: &str, args: &[&str], file: bool| {
        let outs = both(&tw, "nix", |side, c| {
            c.arg("profile").args(args).arg("--profile").arg(profile(side));
            if file {
                c.arg("-f").arg(&x);
            }
        });
        both_ok(&tw, what, &outs);
        same_profile(&tw, what, [&dirs[0], &dirs[1]], "nixprof");
    };
    step("nix profile install hello tools", &["install", "hello", "tools"], true);
    step("nix profile install withprop", &["install", "withprop"], true);
    tw.same("nix profile list", "nix", |side, c| {
        c.args(["profile", "list", "--profile"]).arg(profile(side));
    });
    step("nix profile remove tools", &["remove", "tools"], false);
    step("nix profile upgrade --all", &["upgrade", "--all"], false);
    step("nix profile rollback", &["rollback"], false);
    tw.same("nix profile history", "nix", |side, c| {
        c.args(["profile", "history", "--profile"]).arg(profile(side));
    });
}

/// A channel tarball: one top-level directory holding a Nix expression.
fn channel_tarball(dir: &Path, name: &str, file: &str, flag: &str) -> PathBuf {
    let src = dir.join(format!("src-{name}"));
    write_file(src.join(name).join("default.nix"), format!("{{ }}: {{ greeting = \"hello from {name}\"; }}\n"));
    write_file(src.join(name).join("lib/more.nix"), "42\n");
    let out = dir.join(name).join(file);
    std::fs::create_dir_all(out.parent().expect("a parent")).expect("create the channel dir");
    testkit::run(Command::new("tar").arg("-C").arg(&src).arg(flag).arg(&out).arg(name));
    out
}

fn channels(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, CONF) else { return };
    let work = tw.theirs.work_dir("channels");
    let alpha = channel_tarball(&work, "alpha", "nixexprs.tar.gz", "-czf");
    let beta = channel_tarball(&work, "beta", "nixexprs.tar.xz", "-cJf");
    let gamma = channel_tarball(&work, "gamma", "nixexprs.tar.bz2", "-cjf");
    for (name, file) in [("alpha", &alpha), ("beta", &beta), ("gamma", &gamma)] {
        let outs = both(&tw, "nix-channel", |_, c| {
            c.arg("--add").arg(format!("file://{}", file.display())).arg(name);
        });
        both_ok(&tw, &format!("nix-channel --add {name}"), &outs);
    }
    let outs = both(&tw, "nix-channel", |_, c| {
        c.arg("--update");
    });
    both_ok(&tw, "nix-channel --update", &outs);
    let dirs = Side::BOTH.map(|side| tw.store(side).state_dir.join("profiles/per-user/root"));
    same_profile(&tw, "nix-channel --update", [&dirs[0], &dirs[1]], "channels");
    let t = tree(&std::fs::canonicalize(dirs[1].join("channels")).expect("the channels profile"));
    for name in ["alpha", "beta", "gamma"] {
        assert!(t.contains(&format!("\n{name} -> ")) || t.starts_with(&format!("{name} -> ")), "{name} in:\n{t}");
    }
    tw.same("nix-channel --list", "nix-channel", |_, c| {
        c.arg("--list");
    });
    tw.same("nix-instantiate --eval of a channel", "nix-instantiate", |side, c| {
        let defexpr = tw.store(side).home.join(".nix-defexpr/channels/beta");
        c.args(["--eval", "-A", "greeting"]).arg(defexpr);
    });

    // A tarball with two top-level entries is refused.
    let bad = work.join("bad");
    write_file(bad.join("src/one/default.nix"), "{ }: { }\n");
    write_file(bad.join("src/two/default.nix"), "{ }: { }\n");
    let tarball = bad.join("nixexprs.tar.gz");
    testkit::run(Command::new("tar").arg("-C").arg(bad.join("src")).arg("-czf").arg(&tarball).args(["one", "two"]));
    let outs = both(&tw, "nix-channel", |_, c| {
        c.arg("--add").arg(format!("file://{}", tarball.display())).arg("bad");
    });
    both_ok(&tw, "nix-channel --add bad", &outs);
    let outs = both(&tw, "nix-channel", |_, c| {
        c.args(["--update", "bad"]);
    });
    let errors = same_failure(&tw, "nix-channel --update bad", &outs);
    assert!(errors.iter().any(|e| e.contains("contains more than one file")), "{errors:?}");
    same_profile(&tw, "after the failed update", [&dirs[0], &dirs[1]], "channels");

    // A channel name with a slash, in a derivation of our own (nix-channel
    // checks the names it is given).
    let expr = format!(
        r#"derivation {{ name = "slash"; system = "builtin"; builder = "builtin:unpack-channel";
           channelName = "sub/name"; src = {}; preferLocalBuild = true; }}"#,
        alpha.display()
    );
    let outs = both(&tw, "nix-build", |_, c| {
        c.args(["--no-out-link", "--expr", &expr]);
    });
    match version {
        NixVersion::V2_26 => {
            let errors = same_failure(&tw, "builtin:unpack-channel with a slash in channelName", &outs);
            assert!(errors.iter().any(|e| e.contains("channelName is not allowed to contain filesystem separators")));
        }
        NixVersion::V2_8 => {
            // nix-daemon 2.8 renames into `sub/`, which is missing; armitage
            // refuses the name first.
            for (o, side) in outs.iter().zip(Side::BOTH) {
                assert!(!o.status.success(), "{}: a channelName with a slash was built", tw.daemon(side).name);
            }
            let ours = strip_ansi(&text(&outs[0].stderr));
            assert!(
                ours.contains("channelName is not allowed to contain filesystem separators, got sub/name"),
                "{ours}"
            );
        }
    }
}

#[test]
fn channels_nix_2_8() {
    channels(NixVersion::V2_8);
}

#[test]
fn channels_nix_2_26() {
    channels(NixVersion::V2_26);
}

/// The builtins inside the sandbox: packages built without it first, then
/// the user environment and the channels with `sandbox = true` (the
/// client's setting: root is trusted).
fn builtins_in_the_sandbox(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, CONF) else { return };
    let work = tw.theirs.work_dir("sandboxed");
    write_file(work.join("x.nix"), packages("1.0"));
    let x = work.join("x.nix");
    let outs = both(&tw, "nix-build", |_, c| {
        c.arg(&x).args(["-A", "hello", "-A", "tools", "-A", "withprop", "--no-out-link"]);
    });
    both_ok(&tw, "nix-build of the packages", &outs);
    let dirs = [profiles_dir(&tw, Side::Ours), profiles_dir(&tw, Side::Theirs)];
    let outs = both(&tw, "nix-env", |side, c| {
        c.env("NIX_CONFIG", "sandbox = true").arg("-p").arg(dirs[if side == Side::Ours { 0 } else { 1 }].join("boxed"));
        c.arg("-f").arg(&x).args(["-iA", "hello", "tools", "withprop"]);
    });
    both_ok(&tw, "nix-env -iA in the sandbox", &outs);
    same_profile(&tw, "nix-env -iA in the sandbox", [&dirs[0], &dirs[1]], "boxed");

    let tarball = channel_tarball(&work, "delta", "nixexprs.tar.xz", "-cJf");
    let outs = both(&tw, "nix-channel", |_, c| {
        c.arg("--add").arg(format!("file://{}", tarball.display())).arg("delta");
    });
    both_ok(&tw, "nix-channel --add delta", &outs);
    let outs = both(&tw, "nix-channel", |_, c| {
        c.env("NIX_CONFIG", "sandbox = true").arg("--update");
    });
    both_ok(&tw, "nix-channel --update in the sandbox", &outs);
    let dirs = Side::BOTH.map(|side| tw.store(side).state_dir.join("profiles/per-user/root"));
    same_profile(&tw, "nix-channel --update in the sandbox", [&dirs[0], &dirs[1]], "channels");
}

#[test]
fn builtins_in_the_sandbox_nix_2_8() {
    builtins_in_the_sandbox(NixVersion::V2_8);
}

#[test]
fn builtins_in_the_sandbox_nix_2_26() {
    builtins_in_the_sandbox(NixVersion::V2_26);
}
