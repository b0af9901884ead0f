//! Service packages (ARCHITECTURE.md, "The flow of an upgrade"): reading, validating and building them.
//!
//! A package is a `.tar.gz` with `lifeboat-package.toml` at its root, `deploy/` (files that replace
//! the project's deployment files: `deploy/docker-compose.yml` replaces `<project>/docker-compose.yml`)
//! and optional `images/*.tar` (`docker save` archives). The manifest names the version and lists
//! every other file with its sha256:
//!
//! ```toml
//! version = "2"
//! [files]
//! "deploy/docker-compose.yml" = "9f86d08..."
//! "images/app-v2.tar" = "60303ae..."
//! ```
//!
//! [`validate`] reads the whole package before anything is written anywhere: it is a read-only
//! check, so a refused package leaves the disk as it was. Refused: a missing or unparseable
//! manifest, an entry that is not a regular file or a directory (symlinks, hard links, devices),
//! a name that is absolute, has `..` or lies outside `deploy/` and `images/`, a file the manifest
//! does not list, a listed file that is missing, and a file whose sha256 differs from the listed
//! one. A checksum mismatch, a truncated or corrupt archive is an integrity error (exit 5); every
//! other refusal is a usage error (exit 2).

use crate::exit::Exit;
use anyhow::Context;
use lifeboat_archive::{ArchiveError, EntryKind, Root, WriteOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The manifest's name at the root of a package.
pub const MANIFEST: &str = "lifeboat-package.toml";

/// The largest manifest read into memory.
const MANIFEST_LIMIT: u64 = 1 << 20;

/// `lifeboat-package.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The version this package deploys.
    pub version: String,
    /// Every other file of the package (`deploy/...`, `images/*.tar`) and its sha256, lowercase hex.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// A package that passed [`validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// sha256 of the package file itself.
    pub sha256: String,
    pub size_bytes: u64,
    /// The deployment files, relative to the project directory (`docker-compose.yml`, `.env`).
    pub deploy_files: Vec<String>,
    /// The image archives, as named in the package (`images/app.tar`).
    pub images: Vec<String>,
}

fn usage(message: String) -> anyhow::Error {
    Exit::Usage.wrap(anyhow::anyhow!(message))
}

fn integrity(message: String) -> anyhow::Error {
    Exit::Integrity.wrap(anyhow::anyhow!(message))
}

/// Checks a name of the package: relative, normal components only, under `deploy/` or `images/`
/// (or the manifest itself). Returns an error text, or `Ok`.
fn check_name(name: &str, kind: EntryKind) -> Result<(), String> {
    if name.is_empty() {
        return Err("has an empty name".into());
    }
    if name.starts_with('/') {
        return Err("has an absolute path".into());
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.contains(&"..") {
        return Err("contains a '..' component".into());
    }
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return Err("has an empty or '.' component".into());
    }
    if name.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    match kind {
        EntryKind::File | EntryKind::Dir => {}
        EntryKind::Symlink => return Err("is a symbolic link, which packages may not contain".into()),
        EntryKind::HardLink => return Err("is a hard link, which packages may not contain".into()),
        EntryKind::Other => return Err("is a device, fifo or other special file".into()),
    }
    if name == MANIFEST {
        return if kind == EntryKind::File { Ok(()) } else { Err("must be a regular file".into()) };
    }
    match parts[0] {
        "deploy" => {
            if parts.len() >= 2 && (parts[1] == ".lifeboat" || (parts.len() == 2 && parts[1] == "lifeboat.toml")) {
                return Err("would replace lifeboat's own state or configuration".into());
            }
            Ok(())
        }
        "images" => {
            if kind == EntryKind::File && (parts.len() != 2 || !name.ends_with(".tar")) {
                return Err("is not an image archive 'images/NAME.tar'".into());
            }
            if kind == EntryKind::Dir && parts.len() != 1 {
                return Err("is a directory below images/, which holds only NAME.tar files".into());
            }
            Ok(())
        }
        _ => Err("is outside deploy/ and images/".into()),
    }
}

