//! The stored bytes of every shape of journal event, pinned (docs/journal-format.md).
//!
//! bincode writes an enum variant as its index in the declaration, and a struct or variant's
//! fields by position, without names. So the order of the variants of `Event`, `RunSpec`,
//! `Effect`, `Outcome`, `Decision` and `BackupKind` in `crates/machine/src/types.rs`, and the
//! fields of each, are the journal's wire format: a journal written by one build must decode, to
//! the same events, in every later build. This file pins one event of each shape:
//!
//! - `Started` with each `RunSpec` variant (`SnapshotBackup` too), and a backup with each `BackupKind`;
//! - `Intent` with each `Effect` variant;
//! - `Outcome` with each `Outcome` variant;
//! - `Recovering` with each `Decision` variant;
//! - `Cancelled`;
//! - `StartedWith` (a backup with an `on_failure` hook);
//! - and, bare (no record holds them yet, but they follow the same rule), each `State` and
//!   `RunKind` variant.
//!
//! Each is encoded and compared with the hex written here, and the hex is decoded and compared
//! with the event. Reordering, removing or changing the fields of a variant fails these tests.
//!
//! **Adding a variant.** The `*_golden` functions below match every variant of their enum with
//! no wildcard arm, and each arm holds that variant's sample value and golden bytes. A new variant
//! therefore does not compile here until it has an arm, that is, a golden. `every_variant_has_a_golden`
//! then checks, with the variants `arbitrary` generates, that the arm's sample is of the variant it
//! stands for. A new variant goes at the end of its enum (docs/journal-format.md, "How the format
//! grows"), so the goldens already here do not change: if they do, the change breaks journals
//! on disk. When a golden fails, the message prints the bytes this build writes for every event.

use arbitrary::{Arbitrary, Unstructured};
use lifeboat_journal::{decode_event, encode_event};
use lifeboat_machine::{
    ArchiveDetails, ArchiveFacts, BackupKind, BackupRef, CopyDeletion, CopyFacts, CopyTarget, Decision, Effect, Event,
    Hook, HookPoint, NewVolume, Outcome, PackageRef, Provision, RunKind, RunSpec, SkippedPath, State, Timestamp,
};
use std::fmt::Debug;
use std::mem::{Discriminant, discriminant};

/// Every golden event is at this time: 2023-11-14T22:13:20Z, written as bincode's 8-byte varint.
const AT: Timestamp = Timestamp(1_700_000_000_000);

fn backup_ref() -> BackupRef {
    BackupRef { backup_id: 7, path: "b7.tgz".into(), sha256: "ab".into(), size_bytes: 300 }
}

fn package_ref() -> PackageRef {
    PackageRef { path: "p.tgz".into(), version: "2".into(), sha256: "cd".into() }
}

fn provision() -> Provision {
    Provision {
        volumes: vec![NewVolume {
            name: "p_db".into(),
            driver: "local".into(),
            driver_options: vec![("o".into(), "1".into())],
            labels: vec![("l".into(), "v".into())],
        }],
        files: vec!["c.yml".into()],
        dirs: vec!["data".into()],
        services: vec!["db".into()],
    }
}

fn facts() -> ArchiveFacts {
    ArchiveFacts {
        path: "a.tgz".into(),
        sha256: "ef".into(),
        size_bytes: 1000,
        file_count: 3,
        entry_count: 5,
        content_bytes: 70_000,
    }
}

/// A host hook before a backup, and an idempotent exec hook in `db` after it.
fn hooks() -> Vec<Hook> {
    vec![
        Hook {
            point: HookPoint::BeforeBackup,
            service: None,
            command: "sync".into(),
            timeout_secs: 60,
            idempotent: false,
        },
        Hook {
            point: HookPoint::AfterBackup,
            service: Some("db".into()),
            command: "true".into(),
            timeout_secs: 300,
            idempotent: true,
        },
    ]
}

fn copy_target() -> CopyTarget {
    CopyTarget { remote: "off".into(), url: "s3://b/p".into(), key: "b7.tgz.age".into() }
}

