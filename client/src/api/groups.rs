//! Group lifecycle and information: create, destroy, info, modify, ownership, the member
//! list, admins, the announcement, and the joined/public group directories.

use super::{expect_response, owned};
use crate::client::Client;
use crate::error::ClientError;
use convoke_protocol::{
    CreateGroupData, GroupInfoEntry, JoinedGroup, MemberEntry, PublicGroup, Request, Response,
};

impl Client {
    /// createGroup: creates a group owned by this user; returns its id. Initial `members`
    /// are added directly (they receive `directJoined`).
    pub async fn create_group(&self, data: CreateGroupData) -> Result<String, ClientError> {
        let r = self.request(Request::CreateGroup { data }).await?;
        let group_id =
            expect_response!(r, "createGroup", Response::GroupCreated { group_id } => group_id)?;
        // Its messages are resumed after a reconnect from the first one.
        self.note_created(&group_id);
        Ok(group_id)
    }

    /// destroyGroup (owner): members receive `destroy`.
    pub async fn destroy_group(&self, group_id: &str) -> Result<(), ClientError> {
        self.done(Request::DestroyGroup {
            group_id: group_id.into(),
        })
        .await
    }

    /// getGroupInfo: up to 100 groups, in the order asked; an unknown or unreadable id gets
    /// an entry with its error instead of info.
    pub async fn get_group_info(
        &self,
        group_ids: &[&str],
    ) -> Result<Vec<GroupInfoEntry>, ClientError> {
        let r = self
            .request(Request::GetGroupInfo {
                group_ids: owned(group_ids),
            })
            .await?;
        expect_response!(r, "getGroupInfo", Response::GroupInfos { groups } => groups)
    }

    /// modifyGroup (owner, admin): changes the fields given (`None` leaves one unchanged);
    /// members receive `updateInfo`.
    pub async fn modify_group(
        &self,
        group_id: &str,
        group_name: Option<&str>,
        description: Option<&str>,
        ext: Option<&str>,
    ) -> Result<(), ClientError> {
        self.done(Request::ModifyGroup {
            group_id: group_id.into(),
            group_name: group_name.map(str::to_string),
            description: description.map(str::to_string),
            ext: ext.map(str::to_string),
        })
        .await
    }

    /// changeGroupOwner (owner): `new_owner` must be a member; members receive `changeOwner`.
    pub async fn change_group_owner(
        &self,
        group_id: &str,
        new_owner: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::ChangeGroupOwner {
            group_id: group_id.into(),
            new_owner: new_owner.into(),
        })
        .await
    }

    /// listGroupMembers (member): `page_num` from 1, `page_size` 1..=1000.
    pub async fn list_group_members(
        &self,
        group_id: &str,
        page_num: u32,
        page_size: u32,
    ) -> Result<Vec<MemberEntry>, ClientError> {
        let r = self
            .request(Request::ListGroupMembers {
                group_id: group_id.into(),
                page_num,
                page_size,
            })
            .await?;
        expect_response!(r, "listGroupMembers", Response::Members { members } => members)
    }

    /// getGroupAdmin (member): the admins' user ids.
    pub async fn get_group_admin(&self, group_id: &str) -> Result<Vec<String>, ClientError> {
        self.users(Request::GetGroupAdmin {
            group_id: group_id.into(),
        })
        .await
    }

    /// setGroupAdmin (owner): makes a member an admin (at most 99).
    pub async fn set_group_admin(&self, group_id: &str, username: &str) -> Result<(), ClientError> {
        self.done(Request::SetGroupAdmin {
            group_id: group_id.into(),
            username: username.into(),
        })
        .await
    }

    /// removeGroupAdmin (owner): demotes an admin to member.
    pub async fn remove_group_admin(
        &self,
        group_id: &str,
        username: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::RemoveGroupAdmin {
            group_id: group_id.into(),
            username: username.into(),
        })
        .await
    }

    /// fetchGroupAnnouncement (member; anyone for a public group).
    pub async fn fetch_group_announcement(&self, group_id: &str) -> Result<String, ClientError> {
        let r = self
            .request(Request::FetchGroupAnnouncement {
                group_id: group_id.into(),
            })
            .await?;
        expect_response!(r, "fetchGroupAnnouncement", Response::Announcement { announcement } => announcement)
    }

    /// updateGroupAnnouncement (owner, admin): at most 512 characters, "" deletes it.
    pub async fn update_group_announcement(
        &self,
        group_id: &str,
        announcement: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::UpdateGroupAnnouncement {
            group_id: group_id.into(),
            announcement: announcement.into(),
        })
        .await
    }

    /// getJoinedGroups: the caller's groups. With `need_affiliations` or `need_role`,
    /// `page_num` starts at 0 and `page_size` is at most 20; otherwise from 1 and at most 500.
    pub async fn get_joined_groups(
        &self,
        page_num: u32,
        page_size: u32,
        need_affiliations: bool,
        need_role: bool,
    ) -> Result<Vec<JoinedGroup>, ClientError> {
        let r = self
            .request(Request::GetJoinedGroups {
                page_num,
                page_size,
                need_affiliations,
                need_role,
            })
            .await?;
        expect_response!(r, "getJoinedGroups", Response::JoinedGroups { groups } => groups)
    }

    /// getPublicGroups: one page of at most `limit` (1..=100) public groups, and the cursor
    /// of the next page (`None` on the last). Pass `None` for the first page.
    pub async fn get_public_groups(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<PublicGroup>, Option<String>), ClientError> {
        let r = self
            .request(Request::GetPublicGroups {
                limit,
                cursor: cursor.map(str::to_string),
            })
            .await?;
        expect_response!(r, "getPublicGroups", Response::PublicGroups { groups, cursor } => (groups, cursor))
    }
}
