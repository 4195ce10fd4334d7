//! Stock Nix clients (2.8 and 2.26) against armitage and against CppNix's
//! nix-daemon of the same version, side by side: each daemon serves a store
//! of its own, the same commands run through both, and the answers must be
//! the same once ours' store paths are translated into theirs'
//! ([`compat_tests::PathMap`]; registration times are never compared, and
//! anything else left out is named where it is).

use compat_tests::base_name;
use compat_tests::users::{as_user, untrusted_user};
use compat_tests::{Side, Twins, export_record, export_stream, make_tree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{NixVersion, line, write_file};

/// A chain of derivations: each has one input derivation and one
/// source (so a `.drv`'s input lists have one element each and read the
/// same in both stores): a `builtins.toFile` text, or for the first one a
/// file added from the work dir. The last one has two outputs.
const CHAIN_NIX: &str = r#"
let
  mk = n: extra: derivation ({
    name = "chain-${toString n}";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo ${toString n} > $out" ];
    src = builtins.toFile "src-${toString n}" "source of link ${toString n}\n";
  } // extra);
  c1 = mk 1 { src = ./input-file; };
  c2 = mk 2 { prev = c1; };
  c3 = mk 3 { prev = c2; };
  c4 = mk 4 { prev = c3; outputs = [ "out" "dev" ]; };
in c4
"#;

/// What [`chain`] made, in theirs' terms.
struct Chain {
    /// chain-1.drv .. chain-4.drv.
    drvs: Vec<String>,
    /// The `out` output of each, registered as if built (imported with its
    /// deriver), each referring to the previous one.
    outs: Vec<String>,
    /// chain-4's `dev` output, registered likewise, referring to its `out`.
    dev: String,
    /// input-file, src-2 .. src-4 (`builtins.toFile`).
    srcs: Vec<String>,
}

/// Instantiates [`CHAIN_NIX`] through both daemons (the `.drv` files must
/// be byte for byte the same, translated) and registers the outputs
/// through `nix-store --import` of a hand-made export with their derivers.
fn chain(tw: &Twins) -> Chain {
    let inp = tw.theirs.work_dir("chain");
    write_file(inp.join("chain.nix"), CHAIN_NIX);
    write_file(inp.join("input-file"), "an input file\n");
    let top = line(tw.same("nix-instantiate", "nix-instantiate", |_, c| {
        c.arg(inp.join("chain.nix"));
    }));
    // Walk down the chain; comparing a .drv teaches the map the paths it names.
    let mut drvs = vec![top];
    loop {
        let [o, t] = Side::BOTH.map(|side| std::fs::read(tw.path(side, &drvs[0])).expect("read the .drv"));
        tw.assert_same_bytes(&format!("the contents of {}", drvs[0]), &o, &t);
        let text = String::from_utf8(t).expect("a UTF-8 .drv");
        match store_paths(&tw.theirs.store_dir, &text).into_iter().find(|p| p.ends_with(".drv")) {
            Some(prev) => drvs.insert(0, prev),
            None => break,
        }
    }
    assert_eq!(drvs.len(), 4, "{drvs:?}");
    let srcs: Vec<String> = drvs
        .iter()
        .map(|d| {
            let text = read(d);
            let at = text.find("(\"src\",\"").expect("a src attribute") + 8;
            text[at..at + text[at..].find('"').unwrap()].to_owned()
        })
        .collect();
    // The outputs, as nix-store -q --outputs sees them (it reads the .drv;
    // chain-4's two come in path order).
    let outputs = tw.same_lines("nix-store -q --outputs", "nix-store", |side, c| {
        c.args(["-q", "--outputs"]).args(drvs.iter().map(|d| tw.path(side, d)));
    });
    let outs: Vec<String> = (1..=4)
        .map(|n| outputs.lines().find(|l| l.ends_with(&format!("-chain-{n}"))).expect("an out output").to_owned())
        .collect();
    let dev = outputs.lines().find(|l| l.ends_with("-chain-4-dev")).expect("a dev output").to_owned();
    // Register each output as if built: contents naming the previous
    // output by base name only (a full path would name the other store).
    let streams = Side::BOTH.map(|side| {
        let mut records = Vec::new();
        for (i, out) in outs.iter().enumerate() {
            let out = tw.path(side, out);
            let mut contents = format!("built link {}\n", i + 1);
            let mut refs = Vec::new();
            if i > 0 {
                let prev = tw.path(side, &outs[i - 1]);
                contents.push_str(&format!("after {}\n", base_name(&prev)));
                refs.push(prev);
            }
            let nar = store::nar::dump_bytes(contents.as_bytes(), false);
            records.push(export_record(&nar, &out, &refs, Some(&tw.path(side, &drvs[i]))));
        }
        let nar =
            store::nar::dump_bytes(format!("headers of {}\n", base_name(&tw.path(side, &outs[3]))).as_bytes(), false);
        records.push(export_record(
            &nar,
            &tw.path(side, &dev),
            &[tw.path(side, &outs[3])],
            Some(&tw.path(side, &drvs[3])),
        ));
        export_stream(&records)
    });
    let imported = tw.same("nix-store --import of built outputs", "nix-store", |side, c| {
        c.arg("--import").stdin(stdin_bytes(tw, side, "outs.export", &streams[side as usize]));
    });
    assert_eq!(imported.lines().collect::<Vec<_>>(), outs.iter().chain([&dev]).map(String::as_str).collect::<Vec<_>>());
    Chain { drvs, outs, dev, srcs }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The store paths (of `dir`) named in `text`, in order of appearance.
fn store_paths(dir: &str, text: &str) -> Vec<String> {
    let prefix = format!("{dir}/");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        let tail = &rest[at..];
        let end = tail[prefix.len()..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c)))
            .map_or(tail.len(), |e| e + prefix.len());
        found.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    found
}

/// A file with `bytes` in `side`'s work dir, opened for a command's stdin.
fn stdin_bytes(tw: &Twins, side: Side, name: &str, bytes: &[u8]) -> std::fs::File {
    let file = tw.store(side).work_dir("stdin").join(name);
    std::fs::write(&file, bytes).expect("write stdin file");
    std::fs::File::open(&file).expect("open stdin file")
}

/// `sha256:<nix32>` of the NAR of a path, as `nix-store -q --hash` prints it.
fn nar_hash(nar: &[u8]) -> String {
    format!("sha256:{}", store::hash::Algorithm::Sha256.digest(nar).to_nix32())
}

/// Plain adds (`nix-store --add`, `--add-fixed [--recursive]` with every
/// algorithm, `nix store add-path`, `nix store add-file`), then the
/// queries on them, `nix path-info --json -r -S`, `nix-store --dump`,
/// `nix store cat` and `nix store ls`.
fn adds_and_queries(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let inp = tw.theirs.work_dir("adds");
    write_file(inp.join("hello.txt"), "hello\n");
    write_file(inp.join("script"), "#!/bin/sh\necho hi\n");
    set_mode(&inp.join("script"), 0o755);
    make_tree(&inp.join("tree"), 3, 30, 3000);
    std::os::unix::fs::symlink("hello.txt", inp.join("link")).unwrap();
    let mut paths = Vec::new();
    for f in ["hello.txt", "script", "tree", "link"] {
        paths.push(line(tw.same(&format!("nix-store --add {f}"), "nix-store", |_, c| {
            c.arg("--add").arg(inp.join(f));
        })));
    }
    for algo in ["md5", "sha1", "sha256", "sha512"] {
        paths.push(line(tw.same(&format!("nix-store --add-fixed {algo}"), "nix-store", |_, c| {
            c.args(["--add-fixed", algo]).arg(inp.join("script"));
        })));
        paths.push(line(tw.same(&format!("nix-store --add-fixed --recursive {algo}"), "nix-store", |_, c| {
            c.args(["--add-fixed", "--recursive", algo]).arg(inp.join("tree"));
        })));
    }
    // The same again: already valid, the same paths.
    let again = line(tw.same("nix-store --add again", "nix-store", |_, c| {
        c.arg("--add").arg(inp.join("tree"));
    }));
    assert_eq!(again, paths[2]);
    paths.push(line(tw.same("nix store add-path", "nix", |_, c| {
        c.args(["store", "add-path", "--name", "renamed-tree"]).arg(inp.join("tree"));
    })));
    paths.push(line(tw.same("nix store add-file", "nix", |_, c| {
        c.args(["store", "add-file"]).arg(inp.join("hello.txt"));
    })));
    for p in &paths {
        assert!(p.starts_with(&tw.theirs.store_dir), "{p}");
    }
    let all = |side: Side, c: &mut Command| {
        c.args(paths.iter().map(|p| tw.path(side, p)));
    };
    // One line per argument, in argument order.
    tw.same("nix-store -q --hash", "nix-store", |s, c| {
        c.args(["-q", "--hash"]);
        all(s, c);
    });
    tw.same("nix-store -q --size", "nix-store", |s, c| {
        c.args(["-q", "--size"]);
        all(s, c);
    });
    tw.same("nix-store -q --deriver", "nix-store", |s, c| {
        c.args(["-q", "--deriver"]);
        all(s, c);
    });
    for q in ["--references", "--referrers", "--requisites"] {
        let out = tw.same_lines(&format!("nix-store -q {q}"), "nix-store", |s, c| {
            c.args(["-q", q]);
            all(s, c);
        });
        if q == "--requisites" {
            assert_eq!(out.lines().count(), paths.len() - 1, "every path once (the tree was added twice)");
        }
    }
    tw.same("nix-store --check-validity", "nix-store", |s, c| {
        c.args(["--check-validity", "--print-invalid"]);
        all(s, c);
    });
    let info = tw.same_path_info("nix path-info --json -r -S", |s, c| {
        c.args(["-r", "-S"]);
        all(s, c);
    });
    assert_eq!(info.len(), paths.len() - 1);
    // Contents, read by the clients from disk after asking the daemon.
    let tree = &paths[2];
    let [o, t] = tw.both("nix-store", |s, c| {
        c.arg("--dump").arg(tw.path(s, tree));
    });
    assert!(o.status.success() && t.status.success());
    assert_eq!(o.stdout, t.stdout, "nix-store --dump of a tree");
    assert_eq!(nar_hash(&t.stdout), nar_hash(&tw.nar(Side::Theirs, tree)));
    let file = first_file(&inp.join("tree"));
    let rel = file.strip_prefix(inp.join("tree")).unwrap().to_str().unwrap().to_owned();
    let [o, t] = tw.both("nix", |s, c| {
        c.args(["store", "cat"]).arg(format!("{}/{rel}", tw.path(s, tree)));
    });
    assert!(o.status.success() && t.status.success(), "nix store cat");
    assert!(o.stdout == t.stdout && t.stdout == std::fs::read(&file).unwrap(), "nix store cat {rel}");
    tw.same("nix store ls -lR", "nix", |s, c| {
        c.args(["store", "ls", "-lR"]).arg(tw.path(s, tree));
    });
    tw.same("nix store ls --json", "nix", |s, c| {
        c.args(["store", "ls", "--json", "-R"]).arg(tw.path(s, tree));
    });
    // A path that is not valid.
    let missing = format!("{}/00000000000000000000000000000000-missing", tw.theirs.store_dir);
    tw.map.borrow_mut().pair(&format!("{}/00000000000000000000000000000000-missing", tw.ours.store_dir), &missing);
    tw.same_failure("nix-store -q --references of an invalid path", "nix-store", |s, c| {
        c.args(["-q", "--references", &tw.path(s, &missing)]);
    });
    tw.same("nix-store --check-validity --print-invalid", "nix-store", |s, c| {
        c.args(["--check-validity", "--print-invalid", &tw.path(s, &missing)]);
    });
    // Asked to realise it (BuildPaths) or to copy it (BuildPathsWithResults
    // first): nothing can substitute it.
    tw.same_failure("nix-store -r of an invalid path", "nix-store", |s, c| {
        c.args(["-r", &tw.path(s, &missing)]);
    });
    tw.same_failure("nix copy of an invalid path", "nix", |s, c| {
        let cache = tw.store(s).work_dir("cache");
        c.args(["copy", "--to", &format!("file://{}", cache.display()), &tw.path(s, &missing)]);
    });
}

#[test]
fn adds_and_queries_with_nix_2_8() {
    adds_and_queries(NixVersion::V2_8);
}

#[test]
fn adds_and_queries_with_nix_2_26() {
    adds_and_queries(NixVersion::V2_26);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Some regular file below `dir` (the first in sorted order).
fn first_file(dir: &Path) -> PathBuf {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for e in entries {
        let meta = std::fs::symlink_metadata(&e).unwrap();
        if meta.is_file() {
            return e;
        }
        if meta.is_dir() {
            return first_file(&e);
        }
    }
    panic!("no file below {}", dir.display());
}

/// `nix-instantiate` of a chain of derivations (`.drv` bytes and paths),
/// outputs registered with derivers, and the queries that walk the graph:
/// references, referrers, requisites, tree, graph, deriver, outputs, hash,
/// size, and `nix path-info --json -r -S` of the whole closure.
fn derivation_closure_queries(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let ch = chain(&tw);
    let top = ch.drvs.last().unwrap();
    let drv_arg = |side: Side, c: &mut Command, p: &str| {
        c.arg(tw.path(side, p));
    };
    for q in ["--references", "--referrers", "--requisites", "--referrers-closure"] {
        for p in [top, &ch.drvs[0], &ch.srcs[1], &ch.outs[0], &ch.outs[3]] {
            tw.same_lines(&format!("nix-store -q {q} {p}"), "nix-store", |s, c| {
                c.args(["-q", q]);
                drv_arg(s, c, p);
            });
        }
    }
    let requisites = tw.same_lines("nix-store -qR of the top drv", "nix-store", |s, c| {
        c.arg("-qR");
        drv_arg(s, c, top);
    });
    // 4 drvs and their 4 sources.
    assert_eq!(requisites.lines().count(), 8, "{requisites}");
    let [o, t] = tw.both("nix-store", |s, c| {
        c.args(["-q", "--tree"]);
        drv_arg(s, c, top);
    });
    let translated = tw.map.borrow().to_theirs_str(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(
        canonical_tree(&translated),
        canonical_tree(&String::from_utf8_lossy(&t.stdout)),
        "nix-store -q --tree (children sorted: their order follows the hashes)"
    );
    // Edge colours are handed out in visiting order, which follows the
    // hashes: compared without them, as sets of lines.
    for p in [top, &ch.outs[3]] {
        let [o, t] = tw.both("nix-store", |s, c| {
            c.args(["-q", "--graph"]);
            drv_arg(s, c, p);
        });
        let uncoloured = |out: &std::process::Output| {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().map(|l| l.split(" [color = ").next().unwrap_or(l).to_owned()).collect::<Vec<_>>().join("\n")
        };
        tw.assert_same_lines(&format!("nix-store -q --graph {p}"), &uncoloured(&o), &uncoloured(&t));
    }
    let derivers = tw.same("nix-store -q --deriver", "nix-store", |s, c| {
        c.args(["-q", "--deriver"]).args(ch.outs.iter().chain(&ch.drvs).chain(&ch.srcs).map(|p| tw.path(s, p)));
    });
    assert_eq!(derivers.lines().take(4).collect::<Vec<_>>(), ch.drvs.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(derivers.lines().skip(4).all(|l| l == "unknown-deriver"), "{derivers}");
    if version == NixVersion::V2_26 {
        let valid = tw.same("nix-store -q --valid-derivers", "nix-store", |s, c| {
            c.args(["-q", "--valid-derivers"]).args(ch.outs.iter().map(|p| tw.path(s, p)));
        });
        assert_eq!(valid.lines().collect::<Vec<_>>(), ch.drvs.iter().map(String::as_str).collect::<Vec<_>>());
    }
    tw.same("nix-store -q --size", "nix-store", |s, c| {
        c.args(["-q", "--size"]).args(requisites.lines().map(|p| tw.path(s, p)));
    });
    // A .drv's hash depends on the store paths it names: each side's must
    // be the hash of its own NAR; the rest are the same on both sides.
    let [o, t] = tw.both("nix-store", |s, c| {
        c.args(["-q", "--hash"]).args(requisites.lines().map(|p| tw.path(s, p)));
    });
    for (side, out) in [(Side::Ours, &o), (Side::Theirs, &t)] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let hashes: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        for (p, h) in requisites.lines().zip(&hashes) {
            assert_eq!(h, &nar_hash(&tw.nar(side, p)), "{side:?}: nix-store -q --hash {p}");
        }
    }
    let info = tw.same_path_info("nix path-info --json -r -S of the closure", |s, c| {
        c.args(["-r", "-S"]);
        if version == NixVersion::V2_8 {
            // 2.8 takes a .drv argument to mean its outputs.
            c.arg("--derivation");
        }
        drv_arg(s, c, top);
    });
    assert_eq!(info.len(), 8);
    tw.same_path_info("nix path-info --json -r -S of an output", |s, c| {
        c.args(["-r", "-S"]);
        drv_arg(s, c, &ch.outs[3]);
    });
}

#[test]
fn derivation_closure_queries_with_nix_2_8() {
    derivation_closure_queries(NixVersion::V2_8);
}

#[test]
fn derivation_closure_queries_with_nix_2_26() {
    derivation_closure_queries(NixVersion::V2_26);
}

/// `nix-store -q --tree` output with each node's children sorted, so that
/// two trees whose siblings come in hash order compare equal. Assumes no
/// node is shown twice (`[...]`), which holds for the chain.
fn canonical_tree(text: &str) -> String {
    struct Node {
        label: String,
        children: Vec<Node>,
    }
    fn render(node: &Node, depth: usize, out: &mut String) {
        out.push_str(&format!("{}{}\n", "  ".repeat(depth), node.label));
        let mut kids: Vec<String> = node
            .children
            .iter()
            .map(|k| {
                let mut s = String::new();
                render(k, depth + 1, &mut s);
                s
            })
            .collect();
        kids.sort();
        out.extend(kids);
    }
    let mut stack: Vec<Node> = Vec::new();
    let mut roots = Vec::new();
    for l in text.lines() {
        let (mut depth, mut rest) = (0, l);
        loop {
            let next = ["├───", "└───", "│   ", "    "].iter().find_map(|p| rest.strip_prefix(p));
            match next {
                Some(r) => {
                    depth += 1;
                    rest = r;
                }
                None => break,
            }
        }
        assert!(!rest.contains("[...]"), "a node shown twice: {text}");
        while stack.len() > depth {
            let done = stack.pop().unwrap();
            match stack.last_mut() {
                Some(parent) => parent.children.push(done),
                None => roots.push(done),
            }
        }
        stack.push(Node { label: rest.to_owned(), children: Vec::new() });
    }
    while let Some(done) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => roots.push(done),
        }
    }
    let mut out = String::new();
    for r in &roots {
        render(r, 0, &mut out);
    }
    out
}

/// Pairs, for each of theirs' `paths`, the copy of it that lands in ours
/// (same base name, in ours' store dir) with the copy of ours' counterpart
/// that lands in theirs: a transfer between the stores swaps the hashes.
fn pair_crossed(tw: &Twins, paths: &[String]) {
    for p in paths {
        let ours_own = tw.path(Side::Ours, p);
        let landed_in_ours = format!("{}/{}", tw.ours.store_dir, base_name(p));
        let landed_in_theirs = format!("{}/{}", tw.theirs.store_dir, base_name(&ours_own));
        tw.map.borrow_mut().pair(&landed_in_ours, &landed_in_theirs);
    }
}

/// One record of an export stream.
struct ExportRecord {
    nar: Vec<u8>,
    path: String,
    references: Vec<String>,
    deriver: String,
}

impl ExportRecord {
    fn encode(&self) -> Vec<u8> {
        export_record(
            &self.nar,
            &self.path,
            &self.references,
            (!self.deriver.is_empty()).then_some(self.deriver.as_str()),
        )
    }
}

/// The records of a `nix-store --export` stream.
fn parse_export(stream: &[u8]) -> Vec<ExportRecord> {
    fn u64_at(b: &[u8], at: &mut usize) -> u64 {
        let v = u64::from_le_bytes(b[*at..*at + 8].try_into().unwrap());
        *at += 8;
        v
    }
    fn string_at(b: &[u8], at: &mut usize) -> String {
        let n = u64_at(b, at) as usize;
        let s = String::from_utf8(b[*at..*at + n].to_vec()).unwrap();
        *at += n + (8 - n % 8) % 8;
        s
    }
    let mut records = Vec::new();
    let mut at = 0;
    while u64_at(stream, &mut at) == 1 {
        let mut reader = store::nar::NarReader::new(&stream[at..]);
        reader.skip_to_end().expect("a NAR in the export");
        let nar_len = reader.offset() as usize;
        let nar = stream[at..at + nar_len].to_vec();
        at += nar_len;
        assert_eq!(u64_at(stream, &mut at), 0x4558_494e, "export magic");
        let path = string_at(stream, &mut at);
        let references = (0..u64_at(stream, &mut at)).map(|_| string_at(stream, &mut at)).collect();
        let deriver = string_at(stream, &mut at);
        assert_eq!(u64_at(stream, &mut at), 0, "no legacy signature");
        records.push(ExportRecord { nar, path, references, deriver });
    }
    assert_eq!(at, stream.len(), "the export ends after its last record");
    records
}

/// Rewrites the store dir of the paths in an export stream's metadata
/// (path, references, deriver), leaving the NARs as they are.
fn rehome_export(stream: &[u8], from: &str, to: &str) -> Vec<u8> {
    let rehome = |p: &str| {
        if p.is_empty() {
            String::new()
        } else {
            format!("{to}{}", p.strip_prefix(from).expect("a path of the exporting store"))
        }
    };
    let records: Vec<Vec<u8>> = parse_export(stream)
        .into_iter()
        .map(|r| {
            ExportRecord {
                path: rehome(&r.path),
                references: r.references.iter().map(|p| rehome(p)).collect(),
                deriver: rehome(&r.deriver),
                nar: r.nar,
            }
            .encode()
        })
        .collect();
    export_stream(&records)
}

/// Asserts that an export stream lists each path after its references.
fn assert_dependencies_first(stream: &[u8]) {
    let mut seen = BTreeSet::new();
    for r in parse_export(stream) {
        for reference in &r.references {
            assert!(
                reference == &r.path || seen.contains(reference),
                "{} is exported before its reference {reference}",
                r.path
            );
        }
        seen.insert(r.path);
    }
}

/// `nix-store --export` on one daemon piped into `nix-store --import` on
/// the other, both ways: the exports are the same, each side imports the
/// other's paths (store dir rewritten in the metadata; the base names keep
/// the exporting store's hashes), and the imported paths read the same.
fn export_import_across_daemons(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let ch = chain(&tw);
    // Dependencies first: sources (content-addressed at home, input-addressed
    // once imported without their content address) and the built outputs.
    let paths: Vec<String> = ch.srcs.iter().chain(&ch.outs).cloned().collect();
    let [o, t] = tw.both("nix-store", |s, c| {
        c.arg("--export").args(paths.iter().map(|p| tw.path(s, p)));
    });
    assert!(
        o.status.success() && t.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&t.stderr)
    );
    // Paths come in dependency order, ties in path (so hash) order: the
    // records are compared as sets.
    assert_dependencies_first(&o.stdout);
    assert_dependencies_first(&t.stdout);
    let records = |stream: &[u8]| -> Vec<Vec<u8>> {
        let mut r: Vec<Vec<u8>> = parse_export(stream).iter().map(ExportRecord::encode).collect();
        r.sort();
        r
    };
    let translated = tw.map.borrow().to_theirs(&o.stdout);
    assert!(records(&translated) == records(&t.stdout), "nix-store --export: the records differ");
    let streams = [
        rehome_export(&t.stdout, &tw.theirs.store_dir, &tw.ours.store_dir),
        rehome_export(&o.stdout, &tw.ours.store_dir, &tw.theirs.store_dir),
    ];
    let derivers: Vec<String> = ch.drvs.clone();
    pair_crossed(&tw, &paths);
    pair_crossed(&tw, &derivers);
    // Printed in the stream's order (which follows the hashes).
    let imported = tw.same_lines("nix-store --import of the other side's export", "nix-store", |s, c| {
        c.arg("--import").stdin(stdin_bytes(&tw, s, "crossed.export", &streams[s as usize]));
    });
    let imported: BTreeSet<String> = imported.lines().map(str::to_owned).collect();
    let expected: BTreeSet<String> =
        paths.iter().map(|p| format!("{}/{}", tw.theirs.store_dir, base_name(&tw.path(Side::Ours, p)))).collect();
    assert_eq!(imported, expected, "each side imported the other's paths under their base names");
    let info = tw.same_path_info("nix path-info --json of imported paths", |s, c| {
        c.args(imported.iter().map(|p| tw.path(s, p)));
    });
    for (p, i) in &info {
        assert_eq!(i["ca"], serde_json::Value::Null, "{p} was imported without its content address");
    }
    // Importing again changes nothing.
    tw.same_lines("nix-store --import again", "nix-store", |s, c| {
        c.arg("--import").stdin(stdin_bytes(&tw, s, "crossed.export", &streams[s as usize]));
    });
    // A .drv moved to the other store dir (contents included) names output
    // paths that store dir does not give it: both refuse it, as CppNix's
    // `checkInvariants` words it. (Its sources were imported above.)
    let [o, t] = tw.both("nix-store", |s, c| {
        c.arg("--export").arg(tw.path(s, &ch.drvs[0]));
    });
    assert!(o.status.success() && t.status.success());
    let moved = [
        swap_bytes(&t.stdout, &tw.theirs.store_dir, &tw.ours.store_dir),
        swap_bytes(&o.stdout, &tw.ours.store_dir, &tw.theirs.store_dir),
    ];
    let [o, t] = tw.both("nix-store", |s, c| {
        c.arg("--import").stdin(stdin_bytes(&tw, s, "drv.export", &moved[s as usize]));
    });
    // The right output path for the moved .drv is new to both stores.
    let should_be = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success() && err.contains("has incorrect output"), "{err}");
        let at = err.find("should be '").expect("a right path") + 11;
        err[at..at + err[at..].find('\'').unwrap()].to_owned()
    };
    tw.map.borrow_mut().pair(&should_be(&o), &should_be(&t));
    let error_lines = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join("\n")
    };
    tw.assert_same("nix-store --import of a .drv from another store dir", &error_lines(&o), &error_lines(&t));
    tw.same("nix-store --verify --check-contents after imports", "nix-store", |_, c| {
        c.args(["--verify", "--check-contents"]);
    });
}

