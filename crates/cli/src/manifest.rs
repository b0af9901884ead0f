//! The manifest: `lifeboat/manifest.json`, the first entry of every archive, which makes an
//! archive stand alone (docs/design.md, "Archive manifest").
//!
//! It says what each root of the archive is and where it goes (a bind path relative to the
//! project directory, or a named volume with its driver, options and labels), what each holds,
//! which services were running, and which deployment files the archive carries, so that
//! `restore --from` on a host that never saw the project, and `import` into a new catalog, need
//! nothing but the archive. Everything in it is checked before it is used: an archive is input
//! from outside.

use crate::docker::Volume;
use anyhow::{Context, bail};
use lifeboat_archive::{Root, RootTally};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The manifest's name in the archive.
pub const MANIFEST_NAME: &str = "lifeboat/manifest.json";
/// The format this build writes and the newest it reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// The most bytes of manifest read from an archive: a hostile archive cannot make restore
/// allocate without bound.
const MANIFEST_LIMIT: u64 = 4 << 20;

/// `lifeboat/manifest.json` (docs/json.md: add fields, never rename).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub lifeboat_version: String,
    /// The compose project name (`[project] name`).
    pub project: String,
    /// The run that made the archive: the backup's id in the catalog it was made in.
    pub run_id: u64,
    /// `manual`, `auto` or `pre-upgrade`.
    pub kind: String,
    #[serde(default)]
    pub note: Option<String>,
    /// When the run started, milliseconds since the Unix epoch, and the same as RFC 3339.
    pub created_at_ms: i64,
    pub created_at: String,
    /// The package version deployed when the backup was made, when an upgrade recorded one.
    #[serde(default)]
    pub deployed_version: Option<String>,
    pub roots: Vec<ManifestRoot>,
    /// The services that were running when the backup began, in stop order.
    pub running_services: Vec<String>,
    /// The deployment files the archive carries, relative to the project directory.
    pub deployment_files: Vec<String>,
}

/// One tree (or file) of the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRoot {
    /// Its name in the archive: `paths/<p>`, `volumes/<name>` or `deploy/<file>`.
    pub archive_name: String,
    #[serde(flatten)]
    pub target: RootTarget,
    pub file_count: u64,
    pub content_bytes: u64,
}

