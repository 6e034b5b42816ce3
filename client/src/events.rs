//! [`EventStream`]: what the application hears, in order: the broker's pushes
//! (`onGroupEvent`, `onMultiDeviceEvent`, group messages, a closing notice) and the
//! connection's own state changes (connected, reconnecting, resumed, given up), as one
//! `futures::Stream` of [`Event`]s that lives as long as the [`crate::Client`], across
//! reconnects.
//!
//! It reads a bounded channel; the bound is what turns a slow consumer into QUIC
//! back-pressure rather than an ever-growing buffer.
//!
//! Messages are handed on once each, in sequence order per group, without gaps: after a
//! reconnect (or a gap in the live stream, e.g. after the broker cut a slow consumer) the
//! client fetches what it missed from the group's history before newer live messages (see
//! `resume`). A message this client sent itself is not handed back (its
//! [`crate::MessageSent`] is the answer), as on a live connection.
//!
//! State-changing events (invites, join requests and their outcome, removal, block,
//! destroy) are delivered at least once: the broker keeps each until a client of the user
//! has handed it to the application through this stream (the client then acknowledges it),
//! and sends it again at every login until then. The client hands each on once, also across
//! reconnects (it remembers the ids it handed on); an application that crashes right after
//! receiving one may see it again after it starts again. Events still buffered when the
//! stream or the client is dropped, or never taken because `events()` was never called, are
//! not acknowledged. A client built with `ignore_events` never acknowledges, so those events
//! wait for a client that takes them.

use convoke_protocol::Push;
use futures::Stream;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// One item of the [`EventStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(
    clippy::large_enum_variant,
    reason = "pushes are nearly every item: boxing them would allocate once per event"
)]
pub enum Event {
    /// A push from the broker: a group event, a multi-device event, a message, or the
    /// broker's notice that it is closing this connection.
    Push(Push),
    /// The connection's state changed.
    Connection(ConnectionEvent),
}

impl Event {
    /// The push, if this is one.
    pub fn into_push(self) -> Option<Push> {
        match self {
            Self::Push(p) => Some(p),
            Self::Connection(_) => None,
        }
    }
}

/// How the connection to the broker is doing. A [`crate::Client`] with reconnection on
/// (the default) goes `Connected`, then on a drop `Reconnecting` (once per attempt),
/// `Connected` and `Resumed`, as often as the network needs, and `GaveUp` at most once, at
/// the end.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A connection is up and logged in (the first one, or a new one after a drop).
    #[non_exhaustive]
    Connected {
        /// The broker's address.
        server: SocketAddr,
        /// The session's id on the broker (new for every connection).
        session_id: u64,
        /// Whether the hello went in TLS 0-RTT early data (a reconnect to a broker seen
        /// before, one round trip sooner).
        zero_rtt: bool,
        /// From the start of this connection attempt (name resolution, QUIC and TLS
        /// handshakes, hello) to the broker's welcome.
        took: Duration,
    },
    /// The connection dropped; attempt `attempt` to connect again starts after `delay`.
    #[non_exhaustive]
    Reconnecting {
        /// Why the last connection (or the last attempt) ended.
        reason: String,
        /// 1 for the first attempt after a drop; a link that dropped within 10 s of coming
        /// up continues the count (and the back-off) of the attempts before it.
        attempt: u32,
        /// The back-off before this attempt.
        delay: Duration,
    },
    /// The broker ended the session because its token expired (the session lives as long
    /// as its token). With a [`crate::ClientBuilder::token_provider`] (`refreshing`), the
    /// client reconnects with a token from the provider (`Reconnecting`, `Connected`,
    /// `Resumed` follow); with a fixed token it cannot, and `GaveUp` follows: log in again
    /// (a new client with a new token).
    #[non_exhaustive]
    TokenExpired {
        /// The broker's reason (when the token expired).
        reason: String,
        /// Whether the client is reconnecting with a token from its provider.
        refreshing: bool,
    },
    /// After a reconnect: every message missed while away has been handed on (in order,
    /// before this event), and live ones follow.
    #[non_exhaustive]
    Resumed {
        /// Messages fetched from history because they were missed.
        recovered: u64,
    },
    /// The client stopped trying: the broker refused it in a way retrying cannot fix (bad
    /// or expired token, a session ended by its token's expiry without a token provider,
    /// unsupported version, a bad hello, too many sessions of the user, a
    /// protocol violation), the token provider gave a token for another user, reconnecting
    /// is off ([`crate::ReconnectPolicy::disabled`]), or the configured attempts ran out.
    /// The stream ends after this. (A [`crate::Client::close`] ends the stream without it.)
    #[non_exhaustive]
    GaveUp {
        /// Why.
        reason: String,
    },
}

