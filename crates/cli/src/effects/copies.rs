//! A backup's copy on a remote: `BeginUpload`, `UploadCopy`, `RecordCopy`, and what undoes them,
//! `DeleteCopy` and `AbortUpload` (docs/design.md, "Off-host copies"). Each one checks what it
//! finds, so carrying it out again after a crash is safe.

use crate::project::Project;
use crate::remotes::{self, AGE_SUFFIX, exit_for};
use anyhow::bail;
use lifeboat_journal::{CopyEntry, Journal};
use lifeboat_machine::{BackupRef, CopyFacts, CopyTarget, Outcome, Run};
use lifeboat_remote::{CopyMeta, Encryption, Shipment, UploadOptions};

/// What the copy says of the archive it holds: the metadata stored with it.
fn meta(backup: &BackupRef, target: &CopyTarget) -> CopyMeta {
    let encryption = if target.key.ends_with(AGE_SUFFIX) { "age" } else { "none" };
    CopyMeta {
        backup_id: backup.backup_id,
        archive_sha256: backup.sha256.clone(),
        archive_bytes: backup.size_bytes,
        encryption: encryption.into(),
    }
}

pub async fn begin_upload(project: &Project, backup: &BackupRef, target: &CopyTarget) -> anyhow::Result<Outcome> {
    let (remote, _) = remotes::open_target(project, target)?;
    let upload_id = remote.begin_upload(&target.key, &meta(backup, target)).await.map_err(exit_for)?;
    Ok(Outcome::UploadBegun { upload_id })
}

/// Streams the archive into the upload, then writes the copy's manifest beside it (the backup's
/// catalog entry, encrypted like the copy: what `import --remote` reads). The remote's
/// encryption must still be what the key says (a run that began encrypted never ships in the
/// clear).
pub async fn upload(
    journal: &Journal,
    project: &Project,
    backup: &BackupRef,
    target: &CopyTarget,
    upload_id: &str,
) -> anyhow::Result<Outcome> {
    let (remote, section) = remotes::open_target(project, target)?;
    let encryption = remotes::encryption(section)?;
    let meta = meta(backup, target);
    let expects_age = meta.encryption == "age";
    if expects_age != !matches!(encryption, Encryption::None) {
        bail!(
            "remote {}'s encryption changed since this copy began (its key is {}): the copy is abandoned; the next \
             'lifeboat push' ships it as the remote now says",
            target.remote,
            target.key
        );
    }
    let source = project.dir.join(&backup.path);
    let options = UploadOptions { cancel: crate::signals::cancel_flag(), ..UploadOptions::default() };
    let shipment = Shipment { source: &source, meta: &meta, encryption: &encryption, options: &options };
    let stored = remote.upload(&target.key, &upload_id.to_owned(), &shipment).await.map_err(exit_for)?;
    let entry = journal
        .backup(backup.backup_id)?
        .ok_or_else(|| anyhow::anyhow!("backup {} left the catalog while its copy was shipped", backup.backup_id))?;
    let manifest = remotes::CopyManifest::of(&project.config.project.name, &entry, &target.key);
    let sealed = encryption.seal(&serde_json::to_vec_pretty(&manifest)?).map_err(exit_for)?;
    remote.put_small(&remotes::manifest_key(&target.key), sealed).await.map_err(exit_for)?;
    Ok(Outcome::CopyUploaded(CopyFacts {
        stored_sha256: stored.stored_sha256,
        stored_bytes: stored.stored_bytes,
        encryption: meta.encryption,
    }))
}

/// Checks the stored object once more (its size and the metadata that names this backup), then
/// catalogues the copy.
pub async fn record(
    journal: &Journal,
    project: &Project,
    run: &Run,
    backup: &BackupRef,
    target: &CopyTarget,
    copy: &CopyFacts,
) -> anyhow::Result<()> {
    let (remote, _) = remotes::open_target(project, target)?;
    let info = remote.stat(&target.key).await.map_err(exit_for)?;
    let expected = meta(backup, target);
    match info {
        Some(info) if info.size == copy.stored_bytes && info.meta.as_ref() == Some(&expected) => {}
        Some(info) => bail!(
            "remote {}: {} changed after its upload: {} bytes, metadata {:?}",
            target.remote,
            target.key,
            info.size,
            info.meta
        ),
        None => bail!("remote {}: {} is gone after its upload", target.remote, target.key),
    }
    journal.record_copy(&CopyEntry {
        backup_id: backup.backup_id,
        remote: target.remote.clone(),
        run_id: run.id(),
        url: target.url.clone(),
        key: target.key.clone(),
        shipped_at: crate::render::now(),
        stored_sha256: copy.stored_sha256.clone(),
        stored_bytes: copy.stored_bytes,
        archive_sha256: backup.sha256.clone(),
        encryption: copy.encryption.clone(),
    })?;
    Ok(())
}

/// This run's catalog entry for the copy, then the object.
pub async fn delete(
    journal: &Journal,
    project: &Project,
    run: &Run,
    backup_id: u64,
    target: &CopyTarget,
) -> anyhow::Result<()> {
    journal.remove_copy(backup_id, &target.remote, Some(run.id()))?;
    // Another run's catalogued copy under the same key is never this run's to delete.
    if journal.copy(backup_id, &target.remote)?.is_some() {
        return Ok(());
    }
    let (remote, _) = remotes::open_target(project, target)?;
    remote.delete(&target.key).await.map_err(exit_for)?;
    remote.delete(&remotes::manifest_key(&target.key)).await.map_err(exit_for)
}

/// A remote's retention deletes a copy: its row goes and it is noted pruned (one transaction),
/// then the object goes.
pub async fn prune(journal: &Journal, project: &Project, backup_id: u64, target: &CopyTarget) -> anyhow::Result<()> {
    journal.prune_copy(backup_id, &target.remote, crate::render::now().0)?;
    let (remote, _) = remotes::open_target(project, target)?;
    remote.delete(&target.key).await.map_err(exit_for)?;
    remote.delete(&remotes::manifest_key(&target.key)).await.map_err(exit_for)
}

/// Aborts the upload: the one whose id the journal has, and any other open upload of the key (an
/// upload whose begin was interrupted before the journal heard its id). Nothing else uploads
/// that key meanwhile: a copy is shipped only while it is pending, under the project lock.
pub async fn abort(project: &Project, target: &CopyTarget, upload_id: Option<&str>) -> anyhow::Result<()> {
    let (remote, _) = remotes::open_target(project, target)?;
    if let Some(id) = upload_id {
        remote.abort_upload(&target.key, &id.to_owned()).await.map_err(exit_for)?;
    }
    let aborted = remote.abort_uploads_of(&target.key).await.map_err(exit_for)?;
    if aborted > 0 {
        tracing::info!("remote {}: aborted {aborted} open upload(s) of {}", target.remote, target.key);
    }
    Ok(())
}
