//! The rules without a runtime: permissions, what changes, who is told.

use super::*;
use crate::group::model::{Group, FOREVER};
use convoke_protocol::{
    CreateGroupData, ErrorCode, GroupEventOp as Op, MuteEntry, Push, Request, Response,
};
use std::collections::BTreeMap;

struct World {
    /// Every user of the tests has logged in and joined no group (others do not exist).
    facts: Facts,
    limits: Limits,
    now: i64,
}

impl World {
    fn new() -> Self {
        let users = ["owner", "adm", "m1", "m2", "out", "x", "y", "aa"];
        let facts = Facts::gather(users, |_| UserFacts {
            exists: true,
            joined: 0,
        });
        Self {
            facts,
            limits: Limits::default(),
            now: 1_000_000,
        }
    }
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            now: self.now,
            limits: &self.limits,
            facts: &self.facts,
        }
    }
}

fn who(user: &str) -> Caller {
    Caller {
        user: user.into(),
        app_admin: user == "aa",
        session_id: 7,
    }
}

fn gid() -> String {
    "42".into()
}

/// owner + admin "adm" + members m1, m2.
fn group(w: &World, data: CreateGroupData) -> Group {
    let (mut g, _) = create(42, &who("owner"), &data, &w.ctx()).expect("create");
    apply(
        &mut g,
        &who("owner"),
        &Request::SetGroupAdmin {
            group_id: gid(),
            username: "adm".into(),
        },
        &w.ctx(),
    )
    .expect("admin");
    g
}

fn data() -> CreateGroupData {
    CreateGroupData {
        groupname: "g".into(),
        members: vec!["adm".into(), "m1".into(), "m2".into()],
        ..CreateGroupData::default()
    }
}

fn ops(fx: &Effects) -> Vec<(Op, Vec<String>)> {
    fx.announce
        .iter()
        .map(|a| match &a.push {
            Push::Group(ev) | Push::MultiDevice(ev) => (ev.operation, a.to.clone()),
            other => panic!("unexpected push {other:?}"),
        })
        .collect()
}

fn code(r: Result<Effects, ApiError>) -> ErrorCode {
    r.expect_err("should fail").code
}

#[test]
fn create_validates_and_announces_direct_joins() {
    let w = World::new();
    let (g, fx) = create(42, &who("owner"), &data(), &w.ctx()).unwrap();
    assert_eq!(g.members.len(), 4);
    assert_eq!(g.role("owner"), Some(Role::Owner));
    let o = ops(&fx);
    assert!(o.contains(&(Op::DirectJoined, vec!["m1".to_string()])));
    assert!(o.contains(&(Op::Create, vec!["owner".to_string()])));

    let bad = |d: CreateGroupData| create(1, &who("owner"), &d, &w.ctx()).unwrap_err().code;
    assert_eq!(
        bad(CreateGroupData {
            groupname: String::new(),
            ..data()
        }),
        ErrorCode::RequestParameterError
    );
    assert_eq!(
        bad(CreateGroupData {
            maxusers: Some(100_001),
            ..data()
        }),
        ErrorCode::GroupMembersLimit
    );
    assert_eq!(
        bad(CreateGroupData {
            maxusers: Some(2),
            ..data()
        }),
        ErrorCode::RequestParameterError
    );
    assert_eq!(
        bad(CreateGroupData {
            maxusers: Some(3),
            ..data()
        }),
        ErrorCode::GroupMembersFull
    );
    assert_eq!(
        bad(CreateGroupData {
            members: vec!["ghost".into()],
            ..data()
        }),
        ErrorCode::UserNotFound
    );
    assert_eq!(
        bad(CreateGroupData {
            members: vec!["owner".into()],
            ..data()
        }),
        ErrorCode::RequestParameterError
    );
}

