//! Client resilience end to end: automatic reconnect after a broker crash, a graceful
//! shutdown and a slow-consumer cut; gap-free, duplicate-free message resume; calls made
//! while reconnecting; idempotent sends retried across a crash; kept events handed on once
//! across reconnects; 0-RTT reconnects; what does not reconnect (close, refused tokens);
//! `convoke-cli watch` across a restart.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::{
    Client, ClientError, ConnectionEvent, Event, EventStream, GroupMessage, Push, ReconnectPolicy,
};
use convoke_protocol::{close, ErrorCode, GroupEventOp, Request, Response};
use convoke_tests::relay::{Relay, RelayOptions};
use convoke_tests::{eventually, group_data, Broker, WAIT};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Reconnect quickly in tests.
fn fast() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..ReconnectPolicy::default()
    }
}

/// A client of `user` that reaches `broker` through a relay the test can cut: it notices a
/// dead path after 1.5 s.
async fn relayed(broker: &Broker, user: &str) -> (Relay, Client) {
    let relay = Relay::start(broker.addr, RelayOptions::default())
        .await
        .unwrap();
    let client = broker
        .builder()
        .server_addr(relay.addr())
        .token(broker.token(user, false, 3600))
        .keep_alive(Duration::from_millis(300), Duration::from_millis(1500))
        .reconnect(fast())
        .connect()
        .await
        .unwrap();
    (relay, client)
}

/// Everything one client's event stream delivered, recorded by a background task.
#[derive(Debug, Default)]
struct Seen {
    messages: Vec<GroupMessage>,
    states: Vec<ConnectionEvent>,
    groups: Vec<convoke_protocol::GroupEvent>,
    ended: bool,
}

#[derive(Clone, Debug)]
struct Recorder(Arc<Mutex<Seen>>);

impl Recorder {
    fn start(mut events: EventStream) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let mut s = s.lock().unwrap();
                match ev {
                    Event::Push(Push::Message(m)) => s.messages.push(m),
                    Event::Push(Push::Group(g)) => s.groups.push(g),
                    Event::Connection(c) => s.states.push(c),
                    _ => {}
                }
            }
            s.lock().unwrap().ended = true;
        });
        Self(seen)
    }

    fn seqs(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .messages
            .iter()
            .map(|m| m.seq)
            .collect()
    }

    fn states(&self) -> Vec<ConnectionEvent> {
        self.0.lock().unwrap().states.clone()
    }

    async fn wait_seqs(&self, n: u64) {
        eventually(&format!("{n} messages"), || async {
            (self.seqs().len() as u64 >= n).then_some(())
        })
        .await;
    }

    async fn wait_state(&self, what: &str, f: impl Fn(&ConnectionEvent) -> bool) {
        eventually(what, || async {
            self.states().iter().any(&f).then_some(())
        })
        .await;
    }
}

/// A client that reconnects quickly. Its keep-alive is short, so that even while idle it
/// sends a packet soon after a broker restart and gets the stateless reset that tells it.
async fn client(broker: &Broker, user: &str, device: &str) -> Client {
    broker
        .builder()
        .token(broker.token(user, false, 3600))
        .device_id(device)
        .keep_alive(Duration::from_millis(500), Duration::from_secs(10))
        .reconnect(fast())
        .connect()
        .await
        .unwrap()
}

/// Every seq in the group's history, paged.
async fn history(c: &Client, gid: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = c
            .get_group_messages(gid, None, Some(after), 100)
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        after = last.seq;
        out.extend(page.iter().map(|m| m.seq));
    }
}

/// alice owns a group with bob; returns its id.
async fn pair(alice: &Client, bob_events: &Recorder) -> String {
    let gid = alice.create_group(group_data("g", &["bob"])).await.unwrap();
    eventually("bob's join", || async {
        (!bob_events.0.lock().unwrap().groups.is_empty()).then_some(())
    })
    .await;
    gid
}

/// alice owns a public group "g" that others may be added to without confirming, bob a
/// member (his `seen` has the directJoined); returns its id.
async fn public_pair(alice: &Client, seen: &Recorder) -> String {
    let gid = alice
        .create_group(convoke_protocol::CreateGroupData {
            public: true,
            invite_need_confirm: false,
            ..group_data("g", &["bob"])
        })
        .await
        .unwrap();
    seen.wait_ops(GroupEventOp::DirectJoined, 1).await;
    gid
}

