//! Admission of new connections, before any byte of TLS is spent on them: caps on the
//! connections open at once (node-wide and per source IP address) and QUIC Retry under load.
//!
//! A connection attempt ([`quinn::Incoming`]) is judged in the accept loop by [`decide`], a
//! plain function of the counts, so that it is tested without sockets:
//! - an address QUIC has not validated yet gets a Retry (a stateless round trip that proves
//!   the sender receives at the address it claims) when many connections are logging in,
//!   or when it would reach a cap: spoofed source addresses then cannot hold connections,
//!   nor use up the per-address allowance of someone else's address;
//! - over the node-wide cap the attempt is refused at once (QUIC CONNECTION_REFUSED; no
//!   TLS work);
//! - over the per-address cap the attempt is refused after the QUIC handshake, with a
//!   close reason the client reads as a 500 naming the address and the cap;
//! - then the rate of new connections from its source is judged
//!   ([`crate::session::arrivals`]): over it the attempt is refused at once, or retried
//!   first when its address is not validated, or dropped when the source keeps flooding;
//! - otherwise it is admitted, and holds its places ([`Admitted`]) until the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::arrivals::{Arrivals, Verdict};

/// The caps, from `[sessions]`.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Connections open at once.
    pub max: usize,
    /// Connections open at once from one IP address; 0 = no limit.
    pub per_ip: usize,
    /// Connections logging in above which unvalidated addresses get a Retry first.
    pub retry_above_logins: usize,
    /// New connections per second from one source (see [`crate::session::arrivals`]);
    /// 0 = no limit.
    pub new_per_sec: u32,
    /// Of those, how many may come at once.
    pub new_burst: u32,
}

impl Caps {
    /// The caps `[sessions]` sets.
    pub fn from_sessions(s: &crate::config::SessionsConfig) -> Self {
        Self {
            max: s.max_connections,
            per_ip: s.max_connections_per_ip,
            retry_above_logins: s.retry_above_logins,
            new_per_sec: s.new_connections_per_ip_per_sec,
            new_burst: s.new_connections_per_ip_burst,
        }
    }
}

/// What to do with one connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send a QUIC Retry; the attempt comes back with a validated address.
    Retry,
    /// Over the node-wide cap: refuse at once.
    RefuseNow,
    /// Over the per-address cap: finish the QUIC handshake, then close with this reason.
    RefuseAfterHandshake(String),
    /// Too many new connections from its source: refuse at once (CONNECTION_REFUSED).
    RateRefused,
    /// Too many new connections from its source, refused often already: drop silently.
    RateDropped,
    /// Take it.
    Admit,
}

/// What [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Connections open now.
    pub open: usize,
    /// Of those, still logging in.
    pub logging_in: usize,
    /// Connections open now from the attempt's address.
    pub from_ip: usize,
}

/// Judges one connection attempt from `ip` (`validated`: QUIC has proved the address).
pub fn decide(caps: &Caps, load: Load, ip: IpAddr, validated: bool) -> Decision {
    let over_max = load.open >= caps.max;
    let over_ip = caps.per_ip > 0 && load.from_ip >= caps.per_ip;
    if !validated && (over_max || over_ip || load.logging_in >= caps.retry_above_logins) {
        return Decision::Retry;
    }
    if over_max {
        return Decision::RefuseNow;
    }
    if over_ip {
        return Decision::RefuseAfterHandshake(format!(
            "too many connections from {ip}: at most {} at once; close one or try again later",
            caps.per_ip
        ));
    }
    Decision::Admit
}

/// The node's connection counts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    caps: Caps,
    inner: Arc<Counts>,
    /// Only the accept loops judge (`convoke/1` and, when on, the browser listener's): the
    /// lock is hardly ever contended.
    arrivals: Arc<Mutex<Arrivals>>,
}

