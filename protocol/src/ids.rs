//! Identifier rules: user ids, group ids, attribute keys.

use crate::error::{shown, ApiError};

/// Checks a user id: 1-64 bytes of `[A-Za-z0-9_.@-]`. `what` names the parameter in errors.
pub fn check_user_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::param(format!(
            "{what} {} must be 1 to 64 bytes, got {}",
            shown(id),
            id.len()
        )));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-')))
    {
        return Err(ApiError::param(format!(
            "{what} {} contains {bad:?}; allowed are A-Z a-z 0-9 _ . @ -",
            shown(id)
        )));
    }
    Ok(())
}

/// Parses a group id: the decimal string of a non-zero 64-bit id.
pub fn parse_group_id(id: &str) -> Result<u64, ApiError> {
    match id.parse::<u64>() {
        Ok(n) if n > 0 && !id.starts_with('+') && !id.starts_with('0') => Ok(n),
        _ => Err(ApiError::param(format!(
            "groupId {} is not a group id (a decimal number)",
            shown(id)
        ))),
    }
}

/// Checks a member-attribute key: 1-16 bytes of `[A-Za-z0-9_]`.
pub fn is_valid_attribute_key(key: &str) -> bool {
    (1..=16).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(check_user_id("username", "alice").is_ok());
        assert!(check_user_id("username", "a.b@c-d_e9").is_ok());
        assert!(check_user_id("username", &"x".repeat(64)).is_ok());
        let e = check_user_id("username", "").unwrap_err();
        assert!(e.message.contains("username"));
        assert!(check_user_id("username", &"x".repeat(65)).is_err());
        let e = check_user_id("username", &"y".repeat(100_000)).unwrap_err();
        assert!(e.message.len() < 200, "a short prefix: {}", e.message);
        let e = check_user_id("users", "bad name").unwrap_err();
        assert!(e.message.contains("\"bad name\""), "{}", e.message);
    }

    #[test]
    fn group_ids() {
        assert_eq!(parse_group_id("42").unwrap(), 42);
        assert!(parse_group_id("0").is_err());
        assert!(parse_group_id("042").is_err());
        assert!(parse_group_id("+4").is_err());
        assert!(parse_group_id("abc").is_err());
        assert!(parse_group_id("").is_err());
    }

    #[test]
    fn attribute_keys() {
        assert!(is_valid_attribute_key("nickname"));
        assert!(is_valid_attribute_key("a_1"));
        assert!(!is_valid_attribute_key(""));
        assert!(!is_valid_attribute_key("with space"));
        assert!(!is_valid_attribute_key(&"k".repeat(17)));
    }
}
