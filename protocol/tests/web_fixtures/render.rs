//! Renderers: every variant of every wire enum, every field named (no `..`), so a new
//! variant or field does not compile until it is rendered for the TS codec.

use super::json::*;
use super::Coverage;
use convoke_protocol::event::{EventDetail, GroupEvent, GroupEventOp, GroupMessage, Push};
use convoke_protocol::handshake::{ClientFrame, Hello, ServerFrame, Welcome};
use convoke_protocol::request::{CreateGroupData, Request};
use convoke_protocol::response::{
    GroupInfo, GroupInfoEntry, JoinedGroup, MemberEntry, MuteEntry, PublicGroup, ReadUser,
    Response, Role, SharedFile,
};
use convoke_protocol::transfer::{TransferHeader, TransferReply};
use convoke_protocol::ApiError;

pub(crate) fn role(r: &Role, cov: &mut Coverage) -> J {
    cov.see("Role", r);
    s(r.as_str())
}

pub(crate) fn op(o: &GroupEventOp, cov: &mut Coverage) -> J {
    cov.see("GroupEventOp", o);
    s(o.as_str())
}

pub(crate) fn api_error(e: &ApiError, cov: &mut Coverage) -> J {
    let ApiError { code, message } = e;
    cov.see("ErrorCode", code);
    J::Obj(vec![
        ("code".into(), J::Num(code.code().to_string())),
        ("message".into(), s(message)),
    ])
}

pub(crate) fn result<T>(
    r: &Result<T, ApiError>,
    cov: &mut Coverage,
    ok: impl Fn(&T, &mut Coverage) -> J,
) -> J {
    match r {
        Ok(v) => J::Obj(vec![("ok".into(), b(true)), ("value".into(), ok(v, cov))]),
        Err(e) => J::Obj(vec![
            ("ok".into(), b(false)),
            ("error".into(), api_error(e, cov)),
        ]),
    }
}

pub(crate) fn create_group_data(d: &CreateGroupData) -> J {
    let CreateGroupData {
        groupname,
        desc,
        members,
        public,
        approval,
        allowinvites,
        invite_need_confirm,
        maxusers,
        ext,
    } = d;
    obj(vec![
        ("groupname", s(groupname)),
        ("desc", s(desc)),
        ("members", strs(members)),
        ("public", b(*public)),
        ("approval", b(*approval)),
        ("allowinvites", b(*allowinvites)),
        ("invite_need_confirm", b(*invite_need_confirm)),
        ("maxusers", opt(maxusers, |v| u32n(*v))),
        ("ext", s(ext)),
    ])
}

