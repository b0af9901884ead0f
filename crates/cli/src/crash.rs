//! Crash points: the places between a journal append and the next step where the crash tests
//! kill lifeboat (ARCHITECTURE.md, "Cross-cutting concerns"). Compiled to nothing in a normal
//! build.

/// A fail point: with the `failpoints` feature and `FAILPOINTS=<name>=return`, the process kills
/// itself here with SIGKILL, exactly as a crash would (no unwinding, no destructors, no flush).
///
/// `FAILPOINTS=<name>=return(SIGINT)` (or `SIGTERM`) sends that signal instead and carries on, as
/// an operator's Ctrl-C or a service manager's stop landing exactly there would.
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |signal: Option<String>| {
        let signal = match signal.as_deref() {
            Some("SIGINT") => libc::SIGINT,
            Some("SIGTERM") => libc::SIGTERM,
            _ => libc::SIGKILL,
        };
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), signal);
        }
    });
    #[cfg(test)]
    CRASH_AFTER.with(|left| match left.get() {
        Some(0) => {
            left.set(None);
            panic!("simulated crash at {name}");
        }
        Some(n) => left.set(Some(n - 1)),
        None => {}
    });
    let _ = name;
}

#[cfg(test)]
thread_local! {
    /// For the unit tests: how many crash points still pass before one panics, standing in for a
    /// kill (the test catches the panic and drops the in-memory run, keeping only the journal and
    /// the world). Thread-local, as a current-thread runtime drives the run on the test's thread.
    pub static CRASH_AFTER: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}
