//! One backup run, as `backup`, `auto-backup run` and the daemon make it.

use super::{RunSession, conclude, history};
use crate::output::Report;
use crate::render;
use lifeboat_machine::{BackupKind, Event, Run, RunKind, RunSpec, SkippedPath};
use std::io::Write;

/// What a finished backup reports, in its stable JSON shape (fields are added, never renamed).
#[derive(Debug, serde::Serialize)]
pub struct BackupReport {
    pub run_id: u64,
    pub backup_id: u64,
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub file_count: u64,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub downtime_ms: i64,
    /// The files' sizes added up, holes of sparse files included.
    pub apparent_bytes: u64,
    /// The file data stored: holes left out.
    pub stored_bytes: u64,
    /// Paths left out (sockets), each with why.
    pub skipped: Vec<SkippedPath>,
    /// The `after_backup` hooks that failed (each: which, its exit code and output tail): the
    /// backup is recorded, and the command exits 6.
    pub hook_failures: Vec<String>,
}

/// Runs one backup in `session` and returns its report, or an error (exit 1, 130 or 143) saying
/// what failed and how the run ended.
pub async fn backup(session: &mut RunSession, kind: BackupKind, note: Option<String>) -> anyhow::Result<BackupReport> {
    // Before anything stops: a backup dir others could plant names in is refused (exit 2).
    // A nightly backup that cannot start is a failure someone should hear of (`crate::notify`).
    if let Err(err) = crate::perms::refuse_unsafe_backup_dir(&session.project) {
        return Err(session.failed_before_run(RunKind::Backup, err).await);
    }
    if let Err(err) = session.connect().await {
        return Err(session.failed_before_run(RunKind::Backup, err).await);
    }
    let run = session
        .run(RunKind::Backup, |id| RunSpec::Backup {
            archive_path: session.archive_path(id, ""),
            backup_kind: kind,
            note,
        })
        .await?;
    conclude(&run)?;
    report(&run, &session.journal.events(run.id())?)
}

fn report(run: &Run, events: &[Event]) -> anyhow::Result<BackupReport> {
    let facts =
        run.archive().cloned().ok_or_else(|| anyhow::anyhow!("run {} completed without an archive", run.id()))?;
    let stopped = run.running().map(<[String]>::to_vec).unwrap_or_default();
    let details = run.archive_details().cloned().unwrap_or_default();
    Ok(BackupReport {
        run_id: run.id(),
        backup_id: run.id(),
        path: facts.path,
        sha256: facts.sha256,
        size_bytes: facts.size_bytes,
        file_count: facts.file_count,
        restarted: history::restarted(events).unwrap_or_else(|| stopped.iter().rev().cloned().collect()),
        stopped,
        downtime_ms: history::downtime_ms(events).unwrap_or(0),
        apparent_bytes: details.apparent_bytes,
        stored_bytes: details.stored_bytes,
        skipped: details.skipped,
        hook_failures: run.hook_failures().iter().map(|f| f.error.clone()).collect(),
    })
}

impl Report for BackupReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "backup {} completed", self.backup_id)?;
        writeln!(out, "  archive    {}", self.path)?;
        writeln!(
            out,
            "  size       {} ({} files, {} of content, {} stored)",
            render::bytes(self.size_bytes),
            self.file_count,
            render::bytes(self.apparent_bytes),
            render::bytes(self.stored_bytes)
        )?;
        for skipped in &self.skipped {
            writeln!(out, "  skipped    {} ({}: not archived)", skipped.path, skipped.kind)?;
        }
        writeln!(out, "  sha256     {}", self.sha256)?;
        writeln!(out, "  stopped    {}", render::list(&self.stopped))?;
        writeln!(out, "  restarted  {}", render::list(&self.restarted))?;
        writeln!(out, "  downtime   {}", render::duration_ms(self.downtime_ms))?;
        super::history::write_hook_failures(out, &self.hook_failures)
    }

    /// Exit 6 when an `after_backup` hook failed: the backup stays recorded.
    fn exit(&self) -> anyhow::Result<()> {
        super::history::hook_failure_exit(&format!("backup {}", self.backup_id), &self.hook_failures)
    }
}
