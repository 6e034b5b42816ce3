//! [`ClientBuilder`]: the options of a client, and `connect()`, which dials the broker over
//! QUIC, performs the hello/welcome handshake and starts the client's tasks. `Dial` keeps
//! what every later reconnect needs (servers, trust and its TLS session cache, token
//! provider) and performs one dial + handshake, in 0-RTT when it can.

use crate::client::{Client, Inner};
use crate::connection::{self, Link, Opened};
use crate::error::{closed_error, ClientError};
use crate::events::AckMsg;
use crate::reconnect::{Core, ReconnectPolicy};
use crate::resume::{self, Control};
use crate::tls::{self, Trust};
use bytes::BytesMut;
use convoke_protocol::close;
use convoke_protocol::codec::{decode_frame, frame_bytes, MAX_FRAME_LEN};
use convoke_protocol::handshake::{
    parse_refusal, ClientFrame, Hello, ServerFrame, Welcome, SUPPORTED_VERSIONS,
};
use futures::future::BoxFuture;
use quinn::{ReadError, RecvStream, SendStream, VarInt};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Gives a fresh token for each connection attempt (see [`ClientBuilder::token_provider`]).
pub type TokenProvider = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// Where the token of each connection comes from.
#[derive(Clone)]
enum TokenSource {
    Fixed(String),
    Provider(TokenProvider),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(_) => f.write_str("Fixed(..)"),
            Self::Provider(_) => f.write_str("Provider(..)"),
        }
    }
}

/// Where the broker is.
#[derive(Debug, Clone)]
enum Target {
    Addr(SocketAddr),
    HostPort(String),
}

