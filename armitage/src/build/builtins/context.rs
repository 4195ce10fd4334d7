//! What a builtin runs with: the derivation's environment and the client's
//! protocol version.

use super::messages::arg;

/// What a builtin runs with.
pub struct Context<'a> {
    /// The derivation's environment.
    pub env: &'a [(Vec<u8>, Vec<u8>)],
    /// The protocol minor of the client whose request started the build
    /// (0: unknown, taken as the newest). Some messages changed between
    /// Nix releases; they are worded as the nix-daemon of the client's
    /// version words them.
    pub client_minor: u64,
}

impl Context<'_> {
    /// An attribute of the derivation (an environment variable), as bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.env.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_slice())
    }

    /// An attribute that must be there (CppNix's "attribute '…' missing").
    pub fn attr(&self, name: &str) -> Result<&[u8], String> {
        self.get(name).ok_or_else(|| format!("attribute '{}' missing", arg(name)))
    }

    /// Whether the client speaks the protocol of Nix 2.15 or later
    /// (protocol 1.35), where some builtin messages changed.
    pub fn new_wording(&self) -> bool {
        self.client_minor == 0 || self.client_minor >= 35
    }
}
