//! The documented exit codes (README, "Command-line contract"), and the error type that carries one.
//!
//! Commands return `anyhow::Result`; an error that should end with a particular code is wrapped
//! with [`Exit::wrap`] (or built with [`fail`]). Any other error exits [`Exit::Failed`].

use std::fmt;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Success = 0,
    /// 1: the operation failed and was rolled back (services as before).
    Failed = 1,
    /// 2: usage or configuration error; nothing was started.
    Usage = 2,
    /// 3: another lifeboat run holds the project lock.
    Locked = 3,
    /// 4: an interrupted run needs `lifeboat recover` first.
    NeedsRecovery = 4,
    /// 5: integrity error: checksum mismatch, corrupt journal or archive.
    Integrity = 5,
    /// 6: the run completed (a backup is recorded), but an `after_*` hook failed.
    HookFailed = 6,
    /// 130 (128 + SIGINT): interrupted by SIGINT (Ctrl-C); a run in progress was rolled back, so
    /// the services are as before.
    Interrupted = 130,
    /// 143 (128 + SIGTERM): as `Interrupted`, for SIGTERM (a service manager's stop).
    Terminated = 143,
}

impl Exit {
    /// Attaches this exit code to an error.
    pub fn wrap(self, error: impl Into<anyhow::Error>) -> anyhow::Error {
        anyhow::Error::new(Coded { code: self, error: error.into() })
    }

    /// The exit code of a run that did not complete: 130 or 143 when the operator's signal
    /// cancelled it (see `crate::signals`), else `Failed`. Integrity errors are the caller's to
    /// tell apart.
    pub fn of_unfinished_run(run: &lifeboat_machine::Run) -> Exit {
        if run.state() != lifeboat_machine::State::RolledBack {
            return Exit::Failed;
        }
        match crate::signals::cancelled_by(run) {
            Some("SIGTERM") => Exit::Terminated,
            Some(_) => Exit::Interrupted,
            None => Exit::Failed,
        }
    }

    /// The exit code an error asks for: the outermost [`Coded`] in its chain, else `Failed`.
    pub fn of(error: &anyhow::Error) -> Exit {
        error.chain().find_map(|e| e.downcast_ref::<Coded>()).map_or(Exit::Failed, |c| c.code)
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// An error with its exit code. Displays as the inner error with its causes, so messages read the
/// same wrapped or not.
#[derive(Debug)]
pub struct Coded {
    pub code: Exit,
    error: anyhow::Error,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Coded {}

/// Returns early with an error carrying `code`: `fail!(Exit::Usage, "no such backup {id}")`.
#[macro_export]
macro_rules! fail {
    ($code:expr, $($arg:tt)*) => {
        return Err($crate::exit::Exit::wrap($code, anyhow::anyhow!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn code_survives_added_context() {
        let err = Exit::Locked.wrap(anyhow::anyhow!("held by pid 7"));
        let err = Err::<(), _>(err).context("cannot start the backup").unwrap_err();
        assert_eq!(Exit::of(&err), Exit::Locked);
        assert_eq!(format!("{err:#}"), "cannot start the backup: held by pid 7");
        assert_eq!(Exit::of(&anyhow::anyhow!("plain")), Exit::Failed);
    }
}
