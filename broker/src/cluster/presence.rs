//! Cross-node fan-out (../shared/design/cluster.md 5.2-5.5): the replicated presence
//! directory, the sending half of a fan-out, and the delivery workers of the receiving half.
//!
//! - [`Directory`]: which *other* nodes each user has sessions on, `user -> u64` bitmask
//!   over peer slots, on every node. A node announces a user when its first local session
//!   opens and again when its last one closes ([`changed`], called by
//!   [`crate::presence::Presence`]); one announcer task reads the user's state at send
//!   time and sends one `PresenceDelta` per drain to every Up peer, so deltas are batched,
//!   and whatever the interleaving the last word on a user is its current state. A peer that
//!   comes Up gets a full `PresenceSnapshot` (in parts of at most [`SNAPSHOT_PART_BYTES`])
//!   from the same task, so a snapshot and the deltas around it arrive in an order that
//!   converges, and is asked for its own (`PresenceWanted`: the two ends see each other Up
//!   at slightly different moments, and what a node sends before the other end sees it Up
//!   is not taken); a peer that goes Down has its bit cleared.
//! - Sending ([`Remote::fan_out`], from [`crate::fanout::Fanout::deliver`]): OR the recipients'
//!   masks and queue at most one `Wire::Deliver` per other node, listing the recipients
//!   online there, on that node's ordered, byte-bounded link: a slow or frozen node has its
//!   deliveries dropped and counted by the link, and no group ever waits for it.
//! - Receiving ([`on_deliver`], from the router's inbound hook): the delivery is handed to
//!   one of `k` workers chosen by `gid % k`, which writes the same bytes into the local
//!   sessions of the listed users (skipping the requesting session), off the router (whose
//!   Pong proves the node alive) and in the owner's order for each group.
//!
//! Nothing here runs on a single node: [`running`] is two atomic loads that answer `None`.
//! Receiver sets by content hash (design 5.2, for groups over `fanout_list_max`) are not
//! built: every Deliver lists its users, which costs bytes on the wire for very large
//! groups but needs no set cache on either side.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};

use super::{Cluster, SendError, Wire};
use crate::presence::Presence;

/// Largest `PresenceSnapshot` or `PresenceDelta` part, in bytes of user ids (a batch is at
/// most 4 MiB; a part leaves room for other items beside it).
pub const SNAPSHOT_PART_BYTES: usize = 512 * 1024;

/// Bytes held by received deliveries waiting for a worker (frames and recipient lists)
/// before new ones are dropped (counted in `convoke_cluster_deliveries_shed_total`): the
/// workers write into outboxes without waiting, so this fills only when this node's CPU
/// cannot keep up.
pub const INBOUND_QUEUE_BYTES: usize = 64 << 20;

/// Recipients written between two yields of a delivery worker, so that a delivery to a
/// huge group shares the runtime with the router and the sessions.
const YIELD_EVERY: usize = 1024;

/// Bits in a mask, so at most this many peers.
const MAX_SLOTS: usize = 64;

/// Which other nodes each user is online on. Each peer gets a bit (slot) the first time it
/// is seen, kept until the peer is forgotten ([`Directory::release`]: a gateway gone for
/// good), then reused.
#[derive(Debug)]
pub struct Directory {
    users: DashMap<Box<str>, u64>,
    /// The peer of each slot; `None`: free.
    slots: RwLock<Vec<Option<String>>>,
    /// Users online per slot. Each peer's items are applied by one router in order, so a
    /// slot's count is never written by two threads at once.
    counts: Vec<AtomicUsize>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            users: DashMap::new(),
            slots: RwLock::new(Vec::new()),
            counts: (0..MAX_SLOTS).map(|_| AtomicUsize::new(0)).collect(),
        }
    }
}

