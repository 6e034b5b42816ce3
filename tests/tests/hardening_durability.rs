//! Issue #12, durability: no acknowledged message is overwritten when a group actor is
//! replaced (idle stop, panic restart) while its writes are still queued for the committer;
//! store failures are answered "outcome unknown" (500) and seen by /readyz; start-up never
//! deletes data; one corrupt record costs only that record; a backup restores.
//!
//! The committer is held up on purpose with the `debug.fault_injection` hook
//! (`modifyGroup` ext `"convoke:hang-commit:<ms>"` on another group), which makes the race
//! of item 1 certain instead of rare.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::Client;
use convoke_protocol::ErrorCode;
use convoke_tests::{assert_code, eventually, group_data, peers, Broker};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Starts `n` pipelined sends from `client` to `gid`; each task returns (payload, result).
fn pipeline(
    client: &Client,
    gid: &str,
    tag: &str,
    n: usize,
) -> Vec<JoinHandle<(String, Result<u64, ErrorCode>)>> {
    (0..n)
        .map(|i| {
            let (client, gid) = (client.clone(), gid.to_string());
            let payload = format!("{tag}-{i}");
            tokio::spawn(async move {
                let r = client
                    .send_group_message(&gid, payload.clone().into_bytes(), false)
                    .await;
                (
                    payload,
                    r.map(|s| s.seq)
                        .map_err(|e| e.code().unwrap_or(ErrorCode::Internal)),
                )
            })
        })
        .collect()
}

/// Holds the committer for `ms` (a modifyGroup with the hang hook on group `hold`); returns
/// once a probe send to `probe_gid` is seen waiting behind it.
async fn hold_committer(client: &Client, hold: &str, ms: u64) -> JoinHandle<()> {
    let (c, g) = (client.clone(), hold.to_string());
    let ext = format!("convoke:hang-commit:{ms}");
    let task = tokio::spawn(async move {
        c.modify_group(&g, None, None, Some(&ext)).await.unwrap();
    });
    // The hook's write set reaches the committer within a moment; then every write waits.
    tokio::time::sleep(Duration::from_millis(150)).await;
    task
}

/// Every acknowledged send is in history with its payload; seqs are unique and the history
/// has no gap.
async fn assert_history_holds(reader: &Client, gid: &str, acked: &[(String, u64)]) {
    let mut by_seq: BTreeMap<u64, &str> = BTreeMap::new();
    for (payload, seq) in acked {
        if let Some(other) = by_seq.insert(*seq, payload) {
            panic!(
                "seq {seq} acknowledged twice: {:?} and {:?}",
                &other[..other.len().min(16)],
                &payload[..payload.len().min(16)]
            );
        }
    }
    let mut history = BTreeMap::new();
    // From the oldest (a page may hold fewer than asked: pages are capped in bytes).
    let mut after = Some(0);
    loop {
        let page = reader
            .get_group_messages(gid, None, after, 100)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for m in page {
            history.insert(m.seq, String::from_utf8(m.payload).unwrap());
        }
    }
    for (seq, payload) in &by_seq {
        let short = |p: &str| p.chars().take(16).collect::<String>();
        assert!(
            history.get(seq).map(String::as_str) == Some(*payload),
            "acknowledged message {:?} (seq {seq}) is not in history as acknowledged (found {:?})",
            short(payload),
            history.get(seq).map(|p| short(p))
        );
    }
    let seqs: Vec<u64> = history.keys().copied().collect();
    let first = seqs.first().copied().unwrap_or(1);
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "history has a gap"
    );
}

async fn collect(
    tasks: Vec<JoinHandle<(String, Result<u64, ErrorCode>)>>,
) -> (Vec<(String, u64)>, usize) {
    let mut acked = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.unwrap() {
            (payload, Ok(seq)) => acked.push((payload, seq)),
            (_, Err(code)) => {
                assert_eq!(
                    code,
                    ErrorCode::ServerBusy,
                    "only a restart may refuse a send"
                );
                failed += 1;
            }
        }
    }
    (acked, failed)
}

