//! The message path of a group actor: send (checks, sequence, persist, fan-out), read
//! receipts, history and retention.
//!
//! A message is written to the store (record, id index, advanced counter, and any history
//! it pushes out of retention) and flushed before it is acknowledged or delivered; the
//! delivered frame is encoded once and the same bytes go to every receiving session.

use super::actor::{GroupState, Reply};
use super::rules::{messages as rules, Caller};
use crate::clock::now_ms;
use crate::presence::Presence;
use crate::store::{Durable, MessageRec, WriteSet};
use bytes::Bytes;
use convoke_protocol::{codec::frame_bytes, limits, ApiError, ErrorCode, Push, ReadUser, Response};
use ractor::RpcReplyPort;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The message settings of the broker's configuration.
#[derive(Debug, Clone)]
pub struct MessageSettings {
    pub max_bytes: usize,
    pub history_per_group: u64,
    pub history_max_age_ms: i64,
    /// Messages per second per user per group; 0 = unlimited.
    pub rate_per_sec: u32,
    pub receipt_max_group: u32,
    pub receipt_window_ms: i64,
}

/// Per-group message bookkeeping held by the actor.
#[derive(Debug, Default)]
pub struct MessageState {
    /// The seq the next message gets.
    pub next_seq: u64,
    /// The oldest seq still in history.
    pub first_seq: u64,
    buckets: HashMap<String, (f64, Instant)>,
    /// Who receives messages, rebuilt after any change to the roster or shields.
    receivers: Option<Arc<Vec<String>>>,
}

impl MessageState {
    pub fn new(next_seq: u64, first_seq: u64) -> Self {
        Self {
            next_seq,
            first_seq,
            buckets: HashMap::new(),
            receivers: None,
        }
    }

    /// The current receivers (cached: a 100,000-member group is not walked per message).
    fn receivers(&mut self, g: &crate::group::model::Group) -> Arc<Vec<String>> {
        self.receivers
            .get_or_insert_with(|| Arc::new(rules::receivers(g)))
            .clone()
    }

    /// Forgets the cached receivers (the roster or a shield changed).
    pub fn roster_changed(&mut self) {
        self.receivers = None;
    }

    /// Token bucket: whether `user` may send one more now.
    fn allow(&mut self, user: &str, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let cap = f64::from(rate);
        let now = Instant::now();
        let (tokens, last) = self.buckets.entry(user.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * cap).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("storage failure, nothing changed: {e}"),
    )
}

fn parse_msg_id(id: &str) -> Result<u64, ApiError> {
    id.parse::<u64>()
        .map_err(|_| ApiError::param(format!("msgId {id:?} is not a message id")))
}

/// Work the publisher does, in order, once a write set is durable.
#[derive(Debug)]
pub enum Publish {
    /// Answer a send and deliver the message.
    Message {
        durable: Durable,
        reply: RpcReplyPort<Reply>,
        response: Response,
        receivers: Arc<Vec<String>>,
        frame: Bytes,
        origin: u64,
    },
    /// Signals once everything queued before it is done.
    Barrier(oneshot::Sender<()>),
}

/// Starts a group's publisher: it waits for each message's flush in submission order, then
/// answers the sender and fans the message out. The actor does not wait for the flush, so
/// messages to one group share flushes (group commit within a group, not only across them)
/// while answers and deliveries keep the sequence order.
pub fn spawn_publisher(presence: Presence) -> mpsc::Sender<Publish> {
    let (tx, mut rx) = mpsc::channel::<Publish>(1024);
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            match job {
                Publish::Barrier(done) => {
                    let _ = done.send(());
                }
                Publish::Message {
                    durable,
                    reply,
                    response,
                    receivers,
                    frame,
                    origin,
                } => {
                    if let Err(e) = durable.wait().await {
                        tracing::error!(error = %e, "message not persisted; not delivered");
                        let _ = reply.send(Err(internal(e)));
                        continue;
                    }
                    let _ = reply.send(Ok(response));
                    let started = Instant::now();
                    let n = presence.deliver(receivers.iter(), &frame, origin);
                    metrics::counter!("convoke_messages_total").increment(1);
                    metrics::counter!("convoke_messages_delivered_total").increment(n as u64);
                    metrics::histogram!("convoke_fanout_recipients").record(n as f64);
                    metrics::histogram!("convoke_fanout_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
            }
        }
    });
    tx
}

