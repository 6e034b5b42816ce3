//! Cross-node fan-out over real processes (issue #11 item 3, and the fan-out half of item
//! 4): one `Deliver` per other node per message or event whatever the number of members
//! there, every node in the owner's order, multi-device users on several nodes, logout,
//! a frozen node that neither stalls the others nor grows the sender's memory. (The
//! presence directory's bytes per user are measured by a unit test of
//! broker/src/cluster/presence.rs.)
//!
//! Every user first connects once to node 1, then to its own node; groups are created
//! through node 1 and owned by whichever node their shard names (requests are forwarded
//! to it). The fan-out's origin is the owner, so the counts are summed over the nodes.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use convoke_protocol::{GroupEventOp as Op, Push};
use convoke_tests::cluster::TestCluster;
use convoke_tests::{eventually, group_data, Peer};

const SENT: &str = "convoke_cluster_deliveries_sent_total";
const RECEIVED: &str = "convoke_cluster_deliveries_received_total";
const DROPPED: &str = "convoke_cluster_deliveries_dropped_total";
const PRESENCE: &str = "convoke_cluster_presence_users";

/// How long a busy 2-core machine may take for something that should happen.
const LONG: Duration = Duration::from_secs(30);

/// Connects `users` (name, node) after making each exist on node 1; waits until every node's
/// presence directory knows the users online on the other nodes.
async fn spread(c: &TestCluster, users: &[(&str, usize)]) -> BTreeMap<String, Peer> {
    for (u, _) in users {
        let p = c.client(1, u).await;
        p.client.close().await;
    }
    c.node(1).wait_for_sessions(0).await;
    let mut out = BTreeMap::new();
    for (u, i) in users {
        out.insert((*u).to_owned(), c.client(*i, u).await);
    }
    wait_presence(c, users, 3).await;
    out
}

/// Waits until node k's directory counts, for each other node j, the users online on j.
async fn wait_presence(c: &TestCluster, users: &[(&str, usize)], nodes: usize) {
    for k in 1..=nodes {
        for j in (1..=nodes).filter(|&j| j != k) {
            let mut on_j: Vec<&str> = users
                .iter()
                .filter(|(_, i)| *i == j)
                .map(|(u, _)| *u)
                .collect();
            on_j.sort_unstable();
            on_j.dedup();
            let want = on_j.len() as f64;
            let peer = format!("n{j}");
            eventually(
                &format!("node {k} to know {want} users on n{j}"),
                || async {
                    (c.metric_with(k, PRESENCE, "peer", &peer).await == want).then_some(())
                },
            )
            .await;
        }
    }
}

/// Per node, a metric's value.
async fn per_node(c: &TestCluster, name: &str, nodes: usize) -> Vec<f64> {
    let mut v = Vec::new();
    for i in 1..=nodes {
        v.push(c.metric(i, name).await);
    }
    v
}

