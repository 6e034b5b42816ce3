//! Who may send to a group, and who receives: the message path's rules.
//!
//! The order of checks is the contract's: the group exists (605, checked by the driver),
//! the sender is a member (602; a blocklisted user is not one), the sender is muted and not
//! allowlisted (507), mute-all is on and the sender is not allowlisted (506), the payload
//! size (511); the rate limit (509) is the driver's, last. Owner and admins are implicitly
//! allowlisted.
//!
//! A send that carries a client message id is checked for the id first (-3 when it is empty
//! or too long); a repeat of an id stored within the dedup window is answered with the
//! original message before any other check, since that message was stored.

use super::{need_member, Caller};
use crate::group::model::Group;
use convoke_protocol::{limits, ApiError, ErrorCode, Role};

/// Characters of a refused client message id echoed in the error.
const SHOWN_ID_CHARS: usize = 16;

/// Checks a sendGroupMessage's client message id: 1 to
/// [`limits::MAX_CLIENT_MSG_ID_BYTES`] bytes.
pub fn check_client_msg_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::param(format!(
            "clientMsgId \"\" is empty; give 1 to {} bytes, or no id",
            limits::MAX_CLIENT_MSG_ID_BYTES
        )));
    }
    if id.len() > limits::MAX_CLIENT_MSG_ID_BYTES {
        let shown: String = id.chars().take(SHOWN_ID_CHARS).collect();
        return Err(ApiError::param(format!(
            "clientMsgId {shown:?}... is {} bytes; at most {}",
            id.len(),
            limits::MAX_CLIENT_MSG_ID_BYTES
        )));
    }
    Ok(())
}

/// Whether a message stored at `sent` still answers a repeat of its client id at `now`.
pub fn within_dedup_window(sent: i64, now: i64, window_ms: i64) -> bool {
    now.saturating_sub(sent) < window_ms
}

/// Checks that `caller` may send `len` payload bytes to `g` at `now`.
pub fn check_send(
    g: &Group,
    caller: &Caller,
    len: usize,
    max_len: usize,
    now: i64,
) -> Result<(), ApiError> {
    let me = caller.user.as_str();
    let role = g.role(me);
    if role.is_none() && !caller.app_admin {
        return Err(ApiError::not_member(me, &g.id_str));
    }
    let allowlisted =
        caller.app_admin || matches!(role, Some(Role::Owner | Role::Admin)) || g.allow.contains(me);
    if !allowlisted && g.is_muted(me, now) {
        return Err(ApiError::new(
            ErrorCode::ServiceNotAllowMessagingMute,
            format!("{me:?} is muted in group {:?}", g.id_str),
        ));
    }
    if !allowlisted && g.meta.mute_all {
        return Err(ApiError::new(
            ErrorCode::ServiceNotAllowMessaging,
            format!(
                "group {:?} is muted for everyone but the allowlist",
                g.id_str
            ),
        ));
    }
    if len > max_len {
        return Err(ApiError::new(
            ErrorCode::MessageSizeLimit,
            format!("payload is {len} bytes; at most {max_len}"),
        ));
    }
    Ok(())
}

/// Members who receive the group's messages (not those who blocked them).
pub fn receivers(g: &Group) -> Vec<String> {
    g.members
        .iter()
        .filter(|(_, m)| !m.shield)
        .map(|(u, _)| u.clone())
        .collect()
}

/// Reading history: members and app admins.
pub fn check_read(g: &Group, caller: &Caller) -> Result<(), ApiError> {
    need_member(g, caller).map(|_| ())
}

