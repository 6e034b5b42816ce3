//! The authorization matrix (issue #12 item 14): every method of the contract's method table
//! (spec/group-api.md, "Methods", column "perm") by every role, over the wire through the
//! public client. Allowed cells succeed; refused cells get the contract's code (602 when the
//! caller is not a member, 603 when the role is too low, unless the row says otherwise) and
//! change nothing a member or the owner can read.
//!
//! One broker; every cell gets its own group, so cells cannot disturb each other and run
//! concurrently. Each group: owner "o"; admins "a", "a2", "ta" (muted forever by the owner)
//! and "tb" (blocked by the owner while an admin); members "m" and "t"; "b" blocked. Callers:
//! owner "o", admin "a", member "m", outsider "x", blocked "b", app admin "root" (a member
//! of nothing).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::{Client, ClientError, DownloadDest, UploadSource};
use convoke_protocol::{CreateGroupData, ErrorCode, GroupInfoEntry, Request, Response};
use convoke_tests::Broker;
use futures::future::join_all;
use std::collections::BTreeMap;

/// The roles of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum R {
    Owner,
    Admin,
    Member,
    Outsider,
    Blocked,
    AppAdmin,
}

const ROLES: [R; 6] = [
    R::Owner,
    R::Admin,
    R::Member,
    R::Outsider,
    R::Blocked,
    R::AppAdmin,
];

impl R {
    fn user(self) -> &'static str {
        match self {
            R::Owner => "o",
            R::Admin => "a",
            R::Member => "m",
            R::Outsider => "x",
            R::Blocked => "b",
            R::AppAdmin => "root",
        }
    }
}

use R::{Admin as A, AppAdmin as AA, Blocked as B, Member as M, Outsider as X, Owner as O};

/// What the group looks like before the cell's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Private,
    Public,
    /// Public, joining needs approval, and "y" has asked to join.
    PublicRequest,
}

/// Extra state a cell's request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prep {
    None,
    /// The owner invites the caller (refused for members and the blocked user).
    InviteCaller,
    /// "t" sent a message that asks for read receipts.
    MessageByT,
    /// "t" uploaded a file.
    FileByT,
    /// The owner muted "t".
    MuteT,
    /// The owner blocked "t".
    BlockT,
    /// The owner put "t" on the allowlist.
    AllowT,
}

/// What the cell does.
#[derive(Debug, Clone, Copy)]
enum Act {
    Req(fn(&Fix) -> Request),
    Upload,
    Download,
}

/// Ids a request needs.
#[derive(Debug, Clone, Default)]
struct Fix {
    gid: String,
    caller: String,
    msg_id: String,
    file_id: String,
}

/// One row of the table: a method, who may call it, and the code each refused role gets
/// where it is not the default (602 for outsider and blocked user, 603 otherwise).
struct Row {
    name: &'static str,
    allowed: &'static [R],
    codes: &'static [(R, ErrorCode)],
    kind: Kind,
    prep: Prep,
    act: Act,
}

fn gid(f: &Fix) -> String {
    f.gid.clone()
}

fn s(v: &str) -> String {
    v.to_string()
}

const ALL: &[R] = &[O, A, M, X, B, AA];
const MEMBERS: &[R] = &[O, A, M, AA];
const ADMINS: &[R] = &[O, A, AA];
const OWNER: &[R] = &[O, AA];

