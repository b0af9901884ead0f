//! The commands on remotes: `push` ships pending copies, `list --remote` and `verify --remote`
//! read what a remote holds (docs/design.md, "Off-host copies").

use super::Ctx;
use crate::exit::Exit;
use crate::fail;
use crate::output::Report;
use crate::project::Project;
use crate::remotes::{self, AGE_SUFFIX, exit_for};
use crate::render;
use crate::runs::RunSession;
use crate::runs::ship::{self, CopyReport};
use lifeboat_journal::CopyEntry;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// What `push` shipped and what stays pending.
#[derive(Debug, Serialize)]
pub struct PushReport {
    pub copies: Vec<CopyReport>,
}

/// Ships every pending copy (to `remote`, or to every remote). Exit 2 when a remote refuses its
/// settings or credentials, 1 when a copy stays pending for another reason.
pub async fn push(ctx: &Ctx, remote: Option<&str>) -> anyhow::Result<PushReport> {
    let session = RunSession::open(ctx)?;
    if session.project.config.remotes.is_empty() {
        fail!(Exit::Usage, "no [[remote]] in lifeboat.toml: add one (README, \"Off-host copies\") to ship backups");
    }
    if let Some(name) = remote {
        session.project.config.remote(name)?;
    }
    Ok(PushReport { copies: ship::ship_pending(&session, remote).await? })
}

impl Report for PushReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.copies.is_empty() {
            return writeln!(out, "nothing to ship: every backup has its copies");
        }
        for copy in &self.copies {
            writeln!(out, "{}", copy.line())?;
        }
        Ok(())
    }

    fn exit(&self) -> anyhow::Result<()> {
        ship::settings_exit(&self.copies)?;
        let pending = self.copies.iter().filter(|c| c.status == "pending").count();
        if pending > 0 {
            fail!(Exit::Failed, "{pending} of {} copies are still pending", self.copies.len());
        }
        Ok(())
    }
}

/// One object on a remote, as `list --remote` shows it beside the catalog.
#[derive(Debug, Serialize)]
pub struct RemoteObject {
    pub key: String,
    /// Its size on the remote; `null` when the catalog lists a copy the remote does not hold.
    pub size_bytes: Option<u64>,
    /// The backup whose copy it is, when this catalog knows it.
    pub backup_id: Option<u64>,
    pub encrypted: bool,
    /// `ok` (catalogued and there, of the catalogued size), `missing` (catalogued, not there),
    /// `size-differs`, or `unknown` (there, not in this catalog: another host's, or a copy whose
    /// shipping did not finish).
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct RemoteListReport {
    pub remote: String,
    pub url: String,
    pub objects: Vec<RemoteObject>,
}

pub async fn list(ctx: &Ctx, name: &str) -> anyhow::Result<RemoteListReport> {
    let project = Project::load(&ctx.dir)?;
    let section = project.config.remote(name)?;
    let copies: Vec<CopyEntry> =
        // Copies shipped under an earlier `url` of the remote are not in this listing to compare.
        project.journal()?.copies()?.into_iter().filter(|c| c.remote == section.name && c.url == section.url).collect();
    let remote = remotes::open(&project, section, &section.url)?;
    let mut listed = remote.list().await.map_err(exit_for)?;
    listed.retain(|object| !remotes::is_manifest_key(&object.key));
    let mut objects = Vec::new();
    for info in &listed {
        let copy = copies.iter().find(|c| c.key == info.key);
        objects.push(RemoteObject {
            key: info.key.clone(),
            size_bytes: Some(info.size),
            backup_id: copy.map(|c| c.backup_id),
            encrypted: info.key.ends_with(AGE_SUFFIX),
            status: match copy {
                Some(c) if c.stored_bytes == info.size => "ok",
                Some(_) => "size-differs",
                None => "unknown",
            },
        });
    }
    for copy in copies.iter().filter(|c| !listed.iter().any(|i| i.key == c.key)) {
        objects.push(RemoteObject {
            key: copy.key.clone(),
            size_bytes: None,
            backup_id: Some(copy.backup_id),
            encrypted: copy.encryption == "age",
            status: "missing",
        });
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(RemoteListReport { remote: section.name.clone(), url: section.url.clone(), objects })
}

impl Report for RemoteListReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.objects.is_empty() {
            return writeln!(out, "remote {} ({}) holds no copies yet: run 'lifeboat push'", self.remote, self.url);
        }
        writeln!(out, "remote {} ({})", self.remote, self.url)?;
        writeln!(out, "{:>6}  {:>10}  {:<12}  key", "backup", "size", "status")?;
        for o in &self.objects {
            writeln!(
                out,
                "{:>6}  {:>10}  {:<12}  {}",
                o.backup_id.map_or("-".to_owned(), |id| id.to_string()),
                o.size_bytes.map_or("-".to_owned(), render::bytes),
                o.status,
                o.key
            )?;
        }
        Ok(())
    }
}

