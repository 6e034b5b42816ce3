//! PeerLink: the ordered, byte-bounded queue of items towards one peer
//! (../shared/design/cluster.md 5.4).
//!
//! Items are queued without waiting; one task per peer takes everything waiting (up to
//! 512 items / 1 MiB, never more than [`MAX_ITEMS_BYTES`]: an item that would pass it waits
//! for the next batch) and casts it as one [`Batch`] to the peer's router, so an idle link
//! sends at once and a busy one batches by itself. A `Deliver` whose recipient list makes
//! it big is queued as several, consecutive (so a group's order holds); any other item
//! over the limit is refused at once ([`SendError::TooLarge`]) rather than dropped later
//! with the batch it would have broken. Bytes count as queued until the peer's
//! heartbeat reports the batch processed (`acked_batch`): ractor_cluster's own queues are
//! unbounded and invisible, so the bound is end to end. What `cluster.peer_queue_bytes`
//! bounds, by kind of item:
//! - live deliveries (`Deliver`) are dropped and counted above it;
//! - calls (`Forward`, `Create`, `Query`) are refused above [`CALL_LIMIT_FACTOR`] times it
//!   ([`SendError::Overloaded`]: their callers get 500 retryable at once, nothing sent);
//! - replies, presence and control items are always queued (dropping one would leave a
//!   caller waiting for its timeout or a presence view wrong): bounded by what the peer
//!   asks and by time, since a peer over the limit for `cluster.peer_timeout_ms` is
//!   declared Down (`overloaded`) and its queue forgotten.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;

use super::wire::{item_len, Batch, RouterMsg, Wire, BATCH_TARGET_BYTES, MAX_ITEMS_BYTES};
use super::Inner;

/// Most items in one batch.
const BATCH_MAX_ITEMS: usize = 512;

/// Calls are refused while this many times `cluster.peer_queue_bytes` are queued: above
/// the point where deliveries are dropped, so a link busy with a fan-out still takes
/// requests, but never without bound (review finding LOW-4).
pub(crate) const CALL_LIMIT_FACTOR: u64 = 2;

/// Why an item was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer is not Up (never connected, Down, or refused).
    #[error("node {0} is unreachable")]
    Unavailable(String),
    /// The link is over `cluster.peer_queue_bytes` (a delivery, dropped) or over
    /// [`CALL_LIMIT_FACTOR`] times it (a call, not sent).
    #[error("the queue to node {0} is full")]
    Overloaded(String),
    /// No such peer.
    #[error("no cluster member is named {0:?}")]
    Unknown(String),
    /// The item alone is over what one batch may carry.
    #[error(
        "an item of {bytes} bytes for node {peer} is over the {MAX_ITEMS_BYTES}-byte batch limit"
    )]
    TooLarge {
        /// The peer.
        peer: String,
        /// The item's encoded size.
        bytes: usize,
    },
}

/// Largest `Deliver` queued as one item; a bigger one is split by recipients.
const DELIVER_CHUNK_BYTES: usize = BATCH_TARGET_BYTES;

/// The queue towards one peer. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    shared: Arc<LinkShared>,
    tx: mpsc::UnboundedSender<(Wire, usize)>,
}

#[derive(Debug)]
struct LinkShared {
    peer: String,
    limit: u64,
    /// Bytes queued or sent and not yet acknowledged.
    queued: AtomicU64,
    seq: AtomicU64,
    /// Sent, unacknowledged batches: (seq, bytes).
    inflight: Mutex<VecDeque<(u64, u64)>>,
}

impl Link {
    /// A link to `peer` whose drain task casts to the router `inner` currently knows for it.
    pub(crate) fn spawn(peer: &str, limit: u64, inner: Weak<Inner>) -> Link {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(LinkShared {
            peer: peer.to_owned(),
            limit,
            queued: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            inflight: Mutex::new(VecDeque::new()),
        });
        tokio::spawn(drain(shared.clone(), rx, inner));
        Link { shared, tx }
    }

