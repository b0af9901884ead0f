//! `lifeboat rollback [BACKUP_ID]`: go back to a pre-upgrade backup (by default that of the last
//! completed upgrade), its data and its deployment files, as a journaled rollback run.
//!
//! Like a restore, the run verifies the archive before touching anything and keeps the current data
//! and files aside until the restored stack is verified up; on failure it puts them back. Once it
//! commits, the deployed version is the one the backup protects.

use super::{Ctx, confirm};
use crate::args::RollbackArgs;
use crate::exit::Exit;
use crate::fail;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use crate::runs::history::{self, StepTiming};
use crate::runs::{RunSession, conclude};
use lifeboat_journal::BackupEntry;
use lifeboat_machine::{BackupKind, RunKind, RunSpec};
use std::io::Write;

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

pub async fn run(ctx: &Ctx, args: &RollbackArgs) -> anyhow::Result<RollbackReport> {
    let mut session = RunSession::open(ctx)?;
    let entry = match args.backup_id {
        Some(id) => match session.journal.backup(id)? {
            Some(entry) => entry,
            None => fail!(Exit::Usage, "no backup {id} in the catalog: see 'lifeboat list'"),
        },
        None => match history::last_upgrade_backup(&session.journal)? {
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
    confirm(args.yes, &format!("rollback to backup {}", entry.id), &question(&session.project, &entry))?;
    session.connect().await?;
    let run = session.run(RunKind::Rollback, |_| RunSpec::Rollback { backup: entry.backup_ref() }).await?;
    conclude(&run)?;
    let events = session.journal.events(run.id())?;
    Ok(RollbackReport {
        run_id: run.id(),
        backup_id: entry.id,
        to_version: session.journal.settings()?.deployed_version,
        state: run.state().as_str().to_owned(),
        downtime_ms: history::downtime_ms(&events).unwrap_or(0),
        steps: history::step_timings(&events),
    })
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

impl Report for RollbackReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "rollback to backup {} completed (run {}); version {}",
            self.backup_id,
            self.run_id,
            self.to_version.as_deref().unwrap_or("unrecorded")
        )?;
        writeln!(out, "  downtime  {}", render::duration_ms(self.downtime_ms))?;
        history::write_steps(out, &self.steps)
    }
}
