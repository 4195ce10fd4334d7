//! `SetOptions`: what a client may change for its own connection (CppNix
//! `ClientSettings::apply`). The fixed fields always apply to the
//! connection. Overrides: trusted clients may set anything (unknown names
//! are ignored); untrusted ones only the settings CppNix 2.26 names
//! exactly (`timeout`, `max-silent-time`, `build-poll-interval`,
//! `connect-timeout`; aliases such as `build-timeout` are refused, as there),
//! an empty `builders`, and `substituters` (or `binary-caches`) limited to
//! the daemon's trusted ones; the rest is refused with CppNix's warning.
//! `experimental-features` and `ssh-auth-sock` are ignored silently,
//! `plugin-files` always with a warning.

use super::connection::{Connection, OpResult};
use worker_protocol::ClientOptions;
use tokio::io::{AsyncRead, AsyncWrite};

/// CppNix compares the names with each setting's main name only.
const UNTRUSTED_OK: &[&str] = &["timeout", "max-silent-time", "build-poll-interval", "connect-timeout"];

pub async fn apply<R, W>(c: &mut Connection<R, W>, options: ClientOptions) -> OpResult
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let trusted = c.trusted();
    let mut accepted = std::collections::BTreeMap::new();
    for (name, value) in &options.overrides {
        match name.as_str() {
            "ssh-auth-sock" | "experimental-features" => {}
            // Trusted: CppNix would apply it; experimental features are the daemon's to choose.
            "extra-experimental-features" if trusted => {}
            "plugin-files" => {
                c.warn("Ignoring the client-specified plugin-files.\nThe client specifying plugins to the daemon never made sense, and was removed in Nix >=2.14.").await?;
            }
            _ if trusted || UNTRUSTED_OK.contains(&name.as_str()) || (name == "builders" && value.is_empty()) => {
                accepted.insert(name.clone(), value.clone());
            }
            "substituters" | "binary-caches" => {
                let mut kept = Vec::new();
                for s in value.split_whitespace() {
                    if c.daemon.is_trusted_substituter(s) {
                        kept.push(s.to_owned());
                    } else {
                        c.warn(&format!("ignoring untrusted substituter '{s}', you are not a trusted user.\nRun `man nix.conf` for more information on the `substituters` configuration option.")).await?;
                    }
                }
                accepted.insert(name.clone(), kept.join(" "));
            }
            _ => {
                c.warn(&format!(
                    "ignoring the client-specified setting '{name}', because it is a restricted setting and you are not a trusted user"
                ))
                .await?;
            }
        }
    }
    c.options = ClientOptions { overrides: accepted, ..options };
    Ok(())
}
