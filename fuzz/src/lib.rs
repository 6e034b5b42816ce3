//! Shared by the fuzz targets: a small cast of users, the read-only world the group rules
//! ask about, a populated group to aim requests at, and the invariants every state of a group
//! must satisfy.
//!
//! The invariants are the contract's (spec/group-api.md) and the rules' own promises
//! (`broker/src/group/rules/mod.rs`): a failed request changes nothing; the owner is a
//! member with the owner role and nobody else has it; `admins` is exactly the members with
//! the admin role; nobody is both blocked and a member; counts match the roster; and every
//! record a request changed is in its `dirty` list (else the driver would not persist it, and
//! a restart would lose an acknowledged change).

use convoke_broker::files::{FileLimits, FileRec};
use convoke_broker::group::model::Group;
use convoke_broker::group::rules::facts::{Facts, UserFacts};
use convoke_broker::group::rules::{self, Caller, Ctx, Dirty, Effects, Limits};
use convoke_protocol::{ids, ApiError, CreateGroupData, Request, Role};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Debug;

/// Start of every scripted clock (ms since the Unix epoch).
pub const T0: i64 = 1_700_000_000_000;

/// The rules' read-only view of the world: who has logged in, who is at their group quota.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub known: HashSet<String>,
    pub at_quota: HashSet<String>,
}

impl World {
    /// The outside facts the ingress would gather for the cast: every known or at-quota
    /// user (the cast is small, so all of them, whatever the request names).
    pub fn facts(&self) -> Facts {
        let mut facts = Facts::default();
        for u in self.known.iter().chain(&self.at_quota) {
            facts.insert(
                u,
                UserFacts {
                    exists: self.known.contains(u),
                    joined: if self.at_quota.contains(u) { u64::MAX / 2 } else { 0 },
                },
            );
        }
        facts
    }
}

/// A caller in the usual shape.
pub fn caller(user: &str, app_admin: bool) -> Caller {
    Caller {
        user: user.to_string(),
        app_admin,
        session_id: 7,
    }
}

/// Limits small enough for a fuzzer to reach: three admins, three files.
pub fn small_limits() -> Limits {
    Limits {
        server_max_users: 50,
        max_admins: 3,
        max_groups_per_user: 10,
        ..Limits::default()
    }
}

/// File limits small enough to reach.
pub fn small_file_limits() -> FileLimits {
    FileLimits {
        max_file_bytes: 100,
        max_files_per_group: 3,
    }
}

/// A file record uploaded by `owner`.
pub fn file_rec(owner: &str, size: u64, now: i64) -> FileRec {
    FileRec {
        name: "f.txt".to_string(),
        owner: owner.to_string(),
        size,
        created: now,
        content_type: "text/plain".to_string(),
        sha256: "00".repeat(32),
        secret: "ab".repeat(16),
    }
}

/// Builds a group as `owner` with `members`, then applies `setup` (each as owner, must
/// succeed), checking the invariants after each step.
pub fn build_group(
    data: CreateGroupData,
    owner: &str,
    setup: &[Request],
    world: &World,
    limits: &Limits,
) -> Group {
    let facts = world.facts();
    let ctx = Ctx {
        now: T0,
        limits,
        facts: &facts,
    };
    let (mut g, fx) = rules::create(1234, &caller(owner, false), &data, &ctx)
        .unwrap_or_else(|e| panic!("fixture createGroup failed: {e:?}"));
    check_roster(&g, limits);
    check_dirty(&Group::new(1234, g.meta.clone()), &g, &fx);
    for r in setup {
        let before = g.clone();
        let fx = rules::apply(&mut g, &caller(owner, false), r, &ctx)
            .unwrap_or_else(|e| panic!("fixture step {r:?} failed: {e:?}"));
        check_roster(&g, limits);
        check_dirty(&before, &g, &fx);
    }
    g
}

/// Applies `req` from `who` to `g` and checks everything a single step must keep:
/// on error nothing changed; on success the roster invariants hold and every changed record
/// is dirty. Returns whether the group was destroyed.
pub fn step(g: &mut Group, who: &Caller, req: &Request, ctx: &Ctx<'_>) -> bool {
    let before = g.clone();
    let result = rules::apply(g, who, req, ctx);
    after_step(&before, g, result.as_ref(), ctx.limits, &(who, req))
}

/// The checks of [`step`] for any rule's result.
pub fn after_step(
    before: &Group,
    after: &Group,
    result: Result<&Effects, &ApiError>,
    limits: &Limits,
    what: &dyn Debug,
) -> bool {
    match result {
        Err(e) => {
            assert!(
                before == after,
                "a failed request changed the group: {what:?} -> {e:?}\nbefore {before:#?}\nafter {after:#?}"
            );
            check_error(e, what);
            false
        }
        Ok(fx) => {
            check_roster(after, limits);
            check_dirty(before, after, fx);
            fx.destroyed
        }
    }
}

