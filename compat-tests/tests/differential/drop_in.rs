//! armitage as a drop-in for nix-daemon: stock Nix commands that talk to a
//! daemon, beyond the store operations of daemon_commands.rs and the builds
//! of builds.rs, run against armitage and against CppNix's nix-daemon of the
//! client's version side by side ([`compat_tests::Twins`]): `nix
//! why-depends`, `nix store diff-closures`, `nix log` of an output,
//! `nix-shell`, `nix-store --delete` and `nix store delete` (what keeps a
//! path alive, `--ignore-liveness`), `nix store repair` and builds with
//! `--repair` and `--check`, `nix copy` over the legacy `nix-store --serve`
//! protocol, `nix store make-content-addressed`, `nix-prefetch-url` and
//! `nix store prefetch-file`, and the `nix flake` commands with `nix
//! develop` and `nix shell`. Stdout (translated), `error:` lines, exit codes and the stores'
//! valid paths must be the same; where messages matter (repairs) stderr too.
//!
//! Every test builds as root without build users (`build-users-group =`,
//! see .config/nextest.toml) and without a sandbox; derivations set
//! `preferLocalBuild` (nix-daemon 2.26 offers other builds to its build
//! hook, which cannot start here).

use compat_tests::corrupt;
use compat_tests::{Side, Twins, strip_ansi, text};
use std::path::PathBuf;
use std::process::Output;
use testkit::{NixVersion, line, write_file};

/// The nix.conf lines of both stores.
const CONF: &str = "build-users-group =\n";

