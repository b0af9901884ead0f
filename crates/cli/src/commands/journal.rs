//! `lifeboat journal list | show | replay | verify`: read the journal, never write it.

use super::Ctx;
use crate::exit::Exit;
use crate::fail;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use crate::runs::history::{self, outcome};
use lifeboat_journal::{Journal, JournalError};
use lifeboat_machine::{Event, Run, replay};
use serde::Serialize;
use std::io::Write;

fn load(journal: &Journal, run_id: u64) -> anyhow::Result<(Run, Vec<Event>)> {
    let events = match journal.events(run_id) {
        // An id the operator typed that is not there is a usage error, not a damaged journal.
        Err(JournalError::UnknownRun { .. }) => Vec::new(),
        other => other.map_err(|err| Exit::Integrity.wrap(err))?,
    };
    if events.is_empty() {
        fail!(Exit::Usage, "no run {run_id} in the journal: see 'lifeboat journal list'");
    }
    let run = replay(run_id, &events).map_err(|err| {
        Exit::Integrity.wrap(anyhow::Error::new(err).context(format!("run {run_id} does not replay")))
    })?;
    Ok((run, events))
}

/// One run as `journal list` shows it.
#[derive(Debug, Serialize)]
pub struct RunRow {
    pub run_id: u64,
    pub kind: &'static str,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub state: &'static str,
    pub outcome: &'static str,
    #[serde(skip)]
    run: Run,
}

/// Every run, oldest first: a JSON array.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RunList {
    pub runs: Vec<RunRow>,
}

pub fn list(ctx: &Ctx) -> anyhow::Result<RunList> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let mut runs = Vec::new();
    for run_id in journal.runs()? {
        let (run, _) = load(&journal, run_id)?;
        runs.push(RunRow {
            run_id,
            kind: run.kind().as_str(),
            started_at: render::rfc3339(run.started_at()),
            ended_at: run.is_ended().then(|| render::rfc3339(run.last_event_at())),
            state: run.state().as_str(),
            outcome: outcome(&run),
            run,
        });
    }
    Ok(RunList { runs })
}

impl Report for RunList {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.runs.is_empty() {
            return writeln!(out, "the journal has no runs yet");
        }
        writeln!(out, "{:>6}  {:<9}  {:<19}  {:>10}  {:<12}  outcome", "run", "kind", "started", "took", "state")?;
        for row in &self.runs {
            let run = &row.run;
            writeln!(
                out,
                "{:>6}  {:<9}  {:<19}  {:>10}  {:<12}  {}",
                row.run_id,
                row.kind,
                render::local_time(run.started_at()),
                render::duration_ms(run.last_event_at().0 - run.started_at().0),
                row.state,
                row.outcome
            )?;
        }
        Ok(())
    }
}

/// One event of `journal show`.
#[derive(Debug, Serialize)]
pub struct TimelineRow {
    pub seq: usize,
    pub at: String,
    /// The state the run was in when it happened (for an outcome: the state of its step).
    pub state: &'static str,
    pub event: &'static str,
    pub detail: String,
    /// For an outcome: how long its effect took.
    pub duration_ms: Option<i64>,
    #[serde(skip)]
    at_ms: i64,
}

/// A run's story: `journal show RUN_ID`.
#[derive(Debug, Serialize)]
pub struct ShowReport {
    pub run_id: u64,
    pub kind: &'static str,
    pub outcome: &'static str,
    pub events: Vec<TimelineRow>,
    #[serde(skip)]
    run: Run,
}

pub fn show(ctx: &Ctx, run_id: u64) -> anyhow::Result<ShowReport> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let (run, events) = load(&journal, run_id)?;
    let events = history::timeline(&events)
        .iter()
        .map(|row| TimelineRow {
            seq: row.seq,
            at: render::rfc3339(row.event.at()),
            state: row.state.as_str(),
            event: row.event.name(),
            detail: history::detail(row),
            duration_ms: row.duration_ms,
            at_ms: row.event.at().0,
        })
        .collect();
    Ok(ShowReport { run_id, kind: run.kind().as_str(), outcome: outcome(&run), events, run })
}

