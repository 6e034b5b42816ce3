//! Serving an upload stream (uploadGroupSharedFile).
//!
//! 1. The header is checked (group id, name, content type) and its upload id claimed
//!    ([`super::resume`]). A new upload is admitted by the group actor (member, declared
//!    size, file quota counting the uploads in progress and those kept for a resume). A
//!    refusal is answered at once and the stream stopped: not a byte is taken. An admitted
//!    upload holds a place under the quota until it is recorded, or released.
//!    A resume (`resume: true`) takes over the partial file kept under its id (the same
//!    group, name, size and content type, else -3 naming the difference) and answers
//!    `ResumeAt` with its length; an id the broker does not know is admitted afresh and
//!    answered `ResumeAt { offset: 0 }`; an id that completed is answered its entry.
//! 2. The bytes stream into `tmp/<file id>.part`, hashed on the way, 64 KiB at a time. The
//!    moment more bytes arrive than were declared, the stream is stopped and the upload
//!    fails (101); so does a stream that ends short or that the client cancels (reset with
//!    `CANCELLED`): the partial file is deleted and the place released at once. A stream
//!    that breaks (connection lost, reset with another code, no bytes for the idle timeout,
//!    slower than `files.transfer_min_bytes_per_sec` over a rate window, past
//!    `files.transfer_max_secs`, or taken over by a resume on another stream) keeps the
//!    partial file, fsynced, and its place for `files.resume_keep_secs`; then both are
//!    released.
//! 3. At exactly the declared count: flush, fsync, rename into place (`Files::install`),
//!    then the group actor records the entry and announces `uploadFile`. If it refuses
//!    (the uploader left; or the group actor restarted, forgetting the hold, and the quota
//!    filled meanwhile), the blob is removed. The completed id is remembered for the keep
//!    time, so a resume whose final answer was lost gets the entry, not a second file.
//!
//! Guards remove the partial file and give the place back on every failure path, including
//! this task being dropped, so a failed or cancelled upload leaves no entry, no event and
//! no file.

use super::resume::{Claim, Lease, UploadKey};
use super::{answer, write_reply, FileRec, CHUNK};
use crate::clock::now_ms;
use crate::group::directory::Groups;
use crate::group::rules::files::{FileOp, FileReply};
use crate::group::rules::Caller;
use crate::node::Node;
use crate::session::transfer::Pace;
use bytes::BytesMut;
use convoke_protocol::transfer::{TransferReply, CANCELLED};
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
    /// The client's id for this upload, the same for every attempt.
    pub upload_id: u64,
    /// Whether this stream continues an earlier attempt.
    pub resume: bool,
}

/// An upload in progress or kept for a resume: its temp file and its place under the quota.
/// Dropping it deletes the file and gives the place back.
#[derive(Debug)]
pub struct Kept {
    fid: u64,
    part: Partial,
    hold: Hold,
}

/// Serves one upload stream; `head` holds bytes that arrived with the header.
pub async fn serve(
    node: &Node,
    caller: &Caller,
    mut send: SendStream,
    mut recv: RecvStream,
    head: BytesMut,
    req: UploadRequest,
    pace: &mut Pace,
) {
    let result = receive(node, caller, &mut send, &mut recv, head, &req, pace).await;
    match &result {
        Ok(f) => {
            tracing::debug!(user = %caller.user, group = %req.group_id, file = %f.file_id, size = f.file_size, upload_id = req.upload_id, "upload complete");
        }
        Err(e) => {
            tracing::debug!(user = %caller.user, group = %req.group_id, upload_id = req.upload_id, error = %e, "upload failed");
            // Take no more bytes; the client hears why on the send side.
            let _ = recv.stop(0u32.into());
        }
    }
    answer(&mut send, result).await;
}

/// Why the bytes stopped coming.
enum Stop {
    /// The stream broke: keep what arrived for a resume.
    Broken(String),
    /// The upload failed for good: release it.
    Failed(ApiError),
}

