//! Shared-file rules: who may upload, download, list and delete a group's files, and what
//! each changes and announces. Plain Rust like every rule; the bytes themselves move on
//! their own streams (`crate::files`), which ask the group actor through [`FileOp`] at the
//! two moments an upload touches the group (admission, then the record) and once per
//! download (the look-up).
//!
//! Decisions (the contract is silent):
//! - Listing is newest first (by file id, which grows with every upload).
//! - A file id that is malformed or unknown is 200 DOWNLOAD_FILE_ERROR naming it, for
//!   downloads and deletes alike ("missing" is a file error in the contract).
//! - The secret: every file gets a random one, shown to members in its entry. Members may
//!   download without it; a download that names a secret must name the right one (200
//!   otherwise). Non-members may not download at all, secret or not (602).
//! - The file quota is checked at admission (before a byte is accepted), counting the
//!   uploads still in progress: an admitted upload holds its place until it is recorded or
//!   released, so a second upload for the last place is refused before its bytes, not
//!   after them. It is checked again when the upload is recorded (an upload admitted by an
//!   actor that has since restarted holds no place).

use super::{all_members, announce, event, level, need_member, Caller, Dirty, Effects, Level};
use crate::files::{FileLimits, FileRec};
use crate::group::model::Group;
use convoke_protocol::{
    limits, ApiError, ErrorCode, EventDetail, GroupEventOp as Op, Response, SharedFile,
};

/// What a transfer stream asks of the group actor.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum FileOp {
    /// Before any byte of an upload is accepted: may the caller add a file of `size` bytes?
    /// If so, `file_id` holds a place under the quota until `Record` or `Release`.
    Admit { file_id: u64, size: u64 },
    /// The admitted upload of `file_id` failed or was cancelled: give its place back.
    Release { file_id: u64 },
    /// The upload of `file_id` is complete and durable on disk: record it, announce it.
    Record { file_id: u64, rec: FileRec },
    /// A download: the entry of `file_id`, if the caller may fetch it.
    Fetch {
        file_id: String,
        secret: Option<String>,
    },
}

/// The group actor's answer to a [`FileOp`].
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum FileReply {
    Admitted,
    Released,
    Recorded(SharedFile),
    Found { file_id: u64, rec: FileRec },
}

/// Applies `op`. Returns the reply and, when the group changed, the effects to commit
/// before replying. On error `g` is unchanged, except that `Record` always ends the
/// upload's hold on the quota (the upload is over either way).
pub fn apply_op(
    g: &mut Group,
    caller: &Caller,
    op: FileOp,
    limits: &FileLimits,
    now: i64,
) -> Result<(FileReply, Option<Effects>), ApiError> {
    match op {
        FileOp::Admit { file_id, size } => {
            need_member(g, caller)?;
            check_size(size, limits)?;
            check_quota(g, limits)?;
            g.uploading.insert(file_id);
            Ok((FileReply::Admitted, None))
        }
        FileOp::Release { file_id } => {
            g.uploading.remove(&file_id);
            Ok((FileReply::Released, None))
        }
        FileOp::Record { file_id, rec } => {
            g.uploading.remove(&file_id);
            let (file, fx) = record(g, caller, file_id, rec, limits, now)?;
            Ok((FileReply::Recorded(file), Some(fx)))
        }
        FileOp::Fetch { file_id, secret } => {
            need_member(g, caller)?;
            let id = find(g, &file_id)?;
            let rec = &g.files[&id];
            if let Some(s) = secret {
                if !same_secret(s.as_bytes(), rec.secret.as_bytes()) {
                    return Err(ApiError::new(
                        ErrorCode::DownloadFileError,
                        format!("wrong secret for file \"{id}\" of group {:?}", g.id_str),
                    ));
                }
            }
            Ok((
                FileReply::Found {
                    file_id: id,
                    rec: rec.clone(),
                },
                None,
            ))
        }
    }
}