/// Where a root goes on restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootTarget {
    /// A bind path, relative to the project directory.
    Path { path: String },
    /// A named volume: `name` in the compose file, `docker_name` in the daemon.
    Volume {
        name: String,
        docker_name: String,
        driver: String,
        #[serde(default)]
        driver_options: BTreeMap<String, String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// A deployment file, relative to the project directory.
    Deployment { path: String },
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        bytes.push(b'\n');
        bytes
    }

    /// The bind-path roots, by their path relative to the project directory.
    pub fn paths(&self) -> impl Iterator<Item = (&ManifestRoot, &str)> {
        self.roots.iter().filter_map(|r| match &r.target {
            RootTarget::Path { path } => Some((r, path.as_str())),
            _ => None,
        })
    }

    /// The named-volume roots.
    pub fn volumes(&self) -> impl Iterator<Item = &ManifestRoot> {
        self.roots.iter().filter(|r| matches!(r.target, RootTarget::Volume { .. }))
    }

    /// Reads and checks the manifest of `archive`; `Ok(None)` when the archive has none (made
    /// before manifests existed). A manifest that is there but malformed, of a newer format, or
    /// names a root lifeboat would not write, is an error.
    pub fn read(archive: &Path) -> anyhow::Result<Option<Manifest>> {
        let bytes = match lifeboat_archive::read_first_member(archive, MANIFEST_NAME, MANIFEST_LIMIT) {
            Ok(bytes) => bytes,
            Err(lifeboat_archive::ArchiveError::MemberNotFound { .. }) => return Ok(None),
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!("cannot read {}", archive.display())));
            }
        };
        let manifest =
            Manifest::parse(&bytes).with_context(|| format!("the manifest of {} is invalid", archive.display()))?;
        Ok(Some(manifest))
    }

    pub fn parse(bytes: &[u8]) -> anyhow::Result<Manifest> {
        // The format is read first, so a newer manifest says so rather than failing on a field.
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let format: Format = serde_json::from_slice(bytes).context("it is not a lifeboat manifest")?;
        if format.format == 0 || format.format > MANIFEST_FORMAT {
            bail!(
                "it has format {}, and this lifeboat reads format {MANIFEST_FORMAT}: use a newer lifeboat",
                format.format
            );
        }
        let manifest: Manifest = serde_json::from_slice(bytes).context("it is not a lifeboat manifest")?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Refuses what lifeboat never writes: a root whose name and target disagree, a path that
    /// leaves the project directory, a volume name Docker would refuse, a root named twice.
    fn check(&self) -> anyhow::Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for root in &self.roots {
            if !names.insert(root.archive_name.as_str()) {
                bail!("root {} is listed twice", root.archive_name);
            }
            let expected = match &root.target {
                RootTarget::Path { path } => {
                    relative_path(path)?;
                    format!("paths/{path}")
                }
                RootTarget::Volume { name, docker_name, .. } => {
                    volume_name(name)?;
                    volume_name(docker_name)?;
                    format!("volumes/{name}")
                }
                RootTarget::Deployment { path } => {
                    relative_path(path)?;
                    format!("deploy/{path}")
                }
            };
            if root.archive_name != expected {
                bail!("root {} does not match its target ({expected})", root.archive_name);
            }
        }
        for file in &self.deployment_files {
            relative_path(file)?;
            if !names.contains(format!("deploy/{file}").as_str()) {
                bail!("deployment file {file} is not among its roots");
            }
        }
        if !crate::config::is_valid_project_name(&self.project) {
            bail!("project name {:?} is not a compose project name", self.project);
        }
        Ok(())
    }

    /// Checks the tallies of a read-through (`VerifyReport::roots`, in the order of
    /// [`Manifest::root_names`]) against what the manifest says each root holds.
    pub fn check_tallies(&self, tallies: &[RootTally]) -> anyhow::Result<()> {
        for (root, tally) in self.roots.iter().zip(tallies) {
            if (root.file_count, root.content_bytes) != (tally.file_count, tally.content_bytes) {
                bail!(
                    "the manifest says {} holds {} files and {} bytes, but the archive holds {} files and {} bytes",
                    root.archive_name,
                    root.file_count,
                    root.content_bytes,
                    tally.file_count,
                    tally.content_bytes
                );
            }
        }
        Ok(())
    }

    pub fn root_names(&self) -> Vec<String> {
        self.roots.iter().map(|r| r.archive_name.clone()).collect()
    }
}

/// A relative, normal path: no `..`, no absolute path, no empty or `.` component.
fn relative_path(path: &str) -> anyhow::Result<()> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        bail!("path {path:?} is not a plain path below the project directory");
    }
    Ok(())
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn volume_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("volume name {name:?} is not one Docker accepts");
    }
    Ok(())
}

/// What a backup's manifest is built from, besides the run.
pub struct ManifestInput<'a> {
    pub project: &'a str,
    pub run_id: u64,
    pub kind: &'a str,
    pub note: Option<String>,
    pub created_at_ms: i64,
    pub deployed_version: Option<String>,
    pub running_services: Vec<String>,
    /// The project's named volumes, as the daemon reports them.
    pub volumes: &'a [Volume],
}

