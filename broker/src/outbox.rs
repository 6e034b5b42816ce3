//! A session's event stream, written straight from the fan-out loop.
//!
//! It lives beside [`crate::presence`] (which holds each session's outbox) and below both
//! `session` (which creates it) and [`crate::fanout`] (which writes into it), so that
//! presence and sessions do not import each other. The session's answers on the control
//! stream (`session::io::Responder`) share its two stream helpers, [`write_with_progress`]
//! and [`slow_consumer`].
//!
//! [`Outbox::push`] is called by group actors and publishers for every receiving session.
//! When the stream is free it writes the frame into quinn at once (`write_chunks`, polled
//! once, never awaited), so an idle session costs no task and a delivery costs no task
//! wake-up. Only when the stream cannot take the frame right away (flow control, or a frame
//! already waiting) does the frame go to a bounded backlog, drained by a flusher task that
//! exists just as long as there is a backlog.
//!
//! Coalescing: a session that was handed a frame less than `busy` ago holds a new frame for
//! `window` so the frames that follow share its packet (and its ACK); the per-packet cost is
//! what dominates fan-out CPU. A session whose frames come further apart writes at once, so an
//! idle group's message is never delayed. `busy == 0` turns coalescing off.
//!
//! A held backlog is written early once it reaches [`HOLD_MAX`] frames or half the capacity,
//! whichever is smaller, so coalescing never fills a fast reader's backlog. A backlog that reaches its
//! capacity (in frames, or in bytes: frames waiting plus the batch being written) while being
//! written, or a flusher whose stream takes no byte for the write timeout, means the client is
//! not reading fast enough: the connection is closed with [`close::SLOW_CONSUMER`] and
//! counted, never allowed to grow. The byte count is one addition per frame queued and one
//! subtraction per batch written; a frame written straight into the stream is not counted.

use crate::webtransport::Framing;
use bytes::Bytes;
use convoke_protocol::close;
use futures::FutureExt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `convoke_session_queue_depth`, resolved once: this is on the per-recipient fan-out path.
static QUEUE_DEPTH: std::sync::LazyLock<metrics::Histogram> =
    std::sync::LazyLock::new(|| metrics::histogram!("convoke_session_queue_depth"));

/// A held backlog this long is written without waiting for the rest of the window.
pub const HOLD_MAX: usize = 64;

/// How much an outbox holds before its session counts as a slow consumer.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Frames waiting (`sessions.outbound_queue`).
    pub frames: usize,
    /// Bytes waiting, the batch being written included (`sessions.outbound_queue_bytes`);
    /// one frame always fits.
    pub bytes: usize,
    /// Longest the stream may take no byte of a batch (`sessions.write_timeout_ms`).
    pub stall: Duration,
}

/// How an outbox groups frames into writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Coalesce {
    /// A session handed a frame less than this long ago is busy; zero disables coalescing.
    pub busy: Duration,
    /// How long a busy session holds a frame for the ones that follow.
    pub window: Duration,
}

impl Coalesce {
    fn holds(&self, last_frame: Option<Instant>, now: Instant) -> bool {
        !self.busy.is_zero()
            && !self.window.is_zero()
            && last_frame.is_some_and(|t| now.duration_since(t) < self.busy)
    }
}

/// One session's outbound event stream.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    conn: quinn::Connection,
    /// How the connection is closed (a browser's with a WebTransport session close).
    framing: Framing,
    capacity: usize,
    max_bytes: usize,
    stall: Duration,
    coalesce: Coalesce,
    /// Woken whenever the flusher drained the backlog (for [`Outbox::push_wait`]).
    drained: tokio::sync::Notify,
    /// Cuts a flusher's coalescing delay short (the held backlog is long enough).
    flush_now: tokio::sync::Notify,
}

