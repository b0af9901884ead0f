//! Runs as commands start and end them: [`RunSession`] opens a run-taking command in one call
//! and ends every run through [`conclude`]; `history` holds every fold over a run's events.
//!
//! No command imports another: what two commands share lives here or below.

pub mod backup;
pub mod history;
pub mod prune;
pub mod prune_remote;
pub mod recover;
pub mod scheduled;
pub mod ship;
pub mod space;
pub mod standalone;

use crate::commands::Ctx;
use crate::executor::Executor;
use crate::exit::Exit;
use crate::lock::ProjectLock;
use crate::notify::{Notification, Notifier};
use crate::project::Project;
use crate::services::{DockerServices, NoServices, Services};
use lifeboat_journal::Journal;
use lifeboat_machine::{RecoveryPlan, Run, RunId, RunKind, RunSpec, State};
use std::path::PathBuf;

/// A project opened for a command that starts runs, holding its lock until dropped.
pub struct RunSession {
    pub project: Project,
    pub journal: Journal,
    services: Option<DockerServices>,
    progress: bool,
    // Last: the journal closes before the lock is released.
    _lock: ProjectLock,
}

impl RunSession {
    /// Opens the project for a new run: loads `lifeboat.toml` (exit 2), takes the project lock
    /// (exit 3), opens the journal (exit 3 or 5), and refuses while a run waits for `lifeboat
    /// recover` (exit 4). The lock is held until the session is dropped, so nothing changes
    /// between a confirmation and the run it confirms.
    pub fn open(ctx: &Ctx) -> anyhow::Result<RunSession> {
        let session = RunSession::open_to_recover(ctx)?;
        session.project.refuse_if_interrupted(&session.journal)?;
        Ok(session)
    }

    /// As [`RunSession::open`], without the refusal: for `recover`, which settles those runs.
    pub fn open_to_recover(ctx: &Ctx) -> anyhow::Result<RunSession> {
        let project = Project::load(&ctx.dir)?;
        let lock = project.lock()?;
        let journal = project.journal()?;
        Ok(RunSession { project, journal, services: None, progress: ctx.progress, _lock: lock })
    }

    /// Connects to the Docker daemon; none answering is exit 1 with nothing touched. Runs that
    /// touch services need it; a session without it runs only prunes.
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        if self.services.is_none() {
            self.services = Some(DockerServices::connect(&self.project).await?);
        }
        Ok(())
    }

    /// Journals a new run of `kind` and drives it to its end. `spec` receives the run's id (see
    /// [`Executor::start`]). Around it, `[notify]` hears the start and the end and `[metrics]` is
    /// rewritten (`crate::notify`, `crate::metrics`); neither changes the result.
    pub async fn run(&self, kind: RunKind, spec: impl FnOnce(RunId) -> RunSpec) -> anyhow::Result<Run> {
        let notifier = Notifier::new(&self.project);
        notifier.run_starting(kind).await;
        let result = match &self.services {
            Some(services) => self.executor(services).start(spec).await,
            None => self.executor(&NoServices).start(spec).await,
        };
        self.after_run(&notifier, kind, &result).await;
        let run = result?;
        debug_assert_eq!(run.kind(), kind);
        history::note_last_backup(&self.journal, &run);
        Ok(run)
    }

    /// Journals a shipping run and drives it to its end. Not notified: a copy that stays pending
    /// is reported by the backup or `push` that tried it, and a shipping run that fails leaves
    /// the backup itself good. The metrics file is rewritten (pending copies are in it).
    pub async fn ship(&self, spec: impl FnOnce(RunId) -> RunSpec) -> anyhow::Result<Run> {
        let run = self.executor(&NoServices).start(spec).await;
        crate::metrics::write_after_run(&self.project, &self.journal);
        run
    }

    /// Journals the decision of `plan` for an interrupted run, then drives the run to its end.
    pub async fn recover(&self, run: Run, plan: &RecoveryPlan) -> anyhow::Result<Run> {
        let (notifier, kind) = (Notifier::new(&self.project), run.kind());
        let result = match &self.services {
            Some(services) => resume(self.executor(services), run, plan).await,
            None => resume(self.executor(&NoServices), run, plan).await,
        };
        // A shipping run is not notified when it runs (`RunSession::ship`), nor when recovered.
        if kind == RunKind::Ship {
            crate::metrics::write_after_run(&self.project, &self.journal);
        } else {
            self.after_run(&notifier, kind, &result).await;
        }
        let run = result?;
        history::note_last_backup(&self.journal, &run);
        Ok(run)
    }

    /// The metrics file rewritten and the notification sent for a run that ended (or stopped
    /// with an error, leaving it interrupted). Best effort, never an error.
    async fn after_run(&self, notifier: &Notifier, kind: RunKind, result: &anyhow::Result<Run>) {
        crate::metrics::write_after_run(&self.project, &self.journal);
        let note = match result {
            Ok(run) => {
                let exit_code = match conclude(run).and_then(|()| after_hooks_failed(run)) {
                    Ok(()) => 0,
                    Err(err) => Exit::of(&err) as i32,
                };
                let events = self.journal.events(run.id()).unwrap_or_default();
                Notification::of_run(&self.project, run, &events, exit_code)
            }
            Err(err) => {
                // The run the error left interrupted, if its start was journaled.
                let run_id = self.journal.interrupted_runs().ok().and_then(|ids| ids.last().copied());
                Notification::of_error(&self.project, kind, run_id, err)
            }
        };
        notifier.run_ended(kind, &note).await;
    }

    /// Tells `[notify]` that a command meant to start a run of `kind` failed before it could:
    /// for the checks a nightly backup makes before its run (the daemon down, an unsafe backup
    /// dir). Returns `err` for the caller to return.
    pub async fn failed_before_run(&self, kind: RunKind, err: anyhow::Error) -> anyhow::Error {
        failed_before_run(&self.project, kind, &err).await;
        err
    }

    fn executor<'a, S: Services>(&'a self, services: &'a S) -> Executor<'a, S> {
        Executor { project: &self.project, journal: &self.journal, services, progress: self.progress }
    }

    /// The project's named volumes (empty when `backup.volumes` is off or no daemon is connected).
    /// The project's containers, stopped ones included (none without a connection).
    pub async fn containers(&self) -> anyhow::Result<Vec<crate::docker::Container>> {
        match &self.services {
            Some(services) => services.containers().await,
            None => Ok(Vec::new()),
        }
    }

    pub async fn volumes(&self) -> anyhow::Result<Vec<crate::docker::Volume>> {
        match &self.services {
            Some(services) if self.project.config.backup.volumes => services.volumes().await,
            _ => Ok(Vec::new()),
        }
    }

    /// Where run `run_id`'s archive goes: `backup.dir/<project>-<UTC time>-run<ID><suffix>.tar.gz`
    /// (`.tar.zst` with `backup.compression = "zstd"`), sortable by time, unique by run id.
    pub fn archive_path(&self, run_id: RunId, suffix: &str) -> String {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let config = &self.project.config;
        let name = format!("{}-{stamp}-run{run_id:06}{suffix}{}", config.project.name, config.backup.extension());
        self.project.backup_dir().join(name).to_string_lossy().into_owned()
    }
}

