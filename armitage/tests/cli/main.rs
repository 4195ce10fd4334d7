//! The `armitage` CLI against its real Nix counterparts: each command is run
//! by both tools on the same inputs (or the same store) and the outputs are
//! compared. Tests skip (with a message) when a Nix is missing, unless Nix is
//! required (see `testkit`).

mod add;
mod derivation;
mod errors;
mod gc;
mod hash;
mod key;
mod nar;
mod optimise;
mod path_info;
mod support;
mod verify;
mod witness;
mod witness_proxy_command;
mod witness_transfer;