#[derive(Debug)]
struct State {
    /// The stream; `None` while the flusher task holds it, or once closed.
    stream: Option<quinn::SendStream>,
    /// Frames (or the unwritten tail of one) waiting for the flusher, in order.
    backlog: VecDeque<Bytes>,
    /// Bytes in `backlog` plus those of the batch the flusher is writing.
    backlog_bytes: usize,
    /// Whether a flusher task is running (it owns the stream meanwhile).
    flushing: bool,
    /// Whether that flusher is still waiting out a coalescing window.
    holding: bool,
    /// When the previous frame was handed to this outbox (not when it was written: a held
    /// frame's late write must not make a session with a slow cadence look busy).
    last_frame: Option<Instant>,
    closed: bool,
    /// While the login's replay of kept events runs, live frames wait here (see
    /// [`Outbox::gate`]), so that nothing overtakes an older kept event.
    gated: Option<Vec<Bytes>>,
    /// Bytes in `gated`.
    gated_bytes: usize,
}

impl Outbox {
    /// An outbox over `stream`, holding at most `bounds` of frames that quinn has not taken.
    pub fn new(
        conn: quinn::Connection,
        stream: quinn::SendStream,
        bounds: Bounds,
        coalesce: Coalesce,
        framing: Framing,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                stream: Some(stream),
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                flushing: false,
                holding: false,
                last_frame: None,
                closed: false,
                gated: None,
                gated_bytes: 0,
            }),
            conn,
            framing,
            capacity: bounds.frames,
            max_bytes: bounds.bytes,
            stall: bounds.stall,
            coalesce,
            drained: tokio::sync::Notify::new(),
            flush_now: tokio::sync::Notify::new(),
        })
    }

    /// Closes the session's connection with `code` the way its client hears it (a
    /// browser's as a WebTransport session close, which carries the code; see
    /// [`Framing::close`]). For closes from outside the session, e.g. over the user's
    /// session limit.
    pub fn close_connection(&self, code: u32, reason: &[u8]) {
        self.framing.close(&self.conn, code, reason);
    }

    /// The connection this outbox writes to.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves nothing half-done that matters more than
        // the session itself; keep serving it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends one frame, or queues it behind the ones waiting. Closes the connection if the
    /// backlog is full. Returns whether the frame was taken.
    pub fn push(self: &Arc<Self>, frame: &Bytes) -> bool {
        let mut st = self.lock();
        if !st.closed {
            let held_bytes = st.gated_bytes;
            if let Some(held) = st.gated.as_mut() {
                if held.len() < self.capacity && !over(held_bytes, frame.len(), self.max_bytes) {
                    held.push(frame.clone());
                    st.gated_bytes += frame.len();
                    return true;
                }
                st.closed = true;
                st.gated = None;
                st.gated_bytes = 0;
                self.slow_consumer("live events held during the login replay");
                return false;
            }
        }
        self.push_locked(&mut st, frame)
    }

    /// Takes no frames from now on (a session that asked for no pushes): [`Outbox::push`]
    /// returns false. The stream stays open, unused (a finished push stream would tell the
    /// client the session is over).
    pub fn refuse_all(&self) {
        self.lock().closed = true;
    }

    /// Holds live frames back (at most the capacity; more closes the session as a slow
    /// consumer) until [`Outbox::replay`] has queued the frames it is given.
    pub fn gate(&self) {
        self.lock().gated.get_or_insert_with(Vec::new);
    }

    /// Queues `frames` (the login's replay) with [`Outbox::push_wait`], then the live frames
    /// held since [`Outbox::gate`], in arrival order, and lets live frames through again.
    /// Returns whether all were taken.
    pub async fn replay(self: &Arc<Self>, frames: Vec<Bytes>) -> bool {
        let mut next = frames;
        loop {
            if !next.is_empty() && !self.push_wait(next).await {
                let mut st = self.lock();
                st.gated = None;
                st.gated_bytes = 0;
                return false;
            }
            let mut st = self.lock();
            match st.gated.as_mut() {
                Some(held) if !held.is_empty() => {
                    next = std::mem::take(held);
                    st.gated_bytes = 0;
                }
                _ => {
                    st.gated = None;
                    st.gated_bytes = 0;
                    return !st.closed;
                }
            }
        }
    }

    fn push_locked(self: &Arc<Self>, st: &mut MutexGuard<'_, State>, frame: &Bytes) -> bool {
        if st.closed {
            return false;
        }
        let now = Instant::now();
        let previous = st.last_frame.replace(now);
        if st.flushing {
            if st.backlog.len() >= self.capacity
                || over(st.backlog_bytes, frame.len(), self.max_bytes)
            {
                st.closed = true;
                st.backlog.clear();
                self.slow_consumer("event queue full");
                return false;
            }
            st.backlog_bytes += frame.len();
            st.backlog.push_back(frame.clone());
            QUEUE_DEPTH.record(st.backlog.len() as f64);
            if st.holding && st.backlog.len() >= HOLD_MAX.min(self.capacity / 2) {
                st.holding = false;
                self.flush_now.notify_one();
            }
            return true;
        }
        if self.coalesce.holds(previous, now) {
            st.backlog_bytes += frame.len();
            st.backlog.push_back(frame.clone());
            QUEUE_DEPTH.record(1.0);
            st.holding = true;
            self.start_flusher(st, Some(self.coalesce.window));
            return true;
        }
        QUEUE_DEPTH.record(0.0);
        let Some(stream) = st.stream.as_mut() else {
            return false;
        };
        let mut chunk = [frame.clone()];
        match stream.write_chunks(&mut chunk).now_or_never() {
            Some(Ok(written)) => {
                if written.chunks == 0 {
                    // Flow control took only part of it: the flusher writes the rest.
                    let [rest] = chunk;
                    st.backlog_bytes += rest.len();
                    st.backlog.push_back(rest);
                    self.start_flusher(st, None);
                }
                true
            }
            None => {
                st.backlog_bytes += frame.len();
                st.backlog.push_back(frame.clone());
                self.start_flusher(st, None);
                true
            }
            Some(Err(e)) => {
                st.closed = true;
                self.stream_failed(&e);
                false
            }
        }
    }

    /// Queues `frames` in order, waiting while the backlog is half full instead of closing
    /// the session (for the login replay of kept events, which may be longer than the backlog); the other
    /// half stays free for live events meanwhile. Returns whether all were taken.
    pub async fn push_wait(self: &Arc<Self>, frames: Vec<Bytes>) -> bool {
        let room = (self.capacity / 2).max(1);
        let room_bytes = self.max_bytes / 2;
        for frame in frames {
            loop {
                let drained = self.drained.notified();
                {
                    let mut st = self.lock();
                    if st.closed {
                        return false;
                    }
                    if st.backlog.len() < room && !over(st.backlog_bytes, frame.len(), room_bytes) {
                        if !self.push_locked(&mut st, &frame) {
                            return false;
                        }
                        break;
                    }
                }
                drained.await;
            }
            // Let the flusher (likely queued on this very worker) run between frames.
            tokio::task::yield_now().await;
        }
        true
    }

    /// Stops taking frames and finishes the stream once what was taken is written.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        if let Some(mut stream) = st.stream.take() {
            let _ = stream.finish();
        }
        // A running flusher sees `closed`, writes what it holds and finishes.
    }

    fn start_flusher(self: &Arc<Self>, st: &mut State, delay: Option<Duration>) {
        let Some(stream) = st.stream.take() else {
            return;
        };
        st.flushing = true;
        tokio::spawn(self.clone().flush(stream, delay));
    }

    /// Writes the backlog until it is empty, then hands the stream back.
    async fn flush(self: Arc<Self>, mut stream: quinn::SendStream, delay: Option<Duration>) {
        if let Some(d) = delay {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = self.flush_now.notified() => {}
            }
            let mut st = self.lock();
            st.holding = false;
            // A pusher may have asked for an early flush just as the window ended: drop that
            // permit so it does not cut the next window short.
            let _ = self.flush_now.notified().now_or_never();
            drop(st);
        }
        let mut batch: Vec<Bytes> = Vec::new();
        // Bytes of the batch just written, taken off the count under the next lock.
        let mut written = 0;
        loop {
            let batch_bytes;
            {
                let mut st = self.lock();
                st.backlog_bytes = st.backlog_bytes.saturating_sub(written);
                if st.backlog.is_empty() {
                    st.flushing = false;
                    if st.closed {
                        let _ = stream.finish();
                    } else {
                        st.stream = Some(stream);
                    }
                    drop(st);
                    self.drained.notify_waiters();
                    return;
                }
                batch.extend(st.backlog.drain(..));
                batch_bytes = batch.iter().map(Bytes::len).sum();
            }
            self.drained.notify_waiters();
            let failed = match write_with_progress(&mut stream, &mut batch, self.stall).await {
                Some(Ok(())) => false,
                Some(Err(e)) => {
                    self.stream_failed(&e);
                    true
                }
                None => {
                    let why = format!("events not read for {} ms", self.stall.as_millis());
                    self.slow_consumer(&why);
                    true
                }
            };
            if failed {
                let mut st = self.lock();
                st.closed = true;
                st.flushing = false;
                st.backlog.clear();
                st.backlog_bytes = 0;
                drop(st);
                self.drained.notify_waiters();
                return;
            }
            written = batch_bytes;
            batch.clear();
        }
    }

    /// The event stream cannot be written (the client stopped it, or the connection is
    /// gone): close the connection, so the client reconnects and catches up, rather than
    /// leave a session that looks online but receives nothing (a browser's through its
    /// WebTransport session, so that the page hears the code).
    fn stream_failed(&self, e: &quinn::WriteError) {
        tracing::debug!(remote = %self.conn.remote_address(), error = %e, "event stream failed");
        self.close_connection(
            close::PROTOCOL_VIOLATION,
            b"the event stream can no longer be written",
        );
    }

    fn slow_consumer(&self, why: &str) {
        slow_consumer(&self.conn, &self.framing, "events", why);
        self.drained.notify_waiters();
    }
}

