//! Every trust decision of the daemon, as CppNix makes them
//! (src/nix/unix/daemon.cc for who may connect, src/libstore/daemon.cc for
//! what an untrusted client may do), in named functions the operations call:
//!
//! - who may connect, and as what ([`admit`]: `trusted-users`,
//!   `allowed-users`, the build users group);
//! - the settings a client may set ([`client_options`]);
//! - which operations, or forms of them, untrusted clients are refused
//!   ([`Refusal`]: perm roots, build logs, repairs of builds and of the
//!   store, input-addressed BuildDerivation), and the one refused to all
//!   (ignoring liveness in a GC);
//! - what an untrusted client is shown or believed: censored GC roots
//!   ([`censor_roots`]), no `ultimate` flag ([`keeps_ultimate`]), and
//!   signature checks on what it adds ([`import_checks_signatures`],
//!   [`add_checks_signatures`], [`check_signatures`]).
//!
//! Left open to everyone, as in CppNix: AddSignatures (a signature is
//! checked by whoever relies on it) and repairing an add ([`add_repair`]:
//! the new contents must match the path, or pass the signature check).
//!
//! Refusals keep CppNix's wording, byte for byte.

use super::peer::Peer;
use super::session::{OpError, Trust};
use local_store::users::group_members;
use store::nix_conf::Settings;
use store::path_info::PathInfo;
use store::signing::PublicKeys;
use store::store_path::StoreDir;
use worker_protocol::{BuildMode, ClientOptions};

/// The decision for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Trusted,
    Untrusted,
    Refused,
}

/// Whether the peer matches a `trusted-users`/`allowed-users` list: `*`
/// for everyone, a user name, `@group` for the primary group or a listed
/// member.
pub fn matches(list: &[String], peer: &Peer) -> bool {
    list.iter().any(|entry| {
        if entry == "*" || *entry == peer.user {
            return true;
        }
        match entry.strip_prefix('@') {
            Some(g) => g == peer.group || group_members(g).contains(&peer.user),
            None => false,
        }
    })
}

/// CppNix's rules: trusted if in `trusted-users`; refused if neither trusted
/// nor allowed, or if the peer's primary group is the build users group.
pub fn admit(peer: &Peer, trusted_users: &[String], allowed_users: &[String], build_users_group: &str) -> Admission {
    let trusted = matches(trusted_users, peer);
    if (!trusted && !matches(allowed_users, peer)) || (!build_users_group.is_empty() && peer.group == build_users_group)
    {
        return Admission::Refused;
    }
    if trusted { Admission::Trusted } else { Admission::Untrusted }
}

/// An operation, or a form of it, the client may not perform. Reported and
/// the connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "you are not privileged to create perm roots\n\nhint: you can just do this client-side without special privileges, and probably want to do that instead."
    )]
    PermRoot,
    #[error("you are not allowed to ignore liveness")]
    IgnoreLiveness,
    #[error("you are not privileged to repair paths")]
    RepairStore,
    #[error("repairing is not allowed because you are not in 'trusted-users'")]
    RepairBuild,
    #[error("you are not privileged to build input-addressed derivations")]
    InputAddressedBuild,
    #[error("you are not privileged to add logs")]
    AddLog,
}

impl From<Refusal> for OpError {
    fn from(r: Refusal) -> Self {
        OpError::Failed(r.to_string())
    }
}

fn trusted_only(trust: Trust, refusal: Refusal) -> Result<(), Refusal> {
    if trust == Trust::Trusted { Ok(()) } else { Err(refusal) }
}

/// AddPermRoot: trusted clients only (others can make the link themselves).
pub fn add_perm_root(trust: Trust) -> Result<(), Refusal> {
    trusted_only(trust, Refusal::PermRoot)
}

/// FindRoots: untrusted clients see the roots, not where they are
/// (CppNix `{censored}`).
pub fn censor_roots(trust: Trust) -> bool {
    trust != Trust::Trusted
}