impl Directory {
    /// The slot of `peer`, assigned on first sight; `None` when all 64 are taken (counted).
    fn slot(&self, peer: &str) -> Option<usize> {
        let find = |slots: &[Option<String>]| slots.iter().position(|p| p.as_deref() == Some(peer));
        {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = find(&slots) {
                return Some(i);
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = find(&slots) {
            return Some(i);
        }
        if let Some(i) = slots.iter().position(Option::is_none) {
            slots[i] = Some(peer.to_owned());
            return Some(i);
        }
        if slots.len() >= MAX_SLOTS {
            metrics::counter!("convoke_cluster_presence_slots_exhausted_total").increment(1);
            tracing::warn!(%peer, "cluster: more than 64 peers; this one gets no fan-out");
            return None;
        }
        slots.push(Some(peer.to_owned()));
        Some(slots.len() - 1)
    }

    /// Forgets `peer` (a gateway gone for good): its users and its slot, free for another.
    pub fn release(&self, peer: &str) {
        let slot = {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            slots.iter().position(|p| p.as_deref() == Some(peer))
        };
        if slot.is_none() {
            return;
        }
        self.clear(peer);
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = slots.iter().position(|p| p.as_deref() == Some(peer)) {
            slots[i] = None;
        }
    }

    /// The peer of slot `i`.
    fn peer(&self, i: u32) -> Option<String> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots.get(i as usize).cloned().flatten()
    }

    /// `users` came online on `peer`.
    pub fn online<'a>(&self, peer: &str, users: impl IntoIterator<Item = &'a String>) {
        let Some(slot) = self.slot(peer) else { return };
        let bit = 1u64 << slot;
        let mut added = 0;
        let mut set = |m: &mut u64| {
            if *m & bit == 0 {
                added += 1;
            }
            *m |= bit;
        };
        for u in users {
            match self.users.get_mut(u.as_str()) {
                Some(mut m) => set(&mut m),
                None => set(&mut self.users.entry(u.as_str().into()).or_insert(0)),
            }
        }
        self.counts[slot].fetch_add(added, Ordering::Relaxed);
    }

    /// `users` went offline on `peer`.
    pub fn offline<'a>(&self, peer: &str, users: impl IntoIterator<Item = &'a String>) {
        let Some(slot) = self.slot(peer) else { return };
        let bit = 1u64 << slot;
        let mut removed = 0;
        for u in users {
            self.users.remove_if_mut(u.as_str(), |_, m| {
                if *m & bit != 0 {
                    removed += 1;
                }
                *m &= !bit;
                *m == 0
            });
        }
        let _ = self.counts[slot].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(removed))
        });
    }

    /// `peer` is gone, or about to send a full snapshot: none of its users is online there.
    pub fn clear(&self, peer: &str) {
        let Some(slot) = self.slot(peer) else { return };
        let bit = 1u64 << slot;
        self.users.retain(|_, m| {
            *m &= !bit;
            *m != 0
        });
        self.counts[slot].store(0, Ordering::Relaxed);
    }

    /// Users online on `peer`.
    pub fn users_on(&self, peer: &str) -> usize {
        self.slot(peer)
            .map_or(0, |slot| self.counts[slot].load(Ordering::Relaxed))
    }

    /// The peers `user` is online on, as a mask.
    pub fn mask(&self, user: &str) -> u64 {
        self.users.get(user).map_or(0, |m| *m)
    }

    /// Users online on at least one peer.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// The directory's memory, estimated: its hash tables (one bucket of key, mask and
    /// control byte per slot of capacity) and each user id's heap block as glibc's malloc
    /// sizes it (8 bytes of header, 16-byte steps, 32 at least).
    pub fn approx_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(Box<str>, u64)>() + 1;
        let keys: usize = self
            .users
            .iter()
            .map(|e| ((e.key().len() + 8 + 15) & !15).max(32))
            .sum();
        self.users.capacity() * bucket + keys
    }

    /// Whether no user is online on any peer.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// For each peer with at least one of `recipients` online: the peer and those
    /// recipients, in `recipients`' order. One directory lookup per recipient.
    pub fn targets(&self, recipients: &[String]) -> Vec<(String, Vec<String>)> {
        let masks: Vec<u64> = recipients.iter().map(|u| self.mask(u)).collect();
        let mut union = masks.iter().fold(0u64, |a, m| a | m);
        let mut out = Vec::new();
        while union != 0 {
            let i = union.trailing_zeros();
            union &= union - 1;
            let bit = 1u64 << i;
            let Some(peer) = self.peer(i) else { continue };
            let to = recipients
                .iter()
                .zip(&masks)
                .filter(|(_, m)| *m & bit != 0)
                .map(|(u, _)| u.clone())
                .collect();
            out.push((peer, to));
        }
        out
    }
}

