//! The broker's browser listener (`[webtransport]`) from Rust, with web-transport-quinn's
//! client: what a browser does (HTTP/3 CONNECT, then the convoke frames on WebTransport
//! streams), checked where Chromium is not installed too. The browser itself runs in
//! tests/tests/web_sdk.rs (client/web/test/e2e).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use bytes::BytesMut;
use convoke_protocol::codec::{decode_frame, frame_bytes, MAX_FRAME_LEN};
use convoke_protocol::handshake::{ClientFrame, Hello, ServerFrame, SUPPORTED_VERSIONS};
use convoke_protocol::{GroupEventOp, Push, Request, Response};
use convoke_tests::{group_data, Broker};
use web_transport_quinn::{RecvStream, SendStream, Session};

/// A broker with its browser listener on a free port and a development certificate.
async fn broker(extra: &[(&str, &str)]) -> (Broker, String, Vec<u8>) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut settings = vec![
        ("webtransport.listen", listen.as_str()),
        ("webtransport.dev_certificate", "true"),
    ];
    settings.extend_from_slice(extra);
    let broker = Broker::start_with(&settings).await;
    let hash = std::fs::read_to_string(broker.data_dir().join("webtransport/cert.sha256"))
        .expect("the development certificate's hash file");
    let hash = hex::decode(hash.trim()).unwrap();
    (broker, format!("https://{listen}"), hash)
}

async fn dial(base: &str, path: &str, hash: &[u8]) -> Result<Session, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![hash.to_vec()])
        .map_err(|e| e.to_string())?;
    let url: url::Url = format!("{base}{path}").parse().unwrap();
    client.connect(url).await.map_err(|e| e.to_string())
}

async fn read<T: bincode::Decode<()>>(recv: &mut RecvStream, buf: &mut BytesMut) -> T {
    loop {
        if let Some(v) = decode_frame::<T>(buf, MAX_FRAME_LEN).unwrap() {
            return v;
        }
        let chunk = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            recv.read_chunk(1 << 16, true),
        )
        .await
        .expect("a frame in time")
        .unwrap()
        .expect("the stream ended");
        buf.extend_from_slice(&chunk.bytes);
    }
}

struct Browser {
    _session: Session,
    send: SendStream,
    recv: RecvStream,
    buf: BytesMut,
}

