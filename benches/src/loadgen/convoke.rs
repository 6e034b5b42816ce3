//! The Convoke side: members connected by [`super::fleet`], groups made through the API, and
//! the four scenarios (`fanout`, `rooms`, `ops`, `idle`).

use super::fleet::connect_all;
use super::measure::{self, Clock, Tally, Window, PHASE_MEASURED, PHASE_WARMUP};
use super::pace::{self, Pacer};
use super::report::Outcome;
use super::servers::ConvokeServer;
use super::{FleetOpts, RunSpec};
use anyhow::Context as _;
use convoke_client::{Client, CreateGroupData, Push};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a delivery count may stand still before a drain gives up.
const STALL: Duration = Duration::from_secs(5);

/// Feeds every stamped message pushed to `client` into `tally`, until the connection ends.
fn receive(client: &Client, tally: Arc<Tally>) {
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(push) = events.next_push().await {
            if let Push::Message(m) = push {
                tally.record_payload(&m.payload);
            }
        }
    });
}

/// A note naming how many of `clients` the broker closed, and why the first one was closed
/// (a healthy receiver closed as a slow consumer means the broker fell behind).
async fn closed_note(clients: &[Client]) -> Option<String> {
    let closed: Vec<&Client> = clients.iter().filter(|c| c.is_closed()).collect();
    let first = closed.first()?;
    let why = first.closed().await;
    Some(format!(
        "{} of {} receivers were disconnected by the broker (first: {why})",
        closed.len(),
        clients.len()
    ))
}