/// The start of every test's Nix file: `mk name script extra`, a
/// derivation whose builder runs `script` with `/bin/sh`, the host's tools
/// on its `PATH` (no sandbox).
const PRELUDE: &str = r#"
let
  mk = name: script: extra: derivation ({
    inherit name;
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
    preferLocalBuild = true;
  } // extra);
in
"#;

/// `body` (an expression that may use `mk`) after the prelude, as
/// `<name>.nix` ([`Twins::nix_file`]).
fn nix_file(tw: &Twins, name: &str, body: &str) -> PathBuf {
    tw.nix_file(name, &format!("{PRELUDE}{body}\n"))
}

/// The `error:` lines of a client's stderr (colours removed).
fn error_lines(stderr: &[u8]) -> String {
    strip_ansi(&text(stderr)).lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join("\n")
}

/// Both failed with the same exit code and the same `error:` lines
/// (translated). Returns theirs' error lines.
fn same_errors(tw: &Twins, what: &str, [o, t]: &[Output; 2]) -> String {
    assert!(!o.status.success(), "{what}: armitage's side succeeded:\n{}", text(&o.stderr));
    assert!(!t.status.success(), "{what}: {}'s side succeeded:\n{}", tw.cppnix.name, text(&t.stderr));
    assert_eq!(
        o.status.code(),
        t.status.code(),
        "{what}: exit codes (armitage's first)\n{}\n---\n{}",
        text(&o.stderr),
        text(&t.stderr)
    );
    let (oe, te) = (error_lines(&o.stderr), error_lines(&t.stderr));
    assert!(!te.is_empty(), "{what}: no error from {}:\n{}", tw.cppnix.name, text(&t.stderr));
    tw.assert_same(&format!("{what}: the errors"), &oe, &te)
}

/// Both succeeded and printed the same on stdout, colours removed
/// (translated). Returns theirs'.
fn same_stdout(tw: &Twins, what: &str, outs: &[Output; 2]) -> String {
    tw.both_succeeded(what, outs);
    tw.assert_same(what, &strip_ansi(&text(&outs[0].stdout)), &strip_ansi(&text(&outs[1].stdout)))
}

/// Both stores hold the same valid paths (translated).
fn same_valid_paths(tw: &Twins, what: &str) -> String {
    tw.same_lines(&format!("{what}: nix path-info --all"), "nix", |_, c| {
        c.args(["path-info", "--all"]);
    })
}

/// `nix-build <file> -A <attr> --no-out-link` on both sides; returns
/// theirs' output paths.
fn build(tw: &Twins, file: &std::path::Path, attr: &str) -> Vec<String> {
    let out = tw.same_lines(&format!("nix-build -A {attr}"), "nix-build", |_, c| {
        c.arg(file).args(["-A", attr, "--no-out-link"]);
    });
    out.lines().map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------
// nix why-depends, nix store diff-closures, nix log.

/// `top` refers to `mid` (from a file, by base name, and a symlink) and to
/// `lib` (from a file); `mid` refers to `lib`. Base names only in file
/// contents, after padding: why-depends shows 32 bytes around a hash,
/// which would otherwise reach into the store dirs' random names.
const CLOSURE_NIX: &str = r##"rec {
  lib = mk "wd-lib" "echo the library > $out" {};
  mid = mk "wd-mid" ''
    mkdir -p $out/share/doc
    echo "padding padding padding padding padding: ''${lib##*/} and after" > $out/share/doc/uses-lib
    echo "building mid"
  '' { inherit lib; };
  top = mk "wd-top" ''
    mkdir -p $out/bin
    echo "#! padding padding padding padding padding ''${mid##*/}/bin" > $out/bin/run
    echo "padding padding padding padding padding, also ''${lib##*/}" > $out/notes
    ln -s $mid/share $out/share
    echo "building top"; echo "on stderr" >&2
  '' { inherit lib mid; };
  other = mk "wd-other" "echo other > $out" {};
  # Two closures for diff-closures: a version bump, a size change, one
  # package gone and one new.
  app1 = mk "dc-app-1.0" "echo $lib1 $gone > $out" {
    lib1 = mk "dc-lib-1.0" "echo small > $out" {};
    gone = mk "dc-gone-0.5" "echo gone > $out" {};
  };
  app2 = mk "dc-app-2.0" "echo $lib2 $new $new > $out" {
    lib2 = mk "dc-lib-2.0" "i=0; while [ $i -lt 1000 ]; do echo a much larger library; i=$((i+1)); done > $out" {};
    new = mk "dc-new-3" "echo new > $out" {};
  };
}"##;

fn why_depends_diff_closures_and_logs(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, CONF) else { return };
    let file = nix_file(&tw, "closure", CLOSURE_NIX);
    let top = line(build(&tw, &file, "top").join("\n"));
    let mid = line(build(&tw, &file, "mid").join("\n"));
    let lib = line(build(&tw, &file, "lib").join("\n"));
    let other = line(build(&tw, &file, "other").join("\n"));

    // nix why-depends, shortest path and --all, with and without --precise.
    for flags in [&[][..], &["--all"], &["--precise"], &["--all", "--precise"]] {
        for (from, to) in [(&top, &lib), (&top, &mid), (&mid, &lib), (&top, &top)] {
            let outs = tw.both("nix", |s, c| {
                c.arg("why-depends").args(flags).args([tw.path(s, from), tw.path(s, to)]);
            });
            same_stdout(&tw, &format!("nix why-depends {flags:?} {from} {to}"), &outs);
        }
    }
    // A path that does not depend on the other: a message, no failure.
    let outs = tw.both("nix", |s, c| {
        c.args(["why-depends", &tw.path(s, &lib), &tw.path(s, &other)]);
    });
    same_stdout(&tw, "nix why-depends of an unrelated path", &outs);
    tw.assert_same(
        "nix why-depends of an unrelated path: stderr",
        &strip_ansi(&text(&outs[0].stderr)),
        &strip_ansi(&text(&outs[1].stderr)),
    );
    // An invalid dependency is not in the closure (the client says it
    // cannot build it, then that it is no dependency); an invalid package
    // cannot be realised.
    let gone = format!("{}/{}-wd-missing", tw.theirs.store_dir, "0".repeat(32));
    let outs = tw.both("nix", |s, c| {
        c.args(["why-depends", &tw.path(s, &top), &tw.path(s, &gone)]);
    });
    same_stdout(&tw, "nix why-depends of an invalid dependency", &outs);
    tw.assert_same(
        "nix why-depends of an invalid dependency: stderr",
        &strip_ansi(&text(&outs[0].stderr)),
        &strip_ansi(&text(&outs[1].stderr)),
    );
    let outs = tw.both("nix", |s, c| {
        c.args(["why-depends", &tw.path(s, &gone), &tw.path(s, &top)]);
    });
    same_errors(&tw, "nix why-depends of an invalid package", &outs);

    // nix store diff-closures.
    let app1 = line(build(&tw, &file, "app1").join("\n"));
    let app2 = line(build(&tw, &file, "app2").join("\n"));
    for (a, b) in [(&app1, &app2), (&app2, &app1), (&app1, &app1)] {
        let outs = tw.both("nix", |s, c| {
            c.args(["store", "diff-closures", &tw.path(s, a), &tw.path(s, b)]);
        });
        same_stdout(&tw, &format!("nix store diff-closures {a} {b}"), &outs);
    }

    // nix log and nix-store --read-log of an output path (they look up its
    // deriver) and of the derivation.
    let drv = line(tw.same("nix-store -q --deriver", "nix-store", |s, c| {
        c.args(["-q", "--deriver", &tw.path(s, &top)]);
    }));
    for p in [&top, &drv] {
        let log = tw.same(&format!("nix log {p}"), "nix", |s, c| {
            c.args(["log", &tw.path(s, p)]);
        });
        assert!(log.contains("building top") && log.contains("on stderr"), "{log}");
        tw.same(&format!("nix-store -l {p}"), "nix-store", |s, c| {
            c.args(["-l", &tw.path(s, p)]);
        });
    }
    // No log: a path added, not built, and an invalid path.
    let added = tw.theirs.work_dir("add").join("no-log");
    write_file(&added, "no log\n");
    let added = line(tw.same("nix-store --add", "nix-store", |_, c| {
        c.arg("--add").arg(&added);
    }));
    for p in [&added, &gone] {
        let outs = tw.both("nix-store", |s, c| {
            c.args(["-l", &tw.path(s, p)]);
        });
        same_errors(&tw, &format!("nix-store -l {p}"), &outs);
        let outs = tw.both("nix", |s, c| {
            c.args(["log", &tw.path(s, p)]);
        });
        same_errors(&tw, &format!("nix log {p}"), &outs);
    }
    same_valid_paths(&tw, "after why-depends, diff-closures and logs");
}

