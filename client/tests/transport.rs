//! The client's transport against a scripted broker over real QUIC (tests/support): the
//! handshake and trust, pipelined requests, pushes, every way a connection ends, and file
//! transfers.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use convoke_client::{
    progress_channel, ClientError, ConnectionEvent, DownloadDest, ErrorCode, Event, GroupEventOp,
    Push, UploadSource,
};
use futures::StreamExt;
use std::time::{Duration, Instant};
use support::{eventually, FakeBroker};

const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn welcome_gives_identity_and_ping_works() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    assert_eq!(client.user_id(), "alice");
    assert!(!client.app_admin());
    assert_eq!(
        client.welcome().unwrap().version,
        convoke_client::protocol::PROTOCOL_VERSION
    );
    assert!(client.session_id() >= 1);
    let rtt = client.ping().await.unwrap();
    assert!(rtt < SOON);
    assert!(!client.is_closed());
}

#[tokio::test]
async fn pinning_accepts_the_right_fingerprint_only() {
    let broker = FakeBroker::start().await;
    let pinned = convoke_client::Client::builder()
        .server(broker.addr.to_string())
        .token("alice")
        .pin_sha256(broker.fingerprint())
        .connect()
        .await
        .unwrap();
    pinned.ping().await.unwrap();

    let wrong = convoke_client::Client::builder()
        .server_addr(broker.addr)
        .token("alice")
        .pin_sha256("ab".repeat(32))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(wrong, ClientError::Tls(_)), "{wrong}");

    let wrong_name = broker
        .client("alice")
        .server_name("elsewhere.example")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(wrong_name, ClientError::Tls(_)), "{wrong_name}");
}

#[tokio::test]
async fn refusals_are_api_errors() {
    let broker = FakeBroker::start().await;
    let bad = broker.client("bad").connect().await.unwrap_err();
    assert_eq!(bad.code(), Some(ErrorCode::TokenNotAssigned), "{bad}");
    let old = broker
        .client("alice")
        .versions(vec![9])
        .connect()
        .await
        .unwrap_err();
    assert_eq!(old.code(), Some(ErrorCode::UnsupportedVersion), "{old}");
    assert!(old.to_string().contains("[9]"), "{old}");
}

#[tokio::test]
async fn pipelined_requests_complete_out_of_order() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    let start = Instant::now();
    let calls = (1..=40u64).rev().map(|ms| {
        let client = client.clone();
        async move {
            let id = (ms * 5).to_string();
            let admins = client.get_group_admin(&id).await.unwrap();
            assert_eq!(admins, [id]);
        }
    });
    futures::future::join_all(calls).await;
    // Served one after another this would take 4.1 s.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn api_errors_and_wrong_variants() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    let e = client.get_group_blocklist("7").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotImplemented));
    assert!(
        e.to_string().starts_with("error 501 NOT_IMPLEMENTED: "),
        "{e}"
    );
    let e = client.fetch_group_announcement("7").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Protocol(ref m) if m.contains("fetchGroupAnnouncement")),
        "{e}"
    );
    assert_eq!(client.create_group(Default::default()).await.unwrap(), "42");
}

/// A kept event reaches the application as a plain `Push::Group`, once per connection, and
/// only once the application takes it is it acknowledged; a client that does not take events never
/// acknowledges (the broker keeps the event for a later login).
#[tokio::test]
async fn kept_events_arrive_as_group_events_and_are_acknowledged() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    let mut events = client.events();
    client
        .invite_users_to_group("42", &["bob", "carol"])
        .await
        .unwrap();
    for (i, user) in ["bob", "carol"].into_iter().enumerate() {
        match tokio::time::timeout(SOON, events.next_push())
            .await
            .unwrap()
        {
            Some(Push::Group(e)) => {
                assert_eq!(e.operation, GroupEventOp::InviteToJoin);
                assert_eq!((e.users, e.timestamp), (vec![user.to_string()], i as i64));
            }
            other => panic!("{other:?}"),
        }
    }
    let acked = || broker.seen.lock().unwrap().acks.clone();
    assert!(
        eventually(5, || acked() == vec![100, 101]).await,
        "{:?}",
        acked()
    );
    // The same kept events again (a login's replay can repeat live ones): one connection
    // hands each on once.
    client
        .invite_users_to_group("42", &["bob", "carol"])
        .await
        .unwrap();
    client.ping().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.next_push())
            .await
            .is_err()
    );

    let deaf = broker
        .client("dave")
        .ignore_events()
        .connect()
        .await
        .unwrap();
    deaf.invite_users_to_group("42", &["erin"]).await.unwrap();
    deaf.ping().await.unwrap();
    // Nor does one whose application never takes its events from the stream.
    let lazy = broker.client("fred").connect().await.unwrap();
    lazy.invite_users_to_group("42", &["gina"]).await.unwrap();
    lazy.ping().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(acked(), vec![100, 101]);
}

