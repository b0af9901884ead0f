//! [`Run`]: one run (backup, upgrade, restore, prune, ship, ...), as the fold of its events.

use crate::plan::{forward_step, is_committed, settle};
use crate::types::*;
use std::fmt;

/// Where a run is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Carrying out the forward steps of its kind.
    Forward,
    /// Settling after a failure or a recovery: carrying out `steps` in order, then ending in `end`.
    /// Undoing steps end `RolledBack`; finishing steps past the point of no return end `Completed`.
    Compensating { steps: Vec<Effect>, end: State },
    /// Ended in a terminal state; no more events are accepted.
    Ended(State),
}

/// A failed effect, as the run remembers it for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The state the run was in when the effect failed.
    pub state: State,
    pub effect: Effect,
    pub error: String,
}

/// An event the machine refuses. Replaying a journal that produces one means the journal does not
/// describe a run the machine could have had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineError {
    /// A run needs at least its `Started` event.
    NoEvents,
    /// The first event of a run must be `Started`.
    NotStarted,
    /// A second `Started` event in the same run.
    StartedTwice,
    /// An event arrived after the run ended.
    AfterEnd { state: State },
    /// An `Intent` arrived while another effect's outcome was still missing.
    IntentWhileInFlight,
    /// An `Intent` asked for a different effect than the machine's next step.
    UnexpectedIntent { expected: Option<Box<Effect>>, got: Box<Effect> },
    /// An `Outcome` arrived with no effect in flight.
    OutcomeWithoutIntent,
    /// An `Outcome` of the wrong shape for its effect (say, `ArchiveWritten` for `StopServices`).
    OutcomeMismatch { effect: &'static str },
    /// A `Recovering` event whose decision differs from the one the rules give.
    WrongDecision { expected: Decision, got: Decision },
    /// A step needs a fact that an earlier outcome should have reported.
    MissingFact(&'static str),
    /// A `Cancelled` event where a cancel changes nothing: an effect in flight, the run settling
    /// already, or past its point of no return.
    CancelNotAccepted,
    /// A hook reported where its point cannot run: an `on_failure` hook among those `Inspect`
    /// reported, or another point among a run's `on_failure` hooks.
    MisplacedHook { point: HookPoint },
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineError::NoEvents => write!(f, "the run has no events"),
            MachineError::NotStarted => write!(f, "the first event of a run must be 'started'"),
            MachineError::StartedTwice => write!(f, "a second 'started' event"),
            MachineError::AfterEnd { state } => write!(f, "an event after the run ended {state}"),
            MachineError::IntentWhileInFlight => write!(f, "an intent while another effect's outcome is missing"),
            MachineError::UnexpectedIntent { expected: Some(expected), got } => {
                write!(f, "intent {} where the next step is {}", got.name(), expected.name())
            }
            MachineError::UnexpectedIntent { expected: None, got } => {
                write!(f, "intent {} where no step remains", got.name())
            }
            MachineError::OutcomeWithoutIntent => write!(f, "an outcome with no effect in flight"),
            MachineError::OutcomeMismatch { effect } => write!(f, "an outcome of the wrong kind for {effect}"),
            MachineError::WrongDecision { expected, got } => {
                write!(f, "recovery decision {} where the rules give {}", got.as_str(), expected.as_str())
            }
            MachineError::MissingFact(fact) => write!(f, "a step needs {fact}, which no outcome reported"),
            MachineError::CancelNotAccepted => {
                write!(f, "a cancel while an effect is in flight, the run settles or is past its point of no return")
            }
            MachineError::MisplacedHook { point } => write!(f, "a {} hook where it cannot run", point.as_str()),
        }
    }
}

impl std::error::Error for MachineError {}

/// One run, as the fold of its journaled events. See the crate docs for the call order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    id: RunId,
    spec: RunSpec,
    started_at: Timestamp,
    last_event_at: Timestamp,
    mode: Mode,
    /// The next step to begin (or the one in flight) in the current list: the forward steps of the
    /// kind in `Forward` mode, the compensation steps in `Compensating` mode. In `Forward` mode it
    /// is also the number of forward steps that succeeded.
    cursor: usize,
    /// The effect whose intent is journaled and whose outcome is not (yet).
    in_flight: Option<Effect>,
    /// Whether the settling step at `cursor` already failed once (it is retried once).
    retried: bool,
    running: Option<Vec<String>>,
    archive: Option<ArchiveFacts>,
    archive_details: Option<ArchiveDetails>,
    failures: Vec<Failure>,
    /// Why the operator cancelled the run, if they did (see [`Run::handle_cancel`]).
    cancelled: Option<String>,
    /// The run's hooks, once `Inspect` reported them.
    hooks: Vec<Hook>,
    /// The `on_failure` hooks, from the start (`Event::StartedWith`).
    failure_hooks: Vec<Hook>,
    /// `after_*` hooks that exited non-zero: reported, never undoing the run.
    hook_failures: Vec<Failure>,
    /// A shipping run's upload, once `BeginUpload` opened it.
    upload_id: Option<String>,
    /// A shipping run's copy, once `UploadCopy` stored it.
    copy: Option<CopyFacts>,
}

