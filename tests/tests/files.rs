//! Shared files end to end: upload and download on their own streams (integrity, limits,
//! cancel, permissions, the secret), the index (paging, delete, events), chat traffic
//! during a big transfer, and what survives a restart or a `kill -9` mid-upload.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::{progress_channel, ClientError, Progress, SharedFile, UploadSource};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::handshake::{ClientFrame, Hello, ServerFrame, SUPPORTED_VERSIONS};
use convoke_protocol::transfer::{TransferHeader, TransferReply};
use convoke_protocol::{decode_frame, ApiError, ErrorCode, EventDetail, GroupEventOp as Op};
use convoke_tests::{assert_code, eventually, group_data, peers, raw_connection, Broker, Peer};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const MIB: usize = 1024 * 1024;

use convoke_tests::pattern_bytes as content;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// alice (owner) and bob (member) in a group; carol outside. Setup events consumed.
async fn setup(broker: &Broker) -> (String, Peer, Peer, Peer) {
    let [alice, mut bob, carol] = peers(broker, &["alice", "bob", "carol"])
        .await
        .try_into()
        .unwrap();
    let gid = alice
        .client
        .create_group(group_data("files", &["bob"]))
        .await
        .unwrap();
    bob.expect(Op::DirectJoined).await;
    (gid, alice, bob, carol)
}

async fn upload(p: &Peer, gid: &str, name: &str, data: Vec<u8>) -> Result<SharedFile, ClientError> {
    p.client
        .upload_group_shared_file(gid, UploadSource::bytes(data, name), None)
        .await
}

async fn download(
    p: &Peer,
    gid: &str,
    file_id: &str,
    secret: Option<&str>,
) -> Result<Vec<u8>, ClientError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    p.client
        .download_group_shared_file(gid, file_id, secret, path.as_path(), None)
        .await?;
    Ok(std::fs::read(path).unwrap())
}

async fn list(p: &Peer, gid: &str, page: u32, size: u32) -> Vec<SharedFile> {
    p.client
        .get_group_shared_filelist(gid, page, size)
        .await
        .unwrap()
}

/// The files dirs: the broker's, or on a cluster every node's (a group's files are on the
/// node that owns the group).
fn files_dirs(broker: &Broker) -> Vec<PathBuf> {
    broker
        .data_dirs()
        .into_iter()
        .map(|d| d.join("files"))
        .collect()
}

/// Entries of `sub` (a group's blobs, or `tmp`) in the files dirs (none where it does not
/// exist).
fn entries(broker: &Broker, sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in files_dirs(broker) {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            out.extend(rd.map(|e| e.unwrap().path()));
        }
    }
    out
}

async fn tmp_becomes_empty(broker: &Broker) {
    eventually("files/tmp to be empty", || {
        let left = entries(broker, "tmp");
        async move { left.is_empty().then_some(()) }
    })
    .await;
}

/// The value of one series on /metrics, 0 if absent.
async fn metric(broker: &Broker, series: &str) -> f64 {
    let (_, body) = broker.http_get("/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sends a hello on a bare connection; returns the control stream (keep it: it is the session).
async fn hello(conn: &quinn::Connection, token: String) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = ClientFrame::Hello(Hello {
        versions: SUPPORTED_VERSIONS.to_vec(),
        token,
        device_id: "raw".into(),
        events: true,
    });
    send.write_all(&frame_bytes(&hello).unwrap()).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(f) = decode_frame::<ServerFrame>(&mut buf, 1 << 20).unwrap() {
            assert!(matches!(f, ServerFrame::Welcome(_)), "{f:?}");
            return (send, recv);
        }
        let chunk = recv.read_chunk(4096, true).await.unwrap().unwrap();
        buf.extend_from_slice(&chunk.bytes);
    }
}

/// An upload that declares `declared` bytes and sends `body`, as no honest client would.
async fn raw_upload(
    broker: &Broker,
    user: &str,
    gid: &str,
    declared: u64,
    body: &[u8],
) -> ApiError {
    let conn = raw_connection(broker).await;
    let _session = hello(&conn, broker.token(user, false, 60)).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let header = TransferHeader::Upload {
        group_id: gid.into(),
        file_name: "forged.bin".into(),
        size: declared,
        content_type: "application/octet-stream".into(),
        upload_id: 1,
        resume: false,
    };
    send.write_all(&frame_bytes(&header).unwrap())
        .await
        .unwrap();
    // The broker may stop the stream part way: that is the point.
    let _ = send.write_all(body).await;
    let _ = send.finish();
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(o) = decode_frame::<TransferReply>(&mut buf, 1 << 20).unwrap() {
            match o {
                TransferReply::Outcome(result) => {
                    return result.expect_err("a forged upload must fail")
                }
                other => panic!("{other:?}"),
            }
        }
        let chunk = recv.read_chunk(4096, true).await.unwrap().unwrap();
        buf.extend_from_slice(&chunk.bytes);
    }
}

