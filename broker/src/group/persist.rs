//! The group's records in the store: how a [`Group`] is loaded and how the records a rule
//! touched ([`Dirty`]) become writes.
//!
//! This lives with the group, not in `store`, so the store stays a leaf that knows keys,
//! write sets and generic reads but not the group's model, rules or file records. The key
//! layout is the store's (`store::keys`): a group's records under its prefix, plus the
//! cross-group entries written in the same write set (joined index, public index, timed
//! mutes). [`GroupStore`] adds these to [`Store`], so callers read `store.load_group(gid)`.

use super::model::{BlockRec, Group, GroupMeta, Invite, JoinRequest, MemberRec};
use super::rules::Dirty;
use crate::files::FileRec;
use crate::store::keys::{self, Kind};
use crate::store::{decode_or_skip, Store, StoreError, WriteSet};
use convoke_protocol::Role;

type Result<T> = std::result::Result<T, StoreError>;

/// A group's records in the store.
pub trait GroupStore {
    /// A group's meta record.
    fn meta(&self, gid: u64) -> Result<Option<GroupMeta>>;
    /// One member's record.
    fn member(&self, gid: u64, user: &str) -> Result<Option<MemberRec>>;
    /// Loads a whole group, or `None` if it does not exist.
    fn load_group(&self, gid: u64) -> Result<Option<Group>>;
    /// Adds to `ws` the writes that persist the `dirty` records of `g` as they are now.
    fn group_writes(&self, g: &Group, dirty: &[Dirty], ws: &mut WriteSet);
    /// Adds to `ws` the deletion of every record of `g`.
    fn destroy_writes(&self, g: &Group, ws: &mut WriteSet) -> Result<()>;
}

impl GroupStore for Store {
    /// A group's meta record.
    fn meta(&self, gid: u64) -> Result<Option<GroupMeta>> {
        self.record(&keys::group_key(gid, Kind::Meta, ""))
    }

    /// One member's record.
    fn member(&self, gid: u64, user: &str) -> Result<Option<MemberRec>> {
        self.record(&keys::group_key(gid, Kind::Member, user))
    }