impl Run {
    /// The first event of a new run. Journal it, then build the run with [`Run::from_started`].
    pub fn start(spec: RunSpec, at: Timestamp) -> Event {
        Event::Started { at, spec }
    }

    /// As [`Run::start`], for a run that runs `on_failure` hooks should it roll back or fail.
    pub fn start_with(spec: RunSpec, on_failure: Vec<Hook>, at: Timestamp) -> Event {
        if on_failure.is_empty() { Event::Started { at, spec } } else { Event::StartedWith { at, spec, on_failure } }
    }

    /// The run that a `Started` event begins.
    pub fn from_started(id: RunId, event: &Event) -> Result<Run, MachineError> {
        let (at, spec, failure_hooks) = match event {
            Event::Started { at, spec } => (at, spec, Vec::new()),
            Event::StartedWith { at, spec, on_failure } => (at, spec, on_failure.clone()),
            _ => return Err(MachineError::NotStarted),
        };
        if let Some(hook) = failure_hooks.iter().find(|hook| hook.point != HookPoint::OnFailure) {
            return Err(MachineError::MisplacedHook { point: hook.point });
        }
        let mut run = Run {
            id,
            spec: spec.clone(),
            started_at: *at,
            last_event_at: *at,
            mode: Mode::Forward,
            cursor: 0,
            in_flight: None,
            retried: false,
            running: None,
            archive: None,
            archive_details: None,
            failures: Vec::new(),
            cancelled: None,
            hooks: Vec::new(),
            failure_hooks,
            hook_failures: Vec::new(),
            upload_id: None,
            copy: None,
        };
        // A run with no step at all (a prune with nothing to delete) ends as it starts.
        run.end_if_done()?;
        Ok(run)
    }

    pub fn id(&self) -> RunId {
        self.id
    }

    pub fn kind(&self) -> RunKind {
        self.spec.kind()
    }

    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    pub fn last_event_at(&self) -> Timestamp {
        self.last_event_at
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    /// The effect whose outcome has not been journaled: after a crash, it may or may not have
    /// happened.
    pub fn in_flight(&self) -> Option<&Effect> {
        self.in_flight.as_ref()
    }

    /// The services that were running when the run began, in stop order, once `Inspect` reported.
    pub fn running(&self) -> Option<&[String]> {
        self.running.as_deref()
    }

    /// What the archive write reported, once it succeeded.
    pub fn archive(&self) -> Option<&ArchiveFacts> {
        self.archive.as_ref()
    }

    /// The details the archive write reported, once it succeeded; `None` also for a journal
    /// written before writes reported them.
    pub fn archive_details(&self) -> Option<&ArchiveDetails> {
        self.archive_details.as_ref()
    }

    /// The failed effects, oldest first. A run ends `Failed` after a second failure.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// The run's hooks, in the order they run, once `Inspect` reported them.
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// The hooks run should the run roll back or fail (`on_failure`), from its start.
    pub fn failure_hooks(&self) -> &[Hook] {
        &self.failure_hooks
    }

    /// The `after_*` hooks that exited non-zero (or could not run), oldest first: the run went on.
    pub fn hook_failures(&self) -> &[Failure] {
        &self.hook_failures
    }

    /// A shipping run's multipart upload id, once `BeginUpload` reported it.
    pub fn upload_id(&self) -> Option<&str> {
        self.upload_id.as_deref()
    }

    /// What a shipping run's upload stored, once `UploadCopy` succeeded.
    pub fn copy(&self) -> Option<&CopyFacts> {
        self.copy.as_ref()
    }

    /// Whether the effect in flight is a hook recovery must not carry out again: one not marked
    /// idempotent may have run, and running it twice is what its author did not allow.
    pub(crate) fn in_flight_hook_once(&self) -> bool {
        matches!(&self.in_flight, Some(Effect::RunHook { hook }) if !hook.idempotent)
    }

    /// How the operator cancelled the run (`SIGINT`, say), if a cancel was journaled.
    pub fn cancelled(&self) -> Option<&str> {
        self.cancelled.as_deref()
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.mode, Mode::Ended(_))
    }

