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
    ///
    /// The send carries a fresh client message id, so when the connection drops before
    /// the answer the client sends it again on the next connection and the broker answers
    /// with the original instead of storing it twice (exactly once, within the broker's
    /// dedup window).
    pub async fn send_group_message(
        &self,
        group_id: &str,
        payload: impl Into<Vec<u8>>,
        allow_group_ack: bool,
    ) -> Result<MessageSent, ClientError> {
        let id = format!("{:016x}", rand::random::<u64>());
        self.send_group_message_with_id(group_id, payload, allow_group_ack, &id)
            .await
    }

    /// Like [`send_group_message`](Self::send_group_message) with the application's own
    /// client message id (1-64 bytes; the SDK's local message id), for an application that
    /// retries sends itself, e.g. after a restart: a repeat within the broker's dedup window
    /// answers the original message's id, seq and timestamp and stores nothing.
    pub async fn send_group_message_with_id(
        &self,
        group_id: &str,
        payload: impl Into<Vec<u8>>,
        allow_group_ack: bool,
        client_msg_id: &str,
    ) -> Result<MessageSent, ClientError> {
        let mut track = SendGuard::begin(self, group_id);
        let r = self
            .request(Request::SendGroupMessage {
                group_id: group_id.into(),
                payload: payload.into(),
                allow_group_ack,
                client_msg_id: Some(client_msg_id.into()),
            })
            .await?;
        let sent = expect_response!(r, "sendGroupMessage", Response::MessageSent { msg_id, seq, timestamp } => MessageSent { msg_id, seq, timestamp })?;
        track.seq = Some(sent.seq);
        Ok(sent)
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
    /// A page may hold fewer than `limit` when its messages would exceed the broker's
    /// byte cap on a page: go on after the last seq (or before the first) it holds; only an
    /// empty page means there is no more.
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

/// Tells the event sequencer about a send of this client while it is in flight and, once
/// answered, its seq (so the message is not handed back as missed). Ends on drop, so a
/// cancelled send is not waited for.
struct SendGuard<'a> {
    client: &'a Client,
    group_id: &'a str,
    ticket: u64,
    seq: Option<u64>,
}

impl<'a> SendGuard<'a> {
    fn begin(client: &'a Client, group_id: &'a str) -> Self {
        let ticket = lock(&client.core().sends).begin(group_id);
        Self {
            client,
            group_id,
            ticket,
            seq: None,
        }
    }
}

impl Drop for SendGuard<'_> {
    fn drop(&mut self) {
        let core = self.client.core();
        lock(&core.sends).end(self.group_id, self.ticket, self.seq);
        core.sends_changed.notify_waiters();
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Single inserts and removals: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
