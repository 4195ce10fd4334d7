//! What the witness adds to a fixed-output build: a proxy listener of its
//! own (records name the derivation) — in a sandbox under `network =
//! witnessed`, inside the network namespace the build then runs in
//! (crate::witness::netns) —, the proxy variables pointing at it,
//! and the CA bundle that trusts the witness CA (first) mounted where
//! CppNix mounts `ssl-cert-file` in fixed-output sandboxes, with the
//! variables nixpkgs' fetchers read it from pointing at it.
//!
//! The variables are set whether or not the derivation lists them in
//! `impureEnvVars`, and override what the derivation sets (nixpkgs'
//! fetchurl points `SSL_CERT_FILE` at a missing file when the hash is
//! known, so that curl skips verification: with the bundle there, it
//! verifies against the witness CA instead).
//!
//! The witness also keeps what a fixed-output build made, and makes it
//! again without the builder (substitutor mode, output level):
//!
//! - [`keep`]: once a fixed-output build's output is registered, its
//!   bytes (flat) or its NAR (recursive) go to the witness CAS, checked
//!   against the declared hash (with sha256 the object's name is that
//!   hash) and indexed by it ([`Archive::put_output`]); `text` outputs are
//!   not kept. A failure is a warning in the daemon's log: the build has
//!   succeeded whatever happens here.
//! - [`import`]: when a fixed-output derivation's output is missing, before
//!   its inputs are realised or substitutes asked for (the derivation goal
//!   calls it), the witness's object for the declared hash
//!   ([`Archive::output_for`]) is added to the store as the
//!   content-addressed path it is (the store checks the NAR hash and the
//!   content address, and takes the output's lock); the builder does not
//!   run. The object is read through the CAS's verifying reader: a
//!   tampered object is refused, named in a warning to the client and in
//!   the log, and the build goes on as usual.
//!
//! Modules: [`fetch`] (the listener, variables and bundle of a build),
//! [`output`] (which outputs the witness holds, and the errors of keeping
//! and copying them), [`keep`], [`import`].

mod fetch;
mod import;
mod keep;
mod output;
#[cfg(test)]
mod tests;

pub use fetch::begin;
pub use import::import;
pub use keep::keep;
pub use output::may_hold;
