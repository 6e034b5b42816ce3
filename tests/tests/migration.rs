//! QUIC connection migration end to end: a receiving client whose UDP address changes in the
//! middle of a steady stream of messages keeps its session (same connection, same session id,
//! no new connection on the broker) and gets every message exactly once, in order. Two ways
//! the address changes: the client rebinds its own socket (a phone moving from Wi-Fi to
//! cellular), or a NAT in between gives its flow a new port (the [`Relay`] rebinds).
//!
//! A local rebind needs nothing from the application: quinn itself sends a PING from the new
//! socket (`Connection::local_address_changed`). The broker keeps migration on
//! (`broker/src/server.rs`).
//!
//! The broker follows a client to a new address only when a packet comes from there (quinn
//! migrates on the peer's packets; it cannot know otherwise). After a NAT rebinding that is
//! the client's next packet: an ACK, if one was still pending when the port changed, or else
//! its next request or its QUIC keep-alive (10 s, set in client/src/builder.rs; measured here:
//! a message sent right after such a rebinding of an idle client arrived 9.5 s later). Until
//! then pushes go to the old address and are lost on the wire; nothing is lost for good: the
//! stream retransmits once the broker has moved. Whether an ACK is pending at the moment of
//! the rebinding is a race (quinn acknowledges every second packet at once), so the NAT test
//! has the receiver send a request after each rebinding, as any app that sends does, and the
//! idle test shows the same thing for a client that only receives.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::{Client, GroupMessage, MessageSent};
use convoke_protocol::GroupEventOp as Op;
use convoke_tests::{eventually, group_data, Broker, Peer, Relay, RelayOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Messages sent during each test, at [`RATE`] per second (3 s).
const MESSAGES: u64 = 300;
const RATE: u64 = 100;
/// The receiver's address changes after every this many messages received.
const MOVE_EVERY: u64 = 50;

/// A sender and a receiver (user "bob", built by the caller) in one group, with every setup
/// event consumed. Returns the group id.
async fn group_of(sender: &Peer, receiver: &mut Peer) -> String {
    let gid = sender
        .client
        .create_group(group_data("migration", &["bob"]))
        .await
        .unwrap();
    receiver.expect(Op::DirectJoined).await;
    gid
}

/// bob's client through `builder` (to the broker or a relay, on a given endpoint or not).
async fn bob(broker: &Broker, builder: convoke_client::ClientBuilder) -> Peer {
    let client = builder
        .token(broker.token("bob", false, 3600))
        .device_id("d1")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("bob cannot connect: {e}\nbroker log:\n{}", broker.log()));
    Peer::from(client)
}

/// Sends [`MESSAGES`] messages at [`RATE`] per second, one after the other (so their
/// sequence numbers follow the sending order). Sleeps only to pace.
fn send_steadily(sender: Client, gid: String) -> tokio::task::JoinHandle<Vec<MessageSent>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
        let mut sent = Vec::new();
        for i in 0..MESSAGES {
            tick.tick().await;
            let ack = sender
                .send_group_message(&gid, format!("m{i}").into_bytes(), false)
                .await
                .unwrap_or_else(|e| panic!("message {i}: {e}"));
            sent.push(ack);
        }
        sent
    })
}

/// Receives the stream, calling `moved` after every [`MOVE_EVERY`] messages (not after the
/// last), and checks it: every message once, in sequence order, as the sender sent it and
/// as history has it.
async fn receive_while_moving<F, Fut>(
    receiver: &mut Peer,
    gid: &str,
    sending: tokio::task::JoinHandle<Vec<MessageSent>>,
    mut moved: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut got: Vec<GroupMessage> = Vec::new();
    for i in 1..=MESSAGES {
        got.push(receiver.expect_message().await);
        if i % MOVE_EVERY == 0 && i < MESSAGES {
            moved().await;
        }
    }
    receiver.expect_quiet().await; // no message twice
    let sent = sending.await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "every message once, in order"
    );
    for (m, s) in got.iter().zip(&sent) {
        assert_eq!((m.seq, &m.msg_id), (s.seq, &s.msg_id));
    }
    let mut history = Vec::new();
    while (history.len() as u64) < MESSAGES {
        let after = history.last().map(|m: &GroupMessage| m.seq).unwrap_or(0);
        let page = receiver
            .client
            .get_group_messages(gid, None, Some(after), 100)
            .await
            .unwrap();
        assert!(!page.is_empty(), "history ends after seq {after}");
        history.extend(page);
    }
    assert_eq!(got, history, "received exactly what history holds");
}

