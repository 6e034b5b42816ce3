//! The background side of a connection: the state shared with the [`crate::Client`] handles,
//! and the four tasks that drive one QUIC connection.
//!
//! - the **writer** owns the control stream's send half and writes request frames, several
//!   queued frames per write when requests pile up (fewer packets);
//! - the **reader** owns the control stream's receive half and completes pending requests by
//!   id, in whatever order the broker answers;
//! - the **event reader** accepts the broker's push stream and feeds a bounded channel; when
//!   the channel is full it waits, so a slow consumer back-pressures the QUIC stream instead
//!   of growing a buffer. A kept event (`Push::Kept`) is buffered as a `Push::Group` with its
//!   id (once per connection); [`crate::EventStream`] sends the id here when the
//!   application takes the event;
//! - the **acknowledger** turns those ids into `ClientFrame::Ack` frames for the writer, so
//!   the broker stops keeping exactly the events the application has;
//! - the **supervisor** waits for the connection to end and turns the end into one
//!   [`ClientError::Closed`] that every pending and later call receives.
//!
//! A task that finds a fault closes the QUIC connection (recording why); the supervisor is
//! the one place that observes the end, so there is exactly one reason for everyone.

use crate::error::{closed_error, ClientError};
use crate::events::{AckMsg, Delivery};
use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::codec::{decode_frame, FrameError, MAX_FRAME_LEN};
use convoke_protocol::handshake::{ClientFrame, ServerFrame, MAX_ACK_IDS};
use convoke_protocol::{close, Push, Response};
use quinn::{ReadError, RecvStream, SendStream, VarInt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Largest chunk asked of quinn per read.
const READ_CHUNK: usize = 64 * 1024;
/// Frames coalesced into one write at most.
const WRITE_BATCH: usize = 64;
/// How long to wait for the broker's own close after it ended a stream, so that its reason
/// (e.g. shutting down) wins over ours.
const GRACE: Duration = Duration::from_millis(500);

type Reply = oneshot::Sender<Result<Response, ClientError>>;

/// Requests in flight and whether the connection is over.
#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    waiters: HashMap<u64, Reply>,
    closed: Option<ClientError>,
}

/// State shared by the handles and the tasks of one connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) connection: quinn::Connection,
    pending: Mutex<Pending>,
    local_close: Mutex<Option<(u32, String)>>,
    closed_tx: watch::Sender<Option<ClientError>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (single inserts and
    // removals), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(connection: quinn::Connection) -> Arc<Self> {
        Arc::new(Self {
            connection,
            pending: Mutex::new(Pending {
                next_id: 1,
                ..Pending::default()
            }),
            local_close: Mutex::new(None),
            closed_tx: watch::channel(None).0,
        })
    }

    /// Reserves a request id and the slot its response will be delivered to.
    pub(crate) fn register(
        &self,
    ) -> Result<(u64, oneshot::Receiver<Result<Response, ClientError>>), ClientError> {
        let mut p = lock(&self.pending);
        if let Some(err) = &p.closed {
            return Err(err.clone());
        }
        let id = p.next_id;
        p.next_id += 1;
        let (tx, rx) = oneshot::channel();
        p.waiters.insert(id, tx);
        Ok((id, rx))
    }

    /// Drops the slot of a request nobody waits for any more (timed out or cancelled).
    pub(crate) fn forget(&self, id: u64) {
        lock(&self.pending).waiters.remove(&id);
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

    /// Why the connection ended, if it has.
    pub(crate) fn closed_error(&self) -> Option<ClientError> {
        lock(&self.pending).closed.clone()
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

/// Starts the tasks of a connection whose handshake succeeded. `leftover` holds control
/// stream bytes read past the welcome frame.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    send: SendStream,
    recv: RecvStream,
    leftover: BytesMut,
    (writer, writer_rx): (mpsc::WeakSender<Bytes>, mpsc::Receiver<Bytes>),
    events_tx: mpsc::Sender<Delivery>,
    acks_rx: mpsc::UnboundedReceiver<AckMsg>,
) {
    tokio::spawn(supervise(shared.clone()));
    tokio::spawn(write_loop(shared.clone(), send, writer_rx));
    tokio::spawn(read_loop(shared.clone(), recv, leftover));
    tokio::spawn(event_loop(shared.clone(), events_tx));
    tokio::spawn(acknowledge(writer, acks_rx));
}

async fn supervise(shared: Arc<Shared>) {
    let end = shared.connection.closed().await;
    let local = lock(&shared.local_close).take();
    let err = closed_error(&end, local);
    tracing::debug!(%err, "connection ended");
    shared.finish(err);
}

async fn write_loop(shared: Arc<Shared>, mut send: SendStream, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        if let Err(e) = send.write_all_chunks(&mut batch).await {
            if !matches!(e, quinn::WriteError::ConnectionLost(_)) {
                shared.fail(
                    close::PROTOCOL_VIOLATION,
                    &format!("cannot write the control stream: {e}"),
                );
            }
            return;
        }
        batch.clear();
    }
    // Every handle is gone: the connection is being closed by the last handle's drop.
    let _ = send.finish();
}

