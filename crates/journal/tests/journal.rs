//! The journal on real redb files: persistence, ids, catalog, settings, and every way opening a
//! file can be refused.

mod common;

use common::{assorted_runs, backup_run, entry, upgrade_run, write_runs};
use lifeboat_journal::{CopyEntry, FORMAT_VERSION, Journal, JournalError, Problem, Settings};
use lifeboat_machine::{CopyFacts, CopyTarget, Decision, Effect, Event, Outcome, Run, RunSpec, Timestamp};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::fs;
use std::path::{Path, PathBuf};

const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("lifeboat_events");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("lifeboat_meta");
const BACKUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("lifeboat_backups");
const COPIES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("lifeboat_copies");
const COPIES_PRUNED: TableDefinition<(u64, &str), i64> = TableDefinition::new("lifeboat_copies_pruned");

fn journal_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("journal.redb")
}

#[test]
fn reopen_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let runs = assorted_runs();
    let (ids, interrupted) = {
        let journal = Journal::open(&path).unwrap();
        let ids = write_runs(&journal, &runs);
        journal.record_backup(&entry(ids[0])).unwrap();
        journal.update_settings(|s| s.deployed_version = Some("1.4".into())).unwrap();
        (ids, journal.interrupted_runs().unwrap())
    };
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.runs().unwrap(), ids);
    for (id, events) in ids.iter().zip(&runs) {
        assert_eq!(&journal.events(*id).unwrap(), events);
    }
    assert_eq!(journal.backups().unwrap(), vec![entry(ids[0])]);
    assert_eq!(journal.settings().unwrap().deployed_version.as_deref(), Some("1.4"));
    assert_eq!(journal.interrupted_runs().unwrap(), interrupted);
    let report = journal.verify();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.runs_checked, runs.len() as u64);
    assert_eq!(report.events_checked, runs.iter().map(|r| r.len() as u64).sum::<u64>());
}

#[test]
fn ids_start_at_one_and_increase_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let started = &backup_run()[0];
    {
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.last_run_id().unwrap(), None);
        assert_eq!(journal.begin_run(started).unwrap(), 1);
        assert_eq!(journal.begin_run(started).unwrap(), 2);
    }
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.last_run_id().unwrap(), Some(2));
    assert_eq!(journal.begin_run(started).unwrap(), 3);
    assert_eq!(journal.runs().unwrap(), vec![1, 2, 3]);
}

#[test]
fn interrupted_runs_are_those_that_did_not_end() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_path(&dir)).unwrap();
    let complete = backup_run();
    let ids = write_runs(&journal, &[complete.clone(), complete[..4].to_vec(), upgrade_run(3)]);
    assert_eq!(journal.interrupted_runs().unwrap(), vec![ids[1]]);
}

#[test]
fn events_are_appended_in_sequence_and_misuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_path(&dir)).unwrap();
    let events = backup_run();
    assert!(matches!(journal.begin_run(&events[1]), Err(JournalError::WrongEvent(_))));
    let run = journal.begin_run(&events[0]).unwrap();
    assert!(matches!(journal.append(run, &events[0]), Err(JournalError::WrongEvent(_))));
    assert!(matches!(journal.append(run + 1, &events[1]), Err(JournalError::UnknownRun { run: 2, .. })));
    assert!(matches!(journal.events(99), Err(JournalError::UnknownRun { run: 99, .. })));
    assert_eq!(journal.append(run, &events[1]).unwrap(), 1);
    assert_eq!(journal.events(run).unwrap(), events[..2]);
}

#[test]
fn settings_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let wanted = Settings {
        auto_backup_enabled: true,
        cron: Some("0 2 * * *".into()),
        last_backup_at: Some(Timestamp(1_700_000_000_000)),
        last_backup_outcome: Some("completed".into()),
        deployed_version: Some("2.0".into()),
    };
    {
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.settings().unwrap(), Settings::default());
        let written = journal.update_settings(|s| *s = wanted.clone()).unwrap();
        assert_eq!(written, wanted);
        let toggled = journal.update_settings(|s| s.auto_backup_enabled = false).unwrap();
        assert!(!toggled.auto_backup_enabled);
        assert_eq!(toggled.cron, wanted.cron);
        journal.update_settings(|s| s.auto_backup_enabled = true).unwrap();
    }
    assert_eq!(Journal::open(&path).unwrap().settings().unwrap(), wanted);
}

