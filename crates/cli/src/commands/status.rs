//! `lifeboat status`: one screen on the project's health. Reads only; takes no lock.

use super::Ctx;
use crate::docker::Docker;
use crate::lock::ProjectLock;
use crate::project::Project;
use crate::render;
use serde_json::json;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let name = &project.config.project.name;
    let holder = ProjectLock::holder(&project.state_dir());

    // Services: a daemon that does not answer is reported, not fatal.
    let services = match Docker::connect().await {
        Ok(docker) => {
            let file = project.compose_file();
            docker.project_containers(name, file.exists().then_some(file.as_path())).await.map_err(|e| e.to_string())
        }
        Err(err) => Err(err.to_string()),
    };

    // The journal is held exclusively while a run is in progress (which may start right now).
    let journal = match holder {
        Some(_) => None,
        None => match project.journal() {
            Ok(journal) => Some(journal),
            Err(err) if crate::exit::Exit::of(&err) == crate::exit::Exit::Locked => None,
            Err(err) => return Err(err),
        },
    };
    let holder = holder.or_else(|| journal.is_none().then(|| ProjectLock::holder(&project.state_dir())).flatten());
    let mut backups = match &journal {
        Some(j) => j.backups()?,
        None => Vec::new(),
    };
    // What others can read or write: the backup dir, the state, the archives (docs/security.md).
    let archives: Vec<_> = backups.iter().map(|b| project.dir.join(&b.path)).collect();
    let warnings = crate::perms::exposure_warnings(&project, archives.iter().map(|p| p.as_path()));
    let last_backup = backups.pop();
    let interrupted = match &journal {
        Some(j) => crate::project::interrupted_runs(j)?,
        None => Vec::new(),
    };
    let settings = match &journal {
        Some(j) => Some(j.settings()?),
        None => None,
    };
    let journal_bytes = std::fs::metadata(project.journal_path()).map(|m| m.len()).unwrap_or(0);

    if ctx.json {
        return ctx.print_json(&json!({
            "project": name,
            "dir": project.dir,
            "run_in_progress": holder,
            "services": match &services {
                Ok(list) => json!(list.iter().map(|c| json!({
                    "service": c.service, "container": c.name, "state": c.state.to_string(), "health": c.health.to_string(),
                })).collect::<Vec<_>>()),
                Err(err) => json!({ "error": err }),
            },
            "last_backup": last_backup.as_ref().map(|b| json!({
                "id": b.id, "created_at": render::rfc3339(b.created_at), "path": b.path, "size_bytes": b.size_bytes,
            })),
            "auto_backup": settings.as_ref().map(|s| json!({ "enabled": s.auto_backup_enabled, "cron": s.cron })),
            "deployed_version": settings.as_ref().and_then(|s| s.deployed_version.clone()),
            "interrupted_runs": interrupted.iter().map(|r| json!({
                "run_id": r.id(), "kind": r.kind().as_str(), "state": r.state().as_str(),
            })).collect::<Vec<_>>(),
            "journal_bytes": journal_bytes,
            "warnings": warnings.iter().map(|w| &w.message).collect::<Vec<_>>(),
        }));
    }

    outln!("project   {name} ({})", project.dir.display())?;
    if let Some(pid) = &holder {
        outln!("run       in progress (lifeboat pid {pid})")?;
    }
    match &services {
        Ok(list) if list.is_empty() => outln!("services  none found with label com.docker.compose.project={name}")?,
        Ok(list) => {
            outln!("services")?;
            for c in list {
                let health = if c.has_healthcheck { format!(", {}", c.health) } else { String::new() };
                outln!("  {:<16} {}{health}", c.service, c.state)?;
            }
        }
        Err(err) => outln!("services  unknown: {err}")?,
    }
    match &last_backup {
        Some(b) => outln!(
            "backup    last {} at {} ({}, {})",
            b.id,
            render::local_time(b.created_at),
            render::bytes(b.size_bytes),
            b.kind.as_str()
        )?,
        None if journal.is_some() => outln!("backup    none yet")?,
        None => {}
    }
    if let Some(s) = &settings {
        let cron = s.cron.clone().unwrap_or_else(|| project.config.auto_backup.cron.clone());
        if s.auto_backup_enabled {
            let next = super::auto_backup::next_runs(&project, &cron, 1)?;
            outln!("schedule  enabled, \"{cron}\", next {}", next.first().map_or("never", String::as_str))?;
        } else {
            outln!("schedule  disabled, \"{cron}\"")?;
        }
        if let Some(version) = &s.deployed_version {
            outln!("version   {version}")?;
        }
    }
    for run in &interrupted {
        outln!(
            "ATTENTION run {} ({}) was interrupted while {}: run 'lifeboat recover'",
            run.id(),
            run.kind(),
            run.state()
        )?;
    }
    outln!("journal   {} ({})", render::bytes(journal_bytes), project.journal_path().display())?;
    for warning in &warnings {
        outln!("WARNING   {}", warning.message)?;
    }
    Ok(())
}
