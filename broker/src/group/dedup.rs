//! Idempotent sends: matching a send's client message id with an earlier message of the
//! same sender in the same group.
//!
//! An id lives in two places. Once its message is durable, in the store (`c`/`k` keys beside
//! history, written in the message's own write set, trimmed with it). Before that, in the
//! actor's memory ([`InFlightIds`]): the publisher has not seen the flush yet and sled may
//! not show the write yet, so a pipelined retry is matched here first. A repeat of a message
//! in flight is answered by the group's publisher right after the original, with the
//! original's outcome (a failed write fails the repeat too); a repeat of a durable one within
//! the window is answered at once. Sends without an id never come here.

use super::rules::messages as rules;
use crate::store::{MessageRec, Store, StoreError, WriteSet};
use convoke_protocol::Response;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

/// The result of a message's write, set by the publisher once the flush is over; repeats
/// queued behind the message read it.
pub type Outcome = Arc<OnceLock<Result<(), String>>>;

/// (sender, client message id).
type Key = (String, String);

#[derive(Debug)]
struct InFlight {
    seq: u64,
    response: Response,
    outcome: Outcome,
}

/// Messages with client ids whose writes are not yet known durable, in seq order.
#[derive(Debug, Default)]
struct InFlightIds {
    by_id: HashMap<Key, InFlight>,
    order: VecDeque<(u64, Key)>,
}

impl InFlightIds {
    /// Forgets the oldest entries whose outcome is known (their ids are in the store, or
    /// their write failed and stored nothing). Outcomes arrive in seq order, so stopping at
    /// the first unsettled entry leaves none behind for long.
    fn forget_settled(&mut self) {
        while let Some((seq, key)) = self.order.front() {
            // (An entry whose id a later send took over, after this one failed, only leaves
            // the queue.)
            if let Some(f) = self.by_id.get(key).filter(|f| f.seq == *seq) {
                if f.outcome.get().is_none() {
                    return;
                }
                self.by_id.remove(key);
            }
            self.order.pop_front();
        }
    }

    fn get(&self, sender: &str, id: &str) -> Option<&InFlight> {
        self.by_id.get(&(sender.to_string(), id.to_string()))
    }

    fn insert(&mut self, sender: &str, id: &str, seq: u64, response: Response) -> Outcome {
        let outcome = Outcome::default();
        let key = (sender.to_string(), id.to_string());
        self.order.push_back((seq, key.clone()));
        self.by_id.insert(
            key,
            InFlight {
                seq,
                response,
                outcome: outcome.clone(),
            },
        );
        outcome
    }

    /// Entries with seq in `from..to`: seq, sender, id, and whether the id is still theirs.
    fn between(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &str, &str, bool)> {
        self.order
            .iter()
            .filter(move |(seq, _)| (from..to).contains(seq))
            .map(|(seq, key)| {
                let owns = self.by_id.get(key).is_some_and(|f| f.seq == *seq);
                (*seq, key.0.as_str(), key.1.as_str(), owns)
            })
    }

    fn min_seq_at_least(&self, to: u64) -> Option<u64> {
        self.order.iter().map(|(s, _)| *s).find(|s| *s >= to)
    }
}

/// What a send with a client message id turned out to be.
#[derive(Debug)]
pub enum Match {
    /// No message of this sender used the id within the window: store it.
    New,
    /// A repeat of a durable message: its original answer.
    Stored(Response),
    /// A repeat of a message still waiting for its flush: answer after it, with its outcome.
    InFlight(Response, Outcome),
}

/// A group's client message ids: those in flight, and where stored ones start.
#[derive(Debug, Default)]
pub struct ClientIds {
    in_flight: InFlightIds,
    /// No message below this seq has a client id record in the store (`None`: none has),
    /// so that trimming history in groups that do not use ids never reads their records.
    first_seq: Option<u64>,
}

impl ClientIds {
    /// The state of a group whose lowest seq with a stored client id is `first_seq`.
    pub fn new(first_seq: Option<u64>) -> Self {
        Self {
            in_flight: InFlightIds::default(),
            first_seq,
        }
    }

    /// Looks `sender`'s `id` up: among messages in flight first, then in the store (a
    /// message older than `window_ms` at `now` no longer counts).
    pub fn lookup(
        &mut self,
        store: &Store,
        gid: u64,
        sender: &str,
        id: &str,
        now: i64,
        window_ms: i64,
    ) -> Result<Match, StoreError> {
        self.in_flight.forget_settled();
        if let Some(f) = self.in_flight.get(sender, id) {
            return Ok(match f.outcome.get() {
                // The write failed, so nothing was stored: this send stores it.
                Some(Err(_)) => Match::New,
                _ => Match::InFlight(f.response.clone(), f.outcome.clone()),
            });
        }
        Ok(match store.message_by_client_id(gid, sender, id)? {
            Some(rec) if rules::within_dedup_window(rec.timestamp, now, window_ms) => {
                Match::Stored(sent(&rec))
            }
            _ => Match::New,
        })
    }

