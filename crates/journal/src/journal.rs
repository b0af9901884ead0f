//! [`Journal`]: the redb file, its tables, and the operations on them.

use crate::codec::{self, DecodeError, decode_event, encode_event};
use crate::error::JournalError;
use crate::records::{BackupEntry, CopyEntry, Settings};
use lifeboat_machine::{ArchiveDetails, Event, RunId, replay};
use redb::{
    Builder, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend,
    StorageError, TableDefinition, TableError, TableHandle, WriteTransaction,
};
use std::io::ErrorKind;
use std::path::Path;

/// The journal format this build reads and writes: the table layout and the meaning of their
/// keys. Records inside carry their own version byte ([`crate::RECORD_VERSION`]).
pub const FORMAT_VERSION: u32 = 1;

/// The value of the `magic` key of the meta table.
pub const MAGIC: &[u8] = b"lifeboat journal";

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("lifeboat_meta");
pub(crate) const RUNS: TableDefinition<u64, u64> = TableDefinition::new("lifeboat_runs");
pub(crate) const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("lifeboat_events");
pub(crate) const BACKUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("lifeboat_backups");
pub(crate) const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("lifeboat_settings");
/// What a catalogued archive holds beyond its entry (`ArchiveDetails`), by backup id. Added after
/// the first format: a journal may lack the table, and entries recorded before it lack a row.
pub(crate) const BACKUP_DETAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("lifeboat_backup_details");

/// Backups imported from archives made under another journal (`lifeboat import`, a restore onto
/// a new host), by id, with the path they were imported from. The row stays when the backup is
/// pruned: an imported id is reserved for good, so no later run of this journal takes it (and
/// names a new archive as the imported one is named). Added after the first format: a journal
/// may lack the table.
pub(crate) const IMPORTED: TableDefinition<u64, &[u8]> = TableDefinition::new("lifeboat_imported");

/// Copies of backups on remotes, by (backup id, remote name). Added after the first format: a
/// journal may lack the table.
pub(crate) const COPIES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("lifeboat_copies");

/// Copies a remote's retention deleted, by (backup id, remote name), with when (Unix ms): the
/// backup is not pending there again. Added after the first format: a journal may lack the table.
pub(crate) const COPIES_PRUNED: TableDefinition<(u64, &str), i64> = TableDefinition::new("lifeboat_copies_pruned");

/// Where a catalog entry comes from: a run of this journal, or an archive made under another.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Run,
    Imported,
}

const MAGIC_KEY: &str = "magic";
const FORMAT_KEY: &str = "format";
const SETTINGS_KEY: &str = "settings";

/// redb's cache is an upper bound, not an allocation; a journal is small.
const CACHE_BYTES: usize = 16 << 20;

/// One project's journal: append-only run events, the backup catalog and the settings, in one
/// redb file. See the crate docs for the layout and the durability argument.
///
/// A `Journal` holds redb's exclusive file lock for as long as it lives. All methods take `&self`;
/// redb serialises write transactions, so the type may be shared between threads.
///
/// After any write method returns an error, the in-memory state of redb may be poisoned (redb
/// answers later calls with "previous I/O error"): drop the journal and open it again, which
/// reads back exactly what became durable.
pub struct Journal {
    pub(crate) db: Database,
    pub(crate) path: String,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish_non_exhaustive()
    }
}

