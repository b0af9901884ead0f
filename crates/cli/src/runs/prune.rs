//! Retention as `prune`, `auto-backup run` and the daemon apply it: the plan of
//! [`crate::retention`] applied to the catalog and the backup directory.
//!
//! The plan (which backups go, their archives verified first) is made here; the deletions are a
//! journaled run of kind `prune`, one `DeleteBackup` step per backup. Each step removes the
//! catalog entry (one durable journal transaction) before the file, so a crash never leaves a
//! catalog entry whose archive is gone, and `lifeboat recover` finishes an interrupted prune.
//! Files the catalog does not know are reported, never deleted.

use super::{RunSession, conclude, history};
use crate::effects::backups::verify_entry;
use crate::exit::Exit;
use crate::output::Report;
use crate::project::Project;
use crate::render;
use crate::retention::{self, KeepReason, Policy};
use lifeboat_journal::BackupEntry;
use lifeboat_machine::{RunKind, RunSpec};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Default)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Deleted backups (or, in a dry run, the ones that would be), oldest first.
    pub deleted: Vec<u64>,
    /// Kept backups and why, newest first.
    pub kept: Vec<(u64, KeepReason)>,
    /// Backups whose archive failed verification, with the error. Kept.
    pub failed_verification: Vec<(u64, String)>,
    /// `*.tar.gz`, `*.tar.zst` and `*.partial` files in the backup directory that no catalog entry
    /// names.
    pub unknown_files: Vec<PathBuf>,
    /// When the prune run could not finish its deletions: its run id and errors (the run ended
    /// failed; its journal has every step).
    pub file_errors: Vec<(u64, String)>,
    /// Backups whose archive is only on a remote (catalogued by `import --remote`, not fetched):
    /// kept, and not a verification failure.
    pub remote_only: Vec<u64>,
    /// Each `[[remote]]` with a retention policy: what its prune did.
    pub remotes: Vec<super::prune_remote::RemotePrune>,
    entries: BTreeMap<u64, BackupEntry>,
}

/// Plans and (unless `dry_run`) applies retention in `session`. Verification failures and
/// undeletable files are in the report; [`Report::exit`] turns them into the exit code.
pub async fn prune(session: &RunSession, dry_run: bool) -> anyhow::Result<PruneReport> {
    let (project, journal) = (&session.project, &session.journal);
    let backups = journal.backups().map_err(|err| Exit::Integrity.wrap(err))?;
    let policy =
        Policy { retention_days: project.config.backup.retention_days, keep_last: project.config.backup.keep_last };
    let mut failures = BTreeMap::new();
    // Backups catalogued from a remote (`import --remote`) and not fetched: no archive here to
    // verify, nothing to delete, and no damage either.
    let copied: BTreeSet<u64> = journal.copies()?.iter().map(|c| c.backup_id).collect();
    let mut remote_only = BTreeSet::new();
    let mut verify = |entry: &BackupEntry| match verify_entry(entry, &archive_path(project, entry), session.progress) {
        Ok(_) => true,
        Err(_) if !archive_path(project, entry).exists() && copied.contains(&entry.id) => {
            remote_only.insert(entry.id);
            false
        }
        Err(err) => {
            tracing::warn!("backup {} failed verification: {err}", entry.id);
            failures.insert(entry.id, err.to_string());
            false
        }
    };
    // A rollback needs the pre-upgrade backup of the latest completed upgrade: never prune it.
    let protected = history::last_upgrade_backup(journal)?.map(|entry| entry.id);
    let plan = retention::plan_prune(&backups, &mut verify, render::now(), policy, protected);
    let mut report = PruneReport {
        dry_run,
        deleted: plan.delete.clone(),
        kept: plan.keep.clone(),
        failed_verification: plan
            .failed
            .iter()
            .filter(|id| !remote_only.contains(id))
            .map(|id| (*id, failures.remove(id).unwrap_or_default()))
            .collect(),
        remote_only: remote_only.iter().copied().collect(),
        entries: backups.iter().map(|b| (b.id, b.clone())).collect(),
        ..PruneReport::default()
    };
    if !dry_run && !plan.delete.is_empty() {
        let deletions = plan.delete.iter().map(|id| report.entries[id].backup_ref()).collect();
        // Deleting needs no daemon: the session's services are not used.
        let run = session.run(RunKind::Prune, |_| RunSpec::Prune { deletions }).await?;
        if conclude(&run).is_err() {
            for failure in run.failures() {
                report.file_errors.push((run.id(), failure.error.clone()));
            }
        }
    }
    let known: BTreeSet<PathBuf> = backups.iter().map(|b| archive_path(project, b)).collect();
    report.unknown_files = unknown_files(&project.backup_dir(), &known)?;
    report.remotes = prune_remotes(session, dry_run, None).await;
    Ok(report)
}