/// Options of a client; ends in [`ClientBuilder::connect`]. Get one from
/// [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    targets: Vec<Target>,
    server_name: Option<String>,
    token: TokenSource,
    device_id: String,
    ca_pem: Option<Vec<u8>>,
    ca_file: Option<PathBuf>,
    cert_pins: Vec<String>,
    key_pins: Vec<String>,
    system_roots: bool,
    versions: Vec<u32>,
    connect_timeout: Duration,
    dial_stagger: Duration,
    request_timeout: Duration,
    event_capacity: usize,
    ignore_events: bool,
    endpoint: Option<quinn::Endpoint>,
    reconnect: ReconnectPolicy,
    zero_rtt: bool,
    keep_alive: Duration,
    idle_timeout: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            server_name: None,
            token: TokenSource::Fixed(String::new()),
            device_id: "default".to_string(),
            ca_pem: None,
            ca_file: None,
            cert_pins: Vec::new(),
            key_pins: Vec::new(),
            system_roots: false,
            versions: SUPPORTED_VERSIONS.to_vec(),
            connect_timeout: Duration::from_secs(10),
            dial_stagger: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            event_capacity: 4096,
            ignore_events: false,
            endpoint: None,
            reconnect: ReconnectPolicy::default(),
            zero_rtt: true,
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ClientBuilder {
    /// The broker's UDP address (replaces any servers set before).
    pub fn server_addr(mut self, addr: SocketAddr) -> Self {
        self.targets = vec![Target::Addr(addr)];
        self
    }

    /// The broker as `host:port` (`[v6]:port` for IPv6), resolved at each connect (replaces
    /// any servers set before). When `host` is a DNS name and no
    /// [`server_name`](Self::server_name) is set, it is also the TLS server name.
    pub fn server(mut self, host_port: impl Into<String>) -> Self {
        self.targets = vec![Target::HostPort(host_port.into())];
        self
    }

    /// Several brokers (a cluster's nodes) as `host:port`: the first is dialled first;
    /// after a drop the client tries the server it was on, then the next ones in turn.
    /// A server that has not answered the QUIC handshake within the
    /// [`dial_stagger`](Self::dial_stagger) (1 s) does not hold up the next one: that is
    /// dialed too, and the first welcome wins.
    pub fn servers<I, S>(mut self, host_ports: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.targets = host_ports
            .into_iter()
            .map(|hp| Target::HostPort(hp.into()))
            .collect();
        self
    }

    /// The name the broker's certificate must carry. Default: the host given to
    /// [`server`](Self::server) if it is a DNS name, else `localhost`.
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_string());
        self
    }

    /// The token every connection of this client authenticates with (`convoke token --user
    /// NAME`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = TokenSource::Fixed(token.into());
        self
    }

    /// Asks `provider` for a token before each connection attempt (the first and every
    /// reconnect), so an expired token can be refreshed. An error from the provider counts
    /// as a failed attempt (retried with back-off); a token the broker refuses ends the
    /// client. Every token must be for the same user.
    pub fn token_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, String>> + Send + 'static,
    {
        self.token = TokenSource::Provider(Arc::new(move || Box::pin(provider())));
        self
    }

    /// When and how often to reconnect after the connection drops. Default: reconnect,
    /// forever, backing off from 100 ms to 5 s.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// How often to send a keep-alive when nothing else is sent, and how long without a
    /// packet from the broker ends the connection (then the client reconnects). A network
    /// that silently drops everything is noticed after `idle_timeout` (or the broker's own
    /// idle timeout, if shorter). Defaults: 10 s and 60 s. `keep_alive` must be shorter
    /// than both timeouts.
    pub fn keep_alive(mut self, keep_alive: Duration, idle_timeout: Duration) -> Self {
        self.keep_alive = keep_alive;
        self.idle_timeout = idle_timeout;
        self
    }

    /// Whether to send the hello in TLS 0-RTT early data to a broker this client connected
    /// to before (one round trip less per reconnect). Default: true. The broker may refuse
    /// early data; then the hello goes again after the handshake.
    pub fn zero_rtt(mut self, enabled: bool) -> Self {
        self.zero_rtt = enabled;
        self
    }

    /// This device among the user's sessions (1-64 bytes). Default `default`.
    pub fn device_id(mut self, device_id: impl Into<String>) -> Self {
        self.device_id = device_id.into();
        self
    }

    /// Trust every certificate in this PEM document (a CA, or the broker's self-signed
    /// certificate).
    pub fn ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.ca_pem = Some(pem);
        self
    }

    /// Like [`ca_pem`](Self::ca_pem), reading the PEM from a file at connect time.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Accept the server certificate with this SHA-256 fingerprint (64 hex digits, `:`
    /// separators and a `sha256:` prefix allowed; the broker logs it as `fingerprint`). May
    /// be called several times (and with [`pin_public_key`](Self::pin_public_key)): a
    /// certificate matching any pin is accepted. Pins take precedence over a CA and the
    /// system roots.
    pub fn pin_sha256(mut self, fingerprint: impl Into<String>) -> Self {
        self.cert_pins.push(fingerprint.into());
        self
    }

    /// Accept a server certificate whose public key has this pin: `sha256/<base64>` of
    /// its SubjectPublicKeyInfo, as the broker logs it (`public_key_pin`) and as
    /// [`crate::tls::public_key_pin`] computes it. Unlike a certificate fingerprint, it
    /// survives a renewal that keeps the key. May be called several times: pin the current
    /// key and the next one before a key rotation, and drop the old pin after it. Pins take
    /// precedence over a CA and the system roots.
    pub fn pin_public_key(mut self, pin: impl Into<String>) -> Self {
        self.key_pins.push(pin.into());
        self
    }

    /// Trust the operating system's root certificates (for a broker whose certificate comes
    /// from a public or company CA). Used when no pin and no CA is given.
    pub fn system_roots(mut self) -> Self {
        self.system_roots = true;
        self
    }

    /// The protocol versions offered in the hello. Default: every version this crate speaks.
    pub fn versions(mut self, versions: Vec<u32>) -> Self {
        self.versions = versions;
        self
    }

    /// Limit on dialing plus the handshake. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// With several servers, how long a dial waits for the server to answer its QUIC
    /// handshake before the next server is dialed too (the first welcome wins, the others
    /// are closed), as happy eyeballs does for addresses: a server that is down, which a
    /// QUIC dial hears nothing from, costs this instead of the whole
    /// [`connect_timeout`](Self::connect_timeout); one that answered is waited for, up to
    /// the connect timeout. Default 1 s: above a slow link's handshake round trip.
    pub fn dial_stagger(mut self, stagger: Duration) -> Self {
        self.dial_stagger = stagger;
        self
    }

    /// Limit on each request's round trip. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Pushes buffered for [`Client::events`] before the connection stops reading them (and
    /// the broker eventually disconnects a client that never catches up). Default 4096.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Take no pushes: for clients that only make requests. The broker sends this session
    /// none (kept events wait for a session that takes them), and [`Client::events`]
    /// returns an empty stream.
    pub fn ignore_events(mut self) -> Self {
        self.ignore_events = true;
        self
    }

    /// Dial from this existing QUIC endpoint (its UDP socket) instead of binding a new one.
    ///
    /// Default: every connection binds its own endpoint on an ephemeral port. A program that
    /// opens many connections (a load generator, a gateway) can share one endpoint between
    /// hundreds of them: one socket and one driver task instead of one per connection. The
    /// endpoint needs no default client config (the connection brings its own), and it must
    /// speak the broker's address family. A shared endpoint stays open when a client closes;
    /// [`Client::close`] then does not wait for the endpoint to become idle.
    pub fn endpoint(mut self, endpoint: quinn::Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    fn trust(&self) -> Result<Trust, ClientError> {
        let pins = tls::Pins {
            certs: self
                .cert_pins
                .iter()
                .map(|p| tls::parse_fingerprint(p))
                .collect::<Result<_, _>>()?,
            keys: self
                .key_pins
                .iter()
                .map(|p| tls::parse_public_key_pin(p))
                .collect::<Result<_, _>>()?,
        };
        if !pins.is_empty() {
            return Ok(Trust::Pins(pins));
        }
        if let Some(pem) = &self.ca_pem {
            return Ok(Trust::Roots(tls::parse_pem_certs(pem)?));
        }
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Tls(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            return Ok(Trust::Roots(tls::parse_pem_certs(&pem)?));
        }
        if self.system_roots {
            return Ok(Trust::System);
        }
        Err(ClientError::Tls(
            "no trust configured: call ca_pem, ca_file, pin_public_key, pin_sha256 or \
             system_roots"
                .to_string(),
        ))
    }

    /// Dials the broker, performs the handshake and starts the client.
    ///
    /// The first connection is not retried: its failure is returned. Errors:
    /// [`ClientError::Api`] when the broker refuses the hello (e.g. `TokenNotAssigned`,
    /// `UnsupportedVersion`), [`ClientError::Tls`] for a certificate the trust rejects,
    /// [`ClientError::Connect`] for anything else that prevents a connection within the
    /// connect timeout.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let crypto = tls::quic_crypto(&self.trust()?, self.zero_rtt)?;
        if self.targets.is_empty() {
            return Err(ClientError::Connect(
                "no server address: call server_addr, server or servers".to_string(),
            ));
        }
        let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(self.keep_alive));
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            ClientError::Connect(format!("idle timeout {:?} is too long", self.idle_timeout))
        })?;
        transport.max_idle_timeout(Some(idle));
        quic.transport_config(Arc::new(transport));

        let owns_endpoint = self.endpoint.is_none();
        let endpoint = match &self.endpoint {
            Some(shared) => shared.clone(),
            None => {
                // The address family of the first server decides the socket's.
                let (addr, _) = resolve(&self.targets[0], self.server_name.as_deref()).await?;
                let bind: SocketAddr = if addr.is_ipv6() {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                };
                quinn::Endpoint::client(bind)
                    .map_err(|e| ClientError::Connect(format!("cannot bind UDP {bind}: {e}")))?
            }
        };
        let events = !self.ignore_events;
        let dial = Dial {
            targets: self.targets,
            server_name: self.server_name,
            token: self.token,
            device_id: self.device_id,
            versions: self.versions,
            events,
            quic,
            endpoint: endpoint.clone(),
            connect_timeout: self.connect_timeout,
            stagger: self.dial_stagger,
            policy: self.reconnect,
        };
        // The first connection tries each server once, in order, staggered.
        let (target, first) = dial.connect_any(0).await?;
        let first = Link::start(first);
        tracing::debug!(user = %first.welcome.user_id, session = first.welcome.session_id, server = %first.server, "connected");

        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (pushes_tx, pushes_rx) = mpsc::channel(self.event_capacity);
        let (app_tx, app_rx) = mpsc::channel(self.event_capacity);
        let (acks, acks_rx) = mpsc::unbounded_channel::<AckMsg>();
        let core = Core::new(
            dial,
            first.clone(),
            self.request_timeout,
            control_tx.clone(),
            pushes_tx,
        );
        resume::spawn(
            core.clone(),
            pushes_rx,
            control_rx,
            events.then_some(app_tx),
            acks.clone(),
        );
        tokio::spawn(resume::acknowledge(core.clone(), acks_rx));
        let _ = control_tx.send(Control::Up {
            link: first.clone(),
            reconnect: false,
        });
        core.read_pushes(&first);
        tokio::spawn(crate::reconnect::supervise(core.clone(), first, target));
        Ok(Client::from_inner(Inner {
            core,
            acks,
            events: Mutex::new(events.then_some(app_rx)),
            endpoint,
            owns_endpoint,
        }))
    }
}

