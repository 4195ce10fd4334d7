//! The scheduler against a fake executor, without Nix and without root:
//! goals shared between requesters, failures with and without
//! `keep-going`, cancellation, and the order outputs are registered in. The
//! store is a local store in a temporary directory; the fake executor
//! writes each output (naming the build's inputs, so they are its
//! references) or fails or waits for cancellation, as told, and records
//! what it ran.

use super::executor::{ExecError, ExecIo, ExecSpec, Executor, RunOutcome, Setup};
use super::{BuildModeKey, Builder, Job};
use local_store::{AddOptions, LiveStore, LocalStore, LocalStoreConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::derivation::{Derivation, DrvHasher, InputOutputs, Output};
use store::nix_conf::{ConfigEnv, Host, SandboxMode, Settings};
use store::signing::PublicKeys;
use store::store_path::{StoreDir, StorePath};
use worker_protocol::{BuildStatus, ClientOptions};

/// What the fake executor does for a derivation (by its `name`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    Succeed,
    /// Exit with code 1 after a line of log.
    Fail,
    /// Wait until cancelled.
    Block,
}

#[derive(Default)]
struct Record {
    /// Derivation names, in the order their builds started.
    started: Vec<String>,
    /// Builds that saw their cancellation.
    cancelled: Vec<String>,
    /// Inputs a build was given that were not valid when it started.
    invalid_inputs: Vec<(String, String)>,
}

struct Fake {
    store: Arc<LiveStore>,
    acts: BTreeMap<String, Act>,
    record: Mutex<Record>,
}

impl Fake {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap()
    }

    fn started(&self, name: &str) -> usize {
        self.record().started.iter().filter(|n| *n == name).count()
    }
}

impl Executor for Fake {
    fn prepare(&self, _spec: &ExecSpec) -> Result<Setup, ExecError> {
        Ok(Setup::Nothing)
    }

    fn run(&self, spec: &ExecSpec, _setup: Setup, io: &mut ExecIo<'_>) -> Result<RunOutcome, ExecError> {
        let name =
            spec.env.iter().find(|(k, _)| k == b"name").map(|(_, v)| String::from_utf8_lossy(v).into_owned()).unwrap();
        let store = self.store.session().unwrap();
        {
            let mut r = self.record();
            r.started.push(name.clone());
            for (inside, _) in &spec.inputs {
                let path = store.parse_path(inside).unwrap();
                if !store.is_valid(&path).unwrap() {
                    r.invalid_inputs.push((name.clone(), inside.clone()));
                }
            }
        }
        match self.acts.get(&name).copied().unwrap_or(Act::Succeed) {
            Act::Succeed => {
                let mut text = format!("built {name}\n");
                for (inside, _) in &spec.inputs {
                    text.push_str(&format!("{inside}\n"));
                }
                for out in spec.outputs.values() {
                    std::fs::write(&out.location, &text).unwrap();
                }
                Ok(RunOutcome::Exited(ExitStatus::from_raw(0)))
            }
            Act::Fail => {
                for line in io.log.feed(b"failing on purpose\n") {
                    (io.on_line)(line);
                }
                Ok(RunOutcome::Exited(ExitStatus::from_raw(1 << 8)))
            }
            Act::Block => {
                while !io.cancel.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.record().cancelled.push(name);
                Ok(RunOutcome::Cancelled)
            }
        }
    }
}

struct TestBed {
    _dir: tempfile::TempDir,
    store: LocalStore,
    builder: Arc<Builder>,
    fake: Arc<Fake>,
    system: String,
}

fn setup(acts: &[(&str, Act)]) -> TestBed {
    let dir = tempfile::tempdir().unwrap();
    let config = LocalStoreConfig::new(
        StoreDir::new(dir.path().join("store").to_str().unwrap()).unwrap(),
        dir.path().join("var/nix"),
        dir.path().join("var/log/nix"),
    );
    let live = Arc::new(LiveStore::new(LocalStore::open(config).unwrap()));
    let env = ConfigEnv::from_vars(|_| None, dir.path().to_owned());
    let mut settings = Settings::new(&Host::detect(), &env);
    settings.sandbox = SandboxMode::Disabled;
    settings.build_users_group = String::new();
    settings.max_jobs = 8;
    settings.build_dir = Some(dir.path().join("builds").to_str().unwrap().to_owned());
    std::fs::create_dir_all(dir.path().join("builds")).unwrap();
    let fake = Arc::new(Fake {
        store: live.clone(),
        acts: acts.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect(),
        record: Mutex::default(),
    });
    let builder = Builder::new(live.clone(), &settings, PublicKeys::default()).unwrap().with_executor(fake.clone());
    TestBed {
        store: live.session().unwrap(),
        _dir: dir,
        builder: Arc::new(builder),
        fake,
        system: settings.system.clone(),
    }
}