#[test]
fn failed_requests_change_nothing() {
    let w = World::new();
    let mut g = group(&w, data());
    let before = g.clone();
    let attempts = [
        (who("m1"), Request::DestroyGroup { group_id: gid() }),
        (
            who("m1"),
            Request::SetGroupAdmin {
                group_id: gid(),
                username: "m2".into(),
            },
        ),
        (
            who("adm"),
            Request::RemoveGroupMembers {
                group_id: gid(),
                users: vec!["m1".into(), "owner".into()],
            },
        ),
        (
            who("adm"),
            Request::MuteGroupMember {
                group_id: gid(),
                username: vec!["m1".into(), "out".into()],
                mute_duration: -1,
            },
        ),
        (
            who("adm"),
            Request::MuteGroupMember {
                group_id: gid(),
                username: vec!["m1".into()],
                mute_duration: 0,
            },
        ),
        (
            who("owner"),
            Request::InviteUsersToGroup {
                group_id: gid(),
                users: vec!["x".into(), "ghost".into()],
            },
        ),
        (who("out"), Request::LeaveGroup { group_id: gid() }),
        (who("owner"), Request::LeaveGroup { group_id: gid() }),
        (
            who("m1"),
            Request::SetGroupMemberAttributes {
                group_id: gid(),
                user_id: "m1".into(),
                member_attributes: [("bad key".to_string(), "v".to_string())].into(),
            },
        ),
    ];
    for (caller, req) in attempts {
        assert!(
            apply(&mut g, &caller, &req, &w.ctx()).is_err(),
            "{req:?} should fail"
        );
        assert_eq!(g, before, "{req:?} changed the group");
    }
}

#[test]
fn roles_gate_management() {
    let w = World::new();
    let mut g = group(&w, data());
    let modify = |g: &mut Group, c: &str| {
        apply(
            g,
            &who(c),
            &Request::ModifyGroup {
                group_id: gid(),
                group_name: Some("n".into()),
                description: None,
                ext: None,
            },
            &w.ctx(),
        )
    };
    assert_eq!(code(modify(&mut g, "m1")), ErrorCode::PermissionDenied);
    assert_eq!(code(modify(&mut g, "out")), ErrorCode::GroupNotJoined);
    assert!(modify(&mut g, "adm").is_ok());
    assert!(modify(&mut g, "aa").is_ok(), "app admin acts as owner");
    let destroy = Request::DestroyGroup { group_id: gid() };
    assert_eq!(
        code(apply(&mut g, &who("adm"), &destroy, &w.ctx())),
        ErrorCode::PermissionDenied
    );
    let fx = apply(&mut g, &who("aa"), &destroy, &w.ctx()).unwrap();
    assert!(fx.destroyed);
}

#[test]
fn admins_cannot_remove_admins_and_nobody_removes_the_owner() {
    let w = World::new();
    let mut g = group(&w, data());
    apply(
        &mut g,
        &who("owner"),
        &Request::SetGroupAdmin {
            group_id: gid(),
            username: "m2".into(),
        },
        &w.ctx(),
    )
    .unwrap();
    let rm = |u: &str| Request::RemoveGroupMember {
        group_id: gid(),
        username: u.into(),
    };
    assert_eq!(
        code(apply(&mut g, &who("adm"), &rm("m2"), &w.ctx())),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(apply(&mut g, &who("adm"), &rm("owner"), &w.ctx())),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(apply(&mut g, &who("aa"), &rm("owner"), &w.ctx())),
        ErrorCode::PermissionDenied
    );
    let fx = apply(&mut g, &who("adm"), &rm("m1"), &w.ctx()).unwrap();
    let o = ops(&fx);
    assert_eq!(
        o[0],
        (Op::RemoveMember, vec!["adm".to_string(), "m1".to_string()])
    );
    assert_eq!(o[1].0, Op::MemberAbsence);
    assert!(
        !o[1].1.contains(&"m1".to_string()),
        "the removed member gets removeMember, not memberAbsence"
    );
    assert!(fx.announce[0].keep_offline);
    assert!(g.role("m1").is_none());
}

