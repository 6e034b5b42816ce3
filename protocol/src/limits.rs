//! The contract's limits. The broker's configuration starts from these defaults; the
//! fixed paging and batch bounds of the seed are constants.

/// Admins per group.
pub const MAX_ADMINS: usize = 99;
/// Users in one batch call (invite, remove, mute, block, allowlist).
pub const MAX_BATCH_USERS: usize = 60;
/// Announcement length, in characters.
pub const MAX_ANNOUNCEMENT_CHARS: usize = 512;
/// Group name length, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 128;
/// Group description length, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 512;
/// Group ext (custom) length, in bytes.
pub const MAX_EXT_BYTES: usize = 8 * 1024;
/// Member attribute value length, in bytes.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 512;
/// Total member attributes of one member, in bytes (keys + values).
pub const MAX_ATTRIBUTES_BYTES_PER_MEMBER: usize = 4 * 1024;
/// Users in one getGroupMembersAttributes call.
pub const MAX_ATTRIBUTE_USERS: usize = 10;
/// Shared file size, in bytes.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Shared files per group.
pub const MAX_FILES_PER_GROUP: usize = 10_000;
/// A sendGroupMessage's client message id, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;
/// Message payload, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Groups one user may be a member of.
pub const MAX_GROUPS_PER_USER: usize = 10_000;
/// Default maxusers of a new group.
pub const DEFAULT_MAX_USERS: u32 = 200;
/// Smallest maxusers a group may have.
pub const MIN_MAX_USERS: u32 = 3;
/// Default server limit on maxusers.
pub const DEFAULT_SERVER_MAX_USERS: u32 = 100_000;
/// Group ids in one getGroupInfo call.
pub const MAX_GROUP_INFO_IDS: usize = 100;
/// listGroupMembers page size.
pub const MAX_MEMBER_PAGE: u32 = 1000;
/// getGroupSharedFilelist page size.
pub const MAX_FILE_PAGE: u32 = 10;
/// getJoinedGroups page size without affiliations or role.
pub const MAX_JOINED_PAGE: u32 = 500;
/// getJoinedGroups page size with affiliations or role.
pub const MAX_JOINED_PAGE_DETAILED: u32 = 20;
/// getPublicGroups limit.
pub const MAX_PUBLIC_PAGE: u32 = 100;
/// getGroupMessages limit.
pub const MAX_HISTORY_PAGE: u32 = 100;
/// getGroupMsgReadUser page size.
pub const MAX_READ_USERS_PAGE: u32 = 100;
/// Join-request message and rejection reason length, in characters.
pub const MAX_REASON_CHARS: usize = 512;
/// Keys named in one getGroupMembersAttributes call (`keys`; empty = all keys). A member
/// has at most [`MAX_ATTRIBUTES_BYTES_PER_MEMBER`] of attributes, so a longer filter could
/// only name keys nobody has.
pub const MAX_ATTRIBUTE_KEYS: usize = 100;
/// Page size of the paged mute, block and allow lists (getGroupMutelistPage,
/// getGroupBlocklistPage, getGroupAllowlistPage). The unpaged calls answer at most this
/// many entries too: the first page.
pub const MAX_LIST_PAGE: u32 = 1000;
/// Characters of a refused value an error message echoes (see [`crate::error::shown`]).
pub const MAX_ECHO_CHARS: usize = 32;
