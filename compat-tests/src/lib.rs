//! Shared helpers for tests that drive real Nix binaries.