impl Report for ShowReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let run = &self.run;
        writeln!(
            out,
            "run {}: {} started {}, {} ({})",
            self.run_id,
            run.kind(),
            render::local_time(run.started_at()),
            self.outcome.replace('_', " "),
            render::duration_ms(run.last_event_at().0 - run.started_at().0)
        )?;
        writeln!(out, "{:>4}  {:<12}  {:>9}  {:<12}  {:<10}  detail", "seq", "time", "+elapsed", "state", "event")?;
        let start = run.started_at().0;
        for row in &self.events {
            let at = render::to_datetime(lifeboat_machine::Timestamp(row.at_ms));
            let time = at.with_timezone(&chrono::Local).format("%H:%M:%S%.3f");
            let took = row.duration_ms.map(|ms| format!(" (took {})", render::duration_ms(ms))).unwrap_or_default();
            writeln!(
                out,
                "{:>4}  {time:<12}  {:>9}  {:<12}  {:<10}  {}{took}",
                row.seq,
                render::duration_ms(row.at_ms - start),
                row.state,
                row.event,
                row.detail
            )?;
        }
        if run.is_ended() {
            writeln!(out, "      ended {}", run.state())?;
        }
        if let Some(effect) = run.in_flight() {
            writeln!(out, "      (interrupted during: {}; run 'lifeboat recover')", render::effect_detail(effect))?;
        }
        Ok(())
    }
}

/// What `recover` would do with a run: `journal replay RUN_ID`.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub run_id: u64,
    pub kind: &'static str,
    pub events: usize,
    pub state: &'static str,
    pub outcome: &'static str,
    pub in_flight: Option<&'static str>,
    pub recovery: Option<RecoveryView>,
    #[serde(skip)]
    step_details: Vec<String>,
}

/// A recovery plan: the decision, its steps, how the run would end.
#[derive(Debug, Serialize)]
pub struct RecoveryView {
    pub decision: &'static str,
    pub steps: Vec<&'static str>,
    pub ends_as: &'static str,
}

pub fn replay_cmd(ctx: &Ctx, run_id: u64) -> anyhow::Result<ReplayReport> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let (run, events) = load(&journal, run_id)?;
    let plan = run.recovery_plan()?;
    Ok(ReplayReport {
        run_id,
        kind: run.kind().as_str(),
        events: events.len(),
        state: run.state().as_str(),
        outcome: outcome(&run),
        in_flight: run.in_flight().map(|e| e.name()),
        step_details: plan.iter().flat_map(|p| p.steps.iter().map(render::effect_detail)).collect(),
        recovery: plan.map(|p| RecoveryView {
            decision: p.decision.as_str(),
            steps: p.steps.iter().map(|s| s.name()).collect(),
            ends_as: p.ends_as.as_str(),
        }),
    })
}

impl Report for ReplayReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "run {} ({}): {} events replay to state {}", self.run_id, self.kind, self.events, self.state)?;
        if let Some(plan) = &self.recovery {
            writeln!(out, "recover would {} and end {}:", plan.decision.replace('_', " "), plan.ends_as)?;
            for step in &self.step_details {
                writeln!(out, "  - {step}")?;
            }
        }
        Ok(())
    }
}

/// `journal verify`: runs checked and the problems found. Exit 5 when there is one.
#[derive(Debug, Serialize)]
pub struct JournalVerifyReport {
    pub runs: u64,
    pub problems: Vec<String>,
}

pub fn verify(ctx: &Ctx) -> anyhow::Result<JournalVerifyReport> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let report = journal.verify();
    Ok(JournalVerifyReport {
        runs: report.runs_checked,
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
    })
}

impl Report for JournalVerifyReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.problems.is_empty() {
            return writeln!(out, "journal is consistent: {} runs checked", self.runs);
        }
        for problem in &self.problems {
            writeln!(out, "problem: {problem}")?;
        }
        Ok(())
    }

    fn exit(&self) -> anyhow::Result<()> {
        if !self.problems.is_empty() {
            fail!(Exit::Integrity, "the journal has {} problem(s)", self.problems.len());
        }
        Ok(())
    }
}
