//! `lifeboat rollback [BACKUP_ID]`: go back to a pre-upgrade backup (by default that of the last
//! completed upgrade), its data and its deployment files, as a journaled rollback run.
//!
//! Like a restore, the run verifies the archive before touching anything and keeps the current data
//! and files aside until the restored stack is verified up; on failure it puts them back. Once it
//! commits, the deployed version is the one the backup protects.

use super::backup::{downtime_ms, failure_summary};
use super::upgrade::{StepTiming, step_timings};
use super::{Ctx, confirm, connect_docker};
use crate::args::RollbackArgs;
use crate::executor::Executor;
use crate::exit::Exit;
use crate::fail;
use crate::project::Project;
use crate::render;
use lifeboat_journal::{BackupEntry, Journal};
use lifeboat_machine::{BackupKind, Effect, RunSpec, State, replay};

/// What a finished rollback reports (JSON: add fields, never rename).
#[derive(Debug, serde::Serialize)]
pub struct RollbackReport {
    pub run_id: u64,
    pub backup_id: u64,
    pub to_version: Option<String>,
    pub state: String,
    pub downtime_ms: i64,
    pub steps: Vec<StepTiming>,
}

pub async fn run(ctx: &Ctx, args: &RollbackArgs) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let _lock = project.lock()?;
    let journal = project.journal()?;
    project.refuse_if_interrupted(&journal)?;
    let entry = match args.backup_id {
        Some(id) => match journal.backup(id)? {
            Some(entry) => entry,
            None => fail!(Exit::Usage, "no backup {id} in the catalog: see 'lifeboat list'"),
        },
        None => match last_upgrade_backup(&journal)? {
            Some(entry) => entry,
            None => fail!(
                Exit::Usage,
                "no completed upgrade has a pre-upgrade backup in the catalog: name a backup, see 'lifeboat list'"
            ),
        },
    };
    if entry.kind != BackupKind::PreUpgrade {
        tracing::warn!(
            "backup {} is a {} backup: it holds data but no deployment files",
            entry.id,
            entry.kind.as_str()
        );
    }
    confirm(args.yes, &format!("rollback to backup {}", entry.id), &question(&project, &entry))?;
    let docker = connect_docker().await?;
    let executor = Executor { project: &project, journal: &journal, docker: Some(docker), progress: ctx.progress };
    let backup = entry.backup_ref();
    let run = executor.start(RunSpec::Rollback { backup }).await?;
    let events = journal.events(run.id())?;
    match run.state() {
        State::Completed => {
            let report = RollbackReport {
                run_id: run.id(),
                backup_id: entry.id,
                to_version: journal.settings()?.deployed_version,
                state: run.state().as_str().to_owned(),
                downtime_ms: downtime_ms(&events).unwrap_or(0),
                steps: step_timings(&events),
            };
            print_report(ctx, &report)
        }
        _ if run.failures().first().is_some_and(|f| matches!(f.effect, Effect::VerifyArchive { .. })) => {
            Err(Exit::Integrity.wrap(anyhow::anyhow!(
                "{}\nthe archive does not match its catalog entry; check it with 'lifeboat verify {}'",
                failure_summary(&run),
                entry.id
            )))
        }
        _ => Err(Exit::of_unfinished_run(&run).wrap(anyhow::anyhow!("{}", failure_summary(&run)))),
    }
}

/// The newest pre-upgrade backup whose upgrade run completed.
pub fn last_upgrade_backup(journal: &Journal) -> anyhow::Result<Option<BackupEntry>> {
    let mut entries: Vec<BackupEntry> =
        journal.backups()?.into_iter().filter(|e| e.kind == BackupKind::PreUpgrade).collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.id));
    for entry in entries {
        let events = journal.events(entry.run_id)?;
        if replay(entry.run_id, &events).is_ok_and(|run| run.state() == State::Completed) {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

fn question(project: &Project, entry: &BackupEntry) -> String {
    format!(
        "roll {} back to backup {} ({}, made {}, version {})?\n\
         the running services stop, their data and deployment files are replaced by the backup's;\n\
         the current ones are kept aside until the restored stack runs healthy.",
        project.config.project.name,
        entry.id,
        entry.kind.as_str(),
        render::local_time(entry.created_at),
        entry.protects_version.as_deref().unwrap_or("unrecorded"),
    )
}

fn print_report(ctx: &Ctx, report: &RollbackReport) -> anyhow::Result<()> {
    if ctx.json {
        return ctx.print_json(&serde_json::to_value(report)?);
    }
    outln!(
        "rollback to backup {} completed (run {}); version {}",
        report.backup_id,
        report.run_id,
        report.to_version.as_deref().unwrap_or("unrecorded")
    )?;
    outln!("  downtime  {}", render::duration_ms(report.downtime_ms))?;
    for step in &report.steps {
        outln!("  {:<19} {}", step.step, render::duration_ms(step.ms))?;
    }
    Ok(())
}
