//! Shared-file transfers, each on its own QUIC stream so a large file never delays chat
//! traffic: [`Client::upload_group_shared_file`](crate::Client::upload_group_shared_file) and
//! [`Client::download_group_shared_file`](crate::Client::download_group_shared_file).
//!
//! A transfer runs in its own task and is represented by a [`Transfer`]: await it for the
//! file's index entry, cancel it through a [`CancelHandle`] (or by dropping it). Cancelling
//! resets the stream with [`CANCELLED`] and yields [`ClientError::Cancelled`]. Bytes move
//! in 64 KiB chunks; a file is never held in memory whole. Progress is reported to an
//! optional callback ([`ProgressFn`], see [`progress_channel`] for a channel instead).
//!
//! Stream layout (protocol `transfer` module): one `TransferHeader` frame; for an upload the
//! raw bytes and the end of the stream, then one `TransferReply::Outcome` back; for a
//! download one `Outcome` back followed by the raw bytes to the end of the stream.
//!
//! **Resume.** A transfer whose connection is lost mid-way (or whose final answer does not
//! come within the request timeout) carries on by itself: it asks the client for its
//! connection again ([`Client::connection`](crate::Client), which waits while the client
//! reconnects) and opens a new stream. An upload says `resume: true` with its upload id;
//! the broker answers how many bytes it holds durably and only the rest is sent (an upload
//! that had completed is answered its entry: it is never recorded twice). A download asks
//! for the bytes from what its destination already holds. This goes on while the client
//! yields connections, for up to [`RESUME_WITHIN`] after the last interruption that
//! followed progress; progress never goes backwards and [`Progress::resumed_at`] says
//! where the broker picked up. A busy refusal by the broker (500; in a cluster, the
//! group's owner node unreachable) is retried for no longer than the client's request
//! timeout without progress, then ends the transfer with that error.

mod download;
mod source;
mod upload;

pub use download::DownloadDest;
pub use source::{UploadSource, REPLAY_BYTES};

use crate::client::Client;
use crate::error::ClientError;
use bytes::BytesMut;
use convoke_protocol::codec::{decode_frame, MAX_FRAME_LEN};
use convoke_protocol::transfer::TransferReply;
use convoke_protocol::SharedFile;
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The application error code a cancelled transfer's stream is reset (and stopped) with;
/// the broker then drops a partial upload at once instead of keeping it for a resume.
pub const CANCELLED: u32 = convoke_protocol::transfer::CANCELLED;

/// How long a transfer keeps trying to resume after an interruption (counted from the last
/// interruption that followed progress). The broker keeps an interrupted upload for
/// `files.resume_keep_secs`, 300 s by default.
pub const RESUME_WITHIN: Duration = Duration::from_secs(300);

/// Bytes moved per chunk.
pub(crate) const CHUNK: usize = convoke_protocol::transfer::CHUNK_BYTES;

/// Longest pause between two attempts to resume.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Bytes sent or received so far. Never goes down, even when a resume sends again
    /// bytes the broker had not made durable.
    pub done: u64,
    /// The file's size.
    pub total: u64,
    /// Set once the transfer resumed (after a lost connection, or when asked to resume):
    /// the byte offset it resumed at, the latest one if it resumed several times. An
    /// upload resumed at 0 started over (the broker no longer had its partial file).
    pub resumed_at: Option<u64>,
}

/// A progress callback, called after every chunk (and once with `done == 0` at the start,
/// and once when the transfer resumes). It runs on the transfer's task: keep it quick.
pub type ProgressFn = Box<dyn FnMut(Progress) + Send + 'static>;

/// A [`ProgressFn`] that forwards to a channel. Updates are dropped while the channel is
/// full (the transfer never waits for its observer); the final result comes from the
/// [`Transfer`] itself.
pub fn progress_channel(tx: mpsc::Sender<Progress>) -> ProgressFn {
    Box::new(move |p| {
        let _ = tx.try_send(p);
    })
}

