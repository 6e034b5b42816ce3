//! The group actor: drives [`rules`](super::rules) for one group.
//!
//! For each request: apply the rule (which validates before changing anything), persist the
//! touched records plus offline-inbox copies of state-changing events in one atomic write
//! set, wait for the shared flush, answer, then fan the events out to online sessions. A
//! write refused before it reached the store reloads the state from the store; a write whose
//! outcome is unknown (failed flush, commit deadline) stops the actor, so that the next one
//! reads the store once the committer has caught up: memory never runs ahead of disk.
//!
//! Lifecycle (see [`super::directory`]): an actor reports itself idle (no requests for
//! `groups.idle_stop_secs`, or at once when it was loaded only for requests it refused to a
//! non-member), the directory takes it out of its map and sends [`GroupMsg::Retire`]; the
//! actor stops only if nothing happened since its report (a stale report is dropped). At
//! most one mute timer is armed per actor, only for an expiry within the idle time; later
//! expiries are left to the directory's wake-up list, so a mute far in the future does not
//! keep the group loaded.

use super::model::Group;
use super::persist::GroupStore;
use super::rules::{self, Caller, Ctx, Dirty, Effects, Facts, Limits};
use crate::clock::now_ms;
use crate::fanout::Fanout;
use crate::store::{CommitError, Fault, Store, StoreError, WriteSet};
use convoke_protocol::{
    codec::frame_bytes, ApiError, CreateGroupData, ErrorCode, Push, Request, Response,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What group actors share: the store, fan-out, limits, timings.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    /// Where events and messages go (local sessions; in a cluster, other nodes too).
    pub fanout: Fanout,
    pub limits: Limits,
    /// Stop an actor after this long without requests (and without pending timers).
    pub idle: Duration,
    /// At most this many group actors are resident; beyond it the least recently used idle
    /// ones are stopped (`groups.max_resident`).
    pub max_resident: usize,
    /// Test hooks (debug builds only, see `config`): a modifyGroup with ext
    /// "convoke:panic" panics the actor, "convoke:fail-flush" has its commit fail after the
    /// batch was applied, "convoke:hang-commit:<ms>" hangs the committer that long before
    /// its commit; each only once the permission check passed. A send whose client message
    /// id starts with [`super::messages::ABORT_AFTER_COMMIT`] aborts the process once its
    /// message is durable, before the answer.
    pub fault_injection: bool,
    pub messages: super::messages::MessageSettings,
    /// Shared-file blobs and quotas.
    pub files: crate::files::Files,
}

/// The answer to one request.
pub type Reply = Result<Response, ApiError>;

/// Messages a group actor handles. Local only: everything outside the group reaches it as a
/// [`super::GroupCall`] through [`super::Groups::call`].
#[derive(Debug)]
pub enum GroupMsg {
    /// A request from a session.
    Request {
        caller: Caller,
        /// Outside facts the rule may read (gathered by the ingress).
        facts: Facts,
        request: Request,
        reply: RpcReplyPort<Reply>,
    },
    /// createGroup: only accepted while the group does not exist yet.
    Create {
        caller: Caller,
        facts: Facts,
        data: CreateGroupData,
        reply: RpcReplyPort<Reply>,
    },
    /// getGroupInfo for this group (the ingress gathers a list of ids from their actors).
    Info {
        caller: Caller,
        reply: RpcReplyPort<Result<convoke_protocol::GroupInfo, ApiError>>,
    },
    /// Timer: end expired mutes; check idleness.
    Tick,
    /// A shared-file transfer's admission, record or look-up (see `super::files`).
    File {
        caller: Caller,
        op: super::rules::files::FileOp,
        reply: RpcReplyPort<super::files::FileResult>,
    },
    /// From the directory, which has taken the actor out of its map after an idle report
    /// (or to evict it): stop, unless it was used after `stamp` (its last use when the
    /// report or eviction was made) or a timer or upload keeps it.
    Retire { stamp: i64 },
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
    /// The actor's last use (ms since the epoch), which the directory reads to pick the
    /// least recently used actor to evict.
    pub last_use: Arc<AtomicI64>,
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
    /// Last use, ms since the epoch, shared with the directory.
    last_use: Arc<AtomicI64>,
    /// The mute expiry the pending timer is armed for.
    armed_for: Option<i64>,
    /// The one mute timer (aborted when re-armed, cancelled or the actor goes).
    timer: Timer,
    idle_reported: bool,
    /// A request of a member (or one that succeeded) was handled: the actor is not just
    /// the by-product of refused requests (which would let anyone load any group).
    useful: bool,
    /// A commit's outcome is unknown: memory may not match the store; the actor stops
    /// after this message.
    unsure: bool,
    /// Test hook: the fault to inject into the next commit.
    inject: Option<Fault>,
}

