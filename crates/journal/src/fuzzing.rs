//! Fuzz target bodies, as plain functions. **For fuzzing and tests only**: not part of the
//! journal's API for lifeboat itself.
//!
//! The cargo-fuzz targets in `fuzz/` call these, and so does a normal test that replays the
//! committed seed corpus (`fuzz/corpus/<target>/*`), so every seed is checked by `cargo test`.
//! Each function panics when it finds a bug, which is how a fuzzer learns of one.
//!
//! The `recover` target's input is one of three shapes, chosen by its first four bytes:
//! - `LBJ1` then frames ([`frame_events`]): journal-encoded events, so seeds can be real runs;
//! - `LBS1` then a script ([`scripted_run`]): the bytes steer a live run (outcomes, failures,
//!   crashes and recoveries), so the fuzzer explores runs the machine can really produce;
//! - anything else: `Vec<Event>` from `arbitrary` (done by the caller, which has the
//!   `arbitrary` feature of `lifeboat-machine`).

use crate::codec::{decode_event, encode_event};
use lifeboat_machine::{
    ArchiveDetails, ArchiveFacts, BackupKind, BackupRef, CopyFacts, Effect, Event, Outcome, PackageRef, Run, RunId,
    RunSpec, SkippedPath, Timestamp, recover, replay,
};

/// The prefix of a `recover` input made of journal-encoded frames.
pub const FRAMED_MAGIC: &[u8; 4] = b"LBJ1";
/// The prefix of a `recover` input that scripts a live run.
pub const SCRIPT_MAGIC: &[u8; 4] = b"LBS1";

/// The run id every target uses.
const RUN: u64 = 1;

/// Decoding arbitrary bytes must not panic; what decodes must survive an encode/decode round
/// trip with an equal value. (Equal bytes are not required: bincode accepts some non-minimal
/// encodings, which re-encode minimally.)
pub fn decode_event_target(data: &[u8]) {
    if let Ok(event) = decode_event(data) {
        let bytes = encode_event(&event).expect("a decoded event must re-encode");
        assert_eq!(decode_event(&bytes).as_ref(), Ok(&event), "re-encoded event decodes differently");
        let again = encode_event(&event).expect("a decoded event must re-encode");
        assert_eq!(bytes, again, "encoding is not deterministic");
    }
}

/// The events a `recover` input describes when it is framed or scripted; `None` otherwise (the
/// caller then builds events with `arbitrary`). A scripted run is also checked here: replaying
/// its events must give exactly the live run (invariant 5, ARCHITECTURE.md).
pub fn recover_input(data: &[u8]) -> Option<Vec<Event>> {
    if let Some(frames) = data.strip_prefix(FRAMED_MAGIC) {
        return unframe_events(frames);
    }
    if let Some(script) = data.strip_prefix(SCRIPT_MAGIC) {
        let (events, live) = scripted_run(RUN, script);
        let replayed = replay(RUN, &events).expect("events of a live run must replay");
        assert_eq!(replayed, live, "replay differs from the live run");
        return Some(events);
    }
    None
}

/// `recover` on any events must not panic and must be deterministic. When it returns a plan:
/// the plan's own `Recovering` event applies to the replayed run; its steps are exactly the
/// effects the run then asks for; carrying them all out successfully ends the run in
/// `plan.ends_as`; and a crash at any point of that recovery, recovered again, still heads for
/// the same end state.
pub fn recover_target(events: &[Event]) {
    let first = recover(RUN, events);
    let second = recover(RUN, events);
    assert_eq!(first, second, "recover is not deterministic");
    let Ok(Some(plan)) = first else { return };
    let mut run = replay(RUN, events).expect("recover planned, so replay must succeed");
    assert!(!run.is_ended(), "a plan for a run that already ended");
    let at = events.last().map_or(Timestamp(0), Event::at);
    let recovering = plan.event(at);
    run.apply(&recovering).expect("the plan's own event must apply");
    let mut journal = events.to_vec();
    journal.push(recovering);
    for step in &plan.steps {
        assert_eq!(run.poll_effect().as_ref(), Some(step), "the run asks for another effect than the plan's");
        let intent = run.handle_begin(at).expect("a planned step must begin");
        run.apply(&intent).expect("a planned intent must apply");
        journal.push(intent);
        check_recovers_to(&journal, plan.ends_as);
        let outcome = run.handle_outcome(success(step, &run), at).expect("a success outcome must fit");
        run.apply(&outcome).expect("a success outcome must apply");
        journal.push(outcome);
        if !run.is_ended() {
            check_recovers_to(&journal, plan.ends_as);
        }
    }
    assert!(run.is_ended(), "the run has not ended after every planned step succeeded");
    assert_eq!(run.state(), plan.ends_as, "the run ended elsewhere than the plan said");
}

/// A crash at this point of a recovery: recovering again must plan the same end state.
fn check_recovers_to(journal: &[Event], ends_as: lifeboat_machine::State) {
    let again = recover(RUN, journal).expect("a recovery in progress must replay");
    let again = again.expect("a recovery in progress has not ended");
    assert_eq!(again.ends_as, ends_as, "a crash during recovery changed where the run ends");
}

