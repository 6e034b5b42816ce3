//! Token buckets: how many requests of one kind a user may make, as plain arithmetic over a
//! `now` the driver passes in (monotonic ms, [`crate::clock::mono_ms`]: a wall clock that
//! steps would lock users out), so it is tested without a clock.
//!
//! A bucket holds up to `burst` tokens and gains `per_sec` tokens a second; a request takes
//! one, whether it then succeeds or is refused for another reason.

/// One user's bucket for one kind of request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date (the driver's monotonic ms).
    at_ms: i64,
}

/// A rate: `per_sec` tokens a second, at most `burst` held. `per_sec` 0 = no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    /// Whether this rate limits anything.
    pub fn is_limited(self) -> bool {
        self.per_sec > 0
    }

    fn capacity(self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

impl Bucket {
    /// A full bucket at `now_ms`.
    pub fn full(rate: Rate, now_ms: i64) -> Self {
        Self {
            tokens: rate.capacity(),
            at_ms: now_ms,
        }
    }

    /// Refills for the time since the last call. A time that went back adds nothing and
    /// becomes the new reference, so refilling resumes from there (keeping the later time
    /// would refill nothing until the clock caught up again).
    fn refill(&mut self, rate: Rate, now_ms: i64) {
        let elapsed = now_ms.saturating_sub(self.at_ms).max(0);
        let gained = elapsed as f64 / 1000.0 * f64::from(rate.per_sec);
        self.tokens = (self.tokens + gained).min(rate.capacity());
        self.at_ms = now_ms;
    }

    /// Takes one token at `now_ms`; false (and nothing taken) when the bucket is empty.
    pub fn take(&mut self, rate: Rate, now_ms: i64) -> bool {
        if !rate.is_limited() {
            return true;
        }
        self.refill(rate, now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now_ms`: it then says nothing a fresh one would not,
    /// and can be forgotten.
    pub fn is_full(&self, rate: Rate, now_ms: i64) -> bool {
        let mut b = *self;
        b.refill(rate, now_ms);
        b.tokens >= rate.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate {
        per_sec: 10,
        burst: 3,
    };

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Bucket::full(R, 0);
        assert!(b.take(R, 0) && b.take(R, 0) && b.take(R, 0));
        assert!(!b.take(R, 0), "the burst is spent");
        assert!(!b.take(R, 99), "0.99 of a token after 99 ms at 10/s");
        assert!(b.take(R, 100), "one token after 100 ms");
        assert!(!b.take(R, 100));
        assert!(b.is_full(R, 100 + 300));
        assert!(!b.is_full(R, 100 + 299));
    }

    #[test]
    fn refills_never_exceed_the_burst_and_the_clock_stepping_back_adds_nothing() {
        let mut b = Bucket::full(R, 1_000);
        for _ in 0..3 {
            assert!(b.take(R, 1_000_000));
        }
        assert!(
            !b.take(R, 1_000_000),
            "an hour idle still holds only the burst"
        );
        assert!(!b.take(R, 0), "clock stepped back");
        assert!(b.take(R, 1_000_100));
    }

    #[test]
    fn a_bucket_fed_a_time_that_goes_back_refills_normally_afterwards() {
        let one = Rate {
            per_sec: 1,
            burst: 1,
        };
        let mut b = Bucket::full(one, 0);
        assert!(b.take(one, 3_600_000), "a step an hour forward");
        assert!(
            !b.take(one, 1_000),
            "then back: nothing gained, the token is spent"
        );
        assert!(
            b.take(one, 2_000),
            "a second after the step back, a second's worth of tokens"
        );
        assert!(!b.take(one, 2_500));
        assert!(b.take(one, 3_000));
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let off = Rate {
            per_sec: 0,
            burst: 0,
        };
        let mut b = Bucket::full(off, 0);
        for _ in 0..10_000 {
            assert!(b.take(off, 0));
        }
    }
}
