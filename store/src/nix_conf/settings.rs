//! The typed settings a daemon honours, with CppNix's names, aliases and
//! defaults (src/libstore/globals.hh, filetransfer.hh, and for
//! `trusted-users`/`allowed-users` src/nix/unix/daemon.cc in 2.26).
//!
//! Where 2.8 and 2.26 differ we follow 2.26: `max-free` defaults to
//! `i64::MAX`, `ignored-acls` includes `security.csm`, `system-features`
//! includes `uid-range` on Linux, integers take `K`/`M`/`G`/`T` suffixes and
//! `flakes` implies `fetch-tree`. `sandbox-paths` starts as
//! [`Host::sandbox_paths`]: CppNix puts its build-time `SANDBOX_SHELL` there;
//! a daemon puts the shell it found.
//!
//! Names CppNix knows but a daemon does not use (evaluator, flake and
//! client-side settings) are accepted without a warning and kept as text in
//! [`Settings::ignored`]; any other name is an unknown setting.

use super::env::ConfigEnv;
use super::features::ExperimentalFeature;
use super::host::Host;
use super::value::{Context, SandboxMode, SettingError, SettingValue, parse_max_jobs};
use super::warning::Warning;
use std::collections::{BTreeMap, BTreeSet};

/// The public key of cache.nixos.org, trusted by default.
pub const CACHE_NIXOS_ORG_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// A setting's name, aliases and properties.
#[derive(Debug, Clone, Copy)]
pub struct SettingInfo {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Whether `extra-NAME` appends to it.
    pub appendable: bool,
    /// The experimental feature without which CppNix ignores it.
    pub requires: Option<ExperimentalFeature>,
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $name:literal [$($alias:literal),*]
            $(, parse = $parse:path)? $(, requires = $feature:ident)?;
    )*) => {
        /// The daemon's settings. Fields are public for reading and for
        /// tests; [`Settings::set`] is the way to apply text.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            /// Settings CppNix knows that we accept but do not use, with
            /// their last value (appends joined by a space).
            pub ignored: BTreeMap<String, String>,
            /// Names nobody knows, with their last value.
            pub unknown: BTreeMap<String, String>,
            /// What `max-jobs = auto` means.
            auto_jobs: u32,
        }

        /// Every typed setting.
        pub const SETTINGS: &[SettingInfo] = &[$(
            SettingInfo {
                name: $name,
                aliases: &[$($alias),*],
                appendable: <$ty as SettingValue>::APPENDABLE,
                requires: settings!(@feature $($feature)?),
            },
        )*];

        impl Settings {
            /// Parses `text` into the typed setting `name` (canonical; the
            /// caller looked it up, other names are ignored).
            fn assign(&mut self, name: &str, text: &str, append: bool, cx: &mut Context<'_>) -> Result<(), SettingError> {
                match name {
                    $($name => {
                        let value: $ty = settings!(@parse $ty $(, $parse)?)(name, text, cx)?;
                        if append { SettingValue::append(&mut self.$field, value) } else { self.$field = value }
                    })*
                    _ => {}
                }
                Ok(())
            }

            /// The value of a typed setting as `nix show-config` prints it.
            pub fn render(&self, name: &str) -> Option<String> {
                match lookup(name)?.name {
                    $($name => Some(self.$field.render()),)*
                    _ => None,
                }
            }
        }
    };
    (@feature) => { None };
    (@feature $feature:ident) => { Some(ExperimentalFeature::$feature) };
    (@parse $ty:ty) => { <$ty as SettingValue>::parse };
    (@parse $ty:ty, $parse:path) => { $parse };
}

