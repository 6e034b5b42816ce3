//! Group lifecycle end to end: create, info, modify, ownership, admins, listing, destroy,
//! and the joined/public indexes.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_protocol::{CreateGroupData, ErrorCode, EventDetail, GroupEventOp as Op, Role};
use convoke_tests::{assert_code, group_data, peers, Broker};

#[tokio::test]
async fn create_group_adds_members_and_tells_exactly_them() {
    let broker = Broker::start().await;
    let [mut owner, mut m1, mut m2, mut out] = peers(&broker, &["owner", "m1", "m2", "out"])
        .await
        .try_into()
        .unwrap();
    let mut owner2 = broker.connect_device("owner", "tablet").await;
    let gid = owner
        .client
        .create_group(CreateGroupData {
            desc: "this is my group".into(),
            ext: r#"{"info":"group info"}"#.into(),
            maxusers: Some(50),
            ..group_data("game night", &["m1", "m2"])
        })
        .await
        .unwrap();
    for p in [&mut m1, &mut m2] {
        let ev = p.expect(Op::DirectJoined).await;
        assert_eq!(ev.group_id, gid);
        assert_eq!(ev.group_name, "game night");
        assert_eq!(ev.from, "owner");
        assert_eq!(ev.users, vec![p.user().to_string()]);
        p.expect_quiet().await;
    }
    let ev = owner2.expect(Op::Create).await;
    assert_eq!(ev.group_id, gid);
    owner.expect_quiet().await;
    out.expect_quiet().await;

    let info = owner
        .client
        .get_group_info(&[&gid])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    assert_eq!(info.name, "game night");
    assert_eq!(info.description, "this is my group");
    assert_eq!(info.owner, "owner");
    assert_eq!(info.affiliations_count, 3);
    assert_eq!(info.maxusers, 50);
    assert_eq!(info.custom, r#"{"info":"group info"}"#);
    assert!(!info.public && info.invite_need_confirm && !info.mute);
    assert_eq!(info.role, Some(Role::Owner));
    let mine = m1
        .client
        .get_group_info(&[&gid])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    assert_eq!(mine.role, Some(Role::Member));
}

#[tokio::test]
async fn create_group_rejects_bad_data_and_changes_nothing() {
    let broker = Broker::start().await;
    let owner = broker.connect("owner").await;
    let _m1 = broker.connect("m1").await;
    let c = &owner.client;
    let msg = assert_code(
        c.create_group(group_data("", &[])).await,
        ErrorCode::RequestParameterError,
    );
    assert!(msg.contains("groupname"), "{msg}");
    assert_code(
        c.create_group(group_data(&"n".repeat(129), &[])).await,
        ErrorCode::RequestParameterError,
    );
    let msg = assert_code(
        c.create_group(group_data("g", &["m1", "ghost"])).await,
        ErrorCode::UserNotFound,
    );
    assert!(msg.contains("ghost"), "{msg}");
    let msg = assert_code(
        c.create_group(CreateGroupData {
            maxusers: Some(100_001),
            ..group_data("g", &[])
        })
        .await,
        ErrorCode::GroupMembersLimit,
    );
    assert!(msg.contains("100001"), "{msg}");
    assert_code(
        c.create_group(CreateGroupData {
            maxusers: Some(2),
            ..group_data("g", &[])
        })
        .await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        c.create_group(group_data("g", &["bad id!"])).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        c.create_group(CreateGroupData {
            ext: "x".repeat(8 * 1024 + 1),
            ..group_data("g", &[])
        })
        .await,
        ErrorCode::RequestParameterError,
    );
    // Nothing was created.
    assert!(c
        .get_joined_groups(1, 10, false, false)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn group_info_visibility_and_per_id_errors() {
    let broker = Broker::start().await;
    let [owner, out] = peers(&broker, &["owner", "out"]).await.try_into().unwrap();
    let admin = broker.connect_admin("root").await;
    let private = owner
        .client
        .create_group(group_data("private", &[]))
        .await
        .unwrap();
    let public = owner
        .client
        .create_group(CreateGroupData {
            public: true,
            ..group_data("public", &[])
        })
        .await
        .unwrap();
    let got = out
        .client
        .get_group_info(&[&private, &public, "999999", "abc"])
        .await
        .unwrap();
    // 602: the contract's "caller not a member" (was 603 before issue #12).
    assert_eq!(
        got[0].error.as_ref().unwrap().code,
        ErrorCode::GroupNotJoined
    );
    assert!(got[0].info.is_none());
    let pub_info = got[1].info.as_ref().unwrap();
    assert!(pub_info.public && pub_info.role.is_none());
    assert_eq!(
        got[2].error.as_ref().unwrap().code,
        ErrorCode::GroupNotExist
    );
    assert_eq!(
        got[3].error.as_ref().unwrap().code,
        ErrorCode::RequestParameterError
    );
    let got = admin.client.get_group_info(&[&private]).await.unwrap();
    assert_eq!(
        got[0].info.as_ref().unwrap().name,
        "private",
        "app admins read every group"
    );
    let too_many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_code(
        out.client.get_group_info(&refs).await,
        ErrorCode::RequestParameterError,
    );
}

#[tokio::test]
async fn modify_group_permissions_events_and_multi_device() {
    let broker = Broker::start().await;
    let [mut owner, mut adm, mut m1, mut out] = peers(&broker, &["owner", "adm", "m1", "out"])
        .await
        .try_into()
        .unwrap();
    let mut owner_phone = broker.connect_device("owner", "phone").await;
    let gid = owner
        .client
        .create_group(CreateGroupData {
            invite_need_confirm: false,
            ..group_data("g", &["adm", "m1"])
        })
        .await
        .unwrap();
    owner.client.set_group_admin(&gid, "adm").await.unwrap();
    adm.expect(Op::DirectJoined).await;
    adm.expect(Op::SetAdmin).await;
    m1.expect(Op::DirectJoined).await;
    owner_phone.expect(Op::Create).await;
    owner_phone.expect(Op::SetAdmin).await;

    assert_code(
        m1.client.modify_group(&gid, Some("x"), None, None).await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        out.client.modify_group(&gid, Some("x"), None, None).await,
        ErrorCode::GroupNotJoined,
    );
    assert_code(
        adm.client.modify_group(&gid, None, None, None).await,
        ErrorCode::RequestParameterError,
    );
    let msg = assert_code(
        adm.client
            .modify_group(&gid, Some(&"n".repeat(200)), None, None)
            .await,
        ErrorCode::RequestParameterError,
    );
    assert!(msg.contains("groupName"), "{msg}");
    assert_code(
        adm.client
            .modify_group("777777", Some("x"), None, None)
            .await,
        ErrorCode::GroupNotExist,
    );

    owner
        .client
        .modify_group(&gid, Some("renamed"), Some("new desc"), None)
        .await
        .unwrap();
    for p in [&mut adm, &mut m1, &mut owner_phone] {
        let ev = p.expect(Op::UpdateInfo).await;
        assert_eq!(ev.from, "owner");
        assert_eq!(ev.group_name, "renamed");
        assert_eq!(
            ev.detail,
            EventDetail::Updated {
                group_name: Some("renamed".into()),
                description: Some("new desc".into()),
                ext: None
            }
        );
    }
    owner.expect_quiet().await; // the acting device has the response
    out.expect_quiet().await;
    let info = out.client.get_group_info(&[&gid]).await.unwrap();
    assert!(info[0].info.is_none());
    let info = m1
        .client
        .get_group_info(&[&gid])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.description.as_str()),
        ("renamed", "new desc")
    );
}

#[tokio::test]
async fn ownership_transfer_and_destroy() {
    let broker = Broker::start().await;
    let [mut owner, mut m1, mut m2, mut out] = peers(&broker, &["owner", "m1", "m2", "out"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(group_data("g", &["m1", "m2"]))
        .await
        .unwrap();
    m1.expect(Op::DirectJoined).await;
    m2.expect(Op::DirectJoined).await;

    assert_code(
        m1.client.change_group_owner(&gid, "m2").await,
        ErrorCode::PermissionDenied,
    );
    assert_code(
        owner.client.change_group_owner(&gid, "out").await,
        ErrorCode::GroupNotJoined,
    );
    let msg = assert_code(
        owner.client.change_group_owner(&gid, "nosuch").await,
        ErrorCode::UserNotFound,
    );
    assert!(msg.contains("nosuch"), "{msg}");
    assert_code(
        owner.client.change_group_owner(&gid, "owner").await,
        ErrorCode::RequestParameterError,
    );
    owner.client.change_group_owner(&gid, "m1").await.unwrap();
    for p in [&mut m1, &mut m2] {
        let ev = p.expect(Op::ChangeOwner).await;
        assert_eq!(ev.detail, EventDetail::NewOwner { owner: "m1".into() });
    }
    out.expect_quiet().await;
    let info = owner
        .client
        .get_group_info(&[&gid])
        .await
        .unwrap()
        .remove(0)
        .info
        .unwrap();
    assert_eq!(info.owner, "m1");
    assert_eq!(info.role, Some(Role::Member));

    assert_code(
        owner.client.destroy_group(&gid).await,
        ErrorCode::PermissionDenied,
    );
    m1.client.destroy_group(&gid).await.unwrap();
    owner.expect(Op::Destroy).await;
    m2.expect(Op::Destroy).await;
    out.expect_quiet().await;
    assert_code(
        m1.client.destroy_group(&gid).await,
        ErrorCode::GroupNotExist,
    );
    assert_code(
        m2.client.list_group_members(&gid, 1, 10).await,
        ErrorCode::GroupNotExist,
    );
    let got = m2.client.get_group_info(&[&gid]).await.unwrap();
    assert_eq!(
        got[0].error.as_ref().unwrap().code,
        ErrorCode::GroupNotExist
    );
    assert!(m2
        .client
        .get_joined_groups(1, 10, false, false)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn admins_set_removed_listed_with_their_events() {
    let broker = Broker::start().await;
    let [owner, mut a1, mut a2, mut m1] = peers(&broker, &["owner", "a1", "a2", "m1"])
        .await
        .try_into()
        .unwrap();
    let gid = owner
        .client
        .create_group(group_data("g", &["a1", "a2", "m1"]))
        .await
        .unwrap();
    for p in [&mut a1, &mut a2, &mut m1] {
        p.expect(Op::DirectJoined).await;
    }
    assert_code(
        a1.client.set_group_admin(&gid, "a2").await,
        ErrorCode::PermissionDenied,
    );
    let msg = assert_code(
        owner.client.set_group_admin(&gid, "nosuch").await,
        ErrorCode::UserNotFound,
    );
    assert!(msg.contains("nosuch"), "{msg}");
    assert_code(
        owner.client.remove_group_admin(&gid, "nosuch").await,
        ErrorCode::UserNotFound,
    );
    owner.client.set_group_admin(&gid, "a1").await.unwrap();
    assert_eq!(a1.expect(Op::SetAdmin).await.users, vec!["a1".to_string()]);
    owner.client.set_group_admin(&gid, "a2").await.unwrap();
    a1.expect(Op::SetAdmin).await; // other admins are told
    a2.expect(Op::SetAdmin).await;
    m1.expect_quiet().await; // plain members are not
    assert_code(
        owner.client.set_group_admin(&gid, "a2").await,
        ErrorCode::RequestParameterError,
    );
    // A user who has logged in but is not a member: 602 (one who never has: 204, above).
    let _outsider = peers(&broker, &["outsider"]).await;
    assert_code(
        owner.client.set_group_admin(&gid, "outsider").await,
        ErrorCode::GroupNotJoined,
    );
    let mut admins = m1.client.get_group_admin(&gid).await.unwrap();
    admins.sort();
    assert_eq!(admins, vec!["a1".to_string(), "a2".to_string()]);

    assert_code(
        owner.client.remove_group_admin(&gid, "m1").await,
        ErrorCode::RequestParameterError,
    );
    owner.client.remove_group_admin(&gid, "a1").await.unwrap();
    a1.expect(Op::RemoveAdmin).await;
    a2.expect(Op::RemoveAdmin).await;
    m1.expect_quiet().await;
    assert_eq!(
        m1.client.get_group_admin(&gid).await.unwrap(),
        vec!["a2".to_string()]
    );

    let members = m1.client.list_group_members(&gid, 1, 2).await.unwrap();
    assert_eq!(members[0].user_id, "owner");
    assert_eq!(members[0].role, Role::Owner);
    assert_eq!(members.len(), 2);
    let rest = m1.client.list_group_members(&gid, 2, 2).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(m1
        .client
        .list_group_members(&gid, 3, 2)
        .await
        .unwrap()
        .is_empty());
    assert_code(
        m1.client.list_group_members(&gid, 0, 2).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        m1.client.list_group_members(&gid, 1, 1001).await,
        ErrorCode::RequestParameterError,
    );
    let out = broker.connect("out").await;
    assert_code(
        out.client.list_group_members(&gid, 1, 10).await,
        ErrorCode::GroupNotJoined,
    );
    assert_code(
        out.client.get_group_admin(&gid).await,
        ErrorCode::GroupNotJoined,
    );
}

#[tokio::test]
async fn joined_groups_both_paging_modes() {
    let broker = Broker::start().await;
    let [owner, m1] = peers(&broker, &["owner", "m1"]).await.try_into().unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            owner
                .client
                .create_group(group_data(&format!("g{i}"), &["m1"]))
                .await
                .unwrap(),
        );
    }
    let page1 = m1
        .client
        .get_joined_groups(1, 2, false, false)
        .await
        .unwrap();
    let page3 = m1
        .client
        .get_joined_groups(3, 2, false, false)
        .await
        .unwrap();
    assert_eq!(
        page1.iter().map(|g| g.group_id.clone()).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    assert_eq!(page3.len(), 1);
    assert!(page1[0].affiliations_count.is_none() && page1[0].role.is_none());
    let detailed = m1
        .client
        .get_joined_groups(0, 20, true, true)
        .await
        .unwrap();
    assert_eq!(detailed.len(), 5);
    assert_eq!(detailed[0].affiliations_count, Some(2));
    assert_eq!(detailed[0].role, Some(Role::Member));
    let owner_view = owner
        .client
        .get_joined_groups(0, 3, false, true)
        .await
        .unwrap();
    assert_eq!(owner_view.len(), 3);
    assert_eq!(owner_view[0].role, Some(Role::Owner));
    assert!(owner_view[0].affiliations_count.is_none());
    assert_code(
        m1.client.get_joined_groups(0, 10, false, false).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        m1.client.get_joined_groups(1, 501, false, false).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        m1.client.get_joined_groups(0, 21, true, false).await,
        ErrorCode::RequestParameterError,
    );
}

#[tokio::test]
async fn public_groups_cursor_paging_is_stable() {
    let broker = Broker::start().await;
    let [owner, reader] = peers(&broker, &["owner", "reader"])
        .await
        .try_into()
        .unwrap();
    let mut public = Vec::new();
    for i in 0..5 {
        public.push(
            owner
                .client
                .create_group(CreateGroupData {
                    public: true,
                    ..group_data(&format!("p{i}"), &[])
                })
                .await
                .unwrap(),
        );
        owner
            .client
            .create_group(group_data(&format!("private{i}"), &[]))
            .await
            .unwrap();
    }
    let (first, cursor) = reader.client.get_public_groups(2, None).await.unwrap();
    assert_eq!(
        first.iter().map(|g| g.group_id.clone()).collect::<Vec<_>>(),
        public[..2].to_vec()
    );
    let cursor = cursor.expect("more pages");
    // A group created meanwhile does not shift what the cursor points at.
    let late = owner
        .client
        .create_group(CreateGroupData {
            public: true,
            ..group_data("late", &[])
        })
        .await
        .unwrap();
    let (second, cursor) = reader
        .client
        .get_public_groups(2, Some(&cursor))
        .await
        .unwrap();
    assert_eq!(
        second
            .iter()
            .map(|g| g.group_id.clone())
            .collect::<Vec<_>>(),
        public[2..4].to_vec()
    );
    let (third, cursor) = reader
        .client
        .get_public_groups(10, cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(
        third.iter().map(|g| g.group_id.clone()).collect::<Vec<_>>(),
        vec![public[4].clone(), late]
    );
    assert_eq!(third[0].group_name, "p4");
    assert!(cursor.is_none(), "last page has no cursor");
    assert_code(
        reader.client.get_public_groups(0, None).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        reader.client.get_public_groups(101, None).await,
        ErrorCode::RequestParameterError,
    );
    assert_code(
        reader.client.get_public_groups(10, Some("garbage")).await,
        ErrorCode::RequestParameterError,
    );
}

#[tokio::test]
async fn an_app_admin_acts_as_owner_in_any_group() {
    let broker = Broker::start().await;
    let (gid, [mut owner, mut adm, mut m1, _m2, _out]) =
        convoke_tests::standard_group(&broker, false).await;
    let root = broker.connect_admin("root").await;
    // Not a member, yet may do what the owner may.
    root.client
        .modify_group(&gid, None, Some("set by the app admin"), None)
        .await
        .unwrap();
    assert_eq!(m1.expect(Op::UpdateInfo).await.from, "root");
    root.client
        .mute_group_member(&gid, &["adm"], -1)
        .await
        .unwrap();
    owner.expect(Op::UpdateInfo).await;
    assert_eq!(
        owner.expect(Op::MuteMember).await.users,
        vec!["adm".to_string()]
    );
    assert_eq!(root.client.get_group_mutelist(&gid).await.unwrap().len(), 1);
    assert_eq!(
        root.client
            .list_group_members(&gid, 1, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    root.client.remove_group_admin(&gid, "adm").await.unwrap();
    assert_code(
        root.client.remove_group_member(&gid, "owner").await,
        ErrorCode::PermissionDenied,
    );
    root.client.destroy_group(&gid).await.unwrap();
    m1.expect(Op::MuteMember).await;
    m1.expect(Op::Destroy).await;
    adm.expect(Op::UpdateInfo).await;
    adm.expect(Op::MuteMember).await;
    adm.expect(Op::RemoveAdmin).await;
    adm.expect(Op::Destroy).await;
}
