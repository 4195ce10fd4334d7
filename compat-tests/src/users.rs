//! Running stock clients as an unprivileged user (untrusted by the
//! daemons under test): the user itself, a reachable copy of the Nix
//! installation, and the command wrapped in `setpriv`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Who untrusted clients run as: the unprivileged user `armitage-test`,
/// created with `useradd` if missing, as (uid, gid); `None` when the tests
/// do not run as root (the trusted clients must be root, and only root can
/// run a client as another user).
pub fn untrusted_user() -> Option<(u32, u32)> {
    const NAME: &str = "armitage-test";
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        return None;
    }
    let ids = || Some((id(&["-u", NAME])?, id(&["-g", NAME])?));
    if let Some(ids) = ids() {
        return Some(ids);
    }
    // Another test process may be creating it at the same time.
    let _ = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", NAME])
        .status();
    Some(ids().expect("create the armitage-test user with useradd"))
}

/// A folder the user can reach holding the Nix installation `bin` is in:
/// the installation itself if every folder above it is searchable by
/// others, else a hard-linked (or copied) mirror in the scratch folder,
/// made once. Returns the mirror's `bin`.
pub fn reachable_bin(bin: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let reachable = bin.ancestors().all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if reachable {
        return bin.to_owned();
    }
    let install = bin.parent().expect("bin has a parent");
    let mirror = testkit::scratch_dir().join(format!("nix-mirror-{}", install.file_name().unwrap().to_string_lossy()));
    if !mirror.exists() {
        let tmp = testkit::scratch_dir().join(format!("nix-mirror-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let linked = Command::new("cp").arg("-al").arg(install).arg(&tmp).status().is_ok_and(|s| s.success());
        if !linked {
            let _ = std::fs::remove_dir_all(&tmp);
            assert!(
                Command::new("cp").arg("-a").arg(install).arg(&tmp).status().unwrap().success(),
                "copy {}",
                install.display()
            );
        }
        if std::fs::rename(&tmp, &mirror).is_err() {
            // Someone else made it first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    mirror.join(bin.file_name().unwrap())
}

/// `cmd` run as `uid`/`gid` (no supplementary groups) through `setpriv`,
/// with its environment, `HOME` and XDG folders moved to `home`, and its
/// program taken from a folder the user can reach.
pub fn as_user(cmd: &Command, (uid, gid): (u32, u32), home: &Path) -> Command {
    let program = PathBuf::from(cmd.get_program());
    let program = reachable_bin(program.parent().unwrap()).join(program.file_name().unwrap());
    let mut user = Command::new("setpriv");
    user.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            user.env(k, v);
        }
    }
    user.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CONFIG_HOME", home.join(".config"));
    user.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups", "--"])
        .arg(program)
        .args(cmd.get_args());
    user
}

/// Held by a test that builds as root with build users (`nixbld`), under
/// `cargo test` (nextest runs such tests one at a time by their names, see
/// .config/nextest.toml): both daemons kill every process of a build user
/// once a build is done, so two such tests at once would kill each other's
/// builders.
pub fn build_users_lock() -> std::sync::MutexGuard<'static, ()> {
    static BUILD_USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    BUILD_USERS.lock().unwrap_or_else(|e| e.into_inner())
}
