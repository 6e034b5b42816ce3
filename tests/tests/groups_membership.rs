//! Membership end to end: invitations, join requests, leaving, removal and the blocklist.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_protocol::{CreateGroupData, ErrorCode, EventDetail, GroupEventOp as Op};
use convoke_tests::{assert_code, group_data, peers, Broker};

#[tokio::test]
async fn invite_accept_and_reject_with_confirmation() {
    let broker = Broker::start().await;
    let [owner, mut m1, mut x, mut y, out] = peers(&broker, &["owner", "m1", "x", "y", "out"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(group_data("g", &["m1"]))
        .await
        .unwrap();
    m1.expect(Op::DirectJoined).await;

    let msg = assert_code(
        m1.client.invite_users_to_group(&gid, &["x"]).await,
        ErrorCode::PermissionDenied,
    );
    assert!(msg.contains("allowinvites"), "{msg}");
    assert_code(
        out.client.invite_users_to_group(&gid, &["x"]).await,
        ErrorCode::GroupNotJoined,
    );
    let msg = assert_code(
        owner
            .client
            .invite_users_to_group(&gid, &["x", "ghost"])
            .await,
        ErrorCode::UserNotFound,
    );
    assert!(msg.contains("ghost"));
    assert_code(
        owner.client.invite_users_to_group(&gid, &["m1"]).await,
        ErrorCode::GroupAlreadyJoined,
    );
    let many: Vec<String> = (0..61).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_code(
        owner.client.invite_users_to_group(&gid, &refs).await,
        ErrorCode::RequestParameterError,
    );
    x.expect_quiet().await; // failed invites sent nothing

    let r = owner
        .client
        .invite_users_to_group(&gid, &["x", "y"])
        .await
        .unwrap();
    assert_eq!(r.pending, vec!["x".to_string(), "y".to_string()]);
    let ev = x.expect(Op::InviteToJoin).await;
    assert_eq!(
        (ev.from.as_str(), ev.group_id.as_str()),
        ("owner", gid.as_str())
    );
    y.expect(Op::InviteToJoin).await;
    m1.expect_quiet().await;
    assert_code(
        owner.client.invite_users_to_group(&gid, &["x"]).await,
        ErrorCode::GroupAlreadyJoined,
    );

    // Only the invitee answers their invite.
    assert_code(
        out.client.accept_group_invite(&gid, "x").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        out.client.accept_group_invite(&gid, "out").await,
        ErrorCode::PermissionDenied,
    );
    x.client.accept_group_invite(&gid, "x").await.unwrap();
    let mut owner = owner;
    assert_eq!(
        owner.expect(Op::AcceptInvite).await.users,
        vec!["x".to_string()]
    );
    owner.expect(Op::MemberPresence).await;
    assert_eq!(
        m1.expect(Op::MemberPresence).await.users,
        vec!["x".to_string()]
    );
    // "The new group member will receive memberPresence" (seed): on the device that
    // accepted, too.
    assert_eq!(
        x.expect(Op::MemberPresence).await.users,
        vec!["x".to_string()]
    );
    y.expect_quiet().await;

    y.client.reject_group_invite(&gid, "y").await.unwrap();
    assert_eq!(
        owner.expect(Op::RejectInvite).await.users,
        vec!["y".to_string()]
    );
    m1.expect_quiet().await;
    assert_code(
        y.client.accept_group_invite(&gid, "y").await,
        ErrorCode::PermissionDenied,
    );
    let members = owner.client.list_group_members(&gid, 1, 10).await.unwrap();
    let ids: Vec<_> = members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(ids, vec!["owner", "m1", "x"]);
}

#[tokio::test]
async fn invite_without_confirmation_joins_directly() {
    let broker = Broker::start().await;
    let [owner, mut m1, mut x] = peers(&broker, &["owner", "m1", "x"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(CreateGroupData {
            invite_need_confirm: false,
            allowinvites: true,
            ..group_data("g", &["m1"])
        })
        .await
        .unwrap();
    m1.expect(Op::DirectJoined).await;
    // allowinvites on a private group: members may invite.
    let r = m1.client.invite_users_to_group(&gid, &["x"]).await.unwrap();
    assert_eq!(r.joined, vec!["x".to_string()]);
    assert_eq!(x.expect(Op::DirectJoined).await.from, "m1");
    x.expect(Op::MemberPresence).await;
    let mut owner = owner;
    assert_eq!(
        owner.expect(Op::MemberPresence).await.users,
        vec!["x".to_string()]
    );
    m1.expect_quiet().await; // the inviter's own device has the response
    let info = x
        .client
        .get_group_info(&[&gid])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    assert_eq!(info.affiliations_count, 3);
}

#[tokio::test]
async fn full_group_refuses_new_members() {
    let broker = Broker::start().await;
    let [owner, _a, _b, c] = peers(&broker, &["owner", "a", "b", "c"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(CreateGroupData {
            maxusers: Some(3),
            invite_need_confirm: false,
            public: true,
            ..group_data("g", &["a", "b"])
        })
        .await
        .unwrap();
    assert_code(
        owner.client.invite_users_to_group(&gid, &["c"]).await,
        ErrorCode::GroupMembersFull,
    );
    assert_code(
        c.client.join_group(&gid, "").await,
        ErrorCode::GroupMembersFull,
    );
}

#[tokio::test]
async fn join_public_group_with_and_without_approval() {
    let broker = Broker::start().await;
    let [mut owner, mut adm, mut m1, mut x, mut y] =
        peers(&broker, &["owner", "adm", "m1", "x", "y"])
            .await
            .try_into()
            .unwrap();
    let gid = owner
        .client
        .create_group(CreateGroupData {
            public: true,
            approval: true,
            ..group_data("g", &["adm", "m1"])
        })
        .await
        .unwrap();
    owner.client.set_group_admin(&gid, "adm").await.unwrap();
    adm.expect(Op::DirectJoined).await;
    adm.expect(Op::SetAdmin).await;
    m1.expect(Op::DirectJoined).await;

    assert!(!x
        .client
        .join_group(&gid, "I want to join the group")
        .await
        .unwrap());
    for p in [&mut owner, &mut adm] {
        let ev = p.expect(Op::RequestToJoin).await;
        assert_eq!(ev.from, "x");
        assert_eq!(
            ev.detail,
            EventDetail::Text {
                text: "I want to join the group".into()
            }
        );
    }
    m1.expect_quiet().await;
    assert_code(
        x.client.join_group(&gid, "again").await,
        ErrorCode::GroupAlreadyJoined,
    );
    assert_code(
        m1.client.accept_group_join_request(&gid, "x").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        adm.client.accept_group_join_request(&gid, "y").await,
        ErrorCode::PermissionDenied,
    );
    adm.client
        .accept_group_join_request(&gid, "x")
        .await
        .unwrap();
    assert_eq!(x.expect(Op::AcceptRequest).await.from, "adm");
    x.expect(Op::MemberPresence).await;
    owner.expect(Op::MemberPresence).await;
    m1.expect(Op::MemberPresence).await;

    assert!(!y.client.join_group(&gid, "me too").await.unwrap());
    owner.expect(Op::RequestToJoin).await;
    adm.expect(Op::RequestToJoin).await;
    owner
        .client
        .reject_group_join_request(&gid, "y", "I do not like you")
        .await
        .unwrap();
    let ev = y.expect(Op::JoinPublicGroupDeclined).await;
    assert_eq!(
        ev.detail,
        EventDetail::Text {
            text: "I do not like you".into()
        }
    );
    adm.expect_quiet().await;
    assert_code(
        owner.client.reject_group_join_request(&gid, "y", "").await,
        ErrorCode::PermissionDenied,
    );

    // Without approval: in at once.
    let open = owner
        .client
        .create_group(CreateGroupData {
            public: true,
            ..group_data("open", &["m1"])
        })
        .await
        .unwrap();
    m1.expect(Op::DirectJoined).await;
    assert!(y.client.join_group(&open, "").await.unwrap());
    m1.expect(Op::MemberPresence).await;
    assert_code(
        y.client.join_group(&open, "").await,
        ErrorCode::GroupAlreadyJoined,
    );
    // Private groups cannot be joined.
    let private = owner
        .client
        .create_group(group_data("private", &[]))
        .await
        .unwrap();
    assert_code(
        y.client.join_group(&private, "").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        y.client.join_group("424242", "").await,
        ErrorCode::GroupNotExist,
    );
}

#[tokio::test]
async fn leave_and_remove_tell_the_right_people() {
    let broker = Broker::start().await;
    let [mut owner, mut adm, mut adm2, mut m1, mut m2, mut m3] =
        peers(&broker, &["owner", "adm", "adm2", "m1", "m2", "m3"])
            .await
            .try_into()
            .unwrap();
    let gid = owner
        .client
        .create_group(group_data("g", &["adm", "adm2", "m1", "m2", "m3"]))
        .await
        .unwrap();
    owner.client.set_group_admin(&gid, "adm").await.unwrap();
    owner.client.set_group_admin(&gid, "adm2").await.unwrap();
    for p in [&mut adm, &mut adm2, &mut m1, &mut m2, &mut m3] {
        p.expect(Op::DirectJoined).await;
    }
    adm.expect(Op::SetAdmin).await;
    adm.expect(Op::SetAdmin).await;
    adm2.expect(Op::SetAdmin).await;

    assert_code(
        owner.client.leave_group(&gid).await,
        ErrorCode::PermissionDenied,
    );
    m3.client.leave_group(&gid).await.unwrap();
    for p in [&mut owner, &mut adm, &mut adm2, &mut m1, &mut m2] {
        assert_eq!(
            p.expect(Op::MemberAbsence).await.users,
            vec!["m3".to_string()]
        );
    }
    m3.expect_quiet().await;
    assert_code(m3.client.leave_group(&gid).await, ErrorCode::GroupNotJoined);

    assert_code(
        m1.client.remove_group_member(&gid, "m2").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        adm.client.remove_group_member(&gid, "adm2").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        adm.client.remove_group_member(&gid, "owner").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        adm.client.remove_group_member(&gid, "m3").await,
        ErrorCode::GroupNotJoined,
    );
    adm.client.remove_group_member(&gid, "m2").await.unwrap();
    assert_eq!(m2.expect(Op::RemoveMember).await.from, "adm");
    m2.expect_quiet().await;
    for p in [&mut owner, &mut adm2, &mut m1] {
        assert_eq!(
            p.expect(Op::MemberAbsence).await.users,
            vec!["m2".to_string()]
        );
    }
    // Batch removal is all or nothing.
    assert_code(
        owner
            .client
            .remove_group_members(&gid, &["m1", "nobody"])
            .await,
        ErrorCode::GroupNotJoined,
    );
    assert_eq!(
        owner
            .client
            .list_group_members(&gid, 1, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    owner
        .client
        .remove_group_members(&gid, &["m1", "adm2"])
        .await
        .unwrap();
    m1.expect(Op::RemoveMember).await;
    adm2.expect(Op::RemoveMember).await;
    adm.expect(Op::MemberAbsence).await;
    adm.expect(Op::MemberAbsence).await;
    assert_eq!(
        owner.client.get_group_admin(&gid).await.unwrap(),
        vec!["adm".to_string()]
    );
}

#[tokio::test]
async fn block_and_unblock_members() {
    let broker = Broker::start().await;
    let [mut owner, mut m1, mut m2] = peers(&broker, &["owner", "m1", "m2"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(CreateGroupData {
            public: true,
            ..group_data("g", &["m1", "m2"])
        })
        .await
        .unwrap();
    m1.expect(Op::DirectJoined).await;
    m2.expect(Op::DirectJoined).await;
    assert_code(
        m2.client.block_group_member(&gid, "m1").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        m2.client.get_group_blocklist(&gid).await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        owner.client.block_group_member(&gid, "owner").await,
        ErrorCode::PermissionDenied,
    );
    owner.client.block_group_member(&gid, "m1").await.unwrap();
    assert_eq!(
        m1.expect(Op::RemoveMember).await.users,
        vec!["m1".to_string()]
    );
    assert_eq!(
        m2.expect(Op::MemberAbsence).await.users,
        vec!["m1".to_string()]
    );
    assert_eq!(
        owner.client.get_group_blocklist(&gid).await.unwrap(),
        vec!["m1".to_string()]
    );
    // A blocked user cannot come back, by join or invite.
    assert_code(
        m1.client.join_group(&gid, "").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        owner.client.invite_users_to_group(&gid, &["m1"]).await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        owner.client.unblock_group_member(&gid, "m2").await,
        ErrorCode::RequestParameterError,
    );
    owner.client.unblock_group_member(&gid, "m1").await.unwrap();
    assert_eq!(
        m1.expect(Op::UnblockMember).await.users,
        vec!["m1".to_string()]
    );
    m2.expect_quiet().await;
    assert!(owner
        .client
        .get_group_blocklist(&gid)
        .await
        .unwrap()
        .is_empty());
    assert!(m1.client.join_group(&gid, "").await.unwrap());

    owner
        .client
        .block_group_members(&gid, &["m1", "m2"])
        .await
        .unwrap();
    // m1's own join was announced to the others, not to the device that joined.
    m1.expect(Op::RemoveMember).await;
    m2.expect(Op::MemberPresence).await;
    m2.expect(Op::RemoveMember).await;
    owner.expect(Op::MemberPresence).await;
    owner.expect_quiet().await; // the acting device has the response
    let mut blocked = owner.client.get_group_blocklist(&gid).await.unwrap();
    blocked.sort();
    assert_eq!(blocked, vec!["m1".to_string(), "m2".to_string()]);
    owner
        .client
        .unblock_group_members(&gid, &["m1", "m2"])
        .await
        .unwrap();
    m1.expect(Op::UnblockMember).await;
    m2.expect(Op::UnblockMember).await;
}
