//! Sessions: one per QUIC connection.
//!
//! A session is one task, the connection's actor: it owns the session state and handles one
//! inbound frame at a time. [`serve_connection`] runs the handshake on the control stream
//! (version, token, device), registers the session's event stream ([`outbox`]) in presence,
//! sends the events kept for the user (the inbox), then reads request frames and routes each
//! ([`route`]) in the order sent, takes acknowledgements of kept events, and accepts
//! shared-file transfer streams ([`transfer`]). Answers go back on the control stream,
//! written by whichever task produced them; events and messages are written into the event
//! stream by the group actors and their publisher tasks (the kept events by a replay task
//! started at login).
//!
//! Nothing else runs per idle connection (quinn's connection driver aside): an idle session
//! costs one task, which is what keeps memory per connection near quinn's own floor (a
//! ractor actor per session would add ~9 KB of mailbox channels; see benches/RESULTS.md).

pub mod io;
pub mod lookup;
pub mod outbox;
pub mod route;
pub mod transfer;

use crate::clock::{now_ms, now_secs};
use crate::group::rules::Caller;
use crate::node::Node;
use crate::presence::SessionHandle;
use bytes::BytesMut;
use convoke_protocol::codec::{frame_bytes, FrameError};
use convoke_protocol::handshake::{
    negotiate, ClientFrame, Hello, ServerFrame, Welcome, MAX_ACK_IDS, SUPPORTED_VERSIONS,
};
use convoke_protocol::{close, ids::check_user_id, ApiError, ErrorCode};
use futures::FutureExt;
use io::{read_frame, ReadError, Responder};
use outbox::Outbox;
use std::sync::Arc;
use std::time::Duration;

/// Requests one session may have in flight (read but not yet answered).
const MAX_IN_FLIGHT: usize = 256;

/// Serves one incoming connection until it closes.
pub async fn serve_connection(node: Arc<Node>, incoming: quinn::Incoming) {
    let refused_tls = |e: &dyn std::fmt::Display| {
        tracing::debug!(error = %e, "connection failed during the QUIC handshake");
        metrics::counter!("convoke_connections_refused_total", "reason" => "tls").increment(1);
    };
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => return refused_tls(&e),
    };
    // A server-side connection is usable before its handshake completes (0.5-RTT): a hello
    // that came in 0-RTT early data is answered with the handshake's own flight. `open`
    // waits for `established` before the session does anything else.
    let (conn, established) = match connecting.into_0rtt() {
        Ok((conn, established)) => (conn, Some(established)),
        Err(connecting) => match Box::pin(connecting).await {
            Ok(conn) => (conn, None),
            Err(e) => return refused_tls(&e),
        },
    };
    metrics::counter!("convoke_connections_opened_total").increment(1);
    metrics::gauge!("convoke_connections").increment(1.0);
    if let Err(e) = run(node, &conn, established).await {
        tracing::debug!(remote = %conn.remote_address(), error = %e, "session ended");
    }
    metrics::gauge!("convoke_connections").decrement(1.0);
}

/// A session past its handshake: what the request loop needs.
struct Opened {
    caller: Caller,
    recv: quinn::RecvStream,
    buf: BytesMut,
    responses: Responder,
    /// Keeps the session in presence until the loop ends.
    _presence: PresenceGuard,
}

async fn run(
    node: Arc<Node>,
    conn: &quinn::Connection,
    established: Option<quinn::ZeroRttAccepted>,
) -> anyhow::Result<()> {
    // The handshake's futures are boxed, and so is each request's routing, so that the task
    // an idle session keeps holds only the request loop's state (~1.2 KB less per connection).
    let Some(opened) = Box::pin(open(&node, conn, established)).await? else {
        return Ok(());
    };
    serve(&node, conn, opened).await
}

