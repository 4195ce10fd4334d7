//! Derivations checked against the real Nix 2.8 and 2.26.
//!
//! Each `.nix` file in `fixtures/derivations/` is instantiated by each Nix
//! into a throwaway store (2.8 first, then 2.26 into the same store, so that
//! the same expression gives the same path exactly when both write the same
//! bytes). For every derivation we then check that:
//! - parsing and printing the `.drv` reproduces its bytes;
//! - the `.drv` path we compute is the one Nix printed;
//! - the output paths we compute (input-addressed from the hash modulo of
//!   the derivation and its inputs, read back from the store; fixed from the
//!   content address) are those in the `.drv`, those the evaluator reports as
//!   `outPath`, and those `nix-store -q --outputs` lists; for outputs without
//!   a path, the evaluator's `outPath` is our downstream placeholder;
//! - filling a blanked copy in as the evaluator does gives the `.drv` again;
//! - with 2.26, our JSON is what `nix derivation show` prints.
//!
//! Then each fixture's own test asserts what the fixture is about.
//!
//! The property tests at the end need no Nix.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::derivation::{
    Derivation, DerivationError, DerivationType, DownstreamPlaceholder, DrvHashKind, DrvHasher, InputOutputs, Output,
    hash_placeholder, show_json,
};
use store::hash::Algorithm;
use store::store_path::{StoreDir, StorePath};
use testkit::{Nix, NixVersion, TestStore, run};

/// Every experimental feature a fixture uses (2.8 warns about the ones it
/// does not know, and fixtures that need them run on 2.26 only).
const CONF: &str =
    "experimental-features = nix-command ca-derivations impure-derivations dynamic-derivations git-hashing";

const BOTH: &[NixVersion] = &[NixVersion::V2_8, NixVersion::V2_26];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One fixture instantiated by one Nix.
struct Run {
    version: NixVersion,
    store_dir: StoreDir,
    /// Attribute name (`default` for a file that is one derivation) to its
    /// `.drv` path and parsed derivation.
    drvs: BTreeMap<String, (StorePath, Derivation)>,
}

impl Run {
    fn get(&self, attr: &str) -> &Derivation {
        &self.drvs.get(attr).unwrap_or_else(|| panic!("{}: no derivation {attr}", self.version)).1
    }

    fn path(&self, attr: &str) -> &StorePath {
        &self.drvs[attr].0
    }

    fn hasher(&self) -> DrvHasher<impl FnMut(&StorePath) -> Result<Derivation, BoxError> + '_> {
        DrvHasher::new(self.store_dir.clone(), read_drv(&self.store_dir))
    }

    fn out(&self, attr: &str, output: &str) -> StorePath {
        self.get(attr).output_paths(&self.store_dir).unwrap()[output].clone().expect("a known output path")
    }
}

/// Reads derivations from the store directory, as a store would.
fn read_drv(store_dir: &StoreDir) -> impl FnMut(&StorePath) -> Result<Derivation, BoxError> + '_ {
    move |path| {
        let bytes = std::fs::read(store_dir.to_path(path))?;
        Ok(Derivation::parse_at(store_dir, &bytes, path)?)
    }
}

