//! armitage beside CppNix (2.8 and 2.26), side by side or on one store: every
//! stock command against both daemons on twin stores with the answers
//! compared, protocol replies byte for byte, one store shared or switched
//! between the two, and the README's lines as written. One test binary, a
//! module per topic; the shared helpers are the `compat_tests` library.
//! The fault and adversarial tests are the `faults` binary.

mod builds;
mod daemon_commands;
mod daemon_modes;
mod daemon_smoke;
mod drop_in;
mod interop;
mod ops_differential;
mod profiles;
mod readme;
mod remote_build;
mod substitution;
mod switching;