#[test]
fn why_depends_diff_closures_and_logs_with_nix_2_8() {
    why_depends_diff_closures_and_logs(NixVersion::V2_8);
}

#[test]
fn why_depends_diff_closures_and_logs_with_nix_2_26() {
    why_depends_diff_closures_and_logs(NixVersion::V2_26);
}

// ---------------------------------------------------------------------------
// nix-shell.

/// `env` is a derivation never built, whose inputs are: `dep` (built for
/// the shell) and a `builtins.toFile` source. `broken` has an input whose
/// build fails.
const SHELL_NIX: &str = r#"rec {
  dep = mk "sh-dep" "echo dependency > $out" {};
  env = mk "sh-env" "exit 1" {
    inherit dep;
    src = builtins.toFile "sh-src" "a source\n";
    greeting = "hello from the shell";
  };
  broken = mk "sh-broken-env" "exit 1" {
    dep = mk "sh-failing-dep" "echo the dependency fails; exit 2" {};
  };
}"#;

fn nix_shell(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, CONF) else { return };
    let file = nix_file(&tw, "shell", SHELL_NIX);
    // The shell: bash from PATH (the default looks for <nixpkgs>, which
    // is not there, and says so before falling back to bash).
    let script = r#"echo "$greeting"; read -r x < "$dep"; echo "$x from $dep"; read -r x < "$src"; echo "$x";
        echo "out=$out in=${IN_NIX_SHELL-}"; for v in $(compgen -e); do [ "$v" = _ ] || printf '%s ' "$v"; done; echo"#;
    for pure in [false, true] {
        let outs = tw.both("nix-shell", |_, c| {
            c.env("NIX_BUILD_SHELL", "bash").arg(&file).args(["-A", "env", "--run", script]);
            if pure {
                c.arg("--pure");
            }
        });
        let out = same_stdout(&tw, &format!("nix-shell --run (pure: {pure})"), &outs);
        assert!(out.starts_with("hello from the shell\ndependency from "), "{out}");
        assert!(out.contains(if pure { "in=pure" } else { "in=impure" }), "{out}");
        assert!(out.contains(" greeting ") && out.contains(" dep "), "the derivation's variables are exported: {out}");
        same_valid_paths(&tw, &format!("after nix-shell (pure: {pure})"));
    }
    // The command's exit code is nix-shell's.
    let outs = tw.both("nix-shell", |_, c| {
        c.env("NIX_BUILD_SHELL", "bash").arg(&file).args(["-A", "env", "--pure", "--run", "exit 3"]);
    });
    assert_eq!(outs[0].status.code(), Some(3), "{}", text(&outs[0].stderr));
    assert_eq!(outs[1].status.code(), Some(3), "{}", text(&outs[1].stderr));
    // An input that fails to build.
    let outs = tw.both("nix-shell", |_, c| {
        c.env("NIX_BUILD_SHELL", "bash").arg(&file).args(["-A", "broken", "--run", "echo never"]);
    });
    same_errors(&tw, "nix-shell with a failing input", &outs);
    same_valid_paths(&tw, "after nix-shell");
}

#[test]
fn nix_shell_with_nix_2_8() {
    nix_shell(NixVersion::V2_8);
}

#[test]
fn nix_shell_with_nix_2_26() {
    nix_shell(NixVersion::V2_26);
}

// ---------------------------------------------------------------------------
// nix-store --delete, nix store delete, nix store repair.

/// The `deleting '…'` lines of a client's stderr.
fn deleting_lines(stderr: &[u8]) -> std::collections::BTreeSet<String> {
    text(stderr).lines().filter(|l| l.starts_with("deleting '")).map(str::to_owned).collect()
}

/// Both succeeded, deleted the same paths and printed the same summary.
fn same_deletion(tw: &Twins, what: &str, outs: &[Output; 2]) {
    same_stdout(tw, what, outs);
    let ours = deleting_lines(&tw.map.borrow().to_theirs(&outs[0].stderr));
    assert_eq!(ours, deleting_lines(&outs[1].stderr), "{what}: the paths deleted (armitage's first)");
}