#[derive(Debug, Default)]
struct Counts {
    open: AtomicUsize,
    logging_in: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            inner: Arc::default(),
            arrivals: Arc::new(Mutex::new(Arrivals::new(
                caps.new_per_sec,
                caps.new_burst,
                Instant::now(),
            ))),
        }
    }

    fn per_ip(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every change under this lock is one insert or remove: a poisoned map is intact.
        self.inner
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Judges `incoming`; an admitted attempt is counted (open, logging in, per address)
    /// until the returned [`Admitted`] is dropped.
    pub fn judge(&self, incoming: &quinn::Incoming) -> (Decision, Option<Admitted>) {
        let ip = incoming.remote_address().ip();
        // The per-address lock is held from the look to the increments, and only the
        // accept loops admit (each judging under it), so the counts cannot move up in
        // between (they can only go down).
        let mut per_ip = self.per_ip();
        let load = Load {
            open: self.inner.open.load(Ordering::Relaxed),
            logging_in: self.inner.logging_in.load(Ordering::Relaxed),
            from_ip: per_ip.get(&ip).copied().unwrap_or(0),
        };
        let validated = incoming.remote_address_validated() || !incoming.may_retry();
        let mut decision = decide(&self.caps, load, ip, validated);
        if decision != Decision::Retry {
            // After the caps' Retry, so that an attempt sent back to validate its address
            // is charged once, when it returns.
            let verdict = self
                .arrivals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .judge(ip, validated, Instant::now());
            decision = match verdict {
                Verdict::Pass => decision,
                Verdict::Retry => Decision::Retry,
                Verdict::Refuse => Decision::RateRefused,
                Verdict::Drop => Decision::RateDropped,
            };
        }
        let admitted = match decision {
            Decision::Admit => {
                *per_ip.entry(ip).or_default() += 1;
                Some(ip)
            }
            // A refusal after the handshake is a connection too, until it is closed; it is
            // not counted against its address (that would only delay the refusal of others).
            Decision::RefuseAfterHandshake(_) => None,
            Decision::Retry
            | Decision::RefuseNow
            | Decision::RateRefused
            | Decision::RateDropped => return (decision, None),
        };
        self.inner.open.fetch_add(1, Ordering::Relaxed);
        self.inner.logging_in.fetch_add(1, Ordering::Relaxed);
        let guard = Admitted {
            admission: self.clone(),
            ip: admitted,
            logging_in: true,
        };
        (decision, Some(guard))
    }
}

/// A connection's places in the counts, given back on drop.
#[derive(Debug)]
pub struct Admitted {
    admission: Admission,
    /// The address it is counted against, if any.
    ip: Option<IpAddr>,
    logging_in: bool,
}

impl Admitted {
    /// The connection logged in (or gave up logging in): it no longer counts as logging in.
    pub fn logged_in(&mut self) {
        if std::mem::take(&mut self.logging_in) {
            self.admission
                .inner
                .logging_in
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.logged_in();
        self.admission.inner.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut per_ip = self.admission.per_ip();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        max: 10,
        per_ip: 2,
        retry_above_logins: 4,
        new_per_sec: 0,
        new_burst: 1,
    };

    fn load(open: usize, logging_in: usize, from_ip: usize) -> Load {
        Load {
            open,
            logging_in,
            from_ip,
        }
    }

    #[test]
    fn unvalidated_addresses_are_retried_under_load_or_at_a_cap() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(decide(&CAPS, load(0, 0, 0), ip, false), Decision::Admit);
        assert_eq!(decide(&CAPS, load(5, 4, 0), ip, false), Decision::Retry);
        assert_eq!(decide(&CAPS, load(5, 4, 0), ip, true), Decision::Admit);
        assert_eq!(decide(&CAPS, load(1, 0, 2), ip, false), Decision::Retry);
        assert_eq!(decide(&CAPS, load(10, 0, 0), ip, false), Decision::Retry);
        let always = Caps {
            retry_above_logins: 0,
            ..CAPS
        };
        assert_eq!(decide(&always, load(0, 0, 0), ip, false), Decision::Retry);
    }

    #[test]
    fn validated_attempts_over_a_cap_are_refused_naming_it() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(decide(&CAPS, load(10, 0, 0), ip, true), Decision::RefuseNow);
        match decide(&CAPS, load(3, 0, 2), ip, true) {
            Decision::RefuseAfterHandshake(why) => {
                assert!(
                    why.contains("192.0.2.7") && why.contains("at most 2"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        let no_ip_cap = Caps { per_ip: 0, ..CAPS };
        assert_eq!(
            decide(&no_ip_cap, load(3, 0, 500), ip, true),
            Decision::Admit
        );
    }
}
