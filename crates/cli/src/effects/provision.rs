//! A restore onto a new host (`restore --from`): `Provision` creates the volumes and writes the
//! deployment files the run's plan lists, `Unprovision` removes exactly those again
//! (docs/design.md, "Restore onto a new host").
//!
//! The plan ([`Provision`]) is made, and every item in it checked absent, before the run starts,
//! and it is journaled in the run's spec. So a rollback, live or by `recover`, removes only what
//! this run created: a volume or file that was there before is never in the plan.

use crate::fsutil::{self, exists};
use crate::project::Project;
use crate::services::Services;
use anyhow::Context;
use lifeboat_archive::ExtractOptions;
use lifeboat_machine::{BackupRef, Provision, RunId};
use std::path::{Path, PathBuf};

/// Where run `run_id` stages the archive's deployment files before moving them into place.
fn staging_dir(project: &Project, run_id: RunId) -> PathBuf {
    project.state_dir().join(format!("restore-run{run_id}"))
}

/// `Provision`: the volumes, then the deployment files (extracted with their modes into
/// `.lifeboat/restore-runN`, then each renamed into place).
pub async fn provision<S: Services>(
    project: &Project,
    services: &S,
    run_id: RunId,
    backup: &BackupRef,
    plan: &Provision,
) -> anyhow::Result<()> {
    for volume in &plan.volumes {
        match services.volume(&volume.name).await? {
            // Created by an earlier attempt of this run: the plan checked it absent before.
            Some(existing) if labels_match(&existing.labels, &volume.labels) => {}
            Some(_) => anyhow::bail!(
                "volume {} appeared while the restore ran, and not by its hand: nothing of it is touched",
                volume.name
            ),
            None => {
                services.create_volume(volume).await?;
                tracing::info!("created volume {}", volume.name);
            }
        }
    }
    let (dir, staging, archive, files) =
        (project.dir.clone(), staging_dir(project, run_id), PathBuf::from(&backup.path), plan.files.clone());
    fsutil::blocking("writing the deployment files", move || place_files(&dir, &staging, &archive, &files)).await
}

fn labels_match(existing: &std::collections::BTreeMap<String, String>, wanted: &[(String, String)]) -> bool {
    wanted.iter().all(|(k, v)| existing.get(k) == Some(v))
}

fn place_files(dir: &Path, staging: &Path, archive: &Path, files: &[String]) -> anyhow::Result<()> {
    let pending: Vec<&String> = files.iter().filter(|rel| !exists(&dir.join(rel))).collect();
    if pending.is_empty() {
        return fsutil::remove_tree(staging);
    }
    fsutil::remove_tree(staging)?;
    let options = ExtractOptions {
        subtree: Some("deploy".to_owned()),
        staging: Some(staging.to_path_buf()),
        ..ExtractOptions::default()
    };
    // The staged tree is not swapped in as a whole: only the planned files move, one by one.
    let staged = lifeboat_archive::extract_to_staging(archive, &staging.with_extension("target"), &options)
        .with_context(|| format!("cannot extract the deployment files of {}", archive.display()))?;
    for rel in pending {
        let (from, to) = (staging.join(rel), dir.join(rel));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::rename(&from, &to).with_context(|| format!("cannot write {}", to.display()))?;
        fsutil::fsync_dir(fsutil::parent(&to))?;
        tracing::info!("wrote {}", to.display());
    }
    staged.discard().with_context(|| format!("cannot remove {}", staging.display()))?;
    Ok(())
}

/// `Unprovision`: the project's containers and networks, then the planned volumes, files and
/// directories. What is gone already is skipped.
pub async fn unprovision<S: Services>(
    project: &Project,
    services: &S,
    run_id: RunId,
    plan: &Provision,
) -> anyhow::Result<()> {
    services.remove_project().await?;
    for volume in &plan.volumes {
        services.remove_volume(&volume.name).await?;
        tracing::info!("removed volume {}", volume.name);
    }
    let (dir, staging, files, dirs) =
        (project.dir.clone(), staging_dir(project, run_id), plan.files.clone(), plan.dirs.clone());
    fsutil::blocking("removing what the restore created", move || {
        fsutil::remove_tree(&staging)?;
        for rel in &files {
            if fsutil::remove_file(&dir.join(rel))? {
                tracing::info!("removed {}", dir.join(rel).display());
            }
        }
        for rel in &dirs {
            let path = dir.join(rel);
            if exists(&path) {
                fsutil::remove_tree(&path)?;
                tracing::info!("removed {}", path.display());
            }
        }
        fsutil::fsync_dir(&dir)
    })
    .await
}
