//! Group messages end to end: the send-permission matrix, ordering, shielding, slow clients
//! and catch-up from history, read receipts, multi-device, durability.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::{ClientError, ReconnectPolicy};
use convoke_protocol::{close, ErrorCode, GroupEventOp as Op};
use convoke_tests::{assert_code, standard_group, Broker, Peer};

#[tokio::test]
async fn send_permission_matrix() {
    let broker = Broker::start().await;
    let (gid, [owner, adm, mut m1, mut m2, out]) = standard_group(&broker, true).await;
    let send = |p: &Peer, text: &str| {
        let c = p.client.clone();
        let gid = gid.clone();
        let text = text.to_string();
        async move { c.send_group_message(&gid, text.into_bytes(), false).await }
    };
    // A member sends; everyone else receives, the outsider does not.
    let sent = send(&m1, "hello").await.unwrap();
    assert_eq!(sent.seq, 1);
    let msg = m2.expect_message().await;
    assert_eq!(
        (msg.from.as_str(), msg.payload.as_slice(), msg.seq),
        ("m1", b"hello".as_slice(), 1)
    );
    assert_eq!(msg.msg_id, sent.msg_id);
    let mut out = out;
    out.expect_quiet().await;
    m1.expect_quiet().await; // the sending device has the ack

    // Muted: 507; muted and allowlisted: allowed.
    owner
        .client
        .mute_group_member(&gid, &["m1"], -1)
        .await
        .unwrap();
    m2.expect(Op::MuteMember).await;
    m1.expect(Op::MuteMember).await;
    let e = assert_code(
        send(&m1, "x").await,
        ErrorCode::ServiceNotAllowMessagingMute,
    );
    assert!(e.contains("m1"), "{e}");
    owner
        .client
        .add_users_to_group_allowlist(&gid, &["m1"])
        .await
        .unwrap();
    m1.expect(Op::AddUserToAllowlist).await;
    send(&m1, "allowlisted").await.unwrap();
    assert_eq!(m2.expect_message().await.payload, b"allowlisted");
    // Muted members still receive.
    send(&m2, "to the muted").await.unwrap();
    assert_eq!(m1.expect_message().await.payload, b"to the muted");

    // Mute-all: 506 unless allowlisted; owner and admins are implicitly allowlisted.
    adm.client.disable_send_group_msg(&gid).await.unwrap();
    m1.expect(Op::MuteAllMembers).await;
    m2.expect(Op::MuteAllMembers).await;
    assert_code(send(&m2, "x").await, ErrorCode::ServiceNotAllowMessaging);
    send(&m1, "allowlisted under mute-all").await.unwrap();
    send(&owner, "owner").await.unwrap();
    send(&adm, "admin").await.unwrap();
    for expected in ["allowlisted under mute-all", "owner", "admin"] {
        assert_eq!(m2.expect_message().await.payload, expected.as_bytes());
    }
    // Muted without allowlist under mute-all: the mute is reported first.
    owner
        .client
        .remove_group_allowlist_member(&gid, "m1")
        .await
        .unwrap();
    assert_code(
        send(&m1, "x").await,
        ErrorCode::ServiceNotAllowMessagingMute,
    );
    adm.client.enable_send_group_msg(&gid).await.unwrap();

    // Size, membership, blocklist, destroyed group.
    let big = vec![b'x'; 64 * 1024 + 1];
    assert_code(
        m2.client.send_group_message(&gid, big, false).await,
        ErrorCode::MessageSizeLimit,
    );
    m2.client
        .send_group_message(&gid, vec![b'x'; 64 * 1024], false)
        .await
        .unwrap();
    assert_code(send(&out, "x").await, ErrorCode::GroupNotJoined);
    owner.client.block_group_member(&gid, "m2").await.unwrap();
    assert_code(send(&m2, "x").await, ErrorCode::GroupNotJoined);
    owner.client.destroy_group(&gid).await.unwrap();
    assert_code(send(&owner, "x").await, ErrorCode::GroupNotExist);
}

#[tokio::test]
async fn rate_limit_answers_509() {
    let broker = Broker::start_with(&[("messages.rate_limit_per_sec", "3")]).await;
    let (gid, [_owner, _adm, m1, ..]) = standard_group(&broker, true).await;
    let mut limited = None;
    for i in 0..20 {
        if let Err(e) = m1
            .client
            .send_group_message(&gid, format!("{i}").into_bytes(), false)
            .await
        {
            limited = Some(e);
            break;
        }
    }
    assert_eq!(
        limited.and_then(|e| e.code()),
        Some(ErrorCode::MessageCurrentLimiting)
    );
}

