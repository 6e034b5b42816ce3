//! The store: one sled database per node, and the only module that touches sled.
//!
//! A leaf: it knows keys ([`keys`]), encoding, write sets and their committer, ids,
//! message history and kept events, and generic reads ([`Store::record`], [`Store::scan`]);
//! not the group's model or rules. Group records are read and written by the group itself
//! (`group::persist`). Records are bincode-encoded under the keys of [`keys`]. Reads go straight to sled; every
//! write goes through [`Committer`], which makes it durable (flushed) before the caller
//! answers anyone.

pub mod commit;
pub mod history;
pub mod ids;
pub mod kept;
pub mod keys;

pub use commit::{CommitError, Committer, Durable, Fault, WriteSet};
pub use history::MessageRec;

use bincode::{Decode, Encode};
use std::path::Path;

/// A storage failure (I/O or a corrupt record).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0}")]
    Commit(#[from] CommitError),
    #[error("cannot start the store committer: {0}")]
    Start(String),
    /// A bad node ordinal, or this node's id space is used up (see [`ids`]).
    #[error("{0}")]
    Ids(String),
}

type Result<T> = std::result::Result<T, StoreError>;

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 16 * 1024 * 1024 }>()
}

/// Encodes a record. Write sets use it through [`WriteSet::put_record`], which refuses the
/// whole write set when this fails, so that a failure never stores an empty record.
pub(crate) fn encode<T: Encode>(v: &T) -> std::result::Result<Vec<u8>, String> {
    bincode::encode_to_vec(v, cfg()).map_err(|e| e.to_string())
}

/// Decodes a record. A record that does not decode is counted and logged here; callers
/// skip it where they can (it costs that record, not the group or the node).
fn decode<T: Decode<()>>(key: &[u8], bytes: &[u8]) -> Result<T> {
    bincode::decode_from_slice(bytes, cfg())
        .map(|(v, _)| v)
        .map_err(|e| {
            let key = keys::describe(key);
            metrics::counter!("convoke_store_errors_total", "kind" => "corrupt").increment(1);
            tracing::error!(%key, error = %e, "corrupt record in the store; skipped where possible");
            StoreError::Corrupt {
                key,
                reason: e.to_string(),
            }
        })
}

