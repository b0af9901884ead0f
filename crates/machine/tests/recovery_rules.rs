//! One test per recovery rule (ARCHITECTURE.md, `plan.rs`), each asserting the exact plan `recover`
//! gives, and, where the rule is about what happens to the world, carrying it out in the
//! simulated world. Then the machine's rejections: every malformed journal is an error, never a
//! panic.

mod sim;

use lifeboat_machine::*;
use sim::*;

const ID: RunId = 1;
const PATH: &str = "backups/r1.tar.gz";

/// The services running when the run began, in stop order, as the journals below report them.
fn running() -> Vec<String> {
    vec!["app".into(), "db".into()]
}

fn facts() -> ArchiveFacts {
    ArchiveFacts {
        path: PATH.into(),
        sha256: "5ha".into(),
        size_bytes: 120,
        file_count: 3,
        entry_count: 4,
        content_bytes: 240,
    }
}

fn pre_upgrade_ref() -> BackupRef {
    BackupRef { backup_id: ID, path: PATH.into(), sha256: "5ha".into(), size_bytes: 120 }
}

fn catalogued() -> BackupRef {
    BackupRef { backup_id: 7, path: "backups/r7.tar.gz".into(), sha256: "7ha".into(), size_bytes: 99 }
}

fn backup() -> RunSpec {
    RunSpec::Backup { archive_path: PATH.into(), backup_kind: BackupKind::Manual, note: Some("nightly".into()) }
}

fn upgrade() -> RunSpec {
    RunSpec::Upgrade { archive_path: PATH.into(), package: package("v2") }
}

fn restore() -> RunSpec {
    RunSpec::Restore { backup: catalogued() }
}

fn snapshot_backup() -> RunSpec {
    RunSpec::SnapshotBackup { archive_path: PATH.into(), backup_kind: BackupKind::Auto, note: None, mirror: "m".into() }
}

fn synced() -> Outcome {
    Outcome::MirrorSynced { entries: 9, files_copied: 2, bytes_copied: 50, removed: 1 }
}

fn rollback() -> RunSpec {
    RunSpec::Rollback { backup: catalogued() }
}

fn target() -> CopyTarget {
    CopyTarget { remote: "offsite".into(), url: "s3://bucket/lifeboat".into(), key: "r7.tar.gz.age".into() }
}

fn ship() -> RunSpec {
    RunSpec::Ship { backup: catalogued(), target: target() }
}

const UPLOAD_ID: &str = "2~upload";

fn copy_facts() -> CopyFacts {
    CopyFacts { stored_sha256: "a9e".into(), stored_bytes: 299, encryption: "age".into() }
}

/// A journal written by hand, step by step, through the machine's own `handle_*` methods.
struct Journal {
    run: Run,
    events: Vec<Event>,
    t: i64,
}

impl Journal {
    fn new(spec: RunSpec) -> Journal {
        Journal::started(Run::start(spec, Timestamp(1000)))
    }

    /// A run with an `on_failure` hook (idempotent or not).
    fn with_on_failure(spec: RunSpec, idempotent: bool) -> Journal {
        Journal::started(Run::start_with(spec, vec![on_failure(idempotent)], Timestamp(1000)))
    }

    fn started(started: Event) -> Journal {
        let run = Run::from_started(ID, &started).unwrap();
        Journal { run, events: vec![started], t: 1000 }
    }

    fn clone_journal(&self) -> Journal {
        Journal { run: self.run.clone(), events: self.events.clone(), t: self.t }
    }

    fn push(&mut self, event: Event) {
        self.run.apply(&event).unwrap();
        self.events.push(event);
    }

    fn now(&mut self) -> Timestamp {
        self.t += 10;
        Timestamp(self.t)
    }

    /// Journals the intent of the next effect (the effect is then "in flight").
    fn begin(mut self) -> Journal {
        let at = self.now();
        let event = self.run.handle_begin(at).unwrap();
        self.push(event);
        self
    }

    fn outcome(mut self, outcome: Outcome) -> Journal {
        let at = self.now();
        let event = self.run.handle_outcome(outcome, at).unwrap();
        self.push(event);
        self
    }

    /// The next `n` effects succeed.
    fn ok(mut self, n: usize) -> Journal {
        for _ in 0..n {
            let outcome = match self.run.poll_effect().expect("a next effect") {
                Effect::Inspect => Outcome::Inspected { running: running() },
                Effect::WriteArchive { .. } => Outcome::ArchiveWritten(facts()),
                Effect::RunHook { .. } => Outcome::HookRan { exit_code: 0, output_tail: String::new() },
                Effect::SyncMirror { .. } => synced(),
                Effect::BeginUpload { .. } => Outcome::UploadBegun { upload_id: UPLOAD_ID.into() },
                Effect::UploadCopy { .. } => Outcome::CopyUploaded(copy_facts()),
                _ => Outcome::Done,
            };
            self = self.begin().outcome(outcome);
        }
        self
    }

    /// The next effect fails.
    fn fail(self) -> Journal {
        self.begin().outcome(Outcome::Failed { error: "boom".into() })
    }

    /// Journals the recovery decision the rules give.
    fn recovering(mut self) -> Journal {
        let plan = self.plan();
        let at = self.now();
        self.push(plan.event(at));
        self
    }

    fn plan(&self) -> RecoveryPlan {
        recover(ID, &self.events).unwrap().expect("an interrupted run")
    }

    fn expect(&self, interrupted_in: State, decision: Decision, steps: Vec<Effect>, ends_as: State) {
        let plan = self.plan();
        let kind = self.run.kind();
        assert_eq!(plan, RecoveryPlan { run_id: ID, kind, interrupted_in, decision, steps, ends_as });
        // The plan is what the run then does: apply the decision and succeed at every step.
        let mut run = replay(ID, &self.events).unwrap();
        assert_eq!(run, self.run, "replay == live");
        run.apply(&plan.event(Timestamp(9999))).unwrap();
        let mut done = Vec::new();
        while let Some(effect) = run.poll_effect() {
            run.apply(&run.handle_begin(Timestamp(9999)).unwrap()).unwrap();
            let outcome = match effect {
                Effect::Inspect => Outcome::Inspected { running: running() },
                Effect::RunHook { .. } => Outcome::HookRan { exit_code: 0, output_tail: String::new() },
                Effect::SyncMirror { .. } => synced(),
                _ => Outcome::Done,
            };
            run.apply(&run.handle_outcome(outcome, Timestamp(9999)).unwrap()).unwrap();
            done.push(effect);
        }
        assert_eq!(done, plan.steps);
        assert_eq!(run.state(), plan.ends_as);
    }
}

fn stop() -> Effect {
    Effect::StopServices { services: running() }
}
fn start() -> Effect {
    Effect::StartServices { services: running() }
}
fn discard() -> Effect {
    Effect::DiscardArchive { path: PATH.into() }
}
fn compose_up_old() -> Effect {
    Effect::ComposeUp { services: Some(running()) }
}
fn verify_old() -> Effect {
    Effect::VerifyServices { services: Some(running()) }
}

fn hook(point: HookPoint, idempotent: bool) -> Hook {
    Hook { point, service: Some("db".into()), command: "pg_dumpall".into(), timeout_secs: 60, idempotent }
}

/// A backup whose `Inspect` reported a before and an after hook.
fn backup_with_hooks(after_idempotent: bool) -> Journal {
    let hooks = vec![hook(HookPoint::BeforeBackup, false), hook(HookPoint::AfterBackup, after_idempotent)];
    Journal::new(backup()).begin().outcome(Outcome::InspectedWithHooks { running: running(), hooks })
}

#[test]
fn a_before_hook_interrupted_by_a_crash_is_not_run_again_and_the_backup_rolls_back() {
    let journal = backup_with_hooks(false).begin();
    assert!(matches!(journal.run.in_flight(), Some(Effect::RunHook { .. })));
    journal.expect(State::Checking, Decision::RollBack, vec![], State::RolledBack);
}

#[test]
fn a_failing_before_hook_ends_the_backup_rolled_back_before_any_stop() {
    let journal = backup_with_hooks(false).begin().outcome(Outcome::HookRan { exit_code: 3, output_tail: "no".into() });
    assert_eq!(journal.run.state(), State::RolledBack);
    assert_eq!(journal.run.failures()[0].error, "hook before_backup (db) exited 3: no");
    let stopped = journal.events.iter().any(|e| matches!(e, Event::Intent { effect: Effect::StopServices { .. }, .. }));
    assert!(!stopped);
}

#[test]
fn a_failing_after_hook_is_reported_and_the_backup_completes() {
    let journal =
        backup_with_hooks(false).ok(5).begin().outcome(Outcome::HookRan { exit_code: 4, output_tail: String::new() });
    assert_eq!(journal.run.state(), State::Completed);
    assert_eq!(journal.run.hook_failures().len(), 1);
    assert!(journal.run.failures().is_empty());
}

#[test]
fn an_after_hook_interrupted_by_a_crash_is_passed_over_unless_idempotent() {
    // Before hook, stop, write, record, start: then the after hook is in flight.
    let journal = backup_with_hooks(false).ok(5).begin();
    journal.expect(State::Verifying, Decision::Resume, vec![], State::Completed);
    let journal = backup_with_hooks(true).ok(5).begin();
    let again = Effect::RunHook { hook: hook(HookPoint::AfterBackup, true) };
    journal.expect(State::Verifying, Decision::Resume, vec![again], State::Completed);
}

fn on_failure(idempotent: bool) -> Hook {
    Hook { point: HookPoint::OnFailure, service: None, command: "page-me".into(), timeout_secs: 30, idempotent }
}

fn run_on_failure(idempotent: bool) -> Effect {
    Effect::RunHook { hook: on_failure(idempotent) }
}

#[test]
fn a_run_without_on_failure_hooks_is_journaled_started_as_before() {
    assert_eq!(Run::start_with(backup(), vec![], Timestamp(1)), Run::start(backup(), Timestamp(1)));
}

#[test]
fn on_failure_runs_last_when_a_backup_rolls_back_even_at_its_first_step() {
    // Inspect failed: nothing to undo but the hook.
    let j = Journal::with_on_failure(backup(), false).fail();
    assert_eq!(j.run.mode(), &Mode::Compensating { steps: vec![run_on_failure(false)], end: State::RolledBack });
    let j = j.ok(1);
    assert_eq!(j.run.state(), State::RolledBack);
    // A failed write: the archive discarded and the services started, then the hook.
    let j = Journal::with_on_failure(backup(), false).ok(2).fail();
    let steps = vec![discard(), start(), run_on_failure(false)];
    assert_eq!(j.run.mode(), &Mode::Compensating { steps, end: State::RolledBack });
    // Its exit code is recorded and changes nothing.
    let j = j.ok(2).begin().outcome(Outcome::HookRan { exit_code: 9, output_tail: "no pager".into() });
    assert_eq!(j.run.state(), State::RolledBack);
    assert_eq!(j.run.failures().len(), 1, "only the write");
    assert_eq!(j.run.hook_failures()[0].error, "hook on_failure (host) exited 9: no pager");
}

