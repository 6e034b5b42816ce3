//! Who may speak: individual mutes (timed or forever), mute-all, the allowlist that
//! overrides both, and a member's own blocking of a group's messages.

use super::{expect_response, owned};
use crate::client::Client;
use crate::error::ClientError;
use convoke_protocol::{MuteEntry, Request, Response};

impl Client {
    /// muteGroupMember (owner, admin): mutes up to 60 members for `mute_duration_ms`
    /// milliseconds, or forever with -1. Returns the resulting mute entries.
    pub async fn mute_group_member(
        &self,
        group_id: &str,
        usernames: &[&str],
        mute_duration_ms: i64,
    ) -> Result<Vec<MuteEntry>, ClientError> {
        let r = self
            .request(Request::MuteGroupMember {
                group_id: group_id.into(),
                username: owned(usernames),
                mute_duration: mute_duration_ms,
            })
            .await?;
        expect_response!(r, "muteGroupMember", Response::Mutes { mutes } => mutes)
    }

    /// unmuteGroupMember (owner, admin): up to 60 members.
    pub async fn unmute_group_member(
        &self,
        group_id: &str,
        usernames: &[&str],
    ) -> Result<(), ClientError> {
        self.done(Request::UnmuteGroupMember {
            group_id: group_id.into(),
            username: owned(usernames),
        })
        .await
    }

    /// getGroupMutelist (owner, admin): each muted user with the expiry (ms since the Unix
    /// epoch, -1 = forever).
    pub async fn get_group_mutelist(&self, group_id: &str) -> Result<Vec<MuteEntry>, ClientError> {
        let r = self
            .request(Request::GetGroupMutelist {
                group_id: group_id.into(),
            })
            .await?;
        expect_response!(r, "getGroupMutelist", Response::Mutes { mutes } => mutes)
    }

    /// getGroupMutelistPage (owner, admin): at most `limit` (1 to 1000) muted users by user
    /// id, after `cursor` (`None` = the first page), and the cursor of the next page
    /// (`None` on the last). The unpaged [`get_group_mutelist`](Self::get_group_mutelist)
    /// answers the first page of at most 1000.
    pub async fn get_group_mutelist_page(
        &self,
        group_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<MuteEntry>, Option<String>), ClientError> {
        let r = self
            .request(Request::GetGroupMutelistPage {
                group_id: group_id.into(),
                limit,
                cursor: cursor.map(Into::into),
            })
            .await?;
        expect_response!(r, "getGroupMutelistPage", Response::MutesPage { mutes, cursor } => (mutes, cursor))
    }

    /// isInGroupMutelist: whether the caller is muted in the group.
    pub async fn is_in_group_mutelist(&self, group_id: &str) -> Result<bool, ClientError> {
        self.boolean(Request::IsInGroupMutelist {
            group_id: group_id.into(),
        })
        .await
    }

    /// disableSendGroupMsg (owner, admin): mute-all on; only the allowlist (and owner and
    /// admins) may post.
    pub async fn disable_send_group_msg(&self, group_id: &str) -> Result<(), ClientError> {
        self.done(Request::DisableSendGroupMsg {
            group_id: group_id.into(),
        })
        .await
    }

    /// enableSendGroupMsg (owner, admin): mute-all off.
    pub async fn enable_send_group_msg(&self, group_id: &str) -> Result<(), ClientError> {
        self.done(Request::EnableSendGroupMsg {
            group_id: group_id.into(),
        })
        .await
    }

    /// addUsersToGroupAllowlist (owner, admin): at most 60 users; allowlisted members may
    /// post while muted or under mute-all.
    pub async fn add_users_to_group_allowlist(
        &self,
        group_id: &str,
        users: &[&str],
    ) -> Result<(), ClientError> {
        self.done(Request::AddUsersToGroupAllowlist {
            group_id: group_id.into(),
            users: owned(users),
        })
        .await
    }

    /// removeGroupAllowlistMember (owner, admin).
    pub async fn remove_group_allowlist_member(
        &self,
        group_id: &str,
        user_name: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::RemoveGroupAllowlistMember {
            group_id: group_id.into(),
            user_name: user_name.into(),
        })
        .await
    }

    /// getGroupAllowlist (owner, admin).
    pub async fn get_group_allowlist(&self, group_id: &str) -> Result<Vec<String>, ClientError> {
        self.users(Request::GetGroupAllowlist {
            group_id: group_id.into(),
        })
        .await
    }

    /// getGroupAllowlistPage (owner, admin): paged like
    /// [`get_group_mutelist_page`](Self::get_group_mutelist_page).
    pub async fn get_group_allowlist_page(
        &self,
        group_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), ClientError> {
        let r = self
            .request(Request::GetGroupAllowlistPage {
                group_id: group_id.into(),
                limit,
                cursor: cursor.map(Into::into),
            })
            .await?;
        expect_response!(r, "getGroupAllowlistPage", Response::UsersPage { users, cursor } => (users, cursor))
    }

    /// isInGroupAllowlist: app admins may ask about anyone, others only about themselves.
    pub async fn is_in_group_allowlist(
        &self,
        group_id: &str,
        user_name: &str,
    ) -> Result<bool, ClientError> {
        self.boolean(Request::IsInGroupAllowlist {
            group_id: group_id.into(),
            user_name: user_name.into(),
        })
        .await
    }

    /// blockGroupMessages (members, not owner or admins): the caller stops receiving the
    /// group's messages (`shieldgroup` becomes true).
    pub async fn block_group_messages(&self, group_id: &str) -> Result<(), ClientError> {
        self.done(Request::BlockGroupMessages {
            group_id: group_id.into(),
        })
        .await
    }

    /// unblockGroupMessages: undoes [`block_group_messages`](Self::block_group_messages).
    pub async fn unblock_group_messages(&self, group_id: &str) -> Result<(), ClientError> {
        self.done(Request::UnblockGroupMessages {
            group_id: group_id.into(),
        })
        .await
    }
}
