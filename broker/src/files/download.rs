//! Serving a download stream (downloadGroupSharedFile).
//!
//! The group actor looks the file up (member, known id, right secret if one is given); the
//! blob is opened and its length checked against the entry; then the outcome frame (the
//! entry, whose SHA-256 lets the client verify what it got) goes out, followed by the file
//! in 64 KiB chunks read from disk as the stream takes them, never the whole file in memory.
//! A client that cancels (stops the stream) or stops reading ends the transfer, and so does
//! one that reads slower than `files.transfer_min_bytes_per_sec` over a rate window or for
//! longer than `files.transfer_max_secs` (the stream is reset; the client may resume from
//! an offset).
//!
//! A download may start at a byte offset (a resume): the outcome still carries the whole
//! entry (its full size and SHA-256), and the bytes from the offset to the end follow. An
//! offset past the end is -3 naming both.
//!
//! A file deleted between the look-up and the open is reported missing (200); one deleted
//! while it streams is still served whole (the open handle keeps its bytes).

use super::{answer, write_outcome, CHUNK};
use crate::group::rules::files::{FileOp, FileReply};
use crate::group::rules::Caller;
use crate::node::Node;
use crate::session::transfer::Pace;
use bytes::Bytes;
use convoke_protocol::{ids::parse_group_id, ApiError, ErrorCode, SharedFile};
use quinn::SendStream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// A download's header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRequest {
    pub group_id: String,
    pub file_id: String,
    pub secret: Option<String>,
    /// The first byte to send.
    pub offset: u64,
}

/// Serves one download stream.
pub async fn serve(
    node: &Node,
    caller: &Caller,
    mut send: SendStream,
    req: DownloadRequest,
    pace: &mut Pace,
) {
    let (file, entry) = match open(node, caller, &req).await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(user = %caller.user, group = %req.group_id, file = %req.file_id, error = %e, "download refused");
            answer(&mut send, Err(e)).await;
            return;
        }
    };
    if !write_outcome(&mut send, Ok(entry.clone())).await {
        return;
    }
    if req.offset > 0 {
        metrics::counter!("convoke_file_resumes_total", "direction" => "down").increment(1);
    }
    let stall = Duration::from_secs(node.config.sessions.idle_timeout_secs.max(1));
    let left = entry.file_size - req.offset;
    match stream(file, left, &mut send, stall, pace).await {
        Ok(()) => {
            let _ = send.finish();
            tracing::debug!(user = %caller.user, group = %req.group_id, file = %req.file_id, size = entry.file_size, offset = req.offset, "download complete");
        }
        Err(why) => {
            let _ = send.reset(0u32.into());
            tracing::debug!(user = %caller.user, group = %req.group_id, file = %req.file_id, %why, "download ended early");
        }
    }
}

/// The look-up and the open: everything that can still be answered with an error frame.
async fn open(
    node: &Node,
    caller: &Caller,
    req: &DownloadRequest,
) -> Result<(tokio::fs::File, SharedFile), ApiError> {
    let gid = parse_group_id(&req.group_id)?;
    let op = FileOp::Fetch {
        file_id: req.file_id.clone(),
        secret: req.secret.clone(),
    };
    let (fid, rec) = match crate::ingress::file(node, gid, caller.clone(), op).await? {
        FileReply::Found { file_id, rec } => (file_id, rec),
        other => {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "unexpected answer to looking up file {:?}: {other:?}",
                    req.file_id
                ),
            ))
        }
    };
    let path = node.files.blob_path(gid, fid);
    let missing = |why: String| {
        ApiError::new(
            ErrorCode::DownloadFileError,
            format!(
                "file {:?} of group {gid} cannot be read: {why}",
                req.file_id
            ),
        )
    };
    check_offset(req, rec.size)?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(path = %path.display(), error = %e, "shared file cannot be opened");
        }
        missing(e.to_string())
    })?;
    let len = file
        .metadata()
        .await
        .map_err(|e| missing(e.to_string()))?
        .len();
    if len != rec.size {
        tracing::error!(path = %path.display(), len, expected = rec.size, "shared file has the wrong size on disk");
        return Err(missing(format!(
            "{len} bytes on disk, {} in the index",
            rec.size
        )));
    }
    if req.offset > 0 {
        file.seek(std::io::SeekFrom::Start(req.offset))
            .await
            .map_err(|e| missing(e.to_string()))?;
    }
    Ok((file, rec.entry(fid)))
}

/// A download may start anywhere up to the end of the file (at the end: no bytes follow).
fn check_offset(req: &DownloadRequest, size: u64) -> Result<(), ApiError> {
    if req.offset > size {
        return Err(ApiError::param(format!(
            "offset {} is past the end of file {:?} ({size} bytes)",
            req.offset, req.file_id
        )));
    }
    Ok(())
}

/// Copies `size` bytes of `file` (from where it stands) to `send`, chunk by chunk.
async fn stream(
    mut file: tokio::fs::File,
    size: u64,
    send: &mut SendStream,
    stall: Duration,
    pace: &mut Pace,
) -> Result<(), String> {
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = vec![0u8; want];
        file.read_exact(&mut buf)
            .await
            .map_err(|e| format!("read failed with {left} bytes to go: {e}"))?;
        let n = buf.len() as u64;
        // `write_chunks` is cancel-safe (it advances the chunk by what it took), so a pace
        // check at a window's end that passes loses nothing.
        let mut chunk = [Bytes::from(buf)];
        while !chunk[0].is_empty() {
            let wrote = tokio::time::timeout_at(
                pace.next_check(),
                tokio::time::timeout(stall, send.write_chunks(&mut chunk)),
            )
            .await;
            match wrote {
                Err(_) => {}
                Ok(Ok(Ok(w))) => pace.moved(w.bytes as u64),
                Ok(Ok(Err(e))) => return Err(format!("stream closed: {e}")),
                Ok(Err(_)) => return Err(format!("client took nothing for {} s", stall.as_secs())),
            }
            pace.check(tokio::time::Instant::now()).map_err(|e| {
                Pace::count(&e);
                e.to_string()
            })?;
        }
        metrics::counter!("convoke_file_bytes_total", "direction" => "down").increment(n);
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_up_to_the_end_is_accepted_and_past_it_is_named() {
        let mut req = DownloadRequest {
            group_id: "1".into(),
            file_id: "9".into(),
            secret: None,
            offset: 0,
        };
        assert!(check_offset(&req, 0).is_ok());
        req.offset = 10;
        assert!(
            check_offset(&req, 10).is_ok(),
            "at the end: nothing follows"
        );
        req.offset = 11;
        let e = check_offset(&req, 10).expect_err("past the end");
        assert_eq!(e.code, ErrorCode::RequestParameterError);
        assert!(
            e.message.contains("offset 11") && e.message.contains("10 bytes"),
            "{e}"
        );
    }
}
