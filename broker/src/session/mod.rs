//! Sessions: one per QUIC connection.
//!
//! A session is one task, the connection's actor: it owns the session state and handles one
//! inbound frame at a time. [`serve_connection`] runs the handshake on the control stream
//! (version, token, device), registers the session's event stream ([`crate::outbox`]) in presence,
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

pub mod admission;
pub mod arrivals;
pub mod io;
pub mod lookup;
pub mod route;
pub mod transfer;

use crate::clock::{now_ms, now_secs};
use crate::group::rules::Caller;
use crate::node::Node;
use crate::outbox::{self, Outbox};
use crate::presence::SessionHandle;
use crate::webtransport::Framing;
use admission::Admitted;
use bytes::BytesMut;
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::handshake::{
    negotiate, refusal_reason, ClientFrame, Hello, ServerFrame, Welcome, MAX_ACK_IDS,
    SUPPORTED_VERSIONS,
};
use convoke_protocol::{close, ids::check_user_id, ApiError, ErrorCode};
use futures::FutureExt;
use io::{read_frame, read_small_frame, ReadError, Responder};
use std::sync::Arc;
use std::time::Duration;

/// Requests one session may have in flight (read but not yet answered).
const MAX_IN_FLIGHT: usize = 256;

/// Serves one incoming connection until it closes. `admitted` holds its places under the
/// connection caps ([`admission`]) until then.
///
/// Everything before the session is logged in runs under ONE deadline,
/// `sessions.handshake_timeout_ms` from the first packet: the TLS handshake, the hello
/// (however slowly it trickles in; at most
/// [`MAX_HELLO_LEN`](convoke_protocol::codec::MAX_HELLO_LEN) bytes), the refusal or the
/// welcome, the event stream's opening. A client that does not get through in time is
/// closed with a retryable 500, so a connection that has not logged in costs at most that
/// long, whatever the client does or does not read.
pub async fn serve_connection(node: Arc<Node>, incoming: quinn::Incoming, mut admitted: Admitted) {
    let login_time = Duration::from_millis(node.config.sessions.handshake_timeout_ms);
    let deadline = tokio::time::Instant::now() + login_time;
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
    let handshake = async {
        match connecting.into_0rtt() {
            Ok((conn, established)) => Ok((conn, Some(established))),
            Err(connecting) => Box::pin(connecting).await.map(|conn| (conn, None)),
        }
    };
    // Dropping an unfinished handshake abandons the connection.
    let (conn, established) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return refused_tls(&e),
        Err(_) => {
            metrics::counter!("convoke_connections_refused_total", "reason" => "timeout")
                .increment(1);
            return;
        }
    };
    if is_peer(&conn) {
        // Another node of the cluster, proxying file transfers (crate::cluster::peer_quic).
        if let Some(established) = established {
            // Resolves when the handshake completes (whether or not 0-RTT was accepted).
            established.await;
        }
        return crate::cluster::peer_quic::serve(node, conn, admitted).await;
    }
    metrics::counter!("convoke_connections_opened_total").increment(1);
    metrics::gauge!("convoke_connections").increment(1.0);
    let framing = Framing::Quic;
    if let Err(e) = run(node, &conn, established, deadline, &mut admitted, &framing).await {
        tracing::debug!(remote = %conn.remote_address(), error = %e, "session ended");
    }
    metrics::gauge!("convoke_connections").decrement(1.0);
}

/// Whether `conn` negotiated the node-to-node ALPN (only offered in a cluster).
fn is_peer(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == crate::cluster::peer_quic::ALPN)
}

/// A connection over its address's cap ([`admission`]): completes the QUIC handshake (a
/// close sent earlier would reach the client without its reason) and closes with a
/// refusal the client reads as an [`ApiError`] (500, retryable).
pub async fn refuse_connection(
    node: Arc<Node>,
    incoming: quinn::Incoming,
    admitted: Admitted,
    why: String,
) {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(node.config.sessions.handshake_timeout_ms);
    metrics::counter!("convoke_connections_refused_total", "reason" => "ip_limit").increment(1);
    let Ok(connecting) = incoming.accept() else {
        return;
    };
    if let Ok(Ok(conn)) = tokio::time::timeout_at(deadline, connecting).await {
        tracing::debug!(remote = %conn.remote_address(), %why, "connection refused");
        conn.close(
            close::HANDSHAKE_REFUSED.into(),
            &refusal_reason(&ApiError::new(ErrorCode::ServerBusy, why)),
        );
    }
    drop(admitted);
}

