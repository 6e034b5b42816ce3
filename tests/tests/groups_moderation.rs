//! Moderation end to end: mutes (timed and permanent), mute-all, the allowlist, the
//! announcement, member attributes and message shielding.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_protocol::{ErrorCode, EventDetail, GroupEventOp as Op};
use convoke_tests::{assert_code, standard_group, Broker, Peer};
use std::collections::BTreeMap;

#[tokio::test]
async fn mute_unmute_lists_and_events() {
    let broker = Broker::start().await;
    let (gid, [mut owner, adm, mut m1, mut m2, mut out]) = standard_group(&broker, false).await;
    assert_code(
        m1.client.mute_group_member(&gid, &["m2"], -1).await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        adm.client.mute_group_member(&gid, &["owner"], -1).await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        adm.client.mute_group_member(&gid, &["out"], -1).await,
        ErrorCode::GroupNotJoined,
    );
    let msg = assert_code(
        adm.client.mute_group_member(&gid, &["m1"], 0).await,
        ErrorCode::RequestParameterError,
    );
    assert!(msg.contains("muteDuration"), "{msg}");
    assert_code(
        adm.client.mute_group_member(&gid, &["m1"], -5).await,
        ErrorCode::RequestParameterError,
    );

    let mutes = adm
        .client
        .mute_group_member(&gid, &["m1", "m2"], -1)
        .await
        .unwrap();
    assert_eq!(mutes.len(), 2);
    assert!(mutes.iter().all(|m| m.expire == -1));
    for p in [&mut owner, &mut m1, &mut m2] {
        let ev = p.expect(Op::MuteMember).await;
        assert_eq!(ev.users, vec!["m1".to_string(), "m2".to_string()]);
        assert_eq!(ev.detail, EventDetail::Mute { expire: -1 });
    }
    out.expect_quiet().await;
    assert!(m1.client.is_in_group_mutelist(&gid).await.unwrap());
    assert!(!owner.client.is_in_group_mutelist(&gid).await.unwrap());
    assert_code(
        out.client.is_in_group_mutelist(&gid).await,
        ErrorCode::GroupNotJoined,
    );
    assert_code(
        m1.client.get_group_mutelist(&gid).await,
        ErrorCode::PermissionDenied,
    );
    assert_eq!(
        owner.client.get_group_mutelist(&gid).await.unwrap().len(),
        2
    );

    assert_code(
        adm.client.unmute_group_member(&gid, &["owner"]).await,
        ErrorCode::RequestParameterError,
    );
    adm.client.unmute_group_member(&gid, &["m2"]).await.unwrap();
    for p in [&mut owner, &mut m1, &mut m2] {
        assert_eq!(
            p.expect(Op::UnmuteMember).await.users,
            vec!["m2".to_string()]
        );
    }
    assert!(!m2.client.is_in_group_mutelist(&gid).await.unwrap());
    let list = adm.client.get_group_mutelist(&gid).await.unwrap();
    assert_eq!(
        list.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
        vec!["m1"]
    );
}

