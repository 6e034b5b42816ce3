//! The typed group API: one async method on [`Client`] per method of the contract
//! (spec/group-api.md), named after the seed in snake_case, returning typed results.
//!
//! Each method builds its [`Request`], calls [`Client::request`] and unpacks the one
//! [`Response`] variant the contract allows; any other variant is a
//! [`ClientError::Protocol`]. The methods are grouped by area: [`groups`] (lifecycle, info,
//! owner, admins, announcement, directories), [`membership`] (invites, join requests,
//! leaving, removal, blocklist), [`moderation`] (mute, allowlist, mute-all, message
//! blocking), [`messages`], [`attributes`] and [`files`] (the shared-file index; transfers are
//! in [`crate::transfer`]).

pub mod attributes;
pub mod files;
pub mod groups;
pub mod membership;
pub mod messages;
pub mod moderation;

use crate::client::Client;
use crate::error::ClientError;
use convoke_protocol::response::ReadUser;
use convoke_protocol::{Request, Response};
use serde::Serialize;

/// Unpacks the expected variant of a response, or reports the unexpected one.
///
/// `expect_response!(response, "method", Response::Variant { field } => field)`
macro_rules! expect_response {
    ($response:expr, $method:literal, $pattern:pat => $value:expr) => {
        match $response {
            $pattern => Ok($value),
            other => Err($crate::api::unexpected($method, &other)),
        }
    };
}
pub(crate) use expect_response;

/// The error for a response variant the method does not answer with.
pub(crate) fn unexpected(method: &str, response: &Response) -> ClientError {
    let variant = serde_json::to_value(response)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "response".to_string());
    ClientError::Protocol(format!(
        "{method} was answered with an unexpected {variant}"
    ))
}

/// Owned copies of borrowed ids.
pub(crate) fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Client {
    /// Sends a request that answers [`Response::Done`].
    pub(crate) async fn done(&self, request: Request) -> Result<(), ClientError> {
        let method = request.method();
        match self.request(request).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(method, &other)),
        }
    }

    /// Sends a request that answers [`Response::Users`].
    pub(crate) async fn users(&self, request: Request) -> Result<Vec<String>, ClientError> {
        let method = request.method();
        match self.request(request).await? {
            Response::Users { users } => Ok(users),
            other => Err(unexpected(method, &other)),
        }
    }

    /// Sends a request that answers [`Response::Bool`].
    pub(crate) async fn boolean(&self, request: Request) -> Result<bool, ClientError> {
        let method = request.method();
        match self.request(request).await? {
            Response::Bool { value } => Ok(value),
            other => Err(unexpected(method, &other)),
        }
    }
}

/// The result of `invite_users_to_group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invited {
    /// Users who got an invitation they must accept (`inviteNeedConfirm` on).
    pub pending: Vec<String>,
    /// Users added directly (`inviteNeedConfirm` off).
    pub joined: Vec<String>,
}

/// The result of `send_group_message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageSent {
    /// The broker's message id (for acks and read receipts).
    pub msg_id: String,
    /// The message's position in the group's total order.
    pub seq: u64,
    /// When the broker accepted it, ms since the Unix epoch.
    pub timestamp: i64,
}

/// One page of `get_group_msg_read_user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadUsers {
    /// Readers in all pages.
    pub total: u32,
    /// The readers on this page.
    pub users: Vec<ReadUser>,
    /// Pass to the next call for the next page; `None` on the last page.
    pub cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_names_the_method_and_variant() {
        let e = unexpected("createGroup", &Response::Bool { value: true });
        assert_eq!(
            e,
            ClientError::Protocol("createGroup was answered with an unexpected bool".into())
        );
    }

    #[test]
    fn expect_macro_unpacks_or_reports() {
        let ok: Result<String, ClientError> = expect_response!(
            Response::GroupCreated { group_id: "5".into() },
            "createGroup",
            Response::GroupCreated { group_id } => group_id
        );
        assert_eq!(ok.unwrap(), "5");
        let bad: Result<String, ClientError> = expect_response!(
            Response::Done,
            "createGroup",
            Response::GroupCreated { group_id } => group_id
        );
        assert!(matches!(bad, Err(ClientError::Protocol(m)) if m.contains("done")));
    }
}
