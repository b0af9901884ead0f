//! `lifeboat upgrade PACKAGE`: deploy a service package as a journaled upgrade run.
//!
//! The package is validated whole before anything is touched (exit 2 or 5). The run then makes a
//! pre-upgrade backup (data and the deployment files the package replaces), swaps the package's
//! files in, brings the stack up with the compose command and verifies it; any failure from the
//! deploy on puts the old files, data and services back (see `crate::deploy` and the machine's
//! `settle`), and the command exits 1 naming the failed step.

use super::backup::{downtime_ms, failure_summary};
use super::{Ctx, confirm, connect_docker};
use crate::args::UpgradeArgs;
use crate::docker::Docker;
use crate::executor::Executor;
use crate::exit::Exit;
use crate::fail;
use crate::package::Package;
use crate::project::Project;
use crate::render;
use anyhow::Context;
use lifeboat_machine::{Event, PackageRef, RunSpec, State};
use std::path::Path;

/// What a finished upgrade reports (JSON: add fields, never rename).
#[derive(Debug, serde::Serialize)]
pub struct UpgradeReport {
    pub run_id: u64,
    pub backup_id: u64,
    pub from_version: Option<String>,
    pub to_version: String,
    pub state: String,
    pub downtime_ms: i64,
    /// How long each step took, in order.
    pub steps: Vec<StepTiming>,
}

#[derive(Debug, serde::Serialize)]
pub struct StepTiming {
    pub step: String,
    pub ms: i64,
}

pub async fn run(ctx: &Ctx, args: &UpgradeArgs) -> anyhow::Result<()> {
    let project = Project::load(&ctx.dir)?;
    // The lock is held through the question, so nothing changes between the answer and the run.
    let _lock = project.lock()?;
    let journal = project.journal()?;
    project.refuse_if_interrupted(&journal)?;
    // The pre-upgrade backup's dir: refused (exit 2) if others could plant names in it.
    crate::perms::refuse_unsafe_backup_dir(&project)?;
    let path = std::path::absolute(&args.package)
        .with_context(|| format!("bad package path {}", args.package.display()))
        .map_err(|e| Exit::Usage.wrap(e))?;
    let package = tokio::task::spawn_blocking({
        let path = path.clone();
        move || crate::package::validate(&path)
    })
    .await
    .context("the package check panicked")??;
    let from_version = journal.settings()?.deployed_version;
    let action = format!("upgrade to version {}", package.manifest.version);
    confirm(args.yes, &action, &question(&project, &package, from_version.as_deref()))?;
    let docker = connect_docker().await?;
    check_free_space(&project, &docker, &package).await?;
    let executor = Executor { project: &project, journal: &journal, docker: Some(docker), progress: ctx.progress };
    // The lock is held, so no other run can take this id before `begin_run` does.
    let run_id = journal.last_run_id()?.unwrap_or(0) + 1;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let name = format!("{}-{stamp}-run{run_id:06}-pre-upgrade.tar.gz", project.config.project.name);
    let archive_path = project.backup_dir().join(name).to_string_lossy().into_owned();
    let package_ref = PackageRef {
        path: path.to_string_lossy().into_owned(),
        version: package.manifest.version.clone(),
        sha256: package.sha256.clone(),
    };
    let run = executor.start(RunSpec::Upgrade { archive_path, package: package_ref }).await?;
    let events = journal.events(run.id())?;
    match run.state() {
        State::Completed => {
            let report = UpgradeReport {
                run_id: run.id(),
                backup_id: run.id(),
                from_version,
                to_version: package.manifest.version.clone(),
                state: run.state().as_str().to_owned(),
                downtime_ms: downtime_ms(&events).unwrap_or(0),
                steps: step_timings(&events),
            };
            print_report(ctx, &report)
        }
        _ => Err(Exit::of_unfinished_run(&run).wrap(anyhow::anyhow!("{}", failure_summary(&run)))),
    }
}

/// How long each effect took: from its intent to its outcome.
pub fn step_timings(events: &[Event]) -> Vec<StepTiming> {
    let mut out = Vec::new();
    let mut open: Option<(&'static str, i64)> = None;
    for event in events {
        match event {
            Event::Intent { at, effect } => open = Some((effect.name(), at.0)),
            Event::Outcome { at, .. } => {
                if let Some((step, start)) = open.take() {
                    out.push(StepTiming { step: step.to_owned(), ms: at.0 - start });
                }
            }
            _ => {}
        }
    }
    out
}

/// Refuses to start when the filesystems cannot hold the pre-upgrade backup (at most the data's
/// size) and the extracted package (about its size, plus the package's images while loading).
async fn check_free_space(project: &Project, docker: &Docker, package: &Package) -> anyhow::Result<()> {
    let mut data_bytes = 0;
    for path in &project.config.backup.paths {
        data_bytes += tree_size(&project.dir.join(path));
    }
    if project.config.backup.volumes {
        for volume in docker.project_volumes(&project.config.project.name).await? {
            data_bytes += tree_size(&volume.mountpoint);
        }
    }
    let backup_dir = project.backup_dir();
    let backup_fs = existing_ancestor(&backup_dir);
    let (backup_free, backup_fsid) = free_space(backup_fs)?;
    let (state_free, state_fsid) = free_space(&project.dir)?;
    let package_bytes = package.size_bytes.saturating_mul(2);
    let shortfall = if backup_fsid == state_fsid {
        (data_bytes + package_bytes > backup_free).then_some((data_bytes + package_bytes, backup_free, backup_fs))
    } else if data_bytes > backup_free {
        Some((data_bytes, backup_free, backup_fs))
    } else {
        (package_bytes > state_free).then_some((package_bytes, state_free, project.dir.as_path()))
    };
    if let Some((needed, free, place)) = shortfall {
        fail!(
            Exit::Failed,
            "not enough free space on the filesystem of {} for the pre-upgrade backup and the package: about {} \
             needed, {} free; free some space (or run 'lifeboat prune') and try again; nothing was changed",
            place.display(),
            render::bytes(needed),
            render::bytes(free)
        );
    }
    Ok(())
}

fn existing_ancestor(path: &Path) -> &Path {
    let mut path = path;
    while !path.exists() {
        match path.parent() {
            Some(parent) => path = parent,
            None => break,
        }
    }
    path
}

/// Bytes available to an unprivileged user on the filesystem of `path`, and its id.
fn free_space(path: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).with_context(|| format!("bad path {}", path.display()))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot read free space of {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64), stat.f_fsid as u64))
}

/// The size of the regular files below `path` (0 when it is missing or unreadable).
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries.filter_map(Result::ok).map(|e| tree_size(&e.path())).sum()
}

/// Asks on the terminal; `true` for yes.
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

fn print_report(ctx: &Ctx, report: &UpgradeReport) -> anyhow::Result<()> {
    if ctx.json {
        return ctx.print_json(&serde_json::to_value(report)?);
    }
    outln!(
        "upgrade to version {} completed (run {}, from {})",
        report.to_version,
        report.run_id,
        report.from_version.as_deref().unwrap_or("an unrecorded version")
    )?;
    outln!("  pre-upgrade backup  {}", report.backup_id)?;
    outln!("  downtime            {}", render::duration_ms(report.downtime_ms))?;
    for step in &report.steps {
        outln!("  {:<19} {}", step.step, render::duration_ms(step.ms))?;
    }
    Ok(())
}
