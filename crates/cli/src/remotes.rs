//! `[[remote]]` sections resolved into open remotes (`lifeboat_remote`): credentials read from
//! the environment or the section's `credentials_file`, recipients parsed, the key of a backup's
//! copy named. docs/design.md, "Off-host copies".

use crate::config::RemoteSection;
use crate::exit::Exit;
use crate::project::Project;
use lifeboat_machine::{BackupRef, CopyTarget};
use lifeboat_remote::{Credentials, Encryption, Identities, Location, Remote, RemoteError, RemoteSpec};
use std::path::{Path, PathBuf};

/// What a copy of an encrypted remote's key ends with.
pub const AGE_SUFFIX: &str = ".age";

/// The key of `archive`'s copy on `remote`: the archive's file name, plus `.age` when the remote
/// encrypts. Deterministic, so a journal that names the backup names its copy too.
pub fn copy_key(remote: &RemoteSection, archive: &str) -> String {
    let name = Path::new(archive).file_name().map_or_else(|| archive.to_owned(), |n| n.to_string_lossy().into_owned());
    if remote.encrypts() { format!("{name}{AGE_SUFFIX}") } else { name }
}

/// Where a shipping run of `backup` to `remote` puts its copy.
pub fn target(remote: &RemoteSection, backup: &BackupRef) -> CopyTarget {
    CopyTarget { remote: remote.name.clone(), url: remote.url.clone(), key: copy_key(remote, &backup.path) }
}

/// Opens `section`'s remote at `url` (the section's own, or the one a journaled run names, so
/// recovery aborts on the store the upload went to). No request is made.
pub fn open(project: &Project, section: &RemoteSection, url: &str) -> anyhow::Result<Remote> {
    let location: Location = url.parse().map_err(|err| exit_for(err))?;
    let mut spec = RemoteSpec::new(&section.name, location.clone());
    spec.endpoint = section.endpoint.clone();
    spec.region = section.region.clone();
    spec.path_style = section.path_style;
    if matches!(location, Location::S3 { .. }) {
        spec.credentials = Some(credentials(project, section)?);
    }
    Remote::open(&spec).map_err(exit_for)
}

/// The remote a journaled run names, by its name in `lifeboat.toml` (exit 2 when the section is
/// gone: it holds the endpoint and the credentials).
pub fn open_target<'p>(project: &'p Project, target: &CopyTarget) -> anyhow::Result<(Remote, &'p RemoteSection)> {
    let section = project.config.remote(&target.remote)?;
    Ok((open(project, section, &target.url)?, section))
}

fn credentials(project: &Project, section: &RemoteSection) -> anyhow::Result<Credentials> {
    if let Some(file) = &section.credentials_file {
        return Credentials::from_file(&project.dir.join(file)).map_err(exit_for);
    }
    Credentials::from_env().ok_or_else(|| {
        Exit::Usage.wrap(anyhow::anyhow!(
            "remote {}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or credentials_file in the \
             [[remote]] section (a file only its owner may read)",
            section.name
        ))
    })
}

/// How copies to `section` are encrypted on the way out.
pub fn encryption(section: &RemoteSection) -> anyhow::Result<Encryption> {
    if !section.encrypts() {
        return Ok(Encryption::None);
    }
    Encryption::to_recipients(&section.encrypt_to).map_err(exit_for)
}

/// The identities that open `section`'s copies: `--identity FILE` when given, else the section's
/// `identity_file`; `None` when neither is given.
pub fn identities(
    project: &Project,
    section: &RemoteSection,
    flag: Option<&Path>,
) -> anyhow::Result<Option<Identities>> {
    let path: Option<PathBuf> =
        flag.map(Path::to_path_buf).or_else(|| section.identity_file.as_ref().map(|f| project.dir.join(f)));
    path.map(|path| Identities::from_file(&path).map_err(exit_for)).transpose()
}

/// A remote's error with the exit code it asks for: settings or credentials wrong, 2; a copy that
/// does not match, 5; anything else (the store down), 1.
pub fn exit_for(err: RemoteError) -> anyhow::Error {
    let code = if err.is_config() {
        Exit::Usage
    } else if err.is_integrity() {
        Exit::Integrity
    } else {
        Exit::Failed
    };
    code.wrap(err)
}
