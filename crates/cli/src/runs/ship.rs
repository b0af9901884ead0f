//! Copies of backups on remotes: which are pending, and the shipping runs that send them
//! (`RunSpec::Ship`, docs/design.md "Off-host copies"). A backup ships once it is recorded and its
//! services are back, so shipping never adds downtime; `push` ships what a down remote left.

use super::{RunSession, history};
use crate::config::RemoteSection;
use crate::exit::Exit;
use crate::project::Project;
use crate::remotes;
use lifeboat_journal::{BackupEntry, Journal};
use lifeboat_machine::{RunSpec, State};

/// A copy still to make: a catalogued backup that `remote` does not hold yet.
pub struct Pending<'a> {
    pub remote: &'a RemoteSection,
    pub backup: BackupEntry,
}

/// Every pending copy, remote by remote in `lifeboat.toml`'s order, oldest backup first (so a
/// remote that was down gets the history in order). `only` limits it to that remote. A backup
/// whose archive is not on this host (catalogued from a remote and not fetched) has nothing to
/// ship.
pub fn pending<'a>(project: &'a Project, journal: &Journal, only: Option<&str>) -> anyhow::Result<Vec<Pending<'a>>> {
    let held = Held::of(journal)?;
    let backups: Vec<BackupEntry> =
        journal.backups()?.into_iter().filter(|b| project.dir.join(&b.path).exists()).collect();
    let mut list = Vec::new();
    for remote in project.config.remotes.iter().filter(|r| only.is_none_or(|name| r.name == name)) {
        for backup in &backups {
            if !held.has(backup.id, &remote.name) {
                list.push(Pending { remote, backup: backup.clone() });
            }
        }
    }
    Ok(list)
}

/// Which (backup, remote) pairs need no shipping: a catalogued copy, or one the remote's
/// retention pruned (never shipped again).
struct Held(std::collections::BTreeSet<(u64, String)>);

impl Held {
    fn of(journal: &Journal) -> anyhow::Result<Held> {
        let mut held: std::collections::BTreeSet<(u64, String)> =
            journal.copies()?.into_iter().map(|c| (c.backup_id, c.remote)).collect();
        held.extend(journal.pruned_copies()?);
        Ok(Held(held))
    }

    fn has(&self, backup_id: u64, remote: &str) -> bool {
        self.0.contains(&(backup_id, remote.to_owned()))
    }
}

/// The number of pending copies per remote, for `status` and the metrics file.
pub fn pending_counts(project: &Project, journal: &Journal) -> anyhow::Result<Vec<(String, u64)>> {
    let pending = pending(project, journal, None)?;
    Ok(project
        .config
        .remotes
        .iter()
        .map(|remote| (remote.name.clone(), pending.iter().filter(|p| p.remote.name == remote.name).count() as u64))
        .collect())
}

/// One copy's fate, in the stable JSON shape of `backup --json` and `push --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    pub remote: String,
    pub backup_id: u64,
    pub key: String,
    /// `shipped`, or `pending` (not on the remote yet: `error` says why; the next backup or
    /// `lifeboat push` ships it).
    pub status: &'static str,
    pub encrypted: bool,
    /// The shipping run, when one ran.
    pub run_id: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub error: Option<String>,
    /// The exit the failure asks for: 2 for the remote's settings or credentials, else 1.
    #[serde(skip)]
    pub exit: Exit,
}

impl CopyReport {
    fn pending(pending: &Pending<'_>, run_id: Option<u64>, error: String, exit: Exit) -> CopyReport {
        CopyReport {
            remote: pending.remote.name.clone(),
            backup_id: pending.backup.id,
            key: remotes::copy_key(pending.remote, &pending.backup.path),
            status: "pending",
            encrypted: pending.remote.encrypts(),
            run_id,
            stored_bytes: None,
            error: Some(error),
            exit,
        }
    }

    /// The warning (stderr) for a copy left pending.
    pub fn warning(&self) -> Option<String> {
        (self.status == "pending").then(|| {
            format!(
                "the copy of backup {} to remote {} is pending: {}; the next backup or 'lifeboat push' ships it",
                self.backup_id,
                self.remote,
                self.error.as_deref().unwrap_or("not shipped")
            )
        })
    }

    /// The line a person reads: what shipped where, or why it is pending.
    pub fn line(&self) -> String {
        match (self.status, &self.error) {
            ("shipped", _) => format!(
                "copy       backup {} on remote {} as {} ({}{})",
                self.backup_id,
                self.remote,
                self.key,
                crate::render::bytes(self.stored_bytes.unwrap_or(0)),
                if self.encrypted { ", encrypted" } else { ", NOT encrypted" }
            ),
            (_, error) => format!(
                "copy       backup {} to remote {} is PENDING: {}; the next backup or 'lifeboat push' ships it",
                self.backup_id,
                self.remote,
                error.as_deref().unwrap_or("not shipped")
            ),
        }
    }
}