/// Splits user ids into parts of at most [`SNAPSHOT_PART_BYTES`] (never an empty part,
/// except for an empty list, which gives one).
pub fn parts(users: Vec<String>) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    let mut bytes = 0;
    for u in users {
        let len = u.len() + 2;
        if bytes + len > SNAPSHOT_PART_BYTES && out.last().is_some_and(|p| !p.is_empty()) {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(last) = out.last_mut() {
            last.push(u);
        }
    }
    out
}

/// The cross-node fan-out of this process, while a cluster runs.
pub struct Remote {
    cluster: Cluster,
    local: Presence,
    dir: Directory,
    /// Users whose local state changed and peers owed a snapshot, for the announcer.
    pending: Mutex<(HashSet<String>, Vec<String>)>,
    wake: Notify,
    lanes: Vec<mpsc::UnboundedSender<Job>>,
    /// What the deliveries waiting in the lanes hold.
    inbound: Arc<Inbound>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("users", &self.dir.len())
            .finish_non_exhaustive()
    }
}

/// One received delivery for a worker.
struct Job {
    origin_session: u64,
    to: Vec<String>,
    frame: Bytes,
    /// What it holds while it waits ([`Job::held_bytes`]), counted in [`Inbound`].
    bytes: usize,
}

impl Job {
    fn new(origin_session: u64, to: Vec<String>, frame: Vec<u8>) -> Job {
        let bytes = Job::held_bytes(&to, &frame);
        Job {
            origin_session,
            to,
            frame: Bytes::from(frame),
            bytes,
        }
    }

    /// The memory a delivery holds while it waits for a worker: its frame and its
    /// recipient list, a `String` per name plus the name's bytes. For a large group the
    /// list outweighs the frame by far (10,000 names: about 200 KB beside a 200-byte
    /// message), so counting the frame alone let the budget hold many times its size.
    fn held_bytes(to: &[String], frame: &[u8]) -> usize {
        let names: usize = to.iter().map(String::len).sum();
        frame.len() + std::mem::size_of_val(to) + names
    }
}

/// The budget of received deliveries waiting for a worker: at most
/// [`INBOUND_QUEUE_BYTES`] held; a delivery that would go over is dropped (counted).
#[derive(Debug, Default)]
struct Inbound {
    queued: AtomicUsize,
}

impl Inbound {
    /// Takes `job`'s bytes from the budget; false (nothing taken) when they do not fit.
    fn admit(&self, job: &Job) -> bool {
        self.queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                let after = q.checked_add(job.bytes)?;
                (after <= INBOUND_QUEUE_BYTES).then_some(after)
            })
            .is_ok()
    }

    /// Gives back what `job` held (it was delivered, or could not be queued).
    fn release(&self, job: &Job) {
        self.queued.fetch_sub(job.bytes, Ordering::Relaxed);
    }
}

static LOCAL: OnceLock<Presence> = OnceLock::new();
static REMOTE: OnceLock<Arc<Remote>> = OnceLock::new();

/// Names this process's one [`Presence`] (the first call wins; [`crate::fanout::Fanout`]
/// makes it when the node starts).
pub fn attach(presence: &Presence) {
    let _ = LOCAL.set(presence.clone());
}

/// The cross-node fan-out, once a cluster runs and the node's presence is attached; `None`
/// on a single node (two atomic loads on the hot path: this and `Cluster::get`).
pub fn running() -> Option<&'static Arc<Remote>> {
    if let Some(r) = REMOTE.get() {
        return Some(r);
    }
    let cluster = Cluster::get()?;
    let local = LOCAL.get()?.clone();
    Some(REMOTE.get_or_init(|| Remote::start(cluster, local)))
}

