//! The catalog and settings records, as stored in their tables.

use lifeboat_machine::{BackupKind, BackupRef, RunId, Timestamp};
use serde::{Deserialize, Serialize};

/// One backup in the catalog. Keyed by `id`, which is the id of the run that made it, so a run
/// that records its backup twice (after a crash) finds its own entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackupEntry {
    /// The catalog key: equal to `run_id`.
    pub id: u64,
    /// The run that made the backup.
    pub run_id: RunId,
    pub kind: BackupKind,
    pub created_at: Timestamp,
    /// Where the archive is, as the executor wrote it (relative to the project directory or
    /// absolute).
    pub path: String,
    /// The archive's size on disk.
    pub size_bytes: u64,
    /// Regular files in the archive.
    pub file_count: u64,
    /// All entries in the archive (files, directories, links).
    pub entry_count: u64,
    /// The uncompressed size of the files' contents.
    pub content_bytes: u64,
    /// Lowercase hex SHA-256 of the archive file.
    pub sha256: String,
    pub note: Option<String>,
    /// For a pre-upgrade backup: the version that was deployed when it was made, which a rollback
    /// puts back.
    pub protects_version: Option<String>,
}

impl BackupEntry {
    /// The backup as a run refers to it (restore, rollback, prune).
    pub fn backup_ref(&self) -> BackupRef {
        BackupRef {
            backup_id: self.id,
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            size_bytes: self.size_bytes,
        }
    }
}

/// One copy of a backup on a remote (`[[remote]]` in `lifeboat.toml`), as the shipping run that
/// stored and checked it catalogued it. Keyed by (backup id, remote name): a backup has at most
/// one copy per remote. The entry stays when the local backup is pruned; the remote's own
/// retention removes it (`Journal::prune_copy`, which notes the pair pruned: never shipped again).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CopyEntry {
    pub backup_id: u64,
    /// The remote's name in `lifeboat.toml`.
    pub remote: String,
    /// The shipping run that stored it.
    pub run_id: RunId,
    /// The remote's URL when the copy was shipped (`s3://bucket/prefix`, `file:///dir`).
    pub url: String,
    /// The object's key on the remote (ends `.age` when encrypted).
    pub key: String,
    pub shipped_at: Timestamp,
    /// Lowercase hex SHA-256 of the stored bytes (the age file when encrypted).
    pub stored_sha256: String,
    pub stored_bytes: u64,
    /// Lowercase hex SHA-256 of the archive the copy holds: the backup's own.
    pub archive_sha256: String,
    /// `age` or `none`.
    pub encryption: String,
}

/// The project's small mutable state. Stored as one record, read and rewritten whole by
/// [`crate::Journal::update_settings`] in one transaction.
///
/// Forward compatibility: the record carries the format version byte. Adding a field means a new
/// record version, and a decoder that still reads version 1 and fills the new field with its
/// default; a file whose settings have a newer version than this build knows is refused, not
/// misread.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Settings {
    pub auto_backup_enabled: bool,
    /// The 5-field cron expression of auto-backup, when one was set.
    pub cron: Option<String>,
    pub last_backup_at: Option<Timestamp>,
    /// A short operator-facing word or sentence on how the last backup ended.
    pub last_backup_outcome: Option<String>,
    /// The version of the stack currently deployed, as recorded by the last committed upgrade.
    pub deployed_version: Option<String>,
}
