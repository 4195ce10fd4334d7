//! The witness proxy: every fixed-output fetch of a build goes through it.
//! It is an HTTP/1.1 forward proxy that intercepts CONNECT with a
//! per-daemon CA, records one [`record::Record`] per exchange and keeps the
//! response bodies in a content-addressed store ([`cas`]), so that a build
//! can run again when its upstream is gone.
//!
//! Modules, leaves first: [`cas`] (objects by sha256: the trait, the local
//! directory backend), [`record`] (what one exchange leaves behind, its
//! canonical CBOR and its id), [`redact`] (credentials never stored),
//! [`sink`] (what the proxy hands what it sees to), [`archive`] (the witness
//! store on disk: `cas/`, `traces/`, the indexes; a [`sink::Witness`]),
//! [`transfer`] (witnesses copied between archives, checked first),
//! [`ca`] (the witness CA and its per-host leaves), `object_body` (a CAS
//! object streamed as a response body, checked as it passes), [`proxy`]
//! (the server; it answers from the archive when the upstream fails or it
//! is offline), [`mirror`] (the archive as a hashed mirror for CppNix's
//! `hashed-mirrors`).
//!
//! Research and sources: the team's witness research notes (CppNix's FOD
//! network, nixpkgs' fetchers, the crates compared).

pub mod archive;
pub mod ca;
pub mod cas;
pub mod mirror;
mod object_body;
pub mod proxy;
pub mod record;
pub mod redact;
pub mod sink;
pub mod transfer;
