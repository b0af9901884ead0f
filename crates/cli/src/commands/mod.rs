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
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

/// Connects to Docker before a run starts: no daemon means nothing was touched (exit 1).
pub async fn connect_docker() -> anyhow::Result<Docker> {
    Docker::connect().await.map_err(|err| Exit::Failed.wrap(err))
}