/// The actor's one pending mute timer; aborting it frees its sleeping task at once.
#[derive(Debug, Default)]
struct Timer(Option<ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<GroupMsg>>>>);

impl Timer {
    fn set(
        &mut self,
        handle: ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<GroupMsg>>>,
    ) {
        self.cancel();
        self.0 = Some(handle);
    }

    fn cancel(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl GroupState {
    /// Records a request (or file operation) arriving.
    fn touch(&mut self) {
        self.last_active = Instant::now();
        self.last_use.store(now_ms(), Ordering::Relaxed);
        self.idle_reported = false;
    }

    /// Whether a timer or an upload in progress needs the actor to stay.
    fn pinned(&self) -> bool {
        self.armed_for.is_some() || self.group.as_ref().is_some_and(|g| !g.uploading.is_empty())
    }

    /// Marks the actor useful if `user` is a member (or `ok`: the request succeeded).
    fn note_caller(&mut self, caller: &Caller, ok: bool) {
        if !self.useful {
            self.useful = ok
                || caller.app_admin
                || self
                    .group
                    .as_ref()
                    .is_some_and(|g| g.members.contains_key(&caller.user));
        }
    }

    /// Tells the directory this actor can go (`refused`: it only ever refused requests).
    fn report_idle(&mut self, myself: &ActorRef<GroupMsg>, refused: bool) {
        if self.idle_reported {
            return;
        }
        self.idle_reported = true;
        let _ = self.directory.cast(super::directory::DirectoryMsg::Idle {
            gid: self.gid,
            id: myself.get_id(),
            stamp: self.last_use.load(Ordering::Relaxed),
            refused,
        });
    }
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
        // The directory has waited for the committer to finish what an earlier actor of
        // this group submitted, so the store is complete for this group (seq included).
        let group = args.shared.store.load_group(args.gid)?;
        let (next_seq, first_seq) = args.shared.store.load_seq(args.gid)?;
        let first_client_id_seq = args.shared.store.first_client_id_seq(args.gid, 0)?;
        args.last_use.store(now_ms(), Ordering::Relaxed);
        let mut st = GroupState {
            gid: args.gid,
            group,
            msgs: super::messages::MessageState::new(next_seq, first_seq, first_client_id_seq),
            publisher: super::messages::spawn_publisher(args.gid, args.shared.fanout.clone()),
            shared: args.shared,
            directory: args.directory,
            last_active: Instant::now(),
            last_use: args.last_use,
            armed_for: None,
            timer: Timer::default(),
            idle_reported: false,
            useful: false,
            unsure: false,
            inject: None,
        };
        // Mutes that expired while no actor ran end now; the next one within the idle time
        // gets the timer.
        expire_and_arm(&myself, &mut st).await;
        let idle_check = (st.shared.idle / 4).max(Duration::from_millis(50));
        myself.send_interval(idle_check, || GroupMsg::Tick);
        metrics::counter!("convoke_group_actor_spawns_total").increment(1);
        Ok(st)
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
                facts,
                request,
                reply,
            } => {
                st.touch();
                if matches!(request, Request::SendGroupMessage { .. })
                    && st.shared.store.overloaded()
                {
                    // Refused before a seq is assigned: nothing changed, no gap.
                    let _ = reply.send(Err(store_overloaded()));
                    return Ok(());
                }
                match request {
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
                        st.note_caller(&caller, false);
                    }
                    request => {
                        let result = handle_request(&myself, st, &caller, &facts, &request).await;
                        st.note_caller(&caller, result.is_ok());
                        let _ = reply.send(result);
                    }
                }
                after_request(&myself, st);
            }
            GroupMsg::Create {
                caller,
                facts,
                data,
                reply,
            } => {
                st.touch();
                let result = handle_create(st, &caller, &facts, &data).await;
                st.note_caller(&caller, result.is_ok());
                let _ = reply.send(result);
                after_request(&myself, st);
            }
            GroupMsg::Info { caller, reply } => {
                st.touch();
                let result = match st.group.as_ref() {
                    Some(g) => rules::info(g, &caller),
                    None => Err(ApiError::no_group(&st.gid.to_string())),
                };
                // A read by a non-member (of a public group) does not keep the group loaded.
                st.note_caller(&caller, false);
                let _ = reply.send(result);
                after_request(&myself, st);
            }
            GroupMsg::File { caller, op, reply } => {
                st.touch();
                let result = super::files::handle(st, &caller, op).await;
                st.note_caller(&caller, result.is_ok());
                let _ = reply.send(result);
                after_request(&myself, st);
            }
            GroupMsg::Retire { stamp } => {
                // Used since the report (a stale report), or held by a timer or an upload:
                // stay. An actor that only ever refused non-members goes all the same.
                let used = st.last_use.load(Ordering::Relaxed) != stamp && st.useful;
                if used || st.pinned() {
                    st.idle_reported = false;
                    let _ = st.directory.cast(super::directory::DirectoryMsg::Keep(
                        st.gid,
                        myself.get_id(),
                    ));
                    return Ok(());
                }
                if let Some(at) = st.group.as_ref().and_then(Group::next_expiry) {
                    // A mute beyond the idle time: the directory wakes the group for it.
                    let _ = st
                        .directory
                        .cast(super::directory::DirectoryMsg::Wake(st.gid, at));
                }
                // Whatever was queued before this is handled first; later sends fail and
                // go through the directory, which waits for this actor to stop.
                let _ = myself.drain();
            }
            GroupMsg::Tick => {
                expire_and_arm(&myself, st).await;
                super::messages::trim_by_age(st).await;
                st.msgs.tidy();
                // A group that does not exist (destroyed, or never created) goes after a second.
                let idle_after = if st.group.is_none() {
                    Duration::from_secs(1)
                } else {
                    st.shared.idle
                };
                if st.unsure {
                    stop_unsure(&myself, st);
                } else if !st.pinned() && st.last_active.elapsed() >= idle_after {
                    st.report_idle(&myself, false);
                }
            }
        }
        Ok(())
    }
}

