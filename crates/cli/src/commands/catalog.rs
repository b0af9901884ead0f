//! `lifeboat list` and `lifeboat verify`: the backup catalog.

use super::Ctx;
use crate::exit::Exit;
use crate::fail;
use crate::project::Project;
use crate::render;
use lifeboat_journal::BackupEntry;
use lifeboat_machine::ArchiveDetails;
use serde_json::json;
use std::path::Path;

/// One catalog entry as `list --json` prints it. The details (apparent and stored bytes, paths
/// skipped) are `null` for backups recorded before lifeboat kept them.
fn entry_json(entry: &BackupEntry, details: Option<&ArchiveDetails>) -> serde_json::Value {
    json!({
        "id": entry.id,
        "run_id": entry.run_id,
        "kind": entry.kind.as_str(),
        "created_at": render::rfc3339(entry.created_at),
        "path": entry.path,
        "size_bytes": entry.size_bytes,
        "file_count": entry.file_count,
        "sha256": entry.sha256,
        "note": entry.note,
        "protects_version": entry.protects_version,
        "apparent_bytes": details.map(|d| d.apparent_bytes),
        "stored_bytes": details.map(|d| d.stored_bytes),
        "skipped": details.map(|d| d.skipped.iter().map(|s| json!({"path": s.path, "kind": s.kind})).collect::<Vec<_>>()),
    })
}

pub fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let backups = journal.backups()?;
    if ctx.json {
        let mut entries = Vec::with_capacity(backups.len());
        for entry in &backups {
            entries.push(entry_json(entry, journal.backup_details(entry.id)?.as_ref()));
        }
        return ctx.print_json(&json!(entries));
    }
    if backups.is_empty() {
        outln!("no backups yet: run 'lifeboat backup'")?;
        return Ok(());
    }
    outln!("{:>6}  {:<11}  {:<19}  {:>10}  {:>7}  {:<12}  path", "id", "kind", "created", "size", "files", "sha256")?;
    for b in &backups {
        outln!(
            "{:>6}  {:<11}  {:<19}  {:>10}  {:>7}  {:<12}  {}",
            b.id,
            b.kind.as_str(),
            render::local_time(b.created_at),
            render::bytes(b.size_bytes),
            b.file_count,
            render::short_sha(&b.sha256),
            b.path
        )?;
    }
    Ok(())
}

pub fn verify(ctx: &Ctx, backup_id: Option<u64>, all: bool) -> anyhow::Result<()> {
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
    let mut results = Vec::new();
    let mut bad = 0;
    for entry in &entries {
        let result = super::verify_entry(ctx, entry, Path::new(&entry.path));
        match &result {
            Ok(report) if !ctx.json => outln!(
                "backup {} ok: {} ({}; {} files, {} of content, {} stored)",
                entry.id,
                entry.path,
                render::bytes(entry.size_bytes),
                report.file_count,
                render::bytes(report.apparent_bytes),
                render::bytes(report.stored_bytes)
            )?,
            Err(err) if !ctx.json => outln!("backup {} BAD: {err}", entry.id)?,
            _ => {}
        }
        bad += usize::from(result.is_err());
        let report = result.as_ref().ok();
        results.push(json!({
            "id": entry.id,
            "path": entry.path,
            "ok": result.is_ok(),
            "error": result.as_ref().err().map(|e| e.to_string()),
            "file_count": report.map(|r| r.file_count),
            "apparent_bytes": report.map(|r| r.apparent_bytes),
            "stored_bytes": report.map(|r| r.stored_bytes),
            "warnings": crate::perms::concerning(&warnings, Path::new(&entry.path)),
        }));
    }
    if ctx.json {
        ctx.print_json(&json!(results))?;
    }
    if bad > 0 {
        fail!(Exit::Integrity, "{bad} of {} backup(s) failed verification", entries.len());
    }
    Ok(())
}
