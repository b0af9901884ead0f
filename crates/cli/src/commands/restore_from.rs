//! `lifeboat restore --from ARCHIVE [-C DIR]`: bring a project up from its archive alone, on a
//! host that never saw it (docs/design.md, "Restore onto a new host").
//!
//! Before anything is written: the archive is read through and checked against its sidecar and
//! manifest, and the plan (what it creates: files, directories, volumes; the services it starts)
//! is made, every item in it checked absent, and every image the services need checked present.
//! Then `lifeboat.toml` is written from the archive, the journal is created, the backup is
//! catalogued, and a journaled `RestoreNew` run does the rest (`crate::effects::provision`,
//! `crate::effects::data_swap`). Killed at any point, `lifeboat recover` either finishes it or
//! removes what the plan lists, and nothing else: `lifeboat.toml` and `.lifeboat/` stay, so the
//! journal can tell what happened.

use super::{Ctx, confirm};
use crate::args::RestoreArgs;
use crate::config::{CONFIG_FILE, Config};
use crate::docker::Docker;
use crate::exit::Exit;
use crate::fail;
use crate::manifest::{Manifest, RootTarget};
use crate::output::Report;
use crate::project::{Project, STATE_DIR};
use crate::render;
use crate::runs::{RunSession, conclude, history, standalone};
use anyhow::Context;
use lifeboat_machine::{NewVolume, Provision, RunKind, RunSpec};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a restore onto a new host reports (JSON: add fields, never rename).
#[derive(Debug, serde::Serialize)]
pub struct RestoreFromReport {
    pub run_id: u64,
    /// The backup's id, in the new catalog as in the one that made it.
    pub backup_id: u64,
    pub archive: String,
    pub project: String,
    pub dir: String,
    /// The roots put in place, by their names in the archive.
    pub restored: Vec<String>,
    pub created_volumes: Vec<String>,
    /// Volumes that existed and were replaced, as `--replace` named them.
    pub replaced_volumes: Vec<String>,
    pub created_files: Vec<String>,
    pub created_dirs: Vec<String>,
    /// The services brought up, in the order they came up.
    pub started: Vec<String>,
    pub duration_ms: i64,
}

pub async fn run(ctx: &Ctx, args: &RestoreArgs, from: &Path) -> anyhow::Result<RestoreFromReport> {
    let archive = standalone::archive_arg(from)?;
    let checked = standalone::check(&archive, ctx.progress)?;
    if !checked.had_sidecar {
        tracing::warn!("{} has no .sha256 file beside it: checked by its own read-through only", archive.display());
    }
    let manifest = &checked.manifest;
    let config_text = member_text(&archive, &format!("deploy/{CONFIG_FILE}"))?;
    let config = Config::parse(&config_text, &format!("the {CONFIG_FILE} in {}", archive.display()))
        .map_err(|err| Exit::Integrity.wrap(err))?;
    if config.project.name != manifest.project {
        fail!(
            Exit::Integrity,
            "{}: its manifest names project {:?} but its {CONFIG_FILE} {:?}",
            archive.display(),
            manifest.project,
            config.project.name
        );
    }
    let dir = crate::runs::absolute(&ctx.dir, "project directory")?;
    let ctx = Ctx { dir: dir.clone(), ..ctx.clone() };
    // An earlier attempt of this same restore left its lifeboat.toml and journal: an interrupted
    // run there is settled by 'lifeboat recover' first (exit 4), as in any project.
    let earlier = match refuse_existing_project(&dir, &config_text)? {
        true => Some(RunSession::open(&ctx)?),
        false => None,
    };

    let docker = Docker::connect().await.map_err(|err| Exit::Failed.wrap(err))?;
    let plan = plan(&dir, manifest, &config, &docker, &args.replace, &archive).await?;
    confirm(args.yes, "the restore", &question(&archive, manifest, &dir, &plan, &args.replace))?;

    // From here on things are written: lifeboat.toml first, so the journal (and `recover`) has
    // a project to belong to.
    let mut session = match earlier {
        Some(session) => session,
        None => {
            write_config(&dir, &config_text)?;
            RunSession::open(&ctx)?
        }
    };
    let imported = checked.import_into(&session.journal)?;
    let entry = checked.entry()?;
    tracing::info!("backup {} {} the catalog", entry.id, if imported { "added to" } else { "was already in" });
    session.connect().await?;
    let provision = plan.clone();
    let run =
        session.run(RunKind::RestoreNew, |_| RunSpec::RestoreNew { backup: entry.backup_ref(), provision }).await?;
    conclude(&run)?;
    let events = session.journal.events(run.id())?;
    Ok(RestoreFromReport {
        run_id: run.id(),
        backup_id: entry.id,
        archive: archive.display().to_string(),
        project: manifest.project.clone(),
        dir: dir.display().to_string(),
        restored: manifest
            .paths()
            .map(|(r, _)| r.archive_name.clone())
            .chain(manifest.volumes().map(|r| r.archive_name.clone()))
            .collect(),
        created_volumes: plan.volumes.iter().map(|v| v.name.clone()).collect(),
        replaced_volumes: args.replace.clone(),
        created_files: plan.files.clone(),
        created_dirs: plan.dirs.clone(),
        started: history::restarted(&events).unwrap_or_else(|| plan.services.clone()),
        duration_ms: run.last_event_at().0 - run.started_at().0,
    })
}