#[tokio::test]
async fn five_mib_round_trip_is_byte_identical() {
    let broker = Broker::start().await;
    let (gid, alice, mut bob, mut carol) = setup(&broker).await;
    let mut alice2 = broker.connect_device("alice", "d2").await;
    let data = content(5 * MIB, 1);
    let file = upload(&alice, &gid, "video.mp4", data.clone())
        .await
        .unwrap();
    assert_eq!(file.file_name, "video.mp4");
    assert_eq!(file.file_owner, "alice");
    assert_eq!(file.file_size, data.len() as u64);
    assert_eq!(file.content_type, "video/mp4");
    assert_eq!(file.sha256, sha(&data));
    assert!(!file.secret.is_empty());

    // uploadFile: members and the uploader's other devices, with the entry; not outsiders.
    for p in [&mut bob, &mut alice2] {
        let ev = p.expect(Op::UploadFile).await;
        assert_eq!(ev.from, "alice");
        assert_eq!(ev.group_id, gid);
        assert_eq!(ev.detail, EventDetail::File { file: file.clone() });
    }
    carol.expect_quiet().await;

    let got = download(&bob, &gid, &file.file_id, None).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(sha(&got), sha(&data));
    assert!(got == data);
    assert_eq!(list(&bob, &gid, 1, 10).await, vec![file]);
    tmp_becomes_empty(&broker).await;
    let up = metric(&broker, "convoke_file_bytes_total{direction=\"up\"}").await;
    let down = metric(&broker, "convoke_file_bytes_total{direction=\"down\"}").await;
    assert!(
        up >= (5 * MIB) as f64 && down >= (5 * MIB) as f64,
        "up {up} down {down}"
    );
}

#[tokio::test]
async fn over_size_declared_or_sent_keeps_nothing() {
    let broker = Broker::start_with(&[("limits.max_file_bytes", "1000000")]).await;
    let (gid, alice, mut bob, _carol) = setup(&broker).await;

    // Declared over the limit: refused before a byte is taken.
    let len = 1_000_001u64;
    let source = UploadSource::reader(tokio::io::repeat(0).take(len), len, "big.bin");
    let r = alice
        .client
        .upload_group_shared_file(&gid, source, None)
        .await;
    let msg = assert_code(r, ErrorCode::UploadFileError);
    assert!(msg.contains("1000001") && msg.contains("1000000"), "{msg}");
    let up = metric(&broker, "convoke_file_bytes_total{direction=\"up\"}").await;
    assert_eq!(up, 0.0, "no byte of a refused upload is read");

    // Declared within the limit, but more sent: cut off.
    let e = raw_upload(&broker, "alice", &gid, 1000, &content(3 * MIB, 2)).await;
    assert_eq!(e.code, ErrorCode::UploadFileError);
    assert!(
        e.message.contains("more than the declared 1000 bytes"),
        "{e}"
    );
    // Fewer sent than declared, then the end of the stream: failed too.
    let e = raw_upload(&broker, "alice", &gid, 1000, &content(500, 3)).await;
    assert_eq!(e.code, ErrorCode::UploadFileError);
    assert!(e.message.contains("500 of the declared 1000"), "{e}");

    assert!(list(&alice, &gid, 1, 10).await.is_empty());
    bob.expect_quiet().await;
    tmp_becomes_empty(&broker).await;
    assert!(entries(&broker, &gid).is_empty());
}

#[tokio::test]
async fn outsiders_and_wrong_secrets_are_refused() {
    let broker = Broker::start().await;
    let (gid, alice, mut bob, carol) = setup(&broker).await;
    let data = content(1000, 4);
    let file = upload(&alice, &gid, "a.txt", data.clone()).await.unwrap();
    bob.expect(Op::UploadFile).await;

    assert_code(
        upload(&carol, &gid, "x.txt", vec![1]).await,
        ErrorCode::GroupNotJoined,
    );
    let secret = Some(file.secret.as_str());
    let r = download(&carol, &gid, &file.file_id, secret).await;
    assert_code(r, ErrorCode::GroupNotJoined);
    let r = carol.client.get_group_shared_filelist(&gid, 1, 10).await;
    assert_code(r, ErrorCode::GroupNotJoined);
    assert_code(
        upload(&alice, "999999", "x", vec![1]).await,
        ErrorCode::GroupNotExist,
    );

    let msg = assert_code(
        download(&bob, &gid, "424242", None).await,
        ErrorCode::DownloadFileError,
    );
    assert!(msg.contains("424242"), "{msg}");
    let r = download(&bob, &gid, &file.file_id, Some("not-the-secret")).await;
    let msg = assert_code(r, ErrorCode::DownloadFileError);
    assert!(msg.contains("secret"), "{msg}");
    assert_eq!(
        download(&bob, &gid, &file.file_id, secret).await.unwrap(),
        data
    );
    assert_eq!(
        download(&bob, &gid, &file.file_id, None).await.unwrap(),
        data
    );
    bob.expect_quiet().await;
}