/// A session past its handshake: what the request loop needs.
struct Opened {
    caller: Caller,
    /// When the session's token expires (unix seconds): the session ends then.
    expires_at: u64,
    recv: quinn::RecvStream,
    buf: BytesMut,
    responses: Responder,
    /// Keeps the session in presence until the loop ends.
    _presence: PresenceGuard,
}

/// A connection past its QUIC handshake, up to its end: the login, then the request loop.
/// `framing` says how its streams start (`convoke/1`, or a browser's WebTransport session,
/// [`crate::webtransport`]).
pub(crate) async fn run(
    node: Arc<Node>,
    conn: &quinn::Connection,
    established: Option<quinn::ZeroRttAccepted>,
    deadline: tokio::time::Instant,
    admitted: &mut Admitted,
    framing: &Framing,
) -> anyhow::Result<()> {
    // The handshake's futures are boxed, and so is each request's routing, so that the task
    // an idle session keeps holds only the request loop's state (~1.2 KB less per connection).
    let login = Box::pin(open(&node, conn, established, deadline, framing));
    let opened = match tokio::time::timeout_at(deadline, login).await {
        Ok(opened) => opened,
        Err(_) => {
            refused(conn, "timeout");
            let ms = node.config.sessions.handshake_timeout_ms;
            // A slow network, not a bad client: retryable.
            let err = ApiError::new(
                ErrorCode::ServerBusy,
                format!("not logged in within {ms} ms; try again"),
            );
            framing.close(conn, close::HANDSHAKE_REFUSED, &refusal_reason(&err));
            return Ok(());
        }
    };
    admitted.logged_in();
    let Some(opened) = opened? else {
        return Ok(());
    };
    serve(&node, conn, opened, framing).await
}

/// The handshake, up to a registered session whose replay of kept events has started; `None` if the
/// connection was refused (it is closed with the reason).
///
/// The hello may come in 0-RTT early data, which an attacker could replay. So the hello is
/// only checked (the token, a pure function) and answered; everything with an effect
/// (recording the login, registering the session, closing the user's oldest session, the
/// replay of kept events, serving requests) waits until the TLS handshake has completed,
/// which a replayer cannot do.
///
/// Runs under the login deadline ([`serve_connection`]); `deadline` lets a refusal end
/// with its own reason rather than the deadline's.
async fn open(
    node: &Arc<Node>,
    conn: &quinn::Connection,
    established: Option<quinn::ZeroRttAccepted>,
    deadline: tokio::time::Instant,
    framing: &Framing,
) -> anyhow::Result<Option<Opened>> {
    let cfg = &node.config.sessions;
    let (mut send, mut recv) = framing.accept_control(conn).await?;
    let mut buf = BytesMut::new();
    let hello = match read_small_frame::<ClientFrame>(&mut recv, &mut buf).await {
        Ok(Some(ClientFrame::Hello(h))) => h,
        Ok(Some(ClientFrame::Request { .. } | ClientFrame::Ack { .. })) => {
            refuse(
                conn,
                framing,
                &mut send,
                "protocol",
                ApiError::param("the first frame must be a hello"),
                deadline,
            )
            .await;
            return Ok(None);
        }
        Ok(None) => return Ok(None),
        Err(e) => {
            close_for_read_error(conn, framing, &e);
            return Ok(None);
        }
    };
    let (version, caller, expires_at) = match authenticate(node, &hello) {
        Ok(ok) => ok,
        Err((reason, err)) => {
            refuse(conn, framing, &mut send, reason, err, deadline).await;
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
        // (On a server its value means nothing; a failed handshake closed the connection.)
        let _ = established.await;
        if conn.close_reason().is_some() {
            return Ok(None);
        }
        metrics::counter!("convoke_sessions_early_data_total").increment(1);
    }
    node.store.record_login(&caller.user, now_ms()).await?;

    // The event stream, written to directly by whoever delivers to this session.
    let events = framing.open_events(conn).await?;
    let coalesce = outbox::Coalesce {
        busy: Duration::from_millis(cfg.coalesce_busy_ms),
        window: Duration::from_millis(cfg.coalesce_window_ms),
    };
    let write_timeout = Duration::from_millis(cfg.write_timeout_ms);
    let bounds = outbox::Bounds {
        frames: cfg.outbound_queue,
        bytes: cfg.outbound_queue_bytes,
        stall: write_timeout,
    };
    let outbox = Outbox::new(conn.clone(), events, bounds, coalesce, framing.clone());
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
    // Counted here: the guard's drop, on any path from here on, takes it back.
    metrics::gauge!("convoke_sessions_online").increment(1.0);
    let _presence = PresenceGuard {
        node: node.clone(),
        user: caller.user.clone(),
        session_id: caller.session_id,
        outbox: outbox.clone(),
    };
    if !welcomed_early {
        send.write_all(&welcome).await?;
    }
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
        expires_at,
        recv,
        buf,
        responses: Responder::new(
            conn.clone(),
            send,
            cfg.answer_queue_bytes,
            write_timeout,
            framing.clone(),
        ),
        _presence,
    }))
}