fn builder() -> Builder {
    let mut builder = Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

impl Journal {
    /// Opens the journal at `path`, creating it (with its meta table) if the file is missing or
    /// empty. The parent directory must exist.
    ///
    /// Refuses, with a [`JournalError`] that names the file: a file that is not a lifeboat journal
    /// ([`JournalError::NotAJournal`]), a newer journal format ([`JournalError::NewerFormat`]), a
    /// journal another process has open ([`JournalError::AlreadyOpen`]), and a file this user may
    /// not write ([`JournalError::PermissionDenied`]).
    ///
    /// A journal that was not closed cleanly (a crash) is repaired by redb while opening: it falls
    /// back to the last commit whose checksums verify, which holds every event whose append
    /// returned `Ok`.
    pub fn open(path: impl AsRef<Path>) -> Result<Journal, JournalError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        contain(&name, || {
            let db = builder().create(path).map_err(|e| open_error(&name, e))?;
            Journal::init(db, name.clone())
        })
    }

    /// Opens (or creates) a journal on any redb storage backend. This is the storage seam the
    /// crash-consistency tests use; `name` stands for the file name in error messages.
    pub fn open_with_backend(backend: impl StorageBackend, name: &str) -> Result<Journal, JournalError> {
        contain(name, || {
            let db = builder().create_with_backend(backend).map_err(|e| open_error(name, e))?;
            Journal::init(db, name.to_owned())
        })
    }

    /// The file name (or backend name) used in messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Checks the meta table of an opened database, or lays out a new journal in an empty one.
    fn init(db: Database, path: String) -> Result<Journal, JournalError> {
        let journal = Journal { db, path };
        let txn = journal.read()?;
        let has_meta = txn.list_tables().map_err(|e| journal.storage(e))?.any(|t| t.name() == META.name());
        if has_meta {
            journal.check_meta(&txn)?;
            return Ok(journal);
        }
        let other_tables = txn.list_tables().map_err(|e| journal.storage(e))?.count()
            + txn.list_multimap_tables().map_err(|e| journal.storage(e))?.count();
        drop(txn);
        if other_tables > 0 {
            return Err(journal.not_a_journal("a redb database without lifeboat's meta table"));
        }
        // An empty redb database: new, or a creation that crashed before this transaction
        // committed. Either way nothing is lost by laying out the journal in it.
        let txn = journal.write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| journal.storage(e))?;
            meta.insert(MAGIC_KEY, MAGIC).map_err(|e| journal.storage(e))?;
            meta.insert(FORMAT_KEY, FORMAT_VERSION.to_le_bytes().as_slice()).map_err(|e| journal.storage(e))?;
            txn.open_table(RUNS).map_err(|e| journal.storage(e))?;
            txn.open_table(EVENTS).map_err(|e| journal.storage(e))?;
            txn.open_table(BACKUPS).map_err(|e| journal.storage(e))?;
            txn.open_table(SETTINGS).map_err(|e| journal.storage(e))?;
        }
        journal.commit(txn)?;
        Ok(journal)
    }

    fn check_meta(&self, txn: &ReadTransaction) -> Result<(), JournalError> {
        let meta = txn.open_table(META).map_err(|e| self.storage(e))?;
        let magic = meta.get(MAGIC_KEY).map_err(|e| self.storage(e))?;
        if magic.as_ref().map(|m| m.value()) != Some(MAGIC) {
            return Err(self.not_a_journal("its meta table lacks lifeboat's magic string"));
        }
        let format = meta.get(FORMAT_KEY).map_err(|e| self.storage(e))?;
        let format = format
            .and_then(|f| <[u8; 4]>::try_from(f.value()).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| self.not_a_journal("its meta table has no readable format version"))?;
        if format > FORMAT_VERSION {
            return Err(JournalError::NewerFormat { path: self.path.clone(), expected: FORMAT_VERSION, found: format });
        }
        if format != FORMAT_VERSION {
            return Err(self.not_a_journal(&format!("unknown journal format {format}")));
        }
        Ok(())
    }

    // ---- runs and events ----

    /// Starts a run: allocates the next run id (one more than the largest ever allocated; ids
    /// start at 1 and are never reused) and appends `started` as its event 0, in one transaction.
    ///
    /// Durability is that of [`Journal::append`]: on `Ok` the run and its first event are durable;
    /// on an error they may or may not be, so reopen the journal and look before starting another
    /// run for the same purpose.
    pub fn begin_run(&self, started: &Event) -> Result<RunId, JournalError> {
        self.begin_run_with(|_| started.clone()).map(|(id, _)| id)
    }

    /// [`Journal::begin_run`] for a run whose `started` event names its own id (a backup's archive
    /// is named after the run): `started` receives the id this transaction allocates, so the name
    /// and the id cannot disagree. Returns the id and the event as journaled.
    pub fn begin_run_with(&self, started: impl FnOnce(RunId) -> Event) -> Result<(RunId, Event), JournalError> {
        self.contain(|| {
            let txn = self.write()?;
            let (id, event) = {
                let mut runs = txn.open_table(RUNS).map_err(|e| self.storage(e))?;
                let last_run = runs.last().map_err(|e| self.storage(e))?.map_or(0, |(k, _)| k.value());
                // Imported backups' ids are taken too (see `IMPORTED`).
                let imported = txn.open_table(IMPORTED).map_err(|e| self.storage(e))?;
                let last_imported = imported.last().map_err(|e| self.storage(e))?.map_or(0, |(k, _)| k.value());
                let last = last_run.max(last_imported);
                let id = last.checked_add(1).ok_or_else(|| JournalError::IdsExhausted { path: self.path.clone() })?;
                let event = started(id);
                if event.started_spec().is_none() {
                    return Err(JournalError::WrongEvent("a run must begin with a 'started' event"));
                }
                let bytes =
                    encode_event(&event).map_err(|source| JournalError::Encode { path: self.path.clone(), source })?;
                let mut events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
                if events.range((id, 0)..=(id, u64::MAX)).map_err(|e| self.storage(e))?.next().is_some() {
                    return Err(self.inconsistent(format!("events of run {id} exist, but the run does not")));
                }
                runs.insert(id, 1).map_err(|e| self.storage(e))?;
                events.insert((id, 0), bytes.as_slice()).map_err(|e| self.storage(e))?;
                (id, event)
            };
            self.commit(txn)?;
            Ok((id, event))
        })
    }

    /// Appends `event` to run `run` and returns its sequence number (the `started` event is 0).
    ///
    /// **When the event is durable.** The event is written in its own redb transaction committed
    /// with [`Durability::Immediate`]: when `append` returns `Ok`, redb has fsynced the commit and
    /// the event survives a crash or power loss (assuming the medium keeps what was fsynced).
    /// Only then may the caller carry out the effect an `Intent` announces.
    ///
    /// **What an error means.** An error before the commit (unknown run, encoding, a read error)
    /// leaves the journal unchanged. An error from the commit itself
    /// ([`JournalError::Commit`]) does *not* mean the event was not written: the commit record may
    /// have reached the medium before the failing fsync reported. Do not assume either way: drop
    /// the journal, reopen it, and read the run back ([`Journal::events`]) to learn whether the
    /// event is there. Never append the "same" event again without looking: that would journal it
    /// twice.
    pub fn append(&self, run: RunId, event: &Event) -> Result<u64, JournalError> {
        self.contain(|| {
            if event.started_spec().is_some() {
                return Err(JournalError::WrongEvent("a 'started' event can only begin a run (use begin_run)"));
            }
            let bytes =
                encode_event(event).map_err(|source| JournalError::Encode { path: self.path.clone(), source })?;
            let txn = self.write()?;
            let seq = {
                let mut runs = txn.open_table(RUNS).map_err(|e| self.storage(e))?;
                let seq = runs
                    .get(run)
                    .map_err(|e| self.storage(e))?
                    .map(|count| count.value())
                    .ok_or_else(|| JournalError::UnknownRun { path: self.path.clone(), run })?;
                let mut events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
                if events.insert((run, seq), bytes.as_slice()).map_err(|e| self.storage(e))?.is_some() {
                    // Dropping the transaction aborts it: nothing was overwritten.
                    return Err(
                        self.inconsistent(format!("run {run} already has an event {seq} beyond its recorded count"))
                    );
                }
                runs.insert(run, seq + 1).map_err(|e| self.storage(e))?;
                seq
            };
            self.commit(txn)?;
            Ok(seq)
        })
    }

    /// The events of run `run`, in order. Errors if the run is unknown, if a record is
    /// undecodable, or if the stored sequence has a gap: a damaged run is never returned as a
    /// shorter, plausible one.
    pub fn events(&self, run: RunId) -> Result<Vec<Event>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let runs = txn.open_table(RUNS).map_err(|e| self.storage(e))?;
            let count = runs
                .get(run)
                .map_err(|e| self.storage(e))?
                .map(|count| count.value())
                .ok_or_else(|| JournalError::UnknownRun { path: self.path.clone(), run })?;
            let table = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
            let mut events = Vec::new();
            for (expected, item) in (0u64..).zip(table.range((run, 0)..=(run, u64::MAX)).map_err(|e| self.storage(e))?)
            {
                let (key, value) = item.map_err(|e| self.storage(e))?;
                let (_, seq) = key.value();
                if seq != expected {
                    return Err(
                        self.inconsistent(format!("run {run} has event {seq} where event {expected} should be"))
                    );
                }
                events.push(decode_event(value.value()).map_err(|source| self.undecodable(run, seq, source))?);
            }
            if events.len() as u64 != count {
                return Err(
                    self.inconsistent(format!("run {run} should have {count} events, but has {}", events.len()))
                );
            }
            Ok(events)
        })
    }

    /// Every run id, ascending.
    pub fn runs(&self) -> Result<Vec<RunId>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let runs = txn.open_table(RUNS).map_err(|e| self.storage(e))?;
            let mut ids = Vec::new();
            for item in runs.iter().map_err(|e| self.storage(e))? {
                ids.push(item.map_err(|e| self.storage(e))?.0.value());
            }
            Ok(ids)
        })
    }

    /// The largest run id allocated so far, or `None` in a new journal.
    pub fn last_run_id(&self) -> Result<Option<RunId>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let runs = txn.open_table(RUNS).map_err(|e| self.storage(e))?;
            Ok(runs.last().map_err(|e| self.storage(e))?.map(|(k, _)| k.value()))
        })
    }

    /// The runs that have not ended, ascending: each run is replayed with
    /// [`lifeboat_machine::replay`]. A run whose events do not replay is an error
    /// ([`JournalError::Replay`]), not a silently skipped run.
    pub fn interrupted_runs(&self) -> Result<Vec<RunId>, JournalError> {
        self.contain(|| {
            let mut interrupted = Vec::new();
            for run in self.runs()? {
                let events = self.events(run)?;
                let replayed = replay(run, &events).map_err(|e| JournalError::Replay {
                    path: self.path.clone(),
                    run,
                    index: e.index,
                    error: e.error,
                })?;
                if !replayed.is_ended() {
                    interrupted.push(run);
                }
            }
            Ok(interrupted)
        })
    }

    // ---- the backup catalog ----

    /// Inserts a catalog entry, durably (as [`Journal::append`]). Idempotent: inserting an entry
    /// equal to the one already under its id is `Ok(false)`; a different entry under the same id
    /// is [`JournalError::BackupConflict`] and changes nothing. `Ok(true)` means newly inserted.
    ///
    /// The entry's `id` must equal its `run_id`, and the run must be in the journal.
    pub fn record_backup(&self, entry: &BackupEntry) -> Result<bool, JournalError> {
        self.record_backup_with(entry, None)
    }

    /// [`Journal::record_backup`], with what the archive holds beyond the entry, in the same
    /// transaction. Recording the same entry again keeps the details first recorded.
    pub fn record_backup_with(
        &self,
        entry: &BackupEntry,
        details: Option<&ArchiveDetails>,
    ) -> Result<bool, JournalError> {
        self.insert_backup(entry, details, Origin::Run)
    }

    /// Catalogs a backup made under another journal (its archive's manifest gives the entry),
    /// durably, and reserves its id for good. Idempotent: an entry equal to the one already under
    /// its id is `Ok(false)`. An id this journal already uses for another backup or for one of its
    /// own runs is [`JournalError::BackupConflict`], and nothing changes.
    pub fn import_backup(&self, entry: &BackupEntry, details: Option<&ArchiveDetails>) -> Result<bool, JournalError> {
        self.insert_backup(entry, details, Origin::Imported)
    }

    /// The one insert of a catalog entry: an equal entry already there is `Ok(false)`, another
    /// one a conflict; a run's backup needs its run in the journal, an imported one an id no run
    /// of this journal holds.
    fn insert_backup(
        &self,
        entry: &BackupEntry,
        details: Option<&ArchiveDetails>,
        origin: Origin,
    ) -> Result<bool, JournalError> {
        self.contain(|| {
            if entry.id != entry.run_id {
                return Err(JournalError::BackupIdMismatch { id: entry.id, run_id: entry.run_id });
            }
            let bytes =
                codec::encode(entry).map_err(|source| JournalError::Encode { path: self.path.clone(), source })?;
            let txn = self.write()?;
            {
                let mut backups = txn.open_table(BACKUPS).map_err(|e| self.storage(e))?;
                if let Some(existing) = backups.get(entry.id).map_err(|e| self.storage(e))? {
                    let existing: BackupEntry =
                        codec::decode(existing.value()).map_err(|source| JournalError::Undecodable {
                            path: self.path.clone(),
                            what: format!("backup {}", entry.id),
                            source,
                        })?;
                    return if &existing == entry {
                        Ok(false)
                    } else {
                        Err(JournalError::BackupConflict { path: self.path.clone(), id: entry.id })
                    };
                }
                let runs = txn.open_table(RUNS).map_err(|e| self.storage(e))?;
                let has_run = runs.get(entry.run_id).map_err(|e| self.storage(e))?.is_some();
                match origin {
                    Origin::Run if !has_run => {
                        return Err(JournalError::UnknownRun { path: self.path.clone(), run: entry.run_id });
                    }
                    Origin::Imported if has_run => {
                        return Err(JournalError::BackupConflict { path: self.path.clone(), id: entry.id });
                    }
                    _ => {}
                }
                backups.insert(entry.id, bytes.as_slice()).map_err(|e| self.storage(e))?;
                if let Some(details) = details {
                    let bytes = codec::encode(details)
                        .map_err(|source| JournalError::Encode { path: self.path.clone(), source })?;
                    let mut table = txn.open_table(BACKUP_DETAILS).map_err(|e| self.storage(e))?;
                    table.insert(entry.id, bytes.as_slice()).map_err(|e| self.storage(e))?;
                }
                if origin == Origin::Imported {
                    let mut imported = txn.open_table(IMPORTED).map_err(|e| self.storage(e))?;
                    imported.insert(entry.id, entry.path.as_bytes()).map_err(|e| self.storage(e))?;
                }
            }
            self.commit(txn)?;
            Ok(true)
        })
    }

    /// Whether backup `id` was imported rather than made by a run of this journal.
    pub fn is_imported(&self, id: u64) -> Result<bool, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            match txn.open_table(IMPORTED) {
                Ok(table) => Ok(table.get(id).map_err(|e| self.storage(e))?.is_some()),
                Err(TableError::TableDoesNotExist(_)) => Ok(false),
                Err(e) => Err(self.storage(e)),
            }
        })
    }

    /// The catalog entry with this id, if any.
    pub fn backup(&self, id: u64) -> Result<Option<BackupEntry>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let backups = txn.open_table(BACKUPS).map_err(|e| self.storage(e))?;
            let Some(bytes) = backups.get(id).map_err(|e| self.storage(e))? else {
                return Ok(None);
            };
            codec::decode(bytes.value()).map(Some).map_err(|source| JournalError::Undecodable {
                path: self.path.clone(),
                what: format!("backup {id}"),
                source,
            })
        })
    }

    /// What the archive of backup `id` holds beyond its catalog entry; `None` when it was recorded
    /// before lifeboat kept such details (or there is no such backup).
    pub fn backup_details(&self, id: u64) -> Result<Option<ArchiveDetails>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let table = match txn.open_table(BACKUP_DETAILS) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(self.storage(e)),
            };
            let Some(bytes) = table.get(id).map_err(|e| self.storage(e))? else {
                return Ok(None);
            };
            codec::decode(bytes.value()).map(Some).map_err(|source| JournalError::Undecodable {
                path: self.path.clone(),
                what: format!("details of backup {id}"),
                source,
            })
        })
    }

    /// Every catalog entry, by ascending id.
    pub fn backups(&self) -> Result<Vec<BackupEntry>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let backups = txn.open_table(BACKUPS).map_err(|e| self.storage(e))?;
            let mut entries = Vec::new();
            for item in backups.iter().map_err(|e| self.storage(e))? {
                let (id, bytes) = item.map_err(|e| self.storage(e))?;
                entries.push(codec::decode(bytes.value()).map_err(|source| JournalError::Undecodable {
                    path: self.path.clone(),
                    what: format!("backup {}", id.value()),
                    source,
                })?);
            }
            Ok(entries)
        })
    }

    /// Removes a catalog entry, durably. `Ok(false)` if there was none. Only the entry goes: the
    /// run that made the backup, and its events, stay.
    pub fn remove_backup(&self, id: u64) -> Result<bool, JournalError> {
        self.contain(|| {
            let txn = self.write()?;
            let removed = {
                let mut backups = txn.open_table(BACKUPS).map_err(|e| self.storage(e))?;
                let mut details = txn.open_table(BACKUP_DETAILS).map_err(|e| self.storage(e))?;
                details.remove(id).map_err(|e| self.storage(e))?;
                backups.remove(id).map_err(|e| self.storage(e))?.is_some()
            };
            self.commit(txn)?;
            Ok(removed)
        })
    }

    // ---- copies on remotes ----

    /// Catalogs a copy of a backup on a remote, durably (as [`Journal::append`]). Idempotent: an
    /// entry equal to the one already under (backup, remote) is `Ok(false)`; a different one is
    /// [`JournalError::CopyConflict`] and changes nothing. `Ok(true)` means newly inserted. The
    /// backup must be in the catalog ([`JournalError::UnknownBackup`]) and the shipping run in
    /// the journal ([`JournalError::UnknownRun`]); either refusal changes nothing.
    pub fn record_copy(&self, entry: &CopyEntry) -> Result<bool, JournalError> {
        self.insert_copy(entry, Origin::Run)
    }

    /// Catalogs a copy found on a remote (`lifeboat import --remote`) of a backup imported from
    /// the same remote's manifest: as [`Journal::record_copy`], with `entry.run_id` the imported
    /// backup's id, since no run of this journal shipped it. A copy already catalogued for the
    /// same object (key and size: a shipping run's row has more facts than a manifest gives) is
    /// `Ok(false)`.
    pub fn import_copy(&self, entry: &CopyEntry) -> Result<bool, JournalError> {
        if entry.run_id != entry.backup_id || !self.is_imported(entry.backup_id)? {
            return Err(JournalError::UnknownRun { path: self.path.clone(), run: entry.run_id });
        }
        self.insert_copy(entry, Origin::Imported)
    }

    /// The one insert of a copy row: the same copy already there is `Ok(false)`, another one a
    /// conflict; a shipped copy needs its backup catalogued and its run in the journal.
    fn insert_copy(&self, entry: &CopyEntry, origin: Origin) -> Result<bool, JournalError> {
        self.contain(|| {
            let bytes =
                codec::encode(entry).map_err(|source| JournalError::Encode { path: self.path.clone(), source })?;
            let txn = self.write()?;
            {
                let mut copies = txn.open_table(COPIES).map_err(|e| self.storage(e))?;
                if let Some(existing) =
                    copies.get((entry.backup_id, entry.remote.as_str())).map_err(|e| self.storage(e))?
                {
                    let existing: CopyEntry = self.decode_copy(existing.value(), entry.backup_id, &entry.remote)?;
                    let same = match origin {
                        Origin::Run => &existing == entry,
                        Origin::Imported => existing.key == entry.key && existing.stored_bytes == entry.stored_bytes,
                    };
                    return if same {
                        Ok(false)
                    } else {
                        Err(JournalError::CopyConflict {
                            path: self.path.clone(),
                            backup_id: entry.backup_id,
                            remote: entry.remote.clone(),
                        })
                    };
                }
                if origin == Origin::Run {
                    let backups = txn.open_table(BACKUPS).map_err(|e| self.storage(e))?;
                    if backups.get(entry.backup_id).map_err(|e| self.storage(e))?.is_none() {
                        return Err(JournalError::UnknownBackup {
                            path: self.path.clone(),
                            backup_id: entry.backup_id,
                        });
                    }
                    let runs = txn.open_table(RUNS).map_err(|e| self.storage(e))?;
                    if runs.get(entry.run_id).map_err(|e| self.storage(e))?.is_none() {
                        return Err(JournalError::UnknownRun { path: self.path.clone(), run: entry.run_id });
                    }
                }
                copies
                    .insert((entry.backup_id, entry.remote.as_str()), bytes.as_slice())
                    .map_err(|e| self.storage(e))?;
            }
            self.commit(txn)?;
            Ok(true)
        })
    }

    /// The copy of backup `backup_id` on `remote`, if one is catalogued. Reads that one record:
    /// another copy's damaged record does not make it fail.
    pub fn copy(&self, backup_id: u64, remote: &str) -> Result<Option<CopyEntry>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let table = match txn.open_table(COPIES) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(self.storage(e)),
            };
            let Some(bytes) = table.get((backup_id, remote)).map_err(|e| self.storage(e))? else {
                return Ok(None);
            };
            self.decode_copy(bytes.value(), backup_id, remote).map(Some)
        })
    }

    /// Every catalogued copy, by ascending backup id, then remote name.
    pub fn copies(&self) -> Result<Vec<CopyEntry>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let table = match txn.open_table(COPIES) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(self.storage(e)),
            };
            let mut entries = Vec::new();
            for item in table.iter().map_err(|e| self.storage(e))? {
                let (key, bytes) = item.map_err(|e| self.storage(e))?;
                let (backup_id, remote) = key.value();
                entries.push(self.decode_copy(bytes.value(), backup_id, remote)?);
            }
            Ok(entries)
        })
    }

    /// Removes the copy of `backup_id` on `remote` from the catalog, durably; with `run`, only if
    /// that run catalogued it (a shipping run undoing its own record never removes another's).
    /// `Ok(false)` if nothing was removed. Only the entry goes: the object on the remote is the
    /// caller's to delete, after this returns (`Effect::DeleteCopy`).
    pub fn remove_copy(&self, backup_id: u64, remote: &str, run: Option<RunId>) -> Result<bool, JournalError> {
        self.contain(|| {
            let txn = self.write()?;
            let removed = {
                let mut copies = txn.open_table(COPIES).map_err(|e| self.storage(e))?;
                let owner = match copies.get((backup_id, remote)).map_err(|e| self.storage(e))? {
                    Some(bytes) => Some(self.decode_copy(bytes.value(), backup_id, remote)?.run_id),
                    None => None,
                };
                match owner {
                    Some(owner) if run.is_none_or(|run| run == owner) => {
                        copies.remove((backup_id, remote)).map_err(|e| self.storage(e))?;
                        true
                    }
                    _ => false,
                }
            };
            self.commit(txn)?;
            Ok(removed)
        })
    }

    /// Removes the copy of `backup_id` on `remote` from the catalog and notes it pruned (at `at`,
    /// Unix ms), in one durable transaction, so the backup is never pending there again. A copy
    /// already pruned is `Ok(false)` and changes nothing (the first `at` stays), and so is one
    /// never catalogued (it is noted pruned all the same). Only the entry goes: the object on the
    /// remote is the caller's to delete, after this returns (`Effect::PruneCopy`). Nothing here
    /// stops a later [`Journal::record_copy`] of the pair: never shipping it again is the
    /// shipping side's rule (pending is "no row and not pruned").
    pub fn prune_copy(&self, backup_id: u64, remote: &str, at: i64) -> Result<bool, JournalError> {
        self.contain(|| {
            let txn = self.write()?;
            let removed = {
                let mut copies = txn.open_table(COPIES).map_err(|e| self.storage(e))?;
                let removed = copies.remove((backup_id, remote)).map_err(|e| self.storage(e))?.is_some();
                let mut pruned = txn.open_table(COPIES_PRUNED).map_err(|e| self.storage(e))?;
                if pruned.get((backup_id, remote)).map_err(|e| self.storage(e))?.is_none() {
                    pruned.insert((backup_id, remote), at).map_err(|e| self.storage(e))?;
                }
                removed
            };
            self.commit(txn)?;
            Ok(removed)
        })
    }

    /// Every (backup id, remote name) whose copy a remote's retention deleted, by backup id, then
    /// remote name; empty in a journal that never pruned one (it lacks the table).
    pub fn pruned_copies(&self) -> Result<Vec<(u64, String)>, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let table = match txn.open_table(COPIES_PRUNED) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(self.storage(e)),
            };
            let mut pruned = Vec::new();
            for item in table.iter().map_err(|e| self.storage(e))? {
                let (key, _) = item.map_err(|e| self.storage(e))?;
                let (backup_id, remote) = key.value();
                pruned.push((backup_id, remote.to_owned()));
            }
            Ok(pruned)
        })
    }

    fn decode_copy(&self, bytes: &[u8], backup_id: u64, remote: &str) -> Result<CopyEntry, JournalError> {
        codec::decode(bytes).map_err(|source| JournalError::Undecodable {
            path: self.path.clone(),
            what: format!("the copy of backup {backup_id} on remote {remote}"),
            source,
        })
    }

    // ---- settings ----

    /// The settings; the defaults when none were ever written.
    pub fn settings(&self) -> Result<Settings, JournalError> {
        self.contain(|| {
            let txn = self.read()?;
            let table = txn.open_table(SETTINGS).map_err(|e| self.storage(e))?;
            let stored = table.get(SETTINGS_KEY).map_err(|e| self.storage(e))?;
            self.decode_settings(stored.as_ref().map(|s| s.value()))
        })
    }

    /// Reads the settings, lets `change` modify them, and writes them back, all in one durable
    /// transaction. Returns the settings as written.
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) -> Result<Settings, JournalError> {
        // The caller's closure runs outside `contain`: a panic of its own is not a damaged file.
        let (txn, mut settings) = self.contain(|| {
            let txn = self.write()?;
            let settings = {
                let table = txn.open_table(SETTINGS).map_err(|e| self.storage(e))?;
                let stored = table.get(SETTINGS_KEY).map_err(|e| self.storage(e))?;
                self.decode_settings(stored.as_ref().map(|s| s.value()))?
            };
            Ok((txn, settings))
        })?;
        change(&mut settings);
        self.contain(|| {
            let bytes =
                codec::encode(&settings).map_err(|source| JournalError::Encode { path: self.path.clone(), source })?;
            txn.open_table(SETTINGS)
                .map_err(|e| self.storage(e))?
                .insert(SETTINGS_KEY, bytes.as_slice())
                .map_err(|e| self.storage(e))?;
            self.commit(txn)?;
            Ok(settings)
        })
    }

    fn decode_settings(&self, bytes: Option<&[u8]>) -> Result<Settings, JournalError> {
        let Some(bytes) = bytes else {
            return Ok(Settings::default());
        };
        codec::decode(bytes).map_err(|source| JournalError::Undecodable {
            path: self.path.clone(),
            what: "the settings record".into(),
            source,
        })
    }

    // ---- transactions and errors ----

    /// Runs `f`, turning a panic inside redb into [`JournalError::Damaged`]. See [`contain`].
    pub(crate) fn contain<T>(&self, f: impl FnOnce() -> Result<T, JournalError>) -> Result<T, JournalError> {
        contain(&self.path, f)
    }

    pub(crate) fn read(&self) -> Result<ReadTransaction, JournalError> {
        self.db.begin_read().map_err(|e| self.storage(e))
    }

    fn write(&self) -> Result<WriteTransaction, JournalError> {
        let mut txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        // Immediate is redb 4's default; set it anyway, since the whole durability argument rests
        // on it.
        txn.set_durability(Durability::Immediate).map_err(|e| self.storage(e))?;
        Ok(txn)
    }

    fn commit(&self, txn: WriteTransaction) -> Result<(), JournalError> {
        txn.commit().map_err(|source| JournalError::Commit { path: self.path.clone(), source })
    }

    pub(crate) fn storage(&self, error: impl Into<redb::Error>) -> JournalError {
        JournalError::Storage { path: self.path.clone(), source: error.into() }
    }

    fn not_a_journal(&self, detail: &str) -> JournalError {
        JournalError::NotAJournal { path: self.path.clone(), detail: detail.to_owned() }
    }

    fn inconsistent(&self, detail: String) -> JournalError {
        JournalError::Inconsistent { path: self.path.clone(), detail }
    }

    fn undecodable(&self, run: RunId, seq: u64, source: DecodeError) -> JournalError {
        JournalError::Undecodable { path: self.path.clone(), what: format!("event {seq} of run {run}"), source }
    }
}