/// An event as the client buffers it: with the id to acknowledge once the application
/// takes it, for a kept event.
pub(crate) type Delivery = (Event, Option<u64>);

/// What the client's acknowledgement task is told.
#[derive(Debug)]
pub(crate) enum AckMsg {
    /// The application took kept event `id`.
    Taken(u64),
    /// Kept event `id` came again on a later connection: acknowledge it again if the
    /// application has taken it.
    Repeat(u64),
    /// Hand everything taken so far to the writer, then answer whether anything was
    /// handed on since the previous flush.
    Flush(tokio::sync::oneshot::Sender<bool>),
}

/// The events of one client. See [`crate::Client::events`].
pub struct EventStream {
    rx: Option<mpsc::Receiver<Delivery>>,
    /// Where the ids of kept events go once taken (the client's acknowledgement task).
    acks: Option<mpsc::UnboundedSender<AckMsg>>,
}

impl EventStream {
    pub(crate) fn new(
        rx: Option<mpsc::Receiver<Delivery>>,
        acks: Option<mpsc::UnboundedSender<AckMsg>>,
    ) -> Self {
        Self { rx, acks }
    }

    /// Hands `delivery` to the application, acknowledging it first if it was kept.
    fn take(&self, delivery: Delivery) -> Event {
        if let (Some(id), Some(acks)) = (delivery.1, &self.acks) {
            let _ = acks.send(AckMsg::Taken(id));
        }
        delivery.0
    }

    /// Whether this stream receives the client's events (false for a second
    /// [`crate::Client::events`] call, which yields a stream that ends at once).
    pub fn is_active(&self) -> bool {
        self.rx.is_some()
    }

    /// Events received but not yet taken from this stream.
    pub fn queued(&self) -> usize {
        self.rx.as_ref().map_or(0, mpsc::Receiver::len)
    }

    /// The next event, or `None` once the client is closed for good and the buffer is
    /// empty.
    pub async fn recv(&mut self) -> Option<Event> {
        let delivery = self.rx.as_mut()?.recv().await?;
        Some(self.take(delivery))
    }

    /// The next push from the broker, skipping connection-state events; `None` once the
    /// client is closed for good and the buffer is empty.
    pub async fn next_push(&mut self) -> Option<Push> {
        loop {
            if let Event::Push(p) = self.recv().await? {
                return Some(p);
            }
        }
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        let Some(rx) = &mut this.rx else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(delivery)) => Poll::Ready(Some(this.take(delivery))),
            other => other.map(|_| None),
        }
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("active", &self.is_active())
            .field("queued", &self.queued())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn inactive_stream_ends_at_once_and_active_one_drains_after_close() {
        let mut empty = EventStream::new(None, None);
        assert!(!empty.is_active());
        assert_eq!(empty.next().await, None);

        let (tx, rx) = mpsc::channel(4);
        let (acks, mut acked) = mpsc::unbounded_channel();
        let mut events = EventStream::new(Some(rx), Some(acks));
        let pushes = Push::examples();
        let state = Event::Connection(ConnectionEvent::Resumed { recovered: 2 });
        tx.send((Event::Push(pushes[0].clone()), Some(7)))
            .await
            .unwrap();
        tx.send((state.clone(), None)).await.unwrap();
        tx.send((Event::Push(pushes[1].clone()), None))
            .await
            .unwrap();
        tx.send((Event::Push(pushes[2].clone()), Some(9)))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(events.queued(), 4);
        assert!(
            acked.try_recv().is_err(),
            "nothing acknowledged before it is taken"
        );
        let taken = |m: Result<AckMsg, _>| match m {
            Ok(AckMsg::Taken(id)) => Some(id),
            _ => None,
        };
        assert_eq!(events.next().await, Some(Event::Push(pushes[0].clone())));
        assert_eq!(taken(acked.try_recv()), Some(7));
        assert_eq!(events.recv().await, Some(state));
        assert_eq!(events.next_push().await.as_ref(), Some(&pushes[1]));
        assert!(acked.try_recv().is_err());
        assert_eq!(events.next_push().await.as_ref(), Some(&pushes[2]));
        assert_eq!(taken(acked.try_recv()), Some(9));
        assert_eq!(events.next().await, None);
    }
}
