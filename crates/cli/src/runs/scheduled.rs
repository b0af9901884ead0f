//! One scheduled backup and the retention after it: `auto-backup run`, and the daemon at each
//! scheduled time.

use super::RunSession;
use super::backup::{BackupReport, backup};
use super::prune::{PruneReport, prune};
use crate::commands::Ctx;
use crate::output::Report;
use lifeboat_machine::BackupKind;
use serde::Serialize;
use std::io::Write;

/// A scheduled backup and the prune after it.
#[derive(Debug)]
pub struct ScheduledRun {
    pub backup: BackupReport,
    /// Retention ran only because the backup succeeded; its failure does not undo the backup.
    pub prune: anyhow::Result<PruneReport>,
}

/// One backup of kind `auto`, then retention, under one hold of the project lock. A failed backup
/// skips retention, so a failing backup never lets old backups go.
pub async fn scheduled_backup(ctx: &Ctx) -> anyhow::Result<ScheduledRun> {
    let mut session = match RunSession::open(ctx) {
        Ok(session) => session,
        Err(err) => {
            // Held by another run (exit 3) or waiting for `recover` (exit 4): a scheduled backup
            // that cannot start is a failure someone should hear of (`crate::notify`).
            if let Ok(project) = crate::project::Project::load(&ctx.dir) {
                super::failed_before_run(&project, lifeboat_machine::RunKind::Backup, &err).await;
            }
            return Err(err);
        }
    };
    let backup = backup(&mut session, BackupKind::Auto, None).await?;
    let prune = prune(&session, false).await;
    Ok(ScheduledRun { backup, prune })
}

/// How retention after a scheduled backup went, in JSON: its report, or `{"error": ...}`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum PruneView<'a> {
    Done(&'a PruneReport),
    Failed { error: String },
}

impl ScheduledRun {
    pub fn prune_view(&self) -> PruneView<'_> {
        match &self.prune {
            Ok(report) => PruneView::Done(report),
            Err(err) => PruneView::Failed { error: format!("{err:#}") },
        }
    }
}

/// The backup report's fields, plus `prune` ([`PruneView`]).
impl Serialize for ScheduledRun {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shape<'a> {
            #[serde(flatten)]
            backup: &'a BackupReport,
            prune: PruneView<'a>,
        }
        Shape { backup: &self.backup, prune: self.prune_view() }.serialize(serializer)
    }
}

impl Report for ScheduledRun {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "auto backup {} completed: {}", self.backup.backup_id, self.backup.path)?;
        match &self.prune {
            Ok(prune) => prune.write_text(out),
            Err(_) => Ok(()),
        }
    }

    /// Retention's exit: its error, or what its report asks.
    fn exit(&self) -> anyhow::Result<()> {
        match &self.prune {
            Ok(report) => report.exit().and_then(|()| self.backup.exit()),
            Err(err) => Err(crate::exit::Exit::of(err).wrap(anyhow::anyhow!("{err:#}"))),
        }
    }
}