fn copy_facts() -> CopyFacts {
    CopyFacts { stored_sha256: "9a".into(), stored_bytes: 1200, encryption: "age".into() }
}

fn details() -> ArchiveDetails {
    ArchiveDetails {
        apparent_bytes: 80_000,
        stored_bytes: 70_000,
        skipped: vec![SkippedPath { path: "paths/data/s.sock".into(), kind: "socket".into() }],
    }
}

/// The golden `Started` event of each `RunSpec` variant: the spec it carries, and its bytes.
fn started_golden(variant: &RunSpec) -> (RunSpec, &'static str) {
    match variant {
        RunSpec::Backup { .. } => (
            RunSpec::Backup { archive_path: "a.tgz".into(), backup_kind: BackupKind::Manual, note: Some("n".into()) },
            "0100fd00d0ca9f170300000005612e74677a0001016e",
        ),
        RunSpec::Upgrade { .. } => (
            RunSpec::Upgrade { archive_path: "a.tgz".into(), package: package_ref() },
            "0100fd00d0ca9f170300000105612e74677a05702e74677a0132026364",
        ),
        RunSpec::Restore { .. } => {
            (RunSpec::Restore { backup: backup_ref() }, "0100fd00d0ca9f1703000002070662372e74677a026162fb2c01")
        }
        RunSpec::Rollback { .. } => {
            (RunSpec::Rollback { backup: backup_ref() }, "0100fd00d0ca9f1703000003070662372e74677a026162fb2c01")
        }
        RunSpec::Prune { .. } => (
            RunSpec::Prune {
                deletions: vec![backup_ref(), BackupRef { backup_id: 8, path: "b8.tgz".into(), ..backup_ref() }],
            },
            "0100fd00d0ca9f170300000402070662372e74677a026162fb2c01080662382e74677a026162fb2c01",
        ),
        RunSpec::SnapshotBackup { .. } => (
            RunSpec::SnapshotBackup {
                archive_path: "a.tgz".into(),
                backup_kind: BackupKind::Manual,
                note: None,
                mirror: "m".into(),
            },
            "0100fd00d0ca9f170300000705612e74677a0000016d",
        ),
        RunSpec::FirstDeploy { .. } => {
            (RunSpec::FirstDeploy { package: package_ref() }, "0100fd00d0ca9f170300000605702e74677a0132026364")
        }
        RunSpec::RestoreNew { .. } => (
            RunSpec::RestoreNew { backup: backup_ref(), provision: provision() },
            "0100fd00d0ca9f1703000005070662372e74677a026162fb2c010104705f6462056c6f63616c01016f013101016c01760105632e796d6c01046461746101026462",
        ),
        RunSpec::Ship { .. } => (
            RunSpec::Ship { backup: backup_ref(), target: copy_target() },
            "0100fd00d0ca9f1703000008070662372e74677a026162fb2c01036f66660873333a2f2f622f700a62372e74677a2e616765",
        ),
        RunSpec::PruneCopies { .. } => (
            RunSpec::PruneCopies {
                deletions: vec![
                    CopyDeletion { backup_id: 7, target: copy_target() },
                    CopyDeletion {
                        backup_id: 8,
                        target: CopyTarget { remote: "nas".into(), url: "file:///n".into(), key: "b8.tgz".into() },
                    },
                ],
            },
            "0100fd00d0ca9f17030000090207036f66660873333a2f2f622f700a62372e74677a2e61676508036e61730966696c653a2f2f2f6e0662382e74677a",
        ),
    }
}

/// The golden `Started` event of a backup of each `BackupKind`: its bytes.
fn backup_kind_golden(variant: &BackupKind) -> &'static str {
    match variant {
        BackupKind::Manual => "0100fd00d0ca9f170300000005612e74677a0000",
        BackupKind::Auto => "0100fd00d0ca9f170300000005612e74677a0100",
        BackupKind::PreUpgrade => "0100fd00d0ca9f170300000005612e74677a0200",
    }
}

fn backup_of_kind(backup_kind: BackupKind) -> Event {
    Event::Started { at: AT, spec: RunSpec::Backup { archive_path: "a.tgz".into(), backup_kind, note: None } }
}