/// Item 1, idle stop: a group's actor stops for idleness while its last messages still wait
/// in the committer (held by another group's commit); the next send loads a new actor. It
/// must not reuse a sequence number: every acknowledged message stays in history.
#[tokio::test]
async fn an_idle_stop_with_writes_still_queued_overwrites_nothing() {
    let broker = Broker::start_with(&[
        ("debug.fault_injection", "true"),
        ("groups.idle_stop_secs", "1"),
    ])
    .await;
    let [owner, a, b, c] = peers(&broker, &["owner", "a", "b", "c"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(group_data("chat", &["a", "b", "c"]))
        .await
        .unwrap();
    let hold = owner
        .client
        .create_group(group_data("hold", &[]))
        .await
        .unwrap();
    let first = owner
        .client
        .send_group_message(&gid, b"before".to_vec(), false)
        .await
        .unwrap();

    let stops = broker.metric("convoke_group_actor_stops_total").await;
    let held = hold_committer(&owner.client, &hold, 3_000).await;
    let mut tasks = Vec::new();
    for (peer, tag) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        tasks.extend(pipeline(&peer.client, &gid, tag, 10));
    }
    // The group's actor goes idle and stops while those sends wait in the committer.
    eventually("the group actor's idle stop", || async {
        (broker.metric("convoke_group_actor_stops_total").await > stops).then_some(())
    })
    .await;
    assert!(!held.is_finished(), "the committer was held long enough");
    // A new actor for the group: its sends come after everything queued before.
    for (peer, tag) in [(&a, "a2"), (&b, "b2"), (&c, "c2")] {
        tasks.extend(pipeline(&peer.client, &gid, tag, 5));
    }
    held.await.unwrap();
    let (mut acked, failed) = collect(tasks).await;
    assert_eq!(failed, 0, "an idle stop refuses nothing");
    acked.push(("before".into(), first.seq));
    assert_eq!(acked.len(), 46);
    assert_history_holds(&owner.client, &gid, &acked).await;
}

/// Item 1, panic restart: the actor panics (fault hook, after the permission check) while
/// its sends wait in the committer; the restarted actor must wait for them before it reads
/// the sequence number.
#[tokio::test]
async fn a_panic_restart_with_writes_still_queued_overwrites_nothing() {
    let broker = Broker::start_with(&[("debug.fault_injection", "true")]).await;
    let [owner, a, b, c] = peers(&broker, &["owner", "a", "b", "c"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(group_data("chat", &["a", "b", "c"]))
        .await
        .unwrap();
    let hold = owner
        .client
        .create_group(group_data("hold", &[]))
        .await
        .unwrap();

    let held = hold_committer(&owner.client, &hold, 3_000).await;
    let mut tasks = Vec::new();
    for (peer, tag) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        tasks.extend(pipeline(&peer.client, &gid, tag, 10));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = owner
        .client
        .modify_group(&gid, None, None, Some("convoke:panic"))
        .await;
    assert_code(r, ErrorCode::ServerBusy);
    for (peer, tag) in [(&a, "a2"), (&b, "b2"), (&c, "c2")] {
        tasks.extend(pipeline(&peer.client, &gid, tag, 5));
    }
    held.await.unwrap();
    let (acked, _) = collect(tasks).await;
    assert!(acked.len() >= 15, "only {} sends acknowledged", acked.len());
    assert!(broker.metric("convoke_group_actor_restarts_total").await >= 1.0);
    assert_history_holds(&owner.client, &gid, &acked).await;
}

/// The panic hook fires only after the permission check: a member who may not modify the
/// group gets 603 and the actor does not restart.
#[tokio::test]
async fn the_panic_hook_needs_the_permission_to_modify() {
    let broker = Broker::start_with(&[("debug.fault_injection", "true")]).await;
    let [owner, a] = peers(&broker, &["owner", "a"]).await.try_into().unwrap();
    let gid = owner
        .client
        .create_group(group_data("chat", &["a"]))
        .await
        .unwrap();
    let r = a
        .client
        .modify_group(&gid, None, None, Some("convoke:panic"))
        .await;
    assert_code(r, ErrorCode::PermissionDenied);
    assert_eq!(
        broker.metric("convoke_group_actor_restarts_total").await,
        0.0
    );
}

/// Item 2, failed flush: the change reached sled's memory but the flush failed. The client
/// hears 500 "outcome unknown" (not "nothing changed"), /readyz turns false, the failure
/// is counted, later changes are refused without being written, and the node stops (exit
/// code 3) so that a restart recovers what reached the disk; after it the group works.
#[tokio::test]
async fn a_failed_flush_is_answered_outcome_unknown_and_the_node_stops() {
    let mut broker = Broker::start_with(&[("debug.fault_injection", "true")]).await;
    let owner = broker.connect("owner").await;
    let gid = owner
        .client
        .create_group(group_data("chat", &[]))
        .await
        .unwrap();
    assert_eq!(broker.http_get("/readyz").await.0, 200);
    let r = owner
        .client
        .modify_group(&gid, None, None, Some("convoke:fail-flush"))
        .await;
    let msg = assert_code(r, ErrorCode::ServerBusy);
    assert!(msg.contains("outcome is unknown"), "{msg}");
    assert!(msg.contains("read the state and retry"), "{msg}");
    let (status, body) = broker.http_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(broker.metric("convoke_store_errors_total").await >= 1.0);
    let r = owner
        .client
        .send_group_message(&gid, b"after".to_vec(), false)
        .await;
    let msg = assert_code(r, ErrorCode::ServerBusy);
    assert!(msg.contains("nothing changed"), "{msg}");
    broker
        .wait_exited(
            Duration::from_secs(10),
            "the node did not stop after a failed flush",
        )
        .await;
    assert!(broker.log().contains("the node stops"), "{}", broker.log());

    broker.restart();
    let owner = broker.connect("owner").await;
    let info = owner
        .client
        .get_group_info(&[&gid])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    // Either outcome is allowed; that is what "unknown" means.
    assert!(
        ["", "convoke:fail-flush"].contains(&info.custom.as_str()),
        "{:?}",
        info.custom
    );
    assert!(
        owner
            .client
            .get_group_messages(&gid, None, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "the send refused after the failure was not stored"
    );
    owner
        .client
        .modify_group(&gid, Some("works"), None, None)
        .await
        .unwrap();
    assert_eq!(broker.http_get("/readyz").await.0, 200);
}

/// Item 2, hung disk: a commit not confirmed within `store.commit_deadline_ms` is answered
/// 500 "outcome unknown" at the deadline instead of hanging, for every group waiting on
/// the committer; /readyz is false until the committer catches up, then true again. The
/// write landed late, and the group (its actor restarted) shows it.
#[tokio::test]
async fn a_hung_commit_is_answered_at_the_deadline_and_readyz_recovers() {
    let broker = Broker::start_with(&[
        ("debug.fault_injection", "true"),
        ("store.commit_deadline_ms", "500"),
    ])
    .await;
    let [owner, a] = peers(&broker, &["owner", "a"]).await.try_into().unwrap();
    let gid = owner
        .client
        .create_group(group_data("chat", &["a"]))
        .await
        .unwrap();
    let other = owner
        .client
        .create_group(group_data("other", &["a"]))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (c, g) = (a.client.clone(), other.clone());
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send_group_message(&g, b"behind the hung commit".to_vec(), false)
            .await
    });
    let r = owner
        .client
        .modify_group(&gid, None, None, Some("convoke:hang-commit:2500"))
        .await;
    let msg = assert_code(r, ErrorCode::ServerBusy);
    assert!(msg.contains("outcome is unknown"), "{msg}");
    assert!(msg.contains("500 ms"), "{msg}");
    let msg = assert_code(send.await.unwrap(), ErrorCode::ServerBusy);
    assert!(msg.contains("outcome is unknown"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "answered at the deadline, not after the hang: {:?}",
        started.elapsed()
    );
    assert_eq!(broker.http_get("/readyz").await.0, 503);
    eventually("/readyz once the committer caught up", || async {
        (broker.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let info = a
        .client
        .get_group_info(&[&gid])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    assert_eq!(
        info.custom, "convoke:hang-commit:2500",
        "the late write landed"
    );
    let history = a
        .client
        .get_group_messages(&other, None, None, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "the late send landed too");
    owner
        .client
        .modify_group(&gid, Some("works"), None, None)
        .await
        .unwrap();
}

/// Item 2, bounded queue: while the committer is held, sends beyond `store.commit_queue_mb`
/// of queued writes are refused at once with 500 "nothing changed" (before a seq is given
/// out); those accepted are stored, with no gap in history.
#[tokio::test]
async fn a_full_commit_queue_refuses_changes_without_a_gap() {
    let broker = Broker::start_with(&[
        ("debug.fault_injection", "true"),
        ("store.commit_queue_mb", "1"),
    ])
    .await;
    let [owner, a] = peers(&broker, &["owner", "a"]).await.try_into().unwrap();
    let gid = owner
        .client
        .create_group(group_data("chat", &["a"]))
        .await
        .unwrap();
    let hold = owner
        .client
        .create_group(group_data("hold", &[]))
        .await
        .unwrap();
    let held = hold_committer(&owner.client, &hold, 2_000).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (c, g) = (a.client.clone(), gid.clone());
        let payload = format!("{i:08}{}", "x".repeat(60_000));
        tasks.push(tokio::spawn(async move {
            let r = c
                .send_group_message(&g, payload.clone().into_bytes(), false)
                .await;
            (payload, r)
        }));
    }
    held.await.unwrap();
    let mut acked = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (tag, Ok(sent)) => acked.push((tag, sent.seq)),
            (_, Err(e)) => {
                let msg = assert_code::<()>(Err(e), ErrorCode::ServerBusy);
                assert!(msg.contains("nothing changed"), "{msg}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the 1 MiB queue refused none of 2.4 MB");
    assert!(acked.len() >= 10, "only {} accepted", acked.len());
    assert!(broker.metric("convoke_store_errors_total").await >= 1.0);
    // Accepted sends are stored, seqs 1..n without a gap.
    let mut seqs: Vec<u64> = acked.iter().map(|(_, s)| *s).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=acked.len() as u64).collect::<Vec<_>>());
    assert_history_holds(&owner.client, &gid, &acked).await;
}
