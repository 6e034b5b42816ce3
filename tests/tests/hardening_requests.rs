//! Issue #12, items 5 and 6: every list in a request is bounded and refused before any work
//! per entry; the mute, block and allow lists come a page at a time; error messages echo
//! at most a short prefix of a bad value; and the option that turns createGroup's members
//! into invitations.

use convoke_protocol::{limits, ErrorCode, GroupEventOp as Op, Request, Role};
use convoke_tests::{assert_code, group_data, peers, standard_group, Broker};

/// keys of getGroupMembersAttributes had no bound (and each was scanned once per attribute):
/// over the bound it is refused with -3 naming `keys`; at the bound it is served.
#[tokio::test]
async fn members_attributes_keys_are_bounded() {
    let broker = Broker::start().await;
    let (gid, [owner, _adm, m1, _m2, _out]) = standard_group(&broker, false).await;
    m1.client
        .set_group_member_attributes(&gid, "m1", [("nick".to_string(), "M".to_string())].into())
        .await
        .unwrap();
    let many: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let msg = assert_code(
        owner
            .client
            .get_group_members_attributes(&gid, &["m1"], &refs)
            .await,
        ErrorCode::RequestParameterError,
    );
    assert!(msg.contains("keys") && msg.contains("10000"), "{msg}");
    let mut at_bound: Vec<&str> = refs[..limits::MAX_ATTRIBUTE_KEYS - 1].to_vec();
    at_bound.push("nick");
    let got = owner
        .client
        .get_group_members_attributes(&gid, &["m1"], &at_bound)
        .await
        .unwrap();
    assert_eq!(got["m1"].get("nick").map(String::as_str), Some("M"));
    assert_eq!(got["m1"].len(), 1);
}