/// The golden `Intent` event of each `Effect` variant: the effect it carries, and its bytes.
fn intent_golden(variant: &Effect) -> (Effect, &'static str) {
    let services = || vec!["db".to_owned(), "app".to_owned()];
    match variant {
        Effect::VerifyArchive { .. } => {
            (Effect::VerifyArchive { backup: backup_ref() }, "0101fd00d0ca9f1703000000070662372e74677a026162fb2c01")
        }
        Effect::Inspect => (Effect::Inspect, "0101fd00d0ca9f1703000001"),
        Effect::StopServices { .. } => {
            (Effect::StopServices { services: services() }, "0101fd00d0ca9f17030000020202646203617070")
        }
        Effect::WriteArchive { .. } => {
            (Effect::WriteArchive { path: "a.tgz".into() }, "0101fd00d0ca9f170300000305612e74677a")
        }
        Effect::RecordBackup { .. } => (
            Effect::RecordBackup { archive: facts(), backup_kind: BackupKind::PreUpgrade, note: Some("n".into()) },
            "0101fd00d0ca9f170300000405612e74677a026566fbe8030305fc701101000201016e",
        ),
        Effect::DiscardArchive { .. } => {
            (Effect::DiscardArchive { path: "a.tgz".into() }, "0101fd00d0ca9f170300000505612e74677a")
        }
        Effect::Deploy { .. } => {
            (Effect::Deploy { package: package_ref() }, "0101fd00d0ca9f170300000605702e74677a0132026364")
        }
        Effect::StartServices { .. } => {
            (Effect::StartServices { services: services() }, "0101fd00d0ca9f17030000070202646203617070")
        }
        Effect::ComposeUp { .. } => {
            (Effect::ComposeUp { services: Some(services()) }, "0101fd00d0ca9f1703000008010202646203617070")
        }
        Effect::StopStack => (Effect::StopStack, "0101fd00d0ca9f1703000009"),
        Effect::VerifyServices { .. } => (Effect::VerifyServices { services: None }, "0101fd00d0ca9f170300000a00"),
        Effect::CommitDeploy { .. } => (Effect::CommitDeploy { version: "2".into() }, "0101fd00d0ca9f170300000b0132"),
        Effect::RestoreDeployment => (Effect::RestoreDeployment, "0101fd00d0ca9f170300000c"),
        Effect::RestoreData { .. } => (
            Effect::RestoreData { backup: backup_ref(), deployment: true },
            "0101fd00d0ca9f170300000d070662372e74677a026162fb2c0101",
        ),
        Effect::RevertData => (Effect::RevertData, "0101fd00d0ca9f170300000e"),
        Effect::CommitData => (Effect::CommitData, "0101fd00d0ca9f170300000f"),
        Effect::DeleteBackup { .. } => {
            (Effect::DeleteBackup { backup: backup_ref() }, "0101fd00d0ca9f1703000010070662372e74677a026162fb2c01")
        }
        Effect::Provision { .. } => (
            Effect::Provision { backup: backup_ref(), provision: provision() },
            "0101fd00d0ca9f1703000011070662372e74677a026162fb2c010104705f6462056c6f63616c01016f013101016c01760105632e796d6c01046461746101026462",
        ),
        Effect::Unprovision { .. } => (
            Effect::Unprovision { provision: provision() },
            "0101fd00d0ca9f17030000120104705f6462056c6f63616c01016f013101016c01760105632e796d6c01046461746101026462",
        ),
        Effect::RunHook { .. } => {
            (Effect::RunHook { hook: hooks().remove(1) }, "0101fd00d0ca9f170300001301010264620474727565fb2c0101")
        }
        Effect::SyncMirror { .. } => {
            (Effect::SyncMirror { mirror: "m".into(), stopped: true }, "0101fd00d0ca9f1703000014016d01")
        }
        Effect::BeginUpload { .. } => (
            Effect::BeginUpload { target: copy_target() },
            "0101fd00d0ca9f1703000015036f66660873333a2f2f622f700a62372e74677a2e616765",
        ),
        Effect::UploadCopy { .. } => (
            Effect::UploadCopy { backup: backup_ref(), target: copy_target(), upload_id: "u1".into() },
            "0101fd00d0ca9f1703000016070662372e74677a026162fb2c01036f66660873333a2f2f622f700a62372e74677a2e616765027531",
        ),
        Effect::RecordCopy { .. } => (
            Effect::RecordCopy { backup_id: 7, target: copy_target(), copy: copy_facts() },
            "0101fd00d0ca9f170300001707036f66660873333a2f2f622f700a62372e74677a2e616765023961fbb00403616765",
        ),
        Effect::AbortUpload { .. } => (
            Effect::AbortUpload { target: copy_target(), upload_id: Some("u1".into()) },
            "0101fd00d0ca9f1703000018036f66660873333a2f2f622f700a62372e74677a2e61676501027531",
        ),
        Effect::DeleteCopy { .. } => (
            Effect::DeleteCopy { backup_id: 7, target: copy_target() },
            "0101fd00d0ca9f170300001907036f66660873333a2f2f622f700a62372e74677a2e616765",
        ),
        Effect::PruneCopy { .. } => (
            Effect::PruneCopy { backup_id: 7, target: copy_target() },
            "0101fd00d0ca9f170300001a07036f66660873333a2f2f622f700a62372e74677a2e616765",
        ),
    }
}

