//! A peer's monotonic clock mapped onto ours, from its Pings: what a forwarded call's
//! deadline (`sent_ns` + `remaining_ms` on the sender's clock) means on this node.
//!
//! Each Ping gives a sample `our now_ns - its sent_ns`: the clock offset plus that Ping's
//! one-way delay, never less than the offset. The least sample is the best estimate, but
//! only over recent Pings: two monotonic clocks drift apart (50 ppm is 4.3 s a day), and a
//! sender whose host was suspended comes back with a clock that stood still, so the least
//! sample of a whole incarnation falls behind, and every call from that peer would arrive
//! with less time than it has, at last already expired. The window forgets that.

use std::collections::VecDeque;

/// Pings the estimate remembers: 32 x `cluster.heartbeat_ms` (8 s by default), long
/// enough that one Ping without queueing delay is in it, short enough that drift inside it
/// is microseconds.
pub(crate) const WINDOW: usize = 32;

/// The least offset sample over the last [`WINDOW`] Pings of one peer incarnation.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClockOffset {
    samples: VecDeque<i128>,
}

impl ClockOffset {
    /// Adds one Ping's `our now_ns - its sent_ns`, forgetting the oldest past the window.
    pub(crate) fn push(&mut self, sample: i128) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The estimate (ns to add to the peer's clock to get ours), `None` before a Ping.
    pub(crate) fn offset(&self) -> Option<i128> {
        self.samples.iter().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_sample_of_the_window_and_not_older() {
        let mut c = ClockOffset::default();
        assert_eq!(c.offset(), None);
        for s in [500, 300, 900] {
            c.push(s);
        }
        assert_eq!(c.offset(), Some(300));
        // The clocks drift apart (or the sender's host was suspended): every sample is
        // later. The old minimum is forgotten after a window of Pings, not kept forever.
        for _ in 0..WINDOW {
            c.push(15_000_000_300);
        }
        assert_eq!(c.offset(), Some(15_000_000_300));
    }
}
