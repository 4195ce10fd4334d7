//! The NAR of a single regular file: held in memory, or its framing alone
//! for contents streamed between. Dumping a file tree (CppNix's
//! `dumpPath`) reads the file system and lives in the local store crate
//! (`local_store::nar_fs`).

use super::{MAGIC, padding_len};

fn put(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len() + padding_len(s.len() as u64), 0);
}

/// The NAR of a single regular file with the given contents, held in memory
/// (CppNix's `dumpString`; text files such as `.drv`s are added this way).
pub fn dump_bytes(contents: &[u8], executable: bool) -> Vec<u8> {
    let (head, tail) = file_frame(contents.len() as u64, executable);
    let mut out = Vec::with_capacity(head.len() + contents.len() + tail.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(contents);
    out.extend_from_slice(&tail);
    out
}

/// The NAR of a single regular file of `size` bytes without its contents:
/// `head`, then the contents, then `tail` (the contents' padding and the
/// closing tokens) are the NAR, so that a file's NAR can be streamed.
pub fn file_frame(size: u64, executable: bool) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(160);
    for token in [MAGIC, b"(", b"type", b"regular"] {
        put(&mut head, token);
    }
    if executable {
        put(&mut head, b"executable");
        put(&mut head, b"");
    }
    put(&mut head, b"contents");
    head.extend_from_slice(&size.to_le_bytes());
    let mut tail = vec![0u8; padding_len(size)];
    put(&mut tail, b")");
    (head, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_around_the_contents_is_the_nar() {
        for contents in [&b""[..], b"a", b"12345678", b"123456789"] {
            for executable in [false, true] {
                let (head, tail) = file_frame(contents.len() as u64, executable);
                let framed = [head, contents.to_vec(), tail].concat();
                let mut reader = crate::nar::NarReader::new(&framed[..]);
                reader.skip_to_end().unwrap();
                assert_eq!(reader.offset(), framed.len() as u64);
                assert_eq!(framed, dump_bytes(contents, executable));
            }
        }
    }
}
