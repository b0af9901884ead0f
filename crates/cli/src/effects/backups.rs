//! The backup effects: `WriteArchive`, `RecordBackup`, `DiscardArchive`, `DeleteBackup` and
//! `VerifyArchive`, and the data-path check of `Inspect`.
//!
//! The catalog and the files move in one order everywhere: an entry is added only once its
//! archive is complete and checked, and removed before its file, so a crash leaves at worst a
//! stray file (which `prune` reports), never a catalog entry without its archive.

use crate::fsutil;
use crate::project::Project;
use anyhow::Context;
use lifeboat_archive::{Expected, Root, WriteOptions};
use lifeboat_journal::{BackupEntry, Journal};
use lifeboat_machine::{ArchiveDetails, ArchiveFacts, BackupKind, BackupRef, Run, RunSpec, SkippedPath};
use std::path::{Path, PathBuf};

/// `Inspect`'s half on disk: every data path exists.
pub fn check_data_paths(project: &Project) -> anyhow::Result<()> {
    for path in &project.config.backup.paths {
        let full = project.dir.join(path);
        if !full.exists() {
            anyhow::bail!("data path {} does not exist: create it or remove it from backup.paths", full.display());
        }
    }
    Ok(())
}

/// `WriteArchive`: walk → tar → parallel gzip → sha256 inline → `NAME.partial` → fsync → rename.
/// The writer polls the signal flag, so a cancelled run stops within about 1 MiB.
pub async fn write_archive(
    project: &Project,
    roots: Vec<Root>,
    path: &str,
    progress: bool,
) -> anyhow::Result<(ArchiveFacts, ArchiveDetails)> {
    let dest = PathBuf::from(path);
    // Level, group and limits from `[backup]` (docs/security.md).
    let options =
        WriteOptions { threads: 0, cancel: crate::signals::cancel_flag(), ..project.config.backup.write_options()? };
    if let Some(dir) = dest.parent() {
        crate::perms::ready_backup_dir(dir, options.group)?;
    }
    let bar = crate::progress::bar(progress, "archiving", None);
    let summary = tokio::task::spawn_blocking({
        let bar = bar.clone();
        move || lifeboat_archive::write_archive(&roots, &dest, &options, &mut |n| bar.set_position(n))
    })
    .await
    .context("the archive writer panicked")?
    .map_err(|err| project.config.backup.explain(err))?;
    bar.finish_and_clear();
    for skipped in &summary.skipped {
        tracing::warn!("{skipped}");
    }
    let details = ArchiveDetails {
        apparent_bytes: summary.apparent_bytes,
        stored_bytes: summary.stored_bytes,
        skipped: summary
            .skipped
            .iter()
            .map(|s| SkippedPath { path: s.path.display().to_string(), kind: s.kind.to_string() })
            .collect(),
    };
    let facts = ArchiveFacts {
        path: path.to_owned(),
        sha256: summary.sha256,
        size_bytes: summary.size_bytes,
        file_count: summary.file_count,
        entry_count: summary.entry_count,
        content_bytes: summary.content_bytes,
    };
    Ok((facts, details))
}

/// `RecordBackup`: checks the archive is still there, whole, then catalogs it under the run's id
/// (an upgrade's backup with the version it protects).
pub fn record(
    journal: &Journal,
    run: &Run,
    archive: &ArchiveFacts,
    kind: BackupKind,
    note: Option<String>,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(&archive.path).with_context(|| format!("the archive {} is gone", archive.path))?.len();
    if size != archive.size_bytes {
        anyhow::bail!("the archive {} is {size} bytes, but {} were written", archive.path, archive.size_bytes);
    }
    let protects_version = match run.spec() {
        RunSpec::Upgrade { .. } => journal.settings()?.deployed_version,
        _ => None,
    };
    let entry = BackupEntry {
        id: run.id(),
        run_id: run.id(),
        kind,
        created_at: run.started_at(),
        path: archive.path.clone(),
        size_bytes: archive.size_bytes,
        file_count: archive.file_count,
        entry_count: archive.entry_count,
        content_bytes: archive.content_bytes,
        sha256: archive.sha256.clone(),
        note,
        protects_version,
    };
    journal.record_backup_with(&entry, run.archive_details())?;
    Ok(())
}

/// `DiscardArchive`: removes the run's catalog entry (if any), then its archive and `.partial`.
pub fn discard(journal: &Journal, run: &Run, path: &str) -> anyhow::Result<()> {
    journal.remove_backup(run.id())?;
    let path = Path::new(path);
    for file in [path.to_path_buf(), lifeboat_archive::partial_path(path)] {
        if fsutil::remove_file(&file)? {
            tracing::info!("removed {}", file.display());
        }
    }
    if let Some(dir) = path.parent().filter(|d| d.exists()) {
        fsutil::fsync_dir(dir)?;
    }
    Ok(())
}

/// `DeleteBackup`: removes a backup from the catalog, then its archive (its recorded path,
/// relative to the project directory unless absolute).
pub fn delete(journal: &Journal, project: &Project, backup: &BackupRef) -> anyhow::Result<()> {
    journal.remove_backup(backup.backup_id)?;
    crate::crash::crash_point("delete_backup:catalog_removed");
    let path = project.dir.join(&backup.path);
    if fsutil::remove_file(&path)? {
        tracing::info!("deleted {}", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| d.exists()) {
        fsutil::fsync_dir(dir)?;
    }
    Ok(())
}

/// `VerifyArchive`: re-hashes and reads the archive through, against the catalog entry (with its
/// counts, while the entry is still there) or else the sha256 and size the run was started with.
pub async fn verify(journal: &Journal, backup: &BackupRef, progress: bool) -> anyhow::Result<()> {
    let entry = journal.backup(backup.backup_id)?;
    let expected = Expected {
        sha256: backup.sha256.clone(),
        size_bytes: backup.size_bytes,
        entry_count: entry.as_ref().map(|e| e.entry_count),
        content_bytes: entry.as_ref().map(|e| e.content_bytes),
        roots: Vec::new(),
    };
    let path = PathBuf::from(&backup.path);
    crate::fsutil::blocking("the archive verifier", move || Ok(check(&path, &expected, progress)?))
        .await
        .with_context(|| {
            format!("backup {} failed verification, so nothing was changed: restore another backup", backup.backup_id)
        })?;
    Ok(())
}

/// Re-hashes and reads a catalogued archive through against its entry: `verify` and `prune`,
/// outside any run.
pub fn verify_entry(
    entry: &BackupEntry,
    path: &Path,
    progress: bool,
) -> Result<lifeboat_archive::VerifyReport, lifeboat_archive::ArchiveError> {
    let expected = Expected {
        sha256: entry.sha256.clone(),
        size_bytes: entry.size_bytes,
        entry_count: Some(entry.entry_count),
        content_bytes: Some(entry.content_bytes),
        roots: Vec::new(),
    };
    check(path, &expected, progress)
}

/// One read-through, with a progress bar when a person watches.
fn check(
    path: &Path,
    expected: &Expected,
    progress: bool,
) -> Result<lifeboat_archive::VerifyReport, lifeboat_archive::ArchiveError> {
    let bar = crate::progress::bar(progress, "verifying", Some(expected.size_bytes));
    let result = lifeboat_archive::verify_archive(path, expected, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    result
}