#[test]
fn archive_details_travel_with_the_catalog_entry_and_older_entries_have_none() {
    use lifeboat_machine::{ArchiveDetails, SkippedPath};
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let journal = Journal::open(&path).unwrap();
    let ids = write_runs(&journal, &[backup_run(), backup_run()]);
    // A journal that never recorded details has no table for them: no details, no error.
    assert_eq!(journal.backup_details(ids[0]).unwrap(), None);
    let details = ArchiveDetails {
        apparent_bytes: 20 << 30,
        stored_bytes: 10 << 20,
        skipped: vec![SkippedPath { path: "paths/data/app.sock".into(), kind: "socket".into() }],
    };
    assert!(journal.record_backup(&entry(ids[0])).unwrap());
    assert!(journal.record_backup_with(&entry(ids[1]), Some(&details)).unwrap());
    drop(journal);
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.backup_details(ids[0]).unwrap(), None, "recorded without details");
    assert_eq!(journal.backup_details(ids[1]).unwrap(), Some(details));
    assert!(journal.remove_backup(ids[1]).unwrap());
    assert_eq!(journal.backup_details(ids[1]).unwrap(), None, "the details go with the entry");
    assert!(journal.verify().is_clean());
}

#[test]
fn catalog_insert_is_idempotent_and_conflicts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let journal = Journal::open(&path).unwrap();
    let ids = write_runs(&journal, &[backup_run(), backup_run(), backup_run()]);
    // Inserted out of order, listed by id.
    assert!(journal.record_backup(&entry(ids[2])).unwrap());
    assert!(journal.record_backup(&entry(ids[0])).unwrap());
    assert!(!journal.record_backup(&entry(ids[0])).unwrap(), "the same entry again is a no-op");
    let mut different = entry(ids[0]);
    different.sha256 = "00".into();
    let error = journal.record_backup(&different).unwrap_err();
    assert!(matches!(error, JournalError::BackupConflict { id: 1, .. }), "{error}");
    assert!(error.to_string().contains("already in the catalog"), "{error}");
    assert_eq!(journal.backup(ids[0]).unwrap(), Some(entry(ids[0])), "the first entry stays");
    assert_eq!(journal.backups().unwrap(), vec![entry(ids[0]), entry(ids[2])]);

    let mut mismatched = entry(ids[1]);
    mismatched.run_id = ids[2];
    assert!(matches!(journal.record_backup(&mismatched), Err(JournalError::BackupIdMismatch { .. })));
    assert!(matches!(journal.record_backup(&entry(42)), Err(JournalError::UnknownRun { run: 42, .. })));

    assert!(journal.remove_backup(ids[2]).unwrap());
    assert!(!journal.remove_backup(ids[2]).unwrap());
    assert_eq!(journal.backup(ids[2]).unwrap(), None);
    drop(journal);
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.backups().unwrap(), vec![entry(ids[0])]);
    assert_eq!(journal.runs().unwrap(), ids, "removing a backup keeps its run");
}

#[test]
fn an_empty_file_becomes_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    fs::write(&path, b"").unwrap();
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.runs().unwrap(), Vec::<u64>::new());
}

fn open_error(path: &Path) -> JournalError {
    Journal::open(path).expect_err("the file must be refused")
}

#[test]
fn random_bytes_are_not_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    // A fixed-seed xorshift stream: the same "random" file on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(&path, &bytes).unwrap();
    let error = open_error(&path);
    assert!(matches!(error, JournalError::NotAJournal { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("is not a lifeboat journal") && message.contains("journal.redb"), "{message}");
    assert_eq!(fs::read(&path).unwrap(), bytes, "a refused file is left as it was");
}

#[test]
fn a_redb_file_without_lifeboat_meta_is_not_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, u64>::new("someone_elses")).unwrap().insert("x", 1).unwrap();
        txn.commit().unwrap();
    }
    let error = open_error(&path);
    assert!(matches!(&error, JournalError::NotAJournal { detail, .. } if detail.contains("meta")), "{error:?}");

    // A meta table of the right name with someone else's magic.
    let other = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&other).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("magic", b"not lifeboat".as_slice()).unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(open_error(&other), JournalError::NotAJournal { .. }));
}

#[test]
fn a_newer_format_needs_a_manual_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    drop(Journal::open(&path).unwrap());
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", (FORMAT_VERSION + 1).to_le_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let error = open_error(&path);
    assert!(matches!(error, JournalError::NewerFormat { expected: 1, found: 2, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with("manual upgrade required: expected journal format 1, file "), "{message}");
    assert!(message.contains("is 2"), "{message}");
}

#[test]
fn a_journal_held_open_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let holder = Journal::open(&path).unwrap();
    // redb's lock is an flock on the open file description, so a second open in this same
    // process is refused exactly as one in another process would be.
    let error = open_error(&path);
    assert!(matches!(error, JournalError::AlreadyOpen { .. }), "{error:?}");
    assert!(error.to_string().contains("another lifeboat process has the journal"), "{error}");
    drop(holder);
    Journal::open(&path).expect("free again once the holder is dropped");
}

