//! Realising targets for a client (BuildPaths, BuildPathsWithResults,
//! EnsurePath, BuildDerivation): goals from the shared builder, their
//! events turned into the activities and results stock clients draw their
//! progress from (worker-protocol.md §4.5: actRealise, actBuilds and
//! actCopyPaths, one actBuild per build with its log lines, actCopyPath per
//! substitution), and the client's disconnection cancelling its goals.
//! Also the replies' verdicts over the outcomes (BuildPaths' error and
//! exit status, BuildResult's builtOutputs). Used by the `build` family.

use crate::build::{BuildModeKey, Event, Goal, Observer, Outcome};
use crate::daemon::session::{Input, OpError, OpResult, Output, Session};
use crate::daemon::state::DaemonState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use store::derivation::Derivation;
use store::store_path::StorePath;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use worker_protocol::{ActivityType, BuildStatus, DerivedPath, Field, ResultType, StderrMessage, Verbosity};

/// What to realise.
pub enum Target {
    Path(DerivedPath),
    /// A derivation the client sent (BuildDerivation).
    Given(StorePath, Box<Derivation>),
}

/// The counters behind the progress results.
#[derive(Default, PartialEq, Clone, Copy)]
struct Counts {
    done: u64,
    expected: u64,
    running: u64,
    failed: u64,
}

impl Counts {
    /// One that ran ended. Shown as expected are those pending plus those
    /// done (CppNix's `expectedBuilds + doneBuilds`), so a failure drops out.
    fn finish(&mut self, ok: bool) {
        self.running = self.running.saturating_sub(1);
        if ok {
            self.done += 1;
        } else {
            self.failed += 1;
            self.expected = self.expected.saturating_sub(1);
        }
    }
}

struct Activities {
    realise: u64,
    builds: u64,
    copies: u64,
    build_acts: HashMap<StorePath, u64>,
    copy_acts: HashMap<StorePath, (u64, u64)>,
    hook_acts: HashMap<StorePath, u64>,
    planned: BTreeSet<StorePath>,
    builds_n: Counts,
    copies_n: Counts,
    sent_builds: Option<Counts>,
    sent_copies: Option<Counts>,
}

fn progress(id: u64, n: Counts) -> StderrMessage {
    StderrMessage::Result {
        id,
        kind: ResultType::Progress,
        fields: vec![Field::Int(n.done), Field::Int(n.expected), Field::Int(n.running), Field::Int(n.failed)],
    }
}

fn start(id: u64, level: Verbosity, kind: ActivityType, text: String, fields: Vec<Field>) -> StderrMessage {
    StderrMessage::StartActivity { id, level, kind, text, fields, parent: 0 }
}

