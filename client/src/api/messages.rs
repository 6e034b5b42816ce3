//! Group messages: sending, read receipts, and history by sequence number. Delivery to
//! members arrives as [`convoke_protocol::Push::Message`] on the event stream.

use super::{expect_response, MessageSent, ReadUsers};
use crate::client::Client;
use crate::error::ClientError;
use convoke_protocol::{GroupMessage, Request, Response};

impl Client {
    /// sendGroupMessage (member, not muted unless allowlisted): at most 64 KiB of payload.
    /// `allow_group_ack` asks readers for read receipts. Returns the message id, its
    /// sequence number in the group and the broker's timestamp.
    pub async fn send_group_message(
        &self,
        group_id: &str,
        payload: impl Into<Vec<u8>>,
        allow_group_ack: bool,
    ) -> Result<MessageSent, ClientError> {
        let r = self
            .request(Request::SendGroupMessage {
                group_id: group_id.into(),
                payload: payload.into(),
                allow_group_ack,
                client_msg_id: None,
            })
            .await?;
        expect_response!(r, "sendGroupMessage", Response::MessageSent { msg_id, seq, timestamp } => MessageSent { msg_id, seq, timestamp })
    }

    /// ackGroupMessage: the caller's read receipt for a message.
    pub async fn ack_group_message(&self, group_id: &str, msg_id: &str) -> Result<(), ClientError> {
        self.done(Request::AckGroupMessage {
            group_id: group_id.into(),
            msg_id: msg_id.into(),
        })
        .await
    }

    /// getGroupMessages (member): at most `limit` (<= 100) messages with a sequence number
    /// above `after` or below `before`, in sequence order; both `None` = the latest.
    pub async fn get_group_messages(
        &self,
        group_id: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<GroupMessage>, ClientError> {
        let r = self
            .request(Request::GetGroupMessages {
                group_id: group_id.into(),
                before,
                after,
                limit,
            })
            .await?;
        expect_response!(r, "getGroupMessages", Response::Messages { messages } => messages)
    }

    /// getGroupMsgReadUser (the sender, owner, admin): one page of a message's readers.
    /// Pass `None` as the cursor for the first page.
    pub async fn get_group_msg_read_user(
        &self,
        group_id: &str,
        msg_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ReadUsers, ClientError> {
        let r = self
            .request(Request::GetGroupMsgReadUser {
                group_id: group_id.into(),
                msg_id: msg_id.into(),
                limit,
                cursor: cursor.map(str::to_string),
            })
            .await?;
        expect_response!(r, "getGroupMsgReadUser", Response::ReadUsers { total, users, cursor } => ReadUsers { total, users, cursor })
    }
}
