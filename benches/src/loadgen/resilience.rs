//! `reconnect` and `resume`: what a lost network costs a client that reconnects by itself
//! (ARCHITECTURE.md, "A dropped connection, client to client"). One receiver reaches the
//! broker through a userspace UDP relay ([`convoke_tests::Relay`]) that adds a one-way delay
//! and can cut the path silently; a sender, connected directly, keeps sending stamped
//! messages to a group of the two. The receiver notices the cut by its idle timeout,
//! reconnects, catches up from history and says `Resumed`.
//!
//! - `reconnect`: rounds of cut, wait for `Reconnecting`, heal (the heal comes during the
//!   back-off before the first attempt, so the attempt meets a healed path). Per round: heal
//!   to `Connected`, to `Resumed` and to the first message handed on after it, and the
//!   attempt's own time (`Connected`'s `took`); with 0-RTT reconnects (the default) and with
//!   1-RTT ones (the client's `zero_rtt(false)`).
//! - `resume`: a long cut at a high rate (long enough that the broker drops the session),
//!   then the catch-up: heal to `Resumed` (everything missed handed on), heal to caught up
//!   with live traffic, the messages recovered from history and the `getGroupMessages`
//!   requests that took (counted by the broker's /metrics).
//!
//! Both check the receiver's messages against the group's history at the end: every seq
//! once, in order, none missing.

use super::measure::{self, Clock, Window, PHASE_MEASURED};
use super::migration::{send_phase, Receipts};
use super::report::NOISE_PCT;
use super::servers::ConvokeServer;
use super::RunSpec;
use anyhow::{bail, Context as _};
use convoke_client::{Client, ConnectionEvent, CreateGroupData, Event, Push, ReconnectPolicy};
use convoke_tests::{Relay, RelayOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a delivery count may stand still before the final drain gives up.
const STALL: Duration = Duration::from_secs(5);
/// Longest wait for one connection event or message before a run fails.
const EVENT_LIMIT: Duration = Duration::from_secs(15);
/// Live traffic before each `reconnect` round's cut.
const LEAD: Duration = Duration::from_millis(300);
/// The `getGroupMessages` requests answered, as the broker counts them.
const REQUESTS: (&str, &str) = ("convoke_requests_total", "method=\"getGroupMessages\"");

/// How the receiver (and the sender) notice a lost network and come back. Short, so that
/// rounds are quick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSettings {
    pub keep_alive_ms: u64,
    pub idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// The back-off before the first attempt after a drop (a random point in its upper
    /// half), doubling per failed attempt up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Whether a reconnect sends its hello in 0-RTT early data.
    pub zero_rtt: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            keep_alive_ms: 200,
            idle_timeout_ms: 1000,
            connect_timeout_ms: 1000,
            backoff_initial_ms: 20,
            backoff_max_ms: 200,
            zero_rtt: true,
        }
    }
}

impl ClientSettings {
    fn describe(&self) -> String {
        format!(
            "keep-alive {} ms, idle timeout {} ms, connect timeout {} ms, back-off {}-{} ms, 0-RTT {}",
            self.keep_alive_ms,
            self.idle_timeout_ms,
            self.connect_timeout_ms,
            self.backoff_initial_ms,
            self.backoff_max_ms,
            if self.zero_rtt { "on" } else { "off" }
        )
    }
}

/// A client for `user` dialing `addr` (the broker, or the relay in front of it).
async fn connect(
    server: &ConvokeServer,
    addr: SocketAddr,
    user: &str,
    s: &ClientSettings,
    events: bool,
) -> anyhow::Result<Client> {
    let ms = Duration::from_millis;
    let mut builder = Client::builder()
        .server_addr(addr)
        .server_name("localhost")
        .ca_pem(std::fs::read(&server.cert)?)
        .token(server.token(user))
        .device_id("loadgen")
        .keep_alive(ms(s.keep_alive_ms), ms(s.idle_timeout_ms))
        .connect_timeout(ms(s.connect_timeout_ms))
        .zero_rtt(s.zero_rtt)
        .reconnect(ReconnectPolicy {
            initial_delay: ms(s.backoff_initial_ms),
            max_delay: ms(s.backoff_max_ms),
            ..ReconnectPolicy::default()
        });
    if !events {
        builder = builder.ignore_events();
    }
    builder
        .connect()
        .await
        .with_context(|| format!("{user} cannot connect"))
}

/// What the receiver's event stream handed on.
#[derive(Debug)]
enum Heard {
    /// A message, and how long after its scheduled send time it was handed on.
    Message {
        latency: Duration,
    },
    State(ConnectionEvent),
}

