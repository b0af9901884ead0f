//! Runs as commands start and end them: [`RunSession`] opens a run-taking command in one call
//! and ends every run through [`conclude`]; `history` holds every fold over a run's events.
//!
//! No command imports another: what two commands share lives here or below.

pub mod backup;
pub mod history;
pub mod prune;
pub mod recover;
pub mod scheduled;
pub mod space;

use crate::commands::Ctx;
use crate::executor::Executor;
use crate::exit::Exit;
use crate::lock::ProjectLock;
use crate::project::Project;
use crate::services::{DockerServices, NoServices, Services};
use lifeboat_journal::Journal;
use lifeboat_machine::{RecoveryPlan, Run, RunId, RunSpec, State};
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

    /// Journals a new run and drives it to its end. `spec` receives the run's id (see
    /// [`Executor::start`]).
    pub async fn run(&self, spec: impl FnOnce(RunId) -> RunSpec) -> anyhow::Result<Run> {
        let run = match &self.services {
            Some(services) => self.executor(services).start(spec).await?,
            None => self.executor(&NoServices).start(spec).await?,
        };
        history::note_last_backup(&self.journal, &run);
        Ok(run)
    }

    /// Journals the decision of `plan` for an interrupted run, then drives the run to its end.
    pub async fn recover(&self, run: Run, plan: &RecoveryPlan) -> anyhow::Result<Run> {
        let run = match &self.services {
            Some(services) => resume(self.executor(services), run, plan).await?,
            None => resume(self.executor(&NoServices), run, plan).await?,
        };
        history::note_last_backup(&self.journal, &run);
        Ok(run)
    }

    fn executor<'a, S: Services>(&'a self, services: &'a S) -> Executor<'a, S> {
        Executor { project: &self.project, journal: &self.journal, services, progress: self.progress }
    }

    /// The project's named volumes (empty when `backup.volumes` is off or no daemon is connected).
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
            _ => String::new(),
        };
        return Err(
            Exit::Integrity.wrap(anyhow::anyhow!("{summary}\nthe archive does not match its catalog entry{hint}"))
        );
    }
    Err(Exit::of_unfinished_run(run).wrap(anyhow::anyhow!("{summary}")))
}

/// An absolute path for a file named on the command line (exit 2 if it cannot be made one).
pub fn absolute(path: &std::path::Path, what: &str) -> anyhow::Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|err| Exit::Usage.wrap(anyhow::Error::new(err).context(format!("bad {what} path {}", path.display()))))
}
