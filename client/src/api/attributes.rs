//! Member attributes: per-member key/value strings (keys 1-16 bytes of `[A-Za-z0-9_]`,
//! values <= 512 bytes, <= 4 KiB per member).

use super::{expect_response, owned};
use crate::client::Client;
use crate::error::ClientError;
use convoke_protocol::{Request, Response};
use std::collections::BTreeMap;

/// A member's attributes: key -> value.
pub type Attributes = BTreeMap<String, String>;

impl Client {
    /// setGroupMemberAttributes (self; owner or admin for others): sets the given keys, a
    /// value of "" deletes its key. Other members receive `memberAttributesUpdate`.
    pub async fn set_group_member_attributes(
        &self,
        group_id: &str,
        user_id: &str,
        member_attributes: Attributes,
    ) -> Result<(), ClientError> {
        self.done(Request::SetGroupMemberAttributes {
            group_id: group_id.into(),
            user_id: user_id.into(),
            member_attributes,
        })
        .await
    }

    /// getGroupMemberAttributes (member): every attribute of one member.
    pub async fn get_group_member_attributes(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<Attributes, ClientError> {
        let r = self
            .request(Request::GetGroupMemberAttributes {
                group_id: group_id.into(),
                user_id: user_id.into(),
            })
            .await?;
        expect_response!(r, "getGroupMemberAttributes", Response::Attributes { attributes } => attributes)
    }

    /// getGroupMembersAttributes (member): up to 10 members; `keys` empty = every key.
    /// Returns user id -> attributes.
    pub async fn get_group_members_attributes(
        &self,
        group_id: &str,
        user_ids: &[&str],
        keys: &[&str],
    ) -> Result<BTreeMap<String, Attributes>, ClientError> {
        let r = self
            .request(Request::GetGroupMembersAttributes {
                group_id: group_id.into(),
                user_ids: owned(user_ids),
                keys: owned(keys),
            })
            .await?;
        expect_response!(r, "getGroupMembersAttributes", Response::MembersAttributes { members } => members)
    }
}
