//! Wall-clock time in the units of the protocol. Only drivers read the clock; rules take
//! `now` as an argument.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds on a monotonic clock: for rates and intervals, which a wall clock stepping
/// forward or back must not stall. It starts at [`MONO_START_MS`] (a day) at the first call
/// in the process, so that a timestamp of 0 ("never") reads as long ago.
pub fn mono_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let since = START.get_or_init(Instant::now).elapsed().as_millis();
    i64::try_from(since)
        .unwrap_or(i64::MAX)
        .saturating_add(MONO_START_MS)
}

/// What [`mono_ms`] reads at its first call.
pub const MONO_START_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
