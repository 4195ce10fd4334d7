//! The fault suite (docs/faults.md): hostile clients and inputs, kill -9 of
//! the daemon and of `armitage store add`, a full store filesystem, load,
//! garbage collection and concurrent writers racing live clients, the store
//! changing on disk under the daemon, and what untrusted users cannot do.
//! One test binary, a module per fault; the shared helpers are the
//! `compat_tests` library. The side-by-side tests are the `differential`
//! binary.

mod bad_input;
mod concurrent;
mod crash;
mod fault_full_disk;
mod fault_kill;
mod fault_load;
mod gc_safety;
mod store_changes;
mod untrusted_users;
