//! SIGINT and SIGTERM: a run stops at its next safe point and settles, it is never cut short.
//!
//! Without handlers a signal would end the process wherever it is, leaving the services stopped
//! until someone runs `lifeboat recover`. With them (installed by [`install`] for the commands
//! that run), a signal is handled by the phase the process is in:
//!
//! - **No run in progress** (loading the project, validating a package, the confirmation prompt,
//!   printing the report): nothing was changed, so the process exits at once with 128 + the
//!   signal number (130 for SIGINT, 143 for SIGTERM), as if no handler were installed. The
//!   scheduler daemon asks instead to be told, and stops its loop itself.
//! - **A run in progress** (a [`RunGuard`] is alive): the first signal is noted and announced.
//!   The executor journals a `Cancelled` event before its next effect, which settles the run as a
//!   failure of that step would (services started again, partial archive removed, the run ends
//!   rolled back), and the archive writer stops within about a megabyte. A run past its point of
//!   no return, or one that recovery is settling, finishes instead. The command then exits with
//!   130 or 143 if the run was rolled back because of the signal (see `crate::exit`).
//! - **A second signal** while the run settles is reported and ignored: the services come first.
//!   `kill -9` still ends the process, and leaves the run to `lifeboat recover`.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::signal::unix::{SignalKind, signal};

struct Shared {
    /// How many [`RunGuard`]s are alive. A mutex, not an atomic: a signal handled while a run
    /// begins must see it either not begun (exit) or begun (cancel), never in between.
    in_run: Mutex<usize>,
    /// Exit at once on a signal outside a run (one-shot commands), or only note it (the daemon).
    exit_when_idle: bool,
    /// The first signal received, 0 for none.
    first: AtomicI32,
    /// Set by the first signal: the archive writer polls it.
    cancel: Arc<AtomicBool>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// Installs the handlers for SIGINT and SIGTERM. Call it once, inside the runtime, before the
/// command does anything. `exit_when_idle`: see the module docs.
pub fn install(exit_when_idle: bool) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shared = Shared {
        in_run: Mutex::new(0),
        exit_when_idle,
        first: AtomicI32::new(0),
        cancel: Arc::new(AtomicBool::new(false)),
    };
    if SHARED.set(shared).is_err() {
        return Ok(());
    }
    tokio::spawn(async move {
        loop {
            let number = tokio::select! {
                _ = terminate.recv() => libc::SIGTERM,
                _ = interrupt.recv() => libc::SIGINT,
            };
            received(number);
        }
    });
    Ok(())
}

fn received(number: i32) {
    let Some(shared) = SHARED.get() else { return };
    let in_run = shared.in_run.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let first = shared.first.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst).is_ok();
    let name = name(number);
    if *in_run == 0 {
        if shared.exit_when_idle {
            eprintln_quietly(&format!("lifeboat: {name} received before any change: exiting"));
            std::process::exit(128 + number);
        }
        return;
    }
    if first {
        shared.cancel.store(true, Ordering::SeqCst);
        eprintln_quietly(&format!(
            "lifeboat: {name} received: stopping at the next safe point and putting the services back as they \
             were (a run past its point of no return, or being recovered, finishes instead)"
        ));
    } else {
        eprintln_quietly(&format!(
            "lifeboat: {name} received again: ignored while the run settles, lifeboat exits once the services \
             are back ('kill -9' would leave the run to 'lifeboat recover')"
        ));
    }
}

/// Writes a line on stderr, ignoring a closed stderr (a signal handler must not panic).
fn eprintln_quietly(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `SIGINT` or `SIGTERM`, as journaled in a `Cancelled` event.
fn name(number: i32) -> &'static str {
    if number == libc::SIGTERM { "SIGTERM" } else { "SIGINT" }
}

/// The first signal received, by name, if any.
pub fn requested() -> Option<&'static str> {
    let number = SHARED.get()?.first.load(Ordering::SeqCst);
    (number != 0).then(|| name(number))
}

/// The signal that cancelled `run`, if one did: journaled as its `Cancelled` event, or received
/// while an effect that stops midway (the archive writer) ran, which then failed and settled the
/// run the same way.
pub fn cancelled_by(run: &lifeboat_machine::Run) -> Option<&str> {
    match run.cancelled() {
        Some(journaled) => Some(journaled),
        None => requested(),
    }
}

/// The flag the first signal sets, for effects that can stop midway (the archive writer).
pub fn cancel_flag() -> Option<Arc<AtomicBool>> {
    SHARED.get().map(|shared| Arc::clone(&shared.cancel))
}

/// Marks a run in progress until dropped: signals cancel it instead of ending the process.
#[must_use = "the run counts as in progress only while the guard lives"]
pub struct RunGuard(());

impl RunGuard {
    #[allow(clippy::new_without_default)]
    pub fn new() -> RunGuard {
        if let Some(shared) = SHARED.get() {
            *shared.in_run.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
        }
        RunGuard(())
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(shared) = SHARED.get() {
            let mut in_run = shared.in_run.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *in_run = in_run.saturating_sub(1);
        }
    }
}
