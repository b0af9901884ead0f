//! `lifeboat auto-backup daemon`: scheduled backups in the foreground, for systemd or a
//! container, until SIGTERM or SIGINT.
//!
//! The shutdown sequence:
//! 1. The signal handlers are installed first, so a signal never kills the process with its
//!    default action, even in the middle of a backup or of the recovery at start.
//! 2. On start, an interrupted run (left by a crash) is recovered, as `lifeboat recover` would; if
//!    recovery fails the daemon exits with its error rather than schedule backups that would all
//!    be refused.
//! 3. A signal while waiting ends the daemon at once (exit 0).
//! 4. A signal during a backup cancels it at its next safe point, as in a one-shot command
//!    (`crate::signals`): the services it stopped are started again, its partial archive removed,
//!    the run journaled rolled back; then the daemon exits without starting another. A backup past
//!    its point of no return (recorded) finishes instead. A kill after the service manager's stop
//!    timeout (systemd's `TimeoutStopSec`) is a crash, which the next start recovers.
//!
//! Between runs the daemon holds neither the project lock nor the journal, so every other command
//! works while it waits. It reads the schedule only when `lifeboat.toml` or the journal file
//! changed since it last looked, so it rarely opens the journal (which only one process can have
//! open at a time).
//!
//! Output: one line per run on stdout (with `--json`, one JSON document per line), errors and
//! notices on stderr.

use super::Ctx;
use crate::exit::Exit;
use crate::output::Report;
use crate::project::{Project, interrupted_runs};
use crate::runs::scheduled::{ScheduledRun, scheduled_backup};
use crate::schedule::{self, Job, Schedule, SystemClock};
use chrono::{DateTime, Local, Utc};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;
use tokio::signal::unix::{SignalKind, signal};

/// What the daemon did when it stopped: how many scheduled runs it made.
#[derive(Debug, Serialize)]
pub struct DaemonReport {
    pub runs: u64,
}

impl Report for DaemonReport {
    fn write_text(&self, _: &mut dyn Write) -> std::io::Result<()> {
        // Its one line per run is on stdout already; the summary is on stderr.
        Ok(())
    }
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<DaemonReport> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        eprintln!("lifeboat daemon: {name} received: no new runs will start");
    };

    let project = Project::load(&ctx.dir)?;
    recover_at_start(ctx, &project).await?;
    eprintln!("lifeboat daemon: watching {} (pid {})", project.dir.display(), std::process::id());
    let watched = [project.dir.join(crate::config::CONFIG_FILE), project.journal_path()];
    let mut job = ProjectJob { ctx: ctx.clone(), watched, seen: None, last_planned: None };
    // The zone is read once: changing auto_backup.timezone takes a restart of the daemon.
    let runs = match project.config.auto_backup.zone()? {
        Some(zone) => schedule::run_loop(&SystemClock, &mut job, &zone, shutdown).await,
        None => schedule::run_loop(&SystemClock, &mut job, &Local, shutdown).await,
    };
    eprintln!("lifeboat daemon: stopped after {runs} run(s)");
    Ok(DaemonReport { runs: runs as u64 })
}