impl TestBed {
    /// Adds an input-addressed derivation with one output `out`, needing
    /// the `out` of each of `inputs`.
    fn drv(&self, name: &str, inputs: &[&StorePath]) -> StorePath {
        let dir = self.store.store_dir().clone();
        let mut drv = Derivation {
            name: name.to_owned(),
            outputs: BTreeMap::from([("out".to_owned(), Output::Deferred)]),
            input_drvs: inputs.iter().map(|p| ((*p).clone(), InputOutputs::new(["out"]))).collect(),
            input_srcs: BTreeSet::new(),
            system: self.system.clone(),
            builder: b"/bin/sh".to_vec(),
            args: vec![b"-c".to_vec(), b"true".to_vec()],
            env: BTreeMap::from([(b"name".to_vec(), name.as_bytes().to_vec())]),
        };
        let store = &self.store;
        drv.fill_in_outputs(&mut DrvHasher::new(dir.clone(), |p: &StorePath| store.read_derivation(p))).unwrap();
        let aterm = drv.to_aterm(&dir).unwrap();
        let info = store.add_text(&format!("{name}.drv"), &aterm, &drv.references(), AddOptions::default()).unwrap();
        assert_eq!(info.path, drv.drv_path(&dir).unwrap());
        info.path
    }

    fn job(&self, keep_going: bool) -> Arc<Job> {
        let client = ClientOptions { keep_going, max_build_jobs: 8, ..ClientOptions::default() };
        Arc::new(self.builder.job(&client))
    }

    fn out(&self, drv: &StorePath) -> StorePath {
        self.store.derivation_output_map(drv).unwrap()["out"].clone().unwrap()
    }

    fn valid(&self, path: &StorePath) -> bool {
        self.store.is_valid(path).unwrap()
    }
}

