//! `lifeboat.toml`: the project's configuration, read once per command and validated before any
//! run starts, so a typo is a usage error (exit 2) rather than a failed run.

use anyhow::{Context, bail};
use lifeboat_machine::HookPoint;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The name of the configuration file in the project directory.
pub const CONFIG_FILE: &str = "lifeboat.toml";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub project: ProjectSection,
    #[serde(default)]
    pub backup: BackupSection,
    #[serde(default)]
    pub auto_backup: AutoBackupSection,
    #[serde(default)]
    pub services: ServicesSection,
    /// Where a run's end is reported (docs/json.md, "The notification").
    #[serde(default, skip_serializing_if = "NotifySection::is_empty")]
    pub notify: NotifySection,
    #[serde(default, skip_serializing_if = "MetricsSection::is_empty")]
    pub metrics: MetricsSection,
    /// Host commands run around backups (docs/design.md, "Hooks").
    #[serde(default, skip_serializing_if = "HooksSection::is_empty")]
    pub hooks: HooksSection,
    /// Where every backup is copied off the host (`[[remote]]`; docs/design.md, "Off-host copies").
    #[serde(default, rename = "remote", skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<RemoteSection>,
}

/// One `[[remote]]`: an S3-compatible bucket and prefix, or a directory on another disk, that
/// receives a copy of every backup once the backup is recorded and its services are back.
/// Credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, or `credentials_file`;
/// they are never written anywhere lifeboat writes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// How commands (`list --remote NAME`) and messages name it.
    pub name: String,
    /// `s3://bucket/prefix` or `file:///absolute/dir`.
    pub url: String,
    /// The S3 endpoint (`http://127.0.0.1:3900`); omitted for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), what self-hosted stores want.
    #[serde(default)]
    pub path_style: bool,
    /// age recipients (`age1...`) every copy is encrypted to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypt_to: Vec<String>,
    /// `false` to ship unencrypted, which must be said explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<bool>,
    /// An age identity file that opens the copies (for `verify --remote` and restores without
    /// `--identity`); it must be readable by its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// A file with `AWS_ACCESS_KEY_ID=...` and `AWS_SECRET_ACCESS_KEY=...`, readable by its owner
    /// only; the environment's keys are used when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
    /// Prune on this remote never goes below this many copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Prune on this remote deletes copies older than this (beyond `keep_last`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

impl RemoteSection {
    /// Whether copies are encrypted (validation made sure this was said one way or the other).
    pub fn encrypts(&self) -> bool {
        !self.encrypt_to.is_empty()
    }

