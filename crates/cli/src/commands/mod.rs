//! One module per command. Each returns a report (`crate::output::Report`) that `lib.rs` prints;
//! the exit code of a failure travels in the error (see [`crate::exit`]). Commands never import
//! one another: what two share lives in `crate::runs` or below.

pub mod auto_backup;
pub mod backup;
pub mod catalog;
pub mod daemon;
pub mod docs;
pub mod import;
pub mod init;
pub mod journal;
pub mod package;
pub mod prune;
pub mod recover;
pub mod remote;
pub mod restore;
pub mod restore_from;
pub mod rollback;
pub mod status;
pub mod upgrade;

use crate::exit::Exit;
use std::path::PathBuf;

/// The global options every command receives.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub dir: PathBuf,
    pub json: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

/// Asks before a command that replaces data: `question` (on stderr) must be answered `y` on a
/// terminal. Without a terminal it refuses (exit 2) unless `yes` (the `--yes` flag) was given, so
/// a script never blocks on a prompt nobody sees. The caller holds the project lock throughout, so
/// nothing changes between the answer and the run.
pub fn confirm(yes: bool, action: &str, question: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        crate::fail!(Exit::Usage, "{action} needs confirmation, but stdin is not a terminal: pass --yes");
    }
    let mut stderr = std::io::stderr().lock();
    write!(stderr, "{question} [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        crate::fail!(Exit::Usage, "{action} cancelled: nothing was changed");
    }
    Ok(())
}
