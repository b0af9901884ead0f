//! The deployment swap: deploying a package's files and images and putting the old files back,
//! the effects `Deploy`, `RestoreDeployment` and `CommitDeploy`, and the deployment half of a
//! rollback's `RestoreData { deployment: true }` (with its `RevertData` and `CommitData`).
//!
//! # One swap, its directory and its states
//!
//! A swap replaces deployment files of the project (`docker-compose.yml`, `.env`, config files)
//! with new copies. Its state lives in one directory whose name comes from the run id alone, so
//! recovery finds it from the journal: `.lifeboat/upgrade-run<ID>/` for an upgrade's `Deploy`,
//! `.lifeboat/rollback-run<ID>/` for a rollback's restored files. Inside it:
//!
//! - `staged/deploy/<rel>`: the new copy of `<project>/<rel>`, extracted and synced;
//! - `swap.json`: the plan, written (fsynced, by rename) only once everything is staged: every file
//!   to swap and whether a file existed at its place before;
//! - `old/<rel>`: the file the swap replaced, kept until the run commits.
//!
//! Each file is swapped by two renames on the same filesystem: the current file to `old/<rel>`
//! (only if nothing is there yet), then the staged copy into place. So, for one file of the plan:
//! the staged copy still there means "not swapped yet" (redo from where it stands); the staged copy
//! gone means swapped. Putting it back ([`revert`]): an aside copy goes back over the project file;
//! with no aside copy, a file that did not exist before is removed, and any other file is already
//! the old one. No plan means nothing was swapped: the directory holds at most an unfinished
//! extraction, which is deleted. Every step checks these states and does only what is left, so a
//! rerun after a crash is safe, and nothing old is deleted before the run commits (invariant 6).
//!
//! Files a package adds leave behind the directories created for them (empty) after a revert.

use crate::fsutil::{blocking, exists, fsync_dir, parent, remove_tree};
use crate::package;
use crate::project::{Project, STATE_DIR};
use crate::services::Services;
use anyhow::Context;
use lifeboat_archive::{ArchiveError, ExtractOptions, Root};
use lifeboat_journal::Journal;
use lifeboat_machine::{BackupKind, BackupRef, PackageRef, Run, RunId, RunSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const PLAN: &str = "swap.json";

/// The swap directory of an upgrade run's `Deploy`.
pub fn upgrade_dir(project: &Project, run_id: RunId) -> PathBuf {
    project.state_dir().join(format!("upgrade-run{run_id}"))
}

/// The swap directory of a rollback run's restored deployment files.
pub fn rollback_dir(project: &Project, run_id: RunId) -> PathBuf {
    project.state_dir().join(format!("rollback-run{run_id}"))
}

/// One file of a swap plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapFile {
    /// The path relative to the project directory.
    pub rel: String,
    /// Whether a file was at `<project>/<rel>` before the swap.
    pub existed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Plan {
    format: u32,
    files: Vec<SwapFile>,
}

fn read_plan(base: &Path) -> anyhow::Result<Option<Vec<SwapFile>>> {
    let path = base.join(PLAN);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let plan: Plan = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the swap plan {} is unreadable: restore the files by hand from {}",
                    path.display(),
                    base.join("old").display()
                )
            })?;
            Ok(Some(plan.files))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes the plan durably: a temporary file, fsynced, renamed, and the directory fsynced.
fn write_plan(base: &Path, files: Vec<SwapFile>) -> anyhow::Result<()> {
    let path = base.join(PLAN);
    let tmp = base.join(format!("{PLAN}.tmp"));
    let bytes = serde_json::to_vec_pretty(&Plan { format: 1, files })?;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    fsync_dir(base)
}

/// Where `<project>/<rel>` is, refusing a place outside the project directory (a parent that is a
/// symlink out of it). Creates the missing parent directories.
fn place(project_dir: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let target = project_dir.join(rel);
    let dir = parent(&target);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let real = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    let root = project_dir.canonicalize().with_context(|| format!("cannot resolve {}", project_dir.display()))?;
    if !real.starts_with(&root) || real.starts_with(root.join(STATE_DIR)) {
        anyhow::bail!(
            "{rel} would be written to {}, outside the project's deployment files; nothing there was changed",
            real.display()
        );
    }
    Ok(target)
}