impl Remote {
    fn start(cluster: Cluster, local: Presence) -> Arc<Remote> {
        let k = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        let inbound = Arc::new(Inbound::default());
        let mut lanes = Vec::with_capacity(k);
        for _ in 0..k {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(lane(rx, local.clone(), inbound.clone()));
            lanes.push(tx);
        }
        let remote = Arc::new(Remote {
            cluster,
            local,
            dir: Directory::default(),
            pending: Mutex::new((HashSet::new(), Vec::new())),
            wake: Notify::new(),
            lanes,
            inbound,
        });
        tokio::spawn(announce(remote.clone()));
        remote
    }

    /// The directory.
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// Queues one `Deliver` of `frame` to every other node with recipients online there.
    pub fn fan_out(&self, gid: u64, recipients: &[String], frame: &Bytes, origin_session: u64) {
        if self.dir.is_empty() {
            return;
        }
        let targets = self.dir.targets(recipients);
        if targets.is_empty() {
            return;
        }
        // The same bytes for every node (the wire item owns a Vec: one copy per node, the
        // last one moved).
        let mut bytes = frame.to_vec();
        let mut targets = targets.into_iter().peekable();
        while let Some((peer, to)) = targets.next() {
            let frame = if targets.peek().is_none() {
                std::mem::take(&mut bytes)
            } else {
                bytes.clone()
            };
            let item = Wire::Deliver {
                gid,
                origin_session,
                to,
                frame,
            };
            match self.cluster.send(&peer, item) {
                // Overloaded, too large: counted by the link.
                Ok(()) | Err(SendError::Overloaded(_) | SendError::TooLarge { .. }) => {}
                Err(e @ (SendError::Unavailable(_) | SendError::Unknown(_))) => {
                    metrics::counter!("convoke_cluster_deliveries_dropped_total", "peer" => peer.clone())
                        .increment(1);
                    tracing::debug!(%peer, gid, error = %e, "cluster: delivery not queued");
                }
            }
        }
    }

    fn mark(&self, user: Option<&str>, snapshot_for: Option<&str>) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(u) = user {
                p.0.insert(u.to_owned());
            }
            if let Some(peer) = snapshot_for {
                if !p.1.iter().any(|x| x == peer) {
                    p.1.push(peer.to_owned());
                }
            }
        }
        self.wake.notify_one();
    }

    fn gauge(&self, peer: &str) {
        metrics::gauge!("convoke_cluster_presence_users", "peer" => peer.to_owned())
            .set(self.dir.users_on(peer) as f64);
    }
}

/// The announcer: sends the current state of every changed user to every Up peer, then the
/// snapshots owed, one drain at a time (so its items leave in the order it read the state).
/// A change marked while a drain runs leaves a `Notify` permit, so none is missed.
async fn announce(r: Arc<Remote>) {
    loop {
        let (users, snapshots) = {
            let mut p = r.pending.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut p.0), std::mem::take(&mut p.1))
        };
        if !users.is_empty() {
            let (online, offline): (Vec<String>, Vec<String>) =
                users.into_iter().partition(|u| r.local.is_online(u));
            let peers = r.cluster.up_peers();
            for part in parts(online) {
                send_all(&r.cluster, &peers, &part, true);
            }
            for part in parts(offline) {
                send_all(&r.cluster, &peers, &part, false);
            }
        }
        for peer in snapshots {
            let users = parts(r.local.online_user_ids());
            let n = u32::try_from(users.len()).unwrap_or(u32::MAX);
            for (i, part) in users.into_iter().enumerate() {
                let item = Wire::PresenceSnapshot {
                    part: u32::try_from(i).unwrap_or(u32::MAX),
                    parts: n,
                    users: part,
                };
                if let Err(e) = r.cluster.send(&peer, item) {
                    // Not Up any more: it gets a new snapshot when it comes back.
                    tracing::debug!(%peer, error = %e, "cluster: presence snapshot not sent");
                    break;
                }
            }
        }
        r.wake.notified().await;
    }
}

fn send_all(cluster: &Cluster, peers: &[String], users: &[String], online: bool) {
    if users.is_empty() {
        return;
    }
    for peer in peers {
        let (on, off) = if online {
            (users.to_vec(), Vec::new())
        } else {
            (Vec::new(), users.to_vec())
        };
        let item = Wire::PresenceDelta {
            online: on,
            offline: off,
        };
        if let Err(e) = cluster.send(peer, item) {
            tracing::debug!(%peer, error = %e, "cluster: presence delta not sent");
        }
    }
}