/// Everything a connection attempt needs, kept for the reconnects.
#[derive(Debug)]
pub(crate) struct Dial {
    targets: Vec<Target>,
    server_name: Option<String>,
    token: TokenSource,
    device_id: String,
    versions: Vec<u32>,
    /// Whether sessions take pushes.
    pub(crate) events: bool,
    /// Shared by every attempt: its rustls config holds the session tickets for 0-RTT.
    quic: quinn::ClientConfig,
    endpoint: quinn::Endpoint,
    connect_timeout: Duration,
    stagger: Duration,
    pub(crate) policy: ReconnectPolicy,
}

impl Dial {
    /// Whether each connection asks a token provider for its token (so an expired token
    /// can be replaced by reconnecting).
    pub(crate) fn refreshes_token(&self) -> bool {
        matches!(self.token, TokenSource::Provider(_))
    }

    /// The server to try after `target`.
    pub(crate) fn next_target(&self, target: usize) -> usize {
        (target + 1) % self.targets.len()
    }

    /// Dials the servers in turn from `start`, each once, until one welcomes this client:
    /// that server's index and its connection. The next server is dialed when the last
    /// dial failed, or when no dial under way has heard from its server (completed the
    /// QUIC handshake) within the stagger: a server that is down, which a QUIC dial hears
    /// nothing from, costs the stagger instead of the connect timeout, while a server that
    /// answers but is slow to welcome is waited for (a second session there would count
    /// against the user's sessions). The first welcome wins; the other dials are dropped,
    /// which closes their connections. A refused hello (token, version, the hello itself),
    /// which every server would answer alike, ends it at once; when every server failed,
    /// the error is the last one retrying may fix, or, when none was, the first one
    /// (say a certificate).
    pub(crate) async fn connect_any(&self, start: usize) -> Result<(usize, Opened), ClientError> {
        use futures::stream::{FuturesUnordered, StreamExt};
        use std::sync::atomic::{AtomicBool, Ordering};
        let n = self.targets.len().max(1);
        let mut dials = FuturesUnordered::new();
        // Whether each dial under way has heard from its server, by target.
        let mut heard: Vec<(usize, Arc<AtomicBool>)> = Vec::new();
        let mut next = 0;
        let mut dial_next = true;
        // The first error retrying cannot fix, the last one it may, and whether any was so.
        let mut failed: Option<ClientError> = None;
        let mut last = ClientError::Connect("no server".to_string());
        let mut retryable = false;
        // Every server failed: an error retrying cannot fix only when none failed otherwise
        // (one node with a bad certificate must not end the reconnects while the others
        // are only down).
        let worst = |failed: Option<ClientError>, last: ClientError, retryable: bool| match failed {
            Some(f) if !retryable => f,
            _ => last,
        };
        loop {
            if dial_next && next < n {
                let target = (start + next) % n;
                next += 1;
                let flag = Arc::new(AtomicBool::new(false));
                heard.push((target, flag.clone()));
                dials.push(async move { (target, self.connect(target, &flag).await) });
            }
            let more = next < n;
            let stagger = async move {
                if more {
                    tokio::time::sleep(self.stagger).await;
                } else {
                    // Every server is being dialed: only their own timeouts are left.
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                done = dials.next() => match done {
                    Some((target, Ok(opened))) => return Ok((target, opened)),
                    Some((_, Err(e))) if e.is_refused_hello() => return Err(e),
                    Some((target, Err(e))) => {
                        tracing::debug!(server = %self.targets[target], error = %e, "dial failed");
                        heard.retain(|(t, _)| *t != target);
                        if e.is_retryable() {
                            retryable = true;
                            last = e;
                        } else if failed.is_none() {
                            failed = Some(e);
                        }
                        if dials.is_empty() && next >= n {
                            return Err(worst(failed, last, retryable));
                        }
                        dial_next = true;
                    }
                    None if next >= n => return Err(worst(failed, last, retryable)),
                    None => dial_next = true,
                },
                () = stagger => {
                    dial_next = !heard.iter().any(|(_, h)| h.load(Ordering::Relaxed));
                }
            }
        }
    }

    /// One attempt: dial server `target`, send the hello (in 0-RTT early data when a ticket
    /// from an earlier connection allows), and wait for the welcome.
    /// `heard` is set once the server has answered the QUIC handshake.
    pub(crate) async fn connect(
        &self,
        target: usize,
        heard: &std::sync::atomic::AtomicBool,
    ) -> Result<Opened, ClientError> {
        let started = std::time::Instant::now();
        let target = &self.targets[target % self.targets.len()];
        let token = match &self.token {
            TokenSource::Fixed(t) => t.clone(),
            TokenSource::Provider(p) => p()
                .await
                .map_err(|e| ClientError::Connect(format!("the token provider failed: {e}")))?,
        };
        let hello = Hello {
            versions: self.versions.clone(),
            token,
            device_id: self.device_id.clone(),
            events: self.events,
        };
        let attempt = async {
            let (addr, server_name) = resolve(target, self.server_name.as_deref()).await?;
            let connecting = self
                .endpoint
                .connect_with(self.quic.clone(), addr, &server_name)
                .map_err(|e| ClientError::Connect(format!("cannot dial {addr}: {e}")))?;
            let heard_now = || heard.store(true, std::sync::atomic::Ordering::Relaxed);
            let (connection, early) = match connecting.into_0rtt() {
                Ok((connection, accepted)) => (connection, Some(accepted)),
                Err(connecting) => {
                    let connection = connecting
                        .await
                        .map_err(|e| dial_error(&e, addr, &server_name))?;
                    heard_now();
                    (connection, None)
                }
            };
            let early_data = early.is_some();
            let (mut shake, zero_rtt) = match early {
                // The hello went out as early data: the handshake completes (and says
                // whether the server took it) while the welcome is awaited.
                Some(accepted) => {
                    tokio::join!(
                        handshake(&connection, hello.clone(), &self.versions),
                        async {
                            let taken = accepted.await;
                            heard_now();
                            taken
                        }
                    )
                }
                None => (
                    handshake(&connection, hello.clone(), &self.versions).await,
                    false,
                ),
            };
            if early_data && shake.is_err() && !zero_rtt && connection.close_reason().is_none() {
                // The broker refused the early data, and with it the hello: again, now
                // that the handshake is complete.
                shake = handshake(&connection, hello, &self.versions).await;
            }
            if shake.is_err() {
                // The broker's own close (e.g. it is shutting down) says more than the
                // stream error it caused (such as "0-RTT rejected"); a refusal it sent
                // (an `Api` error) is kept as it is.
                if let (Some(end), Err(e)) = (connection.close_reason(), &shake) {
                    if !matches!(e, ClientError::Api(_))
                        && !matches!(end, quinn::ConnectionError::LocallyClosed)
                    {
                        shake =
                            Err(refusal_from_close(&end)
                                .unwrap_or_else(|| closed_error(&end, None)));
                    }
                }
                connection.close(
                    VarInt::from_u32(close::HANDSHAKE_REFUSED),
                    b"handshake failed",
                );
            }
            let (send, recv, welcome, leftover) = shake?;
            Ok::<_, ClientError>(Opened {
                connection,
                send,
                recv,
                leftover,
                welcome,
                server: addr,
                zero_rtt,
                took: started.elapsed(),
            })
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Connect(format!(
                "no welcome from {target} within {:?}",
                self.connect_timeout
            ))),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::HostPort(hp) => f.write_str(hp),
        }
    }
}

