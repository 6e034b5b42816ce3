//! Kept events: state-changing events stored for a user until a client of theirs
//! acknowledges them (`i <user> 0 <id>` -> the encoded `Push::Kept` frame).
//!
//! Bounded when written, not only at login, so that nobody can grow another user's kept
//! events without limit or push out the ones that matter to them:
//! - **Superseded**: a `destroy` of a group, or a `removeMember` of the user, makes every
//!   older event of that group kept for the user moot (whatever they said, the user is out
//!   now): those are dropped as the new one is written. A user who creates groups with
//!   someone as a member and destroys them leaves that someone one event per group.
//! - **Per operator**: at most `sessions.kept_events_per_sender_max` of a user's kept events
//!   come from one operator (the event's `from`); writing one more drops that operator's
//!   oldest. A flood from one user pushes out only that user's own events.
//! - **Per user**: at most `sessions.kept_events_max` in all; writing one more drops the
//!   oldest (the login replay keeps the same bound for stores written before).
//!
//! Two index spaces make this cheap: `e <user> 0 <gid> <id>` -> the operator (a group's
//! events for a user) and `f <user> 0 <operator> 0 <id>` -> the gid (an operator's events
//! for a user). They are written and removed with their event; an index entry whose event is
//! gone (an acknowledgement cut short by a crash) is removed when it is next met.

use super::{keys, Result, Store, WriteSet};
use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::{frame_bytes, MAX_FRAME_LEN};
use convoke_protocol::{decode_frame, GroupEvent, GroupEventOp, Push};
use dashmap::DashMap;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The bounds on kept events (`sessions.kept_events_max`, `kept_events_per_sender_max`),
/// and how many each user has.
#[derive(Debug)]
pub struct KeptLimits {
    max: AtomicUsize,
    per_sender: AtomicUsize,
    /// Kept events per user, counted once from the store when first needed and then kept
    /// up to date as events are kept, dropped and acknowledged, so that a write does not
    /// count the user's whole inbox (that cost 0.9 us per kept event: 9 ms per write for a
    /// user with 10,000; counted, a write for a full inbox from an operator at their cap
    /// costs ~0.14 ms, release build on the 2-core test machine). Reset to the exact figure at each login. Counts a write set as
    /// soon as it is built: a concurrent or failed one can leave it off by a few, which only
    /// moves when the oldest is dropped, until the next login.
    counts: DashMap<String, Counts>,
}

/// One user's kept events as counted: the total, and per operator those counted so far.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Per operator, the ids (and gids) of their kept events for the user, oldest first:
    /// read from the `f` index the first time an operator writes to the user since the last
    /// login, then kept up to date as events are kept and dropped; an operator with none
    /// left is taken out (so this holds no more than the user's kept events). The oldest to
    /// drop are taken from here under the map's lock, so two group actors writing to the
    /// same user at once drop two different events, not the same one twice. Without it
    /// every write read the operator's whole share from the index (up to
    /// `kept_events_per_sender_max` entries): with 100 forced members that was a quarter of
    /// the broker's CPU under the create/destroy flood of `convoke-loadgen attack inbox`.
    by_sender: HashMap<String, VecDeque<(u64, u64)>>,
}

impl Default for KeptLimits {
    fn default() -> Self {
        Self {
            max: AtomicUsize::new(10_000),
            per_sender: AtomicUsize::new(100),
            counts: DashMap::new(),
        }
    }
}

/// The event inside a kept frame (`Push::Kept`, or a plain `Push::Group` of older stores).
fn event_of(frame: &[u8]) -> Option<GroupEvent> {
    match decode_frame::<Push>(&mut BytesMut::from(frame), MAX_FRAME_LEN) {
        Ok(Some(Push::Kept { event, .. } | Push::Group(event))) => Some(event),
        _ => None,
    }
}

/// Whether `ev`, kept for `user`, makes the user's older events of its group moot.
fn supersedes(ev: &GroupEvent, user: &str) -> bool {
    match ev.operation {
        GroupEventOp::Destroy => true,
        GroupEventOp::RemoveMember => ev.users.iter().any(|u| u == user),
        _ => false,
    }
}