/// `bytes` with every `from` replaced by `to` (of the same length).
fn swap_bytes(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from.as_bytes() {
            out[i..i + from.len()].copy_from_slice(to.as_bytes());
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn export_import_across_daemons_with_nix_2_8() {
    export_import_across_daemons(NixVersion::V2_8);
}

#[test]
fn export_import_across_daemons_with_nix_2_26() {
    export_import_across_daemons(NixVersion::V2_26);
}

/// A `unix://` URL for `side`'s daemon, with its store dir.
fn daemon_url(tw: &Twins, side: Side) -> String {
    format!("unix://{}?store={}", tw.daemon(side).socket.display(), tw.store(side).store_dir)
}

fn other(side: Side) -> Side {
    match side {
        Side::Ours => Side::Theirs,
        Side::Theirs => Side::Ours,
    }
}

/// `nix copy --to` and `--from` between the two daemons, both ways (each
/// daemon is source once and destination once): input-addressed paths
/// arrive under their base names and read the same; content-addressed
/// paths without references are renamed for the destination's store dir
/// (and are already there); `.drv`s, content-addressed with references,
/// claim a content address their new store dir does not give them, and
/// both daemons refuse them with CppNix's message.
fn copy_between_daemons(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let ch = chain(&tw);
    let sent: Vec<String> = ch.outs.iter().chain(&ch.srcs).cloned().collect();
    if version == NixVersion::V2_8 {
        // Nix 2.8's client sends the paths it copies (AddMultipleToStore) in
        // the source store's terms, which a destination with another store
        // dir cannot parse: both daemons refuse, each naming the first path
        // it read (which one depends on the hashes; armitage's message also
        // names its store dir).
        for (flag, source) in [("--to", true), ("--from", false)] {
            let [o, t] = tw.both("nix", |s, c| {
                let from = if source { s } else { other(s) };
                c.args(["copy", flag, &daemon_url(&tw, other(s))]).args(sent.iter().map(|p| tw.path(from, p)));
            });
            for out in [&o, &t] {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success() && err.contains("is not in the Nix store"), "nix copy {flag}: {err}");
            }
        }
        return;
    }
    // --to: run against the source, writing into the other daemon.
    let [o, t] = tw.both("nix", |s, c| {
        c.args(["copy", "--to", &daemon_url(&tw, other(s))]).args(sent.iter().map(|p| tw.path(s, p)));
    });
    for out in [&o, &t] {
        assert!(out.status.success(), "nix copy --to: {}", String::from_utf8_lossy(&out.stderr));
    }
    pair_crossed(&tw, &ch.outs);
    pair_crossed(&tw, &ch.drvs);
    let landed: Vec<String> =
        ch.outs.iter().map(|p| format!("{}/{}", tw.theirs.store_dir, base_name(&tw.path(Side::Ours, p)))).collect();
    tw.same_path_info("nix path-info --json -r of paths copied in", |s, c| {
        c.arg("-r").args(landed.iter().map(|p| tw.path(s, p)));
    });
    // The sources were renamed to the destination's own (valid) paths, not
    // copied under the sender's names.
    let not_landed: Vec<String> =
        ch.srcs.iter().map(|p| format!("{}/{}", tw.theirs.store_dir, base_name(&tw.path(Side::Ours, p)))).collect();
    pair_crossed(&tw, &ch.srcs);
    let invalid = tw.same_lines("nix-store --check-validity of renamed sources", "nix-store", |s, c| {
        c.args(["--check-validity", "--print-invalid"]).args(not_landed.iter().map(|p| tw.path(s, p)));
    });
    assert_eq!(invalid.lines().count(), ch.srcs.len(), "{invalid}");
    // --from: run against the destination, reading from the other daemon.
    let [o, t] = tw.both("nix", |s, c| {
        c.args(["copy", "--from", &daemon_url(&tw, other(s))]).arg(tw.path(other(s), &ch.dev));
    });
    for out in [&o, &t] {
        assert!(out.status.success(), "nix copy --from: {}", String::from_utf8_lossy(&out.stderr));
    }
    pair_crossed(&tw, std::slice::from_ref(&ch.dev));
    let dev_landed = format!("{}/{}", tw.theirs.store_dir, base_name(&tw.path(Side::Ours, &ch.dev)));
    tw.same_path_info("nix path-info --json of a path copied from the other daemon", |s, c| {
        c.arg(tw.path(s, &dev_landed));
    });
    // A text naming the top .drv pulls the .drvs into the closure (a .drv
    // named to nix copy means its outputs for Nix 2.8; the same for both).
    let inp = tw.theirs.work_dir("chain");
    let expr = format!(
        "builtins.toFile \"drv-list\" \"${{builtins.unsafeDiscardOutputDependency (import {}).drvPath}}\"",
        inp.join("chain.nix").display()
    );
    let list = tw.same("nix-instantiate --eval of a toFile naming a .drv", "nix-instantiate", |_, c| {
        c.args(["--eval", "--read-write-mode", "-E", &expr]);
    });
    let list = list.trim().trim_matches('"').to_owned();
    pair_crossed(&tw, std::slice::from_ref(&list));
    let [o, t] = tw.both("nix", |s, c| {
        c.args(["copy", "--to", &daemon_url(&tw, other(s)), &tw.path(s, &list)]);
    });
    same_mirrored_errors(&tw, "nix copy --to of .drvs into another store dir", &o, &t);
    tw.same("nix-store --verify --check-contents after copies", "nix-store", |_, c| {
        c.args(["--verify", "--check-contents"]);
    });
}

#[test]
fn copy_between_daemons_with_nix_2_8() {
    copy_between_daemons(NixVersion::V2_8);
}

#[test]
fn copy_between_daemons_with_nix_2_26() {
    copy_between_daemons(NixVersion::V2_26);
}

/// Asserts that two commands that each wrote into the other side's store
/// failed with the same errors: each names paths of the other store, so
/// the store dirs are swapped before ours' error is translated.
fn same_mirrored_errors(tw: &Twins, what: &str, o: &std::process::Output, t: &std::process::Output) {
    let (oe, te) = (String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&t.stderr));
    assert!(!o.status.success() && !t.status.success(), "{what}: both must fail:\n{oe}\n---\n{te}");
    let swap = |text: &str| {
        let placeholder = "\u{0}".repeat(tw.ours.store_dir.len());
        text.replace(&tw.ours.store_dir, &placeholder)
            .replace(&tw.theirs.store_dir, &tw.ours.store_dir)
            .replace(&placeholder, &tw.theirs.store_dir)
    };
    let errors = |text: &str| text.lines().filter(|l| l.starts_with("error")).map(str::to_owned).collect::<Vec<_>>();
    let ours = errors(&tw.map.borrow().to_theirs_str(&swap(&oe)));
    assert_eq!(ours, errors(&swap(&te)), "{what}: the errors differ (armitage's first)");
    assert!(!ours.is_empty(), "{what}: no error shown");
}

