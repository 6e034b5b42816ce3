//! Idempotent sends end to end: a sendGroupMessage with a client message id is stored once
//! per (group, sender, id) within the dedup window; a repeat is answered with the original
//! message and delivers nothing, also when it is pipelined behind the original, after a
//! `kill -9`, and after a crash between the durable write and the answer.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::{Client, ClientError};
use convoke_protocol::{ErrorCode, GroupMessage, Request, Response};
use convoke_tests::{assert_code, eventually, standard_group, Broker, Peer};

/// What a send was answered with: msg id, seq, timestamp.
type Sent = (String, u64, i64);

/// sendGroupMessage with a client message id, as a raw request.
async fn send_id(p: &Peer, gid: &str, text: &str, id: &str) -> Result<Sent, ClientError> {
    send_raw(&p.client, gid, text, id).await
}

async fn send_raw(c: &Client, gid: &str, text: &str, id: &str) -> Result<Sent, ClientError> {
    let r = c
        .request(Request::SendGroupMessage {
            group_id: gid.to_string(),
            payload: text.as_bytes().to_vec(),
            allow_group_ack: false,
            client_msg_id: Some(id.to_string()),
        })
        .await?;
    match r {
        Response::MessageSent {
            msg_id,
            seq,
            timestamp,
        } => Ok((msg_id, seq, timestamp)),
        other => panic!("sendGroupMessage answered {other:?}"),
    }
}

async fn history(p: &Peer, gid: &str) -> Vec<GroupMessage> {
    p.client
        .get_group_messages(gid, None, None, 100)
        .await
        .unwrap()
}

