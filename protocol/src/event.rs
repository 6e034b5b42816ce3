//! What the broker pushes to a client on its ordered event stream: `onGroupEvent`
//! notifications, multi-device notifications and group messages.

use crate::response::SharedFile;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

macro_rules! operations {
    ($($variant:ident => $wire:literal),* $(,)?) => {
        /// An `onGroupEvent` operation. [`GroupEventOp::as_str`] gives the seed's wire name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
        pub enum GroupEventOp {
            $(
                #[doc = concat!("`", $wire, "`")]
                #[serde(rename = $wire)]
                $variant,
            )*
        }

        impl GroupEventOp {
            /// Every operation of the contract.
            pub const ALL: &'static [GroupEventOp] = &[$(Self::$variant),*];

            /// The seed's camelCase name, e.g. `memberPresence`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)*
                }
            }
        }

        impl FromStr for GroupEventOp {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok(Self::$variant),)*
                    other => Err(format!("unknown group event operation {other:?}")),
                }
            }
        }
    };
}

operations! {
    Create => "create",
    Destroy => "destroy",
    RequestToJoin => "requestToJoin",
    AcceptRequest => "acceptRequest",
    JoinPublicGroupDeclined => "joinPublicGroupDeclined",
    InviteToJoin => "inviteToJoin",
    AcceptInvite => "acceptInvite",
    RejectInvite => "rejectInvite",
    DirectJoined => "directJoined",
    MemberPresence => "memberPresence",
    MemberAbsence => "memberAbsence",
    RemoveMember => "removeMember",
    UnblockMember => "unblockMember",
    UpdateInfo => "updateInfo",
    ChangeOwner => "changeOwner",
    SetAdmin => "setAdmin",
    RemoveAdmin => "removeAdmin",
    MuteMember => "muteMember",
    UnmuteMember => "unmuteMember",
    MuteAllMembers => "muteAllMembers",
    UnmuteAllMembers => "unmuteAllMembers",
    AddUserToAllowlist => "addUserToAllowlist",
    RemoveAllowlistMember => "removeAllowlistMember",
    UpdateAnnouncement => "updateAnnouncement",
    DeleteAnnouncement => "deleteAnnouncement",
    UploadFile => "uploadFile",
    DeleteFile => "deleteFile",
    MemberAttributesUpdate => "memberAttributesUpdate",
}

impl fmt::Display for GroupEventOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operation-specific part of an event.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum EventDetail {
    /// Nothing beyond the common fields.
    None,
    /// A join request's message, or a reason for a rejection.
    Text { text: String },
    /// changeOwner: the new owner.
    NewOwner { owner: String },
    /// muteMember: expiry in ms since the Unix epoch, -1 = forever.
    Mute { expire: i64 },
    /// updateInfo: the fields that changed.
    Updated {
        group_name: Option<String>,
        description: Option<String>,
        ext: Option<String>,
    },
    /// updateAnnouncement: the new text.
    Announcement { announcement: String },
    /// uploadFile.
    File { file: SharedFile },
    /// deleteFile.
    FileId { file_id: String },
    /// memberAttributesUpdate: whose attributes, and the keys set ("" = deleted).
    Attributes {
        user_id: String,
        attributes: BTreeMap<String, String>,
    },
}

/// One `onGroupEvent` notification.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct GroupEvent {
    pub operation: GroupEventOp,
    pub group_id: String,
    pub group_name: String,
    /// The operator (the user whose request caused the event).
    pub from: String,
    /// The affected users, when there are any.
    pub users: Vec<String>,
    pub detail: EventDetail,
    /// When the change was made, ms since the Unix epoch.
    pub timestamp: i64,
}

/// A group chat message.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct GroupMessage {
    pub group_id: String,
    pub msg_id: String,
    /// Per-group sequence number: every receiver sees one group's messages in this order.
    pub seq: u64,
    pub from: String,
    pub payload: Vec<u8>,
    /// Send time, ms since the Unix epoch.
    pub timestamp: i64,
    /// The sender asked for read receipts.
    pub allow_group_ack: bool,
}