/// The manifest of an archive of `roots` (in archive order), whose census is `tallies`.
pub fn build(input: ManifestInput<'_>, roots: &[Root], tallies: &[RootTally]) -> anyhow::Result<Manifest> {
    let mut manifest_roots = Vec::with_capacity(roots.len());
    let mut deployment_files = Vec::new();
    for (root, tally) in roots.iter().zip(tallies) {
        let name = root.archive_name.as_str();
        let target = if let Some(path) = name.strip_prefix("paths/") {
            RootTarget::Path { path: path.to_owned() }
        } else if let Some(path) = name.strip_prefix("deploy/") {
            deployment_files.push(path.to_owned());
            RootTarget::Deployment { path: path.to_owned() }
        } else if let Some(volume_name) = name.strip_prefix("volumes/") {
            let volume = input
                .volumes
                .iter()
                .find(|v| v.compose_name.as_deref().unwrap_or(&v.name) == volume_name)
                .with_context(|| format!("volume {volume_name} is gone from the daemon"))?;
            RootTarget::Volume {
                name: volume_name.to_owned(),
                docker_name: volume.name.clone(),
                driver: volume.driver.clone(),
                driver_options: volume.options.clone(),
                labels: volume.labels.clone(),
            }
        } else {
            bail!("root {name} is of no kind a manifest knows");
        };
        manifest_roots.push(ManifestRoot {
            archive_name: root.archive_name.clone(),
            target,
            file_count: tally.file_count,
            content_bytes: tally.content_bytes,
        });
    }
    let created_at = chrono::DateTime::from_timestamp_millis(input.created_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        lifeboat_version: env!("CARGO_PKG_VERSION").to_owned(),
        project: input.project.to_owned(),
        run_id: input.run_id,
        kind: input.kind.to_owned(),
        note: input.note,
        created_at_ms: input.created_at_ms,
        created_at,
        deployed_version: input.deployed_version,
        roots: manifest_roots,
        running_services: input.running_services,
        deployment_files,
    };
    manifest.check()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            lifeboat_version: "0.1.0".into(),
            project: "shop".into(),
            run_id: 7,
            kind: "manual".into(),
            note: None,
            created_at_ms: 0,
            created_at: "1970-01-01T00:00:00.000Z".into(),
            deployed_version: None,
            roots: vec![
                ManifestRoot {
                    archive_name: "paths/data".into(),
                    target: RootTarget::Path { path: "data".into() },
                    file_count: 1,
                    content_bytes: 3,
                },
                ManifestRoot {
                    archive_name: "volumes/db".into(),
                    target: RootTarget::Volume {
                        name: "db".into(),
                        docker_name: "shop_db".into(),
                        driver: "local".into(),
                        driver_options: BTreeMap::new(),
                        labels: BTreeMap::new(),
                    },
                    file_count: 0,
                    content_bytes: 0,
                },
                ManifestRoot {
                    archive_name: "deploy/docker-compose.yml".into(),
                    target: RootTarget::Deployment { path: "docker-compose.yml".into() },
                    file_count: 1,
                    content_bytes: 10,
                },
            ],
            running_services: vec!["app".into()],
            deployment_files: vec!["docker-compose.yml".into()],
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        let json: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(json["roots"][1]["kind"], "volume");
        assert_eq!(json["roots"][1]["docker_name"], "shop_db");
    }

    #[test]
    fn hostile_manifests_are_refused_naming_why() {
        type Spoil = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|m| m.format = 2), "format 2"),
            (Box::new(|m| m.roots[0].target = RootTarget::Path { path: "../etc".into() }), "not a plain path"),
            (Box::new(|m| m.roots[0].target = RootTarget::Path { path: "/etc".into() }), "not a plain path"),
            (Box::new(|m| m.roots[0].archive_name = "paths/other".into()), "does not match"),
            (
                Box::new(|m| {
                    if let RootTarget::Volume { docker_name, .. } = &mut m.roots[1].target {
                        *docker_name = "../x".into();
                    }
                }),
                "volume name",
            ),
            (Box::new(|m| m.deployment_files.push(".env".into())), "not among its roots"),
            (Box::new(|m| m.roots.push(m.roots[0].clone())), "listed twice"),
        ];
        for (spoil, why) in cases {
            let mut m = sample();
            spoil(&mut m);
            let err = Manifest::parse(&m.to_json()).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{why}: {err:#}");
        }
        assert!(Manifest::parse(b"{\"format\": 1}").is_err());
        assert!(Manifest::parse(b"not json").is_err());
    }

    #[test]
    fn lying_tallies_are_named() {
        let m = sample();
        let tallies = [
            RootTally { file_count: 1, content_bytes: 3 },
            RootTally { file_count: 5, content_bytes: 0 },
            RootTally { file_count: 1, content_bytes: 10 },
        ];
        let err = m.check_tallies(&tallies).unwrap_err();
        assert!(err.to_string().contains("volumes/db"), "{err}");
    }
}