/// Feeds a [`ProgressFn`], never backwards.
pub(crate) struct Reporter {
    f: Option<ProgressFn>,
    total: u64,
    /// The most ever reported.
    high: u64,
    resumed_at: Option<u64>,
}

impl Reporter {
    pub(crate) fn new(f: Option<ProgressFn>, total: u64) -> Self {
        Self {
            f,
            total,
            high: 0,
            resumed_at: None,
        }
    }

    pub(crate) fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    /// `done` bytes are through (reported as no less than anything reported before).
    pub(crate) fn report(&mut self, done: u64) {
        self.high = self.high.max(done);
        if let Some(f) = self.f.as_mut() {
            f(Progress {
                done: self.high,
                total: self.total,
                resumed_at: self.resumed_at,
            });
        }
    }

    /// The transfer resumed at byte `offset`.
    pub(crate) fn resumed(&mut self, offset: u64) {
        self.resumed_at = Some(offset);
        self.report(offset);
    }
}

/// Cancels one transfer; cheap to clone and usable from any task.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl CancelHandle {
    /// Cancels the transfer (no effect once it has finished).
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }
}

/// Resolves when the transfer is cancelled.
pub(crate) async fn cancelled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        // The sender lives in the Transfer, which cancels before it goes away.
        std::future::pending::<()>().await;
    }
}

/// A running upload or download. Await it for the file's entry.
///
/// Dropping it before it completes cancels the transfer, like dropping any future.
#[must_use = "a Transfer is cancelled when dropped; await it"]
pub struct Transfer {
    task: JoinHandle<Result<SharedFile, ClientError>>,
    cancel: CancelHandle,
    upload_id: Option<u64>,
}

impl Transfer {
    pub(crate) fn spawn<F, Fut>(upload_id: Option<u64>, start: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = Result<SharedFile, ClientError>> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        Self {
            task: tokio::spawn(start(rx)),
            cancel: CancelHandle { tx: Arc::new(tx) },
            upload_id,
        }
    }

    /// An upload's id (`None` for a download): give it to
    /// [`UploadSource::resume`] to continue this upload from another connection of the same
    /// user (e.g. after the application restarted) while the broker still keeps it.
    pub fn upload_id(&self) -> Option<u64> {
        self.upload_id
    }

    /// A handle that cancels this transfer from elsewhere.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Cancels the transfer; awaiting it then yields [`ClientError::Cancelled`] (unless it
    /// had already completed).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Future for Transfer {
    type Output = Result<SharedFile, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().task)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                Err(e) => Err(ClientError::Io(format!("transfer task failed: {e}"))),
            })
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if !self.task.is_finished() {
            self.cancel.cancel();
        }
    }
}

impl fmt::Debug for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfer")
            .field("upload_id", &self.upload_id)
            .field("finished", &self.task.is_finished())
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

/// How one attempt of a transfer (one stream) ended, when not with the file's entry.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The connection was lost or the broker did not answer in time: try again on the
    /// client's next connection, resuming (for up to [`RESUME_WITHIN`]).
    Lost(String),
    /// The broker refused it with a retryable error (busy; in a cluster, the group's owner
    /// node unreachable): try again, resuming, for up to the client's request timeout
    /// without progress, then fail with this error.
    Busy(convoke_protocol::ApiError),
    /// The transfer is over with this error.
    Fatal(ClientError),
}

impl From<ClientError> for Attempt {
    fn from(e: ClientError) -> Self {
        Self::Fatal(e)
    }
}

/// A broker refusal: final, unless the broker says to retry (busy, restarting).
pub(crate) fn refused(e: convoke_protocol::ApiError) -> Attempt {
    if e.code.is_retryable() {
        Attempt::Busy(e)
    } else {
        Attempt::Fatal(ClientError::Api(e))
    }
}

/// Opens a transfer stream on `conn`.
pub(crate) async fn open_stream(
    conn: &quinn::Connection,
) -> Result<(SendStream, RecvStream), Attempt> {
    conn.open_bi()
        .await
        .map_err(|e| Attempt::Lost(format!("cannot open a transfer stream: {e}")))
}

