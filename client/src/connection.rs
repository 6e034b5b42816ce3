//! One QUIC connection to the broker ([`Link`]) and the tasks that drive it. A
//! [`crate::Client`] has one link at a time; when it ends, [`crate::reconnect`] dials the
//! next one and the client's handles, event stream and pending calls carry over.
//!
//! - the **writer** owns the control stream's send half and writes request frames, several
//!   queued frames per write when requests pile up (fewer packets);
//! - the **reader** owns the control stream's receive half and completes pending requests by
//!   id, in whatever order the broker answers;
//! - the **push reader** accepts the broker's push stream and hands each push, in order, to
//!   the client's sequencer ([`crate::resume`]) through a bounded channel; when the channel
//!   is full it waits, so a slow consumer back-pressures the QUIC stream instead of growing
//!   a buffer;
//! - the **supervisor** waits for the connection to end and turns the end into one
//!   [`ClientError::Closed`] that every pending call on this link receives.
//!
//! A task that finds a fault closes the QUIC connection (recording why); the supervisor is
//! the one place that observes the end, so there is exactly one reason for everyone.

use crate::error::{closed_error, ClientError};
use crate::resume::Incoming;
use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::codec::{decode_frame, FrameError, MAX_FRAME_LEN};
use convoke_protocol::handshake::{ClientFrame, ServerFrame, Welcome};
use convoke_protocol::{close, ApiError, Push, Request, Response};
use quinn::{ReadError, RecvStream, SendStream, VarInt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Largest chunk asked of quinn per read.
const READ_CHUNK: usize = 64 * 1024;
/// Frames coalesced into one write at most.
const WRITE_BATCH: usize = 64;
/// Requests queued for the writer before `request()` waits.
const WRITER_QUEUE: usize = 1024;
/// How long to wait for the broker's own close after it ended a stream, so that its reason
/// (e.g. shutting down) wins over ours.
const GRACE: Duration = Duration::from_millis(500);

/// Link generations, so the sequencer can tell an old link's pushes from a new one's.
static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

type Reply = oneshot::Sender<Result<Response, ClientError>>;

/// Requests in flight and whether the connection is over.
#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    waiters: HashMap<u64, Reply>,
    closed: Option<ClientError>,
}

/// What became of one request sent on a link.
#[derive(Debug)]
pub(crate) enum Exchange {
    /// The broker answered.
    Answered(Result<Response, ApiError>),
    /// The link was gone before the request was handed to it: it never reached the broker.
    NotSent,
    /// The link ended after the request was handed to it: it may or may not have taken
    /// effect.
    Lost(ClientError),
}

/// One connection: its QUIC connection, the requests in flight on it, its writer and the
/// broker's welcome.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) connection: quinn::Connection,
    pending: Mutex<Pending>,
    local_close: Mutex<Option<(u32, String)>>,
    closed_tx: watch::Sender<Option<ClientError>>,
    writer: mpsc::Sender<Bytes>,
    pub(crate) welcome: Welcome,
    pub(crate) server: SocketAddr,
    /// Whether the hello went in 0-RTT early data.
    pub(crate) zero_rtt: bool,
    /// From the start of the attempt to the welcome.
    pub(crate) took: Duration,
    /// This link's number among the process's links (newer links have larger ones).
    pub(crate) gen: u64,
    /// When the welcome was read: with its `server_time`, the broker's clock now.
    welcomed: std::time::Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (single inserts and
    // removals), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a request's slot if its caller stops waiting (timeout, or the future dropped).
struct SlotGuard<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        lock(&self.link.pending).waiters.remove(&self.id);
    }
}

/// What a freshly handshaken connection brings to [`Link::start`].
pub(crate) struct Opened {
    pub(crate) connection: quinn::Connection,
    pub(crate) send: SendStream,
    pub(crate) recv: RecvStream,
    /// Control stream bytes read past the welcome frame.
    pub(crate) leftover: BytesMut,
    pub(crate) welcome: Welcome,
    pub(crate) server: SocketAddr,
    pub(crate) zero_rtt: bool,
    pub(crate) took: Duration,
}

