//! Building derivations: the scheduler (one goal per derivation across all
//! clients, a global pool of build slots), the build environment, running
//! builders (in the sandbox or not), their logs, and registering outputs.

pub mod child;
pub mod fetchurl;
pub mod sandbox;