/// One copy checked by `verify --remote`.
#[derive(Debug, Serialize)]
pub struct VerifiedCopy {
    pub backup_id: u64,
    pub remote: String,
    pub key: String,
    pub ok: bool,
    pub error: Option<String>,
    pub stored_bytes: u64,
    pub encrypted: bool,
    /// Regular files the archive holds, once read through.
    pub file_count: Option<u64>,
    #[serde(skip)]
    exit: Exit,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RemoteVerifyReport {
    pub copies: Vec<VerifiedCopy>,
}

/// Downloads each copy (of `backup_id`, or all of them on the remote), decrypts it, hashes it
/// against the catalog and reads the archive through. The download goes to a private temporary
/// file in `backup.dir` and is removed after.
pub async fn verify(
    ctx: &Ctx,
    name: &str,
    backup_id: Option<u64>,
    identity: Option<&Path>,
) -> anyhow::Result<RemoteVerifyReport> {
    let project = Project::load(&ctx.dir)?;
    let section = project.config.remote(name)?;
    let journal = project.journal()?;
    let mut copies: Vec<CopyEntry> = journal.copies()?.into_iter().filter(|c| c.remote == section.name).collect();
    if let Some(id) = backup_id {
        copies.retain(|c| c.backup_id == id);
        if copies.is_empty() {
            fail!(
                Exit::Usage,
                "no copy of backup {id} on remote {name} in the catalog: see 'lifeboat list --remote {name}'"
            );
        }
    }
    let locals: Vec<_> = copies.iter().map(|c| journal.backup(c.backup_id)).collect::<Result<_, _>>()?;
    drop(journal);
    let identities = remotes::identities(&project, section, identity)?;
    if identities.is_none() && copies.iter().any(|c| c.encryption == "age") {
        fail!(
            Exit::Usage,
            "remote {name}'s copies are encrypted: pass --identity FILE (the age identity whose recipient is in \
             encrypt_to), or set identity_file in its [[remote]] section"
        );
    }
    let dir = project.backup_dir();
    crate::perms::ready_backup_dir(&dir, project.config.backup.group_id()?)?;
    let mut report = Vec::new();
    for (copy, local) in copies.iter().zip(locals) {
        let result = verify_copy(&project, copy, local.as_ref(), identities.clone(), &dir, ctx.progress).await;
        report.push(VerifiedCopy {
            backup_id: copy.backup_id,
            remote: copy.remote.clone(),
            key: copy.key.clone(),
            ok: result.is_ok(),
            exit: result.as_ref().err().map_or(Exit::Success, Exit::of),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            file_count: result.ok(),
            stored_bytes: copy.stored_bytes,
            encrypted: copy.encryption == "age",
        });
    }
    Ok(RemoteVerifyReport { copies: report })
}

/// One copy downloaded, decrypted, hashed and read through; the number of files it holds.
async fn verify_copy(
    project: &Project,
    copy: &CopyEntry,
    local: Option<&lifeboat_journal::BackupEntry>,
    identities: Option<lifeboat_remote::Identities>,
    dir: &Path,
    progress: bool,
) -> anyhow::Result<u64> {
    let section = project.config.remote(&copy.remote)?;
    let remote = remotes::open(project, section, &copy.url)?;
    let archive_name = copy.key.strip_suffix(AGE_SUFFIX).unwrap_or(&copy.key);
    let file = tempfile::Builder::new().prefix(".verify-").suffix(&format!("-{archive_name}")).tempfile_in(dir)?;
    let (fetched, file) = remote.fetch(&copy.key, file, identities).await.map_err(exit_for)?;
    let mismatch = |what: &str, found: String, catalogued: String| {
        Exit::Integrity.wrap(anyhow::anyhow!(
            "remote {}: {} does not match the catalog: {what} is {found}, the catalog says {catalogued}",
            copy.remote,
            copy.key
        ))
    };
    // An imported copy's row has no stored sha256 (the remote's metadata does not carry it).
    let stored_differs = (!copy.stored_sha256.is_empty() && fetched.stored_sha256 != copy.stored_sha256)
        || fetched.stored_bytes != copy.stored_bytes;
    if stored_differs {
        return Err(mismatch(
            "the stored object",
            format!("{} bytes, sha256 {}", fetched.stored_bytes, fetched.stored_sha256),
            format!("{} bytes, sha256 {}", copy.stored_bytes, copy.stored_sha256),
        ));
    }
    if fetched.archive_sha256 != copy.archive_sha256 {
        return Err(mismatch("the archive's sha256", fetched.archive_sha256, copy.archive_sha256.clone()));
    }
    let expected = lifeboat_archive::Expected {
        sha256: copy.archive_sha256.clone(),
        size_bytes: fetched.archive_bytes,
        entry_count: local.map(|l| l.entry_count),
        content_bytes: local.map(|l| l.content_bytes),
        roots: Vec::new(),
    };
    let path = file.path().to_path_buf();
    let report = crate::fsutil::blocking("the archive verifier", move || {
        let bar = crate::progress::bar(progress, "verifying", Some(expected.size_bytes));
        let result = lifeboat_archive::verify_archive(&path, &expected, &mut |n| bar.set_position(n));
        bar.finish_and_clear();
        Ok(result?)
    })
    .await
    .map_err(|err| {
        Exit::Integrity.wrap(err.context(format!("remote {}: {} does not read through", copy.remote, copy.key)))
    })?;
    drop(file);
    Ok(report.file_count)
}

impl Report for RemoteVerifyReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.copies.is_empty() {
            return writeln!(out, "no copies on this remote in the catalog: run 'lifeboat push'");
        }
        for c in &self.copies {
            match &c.error {
                None => writeln!(
                    out,
                    "copy of backup {} on {} ok: {} ({}, {}; {} files)",
                    c.backup_id,
                    c.remote,
                    c.key,
                    render::bytes(c.stored_bytes),
                    if c.encrypted { "encrypted" } else { "not encrypted" },
                    c.file_count.unwrap_or_default()
                )?,
                Some(err) => writeln!(out, "copy of backup {} on {} BAD: {err}", c.backup_id, c.remote)?,
            }
        }
        Ok(())
    }

    /// Exit 5 when a copy does not match; else the first other failure's code (2 for settings, 1
    /// for a remote that is down).
    fn exit(&self) -> anyhow::Result<()> {
        let bad: Vec<&VerifiedCopy> = self.copies.iter().filter(|c| !c.ok).collect();
        let Some(first) = bad.first() else { return Ok(()) };
        let code = if bad.iter().any(|c| c.exit == Exit::Integrity) { Exit::Integrity } else { first.exit };
        let keys: Vec<&str> = bad.iter().map(|c| c.key.as_str()).collect();
        Err(code.wrap(anyhow::anyhow!(
            "{} of {} copies failed verification: {}",
            bad.len(),
            self.copies.len(),
            keys.join(", ")
        )))
    }
}