/// Waits until every message queued on `publisher` so far has been answered and delivered.
pub async fn barrier(publisher: &mpsc::Sender<Publish>) {
    let (tx, rx) = oneshot::channel();
    if publisher.send(Publish::Barrier(tx)).await.is_ok() {
        let _ = rx.await;
    }
}

/// sendGroupMessage: checks, then queues the write and the delivery; the publisher answers.
pub async fn send(
    st: &mut GroupState,
    caller: &Caller,
    payload: Vec<u8>,
    allow_group_ack: bool,
    reply: RpcReplyPort<Reply>,
) {
    let p = match prepare(st, caller, payload, allow_group_ack) {
        Ok(p) => p,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let job = Publish::Message {
        durable: p.durable,
        reply,
        response: p.response,
        receivers: p.receivers,
        frame: p.frame,
        origin: caller.session_id,
    };
    if let Err(mpsc::error::SendError(Publish::Message { reply, .. })) =
        st.publisher.send(job).await
    {
        let _ = reply.send(Err(ApiError::new(
            ErrorCode::ServerBusy,
            "the group is stopping; retry",
        )));
    }
}

/// A checked, submitted message waiting for its flush.
struct Prepared {
    durable: Durable,
    response: Response,
    receivers: Arc<Vec<String>>,
    frame: Bytes,
}

/// Checks a send and submits its write set; the sequence advances now.
fn prepare(
    st: &mut GroupState,
    caller: &Caller,
    payload: Vec<u8>,
    allow_group_ack: bool,
) -> Result<Prepared, ApiError> {
    let shared = st.shared.clone();
    let settings = &shared.messages;
    let now = now_ms();
    let g = st
        .group
        .as_ref()
        .ok_or_else(|| ApiError::no_group(&st.gid.to_string()))?;
    rules::check_send(g, caller, payload.len(), settings.max_bytes, now)?;
    if !st.msgs.allow(&caller.user, settings.rate_per_sec) {
        return Err(ApiError::new(
            ErrorCode::MessageCurrentLimiting,
            format!(
                "{:?} sends faster than {} messages per second to group {:?}",
                caller.user, settings.rate_per_sec, g.id_str
            ),
        ));
    }
    let rec = MessageRec {
        seq: st.msgs.next_seq,
        msg_id: shared.store.new_id().map_err(internal)?,
        from: caller.user.clone(),
        payload,
        timestamp: now,
        allow_group_ack,
    };
    let mut ws = WriteSet::default();
    shared.store.message_writes(&mut ws, st.gid, &rec);
    let keep_from = (rec.seq + 1).saturating_sub(settings.history_per_group.max(1));
    let new_first = st.msgs.first_seq.max(keep_from);
    if new_first > st.msgs.first_seq {
        shared
            .store
            .trim_writes(&mut ws, st.gid, st.msgs.first_seq, new_first)
            .map_err(internal)?;
    }
    let frame = frame_bytes(&Push::Message(rec.to_wire(&g.id_str)))
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let receivers = st.msgs.receivers(g);
    let durable = shared.store.submit(ws);
    st.msgs.next_seq = rec.seq + 1;
    st.msgs.first_seq = new_first;
    let response = Response::MessageSent {
        msg_id: rec.msg_id.to_string(),
        seq: rec.seq,
        timestamp: rec.timestamp,
    };
    Ok(Prepared {
        durable,
        response,
        receivers,
        frame,
    })
}

/// ackGroupMessage: a reader's receipt.
pub async fn ack(st: &mut GroupState, caller: &Caller, msg_id: &str) -> Reply {
    let shared = st.shared.clone();
    let settings = &shared.messages;
    let id = parse_msg_id(msg_id)?;
    let g = st
        .group
        .as_ref()
        .ok_or_else(|| ApiError::no_group(&st.gid.to_string()))?;
    rules::check_read(g, caller)?;
    let msg = shared
        .store
        .message_by_id(st.gid, id)
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError::param(format!(
                "msgId {msg_id:?} is not a message of group {:?}",
                g.id_str
            ))
        })?;
    if !msg.allow_group_ack {
        return Err(ApiError::param(format!(
            "message {msg_id:?} did not ask for read receipts"
        )));
    }
    if msg.from == caller.user {
        return Err(ApiError::param(format!(
            "{:?} sent message {msg_id:?}; senders do not acknowledge their own",
            caller.user
        )));
    }
    if g.members.len() > settings.receipt_max_group as usize {
        return Err(ApiError::param(format!(
            "group {:?} has {} members; read receipts are kept only in groups of at most {}",
            g.id_str,
            g.members.len(),
            settings.receipt_max_group
        )));
    }
    let now = now_ms();
    if now - msg.timestamp > settings.receipt_window_ms {
        return Err(ApiError::param(format!(
            "message {msg_id:?} is older than the read-receipt window of {} s",
            settings.receipt_window_ms / 1000
        )));
    }
    if shared
        .store
        .has_receipt(st.gid, id, &caller.user)
        .map_err(internal)?
    {
        return Ok(Response::Done);
    }
    let mut ws = WriteSet::default();
    shared
        .store
        .receipt_writes(&mut ws, st.gid, id, &caller.user, now);
    shared.store.commit(ws).await.map_err(internal)?;
    Ok(Response::Done)
}