/// Maps a failed write on a transfer stream.
pub(crate) fn write_failed(e: WriteError) -> Attempt {
    match e {
        WriteError::ConnectionLost(e) => Attempt::Lost(e.to_string()),
        other => Attempt::Fatal(ClientError::Io(format!("transfer stream: {other}"))),
    }
}

/// Maps a failed read on a transfer stream.
pub(crate) fn read_failed(e: ReadError) -> Attempt {
    match e {
        ReadError::ConnectionLost(e) => Attempt::Lost(e.to_string()),
        ReadError::Reset(code) => Attempt::Fatal(ClientError::Io(format!(
            "the broker reset the transfer stream (code {code})"
        ))),
        other => Attempt::Fatal(ClientError::Io(format!("transfer stream: {other}"))),
    }
}

/// Reads one [`TransferReply`] frame; bytes after it stay in `buf`.
pub(crate) async fn read_reply(
    recv: &mut RecvStream,
    buf: &mut BytesMut,
) -> Result<TransferReply, Attempt> {
    loop {
        match decode_frame::<TransferReply>(buf, MAX_FRAME_LEN) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(e) => {
                return Err(Attempt::Fatal(ClientError::Protocol(format!(
                    "transfer reply: {e}"
                ))))
            }
        }
        match recv.read_chunk(CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(Attempt::Fatal(ClientError::Protocol(
                    "the transfer stream ended without an outcome".to_string(),
                )))
            }
            Err(e) => return Err(read_failed(e)),
        }
    }
}

/// Abandons both halves of a transfer stream.
pub(crate) fn abort(send: &mut SendStream, recv: &mut RecvStream) {
    let _ = send.reset(VarInt::from_u32(CANCELLED));
    let _ = recv.stop(VarInt::from_u32(CANCELLED));
}

/// When and how a transfer tries again after interruptions.
pub(crate) struct Retry {
    /// No new attempt starts after this: [`RESUME_WITHIN`] after the first interruption,
    /// renewed by every interruption that followed progress.
    deadline: Option<Instant>,
    /// Pause before the next attempt (0 after an attempt that made progress).
    backoff: Duration,
    /// Why the last attempt stopped.
    last: String,
    /// Since when the broker has refused every attempt as busy, with no progress between.
    busy_since: Option<Instant>,
    /// The first busy refusal that said the transfer may or may not have been recorded:
    /// what a give-up reports, so that the application does not upload it anew blindly.
    open: Option<convoke_protocol::ApiError>,
}

impl Retry {
    pub(crate) fn new() -> Self {
        Self {
            deadline: None,
            backoff: Duration::ZERO,
            last: String::new(),
            busy_since: None,
            open: None,
        }
    }

    /// How an attempt that moved the transfer from `from` to `to` bytes ended: `Ok` to
    /// try again (resuming), the transfer's error otherwise: a fatal one, or a busy
    /// refusal repeated without progress for longer than `patience` (the client's request
    /// timeout: a command waits that long for a node to come back, not [`RESUME_WITHIN`]).
    pub(crate) fn after(
        &mut self,
        attempt: Attempt,
        progressed: bool,
        patience: Duration,
    ) -> Result<(), ClientError> {
        let why = match attempt {
            Attempt::Fatal(e) => return Err(e),
            Attempt::Lost(why) => {
                self.busy_since = None;
                why
            }
            Attempt::Busy(e) => {
                if progressed {
                    self.busy_since = None;
                }
                let since = *self.busy_since.get_or_insert_with(Instant::now);
                if self.open.is_none() && e.message.contains("may or may not") {
                    self.open = Some(e.clone());
                }
                if since.elapsed() >= patience {
                    return Err(ClientError::Api(self.open.take().unwrap_or(e)));
                }
                e.to_string()
            }
        };
        self.interrupted(why, progressed);
        Ok(())
    }

