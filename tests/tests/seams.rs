//! The seams clustering plugs into, seen from a client: one way into a group (every
//! group-bound request, getGroupInfo included, is answered by the group's own actor, in the
//! order the session sent it).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_protocol::{CreateGroupData, ErrorCode, Role};
use convoke_tests::{assert_code, group_data, peers, Broker};

/// A client that pipelines modifyGroup then getGroupInfo sees the change: both are queued
/// in the group's mailbox in the order sent. When getGroupInfo was read from the store by
/// the session (before issue #11's seams), it raced the modify's commit and read the old
/// name.
#[tokio::test]
async fn pipelined_modify_then_info_sees_the_change() {
    let broker = Broker::start().await;
    let owner = broker.connect("owner").await;
    let c = &owner.client;
    let gid = c.create_group(group_data("start", &[])).await.unwrap();
    let ids = [gid.as_str()];
    for i in 0..20 {
        let name = format!("name {i}");
        let desc = format!("desc {i}");
        let (modified, info) = tokio::join!(
            c.modify_group(&gid, Some(&name), Some(&desc), None),
            c.get_group_info(&ids),
        );
        modified.unwrap();
        let info = info.unwrap().remove(0).info.unwrap();
        assert_eq!(
            (info.name.as_str(), info.description.as_str()),
            (name.as_str(), desc.as_str()),
            "round {i}: getGroupInfo pipelined after modifyGroup saw the old state"
        );
    }
}

/// getGroupInfo's per-id entries and codes, each answered by its group: missing and
/// destroyed groups 605, a private group to a non-member or a blocked user 602, a public
/// group to anyone (a blocked user too: no role), a malformed id -3, all in one answer in
/// the order asked; the list itself out of range is -3 for the whole request.
#[tokio::test]
async fn group_info_codes_per_id() {
    let broker = Broker::start().await;
    let [owner, out, bad] = peers(&broker, &["owner", "out", "bad"])
        .await
        .try_into()
        .unwrap();
    let c = &owner.client;
    let private = c
        .create_group(CreateGroupData {
            invite_need_confirm: false,
            ..group_data("private", &["bad"])
        })
        .await
        .unwrap();
    let public = c
        .create_group(CreateGroupData {
            public: true,
            invite_need_confirm: false,
            ..group_data("public", &["bad"])
        })
        .await
        .unwrap();
    let gone = c.create_group(group_data("gone", &[])).await.unwrap();
    c.destroy_group(&gone).await.unwrap();
    c.block_group_member(&private, "bad").await.unwrap();
    c.block_group_member(&public, "bad").await.unwrap();

    let asked = [private.as_str(), public.as_str(), "999999", &gone, "abc"];
    for peer in [&out, &bad] {
        let got = peer.client.get_group_info(&asked).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|e| e.group_id.as_str()).collect();
        assert_eq!(ids, asked, "one entry per id, in the order asked");
        let code = |i: usize| got[i].error.as_ref().map(|e| e.code);
        assert_eq!(code(0), Some(ErrorCode::GroupNotJoined), "{}", peer.user());
        assert!(got[0].info.is_none());
        let message = &got[0].error.as_ref().unwrap().message;
        assert!(message.contains(&private), "{message}");
        let info = got[1].info.as_ref().unwrap();
        assert!(info.public && info.role.is_none() && info.name == "public");
        assert_eq!(code(2), Some(ErrorCode::GroupNotExist));
        assert_eq!(code(3), Some(ErrorCode::GroupNotExist));
        assert_eq!(code(4), Some(ErrorCode::RequestParameterError));
    }
    // The owner reads both, with its role.
    let got = c.get_group_info(&[&private, &public]).await.unwrap();
    assert!(got
        .iter()
        .all(|e| e.info.as_ref().unwrap().role == Some(Role::Owner)));

    assert_code(
        out.client.get_group_info(&[]).await,
        ErrorCode::RequestParameterError,
    );
    let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_code(
        out.client.get_group_info(&refs).await,
        ErrorCode::RequestParameterError,
    );
}

/// A read by a non-member does not keep a group loaded, and is still answered after the
/// actor went: getGroupInfo of a public group by an outsider, repeated, keeps giving the
/// current state (a rename made meanwhile included).
#[tokio::test]
async fn outsider_info_follows_changes() {
    let broker = Broker::start().await;
    let [owner, out] = peers(&broker, &["owner", "out"]).await.try_into().unwrap();
    let gid = owner
        .client
        .create_group(CreateGroupData {
            public: true,
            ..group_data("one", &[])
        })
        .await
        .unwrap();
    let name = |e: &Vec<convoke_protocol::GroupInfoEntry>| e[0].info.as_ref().unwrap().name.clone();
    assert_eq!(
        name(&out.client.get_group_info(&[&gid]).await.unwrap()),
        "one"
    );
    owner
        .client
        .modify_group(&gid, Some("two"), None, None)
        .await
        .unwrap();
    assert_eq!(
        name(&out.client.get_group_info(&[&gid]).await.unwrap()),
        "two"
    );
}

/// The groups-per-user quota, read by the rules from facts the ingress gathers before the
/// request is queued: a third group is refused (50) by join, direct invite and create, and
/// a pipelined leaveGroup then joinGroup of the same group at the quota passes (the facts
/// leave the group itself out; counting it would have refused the join).
#[tokio::test]
async fn group_quota_from_prefetched_facts() {
    let broker = Broker::start_with(&[("limits.max_groups_per_user", "2")]).await;
    // One owner per group: owners count against the quota too.
    let [o1, o2, o3, x] = peers(&broker, &["o1", "o2", "o3", "x"])
        .await
        .try_into()
        .unwrap();
    let public = |name: &str| CreateGroupData {
        public: true,
        invite_need_confirm: false,
        ..group_data(name, &[])
    };
    let g1 = o1.client.create_group(public("g1")).await.unwrap();
    let g2 = o2.client.create_group(public("g2")).await.unwrap();
    let g3 = o3.client.create_group(public("g3")).await.unwrap();
    assert!(x.client.join_group(&g1, "").await.unwrap());
    assert!(x.client.join_group(&g2, "").await.unwrap());
    let msg = assert_code(x.client.join_group(&g3, "").await, ErrorCode::MaxLimit);
    assert!(msg.contains("\"x\"") && msg.contains('2'), "{msg}");
    assert_code(
        o3.client.invite_users_to_group(&g3, &["x"]).await,
        ErrorCode::MaxLimit,
    );
    assert_code(
        x.client.create_group(group_data("mine", &[])).await,
        ErrorCode::MaxLimit,
    );
    for _ in 0..5 {
        let (left, joined) = tokio::join!(x.client.leave_group(&g1), x.client.join_group(&g1, ""));
        left.unwrap();
        assert!(
            joined.unwrap(),
            "pipelined leave then join of one group at the quota"
        );
    }
    let info = o1.client.get_group_info(&[&g1, &g3]).await.unwrap();
    assert_eq!(info[0].info.as_ref().unwrap().affiliations_count, 2);
    assert_eq!(info[1].info.as_ref().unwrap().affiliations_count, 1);
}