impl GroupMessage {
    /// A sample message for tests.
    pub fn example() -> Self {
        Self {
            group_id: "12".into(),
            msg_id: "77".into(),
            seq: 3,
            from: "alice".into(),
            payload: b"hello".to_vec(),
            timestamp: 1_700_000_000_000,
            allow_group_ack: false,
        }
    }
}

/// A frame on the server-to-client event stream, in delivery order.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "push", rename_all = "camelCase")]
pub enum Push {
    /// `onGroupEvent`.
    Group(GroupEvent),
    /// `onMultiDeviceEvent`: the user's own action, made on another device.
    MultiDevice(GroupEvent),
    /// A group message.
    Message(GroupMessage),
    /// The broker is about to close this connection, and why.
    Closing { code: u32, reason: String },
    /// An `onGroupEvent` that changes the recipient's state (an invite, a join request and
    /// its outcome, a removal, a block, a destroy). The broker keeps it for the user until
    /// a client acknowledges `id` (`ClientFrame::Ack`), and sends it again at the user's
    /// next login until then, so it is delivered at least once even when the connection
    /// that first carried it was dead. The bundled client acknowledges it and hands the
    /// application a [`Push::Group`].
    Kept { id: u64, event: GroupEvent },
}

impl Push {
    /// One example of every variant, for round-trip tests.
    pub fn examples() -> Vec<Push> {
        let mut out = Vec::new();
        for op in GroupEventOp::ALL {
            out.push(Push::Group(GroupEvent {
                operation: *op,
                group_id: "12".into(),
                group_name: "n".into(),
                from: "alice".into(),
                users: vec!["bob".into()],
                detail: EventDetail::None,
                timestamp: 1,
            }));
        }
        let details = vec![
            EventDetail::Text { text: "t".into() },
            EventDetail::NewOwner {
                owner: "bob".into(),
            },
            EventDetail::Mute { expire: -1 },
            EventDetail::Updated {
                group_name: Some("x".into()),
                description: None,
                ext: None,
            },
            EventDetail::Announcement {
                announcement: "a".into(),
            },
            EventDetail::File {
                file: SharedFile {
                    file_id: "1".into(),
                    file_name: "f".into(),
                    file_owner: "a".into(),
                    file_size: 1,
                    created: 1,
                    content_type: "x/y".into(),
                    sha256: "ab".into(),
                    secret: "s".into(),
                },
            },
            EventDetail::FileId {
                file_id: "1".into(),
            },
            EventDetail::Attributes {
                user_id: "a".into(),
                attributes: [("k".to_string(), String::new())].into(),
            },
        ];
        for detail in details {
            out.push(Push::MultiDevice(GroupEvent {
                operation: GroupEventOp::MemberAttributesUpdate,
                group_id: "12".into(),
                group_name: "n".into(),
                from: "alice".into(),
                users: vec![],
                detail,
                timestamp: 2,
            }));
        }
        out.push(Push::Message(GroupMessage::example()));
        out.push(Push::Closing {
            code: crate::close::SLOW_CONSUMER,
            reason: "slow".into(),
        });
        out.push(Push::Kept {
            id: u64::MAX,
            event: GroupEvent {
                operation: GroupEventOp::InviteToJoin,
                group_id: "12".into(),
                group_name: "n".into(),
                from: "alice".into(),
                users: vec!["bob".into()],
                detail: EventDetail::None,
                timestamp: 3,
            },
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_cover_the_contract() {
        assert_eq!(GroupEventOp::ALL.len(), 28);
        for op in GroupEventOp::ALL {
            assert_eq!(op.as_str().parse::<GroupEventOp>().unwrap(), *op);
        }
        assert_eq!(GroupEventOp::MemberPresence.as_str(), "memberPresence");
        assert_eq!(
            serde_json_like(GroupEventOp::JoinPublicGroupDeclined),
            "joinPublicGroupDeclined"
        );
    }

    fn serde_json_like(op: GroupEventOp) -> &'static str {
        op.as_str()
    }
}