/// Who may list a message's readers: its sender, the owner, admins (and app admins).
pub fn check_read_users(g: &Group, caller: &Caller, sender: &str) -> Result<(), ApiError> {
    let lvl = need_member(g, caller)?;
    if caller.user != sender && lvl < super::Level::Admin {
        return Err(ApiError::denied(format!(
            "only the sender ({sender:?}), the owner or an admin may list who read this message; {:?} may not",
            caller.user
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::model::{Group, GroupMeta, MemberRec, FOREVER};

    fn g() -> Group {
        let meta = GroupMeta {
            name: "g".into(),
            description: String::new(),
            owner: "o".into(),
            created: 0,
            maxusers: 200,
            public: false,
            membersonly: false,
            allowinvites: false,
            invite_need_confirm: true,
            mute_all: false,
            ext: String::new(),
            announcement: String::new(),
            member_count: 0,
        };
        let mut g = Group::new(1, meta);
        g.insert_member("o", MemberRec::new(Role::Owner, 0));
        g.insert_member("a", MemberRec::new(Role::Admin, 0));
        g.insert_member("m", MemberRec::new(Role::Member, 0));
        g
    }

    fn who(u: &str) -> Caller {
        Caller {
            user: u.into(),
            app_admin: false,
            session_id: 1,
        }
    }

    fn code(g: &Group, u: &str, len: usize) -> Option<ErrorCode> {
        check_send(g, &who(u), len, 10, 5).err().map(|e| e.code)
    }

    #[test]
    fn client_msg_ids_are_one_to_64_bytes_and_refusals_echo_a_short_prefix() {
        assert!(check_client_msg_id("a").is_ok());
        assert!(check_client_msg_id(&"é".repeat(32)).is_ok(), "64 bytes");
        let e = check_client_msg_id("").unwrap_err();
        assert_eq!(e.code, ErrorCode::RequestParameterError);
        assert!(e.message.contains("clientMsgId \"\""), "{}", e.message);
        let long = format!("{}{}", "x".repeat(60), "é".repeat(3));
        let e = check_client_msg_id(&long).unwrap_err();
        assert_eq!(e.code, ErrorCode::RequestParameterError);
        assert!(e.message.contains("66 bytes"), "{}", e.message);
        assert!(e.message.contains(&"x".repeat(16)), "{}", e.message);
        assert!(!e.message.contains(&"x".repeat(17)), "{}", e.message);
    }

    #[test]
    fn the_dedup_window_excludes_its_end() {
        assert!(within_dedup_window(1_000, 1_000, 1_000));
        assert!(within_dedup_window(1_000, 1_999, 1_000));
        assert!(!within_dedup_window(1_000, 2_000, 1_000));
        assert!(within_dedup_window(1_000, 900, 1_000), "clock stepped back");
        assert!(
            !within_dedup_window(i64::MIN, i64::MAX, 1_000),
            "no overflow"
        );
    }

    #[test]
    fn the_send_matrix_in_contract_order() {
        let mut g = g();
        assert_eq!(code(&g, "m", 1), None);
        assert_eq!(code(&g, "x", 1), Some(ErrorCode::GroupNotJoined));
        assert_eq!(code(&g, "m", 11), Some(ErrorCode::MessageSizeLimit));
        g.mutes.insert("m".into(), FOREVER);
        assert_eq!(
            code(&g, "m", 11),
            Some(ErrorCode::ServiceNotAllowMessagingMute),
            "mute before size"
        );
        g.allow.insert("m".into());
        assert_eq!(
            code(&g, "m", 1),
            None,
            "allowlisted members post while muted"
        );
        g.meta.mute_all = true;
        assert_eq!(
            code(&g, "m", 1),
            None,
            "allowlisted members post under mute-all"
        );
        g.allow.clear();
        assert_eq!(
            code(&g, "m", 1),
            Some(ErrorCode::ServiceNotAllowMessagingMute),
            "muted wins over mute-all"
        );
        g.mutes.clear();
        assert_eq!(code(&g, "m", 1), Some(ErrorCode::ServiceNotAllowMessaging));
        assert_eq!(code(&g, "o", 1), None, "owner implicitly allowlisted");
        assert_eq!(code(&g, "a", 1), None, "admins implicitly allowlisted");
        g.mutes.insert("m".into(), 5);
        g.meta.mute_all = false;
        assert_eq!(code(&g, "m", 1), None, "an expired mute does not count");
    }
}
