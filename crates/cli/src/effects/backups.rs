//! The backup effects: `WriteArchive`, `RecordBackup`, `DiscardArchive`, `DeleteBackup` and
//! `VerifyArchive`, and the data-path check of `Inspect`.
//!
//! The catalog and the files move in one order everywhere: an entry is added only once its
//! archive is complete and checked, and removed before its file, so a crash leaves at worst a
//! stray file (which `prune` reports), never a catalog entry without its archive.

use crate::fsutil;
use crate::manifest::{MANIFEST_NAME, ManifestInput};
use crate::project::Project;
use anyhow::Context;
use lifeboat_archive::{Expected, LeadingFile, Root, WriteOptions};
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

/// `WriteArchive`: census → manifest → walk → tar → parallel gzip → sha256 inline →
/// `NAME.partial` → fsync → rename, then the `NAME.sha256` sidecar. The manifest
/// (`crate::manifest`) is the archive's first entry and says what each root holds; the writer
/// checks its own counts against that census, so a root that changed between the two walks fails
/// the backup rather than leaving a manifest that lies. The writer polls the signal flag, so a
/// cancelled run stops within about 1 MiB.
pub async fn write_archive(
    project: &Project,
    roots: Vec<Root>,
    manifest: ManifestInput<'_>,
    path: &str,
    progress: bool,
) -> anyhow::Result<(ArchiveFacts, ArchiveDetails)> {
    let dest = PathBuf::from(path);
    let census = {
        let roots = roots.clone();
        crate::fsutil::blocking("the census of the roots", move || Ok(lifeboat_archive::census(&roots)?)).await?
    };
    let mtime = u64::try_from(manifest.created_at_ms / 1000).unwrap_or(0);
    let manifest = crate::manifest::build(manifest, &roots, &census)?;
    // Level, group and limits from `[backup]` (docs/security.md).
    let options = WriteOptions {
        threads: 0,
        cancel: crate::signals::cancel_flag(),
        leading: vec![LeadingFile { name: MANIFEST_NAME.to_owned(), data: manifest.to_json(), mtime }],
        expect: Some(census),
        ..project.config.backup.write_options()?
    };
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
    write_sidecar(Path::new(path), &summary.sha256, project.config.backup.group_id()?)?;
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

/// `NAME.sha256` beside archive `NAME`: its hash in `sha256sum` format, so a copy can be checked
/// with `sha256sum -c` alone. Written whole under a temporary name, fsynced, then renamed, with
/// the archive's mode.
pub fn write_sidecar(archive: &Path, sha256: &str, group: Option<u32>) -> anyhow::Result<()> {
    let sidecar = sidecar_path(archive);
    let name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = lifeboat_archive::partial_path(&sidecar);
    let _ = std::fs::remove_file(&temp);
    let mut file =
        crate::fsutil::create_private_file(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    use std::io::Write;
    file.write_all(format!("{sha256}  {name}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    drop(file);
    if let Some(gid) = group {
        // As the archive: `0640` for `backup.group` (docs/security.md).
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(&temp, None, Some(gid))
            .and_then(|()| std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o640)))
            .with_context(|| format!("cannot share {} with backup.group", temp.display()))?;
    }
    std::fs::rename(&temp, &sidecar).with_context(|| format!("cannot write {}", sidecar.display()))?;
    if let Some(dir) = sidecar.parent() {
        fsutil::fsync_dir(dir)?;
    }
    Ok(())
}

/// Where the `sha256sum` line of `archive` lives: `NAME.sha256`.
pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The hash a sidecar holds for `archive`, `Ok(None)` when there is no sidecar. A sidecar that
/// is not one `sha256sum` line for this file is an error.
pub fn read_sidecar(archive: &Path) -> anyhow::Result<Option<String>> {
    let sidecar = sidecar_path(archive);
    let text = match std::fs::read(&sidecar) {
        Ok(bytes) if bytes.len() <= 4096 => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(_) => anyhow::bail!("{} is not a sha256sum line", sidecar.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", sidecar.display())),
    };
    let line = text.lines().next().unwrap_or_default();
    let (hash, _name) = line.split_once("  ").unwrap_or((line, ""));
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("{} is not a sha256sum line", sidecar.display());
    }
    Ok(Some(hash.to_ascii_lowercase()))
}

/// What the manifest of run `run`'s archive says beyond its roots.
pub fn manifest_input<'a>(
    project: &'a Project,
    journal: &Journal,
    run: &Run,
    volumes: &'a [crate::docker::Volume],
) -> anyhow::Result<ManifestInput<'a>> {
    let (kind, note) = match run.spec() {
        RunSpec::Backup { backup_kind, note, .. } | RunSpec::SnapshotBackup { backup_kind, note, .. } => {
            (*backup_kind, note.clone())
        }
        _ => (BackupKind::PreUpgrade, None),
    };
    Ok(ManifestInput {
        project: &project.config.project.name,
        run_id: run.id(),
        kind: kind.as_str(),
        note,
        created_at_ms: run.started_at().0,
        deployed_version: journal.settings()?.deployed_version,
        running_services: run.running().map(<[String]>::to_vec).unwrap_or_default(),
        volumes,
    })
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
    // A crash between the archive's rename and its sidecar's leaves no sidecar: write it now.
    if read_sidecar(Path::new(&archive.path)).ok().flatten().as_deref() != Some(archive.sha256.as_str()) {
        write_sidecar(Path::new(&archive.path), &archive.sha256, None)?;
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
    let sidecar = sidecar_path(path);
    for file in
        [path.to_path_buf(), lifeboat_archive::partial_path(path), lifeboat_archive::partial_path(&sidecar), sidecar]
    {
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
/// relative to the project directory unless absolute) and sidecar, when they are in
/// `backup.dir`.
pub fn delete(journal: &Journal, project: &Project, backup: &BackupRef) -> anyhow::Result<()> {
    journal.remove_backup(backup.backup_id)?;
    crate::crash::crash_point("delete_backup:catalog_removed");
    let path = project.dir.join(&backup.path);
    // An imported archive may live anywhere (a USB disk, a mount): lifeboat deletes only what
    // is in its own backup dir, and leaves the rest where the operator put it.
    // Compared resolved, so a project reached by another path (a symlink, `-C` spelled
    // differently) still finds its own archives inside.
    let backup_dir = project.backup_dir();
    let inside = match (path.parent().map(std::fs::canonicalize), std::fs::canonicalize(&backup_dir)) {
        (Some(Ok(parent)), Ok(dir)) => parent.starts_with(dir),
        _ => path.starts_with(&backup_dir),
    };
    if !inside {
        tracing::warn!(
            "backup {} is out of the catalog; its archive {} outside backup.dir is left in place",
            backup.backup_id,
            path.display()
        );
        return Ok(());
    }
    if fsutil::remove_file(&path)? {
        tracing::info!("deleted {}", path.display());
    }
    fsutil::remove_file(&sidecar_path(&path))?;
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
