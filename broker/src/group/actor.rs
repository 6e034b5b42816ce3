//! The group actor: drives [`rules`](super::rules) for one group.
//!
//! For each request: apply the rule (which validates before changing anything), persist the
//! touched records plus offline-inbox copies of state-changing events in one atomic write
//! set, wait for the shared flush, answer, then fan the events out to online sessions. A
//! failed write reloads the state from the store so memory never runs ahead of disk.

use super::model::Group;
use super::rules::{self, Caller, Ctx, Dirty, Effects, Limits};
use crate::clock::now_ms;
use crate::presence::Presence;
use crate::store::{Store, WriteSet};
use convoke_protocol::{
    codec::frame_bytes, ApiError, CreateGroupData, ErrorCode, Push, Request, Response,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What group actors share: the store, presence, limits, timings.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    pub presence: Presence,
    pub limits: Limits,
    /// Stop an actor after this long without requests (and without pending timers).
    pub idle: Duration,
    /// Test hooks: a modifyGroup with ext "convoke:panic" panics the actor; a send whose
    /// client message id starts with [`super::messages::ABORT_AFTER_COMMIT`] aborts the
    /// process once its message is durable, before the answer.
    pub fault_injection: bool,
    pub messages: super::messages::MessageSettings,
    /// Shared-file blobs and quotas.
    pub files: crate::files::Files,
}

/// The answer to one request.
pub type Reply = Result<Response, ApiError>;

/// Messages a group actor handles. Local only: sessions reach it through [`super::Groups`].
#[derive(Debug)]
pub enum GroupMsg {
    /// A request from a session.
    Request {
        caller: Caller,
        request: Request,
        reply: RpcReplyPort<Reply>,
    },
    /// createGroup: only accepted while the group does not exist yet.
    Create {
        caller: Caller,
        data: CreateGroupData,
        reply: RpcReplyPort<Reply>,
    },
    /// Timer: end expired mutes; check idleness.
    Tick,
    /// A shared-file transfer's admission, record or look-up (see `super::files`).
    File {
        caller: Caller,
        op: super::rules::files::FileOp,
        reply: RpcReplyPort<super::files::FileResult>,
    },
}

impl ractor::Message for GroupMsg {}

/// The actor (stateless handler; state lives in [`GroupState`]).
#[derive(Debug)]
pub struct GroupActor;

/// Arguments to spawn a group actor.
#[derive(Debug)]
pub struct GroupArgs {
    pub gid: u64,
    pub shared: Arc<Shared>,
    /// The directory to tell when idle.
    pub directory: ActorRef<super::directory::DirectoryMsg>,
}

/// A running group actor's state.
#[derive(Debug)]
pub struct GroupState {
    pub(super) gid: u64,
    pub(super) group: Option<Group>,
    pub(super) shared: Arc<Shared>,
    pub(super) msgs: super::messages::MessageState,
    /// Answers sends and delivers messages in order, after their flush.
    pub(super) publisher: tokio::sync::mpsc::Sender<super::messages::Publish>,
    directory: ActorRef<super::directory::DirectoryMsg>,
    last_active: Instant,
    /// The mute expiry the pending timer is armed for.
    armed_for: Option<i64>,
    idle_reported: bool,
}

