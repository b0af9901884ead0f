//! The steps of each run kind, what undoes them, and the recovery decision.
//!
//! Everything here is a function of a run's spec and the facts its outcomes reported, so the live
//! executor, a replay and `recover` all compute the same steps.

use crate::run::{MachineError, Mode, Run};
use crate::types::*;

/// A forward step of a run (a prune's steps are its deletions).
/// Steps, not states, name a position in a run because a state (Checking, Verifying) can hold
/// more than one step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    VerifyArchive,
    Inspect,
    Stop,
    Write,
    Record,
    Deploy,
    /// The upgraded stack up, whatever services its files now name.
    UpStack,
    VerifyStack,
    CommitDeploy,
    RestoreData,
    /// The services that were running up again.
    Start,
    Verify,
    CommitData,
    /// The volumes and deployment files of a restore onto a new host.
    Provision,
    /// The run's hook at this index (`Run::hooks`).
    Hook(usize),
    /// A snapshot backup's sync of its mirror with the services running.
    Presync,
    /// A snapshot backup's sync of its mirror with the services stopped.
    Snapshot,
    /// A shipping run's multipart upload opened.
    BeginUpload,
    /// A shipping run's copy sent and completed.
    Upload,
    /// A shipping run's copy catalogued.
    RecordCopy,
}

/// The forward steps of a kind, in order, and the one whose success takes a run past its point of
/// no return: from there, a failure or crash finishes the run instead of undoing it.
///
/// A backup's, upgrade's or restore's hooks come from its `Inspect` outcome: `before_*` ones after `Inspect`
/// (nothing is stopped or changed yet), `after_*` ones after the last forward step (the services
/// are up again; a restore's data is committed). Steps up to `Inspect`
/// never move, so the list is the same whenever it is asked.
fn steps(run: &Run) -> Option<(Vec<Step>, Step)> {
    use Step::*;
    Some(match run.kind() {
        // The archive is recorded: undoing would throw away a good backup.
        // As a backup: the archive is recorded. The services are back before the archive is
        // written, so undoing after that discards the archive and leaves them alone.
        RunKind::Backup if matches!(run.spec(), RunSpec::SnapshotBackup { .. }) => {
            (with_hooks(run, &[Inspect], &[Presync, Stop, Snapshot, Start, Write, Record]), Record)
        }
        RunKind::Backup => (with_hooks(run, &[Inspect], &[Stop, Write, Record, Start]), Record),
        // The new version was verified healthy.
        RunKind::Upgrade => (
            with_hooks(run, &[Inspect], &[Stop, Write, Record, Deploy, UpStack, VerifyStack, CommitDeploy]),
            VerifyStack,
        ),
        // The restored data was verified with the services up.
        RunKind::Restore => {
            (with_hooks(run, &[VerifyArchive, Inspect], &[Stop, RestoreData, Start, Verify, CommitData]), Verify)
        }
        RunKind::Rollback => (vec![VerifyArchive, Inspect, Stop, RestoreData, Start, Verify, CommitData], Verify),
        // A prune's steps are its deletions (of backups, or of copies on remotes), and it is past
        // its point of no return from the start: a deleted backup or copy cannot be undeleted,
        // and every deletion is idempotent, so an interrupted prune always finishes.
        RunKind::Prune => return None,
        // As a restore: the data was verified running.
        RunKind::RestoreNew => (vec![VerifyArchive, Provision, RestoreData, UpStack, Verify, CommitData], Verify),
        // As an upgrade, without the backup.
        RunKind::FirstDeploy => (vec![Deploy, UpStack, VerifyStack, CommitDeploy], VerifyStack),
        // The copy is catalogued: from then on it is a copy the operator may count on.
        RunKind::Ship => (vec![BeginUpload, Upload, RecordCopy], RecordCopy),
    })
}

/// `head`, the run's before hooks, `rest`, its after hooks: the steps of a kind with hooks (a
/// backup, an upgrade, a restore). The hooks are known once `Inspect` (the last of `head`) reported them.
fn with_hooks(run: &Run, head: &[Step], rest: &[Step]) -> Vec<Step> {
    let hooks = run.hooks();
    let at = |before: bool| (0..hooks.len()).filter(move |&i| hooks[i].point.is_before() == before).map(Step::Hook);
    let mut list = head.to_vec();
    list.extend(at(true));
    list.extend_from_slice(rest);
    list.extend(at(false));
    list
}