/// Stages with `stage` (unless a plan is already written), writes the plan, then swaps every file
/// that is not swapped yet. `stage` receives the swap directory (which exists, with no `staged/`
/// in it) and must leave every new file at `staged/deploy/<rel>`, synced, and return the `rel`s.
pub fn apply(
    project_dir: &Path,
    base: &Path,
    stage: impl FnOnce(&Path) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<Vec<SwapFile>> {
    let files = match read_plan(base)? {
        Some(files) => files,
        None => {
            fresh_swap_dir(base)?;
            record_plan(project_dir, base, stage(base)?)?
        }
    };
    swap(project_dir, base, &files)?;
    Ok(files)
}

/// Makes the swap directory ready for staging. Called only while there is no plan: nothing was
/// swapped, so anything staged is an unfinished attempt and goes.
fn fresh_swap_dir(base: &Path) -> anyhow::Result<()> {
    remove_tree(&base.join("staged"))?;
    std::fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
    fsync_dir(parent(base))
}

/// Writes the plan for the staged files `rels` (noting which exist now): from here on the swap
/// is finished or reverted, never staged again.
fn record_plan(project_dir: &Path, base: &Path, rels: Vec<String>) -> anyhow::Result<Vec<SwapFile>> {
    let files: Vec<SwapFile> =
        rels.into_iter().map(|rel| SwapFile { existed: exists(&project_dir.join(&rel)), rel }).collect();
    write_plan(base, files.clone())?;
    Ok(files)
}

/// Validates the package again and extracts it whole into `<base>/staged` (an unfinished earlier
/// extraction is removed first).
fn stage_package(path: &Path, base: &Path) -> anyhow::Result<package::Package> {
    let checked = package::validate(path)?;
    fresh_swap_dir(base)?;
    let options = ExtractOptions { staging: Some(base.join("staged")), ..ExtractOptions::default() };
    let _staged = lifeboat_archive::extract_to_staging(path, &base.join("package"), &options)
        .with_context(|| format!("cannot extract package {}", path.display()))?;
    Ok(checked)
}

fn swap(project_dir: &Path, base: &Path, files: &[SwapFile]) -> anyhow::Result<()> {
    for file in files {
        let staged = base.join("staged/deploy").join(&file.rel);
        if !exists(&staged) {
            continue; // Swapped already.
        }
        let target = place(project_dir, &file.rel)?;
        let aside = base.join("old").join(&file.rel);
        if file.existed && !exists(&aside) && exists(&target) {
            std::fs::create_dir_all(parent(&aside))
                .with_context(|| format!("cannot create {}", parent(&aside).display()))?;
            std::fs::rename(&target, &aside)
                .with_context(|| format!("cannot move {} aside to {}", target.display(), aside.display()))?;
            fsync_dir(parent(&aside))?;
        }
        std::fs::rename(&staged, &target)
            .with_context(|| format!("cannot move the new {} into place", target.display()))?;
        fsync_dir(parent(&target))?;
        tracing::info!("deployed {}", file.rel);
    }
    Ok(())
}

/// Puts every swapped file of the plan in `base` back, then deletes `base`. Idempotent; no plan
/// means nothing was swapped.
pub fn revert(project_dir: &Path, base: &Path) -> anyhow::Result<()> {
    if let Some(files) = read_plan(base)? {
        for file in &files {
            let target = project_dir.join(&file.rel);
            let aside = base.join("old").join(&file.rel);
            if exists(&aside) {
                std::fs::rename(&aside, &target).with_context(|| {
                    format!("cannot put the old {} back from {}", target.display(), aside.display())
                })?;
                fsync_dir(parent(&target))?;
                tracing::info!("put the old {} back", file.rel);
            } else if !file.existed && exists(&target) {
                std::fs::remove_file(&target).with_context(|| format!("cannot remove the new {}", target.display()))?;
                fsync_dir(parent(&target))?;
                tracing::info!("removed the new {}", file.rel);
            }
        }
        // Everything is back; the plan goes first so a crash below leaves "nothing swapped".
        std::fs::remove_file(base.join(PLAN))
            .with_context(|| format!("cannot remove {}", base.join(PLAN).display()))?;
        fsync_dir(base)?;
    }
    remove_tree(base)
}

/// Deletes the swap directory with the old files it kept: the run committed. Idempotent.
pub fn commit(base: &Path) -> anyhow::Result<()> {
    remove_tree(base)
}

/// The deployment files every backup carries (`deploy/<rel>` roots), so an archive stands alone
/// (docs/design.md, "Archive manifest"): the compose file, its override file, `.env` and
/// `lifeboat.toml`, those of them that exist; a pre-upgrade backup also keeps each current file
/// the package replaces.
pub fn deployment_roots(project: &Project, spec: &RunSpec) -> anyhow::Result<Vec<Root>> {
    let mut rels = BTreeSet::from([
        project.config.project.compose_file.clone(),
        override_file(&project.config.project.compose_file),
        ".env".to_owned(),
        crate::config::CONFIG_FILE.to_owned(),
    ]);
    if let RunSpec::Upgrade { package, .. } = spec {
        rels.extend(package::deploy_files_of(Path::new(&package.path))?);
    }
    let mut roots = Vec::new();
    for rel in rels {
        let source = project.dir.join(&rel);
        if std::fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
            roots.push(Root { archive_name: format!("deploy/{rel}"), source });
        }
    }
    Ok(roots)
}