fn by_group_prefix(user: &str, gid: u64) -> Vec<u8> {
    let mut k = vec![keys::KEPT_BY_GROUP];
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

fn by_group_key(user: &str, gid: u64, id: u64) -> Vec<u8> {
    let mut k = by_group_prefix(user, gid);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn by_sender_prefix(user: &str, from: &str) -> Vec<u8> {
    let mut k = vec![keys::KEPT_BY_SENDER];
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.extend_from_slice(from.as_bytes());
    k.push(0);
    k
}

fn by_sender_key(user: &str, from: &str, id: u64) -> Vec<u8> {
    let mut k = by_sender_prefix(user, from);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn gid_of(ev: &GroupEvent) -> u64 {
    ev.group_id.parse().unwrap_or(0)
}

/// Adds to `ws` the removal of kept event `id` of `user` and its index entries.
fn drop_writes(ws: &mut WriteSet, user: &str, id: u64, gid: u64, from: &str) {
    ws.delete(keys::inbox_key(user, id));
    ws.delete(by_group_key(user, gid, id));
    ws.delete(by_sender_key(user, from, id));
}

impl Store {
    /// Sets the bounds on kept events (from the configuration; both at least 1).
    pub fn set_kept_limits(&self, max: usize, per_sender: usize) {
        self.kept.max.store(max.max(1), Ordering::Relaxed);
        self.kept
            .per_sender
            .store(per_sender.max(1), Ordering::Relaxed);
    }

    /// Keeps the encoded frame of kept event `id` for `user`, as part of `ws`, until a
    /// client of theirs acknowledges `id`; drops (in `ws` too) what it supersedes and what
    /// goes over the bounds (see the module doc).
    pub fn inbox_put(&self, ws: &mut WriteSet, user: &str, id: u64, frame: &[u8]) {
        if let Some(ev) = event_of(frame) {
            if let Err(e) = self.bound_writes(ws, user, &ev) {
                // Reading the index failed: keep the event all the same (nothing is lost;
                // the login replay still bounds the total).
                tracing::warn!(%user, error = %e, "could not bound the kept events");
            }
            let (gid, from) = (gid_of(&ev), ev.from.as_str());
            ws.put(by_group_key(user, gid, id), from.as_bytes().to_vec());
            ws.put(by_sender_key(user, from, id), gid.to_be_bytes().to_vec());
            self.count_kept(user, from, id, gid);
        } else {
            self.count_kept(user, "", id, 0);
        }
        ws.put(keys::inbox_key(user, id), frame.to_vec());
    }

    /// `user`'s kept events as counted (see [`KeptLimits::counts`]).
    fn kept_count(&self, user: &str) -> Result<usize> {
        if let Some(c) = self.kept.counts.get(user) {
            return Ok(c.total);
        }
        let mut n = 0;
        for k in self.db.scan_prefix(keys::inbox_prefix(user)).keys() {
            k?;
            n += 1;
        }
        let c = self.kept.counts.entry(user.to_string()).or_insert(Counts {
            total: n,
            by_sender: HashMap::new(),
        });
        Ok(c.total)
    }

    /// Reads `user`'s kept events from operator `from` from the index, unless they are
    /// held already (see [`Counts::by_sender`]). Counts the user's total first.
    fn load_share(&self, user: &str, from: &str) -> Result<()> {
        self.kept_count(user)?;
        if self
            .kept
            .counts
            .get(user)
            .is_some_and(|c| c.by_sender.contains_key(from))
        {
            return Ok(());
        }
        let mut share = VecDeque::new();
        for kv in self.db.scan_prefix(by_sender_prefix(user, from)) {
            let (k, v) = kv?;
            if let Some(id) = keys::trailing_u64(&k) {
                share.push_back((id, keys::trailing_u64(&v).unwrap_or(0)));
            }
        }
        let mut c = self.kept.counts.entry(user.to_string()).or_default();
        c.by_sender.entry(from.to_string()).or_insert(share);
        Ok(())
    }

    /// Counts kept event `id` (of group `gid`) of `user` from `from`, where counted.
    fn count_kept(&self, user: &str, from: &str, id: u64, gid: u64) {
        if let Some(mut c) = self.kept.counts.get_mut(user) {
            c.total += 1;
            if let Some(share) = c.by_sender.get_mut(from) {
                share.push_back((id, gid));
            }
        }
    }

    /// Counts kept event `id` of `user` from `from` off, where counted.
    fn count_dropped(&self, user: &str, from: &str, id: u64) {
        if let Some(mut c) = self.kept.counts.get_mut(user) {
            c.total = c.total.saturating_sub(1);
            if let Some(share) = c.by_sender.get_mut(from) {
                share.retain(|&(i, _)| i != id);
                if share.is_empty() {
                    c.by_sender.remove(from);
                }
            }
        }
    }

    /// Takes the oldest of `from`'s kept events for `user` off their share until one more
    /// fits in `per_sender`, and returns them (id, gid).
    fn over_share(&self, user: &str, from: &str, per_sender: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if let Some(mut c) = self.kept.counts.get_mut(user) {
            let Counts { total, by_sender } = &mut *c;
            if let Some(share) = by_sender.get_mut(from) {
                while share.len() >= per_sender {
                    let Some(old) = share.pop_front() else { break };
                    *total = total.saturating_sub(1);
                    out.push(old);
                }
            }
        }
        out
    }

    /// The drops that make room for `ev` among `user`'s kept events. Reads the index only
    /// for what it drops: the user's events of the group when `ev` supersedes them, and the
    /// oldest of an operator's share or of the total when over a bound.
    fn bound_writes(&self, ws: &mut WriteSet, user: &str, ev: &GroupEvent) -> Result<()> {
        let gid = gid_of(ev);
        // Counted from the store before this write set drops anything.
        self.load_share(user, &ev.from)?;
        let mut dropped = std::collections::BTreeSet::new();
        if supersedes(ev, user) {
            let prefix = by_group_prefix(user, gid);
            for kv in self.db.scan_prefix(&prefix) {
                let (k, from) = kv?;
                let Some(old) = keys::trailing_u64(&k) else {
                    continue;
                };
                let from = String::from_utf8_lossy(&from);
                drop_writes(ws, user, old, gid, &from);
                self.count_dropped(user, &from, old);
                dropped.insert(old);
            }
            if !dropped.is_empty() {
                metrics::counter!("convoke_kept_events_superseded_total")
                    .increment(dropped.len() as u64);
            }
        }
        let mut over = 0u64;
        // One operator's share: the oldest of theirs go first.
        let per_sender = self.kept.per_sender.load(Ordering::Relaxed);
        for (old, g) in self.over_share(user, &ev.from, per_sender) {
            drop_writes(ws, user, old, g, &ev.from);
            dropped.insert(old);
            over += 1;
        }
        // The user's total: the oldest go first.
        let max = self.kept.max.load(Ordering::Relaxed);
        let excess = (self.kept_count(user)? + 1).saturating_sub(max);
        if excess > 0 {
            let oldest: Vec<sled::IVec> = self
                .db
                .scan_prefix(keys::inbox_prefix(user))
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| keys::trailing_u64(k).is_none_or(|id| !dropped.contains(&id)))
                .take(excess)
                .collect();
            for k in oldest.iter() {
                let Some(old) = keys::trailing_u64(k) else {
                    continue;
                };
                match self.db.get(k)?.and_then(|v| event_of(&v)) {
                    Some(e) => {
                        drop_writes(ws, user, old, gid_of(&e), &e.from);
                        self.count_dropped(user, &e.from, old);
                    }
                    None => {
                        ws.delete(k.to_vec());
                        self.count_dropped(user, "", old);
                    }
                }
                over += 1;
            }
        }
        if over > 0 {
            metrics::counter!("convoke_kept_events_dropped_total").increment(over);
            tracing::info!(%user, dropped = over, operator = %ev.from, "kept events over their bounds dropped as a new one was kept");
        }
        Ok(())
    }

    /// The events kept for `user`, oldest first, each as a `Push::Kept` frame, and how many
    /// older ones were dropped because more than `max` were waiting. An entry written
    /// before kept events had ids on the wire (a plain `Push::Group` frame) is sent as a
    /// `Push::Kept` whose id is its key, so that it can be acknowledged too.
    pub fn inbox_pending(&self, user: &str, max: usize) -> Result<(Vec<Bytes>, usize)> {
        // Newest first, so that only `max` entries are ever held; older ones are dropped.
        let mut entries = Vec::new();
        let mut dropped = 0;
        for kv in self.db.scan_prefix(keys::inbox_prefix(user)).rev() {
            let (k, v) = kv?;
            if entries.len() < max {
                entries.push((k, v));
            } else {
                self.remove_kept(user, &k, &v)?;
                dropped += 1;
            }
        }
        entries.reverse();
        self.kept.counts.insert(
            user.to_string(),
            Counts {
                total: entries.len(),
                by_sender: HashMap::new(),
            },
        );
        let mut frames = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let legacy = match decode_frame::<Push>(&mut BytesMut::from(&v[..]), MAX_FRAME_LEN) {
                Ok(Some(Push::Group(event))) => {
                    keys::trailing_u64(&k).map(|id| Push::Kept { id, event })
                }
                _ => None,
            };
            match legacy.map(|p| frame_bytes(&p)) {
                Some(Ok(frame)) => frames.push(frame),
                _ => frames.push(Bytes::copy_from_slice(&v)),
            }
        }
        Ok((frames, dropped))
    }

    /// Removes one kept event (its key `k`, its frame `v`) and its index entries, now,
    /// and counts it off.
    fn remove_kept(&self, user: &str, k: &[u8], v: &[u8]) -> Result<()> {
        self.db.remove(k)?;
        match (keys::trailing_u64(k), event_of(v)) {
            (Some(id), Some(ev)) => {
                self.db.remove(by_group_key(user, gid_of(&ev), id))?;
                self.db.remove(by_sender_key(user, &ev.from, id))?;
                self.count_dropped(user, &ev.from, id);
            }
            _ => self.count_dropped(user, "", 0),
        }
        Ok(())
    }

    /// One page of the events kept for `user`, oldest first from after the kept id `after`
    /// (`None`: the oldest), as `Push::Kept` frames like [`Store::inbox_pending`]: at most
    /// `max` frames and about `max_bytes` (always at least one). Returns the cursor for the
    /// next page, `None` when this was the last. The login replay reads page by page, so a
    /// user with many kept events never has them all in memory at once.
    pub fn inbox_page(
        &self,
        user: &str,
        after: Option<u64>,
        max: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Bytes>, Option<u64>)> {
        let prefix = keys::inbox_prefix(user);
        let start = match after {
            Some(id) => keys::inbox_key(user, id.saturating_add(1)),
            None => prefix.clone(),
        };
        let mut frames = Vec::new();
        let mut bytes = 0usize;
        let mut last = None;
        for kv in self.db.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                return Ok((frames, None));
            }
            if frames.len() >= max || (!frames.is_empty() && bytes + v.len() > max_bytes) {
                return Ok((frames, last));
            }
            bytes += v.len();
            last = keys::trailing_u64(&k);
            let legacy = match decode_frame::<Push>(&mut BytesMut::from(&v[..]), MAX_FRAME_LEN) {
                Ok(Some(Push::Group(event))) => last.map(|id| Push::Kept { id, event }),
                _ => None,
            };
            match legacy.map(|p| frame_bytes(&p)) {
                Some(Ok(frame)) => frames.push(frame),
                _ => frames.push(Bytes::copy_from_slice(&v)),
            }
        }
        Ok((frames, None))
    }

    /// Drops the oldest of `user`'s kept events beyond the newest `max` (stores written
    /// before kept events were bounded when written); returns how many it dropped and how
    /// many are kept. Reads keys only.
    pub fn inbox_trim(&self, user: &str, max: usize) -> Result<(usize, usize)> {
        let prefix = keys::inbox_prefix(user);
        let total = self.db.scan_prefix(&prefix).keys().count();
        let excess = total.saturating_sub(max);
        let mut dropped = 0;
        for kv in self.db.scan_prefix(&prefix).take(excess) {
            let (k, v) = kv?;
            self.remove_kept(user, &k, &v)?;
            dropped += 1;
        }
        Ok((dropped, total - dropped))
    }

    /// How many of `user`'s kept events each operator (the event's `from`) has, from the
    /// per-operator index (keys only; an entry whose event is gone is not counted).
    pub fn inbox_senders(&self, user: &str) -> Result<Vec<(String, u32)>> {
        let mut prefix = vec![keys::KEPT_BY_SENDER];
        prefix.extend_from_slice(user.as_bytes());
        prefix.push(0);
        let mut counts: Vec<(String, u32)> = Vec::new();
        for k in self.db.scan_prefix(&prefix).keys() {
            let k = k?;
            let rest = &k[prefix.len()..];
            let Some(end) = rest.iter().position(|&b| b == 0) else {
                continue;
            };
            let Some(id) = keys::trailing_u64(&k) else {
                continue;
            };
            if !self.db.contains_key(keys::inbox_key(user, id))? {
                continue;
            }
            let from = String::from_utf8_lossy(&rest[..end]);
            match counts.last_mut() {
                Some((f, n)) if *f == from => *n += 1,
                _ => counts.push((from.into_owned(), 1)),
            }
        }
        Ok(counts)
    }

    /// Stops keeping the acknowledged events `ids` for `user` (ids not kept for them are
    /// ignored). Applied at once, so that the user's next login no longer sees them, but
    /// not flushed: an acknowledgement lost in a crash only means the event is sent once
    /// more. (Plain removes, not a batch: a sled batch costs a log-buffer write of its own,
    /// and each removal stands alone; an index entry left by a crash between them is
    /// removed when next met.) A client can only acknowledge an event it received, i.e.
    /// after the commit that kept it, so a removal never overtakes its insertion.
    pub fn inbox_ack(&self, user: &str, ids: &[u64]) -> Result<()> {
        for id in ids {
            let k = keys::inbox_key(user, *id);
            if let Some(v) = self.db.get(&k)? {
                self.remove_kept(user, &k, &v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoke_protocol::EventDetail;

    fn ev(op: GroupEventOp, gid: u64, from: &str, users: &[&str]) -> GroupEvent {
        GroupEvent {
            operation: op,
            group_id: gid.to_string(),
            group_name: "g".into(),
            from: from.into(),
            users: users.iter().map(|u| u.to_string()).collect(),
            detail: EventDetail::None,
            timestamp: 0,
        }
    }

    async fn keep(store: &Store, user: &str, e: GroupEvent) -> u64 {
        let id = store.new_id().unwrap();
        let frame = frame_bytes(&Push::Kept { id, event: e }).unwrap();
        let mut ws = WriteSet::default();
        store.inbox_put(&mut ws, user, id, &frame);
        store.commit(ws).await.unwrap();
        id
    }

    fn kept(store: &Store, user: &str) -> Vec<(GroupEventOp, String, String)> {
        let (frames, _) = store.inbox_pending(user, usize::MAX).unwrap();
        frames
            .iter()
            .filter_map(|f| event_of(f))
            .map(|e| (e.operation, e.group_id, e.from))
            .collect()
    }

    fn index_len(store: &Store) -> usize {
        [keys::KEPT_BY_GROUP, keys::KEPT_BY_SENDER]
            .iter()
            .map(|t| store.db.scan_prefix([*t]).count())
            .sum()
    }

    #[tokio::test]
    async fn a_destroy_or_removal_supersedes_the_older_events_of_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        keep(
            &store,
            "v",
            ev(GroupEventOp::InviteToJoin, 1, "friend", &["v"]),
        )
        .await;
        keep(&store, "v", ev(GroupEventOp::DirectJoined, 2, "x", &["v"])).await;
        keep(&store, "v", ev(GroupEventOp::ChangeOwner, 2, "y", &["y"])).await;
        keep(&store, "v", ev(GroupEventOp::Destroy, 2, "y", &[])).await;
        keep(&store, "v", ev(GroupEventOp::DirectJoined, 3, "x", &["v"])).await;
        keep(&store, "v", ev(GroupEventOp::RemoveMember, 3, "x", &["v"])).await;
        keep(
            &store,
            "v",
            ev(GroupEventOp::RemoveMember, 1, "x", &["other"]),
        )
        .await;
        assert_eq!(
            kept(&store, "v"),
            vec![
                (GroupEventOp::InviteToJoin, "1".into(), "friend".into()),
                (GroupEventOp::Destroy, "2".into(), "y".into()),
                (GroupEventOp::RemoveMember, "3".into(), "x".into()),
                (GroupEventOp::RemoveMember, "1".into(), "x".into()),
            ],
            "a removal of someone else supersedes nothing"
        );
    }

    #[tokio::test]
    async fn one_operator_fills_only_their_share_and_the_total_is_bounded_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        store.set_kept_limits(5, 2);
        keep(
            &store,
            "v",
            ev(GroupEventOp::InviteToJoin, 1, "friend", &["v"]),
        )
        .await;
        for gid in 10..20 {
            keep(
                &store,
                "v",
                ev(GroupEventOp::InviteToJoin, gid, "flood", &["v"]),
            )
            .await;
        }
        assert_eq!(
            kept(&store, "v"),
            vec![
                (GroupEventOp::InviteToJoin, "1".into(), "friend".into()),
                (GroupEventOp::InviteToJoin, "18".into(), "flood".into()),
                (GroupEventOp::InviteToJoin, "19".into(), "flood".into()),
            ]
        );
        for (i, from) in ["a", "b", "c", "d"].iter().enumerate() {
            keep(
                &store,
                "v",
                ev(GroupEventOp::InviteToJoin, 30 + i as u64, from, &["v"]),
            )
            .await;
        }
        let now = kept(&store, "v");
        assert_eq!(now.len(), 5, "{now:?}");
        assert_eq!(now[0].1, "19", "the oldest went first: {now:?}");
        assert_eq!(
            index_len(&store),
            2 * 5,
            "index entries go with their events"
        );
    }

    #[tokio::test]
    async fn two_write_sets_built_at_once_drop_two_different_events_of_a_full_share() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        store.set_kept_limits(100, 3);
        for gid in 1..=3 {
            keep(&store, "v", ev(GroupEventOp::Destroy, gid, "flood", &[])).await;
        }
        // Two group actors keeping an event for "v" at the same time: both write sets are
        // built before either is committed.
        let mut sets = Vec::new();
        for gid in [10, 11] {
            let id = store.new_id().unwrap();
            let e = ev(GroupEventOp::DirectJoined, gid, "flood", &["v"]);
            let frame = frame_bytes(&Push::Kept { id, event: e }).unwrap();
            let mut ws = WriteSet::default();
            store.inbox_put(&mut ws, "v", id, &frame);
            sets.push(ws);
        }
        for ws in sets {
            store.commit(ws).await.unwrap();
        }
        let gids: Vec<String> = kept(&store, "v").into_iter().map(|k| k.1).collect();
        assert_eq!(gids, ["3", "10", "11"], "the share stays at its bound");
    }

    #[tokio::test]
    async fn an_acknowledgement_removes_the_event_and_its_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let a = keep(&store, "v", ev(GroupEventOp::InviteToJoin, 1, "x", &["v"])).await;
        let b = keep(&store, "v", ev(GroupEventOp::InviteToJoin, 2, "x", &["v"])).await;
        store.inbox_ack("v", &[a, 999]).unwrap();
        assert_eq!(kept(&store, "v").len(), 1);
        assert_eq!(index_len(&store), 2);
        store.inbox_ack("v", &[b]).unwrap();
        assert_eq!(index_len(&store), 0);
    }
}
