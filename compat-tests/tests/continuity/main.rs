//! What armitage does beyond CppNix's daemon (the Continuity features),
//! driven by stock Nix clients against `armitage daemon`: fetches of
//! fixed-output builds witnessed ([`witness`]), and the witness page's
//! opening commands as written ([`witness_page`]). A test binary of its own,
//! beside `differential` (armitage next to CppNix) and `faults`.

mod witness;
mod witness_page;