#[test]
fn invite_with_and_without_confirmation() {
    let w = World::new();
    let mut g = group(&w, data());
    let inv = Request::InviteUsersToGroup {
        group_id: gid(),
        users: vec!["x".into()],
    };
    assert_eq!(
        code(apply(&mut g, &who("m1"), &inv, &w.ctx())),
        ErrorCode::PermissionDenied
    );
    let fx = apply(&mut g, &who("adm"), &inv, &w.ctx()).unwrap();
    assert_eq!(
        ops(&fx),
        vec![(Op::InviteToJoin, vec!["adm".to_string(), "x".to_string()])]
    );
    assert_eq!(
        code(apply(&mut g, &who("adm"), &inv, &w.ctx())),
        ErrorCode::GroupAlreadyJoined
    );
    // Someone else cannot accept x's invite.
    let acc = |u: &str| Request::AcceptGroupInvite {
        group_id: gid(),
        invitee: u.into(),
    };
    assert_eq!(
        code(apply(&mut g, &who("y"), &acc("x"), &w.ctx())),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(apply(&mut g, &who("y"), &acc("y"), &w.ctx())),
        ErrorCode::PermissionDenied
    );
    let fx = apply(&mut g, &who("x"), &acc("x"), &w.ctx()).unwrap();
    let o = ops(&fx);
    assert_eq!(
        o[0],
        (Op::AcceptInvite, vec!["adm".to_string(), "x".to_string()])
    );
    assert_eq!(o[1].0, Op::MemberPresence);
    assert!(o[1].1.contains(&"x".to_string()) && o[1].1.contains(&"m1".to_string()));

    let mut g = group(
        &w,
        CreateGroupData {
            invite_need_confirm: false,
            allowinvites: true,
            ..data()
        },
    );
    let fx = apply(&mut g, &who("m1"), &inv, &w.ctx()).unwrap();
    assert_eq!(
        fx.response,
        Response::Invited {
            pending: vec![],
            joined: vec!["x".into()]
        }
    );
    let o = ops(&fx);
    assert!(o.contains(&(Op::DirectJoined, vec!["m1".to_string(), "x".to_string()])));
    assert!(o
        .iter()
        .any(|(op, to)| *op == Op::MemberPresence && to.len() == 5));

    // In a public group members may not invite even with allowinvites on; the error says
    // why (the group is public), not that allowinvites is off.
    let mut g = group(
        &w,
        CreateGroupData {
            public: true,
            allowinvites: true,
            ..data()
        },
    );
    let e = apply(&mut g, &who("m1"), &inv, &w.ctx()).expect_err("public");
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    assert!(
        e.message.contains("public") && !e.message.contains("allowinvites"),
        "{e}"
    );
}

#[test]
fn join_public_with_and_without_approval() {
    let w = World::new();
    let mut g = group(
        &w,
        CreateGroupData {
            public: true,
            approval: true,
            ..data()
        },
    );
    let join = Request::JoinGroup {
        group_id: gid(),
        message: "hi".into(),
    };
    let fx = apply(&mut g, &who("x"), &join, &w.ctx()).unwrap();
    assert_eq!(fx.response, Response::JoinResult { joined: false });
    assert_eq!(
        ops(&fx),
        vec![(
            Op::RequestToJoin,
            vec!["adm".to_string(), "owner".to_string(), "x".to_string()]
        )]
    );
    assert_eq!(
        code(apply(&mut g, &who("x"), &join, &w.ctx())),
        ErrorCode::GroupAlreadyJoined
    );
    let rej = Request::RejectGroupJoinRequest {
        group_id: gid(),
        applicant: "x".into(),
        reason: "no".into(),
    };
    assert_eq!(
        code(apply(&mut g, &who("m1"), &rej, &w.ctx())),
        ErrorCode::PermissionDenied
    );
    let fx = apply(&mut g, &who("adm"), &rej, &w.ctx()).unwrap();
    assert_eq!(ops(&fx)[0].0, Op::JoinPublicGroupDeclined);
    assert_eq!(
        code(apply(&mut g, &who("adm"), &rej, &w.ctx())),
        ErrorCode::PermissionDenied,
        "no request left"
    );

    let mut g = group(
        &w,
        CreateGroupData {
            public: true,
            ..data()
        },
    );
    let fx = apply(&mut g, &who("x"), &join, &w.ctx()).unwrap();
    assert_eq!(fx.response, Response::JoinResult { joined: true });
    let mut private = group(&w, data());
    assert_eq!(
        code(apply(&mut private, &who("x"), &join, &w.ctx())),
        ErrorCode::PermissionDenied
    );
}

