//! Shared-file bytes between nodes (issue #11 item 7, design section 8): a transfer stream
//! whose group is owned by another node is proxied byte for byte by the node the client is
//! connected to (the ingress), over a QUIC connection to the owner. The blob stays on the
//! owner, which serves the stream with today's code (`session::transfer`: quota places,
//! the per-user transfer cap, the slow-transfer rules) for the remote caller. Never through
//! the actor transport: a file would sit in front of chat traffic there, without flow
//! control.
//!
//! - The owner's client-facing QUIC endpoint also accepts ALPN [`ALPN`] (`convoke-peer/1`).
//! - The ingress dials the owner's `quic_addr` from its `Hello` (authenticated by the
//!   cluster cookie) and pins the server certificate with the SHA-256 from the same
//!   `Hello` ([`local_cert_sha256`] is this node's). One connection per peer, reused; each
//!   transfer is a bidirectional stream of its own, so QUIC flow control pushes back end
//!   to end (the proxy reads a chunk only after the previous one was accepted).
//! - Each stream starts with a [`PeerOpen`] frame: the ingress's name, HMAC-SHA256(cookie,
//!   "convoke-peer" || name) and the caller. A stream whose first frame does not decode or
//!   whose MAC is wrong closes the whole connection (counted in
//!   `convoke_peer_transfers_refused_total{reason}`), as does a connection that opens no
//!   authenticated stream within the handshake timeout.
//! - Then the client's header and bytes follow, and everything the owner writes goes back.
//!   A reset or stop on one side is passed on to the other with its code, so a client's
//!   cancel (`CANCELLED`) reaches the owner, which releases the upload at once.
//! - The owner lost (its connection breaks, or the cluster declares it Down): the client
//!   gets a 500 (retryable) outcome if nothing of the owner's answer was passed on yet,
//!   else its stream is reset; either way at once, never a hang.

use crate::group::rules::Caller;
use crate::node::Node;
use crate::session::admission::Admitted;
use crate::session::io::read_small_frame;
use bincode::{Decode, Encode};
use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::transfer::TransferReply;
use convoke_protocol::{ApiError, ErrorCode};
use hmac::{Hmac, Mac};
use quinn::{ReadError, RecvStream, SendStream, WriteError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::Cluster;

/// ALPN of a node-to-node connection on the client-facing QUIC endpoint.
pub const ALPN: &[u8] = b"convoke-peer/1";

/// Application close code of a peer connection that did not authenticate.
const CLOSE_UNAUTHENTICATED: u32 = 0x50;

/// Transfers one peer connection may carry at once (each is one bidirectional stream).
const MAX_STREAMS: u32 = 1024;

/// Connection-level receive window of a peer connection, bytes (each stream keeps the
/// endpoint's 1 MiB).
const PEER_RECEIVE_WINDOW: u32 = 32 * 1024 * 1024;

/// The first frame of every stream of a peer connection.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PeerOpen {
    /// The ingress node's `cluster.name`.
    pub name: String,
    /// HMAC-SHA256(cookie, "convoke-peer" || name).
    pub mac: Vec<u8>,
    /// Who the transfer is for.
    pub caller: Caller,
}

/// HMAC-SHA256(cookie, "convoke-peer" || name).
pub fn peer_mac(cookie: &[u8], name: &str) -> Vec<u8> {
    // HMAC takes a key of any length.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(cookie) else {
        return Vec::new();
    };
    mac.update(b"convoke-peer");
    mac.update(name.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn mac_ok(cookie: &[u8], open: &PeerOpen) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(cookie) else {
        return false;
    };
    mac.update(b"convoke-peer");
    mac.update(open.name.as_bytes());
    mac.verify_slice(&open.mac).is_ok()
}

static LOCAL_CERT: OnceLock<Vec<u8>> = OnceLock::new();

/// Records the SHA-256 of this node's QUIC server certificate (leaf, DER), for its `Hello`.
/// Set by `server::start` before the cluster starts.
pub fn set_local_cert(leaf_der: &[u8]) {
    let _ = LOCAL_CERT.set(Sha256::digest(leaf_der).to_vec());
}

/// The SHA-256 of this node's QUIC server certificate (empty if not set).
pub fn local_cert_sha256() -> Vec<u8> {
    LOCAL_CERT.get().cloned().unwrap_or_default()
}

fn refused(reason: &'static str) {
    metrics::counter!("convoke_peer_transfers_refused_total", "reason" => reason).increment(1);
}

// ---- the owner's side -----------------------------------------------------------------------