/// `text` with the names of the links in gcroots/auto (a hash of the path
/// they link to, which is in a different folder on each side) replaced by
/// `LINK`.
fn without_auto_links(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("/gcroots/auto/") {
        let start = at + "/gcroots/auto/".len();
        out.push_str(&rest[..start]);
        out.push_str("LINK");
        rest = &rest[(start + 32).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// Deleting specific paths: what keeps a path alive is a root or a valid
/// referrer not deleted with it (CppNix's `deleteReferrersClosure`);
/// `--ignore-liveness` is refused through a daemon. Then repairing a
/// corrupted path: `nix store repair` and `nix-store --repair-path` cannot
/// through a daemon (the client says so); `nix build --repair` rebuilds it.
fn delete_and_repair(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, CONF) else { return };
    let file = nix_file(&tw, "closure", CLOSURE_NIX);
    let work = tw.theirs.work_dir("roots");
    let link = work.join("result-top");
    let top = line(tw.same("nix-build -o", "nix-build", |s, c| {
        c.arg(&file).args(["-A", "top", "-o", &tw.path(s, link.to_str().unwrap())]);
    }));
    let mid = line(build(&tw, &file, "mid").join("\n"));
    let lib = line(build(&tw, &file, "lib").join("\n"));

    // Rooted: --ignore-liveness is not for daemon clients, with either CLI.
    for (tool, args) in
        [("nix-store", &["--delete", "--ignore-liveness"][..]), ("nix", &["store", "delete", "--ignore-liveness"])]
    {
        let outs = tw.both(tool, |s, c| {
            c.args(args).arg(tw.path(s, &top));
        });
        same_errors(&tw, &format!("{tool} {args:?} of a rooted path"), &outs);
    }
    // The roots (none left once the link is gone): the collector removes
    // the links in gcroots/auto whose targets are gone, and says so
    // (nix-build registers each result link, `--no-out-link` ones in a
    // temporary folder of its own).
    for s in Side::BOTH {
        std::fs::remove_file(tw.path(s, link.to_str().unwrap())).expect("remove the root");
    }
    let outs = tw.both("nix-store", |_, c| {
        c.args(["--gc", "--print-roots"]);
    });
    same_stdout(&tw, "nix-store --gc --print-roots", &outs);
    let [ours, theirs] = [&outs[0], &outs[1]].map(|o| without_auto_links(&without_build_dirs(&text(&o.stderr))));
    tw.assert_same_lines("nix-store --gc --print-roots: stderr", &ours, &theirs);
    assert_eq!(theirs.matches("removing stale link from '").count(), 3, "{theirs}");
    // No root, but a valid referrer that is not deleted with it: alive.
    let outs = tw.both("nix-store", |s, c| {
        c.args(["--delete", &tw.path(s, &lib)]);
    });
    let error = same_errors(&tw, "nix-store --delete of a path with a dead referrer", &outs);
    assert!(error.contains("since it is still alive"), "{error}");
    let outs = tw.both("nix", |s, c| {
        c.args(["store", "delete", &tw.path(s, &lib)]);
    });
    same_errors(&tw, "nix store delete of a path with a dead referrer", &outs);
    // Two of the three: the first one in path order (so in hash order,
    // which differs between the stores) is named.
    let outs = tw.both("nix-store", |s, c| {
        c.args(["--delete", &tw.path(s, &lib), &tw.path(s, &mid)]);
    });
    for (out, side) in outs.iter().zip(Side::BOTH) {
        assert!(!out.status.success());
        let first = std::cmp::min(tw.path(side, &lib), tw.path(side, &mid));
        let err = error_lines(&out.stderr);
        assert!(
            err.starts_with(&format!("error: Cannot delete path '{first}' since it is still alive.")),
            "{}: {err}",
            tw.daemon(side).name
        );
    }
    assert_eq!(outs[0].status.code(), outs[1].status.code());
    // The whole closure at once.
    let outs = tw.both("nix-store", |s, c| {
        c.args(["--delete", &tw.path(s, &lib), &tw.path(s, &mid), &tw.path(s, &top)]);
    });
    same_deletion(&tw, "nix-store --delete of a closure", &outs);
    assert_eq!(deleting_lines(&outs[1].stderr).len(), 3, "{}", text(&outs[1].stderr));
    // Already gone: "deleted" again, as CppNix does.
    let outs = tw.both("nix-store", |s, c| {
        c.args(["--delete", &tw.path(s, &lib)]);
    });
    same_deletion(&tw, "nix-store --delete of a deleted path", &outs);
    let outs = tw.both("nix", |s, c| {
        c.args(["store", "delete", &tw.path(s, &mid)]);
    });
    same_deletion(&tw, "nix store delete of a deleted path", &outs);
    same_valid_paths(&tw, "after the deletions");

    // A corrupted output.
    let other = line(build(&tw, &file, "other").join("\n"));
    for s in Side::BOTH {
        corrupt(&tw.path(s, &other), "corrupted\n");
    }
    let outs = tw.both("nix", |s, c| {
        c.args(["store", "repair", &tw.path(s, &other)]);
    });
    same_errors(&tw, "nix store repair", &outs);
    let outs = tw.both("nix-store", |s, c| {
        c.args(["--repair-path", &tw.path(s, &other)]);
    });
    same_errors(&tw, "nix-store --repair-path", &outs);
    for s in Side::BOTH {
        assert_eq!(std::fs::read_to_string(tw.path(s, &other)).unwrap(), "corrupted\n", "{}", tw.daemon(s).name);
    }
    // A build with --repair checks the contents of the outputs and of
    // their closure, and rebuilds only what is corrupted.
    let out = repair_build(&tw, &file, "other");
    assert!(out.contains("is corrupted or missing!") && out.contains("repairing outputs of '"), "{out}");
    for s in Side::BOTH {
        assert_eq!(std::fs::read_to_string(tw.path(s, &other)).unwrap(), "other\n", "{}", tw.daemon(s).name);
    }
    // All good: nothing is rebuilt.
    let top = line(build(&tw, &file, "top").join("\n"));
    let out = repair_build(&tw, &file, "top");
    assert!(out.contains("checking path '") && !out.contains("repairing"), "{out}");
    // A corrupted dependency: repaired through the derivation that made it.
    let lib = line(build(&tw, &file, "lib").join("\n"));
    for s in Side::BOTH {
        corrupt(&tw.path(s, &lib), "corrupted\n");
    }
    let out = repair_build(&tw, &file, "top");
    assert!(out.contains(&format!("found corrupted or missing path '{lib}' in the output closure of '")), "{out}");
    assert_eq!(out.matches("repairing outputs of '").count(), 1, "only the library is rebuilt: {out}");
    for s in Side::BOTH {
        assert_eq!(std::fs::read_to_string(tw.path(s, &lib)).unwrap(), "the library\n", "{}", tw.daemon(s).name);
    }
    // A check rebuilds and compares ("checking outputs of '…'").
    let outs = match version {
        NixVersion::V2_8 => tw.both("nix-build", |_, c| {
            c.arg(&file).args(["-A", "lib", "--no-out-link", "--check"]);
        }),
        NixVersion::V2_26 => tw.both("nix", |_, c| {
            c.args(["build", "--no-link", "--rebuild", "-f"]).arg(&file).arg("lib");
        }),
    };
    same_stdout(&tw, "a build with --check", &outs);
    let [ours, theirs] = [&outs[0], &outs[1]].map(|o| strip_ansi(&text(&o.stderr)));
    tw.assert_same_lines("a build with --check: stderr", &ours, &theirs);
    assert!(theirs.contains("checking outputs of '"), "{theirs}");
    let outs = tw.both("nix-store", |_, c| {
        c.args(["--verify", "--check-contents"]);
    });
    tw.both_succeeded("nix-store --verify --check-contents after the repairs", &outs);
    tw.same_path_info("path-info after the repairs", |s, c| {
        c.args(["-r", &tw.path(s, &other), &tw.path(s, &top)]);
    });
    same_valid_paths(&tw, "after the repairs");
}

/// `nix-build --repair -A attr` (Nix 2.8's `nix build` has no --repair)
/// or `nix build --repair`: both succeed, print the same output path and
/// the same messages (as sets: the closure is checked in path order,
/// which differs between the stores). Returns theirs' stderr.
fn repair_build(tw: &Twins, file: &std::path::Path, attr: &str) -> String {
    let outs = match tw.version() {
        NixVersion::V2_8 => tw.both("nix-build", |_, c| {
            c.arg(file).args(["-A", attr, "--no-out-link", "--repair"]);
        }),
        NixVersion::V2_26 => tw.both("nix", |_, c| {
            c.args(["build", "--no-link", "--repair", "-f"]).arg(file).arg(attr);
        }),
    };
    same_stdout(tw, &format!("a build of {attr} with --repair"), &outs);
    let [ours, theirs] = [&outs[0], &outs[1]].map(|o| strip_ansi(&text(&o.stderr)));
    tw.assert_same_lines(&format!("a build of {attr} with --repair: stderr"), &ours, &theirs);
    theirs
}

#[test]
fn delete_and_repair_with_nix_2_8() {
    delete_and_repair(NixVersion::V2_8);
}

#[test]
fn delete_and_repair_with_nix_2_26() {
    delete_and_repair(NixVersion::V2_26);
}

// ---------------------------------------------------------------------------
// nix copy over the legacy `nix-store --serve` protocol.

/// `ssh://localhost` with the client's own version of `nix-store` as the
/// remote program. For the host `localhost` CppNix runs the remote command
/// itself (no ssh), with the client's environment, so the remote
/// `nix-store --serve --write` talks to the daemon under test.
fn ssh_store(tw: &Twins) -> String {
    let nix_store = tw.nix.command("nix-store");
    format!("ssh://localhost?remote-program={}", nix_store.get_program().to_str().expect("a UTF-8 path"))
}

/// A local store rooted at `name` in `side`'s work dir (in theirs' terms),
/// with the test stores' store dir: a store to copy from and into.
fn chroot_store(tw: &Twins, side: Side, name: &str) -> String {
    let root = tw.theirs.root().join("work").join(name);
    format!("local?root={}", tw.path(side, root.to_str().expect("a UTF-8 path")))
}

/// `nix copy --to ssh://localhost` from another store into the daemon
/// (through `nix-store --serve --write`, which adds the paths with their
/// references and deriver), and `nix copy --from ssh://localhost` out of
/// it into another store (path infos and NARs read through the daemon).
fn copy_over_ssh(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, CONF) else { return };
    let file = nix_file(&tw, "closure", CLOSURE_NIX);
    let top = line(build(&tw, &file, "top").join("\n"));
    let closure = tw.same_lines("nix-store -qR", "nix-store", |s, c| {
        c.args(["-qR", &tw.path(s, &top)]);
    });
    let closure: Vec<String> = closure.lines().map(str::to_owned).collect();
    assert_eq!(closure.len(), 3, "{closure:?}");
    let before = tw.same_path_info("path-info of the built closure", |s, c| {
        c.args(["-r", &tw.path(s, &top)]);
    });

    // Out into a local store, deleted from the daemon, back in over ssh.
    let outs = tw.both("nix", |s, c| {
        c.args(["copy", "--to", &chroot_store(&tw, s, "source"), &tw.path(s, &top)]);
    });
    tw.both_succeeded("nix copy --to a local store", &outs);
    let outs = tw.both("nix-store", |s, c| {
        c.arg("--delete").args(closure.iter().map(|p| tw.path(s, p)));
    });
    same_deletion(&tw, "nix-store --delete of the closure", &outs);
    let outs = tw.both("nix", |s, c| {
        c.args(["copy", "--from", &chroot_store(&tw, s, "source"), "--to", &ssh_store(&tw), &tw.path(s, &top)]);
    });
    tw.both_succeeded("nix copy --to ssh://localhost", &outs);
    let after = tw.same_path_info("path-info of the closure copied in over ssh", |s, c| {
        c.args(["-r", &tw.path(s, &top)]);
    });
    for p in &closure {
        // Copied, no longer built here; the rest as it was.
        // (Nix 2.8 leaves out `ultimate` when false.)
        assert!(!after[p].get("ultimate").and_then(|u| u.as_bool()).unwrap_or(false), "{p}: {}", after[p]);
        for field in ["deriver", "narHash", "narSize", "references"] {
            assert_eq!(after[p].get(field), before[p].get(field), "{p}: {field}");
        }
    }
    // Again: nothing to do.
    let outs = tw.both("nix", |s, c| {
        c.args(["copy", "--from", &chroot_store(&tw, s, "source"), "--to", &ssh_store(&tw), &tw.path(s, &top)]);
    });
    tw.both_succeeded("nix copy --to ssh://localhost of valid paths", &outs);

    // Out of the daemon over ssh.
    let outs = tw.both("nix", |s, c| {
        c.args(["copy", "--from", &ssh_store(&tw), "--to", &chroot_store(&tw, s, "dest"), &tw.path(s, &top)]);
    });
    tw.both_succeeded("nix copy --from ssh://localhost", &outs);
    tw.same_path_info("path-info in the store copied into over ssh", |s, c| {
        c.args(["--store", &chroot_store(&tw, s, "dest"), "-r", &tw.path(s, &top)]);
    });
    // A path the daemon does not have.
    let gone = format!("{}/{}-wd-missing", tw.theirs.store_dir, "0".repeat(32));
    let outs = tw.both("nix", |s, c| {
        c.args(["copy", "--from", &ssh_store(&tw), "--to", &chroot_store(&tw, s, "dest"), &tw.path(s, &gone)]);
    });
    same_errors(&tw, "nix copy --from ssh://localhost of an invalid path", &outs);
    same_valid_paths(&tw, "after the copies");
    tw.same("nix-store --verify --check-contents after the copies", "nix-store", |_, c| {
        c.args(["--verify", "--check-contents"]);
    });
}

#[test]
fn copy_over_ssh_with_nix_2_8() {
    copy_over_ssh(NixVersion::V2_8);
}

#[test]
fn copy_over_ssh_with_nix_2_26() {
    copy_over_ssh(NixVersion::V2_26);
}

// ---------------------------------------------------------------------------
// Flakes: nix flake metadata/show/check, nix build/eval/run/shell/develop.

/// nix.conf for the flake tests: flakes on, and an empty global registry
/// (a file that does not exist; the default is downloaded).
const FLAKE_CONF: &str =
    "build-users-group =\nextra-experimental-features = flakes\nflake-registry = /nonexistent/flake-registry.json\n";

/// A flake without inputs. The dev shell's builder is bash (`nix develop`
/// runs it with get-env.sh), and it names its outputs (get-env.sh writes
/// the environment to each).
const FLAKE_NIX: &str = r#"{
  description = "a flake without inputs";
  outputs = { self }: let
    mk = name: script: extra: derivation ({
      inherit name;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
      PATH = "/usr/bin:/bin";
      preferLocalBuild = true;
    } // extra);
  in {
    packages.x86_64-linux.hello = mk "fl-hello" ''
      mkdir -p $out/bin
      printf '#!/bin/sh\necho hello from the flake, $1\n' > $out/bin/fl-hello
      chmod +x $out/bin/fl-hello
    '' {};
    packages.x86_64-linux.default = self.packages.x86_64-linux.hello;
    devShells.x86_64-linux.default = derivation {
      name = "fl-shell";
      system = "x86_64-linux";
      builder = "/bin/bash";
      args = [ "-c" "echo never built > $out" ];
      outputs = [ "out" ];
      greeting = "hello from the dev shell";
      dep = self.packages.x86_64-linux.hello;
      preferLocalBuild = true;
    };
    lib.answer = 42;
    checks.x86_64-linux.ok = mk "fl-check" "echo ok > $out" {};
  };
}
"#;

/// A flake whose one check fails to build.
const BROKEN_FLAKE_NIX: &str = r#"{
  outputs = { self }: {
    checks.x86_64-linux.bad = derivation {
      name = "fl-bad-check";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "echo the check fails; exit 1" ];
      preferLocalBuild = true;
    };
  };
}
"#;

