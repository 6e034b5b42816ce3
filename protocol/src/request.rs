//! Requests: one variant per method of the contract (spec/group-api.md), named after the
//! seed's method, with the seed's parameter names in snake_case.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `data` of createGroup. Field names follow the seed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct CreateGroupData {
    /// 1..=128 characters.
    pub groupname: String,
    /// <= 512 characters.
    pub desc: String,
    /// Users added directly at creation (not the owner).
    pub members: Vec<String>,
    /// Listed by getPublicGroups; anyone may joinGroup.
    pub public: bool,
    /// joinGroup needs owner/admin approval (public groups). Stored as `membersonly`.
    pub approval: bool,
    /// Members (not only admins) may invite (private groups).
    pub allowinvites: bool,
    /// Invitees must accept; otherwise they are added directly.
    pub invite_need_confirm: bool,
    /// Includes the owner; 3..=server limit. `None` = 200.
    pub maxusers: Option<u32>,
    /// Opaque custom string (JSON allowed), <= 8 KiB.
    pub ext: String,
}

impl Default for CreateGroupData {
    fn default() -> Self {
        Self {
            groupname: String::new(),
            desc: String::new(),
            members: Vec::new(),
            public: false,
            approval: false,
            allowinvites: false,
            invite_need_confirm: true,
            maxusers: None,
            ext: String::new(),
        }
    }
}

/// How a request counts against a user's rate limits ([`Request::class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// Changes nothing: not rate limited.
    Read,
    /// Changes state (management, membership, attributes, file deletion).
    Change,
    /// sendGroupMessage, and ackGroupMessage: a read receipt per message read, so its
    /// volume follows the message traffic a user sees, not their management.
    Message,
}

