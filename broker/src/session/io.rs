//! Reading and writing frames on QUIC streams.

use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::{decode_frame, FrameError, MAX_FRAME_LEN};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream error: {0}")]
    Stream(#[from] quinn::ReadError),
    #[error("stream ended in the middle of a frame")]
    Truncated,
}

/// Reads the next frame; `Ok(None)` when the peer finished the stream cleanly.
pub async fn read_frame<T: bincode::Decode<()>>(
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
) -> Result<Option<T>, ReadError> {
    loop {
        if let Some(v) = decode_frame(buf, MAX_FRAME_LEN)? {
            return Ok(Some(v));
        }
        match recv.read_chunk(64 * 1024, true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None if buf.is_empty() => return Ok(None),
            None => return Err(ReadError::Truncated),
        }
    }
}

/// How a writer groups frames into writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Coalesce {
    /// A writer that wrote less than this long ago is busy; zero disables coalescing.
    pub busy: Duration,
    /// How long a busy writer holds a frame for the ones that follow.
    pub window: Duration,
}

/// Writes frames from `rx` to `send` in order, several at a time when they queue up, until
/// the channel closes or the stream fails.
///
/// With `coalesce` set, a writer that wrote recently (a busy connection) waits up to the
/// window for more frames before writing, so several events share a packet and its ACK;
/// a writer that has been quiet writes at once, so an idle group's message is never delayed.
pub async fn write_frames(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Bytes>,
    coalesce: Coalesce,
) {
    // Grown on demand: an idle connection keeps no batch buffer.
    let mut batch: Vec<Bytes> = Vec::new();
    let mut last_write: Option<Instant> = None;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let busy =
            !coalesce.busy.is_zero() && last_write.is_some_and(|t| t.elapsed() < coalesce.busy);
        if busy && !coalesce.window.is_zero() {
            let deadline = tokio::time::Instant::now() + coalesce.window;
            while batch.len() < 64 {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(more)) => batch.push(more),
                    _ => break,
                }
            }
        }
        last_write = Some(Instant::now());
        if send.write_all_chunks(&mut batch).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
}
