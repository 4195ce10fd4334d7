//! `armitage derivation show` against Nix 2.26's `nix derivation show`, on
//! derivations Nix 2.8 instantiated.

use crate::support::*;
use testkit::TestStore;

const EXPR: &str = r#"
let
  sh = args: derivation ({ builder = "/bin/sh"; system = "x86_64-linux"; } // args);
  dep = sh { name = "dep"; args = ["-c" "echo dep > $out"]; };
  multi = sh { name = "multi"; outputs = ["out" "dev" "doc"]; inherit dep; src = ./input.txt;
               args = ["-c" "touch $out $dev $doc"]; };
in {
  inherit dep multi;
  uses-outputs = sh { name = "uses-outputs"; a = multi.dev; b = multi.doc; c = dep; };
  fixed-flat = sh { name = "fixed-flat"; outputHashMode = "flat"; outputHashAlgo = "sha256";
                    outputHash = "0000000000000000000000000000000000000000000000000000000000000000"; };
  fixed-recursive = sh { name = "fixed-recursive"; outputHashMode = "recursive";
                         outputHash = "sha1-Ln9MZ4R4YpOqjEPjBDE7GcPNGbI="; };
  structured = sh { name = "structured"; __structuredAttrs = true; list = [1 "two" null true 3.5];
                    attrs = { nested.deep = "x"; }; inherit dep; };
  awkward-env = sh { name = "awkward-env"; text = "tab\there\nnewline \"quotes\" back\\slash ünïcödé $dollar";
                     empty = ""; args = ["" "-c" "with space"]; };
}
"#;

#[test]
fn derivation_show_matches_nix_2_26() {
    let (Some(nix8), Some(nix26)) = (nix_2_8(), nix_2_26()) else { return };
    let store = TestStore::new();
    testkit::write_file(store.work_dir("nix").join("input.txt"), "input\n");
    let drvs = instantiate(&store, &nix8, "drvs", EXPR);
    assert_eq!(drvs.len(), 7, "{drvs:?}");
    for drv in &drvs {
        let theirs = run_json(nix_cli(&store, &nix26).args(["derivation", "show", drv]));
        let ours = run_json(store.armitage().args(["derivation", "show", drv]));
        assert_eq!(ours, theirs, "derivation show {drv}");
    }
    // All at once: one object keyed by .drv path.
    let theirs = run_json(nix_cli(&store, &nix26).args(["derivation", "show"]).args(&drvs));
    let ours = run_json(store.armitage().args(["derivation", "show"]).args(&drvs));
    assert_eq!(ours, theirs);
    assert_eq!(ours.as_object().unwrap().len(), drvs.len());
    let multi = ours.as_object().unwrap().iter().find(|(k, _)| k.ends_with("-multi.drv")).expect("multi.drv").1;
    assert_eq!(multi["outputs"].as_object().unwrap().len(), 3, "{multi}");
    assert_eq!(multi["inputSrcs"].as_array().unwrap().len(), 1, "{multi}");
}