#[tokio::test]
async fn a_timed_mute_ends_by_itself() {
    let broker = Broker::start().await;
    let (gid, [owner, _adm, mut m1, mut m2, _out]) = standard_group(&broker, false).await;
    let mutes = owner
        .client
        .mute_group_member(&gid, &["m1"], 800)
        .await
        .unwrap();
    assert!(mutes[0].expire > 0);
    m1.expect(Op::MuteMember).await;
    m2.expect(Op::MuteMember).await;
    assert!(m1.client.is_in_group_mutelist(&gid).await.unwrap());
    // The broker ends it: an unmuteMember event from nobody (empty `from`).
    let ev = m2.expect(Op::UnmuteMember).await;
    assert_eq!(ev.users, vec!["m1".to_string()]);
    assert_eq!(ev.from, "");
    m1.expect(Op::UnmuteMember).await;
    assert!(!m1.client.is_in_group_mutelist(&gid).await.unwrap());
    assert!(owner
        .client
        .get_group_mutelist(&gid)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn mute_all_on_and_off() {
    let broker = Broker::start().await;
    let (gid, [mut owner, adm, mut m1, mut m2, mut out]) = standard_group(&broker, false).await;
    assert_code(
        m1.client.disable_send_group_msg(&gid).await,
        ErrorCode::PermissionDenied,
    );
    adm.client.disable_send_group_msg(&gid).await.unwrap();
    for p in [&mut owner, &mut m1, &mut m2] {
        assert_eq!(p.expect(Op::MuteAllMembers).await.from, "adm");
    }
    out.expect_quiet().await;
    assert!(
        m1.client.get_group_info(&[&gid]).await.unwrap()[0]
            .info
            .as_ref()
            .unwrap()
            .mute
    );
    adm.client.enable_send_group_msg(&gid).await.unwrap();
    for p in [&mut owner, &mut m1, &mut m2] {
        p.expect(Op::UnmuteAllMembers).await;
    }
    assert!(
        !m1.client.get_group_info(&[&gid]).await.unwrap()[0]
            .info
            .as_ref()
            .unwrap()
            .mute
    );
}

#[tokio::test]
async fn allowlist_add_remove_and_queries() {
    let broker = Broker::start().await;
    let (gid, [mut owner, mut adm, mut m1, mut m2, out]) = standard_group(&broker, false).await;
    let root = broker.connect_admin("root").await;
    assert_code(
        m1.client.add_users_to_group_allowlist(&gid, &["m1"]).await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        adm.client
            .add_users_to_group_allowlist(&gid, &["out"])
            .await,
        ErrorCode::GroupNotJoined,
    );
    adm.client
        .add_users_to_group_allowlist(&gid, &["m1"])
        .await
        .unwrap();
    assert_eq!(
        m1.expect(Op::AddUserToAllowlist).await.users,
        vec!["m1".to_string()]
    );
    owner.expect(Op::AddUserToAllowlist).await;
    m2.expect_quiet().await; // plain members are not told
    adm.expect_quiet().await; // the acting device has the response
    assert_eq!(
        owner.client.get_group_allowlist(&gid).await.unwrap(),
        vec!["m1".to_string()]
    );
    assert_code(
        m2.client.get_group_allowlist(&gid).await,
        ErrorCode::PermissionDenied,
    );

    assert!(m1.client.is_in_group_allowlist(&gid, "m1").await.unwrap());
    assert!(!m2.client.is_in_group_allowlist(&gid, "m2").await.unwrap());
    assert_code(
        m2.client.is_in_group_allowlist(&gid, "m1").await,
        ErrorCode::PermissionDenied,
    );
    assert!(
        root.client.is_in_group_allowlist(&gid, "m1").await.unwrap(),
        "app admins check anyone"
    );
    assert!(!out.client.is_in_group_allowlist(&gid, "out").await.unwrap());

    assert_code(
        owner.client.remove_group_allowlist_member(&gid, "m2").await,
        ErrorCode::RequestParameterError,
    );
    owner
        .client
        .remove_group_allowlist_member(&gid, "m1")
        .await
        .unwrap();
    m1.expect(Op::RemoveAllowlistMember).await;
    adm.expect(Op::RemoveAllowlistMember).await;
    m2.expect_quiet().await;
    assert!(owner
        .client
        .get_group_allowlist(&gid)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn announcement_update_fetch_delete() {
    let broker = Broker::start().await;
    let (gid, [owner, mut adm, mut m1, mut m2, out]) = standard_group(&broker, false).await;
    assert_code(
        m1.client.update_group_announcement(&gid, "hi").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        owner
            .client
            .update_group_announcement(&gid, &"a".repeat(513))
            .await,
        ErrorCode::RequestParameterError,
    );
    owner
        .client
        .update_group_announcement(&gid, "hello")
        .await
        .unwrap();
    for p in [&mut adm, &mut m1, &mut m2] {
        let ev = p.expect(Op::UpdateAnnouncement).await;
        assert_eq!(
            ev.detail,
            EventDetail::Announcement {
                announcement: "hello".into()
            }
        );
    }
    assert_eq!(
        m1.client.fetch_group_announcement(&gid).await.unwrap(),
        "hello"
    );
    assert_code(
        out.client.fetch_group_announcement(&gid).await,
        ErrorCode::GroupNotJoined,
    );
    owner
        .client
        .update_group_announcement(&gid, "")
        .await
        .unwrap();
    m1.expect(Op::DeleteAnnouncement).await;
    assert_eq!(m2.client.fetch_group_announcement(&gid).await.unwrap(), "");

    // Public groups: anyone may read it.
    let broker2 = Broker::start().await;
    let (pub_gid, [o2, _, _, _, out2]) = standard_group(&broker2, true).await;
    o2.client
        .update_group_announcement(&pub_gid, "welcome")
        .await
        .unwrap();
    assert_eq!(
        out2.client
            .fetch_group_announcement(&pub_gid)
            .await
            .unwrap(),
        "welcome"
    );
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn member_attributes_with_multi_device_event() {
    let broker = Broker::start().await;
    let (gid, [mut owner, adm, m1, mut m2, out]) = standard_group(&broker, false).await;
    let mut m1_phone = broker.connect_device("m1", "phone").await;
    let mut m1 = m1;
    m1.client
        .set_group_member_attributes(
            &gid,
            "m1",
            attrs(&[("nickname", "Em"), ("avatar", "a.png")]),
        )
        .await
        .unwrap();
    for p in [&mut owner, &mut m2] {
        let ev = p.expect(Op::MemberAttributesUpdate).await;
        assert_eq!(
            ev.detail,
            EventDetail::Attributes {
                user_id: "m1".into(),
                attributes: attrs(&[("avatar", "a.png"), ("nickname", "Em")])
            }
        );
    }
    let ev = m1_phone
        .expect_multi_device(Op::MemberAttributesUpdate)
        .await;
    assert_eq!(ev.from, "m1");
    m1.expect_quiet().await;

    assert_eq!(
        m2.client
            .get_group_member_attributes(&gid, "m1")
            .await
            .unwrap(),
        attrs(&[("avatar", "a.png"), ("nickname", "Em")])
    );
    assert_code(
        m2.client
            .set_group_member_attributes(&gid, "m1", attrs(&[("nickname", "x")]))
            .await,
        ErrorCode::PermissionDenied,
    );
    adm.client
        .set_group_member_attributes(&gid, "m2", attrs(&[("nickname", "Tee")]))
        .await
        .unwrap();
    let many = m2
        .client
        .get_group_members_attributes(&gid, &["m1", "m2"], &["nickname"])
        .await
        .unwrap();
    assert_eq!(many["m1"], attrs(&[("nickname", "Em")]));
    assert_eq!(many["m2"], attrs(&[("nickname", "Tee")]));
    m1.client
        .set_group_member_attributes(&gid, "m1", attrs(&[("avatar", "")]))
        .await
        .unwrap();
    assert_eq!(
        m2.client
            .get_group_member_attributes(&gid, "m1")
            .await
            .unwrap(),
        attrs(&[("nickname", "Em")])
    );

    let big = "v".repeat(513);
    let msg = assert_code(
        m1.client
            .set_group_member_attributes(&gid, "m1", attrs(&[("k", &big)]))
            .await,
        ErrorCode::GroupMemberAttributesSetFailed,
    );
    assert!(msg.contains("\"k\""), "{msg}");
    assert_code(
        m1.client
            .set_group_member_attributes(&gid, "m1", attrs(&[("bad key", "v")]))
            .await,
        ErrorCode::GroupMemberAttributesSetFailed,
    );
    let fill: Vec<(String, String)> = (0..9).map(|i| (format!("k{i}"), "v".repeat(500))).collect();
    let fill: BTreeMap<String, String> = fill.into_iter().collect();
    assert_code(
        m1.client
            .set_group_member_attributes(&gid, "m1", fill)
            .await,
        ErrorCode::GroupMemberAttributesSetFailed,
    );
    assert_eq!(
        m2.client
            .get_group_member_attributes(&gid, "m1")
            .await
            .unwrap(),
        attrs(&[("nickname", "Em")]),
        "failed sets change nothing"
    );
    assert_code(
        out.client.get_group_member_attributes(&gid, "m1").await,
        ErrorCode::GroupNotJoined,
    );
    let eleven: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = eleven.iter().map(String::as_str).collect();
    assert_code(
        m1.client
            .get_group_members_attributes(&gid, &refs, &[])
            .await,
        ErrorCode::RequestParameterError,
    );
}

#[tokio::test]
async fn block_group_messages_sets_shieldgroup() {
    let broker = Broker::start().await;
    let (gid, [owner, adm, m1, _m2, out]) = standard_group(&broker, false).await;
    assert_code(
        owner.client.block_group_messages(&gid).await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        adm.client.block_group_messages(&gid).await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        out.client.block_group_messages(&gid).await,
        ErrorCode::GroupNotJoined,
    );
    m1.client.block_group_messages(&gid).await.unwrap();
    assert!(
        m1.client.get_group_info(&[&gid]).await.unwrap()[0]
            .info
            .as_ref()
            .unwrap()
            .shieldgroup
    );
    assert!(
        !owner.client.get_group_info(&[&gid]).await.unwrap()[0]
            .info
            .as_ref()
            .unwrap()
            .shieldgroup
    );
    m1.client.unblock_group_messages(&gid).await.unwrap();
    assert!(
        !m1.client.get_group_info(&[&gid]).await.unwrap()[0]
            .info
            .as_ref()
            .unwrap()
            .shieldgroup
    );
}

/// A member promoted to owner or admin keeps neither a mute (the owner can never be muted)
/// nor a block of the group's messages (owners and admins may not block them).
#[tokio::test]
async fn promotion_ends_the_new_owners_mute_and_message_blocks() {
    let broker = Broker::start().await;
    let (gid, [mut owner, mut adm, mut m1, mut m2, mut out]) = standard_group(&broker, false).await;
    owner
        .client
        .mute_group_member(&gid, &["m1"], -1)
        .await
        .unwrap();
    for p in [&mut adm, &mut m1, &mut m2] {
        p.expect(Op::MuteMember).await;
    }
    m1.client.block_group_messages(&gid).await.unwrap();
    m2.client.block_group_messages(&gid).await.unwrap();
    let shield = |p: &Peer| {
        let client = p.client.clone();
        let gid = gid.clone();
        async move {
            client.get_group_info(&[&gid]).await.unwrap()[0]
                .info
                .as_ref()
                .unwrap()
                .shieldgroup
        }
    };
    assert!(shield(&m1).await && shield(&m2).await);

    owner.client.change_group_owner(&gid, "m1").await.unwrap();
    for p in [&mut adm, &mut m1, &mut m2] {
        p.expect(Op::ChangeOwner).await;
        let ev = p.expect(Op::UnmuteMember).await;
        assert_eq!(ev.users, vec!["m1".to_string()]);
        assert_eq!(ev.from, "owner");
    }
    out.expect_quiet().await;
    assert!(!m1.client.is_in_group_mutelist(&gid).await.unwrap());
    assert!(m1.client.get_group_mutelist(&gid).await.unwrap().is_empty());
    assert!(!shield(&m1).await);

    m1.client.set_group_admin(&gid, "m2").await.unwrap();
    adm.expect(Op::SetAdmin).await;
    m2.expect(Op::SetAdmin).await;
    assert!(!shield(&m2).await);

    // Both receive the group's messages again.
    adm.client
        .send_group_message(&gid, "hello", false)
        .await
        .unwrap();
    for p in [&mut owner, &mut m1, &mut m2] {
        assert_eq!(p.expect_message().await.payload, b"hello");
    }
}