/// The child half of the permission test: runs only when the parent sets the variable.
#[test]
fn permission_denied_child() {
    let Some(path) = std::env::var_os("LIFEBOAT_TEST_UNWRITABLE_JOURNAL") else { return };
    let error = open_error(Path::new(&path));
    assert!(matches!(error, JournalError::PermissionDenied { .. }), "{error:?}");
    assert!(error.to_string().starts_with("permission denied opening the journal "), "{error}");
}

#[test]
fn a_journal_this_user_cannot_write_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    drop(Journal::open(&path).unwrap());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    if fs::metadata(&path).unwrap().uid() != 0 {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        let error = open_error(&path);
        assert!(matches!(error, JournalError::PermissionDenied { .. }), "{error:?}");
        return;
    }
    // Root may write anything: run the check as `nobody`, in a child of this test binary.
    let status = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "permission_denied_child", "--test-threads=1"])
        .env("LIFEBOAT_TEST_UNWRITABLE_JOURNAL", &path)
        .status()
        .expect("setpriv (util-linux) runs the check as an unprivileged user");
    assert!(status.success(), "the unprivileged child failed: {status}");
}

/// Truncating a real journal anywhere must give a clear error or a journal whose every run is a
/// prefix of what was written (or a clear error reading it): never a panic, never wrong events.
#[test]
fn a_truncated_journal_errs_or_recovers_but_never_lies() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let runs = assorted_runs();
    {
        let journal = Journal::open(&path).unwrap();
        write_runs(&journal, &runs);
    }
    let original = fs::read(&path).unwrap();
    let len = original.len();
    let mut cuts: Vec<usize> = vec![len / 2, 1, 9, 100, 511, 4096, 4097, len - 1, len - 4096];
    cuts.extend((1..16).map(|i| len * i / 16));
    let mut refused = 0;
    for cut in cuts {
        fs::write(&path, &original[..cut]).unwrap();
        match Journal::open(&path) {
            Err(error) => {
                refused += 1;
                let message = error.to_string();
                assert!(message.contains("journal.redb"), "cut {cut}: the error names the file: {message}");
            }
            Ok(journal) => {
                let _ = journal.verify();
                let ids = journal.runs().unwrap_or_default();
                for id in ids {
                    if let Ok(events) = journal.events(id) {
                        let written = &runs[(id - 1) as usize];
                        assert!(
                            written.starts_with(&events),
                            "cut {cut}: run {id} is not a prefix of what was written"
                        );
                    }
                }
            }
        }
    }
    assert!(refused > 0, "some truncation must be refused");
    // Half the file, a journal cut short, is refused. redb 4.1 panics on it (an assertion
    // that the file is as long as its header says), which the journal contains and reports as a
    // damaged journal; later redb 4.x releases return an error instead.
    fs::write(&path, &original[..len / 2]).unwrap();
    let error = open_error(&path);
    assert!(
        matches!(error, JournalError::Damaged { .. } | JournalError::NotAJournal { .. } | JournalError::Open { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("journal.redb"), "{error}");
}

/// Overwriting bytes anywhere in a journal must never make opening, reading or verifying panic.
/// (Silently different data is possible here: redb checks page checksums when it repairs, not
/// on every read, so a flipped byte inside a value can read back as another valid value. That is
/// the medium failing, outside the crash model; `verify` replays runs to catch what it can.)
#[test]
fn damaged_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    {
        let journal = Journal::open(&path).unwrap();
        let ids = write_runs(&journal, &assorted_runs());
        journal.record_backup(&entry(ids[0])).unwrap();
    }
    let original = fs::read(&path).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200 {
        let mut damaged = original.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() % damaged.len() as u64) as usize;
            damaged[at] ^= (next() % 255 + 1) as u8;
        }
        fs::write(&path, &damaged).unwrap();
        if let Ok(journal) = Journal::open(&path) {
            let _ = journal.verify();
            for id in journal.runs().unwrap_or_default() {
                let _ = journal.events(id);
            }
            let _ = journal.interrupted_runs();
            let _ = journal.backups();
            let _ = journal.settings();
        }
    }
}

