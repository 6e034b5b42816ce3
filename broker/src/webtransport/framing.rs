//! How a session's streams are framed: plain QUIC (`convoke/1`), or WebTransport, where
//! each stream starts with a small header (RFC 9220 / draft-ietf-webtrans-http3: a
//! bidirectional stream with the varint frame type `0x41` and the session id, a
//! unidirectional one with the stream type `0x54` and the session id). After the header a
//! WebTransport stream is a plain quinn stream, so the session code
//! ([`crate::session`]) runs unchanged on it: the header is read or written here and the
//! quinn stream handed on.

use crate::group::rules::Caller;
use crate::node::Node;
use crate::session::transfer;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use web_transport_quinn::proto::VarInt;

/// HTTP/3 frame type that opens a WebTransport bidirectional stream.
const BI_STREAM: u64 = 0x41;
/// HTTP/3 unidirectional stream type of a WebTransport stream.
const UNI_STREAM: u32 = 0x54;

/// The framing of one connection's streams.
#[derive(Debug, Clone)]
pub enum Framing {
    /// `convoke/1`: streams carry frames from their first byte.
    Quic,
    /// A browser's WebTransport session (HTTP/3 CONNECT accepted).
    WebTransport(Arc<Browser>),
}

/// A browser's WebTransport session: what its streams need.
#[derive(Debug)]
pub struct Browser {
    /// Holds the HTTP/3 control streams and the CONNECT stream open for the session's
    /// life (closing them ends the session); its streams are not used.
    session: web_transport_quinn::Session,
    /// The session id, learnt from the header of the first stream the page opens (the
    /// control stream); every later stream must carry the same.
    id: OnceLock<u64>,
}

/// Why a WebTransport stream header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("stream error: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("not a WebTransport stream (frame type {0:#x})")]
    NotWebTransport(u64),
    #[error("stream of another WebTransport session ({0}, this session is {1})")]
    OtherSession(u64, u64),
}

impl Framing {
    /// The framing of a browser whose CONNECT request was accepted.
    pub fn web_transport(session: web_transport_quinn::Session) -> Self {
        Self::WebTransport(Arc::new(Browser {
            session,
            id: OnceLock::new(),
        }))
    }

    /// Accepts the session's control stream (its first bidirectional stream).
    pub async fn accept_control(
        &self,
        conn: &quinn::Connection,
    ) -> anyhow::Result<(quinn::SendStream, quinn::RecvStream)> {
        match self {
            Self::Quic => Ok(conn.accept_bi().await?),
            Self::WebTransport(browser) => {
                let (send, mut recv) = conn.accept_bi().await?;
                let id = read_bi_header(&mut recv).await?;
                let _ = browser.id.set(id);
                Ok((send, recv))
            }
        }
    }

    /// Opens the session's event stream (server to client).
    pub async fn open_events(&self, conn: &quinn::Connection) -> anyhow::Result<quinn::SendStream> {
        let mut send = conn.open_uni().await?;
        if let Self::WebTransport(browser) = self {
            let id = browser
                .id
                .get()
                .copied()
                .ok_or_else(|| anyhow::anyhow!("no session id before the event stream"))?;
            let mut header = Vec::with_capacity(16);
            VarInt::from_u32(UNI_STREAM).encode(&mut header);
            VarInt::try_from(id)?.encode(&mut header);
            send.write_all(&header).await?;
        }
        Ok(send)
    }

    /// Serves a transfer stream the client opened, in a task of its own (a browser's
    /// stream header is read there, under the transfer header's deadline).
    pub fn spawn_transfer(
        &self,
        node: &Arc<Node>,
        caller: &Caller,
        send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        match self {
            Self::Quic => {
                tokio::spawn(transfer::serve_transfer(
                    node.clone(),
                    caller.clone(),
                    send,
                    recv,
                ));
            }
            Self::WebTransport(browser) => {
                let (node, caller, browser) = (node.clone(), caller.clone(), browser.clone());
                tokio::spawn(async move {
                    let wait = Duration::from_millis(node.config.sessions.handshake_timeout_ms);
                    let header = tokio::time::timeout(wait, read_bi_header(&mut recv)).await;
                    let expected = browser.id.get().copied();
                    match header {
                        Ok(Ok(id)) if Some(id) == expected => {
                            transfer::serve_transfer(node, caller, send, recv).await;
                        }
                        Ok(Ok(id)) => tracing::debug!(
                            user = %caller.user,
                            error = %HeaderError::OtherSession(id, expected.unwrap_or_default()),
                            "transfer stream dropped"
                        ),
                        Ok(Err(e)) => {
                            tracing::debug!(user = %caller.user, error = %e, "transfer stream dropped");
                        }
                        Err(_) => {
                            tracing::debug!(user = %caller.user, "no WebTransport stream header in time");
                        }
                    }
                });
            }
        }
    }

    /// Closes the connection with a convoke close code. A browser learns the code and the
    /// reason only from a WebTransport session close (the CLOSE_WEBTRANSPORT_SESSION
    /// capsule, then the connection closes); a bare QUIC close reaches a page as
    /// "connection lost".
    pub fn close(&self, conn: &quinn::Connection, code: u32, reason: &[u8]) {
        match self {
            Self::Quic => conn.close(code.into(), reason),
            Self::WebTransport(browser) => browser.session.close(code, reason),
        }
    }

    /// Ends the session however it ended: a browser's WebTransport session is closed
    /// explicitly (its CONNECT stream would keep the connection open).
    pub fn finish(&self, conn: &quinn::Connection) {
        if let Self::WebTransport(browser) = self {
            if conn.close_reason().is_none() {
                browser.session.close(0, b"");
            }
        }
    }
}

/// Reads a WebTransport bidirectional stream's header; returns its session id.
async fn read_bi_header(recv: &mut quinn::RecvStream) -> Result<u64, HeaderError> {
    let kind = read_varint(recv).await?;
    if kind != BI_STREAM {
        return Err(HeaderError::NotWebTransport(kind));
    }
    Ok(read_varint(recv).await?)
}

/// Reads one QUIC variable-length integer (RFC 9000 16).
async fn read_varint(recv: &mut quinn::RecvStream) -> Result<u64, quinn::ReadExactError> {
    let mut buf = [0u8; 8];
    recv.read_exact(&mut buf[..1]).await?;
    let len = 1usize << (buf[0] >> 6);
    recv.read_exact(&mut buf[1..len]).await?;
    Ok(varint_value(&buf[..len]))
}

/// The value of a whole varint (its length bits in the first byte's top two bits).
fn varint_value(bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(0u64, |acc, (i, b)| {
        (acc << 8) | u64::from(if i == 0 { b & 0x3f } else { *b })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_encode_as_the_reader_expects() {
        // The encoder is web-transport-proto's; the reader ours: check they agree at the
        // boundaries of each length.
        for v in [
            0u64,
            63,
            64,
            16_383,
            16_384,
            1 << 30,
            (1 << 30) - 1,
            (1 << 62) - 1,
        ] {
            let mut out = Vec::new();
            VarInt::try_from(v).unwrap().encode(&mut out);
            assert_eq!(out.len(), 1usize << (out[0] >> 6), "{v}");
            assert_eq!(varint_value(&out), v);
        }
    }
}