#[tokio::test]
async fn a_cancelled_upload_leaves_nothing() {
    let broker = Broker::start().await;
    let (gid, alice, mut bob, _carol) = setup(&broker).await;
    // The source is a pipe the test feeds, so the upload is surely mid-way when cancelled.
    let (mut feed, pipe) = tokio::io::duplex(256 * 1024);
    let len = (8 * MIB) as u64;
    let (tx, mut progress) = mpsc::channel::<Progress>(1024);
    let transfer = alice.client.upload_group_shared_file(
        &gid,
        UploadSource::reader(pipe, len, "half.bin"),
        Some(progress_channel(tx)),
    );
    let feeder = tokio::spawn(async move {
        let chunk = content(64 * 1024, 5);
        for _ in 0..32 {
            if feed.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // Hold the pipe open (no more bytes) until the upload is cancelled.
        std::future::pending::<()>().await;
    });
    while progress.recv().await.unwrap().done < (2 * MIB) as u64 {}
    eventually("the partial upload on disk", || {
        let n = entries(&broker, "tmp").len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    transfer.cancel();
    assert!(matches!(transfer.await, Err(ClientError::Cancelled)));
    feeder.abort();

    tmp_becomes_empty(&broker).await;
    assert!(list(&alice, &gid, 1, 10).await.is_empty());
    bob.expect_quiet().await;
    assert!(entries(&broker, &gid).is_empty());
}

#[tokio::test]
async fn listing_pages_newest_first() {
    let broker = Broker::start().await;
    let (gid, alice, bob, carol) = setup(&broker).await;
    let mut ids = Vec::new();
    for i in 1..=12 {
        let f = upload(&alice, &gid, &format!("f{i}.txt"), vec![i as u8; i])
            .await
            .unwrap();
        ids.push(f.file_id);
    }
    ids.reverse(); // newest first
    let page = |n, size| {
        let bob = &bob;
        let gid = &gid;
        async move {
            list(bob, gid, n, size)
                .await
                .into_iter()
                .map(|f| f.file_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(1, 5).await, ids[0..5]);
    assert_eq!(page(2, 5).await, ids[5..10]);
    assert_eq!(page(3, 5).await, ids[10..12]);
    assert!(page(4, 5).await.is_empty());
    assert_eq!(page(1, 10).await, ids[0..10]);
    assert_eq!(page(2, 10).await, ids[10..12]);
    let first = &list(&bob, &gid, 1, 1).await[0];
    assert_eq!((first.file_name.as_str(), first.file_size), ("f12.txt", 12));
    for (n, size, bad) in [
        (0, 5, "pageNum 0"),
        (1, 0, "pageSize 0"),
        (1, 11, "pageSize 11"),
    ] {
        let r = bob.client.get_group_shared_filelist(&gid, n, size).await;
        let msg = assert_code(r, ErrorCode::RequestParameterError);
        assert!(msg.contains(bad), "{msg}");
    }
    let r = carol.client.get_group_shared_filelist(&gid, 1, 5).await;
    assert_code(r, ErrorCode::GroupNotJoined);
}

#[tokio::test]
async fn delete_permissions_events_and_blobs() {
    let broker = Broker::start().await;
    let [owner, mut adm, mut m1, mut m2, mut out] =
        peers(&broker, &["owner", "adm", "m1", "m2", "out"])
            .await
            .try_into()
            .unwrap();
    let gid = owner
        .client
        .create_group(group_data("g", &["adm", "m1", "m2"]))
        .await
        .unwrap();
    owner.client.set_group_admin(&gid, "adm").await.unwrap();
    adm.expect(Op::DirectJoined).await;
    adm.expect(Op::SetAdmin).await;
    m1.expect(Op::DirectJoined).await;
    m2.expect(Op::DirectJoined).await;
    let f1 = upload(&m1, &gid, "m1.txt", vec![1; 10]).await.unwrap();
    let f2 = upload(&m2, &gid, "m2.txt", vec![2; 10]).await.unwrap();
    let f3 = upload(&m2, &gid, "m2b.txt", vec![3; 10]).await.unwrap();
    for _ in 0..3 {
        adm.expect(Op::UploadFile).await;
    }
    // The uploader's own session has the result instead of the event.
    m1.expect(Op::UploadFile).await;
    m1.expect(Op::UploadFile).await;
    m2.expect(Op::UploadFile).await;
    assert_eq!(entries(&broker, &gid).len(), 3);

    let msg = assert_code(
        m1.client.delete_group_shared_file(&gid, &f2.file_id).await,
        ErrorCode::PermissionDenied,
    );
    assert!(msg.contains("m2"), "{msg}");
    let r = out.client.delete_group_shared_file(&gid, &f1.file_id).await;
    assert_code(r, ErrorCode::GroupNotJoined);

    m1.client
        .delete_group_shared_file(&gid, &f1.file_id)
        .await
        .unwrap();
    for p in [&mut adm, &mut m2] {
        let ev = p.expect(Op::DeleteFile).await;
        assert_eq!(ev.from, "m1");
        assert_eq!(
            ev.detail,
            EventDetail::FileId {
                file_id: f1.file_id.clone()
            }
        );
    }
    adm.client
        .delete_group_shared_file(&gid, &f2.file_id)
        .await
        .unwrap();
    owner
        .client
        .delete_group_shared_file(&gid, &f3.file_id)
        .await
        .unwrap();
    for _ in 0..2 {
        m1.expect(Op::DeleteFile).await;
        m2.expect(Op::DeleteFile).await;
    }
    out.expect_quiet().await;
    let r = owner
        .client
        .delete_group_shared_file(&gid, &f3.file_id)
        .await;
    assert_code(r, ErrorCode::DownloadFileError);
    assert_code(
        download(&m2, &gid, &f2.file_id, None).await,
        ErrorCode::DownloadFileError,
    );
    assert!(list(&owner, &gid, 1, 10).await.is_empty());
    eventually("deleted blobs to be removed", || {
        let n = entries(&broker, &gid).len();
        async move { (n == 0).then_some(()) }
    })
    .await;

    // A destroyed group's files go with it.
    upload(&m1, &gid, "last.txt", vec![4; 10]).await.unwrap();
    assert_eq!(entries(&broker, &gid).len(), 1);
    owner.client.destroy_group(&gid).await.unwrap();
    eventually("the destroyed group's files to be removed", || {
        let gone = files_dirs(&broker).iter().all(|d| !d.join(&gid).exists());
        async move { gone.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_file_quota_is_checked_before_the_bytes() {
    let broker = Broker::start_with(&[("limits.max_files_per_group", "2")]).await;
    let (gid, alice, bob, _carol) = setup(&broker).await;
    upload(&alice, &gid, "1", vec![1]).await.unwrap();
    upload(&bob, &gid, "2", vec![2]).await.unwrap();
    let msg = assert_code(
        upload(&alice, &gid, "3", vec![3]).await,
        ErrorCode::MaxLimit,
    );
    assert!(msg.contains('2'), "{msg}");
    assert_eq!(list(&alice, &gid, 1, 10).await.len(), 2);
}

/// Two uploads racing for the last place under the quota: the one admitted first holds the
/// place while its bytes arrive, so the second is refused before sending any (it used to be
/// refused only after all its bytes were in); cancelling the first gives the place back.
#[tokio::test]
async fn an_upload_in_progress_holds_the_last_place_under_the_quota() {
    let broker = Broker::start_with(&[("limits.max_files_per_group", "2")]).await;
    let (gid, alice, bob, _carol) = setup(&broker).await;
    upload(&alice, &gid, "first", vec![1]).await.unwrap();
    // Alice's upload stalls half-way: its source is a pipe the test feeds.
    let (mut feed, pipe) = tokio::io::duplex(256 * 1024);
    let (tx, mut progress) = mpsc::channel::<Progress>(1024);
    let slow = alice.client.upload_group_shared_file(
        &gid,
        UploadSource::reader(pipe, 4 * MIB as u64, "slow.bin"),
        Some(progress_channel(tx)),
    );
    let feeder = tokio::spawn(async move {
        let _ = feed.write_all(&content(MIB, 9)).await;
        std::future::pending::<()>().await;
    });
    while progress.recv().await.unwrap().done < MIB as u64 {}
    // The broker has taken the first file's byte and the slow upload's first MiB.
    let up = "convoke_file_bytes_total{direction=\"up\"}";
    let taken = (MIB + 1) as f64;
    eventually("the slow upload's first MiB taken", || {
        let broker = &broker;
        async move { (metric(broker, up).await == taken).then_some(()) }
    })
    .await;

    let refused = upload(&bob, &gid, "late.bin", content(2 * MIB, 3)).await;
    let msg = assert_code(refused, ErrorCode::MaxLimit);
    assert!(msg.contains("1 more being uploaded"), "{msg}");
    assert_eq!(
        metric(&broker, up).await,
        taken,
        "bytes of the refused upload were taken"
    );
    assert_eq!(list(&bob, &gid, 1, 10).await.len(), 1);

    slow.cancel();
    assert!(matches!(slow.await, Err(ClientError::Cancelled)));
    feeder.abort();
    // The cancelled upload's place is free again.
    let file = eventually("the cancelled upload's place given back", || {
        let bob = &bob;
        let gid = &gid;
        async move { upload(bob, gid, "late.bin", vec![7]).await.ok() }
    })
    .await;
    assert_eq!(file.file_name, "late.bin");
    let names: Vec<String> = list(&alice, &gid, 1, 10)
        .await
        .into_iter()
        .map(|f| f.file_name)
        .collect();
    assert_eq!(names, vec!["late.bin", "first"]);
    tmp_becomes_empty(&broker).await;
}

#[tokio::test]
async fn chat_is_not_held_up_by_a_big_transfer() {
    let broker = Broker::start().await;
    let (gid, alice, mut bob, _carol) = setup(&broker).await;
    let len = (10 * MIB) as u64;
    let (tx, mut progress) = mpsc::channel::<Progress>(4096);
    let source = UploadSource::reader(tokio::io::repeat(7).take(len), len, "big.bin");
    let transfer = alice
        .client
        .upload_group_shared_file(&gid, source, Some(progress_channel(tx)));
    while progress.recv().await.unwrap().done < MIB as u64 {}
    let asked = Instant::now();
    alice
        .client
        .modify_group(&gid, None, Some("during the upload"), None)
        .await
        .unwrap();
    let answered = asked.elapsed();
    bob.expect(Op::UpdateInfo).await;
    let announced = asked.elapsed();
    let file = transfer.await.unwrap();
    let uploaded = asked.elapsed();
    assert!(
        answered < uploaded / 2 && announced < uploaded / 2,
        "modifyGroup answered after {answered:?}, announced after {announced:?}, upload done after {uploaded:?}"
    );
    bob.expect(Op::UploadFile).await;

    // And the other way: a download does not hold up a ping.
    let (tx, mut progress) = mpsc::channel::<Progress>(4096);
    let dir = tempfile::tempdir().unwrap();
    let transfer = bob.client.download_group_shared_file(
        &gid,
        &file.file_id,
        None,
        dir.path().join("big.bin").as_path(),
        Some(progress_channel(tx)),
    );
    while progress.recv().await.unwrap().done < MIB as u64 {}
    let asked = Instant::now();
    bob.client.ping().await.unwrap();
    let pinged = asked.elapsed();
    transfer.await.unwrap();
    let downloaded = asked.elapsed();
    assert!(
        pinged < downloaded / 2,
        "ping took {pinged:?}, the download ended after {downloaded:?}"
    );
}

#[tokio::test]
async fn a_restart_keeps_files_and_index_consistent() {
    let mut broker = Broker::start().await;
    let (gid, alice, _bob, _carol) = setup(&broker).await;
    let mut kept = Vec::new();
    for i in 0..3 {
        let data = content(200_000 + i, 10 + i as u32);
        let f = upload(&alice, &gid, &format!("f{i}"), data.clone())
            .await
            .unwrap();
        kept.push((f, data));
    }
    let (gone, _) = kept.remove(1);
    alice
        .client
        .delete_group_shared_file(&gid, &gone.file_id)
        .await
        .unwrap();
    drop(alice);
    broker.restart();

    let bob = broker.connect("bob").await;
    let listed = list(&bob, &gid, 1, 10).await;
    assert_eq!(listed, vec![kept[1].0.clone(), kept[0].0.clone()]);
    for (f, data) in &kept {
        assert_eq!(&download(&bob, &gid, &f.file_id, None).await.unwrap(), data);
    }
    let r = download(&bob, &gid, &gone.file_id, None).await;
    assert_code(r, ErrorCode::DownloadFileError);
    assert_eq!(entries(&broker, &gid).len(), 2);
}

#[tokio::test]
async fn kill_9_mid_upload_leaves_no_trace_of_it() {
    let mut broker = Broker::start().await;
    let (gid, alice, _bob, _carol) = setup(&broker).await;
    let mut done = Vec::new();
    for i in 0..2 {
        let data = content(MIB + i, 20 + i as u32);
        done.push((
            upload(&alice, &gid, &format!("done{i}"), data.clone())
                .await
                .unwrap(),
            data,
        ));
    }
    let (mut feed, pipe) = tokio::io::duplex(256 * 1024);
    let len = (6 * MIB) as u64;
    let transfer = alice.client.upload_group_shared_file(
        &gid,
        UploadSource::reader(pipe, len, "partial.bin"),
        None,
    );
    let feeder = tokio::spawn(async move {
        let chunk = content(64 * 1024, 9);
        for _ in 0..48 {
            if feed.write_all(&chunk).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    eventually("2 MiB of the upload on disk", || {
        let size: u64 = entries(&broker, "tmp")
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        async move { (size >= (2 * MIB) as u64).then_some(()) }
    })
    .await;
    broker.crash_restart();
    // The old connection is dead; the client would only notice at its idle timeout.
    drop(transfer);
    drop(alice);
    feeder.abort();

    assert!(
        entries(&broker, "tmp").is_empty(),
        "leftover temp files are removed at start"
    );
    let bob = broker.connect("bob").await;
    let listed = list(&bob, &gid, 1, 10).await;
    let names: Vec<_> = listed.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(names, ["done1", "done0"]);
    for (f, data) in &done {
        let got = download(&bob, &gid, &f.file_id, None).await.unwrap();
        assert_eq!(sha(&got), sha(data));
    }
    assert_eq!(entries(&broker, &gid).len(), 2);
}

// ---- resumable transfers ------------------------------------------------------------------

/// Total bytes of the partial uploads in `files/tmp`.
fn tmp_bytes(broker: &Broker) -> u64 {
    entries(broker, "tmp")
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Starts an upload of `len` bytes from `client` whose source yields `fed` of `data` and
/// then blocks; returns once the broker has written them all to its temp file. The
/// caller then closes `client` to cut the upload off mid-stream.
async fn upload_cut_short(
    broker: &Broker,
    client: &convoke_client::Client,
    gid: &str,
    source_name: &str,
    data: &[u8],
    fed: usize,
    upload_id: Option<u64>,
) -> (convoke_client::Transfer, tokio::task::JoinHandle<()>) {
    let before = tmp_bytes(broker);
    let (mut feed, pipe) = tokio::io::duplex(256 * 1024);
    let mut source = UploadSource::reader(pipe, data.len() as u64, source_name);
    if let Some(id) = upload_id {
        source = source.upload_id(id);
    }
    let transfer = client.upload_group_shared_file(gid, source, None);
    let head = data[..fed].to_vec();
    let feeder = tokio::spawn(async move {
        if feed.write_all(&head).await.is_ok() {
            // Hold the pipe open, with no more bytes, until the test is done.
            std::future::pending::<()>().await;
        }
    });
    let want = before + fed as u64;
    eventually("the first bytes on the broker's disk", || {
        let size = tmp_bytes(broker);
        async move { (size == want).then_some(()) }
    })
    .await;
    (transfer, feeder)
}

/// Collects the progress reports sent so far.
fn drain(rx: &mut mpsc::Receiver<Progress>) -> Vec<Progress> {
    let mut seen = Vec::new();
    while let Ok(p) = rx.try_recv() {
        seen.push(p);
    }
    seen
}

/// An upload cut off by its connection's end (the client closed mid-stream) is kept by the
/// broker with its quota place; a new connection of the same user resumes it from the last
/// durable byte: the stored file is byte-identical, no byte is taken twice, there is one
/// entry, and resuming the completed id again answers the same entry (a lost final answer
/// never makes a second file).
#[tokio::test]
async fn an_interrupted_upload_resumes_from_a_new_connection() {
    let broker = Broker::start_with(&[("limits.max_files_per_group", "2")]).await;
    let (gid, alice, mut bob, _carol) = setup(&broker).await;
    upload(&alice, &gid, "first", vec![1]).await.unwrap();
    bob.expect(Op::UploadFile).await;

    let data = content(4 * MIB, 31);
    let first = broker.connect_device("alice", "laptop").await;
    let (transfer, feeder) = upload_cut_short(
        &broker,
        &first.client,
        &gid,
        "big.bin",
        &data,
        MIB + 5,
        None,
    )
    .await;
    let upload_id = transfer.upload_id().unwrap();
    first.client.close().await;
    let e = transfer.await.unwrap_err();
    assert!(e.is_closed(), "{e}");
    feeder.abort();

    // The partial upload is kept, and so is its place under the quota.
    assert_eq!(tmp_bytes(&broker), (MIB + 5) as u64);
    let msg = assert_code(
        upload(&bob, &gid, "late.bin", vec![2]).await,
        ErrorCode::MaxLimit,
    );
    assert!(msg.contains("1 more being uploaded"), "{msg}");

    let second = broker.connect_device("alice", "phone").await;
    let (tx, mut progress) = mpsc::channel::<Progress>(1024);
    let source = UploadSource::bytes(data.clone(), "big.bin").resume(upload_id);
    let file = second
        .client
        .upload_group_shared_file(&gid, source, Some(progress_channel(tx)))
        .await
        .unwrap();
    assert_eq!(file.file_size, data.len() as u64);
    assert_eq!(file.sha256, sha(&data));
    let seen = drain(&mut progress);
    assert_eq!(seen[0].resumed_at, Some((MIB + 5) as u64), "{:?}", seen[0]);
    assert_eq!(seen[0].done, (MIB + 5) as u64);
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
    assert_eq!(seen.last().unwrap().done, data.len() as u64);
    // Not a byte was taken twice: the first file's one, then each of this file's once.
    let up = metric(&broker, "convoke_file_bytes_total{direction=\"up\"}").await;
    assert_eq!(up, (1 + data.len()) as f64);
    assert_eq!(
        metric(&broker, "convoke_file_resumes_total{direction=\"up\"}").await,
        1.0
    );

    let ev = bob.expect(Op::UploadFile).await;
    assert_eq!(ev.detail, EventDetail::File { file: file.clone() });
    assert_eq!(
        download(&bob, &gid, &file.file_id, None).await.unwrap(),
        data
    );
    let names: Vec<String> = list(&bob, &gid, 1, 10)
        .await
        .into_iter()
        .map(|f| f.file_name)
        .collect();
    assert_eq!(names, ["big.bin", "first"]);
    tmp_becomes_empty(&broker).await;

    // The final answer got lost, say: resuming again answers the same entry, stores nothing.
    let again = UploadSource::bytes(data.clone(), "big.bin").resume(upload_id);
    let same = second
        .client
        .upload_group_shared_file(&gid, again, None)
        .await
        .unwrap();
    assert_eq!(same, file);
    assert_eq!(list(&bob, &gid, 1, 10).await.len(), 2);
    bob.expect_quiet().await;
    let up = metric(&broker, "convoke_file_bytes_total{direction=\"up\"}").await;
    assert_eq!(up, (1 + data.len()) as f64);
}

/// A kept upload that nobody resumes within `files.resume_keep_secs` is released: its
/// partial file deleted, its quota place given back, counted; a late resume starts over
/// (and passes admission again).
#[tokio::test]
async fn an_unresumed_upload_is_released_after_the_keep_time() {
    let broker = Broker::start_with(&[
        ("limits.max_files_per_group", "2"),
        ("files.resume_keep_secs", "1"),
    ])
    .await;
    let (gid, alice, bob, _carol) = setup(&broker).await;
    upload(&alice, &gid, "first", vec![1]).await.unwrap();
    let data = content(MIB, 32);
    let first = broker.connect_device("alice", "laptop").await;
    let (transfer, feeder) = upload_cut_short(
        &broker,
        &first.client,
        &gid,
        "big.bin",
        &data,
        300_000,
        Some(77),
    )
    .await;
    first.client.close().await;
    assert!(transfer.await.is_err());
    feeder.abort();

    // Held for about a second, then the place is free for bob and the file is gone.
    let late = eventually("the kept upload's place given back", || {
        let (bob, gid) = (&bob, &gid);
        async move { upload(bob, gid, "late.bin", vec![2]).await.ok() }
    })
    .await;
    assert_eq!(late.file_owner, "bob");
    tmp_becomes_empty(&broker).await;
    assert_eq!(
        metric(&broker, "convoke_file_partials_expired_total").await,
        1.0
    );

    // Resuming now is a new upload: admitted again, and the group is full.
    let second = broker.connect_device("alice", "phone").await;
    let (tx, mut progress) = mpsc::channel::<Progress>(1024);
    let source = UploadSource::bytes(data, "big.bin").resume(77);
    let r = second
        .client
        .upload_group_shared_file(&gid, source, Some(progress_channel(tx)))
        .await;
    assert_code(r, ErrorCode::MaxLimit);
    assert!(drain(&mut progress).iter().all(|p| p.resumed_at.is_none()));
    assert_eq!(
        metric(&broker, "convoke_file_resumes_total{direction=\"up\"}").await,
        0.0
    );
    tmp_becomes_empty(&broker).await;
}

/// Upload ids are per user: another user resuming the same id gets a fresh upload of their
/// own and nothing of the kept one. A resume describing a different file (size, name) is
/// refused naming the difference, and the kept upload survives it.
#[tokio::test]
async fn a_resume_reaches_only_its_users_upload_of_the_same_file() {
    let broker = Broker::start().await;
    let (gid, alice, mut bob, _carol) = setup(&broker).await;
    let data = content(2 * MIB, 33);
    let first = broker.connect_device("alice", "laptop").await;
    let (transfer, feeder) = upload_cut_short(
        &broker,
        &first.client,
        &gid,
        "a.bin",
        &data,
        700_000,
        Some(5),
    )
    .await;
    first.client.close().await;
    assert!(transfer.await.is_err());
    feeder.abort();

    // Bob, same id, same name and size: a new upload of his bytes from byte 0.
    let bobs = content(2 * MIB, 34);
    let (tx, mut progress) = mpsc::channel::<Progress>(1024);
    let source = UploadSource::bytes(bobs.clone(), "a.bin").resume(5);
    let file = bob
        .client
        .upload_group_shared_file(&gid, source, Some(progress_channel(tx)))
        .await
        .unwrap();
    assert_eq!(
        (file.file_owner.as_str(), file.sha256.clone()),
        ("bob", sha(&bobs))
    );
    assert_eq!(drain(&mut progress)[0].resumed_at, Some(0));
    assert_eq!(
        download(&alice, &gid, &file.file_id, None).await.unwrap(),
        bobs
    );
    assert_eq!(
        tmp_bytes(&broker),
        700_000,
        "alice's partial upload is untouched"
    );

    // Alice, with a different size or name: refused, naming what differs.
    let bigger = UploadSource::bytes(content(2 * MIB + 1, 33), "a.bin").resume(5);
    let r = alice
        .client
        .upload_group_shared_file(&gid, bigger, None)
        .await;
    let msg = assert_code(r, ErrorCode::RequestParameterError);
    assert!(
        msg.contains("size") && msg.contains(&(2 * MIB).to_string()),
        "{msg}"
    );
    let renamed = UploadSource::bytes(data.clone(), "b.bin").resume(5);
    let r = alice
        .client
        .upload_group_shared_file(&gid, renamed, None)
        .await;
    let msg = assert_code(r, ErrorCode::RequestParameterError);
    assert!(msg.contains("file name") && msg.contains("b.bin"), "{msg}");
    assert_eq!(tmp_bytes(&broker), 700_000);

    // Alice, the same file: resumed where it stopped.
    let source = UploadSource::bytes(data.clone(), "a.bin").resume(5);
    let mine = alice
        .client
        .upload_group_shared_file(&gid, source, None)
        .await
        .unwrap();
    assert_eq!(mine.sha256, sha(&data));
    assert_eq!(
        download(&bob, &gid, &mine.file_id, None).await.unwrap(),
        data
    );
    bob.expect(Op::UploadFile).await;
    tmp_becomes_empty(&broker).await;
}

/// A download from a byte offset gets the tail (and the whole entry); at the end nothing
/// follows; past the end is refused naming both numbers.
#[tokio::test]
async fn a_download_resumes_from_an_offset() {
    let broker = Broker::start().await;
    let (gid, alice, bob, _carol) = setup(&broker).await;
    let data = content(MIB + 123, 35);
    let file = upload(&alice, &gid, "t.bin", data.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tail.bin");
    let offset = 700_001u64;
    let (tx, mut progress) = mpsc::channel::<Progress>(1024);
    let got = bob
        .client
        .download_group_shared_file_from(
            &gid,
            &file.file_id,
            None,
            offset,
            path.as_path(),
            Some(progress_channel(tx)),
        )
        .await
        .unwrap();
    assert_eq!(got, file, "the whole entry, size included");
    assert!(std::fs::read(&path).unwrap() == data[offset as usize..]);
    let seen = drain(&mut progress);
    assert_eq!((seen[0].done, seen[0].resumed_at), (offset, Some(offset)));
    assert_eq!(seen.last().unwrap().done, data.len() as u64);
    assert_eq!(
        metric(&broker, "convoke_file_resumes_total{direction=\"down\"}").await,
        1.0
    );

    let end = data.len() as u64;
    let (writer, mut reader) = tokio::io::duplex(1024);
    bob.client
        .download_group_shared_file_from(
            &gid,
            &file.file_id,
            None,
            end,
            convoke_client::DownloadDest::writer(writer),
            None,
        )
        .await
        .unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    let r = bob
        .client
        .download_group_shared_file_from(&gid, &file.file_id, None, end + 1, path.as_path(), None)
        .await;
    let msg = assert_code(r, ErrorCode::RequestParameterError);
    assert!(
        msg.contains(&format!("offset {}", end + 1)) && msg.contains(&format!("{end} bytes")),
        "{msg}"
    );
}