/// `Ok(Some(v))` for a record that decodes, `Ok(None)` (counted and logged by [`decode`])
/// for one that does not: the caller goes on without it.
pub fn decode_or_skip<T: Decode<()>>(key: &[u8], bytes: &[u8]) -> Result<Option<T>> {
    match decode(key, bytes) {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::Corrupt { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The node's store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    committer: Committer,
    /// The bounds on kept events ([`kept`]).
    kept: std::sync::Arc<kept::KeptLimits>,
    /// Added to sled's id counter: see [`Store::new_id`].
    /// How [`Store::new_id`] turns sled's counter into ids (this node's ordinal and start).
    ids: ids::IdSpace,
}

impl Store {
    /// Opens (or creates) the database in `dir`, for a single node (ordinal 0).
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Self> {
        Self::open_as(dir, cache_capacity_bytes, 0)
    }

    /// Opens (or creates) the database in `dir` for the node with `ordinal` (0 to
    /// [`ids::MAX_ORDINAL`], permanent for the data dir): every id it allocates carries it
    /// (see [`ids`]).
    pub fn open_as(dir: &Path, cache_capacity_bytes: u64, ordinal: u8) -> Result<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let ids = ids::IdSpace::new(ordinal, now).map_err(|e| StoreError::Ids(e.to_string()))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_bytes)
            .open()?;
        let committer =
            Committer::start(db.clone()).map_err(|e| StoreError::Start(e.to_string()))?;
        Ok(Self {
            db,
            committer,
            kept: std::sync::Arc::default(),
            ids,
        })
    }

    /// Applies `ws` atomically and returns once it is durable. Refused without writing
    /// anything while the committer's queue is over its byte budget.
    pub async fn commit(&self, ws: WriteSet) -> Result<()> {
        if ws.is_empty() {
            return Ok(());
        }
        if self.committer.overloaded() {
            metrics::counter!("convoke_store_errors_total", "kind" => "queue_full").increment(1);
            return Err(CommitError::NotWritten(
                "the store's write queue is full (store.commit_queue_mb); retry".into(),
            )
            .into());
        }
        Ok(self.committer.commit(ws).await?)
    }

    /// Sets the group-commit gathering window (see [`commit::DEFAULT_WINDOW_US`]).
    pub fn set_commit_window(&self, window: std::time::Duration) {
        self.committer.set_window(window);
    }

    /// Sets the commit deadline and the byte budget of the committer's queue.
    pub fn set_commit_limits(&self, deadline: std::time::Duration, queue_bytes: usize) {
        self.committer.set_limits(deadline, queue_bytes);
    }

    /// Queues `ws` for the committer now (in submission order) without waiting. Callers
    /// that may refuse check [`Store::overloaded`] first (before they assign anything, such
    /// as a message's seq); this never refuses for a full queue, so the queue's bound is its
    /// budget plus the write sets of the actors running at that moment.
    pub fn submit(&self, ws: WriteSet) -> Durable {
        self.committer.submit(ws)
    }

    /// Whether the committer's queue is over its byte budget: refuse new changes (nothing
    /// changed) rather than queue more.
    pub fn overloaded(&self) -> bool {
        let over = self.committer.overloaded();
        if over {
            metrics::counter!("convoke_store_errors_total", "kind" => "queue_full").increment(1);
        }
        over
    }

    /// How many write sets have been submitted so far (see [`Store::settle`]).
    pub fn submitted(&self) -> u64 {
        self.committer.submitted()
    }

    /// Whether the first `ticket` write sets are committed (or failed).
    pub fn settled(&self, ticket: u64) -> bool {
        self.committer.settled(ticket)
    }

    /// Waits, at most for the commit deadline, until the first `ticket` write sets are
    /// committed (or failed): a group actor that replaces another waits for everything its
    /// predecessor submitted before it reads the group. False if the deadline passed.
    pub async fn settle(&self, ticket: u64) -> bool {
        self.committer.settle(ticket).await
    }

    /// False once a write failed (for good) and while a commit is past its deadline.
    pub fn healthy(&self) -> bool {
        self.committer.healthy()
    }

    /// Resolves when a write or flush has failed (the node then stops).
    pub async fn failed(&self) -> std::sync::Arc<str> {
        self.committer.failed().await
    }

    /// A new unique id (group, message, file and kept-event ids). Never reused, across
    /// restarts and across a restore from a backup.
    ///
    /// sled's counter alone survives restarts but not a restore: a restored database
    /// counts on from the backup, and ids handed out after the backup was taken (to groups,
    /// messages and files clients still know of) would be given again. So each start adds
    /// its start time to the counter: a later start's ids are above every earlier start's
    /// as long as that one handed out fewer ids than its room (a million per millisecond it
    /// ran at ordinal 0; see [`ids`] for ordinals 1..=63), and the clock did not go back
    /// between the two starts. At ordinal 0 (a single node) ids are about 1.8e18 (until the
    /// year 2500): clients keep them as strings. In a cluster each node's ids carry its
    /// ordinal ([`ids::ordinal_of`]), so no two nodes hand out the same id.
    pub fn new_id(&self) -> Result<u64> {
        let counter = self.db.generate_id()?;
        self.ids
            .id(counter)
            .map_err(|e| StoreError::Ids(e.to_string()))
    }

    /// This node's ordinal (0: a single node).
    pub fn ordinal(&self) -> u8 {
        self.ids.ordinal()
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    // ---- users ---------------------------------------------------------------------------

    /// Closes the store: waits for the committer to stop, so the database files are
    /// released when this returns (another process may then open them). Other clones of
    /// this store must have been dropped first.
    pub fn close(self) {
        let Store { db, committer, .. } = self;
        drop(db);
        committer.close();
    }

    /// Adds a user record (as a first login at `now` would) to `ws`.
    pub fn user_writes(&self, ws: &mut WriteSet, user: &str, now: i64) {
        ws.put_record(keys::user_key(user), &now);
    }

    /// Records a login; durable before it returns.
    pub async fn record_login(&self, user: &str, now: i64) -> Result<()> {
        if self.db.contains_key(keys::user_key(user))? {
            return Ok(());
        }
        let mut ws = WriteSet::default();
        ws.put_record(keys::user_key(user), &now);
        self.commit(ws).await
    }

    /// Ids of the groups `user` is a member of, ascending.
    pub fn joined_groups(&self, user: &str) -> Result<Vec<u64>> {
        let prefix = keys::joined_prefix(user);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if let Some(gid) = keys::trailing_u64(&k) {
                out.push(gid);
            }
        }
        Ok(out)
    }

    /// Public groups with ids above `after`, ascending, at most `limit`.
    pub fn public_groups(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, String)>> {
        let start = keys::public_key(after.map_or(0, |a| a.saturating_add(1)));
        let mut out = Vec::new();
        for kv in self.db.range(start..) {
            let (k, v) = kv?;
            if k.first() != Some(&keys::PUBLIC) || out.len() >= limit {
                break;
            }
            if let (Some(gid), Some(name)) = (keys::trailing_u64(&k), decode_or_skip(&k, &v)?) {
                out.push((gid, name));
            }
        }
        Ok(out)
    }

    // ---- groups ----------------------------------------------------------------------------

    /// One record under `key`, decoded (`None` if absent; a record that does not decode
    /// is an error, counted and logged).
    pub fn record<T: Decode<()>>(&self, key: &[u8]) -> Result<Option<T>> {
        self.db.get(key)?.map(|v| decode(key, &v)).transpose()
    }

    /// Calls `each` with every key and value under `prefix`, in key order, until it
    /// returns an error.
    pub fn scan(
        &self,
        prefix: &[u8],
        mut each: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            each(&k, &v)?;
        }
        Ok(())
    }

    /// Adds to `ws` the deletion of every record under `prefix`.
    pub fn delete_prefix(&self, prefix: &[u8], ws: &mut WriteSet) -> Result<()> {
        for k in self.db.scan_prefix(prefix).keys() {
            ws.delete(k?.to_vec());
        }
        Ok(())
    }

    /// Whether any group exists (the start-up sweep refuses to run on a store without one).
    pub fn has_groups(&self) -> Result<bool> {
        Ok(self
            .db
            .scan_prefix([keys::GROUP])
            .next()
            .transpose()?
            .is_some())
    }

    /// Ids of the shared files indexed in group `gid` (the start-up sweep of orphan blobs).
    pub fn file_ids(&self, gid: u64) -> Result<std::collections::BTreeSet<u64>> {
        let mut prefix = keys::group_prefix(gid);
        prefix.push(keys::Kind::File as u8);
        let mut out = std::collections::BTreeSet::new();
        for k in self.db.scan_prefix(&prefix).keys() {
            if let Some(fid) = keys::trailing_u64(&k?) {
                out.insert(fid);
            }
        }
        Ok(out)
    }

    /// Groups that have timed mutes, with their earliest expiry (`None` when the store does
    /// not say: an index entry written before expiries were kept in it, or an unreadable one;
    /// load such a group to find out).
    pub fn timed_groups(&self) -> Result<Vec<(u64, Option<i64>)>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([keys::TIMED]) {
            let (k, v) = kv?;
            if let Some(gid) = keys::trailing_u64(&k) {
                let at = bincode::decode_from_slice::<i64, _>(&v, cfg())
                    .ok()
                    .map(|(at, _)| at);
                out.push((gid, at));
            }
        }
        Ok(out)
    }

    // Kept events: see [`kept`].
}