/// The request loop: requests in the order sent, and transfer streams.
async fn serve(
    node: &Arc<Node>,
    conn: &quinn::Connection,
    opened: Opened,
    framing: &Framing,
) -> anyhow::Result<()> {
    let Opened {
        caller,
        expires_at,
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
    // A session lives as long as its token: then it is closed with TOKEN_EXPIRED and the
    // refusal the client reads back (it logs in again, or asks its token provider).
    let mut expiry = Box::pin(tokio::time::sleep(crate::auth::until_expiry(expires_at)));
    let result = loop {
        let frame = tokio::select! {
            frame = read_frame::<ClientFrame>(&mut recv, &mut buf) => frame,
            () = &mut expiry => {
                if let Some(reason) = crate::auth::expired_reason(expires_at) {
                    metrics::counter!("convoke_connections_closed_total", "reason" => "token_expired").increment(1);
                    tracing::debug!(user = %caller.user, session = caller.session_id, "token expired; closing the session");
                    framing.close(conn, close::TOKEN_EXPIRED, &reason);
                    break Ok(());
                }
                // Woken early (a far expiry is waited for in steps): wait for the rest.
                expiry.set(tokio::time::sleep(crate::auth::until_expiry(expires_at)));
                continue;
            }
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    framing.spawn_transfer(node, &caller, send, recv);
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
                crate::auth::audit_app_admin(&caller, &request);
                Box::pin(route::route(node, &caller, &responses, id, request, slot)).await;
            }
            Ok(Some(ClientFrame::Ack { ids })) => {
                if ids.len() > MAX_ACK_IDS {
                    framing.close(
                        conn,
                        close::PROTOCOL_VIOLATION,
                        format!("{} ids in one ack; at most {MAX_ACK_IDS}", ids.len()).as_bytes(),
                    );
                    break Ok(());
                }
                // Here, or on the node whose ordinal the id carries (in a cluster).
                crate::cluster::scatter::ack(node, &caller.user, &ids);
            }
            Ok(Some(ClientFrame::Hello(_))) => {
                framing.close(conn, close::PROTOCOL_VIOLATION, b"hello sent twice");
                break Ok(());
            }
            Ok(None) => break Ok(()),
            Err(e) => {
                close_for_read_error(conn, framing, &e);
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

fn authenticate(
    node: &Node,
    hello: &Hello,
) -> Result<(u32, Caller, u64), (&'static str, ApiError)> {
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
        claims.expires_at,
    ))
}

fn refused(_conn: &quinn::Connection, reason: &'static str) {
    metrics::counter!("convoke_connections_refused_total", "reason" => reason).increment(1);
}

/// Sends the refusal, lets it reach the client, then closes.
async fn refuse(
    conn: &quinn::Connection,
    framing: &Framing,
    send: &mut quinn::SendStream,
    reason: &'static str,
    err: ApiError,
    deadline: tokio::time::Instant,
) {
    refused(conn, reason);
    tracing::debug!(remote = %conn.remote_address(), %reason, error = %err, "handshake refused");
    // Within the login deadline, which a client that reads nothing cannot stretch: the
    // close below carries the same refusal anyway.
    if let Ok(frame) = frame_bytes(&ServerFrame::Refused(err.clone())) {
        let linger = deadline.min(tokio::time::Instant::now() + Duration::from_secs(2));
        let _ = tokio::time::timeout_at(linger, async {
            if send.write_all(&frame).await.is_ok() {
                let _ = send.finish();
                let _ = send.stopped().await;
            }
        })
        .await;
    }
    // The same refusal as text: the close can overtake the frame, and the client reads the
    // refusal back from either.
    framing.close(conn, close::HANDSHAKE_REFUSED, &refusal_reason(&err));
}

/// Closes the session over a frame it could not read, with the frame's close code (a
/// browser's through its WebTransport session, so that the page hears the code).
fn close_for_read_error(conn: &quinn::Connection, framing: &Framing, e: &ReadError) {
    let code = match e {
        ReadError::Frame(e) => close::for_frame_error(e),
        ReadError::Truncated => close::MALFORMED_FRAME,
        ReadError::Stream(_) => return,
    };
    metrics::counter!("convoke_connections_closed_total", "reason" => if code == close::FRAME_TOO_LARGE { "frame_too_large" } else { "malformed_frame" }).increment(1);
    tracing::info!(remote = %conn.remote_address(), error = %e, "closing connection: bad frame");
    framing.close(conn, code, &close::reason_bytes(&e.to_string()));
}

/// Kept events read per page of the login replay.
const REPLAY_PAGE: usize = 256;
/// About how many bytes of kept events one page of the login replay reads.
const REPLAY_PAGE_BYTES: usize = 256 * 1024;

/// Sends the events kept for this user (not yet acknowledged by any of their clients: they
/// were offline, or the connection that carried them died), then the live events held
/// meanwhile. They stay kept until acked. Read and queued a page at a time
/// ([`REPLAY_PAGE`] events, about [`REPLAY_PAGE_BYTES`]), each page only once the outbox
/// has room for it, so a login with thousands of kept events holds one page in memory.
async fn deliver_inbox(node: Arc<Node>, user: String, outbox: Arc<Outbox>) {
    let max = node.config.sessions.kept_events_max;
    // In a cluster the user's kept events are on every core node (each group's on its
    // owner): merged by time, bounded to `max` in total.
    if let Some(cluster) = crate::cluster::Cluster::get() {
        let replay = crate::cluster::scatter::Replay {
            node: &node,
            cluster: &cluster,
            user: &user,
            page: REPLAY_PAGE,
            page_bytes: REPLAY_PAGE_BYTES,
            max,
            per_sender: node.config.sessions.kept_events_per_sender_max,
        };
        crate::cluster::scatter::merged_inbox(&replay, |frames| outbox.push_wait(frames)).await;
        outbox.replay(Vec::new()).await;
        return;
    }
    match node.store.inbox_trim(&user, max) {
        Ok((0, _)) => {}
        Ok((dropped, _)) => {
            tracing::warn!(%user, dropped, max, "dropped the oldest kept events over the limit");
            metrics::counter!("convoke_kept_events_dropped_total").increment(dropped as u64);
        }
        Err(e) => tracing::error!(%user, error = %e, "could not bound the kept events"),
    }
    let mut after = None;
    loop {
        let (frames, next) =
            match node
                .store
                .inbox_page(&user, after, REPLAY_PAGE, REPLAY_PAGE_BYTES)
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(%user, error = %e, "could not read the kept events");
                    break;
                }
            };
        if !frames.is_empty() && !outbox.push_wait(frames).await {
            break;
        }
        match next {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    // Then the live events held meanwhile, and the gate opens.
    outbox.replay(Vec::new()).await;
}
