//! The journal of lifeboat: one redb file per project (`.lifeboat/journal.redb`) holding the
//! append-only events of every run, the backup catalog, the catalog of backups' copies on remotes
//! and a few settings.
//!
//! This crate owns that file and nothing else: it knows nothing of Docker, archives or the
//! command line. What a run *means* belongs to `lifeboat-machine`; this crate stores its
//! [`Event`](lifeboat_machine::Event)s and uses the machine only to check them
//! ([`Journal::interrupted_runs`], [`Journal::verify`]).
//!
//! # Table layout
//!
//! | table               | key                   | value                                          |
//! |---------------------|-----------------------|------------------------------------------------|
//! | `lifeboat_meta`     | `&str`                | `magic` = `lifeboat journal`; `format` = `u32` LE ([`FORMAT_VERSION`]) |
//! | `lifeboat_runs`     | run id `u64`          | number of events of the run (`u64`)            |
//! | `lifeboat_events`   | `(run id, seq)`       | one encoded [`Event`](lifeboat_machine::Event) |
//! | `lifeboat_backups`  | backup id `u64`       | one encoded [`BackupEntry`] (id = its run id)  |
//! | `lifeboat_settings` | `"settings"`          | one encoded [`Settings`]                       |
//! | `lifeboat_copies`   | `(backup id, remote)` | one encoded [`CopyEntry`]: a backup's copy on a remote, by the remote's name |
//! | `lifeboat_copies_pruned` | `(backup id, remote)` | `i64`: when (Unix ms) a remote's retention pruned that copy |
//!
//! `lifeboat_copies` came after the first format: it is created by the first
//! [`Journal::record_copy`] (or [`Journal::remove_copy`]), and a journal without it has no copies.
//! `lifeboat_copies_pruned` came later still, created by the first [`Journal::prune_copy`], which
//! removes the copy's row and writes the pair in one transaction; a journal without it has
//! nothing pruned. Its values are plain integers, not records.
//!
//! Every record is a format version byte ([`RECORD_VERSION`]) followed by bincode 2 (standard
//! configuration, serde path), capped at [`MAX_RECORD_BYTES`]; decoding rejects other versions and
//! trailing bytes, and never panics ([`decode_event`]). The meta table tells a lifeboat journal
//! from any other redb file, and a newer format from this one.
//!
//! Run ids start at 1 and increase: a new id is one more than the largest in `lifeboat_runs`, and
//! runs are never deleted, so an id is never reused. A run's events have the sequence numbers
//! 0, 1, 2, … with no gaps; event 0 is `Started`.
//!
//! # Durability
//!
//! **Assumption about the medium**: once `fsync` (`fdatasync`) returns, the data written before
//! it survives a crash or power loss; before that, any subset of the unsynced writes may have
//! reached the medium, in any order. This is redb's own assumption.
//!
//! **When an event is durable**: every write method ([`Journal::begin_run`], [`Journal::append`],
//! [`Journal::record_backup`], [`Journal::remove_backup`], [`Journal::record_copy`],
//! [`Journal::remove_copy`], [`Journal::prune_copy`], [`Journal::update_settings`]) is exactly
//! one redb write transaction, committed with [`redb::Durability::Immediate`] before the method
//! returns. redb never modifies committed pages in place: it writes the transaction's pages to
//! free space, writes a header whose primary slot points at the new tree (with its checksum), and
//! fsyncs. When the method returns `Ok` that fsync has returned, so the change is on the medium
//! and a reopened journal holds it. After a crash, redb checks the newest slot's checksums and,
//! if the commit did not fully reach the medium, falls back to the previous slot, whose pages are
//! intact.
//!
//! **What an error means**: an error from the commit itself may come after the commit already
//! reached the medium (a write or fsync that failed late, or redb's file trim after the fsync);
//! the change may or may not be durable, and the caller must reopen the journal and read it back
//! rather than assume either way (see [`Journal::append`]). The crash test finds such cases.
//!
//! **Damaged files**: redb 4.1 panics on some damaged files (a truncated file, for one) instead of
//! returning an error. Every public method contains such a panic and returns
//! [`JournalError::Damaged`]; [`Journal::verify`] reports it as a problem.
//!
//! **Why this is enough for recovery**: after a crash, redb opens at the last commit whose
//! checksums verify. Because each append is its own transaction and transactions are atomic, the
//! events of a run after a crash are exactly a *prefix* of the events whose append was called:
//! every append that returned `Ok`, plus possibly the one in progress, never a gap and never a
//! torn record. The write-ahead discipline of the executor (journal the intent, then act;
//! act, then journal the outcome) turns that prefix into a safe recovery decision
//! (`lifeboat_machine::recover`). The `crash` test checks the prefix property at every I/O
//! operation of a sequence of appends, on an in-memory storage backend that models lost unsynced
//! writes.
//!
//! **Why append-only**: an event is never modified or deleted, so a crash can only lose the tail
//! of a run, never change its past, and the run's history is its audit trail (`lifeboat journal
//! show`). The catalogs (backups, copies) and settings are the only records that change in place; each change is one
//! atomic transaction.

mod codec;
mod error;
pub mod fuzzing;
mod journal;
mod records;
mod verify;

pub use codec::{DecodeError, EncodeError, MAX_RECORD_BYTES, RECORD_VERSION, decode_event, encode_event};
pub use error::JournalError;
pub use journal::{FORMAT_VERSION, Journal, MAGIC};
pub use lifeboat_machine::RunId;
pub use records::{BackupEntry, CopyEntry, Settings};
pub use verify::{Problem, VerifyReport};

/// redb's storage seam, re-exported for [`Journal::open_with_backend`].
pub use redb::StorageBackend;
