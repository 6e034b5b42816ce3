//! The browser listener (`[webtransport]`, issue #14): a second QUIC endpoint, ALPN `h3`,
//! where browsers open a WebTransport session (an HTTP/3 CONNECT request, checked for its
//! path and origin) and then get the same session as a `convoke/1` client: the hello with
//! its token, pipelined requests, the event stream with kept events and acknowledgements,
//! shared-file transfers on their own streams, the same limits and slow-consumer rules.
//! The session code ([`crate::session`]) runs unchanged on the quinn streams after their
//! WebTransport header ([`framing`]).
//!
//! web-transport-quinn does the HTTP/3 part (SETTINGS, the CONNECT request and its answer,
//! the session's close capsule). The `convoke/1` endpoint is untouched: a separate socket,
//! transport config and TLS config (browsers need at least 3 unidirectional streams, which
//! `convoke/1` does not allow).
//!
//! The connection caps (`sessions.max_connections*`, new connections per second) are the
//! node's: one [`Admission`] counts the connections of both listeners.

pub mod cert;
pub mod framing;

pub use framing::Framing;

use crate::node::Node;
use crate::session::admission::{Admission, Admitted, Decision};
use anyhow::Context;
use convoke_protocol::close;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use web_transport_quinn::http::StatusCode;

/// Bidirectional streams a browser may open at once: the CONNECT request, the control
/// stream and three file transfers (as `convoke/1` allows the control stream and three).
const BROWSER_BIDI_STREAMS: u32 = 5;
/// Unidirectional streams a browser may open: its HTTP/3 control stream and the two QPACK
/// streams (Chromium refuses a server that allows fewer than 3). The SDK opens none.
const BROWSER_UNI_STREAMS: u32 = 3;
/// Bytes of datagrams a browser may have waiting unread, per connection (quinn's default
/// is 1.25 MB; the broker reads none and a page sends none). Not `None`: web-transport-quinn
/// announces HTTP/3 datagrams in its SETTINGS, which RFC 9297 ties to QUIC datagrams
/// having been negotiated (Chromium 156 did not object to `None` in a run of the smoke e2e
/// tests; a stricter browser may). Not below a packet: quinn announces this as the largest
/// datagram frame it takes but checks a received one with its in-memory overhead (32
/// bytes) added, so a bound under a packet's 1472 bytes plus that closed a connection that
/// sent a datagram of the announced size (PROTOCOL_VIOLATION "oversized datagram", seen
/// with 1024).
const BROWSER_DATAGRAM_BUFFER: usize = 2048;
/// Keep-alive towards browsers (a `convoke/1` client sends its own; a page cannot).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The running browser listener.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The bound UDP address.
    pub addr: SocketAddr,
    /// The CONNECT path (`webtransport.path`).
    pub path: String,
    /// The development certificate's SHA-256 (hex), when `webtransport.dev_certificate`.
    pub cert_sha256: Option<String>,
    /// Where that hash was written.
    pub cert_sha256_path: Option<PathBuf>,
    /// The hash of each renewed development certificate (the certificate is renewed a day
    /// before it expires: [`cert`]), for printing as at start.
    pub cert_renewals: Option<watch::Receiver<String>>,
}