/// getGroupMsgReadUser.
pub fn read_users(
    st: &GroupState,
    caller: &Caller,
    msg_id: &str,
    limit: u32,
    cursor: Option<&str>,
) -> Reply {
    let id = parse_msg_id(msg_id)?;
    if !(1..=limits::MAX_READ_USERS_PAGE).contains(&limit) {
        return Err(ApiError::param(format!(
            "limit {limit} must be 1 to {}",
            limits::MAX_READ_USERS_PAGE
        )));
    }
    let g = st
        .group
        .as_ref()
        .ok_or_else(|| ApiError::no_group(&st.gid.to_string()))?;
    let store = &st.shared.store;
    let msg = store
        .message_by_id(st.gid, id)
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError::param(format!(
                "msgId {msg_id:?} is not a message of group {:?}",
                g.id_str
            ))
        })?;
    rules::check_read_users(g, caller, &msg.from)?;
    let (total, mut page) = store
        .receipts(st.gid, id, cursor, limit as usize + 1)
        .map_err(internal)?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = if more {
        page.last().map(|(u, _)| u.clone())
    } else {
        None
    };
    Ok(Response::ReadUsers {
        total,
        users: page
            .into_iter()
            .map(|(user_id, read_at)| ReadUser { user_id, read_at })
            .collect(),
        cursor: next,
    })
}

/// getGroupMessages.
pub fn history(
    st: &GroupState,
    caller: &Caller,
    before: Option<u64>,
    after: Option<u64>,
    limit: u32,
) -> Reply {
    if !(1..=limits::MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ApiError::param(format!(
            "limit {limit} must be 1 to {}",
            limits::MAX_HISTORY_PAGE
        )));
    }
    if before.is_some() && after.is_some() {
        return Err(ApiError::param("give before or after, not both"));
    }
    let g = st
        .group
        .as_ref()
        .ok_or_else(|| ApiError::no_group(&st.gid.to_string()))?;
    rules::check_read(g, caller)?;
    let recs = st
        .shared
        .store
        .history(st.gid, before, after, limit as usize)
        .map_err(internal)?;
    Ok(Response::Messages {
        messages: recs.iter().map(|r| r.to_wire(&g.id_str)).collect(),
    })
}

/// Drops history older than the configured age.
pub async fn trim_by_age(st: &mut GroupState) {
    let shared = st.shared.clone();
    if st.msgs.first_seq >= st.msgs.next_seq {
        return;
    }
    let min_ts = now_ms() - shared.messages.history_max_age_ms;
    let Ok(new_first) =
        shared
            .store
            .first_seq_not_older_than(st.gid, st.msgs.first_seq, st.msgs.next_seq, min_ts)
    else {
        return;
    };
    if new_first <= st.msgs.first_seq {
        return;
    }
    let mut ws = WriteSet::default();
    if shared
        .store
        .trim_writes(&mut ws, st.gid, st.msgs.first_seq, new_first)
        .is_ok()
        && shared.store.commit(ws).await.is_ok()
    {
        st.msgs.first_seq = new_first;
    }
}
