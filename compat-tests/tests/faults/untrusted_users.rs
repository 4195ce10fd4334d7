//! What an untrusted user (a non-root uid not in `trusted-users`, through
//! `setpriv`) cannot do to armitage's daemon with a stock client: turn the
//! sandbox off, bring its own substituters, delete a live path, import an
//! unsigned path with `nix-store --import`. (`nix copy` of unsigned paths,
//! beside nix-daemon, is in daemon_commands.rs; `allowed-users` in
//! daemon_modes.rs.)

use compat_tests::text;
use compat_tests::users::{as_user, untrusted_user};
use std::path::PathBuf;
use std::process::{Command, Output};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, write_file};

struct Setup {
    nix: Nix,
    store: TestStore,
    daemon: Daemon,
    user: (u32, u32),
    home: PathBuf,
}

fn setup(conf: &str) -> Option<Setup> {
    let nix = Nix::find(NixVersion::V2_8)?;
    let Some(user) = untrusted_user() else {
        eprintln!("skipped: running clients as an untrusted user needs root");
        return None;
    };
    let store = TestStore::with_conf(&format!("trusted-users = root\nbuild-users-group =\nsubstituters =\n{conf}"));
    let daemon = Daemon::armitage(&store);
    let home = store.work_dir("user-home");
    let chowned = Command::new("chown").arg("-R").arg(format!("{}:{}", user.0, user.1)).arg(&home).status();
    assert!(chowned.is_ok_and(|s| s.success()), "chown the user's home");
    // The user must reach the store and the .nix files.
    for dir in [store.root().to_path_buf(), store.work_dir("in")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Some(Setup { nix, store, daemon, user, home })
}

impl Setup {
    fn as_user(&self, tool: &str, args: &[&str]) -> Output {
        let mut c = self.daemon.client(&self.store, &self.nix, tool);
        c.args(args);
        output(&mut as_user(&c, self.user, &self.home))
    }

    fn as_root(&self, tool: &str, args: &[&str]) -> Output {
        let mut c = self.daemon.client(&self.store, &self.nix, tool);
        c.args(args);
        output(&mut c)
    }

    /// `text` added by root (trusted) as a file named `name`: its path.
    fn add_as_root(&self, name: &str, text: &str) -> String {
        let f = self.store.work_dir("in").join(name);
        write_file(&f, text);
        line(run(self.daemon.client(&self.store, &self.nix, "nix-store").arg("--add").arg(&f)))
    }

    fn nix_file(&self, name: &str, text: &str) -> String {
        let f = self.store.work_dir("in").join(name);
        write_file(&f, text);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        f.to_string_lossy().into_owned()
    }
}

/// `/bin/sh` exists on the host but not in a sandbox whose `sandbox-paths`
/// is set empty: the builder runs only if the sandbox is off.
fn sh_drv(salt: &str) -> String {
    format!(
        r#"derivation {{ name = "needs-host-sh"; system = "x86_64-linux"; builder = "/bin/sh"; args = ["-c" "echo {salt} > $out"]; }}"#
    )
}

#[test]
fn untrusted_users_cannot_turn_the_sandbox_off() {
    let Some(s) = setup("sandbox = true\nsandbox-paths =\n") else { return };
    let file = s.nix_file("sh.nix", &sh_drv("untrusted"));
    let out = s.as_user("nix-build", &[&file, "--no-out-link", "--option", "sandbox", "false"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the build ran outside the sandbox for an untrusted user:\n{err}");
    assert!(
        err.contains("ignoring the client-specified setting 'sandbox', because it is a restricted setting and you are not a trusted user"),
        "the user is told why:\n{err}"
    );
    assert!(
        err.contains("cannot run '/bin/sh' in the sandbox: nothing provides it"),
        "the builder was sandboxed (no /bin/sh inside):\n{err}"
    );

    // A trusted user may turn it off, and then the same builder runs.
    let file = s.nix_file("sh-root.nix", &sh_drv("trusted"));
    let out = s.as_root("nix-build", &[&file, "--no-out-link", "--option", "sandbox", "false"]);
    assert!(out.status.success(), "root may turn the sandbox off:\n{}", text(&out.stderr));
    let path = text(&out.stdout).trim().to_owned();
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "trusted");
}

#[test]
fn untrusted_users_cannot_bring_their_own_substituters() {
    let Some(s) = setup("sandbox = false\n") else { return };
    let cache = s.store.work_dir("their-cache");
    let url = format!("file://{}", cache.display());
    let file = s.nix_file("sh.nix", &sh_drv("subst"));
    let out = s.as_user("nix-build", &[&file, "--no-out-link", "--option", "substituters", &url]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "the build itself is allowed:\n{err}");
    assert!(
        err.contains(&format!("ignoring untrusted substituter '{url}', you are not a trusted user.")),
        "the substituter is refused with CppNix's warning:\n{err}"
    );
}

#[test]
fn untrusted_users_cannot_delete_live_paths() {
    let Some(s) = setup("sandbox = false\n") else { return };
    let path = s.add_as_root("live", "alive");
    let root = s.store.work_dir("roots").join("live-root");
    run(s
        .daemon
        .client(&s.store, &s.nix, "nix-store")
        .args(["--realise", &path, "--indirect", "--add-root"])
        .arg(&root));
    let out = s.as_user("nix-store", &["--delete", &path]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "an untrusted user deleted a live path:\n{err}");
    assert!(err.contains("since it is still alive"), "CppNix's reason:\n{err}");
    let valid = s.as_root("nix-store", &["--check-validity", &path]);
    assert!(valid.status.success(), "{path} is still valid");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "alive");
}

#[test]
fn untrusted_users_cannot_import_unsigned_paths() {
    let Some(s) = setup("sandbox = false\nrequire-sigs = true\n") else { return };
    let path = s.add_as_root("exported", "exported by root");
    let export = s.store.work_dir("in").join("export.nar");
    let bytes = output(s.daemon.client(&s.store, &s.nix, "nix-store").args(["--export", &path]));
    assert!(bytes.status.success(), "export: {}", text(&bytes.stderr));
    std::fs::write(&export, &bytes.stdout).unwrap();
    run(s.daemon.client(&s.store, &s.nix, "nix-store").args(["--delete", &path]));
    let import = |as_root: bool| {
        let mut c = s.daemon.client(&s.store, &s.nix, "nix-store");
        c.arg("--import");
        let mut c = if as_root { c } else { as_user(&c, s.user, &s.home) };
        c.stdin(std::fs::File::open(&export).unwrap());
        output(&mut c)
    };
    // An export carries no signature (and no content address): the user's
    // import is refused with CppNix's reason, and nothing is registered.
    let out = import(false);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "an untrusted user imported an unsigned path");
    assert!(err.contains("lacks a signature by a trusted key"), "CppNix's reason:\n{err}");
    assert!(!s.as_root("nix-store", &["--check-validity", &path]).status.success(), "{path} was registered");
    // Root (trusted) may.
    let out = import(true);
    assert!(out.status.success(), "root's import: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), path);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "exported by root");
}