/// The receiver's events as the scenario reads them, each with the moment it was taken
/// from the client's event stream.
#[derive(Debug)]
struct Ear(mpsc::UnboundedReceiver<(Instant, Heard)>);

impl Ear {
    /// Feeds every message pushed to `client` into `receipts` and hands it and every
    /// connection event on, until the client ends.
    fn listen(client: &Client, receipts: Arc<Receipts>, clock: Clock) -> Self {
        let mut events = client.events();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let at = Instant::now();
                let heard = match event {
                    Event::Push(Push::Message(m)) => {
                        receipts.record(m.seq, &m.payload);
                        let sent = measure::read_stamp(&m.payload).map_or(0, |(ns, _)| ns);
                        let latency = clock.unix_ns(at).saturating_sub(sent);
                        Heard::Message {
                            latency: Duration::from_nanos(latency),
                        }
                    }
                    Event::Connection(c) => Heard::State(c),
                    _ => continue,
                };
                // The scenario may have stopped listening; keep recording.
                let _ = tx.send((at, heard));
            }
        });
        Self(rx)
    }

    async fn next(&mut self) -> anyhow::Result<(Instant, Heard)> {
        match tokio::time::timeout(EVENT_LIMIT, self.0.recv()).await {
            Ok(Some((_, Heard::State(ConnectionEvent::GaveUp { reason, .. })))) => {
                bail!("the receiver gave up: {reason}")
            }
            Ok(Some(heard)) => Ok(heard),
            Ok(None) => bail!("the receiver's event stream ended"),
            Err(_) => bail!("nothing heard from the receiver for {EVENT_LIMIT:?}"),
        }
    }

    /// The next connection event `pick` takes something from, skipping messages and other
    /// events.
    async fn state<T>(
        &mut self,
        what: &str,
        pick: impl Fn(ConnectionEvent) -> Option<T>,
    ) -> anyhow::Result<(Instant, T)> {
        loop {
            let (at, heard) = self
                .next()
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if let Some(t) = match heard {
                Heard::State(e) => pick(e),
                Heard::Message { .. } => None,
            } {
                return Ok((at, t));
            }
        }
    }

    /// The next `Reconnecting`: its attempt and back-off.
    async fn reconnecting(&mut self) -> anyhow::Result<(Instant, u32, Duration)> {
        let (at, (attempt, delay)) = self
            .state("Reconnecting", |e| match e {
                ConnectionEvent::Reconnecting { attempt, delay, .. } => Some((attempt, delay)),
                _ => None,
            })
            .await?;
        Ok((at, attempt, delay))
    }

    /// The next `Connected`: whether it was 0-RTT, and its `took`.
    async fn connected(&mut self) -> anyhow::Result<(Instant, bool, Duration)> {
        let (at, (zero_rtt, took)) = self
            .state("Connected", |e| match e {
                ConnectionEvent::Connected { zero_rtt, took, .. } => Some((zero_rtt, took)),
                _ => None,
            })
            .await?;
        Ok((at, zero_rtt, took))
    }

    /// The next `Resumed`: its `recovered`.
    async fn resumed(&mut self) -> anyhow::Result<(Instant, u64)> {
        self.state("Resumed", |e| match e {
            ConnectionEvent::Resumed { recovered, .. } => Some(recovered),
            _ => None,
        })
        .await
    }

    /// The next message: when it was handed on and its latency.
    async fn message(&mut self) -> anyhow::Result<(Instant, Duration)> {
        loop {
            if let (at, Heard::Message { latency }) =
                self.next().await.context("waiting for a message")?
            {
                return Ok((at, latency));
            }
        }
    }

    /// Everything heard so far and not yet read.
    fn drain(&mut self) -> Vec<(Instant, Heard)> {
        std::iter::from_fn(|| self.0.try_recv().ok()).collect()
    }
}

/// Milliseconds from `from` to `to`.
fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}

/// The `q` quantile of `v`, interpolated between the two nearest ranks.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// A group of `sender` and `receiver`; the receiver resumes it from its first message.
async fn group(sender: &Client, receiver: &Client, name: &str) -> anyhow::Result<Arc<str>> {
    let gid: Arc<str> = sender
        .create_group(CreateGroupData {
            groupname: name.into(),
            members: vec!["receiver".into()],
            ..CreateGroupData::default()
        })
        .await?
        .into();
    receiver.track_group(&gid, 0);
    Ok(gid)
}

/// The seqs the broker holds in `gid`'s history, ascending.
async fn history(client: &Client, gid: &str) -> anyhow::Result<Vec<u64>> {
    let page = convoke_client::protocol::limits::MAX_HISTORY_PAGE;
    let mut seqs: Vec<u64> = Vec::new();
    loop {
        let batch = client
            .get_group_messages(gid, None, Some(seqs.last().copied().unwrap_or(0)), page)
            .await?;
        if batch.is_empty() {
            return Ok(seqs);
        }
        seqs.extend(batch.iter().map(|m| m.seq));
    }
}

