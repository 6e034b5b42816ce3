//! Membership: destroy, ownership, admins, invitations, join requests, leaving, removal and
//! the blocklist.

use super::{
    all_members, announce, check_chars, check_exists, check_group_quota, check_room,
    check_user_list, event, need_admin, need_member, need_owner, tell_user, Announce, Caller, Ctx,
    Dirty, Effects, Level, Outcome,
};
use crate::group::model::{Group, Invite, JoinRequest, MemberRec};
use convoke_protocol::{
    ids::check_user_id, limits, ApiError, ErrorCode, EventDetail, GroupEventOp as Op, MemberEntry,
    Response, Role,
};

pub(super) fn destroy(g: &mut Group, caller: &Caller, ctx: &Ctx<'_>) -> Outcome {
    need_owner(g, caller)?;
    let now_members = all_members(g);
    let ev = event(
        g,
        Op::Destroy,
        &caller.user,
        vec![],
        EventDetail::None,
        ctx.now,
    );
    let mut fx = Effects::done();
    fx.destroyed = true;
    fx.announce.push(announce(ev, now_members, true));
    Ok(fx)
}

pub(super) fn change_owner(
    g: &mut Group,
    caller: &Caller,
    new_owner: &str,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_user_id("newOwner", new_owner)?;
    need_owner(g, caller)?;
    if new_owner == g.meta.owner {
        return Err(ApiError::param(format!(
            "newOwner {new_owner:?} already owns group {:?}",
            g.id_str
        )));
    }
    if g.role(new_owner).is_none() {
        check_exists(ctx, new_owner)?;
        return Err(ApiError::not_member(new_owner, &g.id_str));
    }
    let old = std::mem::replace(&mut g.meta.owner, new_owner.to_string());
    g.set_role(&old, Role::Member);
    g.set_role(new_owner, Role::Owner);
    let mut fx = Effects::done();
    fx.touch(Dirty::Meta);
    fx.touch(Dirty::Member(old.clone()));
    fx.touch(Dirty::Member(new_owner.to_string()));
    let ev = event(
        g,
        Op::ChangeOwner,
        &caller.user,
        vec![new_owner.to_string()],
        EventDetail::NewOwner {
            owner: new_owner.to_string(),
        },
        ctx.now,
    );
    fx.announce.push(announce(ev, all_members(g), true));
    // The owner can never be muted: a mute of the new owner ends now, announced like an
    // unmute by the caller.
    if g.mutes.contains_key(new_owner) {
        let users = vec![new_owner.to_string()];
        super::moderation::end_mutes(g, &mut fx, &caller.user, users, ctx.now);
    }
    clear_shield(g, new_owner);
    Ok(fx)
}

/// Owners and admins may not block their group's messages (blockGroupMessages is for
/// members only): a member who had blocked them and is promoted receives them again.
fn clear_shield(g: &mut Group, user: &str) {
    if let Some(m) = g.members.get_mut(user) {
        m.shield = false;
    }
}

pub(super) fn list_members(g: &Group, caller: &Caller, page_num: u32, page_size: u32) -> Outcome {
    if page_num < 1 {
        return Err(ApiError::param(format!(
            "pageNum {page_num} must start at 1"
        )));
    }
    if !(1..=limits::MAX_MEMBER_PAGE).contains(&page_size) {
        return Err(ApiError::param(format!(
            "pageSize {page_size} must be 1 to {}",
            limits::MAX_MEMBER_PAGE
        )));
    }
    need_member(g, caller)?;
    // The owner first, then everyone else in join order.
    let owner = g.meta.owner.as_str();
    let skip = (page_num as usize - 1).saturating_mul(page_size as usize);
    let entry = |user: &str| {
        g.members.get(user).map(|m| MemberEntry {
            user_id: user.to_string(),
            role: m.role,
            joined_at: m.joined_at,
        })
    };
    let members = std::iter::once(owner)
        .chain(
            g.order
                .iter()
                .map(|(_, u)| u.as_str())
                .filter(|u| *u != owner),
        )
        .skip(skip)
        .take(page_size as usize)
        .filter_map(entry)
        .collect();
    Ok(Effects::read(Response::Members { members }))
}