/// One request of the group API. Each has a client method of the same name in snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "camelCase")]
pub enum Request {
    /// Round trip for health checks and latency; answered with [`crate::Response::Pong`].
    Ping {
        nonce: u64,
    },
    CreateGroup {
        data: CreateGroupData,
    },
    DestroyGroup {
        group_id: String,
    },
    /// One id or a list (<= 100).
    GetGroupInfo {
        group_ids: Vec<String>,
    },
    ModifyGroup {
        group_id: String,
        group_name: Option<String>,
        description: Option<String>,
        ext: Option<String>,
    },
    ChangeGroupOwner {
        group_id: String,
        new_owner: String,
    },
    ListGroupMembers {
        group_id: String,
        page_num: u32,
        page_size: u32,
    },
    GetGroupAdmin {
        group_id: String,
    },
    SetGroupAdmin {
        group_id: String,
        username: String,
    },
    RemoveGroupAdmin {
        group_id: String,
        username: String,
    },
    InviteUsersToGroup {
        group_id: String,
        users: Vec<String>,
    },
    AcceptGroupInvite {
        group_id: String,
        invitee: String,
    },
    RejectGroupInvite {
        group_id: String,
        invitee: String,
    },
    JoinGroup {
        group_id: String,
        message: String,
    },
    AcceptGroupJoinRequest {
        group_id: String,
        applicant: String,
    },
    RejectGroupJoinRequest {
        group_id: String,
        applicant: String,
        reason: String,
    },
    LeaveGroup {
        group_id: String,
    },
    RemoveGroupMember {
        group_id: String,
        username: String,
    },
    RemoveGroupMembers {
        group_id: String,
        users: Vec<String>,
    },
    /// `mute_duration` in ms: -1 forever, else > 0.
    MuteGroupMember {
        group_id: String,
        username: Vec<String>,
        mute_duration: i64,
    },
    UnmuteGroupMember {
        group_id: String,
        username: Vec<String>,
    },
    GetGroupMutelist {
        group_id: String,
    },
    IsInGroupMutelist {
        group_id: String,
    },
    DisableSendGroupMsg {
        group_id: String,
    },
    EnableSendGroupMsg {
        group_id: String,
    },
    BlockGroupMember {
        group_id: String,
        username: String,
    },
    BlockGroupMembers {
        group_id: String,
        usernames: Vec<String>,
    },
    UnblockGroupMember {
        group_id: String,
        username: String,
    },
    UnblockGroupMembers {
        group_id: String,
        usernames: Vec<String>,
    },
    GetGroupBlocklist {
        group_id: String,
    },
    AddUsersToGroupAllowlist {
        group_id: String,
        users: Vec<String>,
    },
    RemoveGroupAllowlistMember {
        group_id: String,
        user_name: String,
    },
    GetGroupAllowlist {
        group_id: String,
    },
    IsInGroupAllowlist {
        group_id: String,
        user_name: String,
    },
    FetchGroupAnnouncement {
        group_id: String,
    },
    UpdateGroupAnnouncement {
        group_id: String,
        announcement: String,
    },
    DeleteGroupSharedFile {
        group_id: String,
        file_id: String,
    },
    GetGroupSharedFilelist {
        group_id: String,
        page_num: u32,
        page_size: u32,
    },
    /// A value of "" deletes the key.
    SetGroupMemberAttributes {
        group_id: String,
        user_id: String,
        member_attributes: BTreeMap<String, String>,
    },
    GetGroupMemberAttributes {
        group_id: String,
        user_id: String,
    },
    /// `keys` empty = all keys.
    GetGroupMembersAttributes {
        group_id: String,
        user_ids: Vec<String>,
        keys: Vec<String>,
    },
    GetJoinedGroups {
        page_num: u32,
        page_size: u32,
        need_affiliations: bool,
        need_role: bool,
    },
    /// `cursor` None = first page.
    GetPublicGroups {
        limit: u32,
        cursor: Option<String>,
    },
    BlockGroupMessages {
        group_id: String,
    },
    UnblockGroupMessages {
        group_id: String,
    },
    /// Readers of a message, paged by `cursor` (None = first page).
    GetGroupMsgReadUser {
        group_id: String,
        msg_id: String,
        limit: u32,
        cursor: Option<String>,
    },
    /// `client_msg_id` (1 to [`crate::limits::MAX_CLIENT_MSG_ID_BYTES`] bytes) makes the
    /// send idempotent: the broker remembers it per group and sender for its dedup window
    /// and answers a repeated send with the original message's id, seq and timestamp,
    /// storing nothing new. A client retries with the same id when it cannot know whether
    /// an earlier attempt was stored (the connection dropped before the answer).
    SendGroupMessage {
        group_id: String,
        payload: Vec<u8>,
        allow_group_ack: bool,
        client_msg_id: Option<String>,
    },
    AckGroupMessage {
        group_id: String,
        msg_id: String,
    },
    /// History by sequence: messages with seq > `after`, or seq < `before`, at most `limit`.
    GetGroupMessages {
        group_id: String,
        before: Option<u64>,
        after: Option<u64>,
        limit: u32,
    },
    /// getGroupMutelist, paged: at most `limit` (1 to [`crate::limits::MAX_LIST_PAGE`])
    /// muted users ordered by user id, after `cursor` (the last user id of the previous
    /// page; None = first page). Answered with [`crate::Response::MutesPage`].
    GetGroupMutelistPage {
        group_id: String,
        limit: u32,
        cursor: Option<String>,
    },
    /// getGroupBlocklist, paged like [`Request::GetGroupMutelistPage`]; answered with
    /// [`crate::Response::UsersPage`].
    GetGroupBlocklistPage {
        group_id: String,
        limit: u32,
        cursor: Option<String>,
    },
    /// getGroupAllowlist, paged like [`Request::GetGroupMutelistPage`]; answered with
    /// [`crate::Response::UsersPage`].
    GetGroupAllowlistPage {
        group_id: String,
        limit: u32,
        cursor: Option<String>,
    },
}