/// Whether a run whose first `done` forward steps succeeded is past its point of no return.
pub(crate) fn is_committed(run: &Run, done: usize) -> bool {
    steps(run).is_none_or(|(list, committed_by)| list.iter().take(done).any(|&step| step == committed_by))
}

/// The forward step at `index`, or `None` past the last one.
pub(crate) fn forward_step(run: &Run, index: usize) -> Result<Option<(State, Effect)>, MachineError> {
    if let RunSpec::Prune { deletions } = run.spec() {
        return Ok(deletions
            .get(index)
            .map(|backup| (State::Pruning, Effect::DeleteBackup { backup: backup.clone() })));
    }
    if let RunSpec::PruneCopies { deletions } = run.spec() {
        return Ok(deletions.get(index).map(|copy| {
            (State::Pruning, Effect::PruneCopy { backup_id: copy.backup_id, target: copy.target.clone() })
        }));
    }
    match steps(run).and_then(|(list, _)| list.get(index).copied()) {
        Some(step) => Ok(Some((step.state(run), step.effect(run)?))),
        None => Ok(None),
    }
}

impl Step {
    fn state(self, run: &Run) -> State {
        match self {
            // Before: nothing is stopped yet; after: the services are up again.
            Step::Hook(i) if run.hooks().get(i).is_some_and(|h| h.point.is_before()) => State::Checking,
            Step::Hook(_) => State::Verifying,
            Step::VerifyArchive | Step::Inspect => State::Checking,
            Step::Stop => State::Stopping,
            Step::Presync => State::Presyncing,
            Step::Snapshot => State::Snapshotting,
            Step::Write => State::Archiving,
            Step::Record => State::Recording,
            Step::Deploy | Step::Provision => State::Deploying,
            Step::RestoreData => State::Restoring,
            Step::UpStack | Step::Start => State::Restarting,
            Step::VerifyStack | Step::CommitDeploy | Step::Verify | Step::CommitData => State::Verifying,
            Step::BeginUpload | Step::Upload => State::Shipping,
            Step::RecordCopy => State::Recording,
        }
    }

    /// The effect of this step in `run`, from its spec and the facts its outcomes reported.
    fn effect(self, run: &Run) -> Result<Effect, MachineError> {
        let rollback = run.kind() == RunKind::Rollback;
        Ok(match (self, run.spec()) {
            (
                Step::VerifyArchive,
                RunSpec::Restore { backup } | RunSpec::Rollback { backup } | RunSpec::RestoreNew { backup, .. },
            ) => Effect::VerifyArchive { backup: backup.clone() },
            (Step::Provision, RunSpec::RestoreNew { backup, provision }) => {
                Effect::Provision { backup: backup.clone(), provision: provision.clone() }
            }
            (Step::Inspect, _) => Effect::Inspect,
            (Step::Presync, RunSpec::SnapshotBackup { mirror, .. }) => {
                Effect::SyncMirror { mirror: mirror.clone(), stopped: false }
            }
            (Step::Snapshot, RunSpec::SnapshotBackup { mirror, .. }) => {
                Effect::SyncMirror { mirror: mirror.clone(), stopped: true }
            }
            (Step::Stop, _) => Effect::StopServices { services: running(run)? },
            (
                Step::Write,
                RunSpec::Backup { archive_path, .. }
                | RunSpec::Upgrade { archive_path, .. }
                | RunSpec::SnapshotBackup { archive_path, .. },
            ) => Effect::WriteArchive { path: archive_path.clone() },
            (
                Step::Record,
                RunSpec::Backup { backup_kind, note, .. } | RunSpec::SnapshotBackup { backup_kind, note, .. },
            ) => Effect::RecordBackup { archive: archive(run)?, backup_kind: *backup_kind, note: note.clone() },
            (Step::Record, _) => {
                Effect::RecordBackup { archive: archive(run)?, backup_kind: BackupKind::PreUpgrade, note: None }
            }
            (Step::Deploy, RunSpec::Upgrade { package, .. } | RunSpec::FirstDeploy { package }) => {
                Effect::Deploy { package: package.clone() }
            }
            (Step::UpStack, RunSpec::RestoreNew { provision, .. }) => {
                Effect::ComposeUp { services: Some(provision.services.clone()) }
            }
            (Step::UpStack, _) => Effect::ComposeUp { services: None },
            (Step::VerifyStack, _) => Effect::VerifyServices { services: None },
            (Step::CommitDeploy, RunSpec::Upgrade { package, .. } | RunSpec::FirstDeploy { package }) => {
                Effect::CommitDeploy { version: package.version.clone() }
            }
            (Step::RestoreData, RunSpec::Restore { backup } | RunSpec::Rollback { backup }) => {
                Effect::RestoreData { backup: backup.clone(), deployment: rollback }
            }
            (Step::RestoreData, RunSpec::RestoreNew { backup, .. }) => {
                Effect::RestoreData { backup: backup.clone(), deployment: false }
            }
            (Step::Start, _) => start_effect(rollback, running(run)?),
            (Step::Verify, RunSpec::RestoreNew { provision, .. }) => {
                Effect::VerifyServices { services: Some(provision.services.clone()) }
            }
            (Step::Verify, _) => Effect::VerifyServices { services: Some(running(run)?) },
            (Step::CommitData, _) => Effect::CommitData,
            (Step::BeginUpload, RunSpec::Ship { target, .. }) => Effect::BeginUpload { target: target.clone() },
            (Step::Upload, RunSpec::Ship { backup, target }) => {
                Effect::UploadCopy { backup: backup.clone(), target: target.clone(), upload_id: upload_id(run)? }
            }
            (Step::RecordCopy, RunSpec::Ship { backup, target }) => Effect::RecordCopy {
                backup_id: backup.backup_id,
                target: target.clone(),
                copy: run.copy().cloned().ok_or(MachineError::MissingFact("the uploaded copy"))?,
            },
            (Step::Hook(i), _) => {
                Effect::RunHook { hook: run.hooks().get(i).cloned().ok_or(MachineError::MissingFact("hooks"))? }
            }
            (
                Step::VerifyArchive
                | Step::Write
                | Step::Deploy
                | Step::CommitDeploy
                | Step::RestoreData
                | Step::Provision
                | Step::Presync
                | Step::Snapshot
                | Step::BeginUpload
                | Step::Upload
                | Step::RecordCopy,
                _,
            ) => {
                // `steps` lists these only for kinds whose spec holds what they need; an error,
                // not a panic, should that ever change.
                return Err(MachineError::MissingFact("the spec a step needs"));
            }
        })
    }
}

