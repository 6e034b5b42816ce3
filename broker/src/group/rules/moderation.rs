//! Moderation and group data: info, mutes, mute-all, the allowlist, the announcement,
//! member attributes and message shielding.

use super::{
    all_members, announce, check_chars, check_user_list, event, need_admin, need_member, Caller,
    Ctx, Dirty, Effects, Level, Outcome,
};
use crate::group::model::{Group, FOREVER};
use convoke_protocol::{
    error::shown,
    ids::{check_user_id, is_valid_attribute_key},
    limits, ApiError, ErrorCode, EventDetail, GroupEventOp as Op, MuteEntry, Push, Response, Role,
};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn modify(
    g: &mut Group,
    caller: &Caller,
    name: &Option<String>,
    description: &Option<String>,
    ext: &Option<String>,
    ctx: &Ctx<'_>,
) -> Outcome {
    if name.is_none() && description.is_none() && ext.is_none() {
        return Err(ApiError::param(
            "modifyGroup needs at least one of groupName, description, ext",
        ));
    }
    if let Some(n) = name {
        check_chars("groupName", n, 1, limits::MAX_GROUP_NAME_CHARS)?;
    }
    if let Some(d) = description {
        check_chars("description", d, 0, limits::MAX_DESCRIPTION_CHARS)?;
    }
    if let Some(e) = ext {
        if e.len() > limits::MAX_EXT_BYTES {
            return Err(ApiError::param(format!(
                "ext is {} bytes; at most {}",
                e.len(),
                limits::MAX_EXT_BYTES
            )));
        }
    }
    need_admin(g, caller)?;
    if let Some(n) = name {
        g.meta.name.clone_from(n);
    }
    if let Some(d) = description {
        g.meta.description.clone_from(d);
    }
    if let Some(e) = ext {
        g.meta.ext.clone_from(e);
    }
    let mut fx = Effects::done();
    fx.touch(Dirty::Meta);
    let detail = EventDetail::Updated {
        group_name: name.clone(),
        description: description.clone(),
        ext: ext.clone(),
    };
    let ev = event(g, Op::UpdateInfo, &caller.user, vec![], detail, ctx.now);
    fx.announce.push(announce(ev, all_members(g), false));
    Ok(fx)
}

