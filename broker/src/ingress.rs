//! The one way into a group for everything outside it: sessions (requests, createGroup,
//! getGroupInfo) and transfer streams (shared-file admission, record, release, look-up).
//!
//! Each input is a [`GroupCall`] for one group id, answered by a [`GroupAnswer`]: plain
//! data (bincode `Encode`/`Decode`), so that a node which does not own the group can forward
//! the call byte for byte to its owner and hand the answer back. [`call`] is the seam: it
//! gathers the outside facts the group's rules may read ([`facts`]: does a named user exist,
//! how many groups has it joined), then hands call and facts to the local group actor
//! ([`call_with_facts`], `Groups::call`); a cluster decides here
//! local, remote (forward with the same ordering: the caller awaits the queueing, then the
//! answer) or unavailable (500 at once).
//!
//! Reads that span groups are gathered here from the groups' own actors, never from the
//! store behind an actor's back: getGroupInfo queues one [`GroupCall::Info`] per id (in the
//! session's order, so a pipelined modifyGroup then getGroupInfo sees the change) and waits
//! for the answers concurrently.

use crate::cluster::{forward, Cluster, Route};
use crate::group::rules::facts::{self, Facts, UserFacts};
use crate::group::rules::files::{FileOp, FileReply};
use crate::group::rules::Caller;
use crate::group::{Forwarded, GroupCall, Groups, PendingReply};
use crate::node::Node;
use crate::quota::Disk;
use convoke_protocol::{
    ids::parse_group_id, limits, ApiError, CreateGroupData, ErrorCode, GroupInfoEntry, Request,
    Response,
};

pub use crate::group::{Answer, GroupAnswer};

/// Queues `call` for group `gid` and returns its pending answer.
///
/// Awaiting this queues the call (in the order the caller awaits it); awaiting the
/// returned [`PendingReply`] waits for the answer. 605 when the group does not exist (except
/// for [`GroupCall::Create`]).
pub async fn call(
    node: &Node,
    gid: u64,
    caller: Caller,
    call: GroupCall,
) -> Result<PendingReply, ApiError> {
    let Some(cluster) = Cluster::running() else {
        // A single node: no cluster, today's path (one atomic load more than before).
        let facts = facts(node, gid, &caller, &call);
        return call_with_facts(node, gid, caller, facts, call).await;
    };
    match cluster.route(gid) {
        Route::Local => {
            let facts = cluster_facts(node, cluster, gid, &caller, &call).await;
            call_with_facts(node, gid, caller, facts, call).await
        }
        Route::Remote(peer) => {
            let facts = cluster_facts(node, cluster, gid, &caller, &call).await;
            // Queued on the link to the owner now (this await is the queueing, as for a
            // local group); the answer comes back through the pending reply.
            forward::forward(
                cluster,
                &peer,
                gid,
                &Forwarded {
                    caller,
                    facts,
                    call,
                },
            )
        }
        Route::Unavailable(peer) => Err(forward::unavailable(gid, &peer)),
    }
}

/// [`call`] with the facts already gathered: for a call forwarded from another node, which
/// gathered them there. This runs on the group's owner, whichever node the caller is
/// connected to, so what depends on the owner's own state is checked here: a send is
/// refused (500) while the owner's data directory is below the free-disk watermark (the
/// message lands in the owner's store, not in the ingress node's), and a file deletion or
/// a destroy that succeeds frees the per-user file quota here, where uploads are checked.
pub async fn call_with_facts(
    node: &Node,
    gid: u64,
    caller: Caller,
    facts: Facts,
    call: GroupCall,
) -> Result<PendingReply, ApiError> {
    if matches!(call, GroupCall::Request(Request::SendGroupMessage { .. })) {
        node.quotas
            .check_disk(Disk::Data, ErrorCode::ServerBusy)
            .map_err(|mut e| {
                if let Some(cluster) = Cluster::running() {
                    e.message = format!("node {}: {}", cluster.name(), e.message);
                }
                e
            })?;
    }
    let frees_files = matches!(
        call,
        GroupCall::Request(Request::DeleteGroupSharedFile { .. } | Request::DestroyGroup { .. })
    );
    let pending = node.groups.call(gid, caller, facts, call).await?;
    if !frees_files {
        return Ok(pending);
    }
    // Once committed, usage is read again before the next upload refusal. (A pending
    // answer may be any future; `remote` is that constructor.)
    let quotas = node.quotas.clone();
    Ok(PendingReply::remote(gid, async move {
        let answer = pending.wait().await;
        if answer.is_ok() {
            quotas.files_deleted();
        }
        answer
    }))
}

/// The outside facts the rule of `call` for group `gid` may read, for the users it names
/// (none for most calls: messages, reads and file steps gather nothing). Read from this
/// node's store; a cluster reads them where they live. A user's joined count leaves `gid`
/// out: the rule counts this group itself from its own roster, so a pipelined leaveGroup
/// then joinGroup of one group at the quota passes as it did when the rule read the store.
pub fn facts(node: &Node, gid: u64, caller: &Caller, call: &GroupCall) -> Facts {
    let users = match call {
        GroupCall::Request(r) => facts::named_by_request(caller, r),
        GroupCall::Create(d) => facts::named_by_create(caller, d),
        GroupCall::Info | GroupCall::File(_) => return Facts::default(),
    };
    Facts::gather(users, |u| UserFacts {
        exists: node.store.user_exists(u),
        joined: node.store.joined_count_except(u, gid) as u64,
    })
}