impl Request {
    /// The seed's method name (camelCase), used in errors, logs and metrics.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Ping { .. } => "ping",
            Self::CreateGroup { .. } => "createGroup",
            Self::DestroyGroup { .. } => "destroyGroup",
            Self::GetGroupInfo { .. } => "getGroupInfo",
            Self::ModifyGroup { .. } => "modifyGroup",
            Self::ChangeGroupOwner { .. } => "changeGroupOwner",
            Self::ListGroupMembers { .. } => "listGroupMembers",
            Self::GetGroupAdmin { .. } => "getGroupAdmin",
            Self::SetGroupAdmin { .. } => "setGroupAdmin",
            Self::RemoveGroupAdmin { .. } => "removeGroupAdmin",
            Self::InviteUsersToGroup { .. } => "inviteUsersToGroup",
            Self::AcceptGroupInvite { .. } => "acceptGroupInvite",
            Self::RejectGroupInvite { .. } => "rejectGroupInvite",
            Self::JoinGroup { .. } => "joinGroup",
            Self::AcceptGroupJoinRequest { .. } => "acceptGroupJoinRequest",
            Self::RejectGroupJoinRequest { .. } => "rejectGroupJoinRequest",
            Self::LeaveGroup { .. } => "leaveGroup",
            Self::RemoveGroupMember { .. } => "removeGroupMember",
            Self::RemoveGroupMembers { .. } => "removeGroupMembers",
            Self::MuteGroupMember { .. } => "muteGroupMember",
            Self::UnmuteGroupMember { .. } => "unmuteGroupMember",
            Self::GetGroupMutelist { .. } => "getGroupMutelist",
            Self::IsInGroupMutelist { .. } => "isInGroupMutelist",
            Self::DisableSendGroupMsg { .. } => "disableSendGroupMsg",
            Self::EnableSendGroupMsg { .. } => "enableSendGroupMsg",
            Self::BlockGroupMember { .. } => "blockGroupMember",
            Self::BlockGroupMembers { .. } => "blockGroupMembers",
            Self::UnblockGroupMember { .. } => "unblockGroupMember",
            Self::UnblockGroupMembers { .. } => "unblockGroupMembers",
            Self::GetGroupBlocklist { .. } => "getGroupBlocklist",
            Self::AddUsersToGroupAllowlist { .. } => "addUsersToGroupAllowlist",
            Self::RemoveGroupAllowlistMember { .. } => "removeGroupAllowlistMember",
            Self::GetGroupAllowlist { .. } => "getGroupAllowlist",
            Self::IsInGroupAllowlist { .. } => "isInGroupAllowlist",
            Self::FetchGroupAnnouncement { .. } => "fetchGroupAnnouncement",
            Self::UpdateGroupAnnouncement { .. } => "updateGroupAnnouncement",
            Self::DeleteGroupSharedFile { .. } => "deleteGroupSharedFile",
            Self::GetGroupSharedFilelist { .. } => "getGroupSharedFilelist",
            Self::SetGroupMemberAttributes { .. } => "setGroupMemberAttributes",
            Self::GetGroupMemberAttributes { .. } => "getGroupMemberAttributes",
            Self::GetGroupMembersAttributes { .. } => "getGroupMembersAttributes",
            Self::GetJoinedGroups { .. } => "getJoinedGroups",
            Self::GetPublicGroups { .. } => "getPublicGroups",
            Self::BlockGroupMessages { .. } => "blockGroupMessages",
            Self::UnblockGroupMessages { .. } => "unblockGroupMessages",
            Self::GetGroupMsgReadUser { .. } => "getGroupMsgReadUser",
            Self::SendGroupMessage { .. } => "sendGroupMessage",
            Self::AckGroupMessage { .. } => "ackGroupMessage",
            Self::GetGroupMessages { .. } => "getGroupMessages",
            Self::GetGroupMutelistPage { .. } => "getGroupMutelistPage",
            Self::GetGroupBlocklistPage { .. } => "getGroupBlocklistPage",
            Self::GetGroupAllowlistPage { .. } => "getGroupAllowlistPage",
        }
    }

    /// What the request does, for per-user rate limits: reads are not limited, sends and
    /// acks are limited as messages, everything else as a state-changing request.
    pub fn class(&self) -> RequestClass {
        match self {
            Self::SendGroupMessage { .. } | Self::AckGroupMessage { .. } => RequestClass::Message,
            Self::Ping { .. }
            | Self::GetGroupInfo { .. }
            | Self::ListGroupMembers { .. }
            | Self::GetGroupAdmin { .. }
            | Self::GetGroupMutelist { .. }
            | Self::IsInGroupMutelist { .. }
            | Self::GetGroupBlocklist { .. }
            | Self::GetGroupAllowlist { .. }
            | Self::IsInGroupAllowlist { .. }
            | Self::FetchGroupAnnouncement { .. }
            | Self::GetGroupSharedFilelist { .. }
            | Self::GetGroupMemberAttributes { .. }
            | Self::GetGroupMembersAttributes { .. }
            | Self::GetJoinedGroups { .. }
            | Self::GetPublicGroups { .. }
            | Self::GetGroupMsgReadUser { .. }
            | Self::GetGroupMessages { .. }
            | Self::GetGroupMutelistPage { .. }
            | Self::GetGroupBlocklistPage { .. }
            | Self::GetGroupAllowlistPage { .. } => RequestClass::Read,
            _ => RequestClass::Change,
        }
    }

    /// The group this request addresses, if it addresses exactly one.
    ///
    /// `None` for requests served outside a group actor (ping, createGroup, getGroupInfo,
    /// getJoinedGroups, getPublicGroups).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            Self::Ping { .. }
            | Self::CreateGroup { .. }
            | Self::GetGroupInfo { .. }
            | Self::GetJoinedGroups { .. }
            | Self::GetPublicGroups { .. } => None,
            Self::DestroyGroup { group_id }
            | Self::ModifyGroup { group_id, .. }
            | Self::ChangeGroupOwner { group_id, .. }
            | Self::ListGroupMembers { group_id, .. }
            | Self::GetGroupAdmin { group_id }
            | Self::SetGroupAdmin { group_id, .. }
            | Self::RemoveGroupAdmin { group_id, .. }
            | Self::InviteUsersToGroup { group_id, .. }
            | Self::AcceptGroupInvite { group_id, .. }
            | Self::RejectGroupInvite { group_id, .. }
            | Self::JoinGroup { group_id, .. }
            | Self::AcceptGroupJoinRequest { group_id, .. }
            | Self::RejectGroupJoinRequest { group_id, .. }
            | Self::LeaveGroup { group_id }
            | Self::RemoveGroupMember { group_id, .. }
            | Self::RemoveGroupMembers { group_id, .. }
            | Self::MuteGroupMember { group_id, .. }
            | Self::UnmuteGroupMember { group_id, .. }
            | Self::GetGroupMutelist { group_id }
            | Self::IsInGroupMutelist { group_id }
            | Self::DisableSendGroupMsg { group_id }
            | Self::EnableSendGroupMsg { group_id }
            | Self::BlockGroupMember { group_id, .. }
            | Self::BlockGroupMembers { group_id, .. }
            | Self::UnblockGroupMember { group_id, .. }
            | Self::UnblockGroupMembers { group_id, .. }
            | Self::GetGroupBlocklist { group_id }
            | Self::AddUsersToGroupAllowlist { group_id, .. }
            | Self::RemoveGroupAllowlistMember { group_id, .. }
            | Self::GetGroupAllowlist { group_id }
            | Self::IsInGroupAllowlist { group_id, .. }
            | Self::FetchGroupAnnouncement { group_id }
            | Self::UpdateGroupAnnouncement { group_id, .. }
            | Self::DeleteGroupSharedFile { group_id, .. }
            | Self::GetGroupSharedFilelist { group_id, .. }
            | Self::SetGroupMemberAttributes { group_id, .. }
            | Self::GetGroupMemberAttributes { group_id, .. }
            | Self::GetGroupMembersAttributes { group_id, .. }
            | Self::BlockGroupMessages { group_id }
            | Self::UnblockGroupMessages { group_id }
            | Self::GetGroupMsgReadUser { group_id, .. }
            | Self::SendGroupMessage { group_id, .. }
            | Self::AckGroupMessage { group_id, .. }
            | Self::GetGroupMessages { group_id, .. }
            | Self::GetGroupMutelistPage { group_id, .. }
            | Self::GetGroupBlocklistPage { group_id, .. }
            | Self::GetGroupAllowlistPage { group_id, .. } => Some(group_id),
        }
    }

    /// One example of every variant, for round-trip tests and documentation.
    pub fn examples() -> Vec<Request> {
        let g = || "1234567".to_string();
        let u = |s: &str| s.to_string();
        vec![
            Self::Ping { nonce: 9 },
            Self::CreateGroup {
                data: CreateGroupData {
                    groupname: u("game night"),
                    desc: u("this is my group"),
                    members: vec![u("user1"), u("user2")],
                    public: true,
                    approval: false,
                    allowinvites: true,
                    invite_need_confirm: false,
                    maxusers: Some(500),
                    ext: u("{\"info\":\"group info\"}"),
                },
            },
            Self::DestroyGroup { group_id: g() },
            Self::GetGroupInfo {
                group_ids: vec![g(), u("99")],
            },
            Self::ModifyGroup {
                group_id: g(),
                group_name: Some(u("new")),
                description: None,
                ext: Some(u("{}")),
            },
            Self::ChangeGroupOwner {
                group_id: g(),
                new_owner: u("user1"),
            },
            Self::ListGroupMembers {
                group_id: g(),
                page_num: 1,
                page_size: 20,
            },
            Self::GetGroupAdmin { group_id: g() },
            Self::SetGroupAdmin {
                group_id: g(),
                username: u("user1"),
            },
            Self::RemoveGroupAdmin {
                group_id: g(),
                username: u("user1"),
            },
            Self::InviteUsersToGroup {
                group_id: g(),
                users: vec![u("a"), u("b")],
            },
            Self::AcceptGroupInvite {
                group_id: g(),
                invitee: u("me"),
            },
            Self::RejectGroupInvite {
                group_id: g(),
                invitee: u("me"),
            },
            Self::JoinGroup {
                group_id: g(),
                message: u("let me in"),
            },
            Self::AcceptGroupJoinRequest {
                group_id: g(),
                applicant: u("user1"),
            },
            Self::RejectGroupJoinRequest {
                group_id: g(),
                applicant: u("user1"),
                reason: u("I do not like you"),
            },
            Self::LeaveGroup { group_id: g() },
            Self::RemoveGroupMember {
                group_id: g(),
                username: u("user1"),
            },
            Self::RemoveGroupMembers {
                group_id: g(),
                users: vec![u("a"), u("b")],
            },
            Self::MuteGroupMember {
                group_id: g(),
                username: vec![u("a")],
                mute_duration: -1,
            },
            Self::UnmuteGroupMember {
                group_id: g(),
                username: vec![u("a")],
            },
            Self::GetGroupMutelist { group_id: g() },
            Self::IsInGroupMutelist { group_id: g() },
            Self::DisableSendGroupMsg { group_id: g() },
            Self::EnableSendGroupMsg { group_id: g() },
            Self::BlockGroupMember {
                group_id: g(),
                username: u("a"),
            },
            Self::BlockGroupMembers {
                group_id: g(),
                usernames: vec![u("a")],
            },
            Self::UnblockGroupMember {
                group_id: g(),
                username: u("a"),
            },
            Self::UnblockGroupMembers {
                group_id: g(),
                usernames: vec![u("a")],
            },
            Self::GetGroupBlocklist { group_id: g() },
            Self::AddUsersToGroupAllowlist {
                group_id: g(),
                users: vec![u("a")],
            },
            Self::RemoveGroupAllowlistMember {
                group_id: g(),
                user_name: u("a"),
            },
            Self::GetGroupAllowlist { group_id: g() },
            Self::IsInGroupAllowlist {
                group_id: g(),
                user_name: u("a"),
            },
            Self::FetchGroupAnnouncement { group_id: g() },
            Self::UpdateGroupAnnouncement {
                group_id: g(),
                announcement: u("hello"),
            },
            Self::DeleteGroupSharedFile {
                group_id: g(),
                file_id: u("77"),
            },
            Self::GetGroupSharedFilelist {
                group_id: g(),
                page_num: 1,
                page_size: 10,
            },
            Self::SetGroupMemberAttributes {
                group_id: g(),
                user_id: u("a"),
                member_attributes: [(u("nickname"), u("Al")), (u("avatar"), u(""))].into(),
            },
            Self::GetGroupMemberAttributes {
                group_id: g(),
                user_id: u("a"),
            },
            Self::GetGroupMembersAttributes {
                group_id: g(),
                user_ids: vec![u("a")],
                keys: vec![u("nickname")],
            },
            Self::GetJoinedGroups {
                page_num: 0,
                page_size: 20,
                need_affiliations: true,
                need_role: false,
            },
            Self::GetPublicGroups {
                limit: 20,
                cursor: Some(u("c1")),
            },
            Self::BlockGroupMessages { group_id: g() },
            Self::UnblockGroupMessages { group_id: g() },
            Self::GetGroupMsgReadUser {
                group_id: g(),
                msg_id: u("5"),
                limit: 50,
                cursor: None,
            },
            Self::SendGroupMessage {
                group_id: g(),
                payload: b"hi".to_vec(),
                allow_group_ack: true,
                client_msg_id: Some(u("c-1")),
            },
            Self::AckGroupMessage {
                group_id: g(),
                msg_id: u("5"),
            },
            Self::GetGroupMessages {
                group_id: g(),
                before: None,
                after: Some(3),
                limit: 100,
            },
            Self::GetGroupMutelistPage {
                group_id: g(),
                limit: 100,
                cursor: None,
            },
            Self::GetGroupBlocklistPage {
                group_id: g(),
                limit: 100,
                cursor: Some(u("a")),
            },
            Self::GetGroupAllowlistPage {
                group_id: g(),
                limit: 1,
                cursor: None,
            },
        ]
    }
}
