//! The transfer progress bar: drawn on stderr with indicatif, only when stderr is a
//! terminal (so scripts and pipes see nothing but the JSON result). A transfer that
//! resumed after a lost connection says where: `upload (resumed at 3.20 MiB)`.

use convoke_client::{Progress, ProgressFn};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A bar and the callback that drives it, or neither when stderr is not a terminal.
pub(crate) fn bar(label: &'static str) -> (Option<ProgressBar>, Option<ProgressFn>) {
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
    let mut shown_resume = None;
    let callback: ProgressFn = Box::new(move |p: Progress| {
        if p.resumed_at != shown_resume {
            shown_resume = p.resumed_at;
            if let Some(at) = p.resumed_at {
                driven.set_message(resumed_label(label, at));
            }
        }
        driven.set_length(p.total);
        driven.set_position(p.done);
    });
    (Some(bar), Some(callback))
}

/// The bar's label once the transfer resumed at byte `at` (0: the broker had nothing
/// kept, e.g. it restarted, so the transfer started over; the bar holds its place until
/// the new attempt passes it).
fn resumed_label(label: &str, at: u64) -> String {
    if at == 0 {
        format!("{label} (started over)")
    } else {
        format!("{label} (resumed at {})", HumanBytes(at))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_label_says_where_the_transfer_resumed() {
        assert_eq!(
            super::resumed_label("upload", 3_355_443),
            "upload (resumed at 3.20 MiB)"
        );
        assert_eq!(super::resumed_label("upload", 0), "upload (started over)");
    }
}