#[test]
fn mutes_expire_and_survive_rejoin() {
    let mut w = World::new();
    let mut g = group(
        &w,
        CreateGroupData {
            public: true,
            ..data()
        },
    );
    let mute = Request::MuteGroupMember {
        group_id: gid(),
        username: vec!["m1".into()],
        mute_duration: 500,
    };
    assert_eq!(
        code(apply(&mut g, &who("m2"), &mute, &w.ctx())),
        ErrorCode::PermissionDenied
    );
    let owner_mute = Request::MuteGroupMember {
        group_id: gid(),
        username: vec!["owner".into()],
        mute_duration: -1,
    };
    assert_eq!(
        code(apply(&mut g, &who("aa"), &owner_mute, &w.ctx())),
        ErrorCode::PermissionDenied
    );
    let fx = apply(&mut g, &who("adm"), &mute, &w.ctx()).unwrap();
    assert_eq!(
        fx.response,
        Response::Mutes {
            mutes: vec![MuteEntry {
                user: "m1".into(),
                expire: w.now + 500
            }]
        }
    );
    assert!(g.is_muted("m1", w.now));
    apply(
        &mut g,
        &who("m1"),
        &Request::LeaveGroup { group_id: gid() },
        &w.ctx(),
    )
    .unwrap();
    apply(
        &mut g,
        &who("m1"),
        &Request::JoinGroup {
            group_id: gid(),
            message: String::new(),
        },
        &w.ctx(),
    )
    .unwrap();
    assert!(g.is_muted("m1", w.now), "mute survives leave and rejoin");
    assert!(expire_mutes(&mut g, w.now + 499).is_none());
    w.now += 500;
    let fx = expire_mutes(&mut g, w.now).expect("expired");
    assert_eq!(ops(&fx)[0].0, Op::UnmuteMember);
    assert!(!g.is_muted("m1", w.now));
    let forever = Request::MuteGroupMember {
        group_id: gid(),
        username: vec!["m2".into()],
        mute_duration: -1,
    };
    apply(&mut g, &who("adm"), &forever, &w.ctx()).unwrap();
    assert_eq!(g.mutes.get("m2"), Some(&FOREVER));
    assert!(expire_mutes(&mut g, i64::MAX).is_none());
}

