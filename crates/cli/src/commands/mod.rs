//! One module per command. Each takes the global options and returns `anyhow::Result`; the exit
//! code travels in the error (see [`crate::exit`]).

pub mod auto_backup;
pub mod backup;
pub mod catalog;
pub mod daemon;
pub mod docs;
pub mod init;
pub mod journal;
pub mod package;
pub mod prune;
pub mod recover;
pub mod restore;
pub mod rollback;
pub mod status;
pub mod upgrade;

use crate::docker::Docker;
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

impl Ctx {
    /// Prints `value` as the one JSON document on stdout.
    pub fn print_json(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        crate::outln!("{}", serde_json::to_string_pretty(value)?)?;
        Ok(())
    }
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

/// Re-hashes and reads a catalogued archive through, against what the catalog recorded, with a
/// progress bar when a person watches.
pub fn verify_entry(
    ctx: &Ctx,
    entry: &lifeboat_journal::BackupEntry,
    path: &std::path::Path,
) -> Result<lifeboat_archive::VerifyReport, lifeboat_archive::ArchiveError> {
    let expected = lifeboat_archive::Expected {
        sha256: entry.sha256.clone(),
        size_bytes: entry.size_bytes,
        entry_count: Some(entry.entry_count),
        content_bytes: Some(entry.content_bytes),
    };
    let bar = crate::progress::bar(ctx.progress, "verifying", Some(entry.size_bytes));
    let result = lifeboat_archive::verify_archive(path, &expected, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    result
}

/// Connects to Docker before a run starts: no daemon means nothing was touched (exit 1).
pub async fn connect_docker() -> anyhow::Result<Docker> {
    Docker::connect().await.map_err(|err| Exit::Failed.wrap(err))
}