    fn validate(&self) -> anyhow::Result<()> {
        let name = &self.name;
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            bail!("remote name {name:?}: use 1 to 64 letters, digits, '-' or '_'");
        }
        let location: lifeboat_remote::Location =
            self.url.parse().with_context(|| format!("remote {name}: url is not valid"))?;
        let is_s3 = matches!(location, lifeboat_remote::Location::S3 { .. });
        if !is_s3 && (self.endpoint.is_some() || self.region.is_some() || self.credentials_file.is_some()) {
            bail!("remote {name}: endpoint, region and credentials_file are for s3:// remotes only");
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            bail!("remote {name}: endpoint must be an http:// or https:// URL");
        }
        match (self.encrypt, self.encrypt_to.is_empty()) {
            (Some(false), false) => {
                bail!("remote {name}: encrypt = false with encrypt_to recipients; remove one of them")
            }
            (Some(true) | None, true) => bail!(
                "remote {name}: say how copies are stored: encrypt_to = [\"age1...\"] (age-keygen makes one) to \
                 encrypt them, or encrypt = false to ship them readable by whoever can read the remote"
            ),
            _ => {}
        }
        if self.encrypts() {
            lifeboat_remote::Encryption::to_recipients(&self.encrypt_to)
                .with_context(|| format!("remote {name}: encrypt_to is not valid"))?;
        }
        if self.keep_last == Some(0) {
            bail!("remote {name}: keep_last is 0, so prune could delete every copy: use at least 1");
        }
        for (key, value) in [("identity_file", &self.identity_file), ("credentials_file", &self.credentials_file)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                bail!("remote {name}: {key} is empty: name a file, or remove the key");
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProjectSection {
    /// The compose project name: containers carry it in the label `com.docker.compose.project`.
    pub name: String,
    #[serde(default = "default_compose_file")]
    pub compose_file: String,
    #[serde(default = "default_compose_command")]
    pub compose_command: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSection {
    /// Data paths relative to the project directory. A missing path is an error, never skipped.
    pub paths: Vec<String>,
    /// Also archive the project's named volumes.
    pub volumes: bool,
    /// Where archives go, relative to the project directory unless absolute.
    pub dir: String,
    /// gzip (`.tar.gz`, the default) or zstd (`.tar.zst`). Restore and verify read both, by the
    /// file's first bytes, whatever this says now.
    pub compression: CompressionName,
    /// gzip 1 to 9, zstd 1 to 19; when absent, each one's usual level (gzip 6, zstd 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<u32>,
    pub retention_days: u32,
    pub keep_last: u32,
    /// A group that may read the backups (`backup.dir` `0750`, archives `0640`); without it only
    /// root can (`0700`, `0600`). See docs/security.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Most bytes of file data one archive may store (holes of sparse files not counted); no
    /// limit when absent. A backup that would pass it fails and rolls back, naming the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Most entries (files, directories, links) one archive may store; no limit when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
    /// `stop` (the default): the services are down while the archive is written. `snapshot`: a
    /// mirror of the data is synced while they run, again while they are stopped (the downtime),
    /// and archived once they are back (docs/design.md, "Snapshot backups").
    pub mode: BackupMode,
    /// Where snapshot mode keeps its mirror (as much disk again as the data), relative to the
    /// project directory unless absolute. On the data's filesystem, copies are reflinks where it
    /// offers them.
    pub mirror_dir: String,
}

/// `backup.mode` as `lifeboat.toml` spells it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    #[default]
    Stop,
    Snapshot,
}

impl BackupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMode::Stop => "stop",
            BackupMode::Snapshot => "snapshot",
        }
    }
}

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            paths: vec!["data".into()],
            volumes: true,
            dir: "backups".into(),
            compression: CompressionName::Gzip,
            compression_level: None,
            retention_days: 30,
            keep_last: 3,
            group: None,
            max_bytes: None,
            max_files: None,
            mode: BackupMode::Stop,
            mirror_dir: DEFAULT_MIRROR_DIR.into(),
        }
    }
}

/// Where snapshot mode's mirror goes when `backup.mirror_dir` does not say.
pub const DEFAULT_MIRROR_DIR: &str = ".lifeboat/mirror";

/// `backup.compression` as `lifeboat.toml` spells it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompressionName {
    #[default]
    Gzip,
    Zstd,
}