#[test]
fn verify_reports_gaps_undecodable_records_contradictions_and_orphan_backups() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let ids = {
        let journal = Journal::open(&path).unwrap();
        let ids = write_runs(&journal, &[backup_run(), backup_run(), backup_run(), backup_run()]);
        journal.record_backup(&entry(ids[3])).unwrap();
        // An event the machine rejects: a recovery decision on a run that already ended.
        let wrong = Event::Recovering { at: Timestamp(1), decision: Decision::Resume };
        let seq = journal.append(ids[2], &wrong).unwrap();
        assert_eq!(seq, backup_run().len() as u64);
        let error = journal.interrupted_runs().unwrap_err();
        assert!(matches!(error, JournalError::Replay { run: 3, .. }), "{error:?}");
        ids
    };
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            events.remove((ids[0], 2)).unwrap();
            events.insert((ids[1], 3), [1u8, 0xFF, 0xFF].as_slice()).unwrap();
            let mut backups = txn.open_table(BACKUPS).unwrap();
            let stored = backups.get(ids[3]).unwrap().unwrap().value().to_vec();
            backups.insert(99, stored.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let journal = Journal::open(&path).unwrap();
    let problems = journal.verify().problems;
    let len = backup_run().len() as u64;
    assert!(problems.contains(&Problem::SequenceGap { run: 1, expected: 2, found: 3 }), "{problems:#?}");
    assert!(problems.contains(&Problem::CountMismatch { run: 1, recorded: len, found: len - 1 }), "{problems:#?}");
    assert!(problems.iter().any(|p| matches!(p, Problem::UndecodableEvent { run: 2, seq: 3, .. })), "{problems:#?}");
    assert!(problems.iter().any(|p| matches!(p, Problem::Replay { run: 3, index, .. } if *index as u64 == len)));
    assert!(problems.contains(&Problem::BackupKeyMismatch { id: 99, entry_id: 4, run_id: 4 }), "{problems:#?}");
    assert_eq!(problems.len(), 5, "{problems:#?}");
    for problem in &problems {
        assert!(!problem.to_string().is_empty());
    }
    // Reading a damaged run is an error, not a shorter run.
    assert!(matches!(journal.events(1), Err(JournalError::Inconsistent { .. })));
    assert!(matches!(journal.events(2), Err(JournalError::Undecodable { .. })));
    assert_eq!(journal.events(4).unwrap(), backup_run());
}

#[test]
fn verify_reports_a_backup_whose_run_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let stored = {
        let journal = Journal::open(&path).unwrap();
        let ids = write_runs(&journal, &[backup_run()]);
        journal.record_backup(&entry(ids[0])).unwrap();
        entry(ids[0])
    };
    // Rewrite the entry as one made by run 8, catalogued under 8, which never ran.
    let mut orphan = stored.clone();
    orphan.id = 8;
    orphan.run_id = 8;
    {
        let db = redb::Database::open(&path).unwrap();
        let read = db.begin_read().unwrap();
        let record = read.open_table(BACKUPS).unwrap().get(1).unwrap().unwrap().value().to_vec();
        drop(read);
        // Same record bytes with the ids patched: id and run_id are the first two varints.
        assert_eq!(&record[..3], &[1, 1, 1]);
        let mut patched = record.clone();
        patched[1] = 8;
        patched[2] = 8;
        let txn = db.begin_write().unwrap();
        txn.open_table(BACKUPS).unwrap().insert(8, patched.as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.backup(8).unwrap(), Some(orphan));
    assert_eq!(journal.verify().problems, vec![Problem::BackupWithoutRun { id: 8, run_id: 8 }]);
}

#[test]
fn imported_backups_reserve_their_ids_verify_clean_and_conflicts_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let journal = Journal::open(&path).unwrap();
    let ids = write_runs(&journal, &[backup_run()]);
    assert_eq!(ids, [1]);
    // Backups 5 and 9 come from another journal's archives.
    assert!(journal.import_backup(&entry(9), None).unwrap());
    assert!(journal.import_backup(&entry(5), None).unwrap());
    assert!(!journal.import_backup(&entry(5), None).unwrap(), "the same archive again is a no-op");
    assert!(journal.is_imported(5).unwrap() && !journal.is_imported(1).unwrap());
    let mut other = entry(5);
    other.sha256 = "00".into();
    assert!(matches!(journal.import_backup(&other, None), Err(JournalError::BackupConflict { id: 5, .. })));
    // An id one of this journal's own runs holds is not free either, catalogued or not.
    assert!(matches!(journal.import_backup(&entry(1), None), Err(JournalError::BackupConflict { id: 1, .. })));
    assert_eq!(journal.backups().unwrap(), vec![entry(5), entry(9)]);
    let report = journal.verify();
    assert!(report.is_clean(), "{:?}", report.problems);

    // The next run takes an id above every imported one, even once the import is pruned.
    assert!(journal.remove_backup(9).unwrap());
    drop(journal);
    let journal = Journal::open(&path).unwrap();
    let next = write_runs(&journal, &[backup_run()]);
    assert_eq!(next, [10]);
    assert!(journal.verify().is_clean());
}

// ---- copies on remotes ----