async fn receive(
    node: &Node,
    caller: &Caller,
    send: &mut SendStream,
    recv: &mut RecvStream,
    head: BytesMut,
    req: &UploadRequest,
    pace: &mut Pace,
) -> Result<SharedFile, ApiError> {
    let gid = parse_group_id(&req.group_id)?;
    check_header(req)?;
    node.quotas
        .check_disk(crate::quota::Disk::Files, ErrorCode::UploadFileError)?;
    let elsewhere = if node.quotas.counts_file_bytes() {
        crate::cluster::scatter::file_bytes_elsewhere(&caller.user).await
    } else {
        0
    };
    node.quotas
        .check_file_bytes(&caller.user, req.size, elsewhere)
        .await?;
    let key = UploadKey {
        user: caller.user.clone(),
        upload_id: req.upload_id,
    };
    let (lease, mut kept) = match node.files.uploads.claim(key, req).await? {
        Claim::Completed(file) => {
            metrics::counter!("convoke_file_resumes_total", "direction" => "up").increment(1);
            return Ok(file);
        }
        Claim::Kept(lease, kept) => {
            metrics::counter!("convoke_file_resumes_total", "direction" => "up").increment(1);
            (lease, kept)
        }
        Claim::Fresh(lease) => (lease, admit(node, caller, gid, req).await?),
    };
    let keep = Duration::from_secs(node.config.files.resume_keep_secs);
    if req.resume {
        if !head.is_empty() {
            return Err(ApiError::param(format!(
                "a resumed upload sends its bytes after the broker's ResumeAt; {} came with the header",
                head.len()
            )));
        }
        kept.part.reopen().await.map_err(|e| internal(req, e))?;
        let offset = kept.part.got;
        if !write_reply(send, TransferReply::ResumeAt { offset }).await {
            let why = "broke before its resume offset was sent".to_string();
            return Err(interrupt(lease, req, kept, why, keep).await);
        }
        tracing::debug!(user = %caller.user, group = %req.group_id, upload_id = req.upload_id, offset, "upload resumed");
    }

    let stall = Duration::from_secs(node.config.sessions.idle_timeout_secs.max(1));
    match receive_bytes(recv, head, req, &mut kept.part, &lease, stall, pace).await {
        Ok(()) => {}
        Err(Stop::Failed(e)) => return Err(e),
        Err(Stop::Broken(why)) => return Err(interrupt(lease, req, kept, why, keep).await),
    }

    let files = &node.files;
    let sha256 = kept.part.finish().await.map_err(|e| internal(req, e))?;
    let fid = kept.fid;
    if let Err(e) = files.install(&kept.part.path, gid, fid).await {
        files.remove_blob(gid, fid);
        return Err(internal(req, e));
    }
    kept.part.armed = false;

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
    kept.hold.armed = false;
    match crate::ingress::file(node, gid, caller.clone(), record).await {
        Ok(FileReply::Recorded(file)) => {
            node.quotas.file_recorded(&caller.user, file.file_size);
            lease.complete(req.clone(), file.clone(), keep);
            Ok(file)
        }
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

/// A new upload: the group actor admits it (its place under the quota is held from now on)
/// and its temp file is created.
async fn admit(
    node: &Node,
    caller: &Caller,
    gid: u64,
    req: &UploadRequest,
) -> Result<Kept, ApiError> {
    let fid = node.store.new_id().map_err(|e| internal(req, e))?;
    let admit = FileOp::Admit {
        file_id: fid,
        size: req.size,
    };
    // Armed before asking, so that a task dropped while waiting for the answer still gives
    // the place back (releasing a place never taken is harmless).
    let mut hold = Hold {
        groups: node.groups.clone(),
        gid,
        caller: caller.clone(),
        fid,
        armed: true,
    };
    if let Err(e) = crate::ingress::file(node, gid, caller.clone(), admit).await {
        hold.armed = false;
        return Err(e);
    }
    let part = Partial::create(node.files.temp_path(fid))
        .await
        .map_err(|e| internal(req, e))?;
    Ok(Kept { fid, part, hold })
}

/// Takes the stream's bytes into `part` until the declared size, the end of the stream, or
/// a break.
async fn receive_bytes(
    recv: &mut RecvStream,
    head: BytesMut,
    req: &UploadRequest,
    part: &mut Partial,
    lease: &Lease<Kept>,
    stall: Duration,
    pace: &mut Pace,
) -> Result<(), Stop> {
    part.take(&head, req).await.map_err(Stop::Failed)?;
    pace.moved(head.len() as u64);
    loop {
        let slow = |e: crate::session::transfer::TooSlow| {
            Pace::count(&e);
            Stop::Broken(e.to_string())
        };
        // Only the wait for bytes is cut short by a takeover or a pace check, never a write
        // in progress, so the kept file always holds exactly `part.got` bytes.
        let read = tokio::select! {
            biased;
            () = lease.stop_requested() => {
                return Err(Stop::Broken("was taken over by a resume on another stream".into()));
            }
            read = tokio::time::timeout_at(
                pace.next_check(),
                tokio::time::timeout(stall, recv.read_chunk(CHUNK, true)),
            ) => read,
        };
        pace.check(tokio::time::Instant::now()).map_err(slow)?;
        let Ok(read) = read else {
            // The pace was checked at the end of its window, and passed.
            continue;
        };
        match read {
            Ok(Ok(Some(chunk))) => {
                part.take(&chunk.bytes, req).await.map_err(Stop::Failed)?;
                pace.moved(chunk.bytes.len() as u64);
            }
            Ok(Ok(None)) => break,
            Ok(Err(ReadError::Reset(code))) if is_cancelled(code) => {
                return Err(Stop::Failed(upload_error(
                    req,
                    format!(
                        "was cancelled by the client (stream reset with code {code}) after {} of {} bytes",
                        part.got, req.size
                    ),
                )));
            }
            Ok(Err(e @ (ReadError::Reset(_) | ReadError::ConnectionLost(_)))) => {
                return Err(Stop::Broken(format!("broke ({e})")));
            }
            Ok(Err(e)) => {
                return Err(Stop::Failed(upload_error(
                    req,
                    format!("failed after {} of {} bytes: {e}", part.got, req.size),
                )));
            }
            Err(_) => {
                return Err(Stop::Broken(format!(
                    "stalled: no bytes for {} s",
                    stall.as_secs()
                )));
            }
        }
    }
    if part.got != req.size {
        return Err(Stop::Failed(upload_error(
            req,
            format!(
                "ended after {} of the declared {} bytes",
                part.got, req.size
            ),
        )));
    }
    Ok(())
}

/// The stream broke: makes what arrived durable and keeps it for a resume (or releases it
/// when nothing is kept). Returns the error the stream is answered with, if it still can be.
async fn interrupt(
    lease: Lease<Kept>,
    req: &UploadRequest,
    mut kept: Kept,
    why: String,
    keep: Duration,
) -> ApiError {
    let got = kept.part.got;
    let what = format!("{why} after {got} of the declared {} bytes", req.size);
    if keep.is_zero() {
        return upload_error(req, format!("{what}; nothing was kept"));
    }
    if let Err(e) = kept.part.park().await {
        return internal(req, format!("{what}, and could not be kept: {e}"));
    }
    tracing::debug!(group = %req.group_id, upload_id = req.upload_id, got, keep_secs = keep.as_secs(), "upload interrupted: kept for a resume");
    lease.keep(req.clone(), kept, keep);
    upload_error(
        req,
        format!(
            "{what}; resume upload id {} within {} s",
            req.upload_id,
            keep.as_secs()
        ),
    )
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
/// task being dropped and a kept upload expiring.
#[derive(Debug)]
struct Hold {
    groups: Groups,
    gid: u64,
    caller: Caller,
    fid: u64,
    armed: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.armed {
            crate::ingress::release_upload(&self.groups, self.gid, self.caller.clone(), self.fid);
        }
    }
}

/// A temp file being written; removed on drop unless disarmed (installed).
#[derive(Debug)]
struct Partial {
    path: PathBuf,
    /// Open while bytes arrive; closed while kept for a resume.
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    /// Bytes written to the file.
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
        if self.got.saturating_add(bytes.len() as u64) > req.size {
            return Err(upload_error(
                req,
                format!("sent more than the declared {} bytes", req.size),
            ));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| internal(req, "file closed"))?;
        file.write_all(bytes).await.map_err(|e| internal(req, e))?;
        self.hasher.update(bytes);
        self.got += bytes.len() as u64;
        Ok(())
    }

    /// Makes what arrived durable and closes the file (kept for a resume).
    async fn park(&mut self) -> std::io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            file.sync_all().await?;
        }
        Ok(())
    }

    /// Opens a kept file again to append to it; it must hold exactly the bytes counted.
    async fn reopen(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .await?;
        let len = file.metadata().await?.len();
        if len != self.got {
            return Err(std::io::Error::other(format!(
                "the kept partial file holds {len} bytes, {} were received",
                self.got
            )));
        }
        self.file = Some(file);
        Ok(())
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

/// The CANCELLED reset code, as a `convoke/1` client sends it or as a browser's
/// WebTransport stream carries it (mapped into HTTP/3's code space).
fn is_cancelled(code: quinn::VarInt) -> bool {
    let code = code.into_inner();
    code == u64::from(CANCELLED) || code == web_transport_quinn::proto::error_to_http3(CANCELLED)
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
            upload_id: 1,
            resume: false,
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

    #[tokio::test]
    async fn a_kept_file_is_durable_and_continues_where_it_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("2.part");
        let mut r = req("a", "x");
        r.size = 6;
        let mut p = Partial::create(path.clone()).await.expect("create");
        p.take(b"abc", &r).await.expect("fits");
        p.park().await.expect("park");
        assert!(p.file.is_none(), "a kept file is closed");
        assert_eq!(std::fs::read(&path).expect("read"), b"abc");
        p.reopen().await.expect("reopen");
        p.take(b"def", &r).await.expect("fits");
        assert!(p.take(b"g", &r).await.is_err(), "over the declared size");
        assert_eq!(p.got, 6);
        let digest = p.finish().await.expect("finish");
        assert_eq!(digest, hex::encode(Sha256::digest(b"abcdef")));
        assert_eq!(std::fs::read(&path).expect("read"), b"abcdef");

        // A kept file that lost or gained bytes behind the broker's back is not continued.
        let other = dir.path().join("3.part");
        let mut q = Partial::create(other.clone()).await.expect("create");
        q.take(b"abc", &r).await.expect("fits");
        q.park().await.expect("park");
        std::fs::write(&other, b"ab").expect("truncate");
        let e = q.reopen().await.expect_err("length differs");
        assert!(e.to_string().contains("2 bytes"), "{e}");
    }
}
