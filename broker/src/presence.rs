//! Presence: which users are online, with which sessions, and each session's bounded
//! outbound queue. Group actors read it without a round trip per member and push event
//! frames straight into the queues.
//!
//! A queue that is full means its client is not reading fast enough: that session is closed
//! with [`close::SLOW_CONSUMER`] and counted, never allowed to grow memory or stall the group.

use bytes::Bytes;
use convoke_protocol::close;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// `convoke_session_queue_depth`, resolved once: this is on the per-recipient fan-out path.
static QUEUE_DEPTH: std::sync::LazyLock<metrics::Histogram> =
    std::sync::LazyLock::new(|| metrics::histogram!("convoke_session_queue_depth"));

/// One connected session, as fan-out sees it.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub session_id: u64,
    pub device_id: String,
    /// Push frames, already encoded; bounded.
    pub tx: mpsc::Sender<Bytes>,
    pub conn: quinn::Connection,
}

impl SessionHandle {
    /// Queues one frame; closes the session if its queue is full. Returns whether queued.
    pub fn push(&self, frame: &Bytes) -> bool {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => {
                QUEUE_DEPTH.record((self.tx.max_capacity() - self.tx.capacity()) as f64);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("convoke_slow_client_disconnects_total").increment(1);
                tracing::info!(
                    session = self.session_id,
                    "closing slow client: event queue full"
                );
                self.conn.close(
                    close::SLOW_CONSUMER.into(),
                    b"event queue full: client is not reading fast enough",
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The registry of online sessions. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Presence {
    users: Arc<DashMap<String, Vec<SessionHandle>>>,
}

impl Presence {
    /// Registers a session; returns the sessions to close if the user now has more than
    /// `max_per_user` (the oldest go first).
    pub fn register(
        &self,
        user: &str,
        handle: SessionHandle,
        max_per_user: usize,
    ) -> Vec<SessionHandle> {
        let mut entry = self.users.entry(user.to_string()).or_default();
        entry.push(handle);
        let excess = entry.len().saturating_sub(max_per_user.max(1));
        entry.drain(..excess).collect()
    }

    /// Removes a session.
    pub fn unregister(&self, user: &str, session_id: u64) {
        self.users.remove_if_mut(user, |_, sessions| {
            sessions.retain(|s| s.session_id != session_id);
            sessions.is_empty()
        });
    }

    /// Whether the user has at least one session.
    pub fn is_online(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|s| !s.is_empty())
    }

    /// Pushes `frame` to every session of every user in `users` except `skip_session`.
    /// Returns how many sessions it was queued for.
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

    /// Online users right now (for gauges).
    pub fn online_users(&self) -> usize {
        self.users.len()
    }
}
