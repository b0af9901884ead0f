//! The record encoding: round trips, and untrusted bytes.

mod common;

use arbitrary::{Arbitrary, Unstructured};
use lifeboat_journal::{DecodeError, MAX_RECORD_BYTES, RECORD_VERSION, decode_event, encode_event};
use lifeboat_machine::{BackupKind, Event, RunSpec, Timestamp};
use proptest::prelude::*;

/// An event built by `arbitrary` from the bytes, if they suffice.
fn event_from(bytes: &[u8]) -> Option<Event> {
    Event::arbitrary(&mut Unstructured::new(bytes)).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_events_round_trip(seed in prop::collection::vec(any::<u8>(), 0..1024)) {
        let Some(event) = event_from(&seed) else { return Ok(()) };
        let bytes = encode_event(&event).unwrap();
        prop_assert_eq!(bytes[0], RECORD_VERSION);
        prop_assert_eq!(decode_event(&bytes), Ok(event));
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_event(&bytes);
        // And past the version check, where bincode does the work.
        let mut versioned = vec![RECORD_VERSION];
        versioned.extend_from_slice(&bytes);
        if let Ok(event) = decode_event(&versioned) {
            prop_assert_eq!(decode_event(&encode_event(&event).unwrap()), Ok(event));
        }
    }

    #[test]
    fn damaged_encodings_error_or_decode_to_an_event_that_round_trips(
        seed in prop::collection::vec(any::<u8>(), 0..512),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let Some(event) = event_from(&seed) else { return Ok(()) };
        let bytes = encode_event(&event).unwrap();
        // A strict prefix of a record never decodes: the decoder would need the missing bytes.
        let cut = cut.index(bytes.len());
        prop_assert!(decode_event(&bytes[..cut]).is_err());
        // Extra bytes are refused, not ignored.
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(decode_event(&longer), Err(DecodeError::TrailingBytes { extra: 1 }));
        let mut flipped = bytes.clone();
        for (at, mask) in flips {
            let at = at.index(flipped.len());
            flipped[at] ^= mask;
        }
        if let Ok(other) = decode_event(&flipped) {
            prop_assert_eq!(decode_event(&encode_event(&other).unwrap()), Ok(other));
        }
    }
}

#[test]
fn every_run_the_machine_makes_round_trips() {
    for events in common::assorted_runs() {
        for event in events {
            assert_eq!(decode_event(&encode_event(&event).unwrap()), Ok(event));
        }
    }
}

#[test]
fn the_version_byte_is_checked() {
    let mut bytes = encode_event(&common::backup_run()[0]).unwrap();
    bytes[0] = RECORD_VERSION + 1;
    assert_eq!(decode_event(&bytes), Err(DecodeError::UnsupportedVersion { found: RECORD_VERSION + 1 }));
    assert_eq!(decode_event(&[]), Err(DecodeError::Empty));
    assert!(matches!(decode_event(&[RECORD_VERSION]), Err(DecodeError::Malformed(_))));
}

/// A record claiming a string of 2^64 - 1 bytes fails at once, without trying to allocate it.
#[test]
fn huge_length_prefixes_fail_without_allocating() {
    // Version, Event::Started (0), at = 0, RunSpec::Backup (0), then the archive path's length
    // as bincode's 8-byte varint (marker 253).
    let mut bytes = vec![RECORD_VERSION, 0, 0, 0, 253];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(decode_event(&bytes), Err(DecodeError::Malformed(_))));
    // Just over the cap, with the bytes to back it: still refused.
    let mut bytes = vec![RECORD_VERSION, 0, 0, 0, 252];
    bytes.extend_from_slice(&(MAX_RECORD_BYTES as u32 + 1).to_le_bytes());
    bytes.resize(bytes.len() + MAX_RECORD_BYTES + 1, b'a');
    assert!(matches!(decode_event(&bytes), Err(DecodeError::Malformed(_))));
}

/// The stored bytes of one event, pinned: a change here breaks every existing journal, so it
/// needs a new record version and a decoder for the old one.
#[test]
fn the_encoding_is_stable() {
    let event = Event::Started {
        at: Timestamp(1_700_000_000_000),
        spec: RunSpec::Backup { archive_path: "b.tar.gz".into(), backup_kind: BackupKind::Auto, note: None },
    };
    let bytes = encode_event(&event).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Version 1, Started, `at` as a zigzag varint (8-byte form), Backup, the path's length and
    // bytes, Auto, no note.
    assert_eq!(hex, "01 00 fd 00d0ca9f17030000 00 08 622e7461722e677a 01 00".replace(' ', ""));
}