/// The copy of backup `backup_id` on `remote` that run `run_id` shipped.
fn copy_entry(backup_id: u64, remote: &str, run_id: u64) -> CopyEntry {
    CopyEntry {
        backup_id,
        remote: remote.into(),
        run_id,
        url: format!("s3://bucket/{remote}"),
        key: format!("lifeboat-{backup_id}.tar.gz.age"),
        shipped_at: Timestamp(1_700_000_100_000),
        stored_sha256: "5e".repeat(32),
        stored_bytes: 1434,
        archive_sha256: entry(backup_id).sha256,
        encryption: "age".into(),
    }
}

/// The events of a complete ship run of `copy`, driven through the machine.
fn ship_run(copy: &CopyEntry) -> Vec<Event> {
    let backup = entry(copy.backup_id).backup_ref();
    let target = CopyTarget { remote: copy.remote.clone(), url: copy.url.clone(), key: copy.key.clone() };
    let started = Run::start(RunSpec::Ship { backup, target }, Timestamp(1_700_000_050_000));
    let mut run = Run::from_started(1, &started).unwrap();
    let mut events = vec![started];
    let facts = CopyFacts {
        stored_sha256: copy.stored_sha256.clone(),
        stored_bytes: copy.stored_bytes,
        encryption: copy.encryption.clone(),
    };
    while let Some(effect) = run.poll_effect() {
        let at = Timestamp(1_700_000_060_000 + events.len() as i64);
        let outcome = match effect {
            Effect::BeginUpload { .. } => Outcome::UploadBegun { upload_id: "2~upload".into() },
            Effect::UploadCopy { .. } => Outcome::CopyUploaded(facts.clone()),
            _ => Outcome::Done,
        };
        for event in [run.handle_begin(at).unwrap(), Event::Outcome { at, outcome }] {
            run.apply(&event).unwrap();
            events.push(event);
        }
    }
    assert!(run.is_ended(), "the ship run ended: {:?}", run.mode());
    events
}

#[test]
fn a_journal_without_the_copies_table_has_no_copies() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    {
        let journal = Journal::open(&path).unwrap();
        let ids = write_runs(&journal, &[backup_run()]);
        journal.record_backup(&entry(ids[0])).unwrap();
    }
    // As a journal written before copies were: the table was never created.
    {
        let db = redb::Database::open(&path).unwrap();
        let names: Vec<String> =
            db.begin_read().unwrap().list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_owned()).collect();
        assert!(!names.iter().any(|n| n == "lifeboat_copies"), "{names:?}");
    }
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.copies().unwrap(), vec![]);
    assert_eq!(journal.copy(1, "offsite").unwrap(), None);
    let report = journal.verify();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.copies_checked, 0);
    // Removing from a table that is not there removes nothing.
    assert!(!journal.remove_copy(1, "offsite", None).unwrap());
}

#[test]
fn a_copy_is_recorded_once_and_a_different_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_path(&dir)).unwrap();
    let ids = write_runs(&journal, &[backup_run()]);
    journal.record_backup(&entry(ids[0])).unwrap();
    let copy = copy_entry(ids[0], "offsite", 2);
    let ship = write_runs(&journal, &[ship_run(&copy)]);
    assert_eq!(ship, [2]);
    assert!(journal.record_copy(&copy).unwrap(), "newly catalogued");
    assert!(!journal.record_copy(&copy).unwrap(), "the same entry again is a no-op");
    // Another upload of the same backup to the same remote (age makes other bytes every time).
    let mut other = copy.clone();
    other.stored_sha256 = "77".repeat(32);
    let error = journal.record_copy(&other).unwrap_err();
    assert!(
        matches!(&error, JournalError::CopyConflict { backup_id: 1, remote, .. } if remote == "offsite"),
        "{error}"
    );
    assert!(error.to_string().contains("already has a different copy"), "{error}");
    let mut later = copy.clone();
    later.shipped_at = Timestamp(copy.shipped_at.0 + 1);
    assert!(matches!(journal.record_copy(&later), Err(JournalError::CopyConflict { .. })), "any field differs");
    assert_eq!(journal.copy(ids[0], "offsite").unwrap(), Some(copy.clone()), "the first entry stays");
    assert_eq!(journal.copies().unwrap(), vec![copy]);
    // Another remote is another copy.
    let nas = copy_entry(ids[0], "nas", 2);
    assert!(journal.record_copy(&nas).unwrap());
    assert_eq!(journal.copy(ids[0], "nas").unwrap(), Some(nas));
    assert_eq!(journal.copy(ids[0], "elsewhere").unwrap(), None);
    assert_eq!(journal.copy(99, "offsite").unwrap(), None);
    let report = journal.verify();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.copies_checked, 2);
}

