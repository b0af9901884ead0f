//! `lifeboat list` and `lifeboat verify`: the backup catalog.

use super::Ctx;
use crate::effects::backups::verify_entry;
use crate::exit::Exit;
use crate::fail;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use lifeboat_journal::BackupEntry;
use lifeboat_machine::{ArchiveDetails, SkippedPath};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// One catalog entry as `list --json` prints it. The details (apparent and stored bytes, paths
/// skipped) are `null` for backups recorded before lifeboat kept them.
#[derive(Debug, Serialize)]
pub struct ListedBackup {
    pub id: u64,
    pub run_id: u64,
    pub kind: &'static str,
    pub created_at: String,
    pub path: String,
    pub size_bytes: u64,
    pub file_count: u64,
    pub sha256: String,
    pub note: Option<String>,
    pub protects_version: Option<String>,
    pub apparent_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub skipped: Option<Vec<SkippedPath>>,
    #[serde(skip)]
    entry: BackupEntry,
}

impl ListedBackup {
    fn new(entry: BackupEntry, details: Option<ArchiveDetails>) -> ListedBackup {
        ListedBackup {
            id: entry.id,
            run_id: entry.run_id,
            kind: entry.kind.as_str(),
            created_at: render::rfc3339(entry.created_at),
            path: entry.path.clone(),
            size_bytes: entry.size_bytes,
            file_count: entry.file_count,
            sha256: entry.sha256.clone(),
            note: entry.note.clone(),
            protects_version: entry.protects_version.clone(),
            apparent_bytes: details.as_ref().map(|d| d.apparent_bytes),
            stored_bytes: details.as_ref().map(|d| d.stored_bytes),
            skipped: details.map(|d| d.skipped),
            entry,
        }
    }
}

/// The catalog, oldest first: a JSON array.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ListReport {
    pub backups: Vec<ListedBackup>,
}

pub fn list(ctx: &Ctx) -> anyhow::Result<ListReport> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let mut backups = Vec::new();
    for entry in journal.backups()? {
        let details = journal.backup_details(entry.id)?;
        backups.push(ListedBackup::new(entry, details));
    }
    Ok(ListReport { backups })
}

impl Report for ListReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.backups.is_empty() {
            return writeln!(out, "no backups yet: run 'lifeboat backup'");
        }
        writeln!(
            out,
            "{:>6}  {:<11}  {:<19}  {:>10}  {:>7}  {:<12}  path",
            "id", "kind", "created", "size", "files", "sha256"
        )?;
        for b in &self.backups {
            writeln!(
                out,
                "{:>6}  {:<11}  {:<19}  {:>10}  {:>7}  {:<12}  {}",
                b.id,
                b.kind,
                render::local_time(b.entry.created_at),
                render::bytes(b.size_bytes),
                b.file_count,
                render::short_sha(&b.sha256),
                b.path
            )?;
        }
        Ok(())
    }
}

/// One archive checked by `verify`.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub id: u64,
    pub path: String,
    pub ok: bool,
    pub error: Option<String>,
    pub file_count: Option<u64>,
    pub apparent_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    /// What others can read or write of it (docs/security.md).
    pub warnings: Vec<String>,
    #[serde(skip)]
    size_bytes: u64,
}

/// Every archive checked: a JSON array. Exit 5 when one failed.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct VerifyReport {
    pub backups: Vec<Verified>,
}

pub fn verify(ctx: &Ctx, backup_id: Option<u64>, all: bool) -> anyhow::Result<VerifyReport> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let entries = if all {
        journal.backups()?
    } else {
        let id = backup_id.unwrap_or_default();
        match journal.backup(id)? {
            Some(entry) => vec![entry],
            None => fail!(Exit::Usage, "no backup {id} in the catalog: see 'lifeboat list'"),
        }
    };
    drop(journal);
    // What others can read or write: the archives, their dir, the journal (docs/security.md).
    let warnings = crate::perms::exposure_warnings(&project, entries.iter().map(|e| Path::new(&e.path)));
    for warning in &warnings {
        eprintln!("warning: {}", warning.message);
    }
    let mut backups = Vec::new();
    for entry in &entries {
        let result = verify_entry(entry, Path::new(&entry.path), ctx.progress);
        let report = result.as_ref().ok();
        backups.push(Verified {
            id: entry.id,
            path: entry.path.clone(),
            ok: result.is_ok(),
            error: result.as_ref().err().map(|e| e.to_string()),
            file_count: report.map(|r| r.file_count),
            apparent_bytes: report.map(|r| r.apparent_bytes),
            stored_bytes: report.map(|r| r.stored_bytes),
            warnings: crate::perms::concerning(&warnings, Path::new(&entry.path))
                .into_iter()
                .map(str::to_owned)
                .collect(),
            size_bytes: entry.size_bytes,
        });
    }
    Ok(VerifyReport { backups })
}

impl Report for VerifyReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for b in &self.backups {
            match &b.error {
                None => writeln!(
                    out,
                    "backup {} ok: {} ({}; {} files, {} of content, {} stored)",
                    b.id,
                    b.path,
                    render::bytes(b.size_bytes),
                    b.file_count.unwrap_or_default(),
                    render::bytes(b.apparent_bytes.unwrap_or_default()),
                    render::bytes(b.stored_bytes.unwrap_or_default())
                )?,
                Some(err) => writeln!(out, "backup {} BAD: {err}", b.id)?,
            }
        }
        Ok(())
    }

    fn exit(&self) -> anyhow::Result<()> {
        let bad = self.backups.iter().filter(|b| !b.ok).count();
        if bad > 0 {
            fail!(Exit::Integrity, "{bad} of {} backup(s) failed verification", self.backups.len());
        }
        Ok(())
    }
}
