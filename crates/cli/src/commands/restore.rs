//! `lifeboat restore BACKUP_ID`: put a backup's data back, as a journaled restore run.
//!
//! The run verifies the archive before it touches anything, stops the running services, swaps
//! the backup's data in (keeping the current data aside), starts and verifies the services, and
//! only then deletes the data kept aside. Any failure before that verification puts the data
//! aside back and the services up again (see `crate::restore` and the machine's `settle`).

use super::backup::{downtime_ms, failure_summary, restarted};
use super::{Ctx, confirm, connect_docker};
use crate::args::RestoreArgs;
use crate::executor::Executor;
use crate::exit::Exit;
use crate::fail;
use crate::project::Project;
use crate::render;
use lifeboat_journal::BackupEntry;
use lifeboat_machine::{Effect, Run, RunSpec, State};

/// What a finished restore reports (JSON: add fields, never rename).
#[derive(Debug, serde::Serialize)]
pub struct RestoreReport {
    pub run_id: u64,
    pub backup_id: u64,
    /// The roots put back, by their names in the archive (`paths/data`, `volumes/dbdata`).
    pub restored: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub downtime_ms: i64,
}

pub async fn run(ctx: &Ctx, args: &RestoreArgs) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    // The lock is held through the question, so nothing changes between the answer and the run.
    let _lock = project.lock()?;
    let journal = project.journal()?;
    project.refuse_if_interrupted(&journal)?;
    let Some(entry) = journal.backup(args.backup_id)? else {
        fail!(Exit::Usage, "no backup {} in the catalog: see 'lifeboat list'", args.backup_id)
    };
    confirm(args.yes, &format!("restore to backup {}", entry.id), &question(&project, &entry))?;
    let docker = connect_docker().await?;
    let executor = Executor { project: &project, journal: &journal, docker: Some(docker), progress: ctx.progress };
    let backup = entry.backup_ref();
    let run = executor.start(RunSpec::Restore { backup }).await?;
    match run.state() {
        State::Completed => {
            let roots = crate::restore::data_roots(&project, executor.docker()?).await?;
            let stopped = run.running().map(<[String]>::to_vec).unwrap_or_default();
            let events = journal.events(run.id())?;
            let report = RestoreReport {
                run_id: run.id(),
                backup_id: entry.id,
                restored: roots.into_iter().map(|r| r.archive_name).collect(),
                restarted: restarted(&events).unwrap_or_else(|| stopped.iter().rev().cloned().collect()),
                stopped,
                downtime_ms: downtime_ms(&events).unwrap_or(0),
            };
            print_report(ctx, &report)
        }
        _ if archive_refused(&run) => Err(Exit::Integrity.wrap(anyhow::anyhow!(
            "{}\nthe archive does not match its catalog entry; check it with 'lifeboat verify {}'",
            failure_summary(&run),
            entry.id
        ))),
        _ => Err(Exit::of_unfinished_run(&run).wrap(anyhow::anyhow!("{}", failure_summary(&run)))),
    }
}

/// Whether the run ended because its archive failed verification (nothing was touched).
fn archive_refused(run: &Run) -> bool {
    run.failures().first().is_some_and(|f| matches!(f.effect, Effect::VerifyArchive { .. }))
}

/// Asks on the terminal; `true` for yes.
fn question(project: &Project, entry: &BackupEntry) -> String {
    let volumes = if project.config.backup.volumes { " and the named volumes" } else { "" };
    format!(
        "restore backup {} ({}, made {}, {})?\n\
         the running services of {} stop, and their data ({}{volumes}) is replaced by the backup's;\n\
         the current data is kept aside until the restored data runs healthy.",
        entry.id,
        entry.kind.as_str(),
        render::local_time(entry.created_at),
        render::bytes(entry.size_bytes),
        project.config.project.name,
        render::list(&project.config.backup.paths),
    )
}

fn print_report(ctx: &Ctx, report: &RestoreReport) -> anyhow::Result<()> {
    if ctx.json {
        return ctx.print_json(&serde_json::to_value(report)?);
    }
    outln!("restore of backup {} completed (run {})", report.backup_id, report.run_id)?;
    outln!("  restored   {}", render::list(&report.restored))?;
    outln!("  stopped    {}", render::list(&report.stopped))?;
    outln!("  restarted  {}", render::list(&report.restarted))?;
    outln!("  downtime   {}", render::duration_ms(report.downtime_ms))?;
    Ok(())
}