/// The receiver's messages against the group's history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Check {
    /// Messages sent, of them refused.
    pub sent: u64,
    pub send_errors: u64,
    /// Messages in the group's history at the end.
    pub history: u64,
    /// Distinct messages the receiver got; of those in history, how many it never got.
    pub received: u64,
    pub lost: u64,
    /// Messages handed on twice, or after one with a higher seq.
    pub repeated: u64,
    pub out_of_order: u64,
}

impl Check {
    /// Whether the receiver's seqs are exactly the history's, in order.
    pub fn gap_free(&self) -> bool {
        self.received == self.history
            && self.lost == 0
            && self.repeated == 0
            && self.out_of_order == 0
    }

    /// Waits until the receiver has every accepted message (or the drain gives up), then
    /// compares its messages with the group's history.
    async fn run(
        receipts: &Arc<Receipts>,
        sender: &Client,
        gid: &str,
        sent: &[u64],
        send_errors: u64,
        drain: Duration,
    ) -> anyhow::Result<Self> {
        let r = receipts.clone();
        measure::wait_for_count(move || r.count(), sent.len() as u64, STALL, drain).await;
        let history = history(sender, gid).await?;
        let f = receipts.figures("receiver", &history, 0);
        Ok(Self {
            sent: sent.len() as u64 + send_errors,
            send_errors,
            history: history.len() as u64,
            received: f.received,
            lost: f.lost,
            repeated: f.repeated,
            out_of_order: f.out_of_order,
        })
    }

    fn describe(&self) -> String {
        format!(
            "received {} / history {} (sent {}, refused {}), lost {}, repeated {}, out of order {}: {}",
            self.received,
            self.history,
            self.sent,
            self.send_errors,
            self.lost,
            self.repeated,
            self.out_of_order,
            if self.gap_free() { "gap-free" } else { "NOT GAP-FREE" }
        )
    }
}

/// Spawns `send_phase` for `duration`: the accepted seqs, the refusals and the first one.
fn sending(
    sender: &Client,
    gid: &Arc<str>,
    rate: f64,
    duration: Duration,
    payload: usize,
    clock: Clock,
) -> tokio::task::JoinHandle<(Vec<u64>, u64, Option<String>)> {
    let (sender, gid) = (sender.clone(), gid.clone());
    tokio::spawn(async move {
        send_phase(
            &sender,
            &gid,
            rate,
            duration,
            PHASE_MEASURED,
            payload,
            clock,
        )
        .await
    })
}

/// Sends and refusals of several phases together.
#[derive(Debug, Default)]
struct Sent {
    seqs: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Sent {
    async fn add(
        &mut self,
        phase: tokio::task::JoinHandle<(Vec<u64>, u64, Option<String>)>,
    ) -> anyhow::Result<()> {
        let (seqs, errors, first) = phase.await?;
        self.seqs.extend(seqs);
        self.errors += errors;
        self.first_error = self.first_error.take().or(first);
        Ok(())
    }
}

// ---- reconnect ----------------------------------------------------------------------------

/// One cut / heal round of `reconnect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Round {
    /// From the cut to `Reconnecting` (the idle timeout noticing it), ms.
    pub detect_ms: f64,
    /// The back-off before the attempt (`Reconnecting`'s `delay`), ms.
    pub backoff_ms: f64,
    /// From the heal to `Connected`, ms.
    pub connected_ms: f64,
    /// The attempt's own time (`Connected`'s `took`: dial, handshakes, hello, welcome), ms.
    pub took_ms: f64,
    /// Whether the hello went in 0-RTT.
    pub zero_rtt: bool,
    /// From the heal to `Resumed` (the missed messages handed on), ms.
    pub resumed_ms: f64,
    /// From the heal to the first message handed on after `Resumed`, ms.
    pub first_message_ms: f64,
    /// `Resumed`'s `recovered`.
    pub recovered: u64,
}

/// The result of one `reconnect` run in one mode.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconnectOutcome {
    /// Always `reconnect`.
    pub scenario: String,
    /// `0-RTT` or `1-RTT` (the receiver's `zero_rtt` setting).
    pub mode: String,
    /// One-way delay of the receiver's path, ms.
    pub delay_ms: f64,
    /// Messages per second into the group.
    pub rate: f64,
    pub client: ClientSettings,
    /// Broker settings beyond the defaults.
    pub settings: Vec<String>,
    pub rounds: Vec<Round>,
    /// `getGroupMessages` requests answered during the rounds (all the receiver's).
    pub history_requests: u64,
    pub check: Check,
    /// CPU used meanwhile by other processes on the machine (noise), percent of one core.
    pub other_cpu_pct: f64,
    pub notes: Vec<String>,
}

