//! `lifeboat import ARCHIVE...` and `lifeboat journal rebuild`: a catalog rebuilt from archives
//! that stand alone (docs/design.md, "Archive manifest").
//!
//! Neither is a run: cataloguing an archive that was checked whole is one durable insert, which
//! a crash either made or did not, and importing again is a no-op.

use super::Ctx;
use crate::exit::Exit;
use crate::fail;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use crate::runs::standalone;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `import` did with each archive (JSON: add fields, never rename).
#[derive(Debug, serde::Serialize)]
pub struct ImportReport {
    pub archives: Vec<Imported>,
    /// `journal rebuild` only: where the broken journal was moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_journal_kept_at: Option<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct Imported {
    pub path: String,
    /// `imported`, `already_catalogued` or `refused`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn run(ctx: &Ctx, paths: &[PathBuf]) -> anyhow::Result<ImportReport> {
    let project = Project::load(&ctx.dir)?;
    let _lock = project.lock()?;
    let journal = project.journal()?;
    let paths = paths.iter().map(|p| standalone::archive_arg(p)).collect::<anyhow::Result<Vec<_>>>()?;
    import_all(ctx, &project, &journal, &paths, None)
}

/// Catalogs each archive; one that fails is reported and the others still go in. Any failure
/// makes the command fail afterwards (exit 5 when an archive is damaged or conflicts, else 2).
fn import_all(
    ctx: &Ctx,
    project: &Project,
    journal: &lifeboat_journal::Journal,
    paths: &[PathBuf],
    broken_journal_kept_at: Option<String>,
) -> anyhow::Result<ImportReport> {
    let mut archives = Vec::new();
    let mut worst: Option<Exit> = None;
    for path in paths {
        let result = standalone::check(path, ctx.progress).and_then(|checked| {
            if checked.manifest.project != project.config.project.name {
                fail!(
                    Exit::Usage,
                    "{} is a backup of project {:?}, not of {:?}",
                    path.display(),
                    checked.manifest.project,
                    project.config.project.name
                );
            }
            let new = checked.import_into(journal)?;
            Ok((checked, new))
        });
        archives.push(match result {
            Ok((checked, new)) => Imported {
                path: path.display().to_string(),
                outcome: if new { "imported" } else { "already_catalogued" },
                backup_id: Some(checked.manifest.run_id),
                kind: Some(checked.manifest.kind.clone()),
                size_bytes: Some(checked.report.size_bytes),
                error: None,
            },
            Err(err) => {
                let code = Exit::of(&err);
                tracing::error!("{err:#}");
                worst = Some(if code == Exit::Integrity || worst == Some(Exit::Integrity) {
                    Exit::Integrity
                } else {
                    code
                });
                Imported {
                    path: path.display().to_string(),
                    outcome: "refused",
                    backup_id: None,
                    kind: None,
                    size_bytes: None,
                    error: Some(format!("{err:#}")),
                }
            }
        });
    }
    let report = ImportReport { archives, broken_journal_kept_at };
    if let Some(code) = worst {
        let total = report.archives.len();
        let refused: Vec<String> = report
            .archives
            .iter()
            .filter(|a| a.outcome == "refused")
            .map(|a| format!("{}: {}", a.path, a.error.as_deref().unwrap_or("")))
            .collect();
        // What was imported, was: a person sees it listed; `--json` gets the one error document.
        if !ctx.json {
            crate::output::emit(false, report)?;
        }
        fail!(code, "{} of {total} archive(s) could not be imported:\n  {}", refused.len(), refused.join("\n  "));
    }
    Ok(report)
}

/// `journal rebuild`: only for a journal that cannot be opened. Moves it aside, starts a new one
/// and imports every archive in `backup.dir`.
pub fn rebuild(ctx: &Ctx) -> anyhow::Result<ImportReport> {
    let project = Project::load(&ctx.dir)?;
    let _lock = project.lock()?;
    let path = project.journal_path();
    if !path.exists() {
        fail!(Exit::Usage, "there is no journal at {} to rebuild: 'lifeboat import' catalogs archives", path.display());
    }
    match project.journal() {
        Ok(journal) => {
            drop(journal);
            fail!(
                Exit::Usage,
                "the journal {} opens, so it is not rebuilt: 'lifeboat journal verify' checks it, and 'lifeboat import' \
                 adds archives to it",
                path.display()
            )
        }
        Err(err) if Exit::of(&err) == Exit::Integrity => {
            tracing::warn!("{err:#}");
        }
        Err(err) => return Err(err),
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let aside = path.with_file_name(format!("journal.redb.broken-{stamp}"));
    std::fs::rename(&path, &aside).with_context(|| format!("cannot move {} aside", path.display()))?;
    crate::fsutil::fsync_dir(crate::fsutil::parent(&path))?;
    tracing::warn!("moved the broken journal to {}; starting a new one", aside.display());
    let journal = project.journal()?;
    let archives = standalone::archives_in(&project.backup_dir())?;
    import_all(ctx, &project, &journal, &archives, Some(aside.display().to_string()))
}

impl Report for ImportReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if let Some(aside) = &self.broken_journal_kept_at {
            writeln!(out, "the broken journal is kept at {aside}; a new journal was started")?;
        }
        if self.archives.is_empty() {
            return writeln!(out, "no archives to import");
        }
        for a in &self.archives {
            let name = Path::new(&a.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match (a.outcome, a.backup_id) {
                ("refused", _) => writeln!(out, "refused   {name}: {}", a.error.as_deref().unwrap_or(""))?,
                (outcome, Some(id)) => writeln!(
                    out,
                    "{:<9} {name}: backup {id} ({}, {})",
                    if outcome == "imported" { "imported" } else { "already" },
                    a.kind.as_deref().unwrap_or("?"),
                    render::bytes(a.size_bytes.unwrap_or(0))
                )?,
                _ => {}
            }
        }
        Ok(())
    }
}
