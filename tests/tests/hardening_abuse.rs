//! Issue #12, items 9 and 10: kept events bounded when written (a flood cannot push out a
//! user's real kept events), per-user rate limits answered 509 naming the setting, and the
//! free-disk watermark that refuses sends and uploads before the disk is full.

use convoke_client::UploadSource;
use convoke_protocol::{ErrorCode, GroupEventOp as Op, Push};
use convoke_tests::{assert_code, group_data, Broker};

/// An attacker creates groups with the victim as a member and destroys them, over and over,
/// while the victim is offline. The victim's real invitation (from someone else) survives,
/// and what the attacker left is one destroy per group, at most their share.
#[tokio::test]
async fn a_create_destroy_flood_cannot_push_out_a_real_invitation() {
    let broker = Broker::start_with(&[
        ("sessions.kept_events_max", "8"),
        ("sessions.kept_events_per_sender_max", "3"),
        ("quotas.requests_per_sec", "0"),
    ])
    .await;
    drop(broker.connect("victim").await);
    broker.wait_for_sessions(0).await;
    let friend = broker.connect("friend").await;
    let real = friend
        .client
        .create_group(group_data("real", &[]))
        .await
        .unwrap();
    friend
        .client
        .invite_users_to_group(&real, &["victim"])
        .await
        .unwrap();
    let attacker = broker.connect("attacker").await;
    for i in 0..12 {
        let gid = attacker
            .client
            .create_group(group_data(&format!("spam{i}"), &["victim"]))
            .await
            .unwrap();
        attacker.client.destroy_group(&gid).await.unwrap();
    }
    let mut victim = broker.connect("victim").await;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(
            std::time::Duration::from_millis(500),
            victim.events.next_push(),
        )
        .await
        {
            Ok(Some(Push::Group(ev))) => got.push(ev),
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) | Err(_) => break,
        }
    }
    let invite = got
        .iter()
        .find(|e| e.operation == Op::InviteToJoin && e.group_id == real)
        .unwrap_or_else(|| panic!("the real invitation was pushed out: {got:?}"));
    assert_eq!(invite.from, "friend");
    let from_attacker: Vec<_> = got.iter().filter(|e| e.from == "attacker").collect();
    assert_eq!(from_attacker.len(), 3, "the attacker's share: {got:?}");
    assert!(
        from_attacker.iter().all(|e| e.operation == Op::Destroy),
        "a destroy supersedes the directJoined of its group: {from_attacker:?}"
    );
    victim
        .client
        .accept_group_invite(&real, "victim")
        .await
        .unwrap();
}

/// Messages over the per-user rate are answered 509 naming the setting; a send refused for
/// another reason within the rate gets its own error and counts too; other users are not
/// affected.
#[tokio::test]
async fn messages_over_the_rate_are_refused_with_509() {
    let broker = Broker::start_with(&[
        ("quotas.messages_per_sec", "1"),
        ("quotas.messages_burst", "3"),
    ])
    .await;
    let alice = broker.connect("alice").await;
    let bob = broker.connect("bob").await;
    let gid = alice
        .client
        .create_group(group_data("g", &["bob"]))
        .await
        .unwrap();
    // A refused send (no such group) gets its own error and spends a token.
    assert_code(
        alice.client.send_group_message("999999", "x", false).await,
        ErrorCode::GroupNotExist,
    );
    for i in 0..2 {
        alice
            .client
            .send_group_message(&gid, format!("{i}"), false)
            .await
            .unwrap();
    }
    let msg = assert_code(
        alice.client.send_group_message(&gid, "over", false).await,
        ErrorCode::MessageCurrentLimiting,
    );
    assert!(msg.contains("quotas.messages_per_sec"), "{msg}");
    bob.client
        .send_group_message(&gid, "bob", false)
        .await
        .unwrap();
    let history = bob
        .client
        .get_group_messages(&gid, None, Some(0), 100)
        .await
        .unwrap();
    assert_eq!(history.len(), 3, "the refused sends stored nothing");
}

