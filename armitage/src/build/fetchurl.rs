//! `builtin:fetchurl`, the builder CppNix runs in-process for `<nix/fetchurl.nix>`
//! (src/libstore/builtins/fetchurl.cc): downloads `url` to `$out`, optionally
//! unpacking a NAR (`unpack`) or making it executable (`executable`). The
//! output hash is checked afterwards like any fixed-output derivation's.

/// Runs in the build child with the derivation's environment.
pub fn run(_env: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    Err("builtin:fetchurl is not implemented yet".into())
}