/// For `restore --from URL`: a copy on a remote (`s3://BUCKET/PREFIX/KEY`, `file:///DIR/KEY`)
/// downloaded into `DIR/.lifeboat/fetched/`, decrypted when it is an `.age` copy, and checked
/// against the archive sha256 stored with it, with its `.sha256` sidecar written beside it; the
/// path of the archive it gives. Any other `from` is returned as it is (a local archive).
pub async fn fetch_for_restore(
    ctx: &Ctx,
    args: &crate::args::RestoreArgs,
    from: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    let text = from.to_string_lossy();
    if !(text.starts_with("s3://") || text.starts_with("file://")) {
        return Ok(from.to_path_buf());
    }
    let (base, key) =
        text.rsplit_once('/').filter(|(base, key)| !key.is_empty() && !base.ends_with('/')).ok_or_else(|| {
            Exit::Usage.wrap(anyhow::anyhow!("{text}: name the copy itself, s3://BUCKET/PREFIX/KEY or file:///DIR/KEY"))
        })?;
    let location: lifeboat_remote::Location = base.parse().map_err(exit_for)?;
    let is_s3 = matches!(location, lifeboat_remote::Location::S3 { .. });
    let mut spec = lifeboat_remote::RemoteSpec::new("restore", location);
    spec.endpoint = args.endpoint.clone();
    spec.region = args.region.clone();
    spec.path_style = args.path_style;
    if is_s3 {
        spec.credentials = Some(match &args.credentials_file {
            Some(file) => lifeboat_remote::Credentials::from_file(file).map_err(exit_for)?,
            None => lifeboat_remote::Credentials::from_env().ok_or_else(|| {
                Exit::Usage.wrap(anyhow::anyhow!(
                    "no credentials for {text}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --credentials-file"
                ))
            })?,
        });
    }
    let remote = lifeboat_remote::Remote::open(&spec).map_err(exit_for)?;
    let Some(info) = remote.stat(key).await.map_err(exit_for)? else {
        fail!(Exit::Usage, "{text} does not exist: see 'lifeboat list --remote NAME' on the host that made it");
    };
    let Some(meta) = info.meta else {
        fail!(Exit::Integrity, "{text} carries no lifeboat metadata: it is not a copy lifeboat shipped");
    };
    let encrypted = key.ends_with(AGE_SUFFIX);
    let identities = match &args.identity {
        Some(file) => Some(lifeboat_remote::Identities::from_file(file).map_err(exit_for)?),
        None if encrypted => {
            fail!(Exit::Usage, "{text} is encrypted: pass --identity FILE (the age identity it was encrypted to)")
        }
        None => None,
    };
    let archive_name = key.strip_suffix(AGE_SUFFIX).unwrap_or(key);
    let dir = crate::runs::absolute(&ctx.dir, "project directory")?.join(crate::project::STATE_DIR).join("fetched");
    crate::perms::ready_backup_dir(&dir, None)?;
    let target = dir.join(archive_name);
    if target.exists()
        && crate::effects::backups::read_sidecar(&target)?.as_deref() == Some(meta.archive_sha256.as_str())
    {
        tracing::info!("{} was fetched before: using it", target.display());
        return Ok(target);
    }
    tracing::info!("downloading {text} ({})", render::bytes(info.size));
    let expected = remotes::Expected {
        sha256: &meta.archive_sha256,
        bytes: meta.archive_bytes,
        what: "the sha256 stored with it",
    };
    remotes::fetch_archive(&remote, key, identities, &target, &expected, None).await?;
    Ok(target)
}