fn texts(msgs: &[GroupMessage]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn a_repeated_id_answers_the_original_and_stores_and_delivers_nothing_again() {
    let broker = Broker::start().await;
    let (gid, [mut owner, mut adm, mut m1, mut m2, mut out]) = standard_group(&broker, false).await;

    let first = send_id(&m1, &gid, "hello", "c-1").await.unwrap();
    for p in [&mut owner, &mut adm, &mut m2] {
        let msg = p.expect_message().await;
        assert_eq!((msg.msg_id.as_str(), msg.seq), (first.0.as_str(), first.1));
        assert_eq!(msg.payload, b"hello");
    }
    // The repeat (even with another payload) gets the original's answer.
    let again = send_id(&m1, &gid, "hello (retry)", "c-1").await.unwrap();
    assert_eq!(again, first);
    assert_eq!(send_id(&m1, &gid, "hello", "c-1").await.unwrap(), first);
    for p in [&mut owner, &mut adm, &mut m2, &mut m1, &mut out] {
        p.expect_quiet().await;
    }
    let h = history(&m2, &gid).await;
    assert_eq!(texts(&h), ["hello"]);
    assert_eq!(h[0].msg_id, first.0);
    assert_eq!(
        broker.metric("convoke_messages_deduplicated_total").await,
        2.0
    );
    // (Counted after the answer, so perhaps not yet.)
    eventually("one message counted", || async {
        (broker.metric("convoke_messages_total").await == 1.0).then_some(())
    })
    .await;

    // Sends without an id are never deduplicated, and the sequence goes on after the repeats.
    let plain1 = m1
        .client
        .send_group_message(&gid, b"same".to_vec(), false)
        .await
        .unwrap();
    let plain2 = m1
        .client
        .send_group_message(&gid, b"same".to_vec(), false)
        .await
        .unwrap();
    assert_eq!((plain1.seq, plain2.seq), (first.1 + 1, first.1 + 2));
    assert_eq!(texts(&history(&m2, &gid).await), ["hello", "same", "same"]);
}

#[tokio::test]
async fn the_same_id_from_another_sender_or_in_another_group_is_another_message() {
    let broker = Broker::start().await;
    let (gid, [owner, _adm, m1, mut m2, _out]) = standard_group(&broker, false).await;
    let other = owner
        .client
        .create_group(convoke_tests::group_data("other", &["m1", "m2"]))
        .await
        .unwrap();
    m2.expect(convoke_protocol::GroupEventOp::DirectJoined)
        .await;

    let a = send_id(&m1, &gid, "from m1", "same-id").await.unwrap();
    let b = send_id(&owner, &gid, "from owner", "same-id")
        .await
        .unwrap();
    let c = send_id(&m1, &other, "m1 elsewhere", "same-id")
        .await
        .unwrap();
    assert_ne!(a.0, b.0);
    assert_ne!(a.0, c.0);
    assert_eq!((a.1, b.1, c.1), (1, 2, 1));
    for expected in ["from m1", "from owner", "m1 elsewhere"] {
        assert_eq!(m2.expect_message().await.payload, expected.as_bytes());
    }
    // Each is remembered on its own.
    assert_eq!(send_id(&owner, &gid, "x", "same-id").await.unwrap(), b);
    assert_eq!(send_id(&m1, &other, "x", "same-id").await.unwrap(), c);
    assert_eq!(send_id(&m1, &gid, "x", "same-id").await.unwrap(), a);
    m2.expect_quiet().await;
    assert_eq!(texts(&history(&m2, &gid).await), ["from m1", "from owner"]);
    assert_eq!(texts(&history(&m2, &other).await), ["m1 elsewhere"]);
}

#[tokio::test]
async fn a_repeat_after_kill_9_and_restart_answers_the_original() {
    let mut broker = Broker::start().await;
    let (gid, [_owner, _adm, m1, ..]) = standard_group(&broker, false).await;
    let first = send_id(&m1, &gid, "before the crash", "c-crash")
        .await
        .unwrap();
    drop(m1);
    broker.crash_restart();

    let m1 = broker.connect("m1").await;
    // The owner, who made every change so far, has no kept events to replay at this login.
    let mut owner = broker.connect("owner").await;
    assert_eq!(
        send_id(&m1, &gid, "before the crash", "c-crash")
            .await
            .unwrap(),
        first
    );
    owner.expect_quiet().await;
    assert_eq!(texts(&history(&m1, &gid).await), ["before the crash"]);
    // The sequence was not set back by the repeat.
    let next = send_id(&m1, &gid, "after", "c-after").await.unwrap();
    assert_eq!(next.1, first.1 + 1);
}

#[tokio::test]
async fn after_the_window_the_same_id_stores_a_new_message() {
    let broker = Broker::start_with(&[("messages.dedup_window_secs", "1")]).await;
    let (gid, [_owner, _adm, m1, mut m2, _out]) = standard_group(&broker, false).await;
    let first = send_id(&m1, &gid, "one", "c-w").await.unwrap();
    assert_eq!(m2.expect_message().await.seq, first.1);
    // Repeats are answered with the original until the window is over; then the id stores
    // a new message.
    let second = eventually("the 1 s dedup window to end", || async {
        let sent = send_id(&m1, &gid, "two", "c-w").await.unwrap();
        (sent != first).then_some(sent)
    })
    .await;
    assert_eq!(second.1, first.1 + 1);
    assert!(second.2 - first.2 >= 1000, "{first:?} {second:?}");
    let msg = m2.expect_message().await;
    assert_eq!(
        (msg.seq, msg.payload.as_slice()),
        (second.1, b"two".as_slice())
    );
    m2.expect_quiet().await;
    assert_eq!(texts(&history(&m2, &gid).await), ["one", "two"]);
    // The id now answers with the new message.
    assert_eq!(send_id(&m1, &gid, "three", "c-w").await.unwrap(), second);
}

#[tokio::test]
async fn an_id_trimmed_out_of_history_stores_a_new_message() {
    let broker = Broker::start_with(&[("messages.history_per_group", "2")]).await;
    let (gid, [_owner, _adm, m1, mut m2, _out]) = standard_group(&broker, false).await;
    let first = send_id(&m1, &gid, "kept a while", "c-t").await.unwrap();
    assert_eq!(send_id(&m1, &gid, "x", "c-t").await.unwrap(), first);
    for text in ["b", "c"] {
        m1.client
            .send_group_message(&gid, text.as_bytes().to_vec(), false)
            .await
            .unwrap();
    }
    assert_eq!(texts(&history(&m2, &gid).await), ["b", "c"]);
    let again = send_id(&m1, &gid, "kept a while", "c-t").await.unwrap();
    assert_eq!(again.1, first.1 + 3, "the trimmed id no longer dedups");
    assert_eq!(texts(&history(&m2, &gid).await), ["c", "kept a while"]);
    for expected in ["kept a while", "b", "c", "kept a while"] {
        assert_eq!(m2.expect_message().await.payload, expected.as_bytes());
    }
    m2.expect_quiet().await;
}

#[tokio::test]
async fn empty_and_too_long_ids_are_refused_naming_the_value() {
    let broker = Broker::start().await;
    let (gid, [_owner, _adm, m1, mut m2, _out]) = standard_group(&broker, false).await;
    let e = assert_code(
        send_id(&m1, &gid, "x", "").await,
        ErrorCode::RequestParameterError,
    );
    assert!(e.contains("clientMsgId \"\""), "{e}");
    let long = format!("{}{}", "abcdefghijklmnop", "z".repeat(49));
    let e = assert_code(
        send_id(&m1, &gid, "x", &long).await,
        ErrorCode::RequestParameterError,
    );
    assert!(e.contains("clientMsgId \"abcdefghijklmnop\""), "{e}");
    assert!(e.contains("65 bytes") && e.contains("64"), "{e}");
    assert!(!e.contains(&long), "echoes only a prefix: {e}");
    m2.expect_quiet().await;
    assert!(history(&m2, &gid).await.is_empty());
    // 64 bytes is accepted.
    let max = "y".repeat(64);
    let sent = send_id(&m1, &gid, "max", &max).await.unwrap();
    assert_eq!(send_id(&m1, &gid, "max", &max).await.unwrap(), sent);
    // A group that does not exist is 605 first, as for any send.
    for id in ["ok", ""] {
        assert_code(
            send_id(&m1, "999999", "x", id).await,
            ErrorCode::GroupNotExist,
        );
    }
}

#[tokio::test]
async fn pipelined_duplicates_store_one_message() {
    let broker = Broker::start().await;
    let (gid, [mut owner, _adm, m1, mut m2, _out]) = standard_group(&broker, false).await;
    let other_device = broker.connect_device("m1", "d2").await;
    // Many sends of one id at once, none awaited before the others are sent, from two
    // connections of the same sender.
    let mut sends = Vec::new();
    for i in 0..12 {
        let c = if i % 3 == 2 {
            other_device.client.clone()
        } else {
            m1.client.clone()
        };
        let gid = gid.clone();
        sends.push(tokio::spawn(async move {
            send_raw(&c, &gid, "once", "c-pipe").await
        }));
    }
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap().unwrap());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0].1, 1);
    assert_eq!(m2.expect_message().await.payload, b"once");
    assert_eq!(owner.expect_message().await.payload, b"once");
    m2.expect_quiet().await;
    owner.expect_quiet().await;
    assert_eq!(texts(&history(&m2, &gid).await), ["once"]);
    assert_eq!(
        broker.metric("convoke_messages_deduplicated_total").await,
        11.0
    );
}