#[test]
fn attributes_rules_and_multi_device() {
    let w = World::new();
    let mut g = group(&w, data());
    let set = |u: &str, attrs: &[(&str, &str)]| Request::SetGroupMemberAttributes {
        group_id: gid(),
        user_id: u.into(),
        member_attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let fx = apply(&mut g, &who("m1"), &set("m1", &[("nick", "a")]), &w.ctx()).unwrap();
    let o = ops(&fx);
    assert_eq!(o[0].0, Op::MemberAttributesUpdate);
    assert!(!o[0].1.contains(&"m1".to_string()));
    assert!(matches!(fx.announce[1].push, Push::MultiDevice(_)));
    assert_eq!(fx.announce[1].to, vec!["m1".to_string()]);
    assert_eq!(
        code(apply(
            &mut g,
            &who("m1"),
            &set("m2", &[("nick", "b")]),
            &w.ctx()
        )),
        ErrorCode::PermissionDenied
    );
    assert!(apply(&mut g, &who("adm"), &set("m2", &[("nick", "b")]), &w.ctx()).is_ok());
    let long = "v".repeat(513);
    assert_eq!(
        code(apply(
            &mut g,
            &who("m1"),
            &set("m1", &[("k", &long)]),
            &w.ctx()
        )),
        ErrorCode::GroupMemberAttributesSetFailed
    );
    apply(&mut g, &who("m1"), &set("m1", &[("nick", "")]), &w.ctx()).unwrap();
    assert!(g.members["m1"].attributes.is_empty(), "empty value deletes");
}

#[test]
fn member_paging_puts_owner_first() {
    let w = World::new();
    let g = group(&w, data());
    let list = |n, s| {
        apply(
            &mut g.clone(),
            &who("m1"),
            &Request::ListGroupMembers {
                group_id: gid(),
                page_num: n,
                page_size: s,
            },
            &w.ctx(),
        )
    };
    let Response::Members { members } = list(1, 2).unwrap().response else {
        panic!()
    };
    assert_eq!(members[0].user_id, "owner");
    assert_eq!(members.len(), 2);
    let Response::Members { members: rest } = list(2, 2).unwrap().response else {
        panic!()
    };
    assert_eq!(rest.len(), 2);
    assert_eq!(code(list(0, 2)), ErrorCode::RequestParameterError);
    assert_eq!(code(list(1, 1001)), ErrorCode::RequestParameterError);
}

#[test]
fn create_members_as_invitations_invites_instead_of_adding() {
    let mut w = World::new();
    w.limits.members_as_invitations = true;
    let (g, fx) = create(42, &who("owner"), &data(), &w.ctx()).unwrap();
    assert_eq!(g.members.len(), 1, "only the owner");
    assert_eq!(g.invites.len(), 3);
    assert_eq!(g.invites["m1"].inviter, "owner");
    let o = ops(&fx);
    assert!(o.contains(&(Op::InviteToJoin, vec!["m1".to_string()])));
    assert!(!o.iter().any(|(op, _)| *op == Op::DirectJoined));
    assert!(fx.announce.iter().filter(|a| a.keep_offline).count() == 3);
    // The invitations are ordinary ones: accepted like any other.
    let mut g = g;
    apply(
        &mut g,
        &who("m1"),
        &Request::AcceptGroupInvite {
            group_id: gid(),
            invitee: "m1".into(),
        },
        &w.ctx(),
    )
    .unwrap();
    assert_eq!(g.role("m1"), Some(Role::Member));
}

#[test]
fn create_counts_members_before_looking_at_them() {
    let w = World::new();
    let d = CreateGroupData {
        members: (0..300).map(|i| format!("bad id {i}")).collect(),
        ..data()
    };
    assert_eq!(
        create(1, &who("owner"), &d, &w.ctx()).unwrap_err().code,
        ErrorCode::GroupMembersFull
    );
}

#[test]
fn members_attributes_keys_are_bounded_and_filtered_by_set() {
    let w = World::new();
    let mut g = group(&w, data());
    let attrs = [
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "2".to_string()),
    ];
    apply(
        &mut g,
        &who("m1"),
        &Request::SetGroupMemberAttributes {
            group_id: gid(),
            user_id: "m1".into(),
            member_attributes: attrs.into(),
        },
        &w.ctx(),
    )
    .unwrap();
    let get = |keys: Vec<String>| {
        apply(
            &mut g.clone(),
            &who("m2"),
            &Request::GetGroupMembersAttributes {
                group_id: gid(),
                user_ids: vec!["m1".into()],
                keys,
            },
            &w.ctx(),
        )
    };
    let many = (0..=convoke_protocol::limits::MAX_ATTRIBUTE_KEYS)
        .map(|i| format!("k{i}"))
        .collect();
    assert_eq!(code(get(many)), ErrorCode::RequestParameterError);
    let fx = get(vec!["b".into(), "zz".into(), "b".into()]).unwrap();
    let Response::MembersAttributes { members } = fx.response else {
        panic!("{:?}", fx.response)
    };
    assert_eq!(members["m1"], [("b".to_string(), "2".to_string())].into());
}

