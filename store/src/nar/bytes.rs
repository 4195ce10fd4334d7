//! The NAR of a single regular file held in memory. Dumping a file tree
//! (CppNix's `dumpPath`) reads the file system and lives in the local store
//! crate (`local_store::nar_fs`).

use super::{MAGIC, padding_len};

/// The NAR of a single regular file with the given contents, held in memory
/// (CppNix's `dumpString`; text files such as `.drv`s are added this way).
pub fn dump_bytes(contents: &[u8], executable: bool) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
        out.resize(out.len() + padding_len(s.len() as u64), 0);
    }
    let mut out = Vec::with_capacity(contents.len() + 160);
    for token in [MAGIC, b"(", b"type", b"regular"] {
        put(&mut out, token);
    }
    if executable {
        put(&mut out, b"executable");
        put(&mut out, b"");
    }
    for token in [&b"contents"[..], contents, b")"] {
        put(&mut out, token);
    }
    out
}