    /// Queues `item`; a droppable item is refused when the link is over its limit, a call
    /// over [`CALL_LIMIT_FACTOR`] times it, any item over [`MAX_ITEMS_BYTES`] always (a big
    /// `Deliver` is split first).
    pub(crate) fn push(&self, item: Wire) -> Result<(), SendError> {
        let len = item_len(&item);
        if len > DELIVER_CHUNK_BYTES && matches!(&item, Wire::Deliver { to, .. } if to.len() > 1) {
            let mut result = Ok(());
            for part in split_deliver(item, DELIVER_CHUNK_BYTES) {
                // Every part is tried: the link drops what it must, part by part.
                if let Err(e) = self.push_one(item_len(&part), part) {
                    result = Err(e);
                }
            }
            return result;
        }
        self.push_one(len, item)
    }

    fn push_one(&self, len: usize, item: Wire) -> Result<(), SendError> {
        let s = &self.shared;
        if len > MAX_ITEMS_BYTES {
            if item.droppable() {
                metrics::counter!("convoke_cluster_deliveries_dropped_total", "peer" => s.peer.clone())
                    .increment(1);
            }
            tracing::warn!(peer = %s.peer, kind = item.kind(), bytes = len, "cluster: an item over the batch limit; refused");
            return Err(SendError::TooLarge {
                peer: s.peer.clone(),
                bytes: len,
            });
        }
        let queued = s.queued.load(Ordering::Relaxed) + len as u64;
        if item.droppable() && queued > s.limit {
            metrics::counter!("convoke_cluster_deliveries_dropped_total", "peer" => s.peer.clone())
                .increment(1);
            return Err(SendError::Overloaded(s.peer.clone()));
        }
        if call_corr(&item).is_some() && queued > s.limit.saturating_mul(CALL_LIMIT_FACTOR) {
            tracing::debug!(peer = %s.peer, kind = item.kind(), queued, "cluster: a call refused, the link is full");
            return Err(SendError::Overloaded(s.peer.clone()));
        }
        s.queued.fetch_add(len as u64, Ordering::Relaxed);
        if self.tx.send((item, len)).is_err() {
            s.queued.fetch_sub(len as u64, Ordering::Relaxed);
            return Err(SendError::Unavailable(s.peer.clone()));
        }
        Ok(())
    }

    /// Whether anything (a clone or the drain task) still holds this link, without holding it.
    #[cfg(test)]
    pub(crate) fn watch(&self) -> impl Fn() -> bool {
        let shared = Arc::downgrade(&self.shared);
        move || shared.strong_count() > 0
    }

    /// Bytes queued or unacknowledged.
    pub(crate) fn queued_bytes(&self) -> u64 {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// The peer processed every batch up to `acked`: their bytes no longer count.
    pub(crate) fn acked(&self, acked: u64) {
        let s = &self.shared;
        let mut inflight = s.inflight.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(seq, bytes)) = inflight.front() {
            if seq > acked {
                break;
            }
            inflight.pop_front();
            sub(&s.queued, bytes);
        }
    }

    /// The peer went Down: what it had not acknowledged is forgotten (batches it may still
    /// process are answered on their own; pending calls are failed by the caller).
    pub(crate) fn reset(&self) {
        let s = &self.shared;
        let mut inflight = s.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for (_, bytes) in inflight.drain(..) {
            sub(&s.queued, bytes);
        }
    }
}

/// Splits a `Deliver` into consecutive ones to the same group whose recipient lists keep
/// each under `max` bytes (the frame is repeated in each).
fn split_deliver(item: Wire, max: usize) -> Vec<Wire> {
    let Wire::Deliver {
        gid,
        origin_session,
        to,
        frame,
    } = item
    else {
        return vec![item];
    };
    let empty = item_len(&Wire::Deliver {
        gid,
        origin_session,
        to: Vec::new(),
        frame: Vec::new(),
    });
    // The frame's length prefix and the list's count take at most 9 bytes each.
    let fixed = empty + frame.len() + 18;
    let budget = max.saturating_sub(fixed).max(1);
    let mut parts = Vec::new();
    let mut chunk: Vec<String> = Vec::new();
    let mut used = 0;
    for name in to {
        let n = name.len() + 9;
        if !chunk.is_empty() && used + n > budget {
            parts.push(std::mem::take(&mut chunk));
            used = 0;
        }
        used += n;
        chunk.push(name);
    }
    if !chunk.is_empty() {
        parts.push(chunk);
    }
    parts
        .into_iter()
        .map(|to| Wire::Deliver {
            gid,
            origin_session,
            to,
            frame: frame.clone(),
        })
        .collect()
}

fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

async fn drain(
    s: Arc<LinkShared>,
    mut rx: mpsc::UnboundedReceiver<(Wire, usize)>,
    inner: Weak<Inner>,
) {
    // An item that would have taken the last batch over the limit: first of the next.
    let mut carry: Option<(Wire, usize)> = None;
    loop {
        let first = match carry.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut bytes = first.1;
        let mut items = vec![first.0];
        while items.len() < BATCH_MAX_ITEMS && bytes < BATCH_TARGET_BYTES {
            match rx.try_recv() {
                Ok((item, len)) if bytes + len > MAX_ITEMS_BYTES => {
                    carry = Some((item, len));
                    break;
                }
                Ok((item, len)) => {
                    bytes += len;
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let deliveries = items.iter().filter(|i| i.droppable()).count() as u64;
        let router = inner.up_router(&s.peer);
        let was_up = router.is_some();
        let count = items.len();
        let mut kinds: Vec<&'static str> = items.iter().map(Wire::kind).collect();
        let mut calls: Vec<u64> = items.iter().filter_map(call_corr).collect();
        let sent = match router {
            None => Err("the peer is not up"),
            Some(router) => {
                let seq = s.seq.fetch_add(1, Ordering::Relaxed) + 1;
                // In flight before the cast, so that an ack racing it finds it.
                s.inflight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back((seq, bytes as u64));
                let batch = Batch {
                    from: inner.name.clone(),
                    incarnation: inner.incarnation,
                    seq,
                    items: std::mem::take(&mut items),
                };
                match router.cast(RouterMsg::Wire(batch)) {
                    Ok(()) => Ok(()),
                    Err(_) => {
                        // Not sent: take it out of flight again (its bytes are subtracted
                        // once, below), unless a reset already did.
                        let mut inflight = s.inflight.lock().unwrap_or_else(|p| p.into_inner());
                        match inflight.iter().position(|&(q, _)| q == seq) {
                            Some(at) => {
                                inflight.remove(at);
                            }
                            None => bytes = 0,
                        }
                        Err("the batch could not be cast (serialization or a closed session)")
                    }
                }
            }
        };
        let peer = s.peer.clone();
        match sent {
            Ok(()) => {
                metrics::counter!("convoke_cluster_batches_sent_total", "peer" => peer.clone())
                    .increment(1);
                metrics::counter!("convoke_cluster_sent_bytes_total", "peer" => peer.clone())
                    .increment(bytes as u64);
                metrics::counter!("convoke_cluster_deliveries_sent_total", "peer" => peer)
                    .increment(deliveries);
            }
            Err(why) => {
                sub(&s.queued, bytes as u64);
                metrics::counter!("convoke_cluster_deliveries_dropped_total", "peer" => peer.clone())
                    .increment(deliveries);
                // Calls among the items were not sent: fail them now rather than at their
                // deadline.
                calls.retain(|&corr| inner.pending.fail(corr, &peer));
                kinds.sort_unstable();
                kinds.dedup();
                if was_up {
                    metrics::counter!("convoke_cluster_batches_failed_total", "peer" => peer.clone())
                        .increment(1);
                    tracing::warn!(%peer, items = count, kinds = ?kinds, failed_calls = calls.len(), bytes, "cluster: a batch was not sent: {why}");
                } else {
                    tracing::debug!(%peer, items = count, kinds = ?kinds, failed_calls = calls.len(), "cluster: a batch was not sent: {why}");
                }
            }
        }
    }
}

/// The correlation id of a call item (its caller waits for a `Reply`).
fn call_corr(item: &Wire) -> Option<u64> {
    match item {
        Wire::Forward { corr, .. } | Wire::Create { corr, .. } | Wire::Query { corr, .. } => {
            Some(*corr)
        }
        _ => None,
    }
}
