//! The executor: drives a [`Run`] by carrying out its effects with the real adapters, journaling
//! each intent before its effect and each outcome after it.
//!
//! The write-ahead rule lives in [`Executor::record`]: an event is appended (durably) to the
//! journal first and applied to the in-memory run second, so the run never gets ahead of the
//! journal. Effects report failures as [`Outcome::Failed`], which the machine settles; only a
//! journal that cannot be written stops the loop with an error.

use crate::docker::{self, Docker};
use crate::project::Project;
use crate::render::{self, now};
use crate::signals;
use anyhow::Context;
use lifeboat_archive::{Root, WriteOptions};
use lifeboat_journal::{BackupEntry, Journal};
use lifeboat_machine::{
    ArchiveDetails, ArchiveFacts, BackupKind, BackupRef, Effect, Event, Outcome, Run, RunKind, RunSpec, SkippedPath,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Executor<'a> {
    pub project: &'a Project,
    pub journal: &'a Journal,
    /// The daemon, for runs that touch services (every kind but prune).
    pub docker: Option<Docker>,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl Executor<'_> {
    /// Journals a new run and drives it to its end.
    pub async fn start(&self, spec: RunSpec) -> anyhow::Result<Run> {
        // From here a signal cancels the run rather than ending the process (`crate::signals`).
        let _in_run = signals::RunGuard::new();
        let started = Run::start(spec, now());
        let id = self.journal.begin_run(&started).context("cannot journal the start of the run")?;
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
                if let Err(start_err) = self.start_services(&running).await {
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

    async fn effect(&self, run: &Run, effect: &Effect) -> anyhow::Result<Outcome> {
        let rollback = run.kind() == RunKind::Rollback;
        match effect {
            Effect::Inspect => return Ok(Outcome::Inspected { running: self.inspect().await? }),
            Effect::WriteArchive { path } => {
                let (facts, details) = self.write_archive(run, path).await?;
                return Ok(Outcome::Archived { facts, details });
            }
            Effect::StopServices { services } => self.stop_services(services).await?,
            Effect::RecordBackup { archive, backup_kind, note } => {
                self.record_backup(run, archive, *backup_kind, note.clone())?
            }
            Effect::DiscardArchive { path } => self.discard_archive(run, path)?,
            Effect::StartServices { services } => {
                return Ok(Outcome::Started { services: self.start_services(services).await? });
            }
            // The restore effects live in `crate::restore`, with the states they check; a rollback
            // also swaps the deployment files (`crate::deploy`), data first.
            Effect::VerifyArchive { backup } => self.verify_backup_archive(backup).await?,
            Effect::RestoreData { backup, deployment } => {
                self.restore_backup_data(run.id(), backup).await?;
                if *deployment {
                    self.restore_backup_deployment(run.id(), backup).await?;
                }
            }
            Effect::RevertData => {
                if rollback {
                    self.revert_backup_deployment(run.id()).await?;
                }
                self.revert_restored_data(run.id()).await?;
            }
            Effect::CommitData => {
                self.commit_restored_data(run.id()).await?;
                if rollback {
                    self.commit_backup_deployment(run)?;
                }
            }
            Effect::VerifyServices { services } => self.verify_services(services.as_deref()).await?,
            Effect::StopStack => self.stop_stack().await?,
            // The deployment effects live in `crate::deploy`.
            Effect::Deploy { package } => self.deploy(run.id(), package).await?,
            Effect::RestoreDeployment => self.restore_deployment(run.id()).await?,
            Effect::CommitDeploy { version } => self.commit_deploy(run.id(), version)?,
            Effect::ComposeUp { services } => {
                return Ok(Outcome::Started { services: self.compose_up(services.as_deref()).await? });
            }
            Effect::DeleteBackup { backup } => self.delete_backup(backup)?,
        }
        Ok(Outcome::Done)
    }

    /// Checks that every data path exists and lists the services running now, in stop order.
    async fn inspect(&self) -> anyhow::Result<Vec<String>> {
        for path in &self.project.config.backup.paths {
            let full = self.project.dir.join(path);
            if !full.exists() {
                anyhow::bail!("data path {} does not exist: create it or remove it from backup.paths", full.display());
            }
        }
        let containers = self.containers().await?;
        let mut running = Vec::new();
        for container in docker::stop_order(&containers)? {
            if container.state.is_active() && !running.contains(&container.service) {
                running.push(container.service.clone());
            }
        }
        Ok(running)
    }

    async fn containers(&self) -> anyhow::Result<Vec<docker::Container>> {
        let compose_file = self.project.compose_file();
        let compose_file = compose_file.exists().then_some(compose_file.as_path());
        Ok(self.docker()?.project_containers(&self.project.config.project.name, compose_file).await?)
    }

    /// Stops the containers of `services`, dependants first. A container Docker had to kill after
    /// the timeout fails the step: its data may not be consistent, so it must not be archived.
    async fn stop_services(&self, services: &[String]) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(self.project.config.services.stop_timeout_secs);
        let containers = self.containers().await?;
        for container in docker::stop_order(&containers)? {
            if !services.contains(&container.service) {
                continue;
            }
            if self.docker()?.stop(&container.name, timeout).await? == docker::StopOutcome::Killed {
                anyhow::bail!(
                    "{} did not stop within {} s, so Docker killed it and its data may be inconsistent: \
                     raise services.stop_timeout_secs or fix how it shuts down",
                    container.name,
                    timeout.as_secs()
                );
            }
        }
        Ok(())
    }

    /// Starts the containers of `services`, dependencies first, waiting until each is up (a
    /// container on its way down from a stop is waited out and started again). Returns the
    /// services in the order they came up.
    pub async fn start_services(&self, services: &[String]) -> anyhow::Result<Vec<String>> {
        let timeout = Duration::from_secs(self.project.config.services.start_timeout_secs);
        let stop_timeout = Duration::from_secs(self.project.config.services.stop_timeout_secs);
        let containers = self.containers().await?;
        let mut order = Vec::new();
        for container in docker::start_order(&containers)? {
            if !services.contains(&container.service) {
                continue;
            }
            let _ = self.docker()?.start(&container.name, stop_timeout).await?;
            self.docker()?.wait_up(&container.name, timeout).await?;
            if !order.contains(&container.service) {
                order.push(container.service.clone());
            }
        }
        Ok(order)
    }

    /// The trees a backup archives: each data path, then each named volume (the same roots a
    /// restore puts back).
    async fn archive_roots(&self) -> anyhow::Result<Vec<Root>> {
        let roots = crate::restore::data_roots(self.project, self.docker()?).await?;
        Ok(roots.into_iter().map(|root| Root { archive_name: root.archive_name, source: root.target }).collect())
    }

    async fn write_archive(&self, run: &Run, path: &str) -> anyhow::Result<(ArchiveFacts, ArchiveDetails)> {
        let mut roots = self.archive_roots().await?;
        // A pre-upgrade backup also keeps the deployment files the package replaces.
        roots.extend(crate::deploy::deployment_roots(self.project, run.spec())?);
        let dest = PathBuf::from(path);
        // Level, group and limits from `[backup]` (docs/security.md).
        let options =
            WriteOptions { threads: 0, cancel: signals::cancel_flag(), ..self.project.config.backup.write_options()? };
        if let Some(dir) = dest.parent() {
            crate::perms::ready_backup_dir(dir, options.group)?;
        }
        let bar = crate::progress::bar(self.progress, "archiving", None);
        let summary = tokio::task::spawn_blocking({
            let bar = bar.clone();
            move || lifeboat_archive::write_archive(&roots, &dest, &options, &mut |n| bar.set_position(n))
        })
        .await
        .context("the archive writer panicked")?
        .map_err(|err| self.project.config.backup.explain(err))?;
        bar.finish_and_clear();
        let details = ArchiveDetails {
            apparent_bytes: summary.apparent_bytes,
            stored_bytes: summary.stored_bytes,
            skipped: summary
                .skipped
                .iter()
                .map(|s| SkippedPath { path: s.path.display().to_string(), kind: s.kind.to_string() })
                .collect(),
        };
        for skipped in &summary.skipped {
            tracing::warn!("{skipped}");
        }
        let facts = ArchiveFacts {
            path: path.to_owned(),
            sha256: summary.sha256,
            size_bytes: summary.size_bytes,
            file_count: summary.file_count,
            entry_count: summary.entry_count,
            content_bytes: summary.content_bytes,
        };
        Ok((facts, details))
    }

    /// Checks the archive is still there, whole, then catalogs it under the run's id.
    fn record_backup(
        &self,
        run: &Run,
        archive: &ArchiveFacts,
        kind: BackupKind,
        note: Option<String>,
    ) -> anyhow::Result<()> {
        let size =
            std::fs::metadata(&archive.path).with_context(|| format!("the archive {} is gone", archive.path))?.len();
        if size != archive.size_bytes {
            anyhow::bail!("the archive {} is {size} bytes, but {} were written", archive.path, archive.size_bytes);
        }
        let protects_version = match run.spec() {
            RunSpec::Upgrade { .. } => self.journal.settings()?.deployed_version,
            _ => None,
        };
        let entry = BackupEntry {
            id: run.id(),
            run_id: run.id(),
            kind,
            created_at: run.started_at(),
            path: archive.path.clone(),
            size_bytes: archive.size_bytes,
            file_count: archive.file_count,
            entry_count: archive.entry_count,
            content_bytes: archive.content_bytes,
            sha256: archive.sha256.clone(),
            note,
            protects_version,
        };
        self.journal.record_backup_with(&entry, run.archive_details())?;
        Ok(())
    }

    /// The Docker connection; a run that needs one always has one (see the commands).
    pub fn docker(&self) -> anyhow::Result<&Docker> {
        self.docker
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this step needs the Docker daemon, which was not connected"))
    }

    /// Removes a backup from the catalog, then its archive: a crash in between leaves a file that
    /// `prune` reports as unknown, never a catalog entry without its archive. Either already gone
    /// is fine, so recovery can redo it.
    fn delete_backup(&self, backup: &BackupRef) -> anyhow::Result<()> {
        self.journal.remove_backup(backup.backup_id)?;
        crash_point("delete_backup:catalog_removed");
        let path = self.project.dir.join(&backup.path);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("deleted {}", path.display()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("cannot delete {}", path.display())),
        }
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        Ok(())
    }

    /// Removes the run's catalog entry (if any) before its files, so a crash in between leaves a
    /// stray file, never a catalog entry without its archive.
    fn discard_archive(&self, run: &Run, path: &str) -> anyhow::Result<()> {
        self.journal.remove_backup(run.id())?;
        let path = Path::new(path);
        for file in [path.to_path_buf(), lifeboat_archive::partial_path(path)] {
            match std::fs::remove_file(&file) {
                Ok(()) => tracing::info!("removed {}", file.display()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).with_context(|| format!("cannot remove {}", file.display())),
            }
        }
        if let Some(dir) = path.parent().filter(|d| d.exists()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        Ok(())
    }
}

/// A fail point: with the `failpoints` feature and `FAILPOINTS=<name>=return`, the process kills
/// itself here with SIGKILL, exactly as a crash would (no unwinding, no destructors, no flush).
///
/// `FAILPOINTS=<name>=return(SIGINT)` (or `SIGTERM`) sends that signal instead and carries on, as
/// an operator's Ctrl-C or a service manager's stop landing exactly there would.
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |signal: Option<String>| {
        let signal = match signal.as_deref() {
            Some("SIGINT") => libc::SIGINT,
            Some("SIGTERM") => libc::SIGTERM,
            _ => libc::SIGKILL,
        };
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), signal);
        }
    });
    let _ = name;
}
