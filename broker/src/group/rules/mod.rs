//! The group's rules as plain Rust: who may do what, what changes, which events go to whom.
//!
//! [`apply`] takes the current [`Group`], the caller, the request and a [`Ctx`] (clock,
//! limits, and the facts from outside the group the ingress prefetched, [`facts`]) and either returns an error having
//! changed nothing, or mutates the group and returns [`Effects`]: the response, which records
//! to persist, and which events to announce to whom. The group actor is a thin driver around
//! this: it persists, answers, then fans out. Everything here is tested without a runtime.
//!
//! Every handler validates completely before its first mutation; that is how "a failed
//! request changes nothing" holds.

pub mod facts;
pub mod files;
mod lists;
pub mod messages;
mod moderation;
pub mod rate;

pub use moderation::expire_mutes;
mod roster;

pub use roster::{check_members_size, create};
#[cfg(test)]
mod tests;

use super::model::Group;
use convoke_protocol::{
    ids::check_user_id, ApiError, ErrorCode, EventDetail, GroupEvent, GroupEventOp, Push, Request,
    Response, Role,
};
use std::collections::BTreeSet;

/// Who is asking (plain data: a forwarded call carries it).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Caller {
    pub user: String,
    pub app_admin: bool,
    /// The session the request came from; events skip it (it has the response).
    pub session_id: u64,
}

/// The limits the rules enforce (from the broker's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub server_max_users: u32,
    pub max_admins: usize,
    pub max_groups_per_user: usize,
    /// createGroup's `members` are invited (pending invitations the users accept or
    /// reject) instead of added: `groups.create_members_as_invitations`.
    pub members_as_invitations: bool,
}

impl Default for Limits {
    fn default() -> Self {
        use convoke_protocol::limits as l;
        Self {
            server_max_users: l::DEFAULT_SERVER_MAX_USERS,
            max_admins: l::MAX_ADMINS,
            max_groups_per_user: l::MAX_GROUPS_PER_USER,
            members_as_invitations: false,
        }
    }
}

pub use facts::{Facts, UserFacts};

/// The context of one request.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Now, ms since the Unix epoch.
    pub now: i64,
    pub limits: &'a Limits,
    /// Facts from outside the group, gathered by the ingress for the users the request
    /// names (see [`facts`]).
    pub facts: &'a Facts,
}

/// A record the driver must write (or delete, when the state no longer has it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dirty {
    Meta,
    Member(String),
    Mute(String),
    Allow(String),
    Block(String),
    Invite(String),
    Request(String),
    /// A shared file's index entry, by file id.
    File(u64),
}

/// An event to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub push: Push,
    /// Users whose sessions get it (deduplicated), the operator's other devices included
    /// where the multi-device rule applies. The request's own session gets it only with `to_origin`.
    pub to: Vec<String>,
    /// A state-changing event: kept for the users in `to` (other than the operator) until
    /// a client of theirs acknowledges it, and sent again at each login until then.
    pub keep_offline: bool,
    /// The request's own session gets it too: the seed names the operator among the
    /// recipients (acceptGroupInvite's memberPresence, to the new member).
    pub to_origin: bool,
}

/// What a successful request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    pub response: Response,
    pub dirty: Vec<Dirty>,
    pub announce: Vec<Announce>,
    /// The group was destroyed: the driver deletes all its records and stops.
    pub destroyed: bool,
}

impl Effects {
    /// Success that changes nothing.
    pub fn read(response: Response) -> Self {
        Self {
            response,
            dirty: Vec::new(),
            announce: Vec::new(),
            destroyed: false,
        }
    }

    fn done() -> Self {
        Self::read(Response::Done)
    }

    fn touch(&mut self, d: Dirty) {
        self.dirty.push(d);
    }
}

type Outcome = Result<Effects, ApiError>;

