//! The experimental features `experimental-features` can name: CppNix
//! 2.26's list, which contains 2.8's (src/libutil/experimental-features.cc).

use std::fmt;
use std::str::FromStr;

macro_rules! features {
    ($($variant:ident = $name:literal,)*) => {
        /// An experimental feature of CppNix.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ExperimentalFeature {
            $($variant,)*
        }

        impl ExperimentalFeature {
            pub const ALL: &[ExperimentalFeature] = &[$(Self::$variant,)*];

            /// The name used in `nix.conf`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

features! {
    CaDerivations = "ca-derivations",
    ImpureDerivations = "impure-derivations",
    Flakes = "flakes",
    FetchTree = "fetch-tree",
    NixCommand = "nix-command",
    GitHashing = "git-hashing",
    RecursiveNix = "recursive-nix",
    NoUrlLiterals = "no-url-literals",
    FetchClosure = "fetch-closure",
    AutoAllocateUids = "auto-allocate-uids",
    Cgroups = "cgroups",
    DaemonTrustOverride = "daemon-trust-override",
    DynamicDerivations = "dynamic-derivations",
    ParseTomlTimestamps = "parse-toml-timestamps",
    ReadOnlyLocalStore = "read-only-local-store",
    LocalOverlayStore = "local-overlay-store",
    ConfigurableImpureEnv = "configurable-impure-env",
    MountedSshStore = "mounted-ssh-store",
    VerifiedFetches = "verified-fetches",
    PipeOperators = "pipe-operators",
}

impl fmt::Display for ExperimentalFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error is the unknown name.
impl FromStr for ExperimentalFeature {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.iter().copied().find(|f| f.name() == s).ok_or_else(|| s.to_owned())
    }
}
