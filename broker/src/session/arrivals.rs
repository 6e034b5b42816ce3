//! A limit on NEW connections per second from one source address
//! (`sessions.new_connections_per_ip_per_sec`, `sessions.new_connections_per_ip_burst`),
//! judged on quinn's `Incoming` before any TLS work: the per-address cap counts connections
//! open at once, so a client that reconnects as soon as it is closed could otherwise make
//! the broker do a TLS handshake per attempt, a thousand a second from one address.
//!
//! One token bucket per source: an IPv4 address, or the /64 prefix of an IPv6 address (one
//! host or household gets a whole /64 and can pick any address in it).
//!
//! Spoofed source addresses and QUIC Retry: an attempt whose address QUIC has not validated
//! yet may have been sent by anyone. It takes a token only while its bucket keeps more than
//! half of the burst (the upper half); below that it gets a Retry (one stateless packet) and
//! is charged when it comes back validated. Only validated attempts take the lower half and
//! only they are refused, so packets spoofed with someone else's address can at worst empty
//! the upper half of that address's bucket: its owner still has half the burst and the whole
//! refill rate, and is never refused or dropped because of them.
//!
//! A refused validated attempt is told so (QUIC CONNECTION_REFUSED: one packet, no TLS), so
//! that an honest client backs off at once. An address that goes on after
//! [`ANSWERED_REFUSALS`] refusals with no token in between is flooding: its further attempts
//! are dropped without an answer until a token is free again.
//!
//! Memory: at most [`MAX_TRACKED`] sources are tracked (about 4 MiB). A bucket that has
//! refilled completely says nothing a new one would not, so full buckets are dropped, at
//! most once a second. Unvalidated attempts may fill only half of the table: beyond that,
//! one from an untracked source gets a Retry, so spoofed addresses (which cannot answer it)
//! cannot take the places of real ones. When the table is full of validated sources (tens of
//! thousands of real addresses connecting within seconds), a new source is let through
//! untracked: the node-wide cap and Retry under load are the defence against such a crowd.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources tracked at most.
pub const MAX_TRACKED: usize = 65_536;
/// Refusals answered in a row to one source before its further attempts are dropped.
pub const ANSWERED_REFUSALS: u32 = 8;
/// How often full buckets are dropped from the table.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// What to do with one connection attempt, as far as its source's rate goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It took a token (or the limit is off, or the source is untracked): go on.
    Pass,
    /// Unvalidated and its bucket is in the lower half (or the table is full): Retry first.
    Retry,
    /// Validated and its bucket is empty: refuse it (CONNECTION_REFUSED).
    Refuse,
    /// Validated, its bucket is empty and it was already refused often: drop it silently.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusals since the last token this source took.
    refused: u32,
}

/// The buckets of every source seen recently.
#[derive(Debug)]
pub struct Arrivals {
    per_sec: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
    pruned: Instant,
}

/// The key of `ip`'s bucket: the address itself for IPv4 (also when it comes as an
/// IPv4-mapped IPv6 address on a dual-stack socket), its /64 for IPv6.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