/// The golden `Outcome` event of each `Outcome` variant: the outcome it carries, and its bytes.
fn outcome_golden(variant: &Outcome) -> (Outcome, &'static str) {
    match variant {
        Outcome::Done => (Outcome::Done, "0102fd00d0ca9f1703000000"),
        Outcome::Inspected { .. } => (
            Outcome::Inspected { running: vec!["app".into(), "db".into()] },
            "0102fd00d0ca9f17030000010203617070026462",
        ),
        Outcome::ArchiveWritten(_) => {
            (Outcome::ArchiveWritten(facts()), "0102fd00d0ca9f170300000205612e74677a026566fbe8030305fc70110100")
        }
        Outcome::Failed { .. } => {
            (Outcome::Failed { error: "no space".into() }, "0102fd00d0ca9f1703000003086e6f207370616365")
        }
        Outcome::Started { .. } => {
            (Outcome::Started { services: vec!["db".into(), "app".into()] }, "0102fd00d0ca9f17030000040202646203617070")
        }
        Outcome::Archived { .. } => (
            Outcome::Archived { facts: facts(), details: details() },
            "0102fd00d0ca9f170300000505612e74677a026566fbe8030305fc70110100fc80380100fc70110100011170617468732f646174612f732e736f636b06736f636b6574",
        ),
        Outcome::InspectedWithHooks { .. } => (
            Outcome::InspectedWithHooks { running: vec!["db".into()], hooks: hooks() },
            "0102fd00d0ca9f1703000006010264620200000473796e633c0001010264620474727565fb2c0101",
        ),
        Outcome::HookRan { .. } => {
            (Outcome::HookRan { exit_code: -3, output_tail: "bye\n".into() }, "0102fd00d0ca9f170300000705046279650a")
        }
        Outcome::MirrorSynced { .. } => (
            Outcome::MirrorSynced { entries: 9, files_copied: 2, bytes_copied: 300, removed: 1 },
            "0102fd00d0ca9f17030000080902fb2c0101",
        ),
        Outcome::UploadBegun { .. } => {
            (Outcome::UploadBegun { upload_id: "u1".into() }, "0102fd00d0ca9f1703000009027531")
        }
        Outcome::CopyUploaded(_) => {
            (Outcome::CopyUploaded(copy_facts()), "0102fd00d0ca9f170300000a023961fbb00403616765")
        }
    }
}

