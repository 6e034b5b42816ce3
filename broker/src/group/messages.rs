//! The message path of a group actor: send (checks, sequence, persist, fan-out), read
//! receipts, history and retention.
//!
//! A message is written to the store (record, id index, advanced counter, its client
//! message id if it has one, and any history it pushes out of retention) and flushed before
//! it is acknowledged or delivered; the delivered frame is encoded once and the same bytes go
//! to every receiving session. A repeated client message id is answered with the original
//! message (see [`super::dedup`]).

use super::actor::{GroupState, Reply};
use super::dedup::{self, ClientIds, Match, Outcome};
use super::rules::rate::{Bucket, Rate};
use super::rules::{messages as rules, Caller};
use crate::clock::now_ms;
use crate::fanout::Fanout;
use crate::store::{Durable, MessageRec, Store, StoreError, WriteSet};
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
    /// How long a client message id answers repeats with its message.
    pub dedup_window_ms: i64,
    /// Largest getGroupMessages page, in bytes of messages (`messages.history_page_bytes`).
    pub history_page_bytes: usize,
}

/// Test hook (with `debug.fault_injection`): a send whose client message id starts with
/// this aborts the broker process once its message is durable, before the answer.
pub const ABORT_AFTER_COMMIT: &str = "fault:abort-after-commit";

/// Per-group message bookkeeping held by the actor.
#[derive(Debug, Default)]
pub struct MessageState {
    /// The seq the next message gets.
    pub next_seq: u64,
    /// The oldest seq still in history.
    pub first_seq: u64,
    /// Per-sender token buckets of `messages.rate_limit_per_sec` (burst: one second's worth).
    buckets: HashMap<String, Bucket>,
    /// Who receives messages, rebuilt after any change to the roster or shields.
    receivers: Option<Arc<Vec<String>>>,
    /// Client message ids: those of messages in flight, and where stored ones start.
    ids: ClientIds,
}

impl MessageState {
    /// `first_client_id_seq`: the lowest seq with a stored client message id, if any.
    pub fn new(next_seq: u64, first_seq: u64, first_client_id_seq: Option<u64>) -> Self {
        Self {
            next_seq,
            first_seq,
            buckets: HashMap::new(),
            receivers: None,
            ids: ClientIds::new(first_client_id_seq),
        }
    }

    /// Forgets in-flight client ids whose outcome is known (the actor's timer).
    pub fn tidy(&mut self) {
        self.ids.tidy();
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

    /// Token bucket (the arithmetic is `rules::rate`'s): whether `user` may send one more
    /// at `now` (monotonic ms, [`crate::clock::mono_ms`]).
    fn allow(&mut self, user: &str, per_sec: u32, now: i64) -> bool {
        let rate = Rate {
            per_sec,
            burst: per_sec,
        };
        if !rate.is_limited() {
            return true;
        }
        self.buckets
            .entry(user.to_string())
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now)
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("storage failure, nothing changed: {e}"),
    )
}

fn parse_msg_id(id: &str) -> Result<u64, ApiError> {
    id.parse::<u64>().map_err(|_| {
        ApiError::param(format!(
            "msgId {} is not a message id",
            convoke_protocol::error::shown(id)
        ))
    })
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
        /// Set with the write's result, for repeats of its client message id queued behind.
        outcome: Option<Outcome>,
        /// Fault injection: abort the process once durable, before answering.
        abort_after_commit: bool,
    },
    /// Answer a repeated client message id with the original's answer (queued behind the
    /// original, so it goes out after the original's flush), or with its failure.
    Duplicate {
        reply: RpcReplyPort<Reply>,
        response: Response,
        outcome: Outcome,
    },
    /// Signals once everything queued before it is done.
    Barrier(oneshot::Sender<()>),
}

/// Starts a group's publisher: it waits for each message's flush in submission order, then
/// answers the sender and fans the message out. The actor does not wait for the flush, so
/// messages to one group share flushes (group commit within a group, not only across them)
/// while answers and deliveries keep the sequence order.
pub fn spawn_publisher(gid: u64, fanout: Fanout) -> mpsc::Sender<Publish> {
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
                    outcome,
                    abort_after_commit,
                } => {
                    let result = durable.wait().await;
                    if let Some(outcome) = outcome {
                        let _ = outcome.set(result.clone());
                    }
                    if let Err(e) = result {
                        tracing::error!(error = %e, "message not persisted; not delivered");
                        let _ = reply.send(Err(super::actor::commit_failure(&e)));
                        continue;
                    }
                    if abort_after_commit {
                        tracing::error!("fault injection: aborting after a durable send");
                        std::process::abort();
                    }
                    let _ = reply.send(Ok(response));
                    let started = Instant::now();
                    let n = fanout.deliver(gid, &receivers, &frame, origin);
                    metrics::counter!("convoke_messages_total").increment(1);
                    metrics::counter!("convoke_messages_delivered_total").increment(n as u64);
                    metrics::histogram!("convoke_fanout_recipients").record(n as f64);
                    metrics::histogram!("convoke_fanout_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                Publish::Duplicate {
                    reply,
                    response,
                    outcome,
                } => {
                    let _ = reply.send(duplicate_answer(&outcome, response));
                }
            }
        }
    });
    tx
}

