//! `lifeboat restore BACKUP_ID`: put a backup's data back, as a journaled restore run.
//!
//! The run verifies the archive before it touches anything, stops the running services, swaps
//! the backup's data in (keeping the current data aside), starts and verifies the services, and
//! only then deletes the data kept aside. Any failure before that verification puts the data
//! aside back and the services up again (see `crate::effects::data_swap` and the machine's
//! `settle`).

use super::{Ctx, confirm};
use crate::args::RestoreArgs;
use crate::exit::Exit;
use crate::fail;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use crate::runs::{RunSession, conclude, history};
use lifeboat_journal::BackupEntry;
use lifeboat_machine::{RunKind, RunSpec};
use std::io::Write;

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
    /// The `after_restore` hooks that failed: the restore stands, and the command exits 6.
    pub hook_failures: Vec<String>,
}

pub async fn run(ctx: &Ctx, args: &RestoreArgs) -> anyhow::Result<RestoreReport> {
    let mut session = RunSession::open(ctx)?;
    let Some(entry) = session.journal.backup(args.backup_id)? else {
        fail!(Exit::Usage, "no backup {} in the catalog: see 'lifeboat list'", args.backup_id)
    };
    confirm(args.yes, &format!("restore to backup {}", entry.id), &question(&session.project, &entry))?;
    session.connect().await?;
    let run = session.run(RunKind::Restore, |_| RunSpec::Restore { backup: entry.backup_ref() }).await?;
    conclude(&run)?;
    let roots = crate::effects::data_swap::data_roots(&session.project, session.volumes().await?)?;
    let stopped = run.running().map(<[String]>::to_vec).unwrap_or_default();
    let events = session.journal.events(run.id())?;
    Ok(RestoreReport {
        run_id: run.id(),
        backup_id: entry.id,
        restored: roots.into_iter().map(|r| r.archive_name).collect(),
        restarted: history::restarted(&events).unwrap_or_else(|| stopped.iter().rev().cloned().collect()),
        stopped,
        downtime_ms: history::downtime_ms(&events).unwrap_or(0),
        hook_failures: run.hook_failures().iter().map(|f| f.error.clone()).collect(),
    })
}

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

impl Report for RestoreReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "restore of backup {} completed (run {})", self.backup_id, self.run_id)?;
        writeln!(out, "  restored   {}", render::list(&self.restored))?;
        writeln!(out, "  stopped    {}", render::list(&self.stopped))?;
        writeln!(out, "  restarted  {}", render::list(&self.restarted))?;
        writeln!(out, "  downtime   {}", render::duration_ms(self.downtime_ms))?;
        for failure in &self.hook_failures {
            writeln!(out, "  HOOK FAILED {failure}")?;
        }
        Ok(())
    }

    /// Exit 6 when an `after_restore` hook failed: the restored data stays.
    fn exit(&self) -> anyhow::Result<()> {
        if self.hook_failures.is_empty() {
            return Ok(());
        }
        Err(Exit::HookFailed.wrap(anyhow::anyhow!(
            "restore run {} completed, but a hook after it failed: {}",
            self.run_id,
            self.hook_failures.join("; ")
        )))
    }
}