/// Waits until the Delivers sent over all nodes grew by exactly `n` since `before` (and
/// checks that it does not grow further for a moment); returns the received counts per node.
async fn assert_sent(c: &TestCluster, before: f64, n: f64) {
    eventually(&format!("{n} more deliveries sent"), || async {
        (c.metric_all(SENT).await - before >= n).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.metric_all(SENT).await - before, n, "deliveries sent");
}

fn cast(n: usize) -> Vec<(String, usize)> {
    (0..n).map(|i| (format!("u{i:02}"), i % 3 + 1)).collect()
}

fn refs(v: &[(String, usize)]) -> Vec<(&str, usize)> {
    v.iter().map(|(u, i)| (u.as_str(), *i)).collect()
}

#[tokio::test]
async fn a_message_and_an_event_cross_to_each_other_node_once() {
    let c = TestCluster::start(3).await;
    // 20 members over 3 nodes (7, 7, 6) and an outsider on each node.
    let mut users = cast(20);
    users.extend([("x1".into(), 1), ("x2".into(), 2), ("x3".into(), 3)]);
    let mut p = spread(&c, &refs(&users)).await;
    let members: Vec<String> = users[1..20].iter().map(|(u, _)| u.clone()).collect();
    let member_refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let gid = p["u00"]
        .client
        .create_group(group_data("g", &member_refs))
        .await
        .unwrap();
    for m in &members {
        p.get_mut(m).unwrap().expect(Op::DirectJoined).await;
    }

    // One message: +1 Deliver per other node, not per member.
    let sent0 = c.metric_all(SENT).await;
    let recv0 = per_node(&c, RECEIVED, 3).await;
    let ack = p["u00"]
        .client
        .send_group_message(&gid, b"hello".to_vec(), false)
        .await
        .unwrap();
    for m in &members {
        let msg = p.get_mut(m).unwrap().expect_message().await;
        assert_eq!((msg.seq, msg.payload.as_slice()), (ack.seq, &b"hello"[..]));
    }
    assert_sent(&c, sent0, 2.0).await;
    let recv1 = per_node(&c, RECEIVED, 3).await;
    let mut got: Vec<f64> = recv1.iter().zip(&recv0).map(|(a, b)| a - b).collect();
    got.sort_by(f64::total_cmp);
    assert_eq!(
        got,
        vec![0.0, 1.0, 1.0],
        "one node sent, each other got one"
    );
    // The node holding the group (node 1, or the owner once requests are forwarded).
    let origin = 1 + recv1.iter().zip(&recv0).position(|(a, b)| a == b).unwrap();

    // An event to every member: the same.
    let sent1 = c.metric_all(SENT).await;
    p["u00"]
        .client
        .update_group_announcement(&gid, "read the rules")
        .await
        .unwrap();
    for m in &members {
        p.get_mut(m).unwrap().expect(Op::UpdateAnnouncement).await;
    }
    assert_sent(&c, sent1, 2.0).await;

    // An event to two users (setGroupAdmin tells the owner, on node 1, and the admins: u01
    // on node 2; the owner made the request): it crosses only to those of their nodes that
    // do not hold the group, and nobody else gets it.
    let sent2 = c.metric_all(SENT).await;
    p["u00"].client.set_group_admin(&gid, "u01").await.unwrap();
    p.get_mut("u01").unwrap().expect(Op::SetAdmin).await;
    let crossing = [1, 2].iter().filter(|&&n| n != origin).count();
    assert_sent(&c, sent2, crossing as f64).await;
    // u02, u03, u04: one member on each node.
    for m in &members[1..4] {
        p.get_mut(m).unwrap().expect_quiet().await;
    }

    // Exactly the recipients: not the outsiders, not the requesting device.
    for u in ["x1", "x2", "x3", "u00"] {
        p.get_mut(u).unwrap().expect_quiet().await;
    }
}

#[tokio::test]
async fn every_member_on_every_node_sees_the_groups_messages_and_events_in_one_order() {
    let c = TestCluster::start(3).await;
    let users = cast(9);
    let mut p = spread(&c, &refs(&users)).await;
    let members: Vec<&str> = users[1..].iter().map(|(u, _)| u.as_str()).collect();
    let gid = p["u00"]
        .client
        .create_group(group_data("g", &members))
        .await
        .unwrap();
    for m in &members {
        p.get_mut(*m).unwrap().expect(Op::DirectJoined).await;
    }
    // Three senders, one on each node, 10 messages each, while the group's owner user
    // (u00, on node 1) changes the announcement 5 times: all at once, through whichever node holds the group.
    let senders = ["u00", "u04", "u08"];
    let mut tasks = Vec::new();
    for s in senders {
        let client = p[s].client.clone();
        let gid = gid.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..10 {
                client
                    .send_group_message(&gid, format!("{s}-{k}").into_bytes(), false)
                    .await
                    .unwrap();
            }
        }));
    }
    let owner = p["u00"].client.clone();
    let g = gid.clone();
    tasks.push(tokio::spawn(async move {
        for k in 0..5 {
            owner
                .update_group_announcement(&g, &format!("a{k}"))
                .await
                .unwrap();
        }
    }));
    for t in tasks {
        t.await.unwrap();
    }
    // Every receiver (two on each node) sees the same 35 pushes in the same order:
    // messages by seq, gap-free, and the events where the owner put them.
    let mut first: Option<Vec<String>> = None;
    for (u, node) in users.iter().filter(|(u, _)| !senders.contains(&u.as_str())) {
        let peer = p.get_mut(u).unwrap();
        let mut seen = Vec::new();
        let mut last = 0;
        for _ in 0..35 {
            match peer.next_push().await {
                Push::Message(m) => {
                    assert_eq!(m.seq, last + 1, "{u} on n{node}: a gap or a reorder");
                    last = m.seq;
                    seen.push(format!(
                        "m {} {}",
                        m.seq,
                        String::from_utf8_lossy(&m.payload)
                    ));
                }
                Push::Group(ev) if ev.operation == Op::UpdateAnnouncement => {
                    seen.push(format!("e {:?}", ev.detail));
                }
                other => panic!("{u} on n{node}: unexpected {other:?}"),
            }
        }
        peer.expect_quiet().await;
        match &first {
            None => first = Some(seen),
            Some(f) => assert_eq!(&seen, f, "{u} on n{node} saw another order"),
        }
    }
    // The senders get the others' messages (not their own), in the same order.
    let order = first.unwrap();
    for s in senders {
        let want: Vec<&String> = order
            .iter()
            // Not its own messages; the owner not its own announcements either.
            .filter(|t| !t.contains(&format!(" {s}-")))
            .filter(|t| !(s == "u00" && t.starts_with("e ")))
            .collect();
        let peer = p.get_mut(s).unwrap();
        let mut seen = Vec::new();
        for _ in 0..want.len() {
            match peer.next_push().await {
                Push::Message(m) => seen.push(format!(
                    "m {} {}",
                    m.seq,
                    String::from_utf8_lossy(&m.payload)
                )),
                Push::Group(ev) => seen.push(format!("e {:?}", ev.detail)),
                other => panic!("{s}: unexpected {other:?}"),
            }
        }
        assert_eq!(seen.iter().collect::<Vec<_>>(), want, "{s}");
        peer.expect_quiet().await;
    }
}