fn member_target(g: &Group, what: &str, user: &str) -> Result<Role, ApiError> {
    check_user_id(what, user)?;
    g.role(user)
        .ok_or_else(|| ApiError::not_member(user, &g.id_str))
}

pub(super) fn set_admin(g: &mut Group, caller: &Caller, user: &str, ctx: &Ctx<'_>) -> Outcome {
    check_user_id("username", user)?;
    need_owner(g, caller)?;
    if g.role(user).is_none() {
        check_exists(ctx, user)?;
    }
    match member_target(g, "username", user)? {
        Role::Owner => {
            return Err(ApiError::denied(format!(
                "{user:?} is the owner of group {:?} and cannot be made an admin",
                g.id_str
            )))
        }
        Role::Admin => {
            return Err(ApiError::param(format!(
                "username {user:?} is already an admin of group {:?}",
                g.id_str
            )))
        }
        Role::Member => {}
    }
    if g.admins.len() >= ctx.limits.max_admins {
        return Err(ApiError::new(
            ErrorCode::MaxLimit,
            format!(
                "group {:?} already has {} admins, the limit",
                g.id_str,
                g.admins.len()
            ),
        ));
    }
    g.set_role(user, Role::Admin);
    clear_shield(g, user);
    let mut fx = Effects::done();
    fx.touch(Dirty::Member(user.to_string()));
    let ev = event(
        g,
        Op::SetAdmin,
        &caller.user,
        vec![user.to_string()],
        EventDetail::None,
        ctx.now,
    );
    fx.announce.push(announce(ev, g.owner_and_admins(), false));
    Ok(fx)
}

pub(super) fn remove_admin(g: &mut Group, caller: &Caller, user: &str, ctx: &Ctx<'_>) -> Outcome {
    check_user_id("username", user)?;
    need_owner(g, caller)?;
    if g.role(user).is_none() {
        check_exists(ctx, user)?;
    }
    if member_target(g, "username", user)? != Role::Admin {
        return Err(ApiError::param(format!(
            "username {user:?} is not an admin of group {:?}",
            g.id_str
        )));
    }
    let mut to = g.owner_and_admins();
    g.set_role(user, Role::Member);
    let mut fx = Effects::done();
    fx.touch(Dirty::Member(user.to_string()));
    to.push(user.to_string());
    let ev = event(
        g,
        Op::RemoveAdmin,
        &caller.user,
        vec![user.to_string()],
        EventDetail::None,
        ctx.now,
    );
    fx.announce.push(announce(ev, to, false));
    Ok(fx)
}

/// Adds `users` as members now; returns the memberPresence announcement.
fn admit(g: &mut Group, fx: &mut Effects, users: &[String], operator: &str, now: i64) -> Announce {
    for u in users {
        g.invites.remove(u);
        g.requests.remove(u);
        g.insert_member(u, MemberRec::new(Role::Member, now));
        fx.touch(Dirty::Member(u.clone()));
        fx.touch(Dirty::Invite(u.clone()));
        fx.touch(Dirty::Request(u.clone()));
    }
    fx.touch(Dirty::Meta);
    let ev = event(
        g,
        Op::MemberPresence,
        operator,
        users.to_vec(),
        EventDetail::None,
        now,
    );
    announce(ev, all_members(g), false)
}

/// Checks that `user` may become a member now (exists, not blocked, not a member).
fn check_joinable(g: &Group, user: &str, ctx: &Ctx<'_>) -> Result<(), ApiError> {
    if g.members.contains_key(user) {
        return Err(ApiError::new(
            ErrorCode::GroupAlreadyJoined,
            format!("user {user:?} is already a member of group {:?}", g.id_str),
        ));
    }
    if g.block.contains(user) {
        return Err(ApiError::denied(format!(
            "user {user:?} is on the blocklist of group {:?}",
            g.id_str
        )));
    }
    check_exists(ctx, user)
}

