//! kill -9 of `armitage store add` of a large tree, aimed at every phase of
//! an add (unpacking, canonicalising, renaming, inside the registration
//! transaction), 13 times each. After every kill the database passes
//! SQLite's integrity check, the path is either valid and intact or not
//! valid at all, and both armitage and CppNix verify the store's contents;
//! at the end a plain add succeeds over the debris and a collection clears it.

use compat_tests::{Rng, armitage_verify, make_tree, nix_verify, open_store};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use testkit::{Nix, NixVersion, TestStore, line, run};

const PHASES: [&str; 4] = ["unpacking", "canonicalising", "renaming", "db-transaction"];
const KILLS_PER_PHASE: usize = 13;
/// How long the otherwise instantaneous phases are held, so kills land in them.
const HOLD_MS: u64 = 300;

struct Run {
    child: std::process::Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

fn start_add(store: &TestStore, tree: &std::path::Path, pauses: &str) -> Run {
    let mut child = store
        .armitage()
        .args(["store", "add"])
        .arg(tree)
        .env("ARMITAGE_FAULT_PAUSE", pauses)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start armitage store add");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines() {
            let Ok(l) = l else { break };
            if tx.send((Instant::now(), l)).is_err() {
                break;
            }
        }
    });
    Run { child, lines }
}

fn phase_of(line: &str) -> Option<&str> {
    line.strip_prefix("armitage: fault-point ")
}

/// Announces every phase; holds `hold` (if any) for HOLD_MS.
fn pauses(hold: Option<&str>) -> String {
    PHASES.iter().map(|p| format!("{p}:{}", if Some(*p) == hold { HOLD_MS } else { 0 })).collect::<Vec<_>>().join(",")
}

/// `tmp-*` staging directories in the store.
fn staging_dirs(store: &TestStore) -> Vec<String> {
    std::fs::read_dir(&store.store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp-"))
        .collect()
}

#[test]
fn kill_9_during_add_leaves_nothing_or_a_valid_path() {
    let (Some(nix28), Some(nix226)) = (Nix::find(NixVersion::V2_8), Nix::find(NixVersion::V2_26)) else { return };
    let store = TestStore::new();
    let tree = store.work_dir("big").join("tree");
    make_tree(&tree, 42, 1500, 16_000);
    let seed = Rng::seed_from_time();
    eprintln!("crash test seed: {seed}");
    let mut rng = Rng::new(seed);

    // Calibrate: how long unpacking and canonicalising take on this machine.
    let mut cal = start_add(&store, &tree, &pauses(None));
    let status = cal.child.wait().unwrap();
    let cal_lines: Vec<(Instant, String)> = cal.lines.iter().collect();
    assert!(status.success(), "calibration add failed: {:?}", cal_lines.iter().map(|(_, l)| l).collect::<Vec<_>>());
    let stamps: BTreeMap<String, Instant> =
        cal_lines.iter().filter_map(|(t, l)| phase_of(l).map(|p| (p.to_owned(), *t))).collect();
    let unpack = stamps["canonicalising"] - stamps["unpacking"];
    let canon = stamps["renaming"] - stamps["canonicalising"];
    eprintln!("calibration: unpacking {unpack:?}, canonicalising {canon:?}");
    let path = line(String::from_utf8(cal.child.wait_with_output().unwrap().stdout).unwrap_or_default());
    let path = if path.is_empty() { line(run(store.armitage().args(["store", "add"]).arg(&tree))) } else { path };
    run(store.armitage().args(["store", "gc", "--delete", &path]));

    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    let mut kill_no = 0;
    for aim in PHASES {
        for _ in 0..KILLS_PER_PHASE {
            kill_no += 1;
            let hold = matches!(aim, "renaming" | "db-transaction").then_some(aim);
            let mut r = start_add(&store, &tree, &pauses(hold));
            let mut seen: Vec<String> = Vec::new();
            // Wait for the aimed phase to begin.
            loop {
                let (_, l) = r.lines.recv_timeout(Duration::from_secs(60)).expect("the add announces its phases");
                if let Some(p) = phase_of(&l) {
                    seen.push(p.to_owned());
                    if p == aim {
                        break;
                    }
                }
            }
            let window = match aim {
                "unpacking" => unpack,
                "canonicalising" => canon,
                _ => Duration::from_millis(HOLD_MS),
            };
            let delay = Duration::from_micros(rng.below((window.as_micros() as u64 * 8 / 10).max(1)));
            std::thread::sleep(delay);
            let finished_first = r.child.try_wait().unwrap().is_some();
            let _ = r.child.kill();
            let _ = r.child.wait();
            seen.extend(r.lines.try_iter().filter_map(|(_, l)| phase_of(&l).map(str::to_owned)));
            let at =
                if finished_first { "after completion".to_owned() } else { seen.last().cloned().unwrap_or_default() };
            eprintln!("kill {kill_no}: aimed at {aim}, landed in {at} ({delay:?} into the phase)");
            *landed.entry(at).or_default() += 1;

            // The store is consistent.
            let lib = open_store(&store, false);
            assert_eq!(lib.integrity_check().unwrap(), Vec::<String>::new(), "SQLite integrity after kill {kill_no}");
            let sp = lib.parse_path(&path).unwrap();
            let valid = lib.is_valid(&sp).unwrap();
            drop(lib);
            let (ok, err) = armitage_verify(&store);
            assert!(ok, "armitage verify after kill {kill_no}:\n{err}");

            let nix = if kill_no % 2 == 0 { &nix28 } else { &nix226 };
            let (ok, err) = nix_verify(&store, nix);
            assert!(ok, "{} verify after kill {kill_no}:\n{err}", nix.version);
            if valid {
                run(store.armitage().args(["store", "gc", "--delete", &path]));
            }
            // Collections over the debris of killed adds keep working (and keep
            // the scratch space small).
            if kill_no % 4 == 0 {
                run(store.armitage().args(["store", "gc"]));
                assert!(staging_dirs(&store).is_empty(), "a collection left staging dirs: {:?}", staging_dirs(&store));
            }
        }
    }
    eprintln!("kills by phase landed in: {landed:?}");
    for phase in PHASES {
        assert!(
            landed.get(phase).copied().unwrap_or(0) >= KILLS_PER_PHASE / 2,
            "too few kills landed in {phase}: {landed:?}"
        );
    }
    assert!(landed.values().sum::<usize>() >= 50);

    // Debris does not block a later add, and a collection clears it.
    let again = line(run(store.armitage().args(["store", "add"]).arg(&tree)));
    assert_eq!(again, path);
    for nix in [&nix28, &nix226] {
        let (ok, err) = nix_verify(&store, nix);
        assert!(ok, "{}: {err}", nix.version);
    }
    run(store.armitage().args(["store", "gc"]));
    let leftovers: Vec<String> = std::fs::read_dir(&store.store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".links" && format!("{}/{n}", store.store_dir) != path)
        .collect();
    assert!(leftovers.is_empty(), "debris left after GC: {leftovers:?}");
    let (ok, err) = armitage_verify(&store);
    assert!(ok, "{err}");
}
