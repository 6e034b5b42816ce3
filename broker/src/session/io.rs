//! Reading and writing frames on QUIC streams.

use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::{decode_frame, FrameError, MAX_FRAME_LEN};
use std::sync::Arc;

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

/// The control stream's sending half, shared by the tasks that answer requests. Each
/// answer is written whole under the lock; a client that stops reading answers blocks the
/// writers (QUIC flow control), which hold their in-flight slots, which stops the session
/// reading requests.
#[derive(Debug, Clone)]
pub struct Responder(Arc<tokio::sync::Mutex<quinn::SendStream>>);

impl Responder {
    pub fn new(send: quinn::SendStream) -> Self {
        Self(Arc::new(tokio::sync::Mutex::new(send)))
    }

    /// Writes one frame; false if the stream is gone.
    pub async fn send(&self, frame: Bytes) -> bool {
        self.0.lock().await.write_chunk(frame).await.is_ok()
    }
}
