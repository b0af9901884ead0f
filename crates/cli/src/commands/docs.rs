//! `lifeboat completions SHELL` and `lifeboat man`: generated from the clap definitions, so they
//! never drift from `--help`.

use crate::args::Cli;
use clap::CommandFactory;

use std::io::Write;

/// Generated into memory first: the generator panics on a write error, and a closed stdout
/// (`lifeboat completions bash | head`) must end the command quietly instead.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "lifeboat", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(())
}

pub fn man() -> anyhow::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout().lock())?;
    Ok(())
}
