//! Replays the committed seed corpus of the fuzz targets (`fuzz/corpus/<target>/*`) through the
//! same functions the targets call, so `cargo test` checks every seed.
//!
//! The seeds are generated: `LIFEBOAT_BLESS_CORPUS=1 cargo test -p lifeboat-journal --test
//! fuzz_corpus` rewrites them from the machine's own runs (after a format change, say).

mod common;

use arbitrary::{Arbitrary, Unstructured};
use lifeboat_journal::encode_event;
use lifeboat_journal::fuzzing::{
    FRAMED_MAGIC, SCRIPT_MAGIC, decode_event_target, frame_events, recover_input, recover_target,
};
use lifeboat_machine::Event;
use std::fs;
use std::path::PathBuf;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

fn bless() -> bool {
    std::env::var_os("LIFEBOAT_BLESS_CORPUS").is_some()
}

/// Every seed file of a target, by name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(corpus(target))
        .unwrap_or_else(|e| panic!("the seed corpus of {target} is missing: {e}"))
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Scripts that steer a live run into interesting places (see `fuzzing::scripted_run`).
const SCRIPTS: &[(&str, &[u8])] = &[
    ("backup-complete", &[0, 0x20]),
    ("backup-crash-writing", &[0, 0x20, 0, 6]),
    ("backup-crash-recorded-resume", &[0, 0x20, 0, 0, 0, 15, 0]),
    ("backup-fail-archive", &[0, 0x20, 0, 5]),
    ("upgrade-complete", &[1, 0x30]),
    ("upgrade-crash-deploying", &[1, 0x30, 0, 0, 0, 0, 6]),
    ("upgrade-fail-verify", &[1, 0x30, 0, 0, 0, 0, 0, 5]),
    ("upgrade-crash-recover-crash", &[1, 0x30, 0, 0, 0, 0, 0, 14, 0, 15, 0]),
    ("restore-fail-restart", &[2, 0x40, 0, 0, 0, 5]),
    ("rollback-crash-restoring", &[3, 0x10, 0, 0, 14, 0, 6]),
];

fn write_recover_seeds() {
    let dir = corpus("recover");
    fs::create_dir_all(&dir).unwrap();
    for (name, script) in SCRIPTS {
        let mut input = SCRIPT_MAGIC.to_vec();
        input.extend_from_slice(script);
        fs::write(dir.join(format!("script-{name}")), input).unwrap();
        // The same run as journal frames, whole and cut short (a crash).
        let (events, _) = lifeboat_journal::fuzzing::scripted_run(1, script);
        fs::write(dir.join(format!("framed-{name}")), frame_events(&events)).unwrap();
        fs::write(dir.join(format!("framed-{name}-cut")), frame_events(&events[..events.len() / 2])).unwrap();
    }
    fs::write(dir.join("garbage-empty"), b"").unwrap();
    fs::write(dir.join("garbage-text"), b"not a run at all, just some words for arbitrary").unwrap();
    fs::write(dir.join("garbage-bad-frame"), [&FRAMED_MAGIC[..], &[200, 0, 0, 0, 1, 2]].concat()).unwrap();
}

fn write_decode_seeds() {
    let dir = corpus("decode_event");
    fs::create_dir_all(&dir).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (_, script) in SCRIPTS {
        let (events, _) = lifeboat_journal::fuzzing::scripted_run(1, script);
        for event in events {
            // One seed per distinct event shape: the kind of event and of its effect or outcome.
            let shape = match &event {
                Event::Started { spec, .. } => format!("started-{}", spec.kind()),
                Event::StartedWith { spec, .. } => format!("started-with-{}", spec.kind()),
                Event::Intent { effect, .. } => format!("intent-{}", effect.name()),
                Event::Outcome { outcome, .. } => {
                    format!("outcome-{}", format!("{outcome:?}").split([' ', '(']).next().unwrap().to_lowercase())
                }
                Event::Recovering { decision, .. } => format!("recovering-{}", decision.as_str()),
                Event::Cancelled { .. } => "cancelled".to_owned(),
            };
            if seen.insert(shape.clone()) {
                fs::write(dir.join(format!("event-{shape}")), encode_event(&event).unwrap()).unwrap();
            }
        }
    }
    fs::write(dir.join("garbage-empty"), b"").unwrap();
    fs::write(dir.join("garbage-version-2"), [2, 0, 0, 0]).unwrap();
    fs::write(dir.join("garbage-huge-length"), [1, 0, 0, 0, 253, 255, 255, 255, 255, 255, 255, 255, 255]).unwrap();
    fs::write(dir.join("garbage-text"), b"lifeboat").unwrap();
}

#[test]
fn decode_event_seeds() {
    if bless() {
        write_decode_seeds();
    }
    let seeds = seeds("decode_event");
    assert!(seeds.len() >= 20, "too few seeds: {}", seeds.len());
    for (name, bytes) in seeds {
        decode_event_target(&bytes);
        // The event seeds are what this build writes: they must still decode.
        if name.starts_with("event-") {
            lifeboat_journal::decode_event(&bytes).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        }
    }
}

#[test]
fn recover_seeds() {
    if bless() {
        write_recover_seeds();
    }
    let seeds = seeds("recover");
    assert!(seeds.len() >= 20, "too few seeds: {}", seeds.len());
    for (name, bytes) in seeds {
        let events = match recover_input(&bytes) {
            Some(events) => events,
            None => {
                assert!(!name.starts_with("framed-"), "seed {name} no longer decodes");
                match Vec::<Event>::arbitrary_take_rest(Unstructured::new(&bytes)) {
                    Ok(events) => events,
                    Err(_) => continue,
                }
            }
        };
        recover_target(&events);
    }
}
