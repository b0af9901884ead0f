//! [`Journal::verify`]: a full structural check of the journal, for `lifeboat journal verify`.

use crate::codec::{self, DecodeError, decode_event};
use crate::journal::{BACKUPS, COPIES, COPIES_PRUNED, EVENTS, IMPORTED, Journal, RUNS, SETTINGS};
use crate::records::{BackupEntry, CopyEntry, Settings};
use lifeboat_machine::{MachineError, RunId, replay};
use redb::{ReadTransaction, ReadableTable};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What [`Journal::verify`] found. No problems means the journal is clean.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub runs_checked: u64,
    pub events_checked: u64,
    pub backups_checked: u64,
    /// Entries of the copies table.
    pub copies_checked: u64,
    /// Entries of the table of pruned copies (`lifeboat_copies_pruned`).
    pub pruned_copies_checked: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong with the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// redb failed (or panicked) while the check read the file; what follows was not checked.
    Storage { error: String },
    /// Run `run`'s events skip from `expected` to `found`.
    SequenceGap { run: RunId, expected: u64, found: u64 },
    /// The runs table records `recorded` events for the run, but `found` are stored.
    CountMismatch { run: RunId, recorded: u64, found: u64 },
    /// Events are stored for a run id the runs table does not have.
    OrphanEvents { run: RunId, count: u64 },
    /// An event record does not decode.
    UndecodableEvent { run: RunId, seq: u64, error: DecodeError },
    /// The run's events contradict the machine: replay rejects event `index`.
    Replay { run: RunId, index: usize, error: MachineError },
    /// A catalog record does not decode.
    UndecodableBackup { id: u64, error: DecodeError },
    /// A catalog entry stored under `id` names another id or run.
    BackupKeyMismatch { id: u64, entry_id: u64, run_id: RunId },
    /// A catalog entry whose run is not in the journal.
    BackupWithoutRun { id: u64, run_id: RunId },
    /// The settings record does not decode.
    UndecodableSettings { error: DecodeError },
    /// A copies-table record does not decode.
    UndecodableCopy { backup_id: u64, remote: String, error: DecodeError },
    /// A copy stored under (`backup_id`, `remote`) names another backup or remote.
    CopyKeyMismatch { backup_id: u64, remote: String, entry_backup_id: u64, entry_remote: String },
    /// A catalogued copy whose shipping run is not in the journal.
    CopyWithoutRun { backup_id: u64, remote: String, run_id: RunId },
    /// The table of pruned copies cannot be read as one (its key or value types are not
    /// lifeboat's); its entries were not checked.
    UnreadablePrunedCopies { error: String },
    /// A copy noted pruned that the copies table still holds: pruning removes the row and notes
    /// the pair in one transaction, so one without the other was written by something else.
    PrunedCopyCatalogued { backup_id: u64, remote: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Storage { error } => write!(f, "storage error while reading the journal: {error}"),
            Problem::SequenceGap { run, expected, found } => {
                write!(f, "run {run}: event {found} follows a gap (event {expected} is missing)")
            }
            Problem::CountMismatch { run, recorded, found } => {
                write!(f, "run {run}: {recorded} events recorded, {found} stored")
            }
            Problem::OrphanEvents { run, count } => {
                write!(f, "{count} events stored for run {run}, which does not exist")
            }
            Problem::UndecodableEvent { run, seq, error } => {
                write!(f, "run {run}: event {seq} is undecodable: {error}")
            }
            Problem::Replay { run, index, error } => {
                write!(f, "run {run}: event {index} contradicts the machine: {error}")
            }
            Problem::UndecodableBackup { id, error } => write!(f, "backup {id}: undecodable catalog entry: {error}"),
            Problem::BackupKeyMismatch { id, entry_id, run_id } => {
                write!(f, "backup {id}: the entry stored under it names id {entry_id} and run {run_id}")
            }
            Problem::BackupWithoutRun { id, run_id } => {
                write!(f, "backup {id}: its run {run_id} is not in the journal")
            }
            Problem::UndecodableSettings { error } => write!(f, "the settings record is undecodable: {error}"),
            Problem::UndecodableCopy { backup_id, remote, error } => {
                write!(f, "the copy of backup {backup_id} on remote {remote}: undecodable entry: {error}")
            }
            Problem::CopyKeyMismatch { backup_id, remote, entry_backup_id, entry_remote } => write!(
                f,
                "the copy of backup {backup_id} on remote {remote}: the entry stored under it names backup \
                 {entry_backup_id} on remote {entry_remote}"
            ),
            Problem::CopyWithoutRun { backup_id, remote, run_id } => {
                write!(f, "the copy of backup {backup_id} on remote {remote}: its run {run_id} is not in the journal")
            }
            Problem::UnreadablePrunedCopies { error } => {
                write!(f, "the table of pruned copies is unreadable: {error}")
            }
            Problem::PrunedCopyCatalogued { backup_id, remote } => {
                write!(f, "the copy of backup {backup_id} on remote {remote} is noted pruned, yet still catalogued")
            }
        }
    }
}