/// How services come back: `docker start` of the existing containers, or, when deployment files
/// changed under them, the compose command so the containers match the files again.
fn start_effect(deployment_changed: bool, services: Vec<String>) -> Effect {
    if deployment_changed { Effect::ComposeUp { services: Some(services) } } else { Effect::StartServices { services } }
}

fn upload_id(run: &Run) -> Result<String, MachineError> {
    run.upload_id().map(str::to_owned).ok_or(MachineError::MissingFact("the upload id"))
}

fn archive(run: &Run) -> Result<ArchiveFacts, MachineError> {
    run.archive().cloned().ok_or(MachineError::MissingFact("archive facts"))
}

/// What to do after a forward step failed or the run was interrupted.
///
/// `begun` forward steps had their intent journaled; the first `done` of them succeeded. Returns
/// the steps that settle the run and the terminal state they lead to.
pub(crate) fn settle(run: &Run, begun: usize, done: usize) -> Result<(Vec<Effect>, State), MachineError> {
    if is_committed(run, done) {
        // Finish: the remaining forward steps, from the one that failed or was interrupted; but a
        // hook that began is never carried out again unless it is idempotent (it may have run).
        let mut steps = Vec::new();
        let mut index = done;
        if begun > done
            && let Some((_, Effect::RunHook { hook })) = forward_step(run, done)?
            && !hook.idempotent
        {
            index += 1;
        }
        while let Some((_, effect)) = forward_step(run, index)? {
            steps.push(effect);
            index += 1;
        }
        return Ok((steps, State::Completed));
    }
    // Undo, asking by name which forward steps began and which succeeded.
    let list = steps(run).map(|(list, _)| list).unwrap_or_default();
    let began = |step| list.iter().take(begun).any(|&s| s == step);
    let succeeded = |step| list.iter().take(done).any(|&s| s == step);
    let mut steps = Vec::new();
    match run.spec() {
        RunSpec::Upgrade { .. } if began(Step::Deploy) => {
            // Deploying began: put the old files back and, if the new stack ran, the old data.
            let new_stack_ran = began(Step::UpStack);
            let running = running(run)?;
            steps.push(Effect::StopStack);
            steps.push(Effect::RestoreDeployment);
            if new_stack_ran {
                let facts = archive(run)?;
                let backup = BackupRef {
                    backup_id: run.id(),
                    path: facts.path,
                    sha256: facts.sha256,
                    size_bytes: facts.size_bytes,
                };
                steps.push(Effect::RestoreData { backup, deployment: false });
            }
            steps.push(Effect::ComposeUp { services: Some(running.clone()) });
            steps.push(Effect::VerifyServices { services: Some(running) });
            if new_stack_ran {
                steps.push(Effect::CommitData);
            }
        }
        RunSpec::Backup { archive_path, .. } | RunSpec::Upgrade { archive_path, .. } => {
            // Nothing deployed: undo the backup. A recorded archive (an upgrade's pre-upgrade
            // backup) is a good backup and stays.
            if began(Step::Write) && !succeeded(Step::Record) {
                steps.push(Effect::DiscardArchive { path: archive_path.clone() });
            }
            if began(Step::Stop) {
                steps.extend(start_again(run, succeeded(Step::Stop))?);
            }
        }
        // Past its point of no return from the start: handled above.
        RunSpec::Prune { .. } | RunSpec::PruneCopies { .. } => {}
        RunSpec::SnapshotBackup { archive_path, .. } => {
            // The archive is not recorded: discard it. Start what was stopped unless it is back
            // already; a run interrupted while archiving leaves the services alone. The mirror
            // stays, and the next run's presync corrects whatever it holds.
            if began(Step::Write) {
                steps.push(Effect::DiscardArchive { path: archive_path.clone() });
            }
            if began(Step::Stop) && !succeeded(Step::Start) {
                steps.extend(start_again(run, succeeded(Step::Stop))?);
            }
        }
        RunSpec::Ship { backup, target } => {
            // The copy is not catalogued: abort the upload first, then take away whatever of it
            // reached the store and the catalog entry an interrupted record may have written. In
            // that order because a completion the store was asked for may land after the client
            // gave up on it (a timeout, a crash): aborted first, it either never lands or has
            // landed and the delete removes it; deleted first, it could land after the delete,
            // and the abort would then find nothing to abort. A begin whose id never reached the
            // journal leaves an upload only a directory remote can name (by its key).
            if began(Step::BeginUpload) {
                let upload_id = run.upload_id().map(str::to_owned);
                steps.push(Effect::AbortUpload { target: target.clone(), upload_id });
            }
            if began(Step::Upload) {
                steps.push(Effect::DeleteCopy { backup_id: backup.backup_id, target: target.clone() });
            }
        }
        RunSpec::FirstDeploy { .. } => {
            // Nothing ran before: stop what came up, and take the package's files away again.
            if began(Step::UpStack) {
                steps.push(Effect::StopStack);
            }
            if began(Step::Deploy) {
                steps.push(Effect::RestoreDeployment);
            }
        }
        RunSpec::RestoreNew { provision, .. } => {
            // Stop what came up, put back what the swap moved aside (empty directories, or a
            // volume the operator named to be replaced), then remove exactly what the run created.
            if began(Step::UpStack) {
                steps.push(Effect::StopStack);
            }
            if began(Step::RestoreData) {
                steps.push(Effect::RevertData);
            }
            if began(Step::Provision) {
                steps.push(Effect::Unprovision { provision: provision.clone() });
            }
        }
        RunSpec::Restore { .. } | RunSpec::Rollback { .. } => {
            let rollback = run.kind() == RunKind::Rollback;
            if began(Step::RestoreData) {
                let running = running(run)?;
                if began(Step::Start) {
                    steps.push(Effect::StopStack);
                }
                steps.push(Effect::RevertData);
                steps.push(start_effect(rollback, running.clone()));
                steps.push(Effect::VerifyServices { services: Some(running) });
            } else if began(Step::Stop) {
                steps.extend(start_again(run, succeeded(Step::Stop))?);
            }
        }
    }
    // Last, with everything put back: the hooks that tell someone the run failed.
    steps.extend(run.failure_hooks().iter().map(|hook| Effect::RunHook { hook: hook.clone() }));
    Ok((steps, State::RolledBack))
}