fn record(
    g: &mut Group,
    caller: &Caller,
    file_id: u64,
    rec: FileRec,
    limits: &FileLimits,
    now: i64,
) -> Result<(SharedFile, Effects), ApiError> {
    need_member(g, caller)?;
    check_size(rec.size, limits)?;
    check_quota(g, limits)?;
    if g.files.contains_key(&file_id) {
        return Err(ApiError::new(
            ErrorCode::Internal,
            format!("file id {file_id} is already used in group {:?}", g.id_str),
        ));
    }
    let file = rec.entry(file_id);
    g.files.insert(file_id, rec);
    let mut fx = Effects::done();
    fx.touch(Dirty::File(file_id));
    let detail = EventDetail::File { file: file.clone() };
    let ev = event(g, Op::UploadFile, &caller.user, vec![], detail, now);
    fx.announce.push(announce(ev, all_members(g), false));
    Ok((file, fx))
}

/// getGroupSharedFilelist: newest first.
pub(super) fn list(g: &Group, caller: &Caller, page_num: u32, page_size: u32) -> super::Outcome {
    if page_num < 1 {
        return Err(ApiError::param(format!(
            "pageNum {page_num} must be at least 1"
        )));
    }
    if !(1..=limits::MAX_FILE_PAGE).contains(&page_size) {
        return Err(ApiError::param(format!(
            "pageSize {page_size} must be 1 to {}",
            limits::MAX_FILE_PAGE
        )));
    }
    need_member(g, caller)?;
    let skip = (page_num as usize - 1).saturating_mul(page_size as usize);
    let files = g
        .files
        .iter()
        .rev()
        .skip(skip)
        .take(page_size as usize)
        .map(|(id, rec)| rec.entry(*id))
        .collect();
    Ok(Effects::read(Response::Files { files }))
}

/// deleteGroupSharedFile: owner, admins and app admins any file, members their own.
pub(super) fn delete(g: &mut Group, caller: &Caller, file_id: &str, now: i64) -> super::Outcome {
    need_member(g, caller)?;
    let id = find(g, file_id)?;
    if level(g, caller) < Level::Admin && g.files[&id].owner != caller.user {
        return Err(ApiError::denied(format!(
            "file \"{id}\" of group {:?} belongs to {:?}; only its owner or an admin may delete it",
            g.id_str, g.files[&id].owner
        )));
    }
    g.files.remove(&id);
    let mut fx = Effects::done();
    fx.touch(Dirty::File(id));
    let detail = EventDetail::FileId {
        file_id: id.to_string(),
    };
    let ev = event(g, Op::DeleteFile, &caller.user, vec![], detail, now);
    fx.announce.push(announce(ev, all_members(g), false));
    Ok(fx)
}

/// The id of an existing file, or 200 naming what was asked for.
fn find(g: &Group, file_id: &str) -> Result<u64, ApiError> {
    file_id
        .parse::<u64>()
        .ok()
        .filter(|id| g.files.contains_key(id))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::DownloadFileError,
                format!(
                    "file {} does not exist in group {:?}",
                    convoke_protocol::error::shown(file_id),
                    g.id_str
                ),
            )
        })
}

fn check_size(size: u64, limits: &FileLimits) -> Result<(), ApiError> {
    if size > limits.max_file_bytes {
        return Err(ApiError::new(
            ErrorCode::UploadFileError,
            format!(
                "file size {size} bytes is over the limit of {} bytes",
                limits.max_file_bytes
            ),
        ));
    }
    Ok(())
}

/// Refuses a new file when the group's files and the uploads in progress fill the quota.
fn check_quota(g: &Group, limits: &FileLimits) -> Result<(), ApiError> {
    if g.files.len() + g.uploading.len() >= limits.max_files_per_group {
        let uploading = match g.uploading.len() {
            0 => String::new(),
            n => format!(" and {n} more being uploaded"),
        };
        return Err(ApiError::new(
            ErrorCode::MaxLimit,
            format!(
                "group {:?} already has {} shared files{uploading}; the limit is {}",
                g.id_str,
                g.files.len(),
                limits.max_files_per_group
            ),
        ));
    }
    Ok(())
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
