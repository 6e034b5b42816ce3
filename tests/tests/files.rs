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
use convoke_protocol::transfer::{TransferHeader, TransferOutcome};
use convoke_protocol::{decode_frame, ApiError, ErrorCode, EventDetail, GroupEventOp as Op};
use convoke_tests::{assert_code, eventually, group_data, peers, raw_connection, Broker, Peer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const MIB: usize = 1024 * 1024;

/// Deterministic, non-repeating-looking bytes.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

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

fn files_dir(broker: &Broker) -> PathBuf {
    broker.data_dir().join("files")
}

/// Entries of a directory under the files dir (none if it does not exist).
fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn tmp_becomes_empty(broker: &Broker) {
    let tmp = files_dir(broker).join("tmp");
    eventually("files/tmp to be empty", || {
        let left = entries(&tmp);
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
    };
    send.write_all(&frame_bytes(&header).unwrap())
        .await
        .unwrap();
    // The broker may stop the stream part way: that is the point.
    let _ = send.write_all(body).await;
    let _ = send.finish();
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(o) = decode_frame::<TransferOutcome>(&mut buf, 1 << 20).unwrap() {
            return o.result.expect_err("a forged upload must fail");
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
    assert!(entries(&files_dir(&broker).join(&gid)).is_empty());
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
    let tmp = files_dir(&broker).join("tmp");
    eventually("the partial upload on disk", || {
        let n = entries(&tmp).len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    transfer.cancel();
    assert!(matches!(transfer.await, Err(ClientError::Cancelled)));
    feeder.abort();

    tmp_becomes_empty(&broker).await;
    assert!(list(&alice, &gid, 1, 10).await.is_empty());
    bob.expect_quiet().await;
    assert!(entries(&files_dir(&broker).join(&gid)).is_empty());
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
    let blobs = files_dir(&broker).join(&gid);
    assert_eq!(entries(&blobs).len(), 3);

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
        let n = entries(&blobs).len();
        async move { (n == 0).then_some(()) }
    })
    .await;

    // A destroyed group's files go with it.
    upload(&m1, &gid, "last.txt", vec![4; 10]).await.unwrap();
    assert_eq!(entries(&blobs).len(), 1);
    owner.client.destroy_group(&gid).await.unwrap();
    eventually("the destroyed group's files to be removed", || {
        let gone = !blobs.exists();
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
    assert_eq!(entries(&files_dir(&broker).join(&gid)).len(), 2);
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
    let tmp = files_dir(&broker).join("tmp");
    eventually("2 MiB of the upload on disk", || {
        let size: u64 = entries(&tmp)
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
        entries(&tmp).is_empty(),
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
    assert_eq!(entries(&files_dir(&broker).join(&gid)).len(), 2);
}