/// `json` without the keys `drop` (anywhere).
fn without_keys(json: &str, drop: &[&str]) -> String {
    fn strip(v: &mut serde_json::Value, drop: &[&str]) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !drop.contains(&k.as_str()));
                m.values_mut().for_each(|v| strip(v, drop));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| strip(v, drop)),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("JSON expected ({e}): {json}"));
    strip(&mut v, drop);
    v.to_string()
}

/// `text` with every build directory (`/tmp/nix-build-<drv>-…`) replaced
/// by `BUILD-DIR`. Legitimate difference: CppNix numbers them with a
/// counter of the process that builds, one process per connection, so the
/// first build of a connection is `…-0`; armitage builds for every client
/// in one process and names them `…-<pid>-<n>`. (nix-build's own
/// temporary folders, `/tmp/nix-build-<pid>-0`, go too.)
fn without_build_dirs(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("/tmp/nix-build-") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail.find(|c: char| c == '"' || c == '\'' || c.is_whitespace()).unwrap_or(tail.len());
        out.push_str("BUILD-DIR");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `nix flake metadata --json` of `flake` on both sides, the same once
/// translated; returns theirs' source path, paired with ours' (every
/// flake's source is named `source`, so the map cannot learn them by name).
fn flake_source(tw: &Twins, flake: &str) -> String {
    let outs = tw.both("nix", |_, c| {
        c.args(["flake", "metadata", "--json", flake]);
    });
    tw.both_succeeded("nix flake metadata --json", &outs);
    let [ours, theirs] = [&outs[0], &outs[1]].map(|o| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("nix flake metadata --json prints JSON");
        v["path"].as_str().expect("a path").to_owned()
    });
    tw.map.borrow_mut().pair(&ours, &theirs);
    tw.assert_same("nix flake metadata --json", &text(&outs[0].stdout), &text(&outs[1].stdout));
    theirs
}