impl Browser {
    async fn login(session: Session, token: String) -> Result<Browser, convoke_protocol::ApiError> {
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        let hello = ClientFrame::Hello(Hello {
            versions: SUPPORTED_VERSIONS.to_vec(),
            token,
            device_id: "browser".into(),
            events: true,
        });
        send.write_all(&frame_bytes(&hello).unwrap()).await.unwrap();
        let mut buf = BytesMut::new();
        match read::<ServerFrame>(&mut recv, &mut buf).await {
            ServerFrame::Welcome(_) => Ok(Browser {
                _session: session,
                send,
                recv,
                buf,
            }),
            ServerFrame::Refused(e) => Err(e),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    async fn call(
        &mut self,
        id: u64,
        request: Request,
    ) -> Result<Response, convoke_protocol::ApiError> {
        let frame = frame_bytes(&ClientFrame::Request { id, request }).unwrap();
        self.send.write_all(&frame).await.unwrap();
        match read::<ServerFrame>(&mut self.recv, &mut self.buf).await {
            ServerFrame::Response { id: got, result } => {
                assert_eq!(got, id);
                result
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_webtransport_session_is_a_convoke_session() {
    let (broker, base, hash) = broker(&[]).await;
    let mut alice = broker.connect("alice").await;
    let session = dial(&base, "/convoke", &hash)
        .await
        .expect("CONNECT accepted");
    let mut bob = Browser::login(session.clone(), broker.token("bob", false, 600))
        .await
        .expect("welcome");
    // The event stream is the session's first incoming unidirectional stream.
    let mut events = session.accept_uni().await.unwrap();
    let mut ebuf = BytesMut::new();

    // A group alice makes with bob in it: bob's event arrives on the event stream (kept:
    // it changes his state), and bob's requests are answered on the control stream.
    let group = alice
        .client
        .create_group(group_data("web", &["bob"]))
        .await
        .unwrap();
    let push: Push = read(&mut events, &mut ebuf).await;
    let Push::Kept { id, event } = push else {
        panic!("expected a kept event, got {push:?}");
    };
    assert_eq!(event.operation, GroupEventOp::DirectJoined);
    assert_eq!(event.group_id, group);
    let ack = frame_bytes(&ClientFrame::Ack { ids: vec![id] }).unwrap();
    bob.send.write_all(&ack).await.unwrap();
    let members = bob
        .call(
            1,
            Request::ListGroupMembers {
                group_id: group.clone(),
                page_num: 1,
                page_size: 20,
            },
        )
        .await
        .unwrap();
    let Response::Members { members } = members else {
        panic!("expected members, got {members:?}");
    };
    assert_eq!(members.len(), 2);
    // bob's message reaches alice's QUIC session.
    bob.call(
        2,
        Request::SendGroupMessage {
            group_id: group.clone(),
            payload: b"from the browser listener".to_vec(),
            allow_group_ack: false,
            client_msg_id: None,
        },
    )
    .await
    .unwrap();
    let m = alice.expect_message().await;
    assert_eq!(m.from, "bob");
    assert_eq!(m.payload, b"from the browser listener");

    // The acknowledged kept event is not replayed to bob's next session.
    drop(bob);
    session.close(0, b"done");
    let again = dial(&base, "/convoke", &hash).await.unwrap();
    let _bob2 = Browser::login(again.clone(), broker.token("bob", false, 600))
        .await
        .unwrap();
    let mut events2 = again.accept_uni().await.unwrap();
    alice
        .client
        .update_group_announcement(&group, "marker")
        .await
        .unwrap();
    let mut buf2 = BytesMut::new();
    let first: Push = read(&mut events2, &mut buf2).await;
    let Push::Group(e) = first else {
        panic!("the acknowledged kept event came again: {first:?}");
    };
    assert_eq!(e.operation, GroupEventOp::UpdateAnnouncement);
}

#[tokio::test]
async fn refusals_over_webtransport() {
    // A CONNECT to another path: 404; without an allowed Origin (web-transport-quinn sends
    // none) when an allow-list is set: 403. Neither gets a session.
    let (strict, base, hash) =
        broker(&[("webtransport.allowed_origins", "https://app.example")]).await;
    let err = dial(&base, "/other", &hash).await.expect_err("wrong path");
    assert!(err.contains("404"), "{err}");
    let err = dial(&base, "/convoke", &hash).await.expect_err("no origin");
    assert!(err.contains("403"), "{err}");
    drop(strict);
    // A bad token: the Refused frame with 28, as on convoke/1.
    let (_broker, base, hash) = broker(&[]).await;
    let session = dial(&base, "/convoke", &hash).await.unwrap();
    let refused = Browser::login(session, "not-a-token".into())
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code, convoke_protocol::ErrorCode::TokenNotAssigned);
}

#[tokio::test]
async fn a_browser_cancel_releases_the_upload_at_once() {
    use convoke_protocol::transfer::{TransferHeader, CANCELLED};
    let (broker, base, hash) = broker(&[]).await;
    let alice = broker.connect("alice").await;
    let session = dial(&base, "/convoke", &hash).await.unwrap();
    let _bob = Browser::login(session.clone(), broker.token("bob", false, 600))
        .await
        .unwrap();
    let group = alice
        .client
        .create_group(group_data("files", &["bob"]))
        .await
        .unwrap();
    let (mut send, _recv) = session.open_bi().await.unwrap();
    let header = TransferHeader::Upload {
        group_id: group,
        file_name: "half.bin".into(),
        size: 4 << 20,
        content_type: String::new(),
        upload_id: 7,
        resume: false,
    };
    send.write_all(&frame_bytes(&header).unwrap())
        .await
        .unwrap();
    send.write_all(&vec![5u8; 1 << 20]).await.unwrap();
    let tmp = broker.data_dir().join("files/tmp");
    let parts = || std::fs::read_dir(&tmp).map_or(0, |d| d.count());
    convoke_tests::eventually("the partial upload on disk", || async {
        (parts() == 1).then_some(())
    })
    .await;
    // web-transport-quinn resets with the code mapped into HTTP/3's space, as browsers do:
    // the broker must read it as CANCELLED and drop the partial file (a broken upload would
    // be kept for a resume).
    send.reset(CANCELLED).unwrap();
    convoke_tests::eventually("the cancelled upload's partial file removed", || async {
        (parts() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn browsers_count_against_the_same_connection_caps() {
    let (broker, base, hash) = broker(&[("sessions.max_connections", "1")]).await;
    let _alice = broker.connect("alice").await;
    // The node's one connection is taken by a convoke/1 client: a browser is refused too.
    let refused = dial(&base, "/convoke", &hash).await;
    assert!(
        refused.is_err(),
        "a browser got past sessions.max_connections = 1"
    );
}

#[tokio::test]
async fn a_browser_that_does_not_read_its_events_is_told_slow_consumer() {
    let (broker, base, hash) = broker(&[
        ("sessions.outbound_queue", "16"),
        ("sessions.write_timeout_ms", "500"),
    ])
    .await;
    let alice = broker.connect("alice").await;
    let session = dial(&base, "/convoke", &hash).await.unwrap();
    let _bob = Browser::login(session.clone(), broker.token("bob", false, 600))
        .await
        .unwrap();
    // bob never accepts, let alone reads, his event stream.
    let group = alice
        .client
        .create_group(group_data("flood", &["bob"]))
        .await
        .unwrap();
    let payload = vec![7u8; 8 * 1024];
    let flood = async {
        for _ in 0..2000 {
            if alice
                .client
                .send_group_message(&group, payload.clone(), false)
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let closed = tokio::select! {
        e = session.closed() => e,
        () = async { flood.await; std::future::pending().await } => unreachable!(),
    };
    // The close reaches the page as a WebTransport session close with the protocol's code
    // (a bare QUIC close would be a connection error without it).
    let text = closed.to_string();
    assert!(
        text.contains(&format!("code={}", convoke_protocol::close::SLOW_CONSUMER)),
        "{text}"
    );
    assert!(text.contains("not read fast enough"), "{text}");
}

/// How the broker closed `session`, as web-transport-quinn reports it (a session close
/// carries `code=N` and the reason; a bare QUIC close does not).
async fn close_text(session: &Session) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), session.closed())
        .await
        .expect("the broker closed the session in time")
        .to_string()
}

#[tokio::test]
async fn a_browser_sending_a_bad_frame_hears_the_protocol_close_code() {
    use convoke_protocol::close;
    let (broker, base, hash) = broker(&[]).await;
    let cases: [(&str, Vec<u8>, u32, &str); 3] = [
        // A length prefix over the limit: FRAME_TOO_LARGE, as on convoke/1.
        (
            "oversized",
            u32::MAX.to_be_bytes().to_vec(),
            close::FRAME_TOO_LARGE,
            "exceeds the limit",
        ),
        // A whole frame whose body is no ClientFrame: MALFORMED_FRAME.
        (
            "malformed",
            [&3u32.to_be_bytes()[..], &[0xff, 0xff, 0xff]].concat(),
            close::MALFORMED_FRAME,
            "malformed frame",
        ),
        // A second hello: PROTOCOL_VIOLATION.
        (
            "hello twice",
            frame_bytes(&ClientFrame::Hello(Hello {
                versions: SUPPORTED_VERSIONS.to_vec(),
                token: broker.token("bob", false, 600),
                device_id: "browser".into(),
                events: true,
            }))
            .unwrap()
            .to_vec(),
            close::PROTOCOL_VIOLATION,
            "hello sent twice",
        ),
    ];
    for (what, bytes, code, reason) in cases {
        let session = dial(&base, "/convoke", &hash).await.unwrap();
        let mut bob = Browser::login(session.clone(), broker.token("bob", false, 600))
            .await
            .unwrap();
        bob.send.write_all(&bytes).await.unwrap();
        // Before: a bare QUIC close, which a page sees as "connection lost" without a code.
        let text = close_text(&session).await;
        assert!(text.contains(&format!("code={code}")), "{what}: {text}");
        assert!(text.contains(reason), "{what}: {text}");
    }
}

#[tokio::test]
async fn a_browser_that_does_not_log_in_in_time_hears_why() {
    let (_broker, base, hash) = broker(&[("sessions.handshake_timeout_ms", "1500")]).await;
    let session = dial(&base, "/convoke", &hash).await.unwrap();
    // The control stream is opened (a stream is sent only once it carries bytes: the
    // WebTransport header goes with the first write) but no hello follows.
    let (_send, _recv) = session.open_bi().await.unwrap();
    let text = close_text(&session).await;
    assert!(
        text.contains(&format!(
            "code={}",
            convoke_protocol::close::HANDSHAKE_REFUSED
        )),
        "{text}"
    );
    assert!(text.contains("not logged in within 1500 ms"), "{text}");
}

#[tokio::test]
async fn a_browser_that_stops_its_event_stream_hears_why() {
    let (broker, base, hash) = broker(&[]).await;
    let alice = broker.connect("alice").await;
    let session = dial(&base, "/convoke", &hash).await.unwrap();
    let _bob = Browser::login(session.clone(), broker.token("bob", false, 600))
        .await
        .unwrap();
    let mut events = session.accept_uni().await.unwrap();
    events.stop(0).unwrap();
    // The next event for bob finds the stream stopped: the session is closed rather than
    // left looking online while it receives nothing.
    alice
        .client
        .create_group(group_data("stopped", &["bob"]))
        .await
        .unwrap();
    let text = close_text(&session).await;
    assert!(
        text.contains(&format!(
            "code={}",
            convoke_protocol::close::PROTOCOL_VIOLATION
        )),
        "{text}"
    );
    assert!(text.contains("event stream"), "{text}");
}

#[tokio::test]
async fn a_browser_closed_over_the_session_limit_hears_why() {
    let (broker, base, hash) = broker(&[("limits.max_sessions_per_user", "1")]).await;
    let session = dial(&base, "/convoke", &hash).await.unwrap();
    let _bob = Browser::login(session.clone(), broker.token("bob", false, 600))
        .await
        .unwrap();
    // bob's second session (over convoke/1) closes his oldest, the browser's.
    let _bob2 = broker.connect("bob").await;
    let text = close_text(&session).await;
    assert!(
        text.contains(&format!("code={}", convoke_protocol::close::SESSION_LIMIT)),
        "{text}"
    );
    assert!(text.contains("too many sessions"), "{text}");
}

#[tokio::test]
async fn neither_listener_buffers_datagrams_nobody_reads() {
    let (broker, base, hash) = broker(&[]).await;
    // convoke/1 takes no datagrams at all (quinn's default buffers 1.25 MB of unread ones
    // per connection).
    let conn = convoke_tests::raw_connection(&broker).await;
    assert_eq!(conn.max_datagram_size(), None);
    assert!(matches!(
        conn.send_datagram(bytes::Bytes::from_static(b"unread")),
        Err(quinn::SendDatagramError::UnsupportedByPeer)
    ));
    // The browser listener takes datagrams (HTTP/3 datagrams need them) but keeps at most
    // 2 KiB of unread ones; datagrams of the largest size it announces do not end the
    // session (a bound under a packet's size did: quinn counts 32 bytes more per datagram).
    let session = dial(&base, "/convoke", &hash).await.unwrap();
    let max = session.max_datagram_size();
    assert!(max > 0, "no datagrams negotiated");
    for _ in 0..100 {
        session
            .send_datagram(bytes::Bytes::from(vec![1u8; max]))
            .unwrap();
    }
    let mut bob = Browser::login(session.clone(), broker.token("bob", false, 600))
        .await
        .unwrap();
    let joined = bob
        .call(
            1,
            Request::GetJoinedGroups {
                page_num: 1,
                page_size: 10,
                need_affiliations: false,
                need_role: false,
            },
        )
        .await;
    assert!(joined.is_ok(), "{joined:?}");
}

/// A graceful stop (SIGTERM) closes a browser's session with SHUTDOWN and its reason, as a
/// WebTransport session close, so that the page knows to reconnect (elsewhere) rather than
/// seeing a lost connection. Before, the endpoint's bare QUIC close reached it without code.
#[tokio::test]
async fn a_browser_hears_shutdown_at_a_graceful_stop() {
    let (mut broker, base, hash) = broker(&[]).await;
    let session = dial(&base, "/convoke", &hash).await.unwrap();
    let _bob = Browser::login(session.clone(), broker.token("bob", false, 600))
        .await
        .unwrap();
    broker.stop();
    let text = close_text(&session).await;
    assert!(
        text.contains(&format!("code={}", convoke_protocol::close::SHUTDOWN)),
        "{text}"
    );
    assert!(text.contains("shutting down"), "{text}");
}
