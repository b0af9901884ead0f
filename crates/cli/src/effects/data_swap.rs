//! The data swap: putting a backup's data back in place, the effects `RestoreData`, `RevertData`
//! and `CommitData` of a restore or rollback run (their deployment half is `deploy_swap`).
//!
//! # Roots and their names
//!
//! A backup archive holds one tree per data root: `paths/<p>` for each entry of `backup.paths`
//! (target `<project>/<p>`) and `volumes/<name>` for each named volume of the project (target:
//! the volume's mountpoint, the `_data` directory Docker bind-mounts into containers). Renaming
//! that directory is safe while the containers are stopped: Docker mounts it by path when a
//! container starts.
//!
//! Restore run `N` uses two sibling names per root, derived from the target and the run id alone,
//! so recovery finds them from the journal without any other record:
//!
//! - staging, `<target>.lifeboat-staging-runN`: where the root is extracted;
//! - aside, `<target>.lifeboat-old-runN`: where the current data waits until the restored copy is
//!   verified with the services up.
//!
//! # The states of one root, and what each effect does with them
//!
//! Extraction finishes (synced) before the swap begins, and the swap renames the target aside
//! first and the staging directory into place second. So:
//!
//! - no aside: the swap has not happened. The target is the current data; any staging directory is
//!   an unfinished or unused extraction. `RestoreData` removes it and extracts again; `RevertData`
//!   and `CommitData` remove it.
//! - aside and target, no staging: the swap is done; the target is the restored copy.
//!   `RestoreData` skips the root, `RevertData` puts the aside back (the restored copy is moved
//!   away first, then deleted), `CommitData` deletes the aside.
//! - aside and staging, no target: a crash between the two renames. The staged copy is complete,
//!   so `RestoreData` finishes the swap; `RevertData` puts the aside back and removes the staging.
//!
//! Each effect checks these states and acts only on what is left to do, so carrying it out again
//! after a crash is safe. Nothing is deleted before its replacement is in place (invariant 6): the
//! aside goes only in `CommitData`, after `VerifyServices` saw the restored data run.
//!
//! Every root is extracted before any is swapped, so a backup that lacks a root, or an archive
//! that fails to extract, is refused while every target still holds the current data. Each root
//! costs one pass over the archive (the extractor reads one subtree at a time).
//!
//! # Symlinks
//!
//! Symlinks whose target is absolute or leaves the tree are accepted, for paths as for volumes.
//! Volumes legitimately hold absolute links (a database's `pg_wal`, an app's `current -> /srv/..`)
//! and bind-mounted paths do too; `backup` archived them as they were, and a backup that cannot
//! be restored is worse than useless. The archive was verified against its recorded sha256 just
//! before, and the extractor never writes through a symlink whatever this setting, so an
//! accepted link cannot make the restore write outside its target.
//!
//! The roots are those the archive's manifest lists (`manifest_roots`): what the backup holds,
//! whatever the configuration says today (the restore command names any difference before it
//! starts). An archive without a manifest (made before manifests existed) is restored onto the
//! roots of the current configuration and the project's current volumes, as a backup would take
//! them: a root the backup does not hold then fails the restore before anything is swapped, and
//! a root the backup holds but the configuration no longer has is left out.

use crate::docker::Volume;
use crate::fsutil::{self, exists};
use crate::manifest::{Manifest, RootTarget};
use crate::project::Project;
use anyhow::Context;
use lifeboat_archive::{ArchiveError, ExtractOptions, ExtractReport, Staged, Swapped};
use lifeboat_machine::RunId;
use std::path::{Path, PathBuf};

/// One tree of a backup and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRoot {
    /// Its name in the archive: `paths/<p>` or `volumes/<name>`.
    pub archive_name: String,
    /// The directory it replaces.
    pub target: PathBuf,
}

/// Where run `run_id` extracts the root that replaces `target`.
pub fn staging_path(target: &Path, run_id: RunId) -> PathBuf {
    suffixed(target, &format!(".lifeboat-staging-run{run_id}"))
}