fn table() -> Vec<Row> {
    use ErrorCode::{GroupAlreadyJoined as E601, PermissionDenied as E603};
    let row = |name, allowed, kind, prep, req| Row {
        name,
        allowed,
        codes: &[],
        kind,
        prep,
        act: Act::Req(req),
    };
    let p = Kind::Private;
    let n = Prep::None;
    vec![
        row("createGroup", ALL, p, n, |_| Request::CreateGroup {
            data: CreateGroupData {
                groupname: s("new"),
                ..Default::default()
            },
        }),
        row("destroyGroup", OWNER, p, n, |f| Request::DestroyGroup {
            group_id: gid(f),
        }),
        // Outsider and blocked user: 602, the contract's "caller not a member".
        row("getGroupInfo (private)", MEMBERS, p, n, |f| {
            Request::GetGroupInfo {
                group_ids: vec![gid(f)],
            }
        }),
        row("getGroupInfo (public)", ALL, Kind::Public, n, |f| {
            Request::GetGroupInfo {
                group_ids: vec![gid(f)],
            }
        }),
        row("modifyGroup", ADMINS, p, n, |f| Request::ModifyGroup {
            group_id: gid(f),
            group_name: Some(s("renamed")),
            description: None,
            ext: None,
        }),
        row("changeGroupOwner", OWNER, p, n, |f| {
            Request::ChangeGroupOwner {
                group_id: gid(f),
                new_owner: s("t"),
            }
        }),
        row("listGroupMembers", MEMBERS, p, n, |f| {
            Request::ListGroupMembers {
                group_id: gid(f),
                page_num: 1,
                page_size: 100,
            }
        }),
        row("getGroupAdmin", MEMBERS, p, n, |f| Request::GetGroupAdmin {
            group_id: gid(f),
        }),
        row("setGroupAdmin", OWNER, p, n, |f| Request::SetGroupAdmin {
            group_id: gid(f),
            username: s("t"),
        }),
        row("removeGroupAdmin", OWNER, p, n, |f| {
            Request::RemoveGroupAdmin {
                group_id: gid(f),
                username: s("ta"),
            }
        }),
        row("inviteUsersToGroup", ADMINS, p, n, |f| {
            Request::InviteUsersToGroup {
                group_id: gid(f),
                users: vec![s("y")],
            }
        }),
        Row {
            codes: &[(O, E601), (A, E601), (M, E601), (B, E603)],
            ..row(
                "acceptGroupInvite (self)",
                &[X, AA],
                p,
                Prep::InviteCaller,
                |f| Request::AcceptGroupInvite {
                    group_id: gid(f),
                    invitee: f.caller.clone(),
                },
            )
        },
        Row {
            codes: &[(O, E603), (A, E603), (M, E603), (B, E603)],
            ..row(
                "rejectGroupInvite (self)",
                &[X, AA],
                p,
                Prep::InviteCaller,
                |f| Request::RejectGroupInvite {
                    group_id: gid(f),
                    invitee: f.caller.clone(),
                },
            )
        },
        Row {
            codes: &[(O, E601), (A, E601), (M, E601), (B, E603)],
            ..row("joinGroup (public)", &[X, AA], Kind::Public, n, |f| {
                Request::JoinGroup {
                    group_id: gid(f),
                    message: s("hi"),
                }
            })
        },
        Row {
            codes: &[(X, E603), (B, E603), (AA, E603)],
            ..row("joinGroup (private)", &[], p, n, |f| Request::JoinGroup {
                group_id: gid(f),
                message: s("hi"),
            })
        },
        row(
            "acceptGroupJoinRequest",
            ADMINS,
            Kind::PublicRequest,
            n,
            |f| Request::AcceptGroupJoinRequest {
                group_id: gid(f),
                applicant: s("y"),
            },
        ),
        row(
            "rejectGroupJoinRequest",
            ADMINS,
            Kind::PublicRequest,
            n,
            |f| Request::RejectGroupJoinRequest {
                group_id: gid(f),
                applicant: s("y"),
                reason: s("no"),
            },
        ),
        Row {
            codes: &[(AA, ErrorCode::GroupNotJoined)],
            ..row("leaveGroup", &[A, M], p, n, |f| Request::LeaveGroup {
                group_id: gid(f),
            })
        },
        row("removeGroupMember", ADMINS, p, n, |f| {
            Request::RemoveGroupMember {
                group_id: gid(f),
                username: s("t"),
            }
        }),
        row("removeGroupMembers", ADMINS, p, n, |f| {
            Request::RemoveGroupMembers {
                group_id: gid(f),
                users: vec![s("t")],
            }
        }),
        row("removeGroupMember (an admin)", OWNER, p, n, |f| {
            Request::RemoveGroupMember {
                group_id: gid(f),
                username: s("ta"),
            }
        }),
        row("muteGroupMember", ADMINS, p, n, |f| {
            Request::MuteGroupMember {
                group_id: gid(f),
                username: vec![s("t")],
                mute_duration: -1,
            }
        }),
        row("muteGroupMember (an admin)", OWNER, p, n, |f| {
            Request::MuteGroupMember {
                group_id: gid(f),
                username: vec![s("a2")],
                mute_duration: -1,
            }
        }),
        row("unmuteGroupMember", ADMINS, p, Prep::MuteT, |f| {
            Request::UnmuteGroupMember {
                group_id: gid(f),
                username: vec![s("t")],
            }
        }),
        // Admins may not mute admins, so they may not lift the owner's mute of one.
        row(
            "unmuteGroupMember (an admin the owner muted)",
            OWNER,
            p,
            n,
            |f| Request::UnmuteGroupMember {
                group_id: gid(f),
                username: vec![s("ta")],
            },
        ),
        row("getGroupMutelist", ADMINS, p, n, |f| {
            Request::GetGroupMutelist { group_id: gid(f) }
        }),
        row("isInGroupMutelist", MEMBERS, p, n, |f| {
            Request::IsInGroupMutelist { group_id: gid(f) }
        }),
        row("disableSendGroupMsg", ADMINS, p, n, |f| {
            Request::DisableSendGroupMsg { group_id: gid(f) }
        }),
        row("enableSendGroupMsg", ADMINS, p, n, |f| {
            Request::EnableSendGroupMsg { group_id: gid(f) }
        }),
        row("blockGroupMember", ADMINS, p, n, |f| {
            Request::BlockGroupMember {
                group_id: gid(f),
                username: s("t"),
            }
        }),
        row("blockGroupMembers", ADMINS, p, n, |f| {
            Request::BlockGroupMembers {
                group_id: gid(f),
                usernames: vec![s("t")],
            }
        }),
        row("blockGroupMember (an admin)", OWNER, p, n, |f| {
            Request::BlockGroupMember {
                group_id: gid(f),
                username: s("a2"),
            }
        }),
        row("unblockGroupMember", ADMINS, p, Prep::BlockT, |f| {
            Request::UnblockGroupMember {
                group_id: gid(f),
                username: s("t"),
            }
        }),
        row("unblockGroupMembers", ADMINS, p, Prep::BlockT, |f| {
            Request::UnblockGroupMembers {
                group_id: gid(f),
                usernames: vec![s("t")],
            }
        }),
        row("getGroupBlocklist", ADMINS, p, n, |f| {
            Request::GetGroupBlocklist { group_id: gid(f) }
        }),
        row("addUsersToGroupAllowlist", ADMINS, p, n, |f| {
            Request::AddUsersToGroupAllowlist {
                group_id: gid(f),
                users: vec![s("t")],
            }
        }),
        row("removeGroupAllowlistMember", ADMINS, p, Prep::AllowT, |f| {
            Request::RemoveGroupAllowlistMember {
                group_id: gid(f),
                user_name: s("t"),
            }
        }),
        row("getGroupMutelistPage", ADMINS, p, n, |f| {
            Request::GetGroupMutelistPage {
                group_id: gid(f),
                limit: 10,
                cursor: None,
            }
        }),
        row("getGroupBlocklistPage", ADMINS, p, n, |f| {
            Request::GetGroupBlocklistPage {
                group_id: gid(f),
                limit: 10,
                cursor: None,
            }
        }),
        row("getGroupAllowlistPage", ADMINS, p, n, |f| {
            Request::GetGroupAllowlistPage {
                group_id: gid(f),
                limit: 10,
                cursor: None,
            }
        }),
        row("getGroupAllowlist", ADMINS, p, n, |f| {
            Request::GetGroupAllowlist { group_id: gid(f) }
        }),
        row("isInGroupAllowlist (self)", ALL, p, n, |f| {
            Request::IsInGroupAllowlist {
                group_id: gid(f),
                user_name: f.caller.clone(),
            }
        }),
        Row {
            codes: &[(X, E603), (B, E603)],
            ..row("isInGroupAllowlist (another user)", &[AA], p, n, |f| {
                Request::IsInGroupAllowlist {
                    group_id: gid(f),
                    user_name: s("t"),
                }
            })
        },
        row("fetchGroupAnnouncement (private)", MEMBERS, p, n, |f| {
            Request::FetchGroupAnnouncement { group_id: gid(f) }
        }),
        row(
            "fetchGroupAnnouncement (public)",
            ALL,
            Kind::Public,
            n,
            |f| Request::FetchGroupAnnouncement { group_id: gid(f) },
        ),
        row("updateGroupAnnouncement", ADMINS, p, n, |f| {
            Request::UpdateGroupAnnouncement {
                group_id: gid(f),
                announcement: s("news"),
            }
        }),
        Row {
            name: "uploadGroupSharedFile",
            allowed: MEMBERS,
            codes: &[],
            kind: p,
            prep: n,
            act: Act::Upload,
        },
        Row {
            name: "downloadGroupSharedFile",
            allowed: MEMBERS,
            codes: &[],
            kind: p,
            prep: Prep::FileByT,
            act: Act::Download,
        },
        row(
            "deleteGroupSharedFile (another's file)",
            ADMINS,
            p,
            Prep::FileByT,
            |f| Request::DeleteGroupSharedFile {
                group_id: gid(f),
                file_id: f.file_id.clone(),
            },
        ),
        row("getGroupSharedFilelist", MEMBERS, p, n, |f| {
            Request::GetGroupSharedFilelist {
                group_id: gid(f),
                page_num: 1,
                page_size: 10,
            }
        }),
        Row {
            // An app admin is not a member: it has no attributes of its own to set.
            codes: &[(AA, ErrorCode::GroupNotJoined)],
            ..row("setGroupMemberAttributes (self)", &[O, A, M], p, n, |f| {
                Request::SetGroupMemberAttributes {
                    group_id: gid(f),
                    user_id: f.caller.clone(),
                    member_attributes: BTreeMap::from([(s("nick"), s("n"))]),
                }
            })
        },
        row("setGroupMemberAttributes (another)", ADMINS, p, n, |f| {
            Request::SetGroupMemberAttributes {
                group_id: gid(f),
                user_id: s("t"),
                member_attributes: BTreeMap::from([(s("nick"), s("n"))]),
            }
        }),
        row("getGroupMemberAttributes", MEMBERS, p, n, |f| {
            Request::GetGroupMemberAttributes {
                group_id: gid(f),
                user_id: s("t"),
            }
        }),
        row("getGroupMembersAttributes", MEMBERS, p, n, |f| {
            Request::GetGroupMembersAttributes {
                group_id: gid(f),
                user_ids: vec![s("t"), s("o")],
                keys: vec![],
            }
        }),
        Row {
            codes: &[(AA, ErrorCode::GroupNotJoined)],
            ..row("blockGroupMessages", &[M], p, n, |f| {
                Request::BlockGroupMessages { group_id: gid(f) }
            })
        },
        row(
            "getGroupMsgReadUser (another's message)",
            ADMINS,
            p,
            Prep::MessageByT,
            |f| Request::GetGroupMsgReadUser {
                group_id: gid(f),
                msg_id: f.msg_id.clone(),
                limit: 10,
                cursor: None,
            },
        ),
        Row {
            codes: &[(AA, ErrorCode::GroupNotJoined)],
            ..row("unblockGroupMessages", &[O, A, M], p, n, |f| {
                Request::UnblockGroupMessages { group_id: gid(f) }
            })
        },
        row("ackGroupMessage", MEMBERS, p, Prep::MessageByT, |f| {
            Request::AckGroupMessage {
                group_id: gid(f),
                msg_id: f.msg_id.clone(),
            }
        }),
        row("sendGroupMessage", MEMBERS, p, n, |f| {
            Request::SendGroupMessage {
                group_id: gid(f),
                payload: b"hi".to_vec(),
                allow_group_ack: false,
                client_msg_id: None,
            }
        }),
        row("getGroupMessages", MEMBERS, p, n, |f| {
            Request::GetGroupMessages {
                group_id: gid(f),
                before: None,
                after: Some(0),
                limit: 10,
            }
        }),
        row("getJoinedGroups (self)", ALL, p, n, |_| {
            Request::GetJoinedGroups {
                page_num: 1,
                page_size: 10,
                need_affiliations: false,
                need_role: false,
            }
        }),
        row("getPublicGroups", ALL, p, n, |_| Request::GetPublicGroups {
            limit: 10,
            cursor: None,
        }),
    ]
}

