//! `lifeboat package build DIR -o PKG.tar.gz [--version V]`: make a service package (ARCHITECTURE.md, "The flow of an upgrade").

use super::Ctx;
use crate::render;
use std::path::Path;

pub fn build(ctx: &Ctx, dir: &Path, output: &Path, version: Option<&str>) -> anyhow::Result<()> {
    let package = crate::package::build(dir, output, version)?;
    if ctx.json {
        return ctx.print_json(&serde_json::json!({
            "path": package.path.to_string_lossy(),
            "version": package.manifest.version,
            "sha256": package.sha256,
            "size_bytes": package.size_bytes,
            "deploy_files": package.deploy_files,
            "images": package.images,
        }));
    }
    outln!("package {} (version {})", package.path.display(), package.manifest.version)?;
    outln!("  size     {}", render::bytes(package.size_bytes))?;
    outln!("  sha256   {}", package.sha256)?;
    outln!("  deploys  {}", render::list(&package.deploy_files))?;
    outln!("  images   {}", render::list(&package.images))?;
    Ok(())
}
