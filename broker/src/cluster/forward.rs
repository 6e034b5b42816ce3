//! A group call that arrives on a node which does not own the group (../shared/design/cluster.md
//! 4.3), both halves:
//! - the ingress side, [`forward`]: the call with its caller and the facts gathered here
//!   ([`Forwarded`]) is queued on the ordered link to the owner now (so a session's calls,
//!   queued one after another, reach the owner in that order) and the answer is awaited
//!   later, through the same [`PendingReply`] a local call gives;
//! - the owner side, [`Lanes`]: `Forward` and `Create` items are put, on the router and in
//!   arrival order, into one of a few lanes by group id; each lane's task queues its calls
//!   into the groups' mailboxes in that order (loading a group when needed) and a task per
//!   call awaits the answer and sends the `Reply`. So the calls of one group keep their
//!   order across nodes, while a group being loaded holds up only its own lane.
//!
//! Payloads are bincode with a limit, like the batches that carry them: a payload that does
//! not decode is answered 500 and counted, never a panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use convoke_protocol::{ApiError, ErrorCode};
use tokio::sync::mpsc;

use super::{CallError, Cluster, SendError, Wire};
use crate::group::call::{Answer, Forwarded};
use crate::group::{GroupCall, PendingReply};
use crate::node::Node;

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 4 << 20 }>()
}

/// Encodes a payload of a cluster item.
pub(crate) fn encode<T: bincode::Encode>(v: &T) -> Result<Vec<u8>, ApiError> {
    bincode::encode_to_vec(v, codec())
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot encode a call: {e}")))
}

/// Decodes a payload of a cluster item (the whole of it).
pub(crate) fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, String> {
    match bincode::decode_from_slice::<T, _>(bytes, codec()) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok((_, used)) => Err(format!("{} trailing bytes", bytes.len() - used)),
        Err(e) => Err(e.to_string()),
    }
}

/// The 500 for a group whose owner this node does not see Up: answered at once.
pub fn unavailable(gid: u64, peer: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ServerBusy,
        format!("group {gid} lives on node {peer}, which is unreachable now; retry"),
    )
}

/// Queues `fwd` for group `gid` on the link to its owner `peer` and returns the pending
/// answer. Errors at once (500) when the link refuses it.
pub fn forward(
    cluster: &Cluster,
    peer: &str,
    gid: u64,
    fwd: &Forwarded,
) -> Result<PendingReply, ApiError> {
    let payload = encode(fwd)?;
    let remaining_ms = cluster.remaining_ms();
    let sent_ns = cluster.clock_ns();
    let create = matches!(fwd.call, GroupCall::Create(_));
    let caller = cluster.incarnation();
    let waiting = cluster
        .start_call(peer, |corr| {
            if create {
                Wire::Create {
                    caller,
                    corr,
                    gid,
                    remaining_ms,
                    sent_ns,
                    payload,
                }
            } else {
                Wire::Forward {
                    caller,
                    corr,
                    gid,
                    remaining_ms,
                    sent_ns,
                    payload,
                }
            }
        })
        .map_err(|e| match e {
            CallError::Unavailable(p) => unavailable(gid, &p),
            other => other.to_api_error(),
        })?;
    metrics::counter!("convoke_forwarded_requests_total").increment(1);
    Ok(PendingReply::remote(gid, async move {
        match waiting.await {
            Ok(bytes) => read_answer(gid, &bytes),
            Err(e) => Err(e.to_api_error()),
        }
    }))
}

/// The owner's answer for group `gid`. One that does not decode (a peer of another build
/// that speaks the same `wire::PROTO`: a bug, or a wire change without a bump) is a 500,
/// retryable like every other "the node did not answer" case, never code 1 INTERNAL (not
/// in the contract); the call may have been executed.
fn read_answer(gid: u64, bytes: &[u8]) -> Answer {
    decode::<Answer>(bytes).unwrap_or_else(|e| {
        metrics::counter!("convoke_cluster_decode_errors_total").increment(1);
        tracing::warn!(group = gid, error = %e, "cluster: the answer of a group's owner did not decode");
        Err(ApiError::new(
            ErrorCode::ServerBusy,
            format!(
                "the answer of group {gid}'s owner did not decode ({e}): do all nodes run the \
                 same build? The change may or may not have been made, read the group state \
                 before retrying"
            ),
        ))
    })
}