#[test]
fn on_failure_does_not_run_when_the_run_completes_or_finishes() {
    let j = Journal::with_on_failure(backup(), false).ok(5);
    assert_eq!(j.run.state(), State::Completed);
    assert!(!j.events.iter().any(|e| matches!(e, Event::Intent { effect: Effect::RunHook { .. }, .. })));
    // Past the point of no return, a failed start is retried: finishing is not failing.
    let j = Journal::with_on_failure(backup(), false).ok(4).fail().ok(1);
    assert_eq!(j.run.state(), State::Completed);
}

#[test]
fn on_failure_runs_once_when_a_run_fails_and_then_it_ends_failed() {
    // The start after a recorded backup fails three times: the run fails, the hook runs.
    let j = Journal::with_on_failure(backup(), false).ok(4).fail().fail().fail();
    assert_eq!(j.run.mode(), &Mode::Compensating { steps: vec![run_on_failure(false)], end: State::Failed });
    let j = j.begin().outcome(Outcome::Failed { error: "sh: page-me: not found".into() });
    assert_eq!(j.run.state(), State::Failed);
    assert_eq!(j.run.hook_failures().len(), 1);
    // A rollback whose settling start fails twice: the hook was its last step, it runs once.
    let j = Journal::with_on_failure(backup(), false).ok(2).fail().ok(1).fail().fail();
    assert_eq!(j.run.mode(), &Mode::Compensating { steps: vec![run_on_failure(false)], end: State::Failed });
    let j = j.ok(1);
    assert_eq!(j.run.state(), State::Failed);
    let hooks = j.events.iter().filter(|e| matches!(e, Event::Intent { effect: Effect::RunHook { .. }, .. }));
    assert_eq!(hooks.count(), 1);
}

#[test]
fn recovery_rolls_back_with_on_failure_last_and_never_runs_it_twice_unless_idempotent() {
    // Killed while archiving: the rollback ends with the hook.
    let j = Journal::with_on_failure(backup(), false).ok(2).begin();
    j.expect(State::Archiving, Decision::RollBack, vec![discard(), start(), run_on_failure(false)], State::RolledBack);
    // Killed while the hook ran: it may have paged someone; passed over unless idempotent.
    let j = Journal::with_on_failure(backup(), false).fail().begin();
    j.expect(State::RollingBack, Decision::ContinueRollBack, vec![], State::RolledBack);
    let j = Journal::with_on_failure(backup(), true).fail().begin();
    j.expect(State::RollingBack, Decision::ContinueRollBack, vec![run_on_failure(true)], State::RolledBack);
    // Killed while the hook of a failing run ran: it ends failed.
    let j = Journal::with_on_failure(backup(), false).ok(4).fail().fail().fail().begin();
    j.expect(State::RollingBack, Decision::ContinueRollBack, vec![], State::Failed);
}

#[test]
fn on_failure_comes_from_the_start_never_from_inspect() {
    let hooks = vec![on_failure(false)];
    let j = Journal::new(backup()).begin();
    let err = j.run.handle_outcome(Outcome::InspectedWithHooks { running: running(), hooks }, Timestamp(5));
    assert_eq!(err, Err(MachineError::MisplacedHook { point: HookPoint::OnFailure }));
    let started =
        Event::StartedWith { at: Timestamp(1), spec: backup(), on_failure: vec![hook(HookPoint::AfterBackup, false)] };
    assert_eq!(Run::from_started(ID, &started), Err(MachineError::MisplacedHook { point: HookPoint::AfterBackup }));
}

#[test]
fn an_upgrade_runs_its_before_hooks_first_and_its_after_hooks_once_committed() {
    let hooks = vec![hook(HookPoint::BeforeUpgrade, false), hook(HookPoint::AfterUpgrade, false)];
    let j = Journal::new(upgrade()).begin().outcome(Outcome::InspectedWithHooks { running: running(), hooks });
    assert_eq!(j.run.poll_effect(), Some(Effect::RunHook { hook: hook(HookPoint::BeforeUpgrade, false) }));
    // A failing before hook: nothing stopped, nothing written.
    let failed = j.clone_journal().begin().outcome(Outcome::HookRan { exit_code: 1, output_tail: String::new() });
    assert_eq!(failed.run.state(), State::RolledBack);
    // Hook, stop, write, record, deploy, up, verify, commit: then the after hook.
    let j = j.ok(8);
    assert_eq!(j.run.poll_effect(), Some(Effect::RunHook { hook: hook(HookPoint::AfterUpgrade, false) }));
    assert_eq!(j.run.state(), State::Verifying);
    let j = j.begin();
    j.expect(State::Verifying, Decision::Resume, vec![], State::Completed);
}

// -------------------------------------------------------------------------------------------------
// Snapshot backups (docs/design.md, "Snapshot backups").

fn sync(stopped: bool) -> Effect {
    Effect::SyncMirror { mirror: "m".into(), stopped }
}

#[test]
fn a_snapshot_backup_syncs_stops_syncs_starts_then_archives_and_records() {
    let mut j = Journal::new(snapshot_backup());
    let mut seen = Vec::new();
    while let Some(effect) = j.run.poll_effect() {
        seen.push((j.run.state(), effect.name()));
        j = j.ok(1);
    }
    let expected = [
        (State::Checking, "inspect"),
        (State::Presyncing, "sync_mirror"),
        (State::Stopping, "stop_services"),
        (State::Snapshotting, "sync_mirror"),
        (State::Restarting, "start_services"),
        (State::Archiving, "write_archive"),
        (State::Recording, "record_backup"),
    ];
    assert_eq!(seen, expected);
    assert_eq!(j.run.state(), State::Completed);
}

#[test]
fn a_snapshot_backup_interrupted_before_its_services_are_back_starts_them_and_ends_rolled_back() {
    // In the presync: nothing was stopped.
    Journal::new(snapshot_backup()).ok(1).begin().expect(
        State::Presyncing,
        Decision::RollBack,
        vec![],
        State::RolledBack,
    );
    // While stopping: the stop is finished first.
    let j = Journal::new(snapshot_backup()).ok(2).begin();
    j.expect(State::Stopping, Decision::RollBack, vec![stop(), start()], State::RolledBack);
    // In the stopped sync, or while starting: started again.
    let j = Journal::new(snapshot_backup()).ok(3).begin();
    j.expect(State::Snapshotting, Decision::RollBack, vec![start()], State::RolledBack);
    let j = Journal::new(snapshot_backup()).ok(4).begin();
    j.expect(State::Restarting, Decision::RollBack, vec![start()], State::RolledBack);
}

#[test]
fn a_snapshot_backup_interrupted_after_its_services_are_back_discards_the_archive_and_leaves_them() {
    let j = Journal::new(snapshot_backup()).ok(5).begin();
    j.expect(State::Archiving, Decision::RollBack, vec![discard()], State::RolledBack);
    let j = Journal::new(snapshot_backup()).ok(6).begin();
    j.expect(State::Recording, Decision::RollBack, vec![discard()], State::RolledBack);
    // A failed write (a full disk) likewise, live.
    let j = Journal::new(snapshot_backup()).ok(5).fail();
    assert_eq!(j.run.mode(), &Mode::Compensating { steps: vec![discard()], end: State::RolledBack });
    // An operator's cancel during the archive is accepted: the archive goes, the services stay.
    let cancel = j.run.handle_cancel("SIGINT", Timestamp(1));
    assert!(cancel.is_none(), "settling already");
    let j = Journal::new(snapshot_backup()).ok(5);
    assert!(j.run.handle_cancel("SIGINT", Timestamp(1)).is_some());
}

#[test]
fn a_snapshot_backup_interrupted_after_recording_is_done() {
    let j = Journal::new(snapshot_backup()).ok(7);
    assert_eq!(j.run.state(), State::Completed);
    assert_eq!(recover(ID, &j.events), Ok(None));
}

#[test]
fn a_sync_reports_its_mirror_figures_and_nothing_else() {
    let j = Journal::new(snapshot_backup()).ok(1).begin();
    assert_eq!(j.run.in_flight(), Some(&sync(false)));
    assert!(j.run.handle_outcome(Outcome::Done, Timestamp(5)).is_err());
    assert!(j.run.handle_outcome(synced(), Timestamp(5)).is_ok());
    let j = Journal::new(backup()).begin();
    assert!(j.run.handle_outcome(synced(), Timestamp(5)).is_err(), "inspect cannot report a sync");
}

// -------------------------------------------------------------------------------------------------
// Backup.

#[test]
fn backup_interrupted_before_stopping_anything_just_ends_rolled_back() {
    Journal::new(backup()).expect(State::Checking, Decision::RollBack, vec![], State::RolledBack);
    Journal::new(backup()).begin().expect(State::Checking, Decision::RollBack, vec![], State::RolledBack);
}

#[test]
fn backup_interrupted_while_stopping_finishes_the_stop_then_starts_the_services() {
    let j = Journal::new(backup()).ok(1).begin();
    j.expect(State::Stopping, Decision::RollBack, vec![stop(), start()], State::RolledBack);

    // In the world: the crash falls after `db`'s stop was requested and before it exited. Docker
    // goes on reporting it running, so a start alone would leave it to exit.
    let mut sim = Sim::new(World::new(&["app", "db"]));
    let spec = backup_spec(1, BackupKind::Manual);
    sim.crash_at_named("step stop_services 3", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    assert!(sim.world.services["db"].stopping && sim.world.services["db"].running);
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::RolledBack);
    sim.check_ended(&ended[0]);
    assert_eq!(sim.world.up_set().into_iter().collect::<Vec<_>>(), ["app", "db"]);
}

#[test]
fn a_stop_that_failed_midway_is_finished_before_the_start() {
    let j = Journal::new(backup()).ok(1).fail();
    assert_eq!(j.run.state(), State::RollingBack);
    assert_eq!(j.run.poll_effect(), Some(stop()));
    // In the world: the stop of `app` was requested, then the step failed (the daemon's answer
    // was lost, say).
    let mut sim = Sim::new(World::new(&["app", "db"]));
    sim.inject(1, 1, 1);
    let run = sim.run(backup_spec(1, BackupKind::Manual)).unwrap();
    assert_eq!(run.state(), State::RolledBack);
    sim.check_ended(&run);
}