fn fixture(file: &str) -> String {
    format!("{}/tests/fixtures/derivations/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// Instantiates `file` with each available Nix of `versions`, checks every
/// derivation in it (see the file docs), and checks that the versions wrote
/// the same `.drv` for every attribute except those in `differ`, which must
/// differ.
fn check_fixture(file: &str, versions: &[NixVersion], differ: &[&str]) -> Checked {
    let available: Vec<Nix> = versions.iter().filter_map(|&v| Nix::find(v)).collect();
    if available.is_empty() {
        return Checked { runs: Vec::new(), _store: None };
    }
    let store = TestStore::with_conf(CONF);
    let runs: Vec<Run> = available.iter().map(|nix| instantiate_and_check(&store, nix, file)).collect();
    if let [a, b] = &runs[..] {
        assert_eq!(a.drvs.keys().collect::<Vec<_>>(), b.drvs.keys().collect::<Vec<_>>());
        for (attr, (path_a, _)) in &a.drvs {
            let path_b = b.path(attr);
            if differ.contains(&attr.as_str()) {
                assert_ne!(path_a, path_b, "{file} {attr}: expected {} and {} to differ", a.version, b.version);
            } else {
                assert_eq!(path_a, path_b, "{file} {attr}: {} and {} wrote different .drv files", a.version, b.version);
            }
        }
    }
    Checked { runs, _store: Some(store) }
}

/// The runs of one fixture, and the store they read from.
struct Checked {
    runs: Vec<Run>,
    _store: Option<TestStore>,
}

fn instantiate_and_check(store: &TestStore, nix: &Nix, file: &str) -> Run {
    let store_dir = StoreDir::new(store.store_dir.clone()).unwrap();
    let path = fixture(file);
    let parse_path = |s: &str| store_dir.parse_path(s).unwrap_or_else(|e| panic!("{s}: {e}"));

    // `nix-instantiate file.nix` prints the .drv path of each derivation (as
    // `path!output` when it has no `out`).
    let printed: BTreeSet<StorePath> = run(store.nix(nix, "nix-instantiate").arg(&path))
        .lines()
        .map(|l| parse_path(l.split('!').next().unwrap_or(l)))
        .collect();

    // What the evaluator says: the .drv path and each output's outPath.
    let expr = format!(
        r#"let
             v = import "{path}";
             isDrv = x: builtins.isAttrs x && (x.type or null) == "derivation";
             ds = if isDrv v then {{ default = v; }} else v;
             names = builtins.filter (n: isDrv ds.${{n}}) (builtins.attrNames ds);
           in builtins.listToAttrs (map (n: let d = ds.${{n}}; in {{
             name = n;
             value = {{
               drvPath = d.drvPath;
               outputs = builtins.listToAttrs
                 (map (o: {{ name = o; value = d.${{o}}.outPath; }}) (d.outputs or [ "out" ]));
             }};
           }}) names)"#
    );
    let json = run(store
        .nix(nix, "nix-instantiate")
        .args(["--eval", "--strict", "--json", "--read-write-mode", "-E"])
        .arg(&expr));
    let evaluated: BTreeMap<String, serde_json::Value> = serde_json::from_str(&json).unwrap();

    let mut drvs = BTreeMap::new();
    for (attr, info) in &evaluated {
        let what = format!("{} {file} {attr}", nix.version);
        let drv_path = parse_path(info["drvPath"].as_str().unwrap());
        assert!(printed.contains(&drv_path), "{what}: nix-instantiate did not print {drv_path}");
        let bytes = std::fs::read(store_dir.to_path(&drv_path)).unwrap();
        let drv = Derivation::parse_at(&store_dir, &bytes, &drv_path).unwrap_or_else(|e| panic!("{what}: {e}"));

        let printed_back = drv.to_aterm(&store_dir).unwrap();
        assert_eq!(String::from_utf8_lossy(&printed_back), String::from_utf8_lossy(&bytes), "{what}");
        assert_eq!(printed_back, bytes, "{what}");
        assert_eq!(drv.drv_path(&store_dir).unwrap(), drv_path, "{what}");

        // Output paths: ours against the evaluator's outPath.
        let nix_outputs: BTreeMap<String, String> = serde_json::from_value(info["outputs"].clone()).unwrap();
        let ours = drv.output_paths(&store_dir).unwrap();
        assert_eq!(ours.keys().collect::<Vec<_>>(), nix_outputs.keys().collect::<Vec<_>>(), "{what}");
        for (name, path) in &ours {
            let expected = match path {
                Some(p) => store_dir.display(p),
                None => DownstreamPlaceholder::unknown_ca_output(&drv_path, name).unwrap().render(),
            };
            assert_eq!(nix_outputs[name], expected, "{what}: output {name}");
        }

        let mut hasher = DrvHasher::new(store_dir.clone(), read_drv(&store_dir));
        drv.check_invariants(&drv_path, &mut hasher).unwrap_or_else(|e| panic!("{what}: {e}"));

        // Blank what the evaluator computes last, and compute it again.
        let mut blank = drv.clone();
        for (name, output) in blank.outputs.iter_mut() {
            if matches!(output, Output::InputAddressed(_)) {
                *output = Output::Deferred;
            }
            blank.env.insert(name.clone().into_bytes(), b"to be filled in".to_vec());
        }
        blank.fill_in_outputs(&mut hasher).unwrap();
        assert_eq!(blank, drv, "{what}: filling in outputs");

        let ty = drv.derivation_type().unwrap();
        if ty.has_known_output_paths() {
            let listed = run(store.nix(nix, "nix-store").args(["-q", "--outputs"]).arg(store_dir.display(&drv_path)));
            // Listed in path order, not output-name order.
            let ours: BTreeSet<String> = ours.values().flatten().map(|p| store_dir.display(p)).collect();
            assert_eq!(
                listed.lines().map(str::to_owned).collect::<Vec<_>>(),
                Vec::from_iter(ours),
                "{what}: nix-store -q --outputs"
            );
        }
        drvs.insert(attr.clone(), (drv_path, drv));
    }
    assert_eq!(printed.len(), drvs.len(), "{} {file}: nix-instantiate printed {printed:?}", nix.version);

    if nix.version == NixVersion::V2_26 {
        let paths: Vec<String> = drvs.values().map(|(p, _)| store_dir.display(p)).collect();
        let shown = run(store.nix(nix, "nix").args(["derivation", "show"]).args(&paths));
        let ours = show_json(&store_dir, drvs.values().map(|(p, d)| (p, d))).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(ours, theirs, "{file}: nix derivation show");
        assert_eq!(serde_json::to_string_pretty(&ours).unwrap() + "\n", shown, "{file}: nix derivation show text");
    }
    Run { version: nix.version, store_dir, drvs }
}

fn env<'d>(drv: &'d Derivation, key: &str) -> &'d str {
    std::str::from_utf8(drv.env_var(key).unwrap_or_else(|| panic!("no env var {key}"))).unwrap()
}

