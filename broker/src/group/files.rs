//! The group actor's side of shared files.
//!
//! Transfer streams (`crate::files`) reach the group through [`Groups::file_op`] with a
//! [`FileOp`]; the actor applies `rules::files` and commits exactly like a request, so an
//! upload's index entry and its `uploadFile` event are ordered with every other change of
//! the group. [`after_commit`] removes blobs whose entries a commit dropped (a delete, a
//! destroy): only after the commit, so a listed file is always on disk.

use super::actor::{commit_and_announce, GroupMsg, GroupState, Shared};
use super::directory::Groups;
use super::model::Group;
use super::rules::files::{apply_op, FileOp, FileReply};
use super::rules::{Caller, Dirty, Effects};
use crate::clock::now_ms;
use convoke_protocol::{ApiError, ErrorCode};

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

impl Groups {
    /// Gives back the quota place of an admitted upload that will not be recorded (it
    /// failed or was cancelled). Does not wait, so it can run in a `Drop`; if the group's
    /// actor is no longer running, the place went with it.
    pub fn release_upload(&self, gid: u64, caller: Caller, file_id: u64) {
        if let Some(actor) = self.running(gid) {
            let (reply, _) = ractor::concurrency::oneshot();
            let op = FileOp::Release { file_id };
            let _ = actor.send_message(GroupMsg::File {
                caller,
                op,
                reply: reply.into(),
            });
        }
    }

    /// Sends a shared-file operation to the actor of `gid` and waits for its answer.
    pub async fn file_op(&self, gid: u64, caller: Caller, op: FileOp) -> FileResult {
        let (mut caller, mut op) = (caller, op);
        for _ in 0..3 {
            let actor = self.actor_for(gid).await?;
            let (tx, rx) = ractor::concurrency::oneshot();
            match actor.send_message(GroupMsg::File {
                caller,
                op,
                reply: tx.into(),
            }) {
                Ok(()) => {
                    return rx.await.unwrap_or_else(|_| {
                        Err(ApiError::new(
                            ErrorCode::ServerBusy,
                            format!("group {gid} restarted during a file operation; retry"),
                        ))
                    })
                }
                Err(ractor::MessagingErr::SendErr(GroupMsg::File {
                    caller: c, op: o, ..
                })) => {
                    // The actor was stopping (idle): forget it and try a fresh one.
                    self.forget(gid, &actor);
                    (caller, op) = (c, o);
                }
                Err(e) => {
                    return Err(ApiError::new(
                        ErrorCode::ServerBusy,
                        format!("group {gid} unavailable: {e}"),
                    ))
                }
            }
        }
        Err(ApiError::new(
            ErrorCode::ServerBusy,
            format!("group {gid} is restarting; retry"),
        ))
    }
}