/// Every error names what went wrong; a permission or roster error is never an internal one.
pub fn check_error(e: &ApiError, what: &dyn Debug) {
    assert!(!e.message.is_empty(), "error without a message: {what:?}");
    assert!(
        e.code != convoke_protocol::ErrorCode::Internal
            || e.message.contains("not implemented")
            || e.message.contains("not served"),
        "internal error from the rules: {what:?} -> {e:?}"
    );
}

/// The roster and moderation invariants of one group state.
pub fn check_roster(g: &Group, limits: &Limits) {
    let owner = &g.meta.owner;
    assert_eq!(
        g.role(owner),
        Some(Role::Owner),
        "owner {owner:?} is not a member with the owner role: {g:#?}"
    );
    let owners = g.members.values().filter(|m| m.role == Role::Owner).count();
    assert_eq!(owners, 1, "{owners} members have the owner role: {g:#?}");
    let admins: BTreeSet<String> = g
        .members
        .iter()
        .filter(|(_, m)| m.role == Role::Admin)
        .map(|(u, _)| u.clone())
        .collect();
    assert_eq!(admins, g.admins, "admin index out of step with roles");
    assert!(
        g.admins.len() <= limits.max_admins,
        "{} admins, limit {}",
        g.admins.len(),
        limits.max_admins
    );
    assert_eq!(
        g.meta.member_count as usize,
        g.members.len(),
        "member_count out of step"
    );
    assert!(
        g.members.len() <= g.meta.maxusers as usize,
        "{} members above maxusers {}",
        g.members.len(),
        g.meta.maxusers
    );
    let order: BTreeSet<(i64, String)> = g
        .members
        .iter()
        .map(|(u, m)| (m.joined_at, u.clone()))
        .collect();
    assert_eq!(order, g.order, "roster order index out of step");
    for u in &g.block {
        assert!(
            !g.members.contains_key(u),
            "{u:?} is both blocked and a member"
        );
    }
    for u in &g.allow {
        assert!(
            g.members.contains_key(u),
            "{u:?} is allowlisted but not a member"
        );
    }
    for u in g.invites.keys().chain(g.requests.keys()) {
        assert!(
            !g.members.contains_key(u),
            "{u:?} is a member with a pending invite or request"
        );
        assert!(
            !g.block.contains(u),
            "{u:?} is blocked with a pending invite or request"
        );
    }
    assert!(
        !g.mutes.contains_key(owner),
        "the owner {owner:?} is muted: {:?}",
        g.mutes
    );
    for (u, m) in &g.members {
        assert!(
            !(m.shield && m.role != Role::Member),
            "{u:?} ({:?}) blocked the group's messages",
            m.role
        );
        let total: usize = m.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            total <= convoke_protocol::limits::MAX_ATTRIBUTES_BYTES_PER_MEMBER,
            "attributes of {u:?} total {total} bytes"
        );
        for (k, v) in &m.attributes {
            assert!(
                ids::is_valid_attribute_key(k) && !v.is_empty(),
                "attribute {k:?}={v:?} of {u:?}"
            );
        }
    }
    for u in g.members.keys().chain(&g.block).chain(g.invites.keys()) {
        assert!(ids::check_user_id("user", u).is_ok(), "stored bad id {u:?}");
    }
}

/// Every record that differs between `before` and `after` is in `fx.dirty`.
pub fn check_dirty(before: &Group, after: &Group, fx: &Effects) {
    if fx.destroyed {
        return;
    }
    let dirty: BTreeSet<&Dirty> = fx.dirty.iter().collect();
    let need = |d: Dirty| {
        assert!(
            dirty.contains(&d),
            "{d:?} changed but is not dirty (a restart would lose it); dirty = {:?}\nbefore {before:#?}\nafter {after:#?}",
            fx.dirty
        );
    };
    if before.meta != after.meta {
        need(Dirty::Meta);
    }
    for u in changed_keys(
        &before.members.iter().collect(),
        &after.members.iter().collect(),
    ) {
        need(Dirty::Member(u.clone()));
    }
    for u in changed_keys(
        &before.mutes.iter().collect(),
        &after.mutes.iter().collect(),
    ) {
        need(Dirty::Mute(u.clone()));
    }
    for u in before.allow.symmetric_difference(&after.allow) {
        need(Dirty::Allow(u.clone()));
    }
    for u in before.block.symmetric_difference(&after.block) {
        need(Dirty::Block(u.clone()));
    }
    for u in changed_keys(
        &before.invites.iter().collect(),
        &after.invites.iter().collect(),
    ) {
        need(Dirty::Invite(u.clone()));
    }
    for u in changed_keys(
        &before.requests.iter().collect(),
        &after.requests.iter().collect(),
    ) {
        need(Dirty::Request(u.clone()));
    }
    for id in changed_keys(
        &before.files.iter().collect(),
        &after.files.iter().collect(),
    ) {
        need(Dirty::File(*id));
    }
}

fn changed_keys<'a, K: Ord, V: PartialEq>(
    a: &BTreeMap<&'a K, &'a V>,
    b: &BTreeMap<&'a K, &'a V>,
) -> Vec<&'a K> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
