//! A simulated world for the run machine: fake services, fake files, fake remotes (an S3 store
//! and a directory, with their open uploads and objects, the journal's copies table and its
//! pruned pairs), an in-memory journal, an executor that carries out every [`Effect`] with the
//! semantics documented on its variant, seeded effect failures and a crash at any chosen point.
//!
//! Nothing here performs I/O or reads a clock: the simulated clock is a counter, faults are keyed by
//! (run, effect number), and a crash is a counter of "points" reaching zero. The same inputs give
//! the same journal and the same world, which is what lets the model test enumerate every crash
//! point of a scenario and shrink a failure to a minimal case.
//!
//! # Crash points
//!
//! A crash can happen (a) right after any journal append, or (b) right after any micro-step of an
//! effect (so an effect may have run partly, or fully without its outcome being journaled). The
//! executor is written in micro-steps, each one an atomic change of the world (a rename, a container
//! start, a catalog insert), and the oracle checks invariants 2 and 6 after every one of them.

#![allow(dead_code)]

use lifeboat_machine::*;
use std::collections::{BTreeMap, BTreeSet};

/// The project's services in dependency order: `db` first, `proxy` last. Stop order is the reverse.
pub const SERVICES: [&str; 4] = ["db", "cache", "app", "proxy"];

/// The version of the stack the world starts with.
pub const V1: &str = "v1";

/// Whether containers of this stack version ever become healthy: v3 is the broken package.
pub fn healthy(version: &str) -> bool {
    version != "v3"
}

/// The project's data: a count of application writes and the schema version the data is in (a
/// container of another version migrates it when it starts).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Data {
    pub writes: u32,
    pub schema: String,
}

/// One container: whether it runs, and which stack version it was created from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// What Docker reports: true also while a stop is in progress.
    pub running: bool,
    /// A stop was requested and has not finished: the container reports running, and will exit
    /// whatever lifeboat does next (the daemon carries the stop on after lifeboat dies). Neither a
    /// start nor a health check can tell it from a running container.
    pub stopping: bool,
    pub version: String,
}

impl Container {
    fn new(running: bool, version: &str) -> Container {
        Container { running, stopping: false, version: version.into() }
    }

    /// Running and staying so.
    pub fn is_up(&self) -> bool {
        self.running && !self.stopping
    }
}

/// What an archive holds: the data and the deployment files (their version).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Snapshot {
    pub data: Data,
    pub files: String,
}

/// A file in the backup directory. A `.partial` file may be incomplete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveFile {
    pub complete: bool,
    pub snapshot: Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub kind: BackupKind,
}

/// The remotes a ship run may send a copy to: name, URL, whether it encrypts. `offsite` is an S3
/// bucket (upload ids are the store's: one a crash hid from the journal is found by listing the
/// key's open uploads); `nas` is a directory remote (an upload is the key's `.partial` file, so
/// the key names it).
pub const REMOTES: [(&str, &str, bool); 2] =
    [("offsite", "s3://bucket/lifeboat", true), ("nas", "file:///mnt/nas", false)];

/// What a completed upload stores at its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// The run whose upload stored it.
    pub run: RunId,
    pub backup_id: u64,
    pub facts: CopyFacts,
}

/// A multipart upload the store holds open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    /// The run that opened it.
    pub run: RunId,
    /// Every part sent: what completing it stores.
    pub parts: Option<StoredObject>,
    /// Its completion was asked for and never answered (the client crashed, or gave up): the
    /// store finishes it on its own once it has served one more request, unless that request
    /// aborts it. An S3 completion can take minutes; a directory remote's is a rename.
    pub completing: bool,
}

/// One remote's store: open uploads by id, objects by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    pub uploads: BTreeMap<String, OpenUpload>,
    pub objects: BTreeMap<String, StoredObject>,
}

impl Store {
    /// The store serves a request (`change`), then finishes the completions that were pending
    /// before it and that it did not abort.
    fn serve(&mut self, change: impl FnOnce(&mut Store)) {
        let pending: Vec<String> =
            self.uploads.iter().filter(|(_, u)| u.completing).map(|(id, _)| id.clone()).collect();
        change(self);
        for id in pending {
            if let Some(upload) = self.uploads.remove(&id) {
                let object = upload.parts.expect("a completing upload has every part");
                self.objects.insert(upload.key, object);
            }
        }
    }
}

/// A copy in the journal's copies table (by backup id and remote name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyRecord {
    /// The shipping run that catalogued it.
    pub run: RunId,
    pub key: String,
    pub facts: CopyFacts,
}

/// Everything on the simulated host that survives a crash, except the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    pub services: BTreeMap<String, Container>,
    /// The project's data; `None` while it is moved aside and its replacement is not in yet.
    pub data: Option<Data>,
    /// Data moved aside by `RestoreData`.
    pub data_aside: Option<Data>,
    /// The deployment files (compose file, .env), by version; `None` while swapped out.
    pub files: Option<String>,
    /// Old deployment files kept aside by `Deploy`.
    pub files_kept_by_deploy: Option<String>,
    /// Deployment files moved aside by `RestoreData { deployment: true }`.
    pub files_kept_by_restore: Option<String>,
    /// The backup directory: final archives and `.partial` files.
    pub archives: BTreeMap<String, ArchiveFile>,
    /// The backup catalog, keyed by the id of the run that made the backup.
    pub catalog: BTreeMap<RunId, CatalogEntry>,
    /// The deployed-version setting.
    pub deployed_version: String,
    /// The hooks configured for backups (host commands and container labels alike). A container
    /// hook is a backup's only while its service runs; a command containing `fail` exits 3.
    pub hooks: Vec<Hook>,
    /// How many times each run carried out each hook (by command): what "never twice" counts.
    pub hook_runs: BTreeMap<(RunId, String), u32>,
    /// The `on_failure` hooks every run starts with.
    pub on_failure: Vec<Hook>,
    /// The snapshot backups' mirror of the data, and the run whose stopped sync made it the
    /// consistent snapshot (cleared when any sync begins).
    pub mirror: Option<Data>,
    pub mirror_consistent_for: Option<RunId>,
    /// The remotes' stores, by remote name (off the host, but they survive a crash all the same).
    pub remotes: BTreeMap<String, Store>,
    /// How many uploads the S3 store ever opened: its next upload id.
    pub uploads_opened: u64,
    /// The copies table, by (backup id, remote name).
    pub copies: BTreeMap<(u64, String), CopyRecord>,
    /// The pairs a remote's retention pruned (`lifeboat_copies_pruned`): never shipped again.
    /// The journal keeps when; the model does not, so that two recoveries that passed through
    /// different clocks still leave equal worlds.
    pub copies_pruned: BTreeSet<(u64, String)>,
}

impl World {
    /// A v1 world where the services in `running` run and the others are stopped.
    pub fn new(running: &[&str]) -> World {
        World {
            services: SERVICES.iter().map(|s| (s.to_string(), Container::new(running.contains(s), V1))).collect(),
            data: Some(Data { writes: 0, schema: V1.into() }),
            data_aside: None,
            files: Some(V1.into()),
            files_kept_by_deploy: None,
            files_kept_by_restore: None,
            archives: BTreeMap::new(),
            catalog: BTreeMap::new(),
            deployed_version: V1.into(),
            hooks: Vec::new(),
            hook_runs: BTreeMap::new(),
            on_failure: Vec::new(),
            mirror: None,
            mirror_consistent_for: None,
            remotes: REMOTES.iter().map(|(name, _, _)| (name.to_string(), Store::default())).collect(),
            uploads_opened: 0,
            copies: BTreeMap::new(),
            copies_pruned: BTreeSet::new(),
        }
    }

    /// The running services, in stop order (reverse dependency order), as `Inspect` reports them:
    /// a container whose stop is in progress counts, as Docker says it runs.
    pub fn running(&self) -> Vec<String> {
        SERVICES.iter().rev().filter(|s| self.services[**s].running).map(|s| s.to_string()).collect()
    }