#[test]
fn lists_come_a_page_at_a_time_to_admins_only() {
    let w = World::new();
    let mut g = group(&w, data());
    for u in ["m1", "m2"] {
        g.block.insert(format!("{u}-old"));
    }
    g.block.insert("x".into());
    let page = |g: &mut Group, who_: &str, limit: u32, cursor: Option<&str>| {
        apply(
            g,
            &who(who_),
            &Request::GetGroupBlocklistPage {
                group_id: gid(),
                limit,
                cursor: cursor.map(Into::into),
            },
            &w.ctx(),
        )
    };
    let Response::UsersPage { users, cursor } = page(&mut g, "adm", 2, None).unwrap().response
    else {
        panic!()
    };
    assert_eq!(users, ["m1-old", "m2-old"]);
    assert_eq!(cursor.as_deref(), Some("m2-old"));
    let Response::UsersPage { users, cursor } = page(&mut g, "owner", 2, cursor.as_deref())
        .unwrap()
        .response
    else {
        panic!()
    };
    assert_eq!((users, cursor), (vec!["x".to_string()], None));
    assert_eq!(
        code(page(&mut g, "m1", 2, None)),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(page(&mut g, "owner", 1001, None)),
        ErrorCode::RequestParameterError
    );
    assert_eq!(
        code(page(&mut g, "owner", 1, Some("not a user id"))),
        ErrorCode::RequestParameterError
    );
}

/// The rules read the facts the ingress gathers for a request (`facts::named_by_request`,
/// `named_by_create`), and only those: with exactly the named users gathered, requests that
/// check users outside the group succeed; with each named user at the group quota they fail
/// 50; with none gathered, a named user does not exist (204).
#[test]
fn rules_read_exactly_the_facts_the_ingress_gathers() {
    let w = World::new();
    let full = w.limits.max_groups_per_user as u64;
    let run = |g: &mut Group, caller: &Caller, req: &Request, f: Option<u64>| {
        let facts = match f {
            Some(joined) => Facts::gather(facts::named_by_request(caller, req), |_| UserFacts {
                exists: true,
                joined,
            }),
            None => Facts::default(),
        };
        let ctx = Ctx {
            now: w.now,
            limits: &w.limits,
            facts: &facts,
        };
        apply(g, caller, req, &ctx)
    };
    let owner = who("owner");

    let direct = group(
        &w,
        CreateGroupData {
            invite_need_confirm: false,
            ..data()
        },
    );
    let invite = Request::InviteUsersToGroup {
        group_id: gid(),
        users: vec!["x".into(), "y".into()],
    };
    assert_eq!(
        code(run(&mut direct.clone(), &owner, &invite, Some(full))),
        ErrorCode::MaxLimit
    );
    assert_eq!(
        code(run(&mut direct.clone(), &owner, &invite, None)),
        ErrorCode::UserNotFound
    );
    assert!(run(&mut direct.clone(), &owner, &invite, Some(0)).is_ok());

    let public = group(
        &w,
        CreateGroupData {
            public: true,
            ..data()
        },
    );
    let join = Request::JoinGroup {
        group_id: gid(),
        message: String::new(),
    };
    let out = who("out");
    assert_eq!(
        code(run(&mut public.clone(), &out, &join, Some(full))),
        ErrorCode::MaxLimit
    );
    assert!(run(&mut public.clone(), &out, &join, Some(0)).is_ok());

    let mut confirm = group(&w, data());
    let one = Request::InviteUsersToGroup {
        group_id: gid(),
        users: vec!["x".into()],
    };
    run(&mut confirm, &owner, &one, Some(0)).expect("invited");
    let accept = Request::AcceptGroupInvite {
        group_id: gid(),
        invitee: "x".into(),
    };
    assert_eq!(
        code(run(&mut confirm.clone(), &who("x"), &accept, Some(full))),
        ErrorCode::MaxLimit
    );
    assert!(run(&mut confirm.clone(), &who("x"), &accept, Some(0)).is_ok());

    let mut g = group(&w, data());
    let admin = Request::SetGroupAdmin {
        group_id: gid(),
        username: "ghost".into(),
    };
    assert_eq!(
        code(run(&mut g.clone(), &owner, &admin, None)),
        ErrorCode::UserNotFound
    );
    let transfer = Request::ChangeGroupOwner {
        group_id: gid(),
        new_owner: "m1".into(),
    };
    assert!(run(&mut g, &owner, &transfer, Some(0)).is_ok());

    let create_with = |joined: u64| {
        let facts = Facts::gather(facts::named_by_create(&owner, &data()), |_| UserFacts {
            exists: true,
            joined,
        });
        let ctx = Ctx {
            now: w.now,
            limits: &w.limits,
            facts: &facts,
        };
        create(42, &owner, &data(), &ctx).map(|_| ())
    };
    assert_eq!(create_with(full).unwrap_err().code, ErrorCode::MaxLimit);
    assert!(create_with(0).is_ok());
}

