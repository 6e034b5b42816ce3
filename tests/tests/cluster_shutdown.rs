//! SIGTERM of a cluster node (issue #11 item 4): its clients are closed with SHUTDOWN and
//! its reason, reconnect to the next node of their server list and carry on there: the
//! messages sent while they moved arrive once and in order, and events reach them on the
//! new node.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoke_client::{ConnectionEvent, Event, Push, ReconnectPolicy};
use convoke_protocol::GroupEventOp;
use convoke_tests::cluster::TestCluster;
use convoke_tests::{eventually, group_data};

/// What alice's event stream delivered.
#[derive(Debug, Default)]
struct Seen {
    payloads: Vec<(u64, Vec<u8>)>,
    states: Vec<ConnectionEvent>,
    events: Vec<GroupEventOp>,
}

#[tokio::test]
async fn a_terminated_nodes_clients_carry_on_through_another_node() {
    let mut c = TestCluster::start(3).await;
    let bob = c.client(3, "bob").await;
    // alice lists node 1, then node 2; each node has its own development certificate.
    let mut bundle = std::fs::read(&c.node(1).cert).unwrap();
    bundle.extend(std::fs::read(&c.node(2).cert).unwrap());
    let alice = c
        .node(1)
        .builder()
        .servers([c.node(1).addr.to_string(), c.node(2).addr.to_string()])
        .ca_pem(bundle)
        .token(c.node(1).token("alice", false, 3600))
        .keep_alive(Duration::from_millis(500), Duration::from_secs(10))
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..ReconnectPolicy::default()
        })
        .connect()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    {
        let seen = seen.clone();
        let mut events = alice.events();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let mut s = seen.lock().unwrap();
                match ev {
                    Event::Push(Push::Message(m)) => s.payloads.push((m.seq, m.payload)),
                    Event::Push(Push::Group(g)) => s.events.push(g.operation),
                    Event::Connection(e) => s.states.push(e),
                    _ => {}
                }
            }
        });
    }
    // A group that node 1 does not own (node 1 goes away).
    let mut gid = String::new();
    for i in 0..20 {
        let id = bob
            .client
            .create_group(group_data(&format!("g{i}"), &["alice"]))
            .await
            .unwrap();
        if c.owner_of(id.parse().unwrap()) != "n1" {
            gid = id;
            break;
        }
    }
    assert!(!gid.is_empty(), "20 groups, all owned by n1");
    bob.client
        .send_group_message(&gid, "before", false)
        .await
        .unwrap();
    let payloads = |n: usize| {
        let seen = seen.clone();
        async move {
            eventually(&format!("alice has {n} messages"), || async {
                (seen.lock().unwrap().payloads.len() >= n).then_some(())
            })
            .await;
        }
    };
    payloads(1).await;

    c.node_mut(1).stop();
    // Sent while alice moves: she gets it from history once she is on node 2.
    bob.client
        .send_group_message(&gid, "during", false)
        .await
        .unwrap();
    let n2 = c.node(2).addr;
    // At once: the client leaves a node that says it is shutting down for the next one,
    // instead of spending its connect timeout (10 s) on the node that went away.
    let moved = std::time::Instant::now();
    eventually("alice reconnects to node 2", || async {
        seen.lock()
            .unwrap()
            .states
            .iter()
            .any(|e| matches!(e, ConnectionEvent::Connected { server, .. } if *server == n2))
            .then_some(())
    })
    .await;
    assert!(
        moved.elapsed() < Duration::from_secs(5),
        "alice took {:?} to reach node 2",
        moved.elapsed()
    );
    {
        let s = seen.lock().unwrap();
        assert!(
            s.states.iter().any(|e| matches!(
                e,
                ConnectionEvent::Reconnecting { reason, .. } if reason.contains("shutting down")
            )),
            "the shutdown's reason reached alice: {:?}",
            s.states
        );
    }
    // Live on node 2: a message and an event, fanned out from the owner to node 2.
    c.wait_up(2, 2).await;
    bob.client
        .send_group_message(&gid, "after", false)
        .await
        .unwrap();
    bob.client
        .update_group_announcement(&gid, "moved")
        .await
        .unwrap();
    payloads(3).await;
    eventually("alice gets the announcement event on node 2", || async {
        seen.lock()
            .unwrap()
            .events
            .contains(&GroupEventOp::UpdateAnnouncement)
            .then_some(())
    })
    .await;
    // Once each, in order.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = seen.lock().unwrap();
    let got: Vec<(u64, &[u8])> = s
        .payloads
        .iter()
        .map(|(seq, p)| (*seq, p.as_slice()))
        .collect();
    assert_eq!(
        got,
        [(1, &b"before"[..]), (2, &b"during"[..]), (3, &b"after"[..])]
    );
}