    /// Adds to `ws` the client id records of message `rec` (after any trim in the same
    /// write set) and remembers it as in flight; the publisher settles the outcome.
    pub fn record(
        &mut self,
        store: &Store,
        ws: &mut WriteSet,
        gid: u64,
        rec: &MessageRec,
        id: &str,
    ) -> Outcome {
        store.client_id_writes(ws, gid, rec.seq, &rec.from, id);
        self.first_seq = Some(self.first_seq.map_or(rec.seq, |s| s.min(rec.seq)));
        self.in_flight.insert(&rec.from, id, rec.seq, sent(rec))
    }

    /// Adds to `ws` the removal of the client id records of messages `from..to` (history
    /// being trimmed). Returns the new value for [`ClientIds::set_first_seq`], to be set
    /// once `ws` is submitted.
    pub fn trim_writes(
        &self,
        store: &Store,
        ws: &mut WriteSet,
        gid: u64,
        from: u64,
        to: u64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(first) = self.first_seq.filter(|s| *s < to) else {
            return Ok(self.first_seq);
        };
        let stored = store.client_id_trim_writes(ws, gid, first.min(from), to)?;
        // Trimmed messages still in flight: the store does not show their records yet.
        for (seq, sender, id, owns) in self.in_flight.between(first.min(from), to) {
            store.client_id_release_writes(ws, gid, seq, sender, id, owns);
        }
        // An id released above that a later message in flight took over stays that one's.
        for (sender, id) in stored.released {
            if let Some(f) = self.in_flight.get(&sender, &id).filter(|f| f.seq >= to) {
                store.client_id_writes(ws, gid, f.seq, &sender, &id);
            }
        }
        let next_in_flight = self.in_flight.min_seq_at_least(to);
        Ok(match (stored.next_seq, next_in_flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Sets the lowest seq with a stored client id (see [`ClientIds::trim_writes`]).
    pub fn set_first_seq(&mut self, first_seq: Option<u64>) {
        self.first_seq = first_seq;
    }

    /// Forgets settled entries (called on the actor's timer, so a group whose sends
    /// stopped does not hold them).
    pub fn tidy(&mut self) {
        self.in_flight.forget_settled();
    }
}

/// The answer a send got.
pub fn sent(rec: &MessageRec) -> Response {
    Response::MessageSent {
        msg_id: rec.msg_id.to_string(),
        seq: rec.seq,
        timestamp: rec.timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(seq: u64) -> Response {
        Response::MessageSent {
            msg_id: format!("m{seq}"),
            seq,
            timestamp: 0,
        }
    }

    fn seq_of(ids: &InFlightIds, sender: &str, id: &str) -> Option<u64> {
        ids.get(sender, id).map(|f| f.seq)
    }

    #[test]
    fn settled_entries_are_forgotten_in_order_and_unsettled_ones_kept() {
        let mut ids = InFlightIds::default();
        let a = ids.insert("u", "a", 1, resp(1));
        let b = ids.insert("u", "b", 2, resp(2));
        let _c = ids.insert("v", "a", 3, resp(3));
        b.set(Ok(())).unwrap();
        ids.forget_settled();
        assert_eq!(seq_of(&ids, "u", "a"), Some(1), "the oldest is unsettled");
        assert_eq!(seq_of(&ids, "u", "b"), Some(2), "behind an unsettled one");
        a.set(Err("disk".into())).unwrap();
        ids.forget_settled();
        assert_eq!(seq_of(&ids, "u", "a"), None);
        assert_eq!(seq_of(&ids, "u", "b"), None);
        assert_eq!(seq_of(&ids, "v", "a"), Some(3), "ids are per sender");
        assert_eq!(ids.order.len(), 1);
    }

    #[test]
    fn an_id_taken_over_after_a_failure_belongs_to_the_later_send() {
        let mut ids = InFlightIds::default();
        let first = ids.insert("u", "a", 1, resp(1));
        first.set(Err("disk".into())).unwrap();
        let second = ids.insert("u", "a", 2, resp(2));
        let owners: Vec<_> = ids
            .between(0, 10)
            .map(|(s, _, _, owns)| (s, owns))
            .collect();
        assert_eq!(owners, [(1, false), (2, true)]);
        ids.forget_settled();
        assert_eq!(
            seq_of(&ids, "u", "a"),
            Some(2),
            "the stale entry left alone"
        );
        second.set(Ok(())).unwrap();
        ids.forget_settled();
        assert!(ids.by_id.is_empty() && ids.order.is_empty());
    }

    #[test]
    fn ranges_and_the_next_seq_in_flight() {
        let mut ids = InFlightIds::default();
        for seq in [3, 5, 8] {
            ids.insert("u", &format!("id{seq}"), seq, resp(seq));
        }
        let between: Vec<u64> = ids.between(4, 8).map(|(s, ..)| s).collect();
        assert_eq!(between, [5]);
        assert_eq!(ids.min_seq_at_least(4), Some(5));
        assert_eq!(ids.min_seq_at_least(9), None);
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        (dir, store)
    }

    async fn put_message(store: &Store, ids: &mut ClientIds, seq: u64, id: Option<&str>, ts: i64) {
        let rec = MessageRec {
            seq,
            msg_id: 100 + seq,
            from: "u".into(),
            payload: vec![],
            timestamp: ts,
            allow_group_ack: false,
        };
        let mut ws = WriteSet::default();
        store.message_writes(&mut ws, 7, &rec);
        let outcome = id.map(|id| ids.record(store, &mut ws, 7, &rec, id));
        let r = store.commit(ws).await.map_err(|e| e.to_string());
        if let Some(o) = outcome {
            o.set(r).unwrap();
        }
    }

    fn is_stored(m: Match, seq: u64) -> bool {
        matches!(m, Match::Stored(Response::MessageSent { seq: s, .. }) if s == seq)
    }

    #[tokio::test]
    async fn a_stored_id_answers_within_the_window_and_trimming_releases_it() {
        let (_dir, store) = store();
        let mut ids = ClientIds::new(None);
        put_message(&store, &mut ids, 1, None, 1_000).await;
        put_message(&store, &mut ids, 2, Some("a"), 1_000).await;
        put_message(&store, &mut ids, 3, Some("b"), 1_000).await;
        let look = |ids: &mut ClientIds, id: &str, now: i64| {
            ids.lookup(&store, 7, "u", id, now, 500).unwrap()
        };
        assert!(is_stored(look(&mut ids, "a", 1_499), 2));
        assert!(
            matches!(look(&mut ids, "a", 1_500), Match::New),
            "window over"
        );
        assert!(matches!(
            ids.lookup(&store, 7, "v", "a", 1_000, 500).unwrap(),
            Match::New
        ));
        assert!(matches!(
            ids.lookup(&store, 8, "u", "a", 1_000, 500).unwrap(),
            Match::New
        ));
        // Trimming seqs 1..3 drops message 2's id, not message 3's.
        let mut ws = WriteSet::default();
        store.trim_writes(&mut ws, 7, 1, 3).unwrap();
        let first = ids.trim_writes(&store, &mut ws, 7, 1, 3).unwrap();
        assert_eq!(first, Some(3));
        ids.set_first_seq(first);
        store.commit(ws).await.unwrap();
        assert!(matches!(look(&mut ids, "a", 1_000), Match::New));
        assert!(is_stored(look(&mut ids, "b", 1_000), 3));
        assert_eq!(store.first_client_id_seq(7, 0).unwrap(), Some(3));
    }

    #[tokio::test]
    async fn an_id_reused_after_the_window_survives_the_trim_of_its_first_message() {
        let (_dir, store) = store();
        let mut ids = ClientIds::new(None);
        put_message(&store, &mut ids, 1, Some("a"), 1_000).await;
        put_message(&store, &mut ids, 2, Some("a"), 5_000).await;
        let mut ws = WriteSet::default();
        store.trim_writes(&mut ws, 7, 1, 2).unwrap();
        ids.trim_writes(&store, &mut ws, 7, 1, 2).unwrap();
        store.commit(ws).await.unwrap();
        assert!(is_stored(
            ids.lookup(&store, 7, "u", "a", 5_000, 500).unwrap(),
            2
        ));
    }

    #[tokio::test]
    async fn trimming_a_message_in_flight_releases_its_id_and_keeps_a_later_owner() {
        let (_dir, store) = store();
        let mut ids = ClientIds::new(None);
        // Message 1 with id "a" is durable; message 2 takes "a" over (after the window)
        // and is still in flight when message 1 is trimmed.
        put_message(&store, &mut ids, 1, Some("a"), 1_000).await;
        let rec = MessageRec {
            seq: 2,
            msg_id: 102,
            from: "u".into(),
            payload: vec![],
            timestamp: 5_000,
            allow_group_ack: false,
        };
        let mut ws = WriteSet::default();
        store.message_writes(&mut ws, 7, &rec);
        let _pending = ids.record(&store, &mut ws, 7, &rec, "a");
        let mut trim = WriteSet::default();
        store.trim_writes(&mut trim, 7, 1, 2).unwrap();
        assert_eq!(
            ids.trim_writes(&store, &mut trim, 7, 1, 2).unwrap(),
            Some(2)
        );
        // Submitted in this order, as the actor does: the trim was computed before
        // message 2 reached the store.
        store.commit(ws).await.unwrap();
        store.commit(trim).await.unwrap();
        assert_eq!(store.first_client_id_seq(7, 0).unwrap(), Some(2));
        assert_eq!(
            store
                .message_by_client_id(7, "u", "a")
                .unwrap()
                .map(|r| r.seq),
            Some(2)
        );
        // The in-flight message 2 is trimmed next, before its outcome is known.
        let mut trim = WriteSet::default();
        store.trim_writes(&mut trim, 7, 2, 3).unwrap();
        assert_eq!(ids.trim_writes(&store, &mut trim, 7, 2, 3).unwrap(), None);
        store.commit(trim).await.unwrap();
        assert_eq!(store.first_client_id_seq(7, 0).unwrap(), None);
        assert_eq!(store.message_by_client_id(7, "u", "a").unwrap(), None);
    }
}
