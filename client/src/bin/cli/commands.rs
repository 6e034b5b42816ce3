//! The subcommands: every method of the group API in kebab-case (`create-group`,
//! `invite-users-to-group`, ...), with the seed's parameter names as kebab-case flags, plus
//! `ping` and `watch`. Lists are comma-separated; boolean flags take an optional explicit
//! value (`--public`, `--public true`, `--invite-need-confirm false`).

use super::args::{
    parse_attributes, Attributes, GroupApplicant, GroupFile, GroupId, GroupInvitee, GroupListPage,
    GroupUser, GroupUsernames, GroupUsers,
};
use clap::{ArgAction, Args, Subcommand};
use convoke_protocol::CreateGroupData;
use std::path::PathBuf;

/// createGroup's `data`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CreateGroupArgs {
    /// Group name, 1-128 characters.
    #[arg(long)]
    pub groupname: String,
    /// Description, at most 512 characters.
    #[arg(long, default_value = "")]
    pub desc: String,
    /// Users added directly at creation, comma-separated (not the owner).
    #[arg(long, value_delimiter = ',')]
    pub members: Vec<String>,
    /// Listed by get-public-groups; anyone may join-group.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub public: bool,
    /// Joining a public group needs approval by the owner or an admin.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub approval: bool,
    /// Members (not only admins) may invite, in a private group.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub allowinvites: bool,
    /// Invitees must accept; with false they are added directly.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = ArgAction::Set)]
    pub invite_need_confirm: bool,
    /// Maximum members including the owner [broker default: 200].
    #[arg(long)]
    pub maxusers: Option<u32>,
    /// Opaque custom string (JSON allowed), at most 8 KiB.
    #[arg(long, default_value = "")]
    pub ext: String,
}

impl CreateGroupArgs {
    /// The request's `data`.
    pub(crate) fn into_data(self) -> CreateGroupData {
        CreateGroupData {
            groupname: self.groupname,
            desc: self.desc,
            members: self.members,
            public: self.public,
            approval: self.approval,
            allowinvites: self.allowinvites,
            invite_need_confirm: self.invite_need_confirm,
            maxusers: self.maxusers,
            ext: self.ext,
        }
    }
}

