//! `.narinfo` parsing and printing: hand-written cases, then golden files
//! written by the real Nix (`nix copy --to file://...`), whose fields must
//! match `nix path-info --json`, which must print back byte for byte, whose
//! signatures must verify with our code, and into which a signature of ours
//! must be accepted by Nix when it copies from the cache.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use store::content_address::ContentAddress;
use store::hash::{Algorithm, Hash};
use store::narinfo::{NarInfo, NarInfoError, Problem};
use store::signing::{PublicKeys, SecretKey};
use store::store_path::{StoreDir, StorePath};
use testkit::{Nix, NixVersion, TestStore, run, run_fail};

const A: &str = "r6ni54fvlb65ha6drc8mngassizy5rns-a.txt";
const B: &str = "yssw62baqi66wdzn78ri9skgn5jf7ns8-b.txt";
const DRV: &str = "s4mfn2wg7cpbimc54mx7p6cmj55azvqy-out-test.drv";

/// A narinfo in exactly the form CppNix writes.
fn sample() -> String {
    format!(
        "StorePath: /nix/store/1p5my5zb66b9iihpfaji0xvwi7i8g4v0-out-test\n\
         URL: nar/008p823by62bh558ndw68vs22kmysgp697lxlfjdi37drk76vvj4.nar.xz\n\
         Compression: xz\n\
         FileHash: sha256:0bxsndhpmad1lxq95y3yki2cbjzqhy3jrvv9ij4yjlzw9w9djnfp\n\
         FileSize: 120\n\
         NarHash: sha256:008p823by62bh558ndw68vs22kmysgp697lxlfjdi37drk76vvj4\n\
         NarSize: 192\n\
         References: {A} {B}\n\
         Deriver: {DRV}\n\
         Sig: k1:NzbvUyCHjwp9kzveYjctLcMMNeE3n49MqpS5/5+vbnfY5K10kG+LWSFaYZN8cQRGJWcXTel6EV+/8pDknLkRCw==\n\
         Sig: k2:EijkpO8aC0LqSJOH9MmkJTEaOflj6QxCNGbfFA9yK4Ykkw+5d4fu6Bf8WA7qRHW15mKKH916Qpqmn+2XvizXBA==\n\
         CA: fixed:r:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic\n"
    )
}

fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
    NarInfo::parse(&StoreDir::default(), text, "test.narinfo")
}

