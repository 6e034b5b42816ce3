//! Open-loop pacing: the i-th event of a run is due at `start + i / rate`, whatever happened
//! to the ones before it. The sender sleeps until the next due time and, when it wakes late
//! (timer granularity, a busy core), sends everything that has come due at once, each stamped
//! with its own due time.

use std::time::{Duration, Instant};

/// Due times of `total` events at `rate` per second from `start`.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    rate: f64,
    total: u64,
    next: u64,
}

impl Pacer {
    /// `rate` events per second for `duration`, starting now.
    pub fn new(rate: f64, duration: Duration) -> Self {
        let rate = rate.max(f64::MIN_POSITIVE);
        Self {
            start: Instant::now(),
            rate,
            total: (rate * duration.as_secs_f64()).round() as u64,
            next: 0,
        }
    }

    /// How many events this pacer yields in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// The next event's index and due time, after sleeping until it is due; `None` at the end.
    pub async fn next(&mut self) -> Option<(u64, Instant)> {
        if self.next >= self.total {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let due = self.due(i);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        Some((i, due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn yields_rate_times_duration_events_on_schedule() {
        let mut p = Pacer::new(1000.0, Duration::from_millis(50));
        assert_eq!(p.total(), 50);
        let mut n = 0;
        let mut last = None;
        while let Some((i, due)) = p.next().await {
            assert_eq!(i, n);
            assert!(Instant::now() >= due);
            if let Some(prev) = last {
                assert!(due > prev);
            }
            last = Some(due);
            n += 1;
        }
        assert_eq!(n, 50);
        assert!(p.start().elapsed() >= Duration::from_millis(49));
    }
}
