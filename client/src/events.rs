//! [`EventStream`]: the broker's pushes (`onGroupEvent`, `onMultiDeviceEvent`, group
//! messages, a closing notice) as a `futures::Stream`, in delivery order.
//!
//! It reads a bounded channel that the connection's event task fills; the bound is what
//! turns a slow consumer into QUIC back-pressure rather than an ever-growing buffer.
//!
//! State-changing events (invites, join requests and their outcome, removal, block,
//! destroy) are delivered at least once: the broker keeps each until a client of the user
//! has put it in this channel (the client then acknowledges it), and sends it again at every
//! login until then. One connection hands each on once (a login's replay may repeat one
//! that also came live); an application that crashes right after receiving one may see it
//! again after reconnecting. A client built with `ignore_events` never acknowledges, so those
//! events wait for a client that takes them.

use convoke_protocol::Push;
use futures::Stream;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The pushes of one connection. See [`crate::Client::events`].
pub struct EventStream {
    rx: Option<mpsc::Receiver<Push>>,
}

impl EventStream {
    pub(crate) fn new(rx: Option<mpsc::Receiver<Push>>) -> Self {
        Self { rx }
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
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => None,
        }
    }
}

impl Stream for EventStream {
    type Item = Push;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Push>> {
        match &mut self.get_mut().rx {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
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
        let mut empty = EventStream::new(None);
        assert!(!empty.is_active());
        assert_eq!(empty.next().await, None);

        let (tx, rx) = mpsc::channel(4);
        let mut events = EventStream::new(Some(rx));
        let pushes = Push::examples();
        tx.send(pushes[0].clone()).await.unwrap();
        tx.send(pushes[1].clone()).await.unwrap();
        drop(tx);
        assert_eq!(events.queued(), 2);
        assert_eq!(events.next().await.as_ref(), Some(&pushes[0]));
        assert_eq!(events.recv().await.as_ref(), Some(&pushes[1]));
        assert_eq!(events.next().await, None);
    }
}