/// The address to dial and the TLS name to verify for `target`.
async fn resolve(
    target: &Target,
    server_name: Option<&str>,
) -> Result<(SocketAddr, String), ClientError> {
    let name = |host: Option<&str>| {
        server_name
            .map(str::to_string)
            .unwrap_or_else(|| match host {
                Some(h) if h.parse::<std::net::IpAddr>().is_err() => h.to_string(),
                _ => "localhost".to_string(),
            })
    };
    match target {
        Target::Addr(addr) => Ok((*addr, name(None))),
        Target::HostPort(hp) => {
            let host = hp
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'));
            let addr = tokio::net::lookup_host(hp.as_str())
                .await
                .map_err(|e| ClientError::Connect(format!("cannot resolve {hp:?}: {e}")))?
                .next()
                .ok_or_else(|| ClientError::Connect(format!("{hp:?} resolves to no address")))?;
            Ok((addr, name(host)))
        }
    }
}

fn dial_error(e: &quinn::ConnectionError, addr: SocketAddr, name: &str) -> ClientError {
    if let quinn::ConnectionError::TransportError(t) = e {
        // 0x100..=0x1ff are TLS alerts: the handshake itself failed.
        if (0x100..0x200).contains(&u64::from(t.code)) {
            return ClientError::Tls(format!(
                "TLS handshake with {addr} as {name:?} failed: {}",
                t.reason
            ));
        }
    }
    ClientError::Connect(format!("{addr}: {e}"))
}

