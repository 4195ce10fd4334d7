//! Nix's formats: bytes in, values out. Hashes, store paths, content
//! addresses, NAR streams, derivations, narinfo, signatures, realisations,
//! the references scanner, `nix.conf`, and the [`backend::Store`] seam every
//! store backend implements.
//!
//! No SQLite, no async runtime, no sockets (`cargo tree -p store` shows it).
//! The few reads of the file system are named where they happen: loading
//! `nix.conf` (and the files it includes) and probing the host
//! ([`nix_conf::Host::detect`]). Backends live in crates of their own beside
//! this one: the local store (`store/local`), the worker protocol
//! (`store/worker-protocol`).

pub mod backend;
pub mod content_address;
pub mod derivation;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod nix_conf;
pub mod path_info;
pub mod realisation;
pub mod references;
pub mod signing;
pub mod store_path;