settings! {
    /// `store`: the store to serve (`auto`, `local`, `daemon`, a URL).
    store: String = "store" [];
    /// Users (and `@groups`) with extra rights over the daemon.
    trusted_users: Vec<String> = "trusted-users" [];
    /// Users (and `@groups`, `*`) who may connect at all.
    allowed_users: Vec<String> = "allowed-users" [];
    substituters: Vec<String> = "substituters" ["binary-caches"];
    /// Substituters untrusted users may ask for.
    trusted_substituters: BTreeSet<String> = "trusted-substituters" ["trusted-binary-caches"];
    /// `name:base64` keys whose signatures make a path trusted.
    trusted_public_keys: Vec<String> = "trusted-public-keys" ["binary-cache-public-keys"];
    /// Whether non-content-addressed paths from elsewhere need a signature.
    require_sigs: bool = "require-sigs" [];
    /// Files holding secret keys to sign locally built paths with.
    secret_key_files: Vec<String> = "secret-key-files" [];
    substitute: bool = "substitute" ["build-use-substitutes"];
    /// Build from source when substitution fails.
    fallback: bool = "fallback" ["build-fallback"];
    /// Remote build machines, or `@file` naming a machines file.
    builders: String = "builders" [];
    builders_use_substitutes: bool = "builders-use-substitutes" [];
    max_substitution_jobs: u32 = "max-substitution-jobs" ["substitution-max-jobs"];
    /// Seconds a "path not in cache" answer is remembered.
    narinfo_cache_negative_ttl: u32 = "narinfo-cache-negative-ttl" [];
    /// Seconds a "path in cache" answer is remembered.
    narinfo_cache_positive_ttl: u32 = "narinfo-cache-positive-ttl" [];
    /// Seconds to establish a connection to a substituter (0: no limit).
    connect_timeout: u64 = "connect-timeout" [];
    /// Parallel TCP connections for downloads (0: no limit).
    http_connections: u64 = "http-connections" ["binary-caches-parallel-connections"];
    stalled_download_timeout: u64 = "stalled-download-timeout" [];
    download_attempts: u32 = "download-attempts" [];
    netrc_file: String = "netrc-file" [];
    sandbox: SandboxMode = "sandbox" ["build-use-chroot", "build-use-sandbox"];
    /// Paths bind-mounted into sandboxes (`target=source`, `path?` optional).
    sandbox_paths: BTreeSet<String> = "sandbox-paths" ["build-chroot-dirs", "build-sandbox-paths"];
    /// Build unsandboxed when the kernel cannot sandbox.
    sandbox_fallback: bool = "sandbox-fallback" [];
    sandbox_build_dir: String = "sandbox-build-dir" [];
    sandbox_dev_shm_size: String = "sandbox-dev-shm-size" [];
    /// The group whose members are the build users (empty: build as self).
    build_users_group: String = "build-users-group" [];
    auto_allocate_uids: bool = "auto-allocate-uids" [], requires = AutoAllocateUids;
    start_id: u32 = "start-id" [];
    id_count: u32 = "id-count" [];
    use_cgroups: bool = "use-cgroups" [];
    filter_syscalls: bool = "filter-syscalls" [];
    allow_new_privileges: bool = "allow-new-privileges" [];
    impersonate_linux_26: bool = "impersonate-linux-26" ["build-impersonate-linux-26"];
    require_drop_supplementary_groups: bool = "require-drop-supplementary-groups" [];
    /// Where build directories are made (unset: `TMPDIR`).
    build_dir: Option<String> = "build-dir" [];
    max_jobs: u32 = "max-jobs" ["build-max-jobs"], parse = parse_max_jobs;
    /// `NIX_BUILD_CORES` given to builders.
    cores: u32 = "cores" ["build-cores"];
    /// Seconds a build may run (0: no limit).
    timeout: i64 = "timeout" ["build-timeout"];
    /// Seconds a build may go without output (0: no limit).
    max_silent_time: i64 = "max-silent-time" ["build-max-silent-time"];
    keep_failed: bool = "keep-failed" [];
    keep_going: bool = "keep-going" [];
    keep_build_log: bool = "keep-build-log" ["build-keep-log"];
    compress_build_log: bool = "compress-build-log" ["build-compress-log"];
    max_build_log_size: u64 = "max-build-log-size" ["build-max-log-size"];
    pre_build_hook: String = "pre-build-hook" [];
    post_build_hook: String = "post-build-hook" [];
    /// The platform builds run for by default.
    system: String = "system" [];
    extra_platforms: BTreeSet<String> = "extra-platforms" [];
    system_features: BTreeSet<String> = "system-features" [];
    keep_outputs: bool = "keep-outputs" ["gc-keep-outputs"];
    keep_derivations: bool = "keep-derivations" ["gc-keep-derivations"];
    keep_env_derivations: bool = "keep-env-derivations" ["env-keep-derivations"];
    /// Bytes kept in `reserved` so the collector can run on a full disk.
    gc_reserved_space: u64 = "gc-reserved-space" [];
    min_free: u64 = "min-free" [];
    max_free: u64 = "max-free" [];
    min_free_check_interval: u64 = "min-free-check-interval" [];
    auto_optimise_store: bool = "auto-optimise-store" [];
    fsync_metadata: bool = "fsync-metadata" [];
    fsync_store_paths: bool = "fsync-store-paths" [];
    use_sqlite_wal: bool = "use-sqlite-wal" [];
    sync_before_registering: bool = "sync-before-registering" [];
    allow_symlinked_store: bool = "allow-symlinked-store" [];
    ignored_acls: BTreeSet<String> = "ignored-acls" [];
    experimental_features: BTreeSet<ExperimentalFeature> = "experimental-features" [];
}