/// Where run `run_id` keeps the data it replaced at `target` until the run commits or reverts.
pub fn aside_path(target: &Path, run_id: RunId) -> PathBuf {
    suffixed(target, &format!(".lifeboat-old-run{run_id}"))
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The data roots of the project as configured now: each data path, then each of `volumes` (the
/// project's named volumes; the same trees, under the same names, as a backup archives).
pub fn data_roots(project: &Project, volumes: Vec<Volume>) -> anyhow::Result<Vec<DataRoot>> {
    let config = &project.config;
    let mut roots = Vec::new();
    for path in &config.backup.paths {
        // Normalised, so that `data/` gives siblings `data.lifeboat-...`, not children.
        let target: PathBuf = project.dir.join(path).components().collect();
        if target.file_name().is_none() || target == project.dir {
            anyhow::bail!("data path {path:?} is not a directory below the project directory: fix backup.paths");
        }
        roots.push(DataRoot { archive_name: format!("paths/{path}"), target });
    }
    if config.backup.volumes {
        for volume in volumes {
            let name = volume.compose_name.clone().unwrap_or(volume.name.clone());
            roots.push(DataRoot { archive_name: format!("volumes/{name}"), target: volume.mountpoint });
        }
    }
    Ok(roots)
}

/// The data roots an archive's manifest lists (docs/design.md, "Archive manifest"): each bind
/// path below the project directory, then each named volume at its mountpoint in `volumes` (the
/// daemon's volumes now, found by their Docker name). A volume the archive holds that the daemon
/// lacks is an error naming it.
pub fn manifest_roots(project: &Project, manifest: &Manifest, volumes: &[Volume]) -> anyhow::Result<Vec<DataRoot>> {
    let mut roots = Vec::new();
    for (root, path) in manifest.paths() {
        let target: PathBuf = project.dir.join(path).components().collect();
        roots.push(DataRoot { archive_name: root.archive_name.clone(), target });
    }
    for root in manifest.volumes() {
        let RootTarget::Volume { docker_name, .. } = &root.target else { continue };
        let volume = volumes.iter().find(|v| &v.name == docker_name).with_context(|| {
            format!(
                "the backup holds volume {docker_name}, which does not exist here: create it \
                 ('docker volume create {docker_name}') or restore with 'lifeboat restore --from' into a new directory"
            )
        })?;
        roots.push(DataRoot { archive_name: root.archive_name.clone(), target: volume.mountpoint.clone() });
    }
    Ok(roots)
}

/// Removes a staging directory (idempotent).
fn remove_staging(staging: &Path, target: &Path) -> anyhow::Result<()> {
    Staged { staging: staging.to_path_buf(), target: target.to_path_buf(), report: ExtractReport::default() }
        .discard()
        .with_context(|| format!("cannot remove the staging directory {}", staging.display()))
}

/// `RestoreData`: extracts every root that is not swapped yet into its staging directory, then
/// swaps them all in, keeping the current data aside. See the module docs for the states.
pub fn restore_data(archive: &Path, roots: &[DataRoot], run_id: RunId) -> anyhow::Result<()> {
    let mut staged = Vec::new();
    for root in roots {
        match prepare_root(archive, root, run_id) {
            Ok(Some(s)) => staged.push(s),
            Ok(None) => {}
            Err(err) => {
                for s in staged {
                    let _ = s.discard();
                }
                return Err(err);
            }
        }
    }
    for s in staged {
        let target = s.target.clone();
        let aside = aside_path(&target, run_id);
        // `CommitData` or `RevertData` settles the swap later, rebuilding it from the paths.
        let _swapped = s
            .swap_in_with_aside(aside)
            .with_context(|| format!("cannot swap the restored copy of {} into place", target.display()))?;
        tracing::info!("restored {}", target.display());
    }
    Ok(())
}

/// Brings one root to "staged" (returns the staged copy) or finds it swapped already (`None`).
fn prepare_root(archive: &Path, root: &DataRoot, run_id: RunId) -> anyhow::Result<Option<Staged>> {
    let target = &root.target;
    let staging = staging_path(target, run_id);
    let aside = aside_path(target, run_id);
    if exists(&aside) {
        if exists(target) {
            // Swapped by an earlier attempt: the target is the restored copy.
            remove_staging(&staging, target)?;
            return Ok(None);
        }
        if exists(&staging) {
            // Interrupted between the two renames of the swap. Staging was complete and synced
            // before the swap began, so finishing the swap is safe.
            std::fs::rename(&staging, target)
                .with_context(|| format!("cannot move {} into place at {}", staging.display(), target.display()))?;
            fsutil::fsync_dir(fsutil::parent(target))?;
            return Ok(None);
        }
        anyhow::bail!(
            "{} is missing while its previous data waits at {}: move that back to {} by hand, then run 'lifeboat recover'",
            target.display(),
            aside.display(),
            target.display()
        );
    }
    remove_staging(&staging, target)?;
    if !exists(target) {
        // An empty target, so the swap always leaves an aside for `RevertData` and the states
        // above stay unambiguous.
        std::fs::create_dir_all(target).with_context(|| format!("cannot create {}", target.display()))?;
        fsutil::fsync_dir(fsutil::parent(target))?;
    }
    let options = ExtractOptions {
        subtree: Some(root.archive_name.clone()),
        staging: Some(staging),
        preserve_owner: None,
        allow_outside_symlinks: true,
    };
    match lifeboat_archive::extract_to_staging(archive, target, &options) {
        Ok(staged) => {
            // What the system would not take (a device node when not root, an attribute the
            // filesystem refuses): everything else is restored, so these are warnings.
            for warning in &staged.report.warnings {
                tracing::warn!("restoring {}: {warning}", target.display());
            }
            if staged.report.warnings_omitted > 0 {
                tracing::warn!("restoring {}: {} more warnings", target.display(), staged.report.warnings_omitted);
            }
            Ok(Some(staged))
        }
        Err(ArchiveError::MemberNotFound { .. }) => anyhow::bail!(
            "the backup holds no {} (the root was added to the configuration after the backup was made): \
             remove it from lifeboat.toml to restore the other roots, or restore a newer backup",
            root.archive_name
        ),
        Err(err) => Err(anyhow::Error::new(err).context(format!(
            "cannot extract {} for {}",
            root.archive_name,
            target.display()
        ))),
    }
}

/// `RevertData`: puts every root's aside back (the restored copy is moved away and deleted) and
/// removes any staging directory. Idempotent: once a root is back, it has no aside.
pub fn revert_data(roots: &[DataRoot], run_id: RunId) -> anyhow::Result<()> {
    for root in roots {
        let aside = aside_path(&root.target, run_id);
        let had_aside = exists(&aside);
        // With no aside this only removes what an interrupted revert left to delete.
        Swapped { target: root.target.clone(), old_aside: Some(aside) }
            .revert()
            .with_context(|| format!("cannot put the previous data of {} back", root.target.display()))?;
        remove_staging(&staging_path(&root.target, run_id), &root.target)?;
        if had_aside {
            tracing::info!("put the previous data of {} back", root.target.display());
        }
    }
    Ok(())
}

/// `CommitData`: deletes every root's aside and any staging directory. Idempotent.
pub fn commit_data(roots: &[DataRoot], run_id: RunId) -> anyhow::Result<()> {
    for root in roots {
        let aside = aside_path(&root.target, run_id);
        Swapped { target: root.target.clone(), old_aside: Some(aside.clone()) }
            .commit()
            .with_context(|| format!("cannot delete the previous data kept at {}", aside.display()))?;
        remove_staging(&staging_path(&root.target, run_id), &root.target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_archive::{Root, WriteOptions};
    use std::fs;

    /// A project-like directory with two roots (`a` and `b`), archived, then changed.
    struct Fixture {
        _dir: tempfile::TempDir,
        archive: PathBuf,
        roots: Vec<DataRoot>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut roots = Vec::new();
        let mut sources = Vec::new();
        for name in ["a", "b"] {
            let target = dir.path().join(name);
            fs::create_dir(&target).unwrap();
            fs::write(target.join("file"), format!("{name} at backup")).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", target.join("outside")).unwrap();
            roots.push(DataRoot { archive_name: format!("paths/{name}"), target: target.clone() });
            sources.push(Root { archive_name: format!("paths/{name}"), source: target });
        }
        let archive = dir.path().join("backup.tar.gz");
        lifeboat_archive::write_archive(
            &sources,
            &archive,
            &WriteOptions { level: 1, threads: 1, ..WriteOptions::default() },
            &mut |_| {},
        )
        .unwrap();
        for root in &roots {
            fs::write(root.target.join("file"), "changed after").unwrap();
            fs::write(root.target.join("new"), "new after").unwrap();
        }
        Fixture { _dir: dir, archive, roots }
    }

    fn content(root: &DataRoot) -> String {
        fs::read_to_string(root.target.join("file")).unwrap()
    }

    fn leftovers(f: &Fixture) -> Vec<String> {
        let dir = f.roots[0].target.parent().unwrap();
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".lifeboat-") || n.ends_with(".reverted"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn restore_then_commit_keeps_the_backup_and_deletes_the_old_data() {
        let f = fixture();
        restore_data(&f.archive, &f.roots, 7).unwrap();
        for root in &f.roots {
            assert!(content(root).ends_with("at backup"));
            assert!(!root.target.join("new").exists());
            assert_eq!(fs::read_link(root.target.join("outside")).unwrap(), Path::new("/etc/hostname"));
        }
        assert_eq!(leftovers(&f), ["a.lifeboat-old-run7", "b.lifeboat-old-run7"]);
        // A rerun (recovery resuming) finds the swaps done and changes nothing.
        restore_data(&f.archive, &f.roots, 7).unwrap();
        assert!(content(&f.roots[0]).ends_with("at backup"));
        assert_eq!(leftovers(&f), ["a.lifeboat-old-run7", "b.lifeboat-old-run7"]);
        commit_data(&f.roots, 7).unwrap();
        commit_data(&f.roots, 7).unwrap();
        assert!(content(&f.roots[1]).ends_with("at backup"));
        assert_eq!(leftovers(&f), Vec::<String>::new());
    }

    #[test]
    fn restore_then_revert_puts_the_old_data_back_twice_over() {
        let f = fixture();
        restore_data(&f.archive, &f.roots, 7).unwrap();
        revert_data(&f.roots, 7).unwrap();
        revert_data(&f.roots, 7).unwrap();
        for root in &f.roots {
            assert_eq!(content(root), "changed after");
            assert!(root.target.join("new").exists());
        }
        assert_eq!(leftovers(&f), Vec::<String>::new());
    }

    #[test]
    fn a_crash_between_the_two_renames_of_a_swap_is_finished_or_reverted() {
        let f = fixture();
        restore_data(&f.archive, &f.roots, 7).unwrap();
        // As if the run died after moving `b` aside but before moving its staging into place.
        let b = &f.roots[1];
        fs::rename(&b.target, staging_path(&b.target, 7)).unwrap();
        restore_data(&f.archive, &f.roots, 7).unwrap();
        assert!(content(b).ends_with("at backup"));
        assert_eq!(leftovers(&f), ["a.lifeboat-old-run7", "b.lifeboat-old-run7"]);

        fs::rename(&b.target, staging_path(&b.target, 7)).unwrap();
        revert_data(&f.roots, 7).unwrap();
        assert_eq!(content(b), "changed after");
        assert_eq!(content(&f.roots[0]), "changed after");
        assert_eq!(leftovers(&f), Vec::<String>::new());
    }

    #[test]
    fn a_stale_staging_directory_is_extracted_again() {
        let f = fixture();
        let staging = staging_path(&f.roots[0].target, 7);
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("half"), "from an interrupted extraction").unwrap();
        restore_data(&f.archive, &f.roots, 7).unwrap();
        assert!(!f.roots[0].target.join("half").exists());
        assert!(content(&f.roots[0]).ends_with("at backup"));
    }

    #[test]
    fn a_root_the_backup_lacks_fails_before_anything_is_swapped() {
        let f = fixture();
        let dir = f.roots[0].target.parent().unwrap();
        fs::create_dir(dir.join("c")).unwrap();
        let mut roots = f.roots.clone();
        roots.push(DataRoot { archive_name: "paths/c".into(), target: dir.join("c") });
        let err = restore_data(&f.archive, &roots, 7).unwrap_err();
        assert!(format!("{err:#}").contains("the backup holds no paths/c"), "{err:#}");
        assert_eq!(content(&f.roots[0]), "changed after");
        assert_eq!(leftovers(&f), Vec::<String>::new());
        // The machine then reverts, which finds nothing to do.
        revert_data(&roots, 7).unwrap();
        assert_eq!(content(&f.roots[1]), "changed after");
    }
}
