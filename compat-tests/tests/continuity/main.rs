//! What armitage does beyond CppNix's daemon (the Continuity features),
//! driven by stock Nix clients against `armitage daemon`: fetches of
//! fixed-output builds witnessed ([`witness`]). A test binary of its own,
//! beside `differential` (armitage next to CppNix) and `faults`.

mod witness;
