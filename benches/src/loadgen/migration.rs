//! `migration`: what changing address costs a receiver. Two members of one group receive the
//! same messages at a steady rate; one of them rebinds its UDP socket every so often (a phone
//! moving between networks: QUIC connection migration, same connection and session), the
//! other stays put. Reported per receiver: messages lost or received twice (both must be 0:
//! the event stream is reliable and ordered across a migration) and the send-to-receive
//! latency, and the moving receiver's latency relative to the still one's.

use super::measure::{self, Clock, Tally, Window, PHASE_MEASURED, PHASE_WARMUP};
use super::pace::{self, Pacer};
use super::report::finite;
use super::servers::ConvokeServer;
use super::RunSpec;
use anyhow::Context as _;
use convoke_client::{Client, CreateGroupData, Push};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a delivery count may stand still before the drain gives up.
const STALL: Duration = Duration::from_secs(5);

/// One receiver's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReceiverFigures {
    /// `moving` or `still`.
    pub receiver: String,
    /// Socket rebinds during the run (0 for the still one).
    pub rebinds: u64,
    /// Distinct messages received, of those sent (warm-up and measured).
    pub received: u64,
    /// Sent messages never received.
    pub lost: u64,
    /// Messages received more than once.
    pub repeated: u64,
    /// Messages received after one with a higher sequence number.
    pub out_of_order: u64,
    /// Latency of the measured phase from the scheduled send time, ms.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Why the connection ended, if it did (it must not).
    pub closed: Option<String>,
}

/// The result of one `migration` run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrationOutcome {
    /// Always `migration` (tells these JSON lines from the other scenarios').
    pub scenario: String,
    /// Messages per second into the group.
    pub rate: f64,
    /// Seconds between two rebinds of the moving receiver.
    pub rebind_every_s: f64,
    /// Measured seconds (after the warm-up).
    pub duration_s: f64,
    /// Messages sent (warm-up and measured) and refused.
    pub sent: u64,
    pub send_errors: u64,
    /// The moving receiver, then the still one.
    pub receivers: Vec<ReceiverFigures>,
    /// Broker CPU over the measured phase and its drain, percent of one core.
    pub server_cpu_pct: f64,
    /// CPU used meanwhile by other processes on the machine (noise), percent of one core.
    pub other_cpu_pct: f64,
    /// Broker settings beyond the defaults.
    pub settings: Vec<String>,
    pub notes: Vec<String>,
}

/// Which messages one receiver got, and the latency of the measured ones.
#[derive(Debug)]
pub(super) struct Receipts {
    tally: Tally,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    seqs: HashSet<u64>,
    repeated: u64,
    out_of_order: u64,
    highest: u64,
}

impl Receipts {
    pub(super) fn new(clock: Clock) -> Self {
        Self {
            tally: Tally::new(clock),
            seen: Mutex::new(Seen::default()),
        }
    }

    pub(super) fn record(&self, seq: u64, payload: &[u8]) {
        let first = {
            let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seq < s.highest {
                s.out_of_order += 1;
            }
            s.highest = s.highest.max(seq);
            let first = s.seqs.insert(seq);
            if !first {
                s.repeated += 1;
            }
            first
        };
        // A repeat is counted above, not as a second delivery.
        if first {
            self.tally.record_payload(payload);
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.tally.count(PHASE_WARMUP) + self.tally.count(PHASE_MEASURED)
    }

    pub(super) fn figures(&self, receiver: &str, sent: &[u64], rebinds: u64) -> ReceiverFigures {
        let s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        ReceiverFigures {
            receiver: receiver.into(),
            rebinds,
            received: s.seqs.len() as u64,
            lost: sent.iter().filter(|q| !s.seqs.contains(q)).count() as u64,
            repeated: s.repeated,
            out_of_order: s.out_of_order,
            p50_ms: finite(self.tally.quantile_ms(0.5)),
            p99_ms: finite(self.tally.quantile_ms(0.99)),
            p999_ms: finite(self.tally.quantile_ms(0.999)),
            max_ms: finite(self.tally.max_ms()),
            closed: None,
        }
    }
}

/// Feeds every message pushed to `client` into `receipts`, until the connection ends.
fn receive(client: &Client, receipts: Arc<Receipts>) {
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(push) = events.next_push().await {
            if let Push::Message(m) = push {
                receipts.record(m.seq, &m.payload);
            }
        }
    });
}

