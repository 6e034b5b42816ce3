//! Golden fixtures for the TypeScript codec of the web SDK (client/web/src/codec/).
//!
//! Builds values of every request, response, push, event detail, client and server frame,
//! handshake and transfer variant (from the types' own `examples()` plus edge cases: empty,
//! long and unicode strings, None and Some, the varint boundaries, u64 ids beyond 2^53,
//! negative i64), encodes each as a frame with the protocol's own codec, and writes one JSON
//! file per family under client/web/test/fixtures/: each case is the value as the TS codec
//! represents it and the frame's bytes in hex. The node tests decode every case to its value
//! and encode it back to the same bytes.
//!
//! This test fails when the committed fixtures differ from what the code produces (the wire
//! changed: regenerate with `CONVOKE_UPDATE_FIXTURES=1` and make the TS codec agree), and when
//! an enum has a variant without a case: the renderers below match every variant and name
//! every field (a new one does not compile until it is rendered), and [`Coverage`] asks
//! bincode whether the first variant index no case used exists.
//!
//! The TS representation (client/web/README.md): fields in camelCase; u64 as a decimal
//! string (ids beyond 2^53 survive); u32 and i64 as numbers (an i64 outside ±(2^53-1) is a
//! decode error in TS, so no case uses one); bytes as `{"$bytes": hex}` in JSON (a
//! `Uint8Array` in TS); `Option` as null; maps as objects; enums with fields as objects
//! tagged by their family's key (`method`, `type`, `kind`, `push`) with the variant name in
//! camelCase, a newtype variant's value under one named field; unit enums as strings
//! (`Role`, `GroupEventOp`), `ErrorCode` as the SDK's number; `Result` as `{ok: true,
//! value}` or `{ok: false, error}`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use bincode::error::DecodeError;
use convoke_protocol::codec::{frame_bytes, MAX_FRAME_LEN, MAX_HELLO_LEN};
use convoke_protocol::event::{EventDetail, GroupEvent, GroupEventOp, GroupMessage, Push};
use convoke_protocol::handshake::{
    ClientFrame, Hello, ServerFrame, Welcome, MAX_ACK_IDS, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
use convoke_protocol::request::{CreateGroupData, Request};
use convoke_protocol::response::{
    GroupInfo, GroupInfoEntry, JoinedGroup, MemberEntry, MuteEntry, PublicGroup, ReadUser,
    Response, Role, SharedFile,
};
use convoke_protocol::transfer::{TransferHeader, TransferReply, CANCELLED, CHUNK_BYTES};
use convoke_protocol::{close, ApiError, ErrorCode};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

/// The environment variable that rewrites the fixtures instead of comparing them.
const UPDATE: &str = "CONVOKE_UPDATE_FIXTURES";

/// The largest integer a JS number holds exactly (2^53 - 1).
const JS_SAFE: i64 = (1 << 53) - 1;

// ---------------------------------------------------------------------------------------
// A JSON value with its keys in the order written (the files are compared as text).

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Bytes(Vec<u8>),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn render(j: &J, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) => out.push_str(n),
        J::Str(s) => quote(s, out),
        J::Bytes(b) => {
            out.push_str("{ \"$bytes\": ");
            quote(&hex::encode(b), out);
            out.push_str(" }");
        }
        J::Arr(items) if items.is_empty() => out.push_str("[]"),
        J::Arr(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                render(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        J::Obj(fields) if fields.is_empty() => out.push_str("{}"),
        J::Obj(fields) => {
            out.push_str("{\n");
            for (i, (k, v)) in fields.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                quote(k, out);
                out.push_str(": ");
                render(v, indent + 1, out);
                out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
    }
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `group_id` -> `groupId`.
fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// An object from Rust field names (made camelCase).
fn obj(fields: Vec<(&str, J)>) -> J {
    J::Obj(fields.into_iter().map(|(k, v)| (camel(k), v)).collect())
}

/// An enum value: the tag first, then the fields.
fn tagged(tag: &str, variant: &str, fields: Vec<(&str, J)>) -> J {
    let mut all = vec![(tag.to_string(), J::Str(variant.to_string()))];
    all.extend(fields.into_iter().map(|(k, v)| (camel(k), v)));
    J::Obj(all)
}

fn s(v: &str) -> J {
    J::Str(v.to_string())
}
fn u32n(v: u32) -> J {
    J::Num(v.to_string())
}
fn u64s(v: u64) -> J {
    J::Str(v.to_string())
}
fn i64n(v: i64) -> J {
    assert!(
        (-JS_SAFE..=JS_SAFE).contains(&v),
        "i64 {v} is outside ±(2^53-1): the TS codec refuses it, so no fixture may hold it"
    );
    J::Num(v.to_string())
}
fn b(v: bool) -> J {
    J::Bool(v)
}
fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> J) -> J {
    v.as_ref().map_or(J::Null, f)
}
fn strs(v: &[String]) -> J {
    J::Arr(v.iter().map(|x| s(x)).collect())
}
fn map(m: &BTreeMap<String, String>) -> J {
    J::Obj(m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
}

// ---------------------------------------------------------------------------------------
// Variant coverage: every enum family's variant indices seen, checked against bincode.

#[derive(Debug, Default)]
struct Coverage(BTreeMap<&'static str, BTreeSet<u32>>);

impl Coverage {
    /// Records the variant of `value`, an enum of family `name` (its first varint).
    fn see<T: bincode::Encode>(&mut self, name: &'static str, value: &T) {
        let bytes = bincode::encode_to_vec(value, wire()).unwrap();
        let (index, _): (u32, usize) = bincode::decode_from_slice(&bytes, wire()).unwrap();
        self.0.entry(name).or_default().insert(index);
    }

    /// Fails unless the cases of `name` used variants 0..n and bincode has no variant n.
    fn check<T: bincode::Decode<()> + std::fmt::Debug>(&self, name: &'static str) {
        let seen = self.0.get(name).cloned().unwrap_or_default();
        let n = seen.len() as u32;
        assert_eq!(
            seen,
            (0..n).collect::<BTreeSet<u32>>(),
            "{name}: cases cover variant indices {seen:?}, not 0..{n}: add a case for each missing one"
        );
        let probe = bincode::encode_to_vec(n, wire()).unwrap();
        match bincode::decode_from_slice::<T, _>(&probe, wire()) {
            Err(DecodeError::UnexpectedVariant { .. }) => {}
            other => panic!(
                "{name} has a variant with index {n} but no fixture case uses it ({other:?}): \
                 add a case to protocol/tests/web_fixtures.rs and support it in client/web/src/codec/"
            ),
        }
    }
}

fn wire() -> impl bincode::config::Config {
    // As protocol/src/codec.rs configures it.
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<MAX_FRAME_LEN>()
}

// ---------------------------------------------------------------------------------------
// Renderers: every variant, every field named.

fn role(r: &Role, cov: &mut Coverage) -> J {
    cov.see("Role", r);
    s(r.as_str())
}

fn op(o: &GroupEventOp, cov: &mut Coverage) -> J {
    cov.see("GroupEventOp", o);
    s(o.as_str())
}

fn api_error(e: &ApiError, cov: &mut Coverage) -> J {
    let ApiError { code, message } = e;
    cov.see("ErrorCode", code);
    J::Obj(vec![
        ("code".into(), J::Num(code.code().to_string())),
        ("message".into(), s(message)),
    ])
}

fn result<T>(
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

fn create_group_data(d: &CreateGroupData) -> J {
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

fn request(r: &Request, cov: &mut Coverage) -> J {
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

fn group_info(i: &GroupInfo, cov: &mut Coverage) -> J {
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

fn mute_entry(m: &MuteEntry) -> J {
    let MuteEntry { user, expire } = m;
    obj(vec![("user", s(user)), ("expire", i64n(*expire))])
}

fn shared_file(f: &SharedFile) -> J {
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

fn group_message(m: &GroupMessage) -> J {
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

fn response(r: &Response, cov: &mut Coverage) -> J {
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

fn detail(d: &EventDetail, cov: &mut Coverage) -> J {
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

fn group_event(e: &GroupEvent, cov: &mut Coverage) -> J {
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

fn push(p: &Push, cov: &mut Coverage) -> J {
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

fn client_frame(f: &ClientFrame, cov: &mut Coverage) -> J {
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

fn server_frame(f: &ServerFrame, cov: &mut Coverage) -> J {
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

fn transfer_header(h: &TransferHeader, cov: &mut Coverage) -> J {
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

fn transfer_reply(r: &TransferReply, cov: &mut Coverage) -> J {
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

// ---------------------------------------------------------------------------------------
// The cases.

/// Strings that exercise the codec: empty, unicode (2-, 3- and 4-byte UTF-8), a leading
/// byte-order mark (a UTF-8 decoder strips it unless told not to), escapes and NUL, and a
/// length past the one-byte varint (300 bytes: the 251 + u16 form).
fn odd_strings() -> Vec<String> {
    vec![
        String::new(),
        "héllo wörld 世界 🎉".to_string(),
        "\u{feff}bom first".to_string(),
        "quote\" back\\slash\nnew\ttab\u{0}nul\u{1f}".to_string(),
        "x".repeat(300),
    ]
}

/// u64 values at the varint boundaries and past what a JS number holds.
const U64S: [u64; 9] = [
    0,
    250,
    251,
    65_535,
    65_536,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    (1 << 53) + 1,
    u64::MAX,
];

/// i64 values: zigzag boundaries (125 -> 250, -126 -> 251) and the JS-safe extremes.
const I64S: [i64; 9] = [
    0,
    -1,
    1,
    125,
    -126,
    1_700_000_000_000,
    JS_SAFE,
    -JS_SAFE,
    -2,
];

/// Named values of one wire type.
type Cases<T> = Vec<(String, T)>;

fn extra_requests() -> Vec<Request> {
    let g = "18446744073709551615".to_string();
    let [empty, uni, bom, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let mut out = vec![];
    for nonce in U64S {
        out.push(Request::Ping { nonce });
    }
    out.push(Request::CreateGroup {
        data: CreateGroupData {
            groupname: uni.clone(),
            desc: empty.clone(),
            members: vec![],
            public: false,
            approval: true,
            allowinvites: false,
            invite_need_confirm: true,
            maxusers: None,
            // The contract's largest ext (8 KiB), with multi-byte characters.
            ext: format!("{{\"k\":\"{}\"}}", "é".repeat(4092)),
        },
    });
    out.push(Request::GetGroupInfo { group_ids: vec![] });
    out.push(Request::ModifyGroup {
        group_id: g.clone(),
        group_name: None,
        description: None,
        ext: None,
    });
    out.push(Request::ModifyGroup {
        group_id: g.clone(),
        group_name: Some(empty.clone()),
        description: Some(esc.clone()),
        ext: Some(long.clone()),
    });
    out.push(Request::ListGroupMembers {
        group_id: g.clone(),
        page_num: u32::MAX,
        page_size: 65_536,
    });
    for mute_duration in I64S {
        out.push(Request::MuteGroupMember {
            group_id: g.clone(),
            username: vec![uni.clone(), empty.clone()],
            mute_duration,
        });
    }
    out.push(Request::SetGroupMemberAttributes {
        group_id: g.clone(),
        user_id: bom.clone(),
        // "__proto__" is a legal key and must stay a key in JS; "10" sorts before "9" on
        // the wire (byte order), after it in a JS object (integer-like keys first).
        member_attributes: [
            ("__proto__".to_string(), "p".to_string()),
            ("10".to_string(), uni.clone()),
            ("9".to_string(), empty.clone()),
            ("constructor".to_string(), esc.clone()),
        ]
        .into(),
    });
    out.push(Request::SetGroupMemberAttributes {
        group_id: g.clone(),
        user_id: empty.clone(),
        member_attributes: BTreeMap::new(),
    });
    out.push(Request::GetGroupMembersAttributes {
        group_id: g.clone(),
        user_ids: vec![],
        keys: vec![],
    });
    out.push(Request::GetJoinedGroups {
        page_num: 0,
        page_size: u32::MAX,
        need_affiliations: false,
        need_role: true,
    });
    out.push(Request::GetPublicGroups {
        limit: 251,
        cursor: None,
    });
    out.push(Request::GetGroupMsgReadUser {
        group_id: g.clone(),
        msg_id: long.clone(),
        limit: 250,
        cursor: Some(empty.clone()),
    });
    out.push(Request::SendGroupMessage {
        group_id: g.clone(),
        payload: (0..=255).collect(),
        allow_group_ack: false,
        client_msg_id: None,
    });
    out.push(Request::SendGroupMessage {
        group_id: g.clone(),
        payload: vec![],
        allow_group_ack: true,
        client_msg_id: Some(uni.clone()),
    });
    out.push(Request::GetGroupMessages {
        group_id: g.clone(),
        before: Some(u64::MAX),
        after: Some(0),
        limit: 0,
    });
    out.push(Request::GetGroupMessages {
        group_id: g,
        before: None,
        after: None,
        limit: 65_535,
    });
    out
}

fn client_frames() -> Vec<(String, ClientFrame)> {
    let mut out = vec![];
    let requests = Request::examples().into_iter().chain(extra_requests());
    for (i, request) in requests.enumerate() {
        let id = U64S[i % U64S.len()];
        let name = format!("request.{}", request.method());
        out.push((name, ClientFrame::Request { id, request }));
    }
    out
}

fn handshake_frames() -> (Cases<ClientFrame>, Cases<ServerFrame>) {
    let [empty, uni, _, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let client = vec![
        (
            "hello".to_string(),
            ClientFrame::Hello(Hello {
                versions: SUPPORTED_VERSIONS.to_vec(),
                token: "v1.alice.1700000000.c2lnbmF0dXJl".into(),
                device_id: "laptop-1".into(),
                events: true,
            }),
        ),
        (
            "hello.edges".to_string(),
            ClientFrame::Hello(Hello {
                versions: vec![0, 1, 250, 251, 65_536, u32::MAX],
                token: long,
                device_id: uni.clone(),
                events: false,
            }),
        ),
        (
            "hello.empty".to_string(),
            ClientFrame::Hello(Hello {
                versions: vec![],
                token: empty.clone(),
                device_id: empty.clone(),
                events: false,
            }),
        ),
        ("ack.empty".to_string(), ClientFrame::Ack { ids: vec![] }),
        ("ack".to_string(), ClientFrame::Ack { ids: U64S.to_vec() }),
    ];
    let mut server = vec![
        (
            "welcome".to_string(),
            ServerFrame::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                user_id: "alice".into(),
                app_admin: false,
                session_id: u64::MAX,
                server_time: 1_700_000_000_123,
            }),
        ),
        (
            "welcome.edges".to_string(),
            ServerFrame::Welcome(Welcome {
                version: u32::MAX,
                user_id: uni.clone(),
                app_admin: true,
                session_id: 0,
                server_time: -JS_SAFE,
            }),
        ),
    ];
    for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
        let message = [&uni, &esc, &empty][i % 3].clone();
        server.push((
            format!("refused.{}", code.name()),
            ServerFrame::Refused(ApiError::new(code, message)),
        ));
    }
    (client, server)
}

fn extra_responses() -> Vec<Response> {
    let [empty, uni, bom, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let info = GroupInfo {
        id: "18446744073709551615".into(),
        name: uni.clone(),
        description: long.clone(),
        owner: bom.clone(),
        created: -JS_SAFE,
        affiliations_count: u32::MAX,
        maxusers: 100_000,
        public: false,
        membersonly: true,
        allowinvites: false,
        invite_need_confirm: false,
        mute: true,
        custom: esc.clone(),
        shieldgroup: true,
        role: None,
    };
    let file = SharedFile {
        file_id: "9007199254740993".into(),
        file_name: uni.clone(),
        file_owner: empty.clone(),
        file_size: u64::MAX,
        created: JS_SAFE,
        content_type: empty.clone(),
        sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        secret: bom.clone(),
    };
    let mut admin_info = info.clone();
    admin_info.role = Some(Role::Admin);
    let mut member_info = info.clone();
    member_info.role = Some(Role::Member);
    vec![
        Response::Pong {
            nonce: u64::MAX,
            server_time: -1,
        },
        Response::GroupInfos { groups: vec![] },
        Response::GroupInfos {
            groups: vec![
                GroupInfoEntry {
                    group_id: empty.clone(),
                    info: Some(info),
                    error: None,
                },
                GroupInfoEntry {
                    group_id: "1".into(),
                    info: Some(admin_info),
                    error: None,
                },
                GroupInfoEntry {
                    group_id: "2".into(),
                    info: Some(member_info),
                    error: None,
                },
                GroupInfoEntry {
                    group_id: "x".into(),
                    info: None,
                    error: Some(ApiError::param(uni.clone())),
                },
            ],
        },
        Response::Members {
            members: vec![
                MemberEntry {
                    user_id: "o".into(),
                    role: Role::Owner,
                    joined_at: 0,
                },
                MemberEntry {
                    user_id: "a".into(),
                    role: Role::Admin,
                    joined_at: -126,
                },
            ],
        },
        Response::Invited {
            pending: vec![],
            joined: vec![uni.clone(), long.clone()],
        },
        Response::JoinResult { joined: false },
        Response::Mutes { mutes: vec![] },
        Response::Bool { value: false },
        Response::Announcement {
            announcement: empty.clone(),
        },
        Response::Files {
            files: vec![file.clone()],
        },
        Response::Attributes {
            attributes: BTreeMap::new(),
        },
        Response::MembersAttributes {
            members: [
                ("__proto__".to_string(), BTreeMap::new()),
                (
                    uni.clone(),
                    [
                        ("10".to_string(), esc.clone()),
                        ("9".to_string(), String::new()),
                    ]
                    .into(),
                ),
            ]
            .into(),
        },
        Response::JoinedGroups {
            groups: vec![
                JoinedGroup {
                    group_id: "1".into(),
                    group_name: empty.clone(),
                    affiliations_count: None,
                    role: Some(Role::Admin),
                },
                JoinedGroup {
                    group_id: "2".into(),
                    group_name: uni.clone(),
                    affiliations_count: Some(0),
                    role: Some(Role::Member),
                },
            ],
        },
        Response::PublicGroups {
            groups: vec![],
            cursor: None,
        },
        Response::ReadUsers {
            total: u32::MAX,
            users: vec![ReadUser {
                user_id: bom.clone(),
                read_at: JS_SAFE,
            }],
            cursor: Some(long.clone()),
        },
        Response::MessageSent {
            msg_id: "9007199254740993".into(),
            seq: u64::MAX,
            timestamp: -JS_SAFE,
        },
        Response::Messages { messages: vec![] },
        Response::Messages {
            messages: vec![GroupMessage {
                group_id: uni.clone(),
                msg_id: empty.clone(),
                seq: (1 << 53) + 1,
                from: esc,
                payload: (0..=255).rev().collect(),
                timestamp: 125,
                allow_group_ack: true,
            }],
        },
        Response::MutesPage {
            mutes: vec![
                MuteEntry {
                    user: uni,
                    expire: -1,
                },
                MuteEntry {
                    user: empty,
                    expire: JS_SAFE,
                },
            ],
            cursor: None,
        },
        Response::UsersPage {
            users: vec![],
            cursor: Some(long),
        },
    ]
}

fn response_frames() -> Vec<(String, ServerFrame)> {
    let mut out = vec![];
    let responses = Response::examples().into_iter().chain(extra_responses());
    for (i, response) in responses.enumerate() {
        let id = U64S[i % U64S.len()];
        let name = format!(
            "response.{}",
            response_name(&response, &mut Coverage::default())
        );
        out.push((
            name,
            ServerFrame::Response {
                id,
                result: Ok(response),
            },
        ));
    }
    for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
        out.push((
            format!("response.err.{}", code.name()),
            ServerFrame::Response {
                id: U64S[i % U64S.len()],
                result: Err(ApiError::new(code, format!("{} says no: ✗", code.name()))),
            },
        ));
    }
    out
}

fn response_name(r: &Response, cov: &mut Coverage) -> String {
    match response(r, cov) {
        J::Obj(fields) => match &fields[0].1 {
            J::Str(name) => name.clone(),
            other => panic!("tag is not a string: {other:?}"),
        },
        other => panic!("not an object: {other:?}"),
    }
}

fn pushes() -> Vec<(String, Push)> {
    let [empty, uni, bom, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let mut all = Push::examples();
    let event = |detail: EventDetail, timestamp: i64| GroupEvent {
        operation: GroupEventOp::UpdateInfo,
        group_id: "18446744073709551615".into(),
        group_name: uni.clone(),
        from: bom.clone(),
        users: vec![empty.clone(), long.clone()],
        detail,
        timestamp,
    };
    for (i, t) in I64S.into_iter().enumerate() {
        let detail = match i % 5 {
            0 => EventDetail::Text { text: esc.clone() },
            1 => EventDetail::Mute { expire: t },
            2 => EventDetail::Updated {
                group_name: Some(empty.clone()),
                description: Some(uni.clone()),
                ext: Some(long.clone()),
            },
            3 => EventDetail::Attributes {
                user_id: empty.clone(),
                attributes: [
                    ("__proto__".to_string(), String::new()),
                    ("10".to_string(), "ten".to_string()),
                    ("9".to_string(), uni.clone()),
                ]
                .into(),
            },
            _ => EventDetail::None,
        };
        all.push(Push::Group(event(detail, t)));
    }
    all.push(Push::Kept {
        id: 0,
        event: event(EventDetail::NewOwner { owner: esc.clone() }, -1),
    });
    all.push(Push::Kept {
        id: (1 << 53) + 1,
        event: event(
            EventDetail::FileId {
                file_id: long.clone(),
            },
            0,
        ),
    });
    all.push(Push::Message(GroupMessage {
        group_id: "1".into(),
        msg_id: "18446744073709551615".into(),
        seq: 0,
        from: uni.clone(),
        payload: vec![],
        timestamp: -JS_SAFE,
        allow_group_ack: true,
    }));
    all.push(Push::Closing {
        code: u32::MAX,
        reason: uni.clone(),
    });
    all.push(Push::Closing {
        code: close::NORMAL,
        reason: empty.clone(),
    });
    all.into_iter()
        .map(|p| {
            let name = match &p {
                Push::Group(e) => format!("group.{}.{}", e.operation, detail_name(&e.detail)),
                Push::MultiDevice(e) => {
                    format!("multiDevice.{}.{}", e.operation, detail_name(&e.detail))
                }
                Push::Message(_) => "message".to_string(),
                Push::Closing { .. } => "closing".to_string(),
                Push::Kept { event, .. } => format!("kept.{}", event.operation),
            };
            (name, p)
        })
        .collect()
}

fn detail_name(d: &EventDetail) -> String {
    match detail(d, &mut Coverage::default()) {
        J::Obj(fields) => match &fields[0].1 {
            J::Str(name) => name.clone(),
            other => panic!("tag is not a string: {other:?}"),
        },
        other => panic!("not an object: {other:?}"),
    }
}

fn transfers() -> (Cases<TransferHeader>, Cases<TransferReply>) {
    let [empty, uni, _, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let headers = vec![
        (
            "upload".to_string(),
            TransferHeader::Upload {
                group_id: "1234567".into(),
                file_name: "notes.txt".into(),
                size: 10 * 1024 * 1024,
                content_type: "text/plain".into(),
                upload_id: u64::MAX,
                resume: false,
            },
        ),
        (
            "upload.resume".to_string(),
            TransferHeader::Upload {
                group_id: empty.clone(),
                file_name: uni.clone(),
                size: 0,
                content_type: esc.clone(),
                upload_id: (1 << 53) + 1,
                resume: true,
            },
        ),
        (
            "download".to_string(),
            TransferHeader::Download {
                group_id: "1234567".into(),
                file_id: "77".into(),
                secret: None,
                offset: 0,
            },
        ),
        (
            "download.secret".to_string(),
            TransferHeader::Download {
                group_id: uni.clone(),
                file_id: "18446744073709551615".into(),
                secret: Some(long),
                offset: u64::MAX,
            },
        ),
    ];
    let file = SharedFile {
        file_id: "1".into(),
        file_name: uni.clone(),
        file_owner: "alice".into(),
        file_size: 10 * 1024 * 1024,
        created: 1_700_000_000_000,
        content_type: "application/octet-stream".into(),
        sha256: "00".repeat(32),
        secret: "s3cr3t".into(),
    };
    let replies = vec![
        ("outcome.ok".to_string(), TransferReply::Outcome(Ok(file))),
        (
            "outcome.err".to_string(),
            TransferReply::Outcome(Err(ApiError::new(ErrorCode::UploadFileError, uni))),
        ),
        (
            "resumeAt.0".to_string(),
            TransferReply::ResumeAt { offset: 0 },
        ),
        (
            "resumeAt.max".to_string(),
            TransferReply::ResumeAt { offset: u64::MAX },
        ),
        (
            "resumeAt.boundary".to_string(),
            TransferReply::ResumeAt { offset: 65_536 },
        ),
    ];
    (headers, replies)
}

// ---------------------------------------------------------------------------------------
// Files.

fn case<T: bincode::Encode>(name: &str, ty: &str, value: &T, json: J, max: usize) -> J {
    let frame = frame_bytes(value).unwrap();
    assert!(
        frame.len() - 4 <= max,
        "{ty} case {name} is {} bytes, over its limit {max}",
        frame.len() - 4
    );
    J::Obj(vec![
        ("name".into(), s(name)),
        ("type".into(), s(ty)),
        ("value".into(), json),
        ("hex".into(), J::Str(hex::encode(&frame))),
    ])
}

fn file(cases: Vec<J>) -> String {
    let j = J::Obj(vec![
        (
            "generatedBy".into(),
            s("protocol/tests/web_fixtures.rs: CONVOKE_UPDATE_FIXTURES=1 cargo test -p convoke-protocol --test web_fixtures"),
        ),
        ("cases".into(), J::Arr(cases)),
    ]);
    let mut out = String::new();
    render(&j, 0, &mut out);
    out.push('\n');
    out
}

fn constants() -> String {
    let codes = ErrorCode::ALL
        .iter()
        .map(|c| {
            J::Obj(vec![
                ("code".into(), J::Num(c.code().to_string())),
                ("name".into(), s(c.name())),
            ])
        })
        .collect();
    let close_codes = (0..=8u32)
        .map(|c| {
            J::Obj(vec![
                ("code".into(), u32n(c)),
                ("name".into(), s(close::name(c))),
            ])
        })
        .collect();
    let j = J::Obj(vec![
        (
            "generatedBy".into(),
            s("protocol/tests/web_fixtures.rs: CONVOKE_UPDATE_FIXTURES=1 cargo test -p convoke-protocol --test web_fixtures"),
        ),
        ("maxFrameLen".into(), J::Num(MAX_FRAME_LEN.to_string())),
        ("maxHelloLen".into(), J::Num(MAX_HELLO_LEN.to_string())),
        (
            "headerLen".into(),
            J::Num(convoke_protocol::codec::HEADER_LEN.to_string()),
        ),
        ("protocolVersion".into(), u32n(PROTOCOL_VERSION)),
        (
            "supportedVersions".into(),
            J::Arr(SUPPORTED_VERSIONS.iter().map(|v| u32n(*v)).collect()),
        ),
        ("maxAckIds".into(), J::Num(MAX_ACK_IDS.to_string())),
        (
            "alpn".into(),
            s(std::str::from_utf8(convoke_protocol::ALPN).unwrap()),
        ),
        ("transferCancelled".into(), u32n(CANCELLED)),
        ("chunkBytes".into(), J::Num(CHUNK_BYTES.to_string())),
        (
            "errorCodes".into(),
            J::Arr(codes),
        ),
        (
            "groupEventOps".into(),
            J::Arr(GroupEventOp::ALL.iter().map(|o| s(o.as_str())).collect()),
        ),
        (
            "roles".into(),
            J::Arr(
                [Role::Owner, Role::Admin, Role::Member]
                    .iter()
                    .map(|r| s(r.as_str()))
                    .collect(),
            ),
        ),
        ("closeCodes".into(), J::Arr(close_codes)),
    ]);
    let mut out = String::new();
    render(&j, 0, &mut out);
    out.push('\n');
    out
}

/// Every fixture file and its content, by file name.
fn fixtures() -> BTreeMap<&'static str, String> {
    let mut cov = Coverage::default();
    let mut files = BTreeMap::new();

    let requests = client_frames()
        .iter()
        .map(|(n, f)| {
            case(
                n,
                "ClientFrame",
                f,
                client_frame(f, &mut cov),
                MAX_FRAME_LEN,
            )
        })
        .collect();
    files.insert("requests.json", file(requests));

    let responses = response_frames()
        .iter()
        .map(|(n, f)| {
            case(
                n,
                "ServerFrame",
                f,
                server_frame(f, &mut cov),
                MAX_FRAME_LEN,
            )
        })
        .collect();
    files.insert("responses.json", file(responses));

    let (client, server) = handshake_frames();
    let mut handshake: Vec<J> = client
        .iter()
        .map(|(n, f)| {
            case(
                n,
                "ClientFrame",
                f,
                client_frame(f, &mut cov),
                MAX_HELLO_LEN,
            )
        })
        .collect();
    handshake.extend(server.iter().map(|(n, f)| {
        case(
            n,
            "ServerFrame",
            f,
            server_frame(f, &mut cov),
            MAX_FRAME_LEN,
        )
    }));
    files.insert("handshake.json", file(handshake));

    let events = pushes()
        .iter()
        .map(|(n, p)| case(n, "Push", p, push(p, &mut cov), MAX_FRAME_LEN))
        .collect();
    files.insert("events.json", file(events));

    let (headers, replies) = transfers();
    let mut transfer: Vec<J> = headers
        .iter()
        .map(|(n, h)| {
            let json = transfer_header(h, &mut cov);
            case(n, "TransferHeader", h, json, MAX_HELLO_LEN)
        })
        .collect();
    transfer.extend(replies.iter().map(|(n, r)| {
        let json = transfer_reply(r, &mut cov);
        case(n, "TransferReply", r, json, MAX_FRAME_LEN)
    }));
    files.insert("transfer.json", file(transfer));

    files.insert("constants.json", constants());

    cov.check::<Request>("Request");
    cov.check::<Response>("Response");
    cov.check::<Push>("Push");
    cov.check::<EventDetail>("EventDetail");
    cov.check::<GroupEventOp>("GroupEventOp");
    cov.check::<ErrorCode>("ErrorCode");
    cov.check::<Role>("Role");
    cov.check::<ClientFrame>("ClientFrame");
    cov.check::<ServerFrame>("ServerFrame");
    cov.check::<TransferHeader>("TransferHeader");
    cov.check::<TransferReply>("TransferReply");
    // Result<_, ApiError>: both arms, on both frames that carry one.
    let responses = response_frames();
    assert!(responses
        .iter()
        .any(|(_, f)| matches!(f, ServerFrame::Response { result: Ok(_), .. })));
    assert!(responses
        .iter()
        .any(|(_, f)| matches!(f, ServerFrame::Response { result: Err(_), .. })));
    files
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../client/web/test/fixtures")
}

#[test]
fn web_fixtures_match_the_wire_types() {
    let dir = fixture_dir();
    let files = fixtures();
    if std::env::var(UPDATE).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        eprintln!("wrote {} fixture files to {}", files.len(), dir.display());
    }
    let regen = format!(
        "the wire types changed: regenerate with `{UPDATE}=1 cargo test -p convoke-protocol \
         --test web_fixtures`, then make client/web/src/codec/ agree (`npm test` in client/web)"
    );
    for (name, want) in &files {
        let path = dir.join(name);
        let have = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} cannot be read ({e}); {regen}", path.display()));
        if &have != want {
            let line = have
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
            panic!(
                "{} differs from what the protocol types encode (first at line {}: committed {:?}, now {:?}); {regen}",
                path.display(),
                line + 1,
                have.lines().nth(line).unwrap_or("<end>"),
                want.lines().nth(line).unwrap_or("<end>"),
            );
        }
    }
    let mut stale = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !files.contains_key(name.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} in {} are no longer produced: delete them",
        dir.display()
    );
}

/// The fixtures' bytes decode back to the values with the Rust codec too (so a case is a
/// frame the broker and the Rust client accept).
#[test]
fn fixture_frames_decode_with_the_rust_codec() {
    use bytes::BytesMut;
    use convoke_protocol::codec::decode_frame;
    fn back<T>(name: &str, value: &T)
    where
        T: bincode::Encode + bincode::Decode<()> + PartialEq + std::fmt::Debug,
    {
        let mut buf = BytesMut::from(&frame_bytes(value).unwrap()[..]);
        let got: T = decode_frame(&mut buf, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(&got, value, "{name}");
    }
    for (n, f) in client_frames() {
        back(&n, &f);
    }
    for (n, f) in response_frames() {
        back(&n, &f);
    }
    let (c, s) = handshake_frames();
    c.iter().for_each(|(n, f)| back(n, f));
    s.iter().for_each(|(n, f)| back(n, f));
    for (n, p) in pushes() {
        back(&n, &p);
    }
    let (h, r) = transfers();
    h.iter().for_each(|(n, f)| back(n, f));
    r.iter().for_each(|(n, f)| back(n, f));
}
