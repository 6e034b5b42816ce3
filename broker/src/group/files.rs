//! The group actor's side of shared files.
//!
//! Transfer streams (`crate::files`) reach the group through `crate::ingress` with a
//! [`FileOp`] (`GroupCall::File`); the actor applies `rules::files` and commits exactly like a request, so an
//! upload's index entry and its `uploadFile` event are ordered with every other change of
//! the group. [`after_commit`] removes blobs whose entries a commit dropped (a delete, a
//! destroy): only after the commit, so a listed file is always on disk.

use super::actor::{commit_and_announce, GroupState, Shared};
use super::model::Group;
use super::rules::files::{apply_op, FileOp, FileReply};
use super::rules::{Caller, Dirty, Effects};
use crate::clock::now_ms;
use convoke_protocol::ApiError;

/// The answer to a [`FileOp`].
pub type FileResult = Result<FileReply, ApiError>;

/// Handles a [`GroupMsg::File`] inside the actor.
pub(super) async fn handle(st: &mut GroupState, caller: &Caller, op: FileOp) -> FileResult {
    let limits = st.shared.files.limits;
    let Some(g) = st.group.as_mut() else {
        return Err(ApiError::no_group(&st.gid.to_string()));
    };
    let (reply, fx) = apply_op(g, caller, op, &limits, now_ms())?;
    if let Some(fx) = fx {
        commit_and_announce(st, caller.session_id, fx).await?;
    }
    Ok(reply)
}

/// Called by the actor after `fx` was committed for group `gid` (`group` is its state now,
/// `None` once destroyed): removes the blobs the commit dropped from the index.
pub(super) fn after_commit(shared: &Shared, gid: u64, group: Option<&Group>, fx: &Effects) {
    if fx.destroyed {
        shared.files.remove_group(gid);
        return;
    }
    for d in &fx.dirty {
        if let Dirty::File(fid) = d {
            if group.is_some_and(|g| !g.files.contains_key(fid)) {
                shared.files.remove_blob(gid, *fid);
            }
        }
    }
}
