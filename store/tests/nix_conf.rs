//! `nix.conf` loading, on the fixture folders in `fixtures/nix-conf/` (one
//! rule each; `nix.conf` is the entry point, an optional `NIX_CONFIG` file
//! is passed as that variable, an optional `skip` file lists `<who>: why`
//! for Nix versions that must not be compared).
//!
//! Each fixture has explicit expectations below, and every fixture is also
//! loaded by the real Nix 2.8 (`nix show-config`) and 2.26
//! (`nix config show`): both must fail or both succeed; on failure Nix's
//! message must be part of ours (2.26's wording), on success the warnings
//! must be the same and every typed setting Nix prints must print the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use store::nix_conf::{
    self, ConfigEnv, ExperimentalFeature, Host, Loaded, NixConfError, ParseError, SETTINGS, SandboxMode, SettingError,
    Settings, Warning,
};
use testkit::{Nix, NixVersion};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nix-conf").join(name).canonicalize().unwrap()
}

fn all_fixtures() -> Vec<PathBuf> {
    let root = fixture("");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs
}

/// A home and XDG dirs with no config files, so only the fixture is read.
struct Sandbox {
    _tmp: testkit::TempDir,
    vars: BTreeMap<String, String>,
}

impl Sandbox {
    fn new(conf_dir: &Path) -> Sandbox {
        let tmp = testkit::TempDir::new();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join(".config")).unwrap();
        std::fs::create_dir_all(tmp.path().join("xdg")).unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("NIX_CONF_DIR".to_owned(), conf_dir.display().to_string());
        vars.insert("HOME".to_owned(), home.display().to_string());
        vars.insert("XDG_CONFIG_HOME".to_owned(), home.join(".config").display().to_string());
        vars.insert("XDG_CONFIG_DIRS".to_owned(), tmp.path().join("xdg").display().to_string());
        if let Ok(text) = std::fs::read_to_string(conf_dir.join("NIX_CONFIG")) {
            vars.insert("NIX_CONFIG".to_owned(), text);
        }
        Sandbox { _tmp: tmp, vars }
    }

    fn env(&self) -> ConfigEnv {
        ConfigEnv::from_vars(|name| self.vars.get(name).cloned(), PathBuf::from("/"))
    }
}

fn load(name: &str) -> Result<Loaded, NixConfError> {
    let sandbox = Sandbox::new(&fixture(name));
    nix_conf::load(&sandbox.env(), &Host::detect())
}