#[test]
fn a_copy_of_an_unknown_backup_or_by_an_unknown_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_path(&dir)).unwrap();
    let ids = write_runs(&journal, &[backup_run(), backup_run()]);
    journal.record_backup(&entry(ids[0])).unwrap();
    // Run 2 made no backup that is catalogued.
    let error = journal.record_copy(&copy_entry(ids[1], "offsite", ids[1])).unwrap_err();
    assert!(matches!(error, JournalError::UnknownBackup { backup_id: 2, .. }), "{error}");
    assert!(error.to_string().contains("not in the catalog"), "{error}");
    let error = journal.record_copy(&copy_entry(ids[0], "offsite", 42)).unwrap_err();
    assert!(matches!(error, JournalError::UnknownRun { run: 42, .. }), "{error}");
    assert_eq!(journal.copies().unwrap(), vec![]);
    // Neither refusal left a table behind that says otherwise.
    assert!(journal.verify().is_clean());
}

#[test]
fn a_run_removes_only_its_own_copy_and_without_a_run_any_copy_goes() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_path(&dir)).unwrap();
    let ids = write_runs(&journal, &[backup_run(), backup_run(), backup_run()]);
    journal.record_backup(&entry(ids[0])).unwrap();
    let copy = copy_entry(ids[0], "offsite", ids[1]);
    journal.record_copy(&copy).unwrap();
    // Run 3 undoing its own (never recorded) copy leaves run 2's.
    assert!(!journal.remove_copy(ids[0], "offsite", Some(ids[2])).unwrap());
    assert_eq!(journal.copy(ids[0], "offsite").unwrap(), Some(copy.clone()));
    // Another remote, another backup: nothing there.
    assert!(!journal.remove_copy(ids[0], "nas", None).unwrap());
    assert!(!journal.remove_copy(ids[1], "offsite", None).unwrap());
    // Its own run removes it; so does a removal that names no run (a prune of the remote).
    assert!(journal.remove_copy(ids[0], "offsite", Some(ids[1])).unwrap());
    assert!(!journal.remove_copy(ids[0], "offsite", Some(ids[1])).unwrap(), "gone already");
    journal.record_copy(&copy).unwrap();
    assert!(journal.remove_copy(ids[0], "offsite", None).unwrap());
    assert!(!journal.remove_copy(ids[0], "offsite", None).unwrap(), "gone already");
    assert_eq!(journal.copies().unwrap(), vec![]);
    // Removed copies leave their runs, and the backup.
    assert_eq!(journal.runs().unwrap(), ids);
    assert_eq!(journal.backups().unwrap(), vec![entry(ids[0])]);
}

#[test]
fn copies_survive_reopen_listed_by_backup_then_remote_and_outlive_their_local_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let wanted = {
        let journal = Journal::open(&path).unwrap();
        let ids = write_runs(&journal, &[backup_run(), backup_run()]);
        for id in &ids {
            journal.record_backup(&entry(*id)).unwrap();
        }
        let copies = [copy_entry(ids[1], "offsite", 3), copy_entry(ids[0], "offsite", 4), copy_entry(ids[0], "nas", 5)];
        for copy in &copies {
            assert_eq!(write_runs(&journal, &[ship_run(copy)]), [copy.run_id]);
            assert!(journal.record_copy(copy).unwrap());
        }
        // The local backup is pruned; its copies stay (the remote's retention is its own).
        assert!(journal.remove_backup(ids[0]).unwrap());
        vec![copies[2].clone(), copies[1].clone(), copies[0].clone()]
    };
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.copies().unwrap(), wanted);
    assert_eq!(journal.copy(1, "nas").unwrap().map(|c| c.run_id), Some(5));
    let report = journal.verify();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.runs_checked, report.copies_checked), (5, 3));
    assert_eq!(journal.interrupted_runs().unwrap(), vec![], "the ship runs ended");
}