/// The fields of a `.narinfo`, with the store paths translated for ours.
fn narinfo_fields(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Compares the `file://` caches both sides wrote (ours' translated):
/// the same `.narinfo`s and `nix-cache-info`. References are compared as
/// sets (listed in hash order); when a path's NAR differs between the
/// stores (it names store paths), so do `URL`, `FileHash`, `FileSize`,
/// `NarHash` and the hash in `CA`, which are then left out (the NARs are
/// compared by `same_path_info`); signatures only by key name (they sign
/// the full store path).
fn same_caches(tw: &Twins, what: &str, caches: [&Path; 2]) {
    let list = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
            .collect()
    };
    let (ours, theirs) = (list(caches[0]), list(caches[1]));
    let map = tw.map.borrow();
    // `<hash>.narinfo`: the hash translated as a base name's.
    let rename = |k: &str| match k.split_once('.') {
        Some((hash, ext)) if hash.len() == 32 => {
            format!("{}.{ext}", map.to_theirs_str(&format!("{hash}-")).trim_end_matches('-'))
        }
        _ => k.to_owned(),
    };
    let ours: BTreeMap<String, String> = ours.into_iter().map(|(k, v)| (rename(&k), map.to_theirs_str(&v))).collect();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{what}: the caches hold different files"
    );
    assert!(ours.len() > 1, "{what}: the cache is empty");
    for (name, theirs_text) in &theirs {
        let (mut a, mut b) = (narinfo_fields(&ours[name]), narinfo_fields(theirs_text));
        let nar_differs = a.get("NarSize") == b.get("NarSize") && a.get("NarHash") != b.get("NarHash");
        for f in [&mut a, &mut b] {
            if let Some(refs) = f.get_mut("References") {
                let mut r: Vec<&str> = refs.split(' ').collect();
                r.sort();
                *refs = r.join(" ");
            }
            if let Some(sig) = f.get_mut("Sig") {
                *sig = sig.split(':').next().unwrap_or_default().to_owned();
            }
            if nar_differs {
                for k in ["URL", "FileHash", "FileSize", "NarHash"] {
                    f.remove(k);
                }
                if let Some(ca) = f.get_mut("CA") {
                    *ca = ca.rsplit_once(':').map(|(m, _)| m.to_owned()).unwrap_or_default();
                }
            }
        }
        assert_eq!(a, b, "{what}: {name}: armitage's (left, translated) differs from {}'s", tw.cppnix.name);
    }
}