/// Serves a connection that negotiated [`ALPN`]: every stream must start with a valid
/// [`PeerOpen`], then it is served as a transfer stream of its caller, as if the caller
/// were connected here.
pub async fn serve(node: Arc<Node>, conn: quinn::Connection, admitted: Admitted) {
    let Some(cluster) = Cluster::get() else {
        refused("not_clustered");
        conn.close(CLOSE_UNAUTHENTICATED.into(), b"not a cluster node");
        return;
    };
    let cookie: Arc<[u8]> = Arc::from(cluster.inner.cfg.cookie.as_bytes());
    let wait = Duration::from_millis(node.config.sessions.handshake_timeout_ms);
    let authenticated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let proven = Arc::new(tokio::sync::Notify::new());
    {
        // A connection that never authenticates does not stay open, and until it does it
        // holds its places under the client connection caps (`admitted`: the total and its
        // address's), so that unauthenticated connections cannot get round them by
        // offering the peer ALPN. Authenticated, it is another node's and stops counting.
        let conn = conn.clone();
        let authenticated = authenticated.clone();
        let proven = proven.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => {
                    if !authenticated.load(std::sync::atomic::Ordering::Relaxed) {
                        refused("timeout");
                        conn.close(CLOSE_UNAUTHENTICATED.into(), b"no authenticated stream");
                    }
                }
                () = proven.notified() => {}
                _ = conn.closed() => {}
            }
            drop(admitted);
        });
    }
    tracing::debug!(remote = %conn.remote_address(), "peer transfer connection opened");
    loop {
        let (send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(remote = %conn.remote_address(), error = %e, "peer transfer connection ended");
                return;
            }
        };
        let node = node.clone();
        let conn = conn.clone();
        let cookie = cookie.clone();
        let authenticated = authenticated.clone();
        let proven = proven.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let open = match tokio::time::timeout(
                wait,
                read_small_frame::<PeerOpen>(&mut recv, &mut buf),
            )
            .await
            {
                Ok(Ok(Some(open))) => open,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::warn!(remote = %conn.remote_address(), error = %e, "peer transfer stream without a valid opening frame; connection closed");
                    refused("malformed");
                    conn.close(CLOSE_UNAUTHENTICATED.into(), b"malformed opening frame");
                    return;
                }
                Err(_) => {
                    refused("timeout");
                    conn.close(CLOSE_UNAUTHENTICATED.into(), b"no opening frame");
                    return;
                }
            };
            if !mac_ok(&cookie, &open) {
                tracing::warn!(remote = %conn.remote_address(), name = %open.name, "peer transfer stream with a wrong MAC (another cluster cookie?); connection closed");
                refused("bad_mac");
                conn.close(CLOSE_UNAUTHENTICATED.into(), b"not authenticated");
                return;
            }
            if !authenticated.swap(true, std::sync::atomic::Ordering::Relaxed) {
                proven.notify_one();
                // Only now (an unauthenticated connection keeps the client-facing limits):
                // all the peer's transfers to this node share this connection, which the
                // client-facing 4 streams and 2 MiB window would throttle.
                conn.set_max_concurrent_bi_streams(MAX_STREAMS.into());
                conn.set_receive_window(PEER_RECEIVE_WINDOW.into());
            }
            metrics::counter!("convoke_peer_transfers_total", "side" => "owner").increment(1);
            crate::session::transfer::serve_for_peer(node, open.caller, send, recv, buf).await;
        });
    }
}

// ---- the ingress side -----------------------------------------------------------------------

struct PeerConn {
    addr: String,
    cert: Vec<u8>,
    incarnation: u64,
    conn: quinn::Connection,
}

static CONNS: Mutex<Option<HashMap<String, PeerConn>>> = Mutex::new(None);
static ENDPOINT_V4: OnceLock<quinn::Endpoint> = OnceLock::new();
static ENDPOINT_V6: OnceLock<quinn::Endpoint> = OnceLock::new();

fn endpoint(addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let (cell, bind) = if addr.is_ipv6() {
        (&ENDPOINT_V6, "[::]:0")
    } else {
        (&ENDPOINT_V4, "0.0.0.0:0")
    };
    if let Some(e) = cell.get() {
        return Ok(e.clone());
    }
    let bind: SocketAddr = bind.parse().map_err(std::io::Error::other)?;
    let e = quinn::Endpoint::client(bind)?;
    Ok(cell.get_or_init(|| e).clone())
}

