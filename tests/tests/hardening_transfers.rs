//! Hardening of shared-file transfers (issue #12 item 7): a per-user cap on transfers in
//! progress, a minimum rate and a total deadline per transfer stream.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use bytes::BytesMut;
use convoke_client::UploadSource;
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::handshake::{ClientFrame, Hello, ServerFrame, SUPPORTED_VERSIONS};
use convoke_protocol::transfer::{TransferHeader, TransferReply, CANCELLED};
use convoke_protocol::{decode_frame, ErrorCode};
use convoke_tests::{eventually, group_data, pattern_bytes, raw_connection, Broker, WAIT};
use std::time::Duration;

/// A logged-in bare connection of `user`; keep the returned streams (they are the session).
async fn session(
    broker: &Broker,
    user: &str,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let conn = raw_connection(broker).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = ClientFrame::Hello(Hello {
        versions: SUPPORTED_VERSIONS.to_vec(),
        token: broker.token(user, false, 600),
        device_id: "raw".into(),
        events: false,
    });
    send.write_all(&frame_bytes(&hello).unwrap()).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = decode_frame::<ServerFrame>(&mut buf, 1 << 20).unwrap() {
            assert!(matches!(f, ServerFrame::Welcome(_)), "{f:?}");
            return (conn, send, recv);
        }
        let chunk = recv.read_chunk(4096, true).await.unwrap().unwrap();
        buf.extend_from_slice(&chunk.bytes);
    }
}

fn upload_header(gid: &str, upload_id: u64, size: u64, resume: bool) -> bytes::Bytes {
    frame_bytes(&TransferHeader::Upload {
        group_id: gid.into(),
        file_name: format!("f{upload_id}.bin"),
        size,
        content_type: "application/octet-stream".into(),
        upload_id,
        resume,
    })
    .unwrap()
}

/// The next reply on a transfer stream, within [`WAIT`].
async fn reply(recv: &mut quinn::RecvStream) -> TransferReply {
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            if let Some(r) = decode_frame::<TransferReply>(&mut buf, 1 << 20).unwrap() {
                return r;
            }
            let chunk = recv.read_chunk(4096, true).await.unwrap().unwrap();
            buf.extend_from_slice(&chunk.bytes);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no transfer reply in time")
}

/// Opens an upload stream that waits to be admitted (a resume of an unknown id is admitted
/// afresh and answered `ResumeAt { 0 }` before any byte).
async fn admitted_upload(
    conn: &quinn::Connection,
    gid: &str,
    upload_id: u64,
    size: u64,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&upload_header(gid, upload_id, size, true))
        .await
        .unwrap();
    match reply(&mut recv).await {
        TransferReply::ResumeAt { offset: 0 } => (send, recv),
        other => panic!("upload {upload_id} not admitted: {other:?}"),
    }
}

async fn group(broker: &Broker) -> (String, convoke_tests::Peer) {
    let alice = broker.connect("alice").await;
    let gid = alice
        .client
        .create_group(group_data("files", &[]))
        .await
        .unwrap();
    (gid, alice)
}