pub(crate) fn request(r: &Request, cov: &mut Coverage) -> J {
    use Request::*;
    cov.see("Request", r);
    let g = |v: &String| ("group_id", s(v));
    let (name, fields): (&str, Vec<(&str, J)>) = match r {
        Ping { nonce } => ("ping", vec![("nonce", u64s(*nonce))]),
        CreateGroup { data } => ("createGroup", vec![("data", create_group_data(data))]),
        DestroyGroup { group_id } => ("destroyGroup", vec![g(group_id)]),
        GetGroupInfo { group_ids } => ("getGroupInfo", vec![("group_ids", strs(group_ids))]),
        ModifyGroup {
            group_id,
            group_name,
            description,
            ext,
        } => (
            "modifyGroup",
            vec![
                g(group_id),
                ("group_name", opt(group_name, |v| s(v))),
                ("description", opt(description, |v| s(v))),
                ("ext", opt(ext, |v| s(v))),
            ],
        ),
        ChangeGroupOwner {
            group_id,
            new_owner,
        } => (
            "changeGroupOwner",
            vec![g(group_id), ("new_owner", s(new_owner))],
        ),
        ListGroupMembers {
            group_id,
            page_num,
            page_size,
        } => (
            "listGroupMembers",
            vec![
                g(group_id),
                ("page_num", u32n(*page_num)),
                ("page_size", u32n(*page_size)),
            ],
        ),
        GetGroupAdmin { group_id } => ("getGroupAdmin", vec![g(group_id)]),
        SetGroupAdmin { group_id, username } => (
            "setGroupAdmin",
            vec![g(group_id), ("username", s(username))],
        ),
        RemoveGroupAdmin { group_id, username } => (
            "removeGroupAdmin",
            vec![g(group_id), ("username", s(username))],
        ),
        InviteUsersToGroup { group_id, users } => (
            "inviteUsersToGroup",
            vec![g(group_id), ("users", strs(users))],
        ),
        AcceptGroupInvite { group_id, invitee } => (
            "acceptGroupInvite",
            vec![g(group_id), ("invitee", s(invitee))],
        ),
        RejectGroupInvite { group_id, invitee } => (
            "rejectGroupInvite",
            vec![g(group_id), ("invitee", s(invitee))],
        ),
        JoinGroup { group_id, message } => {
            ("joinGroup", vec![g(group_id), ("message", s(message))])
        }
        AcceptGroupJoinRequest {
            group_id,
            applicant,
        } => (
            "acceptGroupJoinRequest",
            vec![g(group_id), ("applicant", s(applicant))],
        ),
        RejectGroupJoinRequest {
            group_id,
            applicant,
            reason,
        } => (
            "rejectGroupJoinRequest",
            vec![
                g(group_id),
                ("applicant", s(applicant)),
                ("reason", s(reason)),
            ],
        ),
        LeaveGroup { group_id } => ("leaveGroup", vec![g(group_id)]),
        RemoveGroupMember { group_id, username } => (
            "removeGroupMember",
            vec![g(group_id), ("username", s(username))],
        ),
        RemoveGroupMembers { group_id, users } => (
            "removeGroupMembers",
            vec![g(group_id), ("users", strs(users))],
        ),
        MuteGroupMember {
            group_id,
            username,
            mute_duration,
        } => (
            "muteGroupMember",
            vec![
                g(group_id),
                ("username", strs(username)),
                ("mute_duration", i64n(*mute_duration)),
            ],
        ),
        UnmuteGroupMember { group_id, username } => (
            "unmuteGroupMember",
            vec![g(group_id), ("username", strs(username))],
        ),
        GetGroupMutelist { group_id } => ("getGroupMutelist", vec![g(group_id)]),
        IsInGroupMutelist { group_id } => ("isInGroupMutelist", vec![g(group_id)]),
        DisableSendGroupMsg { group_id } => ("disableSendGroupMsg", vec![g(group_id)]),
        EnableSendGroupMsg { group_id } => ("enableSendGroupMsg", vec![g(group_id)]),
        BlockGroupMember { group_id, username } => (
            "blockGroupMember",
            vec![g(group_id), ("username", s(username))],
        ),
        BlockGroupMembers {
            group_id,
            usernames,
        } => (
            "blockGroupMembers",
            vec![g(group_id), ("usernames", strs(usernames))],
        ),
        UnblockGroupMember { group_id, username } => (
            "unblockGroupMember",
            vec![g(group_id), ("username", s(username))],
        ),
        UnblockGroupMembers {
            group_id,
            usernames,
        } => (
            "unblockGroupMembers",
            vec![g(group_id), ("usernames", strs(usernames))],
        ),
        GetGroupBlocklist { group_id } => ("getGroupBlocklist", vec![g(group_id)]),
        AddUsersToGroupAllowlist { group_id, users } => (
            "addUsersToGroupAllowlist",
            vec![g(group_id), ("users", strs(users))],
        ),
        RemoveGroupAllowlistMember {
            group_id,
            user_name,
        } => (
            "removeGroupAllowlistMember",
            vec![g(group_id), ("user_name", s(user_name))],
        ),
        GetGroupAllowlist { group_id } => ("getGroupAllowlist", vec![g(group_id)]),
        IsInGroupAllowlist {
            group_id,
            user_name,
        } => (
            "isInGroupAllowlist",
            vec![g(group_id), ("user_name", s(user_name))],
        ),
        FetchGroupAnnouncement { group_id } => ("fetchGroupAnnouncement", vec![g(group_id)]),
        UpdateGroupAnnouncement {
            group_id,
            announcement,
        } => (
            "updateGroupAnnouncement",
            vec![g(group_id), ("announcement", s(announcement))],
        ),
        DeleteGroupSharedFile { group_id, file_id } => (
            "deleteGroupSharedFile",
            vec![g(group_id), ("file_id", s(file_id))],
        ),
        GetGroupSharedFilelist {
            group_id,
            page_num,
            page_size,
        } => (
            "getGroupSharedFilelist",
            vec![
                g(group_id),
                ("page_num", u32n(*page_num)),
                ("page_size", u32n(*page_size)),
            ],
        ),
        SetGroupMemberAttributes {
            group_id,
            user_id,
            member_attributes,
        } => (
            "setGroupMemberAttributes",
            vec![
                g(group_id),
                ("user_id", s(user_id)),
                ("member_attributes", map(member_attributes)),
            ],
        ),
        GetGroupMemberAttributes { group_id, user_id } => (
            "getGroupMemberAttributes",
            vec![g(group_id), ("user_id", s(user_id))],
        ),
        GetGroupMembersAttributes {
            group_id,
            user_ids,
            keys,
        } => (
            "getGroupMembersAttributes",
            vec![
                g(group_id),
                ("user_ids", strs(user_ids)),
                ("keys", strs(keys)),
            ],
        ),
        GetJoinedGroups {
            page_num,
            page_size,
            need_affiliations,
            need_role,
        } => (
            "getJoinedGroups",
            vec![
                ("page_num", u32n(*page_num)),
                ("page_size", u32n(*page_size)),
                ("need_affiliations", b(*need_affiliations)),
                ("need_role", b(*need_role)),
            ],
        ),
        GetPublicGroups { limit, cursor } => (
            "getPublicGroups",
            vec![("limit", u32n(*limit)), ("cursor", opt(cursor, |v| s(v)))],
        ),
        BlockGroupMessages { group_id } => ("blockGroupMessages", vec![g(group_id)]),
        UnblockGroupMessages { group_id } => ("unblockGroupMessages", vec![g(group_id)]),
        GetGroupMsgReadUser {
            group_id,
            msg_id,
            limit,
            cursor,
        } => (
            "getGroupMsgReadUser",
            vec![
                g(group_id),
                ("msg_id", s(msg_id)),
                ("limit", u32n(*limit)),
                ("cursor", opt(cursor, |v| s(v))),
            ],
        ),
        SendGroupMessage {
            group_id,
            payload,
            allow_group_ack,
            client_msg_id,
        } => (
            "sendGroupMessage",
            vec![
                g(group_id),
                ("payload", J::Bytes(payload.clone())),
                ("allow_group_ack", b(*allow_group_ack)),
                ("client_msg_id", opt(client_msg_id, |v| s(v))),
            ],
        ),
        AckGroupMessage { group_id, msg_id } => {
            ("ackGroupMessage", vec![g(group_id), ("msg_id", s(msg_id))])
        }
        GetGroupMessages {
            group_id,
            before,
            after,
            limit,
        } => (
            "getGroupMessages",
            vec![
                g(group_id),
                ("before", opt(before, |v| u64s(*v))),
                ("after", opt(after, |v| u64s(*v))),
                ("limit", u32n(*limit)),
            ],
        ),
        GetGroupMutelistPage {
            group_id,
            limit,
            cursor,
        } => (
            "getGroupMutelistPage",
            vec![
                g(group_id),
                ("limit", u32n(*limit)),
                ("cursor", opt(cursor, |v| s(v))),
            ],
        ),
        GetGroupBlocklistPage {
            group_id,
            limit,
            cursor,
        } => (
            "getGroupBlocklistPage",
            vec![
                g(group_id),
                ("limit", u32n(*limit)),
                ("cursor", opt(cursor, |v| s(v))),
            ],
        ),
        GetGroupAllowlistPage {
            group_id,
            limit,
            cursor,
        } => (
            "getGroupAllowlistPage",
            vec![
                g(group_id),
                ("limit", u32n(*limit)),
                ("cursor", opt(cursor, |v| s(v))),
            ],
        ),
    };
    assert_eq!(name, r.method(), "the TS method name is the seed's");
    tagged("method", name, fields)
}

