//! docs/s3.md's opening block, as written, in an empty folder with
//! armitage, Garage and Nix 2.8 on `PATH`: a Garage with a bucket, a
//! daemon uploading to it, a witnessed build, the queue emptied, the
//! narinfo and the witnessed bytes read back from the bucket.

use compat_tests::docs::{repo_file, sh_block};
use std::process::Command;
use testkit::garage::Garage;
use testkit::{Nix, NixVersion, armitage_bin, output, tool_available};

#[test]
fn s3_page_opening_commands_as_written() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let Some(garage) = Garage::binary() else { return };
    if !tool_available("curl") || !tool_available("python3") {
        return;
    }
    let block = sh_block(&repo_file("docs/s3.md"), None).join("\n");
    let dir = tempfile::Builder::new().prefix("s3-page-").tempdir_in(testkit::scratch_dir()).unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    let path = format!(
        "{}:{}:{}:/usr/bin:/bin",
        armitage_bin().parent().unwrap().display(),
        garage.parent().unwrap().display(),
        nix.bin_dir().display()
    );
    // The page leaves its daemon and Garage running: stop them after.
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
    assert!(stdout.contains("pending: 0, failed: 0"), "the queue emptied:\n{stdout}");
    assert!(stdout.contains("StorePath: ") && stdout.contains("-release.tar"), "the narinfo was read back:\n{stdout}");
    assert!(stdout.contains("the witnessed bytes are in the bucket"), "{stdout}");
}