/// The handshake, up to a registered session whose replay of kept events has started; `None` if the
/// connection was refused (it is closed with the reason).
///
/// The hello may come in 0-RTT early data, which an attacker could replay. So the hello is
/// only checked (the token, a pure function) and answered; everything with an effect
/// (recording the login, registering the session, closing the user's oldest session, the
/// replay of kept events, serving requests) waits until the TLS handshake has completed,
/// which a replayer cannot do.
async fn open(
    node: &Arc<Node>,
    conn: &quinn::Connection,
    established: Option<quinn::ZeroRttAccepted>,
) -> anyhow::Result<Option<Opened>> {
    let cfg = &node.config.sessions;
    let handshake_timeout = Duration::from_millis(cfg.handshake_timeout_ms);
    let (mut send, mut recv) = match tokio::time::timeout(handshake_timeout, conn.accept_bi()).await
    {
        Ok(r) => r?,
        Err(_) => {
            refused(conn, "timeout");
            conn.close(
                close::HANDSHAKE_REFUSED.into(),
                b"no control stream opened in time",
            );
            return Ok(None);
        }
    };
    let mut buf = BytesMut::new();
    let hello = match tokio::time::timeout(
        handshake_timeout,
        read_frame::<ClientFrame>(&mut recv, &mut buf),
    )
    .await
    {
        Ok(Ok(Some(ClientFrame::Hello(h)))) => h,
        Ok(Ok(Some(ClientFrame::Request { .. } | ClientFrame::Ack { .. }))) => {
            refuse(
                conn,
                &mut send,
                "protocol",
                ApiError::param("the first frame must be a hello"),
            )
            .await;
            return Ok(None);
        }
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(e)) => {
            close_for_read_error(conn, &e);
            return Ok(None);
        }
        Err(_) => {
            refuse(
                conn,
                &mut send,
                "timeout",
                // A slow network, not a bad client: retryable.
                ApiError::new(
                    ErrorCode::ServerBusy,
                    "no hello received in time; try again",
                ),
            )
            .await;
            return Ok(None);
        }
    };
    let (version, caller) = match authenticate(node, &hello) {
        Ok(ok) => ok,
        Err((reason, err)) => {
            refuse(conn, &mut send, reason, err).await;
            return Ok(None);
        }
    };
    let welcome = frame_bytes(&ServerFrame::Welcome(Welcome {
        version,
        user_id: caller.user.clone(),
        app_admin: caller.app_admin,
        session_id: caller.session_id,
        server_time: now_ms(),
    }))?;
    // A hello that arrives before the handshake completed came in 0-RTT: answer it at
    // once (the point of 0-RTT), then wait for the handshake. Any other hello is answered
    // after the session is registered, so that a client holding its welcome receives
    // every event from then on.
    let early = established.and_then(|mut e| (&mut e).now_or_never().is_none().then_some(e));
    let welcomed_early = early.is_some();
    if let Some(established) = early {
        send.write_all(&welcome).await?;
        if tokio::time::timeout(handshake_timeout, established)
            .await
            .is_err()
            || conn.close_reason().is_some()
        {
            refused(conn, "timeout");
            conn.close(
                close::HANDSHAKE_REFUSED.into(),
                b"the TLS handshake did not complete in time",
            );
            return Ok(None);
        }
        metrics::counter!("convoke_sessions_early_data_total").increment(1);
    }
    node.store.record_login(&caller.user, now_ms()).await?;

    // The event stream, written to directly by whoever delivers to this session.
    let events = conn.open_uni().await?;
    let coalesce = outbox::Coalesce {
        busy: Duration::from_millis(cfg.coalesce_busy_ms),
        window: Duration::from_millis(cfg.coalesce_window_ms),
    };
    let outbox = Outbox::new(conn.clone(), events, cfg.outbound_queue, coalesce);
    if hello.events {
        // Live events wait until the kept ones (older) are queued.
        outbox.gate();
    } else {
        outbox.refuse_all();
    }
    let handle = SessionHandle {
        session_id: caller.session_id,
        device_id: hello.device_id.clone(),
        outbox: outbox.clone(),
    };
    let max_sessions = node.config.limits.max_sessions_per_user as usize;
    for old in node.presence.register(&caller.user, handle, max_sessions) {
        old.close(
            close::SESSION_LIMIT,
            b"too many sessions for this user; closing the oldest",
        );
    }
    let _presence = PresenceGuard {
        node: node.clone(),
        user: caller.user.clone(),
        session_id: caller.session_id,
        outbox: outbox.clone(),
    };
    if !welcomed_early {
        send.write_all(&welcome).await?;
    }
    metrics::gauge!("convoke_sessions_online").increment(1.0);
    tracing::debug!(user = %caller.user, session = caller.session_id, device = %hello.device_id, early_data = welcomed_early, "session started");

    // Requests are served while the replay runs; a client that is slow to take its events
    // does not hold up its requests.
    if hello.events {
        tokio::spawn(deliver_inbox(
            node.clone(),
            caller.user.clone(),
            outbox.clone(),
        ));
    }

    Ok(Some(Opened {
        caller,
        recv,
        buf,
        responses: Responder::new(send),
        _presence,
    }))
}