pub(crate) fn group_info(i: &GroupInfo, cov: &mut Coverage) -> J {
    let GroupInfo {
        id,
        name,
        description,
        owner,
        created,
        affiliations_count,
        maxusers,
        public,
        membersonly,
        allowinvites,
        invite_need_confirm,
        mute,
        custom,
        shieldgroup,
        role: r,
    } = i;
    obj(vec![
        ("id", s(id)),
        ("name", s(name)),
        ("description", s(description)),
        ("owner", s(owner)),
        ("created", i64n(*created)),
        ("affiliations_count", u32n(*affiliations_count)),
        ("maxusers", u32n(*maxusers)),
        ("public", b(*public)),
        ("membersonly", b(*membersonly)),
        ("allowinvites", b(*allowinvites)),
        ("invite_need_confirm", b(*invite_need_confirm)),
        ("mute", b(*mute)),
        ("custom", s(custom)),
        ("shieldgroup", b(*shieldgroup)),
        ("role", r.as_ref().map_or(J::Null, |r| role(r, cov))),
    ])
}

pub(crate) fn mute_entry(m: &MuteEntry) -> J {
    let MuteEntry { user, expire } = m;
    obj(vec![("user", s(user)), ("expire", i64n(*expire))])
}

pub(crate) fn shared_file(f: &SharedFile) -> J {
    let SharedFile {
        file_id,
        file_name,
        file_owner,
        file_size,
        created,
        content_type,
        sha256,
        secret,
    } = f;
    obj(vec![
        ("file_id", s(file_id)),
        ("file_name", s(file_name)),
        ("file_owner", s(file_owner)),
        ("file_size", u64s(*file_size)),
        ("created", i64n(*created)),
        ("content_type", s(content_type)),
        ("sha256", s(sha256)),
        ("secret", s(secret)),
    ])
}

