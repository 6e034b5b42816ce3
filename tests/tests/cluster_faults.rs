//! The checker, Jepsen style (issue #11 item 6, design 13.4): clients on every node send
//! messages with unique payloads, write group announcements with unique values and change
//! membership (guests join and leave public groups), every operation recorded with its
//! invoke and complete time and its outcome (Ok(seq) / Err(code) / Unknown), while a nemesis
//! kills nodes (-9, then restarts them on their data dir), freezes them (SIGSTOP/SIGCONT)
//! and, as root, cuts node-to-node links in network namespaces (both ways and one way).
//! Then everything heals and the checker asserts:
//! - no acknowledged message lost: every Ok send is in history at its seq, through every
//!   node; no message from a failed send (phantoms only from Unknown ones);
//! - one gap-free history per group, identical through every node;
//! - no two owners: every node's `/cluster` and group-actor count sampled every 100 ms;
//! - the announcement register: the final value was written by an Ok/Unknown write, and
//!   not by an Ok write that finished before another Ok write started;
//! - membership: each guest's final membership follows its last acknowledged change
//!   (or an Unknown one);
//! - every request answered within `cluster.request_timeout_ms` + slack, except through a
//!   node that was frozen or killed meanwhile (it cannot answer anything);
//! - every node's RSS stayed under a bound.
//!
//! `CONVOKE_FAULTS_SECS` sets the length of the fault phase (default 16 s here; the long
//! run is `benches/cluster-faults.sh`, results in benches/RESULTS.md).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convoke_client::Client;
use convoke_protocol::CreateGroupData;
use convoke_tests::checker::{check_group, read_history, Outcome, OwnerWatch, WatchedNode};
use convoke_tests::cluster::{free_port, node_ip, TestCluster, PEER_TIMEOUT_MS};
use convoke_tests::netns::Netns;
use convoke_tests::{eventually, group_data, SECRET};

/// The forward timeout of the cluster under test.
const REQUEST_TIMEOUT_MS: u64 = 3000;

/// Slack on top of the request timeout for "answered within its deadline" (a loaded 2-core
/// machine running 3 brokers and the clients).
const SLACK: Duration = Duration::from_secs(3);

/// RSS bound per node.
const RSS_LIMIT_KIB: u64 = 512 * 1024;

const NODES: usize = 3;
const WORKERS: usize = 6;
const GROUPS_PER_NODE: usize = 2;

/// Where a node listens (fixed across restarts, so clients and the watcher find it again).
#[derive(Debug, Clone)]
struct NodeAddr {
    quic: SocketAddr,
    cert: PathBuf,
}

#[derive(Debug, Clone)]
enum Kind {
    Send(Vec<u8>),
    Announce(String),
    Join,
    Leave,
}

#[derive(Debug, Clone)]
struct Op {
    worker: usize,
    node: usize,
    gid: String,
    kind: Kind,
    invoke: Instant,
    complete: Instant,
    outcome: Outcome,
}

/// A fault as it ran: what, on which node (and which other node), from when to when
/// (until the node was Up again everywhere).
#[derive(Debug, Clone)]
struct Window {
    fault: Fault,
    node: usize,
    other: usize,
    from: Instant,
    to: Instant,
}

async fn connect(addr: &NodeAddr, user: &str, device: &str) -> Option<Client> {
    let exp = convoke_broker::clock::now_secs() + 3600;
    let token = convoke_broker::auth::mint(SECRET.as_bytes(), user, false, exp);
    Client::builder()
        .server_addr(addr.quic)
        .server_name("localhost")
        .ca_file(addr.cert.clone())
        .token(token)
        .device_id(device)
        .connect_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS) + SLACK + SLACK)
        .ignore_events()
        .connect()
        .await
        .ok()
}