#[test]
fn a_journal_written_before_stops_were_finished_still_replays() {
    // Older builds went from a failed or interrupted stop straight to the start.
    let mut events = Journal::new(backup()).ok(1).fail().events;
    events.push(intent(start()));
    events.push(outcome(Outcome::Done));
    assert_eq!(replay(ID, &events).unwrap().state(), State::RolledBack);
    let mut events = Journal::new(restore()).ok(2).begin().events;
    events.push(Event::Recovering { at: Timestamp(9), decision: Decision::RollBack });
    events.push(intent(start()));
    events.push(outcome(Outcome::Done));
    assert_eq!(replay(ID, &events).unwrap().state(), State::RolledBack);
    // Only the start that followed the stop is accepted in its place.
    let mut events = Journal::new(backup()).ok(1).fail().events;
    events.push(intent(Effect::StopStack));
    assert!(matches!(replay_error(&events).1, MachineError::UnexpectedIntent { .. }));
}

#[test]
fn backup_interrupted_before_recording_discards_partial_and_restarts_services() {
    let j = Journal::new(backup()).ok(2).begin();
    j.expect(State::Archiving, Decision::RollBack, vec![discard(), start()], State::RolledBack);
    // Archive written, outcome journaled, record not begun: the complete archive goes too.
    let j = Journal::new(backup()).ok(3);
    j.expect(State::Recording, Decision::RollBack, vec![discard(), start()], State::RolledBack);

    // In the world: a crash with half the partial file written.
    let mut sim = Sim::new(World::new(&["app", "db"]));
    let spec = backup_spec(1, BackupKind::Manual);
    sim.crash_at_named("step write_archive 1", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    assert_eq!(sim.world.partials(), vec!["backups/r1.tar.gz.partial"]);
    assert!(sim.world.running().is_empty());
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::RolledBack);
    sim.check_ended(&ended[0]);
    assert!(sim.world.archives.is_empty() && sim.world.catalog.is_empty());
    assert_eq!(sim.world.running(), ["app", "db"]);
}

#[test]
fn backup_interrupted_while_recording_rolls_back_and_discards_catalog_entry() {
    let j = Journal::new(backup()).ok(3).begin();
    j.expect(State::Recording, Decision::RollBack, vec![discard(), start()], State::RolledBack);

    // In the world: the catalog entry was inserted, its outcome never journaled.
    let mut sim = Sim::new(World::new(&["db"]));
    let spec = backup_spec(1, BackupKind::Manual);
    sim.crash_at_named("step record_backup 1", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    assert!(sim.world.catalog.contains_key(&1));
    let ended = sim.recover_all().unwrap();
    sim.check_ended(&ended[0]);
    assert!(sim.world.catalog.is_empty() && sim.world.archives.is_empty());
    assert_eq!(sim.world.running(), ["db"]);
}

#[test]
fn backup_interrupted_after_recording_finishes_restarting() {
    let j = Journal::new(backup()).ok(4);
    j.expect(State::Restarting, Decision::Resume, vec![start()], State::Completed);
    let j = Journal::new(backup()).ok(4).begin();
    j.expect(State::Restarting, Decision::Resume, vec![start()], State::Completed);

    let mut sim = Sim::new(World::new(&["app", "db", "proxy"]));
    let spec = backup_spec(1, BackupKind::Auto);
    sim.crash_at_named("step start_services 1", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::Completed);
    sim.check_ended(&ended[0]);
    assert_eq!(sim.world.catalog[&1].kind, BackupKind::Auto);
}

#[test]
fn backup_failing_to_restart_retries_then_fails() {
    // The failed start becomes a settling step, which is itself retried once: three attempts.
    let j = Journal::new(backup()).ok(4).fail();
    assert_eq!(j.run.mode(), &Mode::Compensating { steps: vec![start()], end: State::Completed });
    assert_eq!(j.run.state(), State::Restarting);
    let j = j.fail();
    assert_eq!(j.run.state(), State::Restarting, "the settling start is retried once");
    let j = j.fail();
    assert_eq!(j.run.state(), State::Failed);
    assert_eq!(j.run.failures().len(), 3);
    assert_eq!(recover(ID, &j.events), Ok(None));
}

#[test]
fn backup_failing_before_recording_rolls_back_live() {
    let j = Journal::new(backup()).ok(2).fail();
    assert_eq!(j.run.mode(), &Mode::Compensating { steps: vec![discard(), start()], end: State::RolledBack });
    assert_eq!(j.run.state(), State::RollingBack);
    assert_eq!(j.run.failures()[0].state, State::Archiving);
}

// -------------------------------------------------------------------------------------------------
// Upgrade.

#[test]
fn upgrade_interrupted_before_deploying_rolls_back_like_a_backup_and_keeps_recorded_backup() {
    // Before recording: like a backup, the archive goes.
    let j = Journal::new(upgrade()).ok(2).begin();
    j.expect(State::Archiving, Decision::RollBack, vec![discard(), start()], State::RolledBack);
    let j = Journal::new(upgrade()).ok(3).begin();
    j.expect(State::Recording, Decision::RollBack, vec![discard(), start()], State::RolledBack);
    // Recorded: the pre-upgrade backup is a good backup and stays.
    let j = Journal::new(upgrade()).ok(4);
    j.expect(State::Deploying, Decision::RollBack, vec![start()], State::RolledBack);

    let mut sim = Sim::new(World::new(&["app", "db"]));
    let spec = upgrade_spec(1, "v2");
    // Right after the fourth outcome, RecordBackup's.
    sim.crash_at_nth_named("append outcome", 3, |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::RolledBack);
    sim.check_ended(&ended[0]);
    assert_eq!(sim.world.catalog[&1].kind, BackupKind::PreUpgrade);
    assert_eq!(sim.world.files.as_deref(), Some("v1"));
}

#[test]
fn upgrade_interrupted_at_deploying_restores_old_files_without_data() {
    let j = Journal::new(upgrade()).ok(4).begin();
    j.expect(
        State::Deploying,
        Decision::RollBack,
        vec![Effect::StopStack, Effect::RestoreDeployment, compose_up_old(), verify_old()],
        State::RolledBack,
    );
    // Deployed, the new stack not started yet: the same.
    let j = Journal::new(upgrade()).ok(5);
    j.expect(
        State::Restarting,
        Decision::RollBack,
        vec![Effect::StopStack, Effect::RestoreDeployment, compose_up_old(), verify_old()],
        State::RolledBack,
    );

    // In the world: old files moved aside, new ones not in yet.
    let mut sim = Sim::new(World::new(&["app", "db"]));
    let spec = upgrade_spec(1, "v2");
    sim.crash_at_named("step deploy 1", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    assert_eq!(sim.world.files, None);
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::RolledBack);
    sim.check_ended(&ended[0]);
}

#[test]
fn upgrade_interrupted_after_new_stack_ran_restores_files_and_data() {
    let all = vec![
        Effect::StopStack,
        Effect::RestoreDeployment,
        Effect::RestoreData { backup: pre_upgrade_ref(), deployment: false },
        compose_up_old(),
        verify_old(),
        Effect::CommitData,
    ];
    let j = Journal::new(upgrade()).ok(5).begin();
    j.expect(State::Restarting, Decision::RollBack, all.clone(), State::RolledBack);
    let j = Journal::new(upgrade()).ok(6).begin();
    j.expect(State::Verifying, Decision::RollBack, all.clone(), State::RolledBack);
    // The same steps when verification fails live.
    let j = Journal::new(upgrade()).ok(6).fail();
    assert_eq!(j.run.mode(), &Mode::Compensating { steps: all, end: State::RolledBack });

    // In the world: the new stack migrated the data before the crash.
    let mut sim = Sim::new(World::new(&["app", "db"]));
    let spec = upgrade_spec(1, "v2");
    sim.crash_at_named("step compose_up 2", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    assert_eq!(sim.world.data.as_ref().unwrap().schema, "v2");
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::RolledBack);
    sim.check_ended(&ended[0]);
    assert_eq!(sim.world.data.as_ref().unwrap().schema, "v1");
}

#[test]
fn upgrade_to_a_package_that_never_becomes_healthy_rolls_back() {
    let mut sim = Sim::new(World::new(&["app", "db", "cache"]));
    let run = sim.run(upgrade_spec(1, "v3")).unwrap();
    assert_eq!(run.state(), State::RolledBack);
    assert_eq!(run.failures()[0].state, State::Verifying);
    sim.check_ended(&run);
}

#[test]
fn upgrade_interrupted_after_verifying_resumes_commit() {
    let commit = vec![Effect::CommitDeploy { version: "v2".into() }];
    let j = Journal::new(upgrade()).ok(7);
    j.expect(State::Verifying, Decision::Resume, commit.clone(), State::Completed);
    let j = Journal::new(upgrade()).ok(7).begin();
    j.expect(State::Verifying, Decision::Resume, commit, State::Completed);

    let mut sim = Sim::new(World::new(&["app"]));
    let spec = upgrade_spec(1, "v2");
    sim.crash_at_named("step commit_deploy 1", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::Completed);
    sim.check_ended(&ended[0]);
    assert_eq!(sim.world.deployed_version, "v2");
}

// -------------------------------------------------------------------------------------------------
// Restore and rollback.

#[test]
fn restore_interrupted_while_checking_just_ends_rolled_back() {
    Journal::new(restore()).begin().expect(State::Checking, Decision::RollBack, vec![], State::RolledBack);
    Journal::new(restore()).ok(1).begin().expect(State::Checking, Decision::RollBack, vec![], State::RolledBack);
}

#[test]
fn restore_interrupted_before_restoring_restarts_services() {
    let j = Journal::new(restore()).ok(2).begin();
    j.expect(State::Stopping, Decision::RollBack, vec![stop(), start()], State::RolledBack);
    let j = Journal::new(restore()).ok(3);
    j.expect(State::Restoring, Decision::RollBack, vec![start()], State::RolledBack);
}

#[test]
fn restore_interrupted_while_restoring_reverts_data() {
    let j = Journal::new(restore()).ok(3).begin();
    j.expect(State::Restoring, Decision::RollBack, vec![Effect::RevertData, start(), verify_old()], State::RolledBack);

    // In the world: the current data moved aside, the backup's not in yet.
    let mut sim = Sim::new(World::new(&["app", "db"]));
    sim.run(backup_spec(1, BackupKind::Manual)).unwrap();
    sim.world.app_write();
    let spec = RunSpec::Restore { backup: backup_ref(&sim.world, 1).unwrap() };
    sim.crash_at_named("step restore_data 1", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    assert_eq!(sim.world.data, None);
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::RolledBack);
    sim.check_ended(&ended[0]);
    assert_eq!(sim.world.data.as_ref().unwrap().writes, 1);
}

#[test]
fn restore_interrupted_while_restarting_stops_reverts_and_restarts() {
    let j = Journal::new(restore()).ok(4).begin();
    j.expect(
        State::Restarting,
        Decision::RollBack,
        vec![Effect::StopStack, Effect::RevertData, start(), verify_old()],
        State::RolledBack,
    );
}

#[test]
fn rollback_interrupted_while_restoring_reverts_data_and_files_and_composes_up() {
    let j = Journal::new(rollback()).ok(3).begin();
    j.expect(
        State::Restoring,
        Decision::RollBack,
        vec![Effect::RevertData, compose_up_old(), verify_old()],
        State::RolledBack,
    );
    assert_eq!(j.run.in_flight(), Some(&Effect::RestoreData { backup: catalogued(), deployment: true }));
}

#[test]
fn restore_interrupted_after_verifying_resumes_commit() {
    let j = Journal::new(restore()).ok(6);
    j.expect(State::Verifying, Decision::Resume, vec![Effect::CommitData], State::Completed);
}

// -------------------------------------------------------------------------------------------------
// Recovery of recovery.

#[test]
fn recovery_interrupted_continues_rolling_back() {
    // Crash right after the decision was journaled: every step remains.
    let j = Journal::new(backup()).ok(2).begin().recovering();
    j.expect(State::RollingBack, Decision::ContinueRollBack, vec![discard(), start()], State::RolledBack);
    // Crash during the second step: it is carried out again.
    let j = Journal::new(backup()).ok(2).begin().recovering().ok(1).begin();
    j.expect(State::RollingBack, Decision::ContinueRollBack, vec![start()], State::RolledBack);
    // The same for a live rollback interrupted by a crash.
    let j = Journal::new(upgrade()).ok(4).fail().ok(1).begin();
    j.expect(
        State::RollingBack,
        Decision::ContinueRollBack,
        vec![Effect::RestoreDeployment, compose_up_old(), verify_old()],
        State::RolledBack,
    );
}

#[test]
fn recovery_of_a_run_finishing_after_a_failure_carries_on_finishing() {
    // A backup whose restart failed after recording retries the restart; a crash then resumes the
    // retry. The machine names this decision `continue_roll_back` although the run finishes
    // `Completed` (the plan's `ends_as`): the name is misleading in `journal show`.
    let j = Journal::new(backup()).ok(4).fail().begin();
    j.expect(State::Restarting, Decision::ContinueFinishing, vec![start()], State::Completed);
}

#[test]
fn recovery_twice_gives_the_same_end_state() {
    // An upgrade crashed after its new stack started; its recovery is then interrupted at every
    // one of its points in turn, and recovered again.
    let mut crashed = Sim::new(World::new(&["proxy", "app", "db"]));
    let spec = upgrade_spec(1, "v2");
    crashed.crash_at_named("step compose_up 4", |s| s.run(spec.clone()));
    assert_eq!(crashed.run(spec).err(), Some(Crashed));

    let mut clean = crashed.clone();
    let start = clean.points;
    let ended = clean.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::RolledBack);
    clean.check_ended(&ended[0]);
    let points = clean.points - start;
    assert!(points > 10, "recovery has {points} points");

    for at in 0..points {
        let mut bumpy = crashed.clone();
        bumpy.crash_after(Some(at));
        assert_eq!(bumpy.recover_all().err(), Some(Crashed));
        // And a third time, crashing at the first point of the second recovery (unless the crash
        // came right after the run's last event, leaving nothing to recover).
        let mut twice = bumpy.clone();
        if recover(1, &twice.journal[&1]).unwrap().is_some() {
            twice.crash_after(Some(0));
            assert_eq!(twice.recover_all().err(), Some(Crashed));
            twice.recover_all().unwrap();
        } else {
            assert_eq!(at, points - 1, "only the last point leaves nothing to recover");
        }
        bumpy.recover_all().unwrap();
        for sim in [&bumpy, &twice] {
            assert_eq!(sim.world, clean.world, "recovery interrupted at point {at}");
            let run = replay(1, &sim.journal[&1]).unwrap();
            assert_eq!(run.state(), State::RolledBack);
            sim.check_ended(&run);
        }
    }
}