/// CollectGarbage: nobody may ignore liveness.
pub fn collect_garbage(ignore_liveness: bool) -> Result<(), Refusal> {
    if ignore_liveness { Err(Refusal::IgnoreLiveness) } else { Ok(()) }
}

/// VerifyStore: anyone may check; only trusted clients may repair.
pub fn verify_store(trust: Trust, repair: bool) -> Result<(), Refusal> {
    if repair { trusted_only(trust, Refusal::RepairStore) } else { Ok(()) }
}

/// BuildPaths, BuildPathsWithResults: anyone may build or check; only
/// trusted clients may repair.
pub fn build(trust: Trust, mode: BuildMode) -> Result<(), Refusal> {
    if mode == BuildMode::Repair { trusted_only(trust, Refusal::RepairBuild) } else { Ok(()) }
}

/// BuildDerivation: an untrusted client may only build a content-addressed
/// derivation (it sends the derivation itself, so nothing vouches for the
/// outputs of an input-addressed one), and may not repair.
pub fn build_derivation(trust: Trust, content_addressed: bool, mode: BuildMode) -> Result<(), Refusal> {
    if !content_addressed {
        trusted_only(trust, Refusal::InputAddressedBuild)?;
    }
    build(trust, mode)
}

/// AddBuildLog: trusted clients only.
pub fn add_build_log(trust: Trust) -> Result<(), Refusal> {
    trusted_only(trust, Refusal::AddLog)
}

/// ImportPaths: what an untrusted client imports must pass
/// [`check_signatures`].
pub fn import_checks_signatures(trust: Trust) -> bool {
    trust != Trust::Trusted
}

/// AddToStoreNar, AddMultipleToStore: what is added must pass
/// [`check_signatures`] unless a trusted client says not to check.
pub fn add_checks_signatures(trust: Trust, dont_check_sigs: bool) -> bool {
    !(dont_check_sigs && trust == Trust::Trusted)
}

/// Whether a path info's `ultimate` flag (built locally) is kept as the
/// client sent it: an untrusted client's never is.
pub fn keeps_ultimate(trust: Trust) -> bool {
    trust == Trust::Trusted
}

/// Whether an add may repair the path, as the client asked: anyone may,
/// since the new contents must still match the path (AddToStore) or pass
/// the signature check (AddToStoreNar, AddMultipleToStore).
pub fn add_repair(_trust: Trust, repair: bool) -> bool {
    repair
}

/// Whether a path from an untrusted source may be added: with
/// `require-sigs`, it must be content-addressed (its path follows from
/// its content address) or carry a valid signature by a trusted key
/// (CppNix `pathInfoIsUntrusted`).
pub fn check_signatures(
    require_sigs: bool,
    keys: &PublicKeys,
    dir: &StoreDir,
    info: &PathInfo,
) -> local_store::Result<()> {
    if !require_sigs {
        return Ok(());
    }
    Ok(store::backend::trust::require_trusted(dir, info, keys)?)
}

/// Whether an untrusted client may use this substituter: one of the
/// daemon's `trusted-substituters` or `substituters` (with or without a
/// trailing slash).
pub fn is_trusted_substituter(settings: &Settings, url: &str) -> bool {
    let with_slash = format!("{url}/");
    let known = |u: &str| u == url || u == with_slash;
    settings.trusted_substituters.iter().any(|u| known(u)) || settings.substituters.iter().any(|u| known(u))
}

/// Settings CppNix lets untrusted clients set; it compares the names with
/// each setting's main name only, so aliases (`build-timeout`) are refused.
const UNTRUSTED_OK: &[&str] = &["timeout", "max-silent-time", "build-poll-interval", "connect-timeout"];

