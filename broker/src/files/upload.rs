//! Serving an upload stream (uploadGroupSharedFile).
//!
//! 1. The header is checked (group id, name, content type) and the group actor admits the
//!    upload (member, declared size, file quota counting the uploads in progress). A
//!    refusal is answered at once and the stream stopped: not a byte is taken. An admitted
//!    upload holds a place under the quota until it is recorded, or released when it fails.
//! 2. The bytes stream into `tmp/<file id>.part`, hashed on the way, 64 KiB at a time. The
//!    moment more bytes arrive than were declared, the stream is stopped and the upload
//!    fails (101). A stream that ends short, is reset by the client (cancel), stalls, or
//!    loses its connection fails too.
//! 3. At exactly the declared count: flush, fsync, rename into place (`Files::install`),
//!    then the group actor records the entry and announces `uploadFile`. If it refuses
//!    (the uploader left; or the group actor restarted, forgetting the hold, and the quota
//!    filled meanwhile), the blob is removed.
//!
//! A guard removes the partial file on every failure path, including this task being
//! dropped, so a failed or cancelled upload leaves no entry, no event and no file.

use super::{answer, FileRec, CHUNK};
use crate::clock::now_ms;
use crate::group::rules::files::{FileOp, FileReply};
use crate::group::rules::Caller;
use crate::node::Node;
use bytes::BytesMut;
use convoke_protocol::{ids::parse_group_id, ApiError, ErrorCode, SharedFile};
use quinn::{ReadError, RecvStream, SendStream};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Longest file name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// An upload's header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    pub group_id: String,
    pub file_name: String,
    pub size: u64,
    pub content_type: String,
}

/// Serves one upload stream; `head` holds bytes that arrived with the header.
pub async fn serve(
    node: &Node,
    caller: &Caller,
    mut send: SendStream,
    mut recv: RecvStream,
    head: BytesMut,
    req: UploadRequest,
) {
    let result = receive(node, caller, &mut recv, head, &req).await;
    match &result {
        Ok(f) => {
            tracing::debug!(user = %caller.user, group = %req.group_id, file = %f.file_id, size = f.file_size, "upload complete");
        }
        Err(e) => {
            tracing::debug!(user = %caller.user, group = %req.group_id, error = %e, "upload failed");
            // Take no more bytes; the client hears why on the send side.
            let _ = recv.stop(0u32.into());
        }
    }
    answer(&mut send, result).await;
}

async fn receive(
    node: &Node,
    caller: &Caller,
    recv: &mut RecvStream,
    head: BytesMut,
    req: &UploadRequest,
) -> Result<SharedFile, ApiError> {
    let gid = parse_group_id(&req.group_id)?;
    check_header(req)?;
    let fid = node.store.new_id().map_err(|e| internal(req, e))?;
    let admit = FileOp::Admit {
        file_id: fid,
        size: req.size,
    };
    // Armed before asking, so that a task dropped while waiting for the answer still gives
    // the place back (releasing a place never taken is harmless).
    let mut hold = Hold {
        node,
        gid,
        caller,
        fid,
        armed: true,
    };
    if let Err(e) = node.groups.file_op(gid, caller.clone(), admit).await {
        hold.armed = false;
        return Err(e);
    }

    let files = &node.files;
    let mut part = Partial::create(files.temp_path(fid))
        .await
        .map_err(|e| internal(req, e))?;
    let stall = Duration::from_secs(node.config.sessions.idle_timeout_secs.max(1));
    part.take(&head, req).await?;
    loop {
        let chunk = match tokio::time::timeout(stall, recv.read_chunk(CHUNK, true)).await {
            Ok(Ok(Some(chunk))) => chunk.bytes,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(stream_failed(req, part.got, e)),
            Err(_) => {
                return Err(upload_error(
                    req,
                    format!(
                        "stalled: no bytes for {} s after {} of the declared {} bytes",
                        stall.as_secs(),
                        part.got,
                        req.size
                    ),
                ))
            }
        };
        part.take(&chunk, req).await?;
    }
    if part.got != req.size {
        return Err(upload_error(
            req,
            format!(
                "ended after {} of the declared {} bytes",
                part.got, req.size
            ),
        ));
    }
    let sha256 = part.finish().await.map_err(|e| internal(req, e))?;
    if let Err(e) = files.install(&part.path, gid, fid).await {
        files.remove_blob(gid, fid);
        return Err(internal(req, e));
    }
    part.armed = false;

    let mut secret = [0u8; 16];
    rand::rng().fill_bytes(&mut secret);
    let rec = FileRec {
        name: req.file_name.clone(),
        owner: caller.user.clone(),
        size: req.size,
        created: now_ms(),
        content_type: req.content_type.clone(),
        sha256,
        secret: hex::encode(secret),
    };
    let record = FileOp::Record { file_id: fid, rec };
    // The record ends the hold on the quota, whatever its outcome.
    hold.armed = false;
    match node.groups.file_op(gid, caller.clone(), record).await {
        Ok(FileReply::Recorded(file)) => Ok(file),
        Ok(other) => {
            files.remove_blob(gid, fid);
            Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "unexpected answer to recording {:?}: {other:?}",
                    req.file_name
                ),
            ))
        }
        Err(e) if e.code == ErrorCode::ServerBusy => {
            // The actor went away mid-call: the entry may or may not be committed, so the
            // blob stays; if no entry names it, the next start removes it.
            tracing::warn!(group = gid, file = fid, error = %e, "upload record outcome unknown");
            Err(e)
        }
        Err(e) => {
            files.remove_blob(gid, fid);
            Err(e)
        }
    }
}

