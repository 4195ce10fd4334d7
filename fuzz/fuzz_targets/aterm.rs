//! The `.drv` ATerm parser on arbitrary bytes. Properties: no panic, and a
//! derivation that parses and prints parses back to itself (when none of
//! the strings printed unescaped holds `"` or `\`, which CppNix cannot
//! round-trip either; see store/src/derivation/aterm.rs).

#![no_main]

use libfuzzer_sys::fuzz_target;
use store::derivation::{Derivation, InputOutputs};
use store::store_path::StoreDir;

fn plain(s: &str) -> bool {
    !s.contains('"') && !s.contains('\\')
}

fn plain_node(node: &InputOutputs) -> bool {
    node.outputs.iter().all(|o| plain(o)) && node.dynamic_outputs.iter().all(|(k, v)| plain(k) && plain_node(v))
}

fuzz_target!(|data: &[u8]| {
    let dir = StoreDir::default();
    let Ok(drv) = Derivation::parse(&dir, data, "fuzz") else { return };
    let Ok(text) = drv.to_aterm(&dir) else { return };
    if !(plain(&drv.system) && drv.outputs.keys().all(|k| plain(k)) && drv.input_drvs.values().all(plain_node)) {
        return;
    }
    let again = Derivation::parse(&dir, &text, "fuzz").expect("a printed derivation parses");
    assert_eq!(again, drv, "print then parse gives the same derivation");
    assert!(again.to_aterm(&dir).expect("prints again") == text);
});
