//! How the daemon is started and who may talk to it: `--stdio` (as
//! `nix-daemon --stdio` serves ssh-ng) with its trust flags, a socket passed
//! by systemd's socket activation, and `allowed-users` keeping users out.

use compat_tests::proto_client::{Client, Wire};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use testkit::{Daemon, Nix, NixVersion, TestStore, armitage_bin, line, output, run, write_file};
use worker_protocol::Op;

/// `armitage daemon --stdio` on one end of a socket pair.
fn stdio_daemon(store: &TestStore, extra: &[&str]) -> (std::process::Child, Client) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let stdin: std::os::fd::OwnedFd = theirs.try_clone().unwrap().into();
    let stdout: std::os::fd::OwnedFd = theirs.into();
    let child = store
        .armitage()
        .arg("daemon")
        .arg("--stdio")
        .args(extra)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, Client::from_stream(ours).unwrap())
}

#[test]
fn stdio_serves_one_trusted_connection_unless_told_otherwise() {
    let store = TestStore::new();
    let path = {
        let f = store.work_dir("in").join("f");
        write_file(&f, "over stdio");
        line(run(store.armitage().args(["store", "add"]).arg(&f)))
    };
    for (flags, trust) in [(&[][..], 1), (&["--force-trusted"][..], 1), (&["--force-untrusted"][..], 2)] {
        let (mut child, mut client) = stdio_daemon(&store, flags);
        let hello = client.handshake(0x100 | 38, &[]).unwrap();
        assert_eq!(hello.trust, Some(trust), "trust byte with {flags:?}");
        // No SetOptions first (ssh-ng clients never send one).
        let outcome = client.call(&Wire::op(Op::IsValidPath).str(&path)).unwrap();
        assert!(outcome.is_ok(), "{flags:?}: {outcome:?}");
        assert!(client.read_bool("valid").unwrap(), "the path is valid through --stdio");
        drop(client);
        let status = child.wait().unwrap();
        assert!(status.success(), "the daemon ends when its one client goes ({flags:?}): {status}");
    }
}

#[test]
fn socket_activation_uses_the_socket_systemd_passes() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    if Command::new("systemd-socket-activate").arg("--help").output().is_err() {
        eprintln!("skipped: systemd-socket-activate is not installed (Debian package systemd)");
        return;
    }
    let store = TestStore::new();
    let socket = store.root().join("activated.sock");
    // systemd-socket-activate starts the daemon at the first connection and
    // passes it the listening socket as fd 3 with LISTEN_FDS/LISTEN_PID; it
    // passes on only the environment it is told to, so the daemon gets flags.
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg("-E")
        .arg(format!("NIX_CONF_DIR={}", store.conf_dir.display()))
        .arg(armitage_bin())
        .args(["--store-dir", &store.store_dir])
        .arg("--state-dir")
        .arg(&store.state_dir)
        .arg("--log-dir")
        .arg(&store.log_dir)
        .args(["daemon", "--socket", "/nonexistent/never-bound"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "systemd-socket-activate did not listen");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let f = store.work_dir("in").join("f");
    write_file(&f, "socket activated");
    let mut client = nix.command("nix-store");
    store.client_env(&mut client);
    client.env("NIX_REMOTE", "daemon").env("NIX_DAEMON_SOCKET_PATH", &socket);
    let added = line(run(client.arg("--add").arg(&f)));
    assert!(added.starts_with(&store.store_dir), "{added}");
    // It listened on the passed socket, not on the one its flag names.
    assert!(!std::path::Path::new("/nonexistent/never-bound").exists());
    let _ = activator.kill();
    let _ = activator.wait();
}

