//! `nar::unpack` of arbitrary bytes into a fresh temporary directory, with
//! small limits. Properties: no panic; on failure nothing is left at the
//! target; on success nothing is created outside it, the tree stays within
//! the limits, and dumping it gives back exactly the bytes consumed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use local_store::nar_fs::{dump, unpack};
use store::nar::Limits;

const SMALL: Limits = Limits { max_depth: 6, max_entries: 32, max_contents_size: 1 << 16, max_name_len: 32, max_target_len: 64 };

fn scratch() -> tempfile::TempDir {
    // Memory-backed when there is a /dev/shm: unpacking is mostly mkdir and create.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::Builder::new().prefix("armitage-fuzz-").tempdir_in(shm) {
            return t;
        }
    }
    tempfile::Builder::new().prefix("armitage-fuzz-").tempdir().expect("a temporary directory")
}

fuzz_target!(|data: &[u8]| {
    let tmp = scratch();
    let target = tmp.path().join("out");
    let mut input = data;
    match unpack(&mut input, &target, &SMALL) {
        Ok(stats) => {
            assert!(stats.entries <= SMALL.max_entries);
            assert!(stats.bytes <= SMALL.max_contents_size);
            assert_eq!(stats.nar_size as usize, data.len() - input.len());
            let mut again = Vec::new();
            dump(&target, &mut again).expect("dump what was unpacked");
            assert!(again == data[..stats.nar_size as usize], "unpacking then dumping gives the NAR back");
        }
        Err(_) => {
            assert!(std::fs::symlink_metadata(&target).is_err(), "a failed unpack leaves nothing behind");
        }
    }
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| n == "out"), "unpack created {names:?} next to its target");
});