/// `reconnect`: see the module documentation. One outcome per mode (`0rtt`, `1rtt`); of
/// `run`, the payload and the drain.
pub async fn reconnect(
    server: &ConvokeServer,
    modes: &[String],
    rounds: usize,
    delay: Duration,
    rate: f64,
    run: &RunSpec,
) -> anyhow::Result<Vec<ReconnectOutcome>> {
    let mut out = Vec::new();
    for mode in modes {
        let zero_rtt = match mode.as_str() {
            "0rtt" => true,
            "1rtt" => false,
            other => bail!("unknown mode {other:?} (0rtt or 1rtt)"),
        };
        let client = ClientSettings {
            zero_rtt,
            ..ClientSettings::default()
        };
        eprintln!("reconnect {mode}: {rounds} rounds, {}", client.describe());
        let o = reconnect_mode(server, &client, rounds, delay, rate, run).await?;
        println!("{}", o.summary());
        out.push(o);
    }
    Ok(out)
}

async fn reconnect_mode(
    server: &ConvokeServer,
    client: &ClientSettings,
    rounds: usize,
    delay: Duration,
    rate: f64,
    run: &RunSpec,
) -> anyhow::Result<ReconnectOutcome> {
    let clock = Clock::new();
    let relay = Relay::start(server.addr, RelayOptions::delay(delay)).await?;
    let receiver = connect(server, relay.addr(), "receiver", client, true).await?;
    let sender = connect(server, server.addr, "sender", client, false).await?;
    let mode = if client.zero_rtt { "0-RTT" } else { "1-RTT" };
    let gid = group(
        &sender,
        &receiver,
        &format!("reconnect-{}", mode.to_lowercase()),
    )
    .await?;
    let receipts = Arc::new(Receipts::new(clock));
    let mut ear = Ear::listen(&receiver, receipts.clone(), clock);
    // Each round sends for long enough to cover the cut, its detection and the resume.
    let round_length = LEAD + Duration::from_millis(client.idle_timeout_ms) * 2;

    let requests_before = server.counter(REQUESTS.0, REQUESTS.1).await?;
    let window = Window::start(server.pid(), Some(server.addr.port()))?;
    let (mut sent, mut results) = (Sent::default(), Vec::new());
    for i in 0..rounds {
        let phase = sending(&sender, &gid, rate, round_length, run.payload, clock);
        tokio::time::sleep(LEAD).await;
        ear.drain();
        relay.cut();
        let cut = Instant::now();
        let (noticed, attempt, delay) = ear.reconnecting().await?;
        relay.heal();
        let heal = Instant::now();
        let (connected, zero_rtt, took) = ear.connected().await?;
        let (resumed, recovered) = ear.resumed().await?;
        let (first, _) = ear.message().await?;
        let r = Round {
            detect_ms: ms_between(cut, noticed),
            backoff_ms: delay.as_secs_f64() * 1e3,
            connected_ms: ms_between(heal, connected),
            took_ms: took.as_secs_f64() * 1e3,
            zero_rtt,
            resumed_ms: ms_between(heal, resumed),
            first_message_ms: ms_between(heal, first),
            recovered,
        };
        eprintln!(
            "  round {}: attempt {attempt}, heal -> Connected {:.1} ms (took {:.1}, 0-RTT {}), \
             -> Resumed {:.1} ms ({} recovered), -> first message {:.1} ms",
            i + 1,
            r.connected_ms,
            r.took_ms,
            r.zero_rtt,
            r.resumed_ms,
            r.recovered,
            r.first_message_ms
        );
        results.push(r);
        sent.add(phase).await?;
    }
    let requests = server.counter(REQUESTS.0, REQUESTS.1).await? - requests_before;
    let w = window.end(server.pid())?;
    let check = Check::run(&receipts, &sender, &gid, &sent.seqs, sent.errors, run.drain).await?;
    receiver.close().await;
    sender.close().await;
    relay.shutdown().await;

    let mut notes: Vec<String> = sent
        .first_error
        .map(|e| format!("first send error: {e}"))
        .into_iter()
        .collect();
    let late_1rtt = results.iter().skip(1).filter(|r| !r.zero_rtt).count();
    if client.zero_rtt && late_1rtt > 0 {
        notes.push(format!(
            "{late_1rtt} reconnects after the first were not 0-RTT"
        ));
    }
    Ok(ReconnectOutcome {
        scenario: "reconnect".into(),
        mode: mode.into(),
        delay_ms: delay.as_secs_f64() * 1e3,
        rate,
        client: client.clone(),
        settings: server.settings.clone(),
        rounds: results,
        history_requests: requests,
        check,
        other_cpu_pct: 100.0 * w.other_cpu_s / w.wall_s.max(1e-9),
        notes,
    })
}

