//! The group directory: the supervisor of all group actors on this node.
//!
//! It spawns a group's actor on first use (state read from the store), restarts it after a
//! panic (state re-read, so only unacknowledged work is lost), and stops it when idle, when
//! it was loaded only for requests it refused, or to stay within `groups.max_resident`
//! (the least recently used idle actor goes). It guarantees one actor per group, reading a
//! complete store:
//! - an actor to stop is first removed from the lookup map and sent
//!   [`GroupMsg::Retire`](super::actor::GroupMsg::Retire); it stops only if it was not used
//!   since (a stale idle report is dropped: it answers [`DirectoryMsg::Keep`]);
//! - while a group's old actor is still alive (stopping, or dead and not yet reported) a
//!   request for it waits here for its end;
//! - a new actor reads the group only once the committer has finished every write set
//!   submitted before the old actor ended (its messages are submitted without waiting, so
//!   some may still be queued): otherwise it could read an old sequence number and
//!   overwrite an acknowledged message. That wait runs in a task, not in the directory.
//!
//! Timed mutes: an actor arms a timer only for an expiry within the idle time. When one
//! with a later expiry stops, the directory keeps (group, expiry) in a wake-up list with
//! one timer, and loads the group again shortly before the expiry.
//!
//! [`Groups`] is the handle the ingress uses (through [`Groups::call`](super::call)): a
//! lock-free map look-up in the common case, a call to the directory only to spawn.

use super::actor::{GroupActor, GroupArgs, GroupMsg, Shared};
use super::persist::GroupStore;
use crate::clock::now_ms;
use convoke_protocol::{ApiError, ErrorCode};
use dashmap::DashMap;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type SpawnReply = RpcReplyPort<Result<ActorRef<GroupMsg>, ApiError>>;

/// The directory's one wake-up timer.
type WakeTimer = ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<DirectoryMsg>>>;

/// Messages to the directory.
#[derive(Debug)]
pub enum DirectoryMsg {
    /// Get the actor of `gid`, spawning it if needed.
    Spawn(u64, SpawnReply),
    /// The actor `id` of group `gid` has been idle since its last use `stamp` (or has only
    /// refused requests: `refused`): retire it.
    Idle {
        gid: u64,
        id: ActorId,
        stamp: i64,
        refused: bool,
    },
    /// The actor `ActorId` of group `gid` refused to retire (used since, or pinned by a
    /// timer or an upload): put it back.
    Keep(u64, ActorId),
    /// Group `gid` has a mute ending at this time (ms since the epoch) and no actor: load
    /// it shortly before.
    Wake(u64, i64),
    /// The wake-up timer fired.
    WakeDue,
    /// The committer has (true) or has not within its deadline (false) finished what was
    /// submitted before group `gid`'s last actor ended.
    Settled(u64, bool),
}

impl ractor::Message for DirectoryMsg {}

/// The supervisor actor.
#[derive(Debug)]
pub struct Directory;

/// A live group actor as the directory knows it.
#[derive(Debug)]
struct Live {
    gid: u64,
    actor: ActorRef<GroupMsg>,
    last_use: Arc<AtomicI64>,
}

/// The directory's state.
#[derive(Debug)]
pub struct DirectoryState {
    shared: Arc<Shared>,
    map: Arc<DashMap<u64, ActorRef<GroupMsg>>>,
    /// Live actors by id (including stopping ones, until their termination is seen).
    live: HashMap<ActorId, Live>,
    /// The live actor of each group (at most one).
    live_of: HashMap<u64, ActorId>,
    /// Groups whose old actor is stopping (or asked to retire), with the spawn requests
    /// waiting for it.
    draining: HashMap<u64, Vec<SpawnReply>>,
    /// Groups whose last actor ended with write sets possibly still queued: the committer
    /// submission count to wait for before a new actor reads the group.
    unsettled: HashMap<u64, u64>,
    /// Groups waiting for the committer, with the spawn requests waiting for them, and
    /// whether the group is to be restarted anyway (after a panic).
    settling: HashMap<u64, (Vec<SpawnReply>, bool)>,
    /// Recent restarts per group, to give up on a group that panics in a loop.
    restarts: HashMap<u64, Vec<Instant>>,
    /// Mute expiries of groups without an actor: (expiry, gid), and each group's entry.
    wakes: BTreeSet<(i64, u64)>,
    wake_of: HashMap<u64, i64>,
    /// The one wake-up timer and the time it is armed for.
    wake_timer: Option<(i64, WakeTimer)>,
}

