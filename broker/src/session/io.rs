//! Reading and writing frames on QUIC streams.

use crate::outbox::{slow_consumer, write_with_progress};
use crate::webtransport::Framing;
use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::{
    decode_frame, decode_hello_frame, FrameError, HEADER_LEN, MAX_FRAME_LEN, MAX_HELLO_LEN,
};
use std::sync::Arc;
use std::time::Duration;

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
        if !read_more(recv, buf, 64 * 1024).await? {
            return Ok(None);
        }
    }
}

/// Reads the next frame of at most [`MAX_HELLO_LEN`] bytes (a hello, a transfer header):
/// what a peer sends before it is authenticated, or before anything is admitted, never
/// makes the broker buffer more than that (a larger length prefix is refused at once).
pub async fn read_small_frame<T: bincode::Decode<()>>(
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
) -> Result<Option<T>, ReadError> {
    loop {
        if let Some(v) = decode_hello_frame(buf)? {
            return Ok(Some(v));
        }
        if !read_more(recv, buf, HEADER_LEN + MAX_HELLO_LEN).await? {
            return Ok(None);
        }
    }
}

/// Appends up to `most` bytes; false when the stream ended cleanly between frames.
async fn read_more(
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    most: usize,
) -> Result<bool, ReadError> {
    match recv.read_chunk(most, true).await? {
        Some(chunk) => {
            buf.extend_from_slice(&chunk.bytes);
            Ok(true)
        }
        None if buf.is_empty() => Ok(false),
        None => Err(ReadError::Truncated),
    }
}

/// The control stream's sending half, shared by the tasks that answer requests. Each
/// answer is written whole under the lock.
///
/// Encoded answers waiting for the stream are bounded in bytes per session
/// (`sessions.answer_queue_bytes`, held as a semaphore of KiB permits; one answer always
/// goes, however large): an answer over the budget waits for room before it is queued, so
/// request handling waits and, through the in-flight limit, the session stops reading new
/// requests. A client that pipelines and reads is never closed for it; one that does not
/// read is closed as a slow consumer ([`convoke_protocol::close::SLOW_CONSUMER`]) when the
/// stream takes no byte for `sessions.write_timeout_ms`.
#[derive(Debug, Clone)]
pub struct Responder(Arc<ResponderInner>);

#[derive(Debug)]
struct ResponderInner {
    stream: tokio::sync::Mutex<quinn::SendStream>,
    conn: quinn::Connection,
    framing: Framing,
    /// Room for answers not yet taken by the stream, in KiB.
    room: tokio::sync::Semaphore,
    /// The budget in KiB (the semaphore's permits when nothing waits).
    budget_kib: u32,
    stall: Duration,
}

impl Responder {
    pub fn new(
        conn: quinn::Connection,
        send: quinn::SendStream,
        budget: usize,
        stall: Duration,
        framing: Framing,
    ) -> Self {
        let budget_kib = u32::try_from(budget / 1024).unwrap_or(u32::MAX).max(1);
        Self(Arc::new(ResponderInner {
            stream: tokio::sync::Mutex::new(send),
            conn,
            framing,
            room: tokio::sync::Semaphore::new(budget_kib as usize),
            budget_kib,
            stall,
        }))
    }

    /// Waits until the budget has room for at least one more KiB of answers (the session
    /// reads its next request only then).
    pub async fn room(&self) {
        drop(self.0.room.acquire().await);
    }

    /// Writes one frame, first waiting for room in the byte budget; false if the stream is
    /// gone, or the session was closed as a slow consumer for it.
    pub async fn send(&self, frame: Bytes) -> bool {
        let inner = &self.0;
        let kib = u32::try_from(frame.len().div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, inner.budget_kib);
        let Ok(_room) = inner.room.acquire_many(kib).await else {
            return false;
        };
        let mut stream = inner.stream.lock().await;
        match write_with_progress(&mut stream, &mut [frame], inner.stall).await {
            Some(Ok(())) => true,
            Some(Err(_)) => false,
            None => {
                slow_consumer(
                    &inner.conn,
                    &inner.framing,
                    "answers",
                    &format!("answers not read for {} ms", inner.stall.as_millis()),
                );
                false
            }
        }
    }
}
