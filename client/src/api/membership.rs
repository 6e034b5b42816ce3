//! Who is in a group: invitations, join requests, leaving, removal, and the blocklist
//! (blocking removes a member and keeps them out).

use super::{expect_response, owned, Invited};
use crate::client::Client;
use crate::error::ClientError;
use convoke_protocol::{Request, Response};

impl Client {
    /// inviteUsersToGroup (owner, admin; members of a private group with `allowinvites`):
    /// at most 60 users. Returns who got a pending invitation and who joined directly.
    pub async fn invite_users_to_group(
        &self,
        group_id: &str,
        users: &[&str],
    ) -> Result<Invited, ClientError> {
        let r = self
            .request(Request::InviteUsersToGroup {
                group_id: group_id.into(),
                users: owned(users),
            })
            .await?;
        expect_response!(r, "inviteUsersToGroup", Response::Invited { pending, joined } => Invited { pending, joined })
    }

    /// acceptGroupInvite: `invitee` is the caller's own user id.
    pub async fn accept_group_invite(
        &self,
        group_id: &str,
        invitee: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::AcceptGroupInvite {
            group_id: group_id.into(),
            invitee: invitee.into(),
        })
        .await
    }

    /// rejectGroupInvite: `invitee` is the caller's own user id.
    pub async fn reject_group_invite(
        &self,
        group_id: &str,
        invitee: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::RejectGroupInvite {
            group_id: group_id.into(),
            invitee: invitee.into(),
        })
        .await
    }

    /// joinGroup (public groups): `true` when joined at once, `false` when the request
    /// awaits the approval of the owner or an admin.
    pub async fn join_group(&self, group_id: &str, message: &str) -> Result<bool, ClientError> {
        let r = self
            .request(Request::JoinGroup {
                group_id: group_id.into(),
                message: message.into(),
            })
            .await?;
        expect_response!(r, "joinGroup", Response::JoinResult { joined } => joined)
    }

    /// acceptGroupJoinRequest (owner, admin).
    pub async fn accept_group_join_request(
        &self,
        group_id: &str,
        applicant: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::AcceptGroupJoinRequest {
            group_id: group_id.into(),
            applicant: applicant.into(),
        })
        .await
    }

    /// rejectGroupJoinRequest (owner, admin): the applicant receives
    /// `joinPublicGroupDeclined` with the reason.
    pub async fn reject_group_join_request(
        &self,
        group_id: &str,
        applicant: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::RejectGroupJoinRequest {
            group_id: group_id.into(),
            applicant: applicant.into(),
            reason: reason.into(),
        })
        .await
    }

    /// leaveGroup (members and admins; the owner cannot leave).
    pub async fn leave_group(&self, group_id: &str) -> Result<(), ClientError> {
        self.done(Request::LeaveGroup {
            group_id: group_id.into(),
        })
        .await
    }

    /// removeGroupMember (owner, admin; admins may not remove admins).
    pub async fn remove_group_member(
        &self,
        group_id: &str,
        username: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::RemoveGroupMember {
            group_id: group_id.into(),
            username: username.into(),
        })
        .await
    }

    /// removeGroupMembers (owner, admin): at most 60 users.
    pub async fn remove_group_members(
        &self,
        group_id: &str,
        users: &[&str],
    ) -> Result<(), ClientError> {
        self.done(Request::RemoveGroupMembers {
            group_id: group_id.into(),
            users: owned(users),
        })
        .await
    }

    /// blockGroupMember (owner, admin): removes the user and keeps them out.
    pub async fn block_group_member(
        &self,
        group_id: &str,
        username: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::BlockGroupMember {
            group_id: group_id.into(),
            username: username.into(),
        })
        .await
    }

    /// blockGroupMembers (owner, admin): at most 60 users.
    pub async fn block_group_members(
        &self,
        group_id: &str,
        usernames: &[&str],
    ) -> Result<(), ClientError> {
        self.done(Request::BlockGroupMembers {
            group_id: group_id.into(),
            usernames: owned(usernames),
        })
        .await
    }

    /// unblockGroupMember (owner, admin): the user may join again (is not re-added).
    pub async fn unblock_group_member(
        &self,
        group_id: &str,
        username: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::UnblockGroupMember {
            group_id: group_id.into(),
            username: username.into(),
        })
        .await
    }

    /// unblockGroupMembers (owner, admin): at most 60 users.
    pub async fn unblock_group_members(
        &self,
        group_id: &str,
        usernames: &[&str],
    ) -> Result<(), ClientError> {
        self.done(Request::UnblockGroupMembers {
            group_id: group_id.into(),
            usernames: owned(usernames),
        })
        .await
    }

    /// getGroupBlocklistPage (owner, admin): paged like
    /// [`get_group_mutelist_page`](Self::get_group_mutelist_page).
    pub async fn get_group_blocklist_page(
        &self,
        group_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), ClientError> {
        let r = self
            .request(Request::GetGroupBlocklistPage {
                group_id: group_id.into(),
                limit,
                cursor: cursor.map(Into::into),
            })
            .await?;
        expect_response!(r, "getGroupBlocklistPage", Response::UsersPage { users, cursor } => (users, cursor))
    }

    /// getGroupBlocklist (owner, admin).
    pub async fn get_group_blocklist(&self, group_id: &str) -> Result<Vec<String>, ClientError> {
        self.users(Request::GetGroupBlocklist {
            group_id: group_id.into(),
        })
        .await
    }
}