#[tokio::test]
async fn pushes_arrive_in_order_and_only_once() {
    let broker = FakeBroker::start().await;
    let client = broker
        .client("alice")
        .event_capacity(4)
        .connect()
        .await
        .unwrap();
    let mut events = client.events();
    assert!(events.is_active());
    assert!(!client.events().is_active(), "a second stream gets nothing");
    // More than the buffer holds: the broker is back-pressured, nothing is lost.
    client.update_group_announcement("42", "50").await.unwrap();
    for i in 0..50u64 {
        match tokio::time::timeout(SOON, events.next_push())
            .await
            .unwrap()
        {
            Some(Push::Group(e)) => assert_eq!(e.timestamp, i as i64),
            other => panic!("{other:?}"),
        }
    }
    let sent = client
        .send_group_message("42", "héllo", true)
        .await
        .unwrap();
    assert_eq!((sent.msg_id.as_str(), sent.seq), ("m1", 1));
    match tokio::time::timeout(SOON, events.next_push())
        .await
        .unwrap()
    {
        Some(Push::Message(m)) => {
            assert_eq!(m.payload, "héllo".as_bytes());
            assert!(m.allow_group_ack);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_broker_close_fails_pending_and_later_calls_and_ends_events() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    let mut events = client.events();
    let hanging = tokio::spawn({
        let client = client.clone();
        async move { client.leave_group("1").await }
    });
    let start = Instant::now();
    let closer = client.destroy_group("3").await.unwrap_err();
    let pending = hanging.await.unwrap().unwrap_err();
    assert!(start.elapsed() < SOON);
    for e in [&closer, &pending] {
        match e {
            ClientError::Closed { code, reason } => {
                assert_eq!(*code, Some(3));
                assert!(reason.contains("slow consumer"), "{reason}");
                assert!(reason.contains("you are too slow"), "{reason}");
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(client.ping().await.unwrap_err(), closer);
    assert_eq!(client.closed().await, closer);
    assert!(client.is_closed());
    // The connection's end, then the end of the stream.
    assert!(matches!(
        events.next().await,
        Some(Event::Connection(ConnectionEvent::Connected { .. }))
    ));
    assert!(matches!(
        tokio::time::timeout(SOON, events.next()).await.unwrap(),
        Some(Event::Connection(ConnectionEvent::GaveUp { reason, .. })) if reason.contains("slow consumer")
    ));
    assert_eq!(
        tokio::time::timeout(SOON, events.next()).await.unwrap(),
        None
    );
    let upload = client
        .upload_group_shared_file("42", UploadSource::bytes(vec![1], "a"), None)
        .await
        .unwrap_err();
    assert!(upload.is_closed(), "{upload}");
}

#[tokio::test]
async fn timeouts_leave_the_connection_usable() {
    let broker = FakeBroker::start().await;
    let client = broker
        .client("alice")
        .request_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        client.leave_group("1").await.unwrap_err(),
        ClientError::Timeout
    );
    client.ping().await.unwrap();
}

#[tokio::test]
async fn closing_and_dropping_the_client() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    let mut events = client.events();
    // leaveGroup is never answered. It is polled first (biased) until it waits for its
    // answer, having been queued for the writer; a ping queued after it and answered proves
    // the broker has read it: it is in flight, not merely started.
    let mut hanging = std::pin::pin!(client.leave_group("1"));
    tokio::select! {
        biased;
        r = &mut hanging => panic!("leaveGroup was answered: {r:?}"),
        r = client.ping() => r.unwrap(),
    };
    let (e, ()) = tokio::join!(hanging, client.close());
    let e = e.unwrap_err();
    assert!(
        matches!(e, ClientError::Closed { code: Some(0), .. }),
        "{e}"
    );
    assert!(client.is_closed());
    assert_eq!(events.next_push().await, None);
    assert!(eventually(5, || broker.seen.lock().unwrap().closes.len() == 1).await);

    let dropped = broker.client("bob").connect().await.unwrap();
    dropped.ping().await.unwrap();
    drop(dropped);
    assert!(eventually(5, || broker.seen.lock().unwrap().closes.len() == 2).await);
    let how = broker.seen.lock().unwrap().closes[1].clone();
    assert!(how.contains("closed by peer"), "{how}");
}

#[tokio::test]
async fn upload_then_download_round_trip_with_progress() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let file = client
        .upload_group_shared_file(
            "42",
            UploadSource::bytes(data.clone(), "data.bin"),
            Some(progress_channel(tx)),
        )
        .await
        .unwrap();
    assert_eq!(file.file_size, data.len() as u64);
    assert_eq!(broker.seen.lock().unwrap().files[&file.file_id], data);
    let mut last = None;
    while let Ok(p) = rx.try_recv() {
        last = Some(p);
    }
    let last = last.unwrap();
    assert_eq!(
        (last.done, last.total),
        (data.len() as u64, data.len() as u64)
    );

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let got = client
        .download_group_shared_file("42", &file.file_id, None, dest.as_path(), None)
        .await
        .unwrap();
    assert_eq!(got.file_size, data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(!dir.path().join("out.bin.part").exists());

    let mut memory = Vec::new();
    let (writer, mut reader) = tokio::io::duplex(1 << 20);
    client
        .download_group_shared_file(
            "42",
            &file.file_id,
            Some("s"),
            DownloadDest::writer(writer),
            None,
        )
        .await
        .unwrap();
    tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut memory)
        .await
        .unwrap();
    assert_eq!(memory, data);
}

#[tokio::test]
async fn transfer_refusals_and_short_downloads() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    let big = UploadSource::bytes(vec![7; 2_000_000], "big.bin");
    let e = client
        .upload_group_shared_file("ni", big, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotImplemented), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.bin");
    let e = client
        .download_group_shared_file("42", "nope", None, dest.as_path(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::DownloadFileError), "{e}");
    let e = client
        .download_group_shared_file("42", "short", None, dest.as_path(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("50 of 100"), "{e}");
    assert!(!dest.exists());
    assert!(!dir.path().join("x.bin.part").exists());
    // The control stream was never disturbed.
    client.ping().await.unwrap();
}

#[tokio::test]
async fn cancelling_an_upload_resets_its_stream() {
    let broker = FakeBroker::start().await;
    let client = broker.client("alice").connect().await.unwrap();
    // A source that yields some bytes and then stalls.
    let (mut feed, source) = tokio::io::duplex(64 * 1024);
    tokio::io::AsyncWriteExt::write_all(&mut feed, &[1; 10_000])
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let upload = client.upload_group_shared_file(
        "42",
        UploadSource::reader(source, 1_000_000, "stall.bin"),
        Some(progress_channel(tx)),
    );
    let cancel = upload.cancel_handle();
    // Wait until some bytes went out.
    loop {
        let p = tokio::time::timeout(SOON, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if p.done > 0 {
            break;
        }
    }
    cancel.cancel();
    assert_eq!(upload.await.unwrap_err(), ClientError::Cancelled);
    assert!(
        eventually(5, || broker.seen.lock().unwrap().upload_resets == [1]).await,
        "{:?}",
        broker.seen.lock().unwrap()
    );
    client.ping().await.unwrap();
    drop(feed);
}

#[tokio::test]
async fn a_silent_address_is_a_connect_error_within_the_timeout() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let e = convoke_client::Client::builder()
        .server_addr(silent.local_addr().unwrap())
        .token("alice")
        .pin_sha256("00".repeat(32))
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Connect(ref m) if m.contains("no welcome")),
        "{e}"
    );
    assert!(start.elapsed() < SOON);
}

