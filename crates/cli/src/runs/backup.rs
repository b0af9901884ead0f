//! One backup run, as `backup`, `auto-backup run` and the daemon make it.

use super::{RunSession, conclude, history};
use crate::config::BackupMode;
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
    /// `stop` or `snapshot` (`backup.mode`).
    pub mode: &'static str,
    /// The parts of `downtime_ms`: stop, the stopped sync (snapshot mode), start. In stop mode
    /// the archive is written inside the downtime too.
    pub downtime_parts: history::DowntimeParts,
    /// How long the archive step took: inside the downtime in stop mode, after it in snapshot mode.
    pub archive_ms: i64,
    /// Snapshot mode: how long the sync with the services running took (0 in stop mode).
    pub presync_ms: i64,
    /// The copies to each `[[remote]]` tried after the backup (this one's, and any a down
    /// remote left pending before): `shipped`, or `pending` with the reason.
    pub copies: Vec<super::ship::CopyReport>,
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
    let mode = session.project.config.backup.mode;
    let mirror = match mode {
        BackupMode::Stop => None,
        BackupMode::Snapshot => match crate::effects::mirror::mirror_dir(&session.project) {
            Ok(dir) => Some(dir),
            Err(err) => return Err(session.failed_before_run(RunKind::Backup, err).await),
        },
    };
    let run = session
        .run(RunKind::Backup, |id| {
            let archive_path = session.archive_path(id, "");
            match mirror {
                None => RunSpec::Backup { archive_path, backup_kind: kind, note },
                Some(mirror) => RunSpec::SnapshotBackup {
                    archive_path,
                    backup_kind: kind,
                    note,
                    mirror: mirror.to_string_lossy().into_owned(),
                },
            }
        })
        .await?;
    conclude(&run)?;
    let mut report = report(&run, &session.journal.events(run.id())?)?;
    // The services are back and the backup recorded: shipping adds no downtime, and a copy that
    // fails leaves the backup as good as it was.
    report.copies = super::ship::ship_after(session, run.id()).await;
    Ok(report)
}

fn report(run: &Run, events: &[Event]) -> anyhow::Result<BackupReport> {
    let facts =
        run.archive().cloned().ok_or_else(|| anyhow::anyhow!("run {} completed without an archive", run.id()))?;
    let stopped = run.running().map(<[String]>::to_vec).unwrap_or_default();
    let details = run.archive_details().cloned().unwrap_or_default();
    let (downtime_parts, archive_ms, presync_ms) = history::backup_times(events);
    let mode =
        if matches!(run.spec(), RunSpec::SnapshotBackup { .. }) { BackupMode::Snapshot } else { BackupMode::Stop };
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
        mode: mode.as_str(),
        downtime_parts,
        archive_ms,
        presync_ms,
        copies: Vec::new(),
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
        let parts = &self.downtime_parts;
        let ms = render::duration_ms;
        match self.mode {
            "snapshot" => writeln!(
                out,
                "  downtime   {} (stop {}, sync {}, start {}); archived after the restart in {}, presync {}",
                ms(self.downtime_ms),
                ms(parts.stop_ms),
                ms(parts.sync_ms),
                ms(parts.start_ms),
                ms(self.archive_ms),
                ms(self.presync_ms)
            )?,
            _ => writeln!(
                out,
                "  downtime   {} (stop {}, archive {}, start {})",
                ms(self.downtime_ms),
                ms(parts.stop_ms),
                ms(self.archive_ms),
                ms(parts.start_ms)
            )?,
        }
        super::ship::write_lines(out, &self.copies)?;
        super::history::write_hook_failures(out, &self.hook_failures)
    }

    /// Exit 6 when an `after_backup` hook failed, 2 when a remote refused its settings or
    /// credentials: the backup stays recorded either way. A remote that is down is a warning.
    fn exit(&self) -> anyhow::Result<()> {
        super::history::hook_failure_exit(&format!("backup {}", self.backup_id), &self.hook_failures)?;
        super::ship::warn_and_exit(&self.copies)
    }
}