/// The steps that start the services a run stopped (or began to stop) again.
///
/// A stop step that began and did not succeed (interrupted by a crash, or failed midway) may have
/// left a container on its way down: Docker carries on with a stop that lifeboat asked for even
/// after lifeboat died or lost the connection, and the container reports "running" until it
/// exits, so a start would find it running and leave it to exit. The stop is therefore finished
/// first (stopping again waits for a stop in progress and is a no-op on a stopped container), and
/// only then are the services started. See "Recovery rules" in ARCHITECTURE.md.
fn start_again(run: &Run, stop_finished: bool) -> Result<Vec<Effect>, MachineError> {
    let services = running(run)?;
    let mut steps = Vec::with_capacity(2);
    if !stop_finished {
        steps.push(Effect::StopServices { services: services.clone() });
    }
    steps.push(Effect::StartServices { services });
    Ok(steps)
}

fn running(run: &Run) -> Result<Vec<String>, MachineError> {
    run.running().map(<[String]>::to_vec).ok_or(MachineError::MissingFact("running services"))
}

/// Folds a run's events into the run they describe.
///
/// The first event must be `Started`. Fails on the first event the machine rejects, naming its
/// index; a journal whose events replay cleanly describes a run the machine could really have had.
pub fn replay(id: RunId, events: &[Event]) -> Result<Run, ReplayError> {
    let (first, rest) = events.split_first().ok_or(ReplayError { index: 0, error: MachineError::NoEvents })?;
    let mut run = Run::from_started(id, first).map_err(|error| ReplayError { index: 0, error })?;
    for (i, event) in rest.iter().enumerate() {
        run.apply(event).map_err(|error| ReplayError { index: i + 1, error })?;
    }
    Ok(run)
}

