//! `lifeboat completions SHELL` and `lifeboat man`: generated from the clap definitions, so they
//! never drift from `--help`.

use crate::args::Cli;
use crate::output::Report;
use clap::CommandFactory;
use std::io::Write;

/// A generated text: as is, or under `--json` as `{"format": ..., "text": ...}`.
#[derive(Debug, serde::Serialize)]
pub struct Generated {
    /// `bash`, `zsh`, ... for completions; `roff` for the manual page.
    pub format: String,
    pub text: String,
}

/// Generated into memory first: the generator panics on a write error, and a closed stdout
/// (`lifeboat completions bash | head`) must end the command quietly instead.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Generated> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "lifeboat", &mut script);
    Ok(Generated { format: shell.to_string(), text: String::from_utf8(script)? })
}

pub fn man() -> anyhow::Result<Generated> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    Ok(Generated { format: "roff".into(), text: String::from_utf8(page)? })
}

impl Report for Generated {
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(self.text.as_bytes())
    }
}
