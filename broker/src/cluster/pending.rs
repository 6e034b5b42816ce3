//! Calls waiting for a peer's `Reply`: correlation id -> oneshot, failed all at once when
//! the peer goes Down (../shared/design/cluster.md 4.3 and 3.3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::CallError;

type Waiter = oneshot::Sender<Result<Vec<u8>, CallError>>;

/// The correlation map.
///
/// Correlation ids start at a random value in every process, and replies carry the
/// caller's incarnation besides (checked in `on_batch`): a peer still answering a call of
/// this node's previous process must never complete a new call that reused its id.
#[derive(Debug)]
pub(crate) struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, (String, Waiter)>>,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            // Below 2^63, so the id space never wraps in a process's life.
            next: AtomicU64::new(rand::random::<u64>() >> 1),
            waiting: Mutex::default(),
        }
    }
}

impl Pending {
    /// Registers a call to `peer`; returns its correlation id and the answer's receiver.
    pub(crate) fn register(
        &self,
        peer: &str,
    ) -> (u64, oneshot::Receiver<Result<Vec<u8>, CallError>>) {
        let corr = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.lock().insert(corr, (peer.to_owned(), tx));
        (corr, rx)
    }

    /// Completes call `corr` with `payload`, if it is still waiting and was made to `from`
    /// (a peer cannot answer another peer's call). Returns whether it was.
    pub(crate) fn complete(&self, corr: u64, from: &str, payload: Vec<u8>) -> bool {
        let mut map = self.lock();
        match map.get(&corr) {
            Some((peer, _)) if peer == from => {}
            _ => return false,
        }
        match map.remove(&corr) {
            Some((_, tx)) => tx.send(Ok(payload)).is_ok(),
            None => false,
        }
    }

    /// Fails call `corr` to `peer` with [`CallError::Unavailable`] (it was never sent);
    /// returns whether it was waiting.
    pub(crate) fn fail(&self, corr: u64, peer: &str) -> bool {
        match self.lock().remove(&corr) {
            Some((_, tx)) => tx
                .send(Err(CallError::Unavailable(peer.to_owned())))
                .is_ok(),
            None => false,
        }
    }

    /// Forgets call `corr` (its caller gave up).
    pub(crate) fn forget(&self, corr: u64) {
        self.lock().remove(&corr);
    }

    /// Fails every call waiting for `peer` with [`CallError::PeerLost`]; returns how many.
    pub(crate) fn fail_peer(&self, peer: &str) -> usize {
        let mut map = self.lock();
        let lost: Vec<u64> = map
            .iter()
            .filter(|(_, (p, _))| p == peer)
            .map(|(c, _)| *c)
            .collect();
        for corr in &lost {
            if let Some((_, tx)) = map.remove(corr) {
                let _ = tx.send(Err(CallError::PeerLost(peer.to_owned())));
            }
        }
        lost.len()
    }

    /// Calls waiting now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Waiter)>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_reach_their_caller_and_a_lost_peer_fails_its_calls() {
        let p = Pending::default();
        let (a, ra) = p.register("n2");
        let (b, rb) = p.register("n3");
        let (c, rc) = p.register("n2");
        assert!(!p.complete(a, "n3", vec![9]), "another peer cannot answer");
        assert!(p.complete(a, "n2", vec![1]));
        assert_eq!(ra.await.unwrap(), Ok(vec![1]));
        assert!(!p.complete(a, "n2", vec![1]), "answered once");
        assert_eq!(p.fail_peer("n2"), 1);
        assert_eq!(rc.await.unwrap(), Err(CallError::PeerLost("n2".into())));
        assert!(p.complete(b, "n3", vec![]));
        assert_eq!(rb.await.unwrap(), Ok(vec![]));
        p.forget(c);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn correlation_ids_do_not_restart_at_the_same_value_in_every_process() {
        // Two processes (a node before and after kill -9) must not hand out the same ids.
        let firsts: std::collections::HashSet<u64> = (0..8)
            .map(|_| Pending::default().register("n2").0)
            .collect();
        assert!(firsts.len() > 1, "every process starts at {firsts:?}");
    }
}