/// Starts the listener if `webtransport.listen` is set; it stops at `shutdown`.
pub async fn start(
    node: &Arc<Node>,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Listening>> {
    let config = &node.config;
    let wt = &config.webtransport;
    let Some(listen) = wt.listen else {
        return Ok(None);
    };
    let data_dir = &config.server.data_dir;
    let (mut crypto, dev) = if wt.dev_certificate {
        let dev =
            cert::DevCertificate::new(data_dir, wt.dev_certificate_days, crate::clock::now_secs())?;
        cert::spawn_renewal(&dev);
        let crypto = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("the ring provider does not support TLS 1.3")?
        .with_no_client_auth()
        .with_cert_resolver(dev.clone());
        (crypto, Some(dev))
    } else {
        let tls = crate::tls::load_or_generate(&config.tls, data_dir)?;
        if tls.generated || config.tls.cert.is_none() {
            tracing::warn!(
                "webtransport: serving the generated self-signed certificate, which browsers \
                 refuse; set tls.cert/tls.key to a certificate they trust, or \
                 webtransport.dev_certificate = true for development"
            );
        }
        let served = Arc::new(crate::tls::ServedCert::new(&tls, &config.tls, data_dir)?);
        crate::tls::spawn_reloader(
            &served,
            (config.tls.reload_check_secs > 0)
                .then(|| Duration::from_secs(config.tls.reload_check_secs)),
        );
        (crate::tls::server_crypto(served, false)?, None)
    };
    crypto.alpn_protocols = vec![web_transport_quinn::ALPN.as_bytes().to_vec()];
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?,
    ));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(BROWSER_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(BROWSER_UNI_STREAMS.into())
        .max_idle_timeout(Some(
            Duration::from_secs(config.sessions.idle_timeout_secs).try_into()?,
        ))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .datagram_receive_buffer_size(Some(BROWSER_DATAGRAM_BUFFER))
        .stream_receive_window((1024 * 1024u32).into())
        .receive_window((2 * 1024 * 1024u32).into())
        .send_window(2 * 1024 * 1024);
    server_config.transport_config(Arc::new(transport));
    server_config
        .incoming_buffer_size(64 * 1024)
        .incoming_buffer_size_total(16 * 1024 * 1024);
    let endpoint = quinn::Endpoint::server(server_config, listen)
        .with_context(|| format!("cannot listen on webtransport.listen {listen}"))?;
    let addr = endpoint.local_addr()?;
    let listening = Listening {
        addr,
        path: wt.path.clone(),
        cert_sha256: dev.as_ref().map(|d| d.sha256()),
        cert_sha256_path: dev.as_ref().map(|d| d.sha256_path().to_owned()),
        cert_renewals: dev.as_ref().map(|d| d.subscribe()),
    };
    match &dev {
        Some(d) => {
            tracing::info!(%addr, path = %wt.path, cert_sha256 = %d.sha256(), hash_file = %d.sha256_path().display(), "webtransport listening (development certificate)")
        }
        None => tracing::info!(%addr, path = %wt.path, "webtransport listening"),
    }
    let node = node.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                incoming = endpoint.accept() => match incoming {
                    Some(incoming) => admit(&node, &admission, incoming),
                    None => break,
                },
                _ = shutdown.changed() => break,
            }
        }
        let grace = Duration::from_millis(node.config.server.shutdown_grace_ms);
        node.presence
            .close_all(
                close::SHUTDOWN,
                b"broker shutting down",
                grace.min(crate::server::SESSIONS_CLOSE),
            )
            .await;
        endpoint.close(close::SHUTDOWN.into(), b"broker shutting down");
        let _ = tokio::time::timeout(grace, endpoint.wait_idle()).await;
    });
    Ok(Some(listening))
}

/// Judges one attempt under the caps, as the `convoke/1` endpoint does.
fn admit(node: &Arc<Node>, admission: &Admission, incoming: quinn::Incoming) {
    match admission.judge(&incoming) {
        (Decision::Admit, Some(admitted)) => {
            tokio::spawn(serve(node.clone(), incoming, admitted));
        }
        (Decision::Retry, _) => {
            metrics::counter!("convoke_connections_retried_total").increment(1);
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
        }
        (Decision::RateDropped, _) => {
            metrics::counter!("convoke_connections_refused_total", "reason" => "rate_limit_dropped")
                .increment(1);
            incoming.ignore();
        }
        (Decision::RateRefused, _) => {
            metrics::counter!("convoke_connections_refused_total", "reason" => "rate_limit")
                .increment(1);
            incoming.refuse();
        }
        // Over the address's cap: a browser reads no refusal frame before its session is
        // up, so it is refused at once.
        (Decision::RefuseAfterHandshake(_) | Decision::RefuseNow, _) | (_, None) => {
            metrics::counter!("convoke_connections_refused_total", "reason" => "connection_limit")
                .increment(1);
            incoming.refuse();
        }
    }
}

