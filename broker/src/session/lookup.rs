//! Requests that name no one group: ping, createGroup (the ingress allocates the id and
//! hands the new group to a fresh actor), getGroupInfo (gathered from each group's actor by
//! the ingress; `route` normally queues it itself, to keep the session's order),
//! getJoinedGroups and getPublicGroups (read the user and public indexes).

use crate::clock::now_ms;
use crate::group::persist::GroupStore;
use crate::group::rules::{check_members_size, Caller};
use crate::node::Node;
use convoke_protocol::{
    error::shown, limits, ApiError, ErrorCode, JoinedGroup, PublicGroup, Request, Response,
};

type Reply = Result<Response, ApiError>;

pub async fn serve(node: &Node, caller: &Caller, request: Request) -> Reply {
    match request {
        Request::Ping { nonce } => Ok(Response::Pong {
            nonce,
            server_time: now_ms(),
        }),
        Request::CreateGroup { data } => {
            // Before a group id is taken and an actor started: an oversized `members` is
            // refused for the cost of its decoding (the rule checks it again, first).
            let maxusers = data.maxusers.unwrap_or(limits::DEFAULT_MAX_USERS);
            if maxusers <= node.config.limits.server_max_users {
                check_members_size(data.members.len(), maxusers)?;
            }
            crate::ingress::create(node, caller.clone(), data).await
        }
        Request::GetGroupInfo { group_ids } => {
            crate::ingress::info(node, caller, group_ids)
                .await?
                .wait()
                .await
        }
        Request::GetJoinedGroups {
            page_num,
            page_size,
            need_affiliations,
            need_role,
        } => {
            joined(
                node,
                caller,
                page_num,
                page_size,
                need_affiliations,
                need_role,
            )
            .await
        }
        Request::GetPublicGroups { limit, cursor } => public(node, limit, cursor.as_deref()).await,
        other => Err(ApiError::not_implemented(other.method())),
    }
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("storage failure: {e}"))
}

async fn joined(
    node: &Node,
    caller: &Caller,
    page_num: u32,
    page_size: u32,
    need_aff: bool,
    need_role: bool,
) -> Reply {
    let detailed = need_aff || need_role;
    let (first, max) = if detailed {
        (0, limits::MAX_JOINED_PAGE_DETAILED)
    } else {
        (1, limits::MAX_JOINED_PAGE)
    };
    if page_num < first {
        return Err(ApiError::param(format!(
            "pageNum {page_num} must start at {first} {}",
            if detailed {
                "when needAffiliations or needRole is set"
            } else {
                "when neither needAffiliations nor needRole is set"
            }
        )));
    }
    if !(1..=max).contains(&page_size) {
        return Err(ApiError::param(format!(
            "pageSize {page_size} must be 1 to {max} {}",
            if detailed {
                "when needAffiliations or needRole is set"
            } else {
                "when neither needAffiliations nor needRole is set"
            }
        )));
    }
    let skip = ((page_num - first) as usize).saturating_mul(page_size as usize);
    if let Some(cluster) = crate::cluster::Cluster::get() {
        // The joined index lives on each group's shard: every core node gives its first
        // skip + pageSize rows by id, merged here (a Down node's groups are missing).
        let rows = crate::cluster::scatter::joined(
            node,
            &cluster,
            &caller.user,
            skip.saturating_add(page_size as usize),
            need_role,
        )
        .await?;
        let groups = rows
            .into_iter()
            .skip(skip)
            .map(|r| JoinedGroup {
                group_id: r.gid.to_string(),
                group_name: r.name,
                affiliations_count: need_aff.then_some(r.members),
                role: r.role,
            })
            .collect();
        return Ok(Response::JoinedGroups { groups });
    }
    let all = node.store.joined_groups(&caller.user).map_err(storage)?;
    let mut groups = Vec::new();
    for gid in all.into_iter().skip(skip).take(page_size as usize) {
        let Some(meta) = node.store.meta(gid).map_err(storage)? else {
            continue;
        };
        let role = if need_role {
            node.store
                .member(gid, &caller.user)
                .map_err(storage)?
                .map(|m| m.role)
        } else {
            None
        };
        groups.push(JoinedGroup {
            group_id: gid.to_string(),
            group_name: meta.name,
            affiliations_count: need_aff.then_some(meta.member_count),
            role,
        });
    }
    Ok(Response::JoinedGroups { groups })
}

async fn public(node: &Node, limit: u32, cursor: Option<&str>) -> Reply {
    if !(1..=limits::MAX_PUBLIC_PAGE).contains(&limit) {
        return Err(ApiError::param(format!(
            "limit {limit} must be 1 to {}",
            limits::MAX_PUBLIC_PAGE
        )));
    }
    let after = match cursor {
        None | Some("") => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            ApiError::param(format!(
                "cursor {} is not a cursor returned by getPublicGroups",
                shown(c)
            ))
        })?),
    };
    let mut rows = match crate::cluster::Cluster::get() {
        // The public index lives on each group's shard: merged from every core node.
        Some(cluster) => {
            crate::cluster::scatter::public(node, &cluster, after, limit as usize + 1).await?
        }
        None => node
            .store
            .public_groups(after, limit as usize + 1)
            .map_err(storage)?,
    };
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let cursor = if more {
        rows.last().map(|(gid, _)| gid.to_string())
    } else {
        None
    };
    Ok(Response::PublicGroups {
        groups: rows
            .into_iter()
            .map(|(gid, name)| PublicGroup {
                group_id: gid.to_string(),
                group_name: name,
            })
            .collect(),
        cursor,
    })
}
