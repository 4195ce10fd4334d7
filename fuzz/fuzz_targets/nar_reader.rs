//! The NAR reader on arbitrary bytes, driven to the end, with small limits
//! and with the defaults. Properties: no panic; a failed reader stays
//! failed; it consumes exactly the NAR and nothing after it; the limits
//! hold; and what it accepts is canonical: re-encoding its events gives the
//! bytes it consumed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{BufRead, Read};
use store::nar::{Event, Limits, NarReader};

const SMALL: Limits = Limits { max_depth: 8, max_entries: 64, max_contents_size: 1 << 16, max_name_len: 32, max_target_len: 64 };

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
    out.resize(out.len() + (8 - b.len() % 8) % 8, 0);
}

fn put_all(out: &mut Vec<u8>, items: &[&[u8]]) {
    for i in items {
        put(out, i);
    }
}

fn check(data: &[u8], limits: &Limits) {
    let mut input = data;
    let mut reader = NarReader::with_limits(&mut input, limits.clone());
    let mut out = Vec::new();
    put(&mut out, b"nix-archive-1");
    // Whether every file's contents were read here (else the re-encoding is incomplete).
    let mut complete = true;
    let (mut entries, mut contents_total, mut n) = (0u64, 0u64, 0usize);
    loop {
        let event = match reader.next() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(_) => {
                assert!(reader.next().is_err(), "a failed reader stays failed");
                return;
            }
        };
        n += 1;
        match event {
            Event::Regular { executable, size, mut contents, .. } => {
                entries += 1;
                contents_total += size;
                assert_eq!(contents.remaining(), size);
                put_all(&mut out, &[b"(", b"type", b"regular"]);
                if executable {
                    put_all(&mut out, &[b"executable", b""]);
                }
                put(&mut out, b"contents");
                let mut body = Vec::new();
                // The ways callers read contents: all at once, in small
                // reads, or not at all (the next event skips them).
                match n % 3 {
                    0 => {
                        if contents.copy_to(&mut body).is_err() {
                            assert!(reader.next().is_err());
                            return;
                        }
                    }
                    1 => {
                        let mut chunk = [0u8; 7];
                        loop {
                            match contents.read(&mut chunk) {
                                Ok(0) => break,
                                Ok(k) => body.extend_from_slice(&chunk[..k]),
                                Err(_) => {
                                    assert!(reader.next().is_err());
                                    return;
                                }
                            }
                        }
                    }
                    _ => {
                        let _ = contents.fill_buf();
                        complete = false;
                    }
                }
                if complete {
                    assert_eq!(body.len() as u64, size);
                    put(&mut out, &body);
                }
                put(&mut out, b")");
                if reader.depth() > 0 {
                    put(&mut out, b")");
                }
            }
            Event::Symlink { target } => {
                entries += 1;
                assert!(!target.is_empty() && target.len() <= limits.max_target_len && !target.contains(&0));
                let target = target.to_vec();
                put_all(&mut out, &[b"(", b"type", b"symlink", b"target", &target, b")"]);
                if reader.depth() > 0 {
                    put(&mut out, b")");
                }
            }
            Event::Directory => {
                entries += 1;
                assert!(reader.depth() <= limits.max_depth + 1);
                put_all(&mut out, &[b"(", b"type", b"directory"]);
            }
            Event::Entry { name } => {
                assert!(!name.is_empty() && name.len() <= limits.max_name_len);
                assert!(name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0));
                let name = name.to_vec();
                assert_eq!(reader.path_components().last(), Some(&name[..]));
                put_all(&mut out, &[b"entry", b"(", b"name", &name, b"node"]);
            }
            Event::DirectoryEnd => {
                put(&mut out, b")");
                if reader.depth() > 0 {
                    put(&mut out, b")");
                }
            }
        }
    }
    assert!(reader.is_done());
    assert!(entries <= limits.max_entries);
    assert!(contents_total <= limits.max_contents_size);
    let size = reader.offset() as usize;
    assert_eq!(input.len(), data.len() - size, "the reader consumed exactly the NAR");
    if complete {
        assert!(out == data[..size], "an accepted NAR is canonical");
    }
}

fuzz_target!(|data: &[u8]| {
    for limits in [SMALL, Limits::DEFAULT] {
        check(data, &limits);
    }
});
