//! Raw bytes -> `decode_event`: never panics; what decodes survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_journal::fuzzing::decode_event_target(data));
