//! Snapshot mode's mirror (docs/design.md, "Snapshot backups"): `SyncMirror` makes a copy of
//! each data root under `backup.mirror_dir`, and a snapshot backup's `WriteArchive` archives
//! those copies instead of the live roots.
//!
//! Each root has its own mirror directory, named by the root's name in the archive
//! (`MIRROR/paths/data`, `MIRROR/volumes/db`), which holds the copy and its index
//! (`lifeboat_archive::sync_mirror`). The journal, not the mirror, says whether the copy is a
//! consistent snapshot: only the stopped sync of the same run makes it one, and the archive is
//! written from it only after that sync's success is journaled.

use crate::project::Project;
use anyhow::{Context, bail};
use lifeboat_archive::{Root, SyncOptions};
use lifeboat_machine::Outcome;
use std::path::{Path, PathBuf};

/// The mirror directory `backup.mirror_dir` names, made absolute. Refused when it overlaps a
/// data path or the backup dir (exit 2): the mirror would copy itself, or be archived twice.
pub fn mirror_dir(project: &Project) -> anyhow::Result<PathBuf> {
    let config = &project.config.backup;
    let dir = project.dir.join(&config.mirror_dir);
    let dir = std::path::absolute(&dir).with_context(|| format!("bad backup.mirror_dir {}", config.mirror_dir))?;
    let resolved = resolve_existing(&dir);
    let mut others: Vec<(String, PathBuf)> =
        config.paths.iter().map(|p| (format!("the data path {p}"), project.dir.join(p))).collect();
    others.push(("backup.dir".to_owned(), project.backup_dir()));
    for (what, other) in others {
        let other = resolve_existing(&other);
        if resolved.starts_with(&other) || other.starts_with(&resolved) {
            return Err(crate::exit::Exit::Usage.wrap(anyhow::anyhow!(
                "backup.mirror_dir {} overlaps {what} ({}): give the mirror a directory of its own, \
                 such as {}",
                dir.display(),
                other.display(),
                crate::config::DEFAULT_MIRROR_DIR
            )));
        }
    }
    Ok(dir)
}

/// `path` with its longest existing prefix resolved (symlinks followed), the rest as written.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut existing = path.to_path_buf();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return missing.iter().rev().fold(real, |acc: PathBuf, part| acc.join(part));
        }
        match (existing.file_name().map(ToOwned::to_owned), existing.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Where root `archive_name`'s mirror lives.
fn root_mirror(mirror: &Path, archive_name: &str) -> PathBuf {
    mirror.join(archive_name)
}

/// `SyncMirror`: makes each root's mirror an exact copy of it. With `stopped` (the services are
/// stopped), anything that still changed while it was copied fails the step: something outside
/// the stopped services writes there, and the copy would not be the snapshot it claims to be.
pub async fn sync(roots: Vec<Root>, mirror: &str, stopped: bool) -> anyhow::Result<Outcome> {
    let mirror = PathBuf::from(mirror);
    crate::fsutil::blocking("the mirror sync", move || {
        let options = SyncOptions { cancel: crate::signals::cancel_flag() };
        let (mut entries, mut files_copied, mut bytes_copied, mut removed) = (0, 0, 0, 0);
        for root in &roots {
            let dir = root_mirror(&mirror, &root.archive_name);
            create_private_dirs(&mirror, &dir)?;
            let stats = lifeboat_archive::sync_mirror(&root.source, &dir, &options)
                .with_context(|| format!("cannot sync the mirror of {}", root.archive_name))?;
            if stopped && stats.changed_during_sync > 0 {
                bail!(
                    "{} entries of {} changed while the services were stopped: something else writes there, \
                     so the mirror is not a consistent snapshot; stop that writer, or use backup.mode = \"stop\"",
                    stats.changed_during_sync,
                    root.source.display()
                );
            }
            entries += stats.entries;
            files_copied += stats.files_copied;
            bytes_copied += stats.bytes_copied;
            removed += stats.removed;
        }
        Ok(Outcome::MirrorSynced { entries, files_copied, bytes_copied, removed })
    })
    .await
}

/// The mirror's directories down to `dir`'s parent, `0700` where lifeboat creates them: the
/// copies keep the data's modes, which other users must not reach through the mirror.
fn create_private_dirs(mirror: &Path, dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = dir.parent().unwrap_or(mirror);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .with_context(|| format!("cannot create the mirror directory {}", parent.display()))
}

/// The roots a snapshot backup archives: each data root's copy in the mirror, under the same name.
pub fn archived_roots(data_roots: Vec<Root>, mirror: &str) -> Vec<Root> {
    let mirror = Path::new(mirror);
    data_roots
        .into_iter()
        .map(|root| {
            let source = lifeboat_archive::mirror_tree(&root_mirror(mirror, &root.archive_name));
            Root { archive_name: root.archive_name, source }
        })
        .collect()
}

/// What `status` says of the mirror: its size on disk, `None` when there is none yet.
pub fn disk_usage(mirror: &Path) -> Option<u64> {
    mirror.exists().then(|| lifeboat_archive::mirror_disk_usage(mirror).ok()).flatten()
}