impl Journal {
    /// Checks the whole journal: every run's sequence is contiguous from 0 and matches its
    /// recorded count, every record decodes, every run replays through the machine, every
    /// catalog entry is keyed by its own id and names an existing run (or was imported), every
    /// catalogued copy is keyed by its own backup and remote and names an existing run (its
    /// backup may be gone: a copy outlives the local backup's pruning), no copy noted pruned is
    /// still catalogued, and the settings decode.
    ///
    /// Never panics and never fails: a storage error (or a panic inside redb on a damaged file)
    /// is itself reported as a [`Problem`], after which the rest of the file is not checked.
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        let outcome = self.contain(|| {
            let txn = self.read()?;
            self.verify_in(&txn, &mut report).map_err(|e| self.storage(e))
        });
        if let Err(error) = outcome {
            report.problems.push(Problem::Storage { error: error.to_string() });
        }
        report
    }

    fn verify_in(&self, txn: &ReadTransaction, report: &mut VerifyReport) -> Result<(), redb::Error> {
        let runs_table = txn.open_table(RUNS)?;
        let mut runs: BTreeMap<RunId, u64> = BTreeMap::new();
        for item in runs_table.iter()? {
            let (id, count) = item?;
            runs.insert(id.value(), count.value());
        }
        report.runs_checked = runs.len() as u64;

        // One pass over all events, grouped by run (keys are sorted by run, then seq).
        let events_table = txn.open_table(EVENTS)?;
        let mut current: Option<RunCheck> = None;
        let mut with_events = BTreeSet::new();
        for item in events_table.iter()? {
            let (key, value) = item?;
            let (run, seq) = key.value();
            report.events_checked += 1;
            if current.as_ref().is_none_or(|c| c.run != run) {
                if let Some(done) = current.take() {
                    done.finish(&runs, report);
                }
                current = Some(RunCheck::new(run));
                with_events.insert(run);
            }
            let check = current.as_mut().expect("set just above");
            check.push(seq, value.value(), report);
        }
        if let Some(done) = current.take() {
            done.finish(&runs, report);
        }
        // Runs with a recorded count but no events at all.
        for (&run, &recorded) in &runs {
            if !with_events.contains(&run) {
                report.problems.push(Problem::CountMismatch { run, recorded, found: 0 });
            }
        }

        // Imported backups were made by runs of another journal (`Journal::import_backup`).
        let mut imported = BTreeSet::new();
        match txn.open_table(IMPORTED) {
            Ok(table) => {
                for item in table.iter()? {
                    imported.insert(item?.0.value());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let backups = txn.open_table(BACKUPS)?;
        for item in backups.iter()? {
            let (id, bytes) = item?;
            let id = id.value();
            report.backups_checked += 1;
            match codec::decode::<BackupEntry>(bytes.value()) {
                Err(error) => report.problems.push(Problem::UndecodableBackup { id, error }),
                Ok(entry) => {
                    if entry.id != id || entry.run_id != id {
                        report.problems.push(Problem::BackupKeyMismatch {
                            id,
                            entry_id: entry.id,
                            run_id: entry.run_id,
                        });
                    }
                    if !runs.contains_key(&entry.run_id) && !imported.contains(&entry.run_id) {
                        report.problems.push(Problem::BackupWithoutRun { id, run_id: entry.run_id });
                    }
                }
            }
        }

        // Copies: a journal written before them has no table.
        let mut catalogued = BTreeSet::new();
        match txn.open_table(COPIES) {
            Ok(table) => {
                for item in table.iter()? {
                    let (key, bytes) = item?;
                    let (backup_id, remote) = key.value();
                    report.copies_checked += 1;
                    let remote = remote.to_owned();
                    catalogued.insert((backup_id, remote.clone()));
                    match codec::decode::<CopyEntry>(bytes.value()) {
                        Err(error) => report.problems.push(Problem::UndecodableCopy { backup_id, remote, error }),
                        Ok(entry) => {
                            if entry.backup_id != backup_id || entry.remote != remote {
                                report.problems.push(Problem::CopyKeyMismatch {
                                    backup_id,
                                    remote: remote.clone(),
                                    entry_backup_id: entry.backup_id,
                                    entry_remote: entry.remote,
                                });
                            }
                            // A copy imported from a remote's manifest names its imported backup.
                            if !runs.contains_key(&entry.run_id) && !imported.contains(&entry.run_id) {
                                report.problems.push(Problem::CopyWithoutRun {
                                    backup_id,
                                    remote,
                                    run_id: entry.run_id,
                                });
                            }
                        }
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }

        // Pruned copies: a journal that never pruned one has no table. Its values are plain
        // timestamps; what can be wrong is the table's types, or a pair that still has its row.
        match txn.open_table(COPIES_PRUNED) {
            Ok(table) => {
                for item in table.iter()? {
                    let (key, _) = item?;
                    let (backup_id, remote) = key.value();
                    report.pruned_copies_checked += 1;
                    let remote = remote.to_owned();
                    if catalogued.contains(&(backup_id, remote.clone())) {
                        report.problems.push(Problem::PrunedCopyCatalogued { backup_id, remote });
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(redb::TableError::Storage(e)) => return Err(e.into()),
            Err(e) => report.problems.push(Problem::UnreadablePrunedCopies { error: e.to_string() }),
        }

        let settings = txn.open_table(SETTINGS)?;
        for item in settings.iter()? {
            let (_, bytes) = item?;
            if let Err(error) = codec::decode::<Settings>(bytes.value()) {
                report.problems.push(Problem::UndecodableSettings { error });
            }
        }
        Ok(())
    }
}

/// The check of one run's events, fed in key order.
struct RunCheck {
    run: RunId,
    next_seq: u64,
    stored: u64,
    events: Vec<lifeboat_machine::Event>,
    /// Replay is only meaningful over a complete, decodable sequence.
    replayable: bool,
}

impl RunCheck {
    fn new(run: RunId) -> RunCheck {
        RunCheck { run, next_seq: 0, stored: 0, events: Vec::new(), replayable: true }
    }

    fn push(&mut self, seq: u64, bytes: &[u8], report: &mut VerifyReport) {
        self.stored += 1;
        if seq != self.next_seq {
            report.problems.push(Problem::SequenceGap { run: self.run, expected: self.next_seq, found: seq });
            self.replayable = false;
        }
        self.next_seq = seq.saturating_add(1);
        match decode_event(bytes) {
            Ok(event) => self.events.push(event),
            Err(error) => {
                report.problems.push(Problem::UndecodableEvent { run: self.run, seq, error });
                self.replayable = false;
            }
        }
    }

    fn finish(self, runs: &BTreeMap<RunId, u64>, report: &mut VerifyReport) {
        match runs.get(&self.run) {
            None => report.problems.push(Problem::OrphanEvents { run: self.run, count: self.stored }),
            Some(&recorded) if recorded != self.stored => {
                report.problems.push(Problem::CountMismatch { run: self.run, recorded, found: self.stored });
            }
            Some(_) => {}
        }
        if self.replayable
            && let Err(e) = replay(self.run, &self.events)
        {
            report.problems.push(Problem::Replay { run: self.run, index: e.index, error: e.error });
        }
    }
}