/// Setting names (and aliases) CppNix 2.8 or 2.26 knows that have no field
/// here.
const KNOWN_UNTYPED: &[&str] = &[
    "abort-on-warn",
    "accept-flake-config",
    "access-tokens",
    "allow-dirty",
    "allow-dirty-locks",
    "allow-import-from-derivation",
    "allow-unsafe-native-code-during-evaluation",
    "allowed-impure-host-deps",
    "allowed-uris",
    "always-allow-substitutes",
    "bash-prompt",
    "bash-prompt-prefix",
    "bash-prompt-suffix",
    "build-hook",
    "build-poll-interval",
    "build-repeat",
    "commit-lock-file-summary",
    "commit-lockfile-summary",
    "darwin-log-sandbox-violations",
    "debugger-on-trace",
    "debugger-on-warn",
    "diff-hook",
    "download-buffer-size",
    "download-speed",
    "enforce-determinism",
    "eval-cache",
    "eval-system",
    "flake-registry",
    "hashed-mirrors",
    "http2",
    "ignore-try",
    "impure-env",
    "log-lines",
    "max-call-depth",
    "nar-buffer-size",
    "nix-path",
    "nix-shell-always-looks-for-shell-nix",
    "nix-shell-shebang-arguments-relative-to-script",
    "plugin-files",
    "preallocate-contents",
    "print-missing",
    "pure-eval",
    "repeat",
    "restrict-eval",
    "run-diff-hook",
    "show-trace",
    "ssl-cert-file",
    "tarball-ttl",
    "trace-function-calls",
    "trace-verbose",
    "trust-tarballs-from-git-forges",
    "upgrade-nix-store-path-url",
    "use-case-hack",
    "use-registries",
    "use-xdg-base-directories",
    "user-agent-suffix",
    "warn-dirty",
    "warn-large-path-threshold",
];

fn strings<C: FromIterator<String>>(items: &[&str]) -> C {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Finds a typed setting by name or alias.
pub fn lookup(name: &str) -> Option<&'static SettingInfo> {
    SETTINGS.iter().find(|s| s.name == name || s.aliases.contains(&name))
}

/// Whether CppNix knows `name` (a typed setting, an alias or one we ignore).
pub fn is_known(name: &str) -> bool {
    lookup(name).is_some() || KNOWN_UNTYPED.contains(&name)
}