/// Ships every pending copy (of `only`'s remote, or all), one shipping run each. A remote that
/// cannot be reached or refuses is checked once and its copies stay pending with the reason; a
/// signal stops before the next copy. Never an error for a copy: each report says how it went.
pub async fn ship_pending(session: &RunSession, only: Option<&str>) -> anyhow::Result<Vec<CopyReport>> {
    let pending = pending(&session.project, &session.journal, only)?;
    let mut reports = Vec::new();
    let mut down: Vec<(String, String, Exit)> = Vec::new();
    for item in &pending {
        if let Some((_, error, exit)) = down.iter().find(|(name, _, _)| *name == item.remote.name) {
            reports.push(CopyReport::pending(item, None, error.clone(), *exit));
            continue;
        }
        if crate::signals::requested().is_some() {
            reports.push(CopyReport::pending(item, None, "stopped by a signal before it began".into(), Exit::Failed));
            continue;
        }
        if !reports.iter().any(|r: &CopyReport| r.remote == item.remote.name)
            && let Err(err) = check(session, item.remote).await
        {
            let exit = Exit::of(&err);
            let error = format!("{err:#}");
            reports.push(CopyReport::pending(item, None, error.clone(), exit));
            down.push((item.remote.name.clone(), error, exit));
            continue;
        }
        let backup = item.backup.backup_ref();
        let target = remotes::target(item.remote, &backup);
        let run = session.ship(|_| RunSpec::Ship { backup, target: target.clone() }).await?;
        if run.state() == State::Completed {
            let copy = session.journal.copy(item.backup.id, &item.remote.name)?;
            reports.push(CopyReport {
                remote: item.remote.name.clone(),
                backup_id: item.backup.id,
                key: target.key,
                status: "shipped",
                encrypted: item.remote.encrypts(),
                run_id: Some(run.id()),
                stored_bytes: copy.map(|c| c.stored_bytes),
                error: None,
                exit: Exit::Success,
            });
        } else {
            let error = run.failures().first().map_or_else(|| history::failure_summary(&run), |f| f.error.clone());
            reports.push(CopyReport::pending(item, Some(run.id()), error.clone(), Exit::Failed));
            // The next copies to that remote would most likely fail the same way: they wait for
            // the next backup or push, not a rolled-back run each.
            down.push((
                item.remote.name.clone(),
                format!("not tried: the copy of backup {} failed first", item.backup.id),
                Exit::Failed,
            ));
        }
    }
    Ok(reports)
}

/// After a run that recorded a backup (a backup, an upgrade) and brought its services back: every
/// pending copy shipped. A failure to ship (the journal, say) is logged, never the run's: the
/// backup is as good as it was.
pub async fn ship_after(session: &RunSession, run_id: u64) -> Vec<CopyReport> {
    match ship_pending(session, None).await {
        Ok(copies) => copies,
        Err(err) => {
            tracing::error!("run {run_id} completed, but shipping its copies stopped: {err:#}");
            Vec::new()
        }
    }
}

/// A report's lines for its copies, indented under it.
pub fn write_lines(out: &mut dyn std::io::Write, copies: &[CopyReport]) -> std::io::Result<()> {
    for copy in copies {
        writeln!(out, "  {}", copy.line())?;
    }
    Ok(())
}

/// A report's exit for its copies: a warning on stderr for each pending one, exit 2 when a
/// remote refused its settings or credentials.
pub fn warn_and_exit(copies: &[CopyReport]) -> anyhow::Result<()> {
    for warning in copies.iter().filter_map(CopyReport::warning) {
        tracing::warn!("{warning}");
    }
    settings_exit(copies)
}

/// One cheap request to the remote before any run is journaled: a remote that is down or
/// refuses costs one line, not a rolled-back run per pending copy.
async fn check(session: &RunSession, section: &RemoteSection) -> anyhow::Result<()> {
    let remote = remotes::open(&session.project, section, &section.url)?;
    remote.check().await.map_err(remotes::exit_for)
}

/// The exit a list of copies asks for: 2 when a remote's settings or credentials are wrong, else
/// success (a remote that is down leaves copies pending, with a warning).
pub fn settings_exit(copies: &[CopyReport]) -> anyhow::Result<()> {
    match copies.iter().find(|c| c.status == "pending" && c.exit == Exit::Usage) {
        Some(copy) => Err(Exit::Usage.wrap(anyhow::anyhow!(
            "remote {} refused the copy of backup {} (fix [[remote]] {} or its credentials, then 'lifeboat push'): {}",
            copy.remote,
            copy.backup_id,
            copy.remote,
            copy.error.as_deref().unwrap_or_default()
        ))),
        None => Ok(()),
    }
}
