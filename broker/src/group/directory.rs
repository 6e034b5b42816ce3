//! The group directory: the supervisor of all group actors on this node.
//!
//! It spawns a group's actor on first use (state read from the store), restarts it after a
//! panic (state re-read, so only unacknowledged work is lost), and stops it when idle. It
//! guarantees one actor per group: an idle actor is first removed from the lookup map and
//! drained; a request that arrives meanwhile waits for the old actor to finish before a new
//! one is spawned, so the new one always reads what the old one wrote.
//!
//! [`Groups`] is the handle sessions use: a lock-free map look-up in the common case, a call
//! to the directory only to spawn.

use super::actor::{GroupActor, GroupArgs, GroupMsg, Reply, Shared};
use super::rules::Caller;
use convoke_protocol::{ApiError, CreateGroupData, ErrorCode, Request};
use dashmap::DashMap;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

type SpawnReply = RpcReplyPort<Result<ActorRef<GroupMsg>, ApiError>>;

/// Messages to the directory.
#[derive(Debug)]
pub enum DirectoryMsg {
    /// Get the actor of `gid`, spawning it if needed.
    Spawn(u64, SpawnReply),
    /// The actor `ActorId` of group `gid` has been idle: stop it.
    Idle(u64, ActorId),
}

impl ractor::Message for DirectoryMsg {}

/// The supervisor actor.
#[derive(Debug)]
pub struct Directory;

/// The directory's state.
#[derive(Debug)]
pub struct DirectoryState {
    shared: Arc<Shared>,
    map: Arc<DashMap<u64, ActorRef<GroupMsg>>>,
    /// Live actors by id -> their group (including draining ones).
    live: HashMap<ActorId, u64>,
    /// Groups whose old actor is draining, with the spawn requests waiting for it.
    draining: HashMap<u64, Vec<SpawnReply>>,
    /// Recent restarts per group, to give up on a group that panics in a loop.
    restarts: HashMap<u64, Vec<Instant>>,
}

/// Arguments of the directory.
#[derive(Debug)]
pub struct DirectoryArgs {
    pub shared: Arc<Shared>,
    pub map: Arc<DashMap<u64, ActorRef<GroupMsg>>>,
}

