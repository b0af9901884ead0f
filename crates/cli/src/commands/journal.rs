//! `lifeboat journal list | show | replay | verify`: read the journal, never write it.

use super::Ctx;
use crate::exit::Exit;
use crate::fail;
use crate::project::Project;
use crate::render;
use lifeboat_journal::Journal;
use lifeboat_machine::{Event, Run, State, replay};
use serde_json::json;

/// How a run ended, in the words of `journal list`'s `outcome` field.
pub fn outcome(run: &Run) -> &'static str {
    match run.state() {
        State::Completed => "completed",
        State::RolledBack => "rolled_back",
        State::Failed => "failed",
        _ => "interrupted",
    }
}

fn load(journal: &Journal, run_id: u64) -> anyhow::Result<(Run, Vec<Event>)> {
    let events = journal.events(run_id).map_err(|err| Exit::Integrity.wrap(err))?;
    if events.is_empty() {
        fail!(Exit::Usage, "no run {run_id} in the journal: see 'lifeboat journal list'");
    }
    let run = replay(run_id, &events).map_err(|err| {
        Exit::Integrity.wrap(anyhow::Error::new(err).context(format!("run {run_id} does not replay")))
    })?;
    Ok((run, events))
}

pub fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let mut rows = Vec::new();
    for run_id in journal.runs()? {
        let (run, _) = load(&journal, run_id)?;
        rows.push(run);
    }
    if ctx.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|run| {
                json!({
                    "run_id": run.id(),
                    "kind": run.kind().as_str(),
                    "started_at": render::rfc3339(run.started_at()),
                    "ended_at": run.is_ended().then(|| render::rfc3339(run.last_event_at())),
                    "state": run.state().as_str(),
                    "outcome": outcome(run),
                })
            })
            .collect();
        return ctx.print_json(&json!(rows));
    }
    if rows.is_empty() {
        outln!("the journal has no runs yet")?;
        return Ok(());
    }
    outln!("{:>6}  {:<9}  {:<19}  {:>10}  {:<12}  outcome", "run", "kind", "started", "took", "state")?;
    for run in &rows {
        outln!(
            "{:>6}  {:<9}  {:<19}  {:>10}  {:<12}  {}",
            run.id(),
            run.kind().as_str(),
            render::local_time(run.started_at()),
            render::duration_ms(run.last_event_at().0 - run.started_at().0),
            run.state().as_str(),
            outcome(run)
        )?;
    }
    Ok(())
}

pub fn show(ctx: &Ctx, run_id: u64) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let (run, events) = load(&journal, run_id)?;
    let timeline = timeline(run_id, &events);
    if ctx.json {
        let events: Vec<_> = timeline
            .iter()
            .map(|row| {
                json!({
                    "seq": row.seq,
                    "at": render::rfc3339(row.event.at()),
                    "state": row.state.as_str(),
                    "event": row.event.name(),
                    "detail": row.detail,
                    "duration_ms": row.duration_ms,
                })
            })
            .collect();
        return ctx.print_json(
            &json!({ "run_id": run_id, "kind": run.kind().as_str(), "outcome": outcome(&run), "events": events }),
        );
    }
    outln!(
        "run {run_id}: {} started {}, {} ({})",
        run.kind(),
        render::local_time(run.started_at()),
        outcome(&run).replace('_', " "),
        render::duration_ms(run.last_event_at().0 - run.started_at().0)
    )?;
    outln!("{:>4}  {:<12}  {:>9}  {:<12}  {:<10}  detail", "seq", "time", "+elapsed", "state", "event")?;
    let start = run.started_at().0;
    for row in &timeline {
        let time = render::to_datetime(row.event.at()).with_timezone(&chrono::Local).format("%H:%M:%S%.3f");
        let took = row.duration_ms.map(|ms| format!(" (took {})", render::duration_ms(ms))).unwrap_or_default();
        outln!(
            "{:>4}  {time:<12}  {:>9}  {:<12}  {:<10}  {}{took}",
            row.seq,
            render::duration_ms(row.event.at().0 - start),
            row.state.as_str(),
            row.event.name(),
            row.detail
        )?;
    }
    if run.is_ended() {
        outln!("      ended {}", run.state())?;
    }
    if let Some(effect) = run.in_flight() {
        outln!("      (interrupted during: {}; run 'lifeboat recover')", render::effect_detail(effect))?;
    }
    Ok(())
}

pub fn replay_cmd(ctx: &Ctx, run_id: u64) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let (run, events) = load(&journal, run_id)?;
    let plan = run.recovery_plan()?;
    if ctx.json {
        return ctx.print_json(&json!({
            "run_id": run_id,
            "kind": run.kind().as_str(),
            "events": events.len(),
            "state": run.state().as_str(),
            "outcome": outcome(&run),
            "in_flight": run.in_flight().map(|e| e.name()),
            "recovery": plan.as_ref().map(|p| json!({
                "decision": p.decision.as_str(),
                "steps": p.steps.iter().map(|s| s.name()).collect::<Vec<_>>(),
                "ends_as": p.ends_as.as_str(),
            })),
        }));
    }
    outln!("run {run_id} ({}): {} events replay to state {}", run.kind(), events.len(), run.state())?;
    if let Some(plan) = plan {
        outln!("recover would {} and end {}:", plan.decision.as_str().replace('_', " "), plan.ends_as)?;
        for step in &plan.steps {
            outln!("  - {}", render::effect_detail(step))?;
        }
    }
    Ok(())
}

pub fn verify(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let report = journal.verify();
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    if ctx.json {
        ctx.print_json(&json!({ "runs": report.runs_checked, "problems": problems }))?;
    } else if problems.is_empty() {
        outln!("journal is consistent: {} runs checked", report.runs_checked)?;
    } else {
        for problem in &problems {
            outln!("problem: {problem}")?;
        }
    }
    if !problems.is_empty() {
        fail!(Exit::Integrity, "the journal has {} problem(s)", problems.len());
    }
    Ok(())
}

/// One line of a run's timeline.
struct Row<'e> {
    seq: usize,
    event: &'e Event,
    /// The state the run was in when the event happened (for an outcome: the state of its step).
    state: State,
    detail: String,
    /// For an outcome: how long its effect took.
    duration_ms: Option<i64>,
}

/// The timeline of a run, replaying one event at a time to know the state each happened in.
fn timeline(run_id: u64, events: &[Event]) -> Vec<Row<'_>> {
    let mut rows = Vec::with_capacity(events.len());
    let mut intent_at = None;
    for (seq, event) in events.iter().enumerate() {
        let state = match seq {
            0 => State::Checking,
            _ => replay(run_id, &events[..seq]).map(|r| r.state()).unwrap_or(State::Failed),
        };
        let duration_ms = match event {
            Event::Intent { at, .. } => {
                intent_at = Some(*at);
                None
            }
            Event::Outcome { at, .. } => intent_at.take().map(|start| at.0 - start.0),
            _ => None,
        };
        rows.push(Row { seq, event, state, detail: render::event_detail(event), duration_ms });
    }
    rows
}