/// A client of several servers (a cluster's nodes): a first server that is down (a QUIC
/// dial hears nothing) costs the dial stagger, not the connect timeout; one that answers
/// the QUIC handshake but is slow to welcome is waited for, with no second session
/// elsewhere; a server whose certificate is not trusted does not keep the client from the
/// next one.
#[tokio::test]
async fn a_server_list_dials_past_a_dead_server_and_waits_for_a_live_slow_one() {
    let good = FakeBroker::start().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listed = |servers: [String; 2], ca: &FakeBroker| {
        convoke_client::Client::builder()
            .servers(servers)
            .token("alice")
            .ca_pem(ca.cert_pem.clone().into_bytes())
            .connect_timeout(Duration::from_secs(8))
            .dial_stagger(Duration::from_millis(300))
            .reconnect(convoke_client::ReconnectPolicy::disabled())
            .connect()
    };

    // Down first: connected to the second within the stagger and a bit.
    let start = Instant::now();
    let client = listed(
        [
            silent.local_addr().unwrap().to_string(),
            good.addr.to_string(),
        ],
        &good,
    )
    .await
    .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(good.seen.lock().unwrap().hellos, 1);
    client.close().await;

    // Up but slow to welcome (1 s, over the 300 ms stagger): waited for; the other server
    // never hears a hello.
    let slow = FakeBroker::start_with_welcome_delay(Duration::from_secs(1)).await;
    let other = FakeBroker::start().await;
    let mut both = slow.cert_pem.clone();
    both.push_str(&other.cert_pem);
    let client = convoke_client::Client::builder()
        .servers([slow.addr.to_string(), other.addr.to_string()])
        .token("alice")
        .ca_pem(both.into_bytes())
        .dial_stagger(Duration::from_millis(300))
        .reconnect(convoke_client::ReconnectPolicy::disabled())
        .connect()
        .await
        .unwrap();
    client.ping().await.unwrap();
    assert_eq!(slow.seen.lock().unwrap().hellos, 1);
    assert_eq!(
        other.seen.lock().unwrap().hellos,
        0,
        "a second session was opened"
    );
    client.close().await;

    // Not trusted first (a certificate error, which retrying cannot fix): the next server.
    let untrusted = FakeBroker::start().await;
    let client = listed([untrusted.addr.to_string(), good.addr.to_string()], &good)
        .await
        .unwrap();
    client.ping().await.unwrap();
    assert_eq!(good.seen.lock().unwrap().hellos, 2);
    client.close().await;
}

