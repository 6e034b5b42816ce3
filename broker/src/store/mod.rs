//! The store: one sled database per node, and the only module that touches sled.
//!
//! Records are bincode-encoded under the keys of [`keys`]. Reads go straight to sled; every
//! write goes through [`Committer`], which makes it durable (flushed) before the caller
//! answers anyone.

pub mod commit;
pub mod history;
pub mod keys;
pub mod kept;

pub use commit::{Committer, Durable, WriteSet};
pub use history::MessageRec;

use crate::files::FileRec;
use crate::group::model::{Group, GroupMeta, Invite, JoinRequest, MemberRec};
use crate::group::rules::{Dirty, Env};
use bincode::{Decode, Encode};
use keys::Kind;
use std::path::Path;

/// A storage failure (I/O or a corrupt record).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("commit failed: {0}")]
    Commit(String),
}

type Result<T> = std::result::Result<T, StoreError>;

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 16 * 1024 * 1024 }>()
}

/// Encodes a record.
pub fn encode<T: Encode>(v: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for our plain record types.
    bincode::encode_to_vec(v, cfg()).unwrap_or_default()
}

fn decode<T: Decode<()>>(key: &[u8], bytes: &[u8]) -> Result<T> {
    bincode::decode_from_slice(bytes, cfg())
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
}