/// One call of the group API (or a utility).
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Command {
    /// Measure round trips to the broker; prints {"count", "rtt_ms": [...], "min_ms", "avg_ms", "max_ms"}.
    Ping {
        /// Round trips to make.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
    /// Print every push (group events, multi-device events, messages) as one JSON line, until Ctrl-C or the client gives up; reconnects by itself (connection states go to stderr) and hands on the messages missed meanwhile.
    Watch {
        /// Exit after this many pushes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Create a group owned by you; prints its id.
    CreateGroup(CreateGroupArgs),
    /// Destroy a group (owner).
    DestroyGroup(GroupId),
    /// Show groups' details; unknown ids get an error entry.
    GetGroupInfo {
        /// Group ids, comma-separated (at most 100).
        #[arg(long, value_delimiter = ',', required = true)]
        group_id: Vec<String>,
    },
    /// Change a group's name, description or ext (owner, admin).
    ModifyGroup {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// New name.
        #[arg(long)]
        group_name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// New ext.
        #[arg(long)]
        ext: Option<String>,
    },
    /// Transfer ownership to a member (owner).
    ChangeGroupOwner {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The member who becomes owner.
        #[arg(long)]
        new_owner: String,
    },
    /// List a group's members, a page at a time.
    ListGroupMembers {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page_num: u32,
        /// Members per page, 1-1000.
        #[arg(long, default_value_t = 20)]
        page_size: u32,
    },
    /// List a group's admins.
    GetGroupAdmin(GroupId),
    /// Make a member an admin (owner).
    SetGroupAdmin(GroupUser),
    /// Demote an admin (owner).
    RemoveGroupAdmin(GroupUser),
    /// Invite users; prints who is pending and who joined directly.
    InviteUsersToGroup(GroupUsers),
    /// Accept an invitation.
    AcceptGroupInvite(GroupInvitee),
    /// Decline an invitation.
    RejectGroupInvite(GroupInvitee),
    /// Join a public group (or ask to); prints true when joined at once.
    JoinGroup {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Note to the approvers.
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Accept a join request (owner, admin).
    AcceptGroupJoinRequest(GroupApplicant),
    /// Decline a join request (owner, admin).
    RejectGroupJoinRequest {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The user who asked to join.
        #[arg(long)]
        applicant: String,
        /// Why, shown to the applicant.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Leave a group (not the owner).
    LeaveGroup(GroupId),
    /// Remove a member (owner, admin).
    RemoveGroupMember(GroupUser),
    /// Remove several members (owner, admin).
    RemoveGroupMembers(GroupUsers),
    /// Mute members for a time, or forever with -1 (owner, admin).
    MuteGroupMember {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Users to mute, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        username: Vec<String>,
        /// Milliseconds, or -1 for forever.
        #[arg(long, allow_negative_numbers = true)]
        mute_duration: i64,
    },
    /// Unmute members (owner, admin).
    UnmuteGroupMember {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Users to unmute, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        username: Vec<String>,
    },
    /// List muted members with their expiry (owner, admin): the first 1000.
    GetGroupMutelist(GroupId),
    /// List muted members with their expiry, a page at a time (owner, admin).
    GetGroupMutelistPage(GroupListPage),
    /// Whether you are muted.
    IsInGroupMutelist(GroupId),
    /// Turn mute-all on (owner, admin).
    DisableSendGroupMsg(GroupId),
    /// Turn mute-all off (owner, admin).
    EnableSendGroupMsg(GroupId),
    /// Block a member: removed and kept out (owner, admin).
    BlockGroupMember(GroupUser),
    /// Block several members (owner, admin).
    BlockGroupMembers(GroupUsernames),
    /// Unblock a user (owner, admin).
    UnblockGroupMember(GroupUser),
    /// Unblock several users (owner, admin).
    UnblockGroupMembers(GroupUsernames),
    /// List blocked users (owner, admin): the first 1000.
    GetGroupBlocklist(GroupId),
    /// List blocked users, a page at a time (owner, admin).
    GetGroupBlocklistPage(GroupListPage),
    /// Add users to the allowlist (owner, admin).
    AddUsersToGroupAllowlist(GroupUsers),
    /// Remove a user from the allowlist (owner, admin).
    RemoveGroupAllowlistMember {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The user to remove.
        #[arg(long)]
        user_name: String,
    },
    /// List the allowlist (owner, admin): the first 1000.
    GetGroupAllowlist(GroupId),
    /// List the allowlist, a page at a time (owner, admin).
    GetGroupAllowlistPage(GroupListPage),
    /// Whether a user is on the allowlist.
    IsInGroupAllowlist {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The user to check [default: the token's own user].
        #[arg(long)]
        user_name: Option<String>,
    },
    /// Show the announcement.
    FetchGroupAnnouncement(GroupId),
    /// Set the announcement; "" deletes it (owner, admin).
    UpdateGroupAnnouncement {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The new text, at most 512 characters.
        #[arg(long, allow_hyphen_values = true)]
        announcement: String,
    },
    /// Upload a file to the group's shared files, with a progress bar on a terminal.
    UploadGroupSharedFile {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The file to upload.
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// Name to share it under [default: the file's name].
        #[arg(long)]
        file_name: Option<String>,
        /// MIME type [default: guessed from the name].
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Download a shared file to a path, with a progress bar on a terminal.
    DownloadGroupSharedFile {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The shared file's id.
        #[arg(long)]
        file_id: String,
        /// The file's secret, if it has one.
        #[arg(long)]
        secret: Option<String>,
        /// Where to write it (via PATH.part, renamed when complete).
        #[arg(long, value_name = "PATH")]
        output: PathBuf,
    },
    /// Delete a shared file (owner, admin: any; members: their own).
    DeleteGroupSharedFile(GroupFile),
    /// List shared files, a page at a time.
    GetGroupSharedFilelist {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page_num: u32,
        /// Files per page, 1-10.
        #[arg(long, default_value_t = 10)]
        page_size: u32,
    },
    /// Set a member's attributes; an empty value deletes the key.
    SetGroupMemberAttributes {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Whose attributes [default: the token's own user].
        #[arg(long)]
        user_id: Option<String>,
        /// key=value,key2= or a JSON object {"key":"value"}.
        #[arg(long, value_parser = parse_attributes)]
        member_attributes: Attributes,
    },
    /// Show a member's attributes.
    GetGroupMemberAttributes {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Whose attributes [default: the token's own user].
        #[arg(long)]
        user_id: Option<String>,
    },
    /// Show several members' attributes, optionally only some keys.
    GetGroupMembersAttributes {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Members, comma-separated (at most 10).
        #[arg(long, value_delimiter = ',', required = true)]
        user_ids: Vec<String>,
        /// Keys, comma-separated [default: all].
        #[arg(long, value_delimiter = ',')]
        keys: Vec<String>,
    },
    /// List the groups you are in.
    GetJoinedGroups {
        /// Page number [default: 0 with --need-affiliations or --need-role, else 1].
        #[arg(long)]
        page_num: Option<u32>,
        /// Groups per page (at most 20 with details, else 500).
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        /// Include each group's member count.
        #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
        need_affiliations: bool,
        /// Include your role in each group.
        #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
        need_role: bool,
    },
    /// List public groups; prints {"groups", "cursor"} (cursor null on the last page).
    GetPublicGroups {
        /// Groups per page, 1-100.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Cursor from the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Stop receiving a group's messages.
    BlockGroupMessages(GroupId),
    /// Receive a group's messages again.
    UnblockGroupMessages(GroupId),
    /// List who read a message, a page at a time.
    GetGroupMsgReadUser {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The message's id.
        #[arg(long)]
        msg_id: String,
        /// Readers per page, 1-100.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Cursor from the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Send a text message to a group; prints its msg_id, seq and timestamp.
    SendGroupMessage {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The message text (sent as UTF-8 bytes, at most 64 KiB).
        #[arg(long, allow_hyphen_values = true)]
        payload: String,
        /// Ask readers for read receipts.
        #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
        allow_group_ack: bool,
    },
    /// Send a read receipt for a message.
    AckGroupMessage {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// The message's id.
        #[arg(long)]
        msg_id: String,
    },
    /// Show message history by sequence number (payload as UTF-8 when valid, else base64).
    GetGroupMessages {
        /// The group's id.
        #[arg(long)]
        group_id: String,
        /// Only messages with a smaller sequence number.
        #[arg(long)]
        before: Option<u64>,
        /// Only messages with a larger sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// At most this many, 1-100.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}