/// The override file compose reads beside `compose_file` (`docker-compose.override.yml` beside
/// `docker-compose.yml`).
fn override_file(compose_file: &str) -> String {
    let path = Path::new(compose_file);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("docker-compose");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("yml");
    let name = format!("{stem}.override.{ext}");
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => format!("{}/{name}", dir.display()),
        None => name,
    }
}

/// `Deploy`: re-validates the package, extracts it, loads its images, then swaps the files in.
pub async fn deploy<S: Services>(
    project: &Project,
    services: &S,
    run_id: RunId,
    package: &PackageRef,
) -> anyhow::Result<()> {
    let base = upgrade_dir(project, run_id);
    let dir = project.dir.clone();
    let files = match read_plan(&base)? {
        Some(files) => files,
        None => {
            let path = PathBuf::from(&package.path);
            // Extract (synced), then load the images, then write the plan: the files swap only
            // once the images they name are in the daemon.
            let checked = blocking("the package extraction", {
                let base = base.clone();
                move || stage_package(&path, &base)
            })
            .await?;
            if checked.sha256 != package.sha256 {
                anyhow::bail!(
                    "package {} changed since the upgrade started (sha256 {} instead of {}): nothing was deployed",
                    package.path,
                    checked.sha256,
                    package.sha256
                );
            }
            for image in &checked.images {
                let loaded = services.load_image(&base.join("staged").join(image)).await?;
                tracing::info!("loaded {} from {image}", loaded.join(", "));
            }
            record_plan(&dir, &base, checked.deploy_files)?
        }
    };
    blocking("the deploy", move || swap(&dir, &base, &files)).await
}

/// `RestoreDeployment`: puts the files `Deploy` kept aside back. Idempotent.
pub async fn revert_upgrade(project: &Project, run_id: RunId) -> anyhow::Result<()> {
    revert_in_background(project, upgrade_dir(project, run_id)).await
}

/// `CommitDeploy`: records the deployed version, then deletes the old files kept aside.
pub fn commit_upgrade(journal: &Journal, project: &Project, run_id: RunId, version: &str) -> anyhow::Result<()> {
    journal.update_settings(|s| s.deployed_version = Some(version.to_owned()))?;
    commit(&upgrade_dir(project, run_id))
}

/// The deployment half of a rollback's `RestoreData { deployment: true }`: the archive's
/// `deploy/` files swapped in, the current ones kept in `.lifeboat/rollback-run<ID>/old`.
/// A backup without deployment files (not a pre-upgrade backup) restores data only.
pub async fn restore_backup_files(project: &Project, run_id: RunId, backup: &BackupRef) -> anyhow::Result<()> {
    let base = rollback_dir(project, run_id);
    let dir = project.dir.clone();
    let archive = PathBuf::from(&backup.path);
    let backup_id = backup.backup_id;
    blocking("the restore of the deployment files", move || {
        apply(&dir, &base, |base| {
            let staged = base.join("staged");
            std::fs::create_dir_all(&staged).with_context(|| format!("cannot create {}", staged.display()))?;
            let options = ExtractOptions {
                subtree: Some("deploy".to_owned()),
                staging: Some(staged.join("deploy")),
                ..ExtractOptions::default()
            };
            match lifeboat_archive::extract_to_staging(&archive, &base.join("deploy-target"), &options) {
                Ok(_staged) => {}
                Err(ArchiveError::MemberNotFound { .. }) => {
                    tracing::warn!("backup {backup_id} holds no deployment files: restoring its data only");
                    return Ok(Vec::new());
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot extract the deployment files of backup {backup_id}")));
                }
            }
            let mut rels = Vec::new();
            collect_files(&staged.join("deploy"), "", &mut rels)?;
            // `lifeboat.toml` travels with every backup for a restore onto a new host; a
            // rollback puts back the deployment, not the operator's settings.
            rels.retain(|rel| rel != crate::config::CONFIG_FILE);
            Ok(rels)
        })
        .map(drop)
    })
    .await
}