pub(super) fn invite(g: &mut Group, caller: &Caller, users: &[String], ctx: &Ctx<'_>) -> Outcome {
    check_user_list("users", users, limits::MAX_BATCH_USERS)?;
    let lvl = need_member(g, caller)?;
    let members_may = !g.meta.public && g.meta.allowinvites;
    if lvl < Level::Admin && !members_may {
        let why = if g.meta.public {
            "the group is public"
        } else {
            "allowinvites is off"
        };
        return Err(ApiError::denied(format!(
            "members of group {:?} may not invite (only the owner and admins: {why})",
            g.id_str
        )));
    }
    for u in users {
        check_joinable(g, u, ctx)?;
        if g.invites.contains_key(u) {
            return Err(ApiError::new(
                ErrorCode::GroupAlreadyJoined,
                format!(
                    "user {u:?} already has a pending invite to group {:?}",
                    g.id_str
                ),
            ));
        }
    }
    let mut fx = Effects::done();
    if g.meta.invite_need_confirm {
        for u in users {
            g.invites.insert(
                u.clone(),
                Invite {
                    inviter: caller.user.clone(),
                    at: ctx.now,
                },
            );
            fx.touch(Dirty::Invite(u.clone()));
            tell_user(
                &mut fx,
                g,
                Op::InviteToJoin,
                &caller.user,
                u,
                EventDetail::None,
                ctx.now,
            );
        }
        fx.response = Response::Invited {
            pending: users.to_vec(),
            joined: vec![],
        };
    } else {
        check_room(g, users.len())?;
        for u in users {
            check_group_quota(ctx, u)?;
        }
        let presence = admit(g, &mut fx, users, &caller.user, ctx.now);
        for u in users {
            tell_user(
                &mut fx,
                g,
                Op::DirectJoined,
                &caller.user,
                u,
                EventDetail::None,
                ctx.now,
            );
        }
        fx.announce.push(presence);
        fx.response = Response::Invited {
            pending: vec![],
            joined: users.to_vec(),
        };
    }
    Ok(fx)
}

fn check_self(caller: &Caller, what: &str, user: &str) -> Result<(), ApiError> {
    check_user_id(what, user)?;
    if user != caller.user {
        return Err(ApiError::denied(format!(
            "{what} {user:?} is not you ({:?}); only the invitee may answer an invite",
            caller.user
        )));
    }
    Ok(())
}

fn pending_invite(g: &Group, user: &str) -> Result<Invite, ApiError> {
    g.invites.get(user).cloned().ok_or_else(|| {
        ApiError::denied(format!(
            "user {user:?} has no pending invite to group {:?}",
            g.id_str
        ))
    })
}

pub(super) fn accept_invite(
    g: &mut Group,
    caller: &Caller,
    invitee: &str,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_self(caller, "invitee", invitee)?;
    check_joinable(g, invitee, ctx)?;
    let inv = pending_invite(g, invitee)?;
    check_room(g, 1)?;
    check_group_quota(ctx, invitee)?;
    let mut fx = Effects::done();
    let user = [invitee.to_string()];
    let mut presence = admit(g, &mut fx, &user, invitee, ctx.now);
    // "The new group member will receive memberPresence" (seed): on the accepting device
    // too, not only on the member's other devices.
    presence.to_origin = true;
    let ev = event(
        g,
        Op::AcceptInvite,
        invitee,
        user.to_vec(),
        EventDetail::None,
        ctx.now,
    );
    fx.announce.push(announce(ev, [inv.inviter], true));
    fx.announce.push(presence);
    Ok(fx)
}

pub(super) fn reject_invite(
    g: &mut Group,
    caller: &Caller,
    invitee: &str,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_self(caller, "invitee", invitee)?;
    let inv = pending_invite(g, invitee)?;
    g.invites.remove(invitee);
    let mut fx = Effects::done();
    fx.touch(Dirty::Invite(invitee.to_string()));
    let ev = event(
        g,
        Op::RejectInvite,
        invitee,
        vec![invitee.to_string()],
        EventDetail::None,
        ctx.now,
    );
    fx.announce.push(announce(ev, [inv.inviter], true));
    Ok(fx)
}

