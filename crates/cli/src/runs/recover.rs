//! Settling every interrupted run, oldest first, as its journal dictates: `lifeboat recover`,
//! and the daemon at start.

use super::RunSession;
use crate::exit::Exit;
use crate::output::Report;
use crate::render;
use lifeboat_machine::State;
use std::io::Write;

/// One run recovered.
#[derive(Debug, serde::Serialize)]
pub struct Recovered {
    pub run_id: u64,
    pub kind: &'static str,
    /// The state it was interrupted in.
    pub interrupted_in: &'static str,
    /// `resume`, `roll_back` or `continue_rolling_back`.
    pub decision: &'static str,
    /// The steps recovery carried out, by effect name.
    pub steps: Vec<&'static str>,
    /// The descriptions of those steps, for people.
    #[serde(skip)]
    pub step_details: Vec<String>,
    /// How it ended.
    pub state: &'static str,
}

/// Every run recovered, oldest first: a JSON array, empty when nothing was interrupted.
#[derive(Debug, Default, serde::Serialize)]
#[serde(transparent)]
pub struct RecoverReport {
    pub runs: Vec<Recovered>,
}

/// Settles each interrupted run in `session` (connecting to the daemon only if there is one).
pub async fn recover_all(session: &mut RunSession) -> anyhow::Result<RecoverReport> {
    let interrupted = crate::project::interrupted_runs(&session.journal)?;
    let mut report = RecoverReport::default();
    if interrupted.is_empty() {
        return Ok(report);
    }
    session.connect().await?;
    for run in interrupted {
        let Some(plan) = run.recovery_plan()? else { continue };
        tracing::warn!(
            "run {} ({}) was interrupted while {}: {}",
            plan.run_id,
            plan.kind,
            plan.interrupted_in,
            plan.decision.as_str().replace('_', " ")
        );
        let run = session.recover(run, &plan).await?;
        report.runs.push(Recovered {
            run_id: run.id(),
            kind: run.kind().as_str(),
            interrupted_in: plan.interrupted_in.as_str(),
            decision: plan.decision.as_str(),
            steps: plan.steps.iter().map(|s| s.name()).collect(),
            step_details: plan.steps.iter().map(render::effect_detail).collect(),
            state: run.state().as_str(),
        });
    }
    Ok(report)
}

impl Report for RecoverReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.runs.is_empty() {
            return writeln!(out, "nothing to recover: every run in the journal has ended");
        }
        for run in &self.runs {
            writeln!(
                out,
                "run {} ({}) was interrupted while {}: {}",
                run.run_id,
                run.kind,
                run.interrupted_in,
                run.decision.replace('_', " ")
            )?;
            for step in &run.step_details {
                writeln!(out, "  - {step}")?;
            }
            writeln!(out, "run {} ended {}", run.run_id, run.state)?;
        }
        Ok(())
    }

    /// 1 when a run could not be settled (it ended `failed`).
    fn exit(&self) -> anyhow::Result<()> {
        if self.runs.iter().any(|r| r.state == State::Failed.as_str()) {
            crate::fail!(Exit::Failed, "a run could not be settled: see 'lifeboat journal show RUN_ID' for what to do");
        }
        Ok(())
    }
}