impl Store {
    /// Whether `user` has logged in at least once (a fact some rules need, gathered by the
    /// ingress: `group::rules::facts`).
    pub fn user_exists(&self, user: &str) -> bool {
        self.db.contains_key(keys::user_key(user)).unwrap_or(false)
    }

    /// How many groups other than `except` `user` is a member of (the joined index).
    pub fn joined_count_except(&self, user: &str, except: u64) -> usize {
        self.db
            .scan_prefix(keys::joined_prefix(user))
            .keys()
            .filter(|k| {
                k.as_ref()
                    .map_or(true, |k| keys::trailing_u64(k) != Some(except))
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store opened for a node ordinal hands out ids that carry it, growing across a
    /// reopening; ordinal 0 is today's single node; an ordinal past 63 is refused.
    #[tokio::test]
    async fn ids_carry_the_node_ordinal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_as(dir.path(), 1 << 20, 7).unwrap();
        assert_eq!(store.ordinal(), 7);
        let a = store.new_id().unwrap();
        let b = store.new_id().unwrap();
        assert!(b > a && ids::ordinal_of(a) == 7 && ids::ordinal_of(b) == 7);
        store.close();
        let store = Store::open_as(dir.path(), 1 << 20, 7).unwrap();
        let c = store.new_id().unwrap();
        assert!(c > b && ids::ordinal_of(c) == 7, "{c} after {b}");
        store.close();
        let single = tempfile::tempdir().unwrap();
        let store = Store::open(single.path(), 1 << 20).unwrap();
        let id = store.new_id().unwrap();
        assert!(store.ordinal() == 0 && ids::ordinal_of(id) == 0 && id > 1 << 60);
        store.close();
        let err = Store::open_as(dir.path(), 1 << 20, 64).unwrap_err();
        assert!(err.to_string().contains("64"), "{err}");
    }
}