/// Realises `targets`; returns one outcome per target, in order. Ends with
/// `OpError::Fatal` when the client goes away (its goals are dropped, which
/// cancels those nobody else waits for).
pub async fn realise<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    targets: Vec<Target>,
    mode: BuildModeKey,
) -> OpResult<Vec<Arc<Outcome>>> {
    let builder = d.builder.clone();
    let job = Arc::new(builder.job(&s.options));
    for w in &job.warnings {
        s.warn(w).await?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let observer = Observer::new(tx);

    let mut acts = Activities {
        realise: s.new_activity_id(),
        builds: s.new_activity_id(),
        copies: s.new_activity_id(),
        build_acts: HashMap::new(),
        copy_acts: HashMap::new(),
        hook_acts: HashMap::new(),
        planned: BTreeSet::new(),
        builds_n: Counts::default(),
        copies_n: Counts::default(),
        sent_builds: None,
        sent_copies: None,
    };
    s.log(start(acts.realise, Verbosity::Error, ActivityType::Realise, String::new(), vec![])).await?;
    s.log(start(acts.builds, Verbosity::Error, ActivityType::Builds, String::new(), vec![])).await?;
    s.log(start(acts.copies, Verbosity::Error, ActivityType::CopyPaths, String::new(), vec![])).await?;
    send_progress(s, &mut acts).await?;
    for kind in [ActivityType::FileTransfer, ActivityType::CopyPath] {
        s.log(StderrMessage::Result {
            id: acts.realise,
            kind: ResultType::SetExpected,
            fields: vec![Field::Int(kind as u64), Field::Int(0)],
        })
        .await?;
    }
    // CppNix's worker starts by asking `queryMissing` about the targets,
    // whose (debug-level) activity clients see; the goals here look for
    // substitutes themselves, so only the activity is sent, for the same
    // sequence of activities.
    let query = s.new_activity_id();
    s.log(start(query, Verbosity::Debug, ActivityType::Unknown, "querying info about missing paths".into(), vec![]))
        .await?;
    s.log(StderrMessage::StopActivity { id: query }).await?;

    // Goals, or outcomes known at once.
    let mut slots: Vec<Result<Arc<Goal>, Arc<Outcome>>> = Vec::new();
    for t in targets {
        let slot = match t {
            Target::Path(DerivedPath::Opaque(p)) => {
                let store = s.store.clone();
                let q = p.clone();
                let valid = tokio::task::block_in_place(|| store.is_valid(&q))?;
                if valid && mode != BuildModeKey::Repair {
                    let mut o = Outcome::new(BuildStatus::AlreadyValid);
                    o.outputs.insert("out".into(), p);
                    Err(Arc::new(o))
                } else {
                    Ok(builder.substitution(&job, p, mode == BuildModeKey::Repair))
                }
            }
            Target::Path(DerivedPath::Built { drv, outputs }) => {
                let g = builder.derivation(&job, drv, mode);
                g.want(outputs.as_ref());
                Ok(g)
            }
            // CppNix's BuildDerivation wants all outputs.
            Target::Given(path, drv) => {
                let g = builder.derivation_given(&job, path, *drv, mode);
                g.want(None);
                Ok(g)
            }
        };
        if let Ok(g) = &slot {
            g.observe(&observer);
        }
        slots.push(slot);
    }

    let goals: Vec<Arc<Goal>> = slots.iter().filter_map(|s| s.as_ref().ok().cloned()).collect();
    let mut all =
        Box::pin(futures_util::future::join_all(goals.iter().cloned().map(|g| async move { g.outcome().await })));
    let mut watch_input = true;
    enum Step {
        Event(Option<Event>),
        Done(Vec<Arc<Outcome>>),
        Input(bool),
    }
    let finished = loop {
        let step = tokio::select! {
            biased;
            ev = rx.recv() => Step::Event(ev),
            outs = &mut all => Step::Done(outs),
            r = s.reader.fill_buf(), if watch_input => Step::Input(r.map(|b| b.is_empty()).unwrap_or(true)),
        };
        match step {
            Step::Event(Some(ev)) => {
                let mut sent = report(s, d, &mut acts, ev).await;
                if sent.is_ok() && rx.is_empty() {
                    sent = s.writer.flush().await;
                }
                if let Err(e) = sent {
                    // The client is gone: give up its goals.
                    drop(all);
                    drop(goals);
                    return Err(e.into());
                }
            }
            Step::Event(None) => {}
            Step::Done(outs) => break outs,
            Step::Input(closed) => {
                if closed {
                    // The client is gone (or interrupted): give up its goals.
                    tracing::info!("client disconnected during a build; cancelling its goals");
                    drop(all);
                    drop(goals);
                    return Err(OpError::Fatal("the client disconnected".into()));
                }
                // The client sent something mid-operation: leave it for later.
                watch_input = false;
            }
        }
    };
    while let Ok(ev) = rx.try_recv() {
        report(s, d, &mut acts, ev).await?;
    }
    for (_, id) in acts.build_acts.drain().collect::<Vec<_>>() {
        s.log(StderrMessage::StopActivity { id }).await?;
    }
    for (_, (a, b)) in acts.copy_acts.drain().collect::<Vec<_>>() {
        s.log(StderrMessage::StopActivity { id: b }).await?;
        s.log(StderrMessage::StopActivity { id: a }).await?;
    }
    s.log(StderrMessage::StopActivity { id: acts.copies }).await?;
    s.log(StderrMessage::StopActivity { id: acts.builds }).await?;
    s.log(StderrMessage::StopActivity { id: acts.realise }).await?;

    let mut finished = finished.into_iter();
    Ok(slots
        .into_iter()
        .map(|s| match s {
            Ok(_) => finished.next().expect("one outcome per goal"),
            Err(known) => known,
        })
        .collect())
}

async fn send_progress<R: Input, W: Output>(s: &mut Session<R, W>, acts: &mut Activities) -> std::io::Result<()> {
    if acts.sent_builds != Some(acts.builds_n) {
        acts.sent_builds = Some(acts.builds_n);
        s.log(progress(acts.builds, acts.builds_n)).await?;
    }
    if acts.sent_copies != Some(acts.copies_n) {
        acts.sent_copies = Some(acts.copies_n);
        s.log(progress(acts.copies, acts.copies_n)).await?;
    }
    Ok(())
}

async fn report<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    acts: &mut Activities,
    ev: Event,
) -> std::io::Result<()> {
    let dir = s.store.store_dir().clone();
    match ev {
        Event::BuildPlanned(drv) => {
            if acts.planned.insert(drv) {
                acts.builds_n.expected += 1;
            }
        }
        Event::BuildAbandoned(drv) => {
            if acts.planned.remove(&drv) {
                acts.builds_n.expected -= 1;
            }
        }
        // Goals replay their state to watchers that join late, so a build
        // may be reported started twice.
        Event::BuildStarted(drv, _) if acts.build_acts.contains_key(&drv) => {}
        Event::BuildStarted(drv, mode) => {
            if !acts.planned.contains(&drv) {
                acts.planned.insert(drv.clone());
                acts.builds_n.expected += 1;
            }
            let id = s.new_activity_id();
            let full = dir.display(&drv);
            let fields = vec![Field::Str(full.clone()), Field::Str(String::new()), Field::Int(1), Field::Int(1)];
            let text = match mode {
                BuildModeKey::Normal => format!("building '{full}'"),
                BuildModeKey::Repair => format!("repairing outputs of '{full}'"),
                BuildModeKey::Check => format!("checking outputs of '{full}'"),
            };
            s.log(start(id, Verbosity::Info, ActivityType::Build, text, fields)).await?;
            acts.build_acts.insert(drv, id);
            acts.builds_n.running += 1;
        }
        Event::Log(drv, line) => {
            if let Some(&id) = acts.build_acts.get(&drv) {
                s.log(StderrMessage::Result { id, kind: ResultType::BuildLogLine, fields: vec![Field::Str(line)] })
                    .await?;
            }
        }
        Event::BuildFinished { drv, ok } => {
            if let Some(id) = acts.build_acts.remove(&drv) {
                acts.builds_n.finish(ok);
                acts.planned.remove(&drv);
                // CppNix updates the progress before the build's activity ends.
                send_progress(s, acts).await?;
                s.log(StderrMessage::StopActivity { id }).await?;
            }
        }
        Event::SubstituteStarted { path, cache } => {
            let full = dir.display(&path);
            let sub = s.new_activity_id();
            s.log(start(
                sub,
                Verbosity::Error,
                ActivityType::Substitute,
                String::new(),
                vec![Field::Str(full.clone()), Field::Str(cache.clone())],
            ))
            .await?;
            let copy = s.new_activity_id();
            s.log(start(
                copy,
                Verbosity::Info,
                ActivityType::CopyPath,
                format!("copying path '{full}' from '{cache}'"),
                vec![Field::Str(full), Field::Str(cache), Field::Str("local".into())],
            ))
            .await?;
            acts.copy_acts.insert(path, (sub, copy));
            acts.copies_n.running += 1;
            acts.copies_n.expected += 1;
        }
        Event::SubstituteProgress { path, done, expected } => {
            if let Some(&(_, copy)) = acts.copy_acts.get(&path) {
                s.log(progress(copy, Counts { done, expected, running: 0, failed: 0 })).await?;
            }
        }
        Event::SubstituteFinished { path, ok } => {
            if let Some((sub, copy)) = acts.copy_acts.remove(&path) {
                acts.copies_n.finish(ok);
                s.log(StderrMessage::StopActivity { id: copy }).await?;
                s.log(StderrMessage::StopActivity { id: sub }).await?;
            }
        }
        Event::Error(msg) => s.log(StderrMessage::Next(format!("error: {}\n", indent_error(&msg)))).await?,
        Event::Warning(msg) => s.warn(&msg).await?,
        Event::Note(line) => s.log(StderrMessage::Next(format!("{line}\n"))).await?,
        Event::Message(level, line) => s.info(level, &line).await?,
        Event::HookStarted(drv) => {
            let id = s.new_activity_id();
            let hook = d.builder.settings().post_build_hook.clone();
            s.log(start(
                id,
                Verbosity::Info,
                ActivityType::PostBuildHook,
                format!("running post-build-hook '{hook}'"),
                vec![Field::Str(dir.display(&drv))],
            ))
            .await?;
            acts.hook_acts.insert(drv, id);
        }
        Event::HookLine(drv, line) => {
            if let Some(&id) = acts.hook_acts.get(&drv) {
                s.log(StderrMessage::Result { id, kind: ResultType::PostBuildLogLine, fields: vec![Field::Str(line)] })
                    .await?;
            }
        }
        Event::HookFinished(drv) => {
            if let Some(id) = acts.hook_acts.remove(&drv) {
                s.log(StderrMessage::StopActivity { id }).await?;
            }
        }
    }
    send_progress(s, acts).await
}

