//! Retention on a remote: the plan of [`crate::retention`] applied to the copies the catalog has
//! there, with the same protections as a local prune (never the newest good copy, never below
//! `keep_last` good ones, never the pre-upgrade backup of the latest upgrade). A copy is *good*
//! when the remote lists it with its catalogued size (one listing, no download: `verify
//! --remote` is the full check). The deletions are a journaled prune run
//! (`RunSpec::PruneCopies`): each step removes the copy's row and notes it pruned, in one
//! transaction, then deletes the object, so the backup is never pending there again and a crash
//! never leaves a catalogued copy without its object.

use super::{RunSession, conclude, history};
use crate::config::RemoteSection;
use crate::exit::Exit;
use crate::remotes;
use crate::render;
use crate::retention::{self, Policy};
use lifeboat_journal::{BackupEntry, CopyEntry};
use lifeboat_machine::{CopyDeletion, CopyTarget, RunKind, RunSpec};
use std::collections::BTreeMap;

/// What a remote's prune did (or would do), in `prune --json`'s `remotes`.
#[derive(Debug, serde::Serialize)]
pub struct RemotePrune {
    pub remote: String,
    /// Backups whose copy was deleted (would be, in a dry run), oldest first.
    pub deleted: Vec<u64>,
    /// Kept copies and why, newest first.
    pub kept: Vec<KeptCopy>,
    /// Catalogued copies the remote does not list with their size: kept, reported, exit 5.
    pub missing: Vec<u64>,
    /// Why the remote could not be pruned (unreachable, refused), or the prune run's failure.
    pub error: Option<String>,
    #[serde(skip)]
    pub exit: Exit,
}

#[derive(Debug, serde::Serialize)]
pub struct KeptCopy {
    pub id: u64,
    pub reason: &'static str,
    #[serde(skip)]
    describe: &'static str,
}

/// The policy of `[[remote]]`, when it has one: `keep_last` alone keeps that many whatever their
/// age; `retention_days` alone keeps the newest good copy and everything younger.
pub fn policy(section: &RemoteSection) -> Option<Policy> {
    match (section.keep_last, section.retention_days) {
        (None, None) => None,
        (keep_last, retention_days) => {
            Some(Policy { keep_last: keep_last.unwrap_or(1), retention_days: retention_days.unwrap_or(0) })
        }
    }
}

/// Plans and (unless `dry_run`) applies `section`'s retention. Never an error for the remote:
/// the report says what went wrong, and [`RemotePrune::exit`] what it asks for.
pub async fn prune_remote(session: &RunSession, section: &RemoteSection, policy: Policy, dry_run: bool) -> RemotePrune {
    let mut report = RemotePrune {
        remote: section.name.clone(),
        deleted: Vec::new(),
        kept: Vec::new(),
        missing: Vec::new(),
        error: None,
        exit: Exit::Success,
    };
    if let Err(err) = apply(session, section, policy, dry_run, &mut report).await {
        report.exit = Exit::of(&err);
        report.error = Some(format!("{err:#}"));
    }
    report
}

async fn apply(
    session: &RunSession,
    section: &RemoteSection,
    policy: Policy,
    dry_run: bool,
    report: &mut RemotePrune,
) -> anyhow::Result<()> {
    let journal = &session.journal;
    // Only what this listing can see: copies shipped under an earlier `url` stay as they are.
    let copies: Vec<CopyEntry> =
        journal.copies()?.into_iter().filter(|c| c.remote == section.name && c.url == section.url).collect();
    if copies.is_empty() {
        return Ok(());
    }
    let remote = remotes::open(&session.project, section, &section.url)?;
    let listed: BTreeMap<String, u64> =
        remote.list().await.map_err(remotes::exit_for)?.into_iter().map(|o| (o.key, o.size)).collect();
    // The plan works on catalog entries: each copy as its backup, dated by the backup (by its
    // shipping when the local entry is gone).
    let entries: Vec<BackupEntry> = copies
        .iter()
        .map(|copy| {
            let local = journal.backup(copy.backup_id).ok().flatten();
            as_entry(copy, local)
        })
        .collect();
    let good = |entry: &BackupEntry| {
        copies.iter().find(|c| c.backup_id == entry.id).is_some_and(|c| listed.get(&c.key) == Some(&c.stored_bytes))
    };
    let protected = history::last_upgrade_backup(journal)?.map(|entry| entry.id);
    let plan = retention::plan_prune(&entries, &mut |e| good(e), render::now(), policy, protected);
    report.kept = plan
        .keep
        .iter()
        .map(|(id, reason)| KeptCopy { id: *id, reason: reason.as_str(), describe: reason.describe() })
        .collect();
    report.missing = plan.failed.clone();
    report.deleted = plan.delete.clone();
    if dry_run || plan.delete.is_empty() {
        return Ok(());
    }
    let deletions = plan
        .delete
        .iter()
        .filter_map(|id| copies.iter().find(|c| c.backup_id == *id))
        .map(|copy| CopyDeletion {
            backup_id: copy.backup_id,
            target: CopyTarget { remote: copy.remote.clone(), url: copy.url.clone(), key: copy.key.clone() },
        })
        .collect();
    let run = session.run(RunKind::Prune, |_| RunSpec::PruneCopies { deletions }).await?;
    conclude(&run)
}

/// A copy as the retention plan sees it: its backup's entry, or one made from the copy.
fn as_entry(copy: &CopyEntry, local: Option<BackupEntry>) -> BackupEntry {
    let mut entry = local.unwrap_or(BackupEntry {
        id: copy.backup_id,
        run_id: copy.backup_id,
        kind: lifeboat_machine::BackupKind::Manual,
        created_at: copy.shipped_at,
        path: copy.key.clone(),
        size_bytes: copy.stored_bytes,
        file_count: 0,
        entry_count: 0,
        content_bytes: 0,
        sha256: copy.archive_sha256.clone(),
        note: None,
        protects_version: None,
    });
    entry.id = copy.backup_id;
    entry
}

impl RemotePrune {
    /// Lines for people, newest first.
    pub fn write_text(&self, out: &mut dyn std::io::Write, dry_run: bool) -> std::io::Result<()> {
        let word = if dry_run { "would delete" } else { "deleted" };
        for id in &self.deleted {
            writeln!(out, "copy   {id:>6}  {word:<12}  on remote {}: older than its retention_days", self.remote)?;
        }
        for kept in &self.kept {
            writeln!(out, "copy   {:>6}  {:<12}  on remote {}: {}", kept.id, "kept", self.remote, kept.describe)?;
        }
        for id in &self.missing {
            writeln!(
                out,
                "copy   {id:>6}  MISSING       on remote {}: catalogued, but not listed with its size; kept in the catalog",
                self.remote
            )?;
        }
        if let Some(error) = &self.error {
            writeln!(out, "remote {} not pruned: {error}", self.remote)?;
        }
        Ok(())
    }
}
