//! Error codes of the contract and the error value every failed request carries.
//!
//! The numeric values are the chat SDK's own, so that its users recognise them. Three codes
//! are Convoke's own and say so: [`ErrorCode::NotImplemented`], [`ErrorCode::UnsupportedVersion`]
//! and [`ErrorCode::Internal`].

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error code a request or handshake can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// -3: a parameter is missing, malformed or out of range (the message says which).
    RequestParameterError,
    /// 28: no, invalid or expired token.
    TokenNotAssigned,
    /// 50: a quota is full (files per group, groups per user, admins).
    MaxLimit,
    /// 101: upload failed: file too large, cancelled, ...
    UploadFileError,
    /// 200: download failed: missing file, bad secret, ...
    DownloadFileError,
    /// 204: the target user has never logged in.
    UserNotFound,
    /// 500: overload or owner node unreachable; retryable.
    ServerBusy,
    /// 506: mute-all is on and the sender is not allowlisted.
    ServiceNotAllowMessaging,
    /// 507: the sender is muted and not allowlisted.
    ServiceNotAllowMessagingMute,
    /// 509: the sender exceeded the message rate limit.
    MessageCurrentLimiting,
    /// 511: the message payload is too large.
    MessageSizeLimit,
    /// 601: target already a member, duplicate invite or request.
    GroupAlreadyJoined,
    /// 602: caller or target not a member.
    GroupNotJoined,
    /// 603: role too low, target is the owner, blocklisted.
    PermissionDenied,
    /// 605: unknown or destroyed group.
    GroupNotExist,
    /// 606: maxusers reached.
    GroupMembersFull,
    /// 607: maxusers above the server limit.
    GroupMembersLimit,
    /// 609: a member attribute key/value/size rule was broken.
    GroupMemberAttributesSetFailed,
    /// 501 (Convoke): the method exists in the contract but this broker does not serve it yet.
    NotImplemented,
    /// 505 (Convoke): no protocol version in common between client and broker.
    UnsupportedVersion,
    /// 1 (Convoke): an unexpected internal failure (storage error, ...); the request changed nothing.
    Internal,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 21] = [
        Self::RequestParameterError,
        Self::TokenNotAssigned,
        Self::MaxLimit,
        Self::UploadFileError,
        Self::DownloadFileError,
        Self::UserNotFound,
        Self::ServerBusy,
        Self::ServiceNotAllowMessaging,
        Self::ServiceNotAllowMessagingMute,
        Self::MessageCurrentLimiting,
        Self::MessageSizeLimit,
        Self::GroupAlreadyJoined,
        Self::GroupNotJoined,
        Self::PermissionDenied,
        Self::GroupNotExist,
        Self::GroupMembersFull,
        Self::GroupMembersLimit,
        Self::GroupMemberAttributesSetFailed,
        Self::NotImplemented,
        Self::UnsupportedVersion,
        Self::Internal,
    ];

    /// The SDK's numeric value.
    pub const fn code(self) -> i32 {
        match self {
            Self::RequestParameterError => -3,
            Self::TokenNotAssigned => 28,
            Self::MaxLimit => 50,
            Self::UploadFileError => 101,
            Self::DownloadFileError => 200,
            Self::UserNotFound => 204,
            Self::ServerBusy => 500,
            Self::ServiceNotAllowMessaging => 506,
            Self::ServiceNotAllowMessagingMute => 507,
            Self::MessageCurrentLimiting => 509,
            Self::MessageSizeLimit => 511,
            Self::GroupAlreadyJoined => 601,
            Self::GroupNotJoined => 602,
            Self::PermissionDenied => 603,
            Self::GroupNotExist => 605,
            Self::GroupMembersFull => 606,
            Self::GroupMembersLimit => 607,
            Self::GroupMemberAttributesSetFailed => 609,
            Self::NotImplemented => 501,
            Self::UnsupportedVersion => 505,
            Self::Internal => 1,
        }
    }

    /// The SDK's symbolic name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RequestParameterError => "REQUEST_PARAMETER_ERROR",
            Self::TokenNotAssigned => "TOKEN_NOT_ASSIGNED",
            Self::MaxLimit => "MAX_LIMIT",
            Self::UploadFileError => "UPLOAD_FILE_ERROR",
            Self::DownloadFileError => "DOWNLOAD_FILE_ERROR",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::ServerBusy => "SERVER_BUSY",
            Self::ServiceNotAllowMessaging => "SERVICE_NOT_ALLOW_MESSAGING",
            Self::ServiceNotAllowMessagingMute => "SERVICE_NOT_ALLOW_MESSAGING_MUTE",
            Self::MessageCurrentLimiting => "MESSAGE_CURRENT_LIMITING",
            Self::MessageSizeLimit => "MESSAGE_SIZE_LIMIT",
            Self::GroupAlreadyJoined => "GROUP_ALREADY_JOINED",
            Self::GroupNotJoined => "GROUP_NOT_JOINED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::GroupNotExist => "GROUP_NOT_EXIST",
            Self::GroupMembersFull => "GROUP_MEMBERS_FULL",
            Self::GroupMembersLimit => "GROUP_MEMBERS_LIMIT",
            Self::GroupMemberAttributesSetFailed => "GROUP_MEMBER_ATTRIBUTES_SET_FAILED",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Self::Internal => "INTERNAL",
        }
    }

    /// The code with this numeric value, if any.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether retrying the same request later may succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::ServerBusy | Self::MessageCurrentLimiting)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// A failed request: its code and a human-readable message naming the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, thiserror::Error)]
#[error("error {code}: {message}")]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What exactly was wrong, naming the value.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// -3, naming the parameter and what is wrong with it.
    pub fn param(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RequestParameterError, message)
    }

    /// 603 with a reason.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// 605 for this group id.
    pub fn no_group(group_id: &str) -> Self {
        Self::new(
            ErrorCode::GroupNotExist,
            format!("group {group_id:?} does not exist"),
        )
    }

    /// 602: `user` is not a member of `group_id`.
    pub fn not_member(user: &str, group_id: &str) -> Self {
        Self::new(
            ErrorCode::GroupNotJoined,
            format!("user {user:?} is not a member of group {group_id:?}"),
        )
    }

    /// 501 naming the method.
    pub fn not_implemented(method: &str) -> Self {
        Self::new(
            ErrorCode::NotImplemented,
            format!("{method} is not implemented by this broker yet"),
        )
    }
}

/// A value as an error message echoes it: quoted, at most [`crate::limits::MAX_ECHO_CHARS`]
/// characters of it, and its length in bytes when it was cut. A refused value can be as
/// long as a frame; the answer that names it should not be.
pub fn shown(value: &str) -> String {
    let max = crate::limits::MAX_ECHO_CHARS;
    match value.char_indices().nth(max) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate {}", c.code());
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ErrorCode::GroupNotExist.code(), 605);
        assert_eq!(ErrorCode::RequestParameterError.code(), -3);
    }

    #[test]
    fn shown_values_are_short_prefixes() {
        assert_eq!(shown("alice"), "\"alice\"");
        let long = "é".repeat(1000);
        let s = shown(&long);
        assert!(s.starts_with(format!("{:?}", "é".repeat(32)).trim_end_matches('"')));
        assert!(s.ends_with("... (2000 bytes)"), "{s}");
        assert!(s.len() < 100, "{s}");
    }
}