/// What `import --remote` did with each copy's manifest.
#[derive(Debug, Serialize)]
pub struct RemoteImportReport {
    pub remote: String,
    pub copies: Vec<ImportedCopy>,
}

#[derive(Debug, Serialize)]
pub struct ImportedCopy {
    /// The copy's key on the remote.
    pub key: String,
    /// `imported`, `already_catalogued`, `other_project` (a manifest of another project under
    /// the same prefix: left alone) or `refused`.
    pub outcome: &'static str,
    pub backup_id: Option<u64>,
    pub error: Option<String>,
    #[serde(skip)]
    exit: Exit,
}

/// Rebuilds a catalog from a remote (`import --remote NAME`): each copy's manifest is read (and
/// decrypted), its copy checked to be on the remote with the metadata that names it, then the
/// backup is catalogued (its archive at `backup.dir/NAME`, not downloaded: `restore ID` fetches
/// it) and the copy with it. Importing again changes nothing.
pub async fn import(ctx: &Ctx, name: &str, identity: Option<&Path>) -> anyhow::Result<RemoteImportReport> {
    let project = Project::load(&ctx.dir)?;
    let _lock = project.lock()?;
    let section = project.config.remote(name)?;
    let journal = project.journal()?;
    let identities = remotes::identities(&project, section, identity)?;
    let remote = remotes::open(&project, section, &section.url)?;
    let listed = remote.list().await.map_err(exit_for)?;
    let mut copies = Vec::new();
    for object in listed.iter().filter(|o| remotes::is_manifest_key(&o.key)) {
        let copy_key = {
            let archive = object.key.strip_suffix(AGE_SUFFIX).unwrap_or(&object.key);
            let archive = archive.strip_suffix(remotes::MANIFEST_SUFFIX).unwrap_or(archive);
            if object.key.ends_with(AGE_SUFFIX) { format!("{archive}{AGE_SUFFIX}") } else { archive.to_owned() }
        };
        let result =
            import_one(&project, &journal, section, &remote, &object.key, &copy_key, identities.as_ref()).await;
        copies.push(match result {
            Ok((outcome, backup_id)) => {
                ImportedCopy { key: copy_key, outcome, backup_id: Some(backup_id), error: None, exit: Exit::Success }
            }
            Err(err) => ImportedCopy {
                key: copy_key,
                outcome: "refused",
                backup_id: None,
                exit: Exit::of(&err),
                error: Some(format!("{err:#}")),
            },
        });
    }
    Ok(RemoteImportReport { remote: section.name.clone(), copies })
}

