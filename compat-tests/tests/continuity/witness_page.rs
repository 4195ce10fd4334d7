//! docs/witness.md's opening block, as written, in an empty folder with
//! armitage and Nix 2.8 on `PATH`: a witnessed build, the record listed,
//! the upstream stopped, the output deleted, the rebuild served from the
//! witness archive.

use compat_tests::docs::run_opening_block;
use testkit::{Nix, NixVersion, armitage_bin, tool_available};

#[test]
fn witness_page_opening_commands_as_written() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    if !tool_available("curl") || !tool_available("python3") {
        return;
    }
    let armitage = armitage_bin();
    let (dir, stdout) = run_opening_block("docs/witness.md", &[armitage.parent().unwrap(), nix.bin_dir()]);
    // The two builds print the same output path; `witness ls` names the URL
    // between them.
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("export ")).collect();
    let built: Vec<&&str> = lines.iter().filter(|l| l.ends_with("-release.tar") && l.starts_with('/')).collect();
    assert_eq!(built.len(), 1, "the rebuild printed the output path (the first build's went to $out):\n{stdout}");
    assert!(stdout.contains("http://127.0.0.1:8087/release.tar"), "witness ls lists the fetch:\n{stdout}");
    let rebuilt = std::fs::read(built[0]).unwrap();
    assert_eq!(rebuilt, std::fs::read(dir.path().join("site/release.tar")).unwrap());
}