#[tokio::test]
async fn transfers_in_progress_are_capped_per_user_over_all_sessions() {
    let broker = Broker::start_with(&[("files.max_transfers_per_user", "2")]).await;
    let (gid, _alice) = group(&broker).await;
    let (a, _sa, _ra) = session(&broker, "alice").await;
    let (b, _sb, _rb) = session(&broker, "alice").await;
    let (mut first, _first_recv) = admitted_upload(&a, &gid, 1, 1000).await;
    let _second = admitted_upload(&b, &gid, 2, 1000).await;
    // A third, on either session: refused before a byte, naming the cap.
    let (mut send, mut recv) = b.open_bi().await.unwrap();
    send.write_all(&upload_header(&gid, 3, 1000, true))
        .await
        .unwrap();
    match reply(&mut recv).await {
        TransferReply::Outcome(Err(e)) => {
            assert_eq!(e.code, ErrorCode::MaxLimit, "{e}");
            assert!(e.message.contains("at most 2"), "{e}");
        }
        other => panic!("a third transfer must be refused: {other:?}"),
    }
    // Another user is not affected.
    let (bob_conn, _sbob, _rbob) = session(&broker, "bob").await;
    let (mut send, mut recv) = bob_conn.open_bi().await.unwrap();
    send.write_all(&upload_header(&gid, 9, 10, true))
        .await
        .unwrap();
    assert!(
        matches!(reply(&mut recv).await, TransferReply::Outcome(Err(e)) if e.code == ErrorCode::GroupNotJoined),
        "bob is refused for his membership, not for alice's cap"
    );
    // A transfer that ends gives its place back.
    first.reset(CANCELLED.into()).unwrap();
    eventually("a freed transfer place", || async {
        let (mut send, mut recv) = b.open_bi().await.unwrap();
        send.write_all(&upload_header(&gid, 4, 1000, true))
            .await
            .ok()?;
        match reply(&mut recv).await {
            TransferReply::ResumeAt { offset: 0 } => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(broker.metric("convoke_transfers_stopped_total").await >= 1.0);
}

#[tokio::test]
async fn an_upload_slower_than_the_minimum_rate_is_stopped_and_kept() {
    let broker = Broker::start_with(&[
        ("files.transfer_min_bytes_per_sec", "100000"),
        ("files.transfer_rate_window_ms", "500"),
    ])
    .await;
    let (gid, _alice) = group(&broker).await;
    let (conn, _s, _r) = session(&broker, "alice").await;
    let (mut send, mut recv) = admitted_upload(&conn, &gid, 1, 1_000_000).await;
    // 100 bytes, then a byte now and then: far under 100 kB/s, never idle for long.
    send.write_all(&[1u8; 100]).await.unwrap();
    let drip = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if send.write_all(&[2u8]).await.is_err() {
                break;
            }
        }
    });
    match reply(&mut recv).await {
        TransferReply::Outcome(Err(e)) => {
            assert_eq!(e.code, ErrorCode::UploadFileError, "{e}");
            assert!(
                e.message.contains("too slow") && e.message.contains("100000 bytes/s"),
                "{e}"
            );
            assert!(e.message.contains("resume upload id 1"), "kept: {e}");
        }
        other => panic!("{other:?}"),
    }
    drip.abort();
}

#[tokio::test]
async fn a_transfer_past_its_deadline_is_stopped() {
    let broker = Broker::start_with(&[
        ("files.transfer_min_bytes_per_sec", "0"),
        ("files.transfer_max_secs", "1"),
    ])
    .await;
    let (gid, _alice) = group(&broker).await;
    let (conn, _s, _r) = session(&broker, "alice").await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&upload_header(&gid, 1, 10_000_000, false))
        .await
        .unwrap();
    let feed = tokio::spawn(async move {
        loop {
            if send.write_all(&[3u8; 1024]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    match reply(&mut recv).await {
        TransferReply::Outcome(Err(e)) => {
            assert_eq!(e.code, ErrorCode::UploadFileError, "{e}");
            assert!(e.message.contains("longer than the 1 s"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    feed.abort();
}

#[tokio::test]
async fn a_download_read_slower_than_the_minimum_rate_is_reset() {
    let broker = Broker::start_with(&[
        ("files.transfer_min_bytes_per_sec", "100000"),
        ("files.transfer_rate_window_ms", "500"),
    ])
    .await;
    let (gid, alice) = group(&broker).await;
    let data = pattern_bytes(4 * 1024 * 1024, 7);
    let file = alice
        .client
        .upload_group_shared_file(&gid, UploadSource::bytes(data, "big.bin"), None)
        .await
        .unwrap();
    let (conn, _s, _r) = session(&broker, "alice").await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let header = TransferHeader::Download {
        group_id: gid.clone(),
        file_id: file.file_id.clone(),
        secret: None,
        offset: 0,
    };
    send.write_all(&frame_bytes(&header).unwrap())
        .await
        .unwrap();
    send.finish().unwrap();
    assert!(matches!(
        reply(&mut recv).await,
        TransferReply::Outcome(Ok(_))
    ));
    // Read nothing more: the broker's writes stall, the window passes under the rate.
    eventually("the slow download stopped", || async {
        (broker.metric("convoke_transfers_stopped_total").await >= 1.0).then_some(())
    })
    .await;
    // Reading now: the stream was reset before the end.
    let mut got = 0usize;
    let end = loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => got += c.bytes.len(),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(
        matches!(end, Err(quinn::ReadError::Reset(_))),
        "{end:?} after {got} bytes"
    );
    assert!(got < 4 * 1024 * 1024);
}