/// One browser connection: QUIC and TLS, HTTP/3 SETTINGS and the CONNECT request (path,
/// origin), then the session, all before the login deadline (`sessions.handshake_timeout_ms`).
async fn serve(node: Arc<Node>, incoming: quinn::Incoming, mut admitted: Admitted) {
    let cfg = &node.config;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(cfg.sessions.handshake_timeout_ms);
    let refused = |reason: &'static str| {
        metrics::counter!("convoke_connections_refused_total", "reason" => reason).increment(1);
    };
    let Ok(connecting) = incoming.accept() else {
        return refused("tls");
    };
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "browser connection failed during the QUIC handshake");
            return refused("tls");
        }
        Err(_) => return refused("timeout"),
    };
    let request = match tokio::time::timeout_at(
        deadline,
        web_transport_quinn::Request::accept(conn.clone()),
    )
    .await
    {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            tracing::debug!(remote = %conn.remote_address(), error = %e, "no WebTransport CONNECT request");
            conn.close(
                close::PROTOCOL_VIOLATION.into(),
                b"expected a WebTransport CONNECT",
            );
            return refused("protocol");
        }
        Err(_) => {
            conn.close(
                close::HANDSHAKE_REFUSED.into(),
                b"no CONNECT request in time",
            );
            return refused("timeout");
        }
    };
    let origin = request
        .headers
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let verdict = check_request(
        request.url.path(),
        origin.as_deref(),
        &cfg.webtransport.path,
        &cfg.webtransport.allowed_origins,
    );
    if let Err((status, why)) = verdict {
        tracing::debug!(remote = %conn.remote_address(), url = %request.url, ?origin, %why, "WebTransport request refused");
        // The answer must reach the client before the close (which would overtake it): the
        // client closes once it has read it; a client that does not is closed after 2 s.
        let linger = deadline.min(tokio::time::Instant::now() + Duration::from_secs(2));
        if let Ok(Ok(())) = tokio::time::timeout_at(linger, request.reject(status)).await {
            let _ = tokio::time::timeout_at(linger, conn.closed()).await;
        }
        conn.close(close::HANDSHAKE_REFUSED.into(), why.as_bytes());
        return refused(if status == StatusCode::FORBIDDEN {
            "origin"
        } else {
            "path"
        });
    }
    let session = match tokio::time::timeout_at(deadline, request.ok()).await {
        Ok(Ok(session)) => session,
        _ => return refused("protocol"),
    };
    let framing = Framing::web_transport(session);
    metrics::counter!("convoke_connections_opened_total").increment(1);
    metrics::gauge!("convoke_connections").increment(1.0);
    if let Err(e) = crate::session::run(node, &conn, None, deadline, &mut admitted, &framing).await
    {
        tracing::debug!(remote = %conn.remote_address(), error = %e, "browser session ended");
    }
    framing.finish(&conn);
    metrics::gauge!("convoke_connections").decrement(1.0);
    // The WebTransport session (its HTTP/3 control streams) must outlive the close: the
    // close capsule is written, then the page closes the connection. Dropping the control
    // streams first would be a connection error, which a page sees as "connection lost"
    // instead of the close code. web-transport-quinn closes the connection itself after
    // 3 RTTs; this bound is for a peer that never answers.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    drop(framing);
}

/// The CONNECT request's verdict: the configured path, and an allowed origin when the
/// allow-list is not empty (a request without an `Origin` then is refused: browsers
/// always send one).
fn check_request(
    path: &str,
    origin: Option<&str>,
    want_path: &str,
    allowed: &[String],
) -> Result<(), (StatusCode, String)> {
    if path != want_path {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no WebTransport endpoint at {path:?}; it is at {want_path:?}"),
        ));
    }
    if !allowed.is_empty() && !origin.is_some_and(|o| allowed.iter().any(|a| a == o)) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("origin {origin:?} is not in webtransport.allowed_origins"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_for_path_and_origin() {
        let any: Vec<String> = Vec::new();
        let one = vec!["http://127.0.0.1:8080".to_owned()];
        assert!(check_request("/convoke", None, "/convoke", &any).is_ok());
        assert!(check_request("/convoke", Some("https://x"), "/convoke", &any).is_ok());
        let (status, why) = check_request("/other", None, "/convoke", &any).unwrap_err();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(why.contains("\"/other\""), "{why}");
        assert!(check_request("/convoke", Some("http://127.0.0.1:8080"), "/convoke", &one).is_ok());
        for bad in [None, Some("http://127.0.0.1:8081"), Some("http://evil")] {
            let (status, why) = check_request("/convoke", bad, "/convoke", &one).unwrap_err();
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(why.contains("webtransport.allowed_origins"), "{why}");
        }
    }
}