/// State-changing requests over the per-user rate are refused 509 naming the setting;
/// reads go on.
#[tokio::test]
async fn state_changing_requests_over_the_rate_are_refused_with_509() {
    let broker = Broker::start_with(&[
        ("quotas.requests_per_sec", "1"),
        ("quotas.requests_burst", "3"),
    ])
    .await;
    let alice = broker.connect("alice").await;
    let gid = alice
        .client
        .create_group(group_data("g", &[]))
        .await
        .unwrap();
    alice
        .client
        .modify_group(&gid, Some("a"), None, None)
        .await
        .unwrap();
    alice
        .client
        .modify_group(&gid, Some("b"), None, None)
        .await
        .unwrap();
    let msg = assert_code(
        alice.client.modify_group(&gid, Some("c"), None, None).await,
        ErrorCode::MessageCurrentLimiting,
    );
    assert!(msg.contains("quotas.requests_per_sec"), "{msg}");
    let info = alice.client.get_group_info(&[&gid]).await.unwrap();
    assert_eq!(
        info[0].info.as_ref().unwrap().name,
        "b",
        "the refused change did nothing"
    );
    // Another user has their own bucket.
    let bob = broker.connect("bob").await;
    bob.client.create_group(group_data("h", &[])).await.unwrap();
}

