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
            panic!("seq {seq} acknowledged twice: {other:?} and {payload:?}");
        }
    }
    let mut history = BTreeMap::new();
    let mut after = None;
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
        assert_eq!(
            history.get(seq).map(String::as_str),
            Some(*payload),
            "acknowledged message {payload:?} (seq {seq}) is not in history as acknowledged"
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