pub(crate) fn group_message(m: &GroupMessage) -> J {
    let GroupMessage {
        group_id,
        msg_id,
        seq,
        from,
        payload,
        timestamp,
        allow_group_ack,
    } = m;
    obj(vec![
        ("group_id", s(group_id)),
        ("msg_id", s(msg_id)),
        ("seq", u64s(*seq)),
        ("from", s(from)),
        ("payload", J::Bytes(payload.clone())),
        ("timestamp", i64n(*timestamp)),
        ("allow_group_ack", b(*allow_group_ack)),
    ])
}

pub(crate) fn response(r: &Response, cov: &mut Coverage) -> J {
    use Response::*;
    cov.see("Response", r);
    let (name, fields): (&str, Vec<(&str, J)>) = match r {
        Done => ("done", vec![]),
        Pong { nonce, server_time } => (
            "pong",
            vec![("nonce", u64s(*nonce)), ("server_time", i64n(*server_time))],
        ),
        GroupCreated { group_id } => ("groupCreated", vec![("group_id", s(group_id))]),
        GroupInfos { groups } => {
            let groups = groups
                .iter()
                .map(|e| {
                    let GroupInfoEntry {
                        group_id,
                        info,
                        error,
                    } = e;
                    obj(vec![
                        ("group_id", s(group_id)),
                        (
                            "info",
                            info.as_ref().map_or(J::Null, |i| group_info(i, cov)),
                        ),
                        (
                            "error",
                            error.as_ref().map_or(J::Null, |e| api_error(e, cov)),
                        ),
                    ])
                })
                .collect();
            ("groupInfos", vec![("groups", J::Arr(groups))])
        }
        Members { members } => {
            let members = members
                .iter()
                .map(|m| {
                    let MemberEntry {
                        user_id,
                        role: r,
                        joined_at,
                    } = m;
                    obj(vec![
                        ("user_id", s(user_id)),
                        ("role", role(r, cov)),
                        ("joined_at", i64n(*joined_at)),
                    ])
                })
                .collect();
            ("members", vec![("members", J::Arr(members))])
        }
        Users { users } => ("users", vec![("users", strs(users))]),
        Invited { pending, joined } => (
            "invited",
            vec![("pending", strs(pending)), ("joined", strs(joined))],
        ),
        JoinResult { joined } => ("joinResult", vec![("joined", b(*joined))]),
        Mutes { mutes } => (
            "mutes",
            vec![("mutes", J::Arr(mutes.iter().map(mute_entry).collect()))],
        ),
        Bool { value } => ("bool", vec![("value", b(*value))]),
        Announcement { announcement } => ("announcement", vec![("announcement", s(announcement))]),
        Files { files } => (
            "files",
            vec![("files", J::Arr(files.iter().map(shared_file).collect()))],
        ),
        Attributes { attributes } => ("attributes", vec![("attributes", map(attributes))]),
        MembersAttributes { members } => (
            "membersAttributes",
            vec![(
                "members",
                J::Obj(members.iter().map(|(k, v)| (k.clone(), map(v))).collect()),
            )],
        ),
        JoinedGroups { groups } => {
            let groups = groups
                .iter()
                .map(|j| {
                    let JoinedGroup {
                        group_id,
                        group_name,
                        affiliations_count,
                        role: r,
                    } = j;
                    obj(vec![
                        ("group_id", s(group_id)),
                        ("group_name", s(group_name)),
                        ("affiliations_count", opt(affiliations_count, |v| u32n(*v))),
                        ("role", r.as_ref().map_or(J::Null, |r| role(r, cov))),
                    ])
                })
                .collect();
            ("joinedGroups", vec![("groups", J::Arr(groups))])
        }
        PublicGroups { groups, cursor } => {
            let groups = groups
                .iter()
                .map(|p| {
                    let PublicGroup {
                        group_id,
                        group_name,
                    } = p;
                    obj(vec![
                        ("group_id", s(group_id)),
                        ("group_name", s(group_name)),
                    ])
                })
                .collect();
            (
                "publicGroups",
                vec![
                    ("groups", J::Arr(groups)),
                    ("cursor", opt(cursor, |v| s(v))),
                ],
            )
        }
        ReadUsers {
            total,
            users,
            cursor,
        } => {
            let users = users
                .iter()
                .map(|u| {
                    let ReadUser { user_id, read_at } = u;
                    obj(vec![("user_id", s(user_id)), ("read_at", i64n(*read_at))])
                })
                .collect();
            (
                "readUsers",
                vec![
                    ("total", u32n(*total)),
                    ("users", J::Arr(users)),
                    ("cursor", opt(cursor, |v| s(v))),
                ],
            )
        }
        MessageSent {
            msg_id,
            seq,
            timestamp,
        } => (
            "messageSent",
            vec![
                ("msg_id", s(msg_id)),
                ("seq", u64s(*seq)),
                ("timestamp", i64n(*timestamp)),
            ],
        ),
        Messages { messages } => (
            "messages",
            vec![(
                "messages",
                J::Arr(messages.iter().map(group_message).collect()),
            )],
        ),
        MutesPage { mutes, cursor } => (
            "mutesPage",
            vec![
                ("mutes", J::Arr(mutes.iter().map(mute_entry).collect())),
                ("cursor", opt(cursor, |v| s(v))),
            ],
        ),
        UsersPage { users, cursor } => (
            "usersPage",
            vec![("users", strs(users)), ("cursor", opt(cursor, |v| s(v)))],
        ),
    };
    tagged("type", name, fields)
}