/// Sends the notification of a command of `kind` that failed before its run started.
pub async fn failed_before_run(project: &Project, kind: RunKind, err: &anyhow::Error) {
    let note = Notification::of_error(project, kind, None, err);
    Notifier::new(project).run_ended(kind, &note).await;
}

async fn resume<S: Services>(executor: Executor<'_, S>, mut run: Run, plan: &RecoveryPlan) -> anyhow::Result<Run> {
    executor.record(&mut run, plan.event(crate::render::now())).await?;
    crate::crash::crash_point("recovering");
    executor.drive(run).await
}

/// How a run ended, for the command that started it: `Ok` when it completed, else the error that
/// says what failed, how the run ended and what to do, carrying its exit code: 5 when the archive
/// failed verification (nothing was touched), 130 or 143 when a signal cancelled it, else 1.
pub fn conclude(run: &Run) -> anyhow::Result<()> {
    if run.state() == State::Completed {
        return Ok(());
    }
    let summary = history::failure_summary(run);
    if history::archive_refused(run) {
        let hint = match run.spec() {
            RunSpec::Restore { backup } | RunSpec::Rollback { backup } => {
                format!("; check it with 'lifeboat verify {}'", backup.backup_id)
            }
            RunSpec::RestoreNew { backup, .. } => format!("; the copy at {} is damaged", backup.path),
            _ => String::new(),
        };
        return Err(
            Exit::Integrity.wrap(anyhow::anyhow!("{summary}\nthe archive does not match its catalog entry{hint}"))
        );
    }
    Err(Exit::of_unfinished_run(run).wrap(anyhow::anyhow!("{summary}")))
}

/// Exit 6 for a completed run whose `after_*` hooks did not all succeed, naming them: the run's
/// work stays (a backup is recorded), the operator hears the hook failed.
pub fn after_hooks_failed(run: &Run) -> anyhow::Result<()> {
    if run.hook_failures().is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = run.hook_failures().iter().map(|f| format!("  {}", f.error)).collect();
    Err(Exit::HookFailed.wrap(anyhow::anyhow!(
        "{} run {} completed, but a hook after it failed:\n{}\nsee 'lifeboat journal show {}'",
        run.kind(),
        run.id(),
        lines.join("\n"),
        run.id()
    )))
}

/// An absolute path for a file named on the command line (exit 2 if it cannot be made one).
pub fn absolute(path: &std::path::Path, what: &str) -> anyhow::Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|err| Exit::Usage.wrap(anyhow::Error::new(err).context(format!("bad {what} path {}", path.display()))))
}