pub(super) fn join(g: &mut Group, caller: &Caller, message: &str, ctx: &Ctx<'_>) -> Outcome {
    check_chars("message", message, 0, limits::MAX_REASON_CHARS)?;
    let me = caller.user.as_str();
    if !g.meta.public {
        return Err(ApiError::denied(format!(
            "group {:?} is private; join it by invitation",
            g.id_str
        )));
    }
    check_joinable(g, me, ctx)?;
    if g.requests.contains_key(me) {
        return Err(ApiError::new(
            ErrorCode::GroupAlreadyJoined,
            format!("user {me:?} already asked to join group {:?}", g.id_str),
        ));
    }
    let mut fx = Effects::done();
    if g.meta.membersonly {
        g.requests.insert(
            me.to_string(),
            JoinRequest {
                message: message.to_string(),
                at: ctx.now,
            },
        );
        fx.touch(Dirty::Request(me.to_string()));
        let ev = event(
            g,
            Op::RequestToJoin,
            me,
            vec![me.to_string()],
            EventDetail::Text {
                text: message.to_string(),
            },
            ctx.now,
        );
        fx.announce.push(announce(ev, g.owner_and_admins(), true));
        fx.response = Response::JoinResult { joined: false };
    } else {
        check_room(g, 1)?;
        check_group_quota(ctx, me)?;
        let presence = admit(g, &mut fx, &[me.to_string()], me, ctx.now);
        fx.announce.push(presence);
        fx.response = Response::JoinResult { joined: true };
    }
    Ok(fx)
}

fn pending_request(g: &Group, applicant: &str) -> Result<(), ApiError> {
    if !g.requests.contains_key(applicant) {
        return Err(ApiError::denied(format!(
            "applicant {applicant:?} has no pending request to join group {:?}",
            g.id_str
        )));
    }
    Ok(())
}

pub(super) fn accept_request(
    g: &mut Group,
    caller: &Caller,
    applicant: &str,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_user_id("applicant", applicant)?;
    need_admin(g, caller)?;
    pending_request(g, applicant)?;
    check_joinable(g, applicant, ctx)?;
    check_room(g, 1)?;
    check_group_quota(ctx, applicant)?;
    let mut fx = Effects::done();
    let user = [applicant.to_string()];
    let presence = admit(g, &mut fx, &user, &caller.user, ctx.now);
    let ev = event(
        g,
        Op::AcceptRequest,
        &caller.user,
        user.to_vec(),
        EventDetail::None,
        ctx.now,
    );
    fx.announce.push(announce(ev, user.clone(), true));
    fx.announce.push(presence);
    Ok(fx)
}

pub(super) fn reject_request(
    g: &mut Group,
    caller: &Caller,
    applicant: &str,
    reason: &str,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_user_id("applicant", applicant)?;
    check_chars("reason", reason, 0, limits::MAX_REASON_CHARS)?;
    need_admin(g, caller)?;
    pending_request(g, applicant)?;
    g.requests.remove(applicant);
    let mut fx = Effects::done();
    fx.touch(Dirty::Request(applicant.to_string()));
    let ev = event(
        g,
        Op::JoinPublicGroupDeclined,
        &caller.user,
        vec![applicant.to_string()],
        EventDetail::Text {
            text: reason.to_string(),
        },
        ctx.now,
    );
    fx.announce
        .push(announce(ev, [applicant.to_string()], true));
    Ok(fx)
}

pub(super) fn leave(g: &mut Group, caller: &Caller, ctx: &Ctx<'_>) -> Outcome {
    let me = caller.user.as_str();
    match g.role(me) {
        None => return Err(ApiError::not_member(me, &g.id_str)),
        Some(Role::Owner) => {
            return Err(ApiError::denied(format!(
            "{me:?} owns group {:?}; transfer ownership or destroy the group instead of leaving",
            g.id_str
        )))
        }
        Some(_) => {}
    }
    g.remove_member(me);
    let mut fx = Effects::done();
    fx.touch(Dirty::Meta);
    fx.touch(Dirty::Member(me.to_string()));
    fx.touch(Dirty::Allow(me.to_string()));
    let ev = event(
        g,
        Op::MemberAbsence,
        me,
        vec![me.to_string()],
        EventDetail::None,
        ctx.now,
    );
    fx.announce.push(announce(ev, all_members(g), false));
    Ok(fx)
}

