//! A group's state: the records persisted in the store and the in-memory shape the group
//! actor keeps them in.
//!
//! Every record is stored under its own key (see `store::keys`), so a mutation rewrites only
//! what it touched: one member, one mute, the group's meta. A 100,000-member group never has
//! its whole roster rewritten.

use bincode::{Decode, Encode};
use convoke_protocol::{GroupInfo, Role};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A group's own fields (one record per group).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct GroupMeta {
    pub name: String,
    pub description: String,
    pub owner: String,
    /// Creation time, ms since the Unix epoch.
    pub created: i64,
    pub maxusers: u32,
    pub public: bool,
    /// Joining a public group needs approval.
    pub membersonly: bool,
    pub allowinvites: bool,
    pub invite_need_confirm: bool,
    /// Mute-all is on.
    pub mute_all: bool,
    pub ext: String,
    pub announcement: String,
    /// Members including the owner; kept here so listings need not count the roster.
    pub member_count: u32,
}

/// One member of the roster.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MemberRec {
    pub role: Role,
    /// Join time, ms since the Unix epoch.
    pub joined_at: i64,
    pub attributes: BTreeMap<String, String>,
    /// The member blocked this group's messages (blockGroupMessages).
    pub shield: bool,
}

impl MemberRec {
    /// A fresh member with `role`, joined at `now`.
    pub fn new(role: Role, now: i64) -> Self {
        Self {
            role,
            joined_at: now,
            attributes: BTreeMap::new(),
            shield: false,
        }
    }
}

/// A pending invitation (inviteNeedConfirm on).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Invite {
    pub inviter: String,
    pub at: i64,
}

/// The value of a block record: the role the user had when blocked. Versioned by the
/// enum tag so later fields can be added as a new variant. A block record with an empty
/// value (written before the role was kept) means "was a member".
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum BlockRec {
    V1 { role: Role },
}

/// A pending join request (approval on).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct JoinRequest {
    pub message: String,
    pub at: i64,
}

/// A mute's expiry: ms since the Unix epoch, or [`FOREVER`].
pub type Expiry = i64;

/// The expiry of a permanent mute.
pub const FOREVER: Expiry = -1;

/// The whole state of one group, as its actor holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: u64,
    /// `id` as the decimal string clients use.
    pub id_str: String,
    pub meta: GroupMeta,
    pub members: HashMap<String, MemberRec>,
    /// Roster order for paging: (join time, user id). Includes the owner.
    pub order: BTreeSet<(i64, String)>,
    pub admins: BTreeSet<String>,
    /// Mutes, including those of users who left (a mute survives leave and rejoin).
    pub mutes: BTreeMap<String, Expiry>,
    pub allow: BTreeSet<String>,
    pub block: BTreeSet<String>,
    /// The blocked users who were admins when they were blocked (a subset of `block`):
    /// only the owner or an app admin may lift their block, as only they may block admins.
    pub blocked_admins: BTreeSet<String>,
    pub invites: BTreeMap<String, Invite>,
    pub requests: BTreeMap<String, JoinRequest>,
    /// Shared files by id (ids grow with each upload).
    pub files: BTreeMap<u64, crate::files::FileRec>,
    /// Uploads admitted and not yet recorded or released, by file id. Each holds a place
    /// under the file quota, so two uploads cannot both be admitted for the last place.
    /// Not persisted: an upload in progress does not survive a restart either.
    pub uploading: BTreeSet<u64>,
}

impl Group {
    /// An empty group with `meta` (no members yet; `member_count` is recomputed).
    pub fn new(id: u64, meta: GroupMeta) -> Self {
        Self {
            id,
            id_str: id.to_string(),
            meta,
            members: HashMap::new(),
            order: BTreeSet::new(),
            admins: BTreeSet::new(),
            mutes: BTreeMap::new(),
            allow: BTreeSet::new(),
            block: BTreeSet::new(),
            blocked_admins: BTreeSet::new(),
            invites: BTreeMap::new(),
            requests: BTreeMap::new(),
            files: BTreeMap::new(),
            uploading: BTreeSet::new(),
        }
    }

    /// Adds (or replaces) a member, keeping the indexes in step.
    pub fn insert_member(&mut self, user: &str, rec: MemberRec) {
        if let Some(old) = self.members.get(user) {
            self.order.remove(&(old.joined_at, user.to_string()));
        }
        self.order.insert((rec.joined_at, user.to_string()));
        if rec.role == Role::Admin {
            self.admins.insert(user.to_string());
        } else {
            self.admins.remove(user);
        }
        self.members.insert(user.to_string(), rec);
        self.meta.member_count = self.members.len() as u32;
    }

    /// Removes a member; also drops their allowlist entry. Their mute stays.
    pub fn remove_member(&mut self, user: &str) -> Option<MemberRec> {
        let rec = self.members.remove(user)?;
        self.order.remove(&(rec.joined_at, user.to_string()));
        self.admins.remove(user);
        self.allow.remove(user);
        self.meta.member_count = self.members.len() as u32;
        Some(rec)
    }

    /// Changes a member's role.
    pub fn set_role(&mut self, user: &str, role: Role) {
        if let Some(rec) = self.members.get_mut(user) {
            rec.role = role;
            if role == Role::Admin {
                self.admins.insert(user.to_string());
            } else {
                self.admins.remove(user);
            }
        }
    }

    /// The user's role, if a member.
    pub fn role(&self, user: &str) -> Option<Role> {
        self.members.get(user).map(|m| m.role)
    }

    /// Whether the user is muted at `now` (an expired mute does not count).
    pub fn is_muted(&self, user: &str, now: i64) -> bool {
        self.mutes
            .get(user)
            .is_some_and(|&exp| exp == FOREVER || exp > now)
    }

    /// The earliest timed mute expiry, if any.
    pub fn next_expiry(&self) -> Option<i64> {
        self.mutes.values().copied().filter(|&e| e != FOREVER).min()
    }

    /// Every member's user id (owner included).
    pub fn member_ids(&self) -> impl Iterator<Item = &String> + '_ {
        self.members.keys()
    }

    /// Owner and admins.
    pub fn owner_and_admins(&self) -> Vec<String> {
        let mut v = Vec::with_capacity(self.admins.len() + 1);
        v.push(self.meta.owner.clone());
        v.extend(self.admins.iter().cloned());
        v
    }

    /// getGroupInfo for `caller`.
    pub fn info_for(&self, caller: &str) -> GroupInfo {
        let me = self.members.get(caller);
        info_from_meta(&self.id_str, &self.meta, me)
    }
}

/// getGroupInfo from a meta record and the caller's member record.
pub fn info_from_meta(id: &str, meta: &GroupMeta, me: Option<&MemberRec>) -> GroupInfo {
    GroupInfo {
        id: id.to_string(),
        name: meta.name.clone(),
        description: meta.description.clone(),
        owner: meta.owner.clone(),
        created: meta.created,
        affiliations_count: meta.member_count,
        maxusers: meta.maxusers,
        public: meta.public,
        membersonly: meta.membersonly,
        allowinvites: meta.allowinvites,
        invite_need_confirm: meta.invite_need_confirm,
        mute: meta.mute_all,
        custom: meta.ext.clone(),
        shieldgroup: me.is_some_and(|m| m.shield),
        role: me.map(|m| m.role),
    }
}