/// Waits (up to ten seconds) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_two_requesters_share_is_built_once() {
    let t = setup(&[]);
    let dep = t.drv("dep", &[]);
    let top1 = t.drv("top1", &[&dep]);
    let top2 = t.drv("top2", &[&dep]);
    let (job1, job2) = (t.job(false), t.job(false));

    // The same derivation asked for by two requests: one goal.
    let a = t.builder.derivation(&job1, dep.clone(), BuildModeKey::Normal);
    let b = t.builder.derivation(&job2, dep.clone(), BuildModeKey::Normal);
    assert!(Arc::ptr_eq(&a, &b));
    // And as an input of two derivations built at once.
    let g1 = t.builder.derivation(&job1, top1.clone(), BuildModeKey::Normal);
    let g2 = t.builder.derivation(&job2, top2.clone(), BuildModeKey::Normal);
    let (o1, o2, oa, ob) = tokio::join!(g1.outcome(), g2.outcome(), a.outcome(), b.outcome());
    for o in [&o1, &o2, &oa, &ob] {
        assert!(o.success(), "{:?}", o.error);
    }
    assert_eq!(t.fake.started("dep"), 1);
    assert_eq!(t.fake.started("top1"), 1);
    assert_eq!(t.fake.started("top2"), 1);
    assert_eq!(oa.outputs["out"], t.out(&dep));
    assert!(t.valid(&t.out(&top1)) && t.valid(&t.out(&top2)));

    // Asked again once valid (the goals gone): nothing is built.
    drop((a, b, g1, g2));
    let again = t.builder.derivation(&job1, top1.clone(), BuildModeKey::Normal).outcome().await;
    assert_eq!(again.status, BuildStatus::AlreadyValid);
    assert_eq!(t.fake.started("top1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_registered_inputs_first() {
    let t = setup(&[]);
    let dep = t.drv("dep", &[]);
    let mid = t.drv("mid", &[&dep]);
    let top = t.drv("top", &[&mid]);
    let o = t.builder.derivation(&t.job(false), top.clone(), BuildModeKey::Normal).outcome().await;
    assert_eq!(o.status, BuildStatus::Built, "{:?}", o.error);
    assert_eq!(o.times_built, 1);
    let r = t.fake.record();
    assert_eq!(r.started, ["dep", "mid", "top"]);
    // Every input was valid when its dependent's build started.
    assert!(r.invalid_inputs.is_empty(), "{:?}", r.invalid_inputs);
    drop(r);
    // The dependents' outputs refer to their inputs' (registered first).
    let top_info = t.store.path_info(&t.out(&top)).unwrap();
    assert!(top_info.references.contains(&t.out(&mid)));
    assert_eq!(top_info.deriver.as_ref(), Some(&top));
    let mid_info = t.store.path_info(&t.out(&mid)).unwrap();
    assert!(mid_info.references.contains(&t.out(&dep)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_without_keep_going_stops_the_dependents_and_the_rest() {
    let t = setup(&[("bad", Act::Fail), ("slow", Act::Block)]);
    let bad = t.drv("bad", &[]);
    let slow = t.drv("slow", &[]);
    let top = t.drv("top", &[&bad, &slow]);
    let g = t.builder.derivation(&t.job(false), top.clone(), BuildModeKey::Normal);
    let o = g.outcome().await;
    assert_eq!(o.status, BuildStatus::DependencyFailed);
    assert_eq!(
        o.error.as_deref(),
        Some(format!("1 dependencies of derivation '{}' failed to build", t.store.display(&top)).as_str())
    );
    assert_eq!(t.fake.started("top"), 0);
    // The other branch was dropped: cancelled if it had started.
    until("the blocked build is cancelled or never ran", || {
        let r = t.fake.record();
        !r.started.iter().any(|n| n == "slow") || r.cancelled.iter().any(|n| n == "slow")
    })
    .await;
    assert!(!t.valid(&t.out(&slow)));
    assert!(!t.valid(&t.out(&top)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_with_keep_going_lets_other_branches_finish() {
    let t = setup(&[("bad", Act::Fail)]);
    let bad = t.drv("bad", &[]);
    let good = t.drv("good", &[]);
    let top = t.drv("top", &[&bad, &good]);
    let g = t.builder.derivation(&t.job(true), top.clone(), BuildModeKey::Normal);
    let o = g.outcome().await;
    assert_eq!(o.status, BuildStatus::DependencyFailed);
    assert_eq!(t.fake.started("good"), 1);
    assert!(t.valid(&t.out(&good)));
    assert_eq!(t.fake.started("top"), 0);
    assert!(!t.valid(&t.out(&top)));

    // The failed build's own outcome: CppNix's message with the log tail.
    let failed = t.builder.derivation(&t.job(true), bad.clone(), BuildModeKey::Normal).outcome().await;
    assert_eq!(failed.status, BuildStatus::PermanentFailure);
    let msg = failed.error.as_deref().unwrap();
    let shown = t.store.display(&bad);
    assert!(
        msg.starts_with(&format!(
            "builder for '{shown}' failed with exit code 1;\nlast 1 log lines:\n> failing on purpose\n"
        )),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_nobody_wants_any_more_is_cancelled() {
    let t = setup(&[("slow", Act::Block)]);
    let slow = t.drv("slow", &[]);
    let (job1, job2) = (t.job(false), t.job(false));
    let first = t.builder.derivation(&job1, slow.clone(), BuildModeKey::Normal);
    let second = t.builder.derivation(&job2, slow.clone(), BuildModeKey::Normal);
    let watching = tokio::spawn({
        let g = second.clone();
        async move { g.outcome().await }
    });
    until("the build starts", || t.fake.started("slow") == 1).await;

    // One requester goes away: the other still wants it.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(t.fake.record().cancelled.is_empty());

    // The last one goes away: the build is cancelled.
    watching.abort();
    drop(second);
    until("the build is cancelled", || t.fake.record().cancelled == ["slow"]).await;
    assert!(!t.valid(&t.out(&slow)));
}
