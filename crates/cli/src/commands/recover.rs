//! `lifeboat recover`: settle every interrupted run, oldest first, as its journal dictates.

use super::{Ctx, connect_docker};
use crate::executor::{Executor, crash_point};
use crate::exit::Exit;
use crate::project::{Project, interrupted_runs};
use crate::render::{self, now};
use lifeboat_machine::State;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let _lock = project.lock()?;
    let journal = project.journal()?;
    let interrupted = interrupted_runs(&journal)?;
    if interrupted.is_empty() {
        if ctx.json {
            ctx.print_json(&serde_json::json!([]))?;
        } else {
            outln!("nothing to recover: every run in the journal has ended")?;
        }
        return Ok(());
    }
    let docker = connect_docker().await?;
    let executor = Executor { project: &project, journal: &journal, docker: Some(docker), progress: ctx.progress };
    let mut results = Vec::new();
    let mut failed = false;
    for mut run in interrupted {
        let Some(plan) = run.recovery_plan()? else { continue };
        if !ctx.json {
            outln!(
                "run {} ({}) was interrupted while {}: {}",
                plan.run_id,
                plan.kind,
                plan.interrupted_in,
                plan.decision.as_str().replace('_', " ")
            )?;
            for step in &plan.steps {
                outln!("  - {}", render::effect_detail(step))?;
            }
        }
        executor.record(&mut run, plan.event(now())).await?;
        crash_point("recovering");
        let run = executor.drive(run).await?;
        super::backup::note_last_backup(&journal, &run);
        failed |= run.state() == State::Failed;
        if !ctx.json {
            outln!("run {} ended {}", run.id(), run.state())?;
        }
        results.push(serde_json::json!({
            "run_id": run.id(),
            "kind": run.kind().as_str(),
            "interrupted_in": plan.interrupted_in.as_str(),
            "decision": plan.decision.as_str(),
            "steps": plan.steps.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "state": run.state().as_str(),
        }));
    }
    if ctx.json {
        ctx.print_json(&serde_json::Value::Array(results))?;
    }
    if failed {
        crate::fail!(Exit::Failed, "a run could not be settled: see 'lifeboat journal show RUN_ID' for what to do");
    }
    Ok(())
}