/// removeGroupMember(s) and, with `block`, blockGroupMember(s).
pub(super) fn remove(
    g: &mut Group,
    caller: &Caller,
    users: &[String],
    what: &str,
    block: bool,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_user_list(what, users, limits::MAX_BATCH_USERS)?;
    let lvl = need_admin(g, caller)?;
    for u in users {
        match g.role(u) {
            None => return Err(ApiError::not_member(u, &g.id_str)),
            Some(Role::Owner) => {
                return Err(ApiError::denied(format!(
                    "{u:?} is the owner of group {:?} and cannot be removed or blocked",
                    g.id_str
                )))
            }
            Some(Role::Admin) if lvl < Level::Owner => {
                return Err(ApiError::denied(format!(
                    "{u:?} is an admin of group {:?}; only the owner may remove or block admins",
                    g.id_str
                )))
            }
            Some(_) => {}
        }
    }
    let mut fx = Effects::done();
    fx.touch(Dirty::Meta);
    for u in users {
        let was = g.remove_member(u).map(|rec| rec.role);
        fx.touch(Dirty::Member(u.clone()));
        fx.touch(Dirty::Allow(u.clone()));
        if block {
            g.block.insert(u.clone());
            // The block remembers an admin, so that only the owner may lift it.
            if was == Some(Role::Admin) {
                g.blocked_admins.insert(u.clone());
            }
            fx.touch(Dirty::Block(u.clone()));
        }
    }
    let detail = || {
        if block {
            EventDetail::Text {
                text: "blocked".to_string(),
            }
        } else {
            EventDetail::None
        }
    };
    for u in users {
        tell_user(
            &mut fx,
            g,
            Op::RemoveMember,
            &caller.user,
            u,
            detail(),
            ctx.now,
        );
    }
    for u in users {
        let ev = event(
            g,
            Op::MemberAbsence,
            &caller.user,
            vec![u.clone()],
            EventDetail::None,
            ctx.now,
        );
        fx.announce.push(announce(ev, all_members(g), false));
    }
    Ok(fx)
}

pub(super) fn unblock(
    g: &mut Group,
    caller: &Caller,
    users: &[String],
    what: &str,
    ctx: &Ctx<'_>,
) -> Outcome {
    check_user_list(what, users, limits::MAX_BATCH_USERS)?;
    let lvl = need_admin(g, caller)?;
    if let Some(u) = users.iter().find(|u| !g.block.contains(*u)) {
        return Err(ApiError::param(format!(
            "{what}: {u:?} is not on the blocklist of group {:?}",
            g.id_str
        )));
    }
    // Admins may not block admins, so they may not lift the owner's block of one either.
    if lvl < Level::Owner {
        if let Some(u) = users.iter().find(|u| g.blocked_admins.contains(*u)) {
            return Err(ApiError::denied(format!(
                "{what}: {u:?} was blocked as an admin of group {:?}; only the owner may lift it",
                g.id_str
            )));
        }
    }
    let mut fx = Effects::done();
    for u in users {
        g.block.remove(u);
        g.blocked_admins.remove(u);
        fx.touch(Dirty::Block(u.clone()));
        tell_user(
            &mut fx,
            g,
            Op::UnblockMember,
            &caller.user,
            u,
            EventDetail::None,
            ctx.now,
        );
    }
    Ok(fx)
}

/// createGroup's `members` against `maxusers` (the owner takes one place): checked before
/// anything is done per member, so an oversized list costs nothing but its decoding.
pub fn check_members_size(members: usize, maxusers: u32) -> Result<(), ApiError> {
    if members.saturating_add(1) > maxusers as usize {
        return Err(ApiError::new(
            ErrorCode::GroupMembersFull,
            format!(
                "members lists {members} users; with the owner that exceeds maxusers {maxusers}"
            ),
        ));
    }
    Ok(())
}