fn defaults() -> Settings {
    Settings::new(&Host::detect(), &ConfigEnv::default())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// --- each rule ----------------------------------------------------------------

#[test]
fn defaults_are_cppnix_defaults() {
    let host = Host { is_root: true, cores: 6, ..Host::detect() };
    let s = Settings::new(&host, &ConfigEnv::default());
    assert_eq!(s.store, "auto");
    assert_eq!(s.trusted_users, ["root"]);
    assert_eq!(s.allowed_users, ["*"]);
    assert_eq!(s.substituters, ["https://cache.nixos.org/"]);
    assert_eq!(s.trusted_public_keys, [nix_conf::CACHE_NIXOS_ORG_KEY]);
    assert!(s.require_sigs && s.keep_derivations && s.fsync_metadata && s.sandbox_fallback);
    assert!(!s.keep_outputs && !s.auto_optimise_store && !s.fsync_store_paths && !s.sync_before_registering);
    assert_eq!(s.sandbox, SandboxMode::Enabled);
    assert_eq!(s.build_users_group, "nixbld", "root builds as nixbld");
    assert_eq!((s.max_jobs, s.cores), (1, 6));
    assert_eq!(s.gc_reserved_space, 8 << 20);
    assert_eq!(s.max_free, i64::MAX as u64);
    assert_eq!(s.builders, "@/etc/nix/machines");
    assert_eq!(s.narinfo_cache_positive_ttl, 2_592_000);
    assert!(s.experimental_features.is_empty());

    let env = ConfigEnv {
        conf_dir: "/conf".into(),
        nix_remote: Some("daemon".into()),
        ignore_symlink_store: true,
        ..ConfigEnv::default()
    };
    let s = Settings::new(&Host { is_root: false, ..host }, &env);
    assert_eq!(
        (s.store.as_str(), s.builders.as_str(), s.netrc_file.as_str()),
        ("daemon", "@/conf/machines", "/conf/netrc")
    );
    assert_eq!(s.build_users_group, "", "non-root builds as itself");
    assert!(s.allow_symlinked_store);
}

#[test]
fn comments_blank_lines_overrides_and_aliases() {
    let Loaded { settings: s, warnings } = load("comments-overrides").unwrap();
    assert_eq!(warnings, []);
    assert!(!s.keep_outputs, "the later assignment wins");
    assert_eq!(s.max_jobs, 4);
    assert_eq!(s.substituters, ["https://a.example/"], "# starts a comment even inside a value");
    assert_eq!(s.trusted_users, ["root", "alice"]);
    assert!(!s.require_sigs && s.keep_failed && !s.fsync_metadata && s.sync_before_registering);
    assert_eq!(s.timeout, 3600);
    assert_eq!(s.build_users_group, "");
    assert!(!s.keep_derivations, "gc-keep-derivations is an alias");
    assert_eq!(s.max_silent_time, 60);
    assert_eq!(s.sandbox, SandboxMode::Relaxed);
    assert_eq!(s.post_build_hook, "/etc/nix/upload.sh --quiet", "tokens joined by one space");
}

#[test]
fn includes_are_relative_to_the_including_file() {
    let s = load("include-chain").unwrap().settings;
    assert!(s.keep_going);
    assert_eq!(s.substituters, ["https://from-a.example/", "https://from-b.example/", "https://last.example/"]);
    assert_eq!(s.cores, 3);
}

#[test]
fn a_missing_include_is_an_error() {
    let err = load("include-missing").unwrap_err();
    let dir = fixture("include-missing");
    assert!(
        matches!(&err, NixConfError::Parse(ParseError::IncludeNotFound { path, .. }) if *path == dir.join("not-there.conf"))
    );
    assert_eq!(
        err.to_string(),
        format!("file '{}/not-there.conf' included from '{}/nix.conf' not found", dir.display(), dir.display())
    );
}

#[test]
fn an_include_cycle_is_an_error() {
    let err = load("include-cycle").unwrap_err();
    assert!(matches!(err, NixConfError::Parse(ParseError::IncludeCycle { .. })), "{err}");
}

#[test]
fn extra_appends_to_lists_and_sets() {
    let Loaded { settings: s, warnings } = load("extra-appends").unwrap();
    assert_eq!(warnings, []);
    assert_eq!(
        s.substituters,
        ["https://a.example/", "https://b.example/", "https://a.example/", "https://c.example/"]
    );
    assert_eq!(s.trusted_public_keys, ["k1:AAAA", "k2:BBBB"]);
    assert_eq!(s.sandbox_paths, set(&["/a", "/b", "/c"]));
    assert_eq!(s.trusted_substituters, set(&["https://w.example/", "https://x.example/"]));
    assert_eq!(s.experimental_features, [ExperimentalFeature::CaDerivations].into());
    assert_eq!(s.allowed_users, ["carol", "dave"], "a plain assignment replaces what was appended");
}

#[test]
fn bad_values_are_errors_in_cppnix_words_with_file_and_line() {
    let cases = [
        ("bad-bool", 1, "Boolean setting 'require-sigs' has invalid value 'maybe'"),
        ("bad-int", 2, "setting 'http-connections' has invalid value 'lots'"),
        ("bad-max-jobs", 1, "configuration setting 'max-jobs' should be 'auto' or an integer"),
        ("bad-sandbox", 1, "option 'sandbox' has invalid value 'yes'"),
    ];
    for (name, line, message) in cases {
        let err = load(name).unwrap_err();
        let file = fixture(name).join("nix.conf");
        assert!(matches!(&err, NixConfError::Setting { line: l, .. } if *l == line), "{name}: {err:?}");
        assert_eq!(err.to_string(), format!("{}:{line}: {message}", file.display()));
    }
    let err = load("syntax-error").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "syntax error in configuration line 'keep-outputs=true' in '{}' at line 2",
            fixture("syntax-error").join("nix.conf").display()
        )
    );
}

#[test]
fn unknown_settings_and_features_are_warnings() {
    let Loaded { settings: s, warnings } = load("unknown-settings").unwrap();
    let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "unknown experimental feature 'no-such-feature'",
            "unknown setting 'extra-also-unknown'",
            "unknown setting 'extra-store'",
            "unknown setting 'no-such-setting'",
        ]
    );
    assert_eq!(s.unknown.get("no-such-setting").map(String::as_str), Some("3"));
    assert_eq!(s.ignored.get("nix-path").map(String::as_str), Some("nixpkgs=/x"), "known to CppNix, unused here");
    assert_eq!(s.experimental_features, [ExperimentalFeature::CaDerivations].into());
    assert_eq!(s.store, defaults().store, "extra-store did not touch store");
}

