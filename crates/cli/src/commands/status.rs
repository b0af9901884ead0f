//! `lifeboat status`: one screen on the project's health. Reads only; takes no lock.

use super::Ctx;
use crate::docker::{Container, Docker};
use crate::lock::ProjectLock;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use lifeboat_journal::Settings;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

/// What `status` reports (JSON: add fields, never rename).
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub project: String,
    pub dir: PathBuf,
    /// The pid of the lifeboat holding the project lock, if one does.
    pub run_in_progress: Option<String>,
    /// The project's containers, or `{"error": ...}` when the daemon does not answer.
    pub services: Services,
    pub last_backup: Option<LastBackup>,
    pub auto_backup: Option<AutoBackup>,
    pub deployed_version: Option<String>,
    pub interrupted_runs: Vec<InterruptedRun>,
    pub journal_bytes: u64,
    pub warnings: Vec<String>,
    /// The figures `[metrics] file` holds (`crate::metrics`); `null` while a run holds the journal.
    pub metrics: Option<crate::metrics::Figures>,
    /// `backup.mode`, and in snapshot mode the mirror: where, its size on disk, when it last
    /// was a consistent snapshot.
    pub backup_mode: BackupModeStatus,
    /// Each `[[remote]]`: where, whether its copies are encrypted, how many it holds and how
    /// many are pending (`null` counts while a run holds the journal).
    pub remotes: Vec<RemoteStatus>,
    #[serde(skip)]
    journal_path: PathBuf,
    #[serde(skip)]
    journal_open: bool,
    #[serde(skip)]
    next_run: Option<String>,
    /// The schedule in effect: the journal's, else `lifeboat.toml`'s.
    #[serde(skip)]
    cron: String,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Services {
    Listed(Vec<ServiceState>),
    Unknown { error: String },
}

#[derive(Debug, Serialize)]
pub struct ServiceState {
    pub service: String,
    pub container: String,
    pub state: String,
    pub health: String,
    #[serde(skip)]
    has_healthcheck: bool,
}

#[derive(Debug, Serialize)]
pub struct LastBackup {
    pub id: u64,
    pub created_at: String,
    pub path: String,
    pub size_bytes: u64,
    #[serde(skip)]
    text: String,
}