/// p50 and p90 of one figure of some rounds.
fn spread(rounds: &[&Round], f: impl Fn(&Round) -> f64) -> (Option<f64>, Option<f64>) {
    let v: Vec<f64> = rounds.iter().map(|r| f(r)).collect();
    (quantile(&v, 0.5), quantile(&v, 0.9))
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() < 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
        None => "-".into(),
    }
}

/// The notes of a table row over some runs: their own notes, the most CPU other processes
/// used in any of them, and a failed gap check.
fn row_notes<'a>(runs: impl Iterator<Item = (&'a [String], f64, &'a Check)>) -> String {
    let (mut notes, mut other, mut gap_free) = (Vec::new(), 0.0f64, true);
    for (n, o, c) in runs {
        notes.extend(n.iter().cloned());
        other = other.max(o);
        gap_free &= c.gap_free();
    }
    if other > NOISE_PCT {
        notes.push(format!("noise: other processes up to {other:.0}% CPU"));
    }
    if !gap_free {
        notes.push("NOT GAP-FREE".to_string());
    }
    notes.join("; ")
}

fn pair((a, b): (Option<f64>, Option<f64>)) -> String {
    format!("{} / {}", num(a), num(b))
}

impl ReconnectOutcome {
    /// The figures of one run, for the terminal.
    pub fn summary(&self) -> String {
        let rounds: Vec<&Round> = self.rounds.iter().collect();
        let mut s = format!(
            "reconnect {} one-way delay={}ms rate={}/s rounds={} (0-RTT {}) other_cpu={:.0}%\n  \
             p50 / p90 ms: heal->Connected {}, took {}, heal->Resumed {}, heal->first message {}, \
             cut->Reconnecting {}, back-off {}; recovered p50 {}; getGroupMessages {} \n  {}",
            self.mode,
            self.delay_ms,
            self.rate,
            self.rounds.len(),
            self.rounds.iter().filter(|r| r.zero_rtt).count(),
            self.other_cpu_pct,
            pair(spread(&rounds, |r| r.connected_ms)),
            pair(spread(&rounds, |r| r.took_ms)),
            pair(spread(&rounds, |r| r.resumed_ms)),
            pair(spread(&rounds, |r| r.first_message_ms)),
            pair(spread(&rounds, |r| r.detect_ms)),
            pair(spread(&rounds, |r| r.backoff_ms)),
            num(spread(&rounds, |r| r.recovered as f64).0),
            self.history_requests,
            self.check.describe()
        );
        for n in &self.notes {
            let _ = write!(s, "\n  note: {n}");
        }
        s
    }
}