/// Arguments of the directory.
#[derive(Debug)]
pub struct DirectoryArgs {
    pub shared: Arc<Shared>,
    pub map: Arc<DashMap<u64, ActorRef<GroupMsg>>>,
}

/// An actor used within this long is never evicted to make room.
const EVICT_MIN_IDLE_MS: i64 = 1_000;

impl DirectoryState {
    fn gauge(&self) {
        metrics::gauge!("convoke_group_actors").set(self.live.len() as f64);
    }

    /// Takes group `gid`'s actor out of the map and asks it to retire.
    fn retire(&mut self, gid: u64, stamp: i64, reason: &'static str) -> bool {
        let Some((_, actor)) = self.map.remove(&gid) else {
            return false;
        };
        self.draining.entry(gid).or_default();
        if actor.send_message(GroupMsg::Retire { stamp }).is_err() {
            // Already stopping; its termination event will clear `draining`.
            tracing::debug!(group = gid, "actor already stopping");
        }
        metrics::counter!("convoke_group_actor_stops_total", "reason" => reason).increment(1);
        true
    }

    /// Makes room for one more actor under `groups.max_resident` by retiring the least
    /// recently used ones not used within [`EVICT_MIN_IDLE_MS`]. False if none could be.
    fn make_room(&mut self) -> bool {
        let cap = self.shared.max_resident.max(1);
        let resident = self.map.len();
        if resident < cap {
            return true;
        }
        let now = now_ms();
        let mut candidates: Vec<(i64, u64)> = self
            .live
            .values()
            .filter(|l| {
                self.map
                    .get(&l.gid)
                    .is_some_and(|a| a.get_id() == l.actor.get_id())
            })
            .map(|l| (l.last_use.load(Ordering::Relaxed), l.gid))
            .filter(|(used, _)| now.saturating_sub(*used) >= EVICT_MIN_IDLE_MS)
            .collect();
        // A few at a time, so that a full node does not scan all its actors per spawn.
        let want = (resident + 1 - cap)
            .max(cap / 64)
            .max(1)
            .min(candidates.len());
        if want == 0 {
            return false;
        }
        if want < candidates.len() {
            candidates.select_nth_unstable(want - 1);
        }
        for &(stamp, gid) in &candidates[..want] {
            self.retire(gid, stamp, "evicted");
        }
        true
    }

    /// Removes `gid` from the wake-up list.
    fn unwake(&mut self, gid: u64) {
        if let Some(at) = self.wake_of.remove(&gid) {
            self.wakes.remove(&(at, gid));
        }
    }

    /// Arms the wake-up timer for the earliest entry (once, not per entry).
    fn arm_wake(&mut self, myself: &ActorRef<DirectoryMsg>) {
        let Some(&(at, _)) = self.wakes.first() else {
            if let Some((_, h)) = self.wake_timer.take() {
                h.abort();
            }
            return;
        };
        // Loaded half an idle time early: the actor then arms its own timer.
        let lead = i64::try_from(self.shared.idle.as_millis() / 2).unwrap_or(0);
        let due = at.saturating_sub(lead);
        if self.wake_timer.as_ref().is_some_and(|(t, _)| *t <= due) {
            return;
        }
        if let Some((_, h)) = self.wake_timer.take() {
            h.abort();
        }
        let delay = Duration::from_millis(u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0));
        self.wake_timer = Some((due, myself.send_after(delay, || DirectoryMsg::WakeDue)));
    }
}