async fn import_one(
    project: &Project,
    journal: &lifeboat_journal::Journal,
    section: &crate::config::RemoteSection,
    remote: &lifeboat_remote::Remote,
    manifest_key: &str,
    copy_key: &str,
    identities: Option<&lifeboat_remote::Identities>,
) -> anyhow::Result<(&'static str, u64)> {
    let bytes = remote
        .get_small(manifest_key, 1 << 20)
        .await
        .map_err(exit_for)?
        .ok_or_else(|| anyhow::anyhow!("{manifest_key} went away while importing"))?;
    let bytes = match (manifest_key.ends_with(AGE_SUFFIX), identities) {
        (true, Some(ids)) => ids.open(&bytes, manifest_key).map_err(|err| Exit::Integrity.wrap(err))?,
        (true, None) => fail!(
            Exit::Usage,
            "{manifest_key} is encrypted: pass --identity FILE or set identity_file in [[remote]] {}",
            section.name
        ),
        (false, _) => bytes,
    };
    let manifest: remotes::CopyManifest = serde_json::from_slice(&bytes)
        .map_err(|err| Exit::Integrity.wrap(anyhow::anyhow!("{manifest_key} is not a copy manifest: {err}")))?;
    if manifest.format > remotes::CopyManifest::FORMAT {
        fail!(Exit::Usage, "{manifest_key} has manifest format {}: a newer lifeboat wrote it", manifest.format);
    }
    if manifest.project != project.config.project.name {
        return Ok(("other_project", manifest.backup_id));
    }
    let name_ok =
        !manifest.archive_name.contains('/') && manifest.archive_name != ".." && !manifest.archive_name.is_empty();
    if manifest.copy_key != copy_key || !name_ok {
        fail!(Exit::Integrity, "{manifest_key} names the copy {:?}, not {copy_key:?}", manifest.copy_key);
    }
    // The copy itself must be there, saying it is this backup's.
    let info = remote.stat(copy_key).await.map_err(exit_for)?;
    let meta = info.as_ref().and_then(|i| i.meta.clone());
    let Some(meta) = meta.filter(|m| m.backup_id == manifest.backup_id && m.archive_sha256 == manifest.sha256) else {
        fail!(
            Exit::Integrity,
            "the copy {copy_key} is missing or its metadata does not name backup {} with sha256 {}",
            manifest.backup_id,
            manifest.sha256
        );
    };
    let stored_bytes = info.map_or(0, |i| i.size);
    if let Some(existing) = journal.backup(manifest.backup_id)? {
        if existing.sha256 != manifest.sha256 {
            fail!(
                Exit::Integrity,
                "backup {} is already in the catalog with another archive (sha256 {}): {copy_key} is not imported",
                manifest.backup_id,
                existing.sha256
            );
        }
        // Known already (restored from this very copy, say): its copy is catalogued too, once.
        if journal.copy(manifest.backup_id, &section.name)?.is_none() && journal.is_imported(manifest.backup_id)? {
            journal.import_copy(&copy_row(section, &manifest, copy_key, stored_bytes, meta))?;
        }
        return Ok(("already_catalogued", manifest.backup_id));
    }
    let path = project.backup_dir().join(&manifest.archive_name).display().to_string();
    let entry = manifest.entry(path)?;
    journal.import_backup(&entry, None).map_err(|err| Exit::Integrity.wrap(err))?;
    journal
        .import_copy(&copy_row(section, &manifest, copy_key, stored_bytes, meta))
        .map_err(|err| Exit::Integrity.wrap(err))?;
    Ok(("imported", manifest.backup_id))
}