/// Sends `n` messages from `c` (one at a time, retrying only what the client itself does
/// not), returning the acknowledged seqs.
fn spawn_sender(
    c: Client,
    gid: String,
    n: usize,
    pace: Duration,
    size: usize,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..n {
            let mut payload = format!("m{i}").into_bytes();
            payload.resize(size.max(payload.len()), b'.');
            let sent = c
                .send_group_message(&gid, payload, false)
                .await
                .unwrap_or_else(|e| panic!("send {i} failed: {e}"));
            acked.push(sent.seq);
            tokio::time::sleep(pace).await;
        }
        acked
    })
}

#[tokio::test]
async fn a_crashed_broker_is_rejoined_and_no_message_is_lost_or_repeated() {
    let mut broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    let bob = client(&broker, "bob", "b").await;
    let seen = Recorder::start(bob.events());
    let gid = pair(&alice, &seen).await;

    let sender = spawn_sender(
        alice.clone(),
        gid.clone(),
        300,
        Duration::from_millis(2),
        16,
    );
    seen.wait_seqs(50).await;
    broker.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.start_again_in_place();
    let acked = tokio::time::timeout(WAIT * 3, sender)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked.len(), 300);

    // The sender's acknowledged sends are each in history once, gap-free, and bob handed
    // on exactly the history, in order.
    let hist = history(&alice, &gid).await;
    assert_eq!(
        hist,
        (1..=hist.len() as u64).collect::<Vec<_>>(),
        "gap-free history"
    );
    let mut sorted = acked.clone();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        acked.len(),
        "no acknowledged seq twice: {acked:?}"
    );
    assert!(acked.iter().all(|s| hist.contains(s)));
    assert_eq!(hist.len(), 300, "exactly one stored message per send");
    seen.wait_seqs(300).await;
    assert_eq!(seen.seqs(), hist, "bob's messages equal the history");

    let states = seen.states();
    assert!(
        matches!(states.first(), Some(ConnectionEvent::Connected { .. })),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .any(|s| matches!(s, ConnectionEvent::Reconnecting { attempt: 1, .. })),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .any(|s| matches!(s, ConnectionEvent::Resumed { .. })),
        "{states:?}"
    );
    assert!(!bob.is_closed());
    bob.ping().await.unwrap();
}

#[tokio::test]
async fn a_slow_consumer_cut_reconnects_and_hands_on_every_message_once() {
    let broker = Broker::start_with(&[("sessions.outbound_queue", "16")]).await;
    let alice = client(&broker, "alice", "a").await;
    let bob = broker
        .builder()
        .token(broker.token("bob", false, 3600))
        .device_id("b")
        .event_capacity(1)
        .reconnect(fast())
        .connect()
        .await
        .unwrap();
    let mut events = bob.events();
    let gid = alice.create_group(group_data("g", &["bob"])).await.unwrap();
    let total = 600u64;
    let sender = spawn_sender(
        alice.clone(),
        gid.clone(),
        total as usize,
        Duration::ZERO,
        8 * 1024,
    );
    // Read nothing until the broker has cut bob at least once.
    eventually("a slow-consumer cut", || async {
        (broker.metric("convoke_slow_client_disconnects_total").await >= 1.0).then_some(())
    })
    .await;
    sender.await.unwrap();
    let mut seqs = Vec::new();
    let mut cut_seen = false;
    while seqs.len() < total as usize {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Push(Push::Message(m)) => seqs.push(m.seq),
            Event::Push(Push::Closing { code, .. }) => cut_seen |= code == close::SLOW_CONSUMER,
            Event::Connection(ConnectionEvent::Reconnecting { reason, .. }) => {
                cut_seen |= reason.contains("slow consumer");
            }
            _ => {}
        }
    }
    assert!(cut_seen, "the application was told about the cut");
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_graceful_shutdown_is_announced_and_survived() {
    let mut broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    let bob = client(&broker, "bob", "b").await;
    let seen = Recorder::start(bob.events());
    let gid = pair(&alice, &seen).await;
    alice
        .send_group_message(&gid, "before", false)
        .await
        .unwrap();
    seen.wait_seqs(1).await;
    broker.stop();
    seen.wait_state("reconnecting after shutdown", |s| {
        matches!(s, ConnectionEvent::Reconnecting { reason, .. } if reason.contains("shutting down"))
    })
    .await;
    broker.start_again_in_place();
    // alice's send waits for her reconnect; bob gets it.
    alice
        .send_group_message(&gid, "after", false)
        .await
        .unwrap();
    seen.wait_seqs(2).await;
    assert_eq!(seen.seqs(), vec![1, 2]);
}

