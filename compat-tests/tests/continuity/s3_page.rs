//! docs/s3.md's opening block, as written, in an empty folder with
//! armitage, Garage and Nix 2.8 on `PATH`: a Garage with a bucket, a
//! daemon uploading to it, a witnessed build, the queue emptied, the
//! narinfo and the witnessed bytes read back from the bucket.

use compat_tests::docs::run_opening_block;
use testkit::garage::Garage;
use testkit::{Nix, NixVersion, armitage_bin, tool_available};

#[test]
fn s3_page_opening_commands_as_written() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let Some(garage) = Garage::binary() else { return };
    if !tool_available("curl") || !tool_available("python3") {
        return;
    }
    let armitage = armitage_bin();
    let bins = [armitage.parent().unwrap(), garage.parent().unwrap(), nix.bin_dir()];
    let (_dir, stdout) = run_opening_block("docs/s3.md", &bins);
    assert!(stdout.contains("pending: 0, failed: 0"), "the queue emptied:\n{stdout}");
    assert!(stdout.contains("StorePath: ") && stdout.contains("-release.tar"), "the narinfo was read back:\n{stdout}");
    assert!(stdout.contains("the witnessed bytes are in the bucket"), "{stdout}");
}