fn check_header(req: &UploadRequest) -> Result<(), ApiError> {
    let chars = req.file_name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::param(format!(
            "file name {:?} must be 1 to {MAX_NAME_CHARS} characters, got {chars}",
            req.file_name
        )));
    }
    if req.file_name.chars().any(char::is_control) {
        return Err(ApiError::param(format!(
            "file name {:?} contains a control character",
            req.file_name
        )));
    }
    let ct = &req.content_type;
    if ct.len() > MAX_CONTENT_TYPE_BYTES || !ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(ApiError::param(format!(
            "content type {ct:?} must be at most {MAX_CONTENT_TYPE_BYTES} printable ASCII bytes"
        )));
    }
    Ok(())
}

/// An admitted upload's place under the group's file quota; given back on drop unless
/// disarmed (the upload is being recorded). Covers every failure path, including this
/// task being dropped.
struct Hold<'a> {
    node: &'a Node,
    gid: u64,
    caller: &'a Caller,
    fid: u64,
    armed: bool,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.node
                .groups
                .release_upload(self.gid, self.caller.clone(), self.fid);
        }
    }
}

/// A temp file being written; removed on drop unless disarmed (installed).
struct Partial {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    got: u64,
    armed: bool,
}

impl Partial {
    async fn create(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::fs::File::create(&path).await?;
        Ok(Self {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            got: 0,
            armed: true,
        })
    }

    /// Appends `bytes`, refusing any beyond the declared size.
    async fn take(&mut self, bytes: &[u8], req: &UploadRequest) -> Result<(), ApiError> {
        if bytes.is_empty() {
            return Ok(());
        }
        metrics::counter!("convoke_file_bytes_total", "direction" => "up")
            .increment(bytes.len() as u64);
        self.got = self.got.saturating_add(bytes.len() as u64);
        if self.got > req.size {
            return Err(upload_error(
                req,
                format!("sent more than the declared {} bytes", req.size),
            ));
        }
        self.hasher.update(bytes);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| internal(req, "file closed"))?;
        file.write_all(bytes).await.map_err(|e| internal(req, e))
    }

    /// Makes the content durable and returns its hex SHA-256.
    async fn finish(&mut self) -> std::io::Result<String> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            file.sync_all().await?;
        }
        Ok(hex::encode(std::mem::take(&mut self.hasher).finalize()))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.armed {
            drop(self.file.take());
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove a partial upload; the next start will");
                }
                _ => {}
            }
        }
    }
}

fn upload_error(req: &UploadRequest, what: String) -> ApiError {
    ApiError::new(
        ErrorCode::UploadFileError,
        format!(
            "upload of {:?} to group {} {what}",
            req.file_name, req.group_id
        ),
    )
}

fn stream_failed(req: &UploadRequest, got: u64, e: ReadError) -> ApiError {
    let what = match e {
        ReadError::Reset(code) => format!(
            "was cancelled by the client (stream reset with code {code}) after {got} of {} bytes",
            req.size
        ),
        other => format!("failed after {got} of {} bytes: {other}", req.size),
    };
    upload_error(req, what)
}

fn internal(req: &UploadRequest, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(file = %req.file_name, group = %req.group_id, error = %e, "upload could not be stored");
    ApiError::new(
        ErrorCode::Internal,
        format!(
            "the upload of {:?} could not be stored, nothing was kept: {e}",
            req.file_name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, ct: &str) -> UploadRequest {
        UploadRequest {
            group_id: "1".into(),
            file_name: name.into(),
            size: 1,
            content_type: ct.into(),
        }
    }

    #[test]
    fn header_checks_name_the_bad_value() {
        assert!(check_header(&req("a.txt", "text/plain")).is_ok());
        assert!(check_header(&req("ünïcode ok.txt", "")).is_ok());
        let e = check_header(&req("", "text/plain")).expect_err("empty");
        assert_eq!(e.code, ErrorCode::RequestParameterError);
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert!(check_header(&req(&long, "x")).is_err());
        let e = check_header(&req("a\nb", "x")).expect_err("control");
        assert!(e.message.contains("a\\nb"), "{e}");
        let e = check_header(&req("a", "text/plain\r\n")).expect_err("ct");
        assert!(e.message.contains("text/plain"), "{e}");
    }

    #[tokio::test]
    async fn a_partial_file_is_removed_unless_installed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.part");
        let r = req("a", "x");
        {
            let mut p = Partial::create(path.clone()).await.expect("create");
            p.take(b"x", &r).await.expect("one byte fits");
            let e = p.take(b"y", &r).await.expect_err("over the declared size");
            assert_eq!(e.code, ErrorCode::UploadFileError);
            assert!(path.exists());
        }
        assert!(!path.exists(), "dropped without install: removed");
        let mut p = Partial::create(path.clone()).await.expect("create");
        p.take(b"x", &r).await.expect("fits");
        let digest = p.finish().await.expect("finish");
        assert_eq!(digest, hex::encode(Sha256::digest(b"x")));
        p.armed = false;
        drop(p);
        assert!(path.exists(), "an installed file stays");
    }
}
