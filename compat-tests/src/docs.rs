//! The repository's documents as tests read them: a file of the checkout,
//! and the shell lines of a page's ```sh block (pages promise that their
//! opening commands work as written).

use std::path::Path;

/// A file of the repository, by its path from the root.
pub fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The lines of the first ```sh block after `marker` (or, without one, the
/// first of the file).
pub fn sh_block(text: &str, marker: Option<&str>) -> Vec<String> {
    let from = match marker {
        Some(m) => text.find(m).unwrap_or_else(|| panic!("the marker {m:?} is gone: keep it above its block")),
        None => 0,
    };
    let rest = &text[from..];
    let start = rest.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let end = rest[start..].find("```").expect("the block's end");
    rest[start..start + end].lines().map(str::to_owned).collect()
}

/// Runs the opening ```sh block of the page `name` as written (`sh -e`) in
/// an empty folder, with `bins` then `/usr/bin:/bin` as `PATH` and `HOME`
/// inside the folder; whatever it leaves running in the background is
/// stopped after. Panics, with its output, when it fails; returns the
/// folder and its stdout.
pub fn run_opening_block(name: &str, bins: &[&Path]) -> (testkit::TempDir, String) {
    let block = sh_block(&repo_file(name), None).join("\n");
    let dir = testkit::TempDir::new_in(&testkit::scratch_dir(), "page-");
    std::fs::create_dir(dir.path().join("home")).unwrap();
    let mut path: Vec<String> = bins.iter().map(|b| b.display().to_string()).collect();
    path.extend(["/usr/bin".to_owned(), "/bin".to_owned()]);
    // `jobs -p` in the shell itself: in a `$(...)` subshell dash lists none.
    let script = format!("{block}\njobs -p > .jobs\nkill $(cat .jobs) 2>/dev/null || true\nwait");
    let out = testkit::output(
        std::process::Command::new("sh")
            .env_clear()
            .env("PATH", path.join(":"))
            .env("HOME", dir.path().join("home"))
            .current_dir(dir.path())
            .args(["-ec", &script]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the commands of {name} failed:\n{stdout}\n{stderr}");
    (dir, stdout)
}
