//! Fan-out: the one seam through which group actors (events) and their publishers
//! (messages) hand an encoded frame to its recipients' sessions.
//!
//! [`Fanout::deliver`] takes the frame already encoded (once, by the caller) and today
//! writes the same bytes into every local session of every recipient through
//! [`Presence`], skipping the session that made the request (it has the response). A
//! cluster adds, here and nowhere else, at most one batch per other node that has online
//! recipients (the receiving node then delivers the same bytes to its own sessions through
//! its `Presence`), so groups never learn where their members are connected: see
//! [`crate::cluster::presence`] (the directory of which node each user is on, and the
//! delivery workers of the receiving side).

use crate::presence::Presence;
use bytes::Bytes;

/// Where frames for a group's recipients go. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fanout {
    local: Presence,
}

impl Fanout {
    /// Fan-out to this node's sessions only (a single node, or a cluster's local part).
    /// In a cluster it is also the presence that remote deliveries reach
    /// ([`crate::cluster::presence::attach`]; the node's first one).
    pub fn local(presence: Presence) -> Self {
        crate::cluster::presence::attach(&presence);
        Self { local: presence }
    }

    /// This node's sessions.
    pub fn presence(&self) -> &Presence {
        &self.local
    }

    /// Delivers `frame` for group `gid` to every session of every user in `recipients`
    /// except `origin_session` (0: none is skipped). Returns how many local sessions took
    /// it (written or queued); never waits, never copies the frame for local sessions
    /// (`Bytes` clones share it). In a cluster, then queues at most one `Deliver` per other
    /// node with recipients online there (one copy of the frame for all of them), in the
    /// caller's order, so every node sees a group's frames in the owner's order.
    pub fn deliver(
        &self,
        gid: u64,
        recipients: &[String],
        frame: &Bytes,
        origin_session: u64,
    ) -> usize {
        let n = self.local.deliver(recipients, frame, origin_session);
        // Two atomic loads on a single node.
        if let Some(remote) = crate::cluster::presence::running() {
            remote.fan_out(gid, recipients, frame, origin_session);
        }
        n
    }
}
