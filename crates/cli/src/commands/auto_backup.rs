//! `lifeboat auto-backup`: the schedule's settings, and one scheduled backup.

use super::Ctx;
use crate::config::parse_cron;
use crate::exit::Exit;
use crate::project::Project;
use lifeboat_machine::BackupKind;
use serde_json::json;

/// One scheduled backup now, recorded as kind "auto".
pub async fn run_once(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let _lock = project.lock()?;
    let journal = project.journal()?;
    project.refuse_if_interrupted(&journal)?;
    let report = super::backup::backup(ctx, &project, &journal, BackupKind::Auto, None).await?;
    if ctx.json {
        ctx.print_json(&serde_json::to_value(&report)?)
    } else {
        println!("auto backup {} completed: {}", report.backup_id, report.path);
        Ok(())
    }
}

pub fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let settings = journal.settings()?;
    let cron = settings.cron.clone().unwrap_or_else(|| project.config.auto_backup.cron.clone());
    let next: Vec<String> = parse_cron(&cron)?
        .iter_after(chrono::Local::now())
        .take(3)
        .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string())
        .collect();
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
    println!("auto-backup  {}", if settings.auto_backup_enabled { "enabled" } else { "disabled" });
    println!("schedule     \"{cron}\": {described}");
    println!("next runs    {}", next.join(", "));
    match (settings.last_backup_at, &settings.last_backup_outcome) {
        (Some(at), Some(outcome)) => println!("last backup  {} ({outcome})", crate::render::local_time(at)),
        _ => println!("last backup  none yet"),
    }
    Ok(())
}

pub fn set_enabled(ctx: &Ctx, enabled: bool) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    journal.update_settings(|s| s.auto_backup_enabled = enabled)?;
    println!("auto-backup {}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

pub fn schedule(ctx: &Ctx, cron: &str) -> anyhow::Result<()> {
    let parsed = parse_cron(cron).map_err(|err| Exit::Usage.wrap(err))?;
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    journal.update_settings(|s| s.cron = Some(cron.to_owned()))?;
    println!("auto-backup schedule set to \"{cron}\": {}", parsed.describe());
    Ok(())
}
