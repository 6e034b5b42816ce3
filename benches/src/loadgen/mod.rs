//! `convoke-loadgen`: open-loop load against a real `convoke` broker and, side by side,
//! against nats-server, through their public clients.
//!
//! - [`attack`]: abuse under load: one attack at a time while a normal client works.
//! - [`servers`]: the systems under test as child processes, pinned to a core.
//! - [`cluster`]: a local cluster of Convoke nodes, and the `forward` scenario.
//! - [`fleet`]: many Convoke connections over a few shared QUIC endpoints.
//! - [`convoke`]: the `fanout`, `rooms`, `ops` and `idle` scenarios against Convoke.
//! - [`nats`]: the same `fanout` and `idle` scenarios with async-nats.
//! - [`migration`]: a receiver that keeps changing its UDP address against one that stays.
//! - [`resilience`]: a receiver whose network is cut and healed: reconnect and resume times.
//! - [`pace`]: due times of an open-loop schedule.
//! - [`measure`]: stamps, latency histograms, CPU/RSS from /proc, UDP error counters.
//! - [`report`]: one [`report::Outcome`] per run, as JSON lines and as Markdown tables.

pub mod attack;
pub mod cluster;
pub mod convoke;
pub mod fleet;
pub mod measure;
pub mod migration;
pub mod nats;
pub mod pace;
pub mod report;
pub mod resilience;
pub mod servers;

use std::time::Duration;

/// How the load generator opens its connections.
#[derive(Debug, Clone)]
pub struct FleetOpts {
    /// Convoke connections per shared QUIC endpoint (UDP socket).
    pub per_endpoint: usize,
    /// SO_RCVBUF/SO_SNDBUF of each shared socket, bytes (the kernel caps it at rmem_max).
    pub rcvbuf: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

/// The phases of a messaging run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Measured phase.
    pub duration: Duration,
    /// Unmeasured traffic at the same rate before it.
    pub warmup: Duration,
    /// Longest wait for the last deliveries after the measured phase.
    pub drain: Duration,
    /// Payload bytes per message (at least the 9-byte stamp).
    pub payload: usize,
}
