//! Crash consistency, at every I/O operation.
//!
//! The journal runs on [`CrashDisk`], a redb storage backend over an in-memory file that keeps two
//! images: what the process has written (the OS page cache) and what the last `sync_data` made
//! durable. A probe pass counts the write, `set_len` and `sync_data` operations a sequence of
//! journal writes takes. Then, for every crash point `n` in that range, the sequence runs again
//! on a fresh disk whose `n`-th operation fails, and so does every operation after it (the
//! process is dead). The journal is reopened from each image the medium could hold after such a
//! crash:
//!
//! - every write the process made (a process crash: the page cache survives);
//! - only what was synced (power loss, no unsynced write reached the medium);
//! - what was synced plus a pseudo-random subset of the unsynced writes, for several seeds (power
//!   loss, some writes reached the medium, in any order).
//!
//! Each reopened journal must hold exactly the state after some prefix of the sequence: at least
//! every operation that returned `Ok`, at most one more (the one in progress, whose commit may or
//! may not have become durable). `verify` must be clean, and the journal must accept the rest of
//! the sequence.

mod common;

use common::entry;
use lifeboat_journal::fuzzing::scripted_run;
use lifeboat_journal::{BackupEntry, CopyEntry, Journal, JournalError, Settings, StorageBackend};
use lifeboat_machine::{BackupKind, Event, Timestamp};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
struct Images {
    /// Every write the process made.
    written: Vec<u8>,
    /// The image as of the last successful sync.
    synced: Vec<u8>,
    /// The operations since the last sync, in order.
    unsynced: Vec<Op>,
}

/// The in-memory disk and its failure countdown, shared between the backend redb owns and the
/// test that inspects it.
#[derive(Debug, Default)]
struct Shared {
    images: Mutex<Images>,
    /// Mutating operations (write, set_len, sync_data) so far.
    ops: AtomicU64,
    /// The operation number that fails, and every one after it; `u64::MAX` for never.
    crash_at: AtomicU64,
}

#[derive(Debug, Clone)]
struct CrashDisk(Arc<Shared>);

impl CrashDisk {
    fn new(image: Vec<u8>) -> CrashDisk {
        let shared = Shared {
            images: Mutex::new(Images { written: image.clone(), synced: image, unsynced: Vec::new() }),
            ops: AtomicU64::new(0),
            crash_at: AtomicU64::new(u64::MAX),
        };
        CrashDisk(Arc::new(shared))
    }

    fn crash_at(&self, n: u64) {
        self.0.ops.store(0, Ordering::SeqCst);
        self.0.crash_at.store(n, Ordering::SeqCst);
    }

    fn ops(&self) -> u64 {
        self.0.ops.load(Ordering::SeqCst)
    }

    fn crashed(&self) -> bool {
        self.0.ops.load(Ordering::SeqCst) > self.0.crash_at.load(Ordering::SeqCst)
    }

    /// Counts a mutating operation; fails it if the crash point is reached or passed.
    fn tick(&self) -> io::Result<()> {
        let n = self.0.ops.fetch_add(1, Ordering::SeqCst);
        if n >= self.0.crash_at.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated crash"));
        }
        Ok(())
    }

    /// The images the medium may hold after the crash.
    fn after_crash(&self, subset_seeds: u64) -> Vec<(String, Vec<u8>)> {
        let images = self.0.images.lock().unwrap();
        let mut out =
            vec![("written".to_owned(), images.written.clone()), ("synced".to_owned(), images.synced.clone())];
        for seed in 1..=subset_seeds {
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut image = images.synced.clone();
            for op in &images.unsynced {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if state & 1 == 1 {
                    apply(&mut image, op);
                }
            }
            out.push((format!("synced + subset {seed}"), image));
        }
        out
    }
}

