//! Id spaces: which node allocated an id, so that ids stay unique in a cluster.
//!
//! Every node has an ordinal, 0 to [`MAX_ORDINAL`], permanent for its data dir; 0 is a node
//! that started life as a single node. Allocated ids (group, message, kept-event and file
//! ids, [`crate::store::Store::new_id`]) and session ids ([`session_id`]) carry it, so that
//! two nodes never hand out the same id and an id says where it was allocated
//! ([`ordinal_of`], [`session_ordinal`]): a kept event's acknowledgement goes to the node
//! that holds it.
//!
//! Allocated ids are sled's persisted counter plus a base taken from the start time, so
//! that a node restored from a backup never hands out an id it gave after the backup (the
//! counter alone would count on from the backup's value):
//! - ordinal 0 (today's ids, unchanged): `start_ms * 1_000_000 + counter + 1`, about
//!   1.8e18; at least 2^60 for any start after 2006.
//! - ordinal k in 1..=63: `k << 54 | ((start_ms - 2024-01-01) * 4_000 + counter + 1)`, the
//!   low part below 2^54 until the year 2166 (past it, allocation fails rather than
//!   enter another ordinal's space). All of these are below 2^60, so no ordinal can produce
//!   another one's ids. The time weighs less than at ordinal 0 (4,000 ids per ms instead of
//!   a million) to fit 54 bits: a restored node is safe as long as the ids handed out after
//!   the backup, plus sled's jump of up to a million at each start since, are fewer than
//!   4,000 per ms the last run before the restore ran (a start costs 250 ms of that room).

/// The largest node ordinal.
pub const MAX_ORDINAL: u8 = 63;

/// Ordinal 0: ids per millisecond of start time (today's single-node scheme).
pub(crate) const IDS_PER_MS: u64 = 1_000_000;

/// Ordinals 1..=63: ids per millisecond of start time since [`CLUSTER_EPOCH_MS`].
const CLUSTER_IDS_PER_MS: u64 = 4_000;

/// 2024-01-01T00:00:00Z, ms since the Unix epoch: the time origin of ordinals 1..=63.
const CLUSTER_EPOCH_MS: u64 = 1_704_067_200_000;

/// Bits below an ordinal (1..=63) in an allocated id.
const ORDINAL_SHIFT: u32 = 54;

/// Bits below the ordinal in a session id.
const SESSION_SHIFT: u32 = 56;

/// Allocated ids at or above this are ordinal 0's (it starts at 2^60 in 2006).
const ORDINAL0_FLOOR: u64 = 1 << 60;

/// An ordinal outside 0..=[`MAX_ORDINAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node ordinal {0} is out of range 0..={MAX_ORDINAL}")]
pub struct BadOrdinal(pub u8);

/// An allocator's space ran out (ordinals 1..=63, after the year 2166).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the id space of node ordinal {0} is exhausted")]
pub struct Exhausted(pub u8);

/// How one node turns its counter into ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSpace {
    ordinal: u8,
    /// Added to the counter (the start time's part).
    base: u64,
}

impl IdSpace {
    /// The id space of a node with `ordinal` that started at `start_ms` (ms since the Unix
    /// epoch).
    pub fn new(ordinal: u8, start_ms: u64) -> Result<Self, BadOrdinal> {
        if ordinal > MAX_ORDINAL {
            return Err(BadOrdinal(ordinal));
        }
        let base = if ordinal == 0 {
            start_ms.saturating_mul(IDS_PER_MS)
        } else {
            start_ms
                .saturating_sub(CLUSTER_EPOCH_MS)
                .saturating_mul(CLUSTER_IDS_PER_MS)
        };
        Ok(Self { ordinal, base })
    }

    /// This node's ordinal.
    pub fn ordinal(&self) -> u8 {
        self.ordinal
    }

    /// The id for sled's counter value `counter` (as [`crate::store::Store::new_id`]).
    pub fn id(&self, counter: u64) -> Result<u64, Exhausted> {
        let low = self.base.saturating_add(counter).saturating_add(1);
        if self.ordinal == 0 {
            return Ok(low);
        }
        if low >= 1 << ORDINAL_SHIFT {
            return Err(Exhausted(self.ordinal));
        }
        Ok((u64::from(self.ordinal) << ORDINAL_SHIFT) | low)
    }
}