/// The bytes of each `State` variant, bare (bincode's standard configuration, no version byte):
/// no record holds a state yet, but one that does will hold these.
fn state_golden(variant: &State) -> &'static str {
    match variant {
        State::Checking => "00",
        State::Stopping => "01",
        State::Archiving => "02",
        State::Recording => "03",
        State::Deploying => "04",
        State::Restoring => "05",
        State::Restarting => "06",
        State::Verifying => "07",
        State::Pruning => "08",
        State::RollingBack => "09",
        State::Completed => "0a",
        State::RolledBack => "0b",
        State::Failed => "0c",
        State::Presyncing => "0d",
        State::Snapshotting => "0e",
        State::Shipping => "0f",
    }
}

/// The bytes of each `RunKind` variant, bare, as [`state_golden`].
fn run_kind_golden(variant: &RunKind) -> &'static str {
    match variant {
        RunKind::Backup => "00",
        RunKind::Upgrade => "01",
        RunKind::Restore => "02",
        RunKind::Rollback => "03",
        RunKind::Prune => "04",
        RunKind::RestoreNew => "05",
        RunKind::FirstDeploy => "06",
        RunKind::Ship => "07",
    }
}

/// The golden `Recovering` event of each `Decision` variant: its bytes.
fn recovering_golden(variant: &Decision) -> &'static str {
    match variant {
        Decision::Resume => "0103fd00d0ca9f1703000000",
        Decision::RollBack => "0103fd00d0ca9f1703000001",
        Decision::ContinueRollBack => "0103fd00d0ca9f1703000002",
        Decision::ContinueFinishing => "0103fd00d0ca9f1703000003",
    }
}

/// The goldens of one `Event` variant, as (what it pins, event, bytes).
fn event_goldens(variant: &Event) -> Vec<(String, Event, &'static str)> {
    match variant {
        Event::Started { .. } => {
            let mut goldens: Vec<_> = variants::<RunSpec>()
                .iter()
                .map(|v| {
                    let (spec, hex) = started_golden(v);
                    (format!("Started {}", spec.kind()), Event::Started { at: AT, spec }, hex)
                })
                .collect();
            goldens.extend(variants::<BackupKind>().iter().map(|kind| {
                (format!("Started backup {}", kind.as_str()), backup_of_kind(*kind), backup_kind_golden(kind))
            }));
            goldens
        }
        Event::Intent { .. } => variants::<Effect>()
            .iter()
            .map(|v| {
                let (effect, hex) = intent_golden(v);
                (format!("Intent {}", effect.name()), Event::Intent { at: AT, effect }, hex)
            })
            .collect(),
        Event::Outcome { .. } => variants::<Outcome>()
            .iter()
            .map(|v| {
                let (outcome, hex) = outcome_golden(v);
                (format!("Outcome {outcome:?}"), Event::Outcome { at: AT, outcome }, hex)
            })
            .collect(),
        Event::Recovering { .. } => variants::<Decision>()
            .iter()
            .map(|decision| {
                (
                    format!("Recovering {}", decision.as_str()),
                    Event::Recovering { at: AT, decision: *decision },
                    recovering_golden(decision),
                )
            })
            .collect(),
        Event::Cancelled { .. } => {
            vec![(
                "Cancelled".to_owned(),
                Event::Cancelled { at: AT, reason: "SIGINT".into() },
                "0104fd00d0ca9f1703000006534947494e54",
            )]
        }
        Event::StartedWith { .. } => {
            let spec = RunSpec::Backup { archive_path: "a.tgz".into(), backup_kind: BackupKind::Auto, note: None };
            let on_failure = vec![Hook {
                point: HookPoint::OnFailure,
                service: None,
                command: "page".into(),
                timeout_secs: 30,
                idempotent: false,
            }];
            vec![(
                "StartedWith".to_owned(),
                Event::StartedWith { at: AT, spec, on_failure },
                "0105fd00d0ca9f170300000005612e74677a010001060004706167651e00",
            )]
        }
    }
}

