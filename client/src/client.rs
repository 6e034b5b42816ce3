//! [`Client`]: the cheap, cloneable handle to one connection, with the raw pipelined
//! [`Client::request`], the event stream, and the connection's lifecycle.
//!
//! The typed method per API call lives in [`crate::api`]; file transfers in
//! [`crate::transfer`].

use crate::builder::ClientBuilder;
use crate::connection::Exchange;
use crate::error::ClientError;
use crate::events::{AckMsg, EventStream};
use crate::reconnect::{Core, State};
use convoke_protocol::handshake::Welcome;
use convoke_protocol::{close, ApiError, ErrorCode, Request, Response};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A client of a Convoke broker. Clone it freely: every clone shares the connection.
///
/// It stays usable across connection drops: it reconnects by itself (see
/// [`crate::ReconnectPolicy`]) and its event stream says so. It is closed for good when
/// [`close`](Self::close) is called, when the broker refuses it in a way retrying cannot
/// fix, when reconnecting is off or gives up, or when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Longest [`Client::close`] waits for the broker to have the acknowledgements.
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Inner {
    pub(crate) core: Arc<Core>,
    pub(crate) events: Mutex<Option<mpsc::Receiver<crate::events::Delivery>>>,
    /// Ids of kept events the application took, for the acknowledgement task. Unbounded
    /// because it is fed from `EventStream::poll_next`, which cannot wait; each id is one
    /// state-changing event the application took (through the bounded event channel), and
    /// the task sends them on in frames of up to `MAX_ACK_IDS`.
    pub(crate) acks: mpsc::UnboundedSender<AckMsg>,
    pub(crate) endpoint: quinn::Endpoint,
    /// False when the endpoint was given to the builder and other connections may share it.
    pub(crate) owns_endpoint: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.core.begin_close();
        if let Some(link) = self.core.link() {
            link.fail(close::NORMAL, "every client handle was dropped");
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("user_id", &self.inner.core.user_id)
            .field("connected", &self.is_connected())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The first wait before a send with a client message id answered 500 goes out again.
const BUSY_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between those repeats.
const BUSY_RETRY_MAX: Duration = Duration::from_secs(1);
/// How the broker words a 500 after which a change may or may not have been made.
const OUTCOME_OPEN: &str = "may or may not";

/// A send the broker recognises when repeated (it carries a client message id).
fn idempotent_send(request: &Request) -> bool {
    matches!(
        request,
        Request::SendGroupMessage {
            client_msg_id: Some(_),
            ..
        }
    )
}

/// The error of a send whose outcome stayed open, naming the client message id a repeat
/// must carry to learn it.
fn outcome_open(mut first: ApiError, request: &Request) -> ApiError {
    if let Request::SendGroupMessage {
        client_msg_id: Some(id),
        ..
    } = request
    {
        first.message = format!(
            "{}; send it again with client message id {id:?} to learn whether it was stored",
            first.message
        );
    }
    first
}

/// Whether a request may be sent again when the connection it went out on dropped before
/// its answer: reads, and sends that carry a client message id (the broker answers a
/// repeat with the original). Other changes fail with the connection's error instead: the
/// application decides, since the first attempt may have taken effect.
fn retry_safe(request: &Request) -> bool {
    use Request as R;
    match request {
        R::SendGroupMessage { client_msg_id, .. } => client_msg_id.is_some(),
        R::Ping { .. }
        | R::GetGroupInfo { .. }
        | R::ListGroupMembers { .. }
        | R::GetGroupAdmin { .. }
        | R::GetGroupMutelist { .. }
        | R::IsInGroupMutelist { .. }
        | R::GetGroupBlocklist { .. }
        | R::GetGroupAllowlist { .. }
        | R::IsInGroupAllowlist { .. }
        | R::FetchGroupAnnouncement { .. }
        | R::GetGroupSharedFilelist { .. }
        | R::GetGroupMemberAttributes { .. }
        | R::GetGroupMembersAttributes { .. }
        | R::GetJoinedGroups { .. }
        | R::GetPublicGroups { .. }
        | R::GetGroupMsgReadUser { .. }
        | R::GetGroupMessages { .. }
        | R::AckGroupMessage { .. } => true,
        _ => false,
    }
}

impl Client {
    /// Options for a new client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    /// Sends one request and waits for its response, however many others are in flight.
    ///
    /// While the client is reconnecting the request waits for the new connection. An
    /// error response becomes [`ClientError::Api`]; no connection within the request
    /// timeout [`ClientError::Disconnected`]; no answer within it [`ClientError::Timeout`]
    /// (for a send with a client message id that went out: the open-outcome 500 below); a
    /// connection that drops after the request went out [`ClientError::Closed`], unless the
    /// request is safe to repeat (reads, and sends with a client message id), which go
    /// out again on the next connection. A send with a client message id answered 500
    /// `SERVER_BUSY` saying it "may or may not have been made" (in a cluster: the group's
    /// owner node died or froze mid-call) is sent again too, after 100 ms doubling up to
    /// 1 s, while the repeats are answered the same way or lost with the connection: the
    /// broker answers a repeat with the original, so the send is stored once and the
    /// application learns which. Once a send may have been made (such an answer, or its
    /// connection lost after the send went out), only a success ends the call well: any
    /// other answer (a repeat finding the owner unreachable, a rate limit), the request
    /// timeout (also with no answer at all once the send went out) or the client closing
    /// fails it at once with a 500 `SERVER_BUSY` that says
    /// the outcome is open and names the client message id to repeat with
    /// ([`send_group_message_with_id`](Self::send_group_message_with_id)) to learn it, once
    /// the owner is back: no call waits for a node to return, and none hides that a send
    /// may be stored. A 500 that says nothing was done, before that, comes back at once. A
    /// client closed for good fails at once with [`ClientError::Closed`]. Dropping the
    /// future abandons the wait (the request may still take effect).
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let core = &self.inner.core;
        let deadline = tokio::time::Instant::now() + core.request_timeout;
        let mut busy_delay = BUSY_RETRY_FIRST;
        // Set once a send may have been made: the first answer that left its outcome open,
        // or its link lost after the send was handed to it. Only a success settles it;
        // any other end of the call fails with it (naming the client message id).
        let mut open: Option<ApiError> = None;
        // Whether the request was handed to a link (it may have been written).
        let mut handed = false;
        let ended = tokio::time::timeout_at(deadline, async {
            loop {
                let link = core.wait_link(deadline).await?;
                handed = true;
                match link.exchange(&request).await {
                    Exchange::Answered(Err(e))
                        if idempotent_send(&request)
                            && (open.is_some()
                                || (e.code == ErrorCode::ServerBusy
                                    && e.message.contains(OUTCOME_OPEN))) =>
                    {
                        let again = e.code == ErrorCode::ServerBusy
                            && e.message.contains(OUTCOME_OPEN)
                            && !core.is_closing()
                            && tokio::time::Instant::now() + busy_delay * 2 < deadline;
                        let first = open.get_or_insert(e).clone();
                        if !again {
                            return Err(ClientError::Api(first));
                        }
                        tracing::debug!(delay = ?busy_delay, "send's outcome is open; sending it again");
                        tokio::time::sleep(busy_delay).await;
                        busy_delay = (busy_delay * 2).min(BUSY_RETRY_MAX);
                    }
                    Exchange::Answered(result) => {
                        if let Ok(response) = &result {
                            // A leave, join or block of this user's changes what the
                            // sequencer resumes.
                            if let Some(change) =
                                crate::resume::membership(&request, response, link.broker_now())
                            {
                                let _ = core.control.send(change);
                            }
                        }
                        return result.map_err(ClientError::Api);
                    }
                    Exchange::NotSent => {}
                    Exchange::Lost(err) => {
                        if idempotent_send(&request) && open.is_none() {
                            open = Some(ApiError::new(
                                ErrorCode::ServerBusy,
                                format!(
                                    "{err}: the send may or may not have been made, read the \
                                     group's messages before sending it anew"
                                ),
                            ));
                        }
                        if !retry_safe(&request) || core.is_closing() {
                            return Err(err);
                        }
                    }
                }
            }
        })
        .await;
        let timed_out = || {
            ApiError::new(
                ErrorCode::ServerBusy,
                format!(
                    "no answer within the request timeout ({:?}): the send may or may not \
                     have been made",
                    core.request_timeout
                ),
            )
        };
        match (ended, open) {
            (Ok(Ok(response)), _) => Ok(response),
            (Ok(Err(_)) | Err(_), Some(first)) => {
                Err(ClientError::Api(outcome_open(first, &request)))
            }
            (Ok(Err(e)), None) => Err(e),
            (Err(_), None) if handed && idempotent_send(&request) => {
                Err(ClientError::Api(outcome_open(timed_out(), &request)))
            }
            (Err(_), None) => Err(ClientError::Timeout),
        }
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

    /// The events (the broker's pushes and the connection's state changes) in delivery
    /// order, across reconnects.
    ///
    /// Only the first call gets them; later calls (and every call on a client built with
    /// [`ClientBuilder::ignore_events`]) return a stream that ends immediately. Until this is
    /// called, up to the builder's `event_capacity` events are kept; when the buffer is full
    /// the client stops reading pushes (the broker eventually disconnects a client that
    /// never catches up, and the client reconnects and catches up). Dropping the stream
    /// discards later events. The stream ends, after the buffered events, when the client
    /// is closed for good. A state-changing event is acknowledged to the broker when it is
    /// taken from this stream, not before: one left in the buffer comes again at the next
    /// login.
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

    /// Resume `group_id` after message `seq`: after the next reconnect (or at the next gap)
    /// the client fetches the group's messages after `seq` and hands them on. For an
    /// application that keeps its position (e.g. across restarts); a group is tracked by
    /// itself from the first message the client hands on.
    pub fn track_group(&self, group_id: &str, seq: u64) {
        let _ = self.inner.core.control.send(crate::resume::Control::Track {
            group_id: group_id.to_string(),
            seq,
        });
    }

    pub(crate) fn note_created(&self, group_id: &str) {
        let _ = self
            .inner
            .core
            .control
            .send(crate::resume::Control::Created {
                group_id: group_id.to_string(),
            });
    }

    /// The broker's welcome on the current connection (protocol version, user id, admin
    /// flag, session id, server time); `None` while the client is reconnecting or closed.
    pub fn welcome(&self) -> Option<Welcome> {
        self.inner.core.link().map(|l| l.welcome.clone())
    }

    /// The user id this client acts as (from the token).
    pub fn user_id(&self) -> &str {
        &self.inner.core.user_id
    }

    /// The current connection's session id on the broker (0 while not connected).
    pub fn session_id(&self) -> u64 {
        self.inner.core.link().map_or(0, |l| l.welcome.session_id)
    }

    /// Whether the token carries the app-admin claim.
    pub fn app_admin(&self) -> bool {
        self.inner.core.app_admin
    }

    /// The address of the broker this client is connected to; `None` while reconnecting or
    /// closed.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.inner.core.link().map(|l| l.server)
    }

    /// The current round-trip estimate of the QUIC connection; `None` while reconnecting or
    /// closed.
    pub fn rtt(&self) -> Option<Duration> {
        self.inner.core.link().map(|l| l.connection.rtt())
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.core.link().is_some_and(|l| !l.is_closed())
    }

    /// Whether the client is closed for good (it will not reconnect).
    pub fn is_closed(&self) -> bool {
        matches!(self.inner.core.state(), State::Closed(_))
    }

    /// Waits until the client is closed for good and returns why.
    pub async fn closed(&self) -> ClientError {
        self.inner.core.wait_closed().await
    }

    /// Closes the client (close code 0) and waits, briefly, until the broker has been
    /// told. Pending calls fail with [`ClientError::Closed`]; the event stream ends after
    /// what it holds.
    pub async fn close(&self) {
        let core = &self.inner.core;
        // Acknowledgements of events the application took go out first (a round trip
        // proves the broker has them), so they are not sent again at the next login.
        let (flushed, sent_any) = tokio::sync::oneshot::channel();
        if core.link().is_some() && self.inner.acks.send(AckMsg::Flush(flushed)).is_ok() {
            let _ = tokio::time::timeout(ACK_FLUSH_TIMEOUT, async {
                if sent_any.await.unwrap_or(false) {
                    let _ = self.ping().await;
                }
            })
            .await;
        }
        core.begin_close();
        if let Some(link) = core.link() {
            link.fail(close::NORMAL, "closed by the application");
        }
        core.wait_closed().await;
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
        let deadline = tokio::time::Instant::now() + self.inner.core.request_timeout;
        Ok(self
            .inner
            .core
            .wait_link(deadline)
            .await?
            .connection
            .clone())
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.core.request_timeout
    }
}