#[tokio::test]
async fn two_pipelined_sends_of_one_id_answer_alike() {
    let broker = Broker::start().await;
    let (gid, [_owner, _adm, m1, mut m2, _out]) = standard_group(&broker, false).await;
    // Both requests are written before either answer is awaited.
    let (a, b) = tokio::join!(
        send_id(&m1, &gid, "twice", "c-2"),
        send_id(&m1, &gid, "twice", "c-2")
    );
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(m2.expect_message().await.payload, b"twice");
    m2.expect_quiet().await;
    assert_eq!(texts(&history(&m2, &gid).await), ["twice"]);
}

#[tokio::test]
async fn a_crash_between_the_durable_write_and_the_answer_keeps_the_message_and_the_retry_gets_it()
{
    let mut broker = Broker::start_with(&[("debug.fault_injection", "true")]).await;
    let (gid, [_owner, _adm, m1, ..]) = standard_group(&broker, false).await;
    let id = "fault:abort-after-commit/1";
    let c = m1.client.clone();
    let gid2 = gid.clone();
    let send = tokio::spawn(async move { send_raw(&c, &gid2, "durable, unanswered", id).await });
    // The process aborts (a zombie until reaped: nobody answered for it); on a cluster,
    // the node that owns the group.
    let pids = broker.pids();
    eventually("the broker to abort", || async {
        let aborted = pids.iter().any(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            matches!(state, None | Some('Z' | 'X'))
        });
        aborted.then_some(())
    })
    .await;
    assert!(
        broker.log().contains("fault injection: aborting"),
        "{}",
        broker.log()
    );
    if send.is_finished() {
        let r = send.await.unwrap();
        assert!(r.is_err(), "answered before the abort: {r:?}");
    } else {
        send.abort();
    }
    drop(m1);
    broker.crash_restart();

    let m1 = broker.connect("m1").await;
    // The owner, who made every change so far, has no kept events to replay at this login.
    let mut owner = broker.connect("owner").await;
    let h = history(&m1, &gid).await;
    assert_eq!(texts(&h), ["durable, unanswered"]);
    // The retry (whose id would abort again were it stored again) answers the stored one.
    let retry = send_id(&m1, &gid, "durable, unanswered", id).await.unwrap();
    assert_eq!(
        (retry.0.as_str(), retry.1, retry.2),
        (h[0].msg_id.as_str(), h[0].seq, h[0].timestamp)
    );
    owner.expect_quiet().await;
    assert_eq!(history(&m1, &gid).await.len(), 1);
}

#[tokio::test]
async fn the_fault_prefix_is_an_ordinary_id_without_fault_injection() {
    let broker = Broker::start().await;
    let (gid, [_owner, _adm, m1, mut m2, _out]) = standard_group(&broker, false).await;
    let id = "fault:abort-after-commit";
    let sent = send_id(&m1, &gid, "fine", id).await.unwrap();
    assert_eq!(m2.expect_message().await.payload, b"fine");
    assert_eq!(send_id(&m1, &gid, "fine", id).await.unwrap(), sent);
    m2.expect_quiet().await;
}