#[test]
fn ended_run_needs_no_recovery() {
    assert_eq!(recover(ID, &Journal::new(backup()).ok(5).events), Ok(None));
    assert_eq!(recover(ID, &Journal::new(upgrade()).ok(8).events), Ok(None));
    assert_eq!(recover(ID, &Journal::new(restore()).ok(7).events), Ok(None));
    // Rolled back, and failed.
    assert_eq!(recover(ID, &Journal::new(backup()).fail().events), Ok(None));
    assert_eq!(recover(ID, &Journal::new(backup()).ok(1).fail().fail().fail().events), Ok(None));
    // Recovered to its end.
    assert_eq!(recover(ID, &Journal::new(backup()).ok(2).begin().recovering().ok(2).events), Ok(None));
}

// -------------------------------------------------------------------------------------------------
// Rejections: errors, never panics.

fn replay_error(events: &[Event]) -> (usize, MachineError) {
    let err = replay(ID, events).unwrap_err();
    assert_eq!(recover(ID, events).unwrap_err(), err.clone(), "recover rejects what replay rejects");
    assert!(!err.to_string().is_empty());
    (err.index, err.error)
}

fn intent(effect: Effect) -> Event {
    Event::Intent { at: Timestamp(5), effect }
}

fn outcome(outcome: Outcome) -> Event {
    Event::Outcome { at: Timestamp(6), outcome }
}

#[test]
fn a_journal_must_start_with_started() {
    assert_eq!(replay_error(&[]), (0, MachineError::NoEvents));
    assert_eq!(replay_error(&[intent(Effect::Inspect)]), (0, MachineError::NotStarted));
    let started = Run::start(backup(), Timestamp(1));
    assert_eq!(replay_error(&[started.clone(), started]), (1, MachineError::StartedTwice));
}

#[test]
fn intent_of_the_wrong_effect_is_rejected() {
    let mut events = Journal::new(backup()).events;
    events.push(intent(Effect::StopStack));
    assert_eq!(
        replay_error(&events),
        (
            1,
            MachineError::UnexpectedIntent {
                expected: Some(Box::new(Effect::Inspect)),
                got: Box::new(Effect::StopStack)
            }
        )
    );
    // The right effect with the wrong arguments.
    let mut events = Journal::new(backup()).ok(1).events;
    events.push(intent(Effect::StopServices { services: vec!["db".into()] }));
    assert!(matches!(replay_error(&events), (3, MachineError::UnexpectedIntent { .. })));
}

#[test]
fn intent_while_another_is_in_flight_is_rejected() {
    let j = Journal::new(backup()).begin();
    assert_eq!(j.run.handle_begin(Timestamp(9)), Err(MachineError::IntentWhileInFlight));
    assert_eq!(j.run.poll_effect(), None, "an interrupted run polls nothing before recovery");
    let mut events = j.events;
    events.push(intent(Effect::Inspect));
    assert_eq!(replay_error(&events), (2, MachineError::IntentWhileInFlight));
}

#[test]
fn outcome_without_intent_is_rejected() {
    let j = Journal::new(backup());
    assert_eq!(j.run.handle_outcome(Outcome::Done, Timestamp(9)), Err(MachineError::OutcomeWithoutIntent));
    let mut events = Journal::new(backup()).ok(1).events;
    events.push(outcome(Outcome::Done));
    assert_eq!(replay_error(&events), (3, MachineError::OutcomeWithoutIntent));
}

#[test]
fn outcome_of_the_wrong_shape_is_rejected() {
    let j = Journal::new(backup()).begin();
    assert_eq!(
        j.run.handle_outcome(Outcome::Done, Timestamp(9)),
        Err(MachineError::OutcomeMismatch { effect: "inspect" })
    );
    let mut run = j.run.clone();
    assert_eq!(run.apply(&outcome(Outcome::Done)), Err(MachineError::OutcomeMismatch { effect: "inspect" }));
    assert_eq!(run, j.run, "a rejected event leaves the run as it was");

    let j = Journal::new(backup()).ok(1).begin();
    let err = j.run.handle_outcome(Outcome::Inspected { running: vec![] }, Timestamp(9));
    assert_eq!(err, Err(MachineError::OutcomeMismatch { effect: "stop_services" }));

    // An archive written somewhere else than asked.
    let j = Journal::new(backup()).ok(2).begin();
    let elsewhere = ArchiveFacts { path: "backups/other.tar.gz".into(), ..facts() };
    let mut events = j.events.clone();
    events.push(outcome(Outcome::ArchiveWritten(elsewhere)));
    assert_eq!(replay_error(&events), (6, MachineError::OutcomeMismatch { effect: "write_archive" }));
    // A failure fits every effect.
    assert!(j.run.handle_outcome(Outcome::Failed { error: "disk full".into() }, Timestamp(9)).is_ok());
}

#[test]
fn events_after_the_end_are_rejected() {
    let j = Journal::new(backup()).ok(5);
    assert_eq!(j.run.state(), State::Completed);
    assert_eq!(j.run.poll_effect(), None);
    assert_eq!(j.run.handle_begin(Timestamp(9)), Err(MachineError::AfterEnd { state: State::Completed }));
    for event in [
        intent(Effect::Inspect),
        outcome(Outcome::Done),
        Event::Recovering { at: Timestamp(9), decision: Decision::Resume },
    ] {
        let mut events = j.events.clone();
        events.push(event);
        assert_eq!(replay_error(&events), (11, MachineError::AfterEnd { state: State::Completed }));
    }
    let j = Journal::new(backup()).fail();
    assert_eq!(j.run.state(), State::RolledBack);
    assert_eq!(j.run.handle_begin(Timestamp(9)), Err(MachineError::AfterEnd { state: State::RolledBack }));
}

#[test]
fn a_wrong_recovery_decision_is_rejected() {
    let mut events = Journal::new(backup()).ok(2).begin().events;
    events.push(Event::Recovering { at: Timestamp(9), decision: Decision::Resume });
    assert_eq!(
        replay_error(&events),
        (6, MachineError::WrongDecision { expected: Decision::RollBack, got: Decision::Resume })
    );
    let mut events = Journal::new(upgrade()).ok(7).events;
    events.push(Event::Recovering { at: Timestamp(9), decision: Decision::ContinueRollBack });
    assert_eq!(
        replay_error(&events),
        (15, MachineError::WrongDecision { expected: Decision::Resume, got: Decision::ContinueRollBack })
    );
}

mod arbitrary_journals {
    use super::*;
    use proptest::prelude::*;

