//! Progress bars on stderr, only when a person is watching: stderr is a terminal and neither
//! `--json` nor `-q` was given. Otherwise the bar is hidden and costs nothing.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Whether bars may be drawn, given the global flags.
pub fn wanted(json: bool, quiet: bool) -> bool {
    !json && !quiet && std::io::stderr().is_terminal()
}

/// A byte-counting bar (with rate and ETA when `total` is known), or a hidden one.
pub fn bar(enabled: bool, label: &'static str, total: Option<u64>) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{prefix:>10} {spinner} {bytes} read, {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_prefix(label);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