/// SetOptions (CppNix `ClientSettings::apply`): the options a client's
/// connection gets, and the warnings to send it, in order. The fixed
/// fields always apply. Overrides: trusted clients may set anything;
/// untrusted ones only [`UNTRUSTED_OK`], an empty `builders`, and
/// `substituters` (or `binary-caches`) limited to
/// [`is_trusted_substituter`]; the rest is refused with CppNix's warning.
/// `experimental-features` and `ssh-auth-sock` are ignored silently (and
/// `extra-experimental-features` from a trusted client: experimental
/// features are the daemon's to choose), `plugin-files` always with a
/// warning.
pub fn client_options(trust: Trust, settings: &Settings, options: ClientOptions) -> (ClientOptions, Vec<String>) {
    let trusted = trust == Trust::Trusted;
    let mut accepted = std::collections::BTreeMap::new();
    let mut warnings = Vec::new();
    for (name, value) in &options.overrides {
        match name.as_str() {
            "ssh-auth-sock" | "experimental-features" => {}
            "extra-experimental-features" if trusted => {}
            "plugin-files" => warnings.push(
                "Ignoring the client-specified plugin-files.\nThe client specifying plugins to the daemon never made sense, and was removed in Nix >=2.14.".to_owned(),
            ),
            _ if trusted || UNTRUSTED_OK.contains(&name.as_str()) || (name == "builders" && value.is_empty()) => {
                accepted.insert(name.clone(), value.clone());
            }
            "substituters" | "binary-caches" => {
                let mut kept = Vec::new();
                for s in value.split_whitespace() {
                    if is_trusted_substituter(settings, s) {
                        kept.push(s.to_owned());
                    } else {
                        warnings.push(format!("ignoring untrusted substituter '{s}', you are not a trusted user.\nRun `man nix.conf` for more information on the `substituters` configuration option."));
                    }
                }
                accepted.insert(name.clone(), kept.join(" "));
            }
            _ => warnings.push(format!(
                "ignoring the client-specified setting '{name}', because it is a restricted setting and you are not a trusted user"
            )),
        }
    }
    (ClientOptions { overrides: accepted, ..options }, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Trust::{NotTrusted, Trusted};
    use store::nix_conf::{ConfigEnv, Host};

    fn peer(user: &str, group: &str) -> Peer {
        Peer { pid: None, uid: 1000, gid: 1000, user: user.into(), group: group.into() }
    }

    #[test]
    fn trust_rules() {
        let t = vec!["root".to_owned(), "@wheel".to_owned()];
        let a = vec!["*".to_owned()];
        assert_eq!(admit(&peer("root", "root"), &t, &a, "nixbld"), Admission::Trusted);
        assert_eq!(admit(&peer("alice", "wheel"), &t, &a, "nixbld"), Admission::Trusted);
        assert_eq!(admit(&peer("bob", "users"), &t, &a, "nixbld"), Admission::Untrusted);
        assert_eq!(admit(&peer("bob", "users"), &t, &["carol".to_owned()], "nixbld"), Admission::Refused);
        assert_eq!(admit(&peer("nixbld1", "nixbld"), &t, &a, "nixbld"), Admission::Refused);
        // Even a trusted user is refused in the build users group.
        assert_eq!(admit(&peer("root", "nixbld"), &t, &a, "nixbld"), Admission::Refused);
        // Without a build users group, nobody is refused for their group.
        assert_eq!(admit(&peer("nixbld1", "nixbld"), &t, &a, ""), Admission::Untrusted);
    }

    #[test]
    fn untrusted_clients_are_refused_privileged_operations_in_cppnix_words() {
        assert_eq!(add_perm_root(Trusted), Ok(()));
        assert_eq!(
            add_perm_root(NotTrusted).unwrap_err().to_string(),
            "you are not privileged to create perm roots\n\nhint: you can just do this client-side without special privileges, and probably want to do that instead."
        );
        assert_eq!(add_build_log(Trusted), Ok(()));
        assert_eq!(add_build_log(NotTrusted).unwrap_err().to_string(), "you are not privileged to add logs");
        assert_eq!(verify_store(NotTrusted, false), Ok(()));
        assert_eq!(verify_store(Trusted, true), Ok(()));
        assert_eq!(verify_store(NotTrusted, true).unwrap_err().to_string(), "you are not privileged to repair paths");
        assert!(censor_roots(NotTrusted));
        assert!(!censor_roots(Trusted));
    }

    #[test]
    fn nobody_may_ignore_liveness() {
        assert_eq!(collect_garbage(false), Ok(()));
        assert_eq!(collect_garbage(true).unwrap_err().to_string(), "you are not allowed to ignore liveness");
    }

    #[test]
    fn only_trusted_clients_repair_builds() {
        for mode in [BuildMode::Normal, BuildMode::Check] {
            assert_eq!(build(NotTrusted, mode), Ok(()));
        }
        assert_eq!(build(Trusted, BuildMode::Repair), Ok(()));
        assert_eq!(
            build(NotTrusted, BuildMode::Repair).unwrap_err().to_string(),
            "repairing is not allowed because you are not in 'trusted-users'"
        );
    }

    #[test]
    fn untrusted_build_derivation_is_for_content_addressed_derivations() {
        assert_eq!(build_derivation(NotTrusted, true, BuildMode::Normal), Ok(()));
        assert_eq!(build_derivation(Trusted, false, BuildMode::Normal), Ok(()));
        assert_eq!(build_derivation(Trusted, false, BuildMode::Repair), Ok(()));
        assert_eq!(
            build_derivation(NotTrusted, false, BuildMode::Normal).unwrap_err().to_string(),
            "you are not privileged to build input-addressed derivations"
        );
        // The derivation is looked at before the mode.
        assert_eq!(build_derivation(NotTrusted, false, BuildMode::Repair), Err(Refusal::InputAddressedBuild));
        assert_eq!(build_derivation(NotTrusted, true, BuildMode::Repair), Err(Refusal::RepairBuild));
    }

    #[test]
    fn what_untrusted_clients_add_is_checked() {
        assert!(import_checks_signatures(NotTrusted));
        assert!(!import_checks_signatures(Trusted));
        assert!(add_checks_signatures(NotTrusted, false));
        assert!(add_checks_signatures(NotTrusted, true), "an untrusted client cannot turn the check off");
        assert!(add_checks_signatures(Trusted, false));
        assert!(!add_checks_signatures(Trusted, true));
        assert!(keeps_ultimate(Trusted));
        assert!(!keeps_ultimate(NotTrusted));
        assert!(add_repair(NotTrusted, true));
        assert!(!add_repair(Trusted, false));
    }

    fn info(dir: &StoreDir, path: &str) -> PathInfo {
        let hash =
            store::hash::Hash::parse_any("sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", None).unwrap();
        PathInfo::new(dir.parse_path(path).unwrap(), hash, 1024)
    }

    #[test]
    fn signatures_are_required_of_input_addressed_paths() {
        let dir = StoreDir::default();
        let key = store::signing::SecretKey::generate("test-1").unwrap();
        let mut keys = PublicKeys::new();
        keys.insert(key.to_public_key());
        let mut unsigned = info(&dir, "/nix/store/8fx8g9z51y79wk98hj0bgxa58p186zsi-hello");
        assert!(check_signatures(false, &keys, &dir, &unsigned).is_ok());
        assert_eq!(
            check_signatures(true, &keys, &dir, &unsigned).unwrap_err().to_string(),
            "cannot add path '/nix/store/8fx8g9z51y79wk98hj0bgxa58p186zsi-hello' because it lacks a signature by a trusted key"
        );
        let fp = store::signing::fingerprint(
            &dir,
            &unsigned.path,
            &unsigned.nar_hash,
            unsigned.nar_size,
            &unsigned.references,
        )
        .unwrap();
        unsigned.sigs.insert(key.sign(fp.as_bytes()).to_string());
        assert!(check_signatures(true, &keys, &dir, &unsigned).is_ok());
        // A signature by a key the daemon does not trust counts for nothing.
        assert!(check_signatures(true, &PublicKeys::new(), &dir, &unsigned).is_err());
    }

    #[test]
    fn a_content_addressed_path_needs_no_signature() {
        let dir = StoreDir::default();
        let ca = store::content_address::ContentAddress::parse(
            "text:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
        )
        .unwrap();
        let path = dir
            .make_path_from_ca(
                "hello",
                &ca,
                &store::store_path::StoreReferences { others: Default::default(), self_ref: false },
            )
            .unwrap();
        let mut info = info(&dir, &dir.display(&path));
        info.ca = Some(ca);
        assert!(check_signatures(true, &PublicKeys::new(), &dir, &info).is_ok());
        // A content address that does not give the path proves nothing.
        let mut other = self::info(&dir, "/nix/store/8fx8g9z51y79wk98hj0bgxa58p186zsi-hello");
        other.ca = Some(ca);
        assert!(check_signatures(true, &PublicKeys::new(), &dir, &other).is_err());
    }

    fn settings() -> Settings {
        let mut s = Settings::new(&Host::detect(), &ConfigEnv::default());
        s.substituters = vec!["https://cache.example.org".into()];
        s.trusted_substituters = ["https://trusted.example.org/".to_owned()].into();
        s
    }

    #[test]
    fn trusted_substituters_match_with_or_without_a_slash() {
        let s = settings();
        assert!(is_trusted_substituter(&s, "https://cache.example.org"));
        assert!(is_trusted_substituter(&s, "https://trusted.example.org"));
        assert!(!is_trusted_substituter(&s, "https://other.example.org"));
    }

    fn options(overrides: &[(&str, &str)]) -> ClientOptions {
        ClientOptions {
            verbosity: 5,
            overrides: overrides.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn untrusted_clients_set_only_harmless_settings() {
        let asked = options(&[
            ("timeout", "10"),
            ("build-timeout", "10"),
            ("builders", ""),
            ("sandbox", "false"),
            ("substituters", "https://cache.example.org https://evil.example.org"),
            ("experimental-features", "flakes"),
            ("plugin-files", "/x.so"),
        ]);
        let (got, warnings) = client_options(NotTrusted, &settings(), asked);
        assert_eq!(got.verbosity, 5, "the fixed fields apply");
        let kept: Vec<(&str, &str)> = got.overrides.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(kept, [("builders", ""), ("substituters", "https://cache.example.org"), ("timeout", "10")]);
        assert_eq!(
            warnings,
            [
                "ignoring the client-specified setting 'build-timeout', because it is a restricted setting and you are not a trusted user",
                "Ignoring the client-specified plugin-files.\nThe client specifying plugins to the daemon never made sense, and was removed in Nix >=2.14.",
                "ignoring the client-specified setting 'sandbox', because it is a restricted setting and you are not a trusted user",
                "ignoring untrusted substituter 'https://evil.example.org', you are not a trusted user.\nRun `man nix.conf` for more information on the `substituters` configuration option.",
            ]
        );
        let (got, warnings) = client_options(
            NotTrusted,
            &settings(),
            options(&[("builders", "ssh://x"), ("extra-experimental-features", "x")]),
        );
        assert!(got.overrides.is_empty());
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn trusted_clients_set_anything_but_features_and_the_agent() {
        let asked = options(&[
            ("sandbox", "false"),
            ("builders", "ssh://x"),
            ("substituters", "https://evil.example.org"),
            ("extra-experimental-features", "flakes"),
            ("ssh-auth-sock", "/tmp/agent"),
            ("no-such-setting", "1"),
        ]);
        let (got, warnings) = client_options(Trusted, &settings(), asked);
        let kept: Vec<&str> = got.overrides.keys().map(String::as_str).collect();
        assert_eq!(kept, ["builders", "no-such-setting", "sandbox", "substituters"]);
        assert_eq!(got.overrides["substituters"], "https://evil.example.org");
        assert!(warnings.is_empty());
    }
}