/// Sent and refused messages (or requests) of one paced phase, with the first refusal.
#[derive(Debug, Default)]
struct Sent {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Sent {
    /// Waits for every request of a phase and counts the answers and refusals.
    async fn collect<T, E: std::fmt::Display>(
        pending: Vec<tokio::task::JoinHandle<Result<T, E>>>,
    ) -> Self {
        let mut sent = Self::default();
        for p in pending {
            let error = match p.await {
                Ok(Ok(_)) => {
                    sent.ok += 1;
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            sent.errors += 1;
            sent.first_error.get_or_insert(error);
        }
        sent
    }
}

/// Sends `rate` messages per second for `duration`, round-robin over `senders` (client and
/// group), each stamped with its due time; waits for every answer.
async fn send_paced(
    senders: &[(Client, Arc<str>)],
    rate: f64,
    duration: Duration,
    phase: u8,
    payload: usize,
    clock: Clock,
) -> Sent {
    let mut pacer = Pacer::new(rate, duration);
    let mut pending = Vec::with_capacity(pacer.total() as usize);
    while let Some((i, due)) = pacer.next().await {
        let (client, gid) = senders[(i % senders.len() as u64) as usize].clone();
        let body = measure::stamp(clock.unix_ns(due), phase, payload);
        pending.push(tokio::spawn(async move {
            client.send_group_message(&gid, body, false).await
        }));
    }
    Sent::collect(pending).await
}

/// Runs warm-up then the measured phase of a messaging scenario where each message reaches
/// `fan` receivers, and fills the common fields of the outcome. `servers`: the broker, or a
/// cluster's nodes (their CPU and RSS summed).
async fn measure_messages(
    servers: &[ConvokeServer],
    senders: &[(Client, Arc<str>)],
    fan: u64,
    sends_per_s: f64,
    run: &RunSpec,
    tally: &Arc<Tally>,
    clock: Clock,
) -> anyhow::Result<Outcome> {
    if !run.warmup.is_zero() {
        let warm_start = std::time::Instant::now();
        let warm = send_paced(
            senders,
            sends_per_s,
            run.warmup,
            PHASE_WARMUP,
            run.payload,
            clock,
        )
        .await;
        let t = tally.clone();
        measure::wait_for_count(
            move || t.count(PHASE_WARMUP),
            warm.ok * fan,
            STALL,
            run.drain,
        )
        .await;
        pace::continue_after(warm_start, run.warmup).await;
    }
    let processes: Vec<(u32, Option<u16>)> = servers
        .iter()
        .map(|s| (s.pid(), Some(s.addr.port())))
        .collect();
    let window = Window::start_all(&processes)?;
    let start_ns = clock.now_ns();
    let sent = send_paced(
        senders,
        sends_per_s,
        run.duration,
        PHASE_MEASURED,
        run.payload,
        clock,
    )
    .await;
    let expected = sent.ok * fan;
    let t = tally.clone();
    let delivered =
        measure::wait_for_count(move || t.count(PHASE_MEASURED), expected, STALL, run.drain).await;
    let w = window.end_all()?;
    let span_s = (tally.last_ns().saturating_sub(start_ns)) as f64 / 1e9;
    let mut notes = Vec::new();
    if let Some(e) = sent.first_error {
        notes.push(format!("first send error: {e}"));
    }
    Ok(Outcome {
        system: "convoke".into(),
        sends_per_s,
        duration_s: run.duration.as_secs_f64(),
        sent: sent.ok + sent.errors,
        send_errors: sent.errors,
        expected,
        delivered,
        settings: servers
            .first()
            .map(|s| s.settings.clone())
            .unwrap_or_default(),
        notes,
        ..Outcome::default()
    }
    .with_window(&w, delivered as u64)
    .with_latency(tally, delivered, span_s))
}

fn group_data(name: String, members: Vec<String>) -> CreateGroupData {
    let maxusers = u32::try_from(members.len() + 1).unwrap_or(u32::MAX).max(3);
    CreateGroupData {
        groupname: name,
        members,
        maxusers: Some(maxusers),
        invite_need_confirm: false,
        ..CreateGroupData::default()
    }
}

/// `fanout`: one group of `members` online receivers and a sender (the owner), messages at
/// `deliveries_per_s / members` per second. `servers`: one broker, or a cluster's nodes:
/// receiver `i` connects to node `i mod nodes` (the members spread evenly), the sender to
/// the first node, and the CPU is summed over the nodes.
pub async fn fanout(
    servers: &[ConvokeServer],
    members: usize,
    deliveries_per_s: f64,
    run: &RunSpec,
    opts: &FleetOpts,
) -> anyhow::Result<Outcome> {
    let clock = Clock::new();
    let first = servers.first().context("no server")?;
    let names: Vec<String> = (0..members).map(|i| format!("m{i:05}")).collect();
    let started = Instant::now();
    let mut receivers = Vec::with_capacity(members);
    for (k, server) in servers.iter().enumerate() {
        let mine: Vec<String> = names
            .iter()
            .skip(k)
            .step_by(servers.len())
            .cloned()
            .collect();
        receivers.push(connect_all(server, &mine, true, opts).await?);
    }
    let receivers: Vec<Client> = receivers.into_iter().flatten().collect();
    let connects_per_s = members as f64 / started.elapsed().as_secs_f64();
    let sender = connect_all(first, &["sender".to_string()], false, opts).await?;
    let sender = sender.into_iter().next().context("no sender")?;
    let gid = sender
        .create_group(group_data("fanout".into(), names))
        .await?;
    let tally = Arc::new(Tally::new(clock));
    for c in &receivers {
        receive(c, tally.clone());
    }
    let rate = deliveries_per_s / members as f64;
    let senders = [(sender, Arc::<str>::from(gid.as_str()))];
    let mut o =
        measure_messages(servers, &senders, members as u64, rate, run, &tally, clock).await?;
    if servers.len() > 1 {
        let owner = super::cluster::owner_of(servers.len(), &gid);
        o.notes.push(format!(
            "{} nodes, {} members each, sender on n1, group owner n{}",
            servers.len(),
            members / servers.len(),
            owner.map_or("?".into(), |i| (i + 1).to_string())
        ));
    }
    o.scenario = "fanout".into();
    o.connections = members + 1;
    o.members = members;
    o.groups = 1;
    o.offered_per_s = deliveries_per_s;
    o.connects_per_s = connects_per_s;
    o.notes.extend(closed_note(&receivers).await);
    Ok(o)
}

/// `rooms`: `groups` groups of `size` members each, every member sending `member_rate`
/// messages per second to its own group.
pub async fn rooms(
    server: &ConvokeServer,
    groups: usize,
    size: usize,
    member_rate: f64,
    run: &RunSpec,
    opts: &FleetOpts,
) -> anyhow::Result<Outcome> {
    let clock = Clock::new();
    let size = size.max(2);
    let names: Vec<String> = (0..groups * size)
        .map(|i| format!("r{:04}u{:03}", i / size, i % size))
        .collect();
    let started = Instant::now();
    let clients = connect_all(server, &names, true, opts).await?;
    let connects_per_s = names.len() as f64 / started.elapsed().as_secs_f64();
    let mut senders = Vec::with_capacity(clients.len());
    for (g, members) in clients.chunks(size).enumerate() {
        let others = names[g * size + 1..(g + 1) * size].to_vec();
        let gid: Arc<str> = members[0]
            .create_group(group_data(format!("room {g}"), others))
            .await?
            .into();
        senders.extend(members.iter().map(|c| (c.clone(), gid.clone())));
    }
    let tally = Arc::new(Tally::new(clock));
    for c in &clients {
        receive(c, tally.clone());
    }
    // Interleave groups so that consecutive sends go to different groups.
    let order: Vec<(Client, Arc<str>)> = (0..size)
        .flat_map(|j| (0..groups).map(move |g| g * size + j))
        .map(|i| senders[i].clone())
        .collect();
    let rate = member_rate * (groups * size) as f64;
    let fan = (size - 1) as u64;
    let mut o = measure_messages(
        std::slice::from_ref(server),
        &order,
        fan,
        rate,
        run,
        &tally,
        clock,
    )
    .await?;
    o.scenario = "rooms".into();
    o.connections = names.len();
    o.members = size;
    o.groups = groups;
    o.offered_per_s = rate * fan as f64;
    o.connects_per_s = connects_per_s;
    o.notes.extend(closed_note(&clients).await);
    Ok(o)
}

/// The i-th management request of a group: mute, unmute (of the same member) and a member
/// attribute update of the owner, cycling through the members.
async fn management_request(
    client: &Client,
    gid: &str,
    owner: &str,
    member: &str,
    j: u64,
) -> Result<(), convoke_client::ClientError> {
    match j % 3 {
        0 => client
            .mute_group_member(gid, &[member], 60_000)
            .await
            .map(drop),
        1 => client.unmute_group_member(gid, &[member]).await,
        _ => {
            let attrs = BTreeMap::from([("score".to_string(), j.to_string())]);
            client.set_group_member_attributes(gid, owner, attrs).await
        }
    }
}

/// `ops`: management requests at `rate` per second, round-robin over `groups` groups of
/// `size` members (each request also announces an event to the group's members).
pub async fn ops(
    server: &ConvokeServer,
    groups: usize,
    size: usize,
    rate: f64,
    run: &RunSpec,
    opts: &FleetOpts,
) -> anyhow::Result<Outcome> {
    let clock = Clock::new();
    let size = size.max(2);
    let names: Vec<String> = (0..groups * size)
        .map(|i| format!("o{:04}u{:03}", i / size, i % size))
        .collect();
    let clients = connect_all(server, &names, false, opts).await?;
    let mut owners = Vec::with_capacity(groups);
    for (g, members) in clients.chunks(size).enumerate() {
        let others = names[g * size + 1..(g + 1) * size].to_vec();
        let gid: Arc<str> = members[0]
            .create_group(group_data(format!("ops {g}"), others))
            .await?
            .into();
        owners.push((members[0].clone(), gid, g));
    }
    let names = Arc::new(names);
    let tally = Arc::new(Tally::new(clock));
    let phase_run = |phase: u8, duration: Duration| {
        let (owners, names, tally) = (owners.clone(), names.clone(), tally.clone());
        async move {
            let mut pacer = Pacer::new(rate, duration);
            let mut pending = Vec::new();
            while let Some((i, due)) = pacer.next().await {
                let (client, gid, g) = owners[(i % groups as u64) as usize].clone();
                let j = i / groups as u64;
                let member = names[g * size + 1 + (j / 3) as usize % (size - 1)].clone();
                let owner = names[g * size].clone();
                let (tally, due_ns) = (tally.clone(), clock.unix_ns(due));
                pending.push(tokio::spawn(async move {
                    let r = management_request(&client, &gid, &owner, &member, j).await;
                    if r.is_ok() {
                        tally.record(due_ns, phase);
                    }
                    r
                }));
            }
            Sent::collect(pending).await
        }
    };
    if !run.warmup.is_zero() {
        let warm_start = std::time::Instant::now();
        phase_run(PHASE_WARMUP, run.warmup).await;
        pace::continue_after(warm_start, run.warmup).await;
    }
    let window = Window::start(server.pid(), Some(server.addr.port()))?;
    let start_ns = clock.now_ns();
    let sent = phase_run(PHASE_MEASURED, run.duration).await;
    let w = window.end(server.pid())?;
    let answered = tally.count(PHASE_MEASURED);
    let span_s = (tally.last_ns().saturating_sub(start_ns)) as f64 / 1e9;
    let total = sent.ok + sent.errors;
    Ok(Outcome {
        scenario: "ops".into(),
        system: "convoke".into(),
        connections: clients.len(),
        members: size,
        groups,
        offered_per_s: rate,
        sends_per_s: rate,
        duration_s: run.duration.as_secs_f64(),
        sent: total,
        send_errors: sent.errors,
        expected: total,
        delivered: answered,
        settings: server.settings.clone(),
        notes: sent
            .first_error
            .map(|e| vec![format!("first error: {e}")])
            .unwrap_or_default(),
        ..Outcome::default()
    }
    .with_window(&w, answered)
    .with_latency(&tally, answered, span_s))
}

/// `idle`: `connections` connected sessions doing nothing; the broker's RSS growth per
/// connection after they settle.
pub async fn idle(
    server: &ConvokeServer,
    connections: usize,
    settle: Duration,
    opts: &FleetOpts,
) -> anyhow::Result<Outcome> {
    // One connection first, so the baseline includes everything a first session initialises.
    let first = connect_all(server, &["idle-first".to_string()], false, opts).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = measure::sample(&server.pid().to_string())?;
    let window = Window::start(server.pid(), Some(server.addr.port()))?;
    let names: Vec<String> = (0..connections).map(|i| format!("i{i:06}")).collect();
    let started = Instant::now();
    let clients = connect_all(server, &names, false, opts).await?;
    let connects_per_s = connections as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let w = window.end(server.pid())?;
    let growth = w.server_rss.saturating_sub(before.rss) as f64;
    let open = clients.iter().filter(|c| !c.is_closed()).count();
    let mut notes = Vec::new();
    if open < connections {
        notes.push(format!(
            "{} connections closed before the sample",
            connections - open
        ));
    }
    drop(first);
    Ok(Outcome {
        scenario: "idle".into(),
        system: "convoke".into(),
        connections,
        expected: connections as u64,
        delivered: open as u64,
        rss_per_conn_kib: Some(growth / 1024.0 / connections.max(1) as f64),
        connects_per_s,
        settings: server.settings.clone(),
        notes,
        ..Outcome::default()
    }
    .with_window(&w, connections as u64))
}
