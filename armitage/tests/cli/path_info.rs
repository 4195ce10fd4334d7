//! `armitage path-info` against Nix 2.26's `nix path-info`, on a store Nix
//! 2.8 filled (built outputs with references and derivers, `.drv` files,
//! added sources, a signed path): the same database, so even the
//! registration times must match.

use crate::support::*;

#[test]
fn path_info_matches_nix_2_26() {
    let (Some(nix8), Some(nix26)) = (nix_2_8(), nix_2_26()) else { return };
    let store = building_store();
    let work = store.work_dir("in");
    let result = work.join("result");
    let top = build_chain(&store, &nix8, "pi", "1", &["--add-root", result.to_str().unwrap(), "--indirect"]);
    assert_eq!(top, result.to_str().unwrap(), "nix-store -r --add-root prints the root");
    let top = std::fs::read_link(&result).unwrap().to_str().unwrap().to_owned();
    let drv = testkit::line(testkit::run(store.nix(&nix8, "nix-store").args(["--query", "--deriver", &top])));
    varied_tree(&work.join("tree"));
    let source = testkit::line(testkit::run(store.nix(&nix8, "nix-store").arg("--add").arg(work.join("tree"))));
    // A signature on an input-addressed path.
    let (sk, pk) = (work.join("key.sec"), work.join("key.pub"));
    testkit::run(store.nix(&nix8, "nix-store").args(["--generate-binary-cache-key", "test-key-1"]).arg(&sk).arg(&pk));
    testkit::run(nix_cli(&store, &nix8).args(["store", "sign", "--key-file"]).arg(&sk).arg(&top));

    let closure: Vec<String> =
        testkit::run(store.nix(&nix8, "nix-store").args(["-qR", &top])).lines().map(str::to_owned).collect();
    assert!(closure.len() >= 3, "{closure:?}");
    let arg_sets: Vec<Vec<String>> = vec![
        vec![top.clone()],
        vec![source.clone(), drv.clone(), top.clone()],
        vec![result.to_str().unwrap().to_owned()],
        closure,
    ];
    for args in &arg_sets {
        for flags in [&[][..], &["-r"], &["-S"], &["-r", "-S"]] {
            let theirs = run_json(nix_cli(&store, &nix26).args(["path-info", "--json"]).args(flags).args(args));
            let ours = run_json(store.armitage().args(["path-info", "--json"]).args(flags).args(args));
            assert_eq!(ours, theirs, "path-info --json {flags:?} {args:?}");
        }
        for flags in [
            &[][..],
            &["-s"],
            &["-S"],
            &["-s", "-S"],
            &["-r"],
            &["-r", "-s", "-S"],
            &["--sigs"],
            &["-r", "--sigs", "-s"],
        ] {
            let theirs = testkit::run(nix_cli(&store, &nix26).arg("path-info").args(flags).args(args));
            let ours = testkit::run(store.armitage().arg("path-info").args(flags).args(args));
            assert_eq!(ours, theirs, "path-info {flags:?} {args:?}");
        }
    }
    // What the comparisons covered, so that an empty store cannot pass.
    let info = run_json(store.armitage().args(["path-info", "--json", "-r", &top]));
    let top_info = &info[&top];
    assert_eq!(top_info["deriver"], drv.as_str());
    assert_eq!(top_info["ultimate"], true);
    assert!(top_info["signatures"][0].as_str().unwrap().starts_with("test-key-1:"), "{top_info}");
    assert!(!top_info["references"].as_array().unwrap().is_empty(), "{top_info}");
    let source_info = run_json(store.armitage().args(["path-info", "--json", &source]));
    assert!(source_info[&source]["ca"].as_str().unwrap().starts_with("fixed:r:sha256:"), "{source_info}");
    let text = testkit::run(store.armitage().args(["path-info", "-r", "-s", "-S", &top]));
    let last = text.lines().last().unwrap();
    assert!(last.starts_with(&top), "dependencies come first, the path itself last:\n{text}");
}