/// createGroup checks the size of members against maxusers before looking at any member:
/// 300 malformed ids are refused as too many (606), not as the first malformed one (-3).
#[tokio::test]
async fn create_group_members_are_counted_before_they_are_checked() {
    let broker = Broker::start().await;
    let owner = broker.connect("owner").await;
    let members: Vec<String> = (0..300).map(|i| format!("bad id {i}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let msg = assert_code(
        owner.client.create_group(group_data("g", &refs)).await,
        ErrorCode::GroupMembersFull,
    );
    assert!(msg.contains("300") && msg.contains("maxusers 200"), "{msg}");
    let joined = owner.client.get_joined_groups(1, 10, false, false).await;
    assert!(joined.unwrap().is_empty(), "nothing was created");
}

/// The mute, block and allow lists, a page at a time by user id; the unpaged calls still
/// answer; a bad cursor or limit is refused naming it.
#[tokio::test]
async fn mute_block_and_allow_lists_are_paged() {
    let broker = Broker::start().await;
    let names = ["u1", "u2", "u3", "u4", "u5"];
    let _p = peers(&broker, &names).await;
    let (gid, [owner, adm, _m1, _m2, _out]) = standard_group(&broker, false).await;
    let c = &owner.client;
    c.invite_users_to_group(&gid, &names).await.unwrap();
    for p in &_p {
        p.client.accept_group_invite(&gid, p.user()).await.unwrap();
    }
    c.mute_group_member(&gid, &names, -1).await.unwrap();
    c.add_users_to_group_allowlist(&gid, &names).await.unwrap();
    // The mute list: 2 + 2 + 1.
    let (p1, cur) = c.get_group_mutelist_page(&gid, 2, None).await.unwrap();
    assert_eq!(
        p1.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
        ["u1", "u2"]
    );
    let (p2, cur) = c
        .get_group_mutelist_page(&gid, 2, cur.as_deref())
        .await
        .unwrap();
    assert_eq!(
        p2.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
        ["u3", "u4"]
    );
    let (p3, cur) = c
        .get_group_mutelist_page(&gid, 2, cur.as_deref())
        .await
        .unwrap();
    assert_eq!(p3.len(), 1);
    assert_eq!(cur, None, "the last page has no cursor");
    assert_eq!(c.get_group_mutelist(&gid).await.unwrap().len(), 5);
    // The allowlist, and admins may read it too.
    let (a1, cur) = adm
        .client
        .get_group_allowlist_page(&gid, 3, None)
        .await
        .unwrap();
    assert_eq!(a1, ["u1", "u2", "u3"]);
    let (a2, cur) = c
        .get_group_allowlist_page(&gid, 3, cur.as_deref())
        .await
        .unwrap();
    assert_eq!(
        (a2.as_slice(), cur),
        (&["u4".to_string(), "u5".to_string()][..], None)
    );
    // The blocklist.
    c.block_group_members(&gid, &names).await.unwrap();
    let (b1, cur) = c.get_group_blocklist_page(&gid, 4, None).await.unwrap();
    assert_eq!(b1, ["u1", "u2", "u3", "u4"]);
    let (b2, cur) = c
        .get_group_blocklist_page(&gid, 4, cur.as_deref())
        .await
        .unwrap();
    assert_eq!((b2, cur), (vec!["u5".to_string()], None));
    assert_eq!(c.get_group_blocklist(&gid).await.unwrap().len(), 5);
    // Bad pages.
    let msg = assert_code(
        c.get_group_blocklist_page(&gid, 0, None).await,
        ErrorCode::RequestParameterError,
    );
    assert!(msg.contains("limit 0"), "{msg}");
    let long = "x y".repeat(10_000);
    let msg = assert_code(
        c.get_group_mutelist_page(&gid, 10, Some(&long)).await,
        ErrorCode::RequestParameterError,
    );
    assert!(msg.contains("cursor") && msg.len() < 200, "{msg}");
    // Members may not page the lists.
    assert_code(
        _m1.client.get_group_blocklist_page(&gid, 10, None).await,
        ErrorCode::PermissionDenied,
    );
}

/// A refused value is echoed as a short prefix, never whole.
#[tokio::test]
async fn error_messages_echo_a_short_prefix_of_the_bad_value() {
    let broker = Broker::start().await;
    let (gid, [owner, ..]) = standard_group(&broker, false).await;
    let huge = "9z".repeat(50_000);
    let cases = [
        Request::GetGroupMsgReadUser {
            group_id: gid.clone(),
            msg_id: huge.clone(),
            limit: 10,
            cursor: None,
        },
        Request::GetGroupInfo {
            group_ids: vec![huge.clone()],
        },
        Request::SetGroupAdmin {
            group_id: gid.clone(),
            username: huge.clone(),
        },
        Request::DestroyGroup {
            group_id: huge.clone(),
        },
        Request::GetPublicGroups {
            limit: 10,
            cursor: Some(huge.clone()),
        },
        Request::GetGroupMembersAttributes {
            group_id: gid.clone(),
            user_ids: vec!["m1".into()],
            keys: vec![huge.clone()],
        },
    ];
    for req in cases {
        let method = req.method();
        let msg = match owner.client.request(req).await {
            Err(convoke_client::ClientError::Api(e)) => e.message,
            Ok(convoke_protocol::Response::GroupInfos { groups }) => {
                groups[0].error.clone().expect("an error").message
            }
            other => panic!("{method}: {other:?}"),
        };
        assert!(msg.contains("9z9z"), "{method}: the value is named: {msg}");
        assert!(msg.len() < 200, "{method}: {} bytes: {msg:.300}", msg.len());
    } // A valid id padded with zeros is named as parsed.
    let padded = format!("{}7", "0".repeat(100_000));
    let msg = assert_code(
        owner
            .client
            .get_group_msg_read_user(&gid, &padded, 10, None)
            .await,
        ErrorCode::RequestParameterError,
    );
    assert!(msg.contains("\"7\"") && msg.len() < 200, "{msg:.300}");
}

/// With groups.create_members_as_invitations, createGroup's members are invited: each is
/// told inviteToJoin (kept while offline), is not a member until they accept, may reject.
#[tokio::test]
async fn create_group_members_can_be_invitations() {
    let broker = Broker::start_with(&[("groups.create_members_as_invitations", "true")]).await;
    let [owner, mut x, mut y]: [_; 3] = peers(&broker, &["owner", "x", "y"])
        .await
        .try_into()
        .unwrap_or_else(|_| unreachable!());
    drop(broker.connect("z").await);
    let gid = owner
        .client
        .create_group(group_data("g", &["x", "y", "z"]))
        .await
        .unwrap();
    let ev = x.expect(Op::InviteToJoin).await;
    assert_eq!(
        (ev.group_id.as_str(), ev.from.as_str()),
        (gid.as_str(), "owner")
    );
    y.expect(Op::InviteToJoin).await;
    let members = owner.client.list_group_members(&gid, 1, 10).await.unwrap();
    assert_eq!(members.len(), 1, "only the owner: {members:?}");
    assert_eq!(members[0].role, Role::Owner);
    x.client.accept_group_invite(&gid, "x").await.unwrap();
    y.client.reject_group_invite(&gid, "y").await.unwrap();
    let members = owner.client.list_group_members(&gid, 1, 10).await.unwrap();
    let ids: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(ids, ["owner", "x"]);
    // z was offline: the invitation waits for them.
    let mut z = broker.connect("z").await;
    assert_eq!(z.expect(Op::InviteToJoin).await.group_id, gid);
}