    /// Whether the run is past its point of no return: from here it finishes rather than undoes.
    pub fn is_committed(&self) -> bool {
        match &self.mode {
            Mode::Forward => is_committed(self, self.cursor),
            Mode::Compensating { end, .. } | Mode::Ended(end) => *end == State::Completed,
        }
    }

    /// The state the run is in.
    pub fn state(&self) -> State {
        match &self.mode {
            Mode::Ended(state) => *state,
            Mode::Compensating { end: State::Completed, .. } => self.forward_state_at_failure(),
            Mode::Compensating { .. } => State::RollingBack,
            Mode::Forward => match forward_step(self, self.cursor) {
                Ok(Some((state, _))) => state,
                Ok(None) => State::Completed,
                Err(_) => State::Failed,
            },
        }
    }

    /// For a run finishing after a failure past its point of no return: the forward state of the
    /// step being retried, so the timeline reads "restarting" rather than "rolling back".
    fn forward_state_at_failure(&self) -> State {
        self.failures.last().map_or(State::Restarting, |failure| failure.state)
    }

    /// The next effect to carry out, or `None` when the run has ended or an effect is in flight
    /// (an interrupted run must go through [`Run::recovery_plan`] first).
    pub fn poll_effect(&self) -> Option<Effect> {
        if self.in_flight.is_some() {
            return None;
        }
        self.next_step()
    }

    fn next_step(&self) -> Option<Effect> {
        match &self.mode {
            Mode::Ended(_) => None,
            Mode::Compensating { steps, .. } => steps.get(self.cursor).cloned(),
            Mode::Forward => forward_step(self, self.cursor).ok().flatten().map(|(_, effect)| effect),
        }
    }

    /// The `Intent` event for the next effect. Journal it before carrying the effect out.
    pub fn handle_begin(&self, at: Timestamp) -> Result<Event, MachineError> {
        if let Mode::Ended(state) = self.mode {
            return Err(MachineError::AfterEnd { state });
        }
        if self.in_flight.is_some() {
            return Err(MachineError::IntentWhileInFlight);
        }
        let effect = self.next_step().ok_or(MachineError::AfterEnd { state: State::Completed })?;
        Ok(Event::Intent { at, effect })
    }

    /// The `Outcome` event for the effect in flight. Journal it, then apply it.
    pub fn handle_outcome(&self, outcome: Outcome, at: Timestamp) -> Result<Event, MachineError> {
        let effect = self.in_flight.as_ref().ok_or(MachineError::OutcomeWithoutIntent)?;
        check_outcome_shape(effect, &outcome)?;
        Ok(Event::Outcome { at, outcome })
    }

    /// The `Cancelled` event for an operator's request to stop (a signal, say), or `None` when a
    /// cancel changes nothing: an effect is in flight (ask again once its outcome is applied), the
    /// run is settling already, or it is past its point of no return and finishes instead.
    /// Journal it, then apply it: the run then settles as if its next step had failed.
    pub fn handle_cancel(&self, reason: &str, at: Timestamp) -> Option<Event> {
        self.accepts_cancel().then(|| Event::Cancelled { at, reason: reason.to_owned() })
    }

    fn accepts_cancel(&self) -> bool {
        matches!(self.mode, Mode::Forward) && self.in_flight.is_none() && !self.is_committed()
    }

    /// Applies one event: the only way a run changes. Rejects events that contradict the run.
    pub fn apply(&mut self, event: &Event) -> Result<(), MachineError> {
        if let Mode::Ended(state) = self.mode {
            return Err(MachineError::AfterEnd { state });
        }
        match event {
            Event::Started { .. } | Event::StartedWith { .. } => return Err(MachineError::StartedTwice),
            Event::Intent { effect, .. } => self.apply_intent(effect)?,
            Event::Outcome { outcome, .. } => self.apply_outcome(outcome)?,
            Event::Recovering { decision, .. } => self.apply_recovering(*decision)?,
            Event::Cancelled { reason, .. } => self.apply_cancelled(reason)?,
        }
        self.last_event_at = event.at();
        Ok(())
    }