/// The deployment half of a rollback's `RevertData`.
pub async fn revert_rollback(project: &Project, run_id: RunId) -> anyhow::Result<()> {
    revert_in_background(project, rollback_dir(project, run_id)).await
}

/// The deployment half of a rollback's `CommitData`: records the version the backup protects as
/// the deployed one (so recovery of a rollback does it too), then deletes the files kept aside.
pub fn commit_rollback(journal: &Journal, project: &Project, run: &Run) -> anyhow::Result<()> {
    let RunSpec::Rollback { backup } = run.spec() else {
        anyhow::bail!("run {} is not a rollback", run.id());
    };
    if let Some(entry) = journal.backup(backup.backup_id)?
        && entry.kind == BackupKind::PreUpgrade
    {
        journal.update_settings(|s| s.deployed_version = entry.protects_version.clone())?;
    }
    commit(&rollback_dir(project, run.id()))
}

async fn revert_in_background(project: &Project, base: PathBuf) -> anyhow::Result<()> {
    let dir = project.dir.clone();
    blocking("the revert", move || revert(&dir, &base)).await
}

/// Every regular file below `dir`, as `/`-separated paths relative to it.
fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let meta = std::fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            collect_files(&entry.path(), &rel, out)?;
        } else if meta.is_file() {
            out.push(rel);
        }
    }
    out.sort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage_files<'a>(files: &'a [(&'a str, &'a str)]) -> impl FnOnce(&Path) -> anyhow::Result<Vec<String>> + 'a {
        move |base| {
            for (rel, content) in files {
                let path = base.join("staged/deploy").join(rel);
                std::fs::create_dir_all(path.parent().unwrap())?;
                std::fs::write(path, content)?;
            }
            Ok(files.iter().map(|(rel, _)| (*rel).to_owned()).collect())
        }
    }

    #[test]
    fn apply_then_revert_puts_everything_back() {
        let project = tempfile::tempdir().unwrap();
        let dir = project.path();
        std::fs::write(dir.join("docker-compose.yml"), "old").unwrap();
        let base = dir.join(".lifeboat/upgrade-run7");
        std::fs::create_dir_all(dir.join(".lifeboat")).unwrap();
        let files = [("docker-compose.yml", "new"), ("conf/app.ini", "added")];
        apply(dir, &base, stage_files(&files)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(dir.join("conf/app.ini")).unwrap(), "added");
        // A rerun finds the swap done.
        apply(dir, &base, |_| panic!("staged again")).unwrap();
        revert(dir, &base).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap(), "old");
        assert!(!dir.join("conf/app.ini").exists());
        assert!(!base.exists());
        revert(dir, &base).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap(), "old");
    }

    #[test]
    fn a_swap_interrupted_between_its_renames_is_finished_or_reverted() {
        let project = tempfile::tempdir().unwrap();
        let dir = project.path();
        std::fs::write(dir.join(".env"), "A=1").unwrap();
        std::fs::create_dir_all(dir.join(".lifeboat")).unwrap();
        let base = dir.join(".lifeboat/upgrade-run3");
        std::fs::create_dir_all(base.join("staged/deploy")).unwrap();
        std::fs::write(base.join("staged/deploy/.env"), "A=2").unwrap();
        write_plan(&base, vec![SwapFile { rel: ".env".into(), existed: true }]).unwrap();
        // The crash happened after the first rename.
        std::fs::create_dir_all(base.join("old")).unwrap();
        std::fs::rename(dir.join(".env"), base.join("old/.env")).unwrap();
        apply(dir, &base, |_| panic!("staged again")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(".env")).unwrap(), "A=2");
        assert_eq!(std::fs::read_to_string(base.join("old/.env")).unwrap(), "A=1");
        revert(dir, &base).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(".env")).unwrap(), "A=1");
    }

    #[test]
    fn a_parent_symlink_out_of_the_project_is_refused() {
        let project = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), project.path().join("conf")).unwrap();
        assert!(place(project.path(), "conf/x").is_err());
        assert!(place(project.path(), ".lifeboat/journal.redb").is_err());
        assert!(place(project.path(), "docker-compose.yml").is_ok());
    }
}