impl Actor for GroupActor {
    type Msg = GroupMsg;
    type State = GroupState;
    type Arguments = GroupArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GroupMsg>,
        args: GroupArgs,
    ) -> Result<GroupState, ActorProcessingErr> {
        let group = args.shared.store.load_group(args.gid)?;
        let (next_seq, first_seq) = args.shared.store.load_seq(args.gid)?;
        let first_client_id_seq = args.shared.store.first_client_id_seq(args.gid, 0)?;
        let mut st = GroupState {
            gid: args.gid,
            group,
            msgs: super::messages::MessageState::new(next_seq, first_seq, first_client_id_seq),
            publisher: super::messages::spawn_publisher(args.shared.presence.clone()),
            shared: args.shared,
            directory: args.directory,
            last_active: Instant::now(),
            armed_for: None,
            idle_reported: false,
        };
        // Mutes that expired while no actor ran end now; later ones get a timer.
        expire_and_arm(&myself, &mut st).await;
        let idle_check = (st.shared.idle / 4).max(Duration::from_millis(50));
        myself.send_interval(idle_check, || GroupMsg::Tick);
        metrics::counter!("convoke_group_actor_spawns_total").increment(1);
        metrics::gauge!("convoke_group_actors").increment(1.0);
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<GroupMsg>,
        _st: &mut GroupState,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("convoke_group_actors").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<GroupMsg>,
        msg: GroupMsg,
        st: &mut GroupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GroupMsg::Request {
                caller,
                request,
                reply,
            } => {
                st.last_active = Instant::now();
                st.idle_reported = false;
                if st.shared.fault_injection {
                    if let Request::ModifyGroup { ext: Some(ext), .. } = &request {
                        if ext == "convoke:panic" {
                            panic!("fault injection: group {} asked to panic", st.gid);
                        }
                    }
                }
                let result = match request {
                    // The hot path takes the payload by value: no copy of up to 64 KiB.
                    Request::SendGroupMessage {
                        payload,
                        allow_group_ack,
                        client_msg_id,
                        ..
                    } => {
                        // Answered by the publisher once durable.
                        super::messages::send(
                            st,
                            &caller,
                            payload,
                            allow_group_ack,
                            client_msg_id,
                            reply,
                        )
                        .await;
                        return Ok(());
                    }
                    request => handle_request(&myself, st, &caller, &request).await,
                };
                let _ = reply.send(result);
            }
            GroupMsg::Create {
                caller,
                data,
                reply,
            } => {
                st.last_active = Instant::now();
                let result = handle_create(st, &caller, &data).await;
                let _ = reply.send(result);
            }
            GroupMsg::File { caller, op, reply } => {
                st.last_active = Instant::now();
                st.idle_reported = false;
                let _ = reply.send(super::files::handle(st, &caller, op).await);
            }
            GroupMsg::Tick => {
                expire_and_arm(&myself, st).await;
                super::messages::trim_by_age(st).await;
                st.msgs.tidy();
                // Pending mute expiries and uploads in progress (which hold quota places)
                // keep the actor.
                let timers_pending = st
                    .group
                    .as_ref()
                    .is_some_and(|g| g.next_expiry().is_some() || !g.uploading.is_empty());
                // A group that does not exist (destroyed, or never created) goes after a second.
                let idle_after = if st.group.is_none() {
                    Duration::from_secs(1)
                } else {
                    st.shared.idle
                };
                if !timers_pending && st.last_active.elapsed() >= idle_after && !st.idle_reported {
                    st.idle_reported = true;
                    let _ = st.directory.cast(super::directory::DirectoryMsg::Idle(
                        st.gid,
                        myself.get_id(),
                    ));
                }
            }
        }
        Ok(())
    }
}

async fn handle_request(
    myself: &ActorRef<GroupMsg>,
    st: &mut GroupState,
    caller: &Caller,
    request: &Request,
) -> Reply {
    let shared = st.shared.clone();
    use super::messages;
    match request {
        Request::AckGroupMessage { msg_id, .. } => return messages::ack(st, caller, msg_id).await,
        Request::GetGroupMsgReadUser {
            msg_id,
            limit,
            cursor,
            ..
        } => return messages::read_users(st, caller, msg_id, *limit, cursor.as_deref()),
        Request::GetGroupMessages {
            before,
            after,
            limit,
            ..
        } => return messages::history(st, caller, *before, *after, *limit),
        _ => {}
    }
    let Some(g) = st.group.as_mut() else {
        return Err(ApiError::no_group(&st.gid.to_string()));
    };
    let ctx = Ctx {
        now: now_ms(),
        limits: &shared.limits,
        env: &shared.store,
    };
    let fx = rules::apply(g, caller, request, &ctx)?;
    if fx.dirty.is_empty() && fx.announce.is_empty() && !fx.destroyed {
        return Ok(fx.response);
    }
    let response = commit_and_announce(st, caller.session_id, fx).await?;
    expire_and_arm(myself, st).await;
    Ok(response)
}

async fn handle_create(st: &mut GroupState, caller: &Caller, data: &CreateGroupData) -> Reply {
    if st.group.is_some() {
        return Err(ApiError::new(
            ErrorCode::Internal,
            format!("group id {} already in use", st.gid),
        ));
    }
    let shared = st.shared.clone();
    let ctx = Ctx {
        now: now_ms(),
        limits: &shared.limits,
        env: &shared.store,
    };
    let (g, fx) = rules::create(st.gid, caller, data, &ctx)?;
    st.group = Some(g);
    let result = commit_and_announce(st, caller.session_id, fx).await;
    if result.is_err() {
        st.group = None;
    }
    result
}