    fn apply_intent(&mut self, effect: &Effect) -> Result<(), MachineError> {
        if self.in_flight.is_some() {
            return Err(MachineError::IntentWhileInFlight);
        }
        let expected = self.next_step();
        if expected.as_ref() != Some(effect) && !self.skip_stop_of_older_journal(effect) {
            return Err(MachineError::UnexpectedIntent {
                expected: expected.map(Box::new),
                got: Box::new(effect.clone()),
            });
        }
        self.in_flight = Some(effect.clone());
        Ok(())
    }

    /// Journals written before settling began by finishing a stop that did not succeed (see
    /// `plan::start_again`) go straight to the start. Accepting that, and only that, keeps their
    /// runs replayable; a journal of this build never takes this path.
    fn skip_stop_of_older_journal(&mut self, effect: &Effect) -> bool {
        let Mode::Compensating { steps, .. } = &mut self.mode else { return false };
        let older = self.cursor == 0
            && matches!(effect, Effect::StartServices { .. })
            && matches!(steps.first(), Some(Effect::StopServices { .. }))
            && steps.get(1) == Some(effect);
        if older {
            let _ = steps.remove(0);
        }
        older
    }

    fn apply_outcome(&mut self, outcome: &Outcome) -> Result<(), MachineError> {
        let effect = self.in_flight.take().ok_or(MachineError::OutcomeWithoutIntent)?;
        if let Err(error) = check_outcome_shape(&effect, outcome) {
            self.in_flight = Some(effect);
            return Err(error);
        }
        if let Outcome::Failed { error } = outcome {
            let state = self.step_state();
            // An after hook that could not run is reported like one that failed: the run goes on.
            if let Effect::RunHook { hook } = &effect
                && !hook.point.is_before()
            {
                self.hook_failures.push(Failure { state, effect: effect.clone(), error: error.clone() });
            } else {
                self.failures.push(Failure { state, effect, error: error.clone() });
                return self.fail();
            }
        }
        if let (Outcome::HookRan { exit_code, output_tail }, Effect::RunHook { hook }) = (outcome, &effect)
            && *exit_code != 0
        {
            let state = self.step_state();
            let error = format!("hook {} exited {exit_code}: {}", hook.label(), output_tail.trim_end());
            let failure = Failure { state, effect: effect.clone(), error };
            if hook.point.is_before() && matches!(self.mode, Mode::Forward) {
                self.failures.push(failure);
                return self.fail();
            }
            self.hook_failures.push(failure);
        }
        match outcome {
            Outcome::Inspected { running } => self.running = Some(running.clone()),
            Outcome::InspectedWithHooks { running, hooks } => {
                self.running = Some(running.clone());
                self.hooks = hooks.clone();
            }
            Outcome::ArchiveWritten(facts) => self.archive = Some(facts.clone()),
            Outcome::Archived { facts, details } => {
                self.archive = Some(facts.clone());
                self.archive_details = Some(details.clone());
            }
            Outcome::UploadBegun { upload_id } => self.upload_id = Some(upload_id.clone()),
            Outcome::CopyUploaded(copy) => self.copy = Some(copy.clone()),
            Outcome::Done
            | Outcome::Started { .. }
            | Outcome::Failed { .. }
            | Outcome::HookRan { .. }
            | Outcome::MirrorSynced { .. } => {}
        }
        self.cursor += 1;
        self.retried = false;
        self.end_if_done()
    }

    /// The state the current step belongs to, for failure reports.
    fn step_state(&self) -> State {
        match &self.mode {
            Mode::Forward => forward_step(self, self.cursor).ok().flatten().map_or(State::Failed, |(state, _)| state),
            _ => self.state(),
        }
    }

    /// A failed effect: a forward step settles the run (undo, or finish past the point of no
    /// return). A failed settling step is retried once, since the faults that hit one (a start
    /// that timed out, a busy file) are often transient; failing again leaves nothing more the
    /// machine can do, so the run fails and says what the operator must do.
    fn fail(&mut self) -> Result<(), MachineError> {
        match self.mode {
            Mode::Forward => {
                let done = self.cursor;
                let (steps, end) = settle(self, done + 1, done)?;
                // Past the point of no return the failed step is retried once, as a settling step.
                self.mode = Mode::Compensating { steps, end };
                self.cursor = 0;
                self.end_if_done()
            }
            Mode::Compensating { .. } if !self.retried => {
                self.retried = true;
                Ok(())
            }
            // The run fails: its `on_failure` hooks, if it has any and they have not begun,
            // are its last steps (a hook's outcome never fails a run, so this happens once).
            Mode::Compensating { end, .. } if end != State::Failed && !self.failure_hooks.is_empty() => {
                let steps = self.failure_hooks.iter().map(|hook| Effect::RunHook { hook: hook.clone() }).collect();
                self.mode = Mode::Compensating { steps, end: State::Failed };
                self.cursor = 0;
                self.retried = false;
                Ok(())
            }
            _ => {
                self.mode = Mode::Ended(State::Failed);
                Ok(())
            }
        }
    }