/// The successful outcome of an effect, of the shape the machine expects.
fn success(effect: &Effect, run: &Run) -> Outcome {
    match effect {
        Effect::Inspect => Outcome::Inspected { running: run.running().map(<[String]>::to_vec).unwrap_or_default() },
        Effect::WriteArchive { path } => Outcome::Archived {
            facts: facts(path),
            details: ArchiveDetails {
                apparent_bytes: 10_000,
                stored_bytes: 9_000,
                skipped: vec![SkippedPath { path: "data/app.sock".into(), kind: "socket".into() }],
            },
        },
        Effect::StartServices { services } => Outcome::Started { services: services.iter().rev().cloned().collect() },
        Effect::SyncMirror { .. } => {
            Outcome::MirrorSynced { entries: 4, files_copied: 1, bytes_copied: 10, removed: 0 }
        }
        Effect::BeginUpload { .. } => Outcome::UploadBegun { upload_id: "2~upload".into() },
        Effect::UploadCopy { .. } => Outcome::CopyUploaded(CopyFacts {
            stored_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            stored_bytes: 4296,
            encryption: "age".into(),
        }),
        _ => Outcome::Done,
    }
}

fn facts(path: &str) -> ArchiveFacts {
    ArchiveFacts {
        path: path.to_owned(),
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        size_bytes: 4096,
        file_count: 3,
        entry_count: 5,
        content_bytes: 10_000,
    }
}

/// Frames events for a `recover` input (after [`FRAMED_MAGIC`]): each as a little-endian `u32`
/// length and the journal encoding of the event.
pub fn frame_events(events: &[Event]) -> Vec<u8> {
    let mut out = FRAMED_MAGIC.to_vec();
    for event in events {
        let bytes = encode_event(event).expect("an event encodes");
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// The inverse of [`frame_events`] (without the magic); `None` on any malformed frame.
fn unframe_events(mut data: &[u8]) -> Option<Vec<Event>> {
    let mut events = Vec::new();
    while !data.is_empty() {
        let (len, rest) = data.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (record, rest) = rest.split_at(len);
        events.push(decode_event(record).ok()?);
        data = rest;
    }
    Some(events)
}

/// A run of the machine with id `id`, steered by `script`, and the live run at the end. Returns
/// the events a journal would hold at that point. (The id matters: some effects name the run's
/// own backup, so the events only replay under the same id.)
///
/// Byte 0 picks the kind (backup, upgrade, restore, rollback). Each later byte steers one step:
/// `b % 8 == 7` crashes before the next intent, `6` crashes after it (the effect in flight),
/// `5` makes the effect fail, `4` cancels the run first (an operator's signal) where it accepts
/// a cancel and otherwise succeeds, anything else succeeds. After a crash, if `b & 8` is set and bytes
/// remain, recovery takes over (its `Recovering` event is journaled) and the script goes on;
/// otherwise the run stops there. `Inspect` reports the first `b / 16 % 5` of four services.
/// A missing byte is 0: an exhausted script drives the run to its end.
pub fn scripted_run(id: RunId, script: &[u8]) -> (Vec<Event>, Run) {
    let mut bytes = script.iter().copied();
    let spec = match bytes.next().unwrap_or(0) % 4 {
        0 => RunSpec::Backup { archive_path: "backups/b1.tar.gz".into(), backup_kind: BackupKind::Manual, note: None },
        1 => RunSpec::Upgrade {
            archive_path: "backups/pre-2.0.tar.gz".into(),
            package: PackageRef { path: "stack-2.0.tar.gz".into(), version: "2.0".into(), sha256: "ab12".into() },
        },
        2 => RunSpec::Restore { backup: backup_ref() },
        _ => RunSpec::Rollback { backup: backup_ref() },
    };
    let mut at = 1_700_000_000_000;
    let started = Run::start(spec, Timestamp(at));
    let mut run = Run::from_started(id, &started).expect("a started event starts a run");
    let mut events = vec![started];
    // Bounded: a run has fewer than 20 steps, and each recovery consumes a byte.
    for _ in 0..256 {
        if run.is_ended() {
            break;
        }
        at += 1000;
        let b = bytes.next().unwrap_or(0);
        let crash = match b % 8 {
            7 => true,
            4 if run.handle_cancel("SIGINT", Timestamp(at)).is_some() => {
                let cancel = run.handle_cancel("SIGINT", Timestamp(at)).expect("accepted just above");
                run.apply(&cancel).expect("the machine's own cancel applies");
                events.push(cancel);
                false
            }
            6 => {
                if run.poll_effect().is_none() {
                    break;
                }
                let intent = run.handle_begin(Timestamp(at)).expect("a live run can begin its next step");
                run.apply(&intent).expect("the machine's own intent applies");
                events.push(intent);
                true
            }
            _ => {
                let Some(effect) = run.poll_effect() else { break };
                let intent = run.handle_begin(Timestamp(at)).expect("a live run can begin its next step");
                run.apply(&intent).expect("the machine's own intent applies");
                events.push(intent);
                let outcome = match (b % 8, &effect) {
                    (5, _) => Outcome::Failed { error: format!("injected failure {b}") },
                    (_, Effect::Inspect) => Outcome::Inspected { running: services(b / 16 % 5) },
                    _ => success(&effect, &run),
                };
                let outcome = run.handle_outcome(outcome, Timestamp(at)).expect("the outcome fits its effect");
                run.apply(&outcome).expect("the machine's own outcome applies");
                events.push(outcome);
                false
            }
        };
        if crash {
            if b & 8 == 0 || bytes.len() == 0 {
                break;
            }
            let plan = run.recovery_plan().expect("a live run has a plan").expect("the run has not ended");
            let recovering = plan.event(Timestamp(at));
            run.apply(&recovering).expect("the plan's own event applies");
            events.push(recovering);
        }
    }
    (events, run)
}

fn services(n: u8) -> Vec<String> {
    ["proxy", "app", "cache", "db"].iter().take(usize::from(n)).map(|s| (*s).to_owned()).collect()
}

fn backup_ref() -> BackupRef {
    BackupRef {
        backup_id: 7,
        path: "backups/b7.tar.gz".into(),
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        size_bytes: 4096,
    }
}