/// `nix copy --to file://` caches (unsigned, then signed with a key from
/// `nix-store --generate-binary-cache-key`), the paths deleted and copied
/// back `--from` the caches, `nix store sign`, and `nix store verify`
/// (`--all`, `--sigs-needed 1`, with and without the key trusted).
fn binary_caches_sign_and_verify(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let ch = chain(&tw);
    let keys = tw.theirs.work_dir("keys");
    let (sk, pk) = (keys.join("sk"), keys.join("pk"));
    testkit::run(
        tw.client(Side::Theirs, "nix-store").arg("--generate-binary-cache-key").arg("test-key-1").arg(&sk).arg(&pk),
    );
    let pk_text = read(pk.to_str().unwrap());
    // The built outputs (input-addressed, so signatures matter) and the
    // derivations (content-addressed), with their closures.
    let roots = [ch.dev.clone(), ch.drvs[3].clone()];
    let mut outputs: Vec<String> = ch.outs.clone();
    outputs.push(ch.dev.clone());
    let verify = |what: &str, trusted_key: &str| {
        tw.both("nix", |s, c| {
            c.args(["store", "verify", "--sigs-needed", "1", "-r", "--option", "trusted-public-keys", trusted_key]);
            c.args(roots.iter().map(|p| tw.path(s, p)));
        })
        .map(|o| (o.status.success(), format!("{what}:\n{}", String::from_utf8_lossy(&o.stderr))))
    };
    for (round, signed) in [("unsigned", false), ("signed", true)] {
        let url = |s: Side| {
            let dir = tw.store(s).work_dir(&format!("cache-{round}"));
            let key = if signed { format!("?secret-key={}", sk.display()) } else { String::new() };
            format!("file://{}{key}", dir.display())
        };
        let [o, t] = tw.both("nix", |s, c| {
            c.args(["copy", "--to", &url(s)]).args(roots.iter().map(|p| tw.path(s, p)));
        });
        for out in [&o, &t] {
            assert!(out.status.success(), "nix copy --to {round} cache: {}", String::from_utf8_lossy(&out.stderr));
        }
        same_caches(
            &tw,
            &format!("the {round} cache"),
            [&tw.ours.work_dir(&format!("cache-{round}")), &tw.theirs.work_dir(&format!("cache-{round}"))],
        );
        let before = tw.same_path_info(&format!("nix path-info before the {round} round trip"), |s, c| {
            c.args(outputs.iter().map(|p| tw.path(s, p)));
        });
        // Dead (nothing refers to them, no roots): they can go.
        tw.same_lines("nix-store --delete of the outputs", "nix-store", |s, c| {
            c.arg("--delete").args(outputs.iter().map(|p| tw.path(s, p)));
        });
        let invalid = tw.same_lines("nix-store --check-validity after --delete", "nix-store", |s, c| {
            c.args(["--check-validity", "--print-invalid"]).args(outputs.iter().map(|p| tw.path(s, p)));
        });
        assert_eq!(invalid.lines().count(), outputs.len());
        let [o, t] = tw.both("nix", |s, c| {
            c.args(["copy", "--from", &url(s), &tw.path(s, &ch.dev)]);
        });
        for out in [&o, &t] {
            assert!(out.status.success(), "nix copy --from {round} cache: {}", String::from_utf8_lossy(&out.stderr));
        }
        let after = tw.same_path_info(&format!("nix path-info after the {round} round trip"), |s, c| {
            c.args(outputs.iter().map(|p| tw.path(s, p)));
        });
        for (p, info) in &after {
            let mut a = info.as_object().unwrap().clone();
            let mut b = before[p].as_object().unwrap().clone();
            for x in [&mut a, &mut b] {
                x.remove("registrationTime");
                x.remove("signatures");
            }
            assert_eq!(a, b, "{p} came back from the {round} cache as it was");
            let sigs = info["signatures"].as_array().map(Vec::len).unwrap_or(0);
            assert_eq!(sigs, usize::from(signed), "{p}: signatures after the {round} round trip: {info}");
        }
        if !signed {
            // Unsigned input-addressed outputs do not meet --sigs-needed 1.
            let results = verify("verify unsigned", &pk_text);
            assert!(results.iter().all(|(ok, _)| !ok), "unsigned outputs must fail --sigs-needed 1");
            let untrusted = |err: &str| -> BTreeSet<String> {
                err.lines().filter(|l| l.ends_with("is untrusted")).map(str::to_owned).collect()
            };
            let ours = untrusted(&tw.map.borrow().to_theirs_str(&results[0].1));
            assert_eq!(ours, untrusted(&results[1].1), "the same paths are untrusted");
            assert_eq!(ours.len(), outputs.len(), "{ours:?}");
            tw.same("nix store sign", "nix", |s, c| {
                c.args(["store", "sign", "-r", "--key-file"]).arg(&sk).args(roots.iter().map(|p| tw.path(s, p)));
            });
            for (ok, err) in verify("verify signed", &pk_text) {
                assert!(ok, "signed outputs pass --sigs-needed 1 with the key trusted:\n{err}");
            }
            for (ok, _) in verify("verify with another key", "other-key:CR7N8uCfRJkNaCS1zGgtF3Pa9NbS5Crj6WsZzMxXAUQ=") {
                assert!(!ok, "signatures by an untrusted key do not count");
            }
        }
    }
    tw.same("nix store verify --all --sigs-needed 1", "nix", |_, c| {
        c.args(["store", "verify", "--all", "--sigs-needed", "1", "--option", "trusted-public-keys", &pk_text]);
    });
    tw.same("nix store verify --all --no-trust", "nix", |_, c| {
        c.args(["store", "verify", "--all", "--no-trust"]);
    });
    // Without the key, the outputs (input-addressed) are untrusted.
    tw.same_failure("nix store verify --all without the key", "nix", |_, c| {
        c.args(["store", "verify", "--all"]);
    });
}