type Handshake = (SendStream, RecvStream, Welcome, BytesMut);

async fn handshake(
    connection: &quinn::Connection,
    hello: Hello,
    offered: &[u32],
) -> Result<Handshake, ClientError> {
    let lost =
        |e: &quinn::ConnectionError| refusal_from_close(e).unwrap_or_else(|| closed_error(e, None));
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
    let frame = frame_bytes(&ClientFrame::Hello(hello))
        .map_err(|e| ClientError::Protocol(format!("cannot encode the hello: {e}")))?;
    send.write_all(&frame).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(e) => lost(&e),
        other => ClientError::Connect(format!("cannot send the hello: {other}")),
    })?;
    let mut buf = BytesMut::new();
    loop {
        match decode_frame::<ServerFrame>(&mut buf, MAX_FRAME_LEN) {
            Ok(Some(ServerFrame::Welcome(welcome))) => {
                if !offered.contains(&welcome.version) {
                    return Err(ClientError::Protocol(format!(
                        "the broker chose version {} which was not offered ({offered:?})",
                        welcome.version
                    )));
                }
                return Ok((send, recv, welcome, buf));
            }
            Ok(Some(ServerFrame::Refused(err))) => return Err(ClientError::Api(err)),
            Ok(Some(ServerFrame::Response { id, .. })) => {
                return Err(ClientError::Protocol(format!(
                    "the broker answered request {id} before welcoming"
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(ClientError::Protocol(format!("handshake frame: {e}"))),
        }
        match connection::read_more(&mut recv, &mut buf).await {
            Ok(true) => {}
            Ok(false) => {
                // The broker may close right behind the stream end; prefer its reason.
                let end =
                    tokio::time::timeout(Duration::from_millis(500), connection.closed()).await;
                return Err(match end {
                    Ok(e) => lost(&e),
                    Err(_) => ClientError::Protocol(
                        "the broker ended the control stream without a welcome".to_string(),
                    ),
                });
            }
            Err(ReadError::ConnectionLost(e)) => return Err(lost(&e)),
            Err(e) => return Err(ClientError::Connect(format!("handshake: {e}"))),
        }
    }
}

/// A broker that closes with HANDSHAKE_REFUSED and a refusal as its reason
/// ([`convoke_protocol::handshake::refusal_reason`]) refused us, even if its Refused frame
/// was lost to the close.
fn refusal_from_close(e: &quinn::ConnectionError) -> Option<ClientError> {
    let quinn::ConnectionError::ApplicationClosed(app) = e else {
        return None;
    };
    if app.error_code != VarInt::from_u32(close::HANDSHAKE_REFUSED) {
        return None;
    }
    parse_refusal(&app.reason).map(ClientError::Api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_trust_or_address_fail_before_dialing() {
        let err = Client::builder()
            .server("127.0.0.1:1")
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Tls(ref m) if m.contains("no trust")),
            "{err}"
        );
        let err = Client::builder()
            .pin_sha256("00".repeat(32))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect(_)), "{err}");
        let err = Client::builder()
            .ca_file("/nonexistent/ca.pem")
            .connect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