fn outputs(names: &[&str]) -> InputOutputs {
    InputOutputs::new(names.iter().copied())
}

/// Each fixture against the real Nix.
mod derivation_vs_nix {
    use super::*;

    #[test]
    fn trivial() {
        for r in &check_fixture("trivial.nix", BOTH, &[]).runs {
            let drv = r.get("default");
            assert_eq!(drv.name, "trivial");
            assert_eq!(drv.derivation_type().unwrap(), DerivationType::InputAddressed);
            assert_eq!(drv.args, [b"-c".to_vec(), b"echo hello > $out".to_vec()]);
            assert!(drv.input_drvs.is_empty() && drv.input_srcs.is_empty());
            assert_eq!(env(drv, "out"), r.store_dir.display(&r.out("default", "out")));
        }
    }

    #[test]
    fn multiple_outputs() {
        for r in &check_fixture("multiple-outputs.nix", BOTH, &[]).runs {
            let drv = r.get("multi");
            assert_eq!(drv.outputs.keys().collect::<Vec<_>>(), ["bin", "dev", "lib", "man-pages", "out"]);
            for name in drv.outputs.keys() {
                let path = r.out("multi", name);
                let expected_name = if name == "out" { "multi".to_owned() } else { format!("multi-{name}") };
                assert_eq!(path.name(), expected_name);
                assert_eq!(env(drv, name), r.store_dir.display(&path));
            }
            assert_eq!(r.get("no-out").outputs.keys().collect::<Vec<_>>(), ["bin", "doc"]);
        }
    }