pub(crate) fn detail(d: &EventDetail, cov: &mut Coverage) -> J {
    use EventDetail::*;
    cov.see("EventDetail", d);
    let (name, fields): (&str, Vec<(&str, J)>) = match d {
        None => ("none", vec![]),
        Text { text } => ("text", vec![("text", s(text))]),
        NewOwner { owner } => ("newOwner", vec![("owner", s(owner))]),
        Mute { expire } => ("mute", vec![("expire", i64n(*expire))]),
        Updated {
            group_name,
            description,
            ext,
        } => (
            "updated",
            vec![
                ("group_name", opt(group_name, |v| s(v))),
                ("description", opt(description, |v| s(v))),
                ("ext", opt(ext, |v| s(v))),
            ],
        ),
        Announcement { announcement } => ("announcement", vec![("announcement", s(announcement))]),
        File { file } => ("file", vec![("file", shared_file(file))]),
        FileId { file_id } => ("fileId", vec![("file_id", s(file_id))]),
        Attributes {
            user_id,
            attributes,
        } => (
            "attributes",
            vec![("user_id", s(user_id)), ("attributes", map(attributes))],
        ),
    };
    tagged("kind", name, fields)
}

pub(crate) fn group_event(e: &GroupEvent, cov: &mut Coverage) -> J {
    let GroupEvent {
        operation,
        group_id,
        group_name,
        from,
        users,
        detail: d,
        timestamp,
    } = e;
    obj(vec![
        ("operation", op(operation, cov)),
        ("group_id", s(group_id)),
        ("group_name", s(group_name)),
        ("from", s(from)),
        ("users", strs(users)),
        ("detail", detail(d, cov)),
        ("timestamp", i64n(*timestamp)),
    ])
}

