//! Partitions without split brain (issue #11 item 5, design 13.3): three nodes, each in its
//! own network namespace, the test's clients in the root namespace reaching every node
//! through a bridge. The links *between nodes* are cut (both ways, and one way) with wrong
//! static neighbour entries while every client still reaches its node. Asserted: no group
//! is ever able to run on a node that does not own it (every node's `/cluster` and group
//! actor count sampled every 100 ms), requests for a group whose owner is unreachable from
//! a node answer 500 retryable at once from that node while the owner keeps serving its
//! own clients, and after healing everything acknowledged on any side is there: one
//! gap-free history per group, identical through every node.
//!
//! Needs root and `ip netns` (CI has both); elsewhere each test prints why it skips.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use convoke_protocol::{CreateGroupData, ErrorCode};
use convoke_tests::checker::{check_group, read_history, Outcome, OwnerWatch, WatchedNode};
use convoke_tests::cluster::{TestCluster, PEER_TIMEOUT_MS};
use convoke_tests::netns::Netns;
use convoke_tests::{group_data, Peer};

/// Slack on top of the peer timeout: heartbeats, the /cluster poll, a loaded 2-core CI.
const SLACK: Duration = Duration::from_millis(2000);

/// "At once" for a request to a group whose owner is known to be unreachable: far below
/// the request timeout a lost forward would wait.
const AT_ONCE: Duration = Duration::from_millis(1000);

/// The forward timeout of these clusters: a lost forward answers within it.
const REQUEST_TIMEOUT_MS: u64 = 4000;

/// Sends of one group: (payload, outcome).
type Sends = BTreeMap<String, Vec<(Vec<u8>, Outcome)>>;

fn extra(_: usize) -> Vec<(String, String)> {
    vec![(
        "cluster.request_timeout_ms".into(),
        REQUEST_TIMEOUT_MS.to_string(),
    )]
}

/// A 3-node cluster in namespaces, all Up; `None` (printed) where namespaces are missing.
async fn netns_cluster(test: &str) -> Option<TestCluster> {
    let ns = Netns::create(3, test)?;
    let c = TestCluster::start_in_netns(3, ns, extra);
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
    Some(c)
}

/// The three users, `u<i>` on node `i`, and one group owned by each node (index 0: owned
/// by n1), every user a member. Returns the peers, the groups and how many groups each node
/// owns (every creation counts, also the tries owned by another node).
async fn setup(c: &TestCluster) -> (Vec<Peer>, Vec<String>, [usize; 3]) {
    let mut peers = Vec::new();
    for i in 1..=3 {
        peers.push(c.client(i, &format!("u{i}")).await);
    }
    let mut owned = [0usize; 3];
    let mut groups = Vec::new();
    for owner in 1..=3 {
        let gid = loop {
            let gid = peers[0]
                .client
                .create_group(CreateGroupData {
                    invite_need_confirm: false,
                    ..group_data(&format!("g{owner}"), &["u2", "u3"])
                })
                .await
                .unwrap();
            let o: usize = c.owner_of(gid.parse().unwrap())[1..].parse().unwrap();
            owned[o - 1] += 1;
            if o == owner {
                break gid;
            }
        };
        groups.push(gid);
    }
    (peers, groups, owned)
}

/// Watches every node's /cluster and metrics until [`OwnerWatch::finish`].
async fn watch(c: &TestCluster, owned: [usize; 3]) -> OwnerWatch {
    let table = c.status(1).await["shards"]["owners"].clone();
    assert!(table.as_array().is_some_and(|t| t.len() == 3), "{table}");
    let nodes = (1..=3)
        .map(|i| WatchedNode {
            name: format!("n{i}"),
            metrics: c.node(i).metrics.unwrap(),
            owned_groups: owned[i - 1],
        })
        .collect();
    OwnerWatch::start(nodes, table)
}

/// One send, timed.
async fn send(p: &Peer, gid: &str, payload: &str) -> (Outcome, Duration) {
    let t = Instant::now();
    let r = p
        .client
        .send_group_message(gid, payload.as_bytes().to_vec(), false)
        .await;
    (Outcome::of(&r, |s| Some(s.seq)), t.elapsed())
}