impl Directory {
    /// Answers `reply` with `gid`'s actor: at once if it runs, after its old actor ended
    /// and the committer caught up otherwise.
    async fn request(
        myself: &ActorRef<DirectoryMsg>,
        st: &mut DirectoryState,
        gid: u64,
        reply: SpawnReply,
    ) {
        if let Some(existing) = st.map.get(&gid) {
            let _ = reply.send(Ok(existing.clone()));
            return;
        }
        if st.live_of.contains_key(&gid) {
            // An old actor is stopping, or has died and its end is not reported yet.
            st.draining.entry(gid).or_default().push(reply);
            return;
        }
        if let Some(waiting) = st.settling.get_mut(&gid) {
            waiting.0.push(reply);
            return;
        }
        if let Some(&ticket) = st.unsettled.get(&gid) {
            if !st.shared.store.settled(ticket) {
                Self::settle(myself, st, gid, ticket, vec![reply], false);
                return;
            }
            st.unsettled.remove(&gid);
        }
        let r = Self::spawn_group(myself, st, gid).await;
        let _ = reply.send(r);
    }

    /// Waits (in a task) for the committer to finish `ticket` write sets, then spawns.
    fn settle(
        myself: &ActorRef<DirectoryMsg>,
        st: &mut DirectoryState,
        gid: u64,
        ticket: u64,
        waiting: Vec<SpawnReply>,
        restart: bool,
    ) {
        let entry = st
            .settling
            .entry(gid)
            .or_insert_with(|| (Vec::new(), false));
        entry.0.extend(waiting);
        entry.1 |= restart;
        let store = st.shared.store.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let ok = store.settle(ticket).await;
            let _ = me.cast(DirectoryMsg::Settled(gid, ok));
        });
    }

    /// The old actor of `gid` has ended: spawn a new one for whoever waits (or to restart).
    async fn after_end(
        myself: &ActorRef<DirectoryMsg>,
        st: &mut DirectoryState,
        gid: u64,
        waiting: Vec<SpawnReply>,
        restart: bool,
    ) {
        // Everything the old actor submitted was submitted before now.
        let ticket = st.shared.store.submitted();
        if !st.shared.store.settled(ticket) {
            if st.unsettled.len() >= 1024 {
                // Entries of groups nobody asked for again: most are settled by now.
                let store = st.shared.store.clone();
                st.unsettled.retain(|_, t| !store.settled(*t));
            }
            st.unsettled.insert(gid, ticket);
            if !waiting.is_empty() || restart {
                Self::settle(myself, st, gid, ticket, waiting, restart);
            }
            return;
        }
        st.unsettled.remove(&gid);
        if waiting.is_empty() && !restart {
            return;
        }
        let r = Self::spawn_group(myself, st, gid).await;
        for reply in waiting {
            let _ = reply.send(r.clone());
        }
    }

    async fn spawn_group(
        myself: &ActorRef<DirectoryMsg>,
        st: &mut DirectoryState,
        gid: u64,
    ) -> Result<ActorRef<GroupMsg>, ApiError> {
        if let Some(existing) = st.map.get(&gid) {
            return Ok(existing.clone());
        }
        if let Some(cluster) = crate::cluster::Cluster::get() {
            if !cluster.owns(gid) {
                // Routing sends every call to the shard's owner; loading a group here would
                // make two actors of one group. Must stay 0.
                metrics::counter!("convoke_cluster_foreign_spawn_refused_total").increment(1);
                tracing::error!(group = gid, owner = ?cluster.owner_of(gid), "refused to load a group of a shard this node does not own");
                return Err(ApiError::new(
                    ErrorCode::ServerBusy,
                    format!(
                        "group {gid} belongs to node {}, not to this node; retry",
                        cluster.owner_of(gid).unwrap_or("(unknown)")
                    ),
                ));
            }
        }
        if !st.make_room() {
            tracing::debug!(
                group = gid,
                "resident group actor cap reached; refusing a load"
            );
            return Err(ApiError::new(
                ErrorCode::ServerBusy,
                format!("too many groups are active (groups.max_resident); group {gid} cannot be loaded now, retry"),
            ));
        }
        let last_use = Arc::new(AtomicI64::new(now_ms()));
        let args = GroupArgs {
            gid,
            shared: st.shared.clone(),
            directory: myself.clone(),
            last_use: last_use.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, GroupActor, args, myself.get_cell())
            .await
            .map_err(|e| {
                tracing::error!(group = gid, error = %e, "group actor failed to start");
                ApiError::new(
                    ErrorCode::ServerBusy,
                    format!("group {gid} could not be loaded: {e}"),
                )
            })?;
        st.unwake(gid);
        st.live.insert(
            actor.get_id(),
            Live {
                gid,
                actor: actor.clone(),
                last_use,
            },
        );
        st.live_of.insert(gid, actor.get_id());
        st.map.insert(gid, actor.clone());
        st.gauge();
        Ok(actor)
    }

    /// Forgets a live actor that ended; returns its group.
    fn ended(st: &mut DirectoryState, id: ActorId) -> Option<u64> {
        let live = st.live.remove(&id)?;
        if st.live_of.get(&live.gid) == Some(&id) {
            st.live_of.remove(&live.gid);
        }
        st.map.remove_if(&live.gid, |_, a| a.get_id() == id);
        st.gauge();
        Some(live.gid)
    }
}