async fn lane(mut rx: mpsc::UnboundedReceiver<Job>, local: Presence, inbound: Arc<Inbound>) {
    while let Some(job) = rx.recv().await {
        for chunk in job.to.chunks(YIELD_EVERY) {
            local.deliver(chunk, &job.frame, job.origin_session);
            if job.to.len() > YIELD_EVERY {
                tokio::task::yield_now().await;
            }
        }
        inbound.release(&job);
    }
}

/// A user's first local session opened or last one closed: announce its state to every Up
/// peer (batched, from the announcer). Nothing on a single node.
pub fn changed(user: &str) {
    if let Some(r) = running() {
        r.mark(Some(user), None);
    }
}

/// `peer` is Up (a new session): it gets a full snapshot of this node's users, and is asked
/// for its own. (Each end marks the other Up on its own heartbeat, and items from a peer
/// that is not Up yet are not taken: the peer's snapshot may have come too early. Asking
/// from here, once Up, gets one that is taken.)
pub fn on_peer_up(peer: &str) {
    if let Some(r) = running() {
        if let Err(e) = r.cluster.send(peer, Wire::PresenceWanted) {
            tracing::debug!(%peer, error = %e, "cluster: presence snapshot not asked for");
        }
        r.mark(None, Some(peer));
    }
}

/// `from` asks for this node's snapshot.
pub fn on_wanted(from: &str) {
    if let Some(r) = running() {
        r.mark(None, Some(from));
    }
}

/// `peer` went Down or restarted: none of its users is online there any more.
pub fn on_peer_down(peer: &str) {
    if let Some(r) = running() {
        r.dir.clear(peer);
        r.gauge(peer);
    }
}

/// `peer` (a gateway down for long) was forgotten by membership: its slot is freed.
pub fn on_peer_removed(peer: &str) {
    if let Some(r) = running() {
        r.dir.release(peer);
        r.gauge(peer);
    }
}

/// Part `part` of `parts` of `from`'s snapshot; part 0 replaces what was known of `from`.
pub fn on_snapshot(from: &str, part: u32, parts: u32, users: Vec<String>) {
    let _ = parts;
    if let Some(r) = running() {
        if part == 0 {
            r.dir.clear(from);
        }
        r.dir.online(from, &users);
        r.gauge(from);
    }
}

/// Users came online / went offline on `from`.
pub fn on_delta(from: &str, online: Vec<String>, offline: Vec<String>) {
    if let Some(r) = running() {
        r.dir.online(from, &online);
        r.dir.offline(from, &offline);
        r.gauge(from);
    }
}