    fn effect() -> impl Strategy<Value = Effect> {
        prop_oneof![
            Just(Effect::Inspect),
            Just(stop()),
            Just(start()),
            Just(Effect::WriteArchive { path: PATH.into() }),
            Just(Effect::RecordBackup { archive: facts(), backup_kind: BackupKind::Manual, note: None }),
            Just(discard()),
            Just(Effect::Deploy { package: package("v2") }),
            Just(Effect::ComposeUp { services: None }),
            Just(compose_up_old()),
            Just(Effect::StopStack),
            Just(Effect::VerifyServices { services: None }),
            Just(verify_old()),
            Just(Effect::CommitDeploy { version: "v2".into() }),
            Just(Effect::RestoreDeployment),
            Just(Effect::VerifyArchive { backup: catalogued() }),
            Just(Effect::RestoreData { backup: catalogued(), deployment: false }),
            Just(Effect::RestoreData { backup: pre_upgrade_ref(), deployment: false }),
            Just(Effect::RevertData),
            Just(Effect::CommitData),
            Just(begin_upload()),
            Just(Effect::UploadCopy { backup: catalogued(), target: target(), upload_id: UPLOAD_ID.into() }),
            Just(Effect::RecordCopy { backup_id: 7, target: target(), copy: copy_facts() }),
            Just(abort(None)),
            Just(abort(Some(UPLOAD_ID))),
            Just(delete_copy()),
            Just(prune_copy(0)),
            Just(prune_copy(1)),
        ]
    }

    fn specs() -> impl Strategy<Value = RunSpec> {
        prop_oneof![
            Just(backup()),
            Just(upgrade()),
            Just(restore()),
            Just(rollback()),
            Just(ship()),
            Just(prune_copies())
        ]
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => effect().prop_map(intent),
            4 => prop_oneof![
                Just(Outcome::Done),
                Just(Outcome::Inspected { running: running() }),
                Just(Outcome::ArchiveWritten(facts())),
                Just(Outcome::Failed { error: "x".into() }),
                Just(Outcome::UploadBegun { upload_id: UPLOAD_ID.into() }),
                Just(Outcome::CopyUploaded(copy_facts())),
            ]
            .prop_map(outcome),
            1 => prop_oneof![Just(Decision::Resume), Just(Decision::RollBack), Just(Decision::ContinueRollBack)]
                .prop_map(|decision| Event::Recovering { at: Timestamp(7), decision }),
            1 => specs().prop_map(|spec| Run::start(spec, Timestamp(1))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2000,
            rng_seed: proptest::test_runner::RngSeed::Fixed(7),
            failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource(
                "proptest-regressions"
            ))),
            ..ProptestConfig::default()
        })]

        /// Arbitrary journals (mostly nonsense, sometimes a plausible prefix) are replayed and
        /// planned without a panic; whatever replays cleanly either ended or has a plan whose
        /// decision the run then accepts.
        #[test]
        fn random_journals_never_panic(spec in specs(),
                                      rest in prop::collection::vec(event(), 0..24)) {
            let mut events = vec![Run::start(spec, Timestamp(0))];
            events.extend(rest);
            let _ = recover(ID, &events);
            // The longest prefix that replays.
            let ok = (1..=events.len()).rev().find(|n| replay(ID, &events[..*n]).is_ok()).unwrap();
            let mut run = replay(ID, &events[..ok]).unwrap();
            let _ = run.state();
            let _ = run.is_committed();
            if let Some(plan) = recover(ID, &events[..ok]).unwrap() {
                prop_assert_eq!(run.apply(&plan.event(Timestamp(99))), Ok(()));
            }
        }
    }
}

// -------------------------------------------------------------------------------------------------
// Behaviours worth knowing (asserted as they are, explained where they may surprise).

#[test]
fn a_failed_settling_step_is_retried_once_then_the_run_fails() {
    // After a crash, recovery's rollback starts the services; one failed start is retried, and
    // only a second failure ends the run `Failed` (with both failures reported).
    let j = Journal::new(backup()).ok(2).begin().recovering().ok(1).fail();
    assert_eq!(j.run.state(), State::RollingBack);
    assert_eq!(j.run.poll_effect(), Some(start()), "the failed start is retried");
    let j = j.fail();
    assert_eq!(j.run.state(), State::Failed);
    assert_eq!(j.run.failures().len(), 2);
    assert_eq!(j.run.failures()[0].effect, start());
    assert_eq!(j.run.failures()[0].state, State::RollingBack);
}

#[test]
fn a_retried_settling_step_that_succeeds_lets_the_rollback_finish() {
    let j = Journal::new(backup()).ok(2).begin().recovering().ok(1).fail().ok(1);
    assert_eq!(j.run.state(), State::RolledBack);
}

#[test]
fn upgrade_rolled_back_with_nothing_running_composes_up_an_empty_list() {
    // `ComposeUp { services: Some(vec![]) }` means "no service"; `docker compose up -d` with no
    // service names means "every service". The executor must not pass an empty list through to
    // `Compose::up` (crates/cli/src/compose.rs), or this rollback starts the whole stack.
    let mut j = Journal::new(upgrade()).begin();
    let at = j.now();
    let event = j.run.handle_outcome(Outcome::Inspected { running: vec![] }, at).unwrap();
    j.push(event);
    let j = j.ok(3).begin();
    assert_eq!(
        j.plan().steps,
        vec![
            Effect::StopStack,
            Effect::RestoreDeployment,
            Effect::ComposeUp { services: Some(vec![]) },
            Effect::VerifyServices { services: Some(vec![]) },
        ]
    );
}

#[test]
fn completed_upgrade_starts_services_that_were_stopped() {
    // `ComposeUp { services: None }` brings up the whole new stack, so a service the operator had
    // stopped runs after the upgrade (a backup or restore restarts exactly what was running).
    let mut sim = Sim::new(World::new(&["db"]));
    let run = sim.run(upgrade_spec(1, "v2")).unwrap();
    assert_eq!(run.state(), State::Completed);
    sim.check_ended(&run);
    assert_eq!(sim.world.running(), ["proxy", "app", "cache", "db"]);
}

// -------------------------------------------------------------------------------------------------
// Prune: past its point of no return from the start.

fn prune_of(ids: &[u64]) -> RunSpec {
    RunSpec::Prune {
        deletions: ids
            .iter()
            .map(|id| BackupRef { backup_id: *id, path: format!("b/{id}.tar.gz"), sha256: "ab".into(), size_bytes: 1 })
            .collect(),
    }
}

#[test]
fn prune_interrupted_always_finishes_its_deletions() {
    let spec = prune_of(&[3, 4]);
    let RunSpec::Prune { deletions } = &spec else { unreachable!() };
    let delete = |i: usize| Effect::DeleteBackup { backup: deletions[i].clone() };
    // Interrupted during the first deletion: it is redone, then the second.
    let j = Journal::new(spec.clone()).begin();
    j.expect(State::Pruning, Decision::Resume, vec![delete(0), delete(1)], State::Completed);
    // Between the two.
    let j = Journal::new(spec.clone()).ok(1);
    j.expect(State::Pruning, Decision::Resume, vec![delete(1)], State::Completed);
}

#[test]
fn prune_with_nothing_to_delete_ends_as_it_starts() {
    let started = Run::start(prune_of(&[]), Timestamp(0));
    let run = Run::from_started(ID, &started).unwrap();
    assert_eq!(run.state(), State::Completed);
    assert!(run.is_ended());
    assert_eq!(recover(ID, &[started]), Ok(None));
}

// -------------------------------------------------------------------------------------------------
// Cancels: an operator's signal between two effects.

/// Journals the operator's cancel; panics if the machine does not accept one now.
fn cancel(mut j: Journal) -> Journal {
    let at = j.now();
    let event = j.run.handle_cancel("SIGINT", at).expect("a cancel the run accepts");
    j.push(event);
    j
}

#[test]
fn a_cancel_settles_the_run_as_a_failure_of_its_next_step_would() {
    // Before anything was stopped: nothing to undo.
    let j = cancel(Journal::new(backup()).ok(1));
    assert_eq!((j.run.state(), j.run.cancelled()), (State::RolledBack, Some("SIGINT")));
    // Stopped: start again (the stop succeeded, so nothing is on its way down).
    let j = cancel(Journal::new(backup()).ok(2));
    assert_eq!(j.run.state(), State::RollingBack);
    assert_eq!(j.run.poll_effect(), Some(start()));
    // Archive written, not recorded: discard it, then start.
    let j = cancel(Journal::new(backup()).ok(3)).ok(2);
    assert_eq!(j.run.state(), State::RolledBack);
    assert_eq!(replay(ID, &j.events).unwrap(), j.run, "replay == live");
    // An upgrade that deployed: the old files back, the old stack up, verified.
    let j = cancel(Journal::new(upgrade()).ok(5));
    assert_eq!(j.run.poll_effect(), Some(Effect::StopStack));
    let j = j.ok(4);
    assert_eq!(j.run.state(), State::RolledBack);
}

#[test]
fn a_cancel_is_refused_in_flight_while_settling_and_past_the_point_of_no_return() {
    let at = Timestamp(9);
    // An effect in flight: ask again after its outcome.
    assert_eq!(Journal::new(backup()).ok(1).begin().run.handle_cancel("SIGINT", at), None);
    // Settling already.
    assert_eq!(Journal::new(backup()).ok(2).fail().run.handle_cancel("SIGINT", at), None);
    // Recorded: the backup finishes.
    assert_eq!(Journal::new(backup()).ok(4).run.handle_cancel("SIGTERM", at), None);
    // A prune is past its point of no return from the start.
    let prune = RunSpec::Prune { deletions: vec![catalogued()] };
    assert_eq!(Journal::new(prune).run.handle_cancel("SIGINT", at), None);
    // And a journal that says otherwise does not replay.
    let mut events = Journal::new(backup()).ok(4).events;
    events.push(Event::Cancelled { at, reason: "SIGINT".into() });
    assert_eq!(replay_error(&events), (9, MachineError::CancelNotAccepted));
}

#[test]
fn a_cancelled_run_interrupted_while_settling_continues_rolling_back() {
    let j = cancel(Journal::new(backup()).ok(3)).begin();
    j.expect(State::RollingBack, Decision::ContinueRollBack, vec![discard(), start()], State::RolledBack);
}

#[test]
fn the_start_reports_the_order_the_services_came_up_in() {
    let j = Journal::new(backup()).ok(4).begin();
    let up = Outcome::Started { services: vec!["db".into(), "app".into()] };
    assert!(j.run.handle_outcome(up.clone(), Timestamp(9)).is_ok());
    let j = j.outcome(up.clone());
    assert_eq!(j.run.state(), State::Completed);
    // Only a start reports it.
    let j = Journal::new(backup()).ok(1).begin();
    assert_eq!(j.run.handle_outcome(up, Timestamp(9)), Err(MachineError::OutcomeMismatch { effect: "stop_services" }));
}