/// After a request: an actor whose commit outcome is unknown stops; one that was loaded only
/// for requests it refused to non-members reports itself idle at once.
fn after_request(myself: &ActorRef<GroupMsg>, st: &mut GroupState) {
    if st.unsure {
        stop_unsure(myself, st);
    } else if !st.useful && !st.pinned() {
        st.report_idle(myself, true);
    }
}

/// Stops an actor whose memory may not match the store (a commit with an unknown outcome).
/// Requests still queued are answered "restarted, check and retry" (500); the directory
/// lets the next actor read the group only once the committer has caught up.
fn stop_unsure(myself: &ActorRef<GroupMsg>, st: &GroupState) {
    tracing::warn!(
        group = st.gid,
        "a commit's outcome is unknown; stopping the group actor to re-read the store"
    );
    metrics::counter!("convoke_group_actor_stops_total", "reason" => "store").increment(1);
    if let Some(at) = st.group.as_ref().and_then(Group::next_expiry) {
        // Its mutes still end on time: the directory loads the group again for them.
        let _ = st
            .directory
            .cast(super::directory::DirectoryMsg::Wake(st.gid, at));
    }
    myself.stop(Some("store outcome unknown".into()));
}

fn store_overloaded() -> ApiError {
    ApiError::new(
        ErrorCode::ServerBusy,
        "the store's write queue is full; nothing changed, retry later",
    )
}

/// The answer to a change that could not be made durable: 500, retryable. The message
/// says whether it may have been stored (read the state, then retry) or surely was not.
pub(super) fn store_failure(e: &StoreError) -> ApiError {
    match e {
        StoreError::Commit(CommitError::NotWritten(_)) => ApiError::new(
            ErrorCode::ServerBusy,
            format!("{e}; nothing changed, retry"),
        ),
        _ => ApiError::new(
            ErrorCode::ServerBusy,
            format!("{e}: read the state and retry"),
        ),
    }
}