#[tokio::test]
async fn every_receiver_sees_the_same_order_without_gaps() {
    let broker = Broker::start().await;
    let (gid, [owner, adm, m1, mut m2, _out]) = standard_group(&broker, true).await;
    let mut watcher = broker.connect_device("m2", "second").await;
    let mut tasks = Vec::new();
    for (who, c) in [
        ("owner", owner.client.clone()),
        ("adm", adm.client.clone()),
        ("m1", m1.client.clone()),
    ] {
        let gid = gid.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                c.send_group_message(&gid, format!("{who}-{i}").into_bytes(), false)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..90 {
        seen_a.push(m2.expect_message().await);
        seen_b.push(watcher.expect_message().await);
    }
    let seqs: Vec<u64> = seen_a.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=90).collect::<Vec<_>>(),
        "in sequence order, no gaps"
    );
    assert_eq!(
        seen_a, seen_b,
        "both devices saw the same messages in the same order"
    );
    // Each sender's own messages keep their order.
    for who in ["owner", "adm", "m1"] {
        let mine: Vec<String> = seen_a
            .iter()
            .filter(|m| m.from == who)
            .map(|m| String::from_utf8(m.payload.clone()).unwrap())
            .collect();
        assert_eq!(
            mine,
            (0..30).map(|i| format!("{who}-{i}")).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn block_group_messages_stops_delivery_to_that_user_only() {
    let broker = Broker::start().await;
    let (gid, [owner, _adm, mut m1, mut m2, _out]) = standard_group(&broker, true).await;
    m1.client.block_group_messages(&gid).await.unwrap();
    owner
        .client
        .send_group_message(&gid, b"one".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(m2.expect_message().await.payload, b"one");
    m1.expect_quiet().await;
    // Events still arrive; messages resume after unblocking.
    owner
        .client
        .update_group_announcement(&gid, "news")
        .await
        .unwrap();
    m1.expect(Op::UpdateAnnouncement).await;
    m1.client.unblock_group_messages(&gid).await.unwrap();
    owner
        .client
        .send_group_message(&gid, b"two".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(m1.expect_message().await.payload, b"two");
}

#[tokio::test]
async fn a_slow_client_is_disconnected_and_catches_up_from_history() {
    let broker = Broker::start_with(&[("sessions.outbound_queue", "16")]).await;
    let (gid, [owner, _adm, _m1, mut m2, _out]) = standard_group(&broker, true).await;
    // m1's second device never reads its events.
    let slow = broker
        .builder()
        .token(broker.token("m1", false, 600))
        .device_id("slow")
        .event_capacity(1)
        .reconnect(ReconnectPolicy::disabled())
        .connect()
        .await
        .unwrap();
    let payload = vec![b'p'; 8 * 1024];
    let total = 600u64;
    let sender = owner.client.clone();
    let gid2 = gid.clone();
    let sending = tokio::spawn(async move {
        for _ in 0..total {
            sender
                .send_group_message(&gid2, payload.clone(), false)
                .await
                .unwrap();
        }
    });
    // The fast reader gets every message while the slow one is cut off.
    for seq in 1..=total {
        assert_eq!(m2.expect_message().await.seq, seq);
    }
    sending.await.unwrap();
    match tokio::time::timeout(convoke_tests::WAIT, slow.closed()).await {
        Ok(ClientError::Closed { code, .. }) => assert_eq!(code, Some(close::SLOW_CONSUMER)),
        other => panic!("slow client not disconnected as slow: {other:?}"),
    }
    assert!(broker.metric("convoke_slow_client_disconnects_total").await >= 1.0);
    // Reconnect and page through history.
    let back = broker.connect_device("m1", "slow").await;
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let page = back
            .client
            .get_group_messages(&gid, None, Some(after), 100)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().seq;
        got.extend(page.into_iter().map(|m| m.seq));
    }
    assert_eq!(got, (1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn history_pages_before_and_after() {
    let broker = Broker::start_with(&[("messages.history_per_group", "20")]).await;
    let (gid, [owner, _adm, m1, _m2, out]) = standard_group(&broker, true).await;
    for i in 1..=25 {
        owner
            .client
            .send_group_message(&gid, format!("{i}").into_bytes(), false)
            .await
            .unwrap();
    }
    let seqs =
        |v: Vec<convoke_protocol::GroupMessage>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    // Retention keeps the newest 20.
    assert_eq!(
        seqs(
            m1.client
                .get_group_messages(&gid, None, Some(0), 100)
                .await
                .unwrap()
        ),
        (6..=25).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(
            m1.client
                .get_group_messages(&gid, None, None, 3)
                .await
                .unwrap()
        ),
        vec![23, 24, 25]
    );
    assert_eq!(
        seqs(
            m1.client
                .get_group_messages(&gid, Some(10), None, 3)
                .await
                .unwrap()
        ),
        vec![7, 8, 9]
    );
    assert_eq!(
        seqs(
            m1.client
                .get_group_messages(&gid, None, Some(22), 100)
                .await
                .unwrap()
        ),
        vec![23, 24, 25]
    );
    assert_code(
        m1.client
            .get_group_messages(&gid, Some(5), Some(1), 10)
            .await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        m1.client.get_group_messages(&gid, None, None, 101).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        out.client.get_group_messages(&gid, None, None, 10).await,
        ErrorCode::GroupNotJoined,
    );
}

#[tokio::test]
async fn read_receipts_counted_and_paged() {
    let broker = Broker::start().await;
    let (gid, [owner, adm, m1, m2, out]) = standard_group(&broker, true).await;
    let sent = m1
        .client
        .send_group_message(&gid, b"read me".to_vec(), true)
        .await
        .unwrap();
    let plain = m1
        .client
        .send_group_message(&gid, b"no receipts".to_vec(), false)
        .await
        .unwrap();
    m2.client
        .ack_group_message(&gid, &sent.msg_id)
        .await
        .unwrap();
    owner
        .client
        .ack_group_message(&gid, &sent.msg_id)
        .await
        .unwrap();
    adm.client
        .ack_group_message(&gid, &sent.msg_id)
        .await
        .unwrap();
    m2.client
        .ack_group_message(&gid, &sent.msg_id)
        .await
        .unwrap(); // twice counts once
    assert_code(
        m2.client.ack_group_message(&gid, &plain.msg_id).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        m1.client.ack_group_message(&gid, &sent.msg_id).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        out.client.ack_group_message(&gid, &sent.msg_id).await,
        ErrorCode::GroupNotJoined,
    );
    assert_code(
        m2.client.ack_group_message(&gid, "999999").await,
        ErrorCode::RequestParameterError,
    );

    let first = m1
        .client
        .get_group_msg_read_user(&gid, &sent.msg_id, 2, None)
        .await
        .unwrap();
    assert_eq!(first.total, 3);
    assert_eq!(first.users.len(), 2);
    let cursor = first.cursor.clone().expect("a second page");
    let second = m1
        .client
        .get_group_msg_read_user(&gid, &sent.msg_id, 2, Some(&cursor))
        .await
        .unwrap();
    assert_eq!(second.users.len(), 1);
    assert!(second.cursor.is_none());
    let mut readers: Vec<String> = first
        .users
        .iter()
        .chain(&second.users)
        .map(|r| r.user_id.clone())
        .collect();
    readers.sort();
    assert_eq!(readers, vec!["adm", "m2", "owner"]);
    // The owner and admins may look too; other members may not.
    assert_eq!(
        owner
            .client
            .get_group_msg_read_user(&gid, &sent.msg_id, 10, None)
            .await
            .unwrap()
            .total,
        3
    );
    assert_code(
        m2.client
            .get_group_msg_read_user(&gid, &sent.msg_id, 10, None)
            .await,
        ErrorCode::PermissionDenied,
    );
}

#[tokio::test]
async fn two_devices_of_one_user_both_receive() {
    let broker = Broker::start().await;
    let (gid, [owner, _adm, mut m1, _m2, _out]) = standard_group(&broker, true).await;
    let mut m1_tablet = broker.connect_device("m1", "tablet").await;
    let mut owner_phone = broker.connect_device("owner", "phone").await;
    owner
        .client
        .send_group_message(&gid, b"hi all".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(m1.expect_message().await.payload, b"hi all");
    assert_eq!(m1_tablet.expect_message().await.payload, b"hi all");
    assert_eq!(
        owner_phone.expect_message().await.payload,
        b"hi all",
        "the sender's other device gets it too"
    );
}

#[tokio::test]
async fn an_acknowledged_message_survives_kill_9() {
    let mut broker = Broker::start().await;
    let (gid, [owner, ..]) = standard_group(&broker, true).await;
    let sent = owner
        .client
        .send_group_message(&gid, b"durable".to_vec(), false)
        .await
        .unwrap();
    broker.crash_restart();
    let m1 = broker.connect("m1").await;
    let history = m1
        .client
        .get_group_messages(&gid, None, None, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].msg_id.as_str(), history[0].payload.as_slice()),
        (sent.msg_id.as_str(), b"durable".as_slice())
    );
    // The sequence continues after the restart.
    let next = m1
        .client
        .send_group_message(&gid, b"next".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(next.seq, sent.seq + 1);
}

#[tokio::test]
async fn pipelined_sends_acknowledged_before_kill_9_are_all_in_history() {
    let mut broker = Broker::start().await;
    let (gid, _peers) = standard_group(&broker, true).await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for user in ["owner", "adm"] {
        // A short request timeout: after the kill no close frame comes.
        let client = broker
            .builder()
            .token(broker.token(user, false, 600))
            .device_id("sender")
            .request_timeout(std::time::Duration::from_secs(2))
            .ignore_events()
            .connect()
            .await
            .unwrap();
        // Many sends in flight at once from each client: they share flushes.
        for _ in 0..8 {
            let (client, gid, acked) = (client.clone(), gid.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..100 {
                    match client.send_group_message(&gid, b"x".to_vec(), false).await {
                        Ok(sent) => acked.lock().unwrap().push(sent.seq),
                        Err(_) => break,
                    }
                }
            }));
        }
    }
    convoke_tests::eventually("some acknowledged sends", || {
        let n = acked.lock().unwrap().len();
        async move { (n >= 300).then_some(()) }
    })
    .await;
    broker.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let mut acked = acked.lock().unwrap().clone();
    acked.sort_unstable();
    broker.restart();
    let m1 = broker.connect("m1").await;
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = m1
            .client
            .get_group_messages(&gid, None, Some(after), 100)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        stored.extend(page.iter().map(|m| m.seq));
    }
    for seq in &acked {
        assert!(
            stored.binary_search(seq).is_ok(),
            "acknowledged seq {seq} lost after kill -9"
        );
    }
    // No gaps: what is stored is 1..=n.
    assert_eq!(stored, (1..=stored.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn coalescing_busy_sessions_keeps_order_and_loses_nothing() {
    let broker = Broker::start_with(&[
        ("sessions.coalesce_busy_ms", "1000"),
        ("sessions.coalesce_window_ms", "20"),
    ])
    .await;
    let (gid, [owner, adm, mut m1, mut m2, _out]) = standard_group(&broker, true).await;
    let mut tasks = Vec::new();
    for c in [owner.client.clone(), adm.client.clone()] {
        let gid = gid.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                c.send_group_message(&gid, format!("{i}").into_bytes(), false)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for p in [&mut m1, &mut m2] {
        let seqs: Vec<u64> = {
            let mut v = Vec::new();
            for _ in 0..200 {
                v.push(p.expect_message().await.seq);
            }
            v
        };
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    }
    // Events interleave in order with messages on the same stream.
    owner
        .client
        .update_group_announcement(&gid, "after the burst")
        .await
        .unwrap();
    m1.expect(Op::UpdateAnnouncement).await;
}

#[tokio::test]
async fn coalescing_holds_events_only_for_a_busy_session() {
    // An exaggerated window so the two behaviours are far apart: a session handed an event in
    // the last 60 s is busy and holds new events for 1 s (the most allowed); a session never
    // handed one is idle and written to at once. No sleep decides who is busy: "out" joins
    // by itself (its own join pushes it nothing) and stays idle, while m1 has just been
    // handed events (the set-up, and out's arrival).
    let broker = Broker::start_with(&[
        ("sessions.coalesce_busy_ms", "60000"),
        ("sessions.coalesce_window_ms", "1000"),
    ])
    .await;
    let (gid, [owner, _adm, mut m1, _m2, mut out]) = standard_group(&broker, true).await;
    assert!(out.client.join_group(&gid, "").await.unwrap());
    m1.expect(Op::MemberPresence).await;

    let sent = std::time::Instant::now();
    owner
        .client
        .send_group_message(&gid, b"one message".to_vec(), false)
        .await
        .unwrap();
    let idle = out.expect_message().await;
    let idle_latency = sent.elapsed();
    assert_eq!(idle.payload, b"one message");
    let busy = m1.expect_message().await;
    let busy_latency = sent.elapsed();
    assert_eq!(busy.payload, b"one message");
    // Compared with each other, not with a wall-clock budget: load slows both alike, while
    // only the busy session's copy waits out the window.
    assert!(
        busy_latency >= std::time::Duration::from_millis(700),
        "a busy session's event was not held: {busy_latency:?}"
    );
    assert!(
        idle_latency + std::time::Duration::from_millis(500) < busy_latency,
        "an idle session's event was held like a busy one's: idle {idle_latency:?}, busy {busy_latency:?}"
    );

    // m1 was just handed an event, so it is still busy: the next event waits for the window,
    // and the ones sent meanwhile travel with it, in order.
    let sent = std::time::Instant::now();
    for i in 0..3 {
        owner
            .client
            .send_group_message(&gid, format!("burst {i}").into_bytes(), false)
            .await
            .unwrap();
    }
    for i in 0..3 {
        assert_eq!(
            m1.expect_message().await.payload,
            format!("burst {i}").into_bytes()
        );
    }
    let busy_latency = sent.elapsed();
    assert!(
        busy_latency >= std::time::Duration::from_millis(700),
        "a busy session's events were not held: {busy_latency:?}"
    );
}
