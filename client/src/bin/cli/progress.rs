//! The transfer progress bar: drawn on stderr with indicatif, only when stderr is a
//! terminal (so scripts and pipes see nothing but the JSON result).

use convoke_client::{Progress, ProgressFn};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A bar and the callback that drives it, or neither when stderr is not a terminal.
pub fn bar(label: &'static str) -> (Option<ProgressBar>, Option<ProgressFn>) {
    if !std::io::stderr().is_terminal() {
        return (None, None);
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label);
    let driven = bar.clone();
    let callback: ProgressFn = Box::new(move |p: Progress| {
        driven.set_length(p.total);
        driven.set_position(p.done);
    });
    (Some(bar), Some(callback))
}