    /// The services that run and are not on their way down: what the invariants count.
    pub fn up_set(&self) -> BTreeSet<String> {
        SERVICES.iter().filter(|s| self.services[**s].is_up()).map(|s| s.to_string()).collect()
    }

    /// Time passes: every stop in progress ends with the container exited.
    pub fn finish_stops(&mut self) {
        for container in self.services.values_mut().filter(|c| c.stopping) {
            container.running = false;
            container.stopping = false;
        }
    }

    /// An application write between runs (services must be up to write; data must be in place).
    pub fn app_write(&mut self) {
        if let Some(data) = &mut self.data {
            data.writes += 1;
        }
    }

    /// The operator starts or stops one service by hand between runs. A stopped container is only
    /// started if it matches the deployment files, as `docker start` of a current container would.
    pub fn toggle(&mut self, index: usize) {
        let name = SERVICES[index % SERVICES.len()];
        let files = self.files.clone();
        let container = self.services.get_mut(name).unwrap();
        if container.running {
            container.running = false;
        } else if files.as_deref() == Some(container.version.as_str()) {
            container.running = true;
        }
    }

    pub fn partials(&self) -> Vec<&String> {
        self.archives.keys().filter(|p| p.ends_with(".partial")).collect()
    }

    /// Whether `entry` points at a complete archive that matches its recorded sha256.
    pub fn entry_is_sound(&self, entry: &CatalogEntry) -> bool {
        self.archives.get(&entry.path).is_some_and(|file| file.complete && digest(&file.snapshot) == entry.sha256)
    }

    /// Whether a catalogued copy has its object, with the facts recorded, at its key.
    pub fn copy_is_sound(&self, (backup_id, remote): &(u64, String), copy: &CopyRecord) -> bool {
        self.remotes[remote]
            .objects
            .get(&copy.key)
            .is_some_and(|object| object.backup_id == *backup_id && object.facts == copy.facts)
    }

    /// The snapshot held by a catalogued, sound archive.
    pub fn catalogued_snapshots(&self) -> impl Iterator<Item = &Snapshot> {
        self.catalog.values().filter(|e| self.entry_is_sound(e)).map(|e| &self.archives[&e.path].snapshot)
    }
}

/// A stand-in for sha256: 64 hex digits, a pure function of the snapshot (FNV-1a, four lanes).
pub fn digest(snapshot: &Snapshot) -> String {
    digest_text(&format!("{}|{}|{}", snapshot.data.writes, snapshot.data.schema, snapshot.files))
}