    /// Loads a whole group, or `None` if it does not exist.
    fn load_group(&self, gid: u64) -> Result<Option<Group>> {
        let Some(meta) = self.meta(gid)? else {
            return Ok(None);
        };
        let mut g = Group::new(gid, meta);
        let prefix = keys::group_prefix(gid);
        self.scan(&prefix, |k, v| {
            let Some(kind) = k.get(prefix.len()).copied().and_then(Kind::from_byte) else {
                return Ok(());
            };
            let user = String::from_utf8_lossy(&k[prefix.len() + 1..]).into_owned();
            // A record that does not decode costs that record (counted and logged), not
            // the group: the rest of the group loads.
            match kind {
                Kind::Meta => {}
                Kind::Member => {
                    if let Some(rec) = decode_or_skip::<MemberRec>(k, v)? {
                        g.insert_member(&user, rec);
                    }
                }
                Kind::Mute => {
                    if let Some(exp) = decode_or_skip::<i64>(k, v)? {
                        g.mutes.insert(user, exp);
                    }
                }
                Kind::Allow => {
                    g.allow.insert(user);
                }
                Kind::Block => {
                    // An empty value is a block written before the role was kept: the
                    // user was a member. A value that does not decode (counted and logged)
                    // keeps the block and fails closed: only the owner may lift it.
                    let was_admin = !v.is_empty()
                        && !matches!(
                            decode_or_skip::<BlockRec>(k, v)?,
                            Some(BlockRec::V1 { role }) if role != Role::Admin
                        );
                    if was_admin {
                        g.blocked_admins.insert(user.clone());
                    }
                    g.block.insert(user);
                }
                Kind::Invite => {
                    if let Some(inv) = decode_or_skip::<Invite>(k, v)? {
                        g.invites.insert(user, inv);
                    }
                }
                Kind::Request => {
                    if let Some(r) = decode_or_skip::<JoinRequest>(k, v)? {
                        g.requests.insert(user, r);
                    }
                }
                Kind::File => {
                    if let Some(fid) = keys::trailing_u64(k) {
                        if let Some(f) = decode_or_skip::<FileRec>(k, v)? {
                            g.files.insert(fid, f);
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(Some(g))
    }

    /// Adds to `ws` the writes that persist the `dirty` records of `g` as they are now.
    fn group_writes(&self, g: &Group, dirty: &[Dirty], ws: &mut WriteSet) {
        let gid = g.id;
        let mut dirty = dirty.to_vec();
        dirty.sort();
        dirty.dedup();
        for d in &dirty {
            match d {
                Dirty::Meta => {
                    ws.put_record(keys::group_key(gid, Kind::Meta, ""), &g.meta);
                    if g.meta.public {
                        ws.put_record(keys::public_key(gid), &g.meta.name);
                    } else {
                        ws.delete(keys::public_key(gid));
                    }
                }
                Dirty::Member(u) => {
                    let key = keys::group_key(gid, Kind::Member, u);
                    match g.members.get(u) {
                        Some(rec) => {
                            ws.put_record(key, rec);
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
                        Some(exp) => ws.put_record(key, exp),
                        None => ws.delete(key),
                    }
                }
                Dirty::Allow(u) => set_flag(
                    ws,
                    keys::group_key(gid, Kind::Allow, u),
                    g.allow.contains(u),
                ),
                Dirty::Block(u) => {
                    let key = keys::group_key(gid, Kind::Block, u);
                    if g.block.contains(u) {
                        let role = if g.blocked_admins.contains(u) {
                            Role::Admin
                        } else {
                            Role::Member
                        };
                        ws.put_record(key, &BlockRec::V1 { role });
                    } else {
                        ws.delete(key);
                    }
                }
                Dirty::Invite(u) => {
                    let key = keys::group_key(gid, Kind::Invite, u);
                    match g.invites.get(u) {
                        Some(inv) => ws.put_record(key, inv),
                        None => ws.delete(key),
                    }
                }
                Dirty::Request(u) => {
                    let key = keys::group_key(gid, Kind::Request, u);
                    match g.requests.get(u) {
                        Some(r) => ws.put_record(key, r),
                        None => ws.delete(key),
                    }
                }
                Dirty::File(fid) => {
                    let key = keys::file_key(gid, *fid);
                    match g.files.get(fid) {
                        Some(f) => ws.put_record(key, f),
                        None => ws.delete(key),
                    }
                }
            }
        }
        if dirty.iter().any(|d| matches!(d, Dirty::Mute(_))) {
            match g.next_expiry() {
                Some(at) => ws.put_record(keys::timed_key(gid), &at),
                None => ws.delete(keys::timed_key(gid)),
            }
        }
    }

    /// Adds to `ws` the deletion of every record of `g`.
    fn destroy_writes(&self, g: &Group, ws: &mut WriteSet) -> Result<()> {
        self.delete_prefix(&keys::group_prefix(g.id), ws)?;
        for u in g.members.keys() {
            ws.delete(keys::joined_key(u, g.id));
        }
        ws.delete(keys::public_key(g.id));
        ws.delete(keys::timed_key(g.id));
        Ok(())
    }
}

fn set_flag(ws: &mut WriteSet, key: Vec<u8>, on: bool) {
    if on {
        ws.put(key, Vec::new());
    } else {
        ws.delete(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn meta() -> GroupMeta {
        GroupMeta {
            name: "g".into(),
            description: String::new(),
            owner: "owner".into(),
            created: 1,
            maxusers: 200,
            public: false,
            membersonly: false,
            allowinvites: false,
            invite_need_confirm: true,
            mute_all: false,
            ext: String::new(),
            announcement: String::new(),
            member_count: 0,
        }
    }

    /// A block keeps the role its user had; a block record written by the previous
    /// version (an empty value) still loads, as the block of a member; one that does not
    /// decode keeps the block and only the owner may lift it.
    #[tokio::test]
    async fn block_records_keep_the_role_and_old_records_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut g = Group::new(7, meta());
        g.block.insert("adm".into());
        g.blocked_admins.insert("adm".into());
        g.block.insert("mem".into());
        let mut ws = WriteSet::default();
        let dirty = [
            Dirty::Meta,
            Dirty::Block("adm".into()),
            Dirty::Block("mem".into()),
        ];
        store.group_writes(&g, &dirty, &mut ws);
        // The previous version's flag, and a value that does not decode.
        ws.put(keys::group_key(7, Kind::Block, "old"), Vec::new());
        ws.put(keys::group_key(7, Kind::Block, "bad"), vec![0xff; 3]);
        store.commit(ws).await.unwrap();
        let loaded = store.load_group(7).unwrap().unwrap();
        let all = ["adm", "bad", "mem", "old"].map(String::from);
        assert_eq!(loaded.block, BTreeSet::from(all));
        assert_eq!(
            loaded.blocked_admins,
            BTreeSet::from(["adm", "bad"].map(String::from))
        );
    }
}