/// One client of the workload: a worker and its guest, on one node, moving to the next
/// node when the connection is lost.
async fn worker(
    w: usize,
    addrs: Vec<NodeAddr>,
    groups: Vec<String>,
    stop: Arc<AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
    reconnects: Arc<AtomicU64>,
) {
    let me = format!("w{w}");
    let guest = format!("x{w}");
    let mut node = w % NODES;
    let mut conn: Option<(Client, Client)> = None;
    let mut n = 0u64;
    let mut rng = rand::random::<u64>() | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while !stop.load(Ordering::Relaxed) {
        let Some((client, guest_client)) = conn.as_ref() else {
            let dev = format!("d{}", n % 4);
            let c = connect(&addrs[node], &me, &dev).await;
            let g = connect(&addrs[node], &guest, &dev).await;
            match (c, g) {
                (Some(c), Some(g)) => conn = Some((c, g)),
                _ => {
                    node = (node + 1) % NODES;
                    reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            n += 1;
            continue;
        };
        n += 1;
        let gid = groups[(next() % groups.len() as u64) as usize].clone();
        let roll = next() % 100;
        let invoke = Instant::now();
        let (kind, outcome) = if roll < 70 {
            let payload = format!("m-w{w}-{n}").into_bytes();
            let r = client
                .send_group_message(&gid, payload.clone(), false)
                .await;
            (Kind::Send(payload), Outcome::of(&r, |s| Some(s.seq)))
        } else if roll < 85 {
            let value = format!("a-w{w}-{n}");
            let r = client.update_group_announcement(&gid, &value).await;
            (Kind::Announce(value), Outcome::of(&r, |_| None))
        } else if roll < 93 {
            let r = guest_client.join_group(&gid, "hi").await;
            (Kind::Join, Outcome::of(&r, |_| None))
        } else {
            let r = guest_client.leave_group(&gid).await;
            (Kind::Leave, Outcome::of(&r, |_| None))
        };
        let complete = Instant::now();
        // A failure of the client itself (closed, timed out): try another node.
        let moved = matches!(&outcome, Outcome::Unknown(m) if !m.contains("may or may not"));
        ops.lock().unwrap().push(Op {
            worker: w,
            node: node + 1,
            gid,
            kind,
            invoke,
            complete,
            outcome,
        });
        if moved {
            conn = None;
            node = (node + 1) % NODES;
            reconnects.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// The first words of an error message, digits masked (group ids, node names stay apart
/// from counts): a key to count failures by kind.
fn words(m: &str) -> String {
    m.split_whitespace()
        .take(7)
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) && w.len() > 3 {
                "#"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// VmRSS of `pid` in KiB (0 when gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The faults, in turn on nodes 1, 2, 3, 1, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Freeze,
    Isolate,
    OneWay,
}

async fn all_up(c: &TestCluster) {
    for i in 1..=NODES {
        c.wait_up(i, NODES).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_no_lost_write_no_phantom_no_two_owners_under_faults() {
    let secs: u64 = std::env::var("CONVOKE_FAULTS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let netns = Netns::create(NODES, "the_checker (the partition faults)");
    if netns.is_none() {
        println!("the checker runs without its partition faults (kill and freeze only)");
    }
    // Fixed addresses per node: a restarted node is found where it was.
    let ports: Vec<(u16, u16)> = (0..NODES)
        .map(|_| (free_port(NODES), free_port(NODES)))
        .collect();
    let ip = |i: usize| match &netns {
        Some(ns) => ns.ip(i),
        None => node_ip(i),
    };
    let ips: Vec<String> = (1..=NODES).map(ip).collect();
    let extra = move |i: usize| {
        vec![
            (
                "server.listen".to_owned(),
                format!("{}:{}", ips[i - 1], ports[i - 1].0),
            ),
            (
                "metrics.listen".to_owned(),
                format!("{}:{}", ips[i - 1], ports[i - 1].1),
            ),
            (
                "cluster.request_timeout_ms".to_owned(),
                REQUEST_TIMEOUT_MS.to_string(),
            ),
        ]
    };
    let partitions = netns.is_some();
    let mut c = match netns {
        Some(ns) => TestCluster::start_in_netns(NODES, ns, extra),
        None => TestCluster::start_with(NODES, extra),
    };
    all_up(&c).await;
    let addrs: Vec<NodeAddr> = (1..=NODES)
        .map(|i| NodeAddr {
            quic: c.node(i).addr,
            cert: c.node(i).cert.clone(),
        })
        .collect();

    // Users exist once they have logged in.
    for w in 0..WORKERS {
        for u in [format!("w{w}"), format!("x{w}")] {
            c.client(1 + w % NODES, &u).await.client.close().await;
        }
    }
    // Public groups (guests join without approval), every worker a member; each node
    // owns GROUPS_PER_NODE of them.
    let creator = c.client(1, "w0").await;
    let members: Vec<String> = (1..WORKERS).map(|w| format!("w{w}")).collect();
    let member_refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let mut owned = [0usize; NODES];
    let mut groups = Vec::new();
    while owned.iter().any(|&n| n < GROUPS_PER_NODE) {
        let gid = creator
            .client
            .create_group(CreateGroupData {
                public: true,
                ..group_data("checked", &member_refs)
            })
            .await
            .unwrap();
        let o: usize = c.owner_of(gid.parse().unwrap())[1..].parse().unwrap();
        owned[o - 1] += 1;
        if owned[o - 1] <= GROUPS_PER_NODE {
            // Admins may write the announcement.
            for m in &member_refs {
                creator.client.set_group_admin(&gid, m).await.unwrap();
            }
            groups.push(gid);
        }
    }
    let creator_gids = owned;

    let table = c.status(1).await["shards"]["owners"].clone();
    let watch = OwnerWatch::start(
        (1..=NODES)
            .map(|i| WatchedNode {
                name: format!("n{i}"),
                metrics: c.node(i).metrics.unwrap(),
                owned_groups: creator_gids[i - 1],
            })
            .collect(),
        table,
    );

    // Memory: every node's RSS every 200 ms (pids change at restarts).
    let pids: Arc<Mutex<Vec<u32>>> =
        Arc::new(Mutex::new((1..=NODES).map(|i| c.node(i).pid()).collect()));
    let max_rss: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; NODES]));
    let stop_rss = Arc::new(AtomicBool::new(false));
    let rss_task = {
        let (pids, max_rss, stop) = (pids.clone(), max_rss.clone(), stop_rss.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let now: Vec<u64> = pids.lock().unwrap().iter().map(|&p| rss_kib(p)).collect();
                for (m, n) in max_rss.lock().unwrap().iter_mut().zip(now) {
                    *m = (*m).max(n);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let ops: Arc<Mutex<Vec<Op>>> = Arc::new(Mutex::new(Vec::new()));
    let reconnects = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(worker(
                w,
                addrs.clone(),
                groups.clone(),
                stop.clone(),
                ops.clone(),
                reconnects.clone(),
            ))
        })
        .collect();

    // The nemesis.
    let mut windows: Vec<Window> = Vec::new();
    let faults: Vec<Fault> = if partitions {
        vec![Fault::Kill, Fault::Freeze, Fault::Isolate, Fault::OneWay]
    } else {
        println!("SKIPPED partition faults: network namespaces are unavailable (see above)");
        vec![Fault::Kill, Fault::Freeze]
    };
    let start = Instant::now();
    let mut log = Vec::new();
    let mut k = 0usize;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while start.elapsed() < Duration::from_secs(secs) {
        let fault = faults[k % faults.len()];
        let node = 1 + k % NODES;
        let other = 1 + (k + 1) % NODES;
        let t = start.elapsed();
        let from = Instant::now();
        match fault {
            Fault::Kill => {
                c.kill9(node);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                c.restart(node);
                pids.lock().unwrap()[node - 1] = c.node(node).pid();
            }
            Fault::Freeze => {
                c.sigstop(node);
                tokio::time::sleep(Duration::from_millis(2500)).await;
                c.sigcont(node);
            }
            Fault::Isolate => {
                for o in (1..=NODES).filter(|&o| o != node) {
                    c.netns().cut_both(node, o);
                }
                tokio::time::sleep(Duration::from_millis(2500)).await;
                c.netns().heal_all();
            }
            Fault::OneWay => {
                c.netns().cut(node, other);
                tokio::time::sleep(Duration::from_millis(2500)).await;
                c.netns().heal_all();
            }
        }
        log.push(format!("{t:.1?}: {fault:?} n{node} (n{other})"));
        all_up(&c).await;
        windows.push(Window {
            fault,
            node,
            other,
            from,
            to: Instant::now(),
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        k += 1;
    }
    // Heal (already healed after each fault), let the workload run on a healthy cluster.
    all_up(&c).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    stop_rss.store(true, Ordering::Relaxed);
    rss_task.await.unwrap();
    let (samples, owner_violations) = watch.finish().await;
    let ops = std::mem::take(&mut *ops.lock().unwrap());

    // ---- the checks ------------------------------------------------------------------
    let mut problems: Vec<String> = Vec::new();
    let readers: Vec<Client> = {
        let mut v = Vec::new();
        for i in 1..=NODES {
            v.push(c.client(i, "w0").await.client);
        }
        v
    };

    // Messages: lost, phantoms, gaps, one history everywhere.
    for gid in &groups {
        let mut reads = BTreeMap::new();
        for (i, r) in readers.iter().enumerate() {
            let h = eventually(&format!("history of {gid} via n{}", i + 1), || async {
                read_history(r, gid).await.ok()
            })
            .await;
            reads.insert(format!("n{}", i + 1), h);
        }
        if reads["n1"].first().is_some_and(|m| m.seq != 1) {
            problems.push(format!("group {gid}: history does not start at seq 1"));
        }
        let sends: Vec<(Vec<u8>, Outcome)> = ops
            .iter()
            .filter(|o| &o.gid == gid)
            .filter_map(|o| match &o.kind {
                Kind::Send(p) => Some((p.clone(), o.outcome.clone())),
                _ => None,
            })
            .collect();
        problems.extend(check_group(gid, &reads, &sends));
    }

    // The announcement register.
    for gid in &groups {
        let mut values = Vec::new();
        for r in &readers {
            values.push(r.fetch_group_announcement(gid).await.unwrap());
        }
        if values.iter().any(|v| *v != values[0]) {
            problems.push(format!(
                "group {gid}: announcements differ by node: {values:?}"
            ));
            continue;
        }
        let last = &values[0];
        let writes: Vec<&Op> = ops
            .iter()
            .filter(|o| &o.gid == gid && matches!(o.kind, Kind::Announce(_)))
            .collect();
        if last.is_empty() {
            if let Some(w) = writes.iter().find(|o| o.outcome.is_ok()) {
                problems.push(format!(
                    "group {gid}: acknowledged announcement {:?} lost",
                    w.kind
                ));
            }
            continue;
        }
        match writes
            .iter()
            .find(|o| matches!(&o.kind, Kind::Announce(v) if v == last))
        {
            None => problems.push(format!("group {gid}: announcement {last:?} never written")),
            Some(w) if !w.outcome.maybe_done() => problems.push(format!(
                "group {gid}: announcement {last:?} from a failed write {:?}",
                w.outcome
            )),
            Some(w) if w.outcome.is_ok() => {
                if let Some(later) = writes
                    .iter()
                    .find(|o| o.outcome.is_ok() && o.invoke > w.complete)
                {
                    problems.push(format!(
                        "group {gid}: final announcement {last:?} was overwritten by {:?} (acknowledged, started after it completed)",
                        later.kind
                    ));
                }
            }
            Some(_) => {}
        }
    }

    // Membership of each guest in each group.
    for gid in &groups {
        let mut lists = Vec::new();
        for r in &readers {
            let mut m: Vec<String> = r
                .list_group_members(gid, 1, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.user_id)
                .collect();
            m.sort();
            lists.push(m);
        }
        if lists.iter().any(|l| *l != lists[0]) {
            problems.push(format!(
                "group {gid}: member lists differ by node: {lists:?}"
            ));
            continue;
        }
        for w in 0..WORKERS {
            let guest = format!("x{w}");
            let is_member = lists[0].contains(&guest);
            let changes: Vec<&Op> = ops
                .iter()
                .filter(|o| &o.gid == gid && o.worker == w)
                .filter(|o| matches!(o.kind, Kind::Join | Kind::Leave))
                .collect();
            let effect = |o: &Op| matches!(o.kind, Kind::Join);
            let mut allowed: Vec<bool> = match changes.iter().rev().find(|o| o.outcome.is_ok()) {
                Some(o) => vec![effect(o)],
                None => vec![false],
            };
            allowed.extend(
                changes
                    .iter()
                    .filter(|o| matches!(o.outcome, Outcome::Unknown(_)))
                    .map(|o| effect(o)),
            );
            if !allowed.contains(&is_member) {
                problems.push(format!(
                    "group {gid}: {guest} member={is_member}, but its changes were {:?}",
                    changes
                        .iter()
                        .map(|o| (&o.kind, &o.outcome))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }

    // Deadlines: every request answered in time, unless it was sent to a node that was
    // frozen or dead meanwhile (nothing there can answer; the client notices by its own
    // timeout or when the restarted node resets the connection).
    let deadline = Duration::from_millis(REQUEST_TIMEOUT_MS) + SLACK;
    let mut excused = 0usize;
    let mut slowest = Duration::ZERO;
    let mut slowest_op = String::new();
    let during = |o: &Op| -> Vec<String> {
        windows
            .iter()
            .filter(|w| o.invoke <= w.to && o.complete >= w.from)
            .map(|w| {
                format!(
                    "{:?} n{} (n{}) {:.1?}..{:.1?}",
                    w.fault,
                    w.node,
                    w.other,
                    w.from - start,
                    w.to - start
                )
            })
            .collect()
    };
    for o in &ops {
        let dead_ingress = windows.iter().any(|w| {
            matches!(w.fault, Fault::Freeze | Fault::Kill)
                && w.node == o.node
                && o.invoke <= w.to
                && o.complete >= w.from
        });
        if dead_ingress {
            excused += 1;
            continue;
        }
        let took = o.complete - o.invoke;
        if took > slowest {
            slowest = took;
            slowest_op = format!("{:?} via n{}: {:?}", o.kind, o.node, o.outcome);
        }
        if took > deadline {
            problems.push(format!(
                "op {:?} by w{} on {} (owner {}) via n{} at {:.1?} took {took:?} (> {deadline:?}): {:?}; faults meanwhile: {:?}",
                o.kind,
                o.worker,
                o.gid,
                c.owner_of(o.gid.parse().unwrap()),
                o.node,
                o.invoke.saturating_duration_since(start),
                o.outcome,
                during(o)
            ));
        }
    }

    // Memory.
    let rss = max_rss.lock().unwrap().clone();
    for (i, r) in rss.iter().enumerate() {
        if *r > RSS_LIMIT_KIB {
            problems.push(format!(
                "n{}: RSS reached {r} KiB (> {RSS_LIMIT_KIB})",
                i + 1
            ));
        }
    }

    // ---- the report --------------------------------------------------------------------
    let count = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    let sends_ok = count(&|o| matches!(o.kind, Kind::Send(_)) && o.outcome.is_ok());
    println!(
        "checker: {secs} s of faults, {} faults: {log:#?}\n\
         ops {} (ok {}, err {}, unknown {}); acknowledged sends {sends_ok}; reconnects {}; \
         slowest answer {slowest:?} ({slowest_op}; {excused} ops sent to a frozen or dead node excused); \
         /cluster sample rounds {samples}; max RSS KiB per node {rss:?}; peer timeout {PEER_TIMEOUT_MS} ms",
        log.len(),
        ops.len(),
        count(&|o| o.outcome.is_ok()),
        count(&|o| matches!(o.outcome, Outcome::Err(..))),
        count(&|o| matches!(o.outcome, Outcome::Unknown(_))),
        reconnects.load(Ordering::Relaxed),
    );
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for o in &ops {
        let key = match &o.outcome {
            Outcome::Ok(_) => continue,
            Outcome::Err(code, m) => format!("err {code}: {}", words(m)),
            Outcome::Unknown(m) => format!("unknown: {}", words(m)),
        };
        *why.entry(key).or_default() += 1;
    }
    println!("checker: failures by kind: {why:#?}");
    assert!(
        owner_violations.is_empty(),
        "two owners: {owner_violations:#?}"
    );
    assert!(samples >= 20, "only {samples} /cluster sample rounds");
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );
    assert!(
        sends_ok >= 50,
        "only {sends_ok} acknowledged sends: no progress"
    );
    assert!(!log.is_empty(), "no fault was injected");
}

fn message(seq: u64, payload: &str) -> convoke_protocol::GroupMessage {
    convoke_protocol::GroupMessage {
        seq,
        payload: payload.as_bytes().to_vec(),
        ..convoke_protocol::GroupMessage::example()
    }
}

/// The checker's history check finds what it must: an acknowledged send lost, one at
/// another seq, a message from a failed send, a message never sent, a gap, and histories
/// that differ by node; an Unknown send may or may not be there.
#[test]
fn the_history_check_catches_lost_writes_phantoms_gaps_and_divergence() {
    let ok = |s| Outcome::Ok(Some(s));
    let sends = vec![
        (b"a".to_vec(), ok(1)),
        (b"b".to_vec(), ok(2)),
        (b"u".to_vec(), Outcome::Unknown("request timed out".into())),
        (
            b"f".to_vec(),
            Outcome::Err(
                convoke_protocol::ErrorCode::ServerBusy,
                "unreachable".into(),
            ),
        ),
    ];
    let good = vec![message(1, "a"), message(2, "b"), message(3, "u")];
    let reads = |hs: Vec<Vec<convoke_protocol::GroupMessage>>| {
        hs.into_iter()
            .enumerate()
            .map(|(i, h)| (format!("n{}", i + 1), h))
            .collect::<BTreeMap<_, _>>()
    };
    assert!(check_group("g", &reads(vec![good.clone(), good.clone()]), &sends).is_empty());
    // The unknown send may be missing.
    let without_unknown = vec![message(1, "a"), message(2, "b")];
    assert!(check_group("g", &reads(vec![without_unknown]), &sends).is_empty());
    let cases: Vec<(&str, Vec<Vec<convoke_protocol::GroupMessage>>)> = vec![
        ("lost", vec![vec![message(1, "a")]]),
        ("is at seq", vec![vec![message(1, "b"), message(2, "a")]]),
        (
            "failed send",
            vec![vec![message(1, "a"), message(2, "b"), message(3, "f")]],
        ),
        (
            "never sent",
            vec![vec![message(1, "a"), message(2, "b"), message(3, "z")]],
        ),
        (
            "followed by",
            vec![vec![message(1, "a"), message(2, "b"), message(4, "u")]],
        ),
        (
            "differs",
            vec![good.clone(), vec![message(1, "a"), message(2, "b")]],
        ),
    ];
    for (want, hs) in cases {
        let problems = check_group("g", &reads(hs), &sends);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "expected a problem with {want:?}, got {problems:?}"
        );
    }
}