/// A client for `user` dialing from its own endpoint on 127.0.0.1 (returned, so it can be
/// moved).
async fn connect(
    server: &ConvokeServer,
    pem: &[u8],
    user: &str,
    events: bool,
) -> anyhow::Result<(Client, quinn::Endpoint)> {
    let endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let mut builder = Client::builder()
        .server_addr(server.addr)
        .server_name("localhost")
        .ca_pem(pem.to_vec())
        .token(server.token(user))
        .device_id("loadgen")
        .endpoint(endpoint.clone());
    if !events {
        builder = builder.ignore_events();
    }
    let client = builder
        .connect()
        .await
        .with_context(|| format!("{user} cannot connect"))?;
    Ok((client, endpoint))
}

/// Rebinds `endpoint` to a new socket on 127.0.0.1 every `every` until aborted, counting the
/// rebinds.
fn keep_moving(
    endpoint: quinn::Endpoint,
    every: Duration,
    rebinds: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            endpoint.rebind(socket)?;
            rebinds.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Sends `rate` stamped messages per second for `duration`; the sequence numbers of those
/// the broker accepted, the refusals and the first refusal.
pub(super) async fn send_phase(
    sender: &Client,
    gid: &Arc<str>,
    rate: f64,
    duration: Duration,
    phase: u8,
    payload: usize,
    clock: Clock,
) -> (Vec<u64>, u64, Option<String>) {
    let mut pacer = Pacer::new(rate, duration);
    let mut pending = Vec::with_capacity(pacer.total() as usize);
    while let Some((_, due)) = pacer.next().await {
        let (client, gid) = (sender.clone(), gid.clone());
        let body = measure::stamp(clock.unix_ns(due), phase, payload);
        pending.push(tokio::spawn(async move {
            client.send_group_message(&gid, body, false).await
        }));
    }
    let (mut seqs, mut errors, mut first) = (Vec::new(), 0, None);
    for p in pending {
        match p.await {
            Ok(Ok(sent)) => seqs.push(sent.seq),
            Ok(Err(e)) => {
                errors += 1;
                first.get_or_insert(e.to_string());
            }
            Err(e) => {
                errors += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    (seqs, errors, first)
}

/// `migration`: see the module documentation.
pub async fn migration(
    server: &ConvokeServer,
    rate: f64,
    rebind_every: Duration,
    run: &RunSpec,
) -> anyhow::Result<MigrationOutcome> {
    let clock = Clock::new();
    let pem = std::fs::read(&server.cert)?;
    let (mover, mover_endpoint) = connect(server, &pem, "moving", true).await?;
    let (still, _still_endpoint) = connect(server, &pem, "still", true).await?;
    let (sender, _sender_endpoint) = connect(server, &pem, "sender", false).await?;
    let gid: Arc<str> = sender
        .create_group(CreateGroupData {
            groupname: "migration".into(),
            members: vec!["moving".into(), "still".into()],
            ..CreateGroupData::default()
        })
        .await?
        .into();
    let receipts = [
        Arc::new(Receipts::new(clock)),
        Arc::new(Receipts::new(clock)),
    ];
    receive(&mover, receipts[0].clone());
    receive(&still, receipts[1].clone());

    let rebinds = Arc::new(AtomicU64::new(0));
    let moving = keep_moving(mover_endpoint, rebind_every, rebinds.clone());
    let mut sent = Vec::new();
    let (mut send_errors, mut first_error) = (0, None);
    if !run.warmup.is_zero() {
        let started = std::time::Instant::now();
        let (s, e, f) = send_phase(
            &sender,
            &gid,
            rate,
            run.warmup,
            PHASE_WARMUP,
            run.payload,
            clock,
        )
        .await;
        sent.extend(s);
        send_errors += e;
        first_error = first_error.or(f);
        pace::continue_after(started, run.warmup).await;
    }
    let window = Window::start(server.pid(), Some(server.addr.port()))?;
    let (s, e, f) = send_phase(
        &sender,
        &gid,
        rate,
        run.duration,
        PHASE_MEASURED,
        run.payload,
        clock,
    )
    .await;
    sent.extend(s);
    send_errors += e;
    first_error = first_error.or(f);
    for r in &receipts {
        let r = r.clone();
        measure::wait_for_count(move || r.count(), sent.len() as u64, STALL, run.drain).await;
    }
    let w = window.end(server.pid())?;
    let wall = w.wall_s.max(1e-9);
    moving.abort();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), moving).await {
        anyhow::bail!("cannot rebind the moving receiver: {e}");
    }

    let mut receivers = Vec::new();
    for (name, client, r, n) in [
        (
            "moving",
            &mover,
            &receipts[0],
            rebinds.load(Ordering::Relaxed),
        ),
        ("still", &still, &receipts[1], 0),
    ] {
        let mut f = r.figures(name, &sent, n);
        if client.is_closed() {
            f.closed = Some(client.closed().await.to_string());
        }
        receivers.push(f);
    }
    Ok(MigrationOutcome {
        scenario: "migration".into(),
        rate,
        rebind_every_s: rebind_every.as_secs_f64(),
        duration_s: run.duration.as_secs_f64(),
        sent: sent.len() as u64 + send_errors,
        send_errors,
        receivers,
        server_cpu_pct: 100.0 * w.server_cpu_s / wall,
        other_cpu_pct: 100.0 * w.other_cpu_s / wall,
        settings: server.settings.clone(),
        notes: first_error
            .map(|e| vec![format!("first send error: {e}")])
            .unwrap_or_default(),
    })
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.1}"),
        None => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

impl MigrationOutcome {
    /// Moving / still latency at p50 and p99.
    fn ratios(&self) -> (String, String) {
        match self.receivers.as_slice() {
            [m, s, ..] => (ratio(m.p50_ms, s.p50_ms), ratio(m.p99_ms, s.p99_ms)),
            _ => ("-".into(), "-".into()),
        }
    }

    /// One line per receiver and the ratios, for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "migration rate={}/s rebind_every={}s duration={}s sent={} send_errors={} \
             server_cpu={:.0}% other_cpu={:.0}%",
            self.rate,
            self.rebind_every_s,
            self.duration_s,
            self.sent,
            self.send_errors,
            self.server_cpu_pct,
            self.other_cpu_pct
        );
        for r in &self.receivers {
            let _ = write!(
                s,
                "\n  {:<6} rebinds={} received={} lost={} repeated={} out_of_order={} \
                 p50={} p99={} p999={} max={}{}",
                r.receiver,
                r.rebinds,
                r.received,
                r.lost,
                r.repeated,
                r.out_of_order,
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.p999_ms),
                ms(r.max_ms),
                r.closed
                    .as_ref()
                    .map(|c| format!(" CLOSED: {c}"))
                    .unwrap_or_default()
            );
        }
        let (p50, p99) = self.ratios();
        let _ = write!(s, "\n  moving / still: p50 {p50}, p99 {p99}");
        for n in &self.notes {
            let _ = write!(s, "\n  note: {n}");
        }
        s
    }
}

