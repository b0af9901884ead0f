//! The journal's error type.

use crate::codec::{DecodeError, EncodeError};
use lifeboat_machine::{MachineError, RunId};

/// Everything that can go wrong opening, reading or writing the journal. Messages name the
/// journal file and say what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The file exists but is not a lifeboat journal: random bytes, another program's redb file,
    /// or a redb file too damaged to open.
    #[error(
        "{path} is not a lifeboat journal ({detail}): move it aside, or point lifeboat at the right project directory"
    )]
    NotAJournal { path: String, detail: String },
    /// The journal was written by a newer lifeboat, in a format this build cannot read.
    #[error(
        "manual upgrade required: expected journal format {expected}, file {path} is {found}; use a lifeboat release that reads format {found}"
    )]
    NewerFormat { path: String, expected: u32, found: u32 },
    /// Another process holds the journal's file lock.
    #[error("another lifeboat process has the journal {path} open: wait for it to finish (or stop it), then retry")]
    AlreadyOpen { path: String },
    /// This user may not read or write the journal file or its directory.
    #[error(
        "permission denied opening the journal {path}: run lifeboat as the user that owns it, or fix its permissions"
    )]
    PermissionDenied { path: String, source: std::io::Error },
    /// Opening failed for another reason (I/O error, missing directory).
    #[error("cannot open the journal {path}: {source}")]
    Open { path: String, source: redb::DatabaseError },
    /// A read or write inside redb failed (I/O error, or corruption redb detected).
    #[error("journal {path}: storage error: {source}; run `lifeboat journal verify`")]
    Storage { path: String, source: redb::Error },
    /// Committing a write failed. The write may nevertheless have become durable.
    #[error(
        "committing to the journal {path} failed: {source}; the write may still have become durable, so reopen the journal and read it back before acting on it"
    )]
    Commit { path: String, source: redb::CommitError },
    /// A stored record could not be decoded.
    #[error("journal {path}: {what} is undecodable: {source}; run `lifeboat journal verify`")]
    Undecodable { path: String, what: String, source: DecodeError },
    /// The journal's structure contradicts itself (a gap in a run's events, a count that disagrees).
    #[error("journal {path} is inconsistent: {detail}; run `lifeboat journal verify`")]
    Inconsistent { path: String, detail: String },
    /// A run's events do not replay: event `index` contradicts the machine.
    #[error("journal {path}: run {run} does not replay at event {index}: {error}; run `lifeboat journal verify`")]
    Replay { path: String, run: RunId, index: usize, error: MachineError },
    /// A value could not be encoded (larger than the record limit).
    #[error("journal {path}: {source}")]
    Encode { path: String, source: EncodeError },
    /// The run id is not in the journal.
    #[error("run {run} is not in the journal {path}: see `lifeboat journal list`")]
    UnknownRun { path: String, run: RunId },
    /// `begin_run` was given something other than a `Started` event, or `append` a `Started` one.
    #[error("{0}")]
    WrongEvent(&'static str),
    /// A different entry is already in the catalog under this id.
    #[error(
        "backup {id} is already in the catalog of {path} with different facts: the catalog keeps the first entry; compare it with `lifeboat list`"
    )]
    BackupConflict { path: String, id: u64 },
    /// The catalog entry's `id` and `run_id` differ; a backup is catalogued under its run's id.
    #[error("backup entry {id} names run {run_id}: a backup is catalogued under the id of the run that made it")]
    BackupIdMismatch { id: u64, run_id: RunId },
    /// redb failed inside (it panicked) while reading a damaged file. Drop the journal after this.
    #[error(
        "the journal {path} is damaged ({detail}): keep a copy for diagnosis, then restore the journal from a copy or move it aside to start a new one"
    )]
    Damaged { path: String, detail: String },
    /// A different copy of this backup is already catalogued for this remote.
    #[error(
        "backup {backup_id} already has a different copy catalogued on remote {remote} in {path}: the catalog keeps the first; see `lifeboat list --remote {remote}`"
    )]
    CopyConflict { path: String, backup_id: u64, remote: String },
    /// A copy names a backup the catalog does not hold.
    #[error("backup {backup_id} is not in the catalog of {path}: a copy is catalogued only for a catalogued backup")]
    UnknownBackup { path: String, backup_id: u64 },
    /// The run id space is exhausted (2^64 - 1 runs).
    #[error("journal {path} has no run ids left")]
    IdsExhausted { path: String },
}