/// Runs `f`, turning a panic into [`JournalError::Damaged`].
///
/// redb 4.1 panics on some damaged files instead of returning an error (an assertion that the
/// file is as long as its header says, slice indexing in its allocator bitmaps: found by this
/// crate's truncation and damage tests). A damaged journal must give the operator an error, not a
/// crash, so every public method runs its redb calls inside this. Only redb and this crate's own
/// code run inside; a caller's closure never does.
pub(crate) fn contain<T>(path: &str, f: impl FnOnce() -> Result<T, JournalError>) -> Result<T, JournalError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "redb panicked".to_owned());
            Err(JournalError::Damaged { path: path.to_owned(), detail })
        }
    }
}

/// Maps redb's refusal to open a file to the journal's errors.
fn open_error(path: &str, error: DatabaseError) -> JournalError {
    let path = path.to_owned();
    match error {
        DatabaseError::DatabaseAlreadyOpen => JournalError::AlreadyOpen { path },
        DatabaseError::UpgradeRequired(version) => {
            JournalError::NotAJournal { path, detail: format!("a redb file of the old format {version}") }
        }
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == ErrorKind::PermissionDenied => {
            JournalError::PermissionDenied { path, source: io }
        }
        // redb answers a non-empty file without its magic number with InvalidData.
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == ErrorKind::InvalidData => {
            JournalError::NotAJournal { path, detail: "not a redb database file".into() }
        }
        DatabaseError::Storage(StorageError::Corrupted(detail)) => {
            JournalError::NotAJournal { path, detail: format!("a damaged database file: {detail}") }
        }
        other => JournalError::Open { path, source: other },
    }
}