impl CompressionName {
    pub fn archive(self) -> lifeboat_archive::Compression {
        match self {
            CompressionName::Gzip => lifeboat_archive::Compression::Gzip,
            CompressionName::Zstd => lifeboat_archive::Compression::Zstd,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutoBackupSection {
    pub enabled: bool,
    pub cron: String,
    /// The IANA time zone the cron expression is read in (`Europe/Berlin`); the host's local
    /// time zone when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl Default for AutoBackupSection {
    fn default() -> Self {
        AutoBackupSection { enabled: false, cron: "0 2 * * *".into(), timezone: None }
    }
}

impl AutoBackupSection {
    /// The time zone of the schedule: `None` means the host's local time zone.
    pub fn zone(&self) -> anyhow::Result<Option<chrono_tz::Tz>> {
        self.timezone
            .as_deref()
            .map(|name| {
                name.parse::<chrono_tz::Tz>().map_err(|_| {
                    anyhow::anyhow!(
                        "auto_backup.timezone {name:?} is not an IANA time zone name: use one like \"Europe/Berlin\", \
                         or remove it for the host's local time zone"
                    )
                })
            })
            .transpose()
    }
}

impl BackupSection {
    /// The gid of `backup.group`, `None` when it is not set; an unknown group is an error naming it.
    pub fn group_id(&self) -> anyhow::Result<Option<u32>> {
        self.group.as_deref().map(group_id).transpose()
    }

    /// The level archives are compressed at: `compression_level`, or the compression's usual one.
    pub fn level(&self) -> u32 {
        self.compression_level.unwrap_or_else(|| self.compression.archive().default_level())
    }

    /// The ending of archive names: `.tar.gz` or `.tar.zst`.
    pub fn extension(&self) -> &'static str {
        self.compression.archive().extension()
    }

    /// The archive writer's options from this section: compression, level, group and limits.
    pub fn write_options(&self) -> anyhow::Result<lifeboat_archive::WriteOptions> {
        Ok(lifeboat_archive::WriteOptions {
            compression: self.compression.archive(),
            level: self.level(),
            group: self.group_id()?,
            max_bytes: self.max_bytes,
            max_files: self.max_files,
            ..lifeboat_archive::WriteOptions::default()
        })
    }

    /// An archive writer's error, with the `lifeboat.toml` key to raise when it is a limit.
    pub fn explain(&self, err: lifeboat_archive::ArchiveError) -> anyhow::Error {
        let key = match &err {
            lifeboat_archive::ArchiveError::LimitExceeded { what, .. } if what.contains("bytes") => "backup.max_bytes",
            lifeboat_archive::ArchiveError::LimitExceeded { .. } => "backup.max_files",
            _ => return err.into(),
        };
        anyhow::Error::new(err).context(format!("{key} in {CONFIG_FILE} reached"))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesSection {
    pub stop_timeout_secs: u64,
    pub start_timeout_secs: u64,
}

impl Default for ServicesSection {
    fn default() -> Self {
        ServicesSection { stop_timeout_secs: 30, start_timeout_secs: 120 }
    }
}

/// Whether `name` can be a compose project name (and the prefix of its volumes' names): letters,
/// digits, `_`, `-` and `.`, starting with a letter or digit. A manifest's project name is
/// checked with this before a restore uses it.
pub fn is_valid_project_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `[notify]`: who hears how a run ended. Failures are sent by default, successes with
/// `on_success`; the ping URL hears every run's start and end (Healthchecks.io convention: `URL/start`,
/// `URL`, `URL/fail`). A notification that cannot be delivered is retried, logged, and never
/// changes the run's outcome or exit code.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// An `http://` or `https://` URL the notification document is POSTed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A command (run by `sh -c`) that receives the notification document on stdin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A dead-man's-switch URL: `/start` when a run starts, itself on success, `/fail` on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_url: Option<String>,
    /// Also send the webhook and the command when a run completes.
    pub on_success: bool,
    /// How long one delivery attempt may take; 10 s when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

impl NotifySection {
    fn is_empty(&self) -> bool {
        *self == NotifySection::default()
    }
}

/// How long a hook may run when nothing says otherwise.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 300;

/// `[hooks]`: host commands (run by `sh -c` in the project directory) around a backup, an
/// upgrade or a restore, and when a run fails. A failing `before_*` ends the run before anything
/// is stopped; a failing `after_*` is reported (exit 6) and the run's work stays; `on_failure`
/// runs last, once everything is put back, in a run that rolls back or fails. Hooks in containers
/// are compose labels (`lifeboat.before-backup`), see `effects::hooks`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_backup: Option<String>,
    /// Sees the archive's path in `LIFEBOAT_ARCHIVE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_backup: Option<String>,
    /// Before an upgrade stops anything (and before its pre-upgrade backup); its failure ends the
    /// upgrade with nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_upgrade: Option<String>,
    /// After the new version is verified healthy and committed; sees `LIFEBOAT_VERSION` and the
    /// pre-upgrade backup in `LIFEBOAT_ARCHIVE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_upgrade: Option<String>,
    /// Before a restore stops anything; its failure ends the restore with nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_restore: Option<String>,
    /// After the restored data is verified with the services up and committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_restore: Option<String>,
    /// When any run rolls back or fails, after it put back what it could; sees `LIFEBOAT_KIND`,
    /// `LIFEBOAT_OUTCOME` (`rolled_back` or `failed`) and `LIFEBOAT_ERROR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// Each host hook is killed after this many seconds.
    pub timeout_secs: u64,
    /// The hooks (by key: `before_backup`, `after_backup`, ...) that are safe to run twice: only
    /// those are run again by `recover` when a crash interrupted them.
    pub idempotent: Vec<String>,
}

impl Default for HooksSection {
    fn default() -> Self {
        HooksSection {
            before_backup: None,
            after_backup: None,
            before_upgrade: None,
            after_upgrade: None,
            before_restore: None,
            after_restore: None,
            on_failure: None,
            timeout_secs: DEFAULT_HOOK_TIMEOUT_SECS,
            idempotent: Vec::new(),
        }
    }
}

impl HooksSection {
    fn is_empty(&self) -> bool {
        *self == HooksSection::default()
    }

    /// The host command at `point`, if one is set.
    pub fn command(&self, point: HookPoint) -> Option<&str> {
        match point {
            HookPoint::BeforeBackup => &self.before_backup,
            HookPoint::AfterBackup => &self.after_backup,
            HookPoint::BeforeUpgrade => &self.before_upgrade,
            HookPoint::AfterUpgrade => &self.after_upgrade,
            HookPoint::BeforeRestore => &self.before_restore,
            HookPoint::AfterRestore => &self.after_restore,
            HookPoint::OnFailure => &self.on_failure,
        }
        .as_deref()
    }
}

/// `[metrics]`: a Prometheus text-format file (node_exporter's textfile collector), rewritten
/// atomically after every run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// The file, relative to the project directory unless absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl MetricsSection {
    fn is_empty(&self) -> bool {
        *self == MetricsSection::default()
    }
}

fn default_compose_file() -> String {
    "docker-compose.yml".into()
}

fn default_compose_command() -> String {
    "docker-compose".into()
}

impl Config {
    /// The configuration `lifeboat init` writes.
    pub fn new(project: &str, compose_file: &str) -> Config {
        Config {
            project: ProjectSection {
                name: project.into(),
                compose_file: compose_file.into(),
                compose_command: default_compose_command(),
            },
            backup: BackupSection::default(),
            auto_backup: AutoBackupSection::default(),
            services: ServicesSection::default(),
            notify: NotifySection::default(),
            metrics: MetricsSection::default(),
            hooks: HooksSection::default(),
            remotes: Vec::new(),
        }
    }

    /// Reads and validates `DIR/lifeboat.toml`.
    pub fn load(project_dir: &Path) -> anyhow::Result<Config> {
        let path = project_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                bail!("no {CONFIG_FILE} in {}: run 'lifeboat init' there, or pass -C DIR", project_dir.display())
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates the text of a `lifeboat.toml`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).with_context(|| format!("{origin} is not valid"))?;
        config.validate().with_context(|| format!("{origin} is not valid"))?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.project.name.is_empty() {
            bail!("project.name is empty: set it to the compose project name");
        }
        if self.project.compose_command.split_whitespace().next().is_none() {
            bail!("project.compose_command is empty: use \"docker-compose\" or \"docker compose\"");
        }
        let compression = self.backup.compression.archive();
        // Level 0 (gzip's "store") is the writer's, not a backup's: it makes archives as large as the data.
        let levels = 1..=*compression.levels().end();
        if let Some(level) = self.backup.compression_level
            && !levels.contains(&level)
        {
            bail!(
                "backup.compression_level is {level}: with backup.compression = {compression:?} it must be between {} \
                 and {} (or remove it for {})",
                levels.start(),
                levels.end(),
                compression.default_level(),
                compression = compression.name(),
            );
        }
        for path in &self.backup.paths {
            let p = Path::new(path);
            if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                bail!("backup.paths entry {path:?} must be relative to the project directory, without '..'");
            }
        }
        if self.backup.paths.is_empty() && !self.backup.volumes {
            bail!("nothing to back up: backup.paths is empty and backup.volumes is false");
        }
        for (key, limit) in [("max_bytes", self.backup.max_bytes), ("max_files", self.backup.max_files)] {
            if limit == Some(0) {
                bail!("backup.{key} is 0, so every backup would fail: set a positive limit, or remove it for none");
            }
        }
        self.backup.group_id()?;
        for (key, url) in [("webhook", &self.notify.webhook), ("ping_url", &self.notify.ping_url)] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                bail!("notify.{key} must be an http:// or https:// URL");
            }
        }
        if self.notify.command.as_deref().is_some_and(|c| c.trim().is_empty()) {
            bail!("notify.command is empty: name a program, or remove the key");
        }
        if self.notify.timeout_secs == Some(0) {
            bail!("notify.timeout_secs is 0: use a positive number of seconds, or remove it for 10");
        }
        for point in HookPoint::ALL {
            if self.hooks.command(point).is_some_and(|c| c.trim().is_empty()) {
                bail!("hooks.{} is empty: give it a command, or remove it", point.as_str());
            }
        }
        if self.hooks.timeout_secs == 0 {
            bail!("hooks.timeout_secs is 0: use a positive number of seconds");
        }
        if let Some(key) = self.hooks.idempotent.iter().find(|k| !HookPoint::ALL.iter().any(|p| p.as_str() == *k)) {
            let keys: Vec<&str> = HookPoint::ALL.iter().map(|p| p.as_str()).collect();
            bail!("hooks.idempotent names {key:?}: use {}", keys.join(", "));
        }
        if self.metrics.file.as_deref().is_some_and(|f| f.trim().is_empty()) {
            bail!("metrics.file is empty: name a file, or remove the key");
        }
        parse_cron(&self.auto_backup.cron).context("auto_backup.cron is not valid")?;
        self.auto_backup.zone()?;
        for (i, remote) in self.remotes.iter().enumerate() {
            remote.validate()?;
            if self.remotes[..i].iter().any(|other| other.name == remote.name) {
                bail!("two [[remote]] sections are named {:?}: give each its own name", remote.name);
            }
        }
        Ok(())
    }

    /// The configuration as `init` writes it, with a comment on every key.
    pub fn to_commented_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let paths: Vec<String> = self.backup.paths.iter().map(|p| q(p)).collect();
        format!(
            "[project]\n\
             name = {name}                    # compose project name (label com.docker.compose.project)\n\
             compose_file = {file}\n\
             compose_command = {cmd}   # or \"docker compose\"\n\
             \n\
             [backup]\n\
             paths = [{paths}]                 # relative to the project dir; missing paths are an error\n\
             volumes = {volumes}                    # also the project's named volumes\n\
             dir = {dir}\n\
             compression = {compression}               # or \"zstd\" (.tar.zst); restore and verify read both\n\
             mode = {mode}                     # or \"snapshot\": down only for a sync of what changed; the mirror costs the data's size again\n\
             mirror_dir = {mirror}\n\
             {level}\n\
             retention_days = {days}\n\
             keep_last = {keep}                    # prune never goes below this many verified backups\n\
             {group}\n\
             {max_bytes}\n\
             {max_files}\n\
             \n\
             [auto_backup]                   # initial values: 'lifeboat auto-backup enable|disable|schedule' change them\n\
             enabled = {enabled}\n\
             cron = {cron}\n\
             {zone}\n\
             \n\
             [services]\n\
             stop_timeout_secs = {stop}\n\
             start_timeout_secs = {start}         # running, and healthy where the image has a HEALTHCHECK\n",
            name = q(&self.project.name),
            file = q(&self.project.compose_file),
            cmd = q(&self.project.compose_command),
            paths = paths.join(", "),
            volumes = self.backup.volumes,
            dir = q(&self.backup.dir),
            compression = q(self.backup.compression.archive().name()),
            mode = q(self.backup.mode.as_str()),
            mirror = q(&self.backup.mirror_dir),
            level = match self.backup.compression_level {
                Some(n) => format!("compression_level = {n}"),
                None => "# compression_level = 6          # gzip 1-9 (default 6), zstd 1-19 (default 3)".to_owned(),
            },
            days = self.backup.retention_days,
            keep = self.backup.keep_last,
            group = match &self.backup.group {
                Some(group) => format!("group = {}", q(group)),
                None => "# group = \"backup\"              # this group may read the backups (dir 0750, archives 0640); \
                         default: root only (0700, 0600)"
                    .to_owned(),
            },
            max_bytes = match self.backup.max_bytes {
                Some(n) => format!("max_bytes = {n}"),
                None => "# max_bytes = 107374182400       # most bytes of file data per archive (here 100 GiB); a \
                         backup past it fails and rolls back, naming the file. Default: no limit"
                    .to_owned(),
            },
            max_files = match self.backup.max_files {
                Some(n) => format!("max_files = {n}"),
                None => "# max_files = 1000000            # most files, directories and links per archive. Default: no limit"
                    .to_owned(),
            },
            enabled = self.auto_backup.enabled,
            cron = q(&self.auto_backup.cron),
            zone = match &self.auto_backup.timezone {
                Some(zone) => format!("timezone = {}", q(zone)),
                None => "# timezone = \"Europe/Berlin\"       # default: the host's local time zone".to_owned(),
            },
            stop = self.services.stop_timeout_secs,
            start = self.services.start_timeout_secs,
        )
    }

    /// The `[[remote]]` named `name`; exit 2 naming the ones there are otherwise.
    pub fn remote(&self, name: &str) -> anyhow::Result<&RemoteSection> {
        self.remotes.iter().find(|remote| remote.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.remotes.iter().map(|r| r.name.as_str()).collect();
            let known = if names.is_empty() { "none is configured".to_owned() } else { names.join(", ") };
            crate::exit::Exit::Usage
                .wrap(anyhow::anyhow!("no [[remote]] named {name:?} in {CONFIG_FILE} (remotes: {known})"))
        })
    }

    /// The directory archives are written to.
    pub fn backup_dir(&self, project_dir: &Path) -> PathBuf {
        project_dir.join(&self.backup.dir)
    }
}

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week).
pub fn parse_cron(expr: &str) -> anyhow::Result<croner::Cron> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        bail!("{expr:?} has {fields} fields: use 5 (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\"");
    }
    expr.parse::<croner::Cron>().map_err(|err| anyhow::anyhow!("{expr:?} is not a cron expression: {err}"))
}

