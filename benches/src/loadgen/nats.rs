//! The peer: nats-server driven by async-nats with the same pacing, stamps and histograms as
//! the Convoke side. One subscriber connection per member, all on one subject; one publisher.

use super::measure::{self, Clock, Tally, Window, PHASE_MEASURED, PHASE_WARMUP};
use super::pace::{self, Pacer};
use super::report::Outcome;
use super::servers::NatsServer;
use super::{FleetOpts, RunSpec};
use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBJECT: &str = "bench.fanout";
const STALL: Duration = Duration::from_secs(5);

fn options(server: &NatsServer) -> async_nats::ConnectOptions {
    let mut o = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(20))
        .subscription_capacity(1 << 16)
        .max_reconnects(Some(0));
    if let Some(ca) = &server.ca {
        o = o.require_tls(true).add_root_certificates(ca.clone());
    }
    o
}

/// Connects `n` clients, `opts.concurrency` at a time.
async fn connect_all(
    server: &NatsServer,
    n: usize,
    opts: &FleetOpts,
) -> anyhow::Result<Vec<async_nats::Client>> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(n);
    let mut stream = futures::stream::iter(0..n)
        .map(|_| options(server).connect(server.url.clone()))
        .buffered(opts.concurrency.max(1));
    while let Some(c) = stream.next().await {
        out.push(c.with_context(|| format!("cannot connect to {}", server.url))?);
        if n >= 1000 && out.len() % 1000 == 0 {
            eprintln!(
                "  connected {}/{n} ({:.0}/s)",
                out.len(),
                out.len() as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(out)
}

/// Closes `clients` and waits (at most 30 s) until they are closed: async-nats keeps a
/// connection open after its last handle is dropped, and a drain completes only once the
/// server has answered, so this must finish before the server is stopped, or the next run
/// inherits thousands of sockets.
async fn close_all(clients: Vec<async_nats::Client>) {
    for c in &clients {
        let _ = c.drain().await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && clients
            .iter()
            .any(|c| c.connection_state() == async_nats::connection::State::Connected)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn system(server: &NatsServer) -> &'static str {
    if server.ca.is_some() {
        "nats-tls"
    } else {
        "nats"
    }
}

/// Publishes `rate` stamped messages per second for `duration`; returns how many.
async fn publish_paced(
    client: &async_nats::Client,
    rate: f64,
    duration: Duration,
    phase: u8,
    payload: usize,
    clock: Clock,
) -> anyhow::Result<u64> {
    let mut pacer = Pacer::new(rate, duration);
    let mut n = 0;
    while let Some((_, due)) = pacer.next().await {
        let body = Bytes::from(measure::stamp(clock.unix_ns(due), phase, payload));
        client.publish(SUBJECT, body).await?;
        n += 1;
    }
    client.flush().await?;
    Ok(n)
}

/// `fanout` against nats-server: `members` subscribers of one subject.
pub async fn fanout(
    server: &NatsServer,
    members: usize,
    deliveries_per_s: f64,
    run: &RunSpec,
    opts: &FleetOpts,
) -> anyhow::Result<Outcome> {
    let clock = Clock::new();
    let started = Instant::now();
    let subscribers = connect_all(server, members, opts).await?;
    let connects_per_s = members as f64 / started.elapsed().as_secs_f64();
    let tally = Arc::new(Tally::new(clock));
    let mut readers = Vec::with_capacity(members);
    for c in &subscribers {
        let mut sub = c.subscribe(SUBJECT).await?;
        let tally = tally.clone();
        readers.push(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                tally.record_payload(&m.payload);
            }
        }));
    }
    // A flush is answered after the server has processed the SUB before it.
    for c in &subscribers {
        c.flush().await?;
    }
    let publisher = connect_all(server, 1, opts)
        .await?
        .into_iter()
        .next()
        .context("no publisher")?;
    let rate = deliveries_per_s / members as f64;
    let fan = members as u64;
    if !run.warmup.is_zero() {
        let warm_start = std::time::Instant::now();
        let warm = publish_paced(
            &publisher,
            rate,
            run.warmup,
            PHASE_WARMUP,
            run.payload,
            clock,
        )
        .await?;
        let t = tally.clone();
        measure::wait_for_count(move || t.count(PHASE_WARMUP), warm * fan, STALL, run.drain).await;
        pace::continue_after(warm_start, run.warmup).await;
    }
    let window = Window::start(server.pid(), None)?;
    let start_ns = clock.now_ns();
    let sent = publish_paced(
        &publisher,
        rate,
        run.duration,
        PHASE_MEASURED,
        run.payload,
        clock,
    )
    .await?;
    let expected = sent * fan;
    let t = tally.clone();
    let delivered =
        measure::wait_for_count(move || t.count(PHASE_MEASURED), expected, STALL, run.drain).await;
    let w = window.end(server.pid())?;
    let span_s = (tally.last_ns().saturating_sub(start_ns)) as f64 / 1e9;
    let closed = subscribers
        .iter()
        .filter(|c| c.connection_state() != async_nats::connection::State::Connected)
        .count();
    let mut notes = Vec::new();
    if closed > 0 {
        notes.push(format!(
            "{closed} subscribers disconnected (slow consumer?)"
        ));
    }
    Ok(Outcome {
        scenario: "fanout".into(),
        system: system(server).into(),
        connections: members + 1,
        members,
        groups: 1,
        offered_per_s: deliveries_per_s,
        sends_per_s: rate,
        duration_s: run.duration.as_secs_f64(),
        sent,
        expected,
        delivered,
        connects_per_s,
        notes,
        ..Outcome::default()
    }
    .with_window(&w, delivered as u64)
    .with_latency(&tally, delivered, span_s))
}

/// `idle` against nats-server: `connections` connected clients doing nothing.
pub async fn idle(
    server: &NatsServer,
    connections: usize,
    settle: Duration,
    opts: &FleetOpts,
) -> anyhow::Result<Outcome> {
    let first = connect_all(server, 1, opts).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = measure::sample(&server.pid().to_string())?;
    let window = Window::start(server.pid(), None)?;
    let started = Instant::now();
    let clients = connect_all(server, connections, opts).await?;
    let connects_per_s = connections as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let w = window.end(server.pid())?;
    let growth = w.server_rss.saturating_sub(before.rss) as f64;
    let open = clients
        .iter()
        .filter(|c| c.connection_state() == async_nats::connection::State::Connected)
        .count();
    close_all(clients).await;
    close_all(first).await;
    Ok(Outcome {
        scenario: "idle".into(),
        system: system(server).into(),
        connections,
        expected: connections as u64,
        delivered: open as u64,
        rss_per_conn_kib: Some(growth / 1024.0 / connections.max(1) as f64),
        connects_per_s,
        ..Outcome::default()
    }
    .with_window(&w, connections as u64))
}
