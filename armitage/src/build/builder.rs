//! The scheduler's shared state: [`Builder`] (one per daemon: the store,
//! the settings, the table of live goals, the build slots, the executor,
//! the signing keys, the substituters) and [`Job`] (one per client request:
//! the settings in force for it, its share of the slots, its
//! substituters). The goals' bodies start through `impl Builder` blocks in
//! their own modules (`derivation`, `derivation_given` in
//! derivation_goal.rs, `substitution` in substitution_goal.rs), so that
//! this module uses none of them.

use super::auto_gc;
use super::executor::{Executor, LocalExecutor};
use super::goal;
use crate::substitute::{SubstituterConfig, Substituters};
use crate::witness::WitnessService;
use local_store::LiveStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use store::nix_conf::Settings;
use store::signing::{PublicKeys, SecretKey};
use store::store_path::StorePath;
use tokio::sync::Semaphore;
use worker_protocol::ClientOptions;

/// What all builds share.
pub struct Builder {
    /// The daemon's store; goals work on sessions of it (their own temp
    /// roots), on the store as it is on disk when they start.
    pub(super) store: Arc<LiveStore>,
    /// The daemon's settings (nix.conf).
    pub(super) settings: Settings,
    pub(super) goals: goal::Goals,
    /// `max-jobs` slots for local builds, over all clients.
    pub(super) slots: Arc<Semaphore>,
    /// Narinfo queries and downloads in progress (`http-connections`).
    pub(super) fetch_slots: Arc<Semaphore>,
    /// What runs the builders.
    pub(super) executor: Arc<dyn Executor>,
    pub(super) secret_keys: Vec<SecretKey>,
    public_keys: PublicKeys,
    /// Substituters by their URL list (clients may choose other lists).
    substituters: Mutex<HashMap<Vec<String>, Arc<Substituters>>>,
    /// Numbers the build directories (`nix-build-<name>-<n>`).
    pub(super) next_build: AtomicU64,
    pub(super) auto_gc: auto_gc::AutoGc,
    /// The witness proxy fixed-output builds fetch through, when on.
    pub(super) witness: Option<Arc<WitnessService>>,
    /// The upload queue built outputs join, with an `[s3]` bucket.
    pub(super) uploads: Option<Arc<crate::upload::Uploader>>,
}

/// Whether `builders` names any machine: CppNix's default is
/// `@<conf dir>/machines`, which names none while that file is missing or
/// has no machines in it.
fn has_remote_builders(value: &str) -> bool {
    value.split([';', '\n']).map(str::trim).filter(|m| !m.is_empty() && !m.starts_with('#')).any(|m| {
        match m.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file).is_ok_and(|t| has_remote_builders(&t)),
            None => true,
        }
    })
}

/// One request's view of the builder: the settings in force for it, its
/// share of the build slots, its substituters.
pub struct Job {
    pub settings: Settings,
    pub(super) share: Arc<Semaphore>,
    pub(super) substituters: Option<Arc<Substituters>>,
    /// Warnings for the client (substituters it cannot use, ignored settings).
    pub warnings: Vec<String>,
    /// The client's protocol minor (0: unknown) and verbosity, for what
    /// builders send it (builtins' wording, their log messages).
    pub client_minor: u64,
    pub client_verbosity: u64,
    /// Paths whose contents were checked against their NAR hash for a
    /// repair, and the verdict (CppNix's `pathContentsGoodCache`, one per
    /// request): each is checked, and said to be, once.
    pub(super) contents_good: Mutex<HashMap<StorePath, bool>>,
}