/// A multi-line error message as CppNix logs it (`showErrorInfo`): the
/// lines after the first indented to line up after `error: `. (Stock
/// clients print logged errors as they come.)
pub fn indent_error(msg: &str) -> String {
    msg.trim_end().replace('\n', "\n       ")
}

/// CppNix `Store::buildPaths`' verdict over the outcomes: nothing when all
/// succeeded; the one error when one target failed with an error; else
/// "build of ... failed" (the other errors logged first). The errors to log
/// come indented for `error: ` ([`indent_error`]); the final one is the
/// client's to format.
pub fn build_paths_error(
    dir: &store::store_path::StoreDir,
    targets: &[DerivedPath],
    outcomes: &[Arc<Outcome>],
) -> (Vec<String>, Option<String>) {
    let mut order: Vec<(usize, String, String)> =
        targets.iter().enumerate().map(|(i, t)| (i, goal_order_key(dir, t), dir.display(target_path(t)))).collect();
    order.sort_by(|a, b| a.1.cmp(&b.1));
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut ex: Option<String> = None;
    let mut logged = Vec::new();
    for (i, _, shown) in &order {
        let o = &outcomes[*i];
        if o.success() {
            continue;
        }
        failed.insert(shown.clone());
        if o.status == BuildStatus::NoSubstituters {
            continue;
        }
        if let Some(e) = &o.error {
            if ex.is_some() {
                logged.push(indent_error(e));
            } else {
                ex = Some(e.clone());
            }
        }
    }
    if failed.is_empty() {
        return (logged, None);
    }
    if failed.len() == 1
        && let Some(e) = ex
    {
        return (logged, Some(e));
    }
    if let Some(e) = ex {
        logged.push(indent_error(&e));
    }
    let shown: Vec<String> = failed.into_iter().map(|p| format!("'{p}'")).collect();
    (logged, Some(format!("build of {} failed", shown.join(", "))))
}