/// Lanes of the owner side: calls of one group always take the same lane.
const LANES: usize = 8;

/// One forwarded call waiting in a lane.
#[derive(Debug)]
struct Job {
    from: String,
    /// The incarnation of `from`'s process that made the call.
    caller: u64,
    corr: u64,
    gid: u64,
    /// When the caller stops waiting, on this node's monotonic clock (the call's
    /// `remaining_ms`, which the router made the time left at arrival).
    deadline: Instant,
    payload: Vec<u8>,
}

impl Job {
    /// The answer for a job whose deadline passed before it could be executed: an explicit
    /// 500, so that its caller is not left waiting for its own timeout.
    fn expired(&self, now: Instant) -> Option<Answer> {
        (now >= self.deadline).then(|| {
            Err(ApiError::new(
                ErrorCode::ServerBusy,
                format!(
                    "the request for group {} was not executed: its deadline passed while it \
                     waited on the group's owner; retry",
                    self.gid
                ),
            ))
        })
    }

    /// The forwarded call, or the error for a payload that does not decode: a 500
    /// retryable (nothing was executed), never code 1 INTERNAL, which is not in the
    /// contract. Peers of another `wire::PROTO` are refused at their Hello, so this is a
    /// peer of another build that claims the same one.
    fn call(&self) -> Result<Forwarded, ApiError> {
        decode::<Forwarded>(&self.payload).map_err(|e| {
            metrics::counter!("convoke_cluster_decode_errors_total").increment(1);
            tracing::warn!(peer = %self.from, group = self.gid, error = %e, "cluster: a forwarded call did not decode");
            ApiError::new(
                ErrorCode::ServerBusy,
                format!(
                    "the request for group {} was not executed: the group's owner could not \
                     decode it ({e}); all nodes must run the same build; retry",
                    self.gid
                ),
            )
        })
    }
}

/// The owner side of forwarding (see the module documentation).
#[derive(Debug)]
pub(crate) struct Lanes {
    lanes: Vec<mpsc::UnboundedSender<Job>>,
}

impl Lanes {
    /// Starts the lanes' tasks for `node`.
    pub(crate) fn start(node: Arc<Node>, cluster: Cluster) -> Lanes {
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(node.clone(), cluster.clone(), rx));
                tx
            })
            .collect();
        Lanes { lanes }
    }

    /// Puts a `Forward`/`Create` from `from` in its group's lane (called on the router, in
    /// arrival order). The lanes are not bounded here, nor by `cluster.peer_queue_bytes`:
    /// the peer's link counts a call only until this node acknowledges its batch, which it
    /// does once the router handed the call to a lane. What waits in a lane is bounded by
    /// the callers: each session on the peer has at most 256 requests in flight, and a
    /// call whose deadline passed is answered without being executed when its turn comes.
    pub(crate) fn push(
        &self,
        from: &str,
        caller: u64,
        corr: u64,
        gid: u64,
        remaining_ms: u64,
        payload: Vec<u8>,
    ) {
        let lane = &self.lanes[(gid % LANES as u64) as usize];
        let _ = lane.send(Job {
            from: from.to_owned(),
            caller,
            corr,
            gid,
            // Arrival is now (the router calls this as it takes the batch).
            deadline: Instant::now() + Duration::from_millis(remaining_ms),
            payload,
        });
    }
}

/// Sends `answer` to the caller of `job`; an answer too big for one batch between nodes
/// (a history page near its maximum) becomes an explicit error, so the caller is not left
/// waiting for its timeout.
fn answer_call(cluster: &Cluster, job: &Job, answer: &Answer) {
    let bytes = match encode(answer) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(group = job.gid, error = %e.message, "cannot encode an answer");
            return;
        }
    };
    if let Err(SendError::TooLarge { bytes, .. }) =
        cluster.reply(&job.from, job.caller, job.corr, bytes)
    {
        let err: Answer = Err(ApiError::new(
            ErrorCode::ServerBusy,
            format!(
                "the answer for group {} is {bytes} bytes, over the {}-byte limit between \
                 nodes; ask for less (a smaller page), or connect to node {}",
                job.gid,
                super::wire::MAX_ITEMS_BYTES,
                cluster.name()
            ),
        ));
        if let Ok(bytes) = encode(&err) {
            let _ = cluster.reply(&job.from, job.caller, job.corr, bytes);
        }
    }
}