/// The Markdown table of a set of `reconnect` runs: one row per run and mode, then the
/// rounds of all runs of a mode pooled, and the difference of the pooled medians.
pub fn reconnect_markdown(runs: &[ReconnectOutcome]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        return out;
    }
    out.push_str("\n#### Reconnect (cut, `Reconnecting`, heal; per round)\n\n");
    out.push_str(
        "| mode | RTT ms | run | rounds | 0-RTT rounds | heal -> Resumed p50 / p90 ms | heal -> first message p50 / p90 ms | heal -> Connected p50 / p90 ms | took p50 / p90 ms | back-off p50 ms | cut -> Reconnecting p50 ms | recovered p50 | getGroupMessages / round | received / history | lost | repeated | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    // Runs of one delay, mode and set of broker settings are pooled.
    let mut pooled: BTreeMap<(String, String), Vec<&ReconnectOutcome>> = BTreeMap::new();
    for o in runs {
        let mut mode = o.mode.clone();
        if !o.settings.is_empty() {
            let _ = write!(mode, " ({})", o.settings.join(" "));
        }
        pooled
            .entry((format!("{:08.1}", o.delay_ms * 2.0), mode))
            .or_default()
            .push(o);
    }
    for ((_, mode), group) in &pooled {
        let row = |run: String, os: &[&ReconnectOutcome]| {
            let rounds: Vec<&Round> = os.iter().flat_map(|o| &o.rounds).collect();
            let c = |f: fn(&Check) -> u64| os.iter().map(|o| f(&o.check)).sum::<u64>();
            let notes = row_notes(os.iter().map(|o| (&o.notes[..], o.other_cpu_pct, &o.check)));
            let requests = os.iter().map(|o| o.history_requests).sum::<u64>() as f64;
            format!(
                "| {mode} | {} | {run} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} / {} | {} | {} | {} |\n",
                num(Some(os[0].delay_ms * 2.0)),
                rounds.len(),
                rounds.iter().filter(|r| r.zero_rtt).count(),
                pair(spread(&rounds, |r| r.resumed_ms)),
                pair(spread(&rounds, |r| r.first_message_ms)),
                pair(spread(&rounds, |r| r.connected_ms)),
                pair(spread(&rounds, |r| r.took_ms)),
                num(spread(&rounds, |r| r.backoff_ms).0),
                num(spread(&rounds, |r| r.detect_ms).0),
                num(spread(&rounds, |r| r.recovered as f64).0),
                requests / rounds.len().max(1) as f64,
                c(|c| c.received),
                c(|c| c.history),
                c(|c| c.lost),
                c(|c| c.repeated),
                notes
            )
        };
        for (i, o) in group.iter().enumerate() {
            out.push_str(&row((i + 1).to_string(), std::slice::from_ref(o)));
        }
        if group.len() > 1 {
            out.push_str(&row(format!("all {}", group.len()), group));
        }
    }
    let rtts: std::collections::BTreeSet<&String> = pooled.keys().map(|(rtt, _)| rtt).collect();
    for rtt in rtts {
        // The rounds of every run of `mode` at this RTT with the broker's defaults.
        let rounds = |mode: &str| -> Option<Vec<&Round>> {
            let group = pooled.get(&(rtt.clone(), mode.to_string()))?;
            Some(group.iter().flat_map(|o| &o.rounds).collect())
        };
        if let (Some(zero), Some(one)) = (rounds("0-RTT"), rounds("1-RTT")) {
            let diff = |f: fn(&Round) -> f64| {
                num(spread(&one, f)
                    .0
                    .zip(spread(&zero, f).0)
                    .map(|(a, b)| a - b))
            };
            let _ = writeln!(
                out,
                "\nRTT {} ms, 1-RTT minus 0-RTT (medians of all rounds): heal -> Resumed {} ms, took {} ms.",
                num(rtt.parse().ok()),
                diff(|r| r.resumed_ms),
                diff(|r| r.took_ms)
            );
        }
    }
    out
}

// ---- resume -------------------------------------------------------------------------------

/// Broker settings `resume` needs unless `user` sets them: a short idle timeout (the broker
/// drops the cut session) and a history that holds the whole cut at the rate.
pub fn resume_settings(user: &[String]) -> Vec<String> {
    let mut out: Vec<String> = [
        "sessions.idle_timeout_secs=2",
        "messages.history_per_group=100000",
    ]
    .into_iter()
    .filter(|d| {
        let key = d.split('=').next().unwrap_or_default();
        !user.iter().any(|u| u.split('=').next() == Some(key))
    })
    .map(String::from)
    .collect();
    out.extend(user.iter().cloned());
    out
}

/// The result of one `resume` run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeOutcome {
    /// Always `resume`.
    pub scenario: String,
    /// Messages per second into the group.
    pub rate: f64,
    /// One-way delay of the receiver's path, ms.
    pub delay_ms: f64,
    /// From the cut to the heal, s (the cut is healed at the first back-off after the
    /// asked length, so that the attempt meets a healed path).
    pub cut_s: f64,
    pub client: ClientSettings,
    /// Broker settings beyond the defaults.
    pub settings: Vec<String>,
    /// Live latency before the cut (scheduled send to handed on), p50 and p99, ms. The p99
    /// is the bar for "caught up".
    pub live_p50_ms: f64,
    pub live_p99_ms: f64,
    /// From the cut to the first `Reconnecting`, ms.
    pub detect_ms: f64,
    /// Connection attempts announced before the heal.
    pub attempts: u32,
    /// The back-off after the heal before the attempt, ms.
    pub backoff_ms: f64,
    /// From the heal to `Connected`, and the attempt's own `took`, ms.
    pub connected_ms: f64,
    pub took_ms: f64,
    pub zero_rtt: bool,
    /// From the heal to `Resumed` (every missed message handed on), ms.
    pub resumed_ms: f64,
    /// `Resumed`'s `recovered`: messages fetched from history.
    pub recovered: u64,
    /// `getGroupMessages` requests between the heal and `Resumed`.
    pub history_requests: u64,
    /// From the heal to the first message after `Resumed` handed on within the live p99,
    /// ms; and the messages handed on after `Resumed` before it (live ones buffered
    /// during the catch-up).
    pub caught_up_ms: f64,
    pub backlog: u64,
    pub check: Check,
    /// Broker CPU from the heal to the end of sending, percent of one core.
    pub server_cpu_pct: f64,
    /// CPU used meanwhile by other processes on the machine (noise), percent of one core.
    pub other_cpu_pct: f64,
    pub notes: Vec<String>,
}

