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
