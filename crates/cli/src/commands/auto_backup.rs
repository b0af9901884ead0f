//! `lifeboat auto-backup`: the schedule's settings, and one scheduled backup.

use super::Ctx;
use crate::config::parse_cron;
use crate::exit::Exit;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use crate::runs::scheduled::{ScheduledRun, scheduled_backup};
use serde::Serialize;
use std::io::Write;

/// One scheduled backup now, recorded as kind "auto", then retention (`lifeboat prune`).
pub async fn run_once(ctx: &Ctx) -> anyhow::Result<ScheduledRun> {
    scheduled_backup(ctx).await
}

/// The schedule as `auto-backup status`, `enable`, `disable` and `schedule` report it.
#[derive(Debug, Serialize)]
pub struct ScheduleReport {
    pub enabled: bool,
    pub cron: String,
    /// The schedule in words.
    pub description: String,
    /// The next three times it fires, in the schedule's time zone.
    pub next_runs: Vec<String>,
    pub last_backup_at: Option<String>,
    pub last_backup_outcome: Option<String>,
    #[serde(skip)]
    last_backup: Option<lifeboat_machine::Timestamp>,
    /// What the command changed: `null` for `status`.
    pub changed: Option<&'static str>,
}

pub fn status(ctx: &Ctx) -> anyhow::Result<ScheduleReport> {
    schedule_report(ctx, None)
}

pub fn set_enabled(ctx: &Ctx, enabled: bool) -> anyhow::Result<ScheduleReport> {
    schedule_report(ctx, Some(Change::Enabled(enabled)))
}

pub fn schedule(ctx: &Ctx, cron: &str) -> anyhow::Result<ScheduleReport> {
    parse_cron(cron).map_err(|err| Exit::Usage.wrap(err))?;
    schedule_report(ctx, Some(Change::Cron(cron)))
}

enum Change<'a> {
    Enabled(bool),
    Cron(&'a str),
}

/// Applies `change` to the journal's settings (if any), then reads the schedule back.
fn schedule_report(ctx: &Ctx, change: Option<Change<'_>>) -> anyhow::Result<ScheduleReport> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let changed = match change {
        None => None,
        Some(Change::Enabled(enabled)) => {
            journal.update_settings(|s| s.auto_backup_enabled = enabled)?;
            Some(if enabled { "enabled" } else { "disabled" })
        }
        Some(Change::Cron(cron)) => {
            journal.update_settings(|s| s.cron = Some(cron.to_owned()))?;
            Some("schedule")
        }
    };
    let settings = journal.settings()?;
    let cron = settings.cron.clone().unwrap_or_else(|| project.config.auto_backup.cron.clone());
    Ok(ScheduleReport {
        enabled: settings.auto_backup_enabled,
        description: parse_cron(&cron)?.describe(),
        next_runs: crate::schedule::next_runs_for(&project, &cron, 3)?,
        cron,
        last_backup_at: settings.last_backup_at.map(render::rfc3339),
        last_backup: settings.last_backup_at,
        last_backup_outcome: settings.last_backup_outcome,
        changed,
    })
}

impl Report for ScheduleReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match self.changed {
            Some("schedule") => {
                return writeln!(out, "auto-backup schedule set to \"{}\": {}", self.cron, self.description);
            }
            Some(changed) => return writeln!(out, "auto-backup {changed}"),
            None => {}
        }
        writeln!(out, "auto-backup  {}", if self.enabled { "enabled" } else { "disabled" })?;
        writeln!(out, "schedule     \"{}\": {}", self.cron, self.description)?;
        writeln!(out, "next runs    {}", self.next_runs.join(", "))?;
        match (self.last_backup, &self.last_backup_outcome) {
            (Some(at), Some(outcome)) => writeln!(out, "last backup  {} ({outcome})", render::local_time(at)),
            _ => writeln!(out, "last backup  none yet"),
        }
    }
}
