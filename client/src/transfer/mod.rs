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
//! raw bytes and the end of the stream, then one `TransferOutcome` frame back; for a download
//! one `TransferOutcome` frame back followed by the raw bytes to the end of the stream.

mod download;
mod source;
mod upload;

pub use download::DownloadDest;
pub use source::UploadSource;

use crate::connection::{read_more, Shared};
use crate::error::ClientError;
use bytes::BytesMut;
use convoke_protocol::codec::{decode_frame, MAX_FRAME_LEN};
use convoke_protocol::transfer::TransferOutcome;
use convoke_protocol::SharedFile;
use quinn::{ReadError, RecvStream, SendStream, VarInt};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The application error code a cancelled transfer's stream is reset (and stopped) with.
pub const CANCELLED: u32 = 1;

/// Bytes moved per chunk.
pub(crate) const CHUNK: usize = 64 * 1024;

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Bytes sent or received so far.
    pub done: u64,
    /// The file's size.
    pub total: u64,
}

/// A progress callback, called after every chunk (and once with `done == 0` at the start).
/// It runs on the transfer's task: keep it quick.
pub type ProgressFn = Box<dyn FnMut(Progress) + Send + 'static>;

/// A [`ProgressFn`] that forwards to a channel. Updates are dropped while the channel is
/// full (the transfer never waits for its observer); the final result comes from the
/// [`Transfer`] itself.
pub fn progress_channel(tx: mpsc::Sender<Progress>) -> ProgressFn {
    Box::new(move |p| {
        let _ = tx.try_send(p);
    })
}

pub(crate) fn report(progress: &mut Option<ProgressFn>, done: u64, total: u64) {
    if let Some(f) = progress.as_mut() {
        f(Progress { done, total });
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
}

impl Transfer {
    pub(crate) fn spawn<F, Fut>(start: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = Result<SharedFile, ClientError>> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        Self {
            task: tokio::spawn(start(rx)),
            cancel: CancelHandle { tx: Arc::new(tx) },
        }
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
            .field("finished", &self.task.is_finished())
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

/// Opens a transfer stream, or says why the connection cannot.
pub(crate) async fn open_stream(shared: &Shared) -> Result<(SendStream, RecvStream), ClientError> {
    if let Some(err) = shared.closed_error() {
        return Err(err);
    }
    match shared.connection.open_bi().await {
        Ok(streams) => Ok(streams),
        Err(_) => Err(shared.wait_closed().await),
    }
}

/// Maps a failed read on a transfer stream.
pub(crate) async fn read_error(e: ReadError, shared: &Shared) -> ClientError {
    match e {
        ReadError::ConnectionLost(_) => shared.wait_closed().await,
        ReadError::Reset(code) => ClientError::Io(format!(
            "the broker reset the transfer stream (code {code})"
        )),
        other => ClientError::Io(format!("transfer stream: {other}")),
    }
}

/// Reads the one [`TransferOutcome`] frame; bytes after it stay in `buf`.
pub(crate) async fn read_outcome(
    recv: &mut RecvStream,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<SharedFile, ClientError> {
    loop {
        match decode_frame::<TransferOutcome>(buf, MAX_FRAME_LEN) {
            Ok(Some(outcome)) => return outcome.result.map_err(ClientError::Api),
            Ok(None) => {}
            Err(e) => return Err(ClientError::Protocol(format!("transfer outcome: {e}"))),
        }
        match read_more(recv, buf).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ClientError::Protocol(
                    "the transfer stream ended without an outcome".to_string(),
                ))
            }
            Err(e) => return Err(read_error(e, shared).await),
        }
    }
}

/// Abandons both halves of a transfer stream.
pub(crate) fn abort(send: &mut SendStream, recv: &mut RecvStream) {
    let _ = send.reset(VarInt::from_u32(CANCELLED));
    let _ = recv.stop(VarInt::from_u32(CANCELLED));
}
