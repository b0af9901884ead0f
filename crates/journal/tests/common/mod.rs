//! Helpers shared by the journal's integration tests.
#![allow(dead_code)]

use lifeboat_journal::BackupEntry;
use lifeboat_journal::fuzzing::scripted_run;
use lifeboat_machine::{BackupKind, Event, Timestamp};

/// The events of a complete backup run (an empty script drives a backup to its end). A backup's
/// events do not name its run id, so they fit any run.
pub fn backup_run() -> Vec<Event> {
    scripted_run(1, &[0]).0
}

/// The events of a complete upgrade run with id `id`.
pub fn upgrade_run(id: u64) -> Vec<Event> {
    scripted_run(id, &[1, 0x30]).0
}

/// Events of several kinds of run: complete, failed, crashed and recovered. Run `i` (from 0) is
/// made for run id `i + 1`, as a new journal allocates them.
pub fn assorted_runs() -> Vec<Vec<Event>> {
    [
        &[0u8][..],
        &[1, 0x30],
        &[2, 0x40, 0, 0, 5],
        &[3, 0x20, 0, 0, 0, 0, 0, 0],
        &[0, 0x10, 0, 6],
        &[1, 0x40, 0, 0, 0, 0, 14, 0, 0],
        &[2, 0x30, 0, 0, 0, 15, 7],
    ]
    .iter()
    .zip(1..)
    .map(|(script, id)| scripted_run(id, script).0)
    .collect()
}

pub fn entry(run_id: u64) -> BackupEntry {
    BackupEntry {
        id: run_id,
        run_id,
        kind: BackupKind::Manual,
        created_at: Timestamp(1_700_000_000_000 + run_id as i64),
        path: format!("backups/lifeboat-{run_id}.tar.gz"),
        size_bytes: 1234,
        file_count: 3,
        entry_count: 5,
        content_bytes: 4000,
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        note: Some("before the migration".into()),
        protects_version: None,
    }
}

/// Writes `runs` into `journal`, each as one run; returns the ids.
pub fn write_runs(journal: &lifeboat_journal::Journal, runs: &[Vec<Event>]) -> Vec<u64> {
    runs.iter()
        .map(|events| {
            let id = journal.begin_run(&events[0]).expect("begin_run");
            for (seq, event) in events.iter().enumerate().skip(1) {
                assert_eq!(journal.append(id, event).expect("append"), seq as u64);
            }
            id
        })
        .collect()
}