/// The catalog row of a copy found on a remote. The stored bytes' sha256 is not in the remote's
/// metadata, so it stays empty: `verify --remote` checks the archive inside (the sha256 the
/// catalog has) rather than the stored bytes.
fn copy_row(
    section: &crate::config::RemoteSection,
    manifest: &remotes::CopyManifest,
    copy_key: &str,
    stored_bytes: u64,
    meta: lifeboat_remote::CopyMeta,
) -> lifeboat_journal::CopyEntry {
    lifeboat_journal::CopyEntry {
        backup_id: manifest.backup_id,
        remote: section.name.clone(),
        run_id: manifest.backup_id,
        url: section.url.clone(),
        key: copy_key.to_owned(),
        shipped_at: lifeboat_machine::Timestamp(manifest.created_at),
        stored_sha256: String::new(),
        stored_bytes,
        archive_sha256: meta.archive_sha256,
        encryption: meta.encryption,
    }
}

impl Report for RemoteImportReport {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.copies.is_empty() {
            return writeln!(out, "remote {} holds no copy manifests: nothing to import", self.remote);
        }
        for c in &self.copies {
            let id = c.backup_id.map_or("-".to_owned(), |id| id.to_string());
            match &c.error {
                None => writeln!(out, "{:<18}  backup {id:>6}  {}", c.outcome, c.key)?,
                Some(err) => writeln!(out, "refused             {}: {err}", c.key)?,
            }
        }
        Ok(())
    }

    /// Exit 5 when a manifest or copy does not hold together, else the first refusal's code.
    fn exit(&self) -> anyhow::Result<()> {
        let refused: Vec<&ImportedCopy> = self.copies.iter().filter(|c| c.error.is_some()).collect();
        let Some(first) = refused.first() else { return Ok(()) };
        let code = if refused.iter().any(|c| c.exit == Exit::Integrity) { Exit::Integrity } else { first.exit };
        Err(code.wrap(anyhow::anyhow!("{} of {} copies were not imported", refused.len(), self.copies.len())))
    }
}