#[test]
fn allowed_users_keeps_others_out() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running clients as another user needs root");
        return;
    }
    // `nobody` (uid 65534) exists on Debian; it is not root and not a build user.
    let home_for = |store: &TestStore| {
        let home = store.root().join("nobody-home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
        home
    };
    for (allowed, expect_ok) in
        [("root", false), ("*", true), ("nobody", true), ("root @wheel", false), ("@nogroup", true)]
    {
        let store = TestStore::with_conf(&format!("allowed-users = {allowed}\ntrusted-users = root\n"));
        let daemon = Daemon::armitage(&store);
        let f = store.work_dir("in").join("f");
        write_file(&f, "x");
        let path = line(run(daemon.client(&store, &nix, "nix-store").arg("--add").arg(&f)));
        let home = home_for(&store);
        let client = daemon.client(&store, &nix, "nix-store");
        let mut as_nobody = Command::new("setpriv");
        as_nobody.args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"]);
        as_nobody.arg(client.get_program()).args(["-q", "--hash", &path]);
        as_nobody.env_clear();
        for (k, v) in client.get_envs() {
            if let Some(v) = v {
                as_nobody.env(k, v);
            }
        }
        as_nobody.env("HOME", &home).env("XDG_CACHE_HOME", home.join(".cache"));
        let out = output(&mut as_nobody);
        assert_eq!(
            out.status.success(),
            expect_ok,
            "allowed-users = {allowed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !expect_ok {
            assert!(daemon.log().contains("refusing connection"), "the refusal is logged:\n{}", daemon.log());
        }
    }
}

/// What `nix store ping` (2.8) or `nix store info --json` (2.26) shows as
/// the daemon's version: stderr for 2.8, the `version` field for 2.26.
fn reported_version(daemon: &Daemon, store: &TestStore, nix: &Nix) -> String {
    let mut cmd = daemon.client(store, nix, "nix");
    cmd.args(["--extra-experimental-features", "nix-command"]);
    match nix.version {
        NixVersion::V2_8 => {
            let out = output(cmd.args(["store", "ping"]));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .unwrap_or_else(|| panic!("no version in:\n{text}"))
                .to_owned()
        }
        NixVersion::V2_26 => {
            let json: serde_json::Value = serde_json::from_str(&run(cmd.args(["store", "info", "--json"]))).unwrap();
            json["version"].as_str().unwrap_or_else(|| panic!("no version in {json}")).to_owned()
        }
    }
}

/// `builtins.compareVersions a b`, evaluated by the real Nix.
fn compare_versions(store: &TestStore, nix: &Nix, a: &str, b: &str) -> i64 {
    let expr = format!("builtins.compareVersions \"{a}\" \"{b}\"");
    line(run(store.nix(nix, "nix-instantiate").args(["--eval", "-E", &expr]))).parse().unwrap()
}

/// The daemon reports a version that scripts can compare with Nix's: by
/// default the Nix version armitage stands in for, then its own, which
/// `builtins.compareVersions` puts after 2.26.3 and before 2.26.4; and
/// `reported-version` in armitage.toml makes it report any other, exactly
/// as nix-daemon of that version shows.
#[test]
fn reported_version_orders_among_nix_versions_and_can_be_set() {
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { continue };
        let store = TestStore::new();
        let reported = reported_version(&Daemon::armitage(&store), &store, &nix);
        assert_eq!(reported, format!("2.26.3-armitage-{}", env!("CARGO_PKG_VERSION")), "{version}");
        for (other, order) in [("2.26.3", 1), ("2.26.4", -1), ("2.8.0", 1), ("2.27", -1), ("2.26.3pre20250101", 1)] {
            assert_eq!(
                compare_versions(&store, &nix, &reported, other),
                order,
                "{version}: compareVersions {reported} {other}"
            );
        }

        // Set to what nix-daemon of this version reports, it reads the same.
        let theirs_store = TestStore::new();
        let theirs = reported_version(&Daemon::nix(&theirs_store, &nix), &theirs_store, &nix);
        write_file(store.armitage_config(), format!("[daemon]\nreported-version = \"{theirs}\"\n"));
        assert_eq!(reported_version(&Daemon::armitage(&store), &store, &nix), theirs, "{version}");
    }
}

/// A mistake in armitage.toml stops the daemon with one line naming the
/// file, the line and the key.
#[test]
fn a_bad_armitage_toml_stops_the_daemon_with_one_line() {
    let store = TestStore::new();
    write_file(store.armitage_config(), "[daemon]\nreported-versoin = \"2.8.0\"\n");
    let out = output(store.armitage().args(["daemon", "--socket"]).arg(store.root().join("never.sock")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let path = store.armitage_config();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("error: '{}' line 2: unknown field `reported-versoin`", path.display())), "{err}");
}