/// A reconnect where one server is down and the other's certificate is not trusted keeps
/// trying (the down one may come back): the certificate error alone does not end the
/// client, as it did when any error retrying could not fix ended the dial.
#[tokio::test]
async fn one_untrusted_server_does_not_end_the_reconnects_while_another_is_only_down() {
    let good = FakeBroker::start().await;
    let untrusted = FakeBroker::start().await;
    let client = convoke_client::Client::builder()
        .servers([good.addr.to_string(), untrusted.addr.to_string()])
        .token("alice")
        .ca_pem(good.cert_pem.clone().into_bytes())
        .connect_timeout(Duration::from_millis(300))
        .dial_stagger(Duration::from_millis(100))
        .reconnect(convoke_client::ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            ..convoke_client::ReconnectPolicy::default()
        })
        .connect()
        .await
        .unwrap();
    let mut events = client.events();
    drop(good);
    let mut attempts = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Some(Event::Connection(ConnectionEvent::Reconnecting { .. }))) => attempts += 1,
            Ok(Some(Event::Connection(ConnectionEvent::GaveUp { reason, .. }))) => {
                panic!("gave up after {attempts} attempts: {reason}")
            }
            Ok(None) => panic!("the event stream ended after {attempts} attempts"),
            _ => {}
        }
    }
    assert!(attempts >= 3, "only {attempts} attempts in 3 s");
    assert!(!client.is_closed());
}