/// Each remote's retention (`keep_last`, `retention_days` in its `[[remote]]`; a remote with
/// neither keeps every copy), or only `only`'s.
pub async fn prune_remotes(
    session: &RunSession,
    dry_run: bool,
    only: Option<&str>,
) -> Vec<super::prune_remote::RemotePrune> {
    let mut reports = Vec::new();
    for section in session.project.config.remotes.iter().filter(|r| only.is_none_or(|name| r.name == name)) {
        if let Some(policy) = super::prune_remote::policy(section) {
            reports.push(super::prune_remote::prune_remote(session, section, policy, dry_run).await);
        }
    }
    reports
}

/// Where a catalog entry's archive is: its recorded path, relative to the project directory
/// unless absolute.
fn archive_path(project: &Project, entry: &BackupEntry) -> PathBuf {
    project.dir.join(Path::new(&entry.path))
}

/// The `*.tar.gz`, `*.tar.zst` and `*.partial` files directly in `dir` that are not in `known`,
/// sorted.
fn unknown_files(dir: &Path, known: &BTreeSet<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(anyhow::Error::new(err).context(format!("cannot list {}", dir.display()))),
    };
    let mut unknown = Vec::new();
    for item in read {
        let item = item.map_err(|err| anyhow::Error::new(err).context(format!("cannot list {}", dir.display())))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        let archive_like = [".tar.gz", ".tar.zst", ".partial"].iter().any(|end| name.ends_with(end));
        if archive_like && !known.contains(&item.path()) {
            unknown.push(item.path());
        }
    }
    unknown.sort();
    Ok(unknown)
}

/// `{dry_run, deleted: [id], kept: [{id, reason}], failed_verification: [{id, error}],
/// unknown_files: [path], file_errors: [{id, error}]}`.
impl Serialize for PruneReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Kept {
            id: u64,
            reason: &'static str,
        }
        #[derive(Serialize)]
        struct Failed<'a> {
            id: u64,
            error: &'a str,
        }
        #[derive(Serialize)]
        struct Shape<'a> {
            dry_run: bool,
            deleted: &'a [u64],
            kept: Vec<Kept>,
            failed_verification: Vec<Failed<'a>>,
            unknown_files: Vec<String>,
            file_errors: Vec<Failed<'a>>,
            remotes: &'a [super::prune_remote::RemotePrune],
            remote_only: &'a [u64],
        }
        fn failed(list: &[(u64, String)]) -> Vec<Failed<'_>> {
            list.iter().map(|(id, error)| Failed { id: *id, error }).collect()
        }
        Shape {
            dry_run: self.dry_run,
            deleted: &self.deleted,
            kept: self.kept.iter().map(|(id, reason)| Kept { id: *id, reason: reason.as_str() }).collect(),
            failed_verification: failed(&self.failed_verification),
            unknown_files: self.unknown_files.iter().map(|p| p.display().to_string()).collect(),
            file_errors: failed(&self.file_errors),
            remotes: &self.remotes,
            remote_only: &self.remote_only,
        }
        .serialize(serializer)
    }
}