/// One value of every variant of `T`, in declaration order.
///
/// `arbitrary`'s derive picks a variant as `(u32 * variant_count) >> 32`; the u32 `k * 0x01010101`
/// for k in 0..=255 steps through [0, 2^32) in 256 even steps, so it lands in every variant's range
/// as long as an enum has at most 255 variants. The zero bytes after it fill the fields.
fn variants<T: for<'a> Arbitrary<'a>>() -> Vec<T> {
    let mut seen: Vec<Discriminant<T>> = Vec::new();
    let mut values = Vec::new();
    for k in 0..=255u8 {
        let mut bytes = vec![k; 4];
        bytes.resize(512, 0);
        let value = T::arbitrary(&mut Unstructured::new(&bytes)).expect("512 bytes make a value");
        if !seen.contains(&discriminant(&value)) {
            seen.push(discriminant(&value));
            values.push(value);
        }
    }
    values
}

fn every_golden() -> Vec<(String, Event, &'static str)> {
    variants::<Event>().iter().flat_map(event_goldens).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex {hex:?}");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits")).collect()
}

/// Every sample is of the variant its arm stands for, and every variant of every enum in an
/// event has its golden.
#[test]
fn every_variant_has_a_golden() {
    fn check<T: Debug>(variant: &T, sample: &T) {
        assert_eq!(discriminant(variant), discriminant(sample), "the golden of {variant:?} holds {sample:?}");
    }
    for v in variants::<RunSpec>() {
        check(&v, &started_golden(&v).0);
    }
    for v in variants::<Effect>() {
        check(&v, &intent_golden(&v).0);
    }
    for v in variants::<Outcome>() {
        check(&v, &outcome_golden(&v).0);
    }
    // The sweep reaches every variant (the counts are those of types.rs today; more is fine).
    assert!(variants::<Event>().len() >= 6);
    assert!(variants::<RunSpec>().len() >= 10);
    assert!(variants::<Effect>().len() >= 27);
    assert!(variants::<Outcome>().len() >= 11);
    assert!(variants::<Decision>().len() >= 4);
    assert!(variants::<BackupKind>().len() >= 3);
    assert!(variants::<State>().len() >= 16);
    assert!(variants::<RunKind>().len() >= 8);
    for (name, event, _) in every_golden() {
        for (other, again, _) in every_golden() {
            assert!(name == other || event != again, "{name} and {other} pin the same event");
        }
    }
}

#[test]
fn every_event_encodes_to_its_golden_bytes() {
    let goldens = every_golden();
    let mut wrong = Vec::new();
    for (name, event, golden) in &goldens {
        let bytes = encode_event(event).unwrap();
        if hex(&bytes) != *golden {
            wrong.push(format!("{name}:\n  golden: {golden:?}\n  now:    {:?}", hex(&bytes)));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} events no longer encode to their golden bytes. Journals on disk hold the golden \
         bytes: restore the variant order and fields in crates/machine/src/types.rs \
         (docs/journal-format.md) rather than change a golden.\n{}",
        wrong.len(),
        goldens.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_golden_decodes_to_its_event() {
    for (name, event, golden) in every_golden() {
        assert_eq!(decode_event(&unhex(golden)).as_ref(), Ok(&event), "{name}");
    }
}

/// Bare bincode, as a record's body is written (`crates/journal/src/codec.rs`).
fn bare<T: serde::Serialize>(value: &T) -> String {
    hex(&bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap())
}

#[test]
fn every_state_and_run_kind_encodes_to_its_golden_bytes() {
    let states = variants::<State>();
    let kinds = variants::<RunKind>();
    for state in &states {
        assert_eq!(bare(state), state_golden(state), "State::{state:?}");
        let decoded: State =
            bincode::serde::decode_from_slice(&unhex(state_golden(state)), bincode::config::standard()).unwrap().0;
        assert_eq!(&decoded, state);
    }
    for kind in &kinds {
        assert_eq!(bare(kind), run_kind_golden(kind), "RunKind::{kind:?}");
        let decoded: RunKind =
            bincode::serde::decode_from_slice(&unhex(run_kind_golden(kind)), bincode::config::standard()).unwrap().0;
        assert_eq!(&decoded, kind);
    }
    // One golden per variant, none shared.
    let distinct = |hexes: Vec<&str>| hexes.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!(distinct(states.iter().map(state_golden).collect()), states.len());
    assert_eq!(distinct(kinds.iter().map(run_kind_golden).collect()), kinds.len());
}