impl Actor for Directory {
    type Msg = DirectoryMsg;
    type State = DirectoryState;
    type Arguments = DirectoryArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DirectoryMsg>,
        args: DirectoryArgs,
    ) -> Result<DirectoryState, ActorProcessingErr> {
        Ok(DirectoryState {
            shared: args.shared,
            map: args.map,
            live: HashMap::new(),
            live_of: HashMap::new(),
            draining: HashMap::new(),
            unsettled: HashMap::new(),
            settling: HashMap::new(),
            restarts: HashMap::new(),
            wakes: BTreeSet::new(),
            wake_of: HashMap::new(),
            wake_timer: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<DirectoryMsg>,
        msg: DirectoryMsg,
        st: &mut DirectoryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DirectoryMsg::Spawn(gid, reply) => {
                if let Some(waiting) = st.draining.get_mut(&gid) {
                    waiting.push(reply);
                    return Ok(());
                }
                Self::request(&myself, st, gid, reply).await;
            }
            DirectoryMsg::Idle {
                gid,
                id,
                stamp,
                refused,
            } => {
                let current = st.map.get(&gid).map(|a| a.get_id());
                if current == Some(id) {
                    st.retire(gid, stamp, if refused { "refused" } else { "idle" });
                }
            }
            DirectoryMsg::Keep(gid, id) => {
                let Some(live) = st.live.get(&id) else {
                    return Ok(());
                };
                let actor = live.actor.clone();
                st.map.insert(gid, actor.clone());
                for reply in st.draining.remove(&gid).unwrap_or_default() {
                    let _ = reply.send(Ok(actor.clone()));
                }
            }
            DirectoryMsg::Wake(gid, at) => {
                st.unwake(gid);
                st.wakes.insert((at, gid));
                st.wake_of.insert(gid, at);
                st.arm_wake(&myself);
            }
            DirectoryMsg::WakeDue => {
                st.wake_timer = None;
                let lead = i64::try_from(st.shared.idle.as_millis() / 2).unwrap_or(0);
                let horizon = now_ms().saturating_add(lead);
                while let Some(&(at, gid)) = st.wakes.first() {
                    if at > horizon {
                        break;
                    }
                    st.unwake(gid);
                    if st.map.contains_key(&gid) || st.live_of.contains_key(&gid) {
                        continue;
                    }
                    let (reply, _) = ractor::concurrency::oneshot();
                    Self::request(&myself, st, gid, reply.into()).await;
                }
                st.arm_wake(&myself);
            }
            DirectoryMsg::Settled(gid, ok) => {
                let Some((waiting, restart)) = st.settling.remove(&gid) else {
                    return Ok(());
                };
                if !ok {
                    tracing::warn!(
                        group = gid,
                        "the store has not caught up with the group's last writes"
                    );
                    for reply in waiting {
                        let _ = reply.send(Err(ApiError::new(
                            ErrorCode::ServerBusy,
                            format!("group {gid} cannot be loaded: the store has not confirmed its last writes in time; retry"),
                        )));
                    }
                    if restart {
                        tracing::error!(group = gid, "group left stopped until next use");
                    }
                    return Ok(());
                }
                st.unsettled.remove(&gid);
                let r = Self::spawn_group(&myself, st, gid).await;
                for reply in waiting {
                    let _ = reply.send(r.clone());
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<DirectoryMsg>,
        evt: SupervisionEvent,
        st: &mut DirectoryState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(gid) = Self::ended(st, cell.get_id()) {
                    let waiting = st.draining.remove(&gid).unwrap_or_default();
                    Self::after_end(&myself, st, gid, waiting, false).await;
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(gid) = Self::ended(st, cell.get_id()) else {
                    return Ok(());
                };
                let waiting = st.draining.remove(&gid).unwrap_or_default();
                tracing::error!(group = gid, error = %err, "group actor failed; restarting from the store");
                metrics::counter!("convoke_group_actor_restarts_total").increment(1);
                let recent = st.restarts.entry(gid).or_default();
                recent.retain(|t| t.elapsed() < Duration::from_secs(10));
                recent.push(Instant::now());
                let restart = recent.len() <= 5;
                if !restart && waiting.is_empty() {
                    tracing::error!(
                        group = gid,
                        "group actor keeps failing; left stopped until next use"
                    );
                }
                Self::after_end(&myself, st, gid, waiting, restart).await;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The handle sessions use to reach groups. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Groups {
    map: Arc<DashMap<u64, ActorRef<GroupMsg>>>,
    directory: ActorRef<DirectoryMsg>,
    shared: Arc<Shared>,
}

impl Groups {
    /// The running actor of `gid`, if there is one (none is started).
    pub(super) fn running(&self, gid: u64) -> Option<ActorRef<GroupMsg>> {
        self.map.get(&gid).map(|a| a.clone())
    }

    /// Starts the directory.
    pub async fn start(
        shared: Arc<Shared>,
    ) -> anyhow::Result<(Self, ractor::concurrency::JoinHandle<()>)> {
        let map = Arc::new(DashMap::new());
        let (directory, handle) = Actor::spawn(
            None,
            Directory,
            DirectoryArgs {
                shared: shared.clone(),
                map: map.clone(),
            },
        )
        .await?;
        let groups = Self {
            map,
            directory,
            shared,
        };
        // Groups with a mute ending within the idle time get their actor (and timer) back
        // right away; later ones go on the directory's wake-up list.
        let window = i64::try_from(groups.shared.idle.as_millis()).unwrap_or(i64::MAX);
        for (gid, at) in groups.shared.store.timed_groups()? {
            match at {
                Some(at) if at.saturating_sub(now_ms()) > window => {
                    let _ = groups.directory.cast(DirectoryMsg::Wake(gid, at));
                }
                _ => {
                    if let Err(e) = groups.actor(gid).await {
                        tracing::warn!(group = gid, error = %e, "could not re-arm mute timers");
                    }
                }
            }
        }
        Ok((groups, handle))
    }

    /// Stops the directory and every group actor.
    pub fn stop(&self) {
        self.directory.stop_children(None);
        self.directory.stop(None);
    }

    /// Active group actors.
    pub fn active(&self) -> usize {
        self.map.len()
    }

    /// Whether group `gid` exists (its actor runs, or the store has its record).
    pub(super) fn exists(&self, gid: u64) -> bool {
        self.map.contains_key(&gid) || self.shared.store.meta(gid).ok().flatten().is_some()
    }

    /// The actor of `gid`, spawned if needed (whether or not the group exists).
    pub(super) async fn actor(&self, gid: u64) -> Result<ActorRef<GroupMsg>, ApiError> {
        if let Some(a) = self.map.get(&gid) {
            return Ok(a.clone());
        }
        ractor::call!(self.directory, DirectoryMsg::Spawn, gid).map_err(|e| {
            ApiError::new(
                ErrorCode::ServerBusy,
                format!("group directory unavailable: {e}"),
            )
        })?
    }

    /// Drops `actor` from the map if it is still the one of `gid` (it was stopping).
    pub(super) fn forget(&self, gid: u64, actor: &ActorRef<GroupMsg>) {
        self.map
            .remove_if(&gid, |_, a| a.get_id() == actor.get_id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{FileLimits, Files};
    use crate::group::call::GroupCall;
    use crate::group::messages::MessageSettings;
    use crate::group::rules::Limits;
    use crate::group::rules::{Caller, Facts};
    use crate::store::Store;
    use convoke_protocol::{CreateGroupData, Request};

    async fn groups(dir: &std::path::Path) -> Groups {
        let store = Store::open(&dir.join("db"), 1 << 20).expect("store");
        let limits = FileLimits {
            max_file_bytes: 10,
            max_files_per_group: 10,
        };
        let (files, _) = Files::open(dir.join("files"), limits, &store).expect("files");
        let shared = Arc::new(Shared {
            store,
            fanout: crate::fanout::Fanout::local(crate::presence::Presence::default()),
            limits: Limits::default(),
            idle: Duration::from_secs(300),
            max_resident: 100,
            fault_injection: false,
            messages: MessageSettings {
                max_bytes: 1024,
                history_per_group: 100,
                history_max_age_ms: i64::MAX,
                rate_per_sec: 0,
                receipt_max_group: 10,
                receipt_window_ms: 1000,
                dedup_window_ms: 1000,
                history_page_bytes: 1 << 20,
            },
            files,
        });
        Groups::start(shared).await.expect("directory").0
    }

    fn owner() -> Caller {
        Caller {
            user: "owner".into(),
            app_admin: false,
            session_id: 1,
        }
    }

    /// An idle report made stale by a request that arrived after it is dropped: the actor
    /// answers Retire with Keep and stays, the same actor, in the map. Without the check
    /// the actor drained and stopped although it had just been used.
    #[tokio::test]
    async fn a_stale_idle_report_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let groups = groups(dir.path()).await;
        let data = CreateGroupData {
            groupname: "g".into(),
            ..CreateGroupData::default()
        };
        let gid = groups.shared.store.new_id().expect("id");
        let created = groups
            .call(gid, owner(), Facts::default(), GroupCall::Create(data))
            .await
            .expect("queued");
        let Ok(convoke_protocol::Response::GroupCreated { group_id }) = created.response().await
        else {
            panic!("group not created");
        };
        let gid: u64 = group_id.parse().expect("id");
        let actor = groups.running(gid).expect("resident");
        // The report the actor would have made at its last use...
        let stamp = now_ms() - 10;
        // ...then a request arrives before the directory acts on the report.
        let read = Request::GetGroupMessages {
            group_id: group_id.clone(),
            before: None,
            after: None,
            limit: 10,
        };
        let answer = groups
            .call(gid, owner(), Facts::default(), GroupCall::Request(read))
            .await
            .expect("queued");
        assert!(answer.wait().await.is_ok());
        groups
            .directory
            .cast(DirectoryMsg::Idle {
                gid,
                id: actor.get_id(),
                stamp,
                refused: false,
            })
            .expect("cast");
        // The directory retires it, the actor answers Keep: back in the map, alive.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let back = groups.running(gid).map(|a| a.get_id());
            assert!(Instant::now() < deadline, "the actor did not come back");
            if back == Some(actor.get_id()) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            groups.running(gid).map(|a| a.get_id()),
            Some(actor.get_id())
        );
        assert_eq!(actor.get_status(), ractor::ActorStatus::Running);
    }
}
