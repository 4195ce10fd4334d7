//! Goals: one per derivation (or per path to substitute) across all
//! clients, CppNix's `Worker`/`Goal` model on tokio. A goal is started by
//! whoever needs it first and shared by everyone else who needs it; it
//! lives while someone holds it (a client's request, or a goal waiting for
//! it as an input), and is cancelled — its builder killed, nothing
//! registered — when nobody does any more (a client disconnected or was
//! interrupted, or a sibling failed without `keep-going`).
//!
//! Goals report what happens to observers (the requests that wait on them,
//! directly or through other goals) as [`Event`]s.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use store::store_path::StorePath;
use tokio::sync::{mpsc, watch};
use worker_protocol::{BuildMode, BuildStatus, Verbosity};

/// What a goal is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GoalKey {
    /// Make a derivation's outputs valid (build or substitute them).
    Derivation(StorePath, BuildModeKey),
    /// Make a path valid by substituting it (`repair`: even if valid).
    Substitution(StorePath, bool),
}

/// `BuildMode` as a key (checks and repairs are not shared with normal builds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildModeKey {
    Normal,
    Repair,
    Check,
}

impl From<BuildMode> for BuildModeKey {
    fn from(m: BuildMode) -> Self {
        match m {
            BuildMode::Normal => BuildModeKey::Normal,
            BuildMode::Repair => BuildModeKey::Repair,
            BuildMode::Check => BuildModeKey::Check,
        }
    }
}

/// Something that happened, for the clients watching.
#[derive(Debug, Clone)]
pub enum Event {
    /// A derivation will have to be built (counts towards "expected").
    BuildPlanned(StorePath),
    /// A planned build will not run (an input failed).
    BuildAbandoned(StorePath),
    /// A build starts: of `drv`, in a mode (CppNix names the activity
    /// after it: building, repairing or checking outputs).
    BuildStarted(StorePath, BuildModeKey),
    Log(StorePath, String),
    BuildFinished {
        drv: StorePath,
        ok: bool,
    },
    SubstituteStarted {
        path: StorePath,
        cache: String,
    },
    SubstituteProgress {
        path: StorePath,
        done: u64,
        expected: u64,
    },
    SubstituteFinished {
        path: StorePath,
        ok: bool,
    },
    /// An error CppNix would log (a failed input of a goal someone waits for).
    Error(String),
    /// A warning for the clients.
    Warning(String),
    /// A line CppNix logs as is (`note: keeping build directory ...`).
    Note(String),
    /// A line CppNix logs at a level: clients see it when their verbosity
    /// reaches it (`checking path '…'...`).
    Message(Verbosity, String),
    /// The post-build hook of a derivation runs / printed a line / ended.
    HookStarted(StorePath),
    HookLine(StorePath, String),
    HookFinished(StorePath),
}

/// How a goal ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: BuildStatus,
    pub error: Option<String>,
    /// Output name → valid path (derivation goals); the path itself under
    /// "out" for substitution goals.
    pub outputs: std::collections::BTreeMap<String, StorePath>,
    pub times_built: u64,
    pub start_time: u64,
    pub stop_time: u64,
    pub is_non_deterministic: bool,
}

impl Outcome {
    pub fn new(status: BuildStatus) -> Outcome {
        Outcome {
            status,
            error: None,
            outputs: Default::default(),
            times_built: 0,
            start_time: 0,
            stop_time: 0,
            is_non_deterministic: false,
        }
    }

    pub fn failed(status: BuildStatus, error: impl Into<String>) -> Outcome {
        let mut o = Outcome::new(status);
        o.error = Some(error.into());
        o
    }

    pub fn success(&self) -> bool {
        matches!(
            self.status,
            BuildStatus::Built
                | BuildStatus::Substituted
                | BuildStatus::AlreadyValid
                | BuildStatus::ResolvesToAlreadyValid
        )
    }
}

/// Someone receiving events.
pub struct Observer {
    id: u64,
    tx: mpsc::UnboundedSender<Event>,
}

impl Observer {
    pub fn new(tx: mpsc::UnboundedSender<Event>) -> Arc<Observer> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Arc::new(Observer { id: NEXT.fetch_add(1, Ordering::Relaxed), tx })
    }
}