/// Accepts exactly the certificate whose SHA-256 is pinned (signatures still checked).
#[derive(Debug)]
struct Pinned {
    sha256: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if !self.sha256.is_empty() && Sha256::digest(end_entity.as_ref()).as_slice() == self.sha256
        {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            refused("cert_pin");
            Err(rustls::Error::General(
                "the peer's certificate is not the one its Hello announced".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config that pins `sha256` and speaks [`ALPN`]; keep-alives and an idle
/// timeout of `idle` so that a dead owner is noticed even without the cluster's verdict.
pub fn client_config(sha256: Vec<u8>, idle: Duration) -> anyhow::Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { sha256, provider }))
        .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto)?,
    ));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(idle / 4))
        .max_idle_timeout(Some(idle.try_into()?))
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The connection to `peer` (reused while it lives and the peer's Hello is unchanged).
async fn connection(cluster: &Cluster, peer: &str) -> Result<quinn::Connection, String> {
    let Some((addr, cert, incarnation, cluster_addr)) = cluster.inner.peer_quic(peer) else {
        return Err(format!("node {peer} is not up"));
    };
    {
        let conns = CONNS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conns.as_ref().and_then(|m| m.get(peer)) {
            if c.conn.close_reason().is_none()
                && c.addr == addr
                && c.cert == cert
                && c.incarnation == incarnation
            {
                return Ok(c.conn.clone());
            }
        }
    }
    let mut sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("node {peer} announced an unusable QUIC address {addr:?}: {e}"))?;
    if sock.ip().is_unspecified() {
        // It listens on all addresses: reach it on the host its cluster port is dialed at.
        sock = unspecified_to_host(sock, &cluster_addr).await;
    }
    let idle = Duration::from_millis(cluster.inner.cfg.peer_timeout_ms.max(500) * 2);
    let config = client_config(cert.clone(), idle).map_err(|e| format!("peer TLS config: {e}"))?;
    let ep = endpoint(sock).map_err(|e| format!("no UDP socket for peer transfers: {e}"))?;
    let connecting = ep
        .connect_with(config, sock, "convoke-peer")
        .map_err(|e| format!("cannot dial node {peer} at {sock}: {e}"))?;
    let conn = tokio::time::timeout(idle, connecting)
        .await
        .map_err(|_| format!("node {peer} at {sock} did not answer within {idle:?}"))?
        .map_err(|e| format!("cannot connect to node {peer} at {sock}: {e}"))?;
    CONNS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(
            peer.to_owned(),
            PeerConn {
                addr,
                cert,
                incarnation,
                conn: conn.clone(),
            },
        );
    Ok(conn)
}

/// The address to dial for a peer that announced the unspecified address `sock`: the host
/// of its cluster address `cluster_addr` (`host:port`, a name or an IP) with `sock`'s port;
/// loopback when that is unknown (a gateway that dialed us) or does not resolve.
async fn unspecified_to_host(sock: SocketAddr, cluster_addr: &str) -> SocketAddr {
    let host = cluster_addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or_default();
    if !host.is_empty() {
        if let Ok(mut found) = tokio::net::lookup_host((host, sock.port())).await {
            if let Some(a) = found.next() {
                return a;
            }
        }
    }
    let mut sock = sock;
    sock.set_ip(if sock.is_ipv6() {
        std::net::Ipv6Addr::LOCALHOST.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    });
    sock
}

/// How a pump ended.
#[derive(Debug)]
enum End {
    /// Done (finished, or a reset/stop passed on to the other side).
    Done,
    /// The owner's connection broke.
    PeerLost(String),
}

/// Client -> owner: the client's bytes, its finish or its reset (with its code).
async fn pump_up(client: &mut RecvStream, owner: &mut SendStream) -> End {
    loop {
        match client.read_chunk(crate::files::CHUNK, true).await {
            Ok(Some(chunk)) => match owner.write_chunk(chunk.bytes).await {
                Ok(()) => {}
                Err(WriteError::Stopped(code)) => {
                    let _ = client.stop(code);
                    return End::Done;
                }
                Err(e) => return End::PeerLost(e.to_string()),
            },
            Ok(None) => {
                let _ = owner.finish();
                return End::Done;
            }
            Err(ReadError::Reset(code)) => {
                let _ = owner.reset(code);
                return End::Done;
            }
            Err(_) => {
                // The client's connection is gone: a break, not a cancel (the owner keeps
                // a partial upload for a resume, as on one node).
                let _ = owner.reset(0u32.into());
                return End::Done;
            }
        }
    }
}

/// Owner -> client: the owner's frames and bytes, its finish or its reset.
async fn pump_down(owner: &mut RecvStream, client: &mut SendStream, passed: &mut u64) -> End {
    loop {
        match owner.read_chunk(crate::files::CHUNK, true).await {
            Ok(Some(chunk)) => {
                let n = chunk.bytes.len() as u64;
                match client.write_chunk(chunk.bytes).await {
                    Ok(()) => *passed += n,
                    Err(WriteError::Stopped(code)) => {
                        let _ = owner.stop(code);
                        return End::Done;
                    }
                    Err(_) => {
                        let _ = owner.stop(0u32.into());
                        return End::Done;
                    }
                }
            }
            Ok(None) => {
                let _ = client.finish();
                return End::Done;
            }
            Err(ReadError::Reset(code)) => {
                let _ = client.reset(code);
                return End::Done;
            }
            Err(e) => return End::PeerLost(e.to_string()),
        }
    }
}

