//! Events -> `lifeboat_machine::recover`: never panics, deterministic, and a plan carried out
//! step by step ends where it says. Inputs are framed journal events, a script steering a live
//! run, or (anything else) `Vec<Event>` from `arbitrary`: see `lifeboat_journal::fuzzing`.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use lifeboat_journal::fuzzing::{recover_input, recover_target};
use lifeboat_machine::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let events = match recover_input(data) {
        Some(events) => events,
        None => match Vec::<Event>::arbitrary_take_rest(Unstructured::new(data)) {
            Ok(events) => events,
            Err(_) => return,
        },
    };
    recover_target(&events);
});