/// Whether `len` more bytes on top of `queued` go over `max` (a frame alone never does).
fn over(queued: usize, len: usize, max: usize) -> bool {
    queued > 0 && queued + len > max
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

/// Closes a session whose client does not read what it is sent (`queue`: `answers` or
/// `events`), and counts it.
pub fn slow_consumer(conn: &quinn::Connection, framing: &Framing, queue: &'static str, why: &str) {
    if conn.close_reason().is_some() {
        return;
    }
    metrics::counter!("convoke_slow_client_disconnects_total", "queue" => queue).increment(1);
    tracing::info!(remote = %conn.remote_address(), queue, why, "closing slow client");
    framing.close(
        conn,
        close::SLOW_CONSUMER,
        &close::reason_bytes(&format!(
            "{queue} not read fast enough: {why}; reconnect and catch up"
        )),
    );
}

#[cfg(test)]
mod tests {
    use super::Coalesce;
    use std::time::{Duration, Instant};

    #[test]
    fn only_a_session_recently_handed_a_frame_holds_frames() {
        let c = Coalesce {
            busy: Duration::from_millis(200),
            window: Duration::from_millis(50),
        };
        let now = Instant::now();
        assert!(
            !c.holds(None, now),
            "a session never handed a frame is idle"
        );
        assert!(c.holds(Some(now - Duration::from_millis(10)), now));
        assert!(!c.holds(Some(now - Duration::from_millis(250)), now));
        let off = Coalesce::default();
        assert!(!off.holds(Some(now), now), "zero busy turns it off");
    }
}