/// The stand-in for sha256 of any text.
pub fn digest_text(text: &str) -> String {
    (0u64..4)
        .map(|lane| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ lane;
            for b in text.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

pub fn size_of(snapshot: &Snapshot) -> u64 {
    100 + u64::from(snapshot.data.writes) * 10
}

/// The process crashed: the caller must drop its live runs and run recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crashed;

/// Why an effect stopped before its end.
enum Stop {
    Failed(String),
    Crashed,
}

impl From<Crashed> for Stop {
    fn from(_: Crashed) -> Stop {
        Stop::Crashed
    }
}

/// The effect and the world as they stood when a run ended, for the oracle.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub before: World,
    /// Effect failures reported to this run (injected or, like an unhealthy v3, caused by the scenario).
    pub failures: usize,
    /// Of those, the injected ones.
    pub injected: usize,
    /// Crashes that interrupted this run (including crashes during its recovery).
    pub crashes: usize,
    /// The backups a prune run was asked to delete: the only ones a run may remove.
    pub pruned: Vec<RunId>,
    /// The copies (backup id, remote name) a prune of copies was asked to delete: the only
    /// catalogued copies a run may remove.
    pub pruned_copies: Vec<(u64, String)>,
}

/// The simulated host: world, journal, clock, faults and the oracle's notes.
#[derive(Clone, Debug)]
pub struct Sim {
    pub world: World,
    pub journal: BTreeMap<RunId, Vec<Event>>,
    pub clock: i64,
    /// `(run id, effect number within the run)` -> the effect fails after this many micro-steps.
    pub faults: BTreeMap<(RunId, usize), usize>,
    pub faults_enabled: bool,
    /// Crash at the point this many points from now (0: the next one).
    crash_in: Option<usize>,
    /// Points passed so far.
    pub points: usize,
    effects_run: BTreeMap<RunId, usize>,
    pub records: BTreeMap<RunId, RunRecord>,
    /// The run whose effect is executing, and whether it was past its point of no return.
    active: Option<(RunId, bool)>,
    /// The run that has journaled events and has not ended (set while a run or recovery is driven).
    current: Option<RunId>,
    /// Micro-steps left before the executing effect fails.
    fail_budget: Option<usize>,
    /// `(run id, effects carried out so far)`: the operator cancels the run (a signal) before
    /// its next effect. Off with `faults_enabled`, like the faults.
    pub cancels: BTreeSet<(RunId, usize)>,
    /// Every effect carried out, with its run, for tests that inspect the sequence.
    pub effect_log: Vec<(RunId, Effect, Option<Outcome>)>,
    /// When `Some`, a name for every crash point passed: `append intent deploy`, `step deploy 1`.
    pub trace: Option<Vec<String>>,
    /// The effect executing and the micro-steps it made, for the trace.
    step: (&'static str, usize),
}

impl Sim {
    pub fn new(world: World) -> Sim {
        Sim {
            world,
            journal: BTreeMap::new(),
            clock: 1_700_000_000_000,
            faults: BTreeMap::new(),
            faults_enabled: true,
            crash_in: None,
            points: 0,
            effects_run: BTreeMap::new(),
            records: BTreeMap::new(),
            active: None,
            current: None,
            fail_budget: None,
            cancels: BTreeSet::new(),
            effect_log: Vec::new(),
            trace: None,
            step: ("", 0),
        }
    }

    /// Crash at the `n`th point from now (0: the next one); `None` never crashes.
    pub fn crash_after(&mut self, n: Option<usize>) {
        self.crash_in = n;
    }

    /// Crash at the point named `name` (see `trace`), found by a probe run of `scenario` on a
    /// copy of this sim. Panics if the probe never passes it.
    pub fn crash_at_named<T>(&mut self, name: &str, scenario: impl Fn(&mut Sim) -> T) {
        self.crash_at_nth_named(name, 0, scenario);
    }

    /// Like [`Sim::crash_at_named`], at the `nth` (0-based) point of that name.
    pub fn crash_at_nth_named<T>(&mut self, name: &str, nth: usize, scenario: impl Fn(&mut Sim) -> T) {
        let mut probe = self.clone();
        probe.crash_after(None);
        probe.trace = Some(Vec::new());
        scenario(&mut probe);
        let trace = probe.trace.unwrap();
        let at = trace
            .iter()
            .enumerate()
            .filter(|(_, n)| *n == name)
            .nth(nth)
            .unwrap_or_else(|| panic!("no point {name} #{nth} in {trace:?}"))
            .0;
        self.crash_after(Some(at));
    }

    pub fn crash_pending(&self) -> bool {
        self.crash_in.is_some()
    }

    /// The effect number `nth` (0-based, counted over the run's whole life, recovery included) of
    /// run `run` fails after `after_steps` micro-steps.
    pub fn inject(&mut self, run: RunId, nth: usize, after_steps: usize) {
        self.faults.insert((run, nth), after_steps);
    }

    pub fn next_run_id(&self) -> RunId {
        self.journal.keys().next_back().map_or(1, |id| id + 1)
    }

    fn now(&mut self) -> Timestamp {
        self.clock += 7;
        Timestamp(self.clock)
    }

    fn point(&mut self, name: impl FnOnce() -> String) -> Result<(), Crashed> {
        if let Some(trace) = &mut self.trace {
            trace.push(name());
        }
        self.points += 1;
        match self.crash_in {
            Some(0) => {
                self.crash_in = None;
                if let Some(id) = self.current.take() {
                    self.records.get_mut(&id).unwrap().crashes += 1;
                }
                self.active = None;
                self.fail_budget = None;
                Err(Crashed)
            }
            Some(n) => {
                self.crash_in = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Appends an event to the run's journal (durably), then passes a crash point.
    fn append(&mut self, id: RunId, event: Event) -> Result<(), Crashed> {
        let name = self.trace.is_some().then(|| match &event {
            Event::Intent { effect, .. } => format!("append intent {}", effect.name()),
            other => format!("append {}", other.name()),
        });
        self.journal.entry(id).or_default().push(event);
        self.point(|| name.unwrap_or_default())
    }

    // ---------------------------------------------------------------------------------------------
    // The driver, following the call order of the crate docs.

    /// Starts a run and drives it to its end, or to a crash.
    pub fn run(&mut self, spec: RunSpec) -> Result<Run, Crashed> {
        let id = self.next_run_id();
        let pruned = match &spec {
            RunSpec::Prune { deletions } => deletions.iter().map(|b| b.backup_id).collect(),
            _ => Vec::new(),
        };
        let pruned_copies = match &spec {
            RunSpec::PruneCopies { deletions } => {
                deletions.iter().map(|d| (d.backup_id, d.target.remote.clone())).collect()
            }
            _ => Vec::new(),
        };
        if let RunSpec::Ship { backup, target } = &spec {
            // As `runs/ship.rs` picks pending copies: no row, and not pruned there.
            let pair = (backup.backup_id, target.remote.clone());
            assert!(!self.world.copies.contains_key(&pair), "a ship run of {pair:?}, which has a copy already");
            assert!(!self.world.copies_pruned.contains(&pair), "a ship run of {pair:?}, which its remote pruned");
        }
        let before = self.world.clone();
        self.records.insert(id, RunRecord { before, failures: 0, injected: 0, crashes: 0, pruned, pruned_copies });
        self.current = Some(id);
        // A ship run is started without `on_failure` hooks, as `lifeboat push` starts it.
        let on_failure = if matches!(spec, RunSpec::Ship { .. }) { Vec::new() } else { self.world.on_failure.clone() };
        let started = Run::start_with(spec, on_failure, self.now());
        self.append(id, started.clone())?;
        let mut run = Run::from_started(id, &started).expect("from_started");
        self.drive(&mut run)?;
        Ok(run)
    }

    /// Carries out the run's effects until it ends.
    pub fn drive(&mut self, run: &mut Run) -> Result<(), Crashed> {
        loop {
            let effects_so_far = self.effects_run.get(&run.id()).map_or(0, |n| n + 1);
            if self.faults_enabled && self.cancels.remove(&(run.id(), effects_so_far)) {
                let at = self.now();
                // A cancel that changes nothing (past the point of no return, or settling) is not
                // journaled: the run carries on.
                if let Some(event) = run.handle_cancel("SIGINT", at) {
                    self.append(run.id(), event.clone())?;
                    run.apply(&event).unwrap_or_else(|e| panic!("run {}: apply cancel: {e}", run.id()));
                }
            }
            let Some(effect) = run.poll_effect() else { break };
            let at = self.now();
            let intent = run.handle_begin(at).unwrap_or_else(|e| panic!("run {}: handle_begin: {e}", run.id()));
            assert_eq!(intent, Event::Intent { at, effect: effect.clone() }, "handle_begin disagrees with poll_effect");
            self.append(run.id(), intent.clone())?;
            run.apply(&intent).unwrap_or_else(|e| panic!("run {}: apply intent: {e}", run.id()));
            let outcome = self.execute(run.id(), run.is_committed(), &effect)?;
            let at = self.now();
            let event = run
                .handle_outcome(outcome, at)
                .unwrap_or_else(|e| panic!("run {}: handle_outcome of {}: {e}", run.id(), effect.name()));
            self.append(run.id(), event.clone())?;
            run.apply(&event).unwrap_or_else(|e| panic!("run {}: apply outcome: {e}", run.id()));
        }
        assert!(run.is_ended() && run.state().is_terminal(), "run {} stopped in {:?}", run.id(), run.mode());
        self.current = None;
        Ok(())
    }

    /// `lifeboat recover`: plans, journals and carries out the recovery of every interrupted run.
    /// Returns the runs it ended, and checks that a recovery without failures does exactly the
    /// plan's steps and ends as the plan says.
    pub fn recover_all(&mut self) -> Result<Vec<Run>, Crashed> {
        let mut ended = Vec::new();
        let ids: Vec<RunId> = self.journal.keys().copied().collect();
        for id in ids {
            let events = self.journal[&id].clone();
            let plan = recover(id, &events).unwrap_or_else(|e| panic!("run {id}: recover: {e}"));
            let Some(plan) = plan else { continue };
            let mut run = replay(id, &events).unwrap_or_else(|e| panic!("run {id}: replay: {e}"));
            assert_eq!(plan.run_id, id);
            assert_eq!(plan.kind, run.kind());
            assert_eq!(plan.interrupted_in, run.state());
            if plan.kind == RunKind::Prune {
                // Past its point of no return from the start: recovery finishes it, unless it
                // failed twice already and only its `on_failure` hooks remain (the machine calls
                // that settling towards `Failed` "continue rolling back", for every kind).
                let finishes = matches!(plan.decision, Decision::Resume | Decision::ContinueFinishing)
                    && plan.ends_as == State::Completed;
                let fails = plan.decision == Decision::ContinueRollBack
                    && plan.ends_as == State::Failed
                    && plan
                        .steps
                        .iter()
                        .all(|s| matches!(s, Effect::RunHook { hook } if hook.point == HookPoint::OnFailure));
                assert!(finishes || fails, "run {id}: a prune's recovery plan {plan:?}");
            }
            self.current = Some(id);
            let event = plan.event(self.now());
            self.append(id, event.clone())?;
            run.apply(&event).unwrap_or_else(|e| panic!("run {id}: apply {event:?}: {e}"));
            let log_start = self.effect_log.len();
            let failures_before = self.records[&id].failures;
            self.drive(&mut run)?;
            if self.records[&id].failures == failures_before {
                let done: Vec<Effect> = self.effect_log[log_start..].iter().map(|(_, e, _)| e.clone()).collect();
                assert_eq!(done, plan.steps, "run {id}: recovery without failures did not follow its plan");
                assert_eq!(run.state(), plan.ends_as, "run {id}: recovery ended other than planned");
            }
            ended.push(run);
        }
        Ok(ended)
    }

    // ---------------------------------------------------------------------------------------------
    // The executor.

    fn execute(&mut self, run: RunId, committed: bool, effect: &Effect) -> Result<Outcome, Crashed> {
        let nth = *self.effects_run.entry(run).and_modify(|n| *n += 1).or_insert(0);
        self.active = Some((run, committed));
        self.fail_budget = if self.faults_enabled { self.faults.get(&(run, nth)).copied() } else { None };
        let injected = self.fail_budget.is_some();
        self.step = (effect.name(), 0);
        let result = self.carry_out(run, effect);
        // A fault planned after more micro-steps than the effect has still fails it: the work was
        // done but the executor never learnt so (a timeout, say).
        let result = match result {
            Ok(_) if injected => {
                Err(Stop::Failed(format!("injected failure of {} after all its steps", effect.name())))
            }
            other => other,
        };
        self.active = None;
        self.fail_budget = None;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(Stop::Crashed) => {
                self.effect_log.push((run, effect.clone(), None));
                return Err(Crashed);
            }
            Err(Stop::Failed(error)) => {
                if !injected && !error.starts_with("unhealthy") {
                    panic!("run {run}: {} failed without an injected fault: {error}", effect.name());
                }
                let record = self.records.get_mut(&run).unwrap();
                record.failures += 1;
                record.injected += usize::from(injected);
                Outcome::Failed { error }
            }
        };
        self.effect_log.push((run, effect.clone(), Some(outcome.clone())));
        Ok(outcome)
    }

    /// One atomic change of the world: fails if the fault's budget is spent, then changes the
    /// world, checks the step invariants, and passes a crash point.
    fn micro(&mut self, change: impl FnOnce(&mut World)) -> Result<(), Stop> {
        if let Some(budget) = &mut self.fail_budget {
            if *budget == 0 {
                return Err(Stop::Failed("injected failure".into()));
            }
            *budget -= 1;
        }
        change(&mut self.world);
        self.check_step();
        self.step.1 += 1;
        let (effect, n) = self.step;
        self.point(|| format!("step {effect} {n}"))?;
        Ok(())
    }

    /// A read-only check fails at once if a fault is planned for it.
    fn read_only(&mut self) -> Result<(), Stop> {
        if self.fail_budget.is_some() {
            return Err(Stop::Failed("injected failure".into()));
        }
        Ok(())
    }

    fn carry_out(&mut self, run: RunId, effect: &Effect) -> Result<Outcome, Stop> {
        match effect {
            Effect::Provision { .. } | Effect::Unprovision { .. } => {
                unreachable!("the model starts no restore onto a new host: tests/recovery_rules.rs covers its rules")
            }
            Effect::Inspect => {
                self.read_only()?;
                let running = self.world.running();
                // The kind's own points, as the executor reports them.
                let points = match self.journal[&run].first().and_then(Event::started_spec).map(RunSpec::kind) {
                    Some(RunKind::Backup) => [HookPoint::BeforeBackup, HookPoint::AfterBackup],
                    Some(RunKind::Upgrade) => [HookPoint::BeforeUpgrade, HookPoint::AfterUpgrade],
                    Some(RunKind::Restore) => [HookPoint::BeforeRestore, HookPoint::AfterRestore],
                    _ => return Ok(Outcome::Inspected { running }),
                };
                // Host hooks, then the running services' labels.
                let hooks: Vec<Hook> = self
                    .world
                    .hooks
                    .iter()
                    .filter(|h| points.contains(&h.point) && h.service.as_ref().is_none_or(|s| running.contains(s)))
                    .cloned()
                    .collect();
                if hooks.is_empty() {
                    return Ok(Outcome::Inspected { running });
                }
                Ok(Outcome::InspectedWithHooks { running, hooks })
            }
            Effect::RunHook { hook } => {
                if let Some(service) = &hook.service {
                    // An exec hook runs in the service's container: it must be up (before: not
                    // stopped yet; after: started again).
                    let up = self.world.services[service].is_up();
                    assert!(up, "run {run}: hook {} ran with {service} not up", hook.label());
                }
                let key = (run, hook.command.clone());
                self.micro(|w| *w.hook_runs.entry(key).or_insert(0) += 1)?;
                let exit_code = if hook.command.contains("fail") { 3 } else { 0 };
                Ok(Outcome::HookRan { exit_code, output_tail: format!("{} said hello", hook.command) })
            }
            Effect::VerifyArchive { backup } => {
                self.read_only()?;
                self.check_archive(backup)?;
                Ok(Outcome::Done)
            }
            Effect::StopServices { services } => {
                for s in services {
                    self.stop(s)?;
                }
                Ok(Outcome::Done)
            }
            Effect::StopStack => {
                for s in SERVICES.iter().rev() {
                    self.stop(s)?;
                }
                Ok(Outcome::Done)
            }
            Effect::StartServices { services } => {
                // In dependency order: the reverse of the stop order the list is in.
                let order: Vec<String> = services.iter().rev().cloned().collect();
                for s in &order {
                    if self.world.data.is_none() {
                        return Err(Stop::Failed(format!("{s} cannot start: the data is missing")));
                    }
                    // `docker start` of a running container does nothing, and a container whose
                    // stop is in progress reports running: it is left to exit.
                    if self.world.services[s].running {
                        continue;
                    }
                    self.micro(|w| {
                        let container = w.services.get_mut(s).unwrap();
                        container.running = true;
                        let version = container.version.clone();
                        migrate(w, &version);
                    })?;
                }
                Ok(Outcome::Started { services: order })
            }
            Effect::ComposeUp { services } => {
                let Some(version) = self.world.files.clone() else {
                    return Err(Stop::Failed("compose up: the deployment files are missing".into()));
                };
                if self.world.data.is_none() {
                    return Err(Stop::Failed("compose up: the data is missing".into()));
                }
                let list: Vec<String> = match services {
                    Some(list) => list.iter().rev().cloned().collect(),
                    None => SERVICES.iter().map(|s| s.to_string()).collect(),
                };
                for s in &list {
                    // Compose leaves a running container of the current files alone, one on its
                    // way down included.
                    let current = &self.world.services[s];
                    if current.running && current.version == version {
                        continue;
                    }
                    self.micro(|w| {
                        w.services.insert(s.clone(), Container::new(true, &version));
                        migrate(w, &version);
                    })?;
                }
                Ok(Outcome::Started { services: list })
            }
            Effect::VerifyServices { services } => {
                self.read_only()?;
                let list: Vec<String> = match services {
                    Some(list) => list.clone(),
                    None => SERVICES.iter().map(|s| s.to_string()).collect(),
                };
                for s in list {
                    let c = &self.world.services[&s];
                    if !c.running || !healthy(&c.version) {
                        return Err(Stop::Failed(format!("unhealthy: {s} ({}) did not become healthy", c.version)));
                    }
                }
                Ok(Outcome::Done)
            }
            Effect::SyncMirror { stopped, .. } => {
                if *stopped {
                    self.assert_stack_stopped(run, "the stopped sync");
                }
                let Some(data) = self.world.data.clone() else {
                    return Err(Stop::Failed("sync mirror: the data is missing".into()));
                };
                // Half synced: what a crash or a failure mid-sync leaves.
                self.micro(|w| {
                    w.mirror = Some(Data { writes: u32::MAX - 1, schema: "half-synced".into() });
                    w.mirror_consistent_for = None;
                })?;
                let stopped = *stopped;
                self.micro(|w| {
                    w.mirror = Some(data);
                    w.mirror_consistent_for = stopped.then_some(run);
                })?;
                if !stopped && !self.world.running().is_empty() {
                    // The services write on while the presync runs: the mirror is behind already.
                    self.micro(|w| w.data.iter_mut().for_each(|d| d.writes += 1))?;
                }
                Ok(Outcome::MirrorSynced { entries: 4, files_copied: 1, bytes_copied: 10, removed: 0 })
            }
            Effect::WriteArchive { path } => {
                let snapshot_mode = matches!(
                    self.journal[&run].first().and_then(Event::started_spec),
                    Some(RunSpec::SnapshotBackup { .. })
                );
                let data = if snapshot_mode {
                    // Never from a mirror a crash left half synced, nor from another run's.
                    assert_eq!(
                        self.world.mirror_consistent_for,
                        Some(run),
                        "run {run}: archived a mirror that is not its consistent snapshot"
                    );
                    self.world.mirror.clone()
                } else {
                    self.assert_stack_stopped(run, "write_archive");
                    self.world.data.clone()
                };
                let Some(data) = data else {
                    return Err(Stop::Failed("write archive: the data is missing".into()));
                };
                let Some(files) = self.world.files.clone() else {
                    return Err(Stop::Failed("write archive: the deployment files are missing".into()));
                };
                let snapshot = Snapshot { data, files };
                let partial = format!("{path}.partial");
                let (p, s) = (partial.clone(), snapshot.clone());
                // Written in two flushes: a crash after the first leaves an incomplete file.
                self.micro(|w| {
                    let mut torn = s.clone();
                    torn.data.writes = u32::MAX;
                    w.archives.insert(p, ArchiveFile { complete: false, snapshot: torn });
                })?;
                let (p, s) = (partial.clone(), snapshot.clone());
                self.micro(|w| {
                    w.archives.insert(p, ArchiveFile { complete: true, snapshot: s });
                })?;
                let (p, f) = (partial, path.clone());
                self.micro(|w| {
                    let file = w.archives.remove(&p).unwrap();
                    w.archives.insert(f, file);
                })?;
                Ok(Outcome::ArchiveWritten(ArchiveFacts {
                    path: path.clone(),
                    sha256: digest(&snapshot),
                    size_bytes: size_of(&snapshot),
                    file_count: 3,
                    entry_count: 4,
                    content_bytes: size_of(&snapshot) * 2,
                }))
            }
            Effect::RecordBackup { archive, backup_kind, .. } => {
                let sound = self
                    .world
                    .archives
                    .get(&archive.path)
                    .is_some_and(|f| f.complete && digest(&f.snapshot) == archive.sha256);
                if !sound {
                    return Err(Stop::Failed(format!("record: {} is missing or does not match", archive.path)));
                }
                let entry = CatalogEntry {
                    path: archive.path.clone(),
                    sha256: archive.sha256.clone(),
                    size_bytes: archive.size_bytes,
                    kind: *backup_kind,
                };
                self.micro(|w| {
                    w.catalog.insert(run, entry);
                })?;
                Ok(Outcome::Done)
            }
            Effect::DeleteBackup { backup } => {
                let (bid, p) = (backup.backup_id, backup.path.clone());
                self.micro(|w| {
                    w.catalog.remove(&bid);
                })?;
                self.micro(|w| {
                    w.archives.remove(&p);
                })?;
                Ok(Outcome::Done)
            }
            Effect::DiscardArchive { path } => {
                let (p, partial) = (path.clone(), format!("{path}.partial"));
                self.micro(|w| {
                    if w.catalog.get(&run).is_some_and(|e| e.path == p) {
                        w.catalog.remove(&run);
                    }
                })?;
                let p = path.clone();
                self.micro(|w| {
                    w.archives.remove(&p);
                })?;
                self.micro(|w| {
                    w.archives.remove(&partial);
                })?;
                Ok(Outcome::Done)
            }
            Effect::Deploy { package } => {
                self.assert_stack_stopped(run, "deploy");
                if self.world.files_kept_by_deploy.is_none() {
                    self.micro(|w| w.files_kept_by_deploy = w.files.take())?;
                }
                if self.world.files.is_none() {
                    let v = package.version.clone();
                    self.micro(|w| w.files = Some(v))?;
                }
                Ok(Outcome::Done)
            }
            Effect::CommitDeploy { version } => {
                let v = version.clone();
                self.micro(|w| w.deployed_version = v)?;
                self.micro(|w| w.files_kept_by_deploy = None)?;
                Ok(Outcome::Done)
            }
            Effect::RestoreDeployment => {
                self.assert_stack_stopped(run, "restore_deployment");
                if self.world.files_kept_by_deploy.is_some() {
                    self.micro(|w| w.files = w.files_kept_by_deploy.take())?;
                }
                Ok(Outcome::Done)
            }
            Effect::RestoreData { backup, deployment } => {
                let snapshot = self.check_archive(backup)?;
                self.assert_stack_stopped(run, "restore_data");
                if self.world.data_aside.is_none() {
                    self.micro(|w| w.data_aside = w.data.take())?;
                }
                if *deployment && self.world.files_kept_by_restore.is_none() {
                    self.micro(|w| w.files_kept_by_restore = w.files.take())?;
                }
                if self.world.data.is_none() {
                    let d = snapshot.data.clone();
                    self.micro(|w| w.data = Some(d))?;
                }
                if *deployment && self.world.files.is_none() {
                    let f = snapshot.files.clone();
                    self.micro(|w| w.files = Some(f))?;
                }
                Ok(Outcome::Done)
            }
            Effect::RevertData => {
                self.assert_stack_stopped(run, "revert_data");
                if self.world.data_aside.is_some() {
                    self.micro(|w| w.data = w.data_aside.take())?;
                }
                if self.world.files_kept_by_restore.is_some() {
                    self.micro(|w| w.files = w.files_kept_by_restore.take())?;
                }
                Ok(Outcome::Done)
            }
            Effect::CommitData => {
                if self.world.data_aside.is_some() {
                    self.micro(|w| w.data_aside = None)?;
                }
                if self.world.files_kept_by_restore.is_some() {
                    self.micro(|w| w.files_kept_by_restore = None)?;
                }
                Ok(Outcome::Done)
            }
            Effect::BeginUpload { target } => {
                // S3 names the upload; a directory remote's is the key's partial file.
                let dir = is_dir(target);
                let upload_id = if dir {
                    format!("{}.partial", target.key)
                } else {
                    format!("upload-{}", self.world.uploads_opened + 1)
                };
                let (remote, id) = (target.remote.clone(), upload_id.clone());
                let upload = OpenUpload { key: target.key.clone(), run, parts: None, completing: false };
                // The store opens it: a crash now (or an answer lost on the way) hides its id.
                self.micro(|w| {
                    w.uploads_opened += u64::from(!dir);
                    w.remotes.get_mut(&remote).expect("a configured remote").serve(|store| {
                        store.uploads.insert(id, upload);
                    });
                })?;
                Ok(Outcome::UploadBegun { upload_id })
            }
            Effect::UploadCopy { backup, target, upload_id } => {
                // Read while checking it is still the catalogued archive.
                self.check_archive(backup)?;
                if !self.world.remotes[&target.remote].uploads.contains_key(upload_id) {
                    return Err(Stop::Failed(format!("upload {upload_id} of {} is not open", target.key)));
                }
                // age uses a new file key every time: the stored bytes differ from one upload to the next.
                let facts = if target.key.ends_with(".age") {
                    CopyFacts {
                        stored_sha256: digest_text(&format!("age|{}|{upload_id}", backup.sha256)),
                        stored_bytes: backup.size_bytes + 200,
                        encryption: "age".into(),
                    }
                } else {
                    CopyFacts {
                        stored_sha256: backup.sha256.clone(),
                        stored_bytes: backup.size_bytes,
                        encryption: "none".into(),
                    }
                };
                let object = StoredObject { run, backup_id: backup.backup_id, facts: facts.clone() };
                let remote = target.remote.clone();
                let id = upload_id.clone();
                self.store_request(&remote, |store| {
                    store.uploads.get_mut(&id).expect("checked open").parts = Some(object);
                })?;
                if !is_dir(target) {
                    // The completion is asked for: from here the store finishes it, answered or not.
                    let id = upload_id.clone();
                    self.store_request(&remote, |store| {
                        store.uploads.get_mut(&id).expect("checked open").completing = true;
                    })?;
                }
                // Completed (for a directory remote, renamed into place): the object is there.
                let id = upload_id.clone();
                self.store_request(&remote, |store| {
                    if let Some(upload) = store.uploads.remove(&id) {
                        store.objects.insert(upload.key, upload.parts.expect("every part sent"));
                    }
                })?;
                Ok(Outcome::CopyUploaded(facts))
            }
            Effect::RecordCopy { backup_id, target, copy } => {
                // The object checked once more (a stat), then the entry inserted, as `Journal::record_copy`.
                let object = self.world.remotes[&target.remote].objects.get(&target.key);
                if !object.is_some_and(|o| o.backup_id == *backup_id && o.facts == *copy) {
                    return Err(Stop::Failed(format!("record copy: {} is missing or differs", target.key)));
                }
                if !self.world.catalog.contains_key(backup_id) {
                    return Err(Stop::Failed(format!("record copy: backup {backup_id} is not catalogued")));
                }
                let key = (*backup_id, target.remote.clone());
                let record = CopyRecord { run, key: target.key.clone(), facts: copy.clone() };
                match self.world.copies.get(&key) {
                    Some(existing) if *existing == record => return Ok(Outcome::Done),
                    Some(_) => return Err(Stop::Failed(format!("record copy: {key:?} holds another copy"))),
                    None => {}
                }
                self.micro(|w| {
                    w.copies.insert(key, record);
                })?;
                Ok(Outcome::Done)
            }
            Effect::DeleteCopy { backup_id, target } => {
                // This run's entry, if any (`Journal::remove_copy` with the run's id), then the object.
                let key = (*backup_id, target.remote.clone());
                let k = key.clone();
                self.micro(|w| {
                    if w.copies.get(&k).is_some_and(|c| c.run == run) {
                        w.copies.remove(&k);
                    }
                })?;
                // Another run's catalogued copy under the key is never this run's to delete.
                if self.world.copies.contains_key(&key) {
                    return Ok(Outcome::Done);
                }
                let object_key = target.key.clone();
                self.store_request(&target.remote, |store| {
                    store.objects.remove(&object_key);
                })?;
                Ok(Outcome::Done)
            }
            Effect::PruneCopy { backup_id, target } => {
                // `Journal::prune_copy`: the row removed and the pair noted pruned, in one
                // transaction; then the object deleted (gone is fine).
                let key = (*backup_id, target.remote.clone());
                self.micro(|w| {
                    w.copies.remove(&key);
                    w.copies_pruned.insert(key);
                })?;
                let object_key = target.key.clone();
                self.store_request(&target.remote, |store| {
                    store.objects.remove(&object_key);
                })?;
                Ok(Outcome::Done)
            }
            Effect::AbortUpload { target, upload_id } => {
                // The upload the journal names, if it heard its id (gone is fine)...
                if let Some(id) = upload_id {
                    let id = id.clone();
                    self.store_request(&target.remote, |store| {
                        store.uploads.remove(&id);
                    })?;
                }
                // ...then every other open upload of the key (`Remote::abort_uploads_of`): one
                // whose begin a crash interrupted, or whose answer was lost, before the journal
                // heard its id. Nothing else uploads the key meanwhile (a copy is shipped only
                // while it is pending, under the project lock), so each is this run's.
                let key = target.key.clone();
                if is_dir(target) {
                    // The key's partial file, removed if it is there.
                    self.store_request(&target.remote, |store| store.uploads.retain(|_, u| u.key != key))?;
                } else {
                    // ListMultipartUploads of the key, then an abort of each upload it lists (one
                    // that completed meanwhile is gone, which is fine).
                    let mut listed = Vec::new();
                    self.store_request(&target.remote, |store| {
                        listed = store.uploads.iter().filter(|(_, u)| u.key == key).map(|(id, _)| id.clone()).collect();
                    })?;
                    for id in listed {
                        self.store_request(&target.remote, |store| {
                            store.uploads.remove(&id);
                        })?;
                    }
                }
                Ok(Outcome::Done)
            }
        }
    }

    /// One request to a remote's store, as a micro-step: the store serves it, then finishes the
    /// completions pending before it (see [`OpenUpload::completing`]).
    fn store_request(&mut self, remote: &str, change: impl FnOnce(&mut Store)) -> Result<(), Stop> {
        self.micro(|w| w.remotes.get_mut(remote).expect("a configured remote").serve(change))
    }

    /// `docker stop`: the stop is requested (the container goes on reporting running), then the
    /// container exits; two micro-steps, so a crash can fall between them. A container whose stop
    /// is in progress is waited for; a stopped one is left alone.
    fn stop(&mut self, service: &str) -> Result<(), Stop> {
        let container = &self.world.services[service];
        if container.running && !container.stopping {
            self.micro(|w| w.services.get_mut(service).unwrap().stopping = true)?;
        }
        if self.world.services[service].running {
            self.micro(|w| {
                let container = w.services.get_mut(service).unwrap();
                container.running = false;
                container.stopping = false;
            })?;
        }
        Ok(())
    }

    /// The data and the deployment files are archived or swapped only while every service is
    /// stopped: a database must never see its files change under it, nor be archived mid-write.
    fn assert_stack_stopped(&self, run: RunId, effect: &str) {
        let running = self.world.running();
        assert!(running.is_empty(), "run {run}: {effect} with {running:?} running");
    }

    fn check_archive(&self, backup: &BackupRef) -> Result<Snapshot, Stop> {
        match self.world.archives.get(&backup.path) {
            Some(f) if f.complete && digest(&f.snapshot) == backup.sha256 => Ok(f.snapshot.clone()),
            _ => Err(Stop::Failed(format!("archive {} is missing or does not match", backup.path))),
        }
    }

    // ---------------------------------------------------------------------------------------------
    // The oracle.

    /// Checked after every micro-step: invariant 2 (a catalogued archive is complete and matches)
    /// and invariant 6 (nothing is deleted before its replacement is in place: the data and the
    /// deployment files the run started with stay reachable until the run is committed, and no
    /// backup catalogued before the run disappears).
    fn check_step(&self) {
        let w = &self.world;
        for (id, entry) in &w.catalog {
            assert!(w.entry_is_sound(entry), "invariant 2: backup {id} is catalogued but its archive is not sound");
        }
        for (key, copy) in &w.copies {
            assert!(w.copy_is_sound(key, copy), "invariant 2: copy {key:?} is catalogued but its object is not sound");
        }
        for key in &w.copies_pruned {
            assert!(!w.copies.contains_key(key), "the copy {key:?} is noted pruned and catalogued");
        }
        let Some((run, committed)) = self.active else { return };
        let record = &self.records[&run];
        let before = &record.before;
        for id in before.catalog.keys().filter(|id| !record.pruned.contains(id)) {
            assert!(w.catalog.contains_key(id), "invariant 6: run {run} removed the earlier backup {id}");
        }
        for key in before.copies.keys().filter(|key| !record.pruned_copies.contains(key)) {
            assert!(w.copies.contains_key(key), "invariant 6: run {run} removed the earlier copy {key:?}");
        }
        for key in &before.copies_pruned {
            assert!(w.copies_pruned.contains(key), "run {run} forgot that {key:?} was pruned");
        }
        if committed {
            assert!(w.data.is_some() && w.files.is_some(), "invariant 6: committed run {run} left no data or files");
            return;
        }
        let data = before.data.as_ref().expect("a run starts with data");
        // A snapshot backup's presync runs beside the services, which write on.
        let snapshot =
            matches!(self.journal[&run].first().and_then(Event::started_spec), Some(RunSpec::SnapshotBackup { .. }));
        let written_on =
            snapshot && w.data.as_ref().is_some_and(|d| d.schema == data.schema && d.writes >= data.writes);
        let data_kept = written_on
            || w.data.as_ref() == Some(data)
            || w.data_aside.as_ref() == Some(data)
            || w.catalogued_snapshots().any(|s| &s.data == data);
        assert!(data_kept, "invariant 6: run {run} lost the data it started with: {w:?}");
        let files = before.files.as_ref().expect("a run starts with deployment files");
        let files_kept = w.files.as_ref() == Some(files)
            || w.files_kept_by_deploy.as_ref() == Some(files)
            || w.files_kept_by_restore.as_ref() == Some(files)
            || w.catalogued_snapshots().any(|s| &s.files == files);
        assert!(files_kept, "invariant 6: run {run} lost the deployment files it started with: {w:?}");
    }

    /// Checks invariants 1-6 for a run that just ended (live or through recovery).
    pub fn check_ended(&self, run: &Run) {
        let id = run.id();
        let record = &self.records[&id];
        let before = &record.before;
        let w = &self.world;
        let state = run.state();
        assert!(run.is_ended() && state.is_terminal(), "run {id} is not ended: {:?}", run.mode());

        // Invariant 5: replay == live, and an ended run needs no recovery.
        let events = &self.journal[&id];
        let replayed = replay(id, events).unwrap_or_else(|e| panic!("invariant 5: run {id} does not replay: {e}"));
        assert_eq!(&replayed, run, "invariant 5: replay of run {id} differs from the live run");
        assert_eq!(recover(id, events), Ok(None), "run {id} ended but recover plans something");

        // Hooks: one not marked idempotent never runs twice, crashes and recovery included; a
        // failing before hook ends the backup with nothing stopped, nothing recorded.
        for hook in run.hooks() {
            let runs = w.hook_runs.get(&(id, hook.command.clone())).copied().unwrap_or(0);
            assert!(hook.idempotent || runs <= 1, "run {id}: hook {} ran {runs} times", hook.label());
        }
        // `on_failure`: never in a run that completed; once (or, idempotent, as often as
        // recovery retried it) in one that rolled back or failed, unless a crash passed it over
        // or a fault failed it, perhaps before it began.
        for hook in run.failure_hooks() {
            let runs = w.hook_runs.get(&(id, hook.command.clone())).copied().unwrap_or(0);
            assert!(hook.idempotent || runs <= 1, "run {id}: on_failure ran {runs} times");
            let faulted = self.effect_log.iter().any(|(r, effect, outcome)| {
                *r == id
                    && matches!(effect, Effect::RunHook { hook: h } if h == hook)
                    && matches!(outcome, Some(Outcome::Failed { .. }))
            });
            match state {
                State::Completed => assert_eq!(runs, 0, "run {id} completed, yet on_failure ran"),
                _ if record.crashes == 0 && !faulted => {
                    assert_eq!(runs, 1, "run {id} ended {state}: on_failure ran {runs} times")
                }
                _ => {}
            }
        }
        let before_failed = run.failures().iter().any(|f| {
            matches!(&f.effect, Effect::RunHook { hook } if hook.point.is_before() && hook.command.contains("fail"))
        });
        if before_failed {
            assert_eq!(state, State::RolledBack, "run {id}: a failing before hook ends it rolled back");
            assert!(!w.catalog.contains_key(&id), "run {id}: a failing before hook recorded a backup");
            let stopped = events.iter().any(|e| matches!(e, Event::Intent { effect: Effect::StopServices { .. }, .. }));
            assert!(!stopped, "run {id}: a failing before hook stopped services");
        }

        if state == State::Failed {
            // The machine gives up only after a second failure: a failed step and a failed settling
            // step. A crash counts as the first disruption (the settling steps were recovery's). And
            // at least one disruption must be a fault: a scenario alone (an unhealthy v3) must never
            // make a run fail, since its rollback would have worked.
            assert!(
                record.failures + record.crashes >= 2 && record.injected + record.crashes >= 1,
                "run {id} ended failed after {} failure(s) ({} injected) and {} crash(es): {:?}",
                record.failures,
                record.injected,
                record.crashes,
                run.failures()
            );
            assert!(!run.failures().is_empty(), "run {id} ended failed without a failure to report");
            return;
        }

        // Invariant 1 (and: exactly the services that were running, unless an upgrade completed).
        let upgraded = run.kind() == RunKind::Upgrade && state == State::Completed;
        for s in before.running() {
            let c = &w.services[&s];
            assert!(!c.stopping, "invariant 1: run {id} ({state}) left {s} on its way down");
            assert!(c.running, "invariant 1: run {id} ({state}) left {s} stopped");
        }
        if !upgraded {
            assert_eq!(w.up_set(), before.up_set(), "run {id} ({state}) changed which services run");
        }

        // Invariants 2 and 3.
        for (bid, entry) in &w.catalog {
            assert!(w.entry_is_sound(entry), "invariant 2: backup {bid} is catalogued but unsound");
        }
        for (key, copy) in &w.copies {
            assert!(w.copy_is_sound(key, copy), "invariant 2: copy {key:?} is catalogued but unsound");
        }
        assert!(w.partials().is_empty(), "invariant 3: run {id} left {:?}", w.partials());

        // Nothing left aside, nothing missing.
        assert!(w.data.is_some() && w.files.is_some(), "run {id} left the data or files missing");
        assert_eq!(
            (&w.data_aside, &w.files_kept_by_deploy, &w.files_kept_by_restore),
            (&None, &None, &None),
            "run {id} ({state}) left something aside"
        );

        // Invariant 6: earlier backups survive, but for those a prune was asked to delete; earlier
        // copies too, but for those a prune of copies was asked to delete (a prune of the local
        // backup leaves its copies).
        for bid in before.catalog.keys().filter(|bid| !record.pruned.contains(bid)) {
            assert!(w.catalog.contains_key(bid), "invariant 6: run {id} removed backup {bid}");
        }
        for key in before.copies.keys().filter(|key| !record.pruned_copies.contains(key)) {
            assert!(w.copies.contains_key(key), "invariant 6: run {id} removed the copy {key:?}");
        }
        for key in &w.copies_pruned {
            assert!(!w.copies.contains_key(key), "run {id} left {key:?} noted pruned and catalogued");
        }

        match (run.spec(), state) {
            (RunSpec::Prune { deletions }, State::Completed) => {
                for backup in deletions {
                    assert!(!w.catalog.contains_key(&backup.backup_id), "prune {id} left backup {}", backup.backup_id);
                    assert!(!w.archives.contains_key(&backup.path), "prune {id} left the archive {}", backup.path);
                }
                assert_eq!(w.data, before.data, "prune {id} changed the data");
            }
            (RunSpec::Prune { .. }, _) => {
                // Past its point of no return from the start: it finishes or fails, never rolls back.
                assert_eq!(state, State::Failed, "prune {id} ended {state}");
            }
            (RunSpec::PruneCopies { deletions }, _) => {
                // It never touches the host: services, data, files, local backups as they were;
                // nor another copy than those it lists.
                assert_eq!(w.services, before.services, "prune of copies {id} touched the services");
                assert_eq!((&w.data, &w.files), (&before.data, &before.files), "prune of copies {id}: the data");
                assert_eq!((&w.catalog, &w.archives), (&before.catalog, &before.archives), "prune of copies {id}");
                for (key, copy) in &before.copies {
                    if !record.pruned_copies.contains(key) {
                        assert_eq!(w.copies.get(key), Some(copy), "prune of copies {id} changed {key:?}");
                    }
                }
                // Past its point of no return from the start: it finishes (or, after two
                // failures, fails: the generic check above), never rolls back.
                assert_eq!(state, State::Completed, "prune of copies {id} ended {state}");
                for deletion in deletions {
                    let key = (deletion.backup_id, deletion.target.remote.clone());
                    assert!(!w.copies.contains_key(&key), "prune of copies {id} left the row of {key:?}");
                    assert!(w.copies_pruned.contains(&key), "prune of copies {id} did not note {key:?} pruned");
                    let objects = &w.remotes[&deletion.target.remote].objects;
                    assert!(
                        !objects.contains_key(&deletion.target.key),
                        "prune of copies {id} left the object {} on {}",
                        deletion.target.key,
                        deletion.target.remote
                    );
                }
            }
            (RunSpec::Backup { archive_path, backup_kind, .. }, State::Completed) => {
                let entry = w.catalog.get(&id).unwrap_or_else(|| panic!("completed backup {id} is not catalogued"));
                assert_eq!((&entry.path, entry.kind), (archive_path, *backup_kind));
                let snap = &w.archives[archive_path].snapshot;
                assert_eq!(Some(&snap.data), before.data.as_ref(), "backup {id} does not hold the data");
                assert_eq!(w.data, before.data, "backup {id} changed the data");
            }
            (RunSpec::SnapshotBackup { archive_path, backup_kind, .. }, State::Completed) => {
                let entry = w.catalog.get(&id).unwrap_or_else(|| panic!("completed backup {id} is not catalogued"));
                assert_eq!((&entry.path, entry.kind), (archive_path, *backup_kind));
                // The data as the stopped sync saw it, writes made during the presync included:
                // nothing writes after it in the model.
                let snap = &w.archives[archive_path].snapshot;
                assert_eq!(Some(&snap.data), w.data.as_ref(), "snapshot backup {id} does not hold the data");
                assert_data_only_written(id, before, w);
            }
            (RunSpec::SnapshotBackup { archive_path, .. }, _) => {
                assert!(!w.catalog.contains_key(&id), "rolled back backup {id} is catalogued");
                assert!(!w.archives.contains_key(archive_path), "rolled back backup {id} left its archive");
                assert_data_only_written(id, before, w);
            }
            (RunSpec::Backup { archive_path, .. }, _) => {
                assert!(!w.catalog.contains_key(&id), "rolled back backup {id} is catalogued");
                assert!(!w.archives.contains_key(archive_path), "rolled back backup {id} left its archive");
                assert_eq!(w.data, before.data, "backup {id} changed the data");
            }
            (RunSpec::Upgrade { package, archive_path }, State::Completed) => {
                // Invariant 4, the new version.
                assert_eq!(w.files.as_deref(), Some(package.version.as_str()), "upgrade {id}: files");
                assert_eq!(w.deployed_version, package.version, "upgrade {id}: deployed version setting");
                for (s, c) in &w.services {
                    assert!(c.is_up() && c.version == package.version, "upgrade {id}: {s} is {c:?}");
                    assert!(healthy(&c.version), "upgrade {id} completed with unhealthy {s}");
                }
                let entry = w.catalog.get(&id).expect("completed upgrade keeps its pre-upgrade backup");
                assert_eq!((&entry.path, entry.kind), (archive_path, BackupKind::PreUpgrade));
            }
            (RunSpec::Upgrade { archive_path, .. }, _) => {
                // A pre-upgrade backup whose recording was journaled is a good backup: it stays.
                // One that was not is discarded with its archive.
                if recorded(events) {
                    assert!(w.catalog.contains_key(&id), "upgrade {id} rolled back and lost its recorded backup");
                } else {
                    assert!(!w.catalog.contains_key(&id), "upgrade {id} rolled back, unrecorded backup catalogued");
                    assert!(!w.archives.contains_key(archive_path), "upgrade {id} rolled back and left its archive");
                }
                // Invariant 4, the old version back exactly.
                assert_eq!(w.files, before.files, "upgrade {id} rolled back: files");
                assert_eq!(w.data, before.data, "upgrade {id} rolled back: data");
                assert_eq!(w.deployed_version, before.deployed_version, "upgrade {id} rolled back: version");
                for s in before.running() {
                    assert_eq!(
                        w.services[&s].version, before.services[&s].version,
                        "upgrade {id} rolled back: {s} runs another version"
                    );
                }
            }
            (RunSpec::Restore { backup } | RunSpec::Rollback { backup }, State::Completed) => {
                let snap = &w.archives[&backup.path].snapshot;
                let data = w.data.as_ref().unwrap();
                assert_eq!(data.writes, snap.data.writes, "restore {id}: the data is not the backup's");
                if run.kind() == RunKind::Rollback {
                    assert_eq!(w.files.as_ref(), Some(&snap.files), "rollback {id}: the files are not the backup's");
                } else {
                    assert_eq!(w.files, before.files, "restore {id} changed the deployment files");
                }
            }
            (RunSpec::Ship { backup, target }, _) => {
                // It never touches the host: services, data, files, local backups as they were.
                assert_eq!(w.services, before.services, "ship {id} touched the services");
                assert_eq!((&w.data, &w.files), (&before.data, &before.files), "ship {id} touched the data");
                assert_eq!((&w.catalog, &w.archives), (&before.catalog, &before.archives), "ship {id}: backups");
                let store = &w.remotes[&target.remote];
                let key = (backup.backup_id, target.remote.clone());
                // Completed or rolled back, it leaves no upload open: none of its key on any
                // remote, whoever opened it, and none it opened. That includes one whose begin a
                // crash interrupted (or whose answer was lost) before the journal heard its id:
                // the abort lists the key's open uploads.
                let open: Vec<(&String, &String)> = w
                    .remotes
                    .iter()
                    .flat_map(|(name, store)| {
                        store
                            .uploads
                            .iter()
                            .filter(|(_, u)| u.key == target.key || u.run == id)
                            .map(move |(uid, _)| (name, uid))
                    })
                    .collect();
                assert!(open.is_empty(), "ship {id} ({state}) left uploads open: {open:?}");
                if state == State::Completed {
                    let copy = w.copies.get(&key).unwrap_or_else(|| panic!("completed ship {id} is not catalogued"));
                    assert_eq!((copy.run, &copy.key), (id, &target.key), "ship {id}: another copy is catalogued");
                } else {
                    assert!(!w.copies.values().any(|c| c.run == id), "rolled back ship {id} is catalogued");
                    let left: Vec<&String> =
                        store.objects.iter().filter(|(_, o)| o.run == id).map(|(k, _)| k).collect();
                    assert!(left.is_empty(), "rolled back ship {id} left its objects {left:?}");
                }
            }
            (RunSpec::RestoreNew { .. } | RunSpec::FirstDeploy { .. }, _) => {
                unreachable!(
                    "the model starts no restore onto a new host and no first deployment: tests/recovery_rules.rs covers their rules"
                )
            }
            (RunSpec::Restore { .. } | RunSpec::Rollback { .. }, _) => {
                assert_eq!(w.data, before.data, "restore {id} rolled back: data");
                assert_eq!(w.files, before.files, "restore {id} rolled back: files");
                for s in before.running() {
                    assert_eq!(
                        w.services[&s].version, before.services[&s].version,
                        "restore {id} rolled back: {s} runs another version"
                    );
                }
            }
        }
    }
}

/// Whether the journal shows a `RecordBackup` that succeeded.
pub fn recorded(events: &[Event]) -> bool {
    events.windows(2).any(|pair| {
        matches!(
            pair,
            [Event::Intent { effect: Effect::RecordBackup { .. }, .. }, Event::Outcome { outcome: Outcome::Done, .. }]
        )
    })
}

/// The upload id a ship run's journal holds, once its `BeginUpload` succeeded.
pub fn upload_begun(events: &[Event]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        Event::Outcome { outcome: Outcome::UploadBegun { upload_id }, .. } => Some(upload_id.as_str()),
        _ => None,
    })
}

/// Whether a copy goes to a directory remote (else S3).
pub fn is_dir(target: &CopyTarget) -> bool {
    target.url.starts_with("file://")
}

/// A container of `version` starting on data of another schema migrates the data.
fn migrate(w: &mut World, version: &str) {
    if let Some(data) = &mut w.data
        && data.schema != version
    {
        data.schema = version.to_string();
    }
}

// -------------------------------------------------------------------------------------------------
// Specs.

/// A snapshot backup only adds the services' own writes to the data.
fn assert_data_only_written(id: RunId, before: &World, w: &World) {
    let (Some(now), Some(then)) = (&w.data, &before.data) else { panic!("backup {id}: the data is missing") };
    assert!(now.schema == then.schema && now.writes >= then.writes, "backup {id} changed the data: {now:?}");
}

pub fn snapshot_backup_spec(id: RunId, kind: BackupKind) -> RunSpec {
    RunSpec::SnapshotBackup { archive_path: archive_path(id), backup_kind: kind, note: None, mirror: "mirror".into() }
}

pub fn backup_spec(id: RunId, kind: BackupKind) -> RunSpec {
    RunSpec::Backup { archive_path: archive_path(id), backup_kind: kind, note: None }
}

pub fn archive_path(id: RunId) -> String {
    format!("backups/r{id}.tar.gz")
}

pub fn package(version: &str) -> PackageRef {
    PackageRef {
        path: format!("packages/app-{version}.tar.gz"),
        version: version.into(),
        sha256: format!("{version}-sha"),
    }
}

pub fn upgrade_spec(id: RunId, version: &str) -> RunSpec {
    RunSpec::Upgrade { archive_path: archive_path(id), package: package(version) }
}

/// The catalog entry `id` as a restore refers to it.
pub fn backup_ref(world: &World, id: RunId) -> Option<BackupRef> {
    let e = world.catalog.get(&id)?;
    Some(BackupRef { backup_id: id, path: e.path.clone(), sha256: e.sha256.clone(), size_bytes: e.size_bytes })
}

/// A ship run of the catalogued backup `id` to the remote `REMOTES[remote]`: the copy's key is the
/// archive's file name, plus `.age` when the remote encrypts.
pub fn ship_spec(world: &World, id: RunId, remote: usize) -> Option<RunSpec> {
    let backup = backup_ref(world, id)?;
    let (name, url, encrypts) = REMOTES[remote % REMOTES.len()];
    let file = backup.path.rsplit('/').next().unwrap_or(&backup.path);
    let key = if encrypts { format!("{file}.age") } else { file.to_owned() };
    Some(RunSpec::Ship { backup, target: CopyTarget { remote: name.into(), url: url.into(), key } })
}

/// The pre-upgrade backup of the last upgrade, as `lifeboat rollback` picks it.
pub fn last_pre_upgrade(world: &World) -> Option<BackupRef> {
    let (id, _) = world.catalog.iter().rev().find(|(_, e)| e.kind == BackupKind::PreUpgrade)?;
    backup_ref(world, *id)
}

/// A deterministic 64-bit mix (splitmix64), for deriving crash points from a seed.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
