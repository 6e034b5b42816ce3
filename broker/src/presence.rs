//! Presence: which users are online on this node, with which sessions, and each session's
//! event stream ([`Outbox`]). Group actors and their publisher tasks reach it through
//! [`crate::fanout::Fanout`], without a round trip per member, writing frames straight into
//! the streams. It also counts each user's shared-file
//! transfers in progress over all their sessions ([`Presence::begin_transfer`]).
//!
//! A user's first session on this node and its last one leaving are told to
//! [`crate::cluster::presence::changed`], which announces them to the other nodes of a
//! cluster (nothing on a single node).

use crate::outbox::Outbox;
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;

/// One connected session, as fan-out sees it.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub session_id: u64,
    pub device_id: String,
    /// The session's event stream, written to directly.
    pub outbox: Arc<Outbox>,
}

impl SessionHandle {
    /// Sends or queues one frame; closes the session if its backlog is full. Returns whether
    /// the frame was taken.
    pub fn push(&self, frame: &Bytes) -> bool {
        self.outbox.push(frame)
    }

    /// Closes the session's connection with `code`, the way its client hears it (a
    /// browser's through its WebTransport session: [`Outbox::close_connection`]).
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.outbox.close_connection(code, reason);
    }
}

/// The registry of online sessions. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Presence {
    users: Arc<DashMap<String, Vec<SessionHandle>>>,
    /// Transfers in progress per user (absent: none).
    transfers: Arc<DashMap<String, u32>>,
}

/// One transfer's place under its user's cap, given back on drop.
#[derive(Debug)]
pub struct TransferSlot {
    transfers: Arc<DashMap<String, u32>>,
    user: String,
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        self.transfers.remove_if_mut(&self.user, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

impl Presence {
    /// Registers a session; returns the sessions to close if the user now has more than
    /// `max_per_user`: first older sessions of the same device (a device that reconnected
    /// leaves its old session behind until the idle timeout, and must not push the user's
    /// other devices out), then the oldest.
    pub fn register(
        &self,
        user: &str,
        handle: SessionHandle,
        max_per_user: usize,
    ) -> Vec<SessionHandle> {
        let mut entry = self.users.entry(user.to_string()).or_default();
        let first = entry.is_empty();
        let device = handle.device_id.clone();
        entry.push(handle);
        let mut excess = entry.len().saturating_sub(max_per_user.max(1));
        let mut closed = Vec::new();
        let mut i = 0;
        // The newcomer is last and stays.
        while excess > 0 && i + 1 < entry.len() {
            if entry[i].device_id == device {
                closed.push(entry.remove(i));
                excess -= 1;
            } else {
                i += 1;
            }
        }
        closed.extend(entry.drain(..excess));
        drop(entry);
        if first {
            crate::cluster::presence::changed(user);
        }
        closed
    }

    /// Removes a session.
    pub fn unregister(&self, user: &str, session_id: u64) {
        let last = self
            .users
            .remove_if_mut(user, |_, sessions| {
                sessions.retain(|s| s.session_id != session_id);
                sessions.is_empty()
            })
            .is_some();
        if last {
            crate::cluster::presence::changed(user);
        }
    }

    /// Closes every session with `code` and `reason`, each through its own framing (a
    /// browser's as a WebTransport session close, so that the page hears the code; a bare
    /// QUIC close reaches a page as "connection lost"), and waits up to `limit` for them to
    /// end. At a graceful stop, before the endpoints close: a browser's close is a capsule
    /// on its session's stream, written by a task, which an endpoint close would discard.
    pub async fn close_all(&self, code: u32, reason: &[u8], limit: std::time::Duration) {
        for sessions in self.users.iter() {
            for s in sessions.iter() {
                s.close(code, reason);
            }
        }
        let deadline = tokio::time::Instant::now() + limit;
        while !self.users.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Whether the user has at least one session.
    pub fn is_online(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|s| !s.is_empty())
    }

    /// Pushes `frame` to every session of every user in `users` except `skip_session`.
    /// Returns how many sessions took it (written or queued).
    pub fn deliver<'a>(
        &self,
        users: impl IntoIterator<Item = &'a String>,
        frame: &Bytes,
        skip_session: u64,
    ) -> usize {
        let mut n = 0;
        for u in users {
            if let Some(sessions) = self.users.get(u.as_str()) {
                for s in sessions.iter().filter(|s| s.session_id != skip_session) {
                    if s.push(frame) {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Takes a place for one more transfer of `user`, or `None` when they already have
    /// `max` in progress.
    pub fn begin_transfer(&self, user: &str, max: u32) -> Option<TransferSlot> {
        let mut n = self.transfers.entry(user.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        drop(n);
        Some(TransferSlot {
            transfers: self.transfers.clone(),
            user: user.to_string(),
        })
    }

    /// The ids of the users online right now (a cluster's presence snapshot).
    pub fn online_user_ids(&self) -> Vec<String> {
        self.users.iter().map(|e| e.key().clone()).collect()
    }

    /// Online users right now (for gauges).
    pub fn online_users(&self) -> usize {
        self.users.len()
    }
}