fn flakes(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, FLAKE_CONF) else { return };
    // One flake folder for both sides (in theirs' work dir, named by the
    // same path on both): the same source, the same times.
    let dir = tw.theirs.work_dir("flake");
    write_file(dir.join("flake.nix"), FLAKE_NIX);
    let broken = tw.theirs.work_dir("broken-flake");
    write_file(broken.join("flake.nix"), BROKEN_FLAKE_NIX);
    let flake = format!("path:{}", dir.display());
    let run = |tool: &str, args: &[&str]| {
        tw.both(tool, |_, c| {
            c.current_dir(&dir).args(args);
        })
    };

    // The flake's source is added to the store through the daemon.
    let out = same_stdout(&tw, "nix flake metadata", &run("nix", &["flake", "metadata", &flake]));
    assert!(out.contains("a flake without inputs"), "{out}");
    let source = flake_source(&tw, &flake);
    same_stdout(&tw, "nix flake show", &run("nix", &["flake", "show", &flake]));
    same_stdout(&tw, "nix flake show --json", &run("nix", &["flake", "show", "--json", &flake]));
    tw.same_path_info("path-info of the flake's source", |s, c| {
        c.arg(tw.path(s, &source));
    });

    // Evaluation: values, and a derivation's paths (instantiated through
    // the daemon).
    same_stdout(&tw, "nix eval of a value", &run("nix", &["eval", &format!("{flake}#lib.answer")]));
    let drv = line(same_stdout(
        &tw,
        "nix eval of a drvPath",
        &run("nix", &["eval", "--raw", ".#packages.x86_64-linux.hello.drvPath"]),
    ));
    assert!(drv.ends_with("-fl-hello.drv"), "{drv}");
    same_stdout(&tw, "nix eval --json of a package", &run("nix", &["eval", "--json", ".#packages.x86_64-linux.hello"]));

    // Builds: by path: and by `.`, a result link (a root) in the flake folder.
    let outs = run("nix", &["build", "--no-link", "--json", &format!("{flake}#hello")]);
    tw.both_succeeded("nix build --json", &outs);
    let json = |o: &Output| without_keys(&text(&o.stdout), &["startTime", "stopTime"]);
    tw.assert_same("nix build --json", &json(&outs[0]), &json(&outs[1]));
    let links = tw.theirs.work_dir("links");
    for side in Side::BOTH {
        let link = PathBuf::from(tw.path(side, links.join("result").to_str().unwrap()));
        let outs = tw.both("nix", |s, c| {
            if s == side {
                c.current_dir(&dir).args(["build", "-o"]).arg(&link).arg(".");
            } else {
                c.arg("--version");
            }
        });
        tw.both_succeeded("nix build -o", &outs);
    }
    let roots = tw.same_lines("nix-store --gc --print-roots", "nix-store", |_, c| {
        c.args(["--gc", "--print-roots"]);
    });
    assert!(roots.lines().any(|l| l.contains("-fl-hello")), "{roots}");

    // Running it.
    let out = same_stdout(&tw, "nix run", &run("nix", &["run", &format!("{flake}#hello"), "--", "world"]));
    assert_eq!(out, "hello from the flake, world\n");
    let out =
        same_stdout(&tw, "nix shell", &run("nix", &["shell", &format!("{flake}#hello"), "-c", "fl-hello", "again"]));
    assert_eq!(out, "hello from the flake, again\n");

    // nix flake check builds the checks.
    same_stdout(&tw, "nix flake check", &run("nix", &["flake", "check", &flake]));
    let broken = format!("path:{}", broken.display());
    flake_source(&tw, &broken);
    let outs = tw.both("nix", |_, c| {
        c.args(["flake", "check", &broken]);
    });
    same_errors(&tw, "nix flake check of a failing check", &outs);

    // nix develop: builds the shell's environment with get-env.sh.
    let out = same_stdout(
        &tw,
        "nix develop --command",
        &run(
            "nix",
            &["develop", &flake, "-c", "bash", "-c", "echo $greeting; echo $dep; echo $out; echo ${IN_NIX_SHELL-}"],
        ),
    );
    assert!(out.starts_with("hello from the dev shell\n"), "{out}");
    let outs = run("nix", &["print-dev-env", "--json", &flake]);
    tw.both_succeeded("nix print-dev-env --json", &outs);
    let env = |o: &Output| without_build_dirs(&without_keys(&text(&o.stdout), &["EPOCHREALTIME", "EPOCHSECONDS"]));
    tw.assert_same("nix print-dev-env --json", &env(&outs[0]), &env(&outs[1]));

    same_valid_paths(&tw, "after the flake commands");
}

