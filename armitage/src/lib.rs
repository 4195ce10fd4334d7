//! Armitage: the Nix daemon (worker protocol server) on top of the `store`
//! crate's local store. The `armitage` binary is the command line around it.

pub mod build;
pub mod config;
pub mod daemon;
pub mod loopback;
pub mod substitute;
pub mod upload;
pub mod witness;
