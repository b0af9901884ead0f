//! `lifeboat auto-backup`: the schedule's settings, and one scheduled backup.

use super::Ctx;
use super::backup::BackupReport;
use super::prune::PruneReport;
use crate::config::parse_cron;
use crate::exit::Exit;
use crate::project::Project;
use lifeboat_machine::BackupKind;
use serde_json::json;

/// One scheduled backup now, recorded as kind "auto", then retention (`lifeboat prune`).
pub async fn run_once(ctx: &Ctx) -> anyhow::Result<()> {
    let run = scheduled_backup(ctx).await?;
    if ctx.json {
        let mut value = serde_json::to_value(&run.backup)?;
        value["prune"] =
            run.prune.as_ref().map_or_else(|err| json!({ "error": format!("{err:#}") }), PruneReport::to_json);
        ctx.print_json(&value)?;
    } else {
        outln!("auto backup {} completed: {}", run.backup.backup_id, run.backup.path)?;
        if let Ok(prune) = &run.prune {
            prune.print_human()?;
        }
    }
    run.prune?.result()
}

/// A scheduled backup and the prune after it.
pub struct ScheduledRun {
    pub backup: BackupReport,
    /// Retention ran only because the backup succeeded; its failure does not undo the backup.
    pub prune: anyhow::Result<PruneReport>,
}

/// One scheduled backup then retention, under one hold of the project lock: what `auto-backup
/// run` does, and what the daemon does at each scheduled time. A failed backup skips retention,
/// so a failing backup never lets old backups go.
pub async fn scheduled_backup(ctx: &Ctx) -> anyhow::Result<ScheduledRun> {
    let project = Project::load(&ctx.dir)?;
    let _lock = project.lock()?;
    let journal = project.journal()?;
    project.refuse_if_interrupted(&journal)?;
    let backup = super::backup::backup(ctx, &project, &journal, BackupKind::Auto, None).await?;
    let prune = super::prune::prune(ctx, &project, &journal, false).await;
    Ok(ScheduledRun { backup, prune })
}

pub fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let settings = journal.settings()?;
    let cron = settings.cron.clone().unwrap_or_else(|| project.config.auto_backup.cron.clone());
    let next = next_runs(&project, &cron, 3)?;
    let described = parse_cron(&cron)?.describe();
    if ctx.json {
        return ctx.print_json(&json!({
            "enabled": settings.auto_backup_enabled,
            "cron": cron,
            "description": described,
            "next_runs": next,
            "last_backup_at": settings.last_backup_at.map(crate::render::rfc3339),
            "last_backup_outcome": settings.last_backup_outcome,
        }));
    }
    outln!("auto-backup  {}", if settings.auto_backup_enabled { "enabled" } else { "disabled" })?;
    outln!("schedule     \"{cron}\": {described}")?;
    outln!("next runs    {}", next.join(", "))?;
    match (settings.last_backup_at, &settings.last_backup_outcome) {
        (Some(at), Some(outcome)) => outln!("last backup  {} ({outcome})", crate::render::local_time(at))?,
        _ => outln!("last backup  none yet")?,
    }
    Ok(())
}

/// The next `n` times `cron` fires, in the schedule's time zone, for people.
pub fn next_runs(project: &Project, cron: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let cron = parse_cron(cron)?;
    Ok(match project.config.auto_backup.zone()? {
        Some(zone) => formatted(&cron, chrono::Utc::now().with_timezone(&zone), n),
        None => formatted(&cron, chrono::Local::now(), n),
    })
}

fn formatted<Tz: chrono::TimeZone>(cron: &croner::Cron, now: chrono::DateTime<Tz>, n: usize) -> Vec<String>
where
    Tz::Offset: std::fmt::Display,
{
    crate::schedule::next_runs(cron, &now, n).iter().map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string()).collect()
}

pub fn set_enabled(ctx: &Ctx, enabled: bool) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    journal.update_settings(|s| s.auto_backup_enabled = enabled)?;
    outln!("auto-backup {}", if enabled { "enabled" } else { "disabled" })?;
    Ok(())
}

pub fn schedule(ctx: &Ctx, cron: &str) -> anyhow::Result<()> {
    let parsed = parse_cron(cron).map_err(|err| Exit::Usage.wrap(err))?;
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    journal.update_settings(|s| s.cron = Some(cron.to_owned()))?;
    outln!("auto-backup schedule set to \"{cron}\": {}", parsed.describe())?;
    Ok(())
}
