//! The README's run command and first build, and the daemon page's opening
//! commands, run as written (issue 9, item 3): a user who ran only the
//! README's run command gets a daemon whose first sandboxed build works.
//! The lines are read from the files at test time; the only change is that
//! `cargo run --release -p armitage --` becomes this build's armitage binary
//! (no second, release build), and a page's background daemon is stopped at
//! the end. Run as root and, when the tests run as root, as an unprivileged
//! user too (the README promises no root: its sandbox is a user namespace).

use compat_tests::docs::{repo_file, sh_block};
use compat_tests::users::{build_users_lock, reachable_bin, untrusted_user};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use testkit::{Nix, NixVersion, armitage_bin, output};

const README_DAEMON: &str = "<!-- run by compat-tests/tests/differential/readme.rs: the daemon -->";
const README_FIRST_BUILD: &str = "<!-- run by compat-tests/tests/differential/readme.rs: the first build -->";
const CARGO_RUN: &str = "cargo run --release -p armitage --";

/// Who runs the lines: the test's own user, or another one.
#[derive(Clone, Copy)]
enum Runner {
    Me,
    User(u32, u32),
}

/// A shell running `script` in `dir` with `PATH` holding `bins` (as
/// `runner`); a clean environment but for `HOME`.
fn shell(runner: Runner, dir: &Path, bins: &[PathBuf], script: &str) -> Command {
    let path = bins
        .iter()
        .map(|b| b.display().to_string())
        .chain(["/usr/bin".into(), "/bin".into()])
        .collect::<Vec<_>>()
        .join(":");
    let mut cmd = match runner {
        Runner::Me => Command::new("sh"),
        Runner::User(uid, gid) => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups", "--", "sh"]);
            c
        }
    };
    cmd.env_clear().env("PATH", path).env("HOME", dir.join("home")).current_dir(dir).args(["-ec", script]);
    cmd
}

/// A folder for the run, owned by whoever runs the lines.
fn work_dir(runner: Runner) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("readme-").tempdir_in(testkit::scratch_dir()).unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    if let Runner::User(uid, gid) = runner {
        for d in [dir.path().to_owned(), dir.path().join("home")] {
            std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
        }
    }
    dir
}

/// The armitage binary, where `runner` can execute it.
fn armitage_for(runner: Runner) -> PathBuf {
    let bin = armitage_bin();
    match runner {
        Runner::Me => bin,
        Runner::User(..) => reachable_bin(bin.parent().unwrap()).join("armitage"),
    }
}

/// `shell`: a machine without a static shell, as far as armitage knows
/// (`sandbox-shell` in armitage-home/etc/armitage.toml): the sandbox gets
/// that dynamically linked shell with its interpreter and libraries.
fn readme_as_written(runner: Runner, nix: &Nix, shell_of_the_machine: Option<&str>) {
    let readme = repo_file("README.md");
    let daemon_line = sh_block(&readme, Some(README_DAEMON)).into_iter().next().expect("the run command");
    let args = daemon_line
        .strip_prefix(CARGO_RUN)
        .unwrap_or_else(|| panic!("the run command no longer starts with {CARGO_RUN:?}: {daemon_line}"));
    let first_build = sh_block(&readme, Some(README_FIRST_BUILD)).join("\n");
    // As root, the README's daemon builds with build users.
    let _serial = matches!(runner, Runner::Me).then(build_users_lock);

    let dir = work_dir(runner);
    if let Some(sh) = shell_of_the_machine {
        testkit::write_file(
            dir.path().join("armitage-home/etc/armitage.toml"),
            format!("[daemon]\nsandbox-shell = \"{sh}\"\n"),
        );
        if let Runner::User(uid, gid) = runner {
            for d in ["armitage-home", "armitage-home/etc", "armitage-home/etc/armitage.toml"] {
                std::os::unix::fs::chown(dir.path().join(d), Some(uid), Some(gid)).unwrap();
            }
        }
    }
    let armitage = armitage_for(runner);
    let nix_bin = match runner {
        Runner::Me => nix.bin_dir().to_owned(),
        Runner::User(..) => reachable_bin(nix.bin_dir()),
    };
    let mut daemon = shell(runner, dir.path(), &[], &format!("exec {}{args}", armitage.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    let read = BufReader::new(daemon.stdout.take().unwrap()).read_line(&mut printed);
    let stop = |mut daemon: std::process::Child| {
        let _ = daemon.kill();
        let out = daemon.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    if read.is_err() || !printed.starts_with("export NIX_REMOTE=daemon ") {
        panic!("the daemon printed {printed:?}, not the export line:\n{}", stop(daemon));
    }
    let env_file = std::fs::read_to_string(dir.path().join("armitage-home/env")).unwrap();
    assert_eq!(env_file, printed, "armitage-home/env holds the line it printed");

    let out = output(&mut shell(runner, dir.path(), &[nix_bin], &first_build));
    let log = stop(daemon);
    assert!(
        out.status.success(),
        "the README's first build failed:\n{}\n(daemon's log:\n{log})",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().last(), Some("hello"), "`cat result` shows what the build wrote:\n{stdout}");
}

#[test]
fn readme_run_command_and_first_build_as_written() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    readme_as_written(Runner::Me, &nix, None);
}

#[test]
fn readme_first_build_with_the_machines_dynamically_linked_sh() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    readme_as_written(Runner::Me, &nix, Some(sh.to_str().unwrap()));
}

#[test]
fn readme_run_command_and_first_build_as_written_without_root() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let Some((uid, gid)) = untrusted_user() else {
        eprintln!("skipped: not running as root, so the test above already ran without root");
        return;
    };
    readme_as_written(Runner::User(uid, gid), &nix, None);
}

/// docs/daemon.md's opening block, as written, with armitage and Nix on
/// `PATH`: its daemon in the background, a path added and shown.
#[test]
fn daemon_page_opening_commands_as_written() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let block = sh_block(&repo_file("docs/daemon.md"), None).join("\n");
    let dir = work_dir(Runner::Me);
    let bin_dir = armitage_bin().parent().unwrap().to_owned();
    let out = output(&mut shell(
        Runner::Me,
        dir.path(),
        &[bin_dir, nix.bin_dir().to_owned()],
        &format!("{block}\nkill $!\nwait"),
    ));
    assert!(out.status.success() || out.status.code() == Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    // The daemon's export line comes first; path-info's JSON last.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let info: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("path-info printed JSON ({e}):\n{stdout}"));
    let text = info.to_string();
    assert!(text.contains("-hello.txt"), "{text}");
}
