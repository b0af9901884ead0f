//! `lifeboat backup` (and the backup half of `auto-backup run`).

use super::{Ctx, connect_docker};
use crate::executor::Executor;
use crate::exit::Exit;
use crate::project::Project;
use crate::render;
use lifeboat_journal::Journal;
use lifeboat_machine::{BackupKind, Effect, Event, Outcome, Run, RunSpec, SkippedPath, State};

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
}

pub async fn run(ctx: &Ctx, note: Option<String>) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let _lock = project.lock()?;
    let journal = project.journal()?;
    project.refuse_if_interrupted(&journal)?;
    let report = backup(ctx, &project, &journal, BackupKind::Manual, note).await?;
    print_report(ctx, &report)
}

/// Runs one backup under the caller's lock and returns its report, or an error (exit 1) saying
/// what failed and how the run ended.
pub async fn backup(
    ctx: &Ctx,
    project: &Project,
    journal: &Journal,
    kind: BackupKind,
    note: Option<String>,
) -> anyhow::Result<BackupReport> {
    // Before anything stops: a backup dir others could plant names in is refused (exit 2).
    crate::perms::refuse_unsafe_backup_dir(project)?;
    let docker = connect_docker().await?;
    let executor = Executor { project, journal, docker: Some(docker), progress: ctx.progress };
    // The lock is held, so no other run can take this id before `begin_run` does.
    let run_id = journal.last_run_id()?.unwrap_or(0) + 1;
    let archive_path = project.backup_dir().join(archive_name(&project.config.project.name, run_id));
    let spec = RunSpec::Backup { archive_path: archive_path.to_string_lossy().into_owned(), backup_kind: kind, note };
    let run = executor.start(spec).await?;
    let events = journal.events(run.id())?;
    note_last_backup(journal, &run);
    match run.state() {
        State::Completed => report(&run, &events),
        _ => Err(Exit::of_unfinished_run(&run).wrap(anyhow::anyhow!("{}", failure_summary(&run)))),
    }
}

/// Records how the last backup ended in the settings (`status`, `auto-backup status`). Best
/// effort: the run itself is already journaled, and this is only a summary of it.
pub fn note_last_backup(journal: &Journal, run: &Run) {
    if run.kind() != lifeboat_machine::RunKind::Backup {
        return;
    }
    let noted = journal.update_settings(|s| {
        s.last_backup_at = Some(run.last_event_at());
        s.last_backup_outcome = Some(run.state().as_str().to_owned());
    });
    if let Err(err) = noted {
        tracing::warn!("could not note the last backup in the settings: {err}");
    }
}

/// `demo-20261126T101500Z-run000012.tar.gz`: sortable by time, unique by run id.
fn archive_name(project: &str, run_id: u64) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    format!("{project}-{stamp}-run{run_id:06}.tar.gz")
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
        restarted: restarted(events).unwrap_or_else(|| stopped.iter().rev().cloned().collect()),
        stopped,
        downtime_ms: downtime_ms(events).unwrap_or(0),
        apparent_bytes: details.apparent_bytes,
        stored_bytes: details.stored_bytes,
        skipped: details.skipped,
    })
}

/// The services the run's last successful start brought up, in the order they came up, as its
/// journal says. `None` for journals written before starts reported their order.
pub fn restarted(events: &[Event]) -> Option<Vec<String>> {
    events.iter().rev().find_map(|event| match event {
        Event::Outcome { outcome: Outcome::Started { services }, .. } => Some(services.clone()),
        _ => None,
    })
}

/// Service downtime, from the journal: the intent to stop the first service to the outcome of
/// the last start.
pub fn downtime_ms(events: &[Event]) -> Option<i64> {
    let stop = events.iter().find_map(|e| match e {
        Event::Intent { at, effect: Effect::StopServices { services } } if !services.is_empty() => Some(*at),
        _ => None,
    })?;
    let mut last_start_intent = false;
    let mut up = None;
    for event in events {
        match event {
            Event::Intent { effect, .. } => {
                last_start_intent = matches!(effect, Effect::StartServices { .. } | Effect::ComposeUp { .. })
            }
            Event::Outcome { at, outcome: Outcome::Done | Outcome::Started { .. } } if last_start_intent => {
                up = Some(*at)
            }
            _ => {}
        }
    }
    Some(up?.0 - stop.0)
}

/// One paragraph for an unsuccessful run: what failed, how it ended, what to do.
pub fn failure_summary(run: &Run) -> String {
    let mut text = match (run.state(), crate::signals::cancelled_by(run)) {
        (State::RolledBack, Some(signal)) => {
            format!("{} run {} was cancelled by {signal} and rolled back", run.kind(), run.id())
        }
        (State::RolledBack, None) => format!("{} run {} failed and was rolled back", run.kind(), run.id()),
        (State::Failed, _) => {
            format!("{} run {} FAILED and could not be rolled back completely", run.kind(), run.id())
        }
        (other, _) => format!("{} run {} stopped while {other}", run.kind(), run.id()),
    };
    for failure in run.failures() {
        text.push_str(&format!("\n  {} ({}): {}", failure.state, failure.effect.name(), failure.error));
    }
    text.push_str(match run.state() {
        State::RolledBack if crate::signals::cancelled_by(run).is_some() => "\nservices are as they were before the run",
        State::RolledBack => "\nservices are as they were before the run; fix the cause above and run it again",
        State::Failed => {
            "\nsee 'lifeboat journal show' for every step; bring the services named above up by hand, then run 'lifeboat status'"
        }
        _ => "",
    });
    text
}

fn print_report(ctx: &Ctx, report: &BackupReport) -> anyhow::Result<()> {
    if ctx.json {
        return ctx.print_json(&serde_json::to_value(report)?);
    }
    outln!("backup {} completed", report.backup_id)?;
    outln!("  archive    {}", report.path)?;
    outln!(
        "  size       {} ({} files, {} of content, {} stored)",
        render::bytes(report.size_bytes),
        report.file_count,
        render::bytes(report.apparent_bytes),
        render::bytes(report.stored_bytes)
    )?;
    for skipped in &report.skipped {
        outln!("  skipped    {} ({}: not archived)", skipped.path, skipped.kind)?;
    }
    outln!("  sha256     {}", report.sha256)?;
    outln!("  stopped    {}", render::list(&report.stopped))?;
    outln!("  restarted  {}", render::list(&report.restarted))?;
    outln!("  downtime   {}", render::duration_ms(report.downtime_ms))?;
    Ok(())
}