impl StorageBackend for CrashDisk {
    fn len(&self) -> io::Result<u64> {
        if self.crashed() {
            return Err(io::Error::other("simulated crash"));
        }
        Ok(self.0.images.lock().unwrap().written.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        if self.crashed() {
            return Err(io::Error::other("simulated crash"));
        }
        let images = self.0.images.lock().unwrap();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let source = images
            .written
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.tick()?;
        let mut images = self.0.images.lock().unwrap();
        apply(&mut images.written, &Op::SetLen(len));
        images.unsynced.push(Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.tick()?;
        let mut images = self.0.images.lock().unwrap();
        images.synced = images.written.clone();
        images.unsynced.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.tick()?;
        let mut images = self.0.images.lock().unwrap();
        let op = Op::Write { offset, data: data.to_vec() };
        apply(&mut images.written, &op);
        images.unsynced.push(op);
        Ok(())
    }
}

/// One journal write of the sequence under test.
#[derive(Clone, Debug)]
enum Step {
    Begin(Event),
    Append(Event),
    Record(BackupEntry),
    Settings(Settings),
}

fn run_step(journal: &Journal, step: &Step) -> Result<(), JournalError> {
    match step {
        Step::Begin(event) => journal.begin_run(event).map(|id| assert_eq!(id, 1)),
        Step::Append(event) => journal.append(1, event).map(drop),
        Step::Record(entry) => journal.record_backup(entry).map(drop),
        Step::Settings(settings) => journal.update_settings(|s| *s = settings.clone()).map(drop),
    }
}

/// What the journal holds: the events of run 1 (if it exists), the catalog, the settings.
type Observed = (Option<Vec<Event>>, Vec<BackupEntry>, Settings);

fn observe(journal: &Journal) -> Observed {
    let runs = journal.runs().unwrap();
    let events = match runs.as_slice() {
        [] => None,
        [1] => Some(journal.events(1).unwrap()),
        other => panic!("runs {other:?} after a crash"),
    };
    (events, journal.backups().unwrap(), journal.settings().unwrap())
}

/// The state after the first `k` steps.
fn model(steps: &[Step], k: usize) -> Observed {
    let mut state: Observed = (None, Vec::new(), Settings::default());
    for step in &steps[..k] {
        match step {
            Step::Begin(event) => state.0 = Some(vec![event.clone()]),
            Step::Append(event) => state.0.as_mut().unwrap().push(event.clone()),
            Step::Record(entry) => state.1.push(entry.clone()),
            Step::Settings(settings) => state.2 = settings.clone(),
        }
    }
    state
}

/// An upgrade that fails verification and rolls back, journaled event by event, with its
/// pre-upgrade backup catalogued and the settings updated at the end.
fn sequence() -> Vec<Step> {
    let (events, _) = scripted_run(1, &[1, 0x30, 0, 0, 0, 0, 0, 5]);
    assert!(events.len() > 10, "a long run: {}", events.len());
    let mut steps = vec![Step::Begin(events[0].clone())];
    steps.extend(events[1..].iter().cloned().map(Step::Append));
    let mut backup = entry(1);
    backup.kind = BackupKind::PreUpgrade;
    backup.protects_version = Some("1.0".into());
    steps.push(Step::Record(backup));
    steps.push(Step::Settings(Settings {
        last_backup_outcome: Some("rolled back".into()),
        deployed_version: Some("1.0".into()),
        ..Settings::default()
    }));
    steps
}

/// A fresh journal's image, made durable, to start every crash run from.
fn fresh_image() -> Vec<u8> {
    let disk = CrashDisk::new(Vec::new());
    drop(Journal::open_with_backend(disk.clone(), "crash.redb").unwrap());
    let images = disk.0.images.lock().unwrap();
    assert!(images.unsynced.is_empty() || images.synced.len() == images.written.len());
    images.synced.clone()
}

/// Runs the steps until the first error; returns how many returned `Ok`.
fn run_until_error(journal: &Journal, steps: &[Step]) -> usize {
    steps.iter().take_while(|step| run_step(journal, step).is_ok()).count()
}

#[test]
fn every_crash_point_leaves_a_prefix_of_the_acknowledged_writes() {
    let steps = sequence();
    let start = fresh_image();

    // Probe: how many mutating operations the whole sequence takes.
    let probe = CrashDisk::new(start.clone());
    let journal = Journal::open_with_backend(probe.clone(), "crash.redb").unwrap();
    probe.crash_at(u64::MAX);
    assert_eq!(run_until_error(&journal, &steps), steps.len());
    let total = probe.ops();
    assert_eq!(observe(&journal), model(&steps, steps.len()));
    drop(journal);
    assert!(total > steps.len() as u64, "each commit takes several operations: {total}");

    let mut reopened = 0;
    let mut in_flight_durable = 0;
    for n in 0..=total {
        let disk = CrashDisk::new(start.clone());
        let journal = Journal::open_with_backend(disk.clone(), "crash.redb").unwrap();
        disk.crash_at(n);
        let acked = run_until_error(&journal, &steps);
        drop(journal);
        if n == total {
            assert_eq!(acked, steps.len());
        }
        for (model_name, image) in disk.after_crash(4) {
            let context = format!("crash at operation {n} of {total}, {acked} steps acknowledged, image {model_name}");
            let journal = Journal::open_with_backend(CrashDisk::new(image), "crash.redb")
                .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
            let observed = observe(&journal);
            let k = (acked..=(acked + 1).min(steps.len()))
                .find(|&k| model(&steps, k) == observed)
                .unwrap_or_else(|| panic!("{context}: the journal holds no prefix of the writes: {observed:?}"));
            if k > acked {
                in_flight_durable += 1;
            }
            let report = journal.verify();
            assert!(report.is_clean(), "{context}: {:?}", report.problems);
            // The recovered journal takes the rest of the sequence.
            assert_eq!(run_until_error(&journal, &steps[k..]), steps.len() - k, "{context}: writing on failed");
            assert_eq!(observe(&journal), model(&steps, steps.len()), "{context}");
            reopened += 1;
        }
    }
    assert_eq!(reopened, (total + 1) * 6);
    // Some crash points fall after a commit's last sync but before `commit` returned: the step
    // reported an error yet is durable, exactly what `append`'s docs warn about.
    println!("{total} operations, {reopened} reopened images, {in_flight_durable} with the failed step durable");
}

/// A crash while the journal file is first created: the file then holds an empty journal, or
/// nothing redb recognises (redb writes its magic number last), which `open` refuses as not a
/// lifeboat journal rather than guessing. Never a panic, never a journal with content.
#[test]
fn a_crash_while_creating_the_journal_is_refused_or_empty() {
    let probe = CrashDisk::new(Vec::new());
    probe.crash_at(u64::MAX);
    drop(Journal::open_with_backend(probe.clone(), "crash.redb").unwrap());
    let total = probe.ops();
    let (mut empty, mut refused) = (0, 0);
    for n in 0..=total {
        let disk = CrashDisk::new(Vec::new());
        disk.crash_at(n);
        let _ = Journal::open_with_backend(disk.clone(), "crash.redb");
        for (model_name, image) in disk.after_crash(4) {
            match Journal::open_with_backend(CrashDisk::new(image), "crash.redb") {
                Ok(journal) => {
                    assert_eq!(journal.runs().unwrap(), Vec::<u64>::new(), "crash at {n}, {model_name}");
                    assert!(journal.verify().is_clean());
                    empty += 1;
                }
                Err(JournalError::NotAJournal { .. }) => refused += 1,
                Err(other) => panic!("crash at {n}, {model_name}: {other:?}"),
            }
        }
    }
    println!("creation: {total} operations; {empty} images open as empty journals, {refused} refused");
}

/// `prune_copy` is one transaction: after a crash at any I/O operation of it, the journal holds
/// the copy's row and no pruned pair, or the pair and no row; never both, never neither.
#[test]
fn a_crash_while_pruning_a_copy_leaves_its_row_or_its_pruned_pair_never_both_nor_neither() {
    // Run 1's backup catalogued, with its copy on `offsite`, all durable.
    let copy = CopyEntry {
        backup_id: 1,
        remote: "offsite".into(),
        run_id: 1,
        url: "s3://bucket/lifeboat".into(),
        key: "lifeboat-1.tar.gz.age".into(),
        shipped_at: Timestamp(1_700_000_100_000),
        stored_sha256: "5e".repeat(32),
        stored_bytes: 1434,
        archive_sha256: entry(1).sha256,
        encryption: "age".into(),
    };
    let setup = CrashDisk::new(fresh_image());
    {
        let journal = Journal::open_with_backend(setup.clone(), "crash.redb").unwrap();
        let (events, _) = scripted_run(1, &[0]);
        assert_eq!(journal.begin_run(&events[0]).unwrap(), 1);
        for event in &events[1..] {
            journal.append(1, event).unwrap();
        }
        journal.record_backup(&entry(1)).unwrap();
        assert!(journal.record_copy(&copy).unwrap());
    }
    let start = setup.0.images.lock().unwrap().synced.clone();
    let state = |journal: &Journal| {
        let row = journal.copy(1, "offsite").unwrap();
        let pruned = journal.pruned_copies().unwrap();
        assert!(row.is_none() || row.as_ref() == Some(&copy), "{row:?}");
        assert!(pruned.is_empty() || pruned == [(1, "offsite".to_owned())], "{pruned:?}");
        (row.is_some(), !pruned.is_empty())
    };

    let probe = CrashDisk::new(start.clone());
    let journal = Journal::open_with_backend(probe.clone(), "crash.redb").unwrap();
    assert_eq!(state(&journal), (true, false), "the setup is durable");
    probe.crash_at(u64::MAX);
    assert!(journal.prune_copy(1, "offsite", 1_700_000_200_000).unwrap());
    let total = probe.ops();
    drop(journal);

    let (mut before, mut after) = (0, 0);
    for n in 0..=total {
        let disk = CrashDisk::new(start.clone());
        let journal = Journal::open_with_backend(disk.clone(), "crash.redb").unwrap();
        disk.crash_at(n);
        let acked = journal.prune_copy(1, "offsite", 1_700_000_200_000).is_ok();
        drop(journal);
        for (model_name, image) in disk.after_crash(4) {
            let context = format!("crash at operation {n} of {total} (acknowledged: {acked}), image {model_name}");
            let journal = Journal::open_with_backend(CrashDisk::new(image), "crash.redb")
                .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
            match state(&journal) {
                (true, false) => {
                    assert!(!acked, "{context}: an acknowledged prune was lost");
                    before += 1;
                }
                (false, true) => after += 1,
                other => panic!("{context}: (row, pruned) = {other:?}"),
            }
            let report = journal.verify();
            assert!(report.is_clean(), "{context}: {:?}", report.problems);
            // Carried out again (recovery redoes the step): done, whichever it found.
            journal.prune_copy(1, "offsite", 1_700_000_300_000).unwrap();
            assert_eq!(state(&journal), (false, true), "{context}");
        }
    }
    assert!(before > 0 && after > 0, "both sides reached: {before} before, {after} after");
    println!("prune_copy: {total} operations; {before} images before it, {after} after");
}