impl Arrivals {
    /// `per_sec` new connections per second per source with bursts of `burst`; `per_sec` 0
    /// turns the limit off.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            pruned: now,
        }
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn prune(&mut self, now: Instant) {
        if now.saturating_duration_since(self.pruned) < PRUNE_EVERY {
            return;
        }
        self.pruned = now;
        let (per_sec, burst) = (self.per_sec, self.burst);
        self.buckets.retain(|_, b| {
            let secs = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + secs * per_sec < burst
        });
    }

    /// Judges one attempt from `ip` (`validated`: QUIC has proved the address) at `now`,
    /// and takes a token when it passes.
    pub fn judge(&mut self, ip: IpAddr, validated: bool, now: Instant) -> Verdict {
        if self.per_sec <= 0.0 {
            return Verdict::Pass;
        }
        self.prune(now);
        // Tokens an unvalidated attempt must leave behind: the lower half of the burst.
        let reserved = (self.burst / 2.0).ceil();
        let key = source_of(ip);
        let len = self.buckets.len();
        let bucket = match self.buckets.get_mut(&key) {
            Some(b) => b,
            None => {
                let room = if validated {
                    MAX_TRACKED
                } else {
                    MAX_TRACKED / 2
                };
                if len >= room {
                    return if validated {
                        Verdict::Pass
                    } else {
                        Verdict::Retry
                    };
                }
                self.buckets.entry(key).or_insert(Bucket {
                    tokens: self.burst,
                    at: now,
                    refused: 0,
                })
            }
        };
        let secs = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + secs * self.per_sec).min(self.burst);
        bucket.at = now;
        let floor = if validated { 0.0 } else { reserved };
        if bucket.tokens - 1.0 >= floor {
            bucket.tokens -= 1.0;
            bucket.refused = 0;
            return Verdict::Pass;
        }
        if !validated {
            return Verdict::Retry;
        }
        bucket.refused = bucket.refused.saturating_add(1);
        if bucket.refused > ANSWERED_REFUSALS {
            Verdict::Drop
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_burst_then_the_rate_then_refusals_then_silence() {
        let t0 = Instant::now();
        let mut a = Arrivals::new(2, 4, t0);
        let me = ip("192.0.2.1");
        for _ in 0..4 {
            assert_eq!(a.judge(me, true, t0), Verdict::Pass);
        }
        for _ in 0..ANSWERED_REFUSALS {
            assert_eq!(a.judge(me, true, t0), Verdict::Refuse);
        }
        assert_eq!(a.judge(me, true, t0), Verdict::Drop);
        // Another address is not affected.
        assert_eq!(a.judge(ip("192.0.2.2"), true, t0), Verdict::Pass);
        // Half a second later one token is back (2/s), and the refusals are answered again.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(a.judge(me, true, t1), Verdict::Pass);
        assert_eq!(a.judge(me, true, t1), Verdict::Refuse);
    }

    #[test]
    fn unvalidated_attempts_cannot_spend_the_lower_half() {
        let t0 = Instant::now();
        let mut a = Arrivals::new(1, 10, t0);
        let victim = ip("192.0.2.9");
        // Spoofed attempts take the upper half, then get a Retry, never a refusal.
        for _ in 0..5 {
            assert_eq!(a.judge(victim, false, t0), Verdict::Pass);
        }
        for _ in 0..100 {
            assert_eq!(a.judge(victim, false, t0), Verdict::Retry);
        }
        // The owner, validated, still has the lower half.
        for _ in 0..5 {
            assert_eq!(a.judge(victim, true, t0), Verdict::Pass);
        }
        assert_eq!(a.judge(victim, true, t0), Verdict::Refuse);
    }

    #[test]
    fn off_means_off() {
        let t0 = Instant::now();
        let mut a = Arrivals::new(0, 1, t0);
        for _ in 0..1000 {
            assert_eq!(a.judge(ip("192.0.2.1"), true, t0), Verdict::Pass);
        }
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            source_of(ip("2001:db8:1:2:aaaa::1")),
            source_of(ip("2001:db8:1:2:bbbb::7"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn the_table_is_bounded_and_full_buckets_leave_it() {
        let t0 = Instant::now();
        let mut a = Arrivals::new(10, 20, t0);
        let spoofed = |i: u32| IpAddr::V4((0x0A00_0000 + i).into());
        for i in 0..(MAX_TRACKED as u32) {
            a.judge(spoofed(i), false, t0);
        }
        // Unvalidated sources fill half the table; the rest are asked to validate.
        assert_eq!(a.tracked(), MAX_TRACKED / 2);
        assert_eq!(
            a.judge(ip("198.51.100.1"), false, t0),
            Verdict::Retry,
            "an untracked unvalidated source when half full"
        );
        // A validated source still gets a bucket of its own.
        assert_eq!(a.judge(ip("198.51.100.1"), true, t0), Verdict::Pass);
        assert_eq!(a.tracked(), MAX_TRACKED / 2 + 1);
        // Once refilled (a token at 10/s) and a second on, the spoofed entries are gone.
        let later = t0 + Duration::from_secs(2);
        a.judge(ip("198.51.100.2"), true, later);
        assert_eq!(a.tracked(), 1, "only the bucket just charged is left");
    }
}