/// A running (or finished) goal. Dropping the last `Arc` cancels it.
///
/// Its body starts only once someone watches it ([`Goal::observe`], a
/// parent in [`wait_inputs`], or [`Goal::outcome`]): started at once, a
/// goal could report (`BuildPlanned`, `BuildStarted`) before whoever
/// asked for it was listening, and those events were lost (seen as builds
/// missing from a client's progress when the machine was busy). Those
/// joining a goal that already runs get its current state replayed.
pub struct Goal {
    pub key: GoalKey,
    pub cancel: Arc<AtomicBool>,
    result: watch::Receiver<Option<Arc<Outcome>>>,
    observers: Mutex<Vec<Arc<Observer>>>,
    parents: Mutex<Vec<Weak<Goal>>>,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
    /// Opened (once) when someone watches; the body waits for it.
    gate: Arc<tokio::sync::Notify>,
    opened: AtomicBool,
    /// The goal's own build as last reported (`BuildPlanned` or
    /// `BuildStarted`, none once abandoned or finished), for replay. Its
    /// lock also orders reports against watchers joining.
    state: Mutex<Option<Event>>,
    /// The outputs its first requester wanted (`None`: all), which CppNix
    /// names the goal by (`building of '<drv>!out' from .drv file`).
    wanted: Mutex<Option<Option<std::collections::BTreeSet<String>>>>,
}

impl Drop for Goal {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(a) = self.abort.lock().unwrap_or_else(|e| e.into_inner()).take() {
            a.abort();
        }
    }
}

impl Goal {
    /// Waits for the outcome.
    pub async fn outcome(&self) -> Arc<Outcome> {
        self.open();
        let mut rx = self.result.clone();
        loop {
            if let Some(o) = rx.borrow().clone() {
                return o;
            }
            if rx.changed().await.is_err() {
                // The task went away without a result: it was cancelled.
                return Arc::new(Outcome::failed(BuildStatus::MiscFailure, "the goal was cancelled"));
            }
        }
    }

    /// Records the outputs wanted of a derivation goal, unless its first
    /// requester already did (CppNix names a goal once, when it is made).
    pub fn want(&self, outputs: Option<&std::collections::BTreeSet<String>>) {
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_none() {
            *w = Some(outputs.cloned());
        }
    }

    /// The wanted outputs as CppNix's `DerivedPath::Built` prints them
    /// (`out`, `dev,out`, `*` for all); `None` when never recorded.
    pub fn wanted_text(&self) -> Option<String> {
        let w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        w.as_ref().map(|o| match o {
            Some(names) if !names.is_empty() => names.iter().cloned().collect::<Vec<_>>().join(","),
            _ => "*".to_owned(),
        })
    }

    fn open(&self) {
        if !self.opened.swap(true, Ordering::SeqCst) {
            // Stores a permit if the body is not waiting yet.
            self.gate.notify_one();
        }
    }

    pub fn observe(&self, o: &Arc<Observer>) {
        {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let mut obs = self.observers.lock().unwrap_or_else(|e| e.into_inner());
            if !obs.iter().any(|x| x.id == o.id) {
                obs.push(o.clone());
                if let Some(ev) = state.as_ref() {
                    let _ = o.tx.send(ev.clone());
                }
            }
        }
        self.open();
    }

    /// Makes `parent` wait for this goal: this goal's events reach the
    /// parent's watchers from now on (its current state at once).
    fn add_parent(&self, parent: &Weak<Goal>) {
        {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.parents.lock().unwrap_or_else(|e| e.into_inner()).push(parent.clone());
            if let (Some(ev), Some(p)) = (state.as_ref(), parent.upgrade()) {
                p.send_up(ev.clone());
            }
        }
        self.open();
    }

    /// Sends `event` to this goal's observers and, through its parents, to
    /// everyone waiting on it indirectly (each observer once).
    pub fn emit(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &event {
            Event::BuildPlanned(_) | Event::BuildStarted(..) => *state = Some(event.clone()),
            Event::BuildAbandoned(_) | Event::BuildFinished { .. } => *state = None,
            _ => {}
        }
        self.send_up(event);
    }

