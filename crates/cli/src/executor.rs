//! The executor: drives a [`Run`] by carrying out its effects (`crate::effects`) over the real
//! adapters or the tests' fakes, journaling each intent before its effect and each outcome after
//! it.
//!
//! The write-ahead rule lives in [`Executor::record`]: an event is appended (durably) to the
//! journal first and applied to the in-memory run second, so the run never gets ahead of the
//! journal. Effects report failures as [`Outcome::Failed`], which the machine settles; only a
//! journal that cannot be written stops the loop with an error.

#[cfg(test)]
pub use crate::crash::CRASH_AFTER;
pub use crate::crash::crash_point;
use crate::effects::services::ServiceOps;
use crate::effects::{backups, copies, data_swap, deploy_swap, hooks, mirror, provision};
use crate::fsutil;
use crate::project::Project;
use crate::render::{self, now};
use crate::services::Services;
use crate::signals;
use anyhow::Context;
use lifeboat_archive::Root;
use lifeboat_journal::Journal;
use lifeboat_machine::{Effect, Event, Outcome, Run, RunId, RunKind, RunSpec};

pub struct Executor<'a, S> {
    pub project: &'a Project,
    pub journal: &'a Journal,
    /// The project's services: the daemon, or `NoServices` for a run that touches none.
    pub services: &'a S,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl<S: Services> Executor<'_, S> {
    /// Journals a new run and drives it to its end. `spec` receives the run's id, which the
    /// journal allocates as it writes the `Started` event: an archive named after its run is
    /// named once, durably, before anything is written.
    pub async fn start(&self, spec: impl FnOnce(RunId) -> RunSpec) -> anyhow::Result<Run> {
        // From here a signal cancels the run rather than ending the process (`crate::signals`).
        let _in_run = signals::RunGuard::new();
        let at = now();
        let (id, started) = self
            .journal
            .begin_run_with(|id| {
                let spec = spec(id);
                // A copy that fails leaves the backup good and stays pending: not a failure for
                // `on_failure` to page anyone about (the backup's report says it).
                let on_failure =
                    if spec.kind() == RunKind::Ship { Vec::new() } else { hooks::failure_hooks(self.project) };
                Run::start_with(spec, on_failure, at)
            })
            .context("cannot journal the start of the run")?;
        let run = Run::from_started(id, &started)?;
        crash_point("started");
        self.drive(run).await
    }

    /// Carries out a run's effects until it ends. Between two effects, a signal received (see
    /// `crate::signals`) is journaled as a `Cancelled` event if the run accepts one: it then
    /// settles as if its next step had failed.
    pub async fn drive(&self, mut run: Run) -> anyhow::Result<Run> {
        let _in_run = signals::RunGuard::new();
        loop {
            if let Some(signal) = signals::requested()
                && let Some(cancel) = run.handle_cancel(signal, now())
            {
                tracing::warn!(run = run.id(), state = %run.state(), "cancelled by {signal}: settling the run");
                self.record(&mut run, cancel).await?;
            }
            let Some(effect) = run.poll_effect() else { break };
            let intent = run.handle_begin(now())?;
            self.record(&mut run, intent).await?;
            crash_point(&format!("intent:{}", effect.name()));
            tracing::info!(run = run.id(), state = %run.state(), "{}", render::effect_detail(&effect));
            let outcome = self.carry_out(&run, &effect).await;
            if let Outcome::Failed { error } = &outcome {
                tracing::warn!(run = run.id(), "{} failed: {error}", effect.name());
            }
            crash_point(&format!("effect:{}", effect.name()));
            let event = run.handle_outcome(outcome, now())?;
            self.record(&mut run, event).await?;
            crash_point(&format!("outcome:{}", effect.name()));
        }
        Ok(run)
    }

    /// Appends `event` to the journal (durable when this returns), then applies it to `run`.
    ///
    /// When the journal cannot be written, the run cannot go on under the write-ahead rule. The
    /// services it stopped are started again, unjournaled and best-effort, so a full disk never
    /// leaves them down; the run stays interrupted for `lifeboat recover`.
    pub async fn record(&self, run: &mut Run, event: Event) -> anyhow::Result<()> {
        if let Err(err) = self.journal.append(run.id(), &event) {
            let err = anyhow::Error::new(err).context(format!("cannot append to the journal of run {}", run.id()));
            if let Some(running) = run.running() {
                let running = running.to_vec();
                if let Err(start_err) = self.service_ops().start_services(&running).await {
                    tracing::error!("could not start the services again: {start_err:#}");
                }
            }
            return Err(crate::exit::Exit::NeedsRecovery
                .wrap(err.context("the run stopped; once the journal can be written, run 'lifeboat recover'")));
        }
        run.apply(&event)?;
        Ok(())
    }

    /// Carries out one effect; any error becomes `Outcome::Failed` for the machine to settle.
    async fn carry_out(&self, run: &Run, effect: &Effect) -> Outcome {
        self.effect(run, effect).await.unwrap_or_else(|err| Outcome::Failed { error: format!("{err:#}") })
    }

    fn service_ops(&self) -> ServiceOps<'_, S> {
        ServiceOps { services: self.services, config: &self.project.config.services }
    }

    /// The one dispatch from an effect to the code that does it (`crate::effects`).
    async fn effect(&self, run: &Run, effect: &Effect) -> anyhow::Result<Outcome> {
        let (project, journal, services) = (self.project, self.journal, self.service_ops());
        // A rollback also swaps the deployment files, data first.
        let rollback = run.kind() == RunKind::Rollback;
        match effect {
            Effect::Inspect => {
                backups::check_data_paths(project)?;
                let running = services.running().await?;
                let hooks = hooks::run_hooks(project, self.services, run, &running).await?;
                if hooks.is_empty() {
                    return Ok(Outcome::Inspected { running });
                }
                return Ok(Outcome::InspectedWithHooks { running, hooks });
            }
            Effect::RunHook { hook } => return Ok(hooks::run_hook(project, self.services, run, hook).await),
            Effect::StopServices { services: names } => services.stop_services(names).await?,
            Effect::StopStack => services.stop_stack().await?,
            Effect::StartServices { services: names } => {
                return Ok(Outcome::Started { services: services.start_services(names).await? });
            }
            Effect::ComposeUp { services: names } => {
                let order = services.compose_up(names.as_deref(), &project.compose_file()).await?;
                return Ok(Outcome::Started { services: order });
            }
            Effect::VerifyServices { services: names } => services.verify_up(names.as_deref()).await?,
            Effect::SyncMirror { mirror: dir, stopped } => {
                let volumes = self.volumes().await?;
                return mirror::sync(self.source_roots(&volumes)?, dir, *stopped).await;
            }
            Effect::WriteArchive { path } => {
                let volumes = self.volumes().await?;
                let roots = self.archive_roots(run, &volumes)?;
                let manifest = backups::manifest_input(project, journal, run, &volumes)?;
                let (facts, details) = backups::write_archive(project, roots, manifest, path, self.progress).await?;
                return Ok(Outcome::Archived { facts, details });
            }
            Effect::RecordBackup { archive, backup_kind, note } => {
                backups::record(journal, run, archive, *backup_kind, note.clone())?
            }
            Effect::DiscardArchive { path } => backups::discard(journal, run, path)?,
            Effect::DeleteBackup { backup } => backups::delete(journal, project, backup)?,
            Effect::VerifyArchive { backup } => backups::verify(journal, backup, self.progress).await?,
            Effect::RestoreData { backup, deployment } => {
                let roots = self.restore_roots(run, true).await?;
                let (archive, id) = (std::path::PathBuf::from(&backup.path), run.id());
                fsutil::blocking("the restore", move || data_swap::restore_data(&archive, &roots, id)).await?;
                if *deployment {
                    deploy_swap::restore_backup_files(project, run.id(), backup).await?;
                }
            }
            Effect::RevertData => {
                if rollback {
                    deploy_swap::revert_rollback(project, run.id()).await?;
                }
                let (roots, id) = (self.restore_roots(run, false).await?, run.id());
                fsutil::blocking("the revert", move || data_swap::revert_data(&roots, id)).await?;
            }
            Effect::CommitData => {
                let (roots, id) = (self.restore_roots(run, false).await?, run.id());
                fsutil::blocking("the commit", move || data_swap::commit_data(&roots, id)).await?;
                if rollback {
                    deploy_swap::commit_rollback(journal, project, run)?;
                }
            }
            Effect::Deploy { package } => deploy_swap::deploy(project, self.services, run.id(), package).await?,
            Effect::RestoreDeployment => deploy_swap::revert_upgrade(project, run.id()).await?,
            Effect::CommitDeploy { version } => deploy_swap::commit_upgrade(journal, project, run.id(), version)?,
            Effect::Provision { backup, provision: plan } => {
                provision::provision(project, self.services, run.id(), backup, plan).await?
            }
            Effect::Unprovision { provision: plan } => {
                provision::unprovision(project, self.services, run.id(), plan).await?
            }
            Effect::BeginUpload { target } => {
                let RunSpec::Ship { backup, .. } = run.spec() else {
                    anyhow::bail!("an upload outside a shipping run")
                };
                return copies::begin_upload(project, backup, target).await;
            }
            Effect::UploadCopy { backup, target, upload_id } => {
                return copies::upload(journal, project, backup, target, upload_id).await;
            }
            Effect::RecordCopy { target, copy, .. } => {
                let RunSpec::Ship { backup, .. } = run.spec() else { anyhow::bail!("a copy outside a shipping run") };
                copies::record(journal, project, run, backup, target, copy).await?
            }
            Effect::AbortUpload { target, upload_id } => copies::abort(project, target, upload_id.as_deref()).await?,
            Effect::DeleteCopy { backup_id, target } => {
                copies::delete(journal, project, run, *backup_id, target).await?
            }
            Effect::PruneCopy { backup_id, target } => copies::prune(journal, project, *backup_id, target).await?,
        }
        Ok(Outcome::Done)
    }

    /// The project's named volumes, when `backup.volumes` says to keep them.
    async fn volumes(&self) -> anyhow::Result<Vec<crate::docker::Volume>> {
        if self.project.config.backup.volumes { self.services.volumes().await } else { Ok(Vec::new()) }
    }

    /// The project's data roots now: each data path, then each named volume.
    async fn data_roots(&self) -> anyhow::Result<Vec<data_swap::DataRoot>> {
        data_swap::data_roots(self.project, self.volumes().await?)
    }

    /// The roots a restore, rollback or restore onto a new host swaps: those the archive's
    /// manifest lists, or for an archive without one the configured roots (`data_swap`). When
    /// the run only settles (`strict` false: reverting or committing a swap) and the archive
    /// cannot be read any more, the configured roots are the best guess, said in a warning.
    async fn restore_roots(&self, run: &Run, strict: bool) -> anyhow::Result<Vec<data_swap::DataRoot>> {
        let backup = match run.spec() {
            RunSpec::Restore { backup } | RunSpec::Rollback { backup } | RunSpec::RestoreNew { backup, .. } => backup,
            // An upgrade's rollback restores its own archive, made from the configured roots.
            _ => return self.data_roots().await,
        };
        let path = std::path::PathBuf::from(&backup.path);
        let manifest = fsutil::blocking("reading the manifest", move || crate::manifest::Manifest::read(&path)).await;
        match manifest {
            Ok(Some(manifest)) => {
                // By name, labelled by compose or not: a volume the operator named to be replaced.
                let mut volumes = Vec::new();
                for root in manifest.volumes() {
                    if let crate::manifest::RootTarget::Volume { docker_name, .. } = &root.target {
                        volumes.extend(self.services.volume(docker_name).await?);
                    }
                }
                data_swap::manifest_roots(self.project, &manifest, &volumes)
            }
            Ok(None) => self.data_roots().await,
            Err(err) if strict => Err(err),
            Err(err) => {
                tracing::warn!("{err:#}: settling the roots of the current configuration");
                self.data_roots().await
            }
        }
    }

    /// The trees a backup archives: the data roots (the same a restore puts back), then the
    /// deployment files.
    /// The live data roots as the archive names them: the data paths and the named volumes.
    fn source_roots(&self, volumes: &[crate::docker::Volume]) -> anyhow::Result<Vec<Root>> {
        Ok(data_swap::data_roots(self.project, volumes.to_vec())?
            .into_iter()
            .map(|root| Root { archive_name: root.archive_name, source: root.target })
            .collect())
    }

    /// What a backup archives: the data roots (a snapshot backup's mirror of them), then the
    /// deployment files.
    fn archive_roots(&self, run: &Run, volumes: &[crate::docker::Volume]) -> anyhow::Result<Vec<Root>> {
        let mut roots = self.source_roots(volumes)?;
        if let RunSpec::SnapshotBackup { mirror: dir, .. } = run.spec() {
            roots = mirror::archived_roots(roots, dir);
        }
        roots.extend(deploy_swap::deployment_roots(self.project, run.spec())?);
        Ok(roots)
    }
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