    /// An attempt stopped for `why`; `progressed` if it moved bytes.
    pub(crate) fn interrupted(&mut self, why: String, progressed: bool) {
        if progressed || self.deadline.is_none() {
            self.deadline = Some(Instant::now() + RESUME_WITHIN);
        }
        self.backoff = if progressed {
            Duration::ZERO
        } else {
            (self.backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF)
        };
        self.last = why;
    }

    /// The connection to try again on: the client's live connection (waiting while it
    /// reconnects). The client closed for good is its [`ClientError::Closed`]; no live
    /// connection before the deadline is an I/O error saying what was interrupted.
    pub(crate) async fn next_connection(
        &mut self,
        client: &Client,
        what: &str,
    ) -> Result<quinn::Connection, ClientError> {
        let gave_up = |last: &str| {
            ClientError::Io(format!(
                "{what} was interrupted ({last}) and could not resume within {} s",
                RESUME_WITHIN.as_secs()
            ))
        };
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + RESUME_WITHIN);
        if !self.backoff.is_zero() {
            if Instant::now() + self.backoff > deadline {
                return Err(gave_up(&self.last));
            }
            tokio::time::sleep(self.backoff).await;
        }
        let mut pause = Duration::from_millis(20);
        loop {
            match tokio::time::timeout_at(deadline, client.connection()).await {
                Err(_elapsed) => return Err(gave_up(&self.last)),
                Ok(Err(e)) if e.is_closed() => return Err(e),
                Ok(Err(e)) => self.last = e.to_string(),
                // A connection that is already closed: the client has not noticed the loss
                // yet, or has not reconnected yet.
                Ok(Ok(conn)) if conn.close_reason().is_some() => {}
                Ok(Ok(conn)) => return Ok(conn),
            }
            if Instant::now() + pause > deadline {
                return Err(gave_up(&self.last));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

/// A random upload id (not a secret: the broker keys uploads by user and id).
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS's randomness once per thread and differs per value.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoke_protocol::{ApiError, ErrorCode};
    use std::sync::Mutex;

    /// Busy refusals are retried for the patience without progress, then end the transfer:
    /// with the first refusal that left the outcome open when there was one (the file may
    /// be recorded: the application must not upload it anew blindly), else the last.
    #[test]
    fn a_busy_give_up_reports_the_first_open_outcome() {
        let busy = |m: &str| Attempt::Busy(ApiError::new(ErrorCode::ServerBusy, m));
        let patience = Duration::from_secs(60);
        let mut r = Retry::new();
        assert!(r
            .after(
                busy("node n3 went away; it may or may not have been made"),
                false,
                patience
            )
            .is_ok());
        assert!(r.after(busy("n3 is unreachable"), false, patience).is_ok());
        match r.after(busy("n3 is unreachable"), false, Duration::ZERO) {
            Err(ClientError::Api(e)) => assert!(e.message.contains("may or may not"), "{e}"),
            other => panic!("{other:?}"),
        }
        // Without an open one: the last refusal. A lost link is not a refusal: retried.
        match Retry::new().after(busy("n3 is unreachable"), false, Duration::ZERO) {
            Err(ClientError::Api(e)) => assert!(e.message.contains("unreachable"), "{e}"),
            other => panic!("{other:?}"),
        }
        let lost = Attempt::Lost("link lost".into());
        assert!(Retry::new().after(lost, false, Duration::ZERO).is_ok());
    }

    #[test]
    fn progress_never_goes_backwards_and_says_where_it_resumed() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let f: ProgressFn = Box::new(move |p| sink.lock().expect("lock").push(p));
        let mut rep = Reporter::new(Some(f), 100);
        rep.report(0);
        rep.report(60);
        // The broker had only 40 durably: the resume sends bytes 40.. again.
        rep.resumed(40);
        rep.report(50);
        rep.report(100);
        let seen = seen.lock().expect("lock");
        let done: Vec<u64> = seen.iter().map(|p| p.done).collect();
        assert_eq!(done, [0, 60, 60, 60, 100]);
        assert_eq!(seen[1].resumed_at, None);
        assert_eq!(seen[2].resumed_at, Some(40));
        assert_eq!(seen[4].resumed_at, Some(40));
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