pub(crate) fn push(p: &Push, cov: &mut Coverage) -> J {
    cov.see("Push", p);
    let (name, fields): (&str, Vec<(&str, J)>) = match p {
        Push::Group(e) => ("group", vec![("event", group_event(e, cov))]),
        Push::MultiDevice(e) => ("multiDevice", vec![("event", group_event(e, cov))]),
        Push::Message(m) => ("message", vec![("message", group_message(m))]),
        Push::Closing { code, reason } => (
            "closing",
            vec![("code", u32n(*code)), ("reason", s(reason))],
        ),
        Push::Kept { id, event } => (
            "kept",
            vec![("id", u64s(*id)), ("event", group_event(event, cov))],
        ),
    };
    tagged("push", name, fields)
}

pub(crate) fn client_frame(f: &ClientFrame, cov: &mut Coverage) -> J {
    cov.see("ClientFrame", f);
    let (name, fields): (&str, Vec<(&str, J)>) = match f {
        ClientFrame::Hello(h) => {
            let Hello {
                versions,
                token,
                device_id,
                events,
            } = h;
            let hello = obj(vec![
                (
                    "versions",
                    J::Arr(versions.iter().map(|v| u32n(*v)).collect()),
                ),
                ("token", s(token)),
                ("device_id", s(device_id)),
                ("events", b(*events)),
            ]);
            ("hello", vec![("hello", hello)])
        }
        ClientFrame::Request { id, request: r } => (
            "request",
            vec![("id", u64s(*id)), ("request", request(r, cov))],
        ),
        ClientFrame::Ack { ids } => (
            "ack",
            vec![("ids", J::Arr(ids.iter().map(|v| u64s(*v)).collect()))],
        ),
    };
    tagged("type", name, fields)
}

pub(crate) fn server_frame(f: &ServerFrame, cov: &mut Coverage) -> J {
    cov.see("ServerFrame", f);
    let (name, fields): (&str, Vec<(&str, J)>) = match f {
        ServerFrame::Welcome(w) => {
            let Welcome {
                version,
                user_id,
                app_admin,
                session_id,
                server_time,
            } = w;
            let welcome = obj(vec![
                ("version", u32n(*version)),
                ("user_id", s(user_id)),
                ("app_admin", b(*app_admin)),
                ("session_id", u64s(*session_id)),
                ("server_time", i64n(*server_time)),
            ]);
            ("welcome", vec![("welcome", welcome)])
        }
        ServerFrame::Refused(e) => ("refused", vec![("error", api_error(e, cov))]),
        ServerFrame::Response { id, result: r } => (
            "response",
            vec![("id", u64s(*id)), ("result", result(r, cov, response))],
        ),
    };
    tagged("type", name, fields)
}

pub(crate) fn transfer_header(h: &TransferHeader, cov: &mut Coverage) -> J {
    cov.see("TransferHeader", h);
    let (name, fields): (&str, Vec<(&str, J)>) = match h {
        TransferHeader::Upload {
            group_id,
            file_name,
            size,
            content_type,
            upload_id,
            resume,
        } => (
            "upload",
            vec![
                ("group_id", s(group_id)),
                ("file_name", s(file_name)),
                ("size", u64s(*size)),
                ("content_type", s(content_type)),
                ("upload_id", u64s(*upload_id)),
                ("resume", b(*resume)),
            ],
        ),
        TransferHeader::Download {
            group_id,
            file_id,
            secret,
            offset,
        } => (
            "download",
            vec![
                ("group_id", s(group_id)),
                ("file_id", s(file_id)),
                ("secret", opt(secret, |v| s(v))),
                ("offset", u64s(*offset)),
            ],
        ),
    };
    tagged("type", name, fields)
}

pub(crate) fn transfer_reply(r: &TransferReply, cov: &mut Coverage) -> J {
    cov.see("TransferReply", r);
    let (name, fields): (&str, Vec<(&str, J)>) = match r {
        TransferReply::Outcome(o) => (
            "outcome",
            vec![("result", result(o, cov, |f, _| shared_file(f)))],
        ),
        TransferReply::ResumeAt { offset } => ("resumeAt", vec![("offset", u64s(*offset))]),
    };
    tagged("type", name, fields)
}