/// Persists `fx` (with inbox copies of its state-changing events), then announces it.
pub(super) async fn commit_and_announce(
    st: &mut GroupState,
    origin_session: u64,
    fx: Effects,
) -> Reply {
    let shared = st.shared.clone();
    // The rule already changed the group in memory: if the change cannot be made durable,
    // the memory goes back to what the store has.
    let (ws, frames) = match write_set_and_frames(st, &fx) {
        Ok(x) => x,
        Err(e) => {
            reload(st);
            return Err(e);
        }
    };
    if let Err(e) = shared.store.commit(ws).await {
        tracing::error!(group = st.gid, error = %e, "commit failed; reloading group from the store");
        reload(st);
        return Err(internal(e));
    }
    if fx.destroyed {
        st.group = None;
    }
    if fx.dirty.iter().any(|d| matches!(d, Dirty::Member(_))) || fx.destroyed {
        st.msgs.roster_changed();
    }
    // Messages sent before this change are delivered before its events.
    super::messages::barrier(&st.publisher).await;
    super::files::after_commit(&shared, st.gid, st.group.as_ref(), &fx);
    for (a, frame) in fx.announce.iter().zip(frames) {
        let fanout_started = Instant::now();
        let n = shared.presence.deliver(&a.to, &frame, origin_session);
        metrics::counter!("convoke_events_delivered_total").increment(n as u64);
        metrics::histogram!("convoke_fanout_recipients").record(n as f64);
        metrics::histogram!("convoke_fanout_duration_seconds")
            .record(fanout_started.elapsed().as_secs_f64());
    }
    Ok(fx.response)
}

/// Replaces the group in memory with what the store holds, after a change could not be
/// made durable. Uploads in progress keep their places under the quota.
fn reload(st: &mut GroupState) {
    let uploading = st
        .group
        .as_mut()
        .map(|g| std::mem::take(&mut g.uploading))
        .unwrap_or_default();
    st.group = st.shared.store.load_group(st.gid).ok().flatten();
    if let Some(g) = st.group.as_mut() {
        g.uploading = uploading;
    }
    st.msgs.roster_changed();
}

/// The write set that persists `fx` (records, destroy, kept-event copies) and the encoded
/// frames of its announcements.
fn write_set_and_frames(
    st: &GroupState,
    fx: &Effects,
) -> Result<(WriteSet, Vec<bytes::Bytes>), ApiError> {
    let shared = &st.shared;
    let Some(g) = st.group.as_ref() else {
        return Err(ApiError::no_group(&st.gid.to_string()));
    };
    let mut ws = WriteSet::default();
    shared.store.group_writes(g, &fx.dirty, &mut ws);
    if fx.destroyed {
        shared.store.destroy_writes(g, &mut ws).map_err(internal)?;
        shared
            .store
            .history_destroy_writes(&mut ws, g.id)
            .map_err(internal)?;
    }
    let mut frames = Vec::with_capacity(fx.announce.len());
    for a in &fx.announce {
        // A state-changing event is kept for every recipient (online or not: a session may
        // be dead without the broker knowing yet) until one of their clients acknowledges
        // it, and is sent as `Push::Kept` carrying the id to acknowledge.
        let kept = match (&a.push, a.keep_offline) {
            (Push::Group(ev), true) => Some(Push::Kept {
                id: shared.store.new_id().map_err(internal)?,
                event: ev.clone(),
            }),
            _ => None,
        };
        let push = kept.as_ref().unwrap_or(&a.push);
        let frame =
            frame_bytes(push).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        if let Some(Push::Kept { id, event }) = &kept {
            // Not for the operator, who made the change, unless it is about them (an app
            // admin removing themself, say).
            let keep_for = |u: &&String| **u != event.from || event.users.contains(u);
            for u in a.to.iter().filter(keep_for) {
                shared.store.inbox_put(&mut ws, u, *id, &frame);
            }
        }
        frames.push(frame);
    }
    Ok((ws, frames))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("storage failure, nothing changed: {e}"),
    )
}

/// Ends expired mutes (persisting and announcing it) and arms a timer for the next expiry.
async fn expire_and_arm(myself: &ActorRef<GroupMsg>, st: &mut GroupState) {
    let now = now_ms();
    let fx = st.group.as_mut().and_then(|g| rules::expire_mutes(g, now));
    if let Some(fx) = fx {
        if let Err(e) = commit_and_announce(st, 0, fx).await {
            tracing::warn!(group = st.gid, error = %e, "could not persist mute expiry; will retry");
        }
    }
    let next = st.group.as_ref().and_then(Group::next_expiry);
    if let Some(at) = next {
        if st.armed_for != Some(at) {
            st.armed_for = Some(at);
            let delay =
                Duration::from_millis(u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0));
            myself.send_after(delay, || GroupMsg::Tick);
        }
    } else {
        st.armed_for = None;
    }
}