/// `resume`: see the module documentation. Live traffic for `run.warmup`, a cut of at least
/// `cut`, then `run.duration` of traffic after the heal.
pub async fn resume(
    server: &ConvokeServer,
    rate: f64,
    delay: Duration,
    cut: Duration,
    run: &RunSpec,
) -> anyhow::Result<ResumeOutcome> {
    let clock = Clock::new();
    let client = ClientSettings::default();
    let relay = Relay::start(server.addr, RelayOptions::delay(delay)).await?;
    let receiver = connect(server, relay.addr(), "receiver", &client, true).await?;
    let sender = connect(server, server.addr, "sender", &client, false).await?;
    let gid = group(&sender, &receiver, "resume").await?;
    let receipts = Arc::new(Receipts::new(clock));
    let mut ear = Ear::listen(&receiver, receipts.clone(), clock);
    // The heal comes at the first back-off after `cut`: at most a failed attempt later.
    let slack = Duration::from_millis(client.connect_timeout_ms + client.backoff_max_ms);
    let phase = sending(
        &sender,
        &gid,
        rate,
        run.warmup + cut + slack + run.duration,
        run.payload,
        clock,
    );

    tokio::time::sleep(run.warmup).await;
    let live: Vec<f64> = ear
        .drain()
        .into_iter()
        .filter_map(|(_, h)| match h {
            Heard::Message { latency } => Some(latency.as_secs_f64() * 1e3),
            Heard::State(_) => None,
        })
        .collect();
    let (live_p50, live_p99) = (quantile(&live, 0.5), quantile(&live, 0.99));
    let bar = Duration::from_secs_f64(live_p99.context("no message before the cut")? / 1e3);
    relay.cut();
    let cut_at = Instant::now();
    let (noticed, ..) = ear.reconnecting().await?;
    tokio::time::sleep_until((cut_at + cut).into()).await;
    ear.drain();
    let (_, attempt, backoff) = ear.reconnecting().await?;
    let requests_before = server.counter(REQUESTS.0, REQUESTS.1).await?;
    let window = Window::start(server.pid(), Some(server.addr.port()))?;
    relay.heal();
    let heal = Instant::now();
    let (connected, zero_rtt, took) = ear.connected().await?;
    let (resumed, recovered) = ear.resumed().await?;
    let history_requests = server.counter(REQUESTS.0, REQUESTS.1).await? - requests_before;
    let mut backlog = 0;
    let caught_up = loop {
        let (at, latency) = ear.message().await?;
        if latency <= bar {
            break at;
        }
        backlog += 1;
    };
    let mut sent = Sent::default();
    sent.add(phase).await?;
    let w = window.end(server.pid())?;
    let check = Check::run(&receipts, &sender, &gid, &sent.seqs, sent.errors, run.drain).await?;
    receiver.close().await;
    sender.close().await;
    relay.shutdown().await;

    let o = ResumeOutcome {
        scenario: "resume".into(),
        rate,
        delay_ms: delay.as_secs_f64() * 1e3,
        cut_s: heal.duration_since(cut_at).as_secs_f64(),
        client,
        settings: server.settings.clone(),
        live_p50_ms: live_p50.unwrap_or(f64::NAN),
        live_p99_ms: bar.as_secs_f64() * 1e3,
        detect_ms: ms_between(cut_at, noticed),
        attempts: attempt,
        backoff_ms: backoff.as_secs_f64() * 1e3,
        connected_ms: ms_between(heal, connected),
        took_ms: took.as_secs_f64() * 1e3,
        zero_rtt,
        resumed_ms: ms_between(heal, resumed),
        recovered,
        history_requests,
        caught_up_ms: ms_between(heal, caught_up),
        backlog,
        check,
        server_cpu_pct: 100.0 * w.server_cpu_s / w.wall_s.max(1e-9),
        other_cpu_pct: 100.0 * w.other_cpu_s / w.wall_s.max(1e-9),
        notes: sent
            .first_error
            .map(|e| vec![format!("first send error: {e}")])
            .unwrap_or_default(),
    };
    Ok(o)
}

impl ResumeOutcome {
    /// The figures of one run, for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "resume rate={}/s one-way delay={}ms cut={:.1}s ({} attempts, cut->Reconnecting {:.0} ms) \
             live p50/p99 {:.1}/{:.1} ms server_cpu={:.0}% other_cpu={:.0}%\n  \
             heal->Connected {:.1} ms (back-off {:.1}, took {:.1}, 0-RTT {}), heal->Resumed {:.1} ms, \
             recovered {}, getGroupMessages {}, heal->caught up {:.1} ms ({} buffered live messages before)\n  {}",
            self.rate,
            self.delay_ms,
            self.cut_s,
            self.attempts,
            self.detect_ms,
            self.live_p50_ms,
            self.live_p99_ms,
            self.server_cpu_pct,
            self.other_cpu_pct,
            self.connected_ms,
            self.backoff_ms,
            self.took_ms,
            self.zero_rtt,
            self.resumed_ms,
            self.recovered,
            self.history_requests,
            self.caught_up_ms,
            self.backlog,
            self.check.describe()
        );
        for n in &self.notes {
            let _ = write!(s, "\n  note: {n}");
        }
        s
    }
}