impl Directory {
    async fn spawn_group(
        myself: &ActorRef<DirectoryMsg>,
        st: &mut DirectoryState,
        gid: u64,
    ) -> Result<ActorRef<GroupMsg>, ApiError> {
        if let Some(existing) = st.map.get(&gid) {
            return Ok(existing.clone());
        }
        let args = GroupArgs {
            gid,
            shared: st.shared.clone(),
            directory: myself.clone(),
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
        st.live.insert(actor.get_id(), gid);
        st.map.insert(gid, actor.clone());
        Ok(actor)
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
            draining: HashMap::new(),
            restarts: HashMap::new(),
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
                let r = Self::spawn_group(&myself, st, gid).await;
                let _ = reply.send(r);
            }
            DirectoryMsg::Idle(gid, id) => {
                let current = st.map.get(&gid).map(|a| a.get_id());
                if current == Some(id) {
                    if let Some((_, actor)) = st.map.remove(&gid) {
                        st.draining.insert(gid, Vec::new());
                        if actor.drain().is_err() {
                            // Already stopping; its termination event will clear `draining`.
                            tracing::debug!(group = gid, "idle actor already stopping");
                        }
                        metrics::counter!("convoke_group_actor_stops_total", "reason" => "idle")
                            .increment(1);
                    }
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
                if let Some(gid) = st.live.remove(&cell.get_id()) {
                    if st
                        .map
                        .get(&gid)
                        .is_some_and(|a| a.get_id() == cell.get_id())
                    {
                        st.map.remove(&gid);
                    }
                    if let Some(waiting) = st.draining.remove(&gid) {
                        for reply in waiting {
                            let r = Self::spawn_group(&myself, st, gid).await;
                            let _ = reply.send(r);
                        }
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(gid) = st.live.remove(&cell.get_id()) else {
                    return Ok(());
                };
                st.map.remove(&gid);
                let waiting = st.draining.remove(&gid).unwrap_or_default();
                tracing::error!(group = gid, error = %err, "group actor failed; restarting from the store");
                metrics::counter!("convoke_group_actor_restarts_total").increment(1);
                let recent = st.restarts.entry(gid).or_default();
                recent.retain(|t| t.elapsed() < Duration::from_secs(10));
                recent.push(Instant::now());
                let restart = recent.len() <= 5 || !waiting.is_empty();
                if restart {
                    let r = Self::spawn_group(&myself, st, gid).await;
                    for reply in waiting {
                        let _ = reply.send(r.clone());
                    }
                } else {
                    tracing::error!(
                        group = gid,
                        "group actor keeps failing; left stopped until next use"
                    );
                }
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
        // Groups with timed mutes get their actor (and timer) back right away.
        for gid in groups.shared.store.timed_groups()? {
            if let Err(e) = groups.actor(gid).await {
                tracing::warn!(group = gid, error = %e, "could not re-arm mute timers");
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

    async fn actor(&self, gid: u64) -> Result<ActorRef<GroupMsg>, ApiError> {
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

    /// The actor of an existing group (605 if there is no such group).
    pub(super) async fn actor_for(&self, gid: u64) -> Result<ActorRef<GroupMsg>, ApiError> {
        if !self.map.contains_key(&gid) && self.shared.store.meta(gid).ok().flatten().is_none() {
            return Err(ApiError::no_group(&gid.to_string()));
        }
        self.actor(gid).await
    }

    /// Drops `actor` from the map if it is still the one of `gid` (it was stopping).
    pub(super) fn forget(&self, gid: u64, actor: &ActorRef<GroupMsg>) {
        self.map
            .remove_if(&gid, |_, a| a.get_id() == actor.get_id());
    }

    /// Queues `request` in its group's mailbox and returns the pending answer.
    ///
    /// Awaiting this queues the message; awaiting the returned [`PendingReply`] waits for the
    /// answer. A session awaits the first in order and the second concurrently, so requests
    /// it receives in order reach the group in order, while still being pipelined.
    pub async fn dispatch(
        &self,
        gid: u64,
        caller: Caller,
        request: Request,
    ) -> Result<PendingReply, ApiError> {
        if !self.map.contains_key(&gid) && self.shared.store.meta(gid).ok().flatten().is_none() {
            return Err(ApiError::no_group(&gid.to_string()));
        }
        let (mut caller, mut request) = (caller, request);
        for _ in 0..3 {
            let actor = self.actor(gid).await?;
            let (tx, rx) = ractor::concurrency::oneshot();
            match actor.send_message(GroupMsg::Request {
                caller,
                request,
                reply: tx.into(),
            }) {
                Ok(()) => return Ok(PendingReply { gid, rx }),
                Err(ractor::MessagingErr::SendErr(GroupMsg::Request {
                    caller: c,
                    request: r,
                    ..
                })) => {
                    // The actor was stopping: drop the stale entry and try a fresh one.
                    self.map
                        .remove_if(&gid, |_, a| a.get_id() == actor.get_id());
                    (caller, request) = (c, r);
                }
                Err(e) => {
                    return Err(ApiError::new(
                        ErrorCode::ServerBusy,
                        format!("group {gid} unavailable: {e}"),
                    ))
                }
            }
        }
        Err(ApiError::new(
            ErrorCode::ServerBusy,
            format!("group {gid} is restarting; retry"),
        ))
    }

    /// createGroup: allocates an id and has a fresh actor create the group.
    pub async fn create(&self, caller: Caller, data: CreateGroupData) -> Reply {
        let gid = self
            .shared
            .store
            .new_id()
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let actor = self.actor(gid).await?;
        ractor::call!(actor, |reply| GroupMsg::Create {
            caller,
            data,
            reply
        })
        .map_err(|e| {
            ApiError::new(
                ErrorCode::ServerBusy,
                format!("group {gid} could not be created: {e}"),
            )
        })?
    }
}

/// An answer a group actor owes.
#[derive(Debug)]
pub struct PendingReply {
    gid: u64,
    rx: tokio::sync::oneshot::Receiver<Reply>,
}

impl PendingReply {
    /// Waits for the answer.
    pub async fn wait(self) -> Reply {
        let gid = self.gid;
        self.rx.await.unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::ServerBusy,
                format!("group {gid} restarted while handling the request; check the group state and retry"),
            ))
        })
    }
}
