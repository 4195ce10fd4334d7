//! Nix's formats and a local store that CppNix can share.
//!
//! The format modules (`hash`, `store_path`, `content_address`, `nar`,
//! `derivation`, `narinfo`, `signing`, `nix_conf`, `references`) are pure:
//! bytes in, values out, no SQLite and no sockets. `local` is the on-disk
//! store built on top of them, compatible with CppNix 2.8 and 2.26.

pub mod hash;
pub mod content_address;
pub mod store_path;
pub mod derivation;
pub mod narinfo;
pub mod signing;
pub mod nix_conf;
pub mod path_info;
pub mod nar;
pub mod references;
pub mod local;
pub mod worker_protocol;
pub mod realisation;
pub mod backend;