/// The gid of the group named `name`; an unknown name is a configuration error.
pub fn group_id(name: &str) -> anyhow::Result<u32> {
    let c_name = std::ffi::CString::new(name).map_err(|_| anyhow::anyhow!("backup.group {name:?} contains a NUL"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `libc::group` is plain data (integers and pointers), valid when zeroed.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `group` and `result` are valid out-pointers; `buf` outlives the call and its
        // length is passed; getgrnam_r is the re-entrant lookup.
        let rc =
            unsafe { libc::getgrnam_r(c_name.as_ptr(), &mut group, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc)).with_context(|| format!("cannot look up the group {name:?}"));
        }
        if result.is_null() {
            anyhow::bail!(
                "backup.group {name:?} is not a group on this host: create it ('groupadd {name}'), name an existing \
                 one, or remove backup.group to keep backups readable by root only"
            );
        }
        return Ok(group.gr_gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_toml_round_trips_to_the_same_config() {
        let config = Config::new("demo", "docker-compose.yml");
        let parsed: Config = toml::from_str(&config.to_commented_toml()).unwrap();
        assert_eq!(parsed, config);
    }

    #[test]
    fn the_schedule_zone_is_an_iana_name_or_the_local_zone() {
        let mut config = Config::new("demo", "c.yml");
        assert_eq!(config.auto_backup.zone().unwrap(), None);
        config.auto_backup.timezone = Some("Europe/Berlin".into());
        assert_eq!(config.auto_backup.zone().unwrap(), Some(chrono_tz::Europe::Berlin));
        let parsed: Config = toml::from_str(&config.to_commented_toml()).unwrap();
        assert_eq!(parsed, config);
        config.auto_backup.timezone = Some("Mars/Olympus_Mons".into());
        assert!(config.validate().unwrap_err().to_string().contains("IANA"));
    }

    #[test]
    fn group_and_limits_are_optional_and_round_trip() {
        let mut config = Config::new("demo", "c.yml");
        let text = config.to_commented_toml();
        assert!(text.contains("# group = ") && text.contains("# max_bytes = ") && text.contains("# max_files = "));
        let options = config.backup.write_options().unwrap();
        assert_eq!((options.group, options.max_bytes, options.max_files), (None, None, None));
        config.backup.group = Some("root".into());
        config.backup.max_bytes = Some(1 << 30);
        config.backup.max_files = Some(1000);
        let parsed: Config = toml::from_str(&config.to_commented_toml()).unwrap();
        assert_eq!(parsed, config);
        parsed.validate().unwrap();
        let options = parsed.backup.write_options().unwrap();
        assert_eq!((options.group, options.max_bytes, options.max_files), (Some(0), Some(1 << 30), Some(1000)));
        assert_eq!(options.level, 6);
    }

    #[test]
    fn zero_limits_and_unknown_groups_are_rejected_naming_the_key() {
        let mut config = Config::new("demo", "c.yml");
        config.backup.max_bytes = Some(0);
        assert!(config.validate().unwrap_err().to_string().contains("backup.max_bytes is 0"));
        config.backup.max_bytes = None;
        config.backup.max_files = Some(0);
        assert!(config.validate().unwrap_err().to_string().contains("backup.max_files is 0"));
        config.backup.max_files = None;
        config.backup.group = Some("no-such-group-lifeboat".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("backup.group \"no-such-group-lifeboat\""), "{err}");
    }

    #[test]
    fn the_postgres_example_is_valid_and_declares_its_dump_hook() {
        let config: Config = toml::from_str(include_str!("../../../examples/postgres/lifeboat.toml")).unwrap();
        config.validate().unwrap();
        assert!(config.hooks.after_backup.as_deref().is_some_and(|c| c.contains("$LIFEBOAT_ARCHIVE")));
        assert_eq!(config.notify.ping_url.as_deref(), Some("https://hc-ping.com/UUID"));
        assert!(config.metrics.file.is_some());
        let compose: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../../../examples/postgres/docker-compose.yml")).unwrap();
        let hook = &compose["services"]["db"]["labels"]["lifeboat.before-backup"];
        assert!(hook.as_str().is_some_and(|c| c.starts_with("pg_dumpall")), "{hook:?}");
    }

    #[test]
    fn hook_and_notify_keys_are_checked() {
        let mut config = Config::new("demo", "c.yml");
        config.hooks.idempotent = vec!["after_upgrade".into(), "before_upgrades".into()];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("hooks.idempotent names \"before_upgrades\"") && err.contains("on_failure"), "{err}");
        config.hooks.idempotent = vec![];
        config.notify.webhook = Some("ftp://x".into());
        assert!(config.validate().unwrap_err().to_string().contains("notify.webhook"));
        config.notify.webhook = None;
        config.hooks.on_failure = Some(" ".into());
        assert!(config.validate().unwrap_err().to_string().contains("hooks.on_failure is empty"));
        // Every point is a key; a misspelt one is refused, not ignored.
        let text =
            "[project]\nname = \"x\"\n[hooks]\nbefore_upgrade = \"x\"\nafter_upgrade = \"y\"\non_failure = \"z\"\n";
        let config = toml::from_str::<Config>(text).unwrap();
        assert_eq!(config.hooks.command(HookPoint::OnFailure), Some("z"));
        assert!(toml::from_str::<Config>("[project]\nname = \"x\"\n[hooks]\non_fail = \"x\"\n").is_err());
    }

    #[test]
    fn compression_and_its_level_are_checked_per_compression_and_round_trip() {
        let mut config = Config::new("demo", "c.yml");
        let text = config.to_commented_toml();
        assert!(text.contains("compression = \"gzip\"") && text.contains("# compression_level = "), "{text}");
        assert_eq!(config.backup.write_options().unwrap().level, 6);
        assert_eq!(config.backup.extension(), ".tar.gz");
        config.backup.compression = CompressionName::Zstd;
        let options = config.backup.write_options().unwrap();
        assert_eq!((options.compression, options.level), (lifeboat_archive::Compression::Zstd, 3));
        assert_eq!(config.backup.extension(), ".tar.zst");
        config.backup.compression_level = Some(19);
        config.validate().unwrap();
        let parsed: Config = toml::from_str(&config.to_commented_toml()).unwrap();
        assert_eq!(parsed, config);
        assert_eq!(parsed.backup.write_options().unwrap().level, 19);
        config.backup.compression_level = Some(20);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("backup.compression_level is 20") && err.contains("between 1 and 19"), "{err}");
        config.backup.compression = CompressionName::Gzip;
        config.backup.compression_level = Some(10);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("\"gzip\" it must be between 1 and 9"), "{err}");
        config.backup.compression_level = Some(0);
        assert!(config.validate().is_err());
        let text = Config::new("demo", "c.yml").to_commented_toml().replace("\"gzip\"", "\"xz\"");
        let err = format!("{:#}", toml::from_str::<Config>(&text).unwrap_err());
        assert!(err.contains("xz") && err.contains("gzip") && err.contains("zstd"), "{err}");
        // A configuration from before compression existed still loads.
        let old =
            Config::new("demo", "c.yml").to_commented_toml().replace("compression = \"gzip\"", "compression_level = 6");
        let parsed: Config = toml::from_str(&old).unwrap();
        assert_eq!((parsed.backup.compression, parsed.backup.level()), (CompressionName::Gzip, 6));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let text = Config::new("demo", "c.yml").to_commented_toml().replace("keep_last", "keep_lst");
        assert!(toml::from_str::<Config>(&text).is_err());
        let mut config = Config::new("demo", "c.yml");
        config.backup.paths = vec!["../etc".into()];
        assert!(config.validate().unwrap_err().to_string().contains("without '..'"));
        config.backup.paths = vec![];
        config.auto_backup.cron = "every day".into();
        config.backup.volumes = true;
        assert!(config.validate().unwrap_err().to_string().contains("cron"));
    }
}
