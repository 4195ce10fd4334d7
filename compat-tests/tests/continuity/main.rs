//! What armitage does beyond CppNix's daemon (the Continuity features),
//! driven by stock Nix clients against `armitage daemon`: fetches of
//! fixed-output builds witnessed ([`witness`]), the fetchers builds use
//! against an HTTPS origin, witnessed and made again from the witness
//! ([`fetchers`], its loopback upstreams in [`origins`]), the witness as a
//! substitutor for URLs, a mirror and with the store's GC ([`replay`]), and the witness page's
//! opening commands as written ([`witness_page`]). A test binary of its own,
//! beside `differential` (armitage next to CppNix) and `faults`.

mod fetchers;
mod origins;
mod replay;
mod s3;
mod s3_page;
mod witness;
mod witness_page;