#[test]
fn an_archive_write_reports_its_details_and_older_journals_without_them_replay() {
    let details = ArchiveDetails {
        apparent_bytes: 20 << 30,
        stored_bytes: 10 << 20,
        skipped: vec![SkippedPath { path: "paths/data/app.sock".into(), kind: "socket".into() }],
    };
    let j =
        Journal::new(backup()).ok(2).begin().outcome(Outcome::Archived { facts: facts(), details: details.clone() });
    assert_eq!((j.run.archive(), j.run.archive_details()), (Some(&facts()), Some(&details)));
    assert_eq!(replay(ID, &j.events).unwrap(), j.run, "replay == live");
    // Written somewhere else than asked: refused, as the older outcome is.
    let elsewhere = ArchiveFacts { path: "backups/other.tar.gz".into(), ..facts() };
    let j = Journal::new(backup()).ok(2).begin();
    assert_eq!(
        j.run.handle_outcome(Outcome::Archived { facts: elsewhere, details }, Timestamp(9)),
        Err(MachineError::OutcomeMismatch { effect: "write_archive" })
    );
    // A journal from before details: the facts alone.
    let j = Journal::new(backup()).ok(3);
    assert_eq!((j.run.archive(), j.run.archive_details()), (Some(&facts()), None));
}

// -------------------------------------------------------------------------------------------------
// Restore onto a new host.

fn new_host_plan() -> Provision {
    Provision {
        volumes: vec![NewVolume {
            name: "shop_db".into(),
            driver: "local".into(),
            driver_options: Vec::new(),
            labels: vec![("com.docker.compose.project".into(), "shop".into())],
        }],
        files: vec!["docker-compose.yml".into()],
        dirs: vec!["data".into()],
        services: running(),
    }
}

fn restore_new() -> RunSpec {
    RunSpec::RestoreNew { backup: catalogued(), provision: new_host_plan() }
}

#[test]
fn a_restore_onto_a_new_host_interrupted_at_any_step_before_its_verification_removes_what_it_created() {
    let unprovision = Effect::Unprovision { provision: new_host_plan() };
    let verify_archive = Effect::VerifyArchive { backup: catalogued() };
    // (steps done, the next in flight?) → the state it was in, and the settling steps.
    let cases: Vec<(usize, bool, State, Vec<Effect>)> = vec![
        (0, false, State::Checking, vec![]),
        (0, true, State::Checking, vec![]),
        (1, false, State::Deploying, vec![]),
        (1, true, State::Deploying, vec![unprovision.clone()]),
        (2, false, State::Restoring, vec![unprovision.clone()]),
        (2, true, State::Restoring, vec![Effect::RevertData, unprovision.clone()]),
        (3, false, State::Restarting, vec![Effect::RevertData, unprovision.clone()]),
        (3, true, State::Restarting, vec![Effect::StopStack, Effect::RevertData, unprovision.clone()]),
        (4, false, State::Verifying, vec![Effect::StopStack, Effect::RevertData, unprovision.clone()]),
        (4, true, State::Verifying, vec![Effect::StopStack, Effect::RevertData, unprovision.clone()]),
    ];
    for (done, in_flight, state, steps) in cases {
        let mut j = Journal::new(restore_new()).ok(done);
        if in_flight {
            j = j.begin();
        }
        j.expect(state, Decision::RollBack, steps, State::RolledBack);
    }
    // The plan's first steps name what it creates, and the archive is verified before any.
    let j = Journal::new(restore_new());
    assert_eq!(j.run.poll_effect(), Some(verify_archive));
    let j = j.ok(1);
    assert_eq!(j.run.poll_effect(), Some(Effect::Provision { backup: catalogued(), provision: new_host_plan() }));
}

#[test]
fn a_restore_onto_a_new_host_verified_running_resumes_and_commits() {
    let j = Journal::new(restore_new()).ok(5);
    j.expect(State::Verifying, Decision::Resume, vec![Effect::CommitData], State::Completed);
    let j = Journal::new(restore_new()).ok(5).begin();
    j.expect(State::Verifying, Decision::Resume, vec![Effect::CommitData], State::Completed);
}

#[test]
fn a_restore_onto_a_new_host_that_fails_to_come_up_rolls_back_everything_it_created() {
    let j = Journal::new(restore_new()).ok(3).fail();
    assert_eq!(j.run.state(), State::RollingBack);
    // Interrupted while rolling back: the same steps, from the one interrupted.
    let j = j.begin();
    j.expect(
        State::RollingBack,
        Decision::ContinueRollBack,
        vec![Effect::StopStack, Effect::RevertData, Effect::Unprovision { provision: new_host_plan() }],
        State::RolledBack,
    );
}

// -------------------------------------------------------------------------------------------------
// First deployment.

#[test]
fn a_first_deployment_makes_no_backup_and_a_failed_one_takes_its_files_away_again() {
    let spec = RunSpec::FirstDeploy { package: package("v1") };
    let j = Journal::new(spec.clone());
    assert_eq!(j.run.poll_effect(), Some(Effect::Deploy { package: package("v1") }));
    Journal::new(spec.clone()).begin().expect(
        State::Deploying,
        Decision::RollBack,
        vec![Effect::RestoreDeployment],
        State::RolledBack,
    );
    Journal::new(spec.clone()).ok(1).begin().expect(
        State::Restarting,
        Decision::RollBack,
        vec![Effect::StopStack, Effect::RestoreDeployment],
        State::RolledBack,
    );
    let j = Journal::new(spec.clone()).ok(2).fail();
    assert_eq!(j.run.state(), State::RollingBack);
    // Verified healthy: past its point of no return, it commits.
    Journal::new(spec).ok(3).begin().expect(
        State::Verifying,
        Decision::Resume,
        vec![Effect::CommitDeploy { version: "v1".into() }],
        State::Completed,
    );
}

// -------------------------------------------------------------------------------------------------
// Shipping a copy to a remote (docs/design.md, "Off-host copies").

fn begin_upload() -> Effect {
    Effect::BeginUpload { target: target() }
}

fn abort(upload_id: Option<&str>) -> Effect {
    Effect::AbortUpload { target: target(), upload_id: upload_id.map(str::to_owned) }
}

fn delete_copy() -> Effect {
    Effect::DeleteCopy { backup_id: 7, target: target() }
}

#[test]
fn a_ship_run_opens_an_upload_fills_it_then_records_the_copy() {
    let mut j = Journal::new(ship());
    let mut seen = Vec::new();
    while let Some(effect) = j.run.poll_effect() {
        seen.push((j.run.state(), effect));
        j = j.ok(1);
    }
    let expected = [
        (State::Shipping, begin_upload()),
        (State::Shipping, Effect::UploadCopy { backup: catalogued(), target: target(), upload_id: UPLOAD_ID.into() }),
        (State::Recording, Effect::RecordCopy { backup_id: 7, target: target(), copy: copy_facts() }),
    ];
    assert_eq!(seen, expected);
    assert_eq!(j.run.state(), State::Completed);
    assert_eq!((j.run.upload_id(), j.run.copy()), (Some(UPLOAD_ID), Some(&copy_facts())));
    assert_eq!(j.run.kind(), RunKind::Ship);
    assert_eq!(replay(ID, &j.events).unwrap(), j.run, "replay == live");
}

#[test]
fn a_ship_run_interrupted_at_any_step_before_its_record_aborts_the_upload_then_deletes_the_copy() {
    let opened = abort(Some(UPLOAD_ID));
    // (steps done, the next in flight?) → the state it was in, and the settling steps.
    let cases: Vec<(usize, bool, State, Vec<Effect>)> = vec![
        // Nothing began: nothing to undo.
        (0, false, State::Shipping, vec![]),
        // The begin in flight: the store may have opened an upload whose id the journal never
        // heard; the abort has no id to give, and finds it by its key (S3's
        // ListMultipartUploads, a directory remote's KEY.partial).
        (0, true, State::Shipping, vec![abort(None)]),
        (1, false, State::Shipping, vec![opened.clone()]),
        // The upload in flight: its completion may have happened, or may be on its way.
        (1, true, State::Shipping, vec![opened.clone(), delete_copy()]),
        (2, false, State::Recording, vec![opened.clone(), delete_copy()]),
        // The record in flight: its entry may be in the copies table; the delete removes it.
        (2, true, State::Recording, vec![opened.clone(), delete_copy()]),
    ];
    for (done, in_flight, state, steps) in cases {
        let mut j = Journal::new(ship()).ok(done);
        if in_flight {
            j = j.begin();
        }
        j.expect(state, Decision::RollBack, steps, State::RolledBack);
        // Recovery interrupted right after its decision: the same steps.
        let plan = j.plan();
        if !plan.steps.is_empty() {
            let j = j.recovering();
            j.expect(State::RollingBack, Decision::ContinueRollBack, plan.steps.clone(), State::RolledBack);
            // And within its first step: that step again, then the rest.
            let j = j.begin();
            j.expect(State::RollingBack, Decision::ContinueRollBack, plan.steps, State::RolledBack);
        }
    }
}

#[test]
fn a_ship_run_whose_copy_is_recorded_is_done() {
    let j = Journal::new(ship()).ok(3);
    assert_eq!(j.run.state(), State::Completed);
    assert!(j.run.is_committed());
    assert_eq!(recover(ID, &j.events), Ok(None));
    assert_eq!(j.run.handle_cancel("SIGINT", Timestamp(9)), None, "nothing left to cancel");
}

#[test]
fn a_ship_run_failing_at_each_step_settles_as_its_interruption_would() {
    let opened = abort(Some(UPLOAD_ID));
    // A failed begin may still have opened an upload (its answer lost): aborted without an id.
    let cases = [(0, vec![abort(None)]), (1, vec![opened.clone(), delete_copy()]), (2, vec![opened, delete_copy()])];
    for (done, steps) in cases {
        let j = Journal::new(ship()).ok(done).fail();
        assert_eq!(j.run.mode(), &Mode::Compensating { steps: steps.clone(), end: State::RolledBack }, "{done}");
        assert_eq!(j.run.state(), State::RollingBack);
        assert_eq!(j.run.failures().len(), 1);
        let state = if done == 2 { State::Recording } else { State::Shipping };
        assert_eq!(j.run.failures()[0].state, state);
        // Interrupted before settling, or within its first step: the same steps.
        j.expect(State::RollingBack, Decision::ContinueRollBack, steps.clone(), State::RolledBack);
        let j = j.begin();
        j.expect(State::RollingBack, Decision::ContinueRollBack, steps.clone(), State::RolledBack);
        // Each settling step is retried once; a second failure ends the run failed.
        let j = Journal::new(ship()).ok(done).fail().fail();
        assert_eq!(j.run.poll_effect().as_ref(), steps.first(), "retried");
        let j = j.fail();
        assert_eq!(j.run.state(), State::Failed);
    }
}