    #[test]
    fn escaping() {
        for r in &check_fixture("escaping.nix", BOTH, &[]).runs {
            let drv = r.get("escaping");
            assert_eq!(drv.builder, b"/bin/sh \"quoted\" \\ back\tslash");
            assert_eq!(drv.args[3], b"line1\nline2\r\nend\t");
            assert_eq!(drv.args[0], b"");
            assert_eq!(env(drv, "quote"), "say \"hi\"");
            assert_eq!(env(drv, "backslash"), "a\\b\\\\c\\n");
            assert_eq!(env(drv, "cr"), "dos\r\nline\r");
            assert_eq!(env(drv, "unicode"), "héllo wörld ✓ 🦀 日本語");
            assert_eq!(env(drv, "dollar"), "${not interpolated} $HOME");
            assert_eq!(env(drv, "empty"), "");
            assert_eq!(env(drv, "key with \"quotes\""), "k1");
            assert_eq!(env(drv, "key\nwith\tcontrol\rchars"), "k2");
            assert_eq!(env(drv, "ключ"), "unicode key");
            let text = std::fs::read_to_string(r.store_dir.to_path(r.path("escaping"))).unwrap();
            assert!(text.contains(r#"("backslash","a\\b\\\\c\\n")"#), "{text}");
            assert!(text.contains(r#"("cr","dos\r\nline\r")"#), "{text}");
        }
    }

    #[test]
    fn dependencies() {
        for r in &check_fixture("dependencies.nix", BOTH, &[]).runs {
            let lib = r.path("lib");
            let app = r.get("app");
            assert_eq!(app.input_drvs, BTreeMap::from([(lib.clone(), outputs(&["dev", "out"]))]));
            assert_eq!(env(app, "headers"), r.store_dir.display(&r.out("lib", "dev")));
            let top = r.get("top");
            assert_eq!(
                top.input_drvs,
                BTreeMap::from([
                    (r.path("app").clone(), outputs(&["out"])),
                    (r.path("doc-only").clone(), outputs(&["out"])),
                    (lib.clone(), outputs(&["dev"])),
                ])
            );
            // A .drv path in a string brings its whole closure: every .drv as a
            // source, and every output of each.
            let drv_ref = r.get("drv-ref");
            for attr in ["top", "app", "doc-only", "lib"] {
                assert!(drv_ref.input_srcs.contains(r.path(attr)), "{attr}");
            }
            assert_eq!(drv_ref.input_drvs[lib], outputs(&["dev", "doc", "out"]));
            assert_eq!(drv_ref.references().len(), drv_ref.input_srcs.len());

            // Changing an input changes the output path of what depends on it.
            let mut hasher = r.hasher();
            let before = hasher.hash_modulo(top, true).unwrap();
            let mut app2 = app.clone();
            app2.env.insert(b"libs".to_vec(), b"changed".to_vec());
            app2.fill_in_outputs(&mut hasher).unwrap();
            let app2_path = app2.drv_path(&r.store_dir).unwrap();
            let app2_hash = hasher.hash_modulo(&app2, false).unwrap();
            hasher.remember(app2_path.clone(), app2_hash);
            let mut top2 = top.clone();
            let wanted = top2.input_drvs.remove(r.path("app")).unwrap();
            top2.input_drvs.insert(app2_path, wanted);
            assert_ne!(hasher.hash_modulo(&top2, true).unwrap(), before);
        }
    }

    #[test]
    fn fixed_outputs() {
        let armitage = |algo: Algorithm| algo.digest("armitage");
        let cases = [
            ("flat-md5-base16", FileIngestionMethod::Flat, Algorithm::Md5),
            ("flat-sha1-nix32", FileIngestionMethod::Flat, Algorithm::Sha1),
            ("flat-sha256-sri", FileIngestionMethod::Flat, Algorithm::Sha256),
            ("flat-sha256-nix32", FileIngestionMethod::Flat, Algorithm::Sha256),
            ("flat-sha512-base16", FileIngestionMethod::Flat, Algorithm::Sha512),
            ("rec-md5-nix32", FileIngestionMethod::Recursive, Algorithm::Md5),
            ("rec-sha1-sri", FileIngestionMethod::Recursive, Algorithm::Sha1),
            ("rec-sha256-base16", FileIngestionMethod::Recursive, Algorithm::Sha256),
            ("rec-sha256-sri", FileIngestionMethod::Recursive, Algorithm::Sha256),
            ("rec-sha512-nix32", FileIngestionMethod::Recursive, Algorithm::Sha512),
            ("prefixed", FileIngestionMethod::Flat, Algorithm::Sha1),
        ];
        for r in &check_fixture("fixed-output.nix", BOTH, &[]).runs {
            assert_eq!(r.drvs.len(), cases.len());
            for (attr, method, algo) in cases {
                let drv = r.get(attr);
                let ca = ContentAddress { method: ContentAddressMethod::Fixed(method), hash: armitage(algo) };
                assert_eq!(drv.outputs, BTreeMap::from([("out".to_owned(), Output::Fixed(ca))]), "{attr}");
                let path = r.out(attr, "out");
                assert_eq!(
                    path,
                    r.store_dir.make_fixed_output_path(&drv.name, method, &ca.hash, &Default::default()).unwrap()
                );
                assert_eq!(env(drv, "out"), r.store_dir.display(&path));
                let h = r.hasher().hash_modulo(drv, false).unwrap();
                let fingerprint = format!(
                    "fixed:out:{}{algo}:{}:{}",
                    method.prefix(),
                    ca.hash.to_base16(),
                    r.store_dir.display(&path)
                );
                assert_eq!(h.hashes["out"], Algorithm::Sha256.digest(fingerprint), "{attr}");
                assert_eq!(h.kind, DrvHashKind::Regular);
            }
        }
    }

    #[test]
    fn fixed_output_dependents_get_the_same_paths() {
        for r in &check_fixture("fixed-output-dependent.nix", BOTH, &[]).runs {
            assert_ne!(r.path("fetch-sh"), r.path("fetch-bash"));
            assert_eq!(r.out("fetch-sh", "out"), r.out("fetch-bash", "out"));
            let mut hasher = r.hasher();
            assert_eq!(hasher.hash_path(r.path("fetch-sh")).unwrap(), hasher.hash_path(r.path("fetch-bash")).unwrap());
            for (a, b) in [("consumer-sh", "consumer-bash"), ("top-sh", "top-bash")] {
                assert_ne!(r.path(a), r.path(b), "{a} and {b} are different .drv files");
                assert_eq!(r.out(a, "out"), r.out(b, "out"), "{a} and {b} build the same thing");
                assert_eq!(hasher.hash_path(r.path(a)).unwrap(), hasher.hash_path(r.path(b)).unwrap());
            }
        }
    }

    #[test]
    fn sources() {
        for r in &check_fixture("sources.nix", BOTH, &[]).runs {
            let drv = r.get("with-sources");
            let names: BTreeSet<&str> = drv.input_srcs.iter().map(StorePath::name).collect();
            assert_eq!(names, BTreeSet::from(["builder.sh", "script.sh", "wrapper.sh"]));
            assert!(drv.input_drvs.is_empty());
            assert!(std::str::from_utf8(&drv.builder).unwrap().ends_with("-builder.sh"));
        }
    }

    #[test]
    fn pass_as_file() {
        for r in &check_fixture("pass-as-file.nix", BOTH, &[]).runs {
            let drv = r.get("pass-as-file");
            assert_eq!(env(drv, "passAsFile"), "big other");
            assert_eq!(env(drv, "big"), "a long text\nwith \"lines\"\n");
        }
    }

    #[test]
    fn structured_attrs() {
        // The float and control-character case is written differently by the
        // two versions' JSON writers (see the fixture), so its .drv differs.
        for r in &check_fixture("structured-attrs.nix", BOTH, &["structured-floats"]).runs {
            let drv = r.get("structured");
            let keys: Vec<&[u8]> = drv.env.keys().map(Vec::as_slice).collect();
            assert_eq!(keys, [&b"__json"[..], b"bin", b"out"], "only __json and the outputs are in the environment");
            let attrs = drv.structured_attrs().unwrap().expect("structured attrs");
            assert_eq!(attrs["outputs"], serde_json::json!(["out", "bin"]));
            assert_eq!(attrs["list"], serde_json::json!([1, "two", [3], null, true, false]));
            assert_eq!(attrs["nested"]["a"]["b"]["c"], "deep");
            assert_eq!(attrs["nested"]["quoted \"key\""], "v\nw\tx\\y");
            assert_eq!(attrs["negative"], -7);
            assert_eq!(attrs["dependency"], r.store_dir.display(&r.out("dep", "dev")));
            assert!(attrs.get("__structuredAttrs").is_none() && attrs.get("args").is_none());
            assert_eq!(env(drv, "bin"), r.store_dir.display(&r.out("structured", "bin")));

            let floats = r.get("structured-floats").structured_attrs().unwrap().unwrap();
            assert_eq!(floats["ctrl"], "\u{8}\u{c}\u{1}");
            let json = env(r.get("structured-floats"), "__json");
            match r.version {
                NixVersion::V2_8 => {
                    assert_eq!(floats["ratio"], 1.23457);
                    assert!(json.contains(r#""one":1,"#) && json.contains(r#"\u0008\u000c"#), "{json}");
                }
                NixVersion::V2_26 => {
                    assert_eq!(floats["ratio"], 1.23456789);
                    assert!(json.contains(r#""one":1.0,"#) && json.contains(r#"\b\f"#), "{json}");
                }
            }
        }
    }

    #[test]
    fn placeholders() {
        for r in &check_fixture("placeholder.nix", BOTH, &[]).runs {
            let drv = r.get("placeholders");
            assert_eq!(env(drv, "self"), hash_placeholder("out"));
            assert_eq!(env(drv, "other"), format!("{}/include", hash_placeholder("dev")));
            assert_eq!(env(drv, "foreign"), hash_placeholder("doc"));
            assert_eq!(drv.args[1], format!("echo {}", hash_placeholder("out")).into_bytes());
            assert_eq!(drv.structured_attrs().unwrap(), None);
        }
    }

    #[test]
    fn content_addressed() {
        let nar = ContentAddressMethod::Fixed(FileIngestionMethod::Recursive);
        for r in &check_fixture("content-addressed.nix", BOTH, &[]).runs {
            let mut hasher = r.hasher();
            let ca = r.get("ca");
            assert_eq!(ca.outputs["out"], Output::Floating { method: nar, algorithm: Algorithm::Sha256 });
            assert_eq!(env(ca, "out"), hash_placeholder("out"));
            assert_eq!(hasher.hash_path(r.path("ca")).unwrap().kind, DrvHashKind::Deferred);
            let multi = r.get("ca-multi");
            let flat = ContentAddressMethod::Fixed(FileIngestionMethod::Flat);
            assert_eq!(multi.outputs["dev"], Output::Floating { method: flat, algorithm: Algorithm::Sha512 });
            assert_eq!(env(multi, "dev"), hash_placeholder("dev"));
            assert_eq!(r.get("ca-on-ca").derivation_type().unwrap(), DerivationType::Floating);

            let upstream = |attr: &str, output: &str| {
                DownstreamPlaceholder::unknown_ca_output(r.path(attr), output).unwrap().render()
            };
            let deferred = r.get("deferred");
            assert_eq!(deferred.derivation_type().unwrap(), DerivationType::Deferred);
            assert_eq!(deferred.outputs["lib"], Output::Deferred);
            assert_eq!(env(deferred, "out"), "");
            assert_eq!(env(deferred, "src"), format!("{}/src", upstream("ca", "out")));
            assert_eq!(env(deferred, "headers"), upstream("ca-multi", "dev"));
            assert_eq!(hasher.hash_path(r.path("deferred")).unwrap().kind, DrvHashKind::Deferred);
            let chain = r.get("deferred-chain");
            assert_eq!(chain.derivation_type().unwrap(), DerivationType::Deferred);
            assert_eq!(env(chain, "dep"), upstream("deferred", "lib"));

            assert_eq!(r.get("fixed-on-ca").derivation_type().unwrap(), DerivationType::Fixed);
            assert_eq!(hasher.hash_path(r.path("fixed-on-ca")).unwrap().kind, DrvHashKind::Regular);
            let on_fixed = r.get("on-fixed-on-ca");
            assert_eq!(on_fixed.derivation_type().unwrap(), DerivationType::InputAddressed);
            assert_eq!(env(on_fixed, "src"), r.store_dir.display(&r.out("fixed-on-ca", "out")));
        }
    }

    #[test]
    fn impure() {
        for r in &check_fixture("impure.nix", BOTH, &[]).runs {
            let nar = ContentAddressMethod::Fixed(FileIngestionMethod::Recursive);
            let drv = r.get("impure");
            assert_eq!(drv.outputs["out"], Output::Impure { method: nar, algorithm: Algorithm::Sha256 });
            let h = r.hasher().hash_path(r.path("impure")).unwrap();
            assert_eq!((h.hashes["out"], h.kind), (Algorithm::Sha256.digest("impure"), DrvHashKind::Deferred));
            let on = r.get("on-impure");
            assert_eq!(on.derivation_type().unwrap(), DerivationType::Deferred);
            let placeholder = DownstreamPlaceholder::unknown_ca_output(r.path("impure"), "out").unwrap();
            assert_eq!(env(on, "src"), placeholder.render());
        }
    }

    #[test]
    fn dynamic_derivations_and_git_hashing() {
        for r in &check_fixture("dynamic.nix", &[NixVersion::V2_26], &[]).runs {
            let producer = r.get("producer");
            assert_eq!(producer.name, "inner.drv");
            assert_eq!(
                producer.outputs["out"],
                Output::Floating { method: ContentAddressMethod::Text, algorithm: Algorithm::Sha256 }
            );
            let consumer = r.get("consumer");
            assert!(consumer.has_dynamic_inputs());
            let mut node = outputs(&["out"]);
            node.dynamic_outputs.insert("out".into(), outputs(&["out"]));
            assert_eq!(consumer.input_drvs, BTreeMap::from([(r.path("producer").clone(), node)]));
            assert!(consumer.to_aterm(&r.store_dir).unwrap().starts_with(b"DrvWithVersion(\"xp-dyn-drv\","));
            let inner = DownstreamPlaceholder::unknown_ca_output(r.path("producer"), "out").unwrap();
            assert_eq!(env(consumer, "dep"), inner.unknown_derivation("out").render());
            assert_eq!(env(consumer, "also"), inner.render());

            let git = r.get("git-fixed");
            let Output::Fixed(ca) = &git.outputs["out"] else { panic!("git-fixed is not fixed") };
            assert_eq!(ca.method, ContentAddressMethod::Fixed(FileIngestionMethod::Git));
        }
    }
}

/// Hash modulo over in-memory graphs.
mod derivation_hashing {
    use super::*;

    #[test]
    fn long_dependency_chains_do_not_overflow_the_stack() {
        let store_dir = StoreDir::default();
        let base = Derivation::parse(
            &store_dir,
            br#"Derive([("out","","","")],[],[],"x86_64-linux","/bin/sh",[],[])"#,
            "link",
        )
        .unwrap();
        let mut all: BTreeMap<StorePath, Derivation> = BTreeMap::new();
        let mut last: Option<StorePath> = None;
        for i in 0..20_000 {
            let mut drv = base.clone();
            drv.env.insert(b"i".to_vec(), i.to_string().into_bytes());
            if let Some(prev) = &last {
                drv.input_drvs.insert(prev.clone(), InputOutputs::new(["out"]));
            }
            let path = drv.drv_path(&store_dir).unwrap();
            all.insert(path.clone(), drv);
            last = Some(path);
        }
        let top = last.unwrap();
        let mut hasher = DrvHasher::new(store_dir.clone(), |p: &StorePath| {
            all.get(p).cloned().ok_or_else(|| format!("{p} not found"))
        });
        let h = hasher.hash_path(&top).unwrap();
        assert_eq!(h.kind, DrvHashKind::Regular);
    }

    #[test]
    fn cycles_and_missing_inputs_are_errors() {
        let store_dir = StoreDir::default();
        let drv = |dep: &str| {
            let text = format!(r#"Derive([("out","","","")],[("/nix/store/{dep}",["out"])],[],"s","/bin/sh",[],[])"#);
            Derivation::parse(&store_dir, text.as_bytes(), "x").unwrap()
        };
        let a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a.drv";
        let b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b.drv";
        let all = BTreeMap::from([
            (StorePath::from_base_name(a).unwrap(), drv(b)),
            (StorePath::from_base_name(b).unwrap(), drv(a)),
        ]);
        let resolve = |p: &StorePath| all.get(p).cloned().ok_or_else(|| format!("{p} is not known"));
        let err = DrvHasher::new(store_dir.clone(), resolve).hash_modulo(&drv(a), true).unwrap_err();
        assert!(matches!(err, DerivationError::Cycle(_)), "{err}");

        let missing = drv("cccccccccccccccccccccccccccccccc-c.drv");
        let err = DrvHasher::new(store_dir.clone(), resolve).hash_modulo(&missing, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read derivation '/nix/store/cccccccccccccccccccccccccccccccc-c.drv': \
         cccccccccccccccccccccccccccccccc-c.drv is not known"
        );

        // An input that lacks the wanted output.
        let mut wants_dev = drv(a);
        wants_dev.input_drvs.values_mut().for_each(|n| *n = InputOutputs::new(["dev"]));
        let plain =
            Derivation::parse(&store_dir, br#"Derive([("out","","","")],[],[],"s","/bin/sh",[],[])"#, "b").unwrap();
        let err = DrvHasher::new(store_dir.clone(), |_: &StorePath| Ok::<_, String>(plain.clone()))
            .hash_modulo(&wants_dev, true)
            .unwrap_err();
        assert_eq!(err.to_string(), "no hash for output 'dev' of derivation 'x'");
    }
}

/// Property tests: no Nix needed.
mod derivation_properties {
    use super::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            3 => any::<u8>(),
            1 => prop::sample::select(vec![b'"', b'\\', b'\n', b'\r', b'\t', b'(', b')', b'[', b']', b',']),
        ];
        prop::collection::vec(byte, 0..16)
    }

    fn ident() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9+._?=-]{0,10}"
    }

    fn store_path(suffix: &'static str) -> impl Strategy<Value = StorePath> {
        (any::<[u8; 20]>(), ident())
            .prop_map(move |(d, n)| StorePath::from_digest(&d, &format!("{n}{suffix}")).unwrap())
    }

    fn method() -> impl Strategy<Value = ContentAddressMethod> {
        prop::sample::select(vec![
            ContentAddressMethod::Text,
            ContentAddressMethod::Fixed(FileIngestionMethod::Flat),
            ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
            ContentAddressMethod::Fixed(FileIngestionMethod::Git),
        ])
    }

    fn algorithm() -> impl Strategy<Value = Algorithm> {
        prop::sample::select(Algorithm::ALL.to_vec())
    }

    fn output() -> impl Strategy<Value = Output> {
        prop_oneof![
            store_path("").prop_map(Output::InputAddressed),
            (method(), algorithm(), bytes()).prop_map(|(method, algorithm, data)| {
                // Git hashing is SHA-1 only.
                let algorithm = if method == ContentAddressMethod::Fixed(FileIngestionMethod::Git) {
                    Algorithm::Sha1
                } else {
                    algorithm
                };
                Output::Fixed(ContentAddress { method, hash: algorithm.digest(data) })
            }),
            (method(), algorithm()).prop_map(|(method, algorithm)| Output::Floating { method, algorithm }),
            Just(Output::Deferred),
            (method(), algorithm()).prop_map(|(method, algorithm)| Output::Impure { method, algorithm }),
        ]
    }

    fn input_outputs() -> impl Strategy<Value = InputOutputs> {
        let names = || prop::collection::btree_set(ident(), 0..3);
        let leaf = names().prop_map(|outputs| InputOutputs { outputs, dynamic_outputs: BTreeMap::new() });
        leaf.prop_recursive(3, 8, 2, move |inner| {
            (names(), prop::collection::btree_map(ident(), inner, 0..2))
                .prop_map(|(outputs, dynamic_outputs)| InputOutputs { outputs, dynamic_outputs })
        })
    }

    prop_compose! {
        fn derivation()(
            name in ident(),
            outputs in prop::collection::btree_map(ident(), output(), 1..4),
            input_drvs in prop::collection::btree_map(store_path(".drv"), input_outputs(), 0..3),
            input_srcs in prop::collection::btree_set(store_path(""), 0..3),
            // Written unescaped by CppNix, so no quote or backslash.
            system in "[^\"\\\\]{0,12}",
            builder in bytes(),
            args in prop::collection::vec(bytes(), 0..4),
            env in prop::collection::btree_map(bytes(), bytes(), 0..6),
        ) -> Derivation {
            Derivation { name, outputs, input_drvs, input_srcs, system, builder, args, env }
        }
    }

    proptest! {
        #[test]
        fn print_then_parse_round_trips(drv in derivation()) {
            let store_dir = StoreDir::default();
            let text = drv.to_aterm(&store_dir).unwrap();
            let back = Derivation::parse(&store_dir, &text, &drv.name).unwrap();
            prop_assert_eq!(&back, &drv);
            prop_assert_eq!(back.to_aterm(&store_dir).unwrap(), text);
            let all_utf8 = std::iter::once(&drv.builder)
                .chain(&drv.args)
                .chain(drv.env.iter().flat_map(|(k, v)| [k, v]))
                .all(|b| std::str::from_utf8(b).is_ok());
            prop_assert_eq!(drv.to_json(&store_dir).is_ok(), all_utf8);
        }

        #[test]
        fn mutated_input_never_panics(
            drv in derivation(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        ) {
            let store_dir = StoreDir::default();
            let mut text = drv.to_aterm(&store_dir).unwrap();
            for (at, byte, op) in edits {
                if text.is_empty() {
                    break;
                }
                let i = at.index(text.len());
                match op {
                    0 => text[i] = byte,
                    1 => { text.remove(i); }
                    2 => text.insert(i, byte),
                    _ => text.truncate(i),
                }
            }
            if let Ok(parsed) = Derivation::parse(&store_dir, &text, &drv.name) {
                // Whatever parses must print and hash without panicking too.
                let _ = parsed.to_aterm(&store_dir);
                let _ = parsed.to_json(&store_dir);
                let _ = parsed.derivation_type();
            }
        }

        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Derivation::parse(&StoreDir::default(), &data, "x");
            let mut prefixed = b"Derive(".to_vec();
            prefixed.extend_from_slice(&data);
            let _ = Derivation::parse(&StoreDir::default(), &prefixed, "x");
        }
    }
}
