//! The mute, block and allow lists, answered a page at a time.
//!
//! Each list is ordered by user id, and a page starts after a cursor (the last user id of the
//! previous page), so paging is stable while the list changes. The unpaged calls of the
//! contract (getGroupMutelist, getGroupBlocklist, getGroupAllowlist) answer the first page of
//! at most [`limits::MAX_LIST_PAGE`] entries: a blocklist grows with every block, and an
//! answer must fit in one frame.

use super::{need_admin, Caller, Ctx, Effects, Outcome};
use crate::group::model::Group;
use convoke_protocol::{error::shown, ids::check_user_id, limits, ApiError, MuteEntry, Response};
use std::ops::Bound;

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum List {
    Mute,
    Block,
    Allow,
}

/// Checks `limit` and `cursor`; returns where the page starts.
fn start(limit: u32, cursor: Option<&str>) -> Result<Bound<String>, ApiError> {
    if !(1..=limits::MAX_LIST_PAGE).contains(&limit) {
        return Err(ApiError::param(format!(
            "limit {limit} must be 1 to {}",
            limits::MAX_LIST_PAGE
        )));
    }
    match cursor {
        None | Some("") => Ok(Bound::Unbounded),
        Some(c) => {
            check_user_id("cursor", c).map_err(|_| {
                ApiError::param(format!(
                    "cursor {} is not a cursor returned by a list page (a user id)",
                    shown(c)
                ))
            })?;
            Ok(Bound::Excluded(c.to_string()))
        }
    }
}

/// The next cursor: the last entry's user id when the list goes on.
fn next(more: bool, last: Option<&String>) -> Option<String> {
    if more {
        last.cloned()
    } else {
        None
    }
}

/// A page of `list` (owner and admins only). `paged` false answers the unpaged call.
pub(super) fn page(
    g: &Group,
    caller: &Caller,
    list: List,
    limit: u32,
    cursor: Option<&str>,
    paged: bool,
    ctx: &Ctx<'_>,
) -> Outcome {
    let from = start(limit, cursor)?;
    need_admin(g, caller)?;
    let n = limit as usize;
    let range = (from, Bound::Unbounded);
    let response = match list {
        List::Mute => {
            let mut mutes: Vec<MuteEntry> = g
                .mutes
                .range::<String, _>(range)
                .filter(|(u, _)| g.is_muted(u, ctx.now))
                .map(|(u, &expire)| MuteEntry {
                    user: u.clone(),
                    expire,
                })
                .take(n + 1)
                .collect();
            let more = mutes.len() > n;
            mutes.truncate(n);
            if !paged {
                return Ok(Effects::read(Response::Mutes { mutes }));
            }
            let cursor = next(more, mutes.last().map(|m| &m.user));
            Response::MutesPage { mutes, cursor }
        }
        List::Block | List::Allow => {
            let set = if list == List::Block {
                &g.block
            } else {
                &g.allow
            };
            let mut users: Vec<String> =
                set.range::<String, _>(range).take(n + 1).cloned().collect();
            let more = users.len() > n;
            users.truncate(n);
            if !paged {
                return Ok(Effects::read(Response::Users { users }));
            }
            let cursor = next(more, users.last());
            Response::UsersPage { users, cursor }
        }
    };
    Ok(Effects::read(response))
}