#[test]
fn a_ship_run_cancelled_before_each_step_undoes_only_the_steps_that_began() {
    // Before the begin: nothing to undo.
    let j = cancel(Journal::new(ship()));
    assert_eq!((j.run.state(), j.run.cancelled()), (State::RolledBack, Some("SIGINT")));
    assert_eq!(recover(ID, &j.events), Ok(None));
    // Before the upload: the open upload is aborted, by its id. Before the record: the upload
    // aborted (completed, so nothing to abort), then the copy deleted.
    let cases = [(1, vec![abort(Some(UPLOAD_ID))]), (2, vec![abort(Some(UPLOAD_ID)), delete_copy()])];
    for (done, steps) in cases {
        let j = cancel(Journal::new(ship()).ok(done));
        assert_eq!(j.run.mode(), &Mode::Compensating { steps: steps.clone(), end: State::RolledBack });
        assert!(j.run.failures().is_empty(), "a cancel is no failure");
        // Interrupted before settling, or within its first step: the same steps.
        j.expect(State::RollingBack, Decision::ContinueRollBack, steps.clone(), State::RolledBack);
        let j = j.begin();
        j.expect(State::RollingBack, Decision::ContinueRollBack, steps.clone(), State::RolledBack);
        let j = j.outcome(Outcome::Done).ok(steps.len() - 1);
        assert_eq!(j.run.state(), State::RolledBack);
    }
    // In flight, or recorded: no cancel.
    assert_eq!(Journal::new(ship()).begin().run.handle_cancel("SIGINT", Timestamp(9)), None);
    assert_eq!(Journal::new(ship()).ok(3).run.handle_cancel("SIGINT", Timestamp(9)), None);
}

#[test]
fn a_ship_run_with_on_failure_hooks_runs_them_last() {
    // `lifeboat push` starts ship runs without them, but the machine takes them as any run's.
    let j = Journal::with_on_failure(ship(), false).ok(1).begin();
    j.expect(
        State::Shipping,
        Decision::RollBack,
        vec![abort(Some(UPLOAD_ID)), delete_copy(), run_on_failure(false)],
        State::RolledBack,
    );
    let j = Journal::with_on_failure(ship(), true).fail();
    assert_eq!(
        j.run.mode(),
        &Mode::Compensating { steps: vec![abort(None), run_on_failure(true)], end: State::RolledBack }
    );
}

#[test]
fn a_ship_run_takes_only_the_outcomes_of_its_shape() {
    let j = Journal::new(ship()).begin();
    assert_eq!(
        j.run.handle_outcome(Outcome::Done, Timestamp(9)),
        Err(MachineError::OutcomeMismatch { effect: "begin_upload" })
    );
    let uploaded = Outcome::CopyUploaded(copy_facts());
    assert_eq!(
        j.run.handle_outcome(uploaded.clone(), Timestamp(9)),
        Err(MachineError::OutcomeMismatch { effect: "begin_upload" })
    );
    let j = j.outcome(Outcome::UploadBegun { upload_id: UPLOAD_ID.into() }).begin();
    let begun = Outcome::UploadBegun { upload_id: "other".into() };
    assert_eq!(j.run.handle_outcome(begun, Timestamp(9)), Err(MachineError::OutcomeMismatch { effect: "upload_copy" }));
    assert_eq!(
        j.run.handle_outcome(Outcome::Done, Timestamp(9)),
        Err(MachineError::OutcomeMismatch { effect: "upload_copy" })
    );
    let j = j.outcome(uploaded.clone()).begin();
    assert_eq!(
        j.run.handle_outcome(uploaded, Timestamp(9)),
        Err(MachineError::OutcomeMismatch { effect: "record_copy" })
    );
    assert!(j.run.handle_outcome(Outcome::Failed { error: "conflict".into() }, Timestamp(9)).is_ok());
    // No other kind reports an upload.
    let j = Journal::new(backup()).begin();
    let begun = Outcome::UploadBegun { upload_id: UPLOAD_ID.into() };
    assert_eq!(j.run.handle_outcome(begun, Timestamp(9)), Err(MachineError::OutcomeMismatch { effect: "inspect" }));
    // The upload step names the id its begin reported, and nothing else replays.
    let mut events = Journal::new(ship()).ok(1).events;
    events.push(intent(Effect::UploadCopy { backup: catalogued(), target: target(), upload_id: "other".into() }));
    assert!(matches!(replay_error(&events), (3, MachineError::UnexpectedIntent { .. })));
}

/// A world with backup 1 catalogued, and the spec of its shipping to `REMOTES[remote]` as run 2.
fn shipping_world(remote: usize) -> (Sim, RunSpec) {
    let mut sim = Sim::new(World::new(&["app", "db"]));
    let backup = sim.run(backup_spec(1, BackupKind::Manual)).unwrap();
    assert_eq!(backup.state(), State::Completed);
    let spec = ship_spec(&sim.world, 1, remote).unwrap();
    (sim, spec)
}

#[test]
fn a_ship_run_in_the_world_ships_the_archive_and_catalogues_the_copy() {
    for remote in 0..REMOTES.len() {
        let (mut sim, spec) = shipping_world(remote);
        let before = sim.world.clone();
        let run = sim.run(spec.clone()).unwrap();
        assert_eq!(run.state(), State::Completed);
        sim.check_ended(&run);
        let RunSpec::Ship { target, .. } = &spec else { unreachable!() };
        let copy = &sim.world.copies[&(1, target.remote.clone())];
        assert_eq!((copy.run, copy.key.as_str()), (2, target.key.as_str()));
        assert!(sim.world.remotes[&target.remote].uploads.is_empty());
        assert_eq!(sim.world.services, before.services, "the services were never touched");
    }
}

#[test]
fn a_ship_run_crashed_while_its_completion_was_on_its_way_aborts_before_it_deletes() {
    // S3: the completion was asked for, the crash came before the answer. The store finishes it
    // after its next request unless that request aborts it: aborting first leaves nothing,
    // where deleting first would let the copy land after the delete.
    let (mut sim, spec) = shipping_world(0);
    sim.crash_at_named("step upload_copy 2", |s| s.run(spec.clone()));
    assert_eq!(sim.run(spec).err(), Some(Crashed));
    let store = &sim.world.remotes["offsite"];
    assert!(store.uploads.values().any(|u| u.completing) && store.objects.is_empty());
    let ended = sim.recover_all().unwrap();
    assert_eq!(ended[0].state(), State::RolledBack);
    sim.check_ended(&ended[0]);
    let store = &sim.world.remotes["offsite"];
    assert!(store.uploads.is_empty() && store.objects.is_empty(), "{store:?}");
}

#[test]
fn a_ship_run_crashed_after_its_completion_deletes_the_copy() {
    for (remote, point) in [(0, "step upload_copy 3"), (1, "step upload_copy 2"), (0, "step record_copy 1")] {
        let (mut sim, spec) = shipping_world(remote);
        sim.crash_at_named(point, |s| s.run(spec.clone()));
        assert_eq!(sim.run(spec).err(), Some(Crashed));
        let name = REMOTES[remote].0;
        assert_eq!(sim.world.remotes[name].objects.len(), 1, "{point}: the copy is complete");
        let ended = sim.recover_all().unwrap();
        assert_eq!(ended[0].state(), State::RolledBack, "{point}");
        sim.check_ended(&ended[0]);
        assert!(sim.world.remotes[name].objects.is_empty() && sim.world.copies.is_empty(), "{point}");
    }
}

#[test]
fn a_begin_interrupted_before_its_id_was_journaled_has_its_upload_aborted_by_the_rollback() {
    // The store opened the upload and the journal never heard its id: the abort has no id to
    // give, and finds the upload by its key (S3: ListMultipartUploads of the key, then an abort
    // of each; a directory remote: the key's partial file).
    for (remote, (name, _, _)) in REMOTES.iter().enumerate() {
        let (mut sim, spec) = shipping_world(remote);
        sim.crash_at_named("step begin_upload 1", |s| s.run(spec.clone()));
        assert_eq!(sim.run(spec).err(), Some(Crashed));
        assert_eq!(sim.world.remotes[*name].uploads.len(), 1, "{name}: the store opened it");
        assert_eq!(upload_begun(&sim.journal[&2]), None, "{name}: the journal never heard its id");
        let ended = sim.recover_all().unwrap();
        assert_eq!(ended[0].state(), State::RolledBack, "{name}");
        sim.check_ended(&ended[0]);
        let aborted_without_id = sim
            .effect_log
            .iter()
            .any(|(run, e, _)| *run == 2 && matches!(e, Effect::AbortUpload { upload_id: None, .. }));
        assert!(aborted_without_id, "{name}: {:?}", sim.effect_log);
        let store = &sim.world.remotes[*name];
        assert!(store.uploads.is_empty() && store.objects.is_empty(), "{name}: {store:?}");
    }
}

#[test]
fn a_begin_that_failed_after_the_store_opened_its_upload_has_it_aborted_by_the_rollback() {
    // The store opened the upload and its answer was lost (the begin's one micro-step done, then
    // the failure): the run rolls back and the abort, without an id, finds it by its key.
    for (remote, (name, _, _)) in REMOTES.iter().enumerate() {
        let (mut sim, spec) = shipping_world(remote);
        sim.inject(2, 0, 1);
        let run = sim.run(spec).unwrap();
        assert_eq!(run.state(), State::RolledBack, "{name}");
        assert_eq!(upload_begun(&sim.journal[&2]), None, "{name}: the journal never heard its id");
        sim.check_ended(&run);
        let store = &sim.world.remotes[*name];
        assert!(store.uploads.is_empty() && store.objects.is_empty(), "{name}: {store:?}");
    }
}

// -------------------------------------------------------------------------------------------------
// Pruning copies on remotes (docs/design.md, "Retention on remotes"): a prune, past its point of
// no return from the start.

fn nas_target(key: &str) -> CopyTarget {
    CopyTarget { remote: "nas".into(), url: "file:///mnt/nas".into(), key: key.into() }
}

fn copy_deletions() -> Vec<CopyDeletion> {
    vec![
        CopyDeletion { backup_id: 7, target: target() },
        CopyDeletion { backup_id: 8, target: nas_target("r8.tar.gz") },
    ]
}

fn prune_copies() -> RunSpec {
    RunSpec::PruneCopies { deletions: copy_deletions() }
}

/// The step of the deletion at `index`.
fn prune_copy(index: usize) -> Effect {
    let deletion = copy_deletions().remove(index);
    Effect::PruneCopy { backup_id: deletion.backup_id, target: deletion.target }
}

#[test]
fn a_prune_of_copies_prunes_each_copy_in_turn_and_is_committed_from_its_start() {
    let mut j = Journal::new(prune_copies());
    assert_eq!(j.run.kind(), RunKind::Prune);
    assert!(j.run.is_committed(), "past its point of no return before its first step");
    let mut seen = Vec::new();
    while let Some(effect) = j.run.poll_effect() {
        seen.push((j.run.state(), effect));
        j = j.ok(1);
    }
    assert_eq!(seen, [(State::Pruning, prune_copy(0)), (State::Pruning, prune_copy(1))]);
    assert_eq!(j.run.state(), State::Completed);
    assert_eq!(replay(ID, &j.events).unwrap(), j.run, "replay == live");
    assert_eq!(recover(ID, &j.events), Ok(None));
}

