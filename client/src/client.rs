//! [`Client`]: the cheap, cloneable handle to one connection, with the raw pipelined
//! [`Client::request`], the event stream, and the connection's lifecycle.
//!
//! The typed method per API call lives in [`crate::api`]; file transfers in
//! [`crate::transfer`].

use crate::builder::ClientBuilder;
use crate::connection::Shared;
use crate::error::ClientError;
use crate::events::EventStream;
use bytes::Bytes;
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::handshake::{ClientFrame, Welcome};
use convoke_protocol::{close, Request, Response};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A connection to a Convoke broker. Clone it freely: every clone shares the connection.
///
/// The connection closes when [`close`](Self::close) is called, when the broker or the
/// network ends it, or when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Longest [`Client::close`] waits for the broker to have the acknowledgements.
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) writer: mpsc::Sender<Bytes>,
    pub(crate) events: Mutex<Option<mpsc::Receiver<crate::events::Delivery>>>,
    /// Ids of kept events the application took, for the acknowledgement task. Unbounded
    /// because it is fed from `EventStream::poll_next`, which cannot wait; each id is one
    /// state-changing event the application took (through the bounded event channel), and
    /// the task sends them on in frames of up to `MAX_ACK_IDS`.
    pub(crate) acks: mpsc::UnboundedSender<crate::events::AckMsg>,
    pub(crate) welcome: Welcome,
    pub(crate) request_timeout: Duration,
    pub(crate) endpoint: quinn::Endpoint,
    /// False when the endpoint was given to the builder and other connections may share it.
    pub(crate) owns_endpoint: bool,
    pub(crate) server_addr: SocketAddr,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.shared.closed_error().is_none() {
            self.shared
                .fail(close::NORMAL, "every client handle was dropped");
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.server_addr)
            .field("user_id", &self.inner.welcome.user_id)
            .field("session_id", &self.inner.welcome.session_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Removes a request's slot if its caller stops waiting (timeout, or the future dropped).
struct SlotGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}

impl Client {
    /// Options for a new connection.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Sends one request and waits for its response, however many others are in flight.
    ///
    /// An error response becomes [`ClientError::Api`]; no answer within the request timeout
    /// [`ClientError::Timeout`]; a connection that is or becomes closed
    /// [`ClientError::Closed`], at once. Dropping the future abandons the wait (the request
    /// may still take effect).
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let method = request.method();
        let shared = &self.inner.shared;
        let (id, rx) = shared.register()?;
        let _slot = SlotGuard { shared, id };
        let frame = frame_bytes(&ClientFrame::Request { id, request })
            .map_err(|e| ClientError::Protocol(format!("cannot encode {method}: {e}")))?;
        let exchange = async {
            if self.inner.writer.send(frame).await.is_err() {
                return Err(shared.wait_closed().await);
            }
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(shared.wait_closed().await),
            }
        };
        tokio::time::timeout(self.inner.request_timeout, exchange)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    /// Round trip to the broker (answered without touching any group). Returns the RTT.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);
        let nonce = NEXT_NONCE.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        match self.request(Request::Ping { nonce }).await? {
            Response::Pong { nonce: got, .. } if got == nonce => Ok(start.elapsed()),
            Response::Pong { nonce: got, .. } => Err(ClientError::Protocol(format!(
                "ping {nonce} answered with pong {got}"
            ))),
            other => Err(crate::api::unexpected("ping", &other)),
        }
    }

    /// The pushes (group events, multi-device events, messages) in delivery order.
    ///
    /// Only the first call gets them; later calls (and every call on a client built with
    /// [`ClientBuilder::ignore_events`]) return a stream that ends immediately. Until this is
    /// called, up to the builder's `event_capacity` pushes are kept; when the buffer is full
    /// the connection stops reading pushes (the broker eventually disconnects a client that
    /// never catches up). Dropping the stream discards later pushes. The stream ends, after
    /// the buffered pushes, when the connection closes. A state-changing event is
    /// acknowledged to the broker when it is taken from this stream, not before: one left
    /// in the buffer comes again at the next login.
    pub fn events(&self) -> EventStream {
        let rx = self
            .inner
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let acks = rx.is_some().then(|| self.inner.acks.clone());
        EventStream::new(rx, acks)
    }

    /// The broker's welcome: protocol version, user id, admin flag, session id, server time.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// The user id this session acts as (from the token).
    pub fn user_id(&self) -> &str {
        &self.inner.welcome.user_id
    }

    /// This connection's session id on the broker.
    pub fn session_id(&self) -> u64 {
        self.inner.welcome.session_id
    }

    /// Whether the token carries the app-admin claim.
    pub fn app_admin(&self) -> bool {
        self.inner.welcome.app_admin
    }

    /// The broker's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.inner.server_addr
    }

    /// The current round-trip estimate of the QUIC connection.
    pub fn rtt(&self) -> Duration {
        self.inner.shared.connection.rtt()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed_error().is_some()
            || self.inner.shared.connection.close_reason().is_some()
    }

    /// Waits until the connection ends and returns why (a [`ClientError::Closed`]).
    pub async fn closed(&self) -> ClientError {
        self.inner.shared.wait_closed().await
    }

    /// Closes the connection (close code 0) and waits, briefly, until the broker has been
    /// told. Pending calls fail with [`ClientError::Closed`].
    pub async fn close(&self) {
        // Acknowledgements of events the application took go out first (a round trip
        // proves the broker has them), so they are not sent again at the next login.
        let (flushed, sent_any) = tokio::sync::oneshot::channel();
        if self
            .inner
            .acks
            .send(crate::events::AckMsg::Flush(flushed))
            .is_ok()
        {
            let _ = tokio::time::timeout(ACK_FLUSH_TIMEOUT, async {
                if sent_any.await.unwrap_or(false) {
                    let _ = self.ping().await;
                }
            })
            .await;
        }
        self.inner
            .shared
            .fail(close::NORMAL, "closed by the application");
        self.inner.shared.wait_closed().await;
        // Give quinn a moment to deliver the close, so the broker sees a clean close
        // rather than an idle timeout (matters for a CLI that exits right after). A shared
        // endpoint is driven by its owner and may never be idle: not ours to wait for.
        if self.inner.owns_endpoint {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
        }
    }

    /// The live QUIC connection, for opening transfer streams. While the client reconnects
    /// this waits (up to the request timeout) for the next connection; it fails with
    /// [`ClientError::Closed`] once the client is closed for good.
    pub(crate) async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        match self.inner.shared.closed_error() {
            Some(err) => Err(err),
            None => Ok(self.inner.shared.connection.clone()),
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }
}