/// The ordinal of the node that allocated `id` (a group, message, kept-event or file id).
/// Ids no node allocates (below 2^54) answer 0.
pub fn ordinal_of(id: u64) -> u8 {
    if id >= ORDINAL0_FLOOR {
        0
    } else {
        // Below 2^60: the top 6 of the 60 bits.
        (id >> ORDINAL_SHIFT) as u8
    }
}

/// The session id of the `counter`th session (from 1) of node `ordinal`: `ordinal << 56 |
/// counter`, so ordinal 0 keeps today's ids and fan-out can skip a requesting session of
/// any node by id.
pub fn session_id(ordinal: u8, counter: u64) -> u64 {
    (u64::from(ordinal) << SESSION_SHIFT) | (counter & ((1 << SESSION_SHIFT) - 1))
}

/// The ordinal of the node that holds session `id`.
pub fn session_ordinal(id: u64) -> u8 {
    (id >> SESSION_SHIFT) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Start times from 2024 to 2160 (ms since the Unix epoch).
    fn start() -> impl Strategy<Value = u64> {
        CLUSTER_EPOCH_MS..5_900_000_000_000u64
    }

    #[test]
    fn ordinal_zero_is_todays_scheme() {
        let s = IdSpace::new(0, 1_764_000_000_000).unwrap();
        assert_eq!(s.id(0).unwrap(), 1_764_000_000_000 * 1_000_000 + 1);
        assert_eq!(s.id(41).unwrap(), 1_764_000_000_000 * 1_000_000 + 42);
        assert_eq!(ordinal_of(s.id(41).unwrap()), 0);
        assert_eq!(session_id(0, 7), 7);
    }

    #[test]
    fn bad_ordinals_are_refused() {
        assert_eq!(IdSpace::new(64, 0), Err(BadOrdinal(64)));
        assert!(IdSpace::new(63, 0).is_ok());
    }

    #[test]
    fn an_exhausted_space_fails_instead_of_entering_another() {
        let s = IdSpace::new(5, u64::MAX / 2).unwrap();
        assert_eq!(s.id(0), Err(Exhausted(5)));
    }

    proptest! {
        /// Every id names its allocator: no two ordinals ever produce the same id.
        #[test]
        fn ids_are_disjoint_across_ordinals(
            ordinal in 0..=MAX_ORDINAL,
            start in start(),
            counter in 0u64..1 << 40,
        ) {
            let id = IdSpace::new(ordinal, start).unwrap().id(counter).unwrap();
            prop_assert_eq!(ordinal_of(id), ordinal);
        }

        /// Sessions too.
        #[test]
        fn session_ids_are_disjoint_across_ordinals(
            ordinal in 0..=MAX_ORDINAL,
            counter in 1u64..1 << 55,
        ) {
            let id = session_id(ordinal, counter);
            prop_assert_eq!(session_ordinal(id), ordinal);
            prop_assert_eq!(id & ((1 << 56) - 1), counter);
        }

        /// A later start hands out ids above every id of an earlier start of the same node,
        /// even from a counter restored from a backup (`back` ids behind), as long as the
        /// earlier run handed out fewer ids than its room (4,000 per ms it ran, ordinals
        /// 1..=63; a million at 0).
        #[test]
        fn ids_grow_across_restarts_and_restores(
            ordinal in 0..=MAX_ORDINAL,
            start in start(),
            ran_ms in 1u64..100_000_000,
            counter in 0u64..1 << 40,
            used_share in 0.0f64..1.0,
            back_share in 0.0f64..1.0,
        ) {
            let room = ran_ms * if ordinal == 0 { IDS_PER_MS } else { CLUSTER_IDS_PER_MS };
            let used = ((room - 1) as f64 * used_share) as u64;
            let first = IdSpace::new(ordinal, start).unwrap();
            let last_of_first = first.id(counter + used).unwrap();
            // The next run starts `ran_ms` later with the counter anywhere from the
            // restored backup's (up to `used` behind) to where the first run left it.
            let back = (used as f64 * back_share) as u64;
            let second = IdSpace::new(ordinal, start + ran_ms).unwrap();
            let first_of_second = second.id(counter + used - back).unwrap();
            prop_assert!(first_of_second > last_of_first);
        }
    }
}