/// Facts with a node's part missing (a cluster node Down or not answering): a user not
/// found elsewhere is not declared unknown (500 naming the node, not 204), a count below
/// the limit is not trusted (500, not a pass), while what the facts found still decides
/// (a user found exists; a count already at the limit is 50). A gateway holds no groups:
/// its absence leaves the counts complete.
#[test]
fn incomplete_facts_answer_500_where_the_answer_depends_on_the_missing_part() {
    let w = World::new();
    let full = w.limits.max_groups_per_user as u64;
    let owner = who("owner");
    let run = |req: &Request, caller: &Caller, user: UserFacts, missing: &[(&str, bool)]| {
        let mut facts = Facts::gather(facts::named_by_request(caller, req), |_| user);
        for (node, core) in missing {
            facts.missed(node, *core);
        }
        let ctx = Ctx {
            now: w.now,
            limits: &w.limits,
            facts: &facts,
        };
        let mut g = group(
            &w,
            CreateGroupData {
                invite_need_confirm: false,
                public: true,
                ..data()
            },
        );
        apply(&mut g, caller, req, &ctx)
    };
    let unknown = UserFacts {
        exists: false,
        joined: 0,
    };
    let known = |joined| UserFacts {
        exists: true,
        joined,
    };
    let invite = Request::InviteUsersToGroup {
        group_id: gid(),
        users: vec!["x".into()],
    };
    let admin = Request::SetGroupAdmin {
        group_id: gid(),
        username: "ghost".into(),
    };
    for req in [&invite, &admin] {
        let e = run(req, &owner, unknown, &[("n3", true)]).unwrap_err();
        assert_eq!(e.code, ErrorCode::ServerBusy, "{req:?}: {e:?}");
        assert!(
            e.message.contains("n3") && e.message.contains("retry"),
            "{}",
            e.message
        );
        let e = run(req, &owner, unknown, &[("g4", false)]).unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::ServerBusy,
            "a gateway may hold a first login"
        );
        assert_eq!(
            code(run(req, &owner, unknown, &[])),
            ErrorCode::UserNotFound,
            "complete facts: a definite 204"
        );
    }
    // Found: the count of the nodes that answered decides (the limit is soft while a node
    // is unreachable: refusing would stop groups owned elsewhere too).
    assert!(run(&invite, &owner, known(0), &[("n3", true)]).is_ok());
    assert_eq!(
        code(run(&invite, &owner, known(full), &[("n3", true)])),
        ErrorCode::MaxLimit,
        "already at the limit without the missing part"
    );
    assert!(run(&invite, &owner, known(0), &[("g4", false)]).is_ok());
    assert!(run(&invite, &owner, known(0), &[]).is_ok());
    let join = Request::JoinGroup {
        group_id: gid(),
        message: String::new(),
    };
    assert!(run(&join, &who("out"), known(0), &[("n2", true)]).is_ok());
}
