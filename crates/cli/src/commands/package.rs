//! `lifeboat package build DIR -o PKG.tar.gz [--version V]`: make a service package
//! (docs/design.md, "Package format").

use super::Ctx;
use crate::output::Report;
use crate::render;
use std::io::Write;
use std::path::Path;

/// The package built.
#[derive(Debug, serde::Serialize)]
pub struct PackageReport {
    pub path: String,
    pub version: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub deploy_files: Vec<String>,
    pub images: Vec<String>,
}

pub fn build(_: &Ctx, dir: &Path, output: &Path, version: Option<&str>) -> anyhow::Result<PackageReport> {
    let package = crate::package::build(dir, output, version)?;
    Ok(PackageReport {
        path: package.path.to_string_lossy().into_owned(),
        version: package.manifest.version,
        sha256: package.sha256,
        size_bytes: package.size_bytes,
        deploy_files: package.deploy_files,
        images: package.images,
    })
}

impl Report for PackageReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "package {} (version {})", self.path, self.version)?;
        writeln!(out, "  size     {}", render::bytes(self.size_bytes))?;
        writeln!(out, "  sha256   {}", self.sha256)?;
        writeln!(out, "  deploys  {}", render::list(&self.deploy_files))?;
        writeln!(out, "  images   {}", render::list(&self.images))
    }
}