#[tokio::test]
async fn calls_wait_for_the_reconnect_and_fail_retryably_when_it_does_not_come() {
    let mut broker = Broker::start().await;
    let bob = broker
        .builder()
        .token(broker.token("bob", false, 3600))
        .request_timeout(Duration::from_secs(2))
        .keep_alive(Duration::from_millis(300), Duration::from_millis(1500))
        .reconnect(fast())
        .connect()
        .await
        .unwrap();
    broker.kill9();
    eventually("bob notices", || async {
        (!bob.is_connected()).then_some(())
    })
    .await;
    let err = bob.ping().await.unwrap_err();
    assert!(matches!(err, ClientError::Disconnected { .. }), "{err}");
    assert!(err.is_retryable());
    // A call made while down goes out once the broker is back.
    let waiting = {
        let bob = bob.clone();
        tokio::spawn(async move { bob.get_joined_groups(1, 10, false, false).await })
    };
    broker.start_again_in_place();
    waiting.await.unwrap().unwrap();
    assert!(bob.is_connected());
}

#[tokio::test]
async fn an_interrupted_send_is_stored_once_when_retried_after_the_crash() {
    let mut broker = Broker::start_with(&[("debug.fault_injection", "true")]).await;
    let alice = client(&broker, "alice", "a").await;
    let bob = client(&broker, "bob", "b").await;
    let seen = Recorder::start(bob.events());
    let gid = pair(&alice, &seen).await;
    alice.send_group_message(&gid, "one", false).await.unwrap();
    // The broker aborts after this send is durable and before it answers.
    let pending = {
        let alice = alice.clone();
        let gid = gid.clone();
        tokio::spawn(async move {
            alice
                .send_group_message_with_id(&gid, "two", false, "fault:abort-after-commit-1")
                .await
        })
    };
    broker.wait_exited(WAIT, "the broker did not abort").await;
    broker.kill9();
    broker.start_again_in_place();
    let sent = tokio::time::timeout(WAIT * 2, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(sent.seq, 2, "the retry answers the stored message");
    let hist = alice
        .get_group_messages(&gid, None, Some(0), 100)
        .await
        .unwrap();
    assert_eq!(hist.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(hist[1].payload, b"two");
    assert_eq!(hist[1].msg_id, sent.msg_id);
    // bob gets it once (from history after his own reconnect).
    seen.wait_seqs(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.seqs(), vec![1, 2]);
}

#[tokio::test]
async fn a_kept_event_is_handed_on_once_across_reconnects() {
    let mut broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    let bob = client(&broker, "bob", "b").await;
    let mut events = bob.events();
    let gid = alice
        .create_group(convoke_protocol::CreateGroupData {
            invite_need_confirm: true,
            ..group_data("g", &[])
        })
        .await
        .unwrap();
    alice.invite_users_to_group(&gid, &["bob"]).await.unwrap();
    let invite = loop {
        match tokio::time::timeout(WAIT, events.next_push())
            .await
            .unwrap()
            .unwrap()
        {
            Push::Group(g) if g.operation == GroupEventOp::InviteToJoin => break g,
            _ => {}
        }
    };
    assert_eq!(invite.group_id, gid);
    // Crash right after taking it: the acknowledgement may or may not have arrived.
    broker.kill9();
    broker.start_again_in_place();
    for _ in 0..2 {
        let resumed = loop {
            match tokio::time::timeout(WAIT, events.recv())
                .await
                .unwrap()
                .unwrap()
            {
                Event::Connection(ConnectionEvent::Resumed { .. }) => break true,
                Event::Push(p) => panic!("no push expected, got {p:?}"),
                _ => {}
            }
        };
        assert!(resumed);
        // Whatever the broker replays was handed on already: nothing comes.
        if let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(500), events.next_push()).await
        {
            panic!("the invite came twice: {ev:?}");
        }
        broker.kill9();
        broker.start_again_in_place();
    }
}

#[tokio::test]
async fn a_reconnect_after_a_network_cut_uses_0rtt() {
    // The broker notices the dead path after 2 s; bob's client after 1.5 s.
    let broker = Broker::start_with(&[("sessions.idle_timeout_secs", "2")]).await;
    let alice = client(&broker, "alice", "a").await;
    let (relay, bob) = relayed(&broker, "bob").await;
    let seen = Recorder::start(bob.events());
    let gid = pair(&alice, &seen).await;
    alice.send_group_message(&gid, "1", false).await.unwrap();
    seen.wait_seqs(1).await;
    relay.cut();
    seen.wait_state("bob notices the cut", |s| {
        matches!(s, ConnectionEvent::Reconnecting { .. })
    })
    .await;
    // Sent while bob is away: lost on his dead session, fetched at the resume.
    for i in 2..=5 {
        alice
            .send_group_message(&gid, i.to_string(), false)
            .await
            .unwrap();
    }
    relay.heal();
    seen.wait_state("0-RTT reconnect", |s| {
        matches!(s, ConnectionEvent::Connected { zero_rtt: true, .. })
    })
    .await;
    seen.wait_seqs(5).await;
    assert_eq!(seen.seqs(), vec![1, 2, 3, 4, 5]);
    let resumed = seen
        .states()
        .iter()
        .find_map(|s| match s {
            ConnectionEvent::Resumed { recovered, .. } => Some(*recovered),
            _ => None,
        })
        .unwrap();
    assert!(resumed >= 1, "missed messages came from history");
}

#[tokio::test]
async fn a_broker_without_early_data_is_rejoined_in_1rtt() {
    let broker = Broker::start_with(&[
        ("sessions.idle_timeout_secs", "2"),
        ("tls.early_data", "false"),
    ])
    .await;
    let (relay, bob) = relayed(&broker, "bob").await;
    let seen = Recorder::start(bob.events());
    relay.cut();
    seen.wait_state("bob notices the cut", |s| {
        matches!(s, ConnectionEvent::Reconnecting { .. })
    })
    .await;
    relay.heal();
    seen.wait_state("reconnect", |s| {
        matches!(s, ConnectionEvent::Resumed { .. })
    })
    .await;
    assert!(seen
        .states()
        .iter()
        .all(|s| !matches!(s, ConnectionEvent::Connected { zero_rtt: true, .. })));
    assert_eq!(
        broker.metric("convoke_sessions_early_data_total").await,
        0.0
    );
    bob.ping().await.unwrap();
}

#[tokio::test]
async fn close_and_refused_tokens_end_the_client_without_retrying() {
    let mut broker = Broker::start().await;
    // close(): no reconnect, the stream ends.
    let bob = client(&broker, "bob", "b").await;
    let seen = Recorder::start(bob.events());
    bob.close().await;
    eventually("stream end", || async {
        seen.0.lock().unwrap().ended.then_some(())
    })
    .await;
    assert!(seen
        .states()
        .iter()
        .all(|s| !matches!(s, ConnectionEvent::Reconnecting { .. })));
    assert!(bob.is_closed());
    assert!(matches!(bob.ping().await, Err(ClientError::Closed { .. })));

    // A token provider: a good token first, then an expired one after the restart.
    let calls = Arc::new(Mutex::new(0u32));
    let (good, expired) = (
        broker.token("carol", false, 3600),
        broker.token("carol", false, -10),
    );
    let c2 = calls.clone();
    let carol = broker
        .builder()
        .token_provider(move || {
            let n = {
                let mut n = c2.lock().unwrap();
                *n += 1;
                *n
            };
            let t = if n == 1 {
                good.clone()
            } else {
                expired.clone()
            };
            async move { Ok(t) }
        })
        .reconnect(fast())
        .connect()
        .await
        .unwrap();
    let seen = Recorder::start(carol.events());
    broker.kill9();
    broker.start_again_in_place();
    seen.wait_state("gave up", |s| matches!(s, ConnectionEvent::GaveUp { .. }))
        .await;
    let why = carol.closed().await;
    assert_eq!(why.code(), Some(ErrorCode::TokenNotAssigned), "{why}");
    eventually("stream end", || async {
        seen.0.lock().unwrap().ended.then_some(())
    })
    .await;
    let attempts = *calls.lock().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *calls.lock().unwrap(),
        attempts,
        "no attempt after giving up"
    );
    assert!(
        attempts >= 2,
        "the provider was asked again for the reconnect"
    );
}

