//! `lifeboat completions SHELL` and `lifeboat man`: generated from the clap definitions, so they
//! never drift from `--help`.

use crate::args::Cli;
use clap::CommandFactory;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    clap_complete::generate(shell, &mut Cli::command(), "lifeboat", &mut std::io::stdout());
    Ok(())
}

pub fn man() -> anyhow::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(())
}