/// The Markdown table of a set of migration runs.
pub fn markdown(runs: &[MigrationOutcome]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        return out;
    }
    out.push_str("\n#### Migration (one receiver rebinding its socket, one staying)\n\n");
    out.push_str("| msgs/s | rebind every s | settings | receiver | rebinds | received / sent | lost | repeated | out of order | p50 ms | p99 ms | p99.9 ms | max ms | p50 / p99 moving / still | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for o in runs {
        let (p50, p99) = o.ratios();
        for (i, r) in o.receivers.iter().enumerate() {
            let mut notes: Vec<String> = o.notes.clone();
            if o.other_cpu_pct > super::report::NOISE_PCT {
                notes.push(format!(
                    "noise: other processes {:.0}% CPU",
                    o.other_cpu_pct
                ));
            }
            notes.extend(r.closed.as_ref().map(|c| format!("closed: {c}")));
            let _ = writeln!(
                out,
                "| {:.0} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                o.rate,
                o.rebind_every_s,
                if o.settings.is_empty() {
                    "defaults".to_string()
                } else {
                    o.settings.join(" ")
                },
                r.receiver,
                r.rebinds,
                r.received,
                o.sent - o.send_errors,
                r.lost,
                r.repeated,
                r.out_of_order,
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.p999_ms),
                ms(r.max_ms),
                if i == 0 {
                    format!("{p50} / {p99}")
                } else {
                    String::new()
                },
                notes.join("; ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_count_losses_repeats_and_disorder() {
        let clock = Clock::new();
        let r = Receipts::new(clock);
        let stamp = measure::stamp(clock.now_ns(), PHASE_MEASURED, 16);
        for seq in [1, 2, 2, 4, 3] {
            r.record(seq, &stamp);
        }
        let f = r.figures("moving", &[1, 2, 3, 4, 5], 3);
        assert_eq!(
            (f.received, f.lost, f.repeated, f.out_of_order),
            (4, 1, 1, 1)
        );
        assert_eq!(r.count(), 4, "a repeat is not a second delivery");
        let o = MigrationOutcome {
            scenario: "migration".into(),
            rate: 100.0,
            rebind_every_s: 1.0,
            sent: 5,
            receivers: vec![
                f.clone(),
                ReceiverFigures {
                    receiver: "still".into(),
                    ..f
                },
            ],
            ..MigrationOutcome::default()
        };
        let line = serde_json::to_string(&o).unwrap_or_default();
        let back: MigrationOutcome = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(back.receivers.len(), 2);
        let md = markdown(&[back]);
        assert!(
            md.contains("| 100 | 1 | defaults | moving | 3 | 4 / 5 | 1 | 1 | 1 |"),
            "{md}"
        );
    }
}