    fn end_if_done(&mut self) -> Result<(), MachineError> {
        match &self.mode {
            Mode::Forward if forward_step(self, self.cursor)?.is_none() => self.mode = Mode::Ended(State::Completed),
            Mode::Compensating { steps, end } if self.cursor >= steps.len() => self.mode = Mode::Ended(*end),
            _ => {}
        }
        Ok(())
    }

    fn apply_cancelled(&mut self, reason: &str) -> Result<(), MachineError> {
        if !self.accepts_cancel() {
            return Err(MachineError::CancelNotAccepted);
        }
        self.cancelled = Some(reason.to_owned());
        // Nothing is in flight: the steps begun are exactly the steps done.
        let done = self.cursor;
        let (steps, end) = settle(self, done, done)?;
        self.mode = Mode::Compensating { steps, end };
        self.cursor = 0;
        self.end_if_done()
    }

    fn apply_recovering(&mut self, decision: Decision) -> Result<(), MachineError> {
        // The plan is computed before the in-flight effect is forgotten: it decides what that
        // effect may have done.
        let plan = self.recovery_plan()?.ok_or(MachineError::AfterEnd { state: self.state() })?;
        if plan.decision != decision {
            return Err(MachineError::WrongDecision { expected: plan.decision, got: decision });
        }
        // A hook that may have run and may not run twice is passed over (docs/design.md, "Hooks").
        let skip = self.in_flight_hook_once();
        self.in_flight = None;
        self.retried = false;
        if skip && decision != Decision::RollBack {
            self.cursor += 1;
        }
        match decision {
            // Forward mode, cursor on the interrupted step: it is carried out again.
            Decision::Resume => {}
            // Compensating mode, cursor on the interrupted settling step: likewise.
            Decision::ContinueRollBack | Decision::ContinueFinishing => {}
            Decision::RollBack => {
                self.mode = Mode::Compensating { steps: plan.steps, end: plan.ends_as };
                self.cursor = 0;
            }
        }
        self.end_if_done()
    }
}

/// Checks that an outcome has the shape its effect reports.
fn check_outcome_shape(effect: &Effect, outcome: &Outcome) -> Result<(), MachineError> {
    // `on_failure` hooks come with the run's start, never from `Inspect`.
    if let Outcome::InspectedWithHooks { hooks, .. } = outcome
        && let Some(hook) = hooks.iter().find(|hook| hook.point == HookPoint::OnFailure)
    {
        return Err(MachineError::MisplacedHook { point: hook.point });
    }
    let fits = match (effect, outcome) {
        (_, Outcome::Failed { .. }) => true,
        (Effect::Inspect, Outcome::Inspected { .. } | Outcome::InspectedWithHooks { .. }) => true,
        (Effect::RunHook { .. }, Outcome::HookRan { .. }) => true,
        (Effect::RunHook { .. }, _) | (_, Outcome::HookRan { .. }) => false,
        (Effect::SyncMirror { .. }, Outcome::MirrorSynced { .. }) => true,
        (Effect::SyncMirror { .. }, _) | (_, Outcome::MirrorSynced { .. }) => false,
        (Effect::BeginUpload { .. }, Outcome::UploadBegun { .. }) => true,
        (Effect::BeginUpload { .. }, _) | (_, Outcome::UploadBegun { .. }) => false,
        (Effect::UploadCopy { .. }, Outcome::CopyUploaded(_)) => true,
        (Effect::UploadCopy { .. }, _) | (_, Outcome::CopyUploaded(_)) => false,
        (Effect::WriteArchive { path }, Outcome::ArchiveWritten(facts) | Outcome::Archived { facts, .. }) => {
            &facts.path == path
        }
        (Effect::Inspect | Effect::WriteArchive { .. }, _) => false,
        (Effect::StartServices { .. } | Effect::ComposeUp { .. }, Outcome::Started { .. }) => true,
        (_, Outcome::Done) => true,
        (_, _) => false,
    };
    if fits { Ok(()) } else { Err(MachineError::OutcomeMismatch { effect: effect.name() }) }
}
