//! The reference scanner against the references the real Nix records for a
//! build output, and against the plain definition (a candidate is found iff
//! its hash part is a substring of the stream) under random chunking.

use local_store::nar_fs;
use local_store::nar_fs::scan_path;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use store::hash::{Algorithm, Encoding, Hash};
use store::references::{RefScanner, Tee};
use store::store_path::StorePath;
use testkit::{Nix, NixVersion, TestStore};

fn store_path(full: &str) -> StorePath {
    let base = Path::new(full.trim()).file_name().unwrap().to_str().unwrap();
    StorePath::from_base_name(base).unwrap()
}

/// Inputs whose hash parts appear in the output in different guises.
const DERIVATION: &str = r#"
let
  input = name: builtins.toFile name "contents of ${name}";
  inContents = input "in-contents";
  split = input "split";
  inTarget = input "in-target";
  inName = input "in-name";
  upperCase = input "upper-case";
  unused = input "unused";
in derivation {
  name = "scanned";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  inherit inContents split inTarget inName upperCase unused;
  args = [ "-c" ''
    set -e
    mkdir -p $out/sub
    head -c 100000 /dev/urandom | tr -d 'a-z0-9' > $out/sub/noise
    echo "see $inContents/bin" >> $out/sub/noise
    printf '%s' "$split" | sed 's/./&\n/g' > $out/split
    ln -s $inTarget/x $out/link
    touch "$out/sub/$(basename $inName)"
    echo "$upperCase" | tr a-z A-Z > $out/upper
    ln -s $out/split $out/self
  '' ];
}
"#;

#[test]
fn scan_finds_the_references_nix_records_for_a_build() {
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { continue };
        // Built as the test's own user (see .config/nextest.toml: builds
        // with build users at the same time kill each other's builders).
        let store = TestStore::with_conf("build-users-group =");
        let expr = store.work_dir("drv").join("scanned.nix");
        fs::write(&expr, DERIVATION).unwrap();
        let mut build = store.nix(&nix, "nix-build");
        build.arg(&expr).arg("--no-out-link");
        if version == NixVersion::V2_26 {
            // The unpacked 2.26 cannot start itself as its build hook, and
            // no hook is needed; 2.8 cannot start an empty one.
            build.args(["--option", "build-hook", ""]);
        }
        let out = testkit::run(&mut build);
        let out = out.trim();
        let output = store_path(out);
        let drv = testkit::run(store.nix(&nix, "nix-store").args(["-q", "--deriver", out]));
        let inputs: BTreeSet<StorePath> =
            testkit::run(store.nix(&nix, "nix-store").args(["-q", "--references", drv.trim()]))
                .lines()
                .map(store_path)
                .collect();
        assert_eq!(inputs.len(), 6, "{version}: {inputs:?}");
        let expected: BTreeSet<StorePath> =
            testkit::run(store.nix(&nix, "nix-store").args(["-q", "--references", out]))
                .lines()
                .map(store_path)
                .collect();

        let mut candidates = inputs.clone();
        candidates.insert(output.clone());
        let scan = scan_path(Path::new(out), &candidates, Algorithm::Sha256).unwrap();
        assert_eq!(scan.references, expected, "{version}");
        let names: BTreeSet<&str> = scan.references.iter().map(|p| p.name()).collect();
        assert_eq!(names, BTreeSet::from(["in-contents", "in-target", "in-name", "scanned"]), "{version}");

        let recorded = testkit::run(store.nix(&nix, "nix-store").args(["-q", "--hash", out]));
        assert_eq!(scan.nar_hash, Hash::parse_any(recorded.trim(), None).unwrap(), "{version}");
        let size = testkit::run(store.nix(&nix, "nix-store").args(["-q", "--size", out]));
        assert_eq!(scan.nar_size.to_string(), size.trim(), "{version}");
        assert_eq!(
            scan.nar_hash.to_typed(Encoding::Nix32),
            nar_fs::hash_path(Path::new(out), Algorithm::Sha256).unwrap().0.to_typed(Encoding::Nix32)
        );
    }
}

#[test]
fn a_hash_part_across_the_writers_buffer_boundary_is_found() {
    let tmp = tempfile::Builder::new().prefix("refs-").tempdir_in(testkit::scratch_dir()).unwrap();
    let wanted = StorePath::from_base_name("0123456789abcdfghijklmnpqrsvwxyz-wanted").unwrap();
    let other = StorePath::from_base_name("zyxwvsrqpnmlkjihgfdcba9876543210-other").unwrap();
    // A lone file's contents start at offset 96 of its NAR; put the hash
    // part across the first 1 MiB boundary, and again across the second.
    let mut contents = vec![b'-'; (1 << 20) - 96 - 10];
    contents.extend_from_slice(wanted.hash_part().as_bytes());
    contents.resize((2 << 20) - 96 - 20, b'-');
    contents.extend_from_slice(other.hash_part().as_bytes());
    let file = tmp.path().join("f");
    fs::write(&file, &contents).unwrap();
    let candidates = BTreeSet::from([wanted.clone(), other.clone()]);
    let scan = scan_path(&file, &candidates, Algorithm::Sha256).unwrap();
    assert_eq!(scan.references, candidates);
    assert_eq!(scan.nar_size, 96 + (contents.len() as u64).next_multiple_of(8) + 16);

    fs::write(&file, &contents[..contents.len() - 1]).unwrap();
    let scan = scan_path(&file, &candidates, Algorithm::Sha256).unwrap();
    assert_eq!(scan.references, BTreeSet::from([wanted]));
}

#[test]
fn tee_passes_everything_to_both_writers() {
    let mut tee = Tee::new(Vec::new(), RefScanner::new(["0123456789abcdfghijklmnpqrsvwxyz"]));
    for chunk in [&b"xx0123456789abcdfghij"[..], b"klmnpqrsvwxyz", b"!"] {
        tee.write_all(chunk).unwrap();
    }
    tee.flush().unwrap();
    let (bytes, scanner) = tee.into_inner();
    assert_eq!(bytes, b"xx0123456789abcdfghijklmnpqrsvwxyz!");
    assert_eq!(scanner.found().count(), 1);
}

const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

fn hash_part() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(NIX32), 32)
}

proptest! {
    /// Whatever the data and however it is cut, the scanner finds exactly
    /// the candidates that occur in it.
    #[test]
    fn scanner_finds_exactly_the_candidates_that_occur(
        candidates in proptest::collection::vec(hash_part(), 1..6),
        // Bytes mostly from the alphabet, so runs of nix32 are long and near misses common.
        filler in proptest::collection::vec(prop_oneof![4 => proptest::sample::select(NIX32), 1 => any::<u8>()], 0..400),
        insertions in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0usize..32), 0..6),
        cuts in proptest::collection::vec(1usize..80, 1..20),
    ) {
        let mut data = filler;
        for (which, at, chop) in insertions {
            // Whole candidates, and candidates missing their last `chop` bytes.
            let c = which.get(&candidates);
            let at = at.index(data.len() + 1);
            data.splice(at..at, c[..32 - chop % 3].iter().copied());
        }
        let expected: BTreeSet<Vec<u8>> =
            candidates.iter().filter(|c| data.windows(32).any(|w| w == c.as_slice())).cloned().collect();

        let mut scanner = RefScanner::new(&candidates);
        let mut rest = &data[..];
        for n in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*n).min(rest.len()));
            scanner.update(chunk);
            rest = tail;
        }
        let found: BTreeSet<Vec<u8>> = scanner.found().map(|h| h.to_vec()).collect();
        prop_assert_eq!(found, expected);
    }
}