#[tokio::test]
async fn a_user_on_two_nodes_gets_events_on_both_never_on_the_requesting_device() {
    let c = TestCluster::start(3).await;
    let users = [("mia", 1), ("bo", 2), ("cy", 3)];
    let mut p = spread(&c, &users).await;
    let gid = p["mia"]
        .client
        .create_group(group_data("g", &["bo", "cy"]))
        .await
        .unwrap();
    p.get_mut("bo").unwrap().expect(Op::DirectJoined).await;
    p.get_mut("cy").unwrap().expect(Op::DirectJoined).await;
    // Mia's laptop on node 1, phone on node 2 and tablet on node 3 (her first sessions
    // there). The requests come from a device on a node that does not own the group, so
    // that the skip of the requesting session crosses nodes (the owner's fan-out to that
    // node names the session to leave out).
    let phone = c.node(2).connect_device("mia", "phone").await;
    let tablet = c.node(3).connect_device("mia", "tablet").await;
    let all = [("mia", 1), ("bo", 2), ("cy", 3), ("mia", 2), ("mia", 3)];
    wait_presence(&c, &all, 3).await;
    let laptop = p.remove("mia").unwrap();
    let mut devices = [laptop, phone, tablet];
    let owner: usize = c.owner_of(gid.parse().unwrap())[1..].parse().unwrap();
    let from = if owner == 1 { 1 } else { 0 };
    let attrs: BTreeMap<String, String> = [("nickname".to_owned(), "Mi".to_owned())].into();
    devices[from]
        .client
        .set_group_member_attributes(&gid, "mia", attrs)
        .await
        .unwrap();
    for (i, dev) in devices.iter_mut().enumerate() {
        if i != from {
            let ev = dev.expect_multi_device(Op::MemberAttributesUpdate).await;
            assert_eq!(ev.from, "mia");
        }
    }
    for u in ["bo", "cy"] {
        p.get_mut(u)
            .unwrap()
            .expect(Op::MemberAttributesUpdate)
            .await;
    }
    for dev in &mut devices {
        dev.expect_quiet().await;
    }

    // A message from that device reaches both other devices, not the sender.
    devices[from]
        .client
        .send_group_message(&gid, b"from one device".to_vec(), false)
        .await
        .unwrap();
    for (i, dev) in devices.iter_mut().enumerate() {
        if i != from {
            assert_eq!(dev.expect_message().await.payload, b"from one device");
        }
    }
    for dev in &mut devices {
        dev.expect_quiet().await;
    }
}