impl Settings {
    /// CppNix's defaults on `host`, with `env` supplying `NIX_REMOTE` (the
    /// default `store`), the conf dir (`builders`, `netrc-file`),
    /// `NIX_IGNORE_SYMLINK_STORE` and `NIX_REMOTE_SYSTEMS`.
    pub fn new(host: &Host, env: &ConfigEnv) -> Settings {
        let conf_dir = env.conf_dir.display();
        let builders = match &env.remote_systems {
            Some(files) => {
                files.split(':').filter(|f| !f.is_empty()).map(|f| format!("@{f}")).collect::<Vec<_>>().join("\n")
            }
            None => format!("@{conf_dir}/machines"),
        };
        Settings {
            store: env.nix_remote.clone().unwrap_or_else(|| "auto".to_owned()),
            trusted_users: strings(&["root"]),
            allowed_users: strings(&["*"]),
            substituters: strings(&["https://cache.nixos.org/"]),
            trusted_substituters: BTreeSet::new(),
            trusted_public_keys: strings(&[CACHE_NIXOS_ORG_KEY]),
            require_sigs: true,
            secret_key_files: Vec::new(),
            substitute: true,
            fallback: false,
            builders,
            builders_use_substitutes: false,
            max_substitution_jobs: 16,
            narinfo_cache_negative_ttl: 3600,
            narinfo_cache_positive_ttl: 30 * 24 * 3600,
            connect_timeout: 0,
            http_connections: 25,
            stalled_download_timeout: 300,
            download_attempts: 5,
            netrc_file: format!("{conf_dir}/netrc"),
            sandbox: if cfg!(target_os = "linux") { SandboxMode::Enabled } else { SandboxMode::Disabled },
            sandbox_paths: host.sandbox_paths.clone(),
            sandbox_fallback: true,
            sandbox_build_dir: "/build".to_owned(),
            sandbox_dev_shm_size: "50%".to_owned(),
            build_users_group: if host.is_root { "nixbld".to_owned() } else { String::new() },
            auto_allocate_uids: false,
            start_id: if cfg!(target_os = "linux") { 0x3400_0000 } else { 56930 },
            id_count: if cfg!(target_os = "linux") { (1 << 16) * 128 } else { 128 },
            use_cgroups: false,
            filter_syscalls: true,
            allow_new_privileges: false,
            impersonate_linux_26: false,
            require_drop_supplementary_groups: host.is_root,
            build_dir: None,
            max_jobs: 1,
            cores: host.cores,
            timeout: 0,
            max_silent_time: 0,
            keep_failed: false,
            keep_going: false,
            keep_build_log: true,
            compress_build_log: true,
            max_build_log_size: 0,
            pre_build_hook: String::new(),
            post_build_hook: String::new(),
            system: host.system.clone(),
            extra_platforms: host.extra_platforms.clone(),
            system_features: host.system_features.clone(),
            keep_outputs: false,
            keep_derivations: true,
            keep_env_derivations: false,
            gc_reserved_space: 8 * 1024 * 1024,
            min_free: 0,
            max_free: i64::MAX as u64,
            min_free_check_interval: 5,
            auto_optimise_store: false,
            fsync_metadata: true,
            fsync_store_paths: false,
            use_sqlite_wal: !host.wsl1,
            sync_before_registering: false,
            allow_symlinked_store: env.ignore_symlink_store,
            ignored_acls: strings(&["security.csm", "security.selinux", "system.nfs4_acl"]),
            experimental_features: BTreeSet::new(),
            ignored: BTreeMap::new(),
            unknown: BTreeMap::new(),
            auto_jobs: host.cores,
        }
    }

    /// Applies one `name = value`, as CppNix's `Config::set`: `name` may be
    /// a setting, an alias, or `extra-` before a list or set setting (which
    /// appends). Unknown names are recorded in [`Settings::unknown`] (the
    /// caller warns about them); settings whose experimental feature is off
    /// are skipped with a warning.
    pub fn set(&mut self, name: &str, value: &str, warnings: &mut Vec<Warning>) -> Result<(), SettingError> {
        let (info, append) = match lookup(name) {
            Some(info) => (info, false),
            None => match name.strip_prefix("extra-").and_then(lookup).filter(|i| i.appendable) {
                Some(info) => (info, true),
                None => {
                    let untyped = KNOWN_UNTYPED.contains(&name)
                        || name.strip_prefix("extra-").is_some_and(|n| KNOWN_UNTYPED.contains(&n));
                    if untyped {
                        record_untyped(&mut self.ignored, name, value);
                    } else {
                        self.unknown.insert(name.to_owned(), value.to_owned());
                    }
                    return Ok(());
                }
            },
        };
        if let Some(feature) = info.requires.filter(|f| !self.experimental_features.contains(f)) {
            warnings.push(Warning::NeedsExperimentalFeature { setting: info.name.to_owned(), feature });
            return Ok(());
        }
        let mut cx = Context { cores: self.auto_jobs, warnings };
        self.assign(info.name, value, append, &mut cx)
    }

    /// Whether `experimental-features` includes `feature`.
    pub fn is_enabled(&self, feature: ExperimentalFeature) -> bool {
        self.experimental_features.contains(&feature)
    }
}

/// Keeps the last value of a known untyped setting; `extra-` values are
/// appended to the base name's.
fn record_untyped(map: &mut BTreeMap<String, String>, name: &str, value: &str) {
    match name.strip_prefix("extra-") {
        Some(base) if !value.is_empty() => {
            let entry = map.entry(base.to_owned()).or_default();
            if !entry.is_empty() {
                entry.push(' ');
            }
            entry.push_str(value);
        }
        Some(_) => {}
        None => {
            map.insert(name.to_owned(), value.to_owned());
        }
    }
}