/// A small member of the archive as text (its deployment files).
fn member_text(archive: &Path, name: &str) -> anyhow::Result<String> {
    let bytes = lifeboat_archive::read_member(archive, name, 4 << 20).map_err(|err| {
        Exit::Integrity.wrap(anyhow::Error::new(err).context(format!("{}: no {name}", archive.display())))
    })?;
    String::from_utf8(bytes)
        .map_err(|_| Exit::Integrity.wrap(anyhow::anyhow!("{}: {name} is not UTF-8", archive.display())))
}

/// DIR must hold no project (`Ok(false)`), or the same one from an earlier attempt of this
/// restore (`Ok(true)`: its journal says what became of it).
fn refuse_existing_project(dir: &Path, config_text: &str) -> anyhow::Result<bool> {
    match std::fs::read_to_string(dir.join(CONFIG_FILE)) {
        Ok(existing) if existing == config_text => Ok(true),
        Ok(_) => fail!(
            Exit::Usage,
            "{} already holds a project ({CONFIG_FILE} differs from the archive's): restore into an empty \
             directory with -C, or restore in place with 'lifeboat import' then 'lifeboat restore ID'",
            dir.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", dir.join(CONFIG_FILE).display())),
    }
}

/// What the restore creates, each item checked absent; what it needs, checked present.
async fn plan(
    dir: &Path,
    manifest: &Manifest,
    config: &Config,
    docker: &Docker,
    replace: &[String],
    archive: &Path,
) -> anyhow::Result<Provision> {
    let project = &manifest.project;
    let containers = docker.project_containers(project, None).await.map_err(|err| Exit::Failed.wrap(err))?;
    if !containers.is_empty() {
        fail!(
            Exit::Usage,
            "compose project {project} already has {} container(s) on this host: this is not a new host for it \
             ('docker ps -a --filter label=com.docker.compose.project={project}')",
            containers.len()
        );
    }
    let mut files = Vec::new();
    for rel in manifest.deployment_files.iter().filter(|f| *f != CONFIG_FILE) {
        let path = dir.join(rel);
        if std::fs::symlink_metadata(&path).is_ok() {
            fail!(Exit::Usage, "{} exists: a restore onto a new host never overwrites a file", path.display());
        }
        files.push(rel.clone());
    }
    let mut dirs = Vec::new();
    for (_, rel) in manifest.paths() {
        match first_missing(dir, rel) {
            Some(missing) => {
                if !dirs.contains(&missing) {
                    dirs.push(missing);
                }
            }
            None => {
                let path = dir.join(rel);
                let empty = std::fs::read_dir(&path).map(|mut d| d.next().is_none()).unwrap_or(false);
                if !empty {
                    fail!(
                        Exit::Usage,
                        "{} exists and is not empty: a restore onto a new host never replaces data there",
                        path.display()
                    );
                }
            }
        }
    }
    let mut volumes = Vec::new();
    for root in manifest.volumes() {
        let RootTarget::Volume { docker_name, driver, driver_options, labels, .. } = &root.target else { continue };
        let exists = docker.volume(docker_name).await.map_err(|err| Exit::Failed.wrap(err))?.is_some();
        match (exists, replace.contains(docker_name)) {
            (false, _) => volumes.push(NewVolume {
                name: docker_name.clone(),
                driver: driver.clone(),
                driver_options: driver_options.clone().into_iter().collect(),
                labels: labels.clone().into_iter().collect(),
            }),
            (true, true) => {}
            (true, false) => fail!(
                Exit::Usage,
                "volume {docker_name} already exists on this host: pass --replace {docker_name} to restore into it \
                 (its data is kept aside until the restore runs healthy, and put back if it does not)"
            ),
        }
    }
    for name in replace {
        if !manifest
            .volumes()
            .any(|r| matches!(&r.target, RootTarget::Volume { docker_name, .. } if docker_name == name))
        {
            fail!(Exit::Usage, "--replace {name}: the archive holds no volume {name}");
        }
    }
    // Every image a service to start needs must be here: there may be no registry to pull from.
    let compose_text = member_text(archive, &format!("deploy/{}", config.project.compose_file))?;
    let images = crate::compose::images(&compose_text)
        .map_err(|reason| Exit::Integrity.wrap(anyhow::anyhow!("the compose file in the archive: {reason}")))?;
    let mut missing = Vec::new();
    for service in &manifest.running_services {
        if let Some(image) = images.get(service)
            && !docker.has_image(image).await.map_err(|err| Exit::Failed.wrap(err))?
        {
            missing.push(format!("{image} (service {service})"));
        }
    }
    if !missing.is_empty() {
        fail!(
            Exit::Failed,
            "this host lacks the image(s) {}: load them ('docker load -i IMAGE.tar') or pull them, then restore again; \
             nothing was written",
            missing.join(", ")
        );
    }
    Ok(Provision { volumes, files, dirs, services: manifest.running_services.clone() })
}

/// The first component of `rel` below `dir` that does not exist (what creating `rel` creates),
/// or `None` when `dir/rel` exists.
fn first_missing(dir: &Path, rel: &str) -> Option<String> {
    let mut path = PathBuf::new();
    for part in rel.split('/') {
        path.push(part);
        if std::fs::symlink_metadata(dir.join(&path)).is_err() {
            return Some(path.display().to_string());
        }
    }
    None
}

fn question(archive: &Path, manifest: &Manifest, dir: &Path, plan: &Provision, replace: &[String]) -> String {
    let volumes: Vec<String> = plan.volumes.iter().map(|v| v.name.clone()).collect();
    let mut text = format!(
        "restore project {} from {} (backup {}, made {}) into {}?\n\
         it writes {CONFIG_FILE} and {STATE_DIR}/, and creates\n\
         \x20 files        {}\n\
         \x20 directories  {}\n\
         \x20 volumes      {}\n\
         then starts    {}",
        manifest.project,
        archive.display(),
        manifest.run_id,
        manifest.created_at,
        dir.display(),
        render::list(&plan.files),
        render::list(&plan.dirs),
        render::list(&volumes),
        render::list(&plan.services),
    );
    if !replace.is_empty() {
        text.push_str(&format!("\nand REPLACES the data of the existing volume(s) {}", replace.join(", ")));
    }
    text
}

/// `lifeboat.toml` from the archive, written whole (temporary name, fsync, rename).
fn write_config(dir: &Path, text: &str) -> anyhow::Result<()> {
    let path = dir.join(CONFIG_FILE);
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let temp = dir.join(format!("{CONFIG_FILE}.partial"));
    let _ = std::fs::remove_file(&temp);
    let mut file =
        crate::fsutil::create_private_file(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    crate::fsutil::fsync_dir(dir)?;
    // Checked as any project's configuration is, before the journal opens.
    Project::load(dir)?;
    Ok(())
}

impl Report for RestoreFromReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "restore of backup {} into {} completed (run {})", self.backup_id, self.dir, self.run_id)?;
        writeln!(out, "  from       {}", self.archive)?;
        writeln!(out, "  restored   {}", render::list(&self.restored))?;
        writeln!(out, "  volumes    created {}", render::list(&self.created_volumes))?;
        if !self.replaced_volumes.is_empty() {
            writeln!(out, "             replaced {}", render::list(&self.replaced_volumes))?;
        }
        writeln!(out, "  files      {}", render::list(&self.created_files))?;
        writeln!(out, "  started    {}", render::list(&self.started))?;
        writeln!(out, "  took       {}", render::duration_ms(self.duration_ms))
    }
}
