//! Responses: what a successful request returns. Each request has one expected variant;
//! [`Response::Done`] answers requests that return nothing but success.

use crate::error::ApiError;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A user's role inside a group.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Exactly one per group.
    Owner,
    /// At most 99 per group.
    Admin,
    /// Everyone else in the roster.
    Member,
}

impl Role {
    /// "owner", "admin" or "member".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// getGroupInfo, per group.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner: String,
    /// Creation time, ms since the Unix epoch.
    pub created: i64,
    /// Members including the owner.
    pub affiliations_count: u32,
    pub maxusers: u32,
    pub public: bool,
    /// Joining needs approval (createGroup's `approval`).
    pub membersonly: bool,
    pub allowinvites: bool,
    pub invite_need_confirm: bool,
    /// Mute-all is on.
    pub mute: bool,
    /// createGroup's `ext`.
    pub custom: String,
    /// The caller blocked this group's messages.
    pub shieldgroup: bool,
    /// The caller's role, `None` if the caller is not a member.
    pub role: Option<Role>,
}

/// One id of a getGroupInfo call: its info or why it has none.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct GroupInfoEntry {
    pub group_id: String,
    pub info: Option<GroupInfo>,
    pub error: Option<ApiError>,
}

/// listGroupMembers entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct MemberEntry {
    pub user_id: String,
    pub role: Role,
    /// Join time, ms since the Unix epoch.
    pub joined_at: i64,
}

/// A mute-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct MuteEntry {
    pub user: String,
    /// Expiry in ms since the Unix epoch; -1 = forever.
    pub expire: i64,
}

/// A shared file's index entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct SharedFile {
    pub file_id: String,
    pub file_name: String,
    pub file_owner: String,
    pub file_size: u64,
    /// Upload completion, ms since the Unix epoch.
    pub created: i64,
    pub content_type: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// The file's download secret (random, per file). Only members ever see an entry, and
    /// members may download without it; a download that names a secret must name this one.
    pub secret: String,
}

/// getJoinedGroups entry. `affiliations_count` and `role` are set when asked for.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct JoinedGroup {
    pub group_id: String,
    pub group_name: String,
    pub affiliations_count: Option<u32>,
    pub role: Option<Role>,
}

/// getPublicGroups entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct PublicGroup {
    pub group_id: String,
    pub group_name: String,
}

/// A reader of a message (getGroupMsgReadUser).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct ReadUser {
    pub user_id: String,
    /// When the receipt arrived, ms since the Unix epoch.
    pub read_at: i64,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Response {
    /// Success with nothing to return.
    Done,
    /// Answer to ping; `server_time` in ms since the Unix epoch.
    Pong { nonce: u64, server_time: i64 },
    /// createGroup.
    GroupCreated { group_id: String },
    /// getGroupInfo, in the order asked.
    GroupInfos { groups: Vec<GroupInfoEntry> },
    /// listGroupMembers.
    Members { members: Vec<MemberEntry> },
    /// getGroupAdmin, getGroupBlocklist, getGroupAllowlist.
    Users { users: Vec<String> },
    /// inviteUsersToGroup: who got a pending invite, who joined directly.
    Invited {
        pending: Vec<String>,
        joined: Vec<String>,
    },
    /// joinGroup: `joined` is false when the request awaits approval.
    JoinResult { joined: bool },
    /// muteGroupMember and getGroupMutelist.
    Mutes { mutes: Vec<MuteEntry> },
    /// isInGroupMutelist, isInGroupAllowlist.
    Bool { value: bool },
    /// fetchGroupAnnouncement.
    Announcement { announcement: String },
    /// getGroupSharedFilelist.
    Files { files: Vec<SharedFile> },
    /// getGroupMemberAttributes.
    Attributes {
        attributes: BTreeMap<String, String>,
    },
    /// getGroupMembersAttributes: user id -> attributes.
    MembersAttributes {
        members: BTreeMap<String, BTreeMap<String, String>>,
    },
    /// getJoinedGroups.
    JoinedGroups { groups: Vec<JoinedGroup> },
    /// getPublicGroups; `cursor` is None on the last page.
    PublicGroups {
        groups: Vec<PublicGroup>,
        cursor: Option<String>,
    },
    /// getGroupMsgReadUser; `cursor` is None on the last page.
    ReadUsers {
        total: u32,
        users: Vec<ReadUser>,
        cursor: Option<String>,
    },
    /// sendGroupMessage.
    MessageSent {
        msg_id: String,
        seq: u64,
        timestamp: i64,
    },
    /// getGroupMessages, in sequence order.
    Messages {
        messages: Vec<crate::event::GroupMessage>,
    },
    /// getGroupMutelistPage, by user id; `cursor` is None on the last page.
    MutesPage {
        mutes: Vec<MuteEntry>,
        cursor: Option<String>,
    },
    /// getGroupBlocklistPage, getGroupAllowlistPage, by user id; `cursor` is None on the
    /// last page.
    UsersPage {
        users: Vec<String>,
        cursor: Option<String>,
    },
}

