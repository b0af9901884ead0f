//! `lifeboat restore BACKUP_ID`: put a backup's data back, as a journaled restore run.
//!
//! The run verifies the archive before it touches anything, stops the running services, swaps
//! the backup's data in (keeping the current data aside), starts and verifies the services, and
//! only then deletes the data kept aside. Any failure before that verification puts the data
//! aside back and the services up again (see `crate::effects::data_swap` and the machine's
//! `settle`).

use super::{Ctx, confirm};
use crate::args::RestoreArgs;
use crate::exit::Exit;
use crate::fail;
use crate::manifest::Manifest;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use crate::runs::{RunSession, conclude, history};
use lifeboat_journal::BackupEntry;
use lifeboat_machine::{RunKind, RunSpec};
use std::io::Write;

/// What a finished restore reports (JSON: add fields, never rename).
#[derive(Debug, serde::Serialize)]
pub struct RestoreReport {
    pub run_id: u64,
    pub backup_id: u64,
    /// The roots put back, by their names in the archive (`paths/data`, `volumes/dbdata`): those
    /// its manifest lists.
    pub restored: Vec<String>,
    /// How those differ from the roots lifeboat.toml configures now, one sentence each.
    pub differences: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub downtime_ms: i64,
    /// The `after_restore` hooks that failed: the restore stands, and the command exits 6.
    pub hook_failures: Vec<String>,
}

pub async fn run(ctx: &Ctx, args: &RestoreArgs) -> anyhow::Result<RestoreReport> {
    let backup_id = args.backup_id.expect("clap requires BACKUP_ID without --from");
    let mut session = RunSession::open(ctx)?;
    let Some(entry) = session.journal.backup(backup_id)? else {
        fail!(Exit::Usage, "no backup {backup_id} in the catalog: see 'lifeboat list'")
    };
    session.connect().await?;
    // The roots come from the archive's manifest (docs/design.md, "Archive manifest"); an
    // archive too damaged to say is refused by the run's verification, before anything is done.
    let archive = session.project.dir.join(&entry.path);
    if !archive.exists() {
        crate::remotes::fetch_catalogued(&session.project, &session.journal, &entry, args.identity.as_deref()).await?;
    }
    let manifest = Manifest::read(&archive).ok().flatten();
    let volumes = session.volumes().await?;
    let (restored, differences) = match &manifest {
        Some(manifest) => (manifest_root_names(manifest), differences(&session.project, manifest, &volumes)),
        None => {
            let roots = crate::effects::data_swap::data_roots(&session.project, volumes)?;
            (roots.into_iter().map(|r| r.archive_name).collect(), Vec::new())
        }
    };
    confirm(
        args.yes,
        &format!("restore to backup {}", entry.id),
        &question(&session.project, &entry, &restored, &differences),
    )?;
    for difference in &differences {
        tracing::warn!("{difference}");
    }
    let run = session.run(RunKind::Restore, |_| RunSpec::Restore { backup: entry.backup_ref() }).await?;
    conclude(&run)?;
    let stopped = run.running().map(<[String]>::to_vec).unwrap_or_default();
    let events = session.journal.events(run.id())?;
    Ok(RestoreReport {
        run_id: run.id(),
        backup_id: entry.id,
        restored,
        differences,
        restarted: history::restarted(&events).unwrap_or_else(|| stopped.iter().rev().cloned().collect()),
        stopped,
        downtime_ms: history::downtime_ms(&events).unwrap_or(0),
        hook_failures: run.hook_failures().iter().map(|f| f.error.clone()).collect(),
    })
}

/// The data roots of a manifest, by their names in the archive.
fn manifest_root_names(manifest: &Manifest) -> Vec<String> {
    manifest
        .paths()
        .map(|(r, _)| r.archive_name.clone())
        .chain(manifest.volumes().map(|r| r.archive_name.clone()))
        .collect()
}

/// How the archive's roots differ from today's configuration, one sentence each.
fn differences(project: &Project, manifest: &Manifest, volumes: &[crate::docker::Volume]) -> Vec<String> {
    let in_archive = manifest_root_names(manifest);
    let configured: Vec<String> = crate::effects::data_swap::data_roots(project, volumes.to_vec())
        .map(|roots| roots.into_iter().map(|r| r.archive_name).collect())
        .unwrap_or_default();
    let mut found = Vec::new();
    for name in configured.iter().filter(|n| !in_archive.contains(n)) {
        found.push(format!("{name} is in lifeboat.toml but not in the backup: it is left as it is"));
    }
    for name in in_archive.iter().filter(|n| !configured.contains(n)) {
        found.push(format!("{name} is in the backup but not in lifeboat.toml: it is restored too"));
    }
    found
}

fn question(project: &Project, entry: &BackupEntry, restored: &[String], differences: &[String]) -> String {
    let mut text = format!(
        "restore backup {} ({}, made {}, {})?\n\
         the running services of {} stop, and {} are replaced by the backup's;\n\
         the current data is kept aside until the restored data runs healthy.",
        entry.id,
        entry.kind.as_str(),
        render::local_time(entry.created_at),
        render::bytes(entry.size_bytes),
        project.config.project.name,
        render::list(restored),
    );
    for difference in differences {
        text.push_str(&format!("\nnote: {difference}"));
    }
    text
}

impl Report for RestoreReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "restore of backup {} completed (run {})", self.backup_id, self.run_id)?;
        writeln!(out, "  restored   {}", render::list(&self.restored))?;
        for difference in &self.differences {
            writeln!(out, "  note       {difference}")?;
        }
        writeln!(out, "  stopped    {}", render::list(&self.stopped))?;
        writeln!(out, "  restarted  {}", render::list(&self.restarted))?;
        writeln!(out, "  downtime   {}", render::duration_ms(self.downtime_ms))?;
        history::write_hook_failures(out, &self.hook_failures)
    }

    /// Exit 6 when an `after_restore` hook failed: the restored data stays.
    fn exit(&self) -> anyhow::Result<()> {
        history::hook_failure_exit(&format!("restore run {}", self.run_id), &self.hook_failures)
    }
}
