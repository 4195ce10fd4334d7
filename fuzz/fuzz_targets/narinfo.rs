//! The `.narinfo` parser on arbitrary text. Properties: no panic, and a
//! narinfo that parses prints as text that parses back to the same value
//! and prints the same again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use store::narinfo::NarInfo;
use store::store_path::StoreDir;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = StoreDir::default();
    let Ok(info) = NarInfo::parse(&dir, text, "fuzz") else { return };
    let printed = info.to_text(&dir);
    let again = NarInfo::parse(&dir, &printed, "printed").expect("a printed narinfo parses");
    assert_eq!(again, info, "print then parse gives the same narinfo:\n{printed}");
    assert_eq!(again.to_text(&dir), printed);
});