#[test]
fn a_prune_of_copies_with_nothing_to_delete_ends_as_it_starts() {
    let started = Run::start(RunSpec::PruneCopies { deletions: vec![] }, Timestamp(0));
    let run = Run::from_started(ID, &started).unwrap();
    assert_eq!(run.state(), State::Completed);
    assert_eq!(recover(ID, &[started]), Ok(None));
}

#[test]
fn a_prune_of_copies_interrupted_at_any_step_carries_the_interrupted_one_out_again() {
    // (steps done, the next in flight?) → the steps recovery carries out: the interrupted
    // deletion again (its transaction may have committed, its object may be gone: both are
    // no-ops the second time), then the rest.
    let cases: Vec<(usize, bool, Vec<Effect>)> = vec![
        (0, false, vec![prune_copy(0), prune_copy(1)]),
        (0, true, vec![prune_copy(0), prune_copy(1)]),
        (1, false, vec![prune_copy(1)]),
        (1, true, vec![prune_copy(1)]),
    ];
    for (done, in_flight, steps) in cases {
        let mut j = Journal::new(prune_copies()).ok(done);
        if in_flight {
            j = j.begin();
        }
        j.expect(State::Pruning, Decision::Resume, steps.clone(), State::Completed);
        // Recovery interrupted right after its decision, or within its first step: the same.
        let j = j.recovering();
        j.expect(State::Pruning, Decision::Resume, steps.clone(), State::Completed);
        let j = j.begin();
        j.expect(State::Pruning, Decision::Resume, steps, State::Completed);
    }
    // Never a rollback: a journal that says so does not replay.
    let mut events = Journal::new(prune_copies()).begin().events;
    events.push(Event::Recovering { at: Timestamp(9), decision: Decision::RollBack });
    assert_eq!(
        replay_error(&events),
        (2, MachineError::WrongDecision { expected: Decision::Resume, got: Decision::RollBack })
    );
}

#[test]
fn a_prune_of_copies_whose_step_fails_retries_it_once_then_fails() {
    for (done, steps) in [(0, vec![prune_copy(0), prune_copy(1)]), (1, vec![prune_copy(1)])] {
        // The failed deletion and the rest become the steps that finish the run.
        let j = Journal::new(prune_copies()).ok(done).fail();
        assert_eq!(j.run.mode(), &Mode::Compensating { steps: steps.clone(), end: State::Completed }, "{done}");
        assert_eq!(j.run.state(), State::Pruning, "finishing, not rolling back");
        assert_eq!(j.run.failures().len(), 1);
        assert_eq!((&j.run.failures()[0].effect, j.run.failures()[0].state), (&steps[0], State::Pruning));
        // Interrupted before finishing, or within its first step: the same steps.
        j.expect(State::Pruning, Decision::ContinueFinishing, steps.clone(), State::Completed);
        let j = j.begin();
        j.expect(State::Pruning, Decision::ContinueFinishing, steps.clone(), State::Completed);
        // The step carried out again fails: it is retried once more (rule 5: three attempts in
        // all), and a success then finishes the run.
        let j = Journal::new(prune_copies()).ok(done).fail().fail();
        assert_eq!(j.run.poll_effect().as_ref(), steps.first(), "retried");
        assert_eq!(j.clone_journal().ok(steps.len()).run.state(), State::Completed);
        // A second failure of the settling step ends the run failed, with what was deleted
        // deleted.
        let j = j.fail();
        assert_eq!(j.run.state(), State::Failed);
        assert_eq!(j.run.failures().len(), 3);
        assert_eq!(recover(ID, &j.events), Ok(None));
    }
    // With an `on_failure` hook (`lifeboat prune` starts the run with them): it runs once the
    // run fails, never when it finishes.
    let j = Journal::with_on_failure(prune_copies(), false).fail().fail().fail();
    assert_eq!(j.run.mode(), &Mode::Compensating { steps: vec![run_on_failure(false)], end: State::Failed });
    assert_eq!(j.ok(1).run.state(), State::Failed);
    let j = Journal::with_on_failure(prune_copies(), false).fail().ok(2);
    assert_eq!(j.run.state(), State::Completed);
}

#[test]
fn a_prune_of_copies_takes_no_cancel() {
    let at = Timestamp(9);
    // Past its point of no return from the start, between its steps, and while finishing.
    assert_eq!(Journal::new(prune_copies()).run.handle_cancel("SIGINT", at), None);
    assert_eq!(Journal::new(prune_copies()).ok(1).run.handle_cancel("SIGTERM", at), None);
    assert_eq!(Journal::new(prune_copies()).fail().run.handle_cancel("SIGINT", at), None);
    // And a journal that says otherwise does not replay.
    let mut events = Journal::new(prune_copies()).events;
    events.push(Event::Cancelled { at, reason: "SIGINT".into() });
    assert_eq!(replay_error(&events), (1, MachineError::CancelNotAccepted));
}

#[test]
fn a_prune_of_copies_takes_only_done_or_failed() {
    let j = Journal::new(prune_copies()).begin();
    for outcome in [
        Outcome::UploadBegun { upload_id: UPLOAD_ID.into() },
        Outcome::CopyUploaded(copy_facts()),
        Outcome::Started { services: vec![] },
        Outcome::Inspected { running: vec![] },
    ] {
        assert_eq!(
            j.run.handle_outcome(outcome, Timestamp(9)),
            Err(MachineError::OutcomeMismatch { effect: "prune_copy" })
        );
    }
    assert!(j.run.handle_outcome(Outcome::Done, Timestamp(9)).is_ok());
    assert!(j.run.handle_outcome(Outcome::Failed { error: "403".into() }, Timestamp(9)).is_ok());
    // The steps are the spec's deletions, in order, and nothing else replays.
    let mut events = Journal::new(prune_copies()).events;
    events.push(intent(prune_copy(1)));
    assert!(matches!(replay_error(&events), (1, MachineError::UnexpectedIntent { .. })));
    let mut events = Journal::new(prune_copies()).events;
    events.push(intent(Effect::DeleteCopy { backup_id: 7, target: target() }));
    assert!(matches!(replay_error(&events), (1, MachineError::UnexpectedIntent { .. })));
}

/// A world with backup 1 shipped to both remotes (runs 2 and 3), and the spec of the prune of
/// both copies as run 4.
fn pruning_world() -> (Sim, RunSpec) {
    let (mut sim, spec) = shipping_world(0);
    assert_eq!(sim.run(spec).unwrap().state(), State::Completed);
    let spec = ship_spec(&sim.world, 1, 1).unwrap();
    assert_eq!(sim.run(spec).unwrap().state(), State::Completed);
    let deletions = REMOTES
        .iter()
        .map(|(name, url, _)| {
            let copy = &sim.world.copies[&(1, name.to_string())];
            CopyDeletion {
                backup_id: 1,
                target: CopyTarget { remote: name.to_string(), url: url.to_string(), key: copy.key.clone() },
            }
        })
        .collect();
    (sim, RunSpec::PruneCopies { deletions })
}

/// Each copy `spec` deletes: its row gone, its pair noted pruned, its object gone.
fn assert_pruned(sim: &Sim, spec: &RunSpec) {
    let RunSpec::PruneCopies { deletions } = spec else { unreachable!() };
    for d in deletions {
        let key = (d.backup_id, d.target.remote.clone());
        assert!(!sim.world.copies.contains_key(&key), "{key:?} is still catalogued");
        assert!(sim.world.copies_pruned.contains(&key), "{key:?} is not noted pruned");
        assert!(!sim.world.remotes[&d.target.remote].objects.contains_key(&d.target.key), "{key:?}: the object");
    }
}

#[test]
fn a_prune_of_copies_in_the_world_removes_the_rows_notes_the_pairs_and_deletes_the_objects() {
    let (mut sim, spec) = pruning_world();
    let before = sim.world.clone();
    let run = sim.run(spec.clone()).unwrap();
    assert_eq!(run.state(), State::Completed);
    sim.check_ended(&run);
    assert_pruned(&sim, &spec);
    assert_eq!(sim.world.services, before.services, "the services were never touched");
    assert_eq!(sim.world.catalog, before.catalog, "the local backup stays");
}

#[test]
fn a_prune_of_copies_crashed_between_its_transaction_and_the_delete_deletes_the_object_on_recovery() {
    for nth in 0..2 {
        let (mut sim, spec) = pruning_world();
        sim.crash_at_nth_named("step prune_copy 1", nth, |s| s.run(spec.clone()));
        assert_eq!(sim.run(spec.clone()).err(), Some(Crashed));
        // The row is gone and the pair noted, the object is still there: an object nothing
        // catalogues, never a catalogued copy without its object.
        let RunSpec::PruneCopies { deletions } = &spec else { unreachable!() };
        let d = &deletions[nth];
        let key = (1, d.target.remote.clone());
        assert!(!sim.world.copies.contains_key(&key) && sim.world.copies_pruned.contains(&key));
        assert!(sim.world.remotes[&d.target.remote].objects.contains_key(&d.target.key));
        let ended = sim.recover_all().unwrap();
        assert_eq!(ended[0].state(), State::Completed, "{nth}");
        sim.check_ended(&ended[0]);
        assert_pruned(&sim, &spec);
        let again = sim.clone();
        assert!(sim.recover_all().unwrap().is_empty());
        assert_eq!((&sim.world, &sim.journal), (&again.world, &again.journal), "a second recovery acted");
    }
}

#[test]
fn a_prune_of_copies_whose_delete_fails_carries_the_step_out_again() {
    // The first deletion fails after its transaction (the remote refused the delete, say): the
    // step is carried out again, its transaction a no-op, and the object goes.
    let (mut sim, spec) = pruning_world();
    sim.inject(4, 0, 1);
    let run = sim.run(spec.clone()).unwrap();
    assert_eq!((run.state(), run.failures().len()), (State::Completed, 1));
    sim.check_ended(&run);
    assert_pruned(&sim, &spec);
    // Failing every time: three attempts, then `Failed`, the row gone and the object left.
    let (mut sim, spec) = pruning_world();
    for nth in 0..3 {
        sim.inject(4, nth, 1);
    }
    let run = sim.run(spec).unwrap();
    assert_eq!((run.state(), run.failures().len()), (State::Failed, 3));
    sim.check_ended(&run);
    assert!(sim.world.copies_pruned.contains(&(1, "offsite".into())));
    assert!(!sim.world.copies.contains_key(&(1, "offsite".into())));
    assert_eq!(sim.world.remotes["offsite"].objects.len(), 1, "the object is the operator's to delete");
}

#[test]
#[should_panic(expected = "which its remote pruned")]
fn the_model_never_ships_a_pruned_copy_again() {
    let (mut sim, spec) = pruning_world();
    assert_eq!(sim.run(spec).unwrap().state(), State::Completed);
    // What `runs/ship.rs` never starts: the pair is pruned.
    let again = ship_spec(&sim.world, 1, 0).unwrap();
    let _ = sim.run(again);
}