async fn run(node: Arc<Node>, cluster: Cluster, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        if let Some(answer) = job.expired(Instant::now()) {
            // Executing it now would only widen the "outcome unknown" window; its caller
            // gets a definite "not executed" now (or has given up already).
            metrics::counter!("convoke_cluster_expired_requests_total").increment(1);
            answer_call(&cluster, &job, &answer);
            continue;
        }
        if cluster.peer_incarnation(&job.from) != Some(job.caller) {
            // Its caller's process is gone (restarted or Down): nobody waits for the answer.
            metrics::counter!("convoke_cluster_stale_calls_total", "side" => "request")
                .increment(1);
            continue;
        }
        let reply = |answer: &Answer| answer_call(&cluster, &job, answer);
        let fwd = match job.call() {
            Ok(f) => f,
            Err(e) => {
                reply(&Err(e));
                continue;
            }
        };
        if !cluster.owns(job.gid) {
            // The peer's shard table disagrees with ours (it would have been refused at
            // Hello); never load a foreign group.
            reply(&Err(ApiError::new(
                ErrorCode::ServerBusy,
                format!(
                    "group {} does not belong to node {}; retry",
                    job.gid,
                    cluster.name()
                ),
            )));
            continue;
        }
        match crate::ingress::call_with_facts(&node, job.gid, fwd.caller, fwd.facts, fwd.call).await
        {
            Ok(pending) => {
                let cluster = cluster.clone();
                tokio::spawn(async move {
                    let answer = pending.wait().await;
                    answer_call(&cluster, &job, &answer);
                });
            }
            Err(e) => reply(&Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(remaining_ms: u64, arrival: Instant) -> Job {
        Job {
            from: "n2".into(),
            caller: 1,
            corr: 1,
            gid: 7,
            deadline: arrival + Duration::from_millis(remaining_ms),
            payload: vec![],
        }
    }

    /// The deadline is the time left at arrival (the router maps the sender's clock onto
    /// ours), counted on this node's monotonic clock: the two hosts' wall clocks are never
    /// compared (a caller whose clock was behind had every call dropped unanswered, one
    /// ahead had expired calls run), and an expired call is answered, not dropped.
    #[test]
    fn a_deadline_is_counted_from_arrival_and_an_expired_call_gets_an_explicit_500() {
        let arrival = Instant::now();
        let j = job(5_000, arrival);
        assert!(j.expired(arrival + Duration::from_millis(4_999)).is_none());
        let answer = j.expired(arrival + Duration::from_millis(5_001)).unwrap();
        let e = answer.unwrap_err();
        assert_eq!(e.code, ErrorCode::ServerBusy);
        assert!(e.message.contains("not executed") && e.message.contains("deadline passed"));
        assert!(
            job(0, arrival).expired(arrival).is_some(),
            "expired before it arrived"
        );
    }

    /// A payload that does not decode, either way (a peer of another build that claims the
    /// same protocol), answers 500 SERVER_BUSY, retryable, never code 1 INTERNAL, which is
    /// not in the contract (review finding MEDIUM-1).
    #[test]
    fn a_call_or_an_answer_that_does_not_decode_answers_500_retryable() {
        let mut j = job(5_000, Instant::now());
        j.payload = vec![0xff; 7];
        let e = j.call().unwrap_err();
        assert_eq!(e.code, ErrorCode::ServerBusy);
        assert!(e.code.is_retryable(), "{e:?}");
        assert!(
            e.message.contains("not executed") && e.message.contains("same build"),
            "{}",
            e.message
        );
        let e = read_answer(7, &[0xff; 7]).unwrap_err();
        assert_eq!(e.code, ErrorCode::ServerBusy);
        assert!(e.message.contains("may or may not"), "{}", e.message);
        // What does decode still does.
        let fwd = Forwarded {
            caller: crate::group::rules::Caller {
                user: "u".into(),
                app_admin: false,
                session_id: 1,
            },
            facts: Default::default(),
            call: GroupCall::Info,
        };
        j.payload = encode(&fwd).unwrap();
        assert_eq!(j.call().unwrap(), fwd);
    }
}
