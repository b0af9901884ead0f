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

/// What a copy's manifest key ends with (then `.age` when the remote encrypts).
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// The key of the manifest beside the copy `copy_key`: `ARCHIVE.manifest.json`, encrypted
/// (`.age`) when the copy is.
pub fn manifest_key(copy_key: &str) -> String {
    match copy_key.strip_suffix(AGE_SUFFIX) {
        Some(archive) => format!("{archive}{MANIFEST_SUFFIX}{AGE_SUFFIX}"),
        None => format!("{copy_key}{MANIFEST_SUFFIX}"),
    }
}

/// Whether `key` is a copy's manifest rather than a copy.
pub fn is_manifest_key(key: &str) -> bool {
    key.strip_suffix(AGE_SUFFIX).unwrap_or(key).ends_with(MANIFEST_SUFFIX)
}

/// The small document beside every copy on a remote: the backup's catalog entry, so that
/// `import --remote` rebuilds a catalog on a new host without downloading the copies. Encrypted
/// like the copy. Fields are added, never renamed (`format` says which).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyManifest {
    pub format: u32,
    pub lifeboat_version: String,
    pub project: String,
    pub backup_id: u64,
    /// `manual`, `auto` or `pre-upgrade`.
    pub kind: String,
    /// Unix ms.
    pub created_at: i64,
    /// The archive's file name (the copy's key without `.age`).
    pub archive_name: String,
    /// The copy's key beside this manifest.
    pub copy_key: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub file_count: u64,
    pub entry_count: u64,
    pub content_bytes: u64,
    pub note: Option<String>,
    pub protects_version: Option<String>,
}

impl CopyManifest {
    pub const FORMAT: u32 = 1;

    pub fn of(project: &str, entry: &lifeboat_journal::BackupEntry, copy_key: &str) -> CopyManifest {
        CopyManifest {
            format: CopyManifest::FORMAT,
            lifeboat_version: env!("CARGO_PKG_VERSION").into(),
            project: project.into(),
            backup_id: entry.id,
            kind: entry.kind.as_str().into(),
            created_at: entry.created_at.0,
            archive_name: copy_key.strip_suffix(AGE_SUFFIX).unwrap_or(copy_key).into(),
            copy_key: copy_key.into(),
            sha256: entry.sha256.clone(),
            size_bytes: entry.size_bytes,
            file_count: entry.file_count,
            entry_count: entry.entry_count,
            content_bytes: entry.content_bytes,
            note: entry.note.clone(),
            protects_version: entry.protects_version.clone(),
        }
    }

    /// The catalog entry it describes, with the archive at `path` (where a restore fetches it).
    pub fn entry(&self, path: String) -> anyhow::Result<lifeboat_journal::BackupEntry> {
        use lifeboat_machine::BackupKind;
        let kind = match self.kind.as_str() {
            "manual" => BackupKind::Manual,
            "auto" => BackupKind::Auto,
            "pre-upgrade" => BackupKind::PreUpgrade,
            other => anyhow::bail!("the manifest of {} names an unknown kind {other:?}", self.copy_key),
        };
        Ok(lifeboat_journal::BackupEntry {
            id: self.backup_id,
            run_id: self.backup_id,
            kind,
            created_at: lifeboat_machine::Timestamp(self.created_at),
            path,
            size_bytes: self.size_bytes,
            file_count: self.file_count,
            entry_count: self.entry_count,
            content_bytes: self.content_bytes,
            sha256: self.sha256.clone(),
            note: self.note.clone(),
            protects_version: self.protects_version.clone(),
        })
    }
}

/// Where a shipping run of `backup` to `remote` puts its copy.
pub fn target(remote: &RemoteSection, backup: &BackupRef) -> CopyTarget {
    CopyTarget { remote: remote.name.clone(), url: remote.url.clone(), key: copy_key(remote, &backup.path) }
}