/// The Markdown table of a set of `resume` runs: one row per run, then the medians of the
/// runs at each rate and delay.
pub fn resume_markdown(runs: &[ResumeOutcome]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        return out;
    }
    out.push_str("\n#### Resume (a long cut at a steady rate, then the catch-up)\n\n");
    out.push_str(
        "| msgs/s | RTT ms | run | cut s | attempts | heal -> Connected ms | took ms | 0-RTT | heal -> Resumed ms | Connected -> Resumed ms | recovered | getGroupMessages | heal -> caught up ms | live p50 / p99 ms | received / history | lost | repeated | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut groups: BTreeMap<(u64, u64), Vec<&ResumeOutcome>> = BTreeMap::new();
    for o in runs {
        groups
            .entry((o.rate as u64, (o.delay_ms * 1e3) as u64))
            .or_default()
            .push(o);
    }
    for group in groups.values() {
        let row = |run: String, os: &[&ResumeOutcome]| {
            let med = |f: fn(&ResumeOutcome) -> f64| {
                quantile(&os.iter().map(|o| f(o)).collect::<Vec<_>>(), 0.5)
            };
            let c = |f: fn(&Check) -> u64| os.iter().map(|o| f(&o.check)).sum::<u64>();
            let notes = row_notes(os.iter().map(|o| (&o.notes[..], o.other_cpu_pct, &o.check)));
            format!(
                "| {:.0} | {} | {run} | {} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} |\n",
                os[0].rate,
                num(Some(os[0].delay_ms * 2.0)),
                med(|o| o.cut_s).map_or("-".into(), |v| format!("{v:.1}")),
                med(|o| f64::from(o.attempts)).map_or("-".into(), |v| format!("{v:.0}")),
                num(med(|o| o.connected_ms)),
                num(med(|o| o.took_ms)),
                os.iter().filter(|o| o.zero_rtt).count(),
                os.len(),
                num(med(|o| o.resumed_ms)),
                num(med(|o| o.resumed_ms - o.connected_ms)),
                num(med(|o| o.recovered as f64)),
                num(med(|o| o.history_requests as f64)),
                num(med(|o| o.caught_up_ms)),
                num(med(|o| o.live_p50_ms)),
                num(med(|o| o.live_p99_ms)),
                c(|c| c.received),
                c(|c| c.history),
                c(|c| c.lost),
                c(|c| c.repeated),
                notes
            )
        };
        for (i, o) in group.iter().enumerate() {
            out.push_str(&row((i + 1).to_string(), std::slice::from_ref(o)));
        }
        if group.len() > 1 {
            out.push_str(&row(format!("median of {}", group.len()), group));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert!((quantile(&v, 0.9).unwrap_or_default() - 3.7).abs() < 1e-9);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn resume_settings_yield_to_the_users() {
        let s = resume_settings(&["sessions.idle_timeout_secs=5".into()]);
        assert_eq!(
            s,
            [
                "messages.history_per_group=100000",
                "sessions.idle_timeout_secs=5"
            ]
        );
    }

    #[test]
    fn reconnect_table_pools_runs_and_gives_the_difference() {
        let run = |mode: &str, took: f64| ReconnectOutcome {
            scenario: "reconnect".into(),
            mode: mode.into(),
            delay_ms: 25.0,
            rounds: vec![
                Round {
                    took_ms: took,
                    resumed_ms: took + 60.0,
                    zero_rtt: mode == "0-RTT",
                    ..Round::default()
                };
                4
            ],
            check: Check {
                history: 10,
                received: 10,
                ..Check::default()
            },
            ..ReconnectOutcome::default()
        };
        let runs = [run("0-RTT", 52.0), run("1-RTT", 103.0), run("0-RTT", 52.0)];
        let line = serde_json::to_string(&runs[0]).unwrap_or_default();
        let back: ReconnectOutcome = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(back.rounds.len(), 4);
        let md = reconnect_markdown(&runs);
        assert!(
            md.contains("| 0-RTT | 50 | all 2 | 8 | 8 | 112 / 112 |"),
            "{md}"
        );
        assert!(md.contains("heal -> Resumed 51 ms, took 51 ms"), "{md}");
    }
}
