//! Open-loop pacing: the i-th event of a run is due at `start + i / rate`, whatever happened
//! to the ones before it. A dedicated thread sleeps until each due time (the OS timer is
//! precise to tens of microseconds; tokio's timer only to a millisecond, which would add
//! ~0.5 ms of sender lateness to every latency) and hands the event to the runtime; when it
//! wakes late, everything that has come due is handed over at once, each event keeping its
//! own due time, which is what latency is measured from.

use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Due times of `total` events at `rate` per second from `start`.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    total: u64,
    rx: mpsc::UnboundedReceiver<(u64, Instant)>,
}

impl Pacer {
    /// `rate` events per second for `duration`, starting now.
    pub fn new(rate: f64, duration: Duration) -> Self {
        let rate = rate.max(f64::MIN_POSITIVE);
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let start = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                for i in 0..total {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if tx.send((i, due)).is_err() {
                        return;
                    }
                }
            })
            .expect("the OS can start a thread");
        Self { start, total, rx }
    }

    /// How many events this pacer yields in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The next event's index and due time, once it is due; `None` at the end.
    pub async fn next(&mut self) -> Option<(u64, Instant)> {
        self.rx.recv().await
    }
}

/// Waits until the schedule of a phase that started at `started` and lasted `length` would
/// have come to its next event, so that the next phase continues the same cadence. Without
/// it, a measured phase that starts as soon as the warm-up's last delivery arrived sends its
/// first event right after the warm-up's last one, which a low-rate run would see as a
/// burst.
pub async fn continue_after(started: Instant, length: Duration) {
    tokio::time::sleep_until((started + length).into()).await;
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
