//! `lifeboat init`: write `lifeboat.toml` with defaults.

use super::Ctx;
use crate::args::InitArgs;
use crate::config::{CONFIG_FILE, Config};
use crate::exit::Exit;
use crate::fail;
use crate::output::Report;
use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// What `init` wrote and created.
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub path: PathBuf,
    pub project: String,
    /// The directories it created (private to their owner).
    pub created: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

pub fn run(ctx: &Ctx, args: &InitArgs) -> anyhow::Result<InitReport> {
    let dir = std::path::absolute(&ctx.dir)?;
    if !dir.is_dir() {
        fail!(Exit::Usage, "{} is not a directory: create it first or pass another -C DIR", dir.display());
    }
    let path = dir.join(CONFIG_FILE);
    if path.exists() && !args.force {
        fail!(Exit::Usage, "{} already exists: edit it, or pass --force to overwrite it", path.display());
    }
    let project = match &args.project {
        Some(name) => name.clone(),
        None => default_project_name(&dir),
    };
    let config = Config::new(&project, &args.compose_file);
    // Never writable by others (0644 at most, the umask can only narrow it): the configuration
    // says what root archives and where (docs/security.md, "What lifeboat trusts").
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)
        .and_then(|mut file| file.write_all(config.to_commented_toml().as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The state dir and the default backup dir, private whatever the umask (docs/security.md);
    // existing ones are left as they are, with a warning if others can read or write them.
    let project = crate::project::Project { dir, config };
    let mut created = Vec::new();
    for dir in [project.state_dir(), project.backup_dir()] {
        if crate::fsutil::create_private_dir(&dir, None).with_context(|| format!("cannot create {}", dir.display()))? {
            created.push(dir);
        }
    }
    let warnings = crate::perms::exposure_warnings(&project, []);
    Ok(InitReport {
        path,
        project: project.config.project.name,
        created,
        warnings: warnings.into_iter().map(|w| w.message).collect(),
    })
}

impl Report for InitReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "wrote {} for compose project {:?}", self.path.display(), self.project)?;
        for dir in &self.created {
            writeln!(out, "created {} (mode 0700: private to its owner)", dir.display())?;
        }
        for warning in &self.warnings {
            writeln!(out, "warning: {warning}")?;
        }
        writeln!(out, "next: check backup.paths, then run 'lifeboat backup'")
    }
}

/// The name docker-compose gives a project by default: the directory's name, lowercased, with
/// only letters, digits, '-' and '_'.
fn default_project_name(dir: &std::path::Path) -> String {
    let name = dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    if name.is_empty() { "default".into() } else { name }
}