/// Applies `req` from `caller` to `g`. On error `g` is unchanged.
pub fn apply(g: &mut Group, caller: &Caller, req: &Request, ctx: &Ctx<'_>) -> Outcome {
    use Request as R;
    match req {
        R::DestroyGroup { .. } => roster::destroy(g, caller, ctx),
        R::ModifyGroup {
            group_name,
            description,
            ext,
            ..
        } => moderation::modify(g, caller, group_name, description, ext, ctx),
        R::ChangeGroupOwner { new_owner, .. } => roster::change_owner(g, caller, new_owner, ctx),
        R::ListGroupMembers {
            page_num,
            page_size,
            ..
        } => roster::list_members(g, caller, *page_num, *page_size),
        R::GetGroupAdmin { .. } => {
            need_member(g, caller)?;
            Ok(Effects::read(Response::Users {
                users: g.admins.iter().cloned().collect(),
            }))
        }
        R::SetGroupAdmin { username, .. } => roster::set_admin(g, caller, username, ctx),
        R::RemoveGroupAdmin { username, .. } => roster::remove_admin(g, caller, username, ctx),
        R::InviteUsersToGroup { users, .. } => roster::invite(g, caller, users, ctx),
        R::AcceptGroupInvite { invitee, .. } => roster::accept_invite(g, caller, invitee, ctx),
        R::RejectGroupInvite { invitee, .. } => roster::reject_invite(g, caller, invitee, ctx),
        R::JoinGroup { message, .. } => roster::join(g, caller, message, ctx),
        R::AcceptGroupJoinRequest { applicant, .. } => {
            roster::accept_request(g, caller, applicant, ctx)
        }
        R::RejectGroupJoinRequest {
            applicant, reason, ..
        } => roster::reject_request(g, caller, applicant, reason, ctx),
        R::LeaveGroup { .. } => roster::leave(g, caller, ctx),
        R::RemoveGroupMember { username, .. } => roster::remove(
            g,
            caller,
            std::slice::from_ref(username),
            "username",
            false,
            ctx,
        ),
        R::RemoveGroupMembers { users, .. } => {
            roster::remove(g, caller, users, "users", false, ctx)
        }
        R::BlockGroupMember { username, .. } => roster::remove(
            g,
            caller,
            std::slice::from_ref(username),
            "username",
            true,
            ctx,
        ),
        R::BlockGroupMembers { usernames, .. } => {
            roster::remove(g, caller, usernames, "usernames", true, ctx)
        }
        R::UnblockGroupMember { username, .. } => {
            roster::unblock(g, caller, std::slice::from_ref(username), "username", ctx)
        }
        R::UnblockGroupMembers { usernames, .. } => {
            roster::unblock(g, caller, usernames, "usernames", ctx)
        }
        R::GetGroupBlocklist { .. } => unpaged(g, caller, lists::List::Block, ctx),
        R::GetGroupBlocklistPage { limit, cursor, .. } => lists::page(
            g,
            caller,
            lists::List::Block,
            *limit,
            cursor.as_deref(),
            true,
            ctx,
        ),
        R::MuteGroupMember {
            username,
            mute_duration,
            ..
        } => moderation::mute(g, caller, username, *mute_duration, ctx),
        R::UnmuteGroupMember { username, .. } => moderation::unmute(g, caller, username, ctx),
        R::GetGroupMutelist { .. } => unpaged(g, caller, lists::List::Mute, ctx),
        R::GetGroupMutelistPage { limit, cursor, .. } => lists::page(
            g,
            caller,
            lists::List::Mute,
            *limit,
            cursor.as_deref(),
            true,
            ctx,
        ),
        R::IsInGroupMutelist { .. } => {
            need_member(g, caller)?;
            Ok(Effects::read(Response::Bool {
                value: g.is_muted(&caller.user, ctx.now),
            }))
        }
        R::DisableSendGroupMsg { .. } => moderation::mute_all(g, caller, true, ctx),
        R::EnableSendGroupMsg { .. } => moderation::mute_all(g, caller, false, ctx),
        R::AddUsersToGroupAllowlist { users, .. } => moderation::allow_add(g, caller, users, ctx),
        R::RemoveGroupAllowlistMember { user_name, .. } => {
            moderation::allow_remove(g, caller, user_name, ctx)
        }
        R::GetGroupAllowlist { .. } => unpaged(g, caller, lists::List::Allow, ctx),
        R::GetGroupAllowlistPage { limit, cursor, .. } => lists::page(
            g,
            caller,
            lists::List::Allow,
            *limit,
            cursor.as_deref(),
            true,
            ctx,
        ),
        R::IsInGroupAllowlist { user_name, .. } => moderation::is_allowed(g, caller, user_name),
        R::FetchGroupAnnouncement { .. } => {
            if !g.meta.public {
                need_member(g, caller)?;
            }
            Ok(Effects::read(Response::Announcement {
                announcement: g.meta.announcement.clone(),
            }))
        }
        R::UpdateGroupAnnouncement { announcement, .. } => {
            moderation::announce_update(g, caller, announcement, ctx)
        }
        R::SetGroupMemberAttributes {
            user_id,
            member_attributes,
            ..
        } => moderation::set_attributes(g, caller, user_id, member_attributes, ctx),
        R::GetGroupMemberAttributes { user_id, .. } => {
            moderation::get_attributes(g, caller, std::slice::from_ref(user_id), &[], true)
        }
        R::GetGroupMembersAttributes { user_ids, keys, .. } => {
            moderation::get_attributes(g, caller, user_ids, keys, false)
        }
        R::BlockGroupMessages { .. } => moderation::shield(g, caller, true),
        R::UnblockGroupMessages { .. } => moderation::shield(g, caller, false),
        R::GetGroupInfo { .. } => Ok(Effects::read(Response::GroupInfos {
            groups: vec![convoke_protocol::GroupInfoEntry {
                group_id: g.id_str.clone(),
                info: Some(info(g, caller)?),
                error: None,
            }],
        })),
        R::GetGroupSharedFilelist {
            page_num,
            page_size,
            ..
        } => files::list(g, caller, *page_num, *page_size),
        R::DeleteGroupSharedFile { file_id, .. } => files::delete(g, caller, file_id, ctx.now),
        other => Err(ApiError::not_implemented(other.method())),
    }
}

