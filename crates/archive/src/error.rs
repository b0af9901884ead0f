//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// What went wrong while writing, verifying, reading or extracting an archive.
///
/// Every message names the file or entry concerned; the variants that mean "this archive must not
/// be trusted" are grouped by [`ArchiveError::is_integrity`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A root to archive does not exist on disk.
    #[error("backup source {path} does not exist: create it or remove it from the backup paths")]
    MissingRoot { path: PathBuf },
    /// A root's name in the archive is empty, absolute, has `.`/`..` parts, or overlaps another root.
    #[error("invalid archive name {name:?} for a backup root: {reason}")]
    InvalidRootName { name: String, reason: String },
    /// The destination already exists; lifeboat never overwrites an archive.
    #[error("archive {path} already exists: refusing to overwrite it, choose another name")]
    DestinationExists { path: PathBuf },
    /// A file of a kind lifeboat does not know was found under a root (sockets are skipped instead).
    #[error("cannot archive {path}: it is a {kind}, which lifeboat does not back up; move it out of the backup path")]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A source file changed size while it was being archived.
    #[error(
        "{path} changed while it was being archived (expected {expected} bytes): stop whatever writes to it and retry"
    )]
    FileChanged { path: PathBuf, expected: u64 },
    /// A root's files changed between the census in front of the archive and the archiving.
    #[error("{path} changed while it was being archived ({detail}): stop whatever writes to it and retry")]
    TreeChanged { path: PathBuf, detail: String },
    /// Reading a source file, directory or link failed.
    #[error("cannot read {path}: {source}; check its permissions")]
    Read { path: PathBuf, source: io::Error },
    /// Writing, syncing or renaming the archive (or an extracted file) failed.
    #[error("cannot write {path}: {source}; check free space and permissions")]
    Write { path: PathBuf, source: io::Error },
    /// The archive file could not be opened or read.
    #[error("cannot read archive {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The archive's sha256 differs from the recorded one.
    #[error(
        "checksum mismatch for archive {path}: expected sha256 {expected}, got {actual}; the archive is corrupt, do not restore from it"
    )]
    ChecksumMismatch { path: PathBuf, expected: String, actual: String },
    /// The archive file is shorter than recorded, or its compressed stream ends early.
    #[error("archive {path} is truncated: {detail}; the archive is incomplete, do not restore from it")]
    Truncated { path: PathBuf, detail: String },
    /// The archive file is longer than recorded.
    #[error("archive {path} has {actual} bytes on disk but {expected} were recorded; do not restore from it")]
    SizeMismatch { path: PathBuf, expected: u64, actual: u64 },
    /// The gzip layer is corrupt: bad header, bad deflate data, CRC or length mismatch.
    #[error("archive {path} is not valid gzip: {detail}; the archive is corrupt")]
    BadGzip { path: PathBuf, detail: String },
    /// The zstd layer is corrupt: bad frame, bad block data, content checksum mismatch.
    #[error("archive {path} is not valid zstd: {detail}; the archive is corrupt")]
    BadZstd { path: PathBuf, detail: String },
    /// The tar layer is corrupt.
    #[error("archive {path} is not a valid tar stream: {detail}; the archive is corrupt")]
    BadTar { path: PathBuf, detail: String },
    /// The number of entries or content bytes differs from what was recorded at write time.
    #[error("archive {path} holds {actual} {what} but {expected} were recorded; the archive is corrupt")]
    CountMismatch { path: PathBuf, what: &'static str, expected: u64, actual: u64 },
    /// An entry is refused: it would land outside the target, or is of a kind lifeboat never extracts.
    #[error("refusing archive {path}: entry {entry:?} {reason}; nothing was changed")]
    UnsafeEntry { path: PathBuf, entry: String, reason: String },
    /// The requested member or subtree is not in the archive.
    #[error("archive {path} has no entry {name:?}")]
    MemberNotFound { path: PathBuf, name: String },
    /// The requested member is larger than the caller's limit.
    #[error("entry {name:?} of archive {path} is {size} bytes, more than the {limit} allowed")]
    MemberTooLarge { path: PathBuf, name: String, size: u64, limit: u64 },
    /// Moving a directory into place, aside, or back failed.
    #[error("cannot {action} {path}: {source}; the directories named here may need to be moved by hand")]
    Swap { action: &'static str, path: PathBuf, source: io::Error },
    /// A `WriteOptions::max_bytes` or `max_files` limit would be passed; the partial file is gone.
    #[error(
        "archiving {path} would pass the limit of {limit} {what} per archive: nothing was written; find out what grew there, or raise the limit"
    )]
    LimitExceeded { path: PathBuf, what: &'static str, limit: u64 },
    /// The mirror directory given to `sync_mirror` is a symlink or not a directory.
    #[error(
        "mirror directory {path} is not a directory (a symlink or a file is there): remove it and lifeboat will create it again"
    )]
    MirrorNotDirectory { path: PathBuf },
    /// The caller asked the writer to stop (see `WriteOptions::cancel`); the partial file is gone.
    #[error("archiving was cancelled")]
    Cancelled,
    /// The options are unusable (for example a compression level above 9).
    #[error("invalid archive options: {0}")]
    InvalidOptions(String),
}

impl ArchiveError {
    /// True when the error means the archive itself is corrupt, incomplete or unsafe (exit code 5),
    /// rather than an I/O problem around it.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            ArchiveError::ChecksumMismatch { .. }
                | ArchiveError::Truncated { .. }
                | ArchiveError::SizeMismatch { .. }
                | ArchiveError::BadGzip { .. }
                | ArchiveError::BadZstd { .. }
                | ArchiveError::BadTar { .. }
                | ArchiveError::CountMismatch { .. }
                | ArchiveError::UnsafeEntry { .. }
        )
    }
}