/// Checks that the caller (at `lvl`) may moderate each of `users`: members, not the owner,
/// and admins only by the owner or an app admin.
fn check_targets(g: &Group, lvl: Level, users: &[String], verb: &str) -> Result<(), ApiError> {
    for u in users {
        match g.role(u) {
            None => return Err(ApiError::not_member(u, &g.id_str)),
            Some(Role::Owner) => {
                return Err(ApiError::denied(format!(
                    "{u:?} is the owner of group {:?} and cannot be {verb}",
                    g.id_str
                )))
            }
            Some(Role::Admin) if lvl < Level::Owner => {
                return Err(ApiError::denied(format!(
                    "{u:?} is an admin of group {:?}; only the owner may do that",
                    g.id_str
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub(super) fn mute(
    g: &mut Group,
    caller: &Caller,
    users: &[String],
    duration: i64,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_user_list("username", users, limits::MAX_BATCH_USERS)?;
    if duration != FOREVER && duration <= 0 {
        return Err(ApiError::param(format!(
            "muteDuration {duration} must be -1 (forever) or a positive number of milliseconds"
        )));
    }
    let lvl = need_admin(g, caller)?;
    check_targets(g, lvl, users, "muted")?;
    let expire = if duration == FOREVER {
        FOREVER
    } else {
        ctx.now.saturating_add(duration)
    };
    let mut fx = Effects::read(Response::Mutes {
        mutes: users
            .iter()
            .map(|u| MuteEntry {
                user: u.clone(),
                expire,
            })
            .collect(),
    });
    for u in users {
        g.mutes.insert(u.clone(), expire);
        fx.touch(Dirty::Mute(u.clone()));
    }
    let ev = event(
        g,
        Op::MuteMember,
        &caller.user,
        users.to_vec(),
        EventDetail::Mute { expire },
        ctx.now,
    );
    fx.announce.push(announce(ev, all_members(g), false));
    Ok(fx)
}

pub(super) fn unmute(g: &mut Group, caller: &Caller, users: &[String], ctx: &Ctx<'_>) -> Outcome {
    check_user_list("username", users, limits::MAX_BATCH_USERS)?;
    let lvl = need_admin(g, caller)?;
    // Admins may not mute admins, so they may not lift an admin's mute either (found by
    // the rules_sequence fuzz target; tests/tests/authorization.rs).
    if let Some(u) = users.iter().find(|u| g.role(u) == Some(Role::Admin)) {
        if lvl < Level::Owner {
            return Err(ApiError::denied(format!(
                "{u:?} is an admin of group {:?}; only the owner may lift an admin's mute",
                g.id_str
            )));
        }
    }
    if let Some(u) = users.iter().find(|u| !g.is_muted(u, ctx.now)) {
        return Err(ApiError::param(format!(
            "username {u:?} is not muted in group {:?}",
            g.id_str
        )));
    }
    let mut fx = Effects::done();
    end_mutes(g, &mut fx, &caller.user, users.to_vec(), ctx.now);
    Ok(fx)
}

/// Ends the mutes of `users` as part of `fx`, announcing unmuteMember from `from` (empty
/// when the broker itself ends them) to all members.
pub(super) fn end_mutes(g: &mut Group, fx: &mut Effects, from: &str, users: Vec<String>, now: i64) {
    for u in &users {
        g.mutes.remove(u);
        fx.touch(Dirty::Mute(u.clone()));
    }
    let ev = event(g, Op::UnmuteMember, from, users, EventDetail::None, now);
    fx.announce.push(announce(ev, all_members(g), false));
}

/// Ends every mute that has expired at `now`; `None` if none has.
pub fn expire_mutes(g: &mut Group, now: i64) -> Option<Effects> {
    let expired: Vec<String> = g
        .mutes
        .iter()
        .filter(|(_, &e)| e != FOREVER && e <= now)
        .map(|(u, _)| u.clone())
        .collect();
    if expired.is_empty() {
        return None;
    }
    let mut fx = Effects::done();
    // The broker itself ends the mute: `from` is empty.
    end_mutes(g, &mut fx, "", expired, now);
    Some(fx)
}

pub(super) fn mute_all(g: &mut Group, caller: &Caller, on: bool, ctx: &Ctx<'_>) -> Outcome {
    need_admin(g, caller)?;
    g.meta.mute_all = on;
    let mut fx = Effects::done();
    fx.touch(Dirty::Meta);
    let op = if on {
        Op::MuteAllMembers
    } else {
        Op::UnmuteAllMembers
    };
    let ev = event(g, op, &caller.user, vec![], EventDetail::None, ctx.now);
    fx.announce.push(announce(ev, all_members(g), false));
    Ok(fx)
}

pub(super) fn allow_add(
    g: &mut Group,
    caller: &Caller,
    users: &[String],
    ctx: &Ctx<'_>,
) -> Outcome {
    check_user_list("users", users, limits::MAX_BATCH_USERS)?;
    need_admin(g, caller)?;
    if let Some(u) = users.iter().find(|u| !g.members.contains_key(*u)) {
        return Err(ApiError::not_member(u, &g.id_str));
    }
    let mut fx = Effects::done();
    for u in users {
        g.allow.insert(u.clone());
        fx.touch(Dirty::Allow(u.clone()));
    }
    for u in users {
        let ev = event(
            g,
            Op::AddUserToAllowlist,
            &caller.user,
            vec![u.clone()],
            EventDetail::None,
            ctx.now,
        );
        let mut to = g.owner_and_admins();
        to.push(u.clone());
        fx.announce.push(announce(ev, to, false));
    }
    Ok(fx)
}

pub(super) fn allow_remove(g: &mut Group, caller: &Caller, user: &str, ctx: &Ctx<'_>) -> Outcome {
    check_user_id("userName", user)?;
    need_admin(g, caller)?;
    if !g.allow.contains(user) {
        return Err(ApiError::param(format!(
            "userName {user:?} is not on the allowlist of group {:?}",
            g.id_str
        )));
    }
    g.allow.remove(user);
    let mut fx = Effects::done();
    fx.touch(Dirty::Allow(user.to_string()));
    let ev = event(
        g,
        Op::RemoveAllowlistMember,
        &caller.user,
        vec![user.to_string()],
        EventDetail::None,
        ctx.now,
    );
    let mut to = g.owner_and_admins();
    to.push(user.to_string());
    fx.announce.push(announce(ev, to, false));
    Ok(fx)
}

pub(super) fn is_allowed(g: &Group, caller: &Caller, user: &str) -> Outcome {
    check_user_id("userName", user)?;
    if !caller.app_admin && user != caller.user {
        return Err(ApiError::denied(format!(
            "only an app admin may check another user; {:?} asked about {user:?}",
            caller.user
        )));
    }
    Ok(Effects::read(Response::Bool {
        value: g.allow.contains(user),
    }))
}

pub(super) fn announce_update(
    g: &mut Group,
    caller: &Caller,
    text: &str,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_chars("announcement", text, 0, limits::MAX_ANNOUNCEMENT_CHARS)?;
    need_admin(g, caller)?;
    g.meta.announcement = text.to_string();
    let mut fx = Effects::done();
    fx.touch(Dirty::Meta);
    let (op, detail) = if text.is_empty() {
        (Op::DeleteAnnouncement, EventDetail::None)
    } else {
        (
            Op::UpdateAnnouncement,
            EventDetail::Announcement {
                announcement: text.to_string(),
            },
        )
    };
    let ev = event(g, op, &caller.user, vec![], detail, ctx.now);
    fx.announce.push(announce(ev, all_members(g), false));
    Ok(fx)
}

fn attr_error(msg: String) -> ApiError {
    ApiError::new(ErrorCode::GroupMemberAttributesSetFailed, msg)
}

pub(super) fn set_attributes(
    g: &mut Group,
    caller: &Caller,
    user: &str,
    attrs: &BTreeMap<String, String>,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_user_id("userId", user)?;
    if attrs.is_empty() {
        return Err(ApiError::param(
            "memberAttributes must set at least one key",
        ));
    }
    if attrs.len() > limits::MAX_ATTRIBUTE_KEYS {
        return Err(attr_error(format!(
            "memberAttributes sets {} keys; at most {} per call",
            attrs.len(),
            limits::MAX_ATTRIBUTE_KEYS
        )));
    }
    for (k, v) in attrs {
        if !is_valid_attribute_key(k) {
            return Err(attr_error(format!(
                "attribute key {} must be 1 to 16 bytes of A-Z a-z 0-9 _",
                shown(k)
            )));
        }
        if v.len() > limits::MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(attr_error(format!(
                "attribute {k:?} value is {} bytes; at most {}",
                v.len(),
                limits::MAX_ATTRIBUTE_VALUE_BYTES
            )));
        }
    }
    let lvl = need_member(g, caller)?;
    if user != caller.user && lvl < Level::Admin {
        return Err(ApiError::denied(format!(
            "{:?} may set only their own attributes, not those of {user:?}",
            caller.user
        )));
    }
    let Some(rec) = g.members.get(user) else {
        return Err(ApiError::not_member(user, &g.id_str));
    };
    let mut merged = rec.attributes.clone();
    for (k, v) in attrs {
        if v.is_empty() {
            merged.remove(k);
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    let total: usize = merged.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > limits::MAX_ATTRIBUTES_BYTES_PER_MEMBER {
        return Err(attr_error(format!(
            "attributes of {user:?} would total {total} bytes; at most {}",
            limits::MAX_ATTRIBUTES_BYTES_PER_MEMBER
        )));
    }
    if let Some(rec) = g.members.get_mut(user) {
        rec.attributes = merged;
    }
    let mut fx = Effects::done();
    fx.touch(Dirty::Member(user.to_string()));
    let detail = EventDetail::Attributes {
        user_id: user.to_string(),
        attributes: attrs.clone(),
    };
    let ev = event(
        g,
        Op::MemberAttributesUpdate,
        &caller.user,
        vec![user.to_string()],
        detail,
        ctx.now,
    );
    // Other members get onGroupEvent; the setter's other devices get onMultiDeviceEvent.
    let others: Vec<String> = g
        .member_ids()
        .filter(|u| **u != caller.user)
        .cloned()
        .collect();
    fx.announce.push(super::Announce {
        push: Push::Group(ev.clone()),
        to: others,
        keep_offline: false,
        to_origin: false,
    });
    fx.announce.push(super::Announce {
        push: Push::MultiDevice(ev),
        to: vec![caller.user.clone()],
        keep_offline: false,
        to_origin: false,
    });
    Ok(fx)
}

pub(super) fn get_attributes(
    g: &Group,
    caller: &Caller,
    users: &[String],
    keys: &[String],
    single: bool,
) -> Outcome {
    let what = if single { "userId" } else { "userIds" };
    // Sizes first: nothing is looked at per entry of an oversized list.
    if keys.len() > limits::MAX_ATTRIBUTE_KEYS {
        return Err(ApiError::param(format!(
            "keys names {} keys; at most {} per call",
            keys.len(),
            limits::MAX_ATTRIBUTE_KEYS
        )));
    }
    check_user_list(what, users, limits::MAX_ATTRIBUTE_USERS)?;
    if let Some(k) = keys.iter().find(|k| !is_valid_attribute_key(k)) {
        return Err(ApiError::param(format!(
            "keys: {} is not an attribute key (1 to 16 bytes of A-Z a-z 0-9 _)",
            shown(k)
        )));
    }
    need_member(g, caller)?;
    // A set, so each member costs one look-up per key asked for (or one pass over their
    // own attributes when all are asked for), never a scan of `keys` per attribute.
    let wanted: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    let mut out = BTreeMap::new();
    for u in users {
        let Some(rec) = g.members.get(u) else {
            return Err(ApiError::not_member(u, &g.id_str));
        };
        let attrs: BTreeMap<String, String> = if wanted.is_empty() {
            rec.attributes.clone()
        } else {
            wanted
                .iter()
                .filter_map(|k| rec.attributes.get_key_value(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        out.insert(u.clone(), attrs);
    }
    if single {
        let attributes = out.into_values().next().unwrap_or_default();
        return Ok(Effects::read(Response::Attributes { attributes }));
    }
    Ok(Effects::read(Response::MembersAttributes { members: out }))
}

pub(super) fn shield(g: &mut Group, caller: &Caller, on: bool) -> Outcome {
    let me = caller.user.as_str();
    match g.role(me) {
        None => return Err(ApiError::not_member(me, &g.id_str)),
        Some(Role::Owner | Role::Admin) if on => {
            return Err(ApiError::denied(format!(
                "{me:?} is an owner or admin of group {:?} and cannot block its messages",
                g.id_str
            )))
        }
        Some(_) => {}
    }
    if let Some(rec) = g.members.get_mut(me) {
        rec.shield = on;
    }
    let mut fx = Effects::done();
    fx.touch(Dirty::Member(me.to_string()));
    Ok(fx)
}
