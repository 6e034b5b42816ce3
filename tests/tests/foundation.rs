//! The foundation, end to end: handshake and auth, pipelining, bad frames, the CLI.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::ClientError;
use convoke_protocol::codec::{encode_frame, frame_bytes};
use convoke_protocol::handshake::{ClientFrame, Hello, ServerFrame, SUPPORTED_VERSIONS};
use convoke_protocol::{close, ErrorCode, Request, Response};
use convoke_tests::{assert_code, raw_connection, Broker};

#[tokio::test]
async fn connect_and_ping() {
    let broker = Broker::start().await;
    let alice = broker.connect("alice").await;
    assert_eq!(alice.client.user_id(), "alice");
    assert!(!alice.client.app_admin());
    let rtt = alice.client.ping().await.unwrap();
    assert!(rtt.as_secs() < 5);
    let admin = broker.connect_admin("root").await;
    assert!(admin.client.app_admin());
}

#[tokio::test]
async fn bad_expired_and_missing_tokens_are_refused() {
    let broker = Broker::start().await;
    let attempt = |token: String| {
        let b = broker.builder().token(token).device_id("d1");
        async move { b.connect().await }
    };
    let msg = assert_code(
        attempt("not-a-token".into()).await,
        ErrorCode::TokenNotAssigned,
    );
    assert!(!msg.is_empty());
    let expired = broker.token("alice", false, -10);
    let msg = assert_code(attempt(expired).await, ErrorCode::TokenNotAssigned);
    assert!(msg.to_lowercase().contains("expired"), "{msg}");
    assert_code(attempt(String::new()).await, ErrorCode::TokenNotAssigned);
    // A token signed with another secret.
    let forged = convoke_broker::auth::mint(b"some-other-secret", "alice", true, u64::MAX / 2);
    assert_code(attempt(forged).await, ErrorCode::TokenNotAssigned);
    // The broker still serves good clients.
    broker.connect("bob").await.client.ping().await.unwrap();
}

#[tokio::test]
async fn unknown_protocol_version_is_refused_naming_both() {
    let broker = Broker::start().await;
    let r = broker
        .builder()
        .token(broker.token("alice", false, 60))
        .versions(vec![99])
        .connect()
        .await;
    let msg = assert_code(r, ErrorCode::UnsupportedVersion);
    assert!(
        msg.contains("99") && msg.contains(&SUPPORTED_VERSIONS[0].to_string()),
        "{msg}"
    );
}

#[tokio::test]
async fn pipelined_requests_are_each_answered() {
    let broker = Broker::start().await;
    let alice = broker.connect("alice").await;
    let mut pending = Vec::new();
    // More than the 256 a session may have in flight: the rest wait, none is lost.
    for i in 0..600u64 {
        let c = alice.client.clone();
        pending.push(tokio::spawn(async move {
            c.request(Request::Ping { nonce: i }).await
        }));
    }
    for (i, p) in pending.into_iter().enumerate() {
        match p.await.unwrap().unwrap() {
            Response::Pong { nonce, .. } => assert_eq!(nonce, i as u64),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Mixed: a create and reads in flight together.
    let c = alice.client.clone();
    let (created, bad) = tokio::join!(
        c.create_group(convoke_protocol::CreateGroupData {
            groupname: "g".into(),
            ..Default::default()
        }),
        c.get_group_info(&["12345"]),
    );
    assert!(created.is_ok());
    let entries = bad.unwrap();
    assert_eq!(
        entries[0].error.as_ref().unwrap().code,
        ErrorCode::GroupNotExist
    );
}

async fn hello(conn: &quinn::Connection, token: String) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let frame = frame_bytes(&ClientFrame::Hello(Hello {
        versions: SUPPORTED_VERSIONS.to_vec(),
        token,
        device_id: "raw".into(),
        events: true,
    }))
    .unwrap();
    send.write_all(&frame).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(f) = convoke_protocol::decode_frame::<ServerFrame>(&mut buf, 1 << 20).unwrap() {
            assert!(matches!(f, ServerFrame::Welcome(_)), "{f:?}");
            break;
        }
        let chunk = recv.read_chunk(4096, true).await.unwrap().unwrap();
        buf.extend_from_slice(&chunk.bytes);
    }
    (send, recv)
}

fn close_code(e: quinn::ConnectionError) -> Option<u32> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner() as u32),
        _ => None,
    }
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    let broker = Broker::start().await;
    let bob = broker.connect("bob").await;
    let conn = raw_connection(&broker).await;
    let (mut send, _recv) = hello(&conn, broker.token("mallory", false, 60)).await;
    // A length prefix around bytes that are no ClientFrame.
    send.write_all(&[0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc])
        .await
        .unwrap();
    let reason = tokio::time::timeout(convoke_tests::WAIT, conn.closed())
        .await
        .unwrap();
    assert_eq!(close_code(reason), Some(close::MALFORMED_FRAME));
    bob.client.ping().await.unwrap();
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let broker = Broker::start().await;
    let bob = broker.connect("bob").await;
    let conn = raw_connection(&broker).await;
    let (mut send, _recv) = hello(&conn, broker.token("mallory", false, 60)).await;
    // Announce 1 GiB; the broker must refuse from the prefix alone.
    send.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let reason = tokio::time::timeout(convoke_tests::WAIT, conn.closed())
        .await
        .unwrap();
    assert_eq!(close_code(reason), Some(close::FRAME_TOO_LARGE));
    bob.client.ping().await.unwrap();
    // A request frame that is valid is still fine for everyone else.
    let mut buf = bytes::BytesMut::new();
    encode_frame(
        &ClientFrame::Request {
            id: 1,
            request: Request::Ping { nonce: 1 },
        },
        &mut buf,
    )
    .unwrap();
    assert!(!buf.is_empty());
}

#[tokio::test]
async fn a_dropped_connection_is_an_error_not_a_hang() {
    let mut broker = Broker::start().await;
    // Graceful shutdown: the broker closes connections with a reason (a client that
    // does not reconnect sees it on every call).
    let alice = broker
        .builder()
        .token(broker.token("alice", false, 60))
        .reconnect(convoke_client::ReconnectPolicy::disabled())
        .connect()
        .await
        .unwrap();
    broker.stop();
    match tokio::time::timeout(convoke_tests::WAIT, alice.ping()).await {
        Ok(Err(ClientError::Closed { code, reason })) => {
            assert_eq!(code, Some(close::SHUTDOWN), "{reason}");
        }
        other => panic!("expected Closed after shutdown, got {other:?}"),
    }
    // Later calls fail at once with the same error.
    assert!(matches!(
        alice.ping().await,
        Err(ClientError::Closed { .. })
    ));

    // kill -9: no close frame ever comes; the call still ends, with a timeout.
    broker.restart();
    let bob = broker
        .builder()
        .token(broker.token("bob", false, 60))
        .request_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    broker.kill9();
    match tokio::time::timeout(std::time::Duration::from_secs(20), bob.ping()).await {
        Ok(Err(e)) => assert!(
            matches!(
                e,
                ClientError::Closed { .. }
                    | ClientError::Timeout
                    | ClientError::Disconnected { .. }
            ),
            "{e:?}"
        ),
        Ok(Ok(_)) => panic!("ping answered by a dead broker"),
        Err(_) => panic!("ping hung"),
    }
}
