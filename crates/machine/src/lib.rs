//! The run state machine of lifeboat, and its recovery planner.
//!
//! This crate is fully deterministic: it performs no I/O, reads no clock, draws no random numbers
//! and spawns no threads. Time comes in as a [`Timestamp`] argument; everything the outside world
//! reports comes in as an [`Outcome`]; everything the machine wants done goes out as an [`Effect`],
//! which is plain data for an executor (in `crates/cli`) to carry out.
//!
//! # A run is its events
//!
//! A [`Run`] is a fold of [`Event`]s, and [`Run::apply`] is its only mutator. The `handle_*`
//! methods never change the run: they return the event that *would* change it, so the executor can
//! make that event durable in the journal first and only then apply it. The call order is:
//!
//! 1. [`Run::start`] gives the `Started` event; journal it, then [`Run::from_started`].
//! 2. While [`Run::poll_effect`] returns an effect: journal [`Run::handle_begin`]'s `Intent` event and
//!    apply it, carry the effect out, then journal and apply [`Run::handle_outcome`]'s `Outcome`
//!    event.
//! 3. When `poll_effect` returns `None`, [`Run::state`] is terminal.
//!
//! Because the live executor and a replay ([`replay`]) both build the run only through `apply`,
//! replaying a run's journal gives exactly the state the executor had (invariant 5, ARCHITECTURE.md).
//!
//! # Recovery
//!
//! After a crash the journal may end anywhere: between two events, or after an `Intent` whose
//! effect may or may not have happened. [`recover`] folds the events and decides, as a pure
//! function of them, whether the run resumes or rolls back, and which effects remain. Every effect
//! is idempotent or checkable, so an effect whose outcome never reached the journal is simply
//! carried out again. The rules are argued case by case in ARCHITECTURE.md.

mod plan;
mod run;
mod types;

pub use plan::{RecoveryPlan, ReplayError, recover, replay};
pub use run::{Failure, MachineError, Mode, Run};
pub use types::*;