/// A delivery from `from`: handed to the worker of `gid`, which writes `frame` into the
/// local sessions of `to` except `origin_session`. Called on the router: never waits.
pub fn on_deliver(from: &str, gid: u64, origin_session: u64, to: Vec<String>, frame: Vec<u8>) {
    let Some(r) = running() else { return };
    metrics::counter!("convoke_cluster_deliveries_received_total", "peer" => from.to_owned())
        .increment(1);
    let job = Job::new(origin_session, to, frame);
    if !r.inbound.admit(&job) {
        metrics::counter!("convoke_cluster_deliveries_shed_total").increment(1);
        tracing::debug!(peer = %from, gid, "cluster: delivery workers behind; delivery dropped");
        return;
    }
    let lane = (gid % r.lanes.len() as u64) as usize;
    if let Err(mpsc::error::SendError(job)) = r.lanes[lane].send(job) {
        r.inbound.release(&job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn masks_follow_deltas_snapshots_and_downs() {
        let d = Directory::default();
        d.online("n2", &s(&["alice", "bob"]));
        d.online("n3", &s(&["alice"]));
        assert_eq!(d.mask("alice"), 0b11);
        assert_eq!(d.mask("bob"), 0b01);
        assert_eq!(d.mask("carol"), 0);
        d.offline("n2", &s(&["alice", "nobody"]));
        assert_eq!(d.mask("alice"), 0b10);
        d.clear("n3");
        assert_eq!(d.mask("alice"), 0);
        assert_eq!(
            d.len(),
            1,
            "alice left the directory when her last bit went"
        );
        // A re-seen peer keeps its slot.
        d.online("n3", &s(&["carol"]));
        d.online("n3", &s(&["carol"]));
        assert_eq!(d.mask("carol"), 0b10);
        assert_eq!((d.users_on("n2"), d.users_on("n3")), (1, 1));
    }

    /// 64 slots: a 65th peer gets none; a released peer (a gateway forgotten by
    /// membership) frees its slot and its users for the next one. Before, slots were never
    /// freed, so gateways coming and going used them up for the life of the process.
    #[test]
    fn a_released_peer_frees_its_slot_for_another() {
        let d = Directory::default();
        for i in 0..MAX_SLOTS {
            d.online(&format!("g{i}"), &s(&[&format!("u{i}")]));
        }
        d.online("late", &s(&["x"]));
        assert_eq!((d.mask("x"), d.users_on("late")), (0, 0), "no slot left");
        d.release("g5");
        assert_eq!(d.mask("u5"), 0, "its users are gone");
        d.online("late", &s(&["x"]));
        assert_eq!(d.mask("x"), 1 << 5, "the freed slot is reused");
        assert_eq!(d.users_on("late"), 1);
        assert_eq!(d.users_on("g6"), 1);
    }

    #[test]
    fn targets_group_recipients_by_node_once_each() {
        let d = Directory::default();
        d.online("n2", &s(&["a", "b", "c"]));
        d.online("n3", &s(&["c", "d"]));
        let t = d.targets(&s(&["a", "c", "d", "x"]));
        assert_eq!(
            t,
            vec![
                ("n2".to_owned(), s(&["a", "c"])),
                ("n3".to_owned(), s(&["c", "d"]))
            ]
        );
        assert!(d.targets(&s(&["x", "y"])).is_empty());
    }

    /// The budget: at most 100 bytes per online user per node, measured with
    /// 100,000 users (the figure is printed; `--nocapture` shows it).
    #[test]
    fn the_directory_costs_under_100_bytes_per_user() {
        for id_len in [8usize, 20] {
            let users: Vec<String> = (0..100_000).map(|i| format!("{i:0id_len$}")).collect();
            let d = Directory::default();
            d.online("n2", &users);
            d.online("n3", &users[..50_000]);
            assert_eq!(d.len(), 100_000);
            let per_user = d.approx_bytes() as f64 / 100_000.0;
            println!("presence directory, {id_len}-byte user ids: {per_user:.1} B per user");
            assert!(per_user <= 100.0, "{per_user} bytes per user");
        }
    }

    /// A delivery's recipient list counts against the inbound budget, not only its frame:
    /// a tiny frame to 100,000 names holds megabytes, so the budget takes only a few dozen
    /// of them (counting frames alone, it took four million: gigabytes of lists).
    #[test]
    fn the_inbound_budget_counts_the_recipient_list() {
        let to: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
        let job = Job::new(7, to, vec![0; 16]);
        let per_job = 16 + 100_000 * (std::mem::size_of::<String>() + 11);
        let budget = Inbound::default();
        // The same job admitted again and again stands for as many deliveries waiting.
        let mut admitted = 0;
        while admitted < 1_000 && budget.admit(&job) {
            admitted += 1;
        }
        assert_eq!(
            admitted,
            INBOUND_QUEUE_BYTES / per_job,
            "shed at the budget"
        );
        assert_eq!(job.bytes, per_job);
        assert!(!budget.admit(&job), "the budget is full");
        // One delivered: its room comes back.
        budget.release(&job);
        assert!(budget.admit(&job));
    }

    #[test]
    fn snapshot_parts_are_bounded_and_keep_every_user() {
        let users: Vec<String> = (0..200_000).map(|i| format!("user-{i:08}")).collect();
        let p = parts(users.clone());
        assert!(p.len() > 1);
        for part in &p {
            let bytes: usize = part.iter().map(|u| u.len() + 2).sum();
            assert!(bytes <= SNAPSHOT_PART_BYTES, "{bytes}");
        }
        assert_eq!(p.concat(), users);
        assert_eq!(parts(Vec::new()), vec![Vec::<String>::new()]);
    }
}