/// The node's store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    committer: Committer,
    /// The bounds on kept events ([`kept`]).
    kept: std::sync::Arc<kept::KeptLimits>,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_bytes)
            .open()?;
        let committer =
            Committer::start(db.clone()).map_err(|e| StoreError::Commit(e.to_string()))?;
        Ok(Self {
            db,
            committer,
            kept: std::sync::Arc::default(),
        })
    }

    /// Applies `ws` atomically and returns once it is durable.
    pub async fn commit(&self, ws: WriteSet) -> Result<()> {
        if ws.is_empty() {
            return Ok(());
        }
        self.committer.commit(ws).await.map_err(StoreError::Commit)
    }

    /// Sets the group-commit gathering window (see [`commit::DEFAULT_WINDOW_US`]).
    pub fn set_commit_window(&self, window: std::time::Duration) {
        self.committer.set_window(window);
    }

    /// Queues `ws` for the committer now (in submission order) without waiting.
    pub fn submit(&self, ws: WriteSet) -> Durable {
        self.committer.submit(ws)
    }

    /// A new unique id (group ids, inbox sequence numbers). Never reused, across restarts.
    pub fn new_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()? + 1)
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
        ws.put(keys::user_key(user), encode(&now));
    }

    /// Records a login; durable before it returns.
    pub async fn record_login(&self, user: &str, now: i64) -> Result<()> {
        if self.db.contains_key(keys::user_key(user))? {
            return Ok(());
        }
        let mut ws = WriteSet::default();
        ws.put(keys::user_key(user), encode(&now));
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
            if let Some(gid) = keys::trailing_u64(&k) {
                out.push((gid, decode::<String>(&k, &v)?));
            }
        }
        Ok(out)
    }

    // ---- groups ----------------------------------------------------------------------------

    /// A group's meta record.
    pub fn meta(&self, gid: u64) -> Result<Option<GroupMeta>> {
        let key = keys::group_key(gid, Kind::Meta, "");
        self.db.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// One member's record.
    pub fn member(&self, gid: u64, user: &str) -> Result<Option<MemberRec>> {
        let key = keys::group_key(gid, Kind::Member, user);
        self.db.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// Loads a whole group, or `None` if it does not exist.
    pub fn load_group(&self, gid: u64) -> Result<Option<Group>> {
        let Some(meta) = self.meta(gid)? else {
            return Ok(None);
        };
        let mut g = Group::new(gid, meta);
        let prefix = keys::group_prefix(gid);
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let Some(kind) = k.get(prefix.len()).copied().and_then(Kind::from_byte) else {
                continue;
            };
            let user = String::from_utf8_lossy(&k[prefix.len() + 1..]).into_owned();
            match kind {
                Kind::Meta => {}
                Kind::Member => g.insert_member(&user, decode::<MemberRec>(&k, &v)?),
                Kind::Mute => {
                    g.mutes.insert(user, decode::<i64>(&k, &v)?);
                }
                Kind::Allow => {
                    g.allow.insert(user);
                }
                Kind::Block => {
                    g.block.insert(user);
                }
                Kind::Invite => {
                    g.invites.insert(user, decode::<Invite>(&k, &v)?);
                }
                Kind::Request => {
                    g.requests.insert(user, decode::<JoinRequest>(&k, &v)?);
                }
                Kind::File => {
                    if let Some(fid) = keys::trailing_u64(&k) {
                        g.files.insert(fid, decode::<FileRec>(&k, &v)?);
                    }
                }
            }
        }
        Ok(Some(g))
    }

    /// Adds to `ws` the writes that persist the `dirty` records of `g` as they are now.
    pub fn group_writes(&self, g: &Group, dirty: &[Dirty], ws: &mut WriteSet) {
        let gid = g.id;
        let mut dirty = dirty.to_vec();
        dirty.sort();
        dirty.dedup();
        for d in &dirty {
            match d {
                Dirty::Meta => {
                    ws.put(keys::group_key(gid, Kind::Meta, ""), encode(&g.meta));
                    if g.meta.public {
                        ws.put(keys::public_key(gid), encode(&g.meta.name));
                    } else {
                        ws.delete(keys::public_key(gid));
                    }
                }
                Dirty::Member(u) => {
                    let key = keys::group_key(gid, Kind::Member, u);
                    match g.members.get(u) {
                        Some(rec) => {
                            ws.put(key, encode(rec));
                            ws.put(keys::joined_key(u, gid), Vec::new());
                        }
                        None => {
                            ws.delete(key);
                            ws.delete(keys::joined_key(u, gid));
                        }
                    }
                }
                Dirty::Mute(u) => {
                    let key = keys::group_key(gid, Kind::Mute, u);
                    match g.mutes.get(u) {
                        Some(exp) => ws.put(key, encode(exp)),
                        None => ws.delete(key),
                    }
                }
                Dirty::Allow(u) => set_flag(
                    ws,
                    keys::group_key(gid, Kind::Allow, u),
                    g.allow.contains(u),
                ),
                Dirty::Block(u) => set_flag(
                    ws,
                    keys::group_key(gid, Kind::Block, u),
                    g.block.contains(u),
                ),
                Dirty::Invite(u) => {
                    let key = keys::group_key(gid, Kind::Invite, u);
                    match g.invites.get(u) {
                        Some(inv) => ws.put(key, encode(inv)),
                        None => ws.delete(key),
                    }
                }
                Dirty::Request(u) => {
                    let key = keys::group_key(gid, Kind::Request, u);
                    match g.requests.get(u) {
                        Some(r) => ws.put(key, encode(r)),
                        None => ws.delete(key),
                    }
                }
                Dirty::File(fid) => {
                    let key = keys::file_key(gid, *fid);
                    match g.files.get(fid) {
                        Some(f) => ws.put(key, encode(f)),
                        None => ws.delete(key),
                    }
                }
            }
        }
        if dirty.iter().any(|d| matches!(d, Dirty::Mute(_))) {
            set_flag(ws, keys::timed_key(gid), g.next_expiry().is_some());
        }
    }

    /// Adds to `ws` the deletion of every record of `g`.
    pub fn destroy_writes(&self, g: &Group, ws: &mut WriteSet) -> Result<()> {
        for kv in self.db.scan_prefix(keys::group_prefix(g.id)) {
            let (k, _) = kv?;
            ws.delete(k.to_vec());
        }
        for u in g.members.keys() {
            ws.delete(keys::joined_key(u, g.id));
        }
        ws.delete(keys::public_key(g.id));
        ws.delete(keys::timed_key(g.id));
        Ok(())
    }

    /// Ids of the shared files indexed in group `gid` (the start-up sweep of orphan blobs).
    pub fn file_ids(&self, gid: u64) -> Result<std::collections::BTreeSet<u64>> {
        let mut prefix = keys::group_prefix(gid);
        prefix.push(Kind::File as u8);
        let mut out = std::collections::BTreeSet::new();
        for k in self.db.scan_prefix(&prefix).keys() {
            if let Some(fid) = keys::trailing_u64(&k?) {
                out.insert(fid);
            }
        }
        Ok(out)
    }

    /// Ids of groups that have timed mutes to re-arm.
    pub fn timed_groups(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([keys::TIMED]) {
            let (k, _) = kv?;
            if let Some(gid) = keys::trailing_u64(&k) {
                out.push(gid);
            }
        }
        Ok(out)
    }

    // Kept events: see [`kept`].
}

fn set_flag(ws: &mut WriteSet, key: Vec<u8>, on: bool) {
    if on {
        ws.put(key, Vec::new());
    } else {
        ws.delete(key);
    }
}

impl Env for Store {
    fn user_exists(&self, user: &str) -> bool {
        self.db.contains_key(keys::user_key(user)).unwrap_or(false)
    }

    fn joined_count(&self, user: &str) -> usize {
        self.db
            .scan_prefix(keys::joined_prefix(user))
            .keys()
            .count()
    }
}