/// createGroup: validates `data` and builds the new group with its effects.
pub fn create(
    id: u64,
    caller: &Caller,
    data: &convoke_protocol::CreateGroupData,
    ctx: &Ctx<'_>,
) -> Result<(Group, Effects), ApiError> {
    check_chars(
        "groupname",
        &data.groupname,
        1,
        limits::MAX_GROUP_NAME_CHARS,
    )?;
    check_chars("desc", &data.desc, 0, limits::MAX_DESCRIPTION_CHARS)?;
    if data.ext.len() > limits::MAX_EXT_BYTES {
        return Err(ApiError::param(format!(
            "ext is {} bytes; at most {}",
            data.ext.len(),
            limits::MAX_EXT_BYTES
        )));
    }
    let maxusers = data.maxusers.unwrap_or(limits::DEFAULT_MAX_USERS);
    if maxusers > ctx.limits.server_max_users {
        return Err(ApiError::new(
            ErrorCode::GroupMembersLimit,
            format!(
                "maxusers {maxusers} is above this server's limit of {}",
                ctx.limits.server_max_users
            ),
        ));
    }
    if maxusers < limits::MIN_MAX_USERS {
        return Err(ApiError::param(format!(
            "maxusers {maxusers} must be at least {}",
            limits::MIN_MAX_USERS
        )));
    }
    check_members_size(data.members.len(), maxusers)?;
    if !data.members.is_empty() {
        check_user_list("members", &data.members, usize::MAX)?;
    }
    if data.members.contains(&caller.user) {
        return Err(ApiError::param(format!(
            "members lists the creator {:?}, who is the owner",
            caller.user
        )));
    }
    let invite = ctx.limits.members_as_invitations;
    for u in &data.members {
        check_exists(ctx, u)?;
        if !invite {
            check_group_quota(ctx, u)?;
        }
    }
    check_group_quota(ctx, &caller.user)?;
    let meta = crate::group::model::GroupMeta {
        name: data.groupname.clone(),
        description: data.desc.clone(),
        owner: caller.user.clone(),
        created: ctx.now,
        maxusers,
        public: data.public,
        membersonly: data.approval,
        allowinvites: data.allowinvites,
        invite_need_confirm: data.invite_need_confirm,
        mute_all: false,
        ext: data.ext.clone(),
        announcement: String::new(),
        member_count: 0,
    };
    let mut g = Group::new(id, meta);
    g.insert_member(&caller.user, MemberRec::new(Role::Owner, ctx.now));
    let mut fx = Effects::read(Response::GroupCreated {
        group_id: g.id_str.clone(),
    });
    fx.touch(Dirty::Meta);
    fx.touch(Dirty::Member(caller.user.clone()));
    if invite {
        // Consent: each listed user gets a pending invitation from the creator (answered
        // with acceptGroupInvite / rejectGroupInvite, whatever inviteNeedConfirm says),
        // not a membership.
        for u in &data.members {
            g.invites.insert(
                u.clone(),
                Invite {
                    inviter: caller.user.clone(),
                    at: ctx.now,
                },
            );
            fx.touch(Dirty::Invite(u.clone()));
        }
    } else {
        for u in &data.members {
            g.insert_member(u, MemberRec::new(Role::Member, ctx.now));
            fx.touch(Dirty::Member(u.clone()));
        }
    }
    let op = if invite {
        Op::InviteToJoin
    } else {
        Op::DirectJoined
    };
    for u in &data.members {
        let ev = event(
            &g,
            op,
            &caller.user,
            vec![u.clone()],
            EventDetail::None,
            ctx.now,
        );
        fx.announce.push(super::Announce {
            push: convoke_protocol::Push::Group(ev),
            to: vec![u.clone()],
            keep_offline: true,
            to_origin: false,
        });
    }
    // The creator's other devices learn of the new group.
    let ev = event(
        &g,
        Op::Create,
        &caller.user,
        data.members.clone(),
        EventDetail::None,
        ctx.now,
    );
    fx.announce.push(announce(ev, [], false));
    Ok((g, fx))
}
