//! The shared-file index of a group: listing and deleting. Uploads and downloads run on
//! their own streams, see [`crate::transfer`].

use super::expect_response;
use crate::client::Client;
use crate::error::ClientError;
use convoke_protocol::{Request, Response, SharedFile};

impl Client {
    /// getGroupSharedFilelist (member): `page_num` from 1, `page_size` 1..=10.
    pub async fn get_group_shared_filelist(
        &self,
        group_id: &str,
        page_num: u32,
        page_size: u32,
    ) -> Result<Vec<SharedFile>, ClientError> {
        let r = self
            .request(Request::GetGroupSharedFilelist {
                group_id: group_id.into(),
                page_num,
                page_size,
            })
            .await?;
        expect_response!(r, "getGroupSharedFilelist", Response::Files { files } => files)
    }

    /// deleteGroupSharedFile (owner, admin: any file; members: their own). Members receive
    /// `deleteFile`.
    pub async fn delete_group_shared_file(
        &self,
        group_id: &str,
        file_id: &str,
    ) -> Result<(), ClientError> {
        self.done(Request::DeleteGroupSharedFile {
            group_id: group_id.into(),
            file_id: file_id.into(),
        })
        .await
    }
}