#[derive(Debug, Serialize)]
pub struct BackupModeStatus {
    pub mode: &'static str,
    /// Snapshot mode only (`null` in stop mode), as are the two below.
    pub mirror_dir: Option<PathBuf>,
    /// `null` before the first sync.
    pub mirror_bytes: Option<u64>,
    /// `null` when the mirror is not a consistent snapshot now (none yet, or a sync since).
    pub mirror_consistent_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RemoteStatus {
    pub name: String,
    pub url: String,
    pub encrypted: bool,
    pub copies: Option<u64>,
    pub pending: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct AutoBackup {
    pub enabled: bool,
    pub cron: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct InterruptedRun {
    pub run_id: u64,
    pub kind: &'static str,
    pub state: &'static str,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<StatusReport> {
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
    let settings: Option<Settings> = match &journal {
        Some(j) => Some(j.settings()?),
        None => None,
    };
    let metrics = match &journal {
        Some(j) => Some(crate::metrics::Figures::gather(j, &project)?),
        None => None,
    };
    let mode = project.config.backup.mode;
    let mirror_dir = match mode {
        crate::config::BackupMode::Stop => None,
        crate::config::BackupMode::Snapshot => Some(project.dir.join(&project.config.backup.mirror_dir)),
    };
    let consistent = match (&journal, &mirror_dir) {
        (Some(j), Some(_)) => crate::runs::history::mirror_consistent_at(j)?,
        _ => None,
    };
    let backup_mode = BackupModeStatus {
        mode: mode.as_str(),
        mirror_bytes: mirror_dir.as_deref().and_then(crate::effects::mirror::disk_usage),
        mirror_dir,
        mirror_consistent_at: consistent.map(render::rfc3339),
    };
    let cron =
        settings.as_ref().and_then(|s| s.cron.clone()).unwrap_or_else(|| project.config.auto_backup.cron.clone());
    let next_run = match &settings {
        Some(s) if s.auto_backup_enabled => crate::schedule::next_runs_for(&project, &cron, 1)?.into_iter().next(),
        _ => None,
    };
    let copies = match &journal {
        Some(j) => Some(j.copies()?),
        None => None,
    };
    let remotes = project
        .config
        .remotes
        .iter()
        .map(|remote| RemoteStatus {
            name: remote.name.clone(),
            url: remote.url.clone(),
            encrypted: remote.encrypts(),
            copies: copies.as_ref().map(|c| c.iter().filter(|c| c.remote == remote.name).count() as u64),
            pending: metrics.as_ref().and_then(|m| m.copies_pending.get(&remote.name).copied()),
        })
        .collect();
    Ok(StatusReport {
        project: name.clone(),
        dir: project.dir.clone(),
        run_in_progress: holder,
        services: match services {
            Ok(list) => Services::Listed(list.iter().map(service_state).collect()),
            Err(error) => Services::Unknown { error },
        },
        last_backup: last_backup.map(|b| LastBackup {
            text: format!(
                "last {} at {} ({}, {})",
                b.id,
                render::local_time(b.created_at),
                render::bytes(b.size_bytes),
                b.kind.as_str()
            ),
            id: b.id,
            created_at: render::rfc3339(b.created_at),
            path: b.path,
            size_bytes: b.size_bytes,
        }),
        auto_backup: settings.as_ref().map(|s| AutoBackup { enabled: s.auto_backup_enabled, cron: s.cron.clone() }),
        deployed_version: settings.as_ref().and_then(|s| s.deployed_version.clone()),
        interrupted_runs: interrupted
            .iter()
            .map(|r| InterruptedRun { run_id: r.id(), kind: r.kind().as_str(), state: r.state().as_str() })
            .collect(),
        journal_bytes: std::fs::metadata(project.journal_path()).map(|m| m.len()).unwrap_or(0),
        warnings: warnings.into_iter().map(|w| w.message).collect(),
        metrics,
        backup_mode,
        remotes,
        journal_path: project.journal_path(),
        journal_open: journal.is_some(),
        next_run,
        cron,
    })
}

fn service_state(c: &Container) -> ServiceState {
    ServiceState {
        service: c.service.clone(),
        container: c.name.clone(),
        state: c.state.to_string(),
        health: c.health.to_string(),
        has_healthcheck: c.has_healthcheck,
    }
}

impl Report for StatusReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "project   {} ({})", self.project, self.dir.display())?;
        if let Some(pid) = &self.run_in_progress {
            writeln!(out, "run       in progress (lifeboat pid {pid})")?;
        }
        match &self.services {
            Services::Listed(list) if list.is_empty() => {
                writeln!(out, "services  none found with label com.docker.compose.project={}", self.project)?
            }
            Services::Listed(list) => {
                writeln!(out, "services")?;
                for c in list {
                    let health = if c.has_healthcheck { format!(", {}", c.health) } else { String::new() };
                    writeln!(out, "  {:<16} {}{health}", c.service, c.state)?;
                }
            }
            Services::Unknown { error } => writeln!(out, "services  unknown: {error}")?,
        }
        match &self.last_backup {
            Some(b) => writeln!(out, "backup    {}", b.text)?,
            None if self.journal_open => writeln!(out, "backup    none yet")?,
            None => {}
        }
        if let Some(auto) = &self.auto_backup {
            let cron = &self.cron;
            if auto.enabled {
                writeln!(out, "schedule  enabled, \"{cron}\", next {}", self.next_run.as_deref().unwrap_or("never"))?;
            } else {
                writeln!(out, "schedule  disabled, \"{cron}\"")?;
            }
        }
        if let Some(version) = &self.deployed_version {
            writeln!(out, "version   {version}")?;
        }
        let mode = &self.backup_mode;
        if let Some(dir) = &mode.mirror_dir {
            let size = mode.mirror_bytes.map_or("empty".to_owned(), render::bytes);
            let consistent = match &mode.mirror_consistent_at {
                Some(at) => format!("a consistent snapshot since {at}"),
                None => "not a consistent snapshot now (the next backup makes one)".to_owned(),
            };
            writeln!(out, "mode      snapshot, mirror {} ({size}), {consistent}", dir.display())?;
        }
        for remote in &self.remotes {
            let encrypted = if remote.encrypted { "encrypted" } else { "NOT ENCRYPTED (encrypt = false)" };
            let counts = match (remote.copies, remote.pending) {
                (Some(copies), Some(0)) => format!(", {copies} copies, none pending"),
                (Some(copies), Some(pending)) => {
                    format!(", {copies} copies, {pending} PENDING: 'lifeboat push' ships them")
                }
                _ => String::new(),
            };
            writeln!(out, "remote    {} {} ({encrypted}){counts}", remote.name, remote.url)?;
        }
        for run in &self.interrupted_runs {
            writeln!(
                out,
                "ATTENTION run {} ({}) was interrupted while {}: run 'lifeboat recover'",
                run.run_id, run.kind, run.state
            )?;
        }
        writeln!(out, "journal   {} ({})", render::bytes(self.journal_bytes), self.journal_path.display())?;
        for warning in &self.warnings {
            writeln!(out, "WARNING   {warning}")?;
        }
        Ok(())
    }
}
