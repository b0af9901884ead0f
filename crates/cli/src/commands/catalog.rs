//! `lifeboat list` and `lifeboat verify`: the backup catalog.

use super::Ctx;
use crate::exit::Exit;
use crate::fail;
use crate::project::Project;
use crate::render;
use lifeboat_journal::BackupEntry;
use serde_json::json;
use std::path::Path;

fn entry_json(entry: &BackupEntry) -> serde_json::Value {
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
    })
}

pub fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    let journal = project.journal()?;
    let backups = journal.backups()?;
    if ctx.json {
        return ctx.print_json(&json!(backups.iter().map(entry_json).collect::<Vec<_>>()));
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
            Ok(_) if !ctx.json => {
                outln!("backup {} ok: {} ({})", entry.id, entry.path, render::bytes(entry.size_bytes))?
            }
            Err(err) if !ctx.json => outln!("backup {} BAD: {err}", entry.id)?,
            _ => {}
        }
        bad += usize::from(result.is_err());
        results.push(json!({
            "id": entry.id,
            "path": entry.path,
            "ok": result.is_ok(),
            "error": result.err().map(|e| e.to_string()),
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
