//! `lifeboat init`: write `lifeboat.toml` with defaults.

use super::Ctx;
use crate::args::InitArgs;
use crate::config::{CONFIG_FILE, Config};
use crate::exit::Exit;
use crate::fail;
use anyhow::Context;

pub fn run(ctx: &Ctx, args: &InitArgs) -> anyhow::Result<()> {
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
    std::fs::write(&path, config.to_commented_toml()).with_context(|| format!("cannot write {}", path.display()))?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "path": path, "project": project }))?;
    } else {
        outln!("wrote {} for compose project {project:?}", path.display())?;
        outln!("next: check backup.paths, then run 'lifeboat backup'")?;
    }
    Ok(())
}

/// The name docker-compose gives a project by default: the directory's name, lowercased, with
/// only letters, digits, '-' and '_'.
fn default_project_name(dir: &std::path::Path) -> String {
    let name = dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    if name.is_empty() { "default".into() } else { name }
}