#[test]
fn cppnix_form_parses_into_fields_and_prints_back_byte_for_byte() {
    let text = sample();
    let info = parse(&text).unwrap();
    assert_eq!(info.path.base_name(), "1p5my5zb66b9iihpfaji0xvwi7i8g4v0-out-test");
    assert_eq!(info.url, "nar/008p823by62bh558ndw68vs22kmysgp697lxlfjdi37drk76vvj4.nar.xz");
    assert_eq!(info.compression, "xz");
    assert_eq!(info.file_size, Some(120));
    assert_eq!(info.file_hash.unwrap().to_nix32(), "0bxsndhpmad1lxq95y3yki2cbjzqhy3jrvv9ij4yjlzw9w9djnfp");
    assert_eq!(info.nar_size, 192);
    assert_eq!(info.nar_hash.algorithm(), Algorithm::Sha256);
    let refs: Vec<&str> = info.references.iter().map(StorePath::base_name).collect();
    assert_eq!(refs, [A, B]);
    assert_eq!(info.deriver.as_ref().map(StorePath::base_name), Some(DRV));
    assert_eq!(info.sigs.len(), 2);
    assert_eq!(info.ca.unwrap().to_string(), "fixed:r:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
    assert_eq!(info.system, None);
    assert_eq!(info.to_text(&StoreDir::default()), text);
}

#[test]
fn parsing_is_as_lenient_as_cppnix() {
    let nar_hash = Hash::parse_prefixed("sha256:008p823by62bh558ndw68vs22kmysgp697lxlfjdi37drk76vvj4").unwrap();
    for form in
        [nar_hash.to_sri(), format!("sha256:{}", nar_hash.to_base16()), format!("sha256:{}", nar_hash.to_base64())]
    {
        let text = format!(
            "StorePath: /nix/store/{A}\nURL: nar/x.nar\nNarHash: {form}\nNarSize: 5\nFutureField: whatever\n\
             Deriver: unknown-deriver\nCA: \nReferences: \nSystem: x86_64-linux\n"
        );
        let info = parse(&text).unwrap();
        assert_eq!(info.nar_hash, nar_hash, "{form}");
        assert_eq!(info.compression, "bzip2", "no Compression means bzip2");
        assert_eq!(info.deriver, None);
        assert_eq!(info.ca, None);
        assert!(info.references.is_empty());
        assert_eq!(info.system.as_deref(), Some("x86_64-linux"));
        assert_eq!(
            info.to_text(&StoreDir::default()),
            format!(
                "StorePath: /nix/store/{A}\nURL: nar/x.nar\nCompression: bzip2\nNarHash: sha256:{}\n\
                 NarSize: 5\nReferences: \nSystem: x86_64-linux\n",
                nar_hash.to_nix32()
            ),
            "normalised on printing"
        );
    }
    // A repeated field overrides, except References and CA (below).
    let text =
        format!("StorePath: /nix/store/{A}\nURL: a\nURL: b\nNarHash: {}\nNarSize: 1\nNarSize: 2\n", nar_hash.to_sri());
    let info = parse(&text).unwrap();
    assert_eq!((info.url.as_str(), info.nar_size), ("b", 2));
}

#[test]
fn missing_mandatory_fields_are_named() {
    let full = format!(
        "StorePath: /nix/store/{A}\nURL: nar/x.nar\nNarHash: sha256:008p823by62bh558ndw68vs22kmysgp697lxlfjdi37drk76vvj4\nNarSize: 5\n"
    );
    assert!(parse(&full).is_ok());
    for (field, problem) in [
        ("StorePath", Problem::Missing("StorePath")),
        ("URL", Problem::Missing("URL")),
        ("NarHash", Problem::Missing("NarHash")),
        ("NarSize", Problem::ZeroNarSize),
    ] {
        let text: String = full.lines().filter(|l| !l.starts_with(field)).map(|l| format!("{l}\n")).collect();
        let err = parse(&text).unwrap_err();
        assert_eq!(err.problem, problem, "{field}");
        assert!(err.to_string().starts_with("NAR info file 'test.narinfo' is corrupt: "), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    let zero = full.replace("NarSize: 5", "NarSize: 0");
    assert_eq!(
        parse(&zero).unwrap_err().to_string(),
        "NAR info file 'test.narinfo' is corrupt: NarSize missing or zero"
    );
}

#[test]
fn malformed_lines_are_reported_with_their_line_number() {
    let head = format!("StorePath: /nix/store/{A}\nURL: nar/x.nar\n");
    type Check = fn(&Problem) -> bool;
    let cases: [(&str, Check, &str); 9] = [
        ("no colon here\n", |p| matches!(p, Problem::MissingColon { line: 3 }), "expecting ':' at line 3"),
        ("NarSize: 5", |p| matches!(p, Problem::MissingNewline { line: 3 }), "expecting '\\n' at line 3"),
        (
            "NarHash: 008p823by62bh558ndw68vs22kmysgp697lxlfjdi37drk76vvj4\n",
            |p| matches!(p, Problem::BadHash { field: "NarHash", line: 3, .. }),
            "bad hash in NarHash at line 3",
        ),
        (
            "FileHash: sha256:abc\n",
            |p| matches!(p, Problem::BadHash { field: "FileHash", line: 3, .. }),
            "bad hash in FileHash at line 3",
        ),
        (
            "NarSize: -1\n",
            |p| matches!(p, Problem::BadSize { field: "NarSize", line: 3, .. }),
            "invalid NarSize '-1' at line 3",
        ),
        (
            "References: not-a-path\n",
            |p| matches!(p, Problem::BadPath { field: "References", line: 3, .. }),
            "bad store path in References at line 3",
        ),
        (
            "References: r6ni54fvlb65ha6drc8mngassizy5rns-a.txt\nReferences: r6ni54fvlb65ha6drc8mngassizy5rns-a.txt\n",
            |p| matches!(p, Problem::Repeated { field: "References", line: 4 }),
            "extra References at line 4",
        ),
        (
            "CA: text:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic\nCA: text:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic\n",
            |p| matches!(p, Problem::Repeated { field: "CA", line: 4 }),
            "extra CA at line 4",
        ),
        ("CA: blob:x\n", |p| matches!(p, Problem::BadCa { line: 3, .. }), "bad CA at line 3"),
    ];
    for (tail, check, message) in cases {
        let err = parse(&format!("{head}{tail}")).unwrap_err();
        assert!(check(&err.problem), "{tail:?}: {err:?}");
        assert!(err.to_string().contains(message), "{tail:?}: {err}");
    }
    let other_dir = format!("StorePath: /gnu/store/{A}\n");
    assert!(matches!(parse(&other_dir).unwrap_err().problem, Problem::BadPath { field: "StorePath", line: 1, .. }));
}

#[test]
fn signing_a_narinfo_adds_a_signature_that_counts() {
    let dir = StoreDir::default();
    let mut info = parse(&sample()).unwrap();
    info.sigs.clear();
    let key = SecretKey::generate("ours-1").unwrap();
    let keys: PublicKeys = [key.to_public_key()].into_iter().collect();
    assert_eq!(info.count_valid_signatures(&dir, &keys).unwrap(), 0);
    info.sign(&dir, &key).unwrap();
    assert_eq!(info.count_valid_signatures(&dir, &keys).unwrap(), 1);
    // The signature covers the references: changing them invalidates it.
    info.references.remove(&StorePath::from_base_name(A).unwrap());
    assert_eq!(info.count_valid_signatures(&dir, &keys).unwrap(), 0);
}

// --- against the real Nix ---------------------------------------------------

/// A store with two text files (`a` and `b`, which refers to `a`), a
/// derivation using both, and its built output, which refers to both.
struct Populated {
    store: TestStore,
    dir: StoreDir,
    out: String,
    drv: String,
}

fn populate(nix: &Nix) -> Populated {
    // Built as the test's own user: CppNix kills every process of a build
    // user after a build, so builds with build users from tests running at
    // the same time killed each other ("cannot kill processes for uid …").
    let store = TestStore::with_conf("build-users-group =");
    let expr = store.work_dir("expr").join("d.nix");
    testkit::write_file(
        &expr,
        r#"let
  a = builtins.toFile "a.txt" "hello";
  b = builtins.toFile "b.txt" "refers to ${a}";
in derivation {
  name = "out-test";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo ${a} ${b} > $out" ];
}
"#,
    );
    let drv = testkit::line(run(store.nix(nix, "nix-instantiate").arg(&expr)));
    let mut realise = store.nix(nix, "nix-store");
    if nix.version == NixVersion::V2_26 {
        // 2.26 sets its hook to `<own exe> __build-remote` after reading
        // nix.conf, and the unpacked 2.26 cannot be started that way. There
        // are no remote builders, so no hook is needed (an empty hook is
        // what 2.8 cannot start, so it keeps its default).
        realise.args(["--option", "build-hook", ""]);
    }
    let out = testkit::line(run(realise.arg("--realise").arg(&drv)));
    let dir = StoreDir::new(store.store_dir.clone()).unwrap();
    Populated { store, dir, out, drv }
}

impl Populated {
    fn nix_cmd(&self, nix: &Nix) -> std::process::Command {
        let mut cmd = self.store.nix(nix, "nix");
        cmd.args(["--extra-experimental-features", "nix-command"]);
        cmd
    }

    /// `nix copy` of the output's closure and the derivation to a new
    /// file:// cache; returns the cache directory.
    fn copy_to_cache(&self, nix: &Nix, name: &str, params: &str) -> std::path::PathBuf {
        let cache = self.store.work_dir(name);
        let url = format!("file://{}?{params}", cache.display());
        run(self.nix_cmd(nix).args(["copy", "--to", &url, &self.out]));
        run(self.nix_cmd(nix).args(["copy", "--derivation", "--to", &url, &self.drv]));
        cache
    }
}

fn narinfos(cache: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut files: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    files
}

/// `nix path-info --json` of everything in a store, by path (2.8 prints an
/// array, 2.26 an object keyed by path).
fn path_info_json(cmd: &mut std::process::Command) -> BTreeMap<String, Value> {
    let json: Value = serde_json::from_str(&run(cmd)).unwrap();
    match json {
        Value::Array(items) => items.into_iter().map(|i| (i["path"].as_str().unwrap().to_owned(), i)).collect(),
        Value::Object(map) => map.into_iter().collect(),
        other => panic!("unexpected path-info JSON {other}"),
    }
}

fn assert_matches_path_info(info: &NarInfo, json: &Value, dir: &StoreDir) {
    let full = dir.display(&info.path);
    let hash = |v: &Value| Hash::parse_any(v.as_str().unwrap(), None).unwrap();
    assert_eq!(info.nar_hash, hash(&json["narHash"]), "{full}");
    assert_eq!(Some(info.nar_size), json["narSize"].as_u64(), "{full}");
    let refs: BTreeSet<String> = info.references.iter().map(|r| dir.display(r)).collect();
    let json_refs: BTreeSet<String> =
        json["references"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    assert_eq!(refs, json_refs, "{full}");
    assert_eq!(info.deriver.as_ref().map(|d| dir.display(d)).as_deref(), json["deriver"].as_str(), "{full}");
    assert_eq!(info.ca.map(|c| c.to_string()).as_deref(), json["ca"].as_str(), "{full}");
    if let Some(ca) = json["ca"].as_str() {
        assert_eq!(info.ca, Some(ContentAddress::parse(ca).unwrap()));
    }
    let sigs: BTreeSet<&str> =
        json["signatures"].as_array().map(|s| s.iter().map(|s| s.as_str().unwrap()).collect()).unwrap_or_default();
    assert_eq!(info.sigs.iter().map(String::as_str).collect::<BTreeSet<_>>(), sigs, "{full}");
    assert_eq!(Some(info.url.as_str()), json["url"].as_str(), "{full}");
    assert_eq!(info.file_hash, Some(hash(&json["downloadHash"])), "{full}");
    assert_eq!(info.file_size, json["downloadSize"].as_u64(), "{full}");
}

#[test]
fn narinfos_written_by_nix_parse_match_path_info_print_back_and_verify() {
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { continue };
        let p = populate(&nix);
        let keys_dir = p.store.work_dir("keys");
        let (sk, pk) = (keys_dir.join("sk"), keys_dir.join("pk"));
        run(p.store.nix(&nix, "nix-store").arg("--generate-binary-cache-key").arg("golden-1").arg(&sk).arg(&pk));
        let trusted = PublicKeys::parse_all([std::fs::read_to_string(&pk).unwrap().as_str()]).unwrap();

        for compression in ["none", "xz"] {
            let cache =
                p.copy_to_cache(&nix, compression, &format!("secret-key={}&compression={compression}", sk.display()));
            let files = narinfos(&cache);
            assert_eq!(files.len(), 4, "{version}: a, b, the output and the derivation");
            let cache_url = format!("file://{}", cache.display());
            let json = path_info_json(p.nix_cmd(&nix).args(["path-info", "--json", "--all", "--store", &cache_url]));
            let mut seen_refs = 0;
            for (file, text) in files {
                let whence = file.display().to_string();
                let info = NarInfo::parse(&p.dir, &text, &whence).unwrap_or_else(|e| panic!("{version}: {e}"));
                assert_eq!(info.to_text(&p.dir), text, "{version}: {whence} does not print back");
                assert_eq!(info.compression, compression);
                let path = p.dir.display(&info.path);
                assert!(file.ends_with(format!("{}.narinfo", info.path.hash_part())));
                assert_matches_path_info(&info, &json[&path], &p.dir);
                assert_eq!(info.count_valid_signatures(&p.dir, &trusted).unwrap(), 1, "{version}: {whence}");
                if compression == "none" {
                    assert_eq!(info.file_hash, Some(info.nar_hash));
                } else {
                    assert_ne!(info.file_hash, Some(info.nar_hash));
                }
                seen_refs += info.references.len();
            }
            assert_eq!(seen_refs, 5, "b -> a, out -> a b, drv -> a b");
        }
    }
}

#[test]
fn nix_accepts_our_signature_and_rejects_a_tampered_one() {
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { continue };
        let ours = SecretKey::generate("armitage-test-1").unwrap();
        let p = populate(&nix);
        // Unsigned narinfos from Nix; then our signature on the output's.
        let cache = p.copy_to_cache(&nix, "unsigned", "compression=none");
        let out_path = p.dir.parse_path(&p.out).unwrap();
        let narinfo_file = cache.join(format!("{}.narinfo", out_path.hash_part()));
        let mut info = NarInfo::parse(&p.dir, &std::fs::read_to_string(&narinfo_file).unwrap(), "out").unwrap();
        assert!(info.sigs.is_empty() && info.ca.is_none(), "the output is input-addressed and unsigned");
        info.sign(&p.dir, &ours).unwrap();
        std::fs::write(&narinfo_file, info.to_text(&p.dir)).unwrap();

        // The same cache with the signature's last byte changed.
        let tampered_cache = p.store.work_dir("tampered");
        for (file, text) in narinfos(&cache) {
            let mut text = text;
            if file == narinfo_file {
                let sig = info.sigs.iter().next().unwrap().clone();
                let (name, b64) = sig.split_once(':').unwrap();
                let mut bytes = data_encoding::BASE64.decode(b64.as_bytes()).unwrap();
                bytes[63] ^= 1;
                text = text.replace(&sig, &format!("{name}:{}", data_encoding::BASE64.encode(&bytes)));
            }
            std::fs::write(tampered_cache.join(file.file_name().unwrap()), text).unwrap();
        }
        for entry in ["nix-cache-info", "nar"] {
            let status = std::process::Command::new("cp")
                .arg("-r")
                .arg(cache.join(entry))
                .arg(&tampered_cache)
                .status()
                .unwrap();
            assert!(status.success());
        }

        // Forget the output, then fetch it back with signatures required and
        // only our key trusted.
        let conf_file = p.store.conf_dir.join("nix.conf");
        let conf = std::fs::read_to_string(&conf_file).unwrap();
        let conf = format!("{conf}require-sigs = true\ntrusted-public-keys = {}\n", ours.to_public_key());
        std::fs::write(&conf_file, conf).unwrap();
        run(p.store.nix(&nix, "nix-store").args(["--delete", &p.out]));
        let copy_from = |dir: &Path| {
            let mut cmd = p.nix_cmd(&nix);
            cmd.args(["copy", "--from", &format!("file://{}", dir.display()), &p.out]);
            cmd
        };
        let err = run_fail(&mut copy_from(&tampered_cache));
        assert!(err.contains("signature"), "{version}: {err}");
        run(&mut copy_from(&cache));
        let valid = run(p.store.nix(&nix, "nix-store").args(["--check-validity", "--print-invalid", &p.out]));
        assert_eq!(valid, "", "{version}: the output is valid again");
        let sigs = path_info_json(p.nix_cmd(&nix).args(["path-info", "--json", &p.out]));
        let stored: Vec<&str> =
            sigs[&p.out]["signatures"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(stored, [info.sigs.iter().next().unwrap().as_str()], "{version}: Nix kept our signature");
    }
}