/// Reads and checks a package without writing anything (see the module docs). The error carries
/// exit code 2 (a bad package) or 5 (a checksum mismatch or a corrupt archive).
pub fn validate(path: &Path) -> anyhow::Result<Package> {
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| usage(format!("cannot read package {shown}: {e}; check the path")))?;
    if !meta.is_file() {
        return Err(usage(format!("package {shown} is not a file")));
    }
    let entries = lifeboat_archive::list_entries(path).map_err(|e| archive_error(path, e))?;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in &entries {
        if let Err(reason) = check_name(&entry.path, entry.kind) {
            return Err(usage(format!(
                "refusing package {shown}: entry {:?} {reason}; nothing was changed",
                entry.path
            )));
        }
        if !seen.insert(entry.path.clone()) {
            return Err(usage(format!(
                "refusing package {shown}: entry {:?} appears twice; nothing was changed",
                entry.path
            )));
        }
        if entry.kind == EntryKind::File && entry.path != MANIFEST {
            files.insert(entry.path.clone(), entry.sha256.clone().unwrap_or_default());
        }
    }
    if !seen.contains(MANIFEST) {
        return Err(usage(format!(
            "{shown} is not a lifeboat package: it has no {MANIFEST} at its root; build one with 'lifeboat package build'"
        )));
    }
    let text = lifeboat_archive::read_member(path, MANIFEST, MANIFEST_LIMIT).map_err(|e| archive_error(path, e))?;
    let text = String::from_utf8(text).map_err(|_| usage(format!("the {MANIFEST} of {shown} is not UTF-8")))?;
    let manifest: Manifest =
        toml::from_str(&text).map_err(|e| usage(format!("cannot parse the {MANIFEST} of {shown}: {e}")))?;
    check_version(&manifest.version).map_err(|reason| usage(format!("the {MANIFEST} of {shown}: {reason}")))?;
    for (name, sha) in &manifest.files {
        match files.get(name) {
            None => {
                return Err(usage(format!(
                    "refusing package {shown}: its manifest lists {name:?}, which the package does not hold"
                )));
            }
            Some(actual) if !actual.eq_ignore_ascii_case(sha.trim()) => {
                return Err(integrity(format!(
                    "checksum mismatch in package {shown}: {name} has sha256 {actual}, the manifest says {sha}; \
                     the package is corrupt or was tampered with, nothing was changed"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(unlisted) = files.keys().find(|name| !manifest.files.contains_key(*name)) {
        return Err(usage(format!(
            "refusing package {shown}: {unlisted:?} is not listed in its manifest; rebuild it with 'lifeboat package build'"
        )));
    }
    let deploy_files: Vec<String> =
        files.keys().filter_map(|name| name.strip_prefix("deploy/")).map(str::to_owned).collect();
    if deploy_files.is_empty() {
        return Err(usage(format!("package {shown} has no deployment files under deploy/")));
    }
    let images = files.keys().filter(|name| name.starts_with("images/")).cloned().collect();
    let sha256 = lifeboat_archive::sha256_file(path).map_err(|e| archive_error(path, e))?;
    Ok(Package { path: path.to_path_buf(), manifest, sha256, size_bytes: meta.len(), deploy_files, images })
}

fn check_version(version: &str) -> Result<(), String> {
    if version.trim().is_empty() {
        return Err("'version' is empty".into());
    }
    if version.len() > 128 || version.chars().any(|c| c.is_control()) {
        return Err(format!("'version' {version:?} is not a short printable string"));
    }
    Ok(())
}

fn archive_error(path: &Path, error: ArchiveError) -> anyhow::Error {
    let code = if error.is_integrity() { Exit::Integrity } else { Exit::Usage };
    code.wrap(anyhow::Error::new(error).context(format!("refusing package {}; nothing was changed", path.display())))
}

/// Reads only the list of deployment files from a package's manifest (for the pre-upgrade backup,
/// after the package was validated).
pub fn deploy_files_of(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = lifeboat_archive::read_member(path, MANIFEST, MANIFEST_LIMIT)
        .with_context(|| format!("cannot read the manifest of package {}", path.display()))?;
    let manifest: Manifest = toml::from_str(&String::from_utf8_lossy(&text))
        .with_context(|| format!("cannot parse the manifest of package {}", path.display()))?;
    Ok(manifest.files.keys().filter_map(|n| n.strip_prefix("deploy/")).map(str::to_owned).collect())
}

/// `lifeboat package build DIR -o OUTPUT [--version V]`: writes the manifest of DIR's `deploy/` and
/// `images/` and archives them. Without `--version`, the version of an existing
/// `DIR/lifeboat-package.toml` is kept. Returns the package as [`validate`] reads it back.
pub fn build(dir: &Path, output: &Path, version: Option<&str>) -> anyhow::Result<Package> {
    let version = match version {
        Some(v) => v.to_owned(),
        None => {
            let existing = dir.join(MANIFEST);
            let text = std::fs::read_to_string(&existing).map_err(|_| {
                usage(format!("no --version given and {} has no {MANIFEST}: pass --version", dir.display()))
            })?;
            let manifest: Manifest =
                toml::from_str(&text).map_err(|e| usage(format!("cannot parse {}: {e}", existing.display())))?;
            manifest.version
        }
    };
    check_version(&version).map_err(|reason| usage(format!("--version: {reason}")))?;
    let mut files = BTreeMap::new();
    let mut roots = Vec::new();
    for top in ["deploy", "images"] {
        let root = dir.join(top);
        match std::fs::symlink_metadata(&root) {
            Ok(meta) if meta.is_dir() => {
                hash_tree(&root, top, &mut files)?;
                roots.push(Root { archive_name: top.to_owned(), source: root });
            }
            Ok(_) => return Err(usage(format!("{} is not a directory", root.display()))),
            Err(_) if top == "images" => {}
            Err(_) => return Err(usage(format!("{} has no deploy/ directory: nothing to package", dir.display()))),
        }
    }
    for name in files.keys() {
        check_name(name, EntryKind::File).map_err(|reason| usage(format!("{name} {reason}")))?;
    }
    let manifest = Manifest { version, files };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let scratch = std::env::temp_dir().join(format!("lifeboat-package-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let _cleanup = RemoveOnDrop(scratch.clone());
    let manifest_path = scratch.join(MANIFEST);
    std::fs::write(&manifest_path, toml::to_string(&manifest).context("cannot encode the manifest")?)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    roots.insert(0, Root { archive_name: MANIFEST.to_owned(), source: manifest_path });
    match std::fs::remove_file(output) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", output.display())),
    }
    lifeboat_archive::write_archive(&roots, output, &WriteOptions::default(), &mut |_| {})
        .with_context(|| format!("cannot write package {}", output.display()))?;
    validate(output)
}

/// Removes a scratch directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Adds every regular file below `dir` to `files` as `<prefix>/<rel>` with its sha256. Links and
/// special files are refused: a package holds regular files only.
fn hash_tree(dir: &Path, prefix: &str, files: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().into_string().map_err(|n| usage(format!("{n:?} is not UTF-8")))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let rel = format!("{prefix}/{name}");
        if meta.is_dir() {
            hash_tree(&path, &rel, files)?;
        } else if meta.is_file() {
            files.insert(rel, sha256_of(&path)?);
        } else {
            return Err(usage(format!(
                "{} is not a regular file or directory; packages hold only those",
                path.display()
            )));
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    lifeboat_archive::sha256_file(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("deploy/docker-compose.yml", EntryKind::File).is_ok());
        assert!(check_name("deploy/conf/app.ini", EntryKind::File).is_ok());
        assert!(check_name("images/app.tar", EntryKind::File).is_ok());
        assert!(check_name("images", EntryKind::Dir).is_ok());
        assert!(check_name(MANIFEST, EntryKind::File).is_ok());
        assert!(check_name("/etc/passwd", EntryKind::File).is_err());
        assert!(check_name("deploy/../../x", EntryKind::File).is_err());
        assert!(check_name("deploy/link", EntryKind::Symlink).is_err());
        assert!(check_name("deploy/hard", EntryKind::HardLink).is_err());
        assert!(check_name("deploy/dev", EntryKind::Other).is_err());
        assert!(check_name("other/file", EntryKind::File).is_err());
        assert!(check_name("images/sub/x.tar", EntryKind::File).is_err());
        assert!(check_name("images/x.zip", EntryKind::File).is_err());
        assert!(check_name("deploy/.lifeboat/journal.redb", EntryKind::File).is_err());
        assert!(check_name("deploy/lifeboat.toml", EntryKind::File).is_err());
    }

    #[test]
    fn build_then_validate_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("deploy/conf")).unwrap();
        std::fs::write(dir.path().join("deploy/docker-compose.yml"), "services: {}\n").unwrap();
        std::fs::write(dir.path().join("deploy/conf/a.ini"), "a=1\n").unwrap();
        let out = dir.path().join("pkg.tar.gz");
        let package = build(dir.path(), &out, Some("2")).unwrap();
        assert_eq!(package.manifest.version, "2");
        assert_eq!(package.deploy_files, ["conf/a.ini", "docker-compose.yml"]);
        assert!(package.images.is_empty());
        assert_eq!(deploy_files_of(&out).unwrap(), package.deploy_files);
    }
}