#[test]
fn gated_settings_need_their_feature_wherever_it_is_enabled() {
    let Loaded { settings, warnings } = load("feature-order").unwrap();
    assert_eq!(warnings, []);
    assert!(settings.auto_allocate_uids);

    let Loaded { settings, warnings } = load("feature-gated").unwrap();
    assert!(!settings.auto_allocate_uids);
    assert_eq!(
        warnings,
        [Warning::NeedsExperimentalFeature {
            setting: "auto-allocate-uids".into(),
            feature: ExperimentalFeature::AutoAllocateUids
        }]
    );
    assert_eq!(
        warnings[0].to_string(),
        "Ignoring setting 'auto-allocate-uids' because experimental feature 'auto-allocate-uids' is not enabled"
    );
}

#[test]
fn sizes_take_binary_unit_suffixes() {
    let s = load("units").unwrap().settings;
    assert_eq!(
        (s.min_free, s.max_free, s.gc_reserved_space, s.max_build_log_size),
        (1 << 30, 2 << 30, 512 << 10, 1 << 20)
    );
}

#[test]
fn nix_config_is_applied_after_the_file() {
    let s = load("nix-config-env").unwrap().settings;
    assert!(!s.keep_outputs);
    assert_eq!(s.substituters, ["https://file.example/", "https://env.example/"]);
}

#[test]
fn user_files_are_read_after_nix_conf_the_first_one_last() {
    let tmp = testkit::TempDir::new();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    write("nix.conf", "cores = 1\nmax-jobs = 1\ntimeout = 1\n");
    let first = write("first.conf", "cores = 2\n");
    let second = write("second.conf", "cores = 3\nmax-jobs = 3\n");
    let vars = BTreeMap::from([
        ("NIX_CONF_DIR", tmp.path().display().to_string()),
        (
            "NIX_USER_CONF_FILES",
            format!("{}:{}:{}/missing.conf", first.display(), second.display(), tmp.path().display()),
        ),
        ("NIX_CONFIG", "timeout = 4".to_owned()),
    ]);
    let env = ConfigEnv::from_vars(|k| vars.get(k).cloned(), "/".into());
    assert_eq!(env.user_conf_files.len(), 3);
    let s = nix_conf::load(&env, &Host::detect()).unwrap().settings;
    assert_eq!((s.cores, s.max_jobs, s.timeout), (2, 3, 4));

    // XDG locations when NIX_USER_CONF_FILES is not set.
    let vars = BTreeMap::from([("HOME", "/home/u".to_owned()), ("XDG_CONFIG_DIRS", "/a:/b".to_owned())]);
    let env = ConfigEnv::from_vars(|k| vars.get(k).cloned(), "/".into());
    assert_eq!(env.conf_file(), Path::new("/etc/nix/nix.conf"));
    let expected: Vec<PathBuf> =
        ["/home/u/.config/nix/nix.conf", "/a/nix/nix.conf", "/b/nix/nix.conf"].iter().map(PathBuf::from).collect();
    assert_eq!(env.user_conf_files, expected);
}

#[test]
fn an_explicit_file_and_a_missing_nix_conf() {
    let tmp = testkit::TempDir::new();
    let env = ConfigEnv { conf_dir: tmp.path().join("absent"), ..ConfigEnv::default() };
    let loaded = nix_conf::load(&env, &Host::detect()).unwrap();
    assert_eq!(loaded.settings, Settings::new(&Host::detect(), &env), "no nix.conf means defaults");
    assert_eq!(loaded.warnings, []);

    let file = tmp.path().join("daemon.conf");
    std::fs::write(&file, "keep-outputs = true\n").unwrap();
    let s = nix_conf::load_file(&file, &env, &Host::detect()).unwrap().settings;
    assert!(s.keep_outputs);
}

#[test]
fn set_is_usable_directly() {
    let mut s = defaults();
    let mut warnings = Vec::new();
    s.set("build-use-sandbox", "false", &mut warnings).unwrap();
    assert_eq!(s.sandbox, SandboxMode::Disabled);
    s.set("extra-experimental-features", "flakes", &mut warnings).unwrap();
    assert!(s.is_enabled(ExperimentalFeature::Flakes) && s.is_enabled(ExperimentalFeature::FetchTree));
    assert_eq!(s.render("experimental-features").unwrap(), "fetch-tree flakes");
    assert_eq!(
        s.set("keep-going", "TRUE", &mut warnings),
        Err(SettingError::InvalidBool { name: "keep-going".into(), value: "TRUE".into() })
    );
    assert_eq!(s.render("gc-keep-outputs").unwrap(), "false", "aliases render too");
    assert_eq!(s.render("no-such-setting"), None);
    assert_eq!(warnings, []);
}

// --- against the real Nix -------------------------------------------------------