/// What must hold after the moves: the same session on the same connection, still usable, and
/// no connection opened since `opened` was read.
async fn assert_same_session(broker: &Broker, receiver: &Peer, session: u64, opened: f64) {
    assert_eq!(receiver.client.session_id(), session);
    assert!(!receiver.client.is_closed());
    receiver.client.ping().await.unwrap();
    let groups = receiver
        .client
        .get_joined_groups(1, 20, false, false)
        .await
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(
        broker.metric("convoke_connections_opened_total").await,
        opened,
        "no new connection"
    );
    assert_eq!(broker.metric("convoke_sessions_online").await, 2.0);
}

#[tokio::test]
async fn a_client_that_rebinds_its_socket_keeps_its_session_and_every_message() {
    let broker = Broker::start().await;
    let alice = broker.connect("alice").await;
    // The receiver's own endpoint, made as the builder makes one, so the test can move it.
    let endpoint = quinn::Endpoint::client((Ipv4Addr::UNSPECIFIED, 0).into()).unwrap();
    let mut bob = bob(&broker, broker.builder().endpoint(endpoint.clone())).await;
    let gid = group_of(&alice, &mut bob).await;
    let session = bob.client.session_id();
    let opened = broker.metric("convoke_connections_opened_total").await;

    let mut addrs = vec![endpoint.local_addr().unwrap()];
    let sending = send_steadily(alice.client.clone(), gid.clone());
    receive_while_moving(&mut bob, &gid, sending, || {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        addrs.push(socket.local_addr().unwrap());
        endpoint.rebind(socket).unwrap();
        async {}
    })
    .await;
    assert_eq!(addrs.len() as u64, MESSAGES / MOVE_EVERY);
    assert_eq!(endpoint.local_addr().unwrap(), *addrs.last().unwrap());

    assert_same_session(&broker, &bob, session, opened).await;
    // quinn keeps reading the previous socket until a packet arrives on the new one, i.e.
    // until the broker sends to the new address; every old socket is closed, so the broker
    // followed each move.
    for old in &addrs[..addrs.len() - 1] {
        eventually(&format!("the old socket {old} closed"), || async {
            std::net::UdpSocket::bind(old).ok().map(drop)
        })
        .await;
    }
}

#[tokio::test]
async fn a_nat_rebinding_keeps_the_session_and_every_message() {
    let broker = Broker::start().await;
    let relay = Relay::start(broker.addr, RelayOptions::default())
        .await
        .unwrap();
    let alice = broker.connect("alice").await;
    let mut bob = bob(&broker, broker.builder().server_addr(relay.addr())).await;
    let gid = group_of(&alice, &mut bob).await;
    let session = bob.client.session_id();
    let opened = broker.metric("convoke_connections_opened_total").await;

    let first: Vec<SocketAddr> = relay.flows().await.into_iter().map(|f| f.1).collect();
    assert_eq!(first.len(), 1, "bob's one flow");
    let mut seen = first.clone();
    let sending = send_steadily(alice.client.clone(), gid.clone());
    let pinger = bob.client.clone();
    receive_while_moving(&mut bob, &gid, sending, || {
        let (relay, pinger) = (&relay, pinger.clone());
        async move {
            assert_eq!(relay.rebind().await.unwrap(), 1);
            // Without a packet from bob the broker keeps sending to the old port (see the
            // module's docs); a request is one.
            pinger.ping().await.unwrap();
        }
    })
    .await;
    let stats = relay.stats();
    assert_eq!((stats.flows, stats.rebinds), (1, MESSAGES / MOVE_EVERY - 1));
    seen.extend(relay.flows().await.into_iter().map(|f| f.1));
    assert_ne!(seen[0], seen[1], "the broker sees bob on a new port");

    assert_same_session(&broker, &bob, session, opened).await;
    assert_eq!(
        relay.stats().flows,
        1,
        "everything bob sent went through the relay"
    );
}

#[tokio::test]
async fn after_a_nat_rebinding_of_an_idle_client_pushes_resume_when_it_next_sends() {
    let broker = Broker::start().await;
    let relay = Relay::start(broker.addr, RelayOptions::default())
        .await
        .unwrap();
    let alice = broker.connect("alice").await;
    let mut bob = bob(&broker, broker.builder().server_addr(relay.addr())).await;
    let gid = group_of(&alice, &mut bob).await;

    // bob is idle; his NAT gives him a new port, and a message goes to the old one.
    relay.rebind().await.unwrap();
    let sent = alice
        .client
        .send_group_message(&gid, b"while moving".to_vec(), false)
        .await
        .unwrap();
    // Any request from bob tells the broker where he is now; without one the message would
    // wait for his keep-alive (about 10 s).
    let asked = std::time::Instant::now();
    bob.client.ping().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), bob.expect_message())
        .await
        .unwrap_or_else(|_| panic!("no message within 2 s of bob's request"));
    assert_eq!((got.seq, got.msg_id), (sent.seq, sent.msg_id));
    assert!(asked.elapsed() < Duration::from_secs(2));
    bob.expect_quiet().await;
}