/// A replay that stopped at an event the machine rejects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayError {
    /// The position of the rejected event in the run's event list (0 is `Started`).
    pub index: usize,
    pub error: MachineError,
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {}: {}", self.index, self.error)
    }
}

impl std::error::Error for ReplayError {}

/// What `lifeboat recover` will do with one interrupted run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub run_id: RunId,
    pub kind: RunKind,
    /// The state the run was in when it was interrupted.
    pub interrupted_in: State,
    pub decision: Decision,
    /// The effects recovery will carry out, in order (an interrupted effect is carried out again).
    pub steps: Vec<Effect>,
    /// The state the run ends in if every step succeeds.
    pub ends_as: State,
}

impl RecoveryPlan {
    /// The event that starts carrying out this plan; journal it, then apply it to the run.
    pub fn event(&self, at: Timestamp) -> Event {
        Event::Recovering { at, decision: self.decision }
    }
}

/// Decides what to do with a run, from its events alone. `Ok(None)` when the run already ended.
///
/// The rules (argued in ARCHITECTURE.md):
/// - a run already rolling back carries on rolling back, redoing the interrupted step;
/// - a run past its point of no return (backup recorded; upgrade, restore or rollback verified)
///   resumes, redoing the interrupted step;
/// - a prune (of backups, or of copies on remotes) is past it from the start: it always resumes,
///   redoing the interrupted deletion;
/// - any other run rolls back: a backup deletes its unrecorded archive and starts the services it
///   stopped; an upgrade that began deploying also puts back the old files, data and stack; a ship
///   run whose copy is not recorded aborts its upload, then deletes whatever of the copy reached
///   the store (and a catalog entry its interrupted record may have written).
pub fn recover(id: RunId, events: &[Event]) -> Result<Option<RecoveryPlan>, ReplayError> {
    let run = replay(id, events)?;
    run.recovery_plan().map_err(|error| ReplayError { index: events.len(), error })
}

impl Run {
    /// The recovery plan for this run as it stands, or `None` if it already ended.
    pub fn recovery_plan(&self) -> Result<Option<RecoveryPlan>, MachineError> {
        let (decision, steps, ends_as) = match self.mode() {
            Mode::Ended(_) => return Ok(None),
            Mode::Compensating { steps, end } => {
                // Settling steps that finish a run (past its point of no return) are not a rollback.
                let decision =
                    if *end == State::Completed { Decision::ContinueFinishing } else { Decision::ContinueRollBack };
                // An interrupted hook that may not run twice is passed over (`Run::apply_recovering`).
                let from = (self.cursor() + usize::from(self.in_flight_hook_once())).min(steps.len());
                (decision, steps[from..].to_vec(), *end)
            }
            Mode::Forward => {
                let done = self.cursor();
                let begun = done + usize::from(self.in_flight().is_some());
                let decision = if is_committed(self, done) { Decision::Resume } else { Decision::RollBack };
                let (steps, end) = settle(self, begun, done)?;
                (decision, steps, end)
            }
        };
        Ok(Some(RecoveryPlan {
            run_id: self.id(),
            kind: self.kind(),
            interrupted_in: self.state(),
            decision,
            steps,
            ends_as,
        }))
    }
}