/// What Nix prints for a fixture: settings and warnings, or its error.
fn cppnix_view(nix: &Nix, sandbox: &Sandbox) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let mut cmd = nix.command("nix");
    cmd.args(["--extra-experimental-features", "nix-command"]);
    cmd.args(match nix.version {
        NixVersion::V2_8 => &["show-config"][..],
        NixVersion::V2_26 => &["config", "show"][..],
    });
    cmd.envs(&sandbox.vars);
    let out = testkit::output(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let first = stderr.lines().find_map(|l| l.strip_prefix("error: ")).unwrap_or(&stderr);
        return Err(first.trim().to_owned());
    }
    let settings = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let warnings = stderr.lines().filter_map(|l| l.strip_prefix("warning: ")).map(str::to_owned).collect();
    Ok((settings, warnings))
}

/// Settings whose defaults we knowingly take from the other version or
/// cannot have; compared only when the fixture assigns them.
fn default_differs(version: NixVersion, name: &str) -> bool {
    match version {
        // 2.26's defaults; and 2.8's libcpuid knows fewer x86-64 levels.
        NixVersion::V2_8 => ["max-free", "ignored-acls", "system-features", "extra-platforms"].contains(&name),
        // Debian's 2.26 puts its build-time sandbox shell here.
        NixVersion::V2_26 => name == "sandbox-paths",
    }
}

/// Typed settings the fixture assigns plainly (not with `extra-`).
fn assigned(dir: &Path) -> BTreeSet<&'static str> {
    let parsed = nix_conf::parser::parse_file(&dir.join("nix.conf")).unwrap();
    parsed.assignments.iter().filter_map(|a| nix_conf::lookup(&a.name)).map(|i| i.name).collect()
}

fn skipped(dir: &Path, version: NixVersion) -> bool {
    let who = match version {
        NixVersion::V2_8 => "2.8:",
        NixVersion::V2_26 => "2.26:",
    };
    std::fs::read_to_string(dir.join("skip"))
        .is_ok_and(|text| text.lines().any(|l| l.starts_with(who) || l.starts_with("CppNix:")))
}

#[test]
fn every_fixture_loads_as_nix_loads_it() {
    let mut names_nix_printed = BTreeSet::new();
    let mut compared = 0;
    let mut versions_run = 0;
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { continue };
        versions_run += 1;
        for dir in all_fixtures() {
            if skipped(&dir, version) {
                continue;
            }
            let case = format!("{version}, {}", dir.file_name().unwrap().to_string_lossy());
            let sandbox = Sandbox::new(&dir);
            let ours = nix_conf::load(&sandbox.env(), &Host::detect());
            match (cppnix_view(&nix, &sandbox), ours) {
                (Err(theirs), Err(ours)) => {
                    if version == NixVersion::V2_26 {
                        assert!(ours.to_string().contains(&theirs), "{case}: ours: {ours}\ntheirs: {theirs}");
                    }
                }
                (Err(theirs), Ok(_)) => panic!("{case}: Nix fails ({theirs}) but we load it"),
                (Ok(_), Err(ours)) => panic!("{case}: Nix loads it but we fail: {ours}"),
                (Ok((theirs, their_warnings)), Ok(loaded)) => {
                    let mut our_warnings: Vec<String> = loaded
                        .warnings
                        .iter()
                        .filter(|w| !matches!(w, Warning::UnreadableFile { .. }))
                        .map(ToString::to_string)
                        .collect();
                    let mut their_warnings = their_warnings;
                    our_warnings.sort();
                    their_warnings.sort();
                    assert_eq!(our_warnings, their_warnings, "{case}: warnings");

                    for name in theirs.keys() {
                        assert!(nix_conf::is_known(name), "{case}: Nix knows '{name}', we would call it unknown");
                    }
                    let assigned = assigned(&dir);
                    for info in SETTINGS {
                        let Some(their_value) = theirs.get(info.name) else { continue };
                        names_nix_printed.insert(info.name);
                        if default_differs(version, info.name) && !assigned.contains(info.name) {
                            continue;
                        }
                        let mut their_value = their_value.clone();
                        if info.name == "experimental-features" {
                            // The command line enabled nix-command to run `nix`.
                            let features: Vec<&str> = their_value.split(' ').filter(|f| *f != "nix-command").collect();
                            their_value = features.join(" ");
                        }
                        let our_value = loaded.settings.render(info.name).unwrap();
                        assert_eq!(our_value, their_value, "{case}: setting '{}'", info.name);
                        compared += 1;
                    }
                }
            }
        }
    }
    // Some settings exist only in 2.26: every typed one is printed by some
    // Nix only when both ran (outside scripts/test, 2.26 may be missing).
    if compared > 0 && versions_run == NixVersion::ALL.len() {
        let ours: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let never: Vec<&&str> = ours.difference(&names_nix_printed).collect();
        assert!(never.is_empty(), "typed settings no Nix printed (misspelt?): {never:?}");
    }
}