/// getGroupInfo for one group: public groups are readable by anyone, private ones by
/// members and app admins (602 otherwise; a blocked user is not a member).
pub fn info(g: &Group, caller: &Caller) -> Result<convoke_protocol::GroupInfo, ApiError> {
    if !g.meta.public && !caller.app_admin {
        need_member(g, caller)?;
    }
    Ok(g.info_for(&caller.user))
}

/// An unpaged list call of the contract: its first page.
fn unpaged(g: &Group, caller: &Caller, list: lists::List, ctx: &Ctx<'_>) -> Outcome {
    let max = convoke_protocol::limits::MAX_LIST_PAGE;
    lists::page(g, caller, list, max, None, false, ctx)
}

// ---- shared checks -------------------------------------------------------------------

/// The caller's effective level in `g`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Outsider,
    Member,
    Admin,
    /// The owner, or an app admin.
    Owner,
}

pub(crate) fn level(g: &Group, caller: &Caller) -> Level {
    if caller.app_admin {
        return Level::Owner;
    }
    match g.role(&caller.user) {
        Some(Role::Owner) => Level::Owner,
        Some(Role::Admin) => Level::Admin,
        Some(Role::Member) => Level::Member,
        None => Level::Outsider,
    }
}

pub(crate) fn need_member(g: &Group, caller: &Caller) -> Result<Level, ApiError> {
    let l = level(g, caller);
    if l == Level::Outsider {
        return Err(ApiError::not_member(&caller.user, &g.id_str));
    }
    Ok(l)
}

pub(crate) fn need_admin(g: &Group, caller: &Caller) -> Result<Level, ApiError> {
    let l = need_member(g, caller)?;
    if l < Level::Admin {
        return Err(ApiError::denied(format!(
            "user {:?} is not an owner or admin of group {:?}",
            caller.user, g.id_str
        )));
    }
    Ok(l)
}

pub(crate) fn need_owner(g: &Group, caller: &Caller) -> Result<(), ApiError> {
    let l = need_member(g, caller)?;
    if l < Level::Owner {
        return Err(ApiError::denied(format!(
            "only the owner of group {:?} may do this; {:?} is not the owner",
            g.id_str, caller.user
        )));
    }
    Ok(())
}