/// Resolves when `peer` is no longer Up (checked every 100 ms).
async fn down(cluster: &Cluster, peer: &str) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !cluster.is_up(peer) {
            return format!("node {peer} went down");
        }
    }
}

/// Proxies one transfer stream to `peer`, the owner of its group: `header` is the client's
/// header frame (re-encoded) and `head` the bytes that came after it.
pub async fn proxy(
    cluster: &Cluster,
    peer: &str,
    caller: Caller,
    header: Bytes,
    head: BytesMut,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    metrics::counter!("convoke_peer_transfers_total", "side" => "ingress").increment(1);
    let opened = async {
        let conn = connection(cluster, peer).await?;
        let (mut psend, precv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("node {peer}: {e}"))?;
        let open = PeerOpen {
            name: cluster.name().to_owned(),
            mac: peer_mac(cluster.inner.cfg.cookie.as_bytes(), cluster.name()),
            caller: caller.clone(),
        };
        let open = frame_bytes(&open).map_err(|e| format!("opening frame: {e}"))?;
        let mut first = BytesMut::with_capacity(open.len() + header.len() + head.len());
        first.extend_from_slice(&open);
        first.extend_from_slice(&header);
        first.extend_from_slice(&head);
        psend
            .write_chunk(first.freeze())
            .await
            .map_err(|e| format!("node {peer}: {e}"))?;
        Ok::<_, String>((psend, precv))
    };
    let opened = tokio::select! {
        o = opened => o,
        why = down(cluster, peer) => Err(why),
    };
    let (mut psend, mut precv) = match opened {
        Ok(s) => s,
        Err(why) => return owner_lost(peer, &why, 0, &mut send, &mut recv).await,
    };
    let mut passed = 0u64;
    let lost = {
        let up = pump_up(&mut recv, &mut psend);
        let down_pump = pump_down(&mut precv, &mut send, &mut passed);
        tokio::pin!(up, down_pump);
        let mut up_done = false;
        loop {
            tokio::select! {
                end = &mut up, if !up_done => match end {
                    End::Done => up_done = true,
                    End::PeerLost(why) => break Some(why),
                },
                end = &mut down_pump => match end {
                    End::Done => break None,
                    End::PeerLost(why) => break Some(why),
                },
                why = down(cluster, peer) => break Some(why),
            }
        }
    };
    if let Some(why) = lost {
        let _ = psend.reset(0u32.into());
        let _ = precv.stop(0u32.into());
        owner_lost(peer, &why, passed, &mut send, &mut recv).await;
    }
    // The owner's answer is complete: the client's stream ends with this task (anything it
    // still sends is stopped, as the owner no longer reads it).
}

/// The owner is gone: a 500 outcome if the client has not seen a byte of the owner's
/// answer yet, else a reset (a frame or a download cut in the middle).
async fn owner_lost(
    peer: &str,
    why: &str,
    passed: u64,
    send: &mut SendStream,
    recv: &mut RecvStream,
) {
    metrics::counter!("convoke_peer_transfers_lost_total").increment(1);
    tracing::debug!(%peer, %why, passed, "file transfer proxy lost the group's owner");
    let _ = recv.stop(0u32.into());
    if passed == 0 {
        let err = ApiError::new(
            ErrorCode::ServerBusy,
            format!(
                "the group's files live on node {peer}, which was lost during the transfer \
                 ({why}); retry (an interrupted upload resumes)"
            ),
        );
        if crate::files::write_reply(send, TransferReply::Outcome(Err(err))).await {
            let _ = send.finish();
        }
    } else {
        let _ = send.reset(0u32.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_on_all_addresses_is_dialed_on_its_cluster_host() {
        let any: SocketAddr = "0.0.0.0:4433".parse().expect("addr");
        let at = |a: &str| a.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            unspecified_to_host(any, "10.1.2.3:7401").await,
            at("10.1.2.3:4433")
        );
        assert_eq!(
            unspecified_to_host(any, "localhost:7401").await.port(),
            4433
        );
        assert_eq!(unspecified_to_host(any, "").await, at("127.0.0.1:4433"));
    }

    #[test]
    fn the_mac_depends_on_cookie_and_name() {
        let open = |cookie: &[u8], name: &str| PeerOpen {
            name: name.into(),
            mac: peer_mac(cookie, name),
            caller: Caller {
                user: "u".into(),
                app_admin: false,
                session_id: 1,
            },
        };
        assert!(mac_ok(b"cookie-cookie", &open(b"cookie-cookie", "n1")));
        assert!(!mac_ok(b"cookie-cookie", &open(b"other-cookie", "n1")));
        let mut renamed = open(b"cookie-cookie", "n1");
        renamed.name = "n2".into();
        assert!(!mac_ok(b"cookie-cookie", &renamed));
    }
}