    fn send_up(&self, event: Event) {
        let mut seen_obs: HashSet<u64> = HashSet::new();
        let mut send = |obs: &Mutex<Vec<Arc<Observer>>>| {
            let mut list = obs.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|o| !o.tx.is_closed());
            for o in list.iter() {
                if seen_obs.insert(o.id) {
                    let _ = o.tx.send(event.clone());
                }
            }
        };
        send(&self.observers);
        let mut seen_goals: HashSet<*const Goal> = HashSet::new();
        let mut todo: Vec<Arc<Goal>> =
            self.parents.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
        while let Some(g) = todo.pop() {
            if !seen_goals.insert(Arc::as_ptr(&g)) {
                continue;
            }
            send(&g.observers);
            todo.extend(g.parents.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade));
        }
    }
}

/// The table of live goals.
#[derive(Default)]
pub struct Goals {
    table: Mutex<HashMap<GoalKey, Weak<Goal>>>,
}

/// What a goal's body gets: a way to report and to see cancellation.
#[derive(Clone)]
pub struct GoalCtx {
    pub me: Weak<Goal>,
    pub cancel: Arc<AtomicBool>,
}

impl GoalCtx {
    pub fn emit(&self, event: Event) {
        if let Some(g) = self.me.upgrade() {
            g.emit(event);
        }
    }
}

impl Goals {
    /// The live goal for `key`, or a new one running `body`.
    pub fn get_or_start<F, Fut>(&self, key: GoalKey, body: F) -> Arc<Goal>
    where
        F: FnOnce(GoalCtx) -> Fut,
        Fut: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = table.get(&key).and_then(Weak::upgrade) {
            return g;
        }
        table.retain(|_, w| w.strong_count() > 0);
        let (tx, rx) = watch::channel(None);
        let goal = Arc::new(Goal {
            key: key.clone(),
            cancel: Arc::new(AtomicBool::new(false)),
            result: rx,
            observers: Mutex::new(Vec::new()),
            parents: Mutex::new(Vec::new()),
            abort: Mutex::new(None),
            gate: Arc::new(tokio::sync::Notify::new()),
            opened: AtomicBool::new(false),
            state: Mutex::new(None),
            wanted: Mutex::new(None),
        });
        let is_substitution = matches!(key, GoalKey::Substitution(..));
        let me = Arc::downgrade(&goal);
        let ctx = GoalCtx { me: me.clone(), cancel: goal.cancel.clone() };
        let fut = body(ctx);
        let gate = goal.gate.clone();
        let handle = tokio::spawn(async move {
            gate.notified().await;
            let outcome = fut.await;
            // CppNix logs the error of a failed goal that other goals wait
            // for (the requester of a top-level goal gets it as the result).
            // A path no cache has is not an error of its own (CppNix logs
            // it at debug level): whoever needed it reports the failure.
            let unavailable = is_substitution
                && matches!(outcome.status, BuildStatus::NoSubstituters | BuildStatus::DependencyFailed);
            if let (Some(e), Some(g)) = (&outcome.error, me.upgrade())
                && !outcome.success()
                && !unavailable
            {
                let waited_for =
                    g.parents.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|p| p.strong_count() > 0);
                if waited_for {
                    g.emit(Event::Error(e.clone()));
                }
            }
            let _ = tx.send(Some(Arc::new(outcome)));
        });
        *goal.abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.abort_handle());
        table.insert(key, Arc::downgrade(&goal));
        goal
    }
}

/// Waits for `inputs`; without `keep_going` stops at the first failure
/// (dropping the rest). Returns the number that failed and the first error.
pub async fn wait_inputs(
    parent: &Weak<Goal>,
    inputs: Vec<Arc<Goal>>,
    keep_going: bool,
) -> (usize, Vec<(Arc<Goal>, Arc<Outcome>)>) {
    for i in &inputs {
        i.add_parent(parent);
    }
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut pending: FuturesUnordered<_> = inputs
        .into_iter()
        .map(|g| async move {
            let o = g.outcome().await;
            (g, o)
        })
        .collect();
    let mut failed = 0;
    let mut done = Vec::new();
    while let Some((g, o)) = pending.next().await {
        if !o.success() {
            failed += 1;
            if !keep_going {
                done.push((g, o));
                return (failed, done);
            }
        }
        done.push((g, o));
    }
    (failed, done)
}
