//! Fan-out: the one seam through which group actors (events) and their publishers
//! (messages) hand an encoded frame to its recipients' sessions.
//!
//! [`Fanout::deliver`] takes the frame already encoded (once, by the caller) and today
//! writes the same bytes into every local session of every recipient through
//! [`Presence`], skipping the session that made the request (it has the response). A
//! cluster adds, here and nowhere else, at most one batch per other node that has online
//! recipients (the receiving node then delivers the same bytes to its own sessions through
//! its `Presence`), so groups never learn where their members are connected.

use crate::presence::Presence;
use bytes::Bytes;

/// Where frames for a group's recipients go. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fanout {
    local: Presence,
}

impl Fanout {
    /// Fan-out to this node's sessions only (a single node, or a cluster's local part).
    pub fn local(presence: Presence) -> Self {
        Self { local: presence }
    }

    /// This node's sessions.
    pub fn presence(&self) -> &Presence {
        &self.local
    }

    /// Delivers `frame` for group `gid` to every session of every user in `recipients`
    /// except `origin_session` (0: none is skipped). Returns how many local sessions took
    /// it (written or queued); never waits, never copies the frame (`Bytes` clones share
    /// it).
    pub fn deliver(
        &self,
        gid: u64,
        recipients: &[String],
        frame: &Bytes,
        origin_session: u64,
    ) -> usize {
        let _ = gid; // Routes the remote batches in a cluster; local delivery needs no group.
        self.local.deliver(recipients, frame, origin_session)
    }
}