/// The realisations of the wanted outputs, for BuildResult's builtOutputs.
pub fn built_outputs(
    store: &local_store::LocalStore,
    drv: &StorePath,
    wanted: Option<&BTreeSet<String>>,
    outcome: &Outcome,
) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let dir = store.store_dir();
    let Ok(parsed) = store.read_derivation(drv) else { return map };
    let mut hasher = store::derivation::DrvHasher::new(dir.clone(), |p: &StorePath| store.read_derivation(p));
    let Ok(hashes) = hasher.hash_modulo(&parsed, true).map(|h| h.hashes) else { return map };
    for (name, path) in &outcome.outputs {
        if wanted.is_some_and(|w| !w.contains(name)) {
            continue;
        }
        if let Some(hash) = hashes.get(name) {
            let id = store::realisation::DrvOutput { drv_hash: *hash, output: name.clone() };
            let r = store::realisation::Realisation {
                id: id.clone(),
                out_path: path.clone(),
                signatures: BTreeSet::new(),
                dependent_realisations: BTreeMap::new(),
            };
            map.insert(id.to_string(), r.to_json().to_string());
        }
    }
    map
}

/// CppNix `Worker::exitStatus` over what failed: 1 for other failures,
/// else 0x60 | 0x04 (a build failed) | 0x01 (timed out) | 0x02 (hash
/// mismatch) | 0x08 (not deterministic).
pub fn exit_status(outcomes: &[Arc<Outcome>]) -> u64 {
    let mut mask = 0;
    for o in outcomes {
        match o.status {
            // CppNix counts over the whole worker; a failed dependency is
            // nearly always a failed build.
            BuildStatus::PermanentFailure | BuildStatus::OutputRejected | BuildStatus::DependencyFailed => mask |= 0x04,
            BuildStatus::TimedOut => mask |= 0x04 | 0x01,
            BuildStatus::NotDeterministic => mask |= 0x08,
            _ => {}
        }
        if o.error.as_deref().is_some_and(|e| e.starts_with("hash mismatch in fixed-output derivation")) {
            mask |= 0x04 | 0x02;
        }
    }
    if mask == 0 { 1 } else { mask | 0x60 }
}

fn target_path(t: &DerivedPath) -> &StorePath {
    match t {
        DerivedPath::Opaque(p) => p,
        DerivedPath::Built { drv, .. } => drv,
    }
}

/// Where CppNix's worker keeps a target's goal in its ordered goal set
/// (`Goal::key`: substitutions `a$name$path`, derivations `b$name$path`).
pub fn goal_order_key(dir: &store::store_path::StoreDir, t: &DerivedPath) -> String {
    let p = target_path(t);
    let kind = if matches!(t, DerivedPath::Opaque(_)) { "a" } else { "b" };
    format!("{kind}${}${}", p.name(), dir.display(p))
}