impl Response {
    /// One example of every variant, for round-trip tests.
    pub fn examples() -> Vec<Response> {
        let info = GroupInfo {
            id: "12".into(),
            name: "n".into(),
            description: "d".into(),
            owner: "o".into(),
            created: 1_700_000_000_000,
            affiliations_count: 3,
            maxusers: 200,
            public: true,
            membersonly: false,
            allowinvites: true,
            invite_need_confirm: true,
            mute: false,
            custom: "{}".into(),
            shieldgroup: false,
            role: Some(Role::Owner),
        };
        vec![
            Self::Done,
            Self::Pong {
                nonce: 1,
                server_time: 2,
            },
            Self::GroupCreated {
                group_id: "12".into(),
            },
            Self::GroupInfos {
                groups: vec![
                    GroupInfoEntry {
                        group_id: "12".into(),
                        info: Some(info),
                        error: None,
                    },
                    GroupInfoEntry {
                        group_id: "13".into(),
                        info: None,
                        error: Some(ApiError::no_group("13")),
                    },
                ],
            },
            Self::Members {
                members: vec![MemberEntry {
                    user_id: "a".into(),
                    role: Role::Member,
                    joined_at: 5,
                }],
            },
            Self::Users {
                users: vec!["a".into()],
            },
            Self::Invited {
                pending: vec!["a".into()],
                joined: vec![],
            },
            Self::JoinResult { joined: true },
            Self::Mutes {
                mutes: vec![MuteEntry {
                    user: "a".into(),
                    expire: -1,
                }],
            },
            Self::Bool { value: true },
            Self::Announcement {
                announcement: "hi".into(),
            },
            Self::Files {
                files: vec![SharedFile {
                    file_id: "1".into(),
                    file_name: "a.txt".into(),
                    file_owner: "a".into(),
                    file_size: 10,
                    created: 3,
                    content_type: "text/plain".into(),
                    sha256: "00".into(),
                    secret: "s".into(),
                }],
            },
            Self::Attributes {
                attributes: [("k".to_string(), "v".to_string())].into(),
            },
            Self::MembersAttributes {
                members: [("a".to_string(), [("k".to_string(), "v".to_string())].into())].into(),
            },
            Self::JoinedGroups {
                groups: vec![JoinedGroup {
                    group_id: "12".into(),
                    group_name: "n".into(),
                    affiliations_count: Some(3),
                    role: None,
                }],
            },
            Self::PublicGroups {
                groups: vec![PublicGroup {
                    group_id: "12".into(),
                    group_name: "n".into(),
                }],
                cursor: Some("12".into()),
            },
            Self::ReadUsers {
                total: 1,
                users: vec![ReadUser {
                    user_id: "a".into(),
                    read_at: 9,
                }],
                cursor: None,
            },
            Self::MessageSent {
                msg_id: "7".into(),
                seq: 1,
                timestamp: 4,
            },
            Self::Messages {
                messages: vec![crate::event::GroupMessage::example()],
            },
            Self::MutesPage {
                mutes: vec![MuteEntry {
                    user: "a".into(),
                    expire: 7,
                }],
                cursor: Some("a".into()),
            },
            Self::UsersPage {
                users: vec!["a".into()],
                cursor: None,
            },
        ]
    }
}
