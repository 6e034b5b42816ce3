//! Reading and writing frames on QUIC streams.

use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::{decode_frame, FrameError, MAX_FRAME_LEN};
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

/// Writes frames from `rx` to `send` in order, several at a time when they queue up, until
/// the channel closes or the stream fails.
pub async fn write_frames(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(64);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        if send.write_all_chunks(&mut batch).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
}
