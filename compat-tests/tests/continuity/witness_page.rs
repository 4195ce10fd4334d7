//! docs/witness.md's opening block, as written, in an empty folder with
//! armitage and Nix 2.8 on `PATH`: a witnessed build, the record listed,
//! the upstream stopped, the output deleted, the rebuild served from the
//! witness archive.

use compat_tests::docs::{repo_file, sh_block};
use std::process::Command;
use testkit::{Nix, NixVersion, armitage_bin, output, tool_available};

#[test]
fn witness_page_opening_commands_as_written() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    if !tool_available("curl") || !tool_available("python3") {
        return;
    }
    let block = sh_block(&repo_file("docs/witness.md"), None).join("\n");
    let dir = tempfile::Builder::new().prefix("witness-page-").tempdir_in(testkit::scratch_dir()).unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    let path = format!("{}:{}:/usr/bin:/bin", armitage_bin().parent().unwrap().display(), nix.bin_dir().display());
    // The page leaves its daemon running in the background: stop it after
    // (`jobs -p` in the shell itself: in a `$(...)` subshell dash lists none).
    let script = format!("{block}\njobs -p > .jobs\nkill $(cat .jobs) 2>/dev/null || true\nwait");
    let out = output(
        Command::new("sh")
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir.path().join("home"))
            .current_dir(dir.path())
            .args(["-ec", &script]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the page's commands failed:\n{stdout}\n{stderr}");
    // The two builds print the same output path; `witness ls` names the URL
    // between them.
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("export ")).collect();
    let built: Vec<&&str> = lines.iter().filter(|l| l.ends_with("-release.tar") && l.starts_with('/')).collect();
    assert_eq!(built.len(), 1, "the rebuild printed the output path (the first build's went to $out):\n{stdout}");
    assert!(stdout.contains("http://127.0.0.1:8087/release.tar"), "witness ls lists the fetch:\n{stdout}");
    let rebuilt = std::fs::read(built[0]).unwrap();
    assert_eq!(rebuilt, std::fs::read(dir.path().join("site/release.tar")).unwrap());
}