/// The owner makes thousands of changes in a few seconds here.
const NO_RATE_LIMIT: &[(&str, &str)] = &[("quotas.requests_per_sec", "0")];

/// The clients of the cast, by user id.
struct Cast(BTreeMap<&'static str, Client>);

impl Cast {
    fn of(&self, user: &str) -> &Client {
        &self.0[user]
    }
}

async fn connect(broker: &Broker, user: &'static str, admin: bool) -> (&'static str, Client) {
    let c = broker
        .builder()
        .token(broker.token(user, admin, 3600))
        .device_id("d1")
        .ignore_events()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
    (user, c)
}

/// A fresh group for one cell, as described in the module doc.
async fn group(cast: &Cast, kind: Kind) -> String {
    let o = cast.of("o");
    let gid = o
        .create_group(CreateGroupData {
            groupname: s("cell"),
            members: ["a", "a2", "ta", "tb", "m", "t", "b"].map(s).to_vec(),
            public: kind != Kind::Private,
            approval: kind == Kind::PublicRequest,
            ..Default::default()
        })
        .await
        .unwrap();
    for adm in ["a", "a2", "ta", "tb"] {
        o.set_group_admin(&gid, adm).await.unwrap();
    }
    o.mute_group_member(&gid, &["ta"], -1).await.unwrap();
    o.block_group_member(&gid, "tb").await.unwrap();
    o.block_group_member(&gid, "b").await.unwrap();
    if kind == Kind::PublicRequest {
        assert!(!cast.of("y").join_group(&gid, "let me in").await.unwrap());
    }
    gid
}

async fn prep(cast: &Cast, p: Prep, fix: &mut Fix) {
    let o = cast.of("o");
    let t = cast.of("t");
    let g = fix.gid.as_str();
    match p {
        Prep::None => {}
        Prep::InviteCaller => {
            // Refused for members (601) and the blocked user (603): they get no invite.
            let _ = o.invite_users_to_group(g, &[fix.caller.as_str()]).await;
        }
        Prep::MessageByT => {
            fix.msg_id = t
                .send_group_message(g, b"read me".to_vec(), true)
                .await
                .unwrap()
                .msg_id;
        }
        Prep::FileByT => {
            fix.file_id = t
                .upload_group_shared_file(g, UploadSource::bytes(b"file".to_vec(), "f.txt"), None)
                .await
                .unwrap()
                .file_id;
        }
        Prep::MuteT => {
            o.mute_group_member(g, &["t"], -1).await.unwrap();
        }
        Prep::BlockT => {
            o.block_group_member(g, "t").await.unwrap();
        }
        Prep::AllowT => {
            o.add_users_to_group_allowlist(g, &["t"]).await.unwrap();
        }
    }
}

/// Everything the owner can read about the group.
async fn snapshot(cast: &Cast, gid: &str) -> String {
    let o = cast.of("o");
    let g = || gid.to_string();
    let reads = [
        Request::GetGroupInfo {
            group_ids: vec![g()],
        },
        Request::ListGroupMembers {
            group_id: g(),
            page_num: 1,
            page_size: 100,
        },
        Request::GetGroupAdmin { group_id: g() },
        Request::GetGroupMutelist { group_id: g() },
        Request::GetGroupBlocklist { group_id: g() },
        Request::GetGroupAllowlist { group_id: g() },
        Request::FetchGroupAnnouncement { group_id: g() },
        Request::GetGroupMembersAttributes {
            group_id: g(),
            user_ids: ["o", "a", "m", "t", "ta"].map(s).to_vec(),
            keys: vec![],
        },
        Request::GetGroupSharedFilelist {
            group_id: g(),
            page_num: 1,
            page_size: 10,
        },
        Request::GetGroupMessages {
            group_id: g(),
            before: None,
            after: Some(0),
            limit: 100,
        },
    ];
    let mut out = String::new();
    for r in reads {
        out.push_str(&format!("{:?}\n", o.request(r).await));
    }
    out
}

/// Runs one cell; returns a line describing a mismatch, if any.
async fn cell(cast: &Cast, row: &Row, role: R) -> Option<String> {
    let gid = group(cast, row.kind).await;
    let mut fix = Fix {
        gid,
        caller: role.user().to_string(),
        ..Fix::default()
    };
    prep(cast, row.prep, &mut fix).await;
    let before = snapshot(cast, &fix.gid).await;
    let client = cast.of(role.user());
    let result: Result<(), ClientError> = match row.act {
        Act::Req(f) => match client.request(f(&fix)).await {
            // getGroupInfo answers per id: a refused id is an entry with its error.
            Ok(Response::GroupInfos { groups }) => match groups.into_iter().next() {
                Some(GroupInfoEntry { error: Some(e), .. }) => Err(ClientError::Api(e)),
                _ => Ok(()),
            },
            r => r.map(drop),
        },
        Act::Upload => client
            .upload_group_shared_file(
                &fix.gid,
                UploadSource::bytes(b"up".to_vec(), "up.txt"),
                None,
            )
            .await
            .map(drop),
        Act::Download => client
            .download_group_shared_file(
                &fix.gid,
                &fix.file_id,
                None,
                DownloadDest::writer(tokio::io::sink()),
                None,
            )
            .await
            .map(drop),
    };
    let allowed = row.allowed.contains(&role);
    let want = row
        .codes
        .iter()
        .find(|(r, _)| *r == role)
        .map(|(_, c)| *c)
        .unwrap_or(match role {
            R::Outsider | R::Blocked => ErrorCode::GroupNotJoined,
            _ => ErrorCode::PermissionDenied,
        });
    let name = row.name;
    match (allowed, result) {
        (true, Ok(())) => None,
        (true, Err(e)) => Some(format!("{name} by {role:?}: allowed, got {e}")),
        (false, Ok(())) => Some(format!(
            "{name} by {role:?}: refused ({want}), but it succeeded"
        )),
        (false, Err(ClientError::Api(e))) if e.code == want => {
            let after = snapshot(cast, &fix.gid).await;
            let changed: Vec<String> = before
                .lines()
                .zip(after.lines())
                .filter(|(b, a)| b != a)
                .map(|(b, a)| format!("  {b}\n  -> {a}"))
                .collect();
            (!changed.is_empty()).then(|| {
                format!(
                    "{name} by {role:?}: refused, but it changed the group:\n{}",
                    changed.join("\n")
                )
            })
        }
        (false, Err(e)) => Some(format!("{name} by {role:?}: refused with {want}, got {e}")),
    }
}

async fn cast(broker: &Broker) -> Cast {
    let mut users: Vec<(&'static str, bool)> =
        ["o", "a", "a2", "ta", "tb", "m", "t", "x", "b", "y"]
            .iter()
            .map(|u| (*u, false))
            .collect();
    users.push(("root", true));
    Cast(
        join_all(
            users
                .into_iter()
                .map(|(u, admin)| connect(broker, u, admin)),
        )
        .await
        .into_iter()
        .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_by_every_role() {
    let broker = Broker::start_with(NO_RATE_LIMIT).await;
    let cast = cast(&broker).await;
    let table = table();
    let cells: Vec<(&Row, R)> = table
        .iter()
        .flat_map(|row| ROLES.iter().map(move |r| (row, *r)))
        .collect();
    let mut failures = Vec::new();
    // Sixteen cells at a time, each on its own group.
    for chunk in cells.chunks(16) {
        let results = join_all(chunk.iter().map(|(row, role)| cell(&cast, row, *role))).await;
        failures.extend(results.into_iter().flatten());
    }
    assert!(
        failures.is_empty(),
        "{} of {} cells differ from the contract:\n{}",
        failures.len(),
        cells.len(),
        failures.join("\n")
    );
}

/// Admins may not block admins, so they may not lift the owner's block of one either
/// (the block record keeps the role the user had). The owner may; an admin may still lift
/// a member's block.
#[tokio::test]
async fn admins_cannot_unblock_an_admin_the_owner_blocked() {
    let broker = Broker::start_with(NO_RATE_LIMIT).await;
    let cast = cast(&broker).await;
    let gid = group(&cast, Kind::Private).await;
    admins_may_lift_only_member_blocks(&cast, &gid).await;
}

/// The same after a restart: the role in the block record is persisted.
#[tokio::test]
async fn the_owners_block_of_an_admin_survives_a_restart() {
    let mut broker = Broker::start_with(NO_RATE_LIMIT).await;
    let gid = {
        let cast = cast(&broker).await;
        group(&cast, Kind::Private).await
    };
    broker.restart();
    let cast = cast(&broker).await;
    admins_may_lift_only_member_blocks(&cast, &gid).await;
}

/// On [`group`]'s group: admin "a" gets 603 lifting the block of "tb" (blocked by the
/// owner while an admin), and nothing changes; "a" may lift the block of member "b"; the
/// owner may lift that of "tb".
async fn admins_may_lift_only_member_blocks(cast: &Cast, gid: &str) {
    for r in [
        cast.of("a").unblock_group_member(gid, "tb").await,
        cast.of("a").unblock_group_members(gid, &["b", "tb"]).await,
    ] {
        match r {
            Err(ClientError::Api(e)) if e.code == ErrorCode::PermissionDenied => {}
            other => panic!("admin lifted the owner's block of admin tb: {other:?}"),
        }
    }
    let blocked = cast.of("o").get_group_blocklist(gid).await.unwrap();
    assert!(blocked.contains(&s("tb")), "{blocked:?}");
    assert!(
        blocked.contains(&s("b")),
        "a failed request changed nothing: {blocked:?}"
    );
    cast.of("a").unblock_group_member(gid, "b").await.unwrap();
    cast.of("o").unblock_group_member(gid, "tb").await.unwrap();
    let blocked = cast.of("o").get_group_blocklist(gid).await.unwrap();
    assert!(
        !blocked.contains(&s("tb")) && !blocked.contains(&s("b")),
        "{blocked:?}"
    );
}
