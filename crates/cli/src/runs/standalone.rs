//! Archives that stand alone (docs/design.md, "Archive manifest"): checking one found on disk,
//! and cataloguing it, for `restore --from`, `import` and `journal rebuild`.

use crate::exit::Exit;
use crate::manifest::Manifest;
use anyhow::Context;
use lifeboat_archive::{Expected, VerifyReport};
use lifeboat_journal::{BackupEntry, Journal, JournalError};
use lifeboat_machine::{ArchiveDetails, BackupKind, Timestamp};
use std::path::{Path, PathBuf};

/// An archive read through whole and found sound: its hash matches its sidecar (when it has one),
/// every entry reads, and each root holds what its manifest says.
#[derive(Debug)]
pub struct Checked {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub report: VerifyReport,
    /// Whether a `NAME.sha256` sidecar vouched for the hash.
    pub had_sidecar: bool,
}

/// Checks `path` as an archive on its own. A damaged archive is exit 5; a file that is not a
/// lifeboat archive with a manifest is exit 2. Read-only.
pub fn check(path: &Path, progress: bool) -> anyhow::Result<Checked> {
    let meta = std::fs::metadata(path)
        .map_err(|err| Exit::Usage.wrap(anyhow::Error::new(err).context(format!("cannot read {}", path.display()))))?;
    let sidecar = crate::effects::backups::read_sidecar(path).map_err(|err| Exit::Integrity.wrap(err))?;
    let manifest = match Manifest::read(path) {
        Ok(Some(manifest)) => manifest,
        Ok(None) => crate::fail!(
            Exit::Usage,
            "{} has no lifeboat manifest (it was made by an older lifeboat, or by another tool): \
             restore it by its catalog id on the host that made it",
            path.display()
        ),
        Err(err) => return Err(Exit::Integrity.wrap(err)),
    };
    // Without a sidecar the hash is computed first, and the read-through then checks the rest.
    let sha256 = match &sidecar {
        Some(hash) => hash.clone(),
        None => lifeboat_archive::sha256_file(path).map_err(|err| Exit::Integrity.wrap(err))?,
    };
    let expected = Expected {
        sha256,
        size_bytes: meta.len(),
        entry_count: None,
        content_bytes: None,
        roots: manifest.root_names(),
    };
    let bar = crate::progress::bar(progress, "verifying", Some(meta.len()));
    let report = lifeboat_archive::verify_archive(path, &expected, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let report = report.map_err(|err| {
        let what = if sidecar.is_some() { " (against its .sha256 file)" } else { "" };
        Exit::Integrity.wrap(anyhow::Error::new(err).context(format!("{} failed verification{what}", path.display())))
    })?;
    manifest.check_tallies(&report.roots).map_err(|err| Exit::Integrity.wrap(err))?;
    Ok(Checked { path: path.to_path_buf(), manifest, report, had_sidecar: sidecar.is_some() })
}

impl Checked {
    /// The catalog entry this archive makes, under the id of the run that made it.
    pub fn entry(&self) -> anyhow::Result<BackupEntry> {
        let kind = match self.manifest.kind.as_str() {
            "manual" => BackupKind::Manual,
            "auto" => BackupKind::Auto,
            "pre-upgrade" => BackupKind::PreUpgrade,
            other => crate::fail!(Exit::Usage, "{}: unknown backup kind {other:?}", self.path.display()),
        };
        Ok(BackupEntry {
            id: self.manifest.run_id,
            run_id: self.manifest.run_id,
            kind,
            created_at: Timestamp(self.manifest.created_at_ms),
            path: self.path.display().to_string(),
            size_bytes: self.report.size_bytes,
            file_count: self.report.file_count,
            entry_count: self.report.entry_count,
            content_bytes: self.report.content_bytes,
            sha256: self.report.sha256.clone(),
            note: self.manifest.note.clone(),
            protects_version: self.manifest.deployed_version.clone().filter(|_| kind == BackupKind::PreUpgrade),
        })
    }

    /// Catalogs the archive in `journal`: `Ok(true)` if newly, `Ok(false)` if it was already. An
    /// id this journal uses for something else is exit 5, and nothing changes.
    pub fn import_into(&self, journal: &Journal) -> anyhow::Result<bool> {
        let entry = self.entry()?;
        let details = ArchiveDetails {
            apparent_bytes: self.report.apparent_bytes,
            stored_bytes: self.report.stored_bytes,
            skipped: Vec::new(),
        };
        match journal.import_backup(&entry, Some(&details)) {
            Ok(new) => Ok(new),
            Err(JournalError::BackupConflict { id, .. }) => Err(Exit::Integrity.wrap(anyhow::anyhow!(
                "{} is backup {id}, but this catalog already has a different backup or run {id}: nothing was imported \
                 (see 'lifeboat list' and 'lifeboat journal list')",
                self.path.display()
            ))),
            Err(err) => Err(anyhow::Error::new(err).context(format!("cannot import {}", self.path.display()))),
        }
    }
}

/// The absolute path of an archive named on the command line.
pub fn archive_arg(path: &Path) -> anyhow::Result<PathBuf> {
    let path = super::absolute(path, "archive")?;
    if !path.is_file() {
        crate::fail!(Exit::Usage, "{} is not a file", path.display());
    }
    Ok(path)
}

/// The archives in `dir` (`*.tar.gz` and `*.tar.zst`, no `.partial`), sorted by name.
pub fn archives_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries {
        let path = entry.with_context(|| format!("cannot read {}", dir.display()))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if (name.ends_with(".tar.gz") || name.ends_with(".tar.zst")) && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
