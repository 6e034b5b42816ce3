//! PeerLink: the ordered, byte-bounded queue of items towards one peer
//! (../shared/design/cluster.md 5.4).
//!
//! Items are queued without waiting; one task per peer takes everything waiting (up to
//! 512 items / 1 MiB) and casts it as one [`Batch`] to the peer's router, so an idle link
//! sends at once and a busy one batches by itself. Bytes count as queued until the peer's
//! heartbeat reports the batch processed (`acked_batch`): ractor_cluster's own queues are
//! unbounded and invisible, so the bound is end to end. Above `cluster.peer_queue_bytes`
//! live deliveries are dropped and counted; control items, replies and presence never are.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;

use super::wire::{item_len, Batch, RouterMsg, Wire, BATCH_TARGET_BYTES};
use super::Inner;

/// Most items in one batch.
const BATCH_MAX_ITEMS: usize = 512;

/// Why an item was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer is not Up (never connected, Down, or refused).
    #[error("node {0} is unreachable")]
    Unavailable(String),
    /// The link is over `cluster.peer_queue_bytes` and the item may be dropped.
    #[error("the queue to node {0} is full; the delivery was dropped")]
    Overloaded(String),
    /// No such peer.
    #[error("no cluster member is named {0:?}")]
    Unknown(String),
}

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

    /// Queues `item`; a droppable item is refused when the link is over its limit.
    pub(crate) fn push(&self, item: Wire) -> Result<(), SendError> {
        let len = item_len(&item);
        let s = &self.shared;
        if item.droppable() && s.queued.load(Ordering::Relaxed) + len as u64 > s.limit {
            metrics::counter!("convoke_cluster_deliveries_dropped_total", "peer" => s.peer.clone())
                .increment(1);
            return Err(SendError::Overloaded(s.peer.clone()));
        }
        s.queued.fetch_add(len as u64, Ordering::Relaxed);
        if self.tx.send((item, len)).is_err() {
            s.queued.fetch_sub(len as u64, Ordering::Relaxed);
            return Err(SendError::Unavailable(s.peer.clone()));
        }
        Ok(())
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
    while let Some(first) = rx.recv().await {
        let mut bytes = first.1;
        let mut items = vec![first.0];
        while items.len() < BATCH_MAX_ITEMS && bytes < BATCH_TARGET_BYTES {
            match rx.try_recv() {
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
        let sent = router.is_some_and(|router| {
            let seq = s.seq.fetch_add(1, Ordering::Relaxed) + 1;
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
            router.cast(RouterMsg::Wire(batch)).is_ok()
        });
        let peer = s.peer.clone();
        if sent {
            metrics::counter!("convoke_cluster_batches_sent_total", "peer" => peer.clone())
                .increment(1);
            metrics::counter!("convoke_cluster_sent_bytes_total", "peer" => peer.clone())
                .increment(bytes as u64);
            metrics::counter!("convoke_cluster_deliveries_sent_total", "peer" => peer)
                .increment(deliveries);
        } else {
            // Not Up: nothing to send to. Calls among the items fail through the pending
            // map when the peer is declared Down, or at their deadline.
            sub(&s.queued, bytes as u64);
            metrics::counter!("convoke_cluster_deliveries_dropped_total", "peer" => peer)
                .increment(deliveries);
        }
    }
}
