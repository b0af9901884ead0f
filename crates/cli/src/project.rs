//! A project on disk: its directory, its `lifeboat.toml`, and its state in `.lifeboat/`.

use crate::config::Config;
use crate::exit::Exit;
use crate::lock::ProjectLock;
use anyhow::Context;
use lifeboat_journal::{Journal, JournalError};
use lifeboat_machine::{Run, replay};
use std::path::{Path, PathBuf};

/// The state directory inside the project directory.
pub const STATE_DIR: &str = ".lifeboat";
const JOURNAL_FILE: &str = "journal.redb";

#[derive(Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub config: Config,
}

impl Project {
    /// Reads the project's configuration; a missing or invalid one is a usage error (exit 2).
    pub fn load(dir: &Path) -> anyhow::Result<Project> {
        let dir = std::path::absolute(dir).with_context(|| format!("bad project directory {}", dir.display()))?;
        let config = Config::load(&dir).map_err(|err| Exit::Usage.wrap(err))?;
        Ok(Project { dir, config })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR)
    }

    pub fn journal_path(&self) -> PathBuf {
        self.state_dir().join(JOURNAL_FILE)
    }

    pub fn compose_file(&self) -> PathBuf {
        self.dir.join(&self.config.project.compose_file)
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.config.backup_dir(&self.dir)
    }

    /// Takes the project lock (exit 3 if another run holds it), creating `.lifeboat/` if needed.
    pub fn lock(&self) -> anyhow::Result<ProjectLock> {
        let state = self.create_state_dir()?;
        ProjectLock::acquire(&state)
    }

    /// `.lifeboat/`, created `0700` whatever the umask if it is missing (docs/security.md).
    pub fn create_state_dir(&self) -> anyhow::Result<PathBuf> {
        let state = self.state_dir();
        crate::fsutil::create_private_dir(&state, None)
            .with_context(|| format!("cannot create {}", state.display()))?;
        Ok(state)
    }

    /// Opens (or creates) the journal. A journal held by a running lifeboat is exit 3; a corrupt
    /// one is exit 5.
    ///
    /// A new journal takes its auto-backup settings from `lifeboat.toml`'s `[auto_backup]`; from
    /// then on `lifeboat auto-backup enable|disable|schedule` change them in the journal.
    pub fn journal(&self) -> anyhow::Result<Journal> {
        let state = self.create_state_dir()?;
        let path = self.journal_path();
        // Empty: made by an earlier open that stopped before redb laid it out.
        let new = std::fs::symlink_metadata(&path).map_or(true, |m| m.len() == 0);
        // redb creates files with the umask's mode; created here first, the journal is `0600`
        // from its first instant (redb lays a new journal out in an empty file).
        match crate::fsutil::create_private_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(err).with_context(|| format!("cannot create the journal {}", path.display()));
            }
            _ => {}
        }
        let journal = self.open_journal(&path, &state)?;
        if new {
            let auto = &self.config.auto_backup;
            journal.update_settings(|s| {
                s.auto_backup_enabled = auto.enabled;
                s.cron = Some(auto.cron.clone());
            })?;
        }
        Ok(journal)
    }

    fn open_journal(&self, path: &Path, state: &Path) -> anyhow::Result<Journal> {
        // Only one process can have the journal open. A run holds it (and the lock) throughout,
        // so that is final; anything else (the daemon reading its schedule, another `status`)
        // holds it for milliseconds, so wait a little for it.
        let mut attempts = 0;
        let opened = loop {
            match Journal::open(path) {
                Err(JournalError::AlreadyOpen { .. }) if attempts < 30 && ProjectLock::holder(state).is_none() => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other,
            }
        };
        opened.map_err(|err| {
            let code = match &err {
                JournalError::AlreadyOpen { .. } => Exit::Locked,
                JournalError::NotAJournal { .. }
                | JournalError::NewerFormat { .. }
                | JournalError::Undecodable { .. }
                | JournalError::Inconsistent { .. } => Exit::Integrity,
                _ => Exit::Failed,
            };
            let hint = match (code, ProjectLock::holder(state)) {
                (Exit::Locked, Some(pid)) => format!(" (lifeboat pid {pid} is running; wait for it to finish)"),
                _ => String::new(),
            };
            code.wrap(anyhow::Error::new(err).context(format!("cannot open the journal{hint}")))
        })
    }

    /// Refuses to go on while an interrupted run waits for `lifeboat recover` (exit 4). Called with
    /// the lock held, so an unfinished run cannot be one in progress.
    pub fn refuse_if_interrupted(&self, journal: &Journal) -> anyhow::Result<()> {
        let interrupted = interrupted_runs(journal)?;
        if let Some(run) = interrupted.first() {
            return Err(Exit::NeedsRecovery.wrap(anyhow::anyhow!(
                "run {} ({}) was interrupted while {}: run 'lifeboat recover' first{}",
                run.id(),
                run.kind(),
                run.state(),
                if interrupted.len() > 1 {
                    format!(" ({} runs are interrupted)", interrupted.len())
                } else {
                    String::new()
                }
            )));
        }
        Ok(())
    }
}

/// The runs that have not ended, oldest first, replayed from the journal. A run whose events do
/// not replay is an integrity error (exit 5): `lifeboat journal verify` tells more.
pub fn interrupted_runs(journal: &Journal) -> anyhow::Result<Vec<Run>> {
    let ids = journal.interrupted_runs().map_err(|err| Exit::Integrity.wrap(err))?;
    let mut runs = Vec::with_capacity(ids.len());
    for id in ids {
        let events = journal.events(id).map_err(|err| Exit::Integrity.wrap(err))?;
        let run = replay(id, &events).map_err(|err| {
            Exit::Integrity.wrap(anyhow::Error::new(err).context(format!("run {id} in the journal does not replay")))
        })?;
        runs.push(run);
    }
    Ok(runs)
}