#[test]
fn binary_caches_sign_and_verify_with_nix_2_8() {
    binary_caches_sign_and_verify(NixVersion::V2_8);
}

#[test]
fn binary_caches_sign_and_verify_with_nix_2_26() {
    binary_caches_sign_and_verify(NixVersion::V2_26);
}

/// Every valid path, by `nix path-info --all` (compared as sets).
fn all_valid(tw: &Twins, what: &str) -> BTreeSet<String> {
    tw.same_lines(what, "nix", |_, c| {
        c.args(["path-info", "--all"]);
    })
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The `deleting '…'` lines a collection printed, as a set.
fn deleting_lines(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| l.starts_with("deleting '")).map(str::to_owned).collect()
}

/// Garbage collection with roots of both kinds (`--add-root` through the
/// daemon, a symlink in `gcroots/`): `--print-roots`, `--print-live`,
/// `--print-dead`, `nix-store --gc` and `nix store gc` delete the same
/// paths; `nix-store --delete` of a live path is refused, of a dead one
/// done; `nix-store --optimise` links the same files; `nix-store --verify
/// --check-contents` finds the same damage, `--repair` cannot mend it
/// (nothing to substitute from) on either side.
fn gc_delete_optimise_verify(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let ch = chain(&tw);
    let inp = tw.theirs.work_dir("gc");
    let mut garbage = Vec::new();
    for i in 0..4 {
        write_file(inp.join(format!("garbage-{i}")), format!("garbage {i}\n").repeat(100 * (i + 1)));
        garbage.push(line(tw.same("nix-store --add garbage", "nix-store", |_, c| {
            c.arg("--add").arg(inp.join(format!("garbage-{i}")));
        })));
    }
    // Two trees with the same files under different names: optimise fodder.
    make_tree(&inp.join("twin-a"), 11, 20, 5000);
    make_tree(&inp.join("twin-b"), 11, 20, 5000);
    let twins: Vec<String> = ["twin-a", "twin-b"]
        .iter()
        .map(|t| {
            line(tw.same("nix-store --add twin", "nix-store", |_, c| {
                c.arg("--add").arg(inp.join(t));
            }))
        })
        .collect();
    // Roots: out-2 through the daemon (the client makes the link and
    // registers it), chain-4.drv by a link in gcroots/, and twin-a.
    let link = tw.theirs.work_dir("roots").join("out-2");
    let made = tw.same("nix-store --add-root -r", "nix-store", |s, c| {
        c.arg("--add-root").arg(tw.path(s, link.to_str().unwrap())).args(["-r", &tw.path(s, &ch.outs[1])]);
    });
    assert_eq!(line(made), link.to_str().unwrap());
    for s in Side::BOTH {
        let gcroots = tw.store(s).state_dir.join("gcroots");
        std::fs::create_dir_all(&gcroots).unwrap();
        std::os::unix::fs::symlink(tw.path(s, &ch.drvs[3]), gcroots.join("chain-4")).unwrap();
        std::os::unix::fs::symlink(tw.path(s, &twins[0]), gcroots.join("twin-a")).unwrap();
    }
    let roots = tw.same_lines("nix-store --gc --print-roots", "nix-store", |_, c| {
        c.args(["--gc", "--print-roots"]);
    });
    assert_eq!(roots.lines().count(), 3, "{roots}");
    let live = tw.same_lines("nix-store --gc --print-live", "nix-store", |_, c| {
        c.args(["--gc", "--print-live"]);
    });
    let dead = tw.same_lines("nix-store --gc --print-dead", "nix-store", |_, c| {
        c.args(["--gc", "--print-dead"]);
    });
    let (live, dead): (BTreeSet<String>, BTreeSet<String>) =
        (live.lines().map(str::to_owned).collect(), dead.lines().map(str::to_owned).collect());
    for p in garbage.iter().chain([&twins[1], &ch.outs[2], &ch.outs[3], &ch.dev]) {
        assert!(dead.contains(p), "{p} is dead: {dead:?}");
    }
    for p in ch.drvs.iter().chain(&ch.srcs).chain(&ch.outs[..2]).chain([&twins[0]]) {
        assert!(live.contains(p), "{p} is live: {live:?}");
    }
    // A live path cannot be deleted; a dead one can.
    let [o, t] = tw.both("nix-store", |s, c| {
        c.args(["--delete", &tw.path(s, &ch.outs[0])]);
    });
    assert!(!o.status.success() && !t.status.success(), "nix-store --delete of a live path must fail");
    let error = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join("\n")
    };
    tw.assert_same("nix-store --delete of a live path", &error(&o), &error(&t));
    let [o, t] = tw.both("nix-store", |s, c| {
        c.args(["--delete", &tw.path(s, &garbage[0])]);
    });
    assert!(o.status.success() && t.status.success());
    tw.assert_same_lines(
        "nix-store --delete of a dead path",
        &String::from_utf8_lossy(&o.stderr),
        &String::from_utf8_lossy(&t.stderr),
    );
    let before = all_valid(&tw, "nix path-info --all before the collection");
    let [o, t] = tw.both("nix-store", |_, c| {
        c.arg("--gc");
    });
    assert!(o.status.success() && t.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // "N store paths deleted, X MiB freed".
    tw.assert_same("nix-store --gc summary", &String::from_utf8_lossy(&o.stdout), &String::from_utf8_lossy(&t.stdout));
    let ours_deleted = deleting_lines(&tw.map.borrow().to_theirs_str(&String::from_utf8_lossy(&o.stderr)));
    assert_eq!(
        ours_deleted,
        deleting_lines(&String::from_utf8_lossy(&t.stderr)),
        "nix-store --gc deleted the same paths"
    );
    let after = all_valid(&tw, "nix path-info --all after the collection");
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    let expected: BTreeSet<String> = dead.iter().filter(|p| **p != garbage[0]).cloned().collect();
    assert_eq!(gone, expected, "exactly the dead paths went");
    assert_eq!(ours_deleted.len(), gone.len());
    // New garbage for `nix store gc`.
    write_file(inp.join("late-garbage"), "late\n");
    let late = line(tw.same("nix-store --add late garbage", "nix-store", |_, c| {
        c.arg("--add").arg(inp.join("late-garbage"));
    }));
    let [o, t] = tw.both("nix", |_, c| {
        c.args(["store", "gc"]);
    });
    assert!(o.status.success() && t.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    tw.assert_same("nix store gc summary", &String::from_utf8_lossy(&o.stdout), &String::from_utf8_lossy(&t.stdout));
    let left = all_valid(&tw, "nix path-info --all after nix store gc");
    assert!(!left.contains(&late), "nix store gc deleted the new garbage");
    assert_eq!(left, after, "and nothing else");
    assert_eq!(
        deleting_lines(&tw.map.borrow().to_theirs_str(&String::from_utf8_lossy(&o.stderr))),
        deleting_lines(&String::from_utf8_lossy(&t.stderr))
    );
    // Optimise: twin-a's files get linked to the store's .links (twin-b is gone).
    let [o, t] = tw.both("nix-store", |_, c| {
        c.arg("--optimise");
    });
    assert!(o.status.success() && t.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let freed = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("freed by hard-linking"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(freed(&o), freed(&t), "nix-store --optimise reports the same");
    let linked = |s: Side| -> BTreeMap<String, u64> {
        use std::os::unix::fs::MetadataExt;
        let root = PathBuf::from(tw.path(s, &twins[0]));
        let mut files = BTreeMap::new();
        let mut todo = vec![root.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                if m.is_dir() {
                    todo.push(e.path());
                } else if m.is_file() {
                    files.insert(e.path().strip_prefix(&root).unwrap().display().to_string(), m.nlink());
                }
            }
        }
        files
    };
    let (lo, lt) = (linked(Side::Ours), linked(Side::Theirs));
    assert_eq!(lo, lt, "the same files are hard-linked after --optimise");
    assert!(lt.values().all(|n| *n >= 2), "every file of twin-a is linked into .links: {lt:?}");
    // Verify: clean, then one file damaged on both sides.
    let [o, t] = tw.both("nix-store", |_, c| {
        c.args(["--verify", "--check-contents"]);
    });
    assert!(o.status.success() && t.status.success());
    tw.assert_same(
        "nix-store --verify --check-contents",
        &String::from_utf8_lossy(&o.stderr),
        &String::from_utf8_lossy(&t.stderr),
    );
    let victim = ch.srcs[1].clone();
    for s in Side::BOTH {
        let f = tw.path(s, &victim);
        set_mode(Path::new(&f), 0o644);
        std::fs::write(&f, "damaged\n").unwrap();
        set_mode(Path::new(&f), 0o444);
    }
    for repair in [false, true] {
        let [o, t] = tw.both("nix-store", |_, c| {
            c.args(["--verify", "--check-contents"]);
            if repair {
                c.arg("--repair");
            }
        });
        assert_eq!(o.status.code(), t.status.code(), "nix-store --verify (repair: {repair}): the same exit status");
        assert!(!t.status.success());
        // Nix 2.26 prints the damaged link's path and name quoted twice
        // ('"…"', std::filesystem::path's formatting); armitage as 2.8.
        let theirs = String::from_utf8_lossy(&t.stderr).replace("'\"", "'").replace("\"'", "'");
        tw.assert_same(
            &format!("nix-store --verify --check-contents (repair: {repair}) of a damaged path"),
            &String::from_utf8_lossy(&o.stderr),
            &theirs,
        );
    }
}

#[test]
fn gc_delete_optimise_verify_with_nix_2_8() {
    gc_delete_optimise_verify(NixVersion::V2_8);
}

#[test]
fn gc_delete_optimise_verify_with_nix_2_26() {
    gc_delete_optimise_verify(NixVersion::V2_26);
}

/// `nix-store --gc --max-freed N`: only dead paths go, at least N bytes are
/// freed, and the collector stops soon after. Which dead paths go first
/// depends on directory order, so each side is checked on its own.
fn gc_max_freed(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let inp = tw.theirs.work_dir("max-freed");
    let (size, count, limit) = (16 * 1024, 12, 40_000u64);
    let mut garbage = BTreeSet::new();
    for i in 0..count {
        let mut data = format!("garbage file {i}\n").into_bytes();
        data.resize(size, b'.');
        write_file(inp.join(format!("g{i}")), data);
        garbage.insert(line(tw.same("nix-store --add garbage", "nix-store", |_, c| {
            c.arg("--add").arg(inp.join(format!("g{i}")));
        })));
    }
    write_file(inp.join("kept"), "kept\n");
    let kept = line(tw.same("nix-store --add kept", "nix-store", |_, c| {
        c.arg("--add").arg(inp.join("kept"));
    }));
    for s in Side::BOTH {
        let gcroots = tw.store(s).state_dir.join("gcroots");
        std::fs::create_dir_all(&gcroots).unwrap();
        std::os::unix::fs::symlink(tw.path(s, &kept), gcroots.join("kept")).unwrap();
    }
    let before = all_valid(&tw, "nix path-info --all before");
    let outs = tw.both("nix-store", |_, c| {
        c.args(["--gc", "--max-freed", &limit.to_string()]);
    });
    let afters = tw.both("nix", |_, c| {
        c.args(["path-info", "--all"]);
    });
    let mut counts = Vec::new();
    for ((side, out), after) in Side::BOTH.iter().zip(&outs).zip(&afters) {
        assert!(out.status.success(), "{side:?}: {}", String::from_utf8_lossy(&out.stderr));
        let map = tw.map.borrow();
        let theirs_terms = |text: &[u8]| {
            let text = String::from_utf8_lossy(text);
            if *side == Side::Ours { map.to_theirs_str(&text) } else { text.into_owned() }
        };
        let deleted: BTreeSet<String> = deleting_lines(&theirs_terms(&out.stderr))
            .into_iter()
            .map(|l| l.trim_start_matches("deleting '").trim_end_matches('\'').to_owned())
            .collect();
        let after: BTreeSet<String> = theirs_terms(&after.stdout).lines().map(str::to_owned).collect();
        assert!(deleted.is_subset(&garbage), "{side:?}: only dead paths go: {deleted:?}");
        assert_eq!(
            before.difference(&after).cloned().collect::<BTreeSet<_>>(),
            deleted,
            "{side:?}: what it said it deleted went"
        );
        assert!(after.contains(&kept), "{side:?}: the rooted path stays");
        let needed = (limit as usize).div_ceil(size);
        assert!(
            deleted.len() >= needed,
            "{side:?}: at least {limit} bytes freed, but only {} paths went",
            deleted.len()
        );
        assert!(
            deleted.len() <= needed + 1,
            "{side:?}: stops soon after {limit} bytes, but {} paths went",
            deleted.len()
        );
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains(&format!("{} store paths deleted", deleted.len())), "{side:?}: {summary}");
        counts.push(deleted.len());
    }
    // The sides may have picked different paths, but as many.
    assert_eq!(counts[0], counts[1], "both freed the same number of equal-sized paths");
}

#[test]
fn gc_max_freed_with_nix_2_8() {
    gc_max_freed(NixVersion::V2_8);
}

#[test]
fn gc_max_freed_with_nix_2_26() {
    gc_max_freed(NixVersion::V2_26);
}

/// A client that is not a trusted user: `nix copy` of unsigned
/// input-addressed paths into the daemon is refused ("lacks a signature by
/// a trusted key") by both daemons; content-addressed ones need no
/// signature; paths signed by the key the daemon trusts are accepted.
fn untrusted_copies(version: NixVersion) {
    let Some(nix) = testkit::Nix::find(version) else { return };
    let keys = TestStoreKeys::generate(&nix);
    let conf = format!("require-sigs = true\ntrusted-public-keys = {}\n", keys.public);
    let Some(tw) = Twins::with_conf(version, &conf) else { return };
    let Some(user) = untrusted_user() else {
        eprintln!("skipped: the untrusted-client test runs as root (it runs clients as another user)");
        return;
    };
    let ch = chain(&tw);
    let inp = tw.theirs.work_dir("untrusted");
    write_file(inp.join("ca-file"), "content-addressed\n");
    let ca = line(tw.same("nix-store --add", "nix-store", |_, c| {
        c.arg("--add").arg(inp.join("ca-file"));
    }));
    let mut sent: Vec<String> = ch.outs.clone();
    sent.push(ch.dev.clone());
    sent.push(ca.clone());
    // As root (trusted): caches of the outputs and the file, then delete them.
    let cache = |s: Side, signed: bool| {
        let dir = tw.store(s).work_dir(if signed { "cache-signed" } else { "cache-unsigned" });
        format!("file://{}", dir.display())
    };
    for signed in [false, true] {
        let [o, t] = tw.both("nix", |s, c| {
            let key = if signed { format!("?secret-key={}", keys.secret_file.display()) } else { String::new() };
            c.args(["copy", "--to", &format!("{}{key}", cache(s, signed))]).args(sent.iter().map(|p| tw.path(s, p)));
        });
        assert!(o.status.success() && t.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    tw.same_lines("nix-store --delete", "nix-store", |s, c| {
        c.arg("--delete").args(sent.iter().rev().map(|p| tw.path(s, p)));
    });
    // As the untrusted user.
    let copy = |signed: bool, path: &str| {
        user_both(&tw, user, "nix", |s, c| {
            c.args(["copy", "--from", &cache(s, signed), &tw.path(s, path)]);
        })
    };
    let errors = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join("\n")
    };
    let [o, t] = copy(false, &ch.outs[0]);
    assert!(
        !o.status.success() && !t.status.success(),
        "an unsigned copy by an untrusted user is refused:\n{}",
        errors(&o)
    );
    let mut theirs_refusal = errors(&t);
    if version == NixVersion::V2_8 {
        // Nix 2.8's daemon words it "lacks a valid signature"; armitage
        // words it as Nix 2.26 does.
        theirs_refusal = theirs_refusal.replace("lacks a valid signature", "lacks a signature by a trusted key");
    }
    let refusal = tw.assert_same("an unsigned nix copy by an untrusted user", &errors(&o), &theirs_refusal);
    assert!(refusal.contains("lacks a signature by a trusted key"), "{refusal}");
    // Asking not to check signatures is not for untrusted users to decide.
    let [o, t] = user_both(&tw, user, "nix", |s, c| {
        c.args(["copy", "--no-check-sigs", "--from", &cache(s, false), &tw.path(s, &ch.outs[0])]);
    });
    assert!(
        !o.status.success() && !t.status.success(),
        "--no-check-sigs by an untrusted user is refused too:\n{}",
        errors(&o)
    );
    let mut theirs_refusal = errors(&t);
    if version == NixVersion::V2_8 {
        theirs_refusal = theirs_refusal.replace("lacks a valid signature", "lacks a signature by a trusted key");
    }
    tw.assert_same("an unsigned nix copy --no-check-sigs by an untrusted user", &errors(&o), &theirs_refusal);
    let [o, t] = copy(false, &ca);
    assert!(
        o.status.success() && t.status.success(),
        "content-addressed paths need no signature:\n{}\n{}",
        errors(&o),
        errors(&t)
    );
    let [o, t] = copy(true, &ch.dev);
    assert!(o.status.success() && t.status.success(), "signed paths are accepted:\n{}\n{}", errors(&o), errors(&t));
    let info = tw.same_path_info("nix path-info of paths an untrusted user copied in", |s, c| {
        c.args(sent.iter().map(|p| tw.path(s, p)));
    });
    for p in ch.outs.iter().chain([&ch.dev]) {
        assert_eq!(info[p]["signatures"].as_array().map(Vec::len), Some(1), "{p}: {}", info[p]);
        // Nix 2.8 leaves `ultimate` out when it is false.
        assert!(!info[p].get("ultimate").and_then(serde_json::Value::as_bool).unwrap_or(false), "{p}: {}", info[p]);
    }
    if version == NixVersion::V2_26 {
        let trusted = |outs: [std::process::Output; 2]| {
            // `nix store info` prints on stderr.
            outs.map(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .find(|l| l.starts_with("Trusted:"))
                    .unwrap_or_default()
                    .to_owned()
            })
        };
        let as_user = trusted(user_both(&tw, user, "nix", |_, c| {
            c.args(["store", "info"]);
        }));
        assert_eq!(as_user, ["Trusted: 0".to_owned(), "Trusted: 0".to_owned()]);
        let as_root = trusted(tw.both("nix", |_, c| {
            c.args(["store", "info"]);
        }));
        assert_eq!(as_root, ["Trusted: 1".to_owned(), "Trusted: 1".to_owned()]);
    }
}

#[test]
fn untrusted_copies_with_nix_2_8() {
    untrusted_copies(NixVersion::V2_8);
}

#[test]
fn untrusted_copies_with_nix_2_26() {
    untrusted_copies(NixVersion::V2_26);
}

/// [`Twins::both`] as the untrusted user, with a home of its own per side.
fn user_both(tw: &Twins, user: (u32, u32), tool: &str, args: impl Fn(Side, &mut Command)) -> [std::process::Output; 2] {
    Side::BOTH.map(|s| {
        let mut c = tw.client(s, tool);
        args(s, &mut c);
        let home = tw.store(s).work_dir("user-home");
        let chowned = Command::new("chown").arg("-R").arg(format!("{}:{}", user.0, user.1)).arg(&home).status();
        assert!(chowned.is_ok_and(|st| st.success()), "chown the user's home");
        testkit::output(&mut as_user(&c, user, &home))
    })
}

/// A signing key pair from `nix-store --generate-binary-cache-key`.
struct TestStoreKeys {
    _store: testkit::TestStore,
    secret_file: PathBuf,
    public: String,
}

impl TestStoreKeys {
    fn generate(nix: &testkit::Nix) -> TestStoreKeys {
        let store = testkit::TestStore::new();
        let dir = store.work_dir("keys");
        let (secret_file, public_file) = (dir.join("sk"), dir.join("pk"));
        testkit::run(
            store
                .nix(nix, "nix-store")
                .arg("--generate-binary-cache-key")
                .arg("test-key-1")
                .arg(&secret_file)
                .arg(&public_file),
        );
        let public = std::fs::read_to_string(&public_file).unwrap().trim().to_owned();
        TestStoreKeys { _store: store, secret_file, public }
    }
}
