//! `lifeboat upgrade PACKAGE`: deploy a service package as a journaled upgrade run.
//!
//! The package is validated whole before anything is touched (exit 2 or 5). The run then makes a
//! pre-upgrade backup (data and the deployment files the package replaces), swaps the package's
//! files in, brings the stack up with the compose command and verifies it; any failure from the
//! deploy on puts the old files, data and services back (see `crate::effects::deploy_swap` and
//! the machine's `settle`), and the command exits 1 naming the failed step.

use super::{Ctx, confirm};
use crate::args::UpgradeArgs;
use crate::output::Report;
use crate::package::Package;
use crate::project::Project;
use crate::render;
use crate::runs::history::{self, StepTiming};
use crate::runs::{RunSession, conclude};
use anyhow::Context;
use lifeboat_machine::{PackageRef, RunKind, RunSpec};
use std::io::Write;

/// What a finished upgrade reports (JSON: add fields, never rename).
#[derive(Debug, serde::Serialize)]
pub struct UpgradeReport {
    pub run_id: u64,
    /// The pre-upgrade backup; `null` for a first deployment, which has nothing to back up.
    pub backup_id: Option<u64>,
    /// Nothing was deployed before: no backup was made, and the data paths were created.
    pub first_deployment: bool,
    pub from_version: Option<String>,
    pub to_version: String,
    pub state: String,
    pub downtime_ms: i64,
    /// How long each step took, in order.
    pub steps: Vec<StepTiming>,
    /// The `after_upgrade` hooks that failed (exit 6): the new version stays deployed.
    pub hook_failures: Vec<String>,
    /// The copies to each `[[remote]]` tried once the new version is up (the pre-upgrade
    /// backup's, and any left pending), as in `backup`'s report.
    pub copies: Vec<crate::runs::ship::CopyReport>,
}

pub async fn run(ctx: &Ctx, args: &UpgradeArgs) -> anyhow::Result<UpgradeReport> {
    let mut session = RunSession::open(ctx)?;
    // The pre-upgrade backup's dir: refused (exit 2) if others could plant names in it.
    crate::perms::refuse_unsafe_backup_dir(&session.project)?;
    let path = crate::runs::absolute(&args.package, "package")?;
    let package = tokio::task::spawn_blocking({
        let path = path.clone();
        move || crate::package::validate(&path)
    })
    .await
    .context("the package check panicked")??;
    let from_version = session.journal.settings()?.deployed_version;
    let action = format!("upgrade to version {}", package.manifest.version);
    confirm(args.yes, &action, &question(&session.project, &package, from_version.as_deref()))?;
    session.connect().await?;
    // The extracted package, and its images while they load: about twice its size.
    crate::runs::space::check(&session.project, &session.volumes().await?, package.size_bytes.saturating_mul(2))?;
    let package_ref = PackageRef {
        path: path.to_string_lossy().into_owned(),
        version: package.manifest.version.clone(),
        sha256: package.sha256.clone(),
    };
    let first = first_deployment(&session).await?;
    let run = if first {
        session.run(RunKind::FirstDeploy, |_| RunSpec::FirstDeploy { package: package_ref }).await?
    } else {
        session
            .run(RunKind::Upgrade, |id| RunSpec::Upgrade {
                archive_path: session.archive_path(id, "-pre-upgrade"),
                package: package_ref,
            })
            .await?
    };
    conclude(&run)?;
    let events = session.journal.events(run.id())?;
    let copies = crate::runs::ship::ship_after(&session, run.id()).await;
    Ok(UpgradeReport {
        run_id: run.id(),
        backup_id: if first { None } else { Some(run.id()) },
        first_deployment: first,
        from_version,
        to_version: package.manifest.version.clone(),
        state: run.state().as_str().to_owned(),
        downtime_ms: history::downtime_ms(&events).unwrap_or(0),
        steps: history::step_timings(&events),
        hook_failures: run.hook_failures().iter().map(|f| f.error.clone()).collect(),
        copies,
    })
}

/// Whether nothing is deployed yet: no container, no named volume, and every data path missing
/// or empty. Then there is nothing to back up; the missing data paths are created (and said so),
/// as the services' bind mounts need them.
async fn first_deployment(session: &RunSession) -> anyhow::Result<bool> {
    if !session.containers().await?.is_empty() || !session.volumes().await?.is_empty() {
        return Ok(false);
    }
    let project = &session.project;
    let paths: Vec<std::path::PathBuf> = project.config.backup.paths.iter().map(|p| project.dir.join(p)).collect();
    let empty = |p: &std::path::Path| std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(false);
    if !paths.iter().all(|p| !p.exists() || empty(p)) {
        return Ok(false);
    }
    for path in paths.iter().filter(|p| !p.exists()) {
        std::fs::create_dir_all(path).with_context(|| format!("cannot create the data path {}", path.display()))?;
        tracing::warn!("created the data path {} (nothing was deployed yet)", path.display());
    }
    tracing::warn!("nothing is deployed yet: this is a first deployment, with no pre-upgrade backup");
    Ok(true)
}

fn question(project: &Project, package: &Package, from: Option<&str>) -> String {
    format!(
        "upgrade {} from version {} to {}?\n\
         the running services stop for a pre-upgrade backup; then {} replace the current files, the stack \
         comes up and is verified;\nif it does not come up healthy, the old files, data and services are put back.",
        project.config.project.name,
        from.unwrap_or("(unknown)"),
        package.manifest.version,
        render::list(&package.deploy_files),
    )
}

impl Report for UpgradeReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "upgrade to version {} completed (run {}, from {})",
            self.to_version,
            self.run_id,
            self.from_version.as_deref().unwrap_or("an unrecorded version")
        )?;
        match self.backup_id {
            Some(id) => writeln!(out, "  pre-upgrade backup  {id}")?,
            None => writeln!(out, "  pre-upgrade backup  none: a first deployment, nothing to back up")?,
        }
        writeln!(out, "  downtime            {}", render::duration_ms(self.downtime_ms))?;
        history::write_steps(out, &self.steps)?;
        crate::runs::ship::write_lines(out, &self.copies)?;
        history::write_hook_failures(out, &self.hook_failures)
    }

    /// Exit 6 when an `after_upgrade` hook failed: the new version stays deployed; 2 when a
    /// remote refused its settings (the upgrade stands).
    fn exit(&self) -> anyhow::Result<()> {
        history::hook_failure_exit(&format!("upgrade run {}", self.run_id), &self.hook_failures)?;
        crate::runs::ship::warn_and_exit(&self.copies)
    }
}
