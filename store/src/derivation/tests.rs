use super::aterm::{MAX_DYNAMIC_DEPTH, ParseErrorKind};
use super::*;
use crate::content_address::FileIngestionMethod;
use crate::hash::Hash;
use crate::store_path::StoreDir;

const DRV: &str = "/nix/store/00000000000000000000000000000000-dep.drv";

fn store() -> StoreDir {
    StoreDir::default()
}

fn parse(s: &str) -> Result<Derivation, ParseError> {
    Derivation::parse(&store(), s.as_bytes(), "x")
}

fn minimal() -> String {
    r#"Derive([("out","","","")],[],[],"sys","/bin/sh",[],[])"#.to_owned()
}

#[test]
fn minimal_derivation_round_trips() {
    let drv = parse(&minimal()).unwrap();
    assert_eq!(drv.outputs.get("out"), Some(&Output::Deferred));
    assert_eq!(drv.system, "sys");
    assert_eq!(drv.builder, b"/bin/sh");
    assert_eq!(drv.to_aterm(&store()).unwrap(), minimal().as_bytes());
}

#[test]
fn errors_name_the_offset_and_what_was_expected() {
    let cases: &[(&str, usize, ParseErrorKind)] = &[
        ("", 0, ParseErrorKind::Expected("D")),
        ("Dx", 1, ParseErrorKind::BadStart),
        ("Derive([", 8, ParseErrorKind::Expected("(")),
        (r#"Derive([("out","","","")]"#, 25, ParseErrorKind::Expected(",[")),
        (r#"Derive([("out,"","","")],[],[],"s","b",[],[])"#, 15, ParseErrorKind::Expected(",")),
        (r#"Derive([("out"#, 9, ParseErrorKind::UnterminatedString),
        ("Derive([(\"out\\", 9, ParseErrorKind::UnterminatedString),
        (r#"Derive([("out","nix/store/x","","")],"#, 15, ParseErrorKind::BadPath("nix/store/x".into())),
        (r#"DrvWithVersion("v2",[],"#, 15, ParseErrorKind::UnknownVersion("v2".into())),
        (r#"Derive([("out","/nix/store/x","r:sha256","impure")"#, 15, ParseErrorKind::ImpureWithPath),
        (r#"Derive([("out","/nix/store/x","r:sha256","")"#, 15, ParseErrorKind::FloatingWithPath),
    ];
    for (input, offset, kind) in cases {
        let err = parse(input).unwrap_err();
        assert_eq!((&err.kind, err.offset), (kind, *offset), "{input}");
    }
    let err = parse(r#"Derive([("out","","sha257","")"#).unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::HashAlgo(_)), "{err}");
    assert_eq!(err.offset, 18);
    let err = parse(r#"Derive([("out","/x","sha256","abc")"#).unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::Hash(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "invalid derivation at byte 29: hash 'abc' has wrong length for hash algorithm 'sha256'"
    );
    let err = parse(r#"Derive([("out","/elsewhere/00000000000000000000000000000000-x","","")"#).unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::StorePath(_)), "{err}");
    let err = Derivation::parse(&store(), b"Derive([(\"\xff\",", "x").unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::NotUtf8("output name"));
}

#[test]
fn leniencies_match_cppnix() {
    // Missing commas, any escaped byte, first duplicate output, last
    // duplicate env entry, trailing bytes.
    let drv = parse(
        r#"Derive([("out","","","")("out","","r:sha256","")],[],[],"s","\a\"\\",["x""y"],[("k","1"),("k","2")])trailing"#,
    )
    .unwrap();
    assert_eq!(drv.outputs.get("out"), Some(&Output::Deferred));
    assert_eq!(drv.builder, b"a\"\\");
    assert_eq!(drv.args, vec![b"x".to_vec(), b"y".to_vec()]);
    assert_eq!(drv.env_var("k"), Some(&b"2"[..]));
}

#[test]
fn escapes_only_what_cppnix_escapes() {
    let mut drv = parse(&minimal()).unwrap();
    drv.builder = b"\"\\\n\r\t\x01\x7f\xc3\xa9$".to_vec();
    let text = drv.to_aterm(&store()).unwrap();
    let expected: &[u8] = b"\"\\\"\\\\\\n\\r\\t\x01\x7f\xc3\xa9$\"";
    assert!(text.windows(expected.len()).any(|w| w == expected), "{}", String::from_utf8_lossy(&text));
    assert_eq!(Derivation::parse(&store(), &text, "x").unwrap(), drv);
}

#[test]
fn dynamic_inputs_use_the_versioned_form_and_nest_boundedly() {
    let text = format!(
        r#"DrvWithVersion("xp-dyn-drv",[("out","","","")],[("{DRV}",(["a"],[("out",(["b"],[("x",["c"])]))]))],[],"s","b",[],[])"#
    );
    let drv = parse(&text).unwrap();
    let node = drv.input_drvs.values().next().unwrap();
    assert_eq!(node.outputs, BTreeSet::from(["a".to_owned()]));
    assert_eq!(node.dynamic_outputs["out"].dynamic_outputs["x"], InputOutputs::new(["c"]));
    assert_eq!(drv.to_aterm(&store()).unwrap(), text.as_bytes());
    // The traditional form has no nesting.
    let err = parse(&format!(r#"Derive([("out","","","")],[("{DRV}",(["a"],[]))"#)).unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::Expected("["));
    let err = parse(&format!(r#"DrvWithVersion("xp-dyn-drv",[("out","","","")],[("{DRV}","a")"#)).unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::BadInputDrvsEntry);

    // Hostile nesting is an error, not a stack overflow.
    let depth = 100_000;
    let hostile =
        format!(r#"DrvWithVersion("xp-dyn-drv",[("out","","","")],[("{DRV}",{}"#, r#"([],[("o","#.repeat(depth));
    let err = parse(&hostile).unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::TooDeep);
    let ok_depth = MAX_DYNAMIC_DEPTH;
    let deep = format!(
        r#"DrvWithVersion("xp-dyn-drv",[("out","","","")],[("{DRV}",{}["x"]{})],[],"s","b",[],[])"#,
        r#"([],[("o","#.repeat(ok_depth),
        ")])".repeat(ok_depth)
    );
    assert!(parse(&deep).is_ok());
}

#[test]
fn derivation_types() {
    let h = Algorithm::Sha256.digest("x");
    let fixed =
        Output::Fixed(ContentAddress { method: ContentAddressMethod::Fixed(FileIngestionMethod::Flat), hash: h });
    let floating =
        |algorithm| Output::Floating { method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive), algorithm };
    let path = StorePath::from_base_name("00000000000000000000000000000000-x").unwrap();
    let with = |outs: Vec<(&str, Output)>| {
        let mut drv = parse(&minimal()).unwrap();
        drv.outputs = outs.into_iter().map(|(n, o)| (n.to_owned(), o)).collect();
        drv.derivation_type()
    };
    assert_eq!(with(vec![("out", Output::InputAddressed(path.clone()))]).unwrap(), DerivationType::InputAddressed);
    assert_eq!(with(vec![("out", fixed.clone())]).unwrap(), DerivationType::Fixed);
    assert_eq!(with(vec![("a", Output::Deferred), ("b", Output::Deferred)]).unwrap(), DerivationType::Deferred);
    assert!(matches!(with(vec![]), Err(DerivationError::NoOutputs)));
    assert!(matches!(with(vec![("dev", fixed.clone())]), Err(DerivationError::FixedOutputNotOut)));
    assert!(matches!(with(vec![("out", fixed.clone()), ("x", fixed)]), Err(DerivationError::MultipleFixedOutputs)));
    assert!(matches!(
        with(vec![("out", Output::Deferred), ("x", Output::InputAddressed(path))]),
        Err(DerivationError::MixedOutputTypes)
    ));
    assert!(matches!(
        with(vec![("a", floating(Algorithm::Sha256)), ("b", floating(Algorithm::Sha512))]),
        Err(DerivationError::FloatingAlgorithmsDiffer)
    ));
    assert!(DerivationType::Fixed.is_ca() && !DerivationType::Fixed.is_sandboxed());
    assert!(!DerivationType::Deferred.has_known_output_paths() && DerivationType::Deferred.is_sandboxed());
}

#[test]
fn placeholders() {
    // `builtins.placeholder "out"`, a constant every Nix agrees on.
    assert_eq!(hash_placeholder("out"), "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9");
    let drv = StorePath::from_base_name("g6p2wi3xaffwrw551c30zqi40gf9rx6k-inner.drv.drv").unwrap();
    let upstream = DownstreamPlaceholder::unknown_ca_output(&drv, "out").unwrap();
    let expected = Algorithm::Sha256.digest("nix-upstream-output:g6p2wi3xaffwrw551c30zqi40gf9rx6k:inner.drv");
    assert_eq!(upstream.render(), format!("/{}", expected.to_nix32()));
    let dev = DownstreamPlaceholder::unknown_ca_output(&drv, "dev").unwrap();
    let expected = Algorithm::Sha256.digest("nix-upstream-output:g6p2wi3xaffwrw551c30zqi40gf9rx6k:inner.drv-dev");
    assert_eq!(dev.render(), format!("/{}", expected.to_nix32()));
    let not_drv = StorePath::from_base_name("g6p2wi3xaffwrw551c30zqi40gf9rx6k-inner").unwrap();
    assert!(matches!(
        DownstreamPlaceholder::unknown_ca_output(&not_drv, "out"),
        Err(DerivationError::NotADerivationPath(_))
    ));
    assert_ne!(upstream.unknown_derivation("out"), upstream);
}

#[test]
fn hash_modulo_of_fixed_output_ignores_everything_but_the_output() {
    let h = Hash::parse_any("sha256:1ps6c35ir2bdavj7brfwm7sb7ym0jbrrfwv464qbp0j3h4dhpxw1", None).unwrap();
    let mut drv = parse(&minimal()).unwrap();
    drv.name = "src".into();
    let ca = ContentAddress { method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive), hash: h };
    drv.outputs = BTreeMap::from([("out".to_owned(), Output::Fixed(ca))]);
    let no_inputs = |p: &StorePath| -> Result<Derivation, String> { Err(format!("unexpected read of {p}")) };
    let a = hash_derivation_modulo(&drv, &store(), false, no_inputs).unwrap();
    drv.builder = b"/bin/other".to_vec();
    drv.input_drvs.insert(StorePath::from_base_name(&DRV[11..]).unwrap(), InputOutputs::new(["out"]));
    let b = hash_derivation_modulo(&drv, &store(), true, no_inputs).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.kind, DrvHashKind::Regular);
    let path = drv.output_paths(&store()).unwrap()["out"].clone().unwrap();
    let fingerprint = format!("fixed:out:r:sha256:{}:{}", h.to_base16(), store().display(&path));
    assert_eq!(a.hashes["out"], Algorithm::Sha256.digest(fingerprint));
}

#[test]
fn absurd_sizes_are_refused_before_reading() {
    // Zeroed pages from the allocator: never touched, so this costs nothing.
    let huge = vec![0u8; aterm::MAX_ATERM_LEN + 1];
    let err = Derivation::parse(&store(), &huge, "x").unwrap_err();
    assert_eq!((err.offset, err.kind), (0, ParseErrorKind::TooLarge(aterm::MAX_ATERM_LEN + 1)));
}