/// Below the free-disk watermark (simulated with an absurdly high one), sends and uploads
/// are refused with a clear error and store nothing; reads go on.
#[tokio::test]
async fn below_the_disk_watermark_sends_and_uploads_are_refused() {
    let broker = Broker::start_with(&[("quotas.min_free_disk_mb", "1000000000000")]).await;
    let alice = broker.connect("alice").await;
    let gid = alice
        .client
        .create_group(group_data("g", &[]))
        .await
        .unwrap();
    let msg = assert_code(
        alice.client.send_group_message(&gid, "hello", false).await,
        ErrorCode::ServerBusy,
    );
    assert!(
        msg.contains("quotas.min_free_disk_mb") && msg.contains("disk"),
        "{msg}"
    );
    let up = alice
        .client
        .upload_group_shared_file(&gid, UploadSource::bytes(vec![7; 1000], "a.bin"), None)
        .await;
    let msg = assert_code(up, ErrorCode::UploadFileError);
    assert!(msg.contains("quotas.min_free_disk_mb"), "{msg}");
    assert!(alice
        .client
        .get_group_messages(&gid, None, Some(0), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(alice
        .client
        .get_group_shared_filelist(&gid, 1, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Shared files one user owns are bounded over all groups (`quotas.file_mb_per_user`): an
/// upload that would go over is refused (50) before its bytes; the usage survives a
/// restart; deleting a file makes room again.
#[tokio::test]
async fn shared_files_per_user_are_bounded() {
    let mut broker = Broker::start_with(&[("quotas.file_mb_per_user", "1")]).await;
    let alice = broker.connect("alice").await;
    let g1 = alice
        .client
        .create_group(group_data("g1", &[]))
        .await
        .unwrap();
    let g2 = alice
        .client
        .create_group(group_data("g2", &[]))
        .await
        .unwrap();
    let up = |gid: &str, n: usize| {
        let (c, gid) = (alice.client.clone(), gid.to_string());
        async move {
            c.upload_group_shared_file(&gid, UploadSource::bytes(vec![1; n], "f.bin"), None)
                .await
        }
    };
    let first = up(&g1, 600 * 1024).await.unwrap();
    let msg = assert_code(up(&g2, 600 * 1024).await, ErrorCode::MaxLimit);
    assert!(msg.contains("quotas.file_mb_per_user"), "{msg}");
    assert!(alice
        .client
        .get_group_shared_filelist(&g2, 1, 10)
        .await
        .unwrap()
        .is_empty());
    // Another user has their own quota.
    let bob = broker.connect("bob").await;
    let gb = bob
        .client
        .create_group(group_data("gb", &[]))
        .await
        .unwrap();
    bob.client
        .upload_group_shared_file(&gb, UploadSource::bytes(vec![2; 600 * 1024], "b"), None)
        .await
        .unwrap();
    drop((alice, bob));
    broker.restart();
    let alice = broker.connect("alice").await;
    let msg = assert_code(
        alice
            .client
            .upload_group_shared_file(&g2, UploadSource::bytes(vec![1; 600 * 1024], "f"), None)
            .await,
        ErrorCode::MaxLimit,
    );
    assert!(
        msg.contains("614400 bytes"),
        "usage read back after a restart: {msg}"
    );
    alice
        .client
        .delete_group_shared_file(&g1, &first.file_id)
        .await
        .unwrap();
    convoke_tests::eventually("room after the deletion", || {
        let c = alice.client.clone();
        let g2 = g2.clone();
        async move {
            c.upload_group_shared_file(&g2, UploadSource::bytes(vec![1; 600 * 1024], "f"), None)
                .await
                .ok()
        }
    })
    .await;
}

/// Refused requests count against the rate like any other: a user looping requests that
/// are all refused (here removeGroupMember on sequential group ids that do not exist, each
/// a directory look-up) is answered 509 once over it, and the requests refused for their
/// own reason still get their own code first.
#[tokio::test]
async fn refused_requests_count_against_the_rate() {
    let broker = Broker::start_with(&[
        ("quotas.requests_per_sec", "1"),
        ("quotas.requests_burst", "3"),
    ])
    .await;
    let mallory = broker.connect("mallory").await;
    let mut codes = Vec::new();
    for i in 0..10u32 {
        let gid = (900_000 + i).to_string();
        match mallory.client.remove_group_member(&gid, "alice").await {
            Err(convoke_client::ClientError::Api(e)) => codes.push(e.code),
            other => panic!("removeGroupMember on a missing group: {other:?}"),
        }
    }
    assert_eq!(
        codes[0],
        ErrorCode::GroupNotExist,
        "within the rate, its own error"
    );
    let limited = codes
        .iter()
        .filter(|c| **c == ErrorCode::MessageCurrentLimiting)
        .count();
    assert!(
        limited >= 5,
        "10 refused requests against a burst of 3 at 1/s: {codes:?}"
    );
    assert!(
        broker.metric("convoke_rate_limited_total").await >= 5.0,
        "counted"
    );
}

/// ackGroupMessage counts as a message (it stores a read receipt per message read), not
/// as a state-changing request: a reader acking every message of a busy group is not held
/// to the change rate, only to the messages rate.
#[tokio::test]
async fn acks_count_against_the_messages_rate_not_the_change_rate() {
    let broker = Broker::start_with(&[
        ("quotas.requests_per_sec", "1"),
        ("quotas.requests_burst", "2"),
        ("quotas.messages_per_sec", "1"),
        ("quotas.messages_burst", "12"),
    ])
    .await;
    let alice = broker.connect("alice").await;
    let bob = broker.connect("bob").await;
    let gid = alice
        .client
        .create_group(group_data("g", &["bob"]))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        let sent = alice
            .client
            .send_group_message(&gid, format!("{i}"), true)
            .await
            .unwrap();
        ids.push(sent.msg_id);
    }
    // 10 acks: over bob's change burst of 2, within his messages burst of 12.
    for id in &ids {
        bob.client.ack_group_message(&gid, id).await.unwrap();
    }
    let readers = alice
        .client
        .get_group_msg_read_user(&gid, &ids[9], 100, None)
        .await
        .unwrap();
    assert!(format!("{readers:?}").contains("bob"), "{readers:?}");
    // And they do spend the messages budget: bob has 2 messages' worth left.
    let mut codes = Vec::new();
    for _ in 0..6 {
        match bob.client.send_group_message(&gid, "b", false).await {
            Ok(_) => codes.push(None),
            Err(convoke_client::ClientError::Api(e)) => codes.push(Some(e.code)),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        codes.contains(&Some(ErrorCode::MessageCurrentLimiting)),
        "{codes:?}"
    );
}
