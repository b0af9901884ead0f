//! The output layer: every command returns a [`Report`], and [`emit`] prints it, as text for
//! people or, with `--json`, as one JSON document (its shapes are in docs/json.md; fields are
//! added, never renamed). Errors go to stderr; under `--json` a command that fails before
//! printing its report prints `{"error": ..., "exit_code": ...}` instead, so stdout always holds
//! exactly one JSON document.
//!
//! A closed stdout (`lifeboat list | head -1`) surfaces as an `io::Error` of kind `BrokenPipe`,
//! which `main_entry` turns into a quiet exit 0.

use crate::exit::Exit;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a command prints.
pub trait Report: Serialize {
    /// The text for people.
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()>;

    /// The exit the report asks for once printed: `prune` and `verify` print what they found,
    /// then exit 5 if an archive failed verification. Success by default.
    fn exit(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

static PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints `report` as text or JSON, then ends the command as the report asks.
pub fn emit<R: Report>(json: bool, report: R) -> anyhow::Result<()> {
    print(json, &report)?;
    report.exit()
}

/// Prints `report` as text or as one pretty JSON document.
pub fn print<R: Report>(json: bool, report: &R) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(report)?;
        writeln!(out, "{text}")?;
    } else {
        report.write_text(&mut out)?;
    }
    out.flush()?;
    PRINTED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Prints `report` as one line: compact JSON, or its text. For the daemon's one line per run.
pub fn print_line<R: Report>(json: bool, report: &R) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(report)?)?;
    } else {
        report.write_text(&mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// Under `--json`, the error document of a command that failed before printing its report.
pub fn error_document(json: bool, error: &anyhow::Error) {
    if !json || PRINTED.load(Ordering::Relaxed) {
        return;
    }
    let document = ErrorReport { error: format!("{error:#}"), exit_code: Exit::of(error) as u8 };
    if let Ok(text) = serde_json::to_string_pretty(&document) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
}

/// `{"error": "...", "exit_code": N}`.
#[derive(Serialize)]
struct ErrorReport {
    error: String,
    exit_code: u8,
}