/// The ids of the kept events this connection handed on lately.
#[derive(Debug, Default)]
struct RecentIds {
    set: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

impl RecentIds {
    /// How many ids are remembered.
    const CAPACITY: usize = 4096;

    /// Remembers `id`; false if it was already there.
    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Tells the broker which kept events the application has taken, through the writer (after
/// any requests already queued), several ids per frame when they pile up. Ends with the last
/// event stream and client handle; what was not sent by then is sent again by the broker at
/// the next login.
async fn acknowledge(writer: mpsc::WeakSender<Bytes>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let mut msgs = Vec::new();
    let mut sent_since_flush = false;
    while rx.recv_many(&mut msgs, MAX_ACK_IDS).await > 0 {
        let mut ids = Vec::new();
        for msg in msgs.drain(..) {
            match msg {
                AckMsg::Taken(id) => ids.push(id),
                AckMsg::Flush(done) => {
                    // Everything taken before the flush goes to the writer first.
                    if !ids.is_empty() {
                        if !send_acks(&writer, std::mem::take(&mut ids)).await {
                            return;
                        }
                        sent_since_flush = true;
                    }
                    let _ = done.send(std::mem::take(&mut sent_since_flush));
                }
            }
        }
        if !ids.is_empty() {
            if !send_acks(&writer, ids).await {
                return;
            }
            sent_since_flush = true;
        }
    }
}

/// Queues one `ClientFrame::Ack` on the writer; false once the connection's handles are gone.
async fn send_acks(writer: &mpsc::WeakSender<Bytes>, ids: Vec<u64>) -> bool {
    let Some(writer) = writer.upgrade() else {
        return false;
    };
    match frame_bytes(&ClientFrame::Ack { ids }) {
        Ok(bytes) => writer.send(bytes).await.is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode an acknowledgement");
            true
        }
    }
}

/// The close code for a frame that could not be decoded.
pub(crate) fn frame_close_code(e: &FrameError) -> u32 {
    match e {
        FrameError::TooLarge { .. } => close::FRAME_TOO_LARGE,
        _ => close::MALFORMED_FRAME,
    }
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

async fn read_loop(shared: Arc<Shared>, mut recv: RecvStream, mut buf: BytesMut) {
    loop {
        loop {
            match decode_frame::<ServerFrame>(&mut buf, MAX_FRAME_LEN) {
                Ok(Some(ServerFrame::Response { id, result })) => {
                    shared.resolve(id, result.map_err(ClientError::Api));
                }
                Ok(Some(other)) => {
                    let what = match other {
                        ServerFrame::Welcome(_) => "a second Welcome",
                        _ => "a Refused frame after the Welcome",
                    };
                    shared.fail(
                        close::PROTOCOL_VIOLATION,
                        &format!("the broker sent {what} on the control stream"),
                    );
                    return;
                }
                Ok(None) => break,
                Err(e) => {
                    shared.fail(frame_close_code(&e), &format!("control stream: {e}"));
                    return;
                }
            }
        }
        match read_more(&mut recv, &mut buf).await {
            Ok(true) => {}
            Ok(false) => {
                shared
                    .fail_after_grace(
                        close::PROTOCOL_VIOLATION,
                        "the broker ended the control stream",
                    )
                    .await;
                return;
            }
            Err(ReadError::ConnectionLost(_)) => return,
            Err(e) => {
                shared.fail(close::PROTOCOL_VIOLATION, &format!("control stream: {e}"));
                return;
            }
        }
    }
}

async fn event_loop(shared: Arc<Shared>, tx: mpsc::Sender<Delivery>) {
    // The broker opens its push stream after the welcome; nothing else is accepted.
    let mut recv = match shared.connection.accept_uni().await {
        Ok(recv) => recv,
        Err(_) => return,
    };
    let mut buf = BytesMut::new();
    let mut consumer_gone = tx.is_closed();
    let mut recent = RecentIds::default();
    loop {
        loop {
            match decode_frame::<Push>(&mut buf, MAX_FRAME_LEN) {
                Ok(Some(push)) => {
                    let (push, kept) = match push {
                        // A kept event made while this connection was logging in comes both
                        // live and from the login's replay: hand it on once.
                        Push::Kept { id, .. } if !recent.insert(id) => continue,
                        Push::Kept { id, event } => (Push::Group(event), Some(id)),
                        other => (other, None),
                    };
                    // Waiting here is the back-pressure; once the stream is dropped (or events
                    // were never wanted), pushes are read and discarded to keep the
                    // connection healthy.
                    if !consumer_gone && tx.send((push, kept)).await.is_err() {
                        consumer_gone = true;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    shared.fail(frame_close_code(&e), &format!("push stream: {e}"));
                    return;
                }
            }
        }
        match read_more(&mut recv, &mut buf).await {
            Ok(true) => {}
            Ok(false) => {
                shared
                    .fail_after_grace(
                        close::PROTOCOL_VIOLATION,
                        "the broker ended the push stream",
                    )
                    .await;
                return;
            }
            Err(ReadError::ConnectionLost(_)) => return,
            Err(e) => {
                shared.fail(close::PROTOCOL_VIOLATION, &format!("push stream: {e}"));
                return;
            }
        }
    }
}