/// Settles runs a crash left unfinished, before the first scheduled backup.
async fn recover_at_start(ctx: &Ctx, project: &Project) -> anyhow::Result<()> {
    let interrupted = {
        let _lock = match project.lock() {
            Ok(lock) => lock,
            Err(err) if Exit::of(&err) == Exit::Locked => {
                // Another run is in progress: it is not interrupted, and its end is its own.
                tracing::info!("{err:#}; not checking for interrupted runs at start");
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let journal = project.journal()?;
        interrupted_runs(&journal)?.len()
    };
    if interrupted > 0 {
        eprintln!("lifeboat daemon: {interrupted} interrupted run(s) in the journal: recovering first");
        let recovered = async {
            let mut session = crate::runs::RunSession::open_to_recover(ctx)?;
            let report = crate::runs::recover::recover_all(&mut session).await?;
            let mut text = Vec::new();
            report.write_text(&mut text)?;
            eprint!("{}", String::from_utf8_lossy(&text));
            report.exit()
        };
        recovered.await.map_err(|err: anyhow::Error| {
            err.context("recovery at start failed: the daemon cannot schedule backups until it succeeds")
        })?;
    }
    Ok(())
}

/// The real job: the project's schedule, and `auto-backup run`'s backup and prune.
struct ProjectJob {
    ctx: Ctx,
    /// `lifeboat.toml` and the journal.
    watched: [PathBuf; 2],
    /// The files the schedule comes from, as last read, and what they said.
    seen: Option<(Fingerprint, Schedule)>,
    last_planned: Option<(Schedule, Option<DateTime<Utc>>)>,
}

/// The modification time and length of `lifeboat.toml` and of the journal: the schedule is read
/// again only when one of them changed.
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

impl ProjectJob {
    fn fingerprint(&self) -> Fingerprint {
        self.watched
            .iter()
            .map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    }
}

impl Job for ProjectJob {
    fn schedule(&mut self) -> anyhow::Result<Schedule> {
        let fingerprint = self.fingerprint();
        if let Some((seen, schedule)) = &self.seen
            && *seen == fingerprint
        {
            return Ok(schedule.clone());
        }
        tracing::debug!("reading the schedule from lifeboat.toml and the journal");
        let project = Project::load(&self.ctx.dir)?;
        let settings = {
            // Opened, read and closed: the journal is exclusively locked while open.
            let journal = project.journal()?;
            journal.settings()?
        };
        let schedule = Schedule {
            enabled: settings.auto_backup_enabled,
            cron: settings.cron.unwrap_or_else(|| project.config.auto_backup.cron.clone()),
        };
        // Fingerprint after the read: opening the journal may itself touch the file.
        self.seen = Some((self.fingerprint(), schedule.clone()));
        Ok(schedule)
    }

    fn planned(&mut self, schedule: &Schedule, at: Option<DateTime<Utc>>) {
        if self.last_planned.as_ref() == Some(&(schedule.clone(), at)) {
            return;
        }
        self.last_planned = Some((schedule.clone(), at));
        let state =
            if schedule.enabled { "enabled" } else { "disabled: no backup until 'lifeboat auto-backup enable'" };
        match at {
            Some(at) => eprintln!(
                "lifeboat daemon: schedule \"{}\" ({state}), next at {}",
                schedule.cron,
                at.with_timezone(&Local).format("%Y-%m-%d %H:%M %Z")
            ),
            None => eprintln!("lifeboat daemon: schedule \"{}\" never fires: set another one", schedule.cron),
        }
    }

    async fn run(&mut self) {
        let started = Utc::now();
        // Progress bars make no sense in a service's log.
        let ctx = Ctx { progress: false, ..self.ctx.clone() };
        let result = scheduled_backup(&ctx).await;
        let line = RunLine::new(started, &result);
        // A closed stdout must not stop the daemon: the run is journaled anyway.
        let _ = crate::output::print_line(self.ctx.json, &line);
        match &result {
            Ok(run) => {
                if let Err(err) = run.exit() {
                    eprintln!("lifeboat daemon: after backup {}: {err:#}", run.backup.backup_id);
                }
            }
            Err(err) => eprintln!("lifeboat daemon: scheduled backup failed: {err:#}"),
        }
    }
}

/// The daemon's line for one scheduled run: `{"at", "ok": true, "backup", "prune"}` or
/// `{"at", "ok": false, "exit", "error"}`.
#[derive(Serialize)]
struct RunLine<'a> {
    at: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<&'a crate::runs::backup::BackupReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prune: Option<crate::runs::scheduled::PruneView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip)]
    deleted: usize,
}

impl<'a> RunLine<'a> {
    fn new(started: DateTime<Utc>, result: &'a anyhow::Result<ScheduledRun>) -> RunLine<'a> {
        let at = started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match result {
            Ok(run) => RunLine {
                at,
                ok: true,
                backup: Some(&run.backup),
                prune: Some(run.prune_view()),
                exit: None,
                error: None,
                deleted: run.prune.as_ref().map_or(0, |p| p.deleted.len()),
            },
            Err(err) => RunLine {
                at,
                ok: false,
                backup: None,
                prune: None,
                exit: Some(Exit::of(err) as u8),
                error: Some(format!("{err:#}")),
                deleted: 0,
            },
        }
    }
}

impl Report for RunLine<'_> {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match (self.backup, self.exit) {
            (Some(backup), _) => writeln!(
                out,
                "{} backup {} completed: {} ({} deleted by retention)",
                self.at, backup.backup_id, backup.path, self.deleted
            ),
            (None, exit) => {
                writeln!(out, "{} scheduled backup FAILED (exit {}): see stderr", self.at, exit.unwrap_or(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::prune::PruneReport;

    #[test]
    fn run_line_shapes() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").unwrap().with_timezone(&Utc);
        let ok = Ok(ScheduledRun { backup: crate::report_shapes::backup(), prune: Ok(PruneReport::default()) });
        insta::assert_snapshot!("daemon_line_ok", serde_json::to_string(&RunLine::new(at, &ok)).unwrap());
        let failed = Err(Exit::NeedsRecovery.wrap(anyhow::anyhow!("run 2 (backup) was interrupted")));
        insta::assert_snapshot!("daemon_line_failed", serde_json::to_string(&RunLine::new(at, &failed)).unwrap());
        let mut text = Vec::new();
        RunLine::new(at, &failed).write_text(&mut text).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2026-11-26T02:00:00Z scheduled backup FAILED (exit 4): see stderr\n"
        );
    }
}