#[test]
fn verify_reports_copies_whose_run_is_missing_or_stored_under_another_key_or_undecodable() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let record = {
        let journal = Journal::open(&path).unwrap();
        let ids = write_runs(&journal, &[backup_run()]);
        journal.record_backup(&entry(ids[0])).unwrap();
        journal.record_copy(&copy_entry(ids[0], "offsite", ids[0])).unwrap();
        drop(journal);
        let db = redb::Database::open(&path).unwrap();
        let read = db.begin_read().unwrap();
        read.open_table(COPIES).unwrap().get((1, "offsite")).unwrap().unwrap().value().to_vec()
    };
    // The same record as shipped by run 8, which never ran; under another key; and damaged.
    let orphan = copy_entry(1, "offsite", 8);
    {
        let db = redb::Database::open(&path).unwrap();
        // backup_id is the first varint, then the remote; run_id follows it.
        let mut patched = record.clone();
        let run_at = 1 + 1 + 1 + "offsite".len();
        assert_eq!(patched[run_at], 1, "the run id follows the backup id and the remote");
        patched[run_at] = 8;
        let txn = db.begin_write().unwrap();
        {
            let mut copies = txn.open_table(COPIES).unwrap();
            copies.insert((1, "offsite"), patched.as_slice()).unwrap();
            copies.insert((1, "nas"), record.as_slice()).unwrap();
            copies.insert((2, "offsite"), [1u8, 0xFF].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.copy(1, "offsite").unwrap(), Some(orphan));
    let report = journal.verify();
    assert_eq!(report.copies_checked, 3);
    let problems = report.problems;
    assert!(problems.contains(&Problem::CopyWithoutRun { backup_id: 1, remote: "offsite".into(), run_id: 8 }));
    assert!(problems.contains(&Problem::CopyKeyMismatch {
        backup_id: 1,
        remote: "nas".into(),
        entry_backup_id: 1,
        entry_remote: "offsite".into(),
    }));
    assert!(problems.iter().any(|p| matches!(p, Problem::UndecodableCopy { backup_id: 2, .. })), "{problems:#?}");
    assert_eq!(problems.len(), 3, "{problems:#?}");
    for problem in &problems {
        assert!(!problem.to_string().is_empty());
    }
    // A damaged record fails the listing and its own lookup, never another's.
    assert!(matches!(journal.copies(), Err(JournalError::Undecodable { .. })));
    assert!(matches!(journal.copy(2, "offsite"), Err(JournalError::Undecodable { .. })));
    assert_eq!(journal.copy(1, "nas").unwrap(), Some(copy_entry(1, "offsite", 1)), "stored under the wrong key");
}

// ---- copies a remote's retention pruned ----

/// When the pairs below are pruned (Unix ms).
const PRUNED_AT: i64 = 1_700_000_200_000;

/// The names of the file's tables.
fn table_names(path: &Path) -> Vec<String> {
    let db = redb::Database::open(path).unwrap();
    let read = db.begin_read().unwrap();
    read.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_owned()).collect()
}

/// When `lifeboat_copies_pruned` says (backup_id, remote) was pruned, read from the file.
fn pruned_at(path: &Path, backup_id: u64, remote: &str) -> Option<i64> {
    let db = redb::Database::open(path).unwrap();
    let read = db.begin_read().unwrap();
    read.open_table(COPIES_PRUNED).unwrap().get((backup_id, remote)).unwrap().map(|at| at.value())
}

/// A journal at `path` with backup 1 catalogued and its copies on `offsite` and `nas` (shipped,
/// for the journal's purposes, by run 1).
fn journal_with_two_copies(path: &Path) -> (CopyEntry, CopyEntry) {
    let journal = Journal::open(path).unwrap();
    let ids = write_runs(&journal, &[backup_run()]);
    journal.record_backup(&entry(ids[0])).unwrap();
    let (offsite, nas) = (copy_entry(1, "offsite", 1), copy_entry(1, "nas", 1));
    assert!(journal.record_copy(&offsite).unwrap() && journal.record_copy(&nas).unwrap());
    (offsite, nas)
}

#[test]
fn pruning_a_copy_removes_its_row_and_notes_the_pair_in_one_durable_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let (_, nas) = journal_with_two_copies(&path);
    {
        let journal = Journal::open(&path).unwrap();
        assert!(journal.prune_copy(1, "offsite", PRUNED_AT).unwrap(), "the row was there");
        assert_eq!(journal.copy(1, "offsite").unwrap(), None);
        assert_eq!(journal.copies().unwrap(), vec![nas.clone()], "the other remote's copy stays");
        assert_eq!(journal.pruned_copies().unwrap(), vec![(1, "offsite".to_owned())]);
    }
    // Both halves reached the file, with when.
    assert_eq!(pruned_at(&path, 1, "offsite"), Some(PRUNED_AT));
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.copies().unwrap(), vec![nas]);
    assert_eq!(journal.pruned_copies().unwrap(), vec![(1, "offsite".to_owned())]);
    // Only the copy goes: the local backup and the runs stay.
    assert_eq!(journal.backups().unwrap(), vec![entry(1)]);
    assert_eq!(journal.runs().unwrap(), vec![1]);
    let report = journal.verify();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.copies_checked, report.pruned_copies_checked), (1, 1));
}

#[test]
fn pruning_a_copy_twice_is_ok_false_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let (_, nas) = journal_with_two_copies(&path);
    {
        let journal = Journal::open(&path).unwrap();
        assert!(journal.prune_copy(1, "offsite", PRUNED_AT).unwrap());
        // A recovery carrying the step out again, later.
        assert!(!journal.prune_copy(1, "offsite", PRUNED_AT + 60_000).unwrap(), "pruned already");
        assert!(!journal.prune_copy(1, "offsite", PRUNED_AT + 120_000).unwrap(), "pruned already");
        assert_eq!(journal.copies().unwrap(), vec![nas.clone()]);
        assert_eq!(journal.pruned_copies().unwrap(), vec![(1, "offsite".to_owned())]);
    }
    // The first time is kept.
    assert_eq!(pruned_at(&path, 1, "offsite"), Some(PRUNED_AT));
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.copies().unwrap(), vec![nas]);
    assert_eq!(journal.pruned_copies().unwrap(), vec![(1, "offsite".to_owned())]);
    assert!(journal.verify().is_clean());
}

