//! [`EventStream`]: the broker's pushes (`onGroupEvent`, `onMultiDeviceEvent`, group
//! messages, a closing notice) as a `futures::Stream`, in delivery order.
//!
//! It reads a bounded channel that the connection's event task fills; the bound is what
//! turns a slow consumer into QUIC back-pressure rather than an ever-growing buffer.
//!
//! State-changing events (invites, join requests and their outcome, removal, block,
//! destroy) are delivered at least once: the broker keeps each until a client of the user
//! has handed it to the application through this stream (the client then acknowledges it),
//! and sends it again at every login until then. Events still buffered when the stream or
//! the client is dropped, or never taken because `events()` was never called, are not
//! acknowledged. One connection hands each on once (a login's replay may repeat one
//! that also came live); an application that crashes right after receiving one may see it
//! again after reconnecting. A client built with `ignore_events` never acknowledges, so those
//! events wait for a client that takes them.

use convoke_protocol::Push;
use futures::Stream;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A push as the connection's event task buffers it: with the id to acknowledge once the
/// application takes it, for a kept event.
pub(crate) type Delivery = (Push, Option<u64>);

/// What the connection's acknowledgement task is told.
#[derive(Debug)]
pub(crate) enum AckMsg {
    /// The application took kept event `id`.
    Taken(u64),
    /// Hand everything taken so far to the writer, then answer whether anything was
    /// handed on since the previous flush.
    Flush(tokio::sync::oneshot::Sender<bool>),
}

/// The pushes of one connection. See [`crate::Client::events`].
pub struct EventStream {
    rx: Option<mpsc::Receiver<Delivery>>,
    /// Where the ids of kept events go once taken (the connection's acknowledgement task).
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
    fn take(&self, delivery: Delivery) -> Push {
        if let (Some(id), Some(acks)) = (delivery.1, &self.acks) {
            let _ = acks.send(AckMsg::Taken(id));
        }
        delivery.0
    }

    /// Whether this stream receives the connection's pushes (false for a second
    /// [`crate::Client::events`] call, which yields a stream that ends at once).
    pub fn is_active(&self) -> bool {
        self.rx.is_some()
    }

    /// Pushes received but not yet taken from this stream.
    pub fn queued(&self) -> usize {
        self.rx.as_ref().map_or(0, mpsc::Receiver::len)
    }

    /// The next push, or `None` once the connection has closed and the buffer is empty.
    pub async fn recv(&mut self) -> Option<Push> {
        let delivery = self.rx.as_mut()?.recv().await?;
        Some(self.take(delivery))
    }
}

impl Stream for EventStream {
    type Item = Push;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Push>> {
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
        tx.send((pushes[0].clone(), Some(7))).await.unwrap();
        tx.send((pushes[1].clone(), None)).await.unwrap();
        tx.send((pushes[2].clone(), Some(9))).await.unwrap();
        drop(tx);
        assert_eq!(events.queued(), 3);
        assert!(
            acked.try_recv().is_err(),
            "nothing acknowledged before it is taken"
        );
        let taken = |m: Result<AckMsg, _>| match m {
            Ok(AckMsg::Taken(id)) => Some(id),
            _ => None,
        };
        assert_eq!(events.next().await.as_ref(), Some(&pushes[0]));
        assert_eq!(taken(acked.try_recv()), Some(7));
        assert_eq!(events.recv().await.as_ref(), Some(&pushes[1]));
        assert!(acked.try_recv().is_err());
        assert_eq!(events.next().await.as_ref(), Some(&pushes[2]));
        assert_eq!(taken(acked.try_recv()), Some(9));
        assert_eq!(events.next().await, None);
    }
}