/// The answer to a repeat of a message that was in flight, once its outcome is known.
fn duplicate_answer(outcome: &Outcome, response: Response) -> Reply {
    match outcome.get() {
        Some(Ok(())) => {
            metrics::counter!("convoke_messages_deduplicated_total").increment(1);
            Ok(response)
        }
        Some(Err(e)) => Err(super::actor::commit_failure(e)),
        // Only if the original never reached the publisher (the group is stopping).
        None => Err(ApiError::new(
            ErrorCode::ServerBusy,
            "the original send's outcome is not known yet; retry",
        )),
    }
}

/// Waits until every message queued on `publisher` so far has been answered and delivered.
pub async fn barrier(publisher: &mpsc::Sender<Publish>) {
    let (tx, rx) = oneshot::channel();
    if publisher.send(Publish::Barrier(tx)).await.is_ok() {
        let _ = rx.await;
    }
}

/// sendGroupMessage: checks, then queues the write and the delivery; the publisher answers.
/// A send with a client message id is first matched with earlier ones (a repeat is answered
/// with the original); without one, nothing more is read.
pub async fn send(
    st: &mut GroupState,
    caller: &Caller,
    payload: Vec<u8>,
    allow_group_ack: bool,
    client_msg_id: Option<String>,
    reply: RpcReplyPort<Reply>,
) {
    if let Some(id) = &client_msg_id {
        match match_client_id(st, caller, id) {
            Ok(Match::New) => {}
            Ok(Match::Stored(response)) => {
                tracing::debug!(group = st.gid, "repeated client message id; answered");
                metrics::counter!("convoke_messages_deduplicated_total").increment(1);
                let _ = reply.send(Ok(response));
                return;
            }
            Ok(Match::InFlight(response, outcome)) => {
                tracing::debug!(
                    group = st.gid,
                    "repeated client message id of a send in flight; answered after it"
                );
                let job = Publish::Duplicate {
                    reply,
                    response,
                    outcome,
                };
                if let Err(mpsc::error::SendError(Publish::Duplicate { reply, .. })) =
                    st.publisher.send(job).await
                {
                    let _ = reply.send(Err(stopping()));
                }
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        }
    }
    let p = match prepare(
        st,
        caller,
        payload,
        allow_group_ack,
        client_msg_id.as_deref(),
    ) {
        Ok(p) => p,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let abort_after_commit = st.shared.fault_injection
        && client_msg_id
            .as_deref()
            .is_some_and(|id| id.starts_with(ABORT_AFTER_COMMIT));
    let job = Publish::Message {
        durable: p.durable,
        reply,
        response: p.response,
        receivers: p.receivers,
        frame: p.frame,
        origin: caller.session_id,
        outcome: p.outcome,
        abort_after_commit,
    };
    if let Err(mpsc::error::SendError(Publish::Message {
        reply,
        durable,
        outcome,
        ..
    })) = st.publisher.send(job).await
    {
        let _ = reply.send(Err(stopping()));
        // The write was submitted all the same: repeats of its id still learn its outcome.
        if let Some(outcome) = outcome {
            tokio::spawn(async move {
                let _ = outcome.set(durable.wait().await);
            });
        }
    }
}

fn stopping() -> ApiError {
    ApiError::new(ErrorCode::ServerBusy, "the group is stopping; retry")
}

/// Checks a client message id and matches it with the sender's earlier sends to the group.
fn match_client_id(st: &mut GroupState, caller: &Caller, id: &str) -> Result<Match, ApiError> {
    rules::check_client_msg_id(id)?;
    if st.group.is_none() {
        return Err(ApiError::no_group(&st.gid.to_string()));
    }
    let shared = st.shared.clone();
    st.msgs
        .ids
        .lookup(
            &shared.store,
            st.gid,
            &caller.user,
            id,
            now_ms(),
            shared.messages.dedup_window_ms,
        )
        .map_err(internal)
}

/// A checked, submitted message waiting for its flush.
struct Prepared {
    durable: Durable,
    response: Response,
    receivers: Arc<Vec<String>>,
    frame: Bytes,
    /// For a send with a client message id.
    outcome: Option<Outcome>,
}

/// Checks a send and submits its write set; the sequence advances now.
fn prepare(
    st: &mut GroupState,
    caller: &Caller,
    payload: Vec<u8>,
    allow_group_ack: bool,
    client_msg_id: Option<&str>,
) -> Result<Prepared, ApiError> {
    let shared = st.shared.clone();
    let settings = &shared.messages;
    let now = now_ms();
    let g = st
        .group
        .as_ref()
        .ok_or_else(|| ApiError::no_group(&st.gid.to_string()))?;
    rules::check_send(g, caller, payload.len(), settings.max_bytes, now)?;
    if !st
        .msgs
        .allow(&caller.user, settings.rate_per_sec, crate::clock::mono_ms())
    {
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
    let trimmed_ids = if new_first > st.msgs.first_seq {
        Some(
            trim_writes(
                &shared.store,
                st.gid,
                &st.msgs,
                &mut ws,
                st.msgs.first_seq,
                new_first,
            )
            .map_err(internal)?,
        )
    } else {
        None
    };
    let frame = frame_bytes(&Push::Message(rec.to_wire(&g.id_str)))
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let receivers = st.msgs.receivers(g);
    let response = dedup::sent(&rec);
    if let Some(first) = trimmed_ids {
        st.msgs.ids.set_first_seq(first);
    }
    // After the trim in the same write set, which may release the same id.
    let outcome =
        client_msg_id.map(|id| st.msgs.ids.record(&shared.store, &mut ws, st.gid, &rec, id));
    let durable = shared.store.submit(ws);
    st.msgs.next_seq = rec.seq + 1;
    st.msgs.first_seq = new_first;
    Ok(Prepared {
        durable,
        response,
        receivers,
        frame,
        outcome,
    })
}

/// Adds to `ws` the removal of messages `from..to` and of their client message ids.
/// Returns the lowest seq left with a stored client id, to set once `ws` is submitted.
fn trim_writes(
    store: &Store,
    gid: u64,
    msgs: &MessageState,
    ws: &mut WriteSet,
    from: u64,
    to: u64,
) -> Result<Option<u64>, StoreError> {
    store.trim_writes(ws, gid, from, to)?;
    msgs.ids.trim_writes(store, ws, gid, from, to)
}

/// ackGroupMessage: a reader's receipt.
pub async fn ack(st: &mut GroupState, caller: &Caller, msg_id: &str) -> Reply {
    let shared = st.shared.clone();
    let settings = &shared.messages;
    let id = parse_msg_id(msg_id)?;
    // Named as parsed from here on (a valid id can be padded with zeros to any length).
    let msg_id = id.to_string();
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
    shared
        .store
        .commit(ws)
        .await
        .map_err(|e| super::actor::store_failure(&e))?;
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
    // Named as parsed from here on (a valid id can be padded with zeros to any length).
    let msg_id = id.to_string();
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
        .history(
            st.gid,
            before,
            after,
            limit as usize,
            st.shared.messages.history_page_bytes,
        )
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
    let Ok(first_client_id) = trim_writes(
        &shared.store,
        st.gid,
        &st.msgs,
        &mut ws,
        st.msgs.first_seq,
        new_first,
    ) else {
        return;
    };
    if shared.store.commit(ws).await.is_ok() {
        st.msgs.first_seq = new_first;
        st.msgs.ids.set_first_seq(first_client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn sent(seq: u64) -> Response {
        Response::MessageSent {
            msg_id: format!("{seq}"),
            seq,
            timestamp: 0,
        }
    }

    fn message(
        durable: Durable,
        outcome: &Outcome,
        seq: u64,
    ) -> (Publish, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let job = Publish::Message {
            durable,
            reply: tx.into(),
            response: sent(seq),
            receivers: Arc::new(Vec::new()),
            frame: Bytes::new(),
            origin: 0,
            outcome: Some(outcome.clone()),
            abort_after_commit: false,
        };
        (job, rx)
    }

    fn repeat(outcome: &Outcome, seq: u64) -> (Publish, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let job = Publish::Duplicate {
            reply: tx.into(),
            response: sent(seq),
            outcome: outcome.clone(),
        };
        (job, rx)
    }

    /// A repeat queued behind its original is answered after it, with its result: the
    /// original's answer once it is durable, its failure when its write failed.
    #[tokio::test]
    async fn a_repeat_in_flight_gets_the_outcome_of_its_original() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let publisher = spawn_publisher(1, Fanout::local(crate::presence::Presence::default()));

        let mut ws = WriteSet::default();
        ws.put(b"k".to_vec(), b"v".to_vec());
        let ok = Outcome::default();
        let (original, original_answer) = message(store.submit(ws), &ok, 1);
        let (dup, dup_answer) = repeat(&ok, 1);
        let failed = Outcome::default();
        let (original2, original2_answer) = message(Durable::stopped(), &failed, 2);
        let (dup2, dup2_answer) = repeat(&failed, 2);
        for job in [original, dup, original2, dup2] {
            publisher.send(job).await.unwrap();
        }
        assert_eq!(original_answer.await.unwrap(), Ok(sent(1)));
        assert_eq!(dup_answer.await.unwrap(), Ok(sent(1)));
        let e = original2_answer.await.unwrap().unwrap_err();
        // A store failure is 500 (retryable; this one says nothing was written).
        assert_eq!(e.code, ErrorCode::ServerBusy);
        assert!(e.message.contains("nothing changed"), "{}", e.message);
        assert_eq!(dup2_answer.await.unwrap(), Err(e));
    }

    #[test]
    fn a_repeat_whose_original_never_reached_the_publisher_is_told_to_retry() {
        let e = duplicate_answer(&Outcome::default(), sent(1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ServerBusy);
    }
}