/// The request loop: requests in the order sent, and transfer streams.
async fn serve(node: &Arc<Node>, conn: &quinn::Connection, opened: Opened) -> anyhow::Result<()> {
    let Opened {
        caller,
        mut recv,
        mut buf,
        responses,
        _presence,
    } = opened;
    // Requests in flight per session are bounded: a client that pipelines without reading
    // answers stops being read (QUIC flow control pushes back) instead of growing mailboxes.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    // Shared-file transfers arrive as further bidirectional streams, accepted here too, so
    // that an idle session is a single task.
    let result = loop {
        let frame = tokio::select! {
            frame = read_frame::<ClientFrame>(&mut recv, &mut buf) => frame,
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tokio::spawn(transfer::serve_transfer(node.clone(), caller.clone(), send, recv));
                    continue;
                }
                Err(_) => break Ok(()),
            },
        };
        match frame {
            Ok(Some(ClientFrame::Request { id, request })) => {
                let Ok(slot) = in_flight.clone().acquire_owned().await else {
                    break Ok(());
                };
                Box::pin(route::route(node, &caller, &responses, id, request, slot)).await;
            }
            Ok(Some(ClientFrame::Ack { ids })) => {
                if ids.len() > MAX_ACK_IDS {
                    conn.close(
                        close::PROTOCOL_VIOLATION.into(),
                        format!("{} ids in one ack; at most {MAX_ACK_IDS}", ids.len()).as_bytes(),
                    );
                    break Ok(());
                }
                if let Err(e) = node.store.inbox_ack(&caller.user, &ids) {
                    tracing::error!(user = %caller.user, error = %e, "could not drop acknowledged events");
                }
            }
            Ok(Some(ClientFrame::Hello(_))) => {
                conn.close(close::PROTOCOL_VIOLATION.into(), b"hello sent twice");
                break Ok(());
            }
            Ok(None) => break Ok(()),
            Err(e) => {
                close_for_read_error(conn, &e);
                break Ok(());
            }
        }
    };
    result
}

/// Removes the session from presence however the session ends.
struct PresenceGuard {
    node: Arc<Node>,
    user: String,
    session_id: u64,
    outbox: Arc<Outbox>,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.node.presence.unregister(&self.user, self.session_id);
        self.outbox.close();
        metrics::gauge!("convoke_sessions_online").decrement(1.0);
    }
}

fn authenticate(node: &Node, hello: &Hello) -> Result<(u32, Caller), (&'static str, ApiError)> {
    let version = negotiate(&hello.versions, SUPPORTED_VERSIONS).map_err(|e| ("version", e))?;
    check_user_id("deviceId", &hello.device_id).map_err(|e| ("device", e))?;
    let claims = crate::auth::verify(&node.secret, &hello.token, now_secs()).map_err(|e| {
        (
            "token",
            ApiError::new(ErrorCode::TokenNotAssigned, e.to_string()),
        )
    })?;
    Ok((
        version,
        Caller {
            user: claims.user,
            app_admin: claims.admin,
            session_id: node.next_session_id(),
        },
    ))
}

fn refused(_conn: &quinn::Connection, reason: &'static str) {
    metrics::counter!("convoke_connections_refused_total", "reason" => reason).increment(1);
}

/// Sends the refusal, lets it reach the client, then closes.
async fn refuse(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    reason: &'static str,
    err: ApiError,
) {
    refused(conn, reason);
    tracing::debug!(remote = %conn.remote_address(), %reason, error = %err, "handshake refused");
    if let Ok(frame) = frame_bytes(&ServerFrame::Refused(err.clone())) {
        let _ = send.write_all(&frame).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    }
    let mut msg = err.message.into_bytes();
    msg.truncate(200);
    conn.close(close::HANDSHAKE_REFUSED.into(), &msg);
}

fn close_for_read_error(conn: &quinn::Connection, e: &ReadError) {
    let code = match e {
        ReadError::Frame(FrameError::TooLarge { .. }) => close::FRAME_TOO_LARGE,
        ReadError::Frame(_) | ReadError::Truncated => close::MALFORMED_FRAME,
        ReadError::Stream(_) => return,
    };
    metrics::counter!("convoke_connections_closed_total", "reason" => if code == close::FRAME_TOO_LARGE { "frame_too_large" } else { "malformed_frame" }).increment(1);
    tracing::info!(remote = %conn.remote_address(), error = %e, "closing connection: bad frame");
    let mut msg = e.to_string().into_bytes();
    msg.truncate(200);
    conn.close(code.into(), &msg);
}

/// Sends the events kept for this user (not yet acknowledged by any of their clients: they
/// were offline, or the connection that carried them died), then the live events held
/// meanwhile. They stay kept until acked.
async fn deliver_inbox(node: Arc<Node>, user: String, outbox: Arc<Outbox>) {
    let max = node.config.sessions.kept_events_max;
    let frames = match node.store.inbox_pending(&user, max) {
        Ok((frames, 0)) => frames,
        Ok((frames, dropped)) => {
            tracing::warn!(%user, dropped, max, "dropped the oldest kept events over the limit");
            metrics::counter!("convoke_kept_events_dropped_total").increment(dropped as u64);
            frames
        }
        Err(e) => {
            tracing::error!(%user, error = %e, "could not read the kept events");
            Vec::new()
        }
    };
    outbox.replay(frames).await;
}