impl Builder {
    pub fn new(store: Arc<LiveStore>, settings: &Settings, public_keys: PublicKeys) -> Result<Builder, String> {
        let mut secret_keys = Vec::new();
        for file in &settings.secret_key_files {
            let text = std::fs::read_to_string(file).map_err(|e| format!("reading secret key file '{file}': {e}"))?;
            secret_keys.push(SecretKey::parse(text.trim()).map_err(|e| format!("secret key file '{file}': {e}"))?);
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the armitage executable: {e}"))?;
        let spec_dir = store.config().state_dir.join("builds");
        Ok(Builder {
            store,
            settings: settings.clone(),
            goals: goal::Goals::default(),
            slots: Arc::new(Semaphore::new(settings.max_jobs as usize)),
            fetch_slots: Arc::new(Semaphore::new(match settings.http_connections {
                0 => 25,
                n => usize::try_from(n).unwrap_or(25),
            })),
            executor: Arc::new(LocalExecutor::new(exe, spec_dir)),
            secret_keys,
            public_keys,
            substituters: Mutex::new(HashMap::new()),
            next_build: AtomicU64::new(0),
            auto_gc: auto_gc::AutoGc::default(),
            witness: None,
            uploads: None,
        })
    }

    /// The witness fixed-output builds fetch through, when on.
    pub fn witness(&self) -> Option<&Arc<WitnessService>> {
        self.witness.as_ref()
    }

    /// The same builder with fixed-output fetches going through `witness`.
    pub fn with_witness(mut self, witness: Option<Arc<WitnessService>>) -> Builder {
        self.witness = witness;
        self
    }

    /// The same builder queueing the outputs it builds for `uploads`.
    pub fn with_uploads(mut self, uploads: Option<Arc<crate::upload::Uploader>>) -> Builder {
        self.uploads = uploads;
        self
    }

    /// The same builder running its builds with `executor` (tests run the
    /// scheduler against a fake one).
    #[cfg(test)]
    pub(crate) fn with_executor(mut self, executor: Arc<dyn Executor>) -> Builder {
        self.executor = executor;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The settings for one client's request: the daemon's, with the
    /// client's fixed options and the overrides it was allowed to make
    /// (`SetOptions`, filtered by trust). `max-jobs` can only go down.
    pub fn job(&self, client: &ClientOptions) -> Job {
        let mut s = self.settings.clone();
        let mut warnings = Vec::new();
        s.keep_failed = client.keep_failed;
        s.keep_going = client.keep_going;
        s.fallback = client.try_fallback;
        s.max_silent_time = i64::try_from(client.max_silent_time).unwrap_or(i64::MAX);
        s.cores = u32::try_from(client.build_cores).unwrap_or(u32::MAX);
        s.substitute = client.use_substitutes;
        let mut conf_warnings = Vec::new();
        for (name, value) in &client.overrides {
            if let Err(e) = s.set(name, value, &mut conf_warnings) {
                warnings.push(format!("ignoring the client-specified setting '{name}': {e}"));
            }
        }
        let client_jobs = u64::from(s.max_jobs).min(client.max_build_jobs);
        s.max_jobs = u32::try_from(client_jobs).unwrap_or(u32::MAX).min(self.settings.max_jobs);
        if has_remote_builders(&s.builders) {
            warnings.push(format!(
                "ignoring the 'builders' setting ('{}'): armitage does not build on remote machines; builds run locally",
                s.builders.trim()
            ));
        }
        let substituters =
            if s.substitute && !s.substituters.is_empty() { self.substituters_for(&s, &mut warnings) } else { None };
        Job {
            share: Arc::new(Semaphore::new(s.max_jobs as usize)),
            settings: s,
            substituters,
            warnings,
            client_minor: client.protocol_minor,
            client_verbosity: client.verbosity,
            contents_good: Mutex::default(),
        }
    }

    fn substituters_for(&self, s: &Settings, warnings: &mut Vec<String>) -> Option<Arc<Substituters>> {
        let mut cache = self.substituters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = cache.get(&s.substituters) {
            return Some(subs.clone());
        }
        let config = SubstituterConfig::from_settings(s, self.store.store_dir().clone(), self.public_keys.clone());
        match Substituters::new(config) {
            Ok(subs) => {
                let subs = Arc::new(subs);
                cache.insert(s.substituters.clone(), subs.clone());
                Some(subs)
            }
            Err(e) => {
                warnings.push(e.to_string());
                None
            }
        }
    }

    /// What substituters this job can use.
    pub fn job_substituters(job: &Job) -> Option<&Arc<Substituters>> {
        job.substituters.as_ref()
    }

    pub(super) fn next_build_number(&self) -> u64 {
        self.next_build.fetch_add(1, Ordering::Relaxed)
    }
}