#[test]
fn flakes_with_nix_2_8() {
    flakes(NixVersion::V2_8);
}

#[test]
fn flakes_with_nix_2_26() {
    flakes(NixVersion::V2_26);
}

// ---------------------------------------------------------------------------
// nix store make-content-addressed, nix-prefetch-url, nix store prefetch-file.

/// The `(from, to)` pairs of the `rewriting '…' to '…'` lines of `stderr`.
fn rewrites(stderr: &[u8]) -> Vec<(String, String)> {
    text(stderr)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("rewriting '")?;
            let (from, to) = rest.split_once("' to '")?;
            Some((from.to_owned(), to.strip_suffix('\'')?.to_owned()))
        })
        .collect()
}

/// Paths added by clients that compute them: a closure rewritten to be
/// content-addressed (`nix store make-content-addressed`, in 2.8 `nix
/// make-content-addressable`: each path added with its references through
/// the daemon), and files fetched into the store (`nix-prefetch-url`, `nix
/// store prefetch-file`).
fn content_addressed_and_prefetched(version: NixVersion) {
    let Some(tw) = Twins::with_conf(version, CONF) else { return };
    let file = nix_file(&tw, "closure", CLOSURE_NIX);
    let top = line(build(&tw, &file, "top").join("\n"));
    tw.same_lines("nix-store -qR", "nix-store", |s, c| {
        c.args(["-qR", &tw.path(s, &top)]);
    });
    let command: &[&str] = match version {
        NixVersion::V2_8 => &["make-content-addressable", "-r"],
        NixVersion::V2_26 => &["store", "make-content-addressed"],
    };
    let outs = tw.both("nix", |s, c| {
        c.args(command).arg(tw.path(s, &top));
    });
    tw.both_succeeded("nix store make-content-addressed", &outs);
    // The new paths share their names with the old ones: paired by the
    // rewrites each side announces (the old ones are paired already).
    let (ours, theirs) = (rewrites(&outs[0].stderr), rewrites(&outs[1].stderr));
    assert_eq!(theirs.len(), 3, "{}", text(&outs[1].stderr));
    let mut new_top = String::new();
    for (from, to) in &theirs {
        let ours_from = tw.path(Side::Ours, from);
        let (_, ours_to) =
            ours.iter().find(|(f, _)| *f == ours_from).unwrap_or_else(|| panic!("armitage's side rewrote {ours_from}"));
        tw.map.borrow_mut().pair(ours_to, to);
        if *from == top {
            new_top = to.clone();
        }
    }
    let info = tw.same_path_info("path-info of the content-addressed closure", |s, c| {
        c.args(["-r", &tw.path(s, &new_top)]);
    });
    assert!(info[&new_top]["ca"].as_str().is_some_and(|ca| ca.starts_with("fixed:r:sha256:")), "{info:?}");
    same_stdout(
        &tw,
        "make-content-addressed again: nothing new",
        &tw.both("nix", |s, c| {
            c.args(command).args(["--json", &tw.path(s, &top)]);
        }),
    );

    // A file fetched into the store.
    let fetched = tw.theirs.work_dir("fetch").join("fetched.txt");
    write_file(&fetched, "fetched content\n");
    let url = format!("file://{}", fetched.display());
    let hash = same_stdout(
        &tw,
        "nix-prefetch-url",
        &tw.both("nix-prefetch-url", |_, c| {
            c.arg(&url);
        }),
    );
    let out = same_stdout(
        &tw,
        "nix-prefetch-url --print-path",
        &tw.both("nix-prefetch-url", |_, c| {
            c.args(["--print-path", &url]);
        }),
    );
    assert!(out.starts_with(&hash), "{out} after {hash}");
    let path = out.lines().nth(1).expect("the path").to_owned();
    same_stdout(
        &tw,
        "nix store prefetch-file --json",
        &tw.both("nix", |_, c| {
            c.args(["store", "prefetch-file", "--json", &url]);
        }),
    );
    tw.same_path_info("path-info of the fetched file", |s, c| {
        c.arg(tw.path(s, &path));
    });
    same_valid_paths(&tw, "after the rewrites and fetches");
}

#[test]
fn content_addressed_and_prefetched_with_nix_2_8() {
    content_addressed_and_prefetched(NixVersion::V2_8);
}

#[test]
fn content_addressed_and_prefetched_with_nix_2_26() {
    content_addressed_and_prefetched(NixVersion::V2_26);
}