#[test]
fn pruning_a_copy_never_catalogued_notes_the_pair_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    {
        let journal = Journal::open(&path).unwrap();
        let ids = write_runs(&journal, &[backup_run()]);
        journal.record_backup(&entry(ids[0])).unwrap();
        // No copy anywhere (not even the copies table); nor a backup 99 in the catalog.
        assert!(!journal.prune_copy(99, "nas", PRUNED_AT).unwrap());
        assert!(!journal.prune_copy(1, "offsite", PRUNED_AT + 1).unwrap());
        assert_eq!(journal.copies().unwrap(), vec![]);
        // By backup id, then remote.
        assert_eq!(journal.pruned_copies().unwrap(), vec![(1, "offsite".to_owned()), (99, "nas".to_owned())]);
    }
    assert_eq!((pruned_at(&path, 99, "nas"), pruned_at(&path, 1, "offsite")), (Some(PRUNED_AT), Some(PRUNED_AT + 1)));
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.pruned_copies().unwrap(), vec![(1, "offsite".to_owned()), (99, "nas".to_owned())]);
    // A pair noted pruned needs neither its backup nor its row.
    let report = journal.verify();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.copies_checked, report.pruned_copies_checked), (0, 2));
}

#[test]
fn a_journal_without_the_pruned_copies_table_has_nothing_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    // A new journal, then one with copies that never pruned one (as journals written before
    // the table existed): neither has the table.
    drop(Journal::open(&path).unwrap());
    assert!(!table_names(&path).iter().any(|n| n == "lifeboat_copies_pruned"));
    assert_eq!(Journal::open(&path).unwrap().pruned_copies().unwrap(), vec![]);
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let (offsite, nas) = journal_with_two_copies(&path);
    let names = table_names(&path);
    assert!(names.iter().any(|n| n == "lifeboat_copies"), "{names:?}");
    assert!(!names.iter().any(|n| n == "lifeboat_copies_pruned"), "{names:?}");
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.pruned_copies().unwrap(), vec![]);
    assert_eq!(journal.copies().unwrap(), vec![nas, offsite]);
    let report = journal.verify();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.copies_checked, report.pruned_copies_checked), (2, 0));
}

#[test]
fn verify_reports_a_pruned_copy_still_catalogued_and_an_unreadable_pruned_copies_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    journal_with_two_copies(&path);
    // Written behind the journal's back: offsite noted pruned with its row still there, and a
    // pair pruned without a row (sound).
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut pruned = txn.open_table(COPIES_PRUNED).unwrap();
            pruned.insert((1, "offsite"), PRUNED_AT).unwrap();
            pruned.insert((2, "offsite"), PRUNED_AT).unwrap();
        }
        txn.commit().unwrap();
    }
    let report = Journal::open(&path).unwrap().verify();
    assert_eq!(report.problems, vec![Problem::PrunedCopyCatalogued { backup_id: 1, remote: "offsite".into() }]);
    assert_eq!((report.copies_checked, report.pruned_copies_checked), (2, 2));
    assert!(report.problems[0].to_string().contains("noted pruned, yet still catalogued"), "{}", report.problems[0]);

    // A table of that name with other types: reported, and the rest of the file still checked.
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    journal_with_two_copies(&path);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let other: TableDefinition<u64, &[u8]> = TableDefinition::new("lifeboat_copies_pruned");
        txn.open_table(other).unwrap().insert(1, [0u8; 3].as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let journal = Journal::open(&path).unwrap();
    let report = journal.verify();
    assert!(matches!(report.problems.as_slice(), [Problem::UnreadablePrunedCopies { .. }]), "{:#?}", report.problems);
    assert_eq!((report.runs_checked, report.copies_checked, report.pruned_copies_checked), (1, 2, 0));
    assert!(report.problems[0].to_string().contains("pruned copies is unreadable"), "{}", report.problems[0]);
    // Reading it, or pruning into it, is an error, and the prune changes nothing.
    assert!(journal.pruned_copies().is_err());
    assert!(journal.prune_copy(1, "offsite", PRUNED_AT).is_err());
    assert_eq!(journal.copy(1, "offsite").unwrap(), Some(copy_entry(1, "offsite", 1)), "the row stays");
}