/// [`store_failure`] for a commit outcome the message publisher holds as text.
pub(super) fn commit_failure(e: &str) -> ApiError {
    if e.starts_with("storage failure, nothing was written") {
        ApiError::new(
            ErrorCode::ServerBusy,
            format!("{e}; nothing changed, retry"),
        )
    } else {
        ApiError::new(
            ErrorCode::ServerBusy,
            format!("{e}: read the state and retry"),
        )
    }
}

async fn handle_request(
    myself: &ActorRef<GroupMsg>,
    st: &mut GroupState,
    caller: &Caller,
    facts: &Facts,
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
        facts,
    };
    let fx = rules::apply(g, caller, request, &ctx)?;
    if shared.fault_injection {
        // Only after the rule (and so its permission check) accepted the request.
        if let Request::ModifyGroup { ext: Some(ext), .. } = request {
            st.inject = injected_fault(st.gid, ext);
        }
    }
    if fx.dirty.is_empty() && fx.announce.is_empty() && !fx.destroyed {
        st.inject = None;
        return Ok(fx.response);
    }
    let response = commit_and_announce(st, caller.session_id, fx).await?;
    expire_and_arm(myself, st).await;
    Ok(response)
}

async fn handle_create(
    st: &mut GroupState,
    caller: &Caller,
    facts: &Facts,
    data: &CreateGroupData,
) -> Reply {
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
        facts,
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
        if matches!(e, StoreError::Commit(CommitError::NotWritten(_))) {
            tracing::warn!(group = st.gid, error = %e, "change not written; reloading the group from the store");
            reload(st);
        } else {
            // The write may still land (a hung disk) or may be in sled's memory (a failed
            // flush): re-reading now could miss it. The actor stops instead.
            tracing::error!(group = st.gid, error = %e, "commit outcome unknown");
            st.unsure = true;
        }
        return Err(store_failure(&e));
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
        let skip = if a.to_origin { 0 } else { origin_session };
        let n = shared.fanout.deliver(st.gid, &a.to, &frame, skip);
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
    st: &mut GroupState,
    fx: &Effects,
) -> Result<(WriteSet, Vec<bytes::Bytes>), ApiError> {
    let fault = st.inject.take();
    let shared = &st.shared;
    let Some(g) = st.group.as_ref() else {
        return Err(ApiError::no_group(&st.gid.to_string()));
    };
    let mut ws = WriteSet::default();
    if let Some(fault) = fault {
        ws.inject(fault);
    }
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

/// Test hook: the fault a modifyGroup `ext` asks for. Panics for "convoke:panic".
fn injected_fault(gid: u64, ext: &str) -> Option<Fault> {
    if ext == "convoke:panic" {
        panic!("fault injection: group {gid} asked to panic");
    }
    if ext == "convoke:fail-flush" {
        return Some(Fault::FailFlush);
    }
    let ms = ext.strip_prefix("convoke:hang-commit:")?.parse().ok()?;
    Some(Fault::Hang(Duration::from_millis(ms)))
}

/// Ends expired mutes (persisting and announcing it) and arms the one timer for the next
/// expiry if it falls within the idle time (a later one is armed by a later tick, or after
/// an idle stop by the directory's wake-up list).
async fn expire_and_arm(myself: &ActorRef<GroupMsg>, st: &mut GroupState) {
    let now = now_ms();
    let fx = st.group.as_mut().and_then(|g| rules::expire_mutes(g, now));
    if let Some(fx) = fx {
        if let Err(e) = commit_and_announce(st, 0, fx).await {
            tracing::warn!(group = st.gid, error = %e, "could not persist mute expiry; will retry");
        }
    }
    let window = i64::try_from(st.shared.idle.as_millis()).unwrap_or(i64::MAX);
    let next = st.group.as_ref().and_then(Group::next_expiry);
    match next {
        Some(at) if at.saturating_sub(now_ms()) <= window => {
            if st.armed_for != Some(at) {
                st.armed_for = Some(at);
                let delay =
                    Duration::from_millis(u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0));
                st.timer.set(myself.send_after(delay, || GroupMsg::Tick));
            }
        }
        _ => {
            st.timer.cancel();
            st.armed_for = None;
        }
    }
}