/// Checks a user list: 1..=max entries, each a valid id, no duplicates. `what` names it.
pub(crate) fn check_user_list(what: &str, users: &[String], max: usize) -> Result<(), ApiError> {
    if users.is_empty() {
        return Err(ApiError::param(format!(
            "{what} must name at least one user"
        )));
    }
    if users.len() > max {
        return Err(ApiError::param(format!(
            "{what} names {} users; at most {max} per call",
            users.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for u in users {
        check_user_id(what, u)?;
        if !seen.insert(u.as_str()) {
            return Err(ApiError::param(format!("{what} names {u:?} twice")));
        }
    }
    Ok(())
}

pub(crate) fn check_chars(what: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::param(format!(
            "{what} must be {min} to {max} characters, got {n}"
        )));
    }
    Ok(())
}

/// 204 for a user who has never logged in; 500 (retryable) when the user was not found
/// but a node that may hold its first login did not answer.
pub(crate) fn check_exists(ctx: &Ctx<'_>, user: &str) -> Result<(), ApiError> {
    if ctx.facts.user_exists(user) {
        return Ok(());
    }
    if let Some(nodes) = ctx.facts.unsure_exists() {
        return Err(ApiError::new(
            ErrorCode::ServerBusy,
            format!(
                "cannot tell whether user {user:?} has ever logged in: node {nodes} is \
                 unreachable now; retry"
            ),
        ));
    }
    Err(ApiError::new(
        ErrorCode::UserNotFound,
        format!("user {user:?} has never logged in"),
    ))
}

/// 50 for a user at `max_groups_per_user`, counted over the nodes that answered (a count
/// that leaves out an unreachable node is used as it is: soft, see below).
pub(crate) fn check_group_quota(ctx: &Ctx<'_>, user: &str) -> Result<(), ApiError> {
    let n = ctx.facts.joined_count(user);
    if n >= ctx.limits.max_groups_per_user {
        return Err(ApiError::new(
            ErrorCode::MaxLimit,
            format!(
                "user {user:?} is already in {n} groups; the limit is {}",
                ctx.limits.max_groups_per_user
            ),
        ));
    }
    // A count without an unreachable node's part is used as it is: the limit is soft in a
    // cluster (design/cluster.md), and refusing every join while one node is down would
    // stop groups owned elsewhere too (issue #11 item 4: they must be unaffected).
    if let Some(nodes) = ctx.facts.unsure_joined() {
        tracing::debug!(%user, %nodes, counted = n, "group quota counted without the part of an unreachable node");
    }
    Ok(())
}

pub(crate) fn check_room(g: &Group, adding: usize) -> Result<(), ApiError> {
    let after = g.members.len() + adding;
    if after > g.meta.maxusers as usize {
        return Err(ApiError::new(
            ErrorCode::GroupMembersFull,
            format!(
                "group {:?} has {} of {} members; adding {adding} would exceed maxusers",
                g.id_str,
                g.members.len(),
                g.meta.maxusers
            ),
        ));
    }
    Ok(())
}

/// Builds an event from the operator.
pub(crate) fn event(
    g: &Group,
    op: GroupEventOp,
    from: &str,
    users: Vec<String>,
    detail: EventDetail,
    now: i64,
) -> GroupEvent {
    GroupEvent {
        operation: op,
        group_id: g.id_str.clone(),
        group_name: g.meta.name.clone(),
        from: from.to_string(),
        users,
        detail,
        timestamp: now,
    }
}

/// Recipients: `to` plus the operator (multi-device rule), deduplicated, in a stable order.
///
/// A sorted `Vec` rather than a tree: for a 10,000-member group this is the largest cost
/// of a mutation (benches/benches/group.rs: a `BTreeSet` of the roster made one
/// announcement update cost 1.62 ms; this costs 0.98 ms).
pub(crate) fn with_operator(to: impl IntoIterator<Item = String>, operator: &str) -> Vec<String> {
    let mut v: Vec<String> = to.into_iter().collect();
    if !operator.is_empty() {
        v.push(operator.to_string());
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// An `onGroupEvent` to `to` and the operator's other devices.
pub(crate) fn announce(
    ev: GroupEvent,
    to: impl IntoIterator<Item = String>,
    keep_offline: bool,
) -> Announce {
    let to = with_operator(to, &ev.from.clone());
    Announce {
        push: Push::Group(ev),
        to,
        keep_offline,
        to_origin: false,
    }
}

/// An event about `user`, told to that user (and the operator's other devices), and kept
/// for the user if offline: invites, removals, unblocks.
pub(crate) fn tell_user(
    fx: &mut Effects,
    g: &Group,
    op: GroupEventOp,
    from: &str,
    user: &str,
    detail: EventDetail,
    now: i64,
) {
    let ev = event(g, op, from, vec![user.to_string()], detail, now);
    fx.announce.push(announce(ev, [user.to_string()], true));
}

/// All current members.
pub(crate) fn all_members(g: &Group) -> Vec<String> {
    g.member_ids().cloned().collect()
}
