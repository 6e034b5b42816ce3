//! Reading and writing frames on QUIC streams.

use bytes::{Bytes, BytesMut};
use convoke_protocol::close;
use convoke_protocol::codec::{
    decode_frame, decode_hello_frame, FrameError, HEADER_LEN, MAX_FRAME_LEN, MAX_HELLO_LEN,
};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Writes `chunks` whole; fails with `None` when the stream took no byte for `stall`
/// (the peer stopped reading), so that a time limit covers a lack of progress, not a long
/// write to a slow reader.
pub async fn write_with_progress(
    stream: &mut quinn::SendStream,
    chunks: &mut [Bytes],
    stall: Duration,
) -> Option<Result<(), quinn::WriteError>> {
    let mut start = 0;
    while start < chunks.len() {
        match tokio::time::timeout(stall, stream.write_chunks(&mut chunks[start..])).await {
            Err(_) => return None,
            Ok(Err(e)) => return Some(Err(e)),
            Ok(Ok(written)) => {
                start += written.chunks;
                // A chunk written in part was advanced in place by quinn.
                while chunks.get(start).is_some_and(Bytes::is_empty) {
                    start += 1;
                }
            }
        }
    }
    Some(Ok(()))
}

/// The control stream's sending half, shared by the tasks that answer requests. Each
/// answer is written whole under the lock.
///
/// Encoded answers waiting for the stream are bounded in bytes per session
/// (`sessions.answer_queue_bytes`; one answer always goes, however large) and in time
/// (`sessions.write_timeout_ms` without progress): a client that sends requests and does
/// not read the answers is closed as a slow consumer ([`close::SLOW_CONSUMER`]) instead of
/// making the broker hold up to 256 answers of up to 4 MiB each.
#[derive(Debug, Clone)]
pub struct Responder(Arc<ResponderInner>);

#[derive(Debug)]
struct ResponderInner {
    stream: tokio::sync::Mutex<quinn::SendStream>,
    conn: quinn::Connection,
    /// Bytes of answers handed to [`Responder::send`] and not yet taken by the stream.
    waiting: AtomicUsize,
    budget: usize,
    stall: Duration,
}

impl Responder {
    pub fn new(
        conn: quinn::Connection,
        send: quinn::SendStream,
        budget: usize,
        stall: Duration,
    ) -> Self {
        Self(Arc::new(ResponderInner {
            stream: tokio::sync::Mutex::new(send),
            conn,
            waiting: AtomicUsize::new(0),
            budget,
            stall,
        }))
    }

    /// Writes one frame; false if the stream is gone, or the session was closed as a slow
    /// consumer for it.
    pub async fn send(&self, frame: Bytes) -> bool {
        let inner = &self.0;
        let len = frame.len();
        let before = inner.waiting.fetch_add(len, Ordering::Relaxed);
        let _taken = Waiting(&inner.waiting, len);
        if before > 0 && before + len > inner.budget {
            slow_consumer(
                &inner.conn,
                "answers",
                &format!(
                    "{} bytes of answers not read; at most {}",
                    before + len,
                    inner.budget
                ),
            );
            return false;
        }
        let mut stream = inner.stream.lock().await;
        match write_with_progress(&mut stream, &mut [frame], inner.stall).await {
            Some(Ok(())) => true,
            Some(Err(_)) => false,
            None => {
                slow_consumer(
                    &inner.conn,
                    "answers",
                    &format!("answers not read for {} ms", inner.stall.as_millis()),
                );
                false
            }
        }
    }
}

/// Takes `len` bytes back off the waiting count when the answer is written or dropped.
struct Waiting<'a>(&'a AtomicUsize, usize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Closes a session whose client does not read what it is sent (`queue`: `answers` or
/// `events`), and counts it.
pub fn slow_consumer(conn: &quinn::Connection, queue: &'static str, why: &str) {
    if conn.close_reason().is_some() {
        return;
    }
    metrics::counter!("convoke_slow_client_disconnects_total", "queue" => queue).increment(1);
    tracing::info!(remote = %conn.remote_address(), queue, why, "closing slow client");
    conn.close(
        close::SLOW_CONSUMER.into(),
        &close::reason_bytes(&format!(
            "{queue} not read fast enough: {why}; reconnect and catch up"
        )),
    );
}
