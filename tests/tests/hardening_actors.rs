//! Issue #12 item 8: group actors are a bounded resource. A request refused to a
//! non-member does not leave its group loaded, `groups.max_resident` caps the loaded
//! groups (the least recently used idle one goes), and a mute far in the future does not
//! pin its group: the directory wakes the group shortly before the mute ends, also after a
//! restart. `convoke_group_actors` shows what is loaded.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_protocol::{ErrorCode, GroupEventOp as Op};
use convoke_tests::{assert_code, eventually, group_data, peers, Broker};
use std::time::{Duration, Instant};

async fn resident(broker: &Broker) -> u64 {
    broker.metric("convoke_group_actors").await as u64
}

/// Runs `f` until it is not refused with 500 (a load over the resident cap while every
/// loaded group was used within the last second: "retry").
async fn retry_busy<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, convoke_client::ClientError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.code() == Some(ErrorCode::ServerBusy) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// An outsider probing groups by id (sends, changes, reads; all refused) loads each only
/// for the moment of its answer: afterwards no group is resident. Before, each refused
/// request kept its group loaded for `groups.idle_stop_secs` (300 s by default).
#[tokio::test]
async fn requests_refused_to_an_outsider_leave_no_group_loaded() {
    let mut broker = Broker::start().await;
    let owner = broker.connect("owner").await;
    let mut gids = Vec::new();
    for i in 0..8 {
        gids.push(
            owner
                .client
                .create_group(group_data(&format!("private{i}"), &[]))
                .await
                .unwrap(),
        );
    }
    drop(owner);
    broker.restart();
    assert_eq!(resident(&broker).await, 0);

    let outsider = broker.connect("mallory").await;
    for gid in &gids {
        assert_code(
            outsider
                .client
                .send_group_message(gid, b"hi".to_vec(), false)
                .await,
            ErrorCode::GroupNotJoined,
        );
        assert_code(
            outsider
                .client
                .modify_group(gid, Some("mine"), None, None)
                .await,
            ErrorCode::GroupNotJoined,
        );
        assert_code(
            outsider
                .client
                .get_group_messages(gid, None, None, 10)
                .await,
            ErrorCode::GroupNotJoined,
        );
    }
    eventually("no group loaded after refused requests", || async {
        (resident(&broker).await == 0).then_some(())
    })
    .await;
    assert!(broker.metric("convoke_group_actor_stops_total").await >= 8.0);
    // A member's request still loads the group and it stays.
    let owner = broker.connect("owner").await;
    owner
        .client
        .send_group_message(&gids[0], b"mine".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(resident(&broker).await, 1);
}

/// With `groups.max_resident = 3`, using six groups one after the other never has more
/// than three loaded (plus the one being loaded): the least recently used idle one is
/// stopped to make room. Every request is served.
#[tokio::test]
async fn the_resident_cap_evicts_the_least_recently_used_group() {
    let broker = Broker::start_with(&[("groups.max_resident", "3")]).await;
    let [owner, a] = peers(&broker, &["owner", "a"]).await.try_into().unwrap();
    let mut gids = Vec::new();
    for i in 0..6 {
        // An actor used within the last second is never evicted: a burst of loads past the
        // cap is refused (500, retry) until one is idle.
        let gid = retry_busy(|| {
            owner
                .client
                .create_group(group_data(&format!("g{i}"), &["a"]))
        })
        .await;
        gids.push(gid);
        assert!(resident(&broker).await <= 4, "over the cap");
    }
    for (i, gid) in gids.iter().enumerate() {
        retry_busy(|| {
            a.client
                .send_group_message(gid, format!("m{i}").into_bytes(), false)
        })
        .await;
        assert!(resident(&broker).await <= 4, "over the cap");
    }
    eventually("back within the cap", || async {
        (resident(&broker).await <= 3).then_some(())
    })
    .await;
    assert!(broker.metric("convoke_group_actor_stops_total").await >= 3.0);
    for (i, gid) in gids.iter().enumerate() {
        let history = retry_busy(|| owner.client.get_group_messages(gid, None, None, 10)).await;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].payload, format!("m{i}").into_bytes());
    }
}

/// A mute ending far beyond the idle time does not keep its group loaded; a mute ending a
/// few seconds after the group went idle still ends on time, with its event: the
/// directory wakes the group for it. After a restart, the group is not loaded at start
/// for a far mute, and the near one still ends on time.
#[tokio::test]
async fn mutes_do_not_pin_their_group_and_still_end_on_time() {
    let mut broker = Broker::start_with(&[("groups.idle_stop_secs", "1")]).await;
    let [owner, mut m1, _m2] = peers(&broker, &["owner", "m1", "m2"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(group_data("g", &["m1", "m2"]))
        .await
        .unwrap();
    m1.expect(Op::DirectJoined).await;
    // m2: a day. m1: 4 s (beyond the 1 s idle time).
    owner
        .client
        .mute_group_member(&gid, &["m2"], 86_400_000)
        .await
        .unwrap();
    let muted_at = Instant::now();
    owner
        .client
        .mute_group_member(&gid, &["m1"], 4_000)
        .await
        .unwrap();
    m1.expect(Op::MuteMember).await;
    m1.expect(Op::MuteMember).await;
    eventually("the group unloaded despite its mutes", || async {
        (resident(&broker).await == 0).then_some(())
    })
    .await;
    let ev = m1.expect(Op::UnmuteMember).await;
    assert_eq!(ev.users, vec!["m1".to_string()]);
    let took = muted_at.elapsed();
    assert!(
        took >= Duration::from_millis(3_900) && took < Duration::from_millis(6_500),
        "the mute ended after {took:?}, not after 4 s"
    );
    assert_code(
        _m2.client
            .send_group_message(&gid, b"x".to_vec(), false)
            .await,
        ErrorCode::ServiceNotAllowMessagingMute,
    );

    // Across a restart: the far mute does not load the group at start, a near one ends.
    owner
        .client
        .mute_group_member(&gid, &["m1"], 5_000)
        .await
        .unwrap();
    let muted_at = Instant::now();
    drop((owner, m1, _m2));
    broker.restart();
    let mut m1 = broker.connect("m1").await;
    assert_eq!(resident(&broker).await, 0, "no group loaded at start");
    let ev = m1.expect(Op::UnmuteMember).await;
    assert_eq!(ev.users, vec!["m1".to_string()]);
    let took = muted_at.elapsed();
    assert!(
        took >= Duration::from_millis(4_900) && took < Duration::from_millis(8_000),
        "the mute ended after {took:?}, not after 5 s"
    );
}