/// Opens `section`'s remote at `url` (the section's own, or the one a journaled run names, so
/// recovery aborts on the store the upload went to). No request is made.
pub fn open(project: &Project, section: &RemoteSection, url: &str) -> anyhow::Result<Remote> {
    let location: Location = url.parse().map_err(exit_for)?;
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

/// Puts a catalogued backup's archive back at its catalogued path from a copy on a remote, for a
/// restore whose local file is gone (a new host after `import --remote`, a lost disk): the copy
/// downloaded through a temporary file beside the path, decrypted, its archive sha256 compared
/// with the catalog's, then renamed into place with its `.sha256` sidecar. Remotes are tried in
/// `lifeboat.toml`'s order; an error names each one that failed.
pub async fn fetch_catalogued(
    project: &Project,
    journal: &lifeboat_journal::Journal,
    entry: &lifeboat_journal::BackupEntry,
    identity: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let target = project.dir.join(&entry.path);
    let copies = journal.copies()?;
    let mut tried = Vec::new();
    for section in &project.config.remotes {
        let Some(copy) = copies.iter().find(|c| c.backup_id == entry.id && c.remote == section.name) else {
            continue;
        };
        let attempt = async {
            let remote = open(project, section, &copy.url)?;
            let identities = identities(project, section, identity)?;
            let dir = target.parent().ok_or_else(|| anyhow::anyhow!("{} has no directory", target.display()))?;
            let group = project.config.backup.group_id()?;
            crate::perms::ready_backup_dir(dir, group)?;
            tracing::info!(
                "backup {} is not on this host: fetching it from remote {} ({})",
                entry.id,
                section.name,
                copy.key
            );
            let expected = Expected { sha256: &entry.sha256, bytes: entry.size_bytes, what: "the catalog" };
            fetch_archive(&remote, &copy.key, identities, &target, &expected, group).await
        };
        match attempt.await {
            Ok(()) => return Ok(target),
            Err(err) => tried.push(format!("remote {}: {err:#}", section.name)),
        }
    }
    if tried.is_empty() {
        crate::fail!(
            Exit::Usage,
            "the archive of backup {} is gone ({}) and no configured remote holds a copy of it",
            entry.id,
            target.display()
        );
    }
    Err(anyhow::anyhow!(
        "the archive of backup {} is gone and no copy could be fetched: {}",
        entry.id,
        tried.join("; ")
    ))
}

/// What a fetched archive must be, and what says so (for the error).
pub struct Expected<'a> {
    pub sha256: &'a str,
    pub bytes: u64,
    pub what: &'a str,
}

/// Downloads the copy `key` into `target` (whose directory exists) through a temporary file
/// beside it, decrypting it with `identities`; the archive must be `expected` (else exit 5 and
/// nothing at `target`). Then fsynced, renamed into place, its `.sha256` sidecar written, the
/// directory fsynced.
pub async fn fetch_archive(
    remote: &Remote,
    key: &str,
    identities: Option<Identities>,
    target: &Path,
    expected: &Expected<'_>,
    group: Option<u32>,
) -> anyhow::Result<()> {
    let dir = target.parent().ok_or_else(|| anyhow::anyhow!("{} has no directory", target.display()))?;
    let partial = tempfile::Builder::new().prefix(".fetch-").tempfile_in(dir)?;
    let (fetched, file) = remote.fetch(key, partial, identities).await.map_err(exit_for)?;
    if fetched.archive_sha256 != expected.sha256 || fetched.archive_bytes != expected.bytes {
        crate::fail!(
            Exit::Integrity,
            "remote {}: {key} holds an archive of {} bytes with sha256 {}; {} says {} bytes, sha256 {}",
            remote.name(),
            fetched.archive_bytes,
            fetched.archive_sha256,
            expected.what,
            expected.bytes,
            expected.sha256
        );
    }
    file.as_file().sync_all()?;
    file.persist(target)
        .map_err(|err| anyhow::Error::new(err.error).context(format!("cannot keep {}", target.display())))?;
    crate::effects::backups::write_sidecar(target, expected.sha256, group)?;
    crate::fsutil::fsync_dir(dir)
}