impl Report for PruneReport {
    /// One line per backup, newest first, with what happens to it and why.
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let deleted: BTreeSet<u64> = self.deleted.iter().copied().collect();
        let reasons: BTreeMap<u64, KeepReason> = self.kept.iter().copied().collect();
        let failed: BTreeMap<u64, &str> = self.failed_verification.iter().map(|(id, e)| (*id, e.as_str())).collect();
        if self.entries.is_empty() {
            writeln!(out, "no backups in the catalog: nothing to prune")?;
        }
        let delete_word = if self.dry_run { "would delete" } else { "deleted" };
        for (id, entry) in self.entries.iter().rev() {
            let created = render::local_time(entry.created_at);
            if deleted.contains(id) {
                writeln!(out, "backup {id:>6}  {delete_word:<12}  {created}  older than retention_days")?;
            } else if let Some(reason) = reasons.get(id) {
                writeln!(out, "backup {id:>6}  {:<12}  {created}  {}", "kept", reason.describe())?;
            }
            if self.remote_only.contains(id) {
                writeln!(out, "    its archive is only on a remote ('lifeboat restore {id}' fetches it)")?;
            } else if let Some(error) = failed.get(id) {
                writeln!(out, "    FAILED verification: {error}")?;
            }
        }
        for (run, error) in &self.file_errors {
            writeln!(out, "prune run {run} failed: {error} (see 'lifeboat journal show {run}')")?;
        }
        for path in &self.unknown_files {
            writeln!(out, "unknown file (not in the catalog, left alone): {}", path.display())?;
        }
        for remote in &self.remotes {
            remote.write_text(out, self.dry_run)?;
        }
        if self.dry_run {
            writeln!(out, "dry run: nothing was changed")?;
        }
        Ok(())
    }

    /// 5 if an archive failed verification, 1 if the prune run could not finish its deletions.
    fn exit(&self) -> anyhow::Result<()> {
        if !self.failed_verification.is_empty() {
            let ids: Vec<String> = self.failed_verification.iter().map(|(id, _)| id.to_string()).collect();
            crate::fail!(
                Exit::Integrity,
                "backup(s) {} failed verification and were kept: check them with 'lifeboat verify ID', then remove or restore the archive by hand",
                ids.join(", ")
            );
        }
        let missing: Vec<String> = self
            .remotes
            .iter()
            .flat_map(|r| r.missing.iter().map(move |id| format!("backup {id} on {}", r.remote)))
            .collect();
        if !missing.is_empty() {
            crate::fail!(
                Exit::Integrity,
                "catalogued copies are missing on their remote (kept in the catalog): {}; see 'lifeboat list --remote NAME'",
                missing.join(", ")
            );
        }
        // A remote that is down is pruned next time (a warning); one that refuses its settings
        // is exit 2, as for shipping.
        for remote in self.remotes.iter().filter(|r| r.error.is_some() && r.exit == Exit::Failed) {
            tracing::warn!("remote {} was not pruned: {}", remote.remote, remote.error.as_deref().unwrap_or_default());
        }
        if let Some(remote) = self.remotes.iter().find(|r| r.error.is_some() && r.exit != Exit::Failed) {
            return Err(remote.exit.wrap(anyhow::anyhow!(
                "remote {} was not pruned: {}",
                remote.remote,
                remote.error.as_deref().unwrap_or_default()
            )));
        }
        if !self.file_errors.is_empty() {
            crate::fail!(
                Exit::Failed,
                "the prune run could not finish its deletions ({} error(s)): see above",
                self.file_errors.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Ctx;
    use crate::config::Config;
    use lifeboat_archive::{Root, WriteOptions, write_archive};
    use lifeboat_machine::State;
    use lifeboat_machine::{BackupKind, Event, RunSpec, Timestamp};

    const DAY_MS: i64 = 24 * 60 * 60 * 1000;

    /// A project with `ages.len()` backups (ages in days), each a real archive.
    #[tokio::test(flavor = "current_thread")]
    async fn an_imported_archive_outside_the_backup_dir_leaves_the_catalog_but_stays_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        // Backups 1 and 2, aged 90 and 60 days, then an old one imported from a USB disk.
        let session = project_with_backups(tmp.path(), &[90, 60, 1]);
        let journal = &session.journal;
        let outside = tmp.path().join("usb/old.tar.gz");
        std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
        std::fs::copy(session.project.backup_dir().join("b90.tar.gz"), &outside).unwrap();
        let mut entry = journal.backup(1).unwrap().unwrap();
        (entry.id, entry.run_id, entry.path) = (40, 40, outside.display().to_string());
        std::fs::write(format!("{}.sha256", outside.display()), format!("{}  old.tar.gz\n", entry.sha256)).unwrap();
        journal.import_backup(&entry, None).unwrap();

        let report = prune(&session, false).await.unwrap();
        assert!(report.deleted.contains(&40), "{:?}", report.deleted);
        assert!(journal.backup(40).unwrap().is_none());
        assert!(outside.exists(), "an archive outside backup.dir is never deleted");
        assert!(Path::new(&format!("{}.sha256", outside.display())).exists());
        assert!(!session.project.backup_dir().join("b90.tar.gz").exists(), "one inside is");
    }

    fn project_with_backups(dir: &Path, ages: &[i64]) -> RunSession {
        let mut config = Config::new("demo", "docker-compose.yml");
        config.backup.retention_days = 30;
        config.backup.keep_last = 2;
        std::fs::write(dir.join(crate::config::CONFIG_FILE), config.to_commented_toml()).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/file"), b"payload").unwrap();
        let session = RunSession::open(&ctx(dir)).unwrap();
        let (project, journal) = (&session.project, &session.journal);
        std::fs::create_dir_all(project.backup_dir()).unwrap();
        let now = render::now().0;
        for age in ages {
            let dest = project.backup_dir().join(format!("b{age}.tar.gz"));
            let summary = write_archive(
                &[Root { archive_name: "paths/data".into(), source: dir.join("data") }],
                &dest,
                &WriteOptions::default(),
                &mut |_| {},
            )
            .unwrap();
            let at = Timestamp(now - age * DAY_MS);
            let spec =
                RunSpec::Backup { archive_path: dest.display().to_string(), backup_kind: BackupKind::Auto, note: None };
            let run = journal.begin_run(&Event::Started { at, spec }).unwrap();
            journal
                .record_backup(&BackupEntry {
                    id: run,
                    run_id: run,
                    kind: BackupKind::Auto,
                    created_at: at,
                    path: dest.display().to_string(),
                    size_bytes: summary.size_bytes,
                    file_count: summary.file_count,
                    entry_count: summary.entry_count,
                    content_bytes: summary.content_bytes,
                    sha256: summary.sha256,
                    note: None,
                    protects_version: None,
                })
                .unwrap();
        }
        session
    }

    fn ctx(dir: &Path) -> Ctx {
        Ctx { dir: dir.to_path_buf(), json: true, progress: false }
    }

    #[tokio::test]
    async fn prune_removes_entries_and_files_reports_unknown_files_and_a_dry_run_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        // Backups 1..=5, aged 90, 60, 40, 10 and 1 days.
        let session = project_with_backups(tmp.path(), &[90, 60, 40, 10, 1]);
        let (project, journal) = (&session.project, &session.journal);
        std::fs::write(project.backup_dir().join("stray.tar.gz"), b"x").unwrap();
        std::fs::write(project.backup_dir().join("demo-x.tar.gz.partial"), b"x").unwrap();
        std::fs::write(project.backup_dir().join("demo-y.tar.zst"), b"x").unwrap();
        std::fs::write(project.backup_dir().join("notes.txt"), b"x").unwrap();

        let dry = prune(&session, true).await.unwrap();
        assert_eq!(dry.deleted, vec![1, 2, 3]);
        assert_eq!(journal.backups().unwrap().len(), 5);
        assert!(project.backup_dir().join("b90.tar.gz").exists());

        let report = prune(&session, false).await.unwrap();
        assert_eq!(report.deleted, vec![1, 2, 3]);
        assert_eq!(report.kept, vec![(5, KeepReason::NewestVerified), (4, KeepReason::WithinRetention)]);
        let ids: Vec<u64> = journal.backups().unwrap().iter().map(|b| b.id).collect();
        assert_eq!(ids, vec![4, 5]);
        for age in [90, 60, 40] {
            assert!(!project.backup_dir().join(format!("b{age}.tar.gz")).exists());
        }
        let names: Vec<String> =
            report.unknown_files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["demo-x.tar.gz.partial", "demo-y.tar.zst", "stray.tar.gz"]);
        assert!(project.backup_dir().join("stray.tar.gz").exists(), "unknown files are never deleted");
        report.exit().unwrap();
        // The deletions are a journaled prune run, one step per backup.
        let run_id = journal.last_run_id().unwrap().expect("a prune run");
        let run = lifeboat_machine::replay(run_id, &journal.events(run_id).unwrap()).unwrap();
        assert_eq!((run.kind(), run.state()), (lifeboat_machine::RunKind::Prune, State::Completed));
        let RunSpec::Prune { deletions } = run.spec() else { panic!("not a prune: {:?}", run.spec()) };
        assert_eq!(deletions.iter().map(|b| b.backup_id).collect::<Vec<_>>(), [1, 2, 3]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["deleted"], serde_json::json!([1, 2, 3]));
        assert_eq!(json["kept"][0], serde_json::json!({"id": 5, "reason": "newest-verified"}));
    }

    #[tokio::test]
    async fn a_corrupt_archive_is_kept_reported_and_not_counted_as_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let session = project_with_backups(tmp.path(), &[90, 60, 40]);
        let (project, journal) = (&session.project, &session.journal);
        // The newest archive is damaged: keep_last = 2 must then keep backups 1 and 2, the only
        // verified ones, and backup 3 stays too, as a corrupt archive prune never deletes.
        std::fs::write(project.backup_dir().join("b40.tar.gz"), b"not an archive").unwrap();
        let report = prune(&session, false).await.unwrap();
        assert!(report.deleted.is_empty());
        assert_eq!(
            report.kept,
            vec![(3, KeepReason::FailedVerification), (2, KeepReason::NewestVerified), (1, KeepReason::KeepLast)]
        );
        assert_eq!(report.failed_verification.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![3]);
        assert_eq!(Exit::of(&report.exit().unwrap_err()), Exit::Integrity);
        assert_eq!(journal.backups().unwrap().len(), 3);
    }
}