/// [`facts`] in a cluster: the users a call names are looked up on every node (a user's
/// first-login record is where it logged in, its joined index on each group's shard; see
/// `crate::cluster::scatter`). A node that does not answer is named in the facts as
/// missing; the rules answer 500 where their answer depends on its part.
async fn cluster_facts(
    node: &Node,
    cluster: &Cluster,
    gid: u64,
    caller: &Caller,
    call: &GroupCall,
) -> Facts {
    let users: Vec<String> = match call {
        GroupCall::Request(r) => facts::named_by_request(caller, r),
        GroupCall::Create(d) => facts::named_by_create(caller, d),
        GroupCall::Info | GroupCall::File(_) => return Facts::default(),
    }
    .into_iter()
    .map(str::to_owned)
    .collect();
    crate::cluster::scatter::user_facts(node, cluster, &users, gid).await
}

/// Ids a create tries for one whose shard's owner is reachable (a new group can live on
/// any node, so one down node must not fail a third of the creates).
const CREATE_ID_TRIES: usize = 32;

/// createGroup: allocates the group id here (the ingress node's id space, so ids are unique
/// in a cluster) and has the group's actor create it, on the node that owns the id's shard.
/// In a cluster, an id whose owner is unreachable is passed over for the next one (up to
/// [`CREATE_ID_TRIES`]; with every owner down the create answers 500 like any request).
pub async fn create(
    node: &Node,
    caller: Caller,
    data: CreateGroupData,
) -> Result<Response, ApiError> {
    let new_id = || {
        node.store
            .new_id()
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
    };
    let mut gid = new_id()?;
    if let Some(cluster) = Cluster::running() {
        for _ in 1..CREATE_ID_TRIES {
            if !matches!(cluster.route(gid), Route::Unavailable(_)) {
                break;
            }
            gid = new_id()?;
        }
    }
    call(node, gid, caller, GroupCall::Create(data))
        .await?
        .response()
        .await
}

/// A shared-file step for group `gid`, answered.
pub async fn file(
    node: &Node,
    gid: u64,
    caller: Caller,
    op: FileOp,
) -> Result<FileReply, ApiError> {
    call(node, gid, caller, GroupCall::File(op))
        .await?
        .wait()
        .await?
        .into_file()
}

/// Gives back the quota place of an admitted upload that will not be recorded (it failed
/// or was cancelled). Does not wait, so it can run in a `Drop`; if the group's actor is no
/// longer running, the place went with it.
pub fn release_upload(groups: &Groups, gid: u64, caller: Caller, file_id: u64) {
    let call = GroupCall::File(FileOp::Release { file_id });
    let Some(cluster) = Cluster::running() else {
        groups.notify(gid, caller, call);
        return;
    };
    match cluster.route(gid) {
        Route::Local => {
            groups.notify(gid, caller, call);
        }
        Route::Remote(peer) => {
            let fwd = Forwarded {
                caller,
                facts: Facts::default(),
                call,
            };
            if let (Ok(pending), Ok(rt)) = (
                forward::forward(cluster, &peer, gid, &fwd),
                tokio::runtime::Handle::try_current(),
            ) {
                rt.spawn(pending.wait());
            }
        }
        // The owner is gone: the place went with its actor.
        Route::Unavailable(_) => {}
    }
}

/// getGroupInfo, queued: one [`GroupCall::Info`] per id.
///
/// The list itself must have 1 to [`limits::MAX_GROUP_INFO_IDS`] ids (-3 otherwise); each
/// id then gets its own entry: the info, or the error its group answered (-3 for an id that
/// is not a group id, 605 for no such group, 602 for a private group the caller is not a
/// member of). A 500 of the store fails the whole request, as before.
pub async fn info(node: &Node, caller: &Caller, ids: Vec<String>) -> Result<PendingInfo, ApiError> {
    if ids.is_empty() || ids.len() > limits::MAX_GROUP_INFO_IDS {
        return Err(ApiError::param(format!(
            "groupId must list 1 to {} ids, got {}",
            limits::MAX_GROUP_INFO_IDS,
            ids.len()
        )));
    }
    // Queued concurrently (groups are independent), all before this returns: the order
    // against the session's earlier and later requests is kept.
    let queued = futures::future::join_all(ids.iter().map(|id| async {
        let gid = parse_group_id(id)?;
        call(node, gid, caller.clone(), GroupCall::Info).await
    }))
    .await;
    Ok(PendingInfo {
        entries: ids.into_iter().zip(queued).collect(),
    })
}

/// getGroupInfo's answers, owed by the groups' actors.
#[derive(Debug)]
pub struct PendingInfo {
    entries: Vec<(String, Result<PendingReply, ApiError>)>,
}

impl PendingInfo {
    /// Gathers the answers (concurrently) into the contract's per-id entries.
    pub async fn wait(self) -> Result<Response, ApiError> {
        let answers =
            futures::future::join_all(self.entries.into_iter().map(|(id, queued)| async move {
                let result = match queued {
                    Ok(pending) => pending.wait().await.and_then(GroupAnswer::into_info),
                    Err(e) => Err(e),
                };
                (id, result)
            }))
            .await;
        let mut groups = Vec::with_capacity(answers.len());
        for (group_id, result) in answers {
            groups.push(match result {
                Ok(info) => GroupInfoEntry {
                    group_id,
                    info: Some(info),
                    error: None,
                },
                Err(e) if e.code == ErrorCode::Internal => return Err(e),
                Err(e) => GroupInfoEntry {
                    group_id,
                    info: None,
                    error: Some(e),
                },
            });
        }
        Ok(Response::GroupInfos { groups })
    }
}