#[tokio::test]
async fn the_next_server_of_the_list_is_tried() {
    // Two brokers sharing the app secret; bob is on the first, which then dies.
    let mut first = Broker::start().await;
    let second = Broker::start().await;
    let bob = Client::builder()
        .servers([first.addr.to_string(), second.addr.to_string()])
        .server_name("localhost")
        .ca_pem(
            [
                std::fs::read(&first.cert).unwrap(),
                std::fs::read(&second.cert).unwrap(),
            ]
            .concat(),
        )
        .token(first.token("bob", false, 3600))
        .keep_alive(Duration::from_millis(300), Duration::from_millis(1500))
        .reconnect(fast())
        .connect()
        .await
        .unwrap();
    assert_eq!(bob.server_addr(), Some(first.addr));
    let seen = Recorder::start(bob.events());
    first.kill9();
    seen.wait_state(
        "moved to the second broker",
        |s| matches!(s, ConnectionEvent::Connected { server, .. } if *server == second.addr),
    )
    .await;
    assert_eq!(bob.server_addr(), Some(second.addr));
    bob.ping().await.unwrap();
}

#[tokio::test]
async fn a_call_made_while_the_broker_is_down_is_answered_once_it_is_back() {
    // The call waits for the next connection instead of failing.
    let mut broker = Broker::start().await;
    let bob = client(&broker, "bob", "b").await;
    broker.stop();
    let read = {
        let bob = bob.clone();
        tokio::spawn(async move { bob.request(Request::Ping { nonce: 7 }).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.start_again_in_place();
    match read.await.unwrap().unwrap() {
        Response::Pong { nonce, .. } => assert_eq!(nonce, 7),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_member_who_joined_a_busy_group_gets_only_what_was_sent_after_joining() {
    let mut broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    let gid = alice
        .create_group(convoke_protocol::CreateGroupData {
            invite_need_confirm: false,
            ..group_data("g", &[])
        })
        .await
        .unwrap();
    for i in 0..5 {
        alice
            .send_group_message(&gid, format!("old {i}"), false)
            .await
            .unwrap();
    }
    let bob = client(&broker, "bob", "b").await;
    let seen = Recorder::start(bob.events());
    let invited = alice.invite_users_to_group(&gid, &["bob"]).await.unwrap();
    assert!(format!("{invited:?}").contains("bob"), "{invited:?}");
    eventually("bob's join", || async {
        (!seen.0.lock().unwrap().groups.is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        bob.get_joined_groups(1, 10, false, false)
            .await
            .unwrap()
            .len(),
        1,
        "bob is a member"
    );
    // bob reconnects before anyone posts: nothing from before his join is handed on.
    broker.kill9();
    broker.start_again_in_place();
    seen.wait_state("resumed", |s| matches!(s, ConnectionEvent::Resumed { .. }))
        .await;
    alice.send_group_message(&gid, "new", false).await.unwrap();
    seen.wait_seqs(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.seqs(), vec![6]);
}

#[tokio::test]
async fn a_reconnecting_device_pushes_out_its_own_stale_session_not_another_device() {
    let broker = Broker::start_with(&[("limits.max_sessions_per_user", "2")]).await;
    let laptop = client(&broker, "bob", "laptop").await;
    let phone = client(&broker, "bob", "phone").await;
    // The phone reconnects while the broker still holds its old session (a network change
    // it has not noticed yet): its old session goes, the laptop stays.
    let phone_again = client(&broker, "bob", "phone").await;
    eventually("the old phone session is closed", || async {
        (!phone.is_connected()).then_some(())
    })
    .await;
    laptop.ping().await.unwrap();
    phone_again.ping().await.unwrap();
    assert!(!laptop.is_closed());
}

#[tokio::test]
async fn an_upload_and_a_download_cut_off_mid_way_resume_by_themselves() {
    use convoke_client::{progress_channel, Progress, UploadSource};
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;

    let broker = Broker::start_with(&[("sessions.idle_timeout_secs", "30")]).await;
    let (relay, alice) = relayed(&broker, "alice").await;
    let gid = alice.create_group(group_data("g", &[])).await.unwrap();

    // Upload 6 MiB from a stream; cut the network after 2 MiB, for longer than the
    // client's idle timeout (it reconnects), then let the rest flow.
    let data = convoke_tests::pattern_bytes(6 << 20, 7);
    let (mut feed, pipe) = tokio::io::duplex(256 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Progress>(100_000);
    let upload = alice.upload_group_shared_file(
        &gid,
        UploadSource::reader(pipe, data.len() as u64, "x.bin"),
        Some(progress_channel(tx)),
    );
    let rest = data.clone();
    let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
    let feeder = tokio::spawn(async move {
        feed.write_all(&rest[..2 << 20]).await.unwrap();
        go_rx.await.unwrap();
        feed.write_all(&rest[2 << 20..]).await.unwrap();
        std::future::pending::<()>().await;
    });
    while rx.recv().await.unwrap().done < (2 << 20) as u64 {}
    relay.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.heal();
    go.send(()).unwrap();
    let file = tokio::time::timeout(WAIT * 6, upload)
        .await
        .unwrap()
        .unwrap();
    feeder.abort();
    let mut last = None;
    while let Ok(p) = rx.try_recv() {
        last = Some(p);
    }
    assert_eq!(file.sha256, hex::encode(Sha256::digest(&data)));
    assert!(last.unwrap().resumed_at.is_some(), "the upload resumed");
    let files = alice.get_group_shared_filelist(&gid, 1, 10).await.unwrap();
    assert_eq!(files.len(), 1, "recorded once: {files:?}");

    // Download it, slowed down so the cut lands mid-way.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Progress>(100_000);
    relay.set_delay(
        convoke_tests::relay::Direction::ToClient,
        Duration::from_millis(20),
    );
    let download = alice.download_group_shared_file(
        &gid,
        &file.file_id,
        None,
        path.as_path(),
        Some(progress_channel(tx)),
    );
    while rx.recv().await.unwrap().done < (1 << 20) as u64 {}
    relay.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.heal();
    relay.set_delay(convoke_tests::relay::Direction::ToClient, Duration::ZERO);
    let got = tokio::time::timeout(WAIT * 6, download)
        .await
        .unwrap()
        .unwrap();
    let mut last = None;
    while let Ok(p) = rx.try_recv() {
        last = Some(p);
    }
    assert_eq!(got, file);
    assert!(std::fs::read(&path).unwrap() == data, "same bytes");
    assert!(last.unwrap().resumed_at.is_some(), "the download resumed");
    assert!(broker.metric("convoke_file_resumes_total").await >= 2.0);
}

#[tokio::test]
async fn a_joined_group_this_client_has_no_message_of_yet_is_caught_up_too() {
    let mut broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    // bob takes his join event on one client and closes it ...
    let first = client(&broker, "bob", "b").await;
    let gid = alice.create_group(group_data("g", &["bob"])).await.unwrap();
    let mut events = first.events();
    loop {
        if let Some(Push::Group(g)) = tokio::time::timeout(WAIT, events.next_push())
            .await
            .unwrap()
        {
            assert_eq!(g.group_id, gid);
            break;
        }
    }
    drop(events);
    first.close().await;
    // ... so his next client knows the group only from the joined-groups list.
    let bob = client(&broker, "bob", "b").await;
    let seen = Recorder::start(bob.events());
    broker.kill9();
    broker.start_again_in_place();
    alice
        .send_group_message(&gid, "while bob was away", false)
        .await
        .unwrap();
    seen.wait_seqs(1).await;
    assert_eq!(seen.seqs(), vec![1]);
}

impl Recorder {
    /// Waits until `n` events of `op` have been handed on.
    async fn wait_ops(&self, op: GroupEventOp, n: usize) {
        eventually(&format!("{n} {op} events"), || async {
            let seen = self.0.lock().unwrap();
            (seen.groups.iter().filter(|g| g.operation == op).count() >= n).then_some(())
        })
        .await;
    }

    /// The messages handed on, as (group, seq).
    fn tagged(&self) -> Vec<(String, u64)> {
        let seen = self.0.lock().unwrap();
        seen.messages
            .iter()
            .map(|m| (m.group_id.clone(), m.seq))
            .collect()
    }
}

/// Sends `n` messages to `gid` from `c`, one at a time; returns the last seq.
async fn post(c: &Client, gid: &str, n: usize) -> u64 {
    let mut last = 0;
    for i in 0..n {
        last = c
            .send_group_message(gid, format!("m{i}"), false)
            .await
            .unwrap()
            .seq;
    }
    last
}

#[tokio::test]
async fn leaving_and_rejoining_a_group_never_hands_on_what_was_sent_meanwhile() {
    let broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    let bob = client(&broker, "bob", "b").await;
    let phone = client(&broker, "bob", "phone").await;
    let seen = Recorder::start(bob.events());
    let gid = public_pair(&alice, &seen).await;
    post(&alice, &gid, 3).await;
    seen.wait_seqs(3).await;
    let mut expected = vec![1, 2, 3];

    // Removed (a kept removeMember), 5 posted while out, added back (directJoined).
    alice.remove_group_member(&gid, "bob").await.unwrap();
    seen.wait_ops(GroupEventOp::RemoveMember, 1).await;
    post(&alice, &gid, 5).await;
    alice.invite_users_to_group(&gid, &["bob"]).await.unwrap();
    seen.wait_ops(GroupEventOp::DirectJoined, 2).await;
    expected.push(post(&alice, &gid, 1).await);

    // This client's own leave and join (the broker tells the session that made the call
    // no event of it).
    bob.leave_group(&gid).await.unwrap();
    post(&alice, &gid, 5).await;
    assert!(bob.join_group(&gid, "").await.unwrap());
    expected.push(post(&alice, &gid, 1).await);

    // Blocked by the owner (removeMember), unblocked and added back.
    alice.block_group_member(&gid, "bob").await.unwrap();
    seen.wait_ops(GroupEventOp::RemoveMember, 2).await;
    post(&alice, &gid, 5).await;
    alice.unblock_group_member(&gid, "bob").await.unwrap();
    alice.invite_users_to_group(&gid, &["bob"]).await.unwrap();
    seen.wait_ops(GroupEventOp::DirectJoined, 3).await;
    expected.push(post(&alice, &gid, 1).await);

    // bob leaves and joins again on his phone (the events name him, from him).
    phone.leave_group(&gid).await.unwrap();
    seen.wait_ops(GroupEventOp::MemberAbsence, 1).await;
    post(&alice, &gid, 5).await;
    assert!(phone.join_group(&gid, "").await.unwrap());
    eventually("bob's rejoin on his phone", || async {
        let s = seen.0.lock().unwrap();
        s.groups
            .iter()
            .any(|g| {
                g.operation == GroupEventOp::MemberPresence && g.from == "bob" && g.users == ["bob"]
            })
            .then_some(())
    })
    .await;
    expected.push(post(&alice, &gid, 1).await);

    seen.wait_seqs(expected.len() as u64).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.seqs(), expected, "only what bob was a member for");
}

/// `getGroupMessages` requests the broker answered since it started.
async fn history_requests(broker: &Broker) -> f64 {
    let (_, body) = broker.http_get("/metrics").await;
    body.lines()
        .filter(|l| {
            l.starts_with("convoke_requests_total{") && l.contains("method=\"getGroupMessages\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn groups_whose_messages_the_user_blocked_are_not_caught_up_after_a_reconnect() {
    let mut broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    let bob = client(&broker, "bob", "b").await;
    let phone = client(&broker, "bob", "phone").await;
    let seen = Recorder::start(bob.events());
    let g1 = alice
        .create_group(group_data("g1", &["bob"]))
        .await
        .unwrap();
    let g2 = alice
        .create_group(group_data("g2", &["bob"]))
        .await
        .unwrap();
    seen.wait_ops(GroupEventOp::DirectJoined, 2).await;
    // g1 has a position; g2 is known only from the joined list and its event.
    post(&alice, &g1, 1).await;
    seen.wait_seqs(1).await;
    // g1 blocked by this client, g2 by bob's phone (this client is not told).
    bob.block_group_messages(&g1).await.unwrap();
    phone.block_group_messages(&g2).await.unwrap();
    post(&alice, &g1, 3).await;
    post(&alice, &g2, 3).await;
    // Only bob's client catches up after the restart (the history requests are counted).
    alice.close().await;
    phone.close().await;
    broker.kill9();
    broker.start_again_in_place();
    seen.wait_state("resumed", |s| matches!(s, ConnectionEvent::Resumed { .. }))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.tagged(), vec![(g1.clone(), 1)], "nothing blocked");
    assert!(
        seen.states()
            .iter()
            .any(|s| matches!(s, ConnectionEvent::Resumed { recovered: 0, .. })),
        "{:?}",
        seen.states()
    );
    assert_eq!(history_requests(&broker).await, 0.0, "no history asked for");
    // Unblocked: live again, from the next message.
    bob.unblock_group_messages(&g1).await.unwrap();
    let alice = client(&broker, "alice", "a").await;
    let next = post(&alice, &g1, 1).await;
    seen.wait_seqs(2).await;
    assert_eq!(seen.tagged(), vec![(g1.clone(), 1), (g1, next)]);
}

#[tokio::test]
async fn a_client_that_takes_no_events_fetches_no_history_after_a_reconnect() {
    let mut broker = Broker::start().await;
    let bob = broker
        .builder()
        .token(broker.token("bob", false, 3600))
        .keep_alive(Duration::from_millis(500), Duration::from_secs(10))
        .reconnect(fast())
        .ignore_events()
        .connect()
        .await
        .unwrap();
    // A group of its own (tracked from seq 0 by a client that takes events) with messages.
    let gid = bob.create_group(group_data("g", &[])).await.unwrap();
    post(&bob, &gid, 3).await;
    broker.kill9();
    broker.start_again_in_place();
    eventually("bob reconnected", || async {
        bob.is_connected().then_some(())
    })
    .await;
    bob.ping().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(history_requests(&broker).await, 0.0);
}

#[tokio::test]
async fn a_live_message_whose_gap_cannot_be_filled_yet_is_tried_again_later() {
    use convoke_tests::relay::Direction;
    let broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    let relay = Relay::start(broker.addr, RelayOptions::default())
        .await
        .unwrap();
    let bob = broker
        .builder()
        .server_addr(relay.addr())
        .token(broker.token("bob", false, 3600))
        .keep_alive(Duration::from_millis(300), Duration::from_secs(20))
        .request_timeout(Duration::from_millis(400))
        .reconnect(fast())
        .connect()
        .await
        .unwrap();
    let seen = Recorder::start(bob.events());
    let gid = pair(&alice, &seen).await;
    post(&alice, &gid, 1).await;
    seen.wait_seqs(1).await;
    // Message 2 is bob's, sent past the client's own-send tracking: the broker does not
    // push it back, so 3 shows a gap.
    let sent = bob
        .request(Request::SendGroupMessage {
            group_id: gid.clone(),
            payload: b"raw".to_vec(),
            allow_group_ack: false,
            client_msg_id: None,
        })
        .await
        .unwrap();
    assert!(
        matches!(sent, Response::MessageSent { seq: 2, .. }),
        "{sent:?}"
    );
    // bob's requests now take 2.5 s to reach the broker: the fill's three tries time out.
    relay.set_delay(Direction::ToUpstream, Duration::from_millis(2500));
    post(&alice, &gid, 1).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    relay.set_delay(Direction::ToUpstream, Duration::ZERO);
    assert_eq!(
        seen.seqs(),
        vec![1],
        "3 is held back while 2 cannot be fetched"
    );
    // The group stays quiet: 2 and 3 come by themselves, on the same connection.
    tokio::time::timeout(WAIT * 2, seen.wait_seqs(3))
        .await
        .unwrap();
    assert_eq!(seen.seqs(), vec![1, 2, 3]);
    assert!(
        !seen
            .states()
            .iter()
            .any(|s| matches!(s, ConnectionEvent::Resumed { .. })),
        "not by a reconnect: {:?}",
        seen.states()
    );
}

#[tokio::test]
async fn kept_events_replayed_after_the_catch_up_never_bring_a_message_twice() {
    let broker = Broker::start().await;
    let alice = client(&broker, "alice", "a").await;
    let (relay, bob) = relayed(&broker, "bob").await;
    let seen = Recorder::start(bob.events());
    let resumed = |seen: &Recorder| {
        seen.states()
            .iter()
            .filter(|s| matches!(s, ConnectionEvent::Resumed { .. }))
            .count()
    };
    let g = public_pair(&alice, &seen).await;
    post(&alice, &g, 1).await;
    seen.wait_seqs(1).await;

    // bob's network is cut. Meanwhile he is removed from g, 3 are posted, he is added back
    // and 1 is posted; he is added to a new group k, where 2 are posted. The events about
    // him are kept, and replayed at his next login.
    relay.cut();
    seen.wait_state("bob notices the cut", |s| {
        matches!(s, ConnectionEvent::Reconnecting { .. })
    })
    .await;
    alice.remove_group_member(&g, "bob").await.unwrap();
    post(&alice, &g, 3).await;
    alice.invite_users_to_group(&g, &["bob"]).await.unwrap();
    post(&alice, &g, 1).await;
    let k = alice.create_group(group_data("k", &["bob"])).await.unwrap();
    post(&alice, &k, 2).await;
    relay.heal();
    // The catch-up runs before the replay is handled (the broker does not mark its end), so
    // g's 2..4, posted while bob was out, come too (README, "Reconnect and resume").
    seen.wait_ops(GroupEventOp::RemoveMember, 1).await;
    seen.wait_ops(GroupEventOp::DirectJoined, 3).await;
    seen.wait_seqs(7).await;
    let mut expected: Vec<(String, u64)> = (1..=5).map(|s| (g.clone(), s)).collect();
    expected.extend((1..=2).map(|s| (k.clone(), s)));

    // Another cut: the replayed joins (k's after its messages were handed on, g's after a
    // removal) must not make the next catch-up hand anything on again.
    relay.cut();
    eventually("bob notices the second cut", || async {
        (!bob.is_connected()).then_some(())
    })
    .await;
    relay.heal();
    eventually("the second catch-up", || async {
        (resumed(&seen) >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tagged = seen.tagged();
    tagged.sort();
    expected.sort();
    assert_eq!(tagged, expected, "each message once");
}