#[tokio::test]
async fn a_user_who_logs_out_on_a_node_is_no_longer_a_target_there() {
    let c = TestCluster::start(3).await;
    let users = [("own", 1), ("bob", 2), ("cat", 3)];
    let mut p = spread(&c, &users).await;
    let gid = p["own"]
        .client
        .create_group(group_data("g", &["bob", "cat"]))
        .await
        .unwrap();
    p.get_mut("bob").unwrap().expect(Op::DirectJoined).await;
    p.get_mut("cat").unwrap().expect(Op::DirectJoined).await;

    // Which node holds the group: the one that receives nothing when every node has a
    // member online.
    let recv0 = per_node(&c, RECEIVED, 3).await;
    p["own"]
        .client
        .send_group_message(&gid, b"zero".to_vec(), false)
        .await
        .unwrap();
    p.get_mut("bob").unwrap().expect_message().await;
    p.get_mut("cat").unwrap().expect_message().await;
    let recv1 = eventually("two nodes to receive the message", || async {
        let now = per_node(&c, RECEIVED, 3).await;
        let got = now.iter().zip(&recv0).filter(|(a, b)| a > b).count();
        (got == 2).then_some(now)
    })
    .await;
    let origin = 1 + recv1.iter().zip(&recv0).position(|(a, b)| a == b).unwrap();
    // The one who logs out: on a node that neither holds the group nor hosts the sender.
    let (gone, gone_node, stay, stay_node) = if origin == 2 {
        ("cat", 3, "bob", 2)
    } else {
        ("bob", 2, "cat", 3)
    };
    let leaver = p.remove(gone).unwrap();
    leaver.client.close().await;
    c.node(gone_node).wait_for_sessions(0).await;
    wait_presence(&c, &[("own", 1), (stay, stay_node)], 3).await;

    // A message now crosses only to the nodes with a recipient online (the sender's user
    // counts: it may have other devices), none of them the leaver's.
    let expect = [1, stay_node].iter().filter(|&&n| n != origin).count() as f64;
    let sent0 = c.metric_all(SENT).await;
    let recv_gone = c.metric(gone_node, RECEIVED).await;
    p["own"]
        .client
        .send_group_message(&gid, b"one".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(
        p.get_mut(stay).unwrap().expect_message().await.payload,
        b"one"
    );
    assert_sent(&c, sent0, expect).await;
    assert_eq!(
        c.metric(gone_node, RECEIVED).await,
        recv_gone,
        "node {gone_node} got a delivery after {gone} logged out"
    );

    // Back, on the other member's node: one Deliver there reaches both.
    let mut back = c.client(stay_node, gone).await;
    wait_presence(&c, &[("own", 1), (stay, stay_node), (gone, stay_node)], 3).await;
    let sent1 = c.metric_all(SENT).await;
    p["own"]
        .client
        .send_group_message(&gid, b"two".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(
        p.get_mut(stay).unwrap().expect_message().await.payload,
        b"two"
    );
    until_message(&mut back, b"two").await;
    assert_sent(&c, sent1, expect).await;
}

/// Reads `peer`'s pushes until a message with `payload` (earlier ones may come from a
/// catch-up).
async fn until_message(peer: &mut Peer, payload: &[u8]) {
    let deadline = Instant::now() + LONG;
    loop {
        assert!(
            Instant::now() < deadline,
            "{} never got {:?}",
            peer.user(),
            String::from_utf8_lossy(payload)
        );
        if let Push::Message(m) = peer.next_push().await {
            if m.payload == payload {
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_frozen_node_stalls_nobody_and_its_queue_stays_bounded() {
    const LIMIT: u64 = 65_536;
    let c = TestCluster::start_with(3, |_| {
        vec![
            ("cluster.peer_queue_bytes".to_owned(), LIMIT.to_string()),
            // Long enough for the queue to fill before the frozen node is declared Down.
            ("cluster.peer_timeout_ms".to_owned(), "5000".to_owned()),
        ]
    });
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
    let users = [("own", 1), ("ann", 2), ("ben", 3)];
    let mut p = spread(&c, &users).await;
    let gid = p["own"]
        .client
        .create_group(group_data("g", &["ann", "ben"]))
        .await
        .unwrap();
    p.get_mut("ann").unwrap().expect(Op::DirectJoined).await;
    p.get_mut("ben").unwrap().expect(Op::DirectJoined).await;

    // Freeze a node that neither holds the group nor hosts the sender (a frozen owner
    // answers 500, which is the failure tests' business).
    let owner = c.owner_of(convoke_protocol::ids::parse_group_id(&gid).unwrap());
    let (frozen, alive) = if owner == "n3" { (2, 3) } else { (3, 2) };
    let name = |i: usize| if i == 2 { "ann" } else { "ben" };
    let peer = format!("n{frozen}");
    let others = [1, alive];
    c.sigstop(frozen);
    let mut dropped0 = 0.0;
    for i in others {
        dropped0 += c.metric(i, DROPPED).await;
    }
    // 40 messages of 4 KiB (160 KiB towards the frozen node, over its 64 KiB limit): each
    // is answered and reaches the other member promptly.
    let payload = vec![7u8; 4096];
    let start = Instant::now();
    for k in 0..40u64 {
        let t = Instant::now();
        let ack = p["own"]
            .client
            .send_group_message(&gid, payload.clone(), false)
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "send {k} took {:?}",
            t.elapsed()
        );
        let m = p.get_mut(name(alive)).unwrap().expect_message().await;
        assert_eq!(m.seq, ack.seq);
    }
    let took = start.elapsed();
    // The queues towards the frozen node stayed at or under the limit; the rest was dropped.
    let mut dropped = -dropped0;
    for i in others {
        let q = c
            .metric_with(i, "convoke_cluster_peer_queue_bytes", "peer", &peer)
            .await;
        assert!(q <= LIMIT as f64, "node {i} queues {q} bytes for {peer}");
        dropped += c.metric(i, DROPPED).await;
    }
    assert!(dropped > 0.0, "no delivery to the frozen node was dropped");
    assert!(took < LONG, "40 sends took {took:?} with a frozen node");

    // Thawed: the node is Up again and delivery to it resumes.
    c.sigcont(frozen);
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
    drop(p.remove(name(frozen)));
    let mut back = c.node(frozen).connect_device(name(frozen), "d2").await;
    wait_presence(&c, &users, 3).await;
    p["own"]
        .client
        .send_group_message(&gid, b"after".to_vec(), false)
        .await
        .unwrap();
    until_message(&mut back, b"after").await;
}

#[tokio::test]
async fn a_node_back_from_down_has_its_users_reached_again() {
    let c = TestCluster::start(3).await;
    let users = [("own", 1), ("ann", 2), ("ben", 3)];
    let mut p = spread(&c, &users).await;
    let gid = p["own"]
        .client
        .create_group(group_data("g", &["ann", "ben"]))
        .await
        .unwrap();
    p.get_mut("ann").unwrap().expect(Op::DirectJoined).await;
    p.get_mut("ben").unwrap().expect(Op::DirectJoined).await;

    // Frozen past the peer timeout: the others see node 3 Down and forget its users.
    c.sigstop(3);
    for i in [1, 2] {
        c.wait_state(i, "n3", "down").await;
        let forgot = c.metric_with(i, PRESENCE, "peer", "n3").await;
        assert_eq!(forgot, 0.0, "node {i} still lists users on the Down node");
    }
    c.sigcont(3);
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
    // Snapshots both ways restore every directory, and ben's session, which outlived the
    // freeze, is reached again.
    wait_presence(&c, &users, 3).await;
    p["own"]
        .client
        .send_group_message(&gid, b"welcome back".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(
        p.get_mut("ann").unwrap().expect_message().await.payload,
        b"welcome back"
    );
    until_message(p.get_mut("ben").unwrap(), b"welcome back").await;
}

/// The per-peer delivery counters are there, at 0, from the peer's first Up (a stranger
/// found `convoke_cluster_deliveries_dropped_total`, documented and alerted on, missing from
/// /metrics until the first drop).
#[tokio::test]
async fn the_delivery_counters_of_each_peer_exist_from_its_first_up() {
    let c = TestCluster::start(3).await;
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
    let (status, text) = c.node(1).http_get("/metrics").await;
    assert_eq!(status, 200);
    for peer in ["n2", "n3"] {
        for name in ["convoke_cluster_deliveries_sent_total", DROPPED] {
            let series = format!("{name}{{peer=\"{peer}\"}}");
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }
}