impl Link {
    /// The broker's clock now (ms since the Unix epoch), estimated from the welcome's
    /// `server_time` and the local time since (off by up to the one-way delay).
    pub(crate) fn broker_now(&self) -> i64 {
        let since = i64::try_from(self.welcomed.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.welcome.server_time.saturating_add(since)
    }

    /// Starts the request tasks of a connection whose handshake succeeded (the push
    /// reader is started by [`Link::read_pushes`], once the sequencer knows the link).
    pub(crate) fn start(opened: Opened) -> Arc<Self> {
        let (writer, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let link = Arc::new(Self {
            connection: opened.connection,
            pending: Mutex::new(Pending {
                next_id: 1,
                ..Pending::default()
            }),
            local_close: Mutex::new(None),
            closed_tx: watch::channel(None).0,
            writer,
            welcome: opened.welcome,
            server: opened.server,
            zero_rtt: opened.zero_rtt,
            took: opened.took,
            gen: NEXT_GEN.fetch_add(1, Ordering::Relaxed),
            welcomed: std::time::Instant::now(),
        });
        tokio::spawn(supervise(link.clone()));
        tokio::spawn(write_loop(link.clone(), opened.send, writer_rx));
        tokio::spawn(read_loop(link.clone(), opened.recv, opened.leftover));
        link
    }

    /// Starts reading the broker's push stream into the sequencer's channel; the last item
    /// is [`Incoming::End`], once the stream (or the connection) has ended.
    pub(crate) fn read_pushes(self: &Arc<Self>, tx: mpsc::Sender<Incoming>) {
        let link = self.clone();
        tokio::spawn(async move {
            push_loop(link.clone(), &tx).await;
            let _ = tx.send(Incoming::End { gen: link.gen }).await;
        });
    }

    /// Sends one request and waits for its answer or the end of the link.
    pub(crate) async fn exchange(&self, request: &Request) -> Exchange {
        let (id, rx) = {
            let mut p = lock(&self.pending);
            if p.closed.is_some() {
                return Exchange::NotSent;
            }
            let id = p.next_id;
            p.next_id += 1;
            let (tx, rx) = oneshot::channel();
            p.waiters.insert(id, tx);
            (id, rx)
        };
        let _slot = SlotGuard { link: self, id };
        let frame = match frame_bytes(&ClientFrame::Request {
            id,
            request: request.clone(),
        }) {
            Ok(f) => f,
            Err(e) => {
                return Exchange::Answered(Err(ApiError::param(format!(
                    "cannot encode {}: {e}",
                    request.method()
                ))))
            }
        };
        if self.writer.send(frame).await.is_err() {
            return Exchange::NotSent;
        }
        match rx.await {
            Ok(Ok(response)) => Exchange::Answered(Ok(response)),
            Ok(Err(ClientError::Api(e))) => Exchange::Answered(Err(e)),
            Ok(Err(e)) => Exchange::Lost(e),
            Err(_) => Exchange::Lost(self.wait_closed().await),
        }
    }

    /// Queues acknowledgement ids for the broker; false if the link is gone.
    pub(crate) async fn send_acks(&self, ids: Vec<u64>) -> bool {
        match frame_bytes(&ClientFrame::Ack { ids }) {
            Ok(bytes) => self.writer.send(bytes).await.is_ok() && !self.is_closed(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an acknowledgement");
                true
            }
        }
    }

    fn resolve(&self, id: u64, result: Result<Response, ClientError>) {
        let waiter = lock(&self.pending).waiters.remove(&id);
        match waiter {
            // The caller may have given up in the meantime; nothing to do then.
            Some(tx) => drop(tx.send(result)),
            None => tracing::debug!(id, "response to a request nobody waits for"),
        }
    }

    /// Closes the connection because of a local decision, remembering why.
    pub(crate) fn fail(&self, code: u32, reason: &str) {
        {
            let mut local = lock(&self.local_close);
            if local.is_none() && self.connection.close_reason().is_none() {
                *local = Some((code, reason.to_string()));
            }
        }
        tracing::debug!(code, reason, "closing the connection");
        self.connection
            .close(VarInt::from_u32(code), reason.as_bytes());
    }

    /// Records the end of the connection and fails every pending request with it.
    fn finish(&self, err: ClientError) {
        let waiters = {
            let mut p = lock(&self.pending);
            if p.closed.is_none() {
                p.closed = Some(err.clone());
            }
            std::mem::take(&mut p.waiters)
        };
        for (_, tx) in waiters {
            drop(tx.send(Err(err.clone())));
        }
        self.closed_tx.send_replace(Some(err));
    }

    /// Whether the connection has ended (or is ending).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.pending).closed.is_some() || self.connection.close_reason().is_some()
    }

    /// Waits until the connection has ended, and returns why.
    pub(crate) async fn wait_closed(&self) -> ClientError {
        let mut rx = self.closed_tx.subscribe();
        let result = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        // The sender lives in `self`, so `wait_for` only returns once a value is set.
        result.unwrap_or_else(|| ClientError::Closed {
            code: None,
            reason: "connection state dropped".to_string(),
        })
    }

    /// Waits for the connection to end (the broker's reason) for a short grace period, then
    /// closes it ourselves with `code` and `reason`.
    async fn fail_after_grace(&self, code: u32, reason: &str) {
        if tokio::time::timeout(GRACE, self.connection.closed())
            .await
            .is_err()
        {
            self.fail(code, reason);
        }
    }
}

async fn supervise(link: Arc<Link>) {
    let end = link.connection.closed().await;
    let local = lock(&link.local_close).take();
    let err = closed_error(&end, local);
    tracing::debug!(%err, "connection ended");
    link.finish(err);
}

async fn write_loop(link: Arc<Link>, mut send: SendStream, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            frame = rx.recv() => frame,
            // The link holds the writer's sender, so the queue never ends by itself.
            _ = link.connection.closed() => return,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        if let Err(e) = send.write_all_chunks(&mut batch).await {
            if !matches!(e, quinn::WriteError::ConnectionLost(_)) {
                link.fail(
                    close::PROTOCOL_VIOLATION,
                    &format!("cannot write the control stream: {e}"),
                );
            }
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
}

/// The close code for a frame that could not be decoded ([`close::for_frame_error`]).
pub(crate) fn frame_close_code(e: &FrameError) -> u32 {
    close::for_frame_error(e)
}

/// Reads one more chunk into `buf`. `Ok(false)` at the end of the stream.
pub(crate) async fn read_more(
    recv: &mut RecvStream,
    buf: &mut BytesMut,
) -> Result<bool, ReadError> {
    match recv.read_chunk(READ_CHUNK, true).await? {
        Some(chunk) => {
            buf.extend_from_slice(&chunk.bytes);
            Ok(true)
        }
        None => Ok(false),
    }
}

async fn read_loop(link: Arc<Link>, mut recv: RecvStream, mut buf: BytesMut) {
    loop {
        loop {
            match decode_frame::<ServerFrame>(&mut buf, MAX_FRAME_LEN) {
                Ok(Some(ServerFrame::Response { id, result })) => {
                    link.resolve(id, result.map_err(ClientError::Api));
                }
                Ok(Some(other)) => {
                    let what = match other {
                        ServerFrame::Welcome(_) => "a second Welcome",
                        _ => "a Refused frame after the Welcome",
                    };
                    link.fail(
                        close::PROTOCOL_VIOLATION,
                        &format!("the broker sent {what} on the control stream"),
                    );
                    return;
                }
                Ok(None) => break,
                Err(e) => {
                    link.fail(frame_close_code(&e), &format!("control stream: {e}"));
                    return;
                }
            }
        }
        match read_more(&mut recv, &mut buf).await {
            Ok(true) => {}
            Ok(false) => {
                link.fail_after_grace(
                    close::PROTOCOL_VIOLATION,
                    "the broker ended the control stream",
                )
                .await;
                return;
            }
            Err(ReadError::ConnectionLost(_)) => return,
            Err(e) => {
                link.fail(close::PROTOCOL_VIOLATION, &format!("control stream: {e}"));
                return;
            }
        }
    }
}

/// Reads the broker's push stream and hands each push, in order, to the sequencer.
async fn push_loop(link: Arc<Link>, tx: &mpsc::Sender<Incoming>) {
    // The broker opens its push stream after the welcome; nothing else is accepted.
    let mut recv = match link.connection.accept_uni().await {
        Ok(recv) => recv,
        Err(_) => return,
    };
    let mut buf = BytesMut::new();
    loop {
        loop {
            match decode_frame::<Push>(&mut buf, MAX_FRAME_LEN) {
                Ok(Some(push)) => {
                    // Waiting here is the back-pressure. The sequencer outlives every link
                    // but ends with the client; then the link is closing too.
                    if tx
                        .send(Incoming::Push {
                            gen: link.gen,
                            push,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    link.fail(frame_close_code(&e), &format!("push stream: {e}"));
                    return;
                }
            }
        }
        match read_more(&mut recv, &mut buf).await {
            Ok(true) => {}
            Ok(false) => {
                link.fail_after_grace(
                    close::PROTOCOL_VIOLATION,
                    "the broker ended the push stream",
                )
                .await;
                return;
            }
            Err(ReadError::ConnectionLost(_)) => return,
            Err(e) => {
                link.fail(close::PROTOCOL_VIOLATION, &format!("push stream: {e}"));
                return;
            }
        }
    }
}