/// After healing: every node sees all three Up, then every node serves every group again.
async fn heal_and_settle(c: &TestCluster, peers: &[Peer], groups: &[String], sends: &mut Sends) {
    c.netns().heal_all();
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
    for (i, p) in peers.iter().enumerate() {
        for (k, gid) in groups.iter().enumerate() {
            // Until one is acknowledged; every try has its own payload and is recorded (an
            // unknown outcome may or may not be in history).
            let deadline = Instant::now() + convoke_tests::WAIT;
            for attempt in 0.. {
                let payload = format!("healed-{attempt}-from-n{}-to-g{}", i + 1, k + 1);
                let (o, _) = send(p, gid, &payload).await;
                let ok = o.is_ok();
                sends
                    .entry(gid.clone())
                    .or_default()
                    .push((payload.into_bytes(), o));
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "n{} does not serve g{} after healing: {:?}",
                    i + 1,
                    k + 1,
                    sends[gid].last()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads every group through every node and checks it against the sends.
async fn check_histories(peers: &[Peer], groups: &[String], sends: &Sends) {
    let mut problems = Vec::new();
    for gid in groups {
        let mut reads = BTreeMap::new();
        for (i, p) in peers.iter().enumerate() {
            let h = read_history(&p.client, gid)
                .await
                .unwrap_or_else(|e| panic!("history of {gid} via n{}: {e}", i + 1));
            reads.insert(format!("n{}", i + 1), h);
        }
        let h = &reads["n1"];
        assert!(!h.is_empty(), "group {gid}: no history");
        assert_eq!(
            h[0].seq, 1,
            "group {gid}: history starts at seq {}",
            h[0].seq
        );
        problems.extend(check_group(gid, &reads, &sends[gid]));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The 500 of a request for a group whose owner `owner` is unreachable from the node.
#[track_caller]
fn assert_unreachable(o: &Outcome, took: Duration, owner: usize, what: &str) {
    match o {
        Outcome::Err(ErrorCode::ServerBusy, m) => {
            assert!(m.contains(&format!("n{owner}")), "{what}: {m}");
        }
        other => panic!("{what}: expected 500 naming n{owner}, got {other:?}"),
    }
    assert!(took < AT_ONCE, "{what}: answered after {took:?}");
}

/// n3 cut off from n1 and n2 in both directions while every client still reaches its
/// node: n3 keeps serving its own group to its own client, n1 and n2 keep serving theirs to
/// each other's clients, every cross-partition request is a prompt 500, n3 (no majority)
/// is not ready; after healing all acknowledged messages are there, one order everywhere.
#[tokio::test]
async fn a_node_cut_off_from_the_others_serves_its_own_groups_and_loses_nothing() {
    let Some(c) = netns_cluster("a_node_cut_off_from_the_others").await else {
        return;
    };
    let (peers, groups, owned) = setup(&c).await;
    let watch = watch(&c, owned).await;
    let mut sends = Sends::new();
    for (i, p) in peers.iter().enumerate() {
        for gid in &groups {
            let payload = format!("before-from-n{}-{gid}", i + 1);
            let (o, _) = send(p, gid, &payload).await;
            assert!(o.is_ok(), "{payload}: {o:?}");
            sends
                .entry(gid.clone())
                .or_default()
                .push((payload.into_bytes(), o));
        }
    }

    let ns = c.netns();
    ns.cut_both(3, 1);
    ns.cut_both(3, 2);
    let cut = Instant::now();
    for (i, peer) in [(1, "n3"), (2, "n3"), (3, "n1"), (3, "n2")] {
        c.wait_state(i, peer, "down").await;
    }
    let took = cut.elapsed();
    assert!(
        took <= Duration::from_millis(PEER_TIMEOUT_MS) + SLACK,
        "the partition was seen after {took:?}"
    );
    // A node that sees no majority is not ready; the majority side is.
    assert_eq!(c.node(1).http_get("/readyz").await.0, 200);
    assert_ne!(c.node(3).http_get("/readyz").await.0, 200);

    let same_side = |a: usize, b: usize| a == b || (a != 3 && b != 3);
    for round in 0..3 {
        for (i, p) in peers.iter().enumerate() {
            let node = i + 1;
            for (k, gid) in groups.iter().enumerate() {
                let owner = k + 1;
                let payload = format!("cut-{round}-from-n{node}-to-g{owner}");
                let (o, took) = send(p, gid, &payload).await;
                let what = format!("during the partition, {payload}");
                if same_side(node, owner) {
                    assert!(o.is_ok(), "{what}: {o:?} after {took:?}");
                } else {
                    assert_unreachable(&o, took, owner, &what);
                }
                sends
                    .entry(gid.clone())
                    .or_default()
                    .push((payload.into_bytes(), o));
            }
        }
    }

    heal_and_settle(&c, &peers, &groups, &mut sends).await;
    check_histories(&peers, &groups, &sends).await;
    let (samples, violations) = watch.finish().await;
    assert!(samples >= 10, "only {samples} /cluster samples");
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Only the direction n3 -> n1 is cut (n1's frames still reach n3). Neither side may wait
/// for the other: requests from n1 for n3's group and from n3 for n1's group fail promptly
/// (none waits beyond the peer timeout), n2 still reaches both owners, every owner serves
/// its own clients; after healing nothing acknowledged is lost.
#[tokio::test]
async fn a_one_way_cut_fails_fast_on_both_sides_and_loses_nothing() {
    let Some(c) = netns_cluster("a_one_way_cut").await else {
        return;
    };
    let (peers, groups, owned) = setup(&c).await;
    let watch = watch(&c, owned).await;
    let mut sends = Sends::new();
    for (i, p) in peers.iter().enumerate() {
        for gid in &groups {
            let payload = format!("before-from-n{}-{gid}", i + 1);
            let (o, _) = send(p, gid, &payload).await;
            assert!(o.is_ok(), "{payload}: {o:?}");
            sends
                .entry(gid.clone())
                .or_default()
                .push((payload.into_bytes(), o));
        }
    }

    c.netns().cut(3, 1);
    let cut = Instant::now();
    // Both crossing directions keep sending from the moment of the cut until each answers
    // 500 at once; no single request may wait beyond the peer timeout (plus slack).
    let limit = Duration::from_millis(PEER_TIMEOUT_MS) + SLACK;
    let crossing = |from: usize, owner: usize| {
        let p = &peers[from - 1];
        let gid = groups[owner - 1].clone();
        async move {
            let mut log = Vec::new();
            for n in 0.. {
                let payload = format!("oneway-{n}-from-n{from}-to-g{owner}");
                let (o, took) = send(p, &gid, &payload).await;
                assert!(
                    took <= limit,
                    "n{from} -> g{owner} ({payload}) answered after {took:?}: {o:?}"
                );
                let done = matches!(&o, Outcome::Err(ErrorCode::ServerBusy, m) if m.contains("unreachable"))
                    && took < AT_ONCE;
                log.push((payload.into_bytes(), o));
                if done {
                    break;
                }
                assert!(
                    cut.elapsed() <= limit + SLACK,
                    "n{from} still does not answer g{owner} with a prompt 500 {:?} after the cut: {:?}",
                    cut.elapsed(),
                    log.last()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (gid, log)
        }
    };
    let ((g3, log13), (g1, log31)) = tokio::join!(crossing(1, 3), crossing(3, 1));
    sends.entry(g3).or_default().extend(log13);
    sends.entry(g1).or_default().extend(log31);

    // The owners serve their own clients, n2 reaches both owners.
    for (from, owner) in [(1, 1), (3, 3), (2, 1), (2, 3), (1, 2), (3, 2)] {
        let gid = &groups[owner - 1];
        let payload = format!("oneway-ok-from-n{from}-to-g{owner}");
        let (o, took) = send(&peers[from - 1], gid, &payload).await;
        assert!(o.is_ok(), "{payload}: {o:?} after {took:?}");
        sends
            .entry(gid.clone())
            .or_default()
            .push((payload.into_bytes(), o));
    }

    heal_and_settle(&c, &peers, &groups, &mut sends).await;
    check_histories(&peers, &groups, &sends).await;
    let (samples, violations) = watch.finish().await;
    assert!(samples >= 5, "only {samples} /cluster samples");
    assert!(violations.is_empty(), "{violations:#?}");
}
