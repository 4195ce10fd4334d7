//! S3 credentials, looked for in this order:
//!
//! 1. the credentials file armitage's configuration names
//!    ([`set_credentials_file`]), profile `profile` or `default`;
//! 2. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
//!    `AWS_SESSION_TOKEN`) in the environment, when no profile is named;
//! 3. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//!    `~/.aws/credentials`), profile `profile`, else `AWS_PROFILE`, else
//!    `default`.
//!
//! The file's format is the AWS one: `[name]` sections of
//! `aws_access_key_id = …`, `aws_secret_access_key = …`,
//! `aws_session_token = …`. Secrets never reach a message or a log:
//! [`Credentials`]' `Debug` shows the key id only.

use crate::Error;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

static CONFIGURED_FILE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// The credentials file armitage's configuration names, looked at first
/// by [`Credentials::find`] in this process.
pub fn set_credentials_file(path: Option<PathBuf>) {
    *CONFIGURED_FILE.write().unwrap_or_else(|e| e.into_inner()) = path;
}

impl Credentials {
    /// Looks for credentials as the module docs say.
    pub fn find(profile: Option<&str>) -> Result<Credentials, Error> {
        let configured = CONFIGURED_FILE.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(file) = configured {
            return Credentials::from_file(&file, profile.unwrap_or("default"));
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if profile.is_none()
            && let (Some(access_key_id), Some(secret_access_key)) =
                (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        {
            return Ok(Credentials { access_key_id, secret_access_key, session_token: var("AWS_SESSION_TOKEN") });
        }
        let file = match (var("AWS_SHARED_CREDENTIALS_FILE"), var("HOME")) {
            (Some(file), _) => PathBuf::from(file),
            (None, Some(home)) => Path::new(&home).join(".aws/credentials"),
            (None, None) => return Err(Error::Credentials(NONE_FOUND.into())),
        };
        let profile = profile.map(str::to_owned).or_else(|| var("AWS_PROFILE")).unwrap_or_else(|| "default".into());
        if !file.exists() {
            return Err(Error::Credentials(format!("{NONE_FOUND} ({} does not exist)", file.display())));
        }
        Credentials::from_file(&file, &profile)
    }

    /// The profile `profile` of an AWS credentials file.
    pub fn from_file(path: &Path, profile: &str) -> Result<Credentials, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Credentials(format!("cannot read {}: {e}", path.display())))?;
        Credentials::parse(&text, profile)
            .map_err(|why| Error::Credentials(format!("{}, profile '{profile}': {why}", path.display())))
    }

    fn parse(text: &str, profile: &str) -> Result<Credentials, String> {
        let (mut in_profile, mut found) = (false, false);
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let name = name.trim();
                in_profile = name == profile || name.strip_prefix("profile ").map(str::trim) == Some(profile);
                found |= in_profile;
                continue;
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            if in_profile {
                let value = Some(value.trim().to_owned());
                match key.trim() {
                    "aws_access_key_id" => id = value,
                    "aws_secret_access_key" => secret = value,
                    "aws_session_token" => token = value,
                    _ => {}
                }
            }
        }
        match (found, id, secret) {
            (false, ..) => Err("no such profile".into()),
            (true, Some(access_key_id), Some(secret_access_key)) => {
                Ok(Credentials { access_key_id, secret_access_key, session_token: token })
            }
            _ => Err("it needs both aws_access_key_id and aws_secret_access_key".into()),
        }
    }
}

const NONE_FOUND: &str = "none found: name a credentials file in armitage's configuration, \
    set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write ~/.aws/credentials";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_of_a_credentials_file() {
        let text = "[default]\naws_access_key_id = GK1\naws_secret_access_key = s1\n\n\
                    # comment\n[profile ci]\naws_access_key_id=GK2\naws_secret_access_key=s2\naws_session_token=t\n";
        let default = Credentials::parse(text, "default").unwrap();
        assert_eq!((default.access_key_id.as_str(), default.secret_access_key.as_str()), ("GK1", "s1"));
        let ci = Credentials::parse(text, "ci").unwrap();
        assert_eq!(ci.session_token.as_deref(), Some("t"));
        assert_eq!(Credentials::parse(text, "other").unwrap_err(), "no such profile");
        assert!(Credentials::parse("[x]\naws_access_key_id=a\n", "x").unwrap_err().contains("both"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credentials { access_key_id: "GK1".into(), secret_access_key: "hunter2".into(), session_token: None };
        let shown = format!("{c:?}");
        assert!(shown.contains("GK1") && !shown.contains("hunter2"), "{shown}");
    }
}
