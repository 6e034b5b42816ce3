//! Membership: the NodeServer, dialing every member, the Hello exchange, the heartbeat and
//! the Down decision (../shared/design/cluster.md 3.2-3.4).
//!
//! A peer is **Up** when its router's proxy is in pg (so its NodeSession is authenticated
//! and ready) and both sides exchanged a `Hello` that this node accepted. Every
//! `cluster.heartbeat_ms` the membership task pings each Up peer's router directly (not
//! through the link, so the round trip measures the path, not our backlog); the peer's
//! router answers `Pong`. ractor_cluster itself never times out a frozen peer (its pings
//! only log), so a peer is **Down** after `cluster.peer_timeout_ms` without a Pong, or at
//! once when its session closes. On Down: its NodeSession is stopped (a half-open link is
//! replaced by a fresh one), calls waiting for it fail, its link forgets what it had not
//! acknowledged, the inbound hook hears `peer_down`, and it is redialed with jittered
//! backoff (ractor_cluster does not reconnect).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use ractor::{Actor, ActorCell, ActorId, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeSessionMessage};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::clock::ClockOffset;
use super::identity;
use super::link::{Link, SendError};
use super::pending::Pending;
use super::router::{Router, GROUP, NAME_PREFIX, SCOPE};
use super::wire::{Batch, Hello, RouterMsg, Wire, ENVELOPE_MARGIN, MAX_BATCH_BYTES, PROTO};
use super::{members_of, CallError, Cluster, Inner, Placement};
use crate::config::{check_name, ClusterRole, Config, Member};

/// First pause before redialing a peer; doubles up to `cluster.reconnect_max_ms`.
const BACKOFF_START: Duration = Duration::from_millis(250);

/// A gateway not Up for this many `cluster.reconnect_max_ms` is forgotten: its entry, link
/// task, ordinal and presence slot are freed (gateways come and go; core members stay).
const GATEWAY_FORGET_AFTER: u32 = 20;

/// A peer's refusal of this node stands for this many `cluster.reconnect_max_ms` (plus
/// `cluster.peer_timeout_ms`) after it was last heard. A peer that still refuses says so
/// again at every new session, and the two sides redial each other at most
/// `reconnect_max_ms` apart; one that stopped (exited, or was fixed and restarted) no
/// longer does, and its old refusal must not count with a later one from another peer
/// towards a majority that stops this node (review finding LOW-3). Refusals heard apart in
/// time (peers that start at different moments) still add up while both stand.
const REFUSAL_STANDS_FOR: u32 = 3;

/// A peer's last word about this node, when that was a refusal.
#[derive(Debug, Clone)]
struct RefusedUs {
    /// The reason's code (`refusal::FATAL` names those that count).
    code: String,
    /// Its words, naming the setting.
    words: String,
    /// When it was last heard.
    at: Instant,
}

/// What this node knows of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not Up yet (dialing, or the Hello exchange is under way).
    Connecting,
    /// Exchanged Hellos, answering heartbeats.
    Up,
    /// Was Up, then lost (heartbeat timeout or session closed); being redialed.
    Down,
    /// Its Hello was refused (wrong app secret, shards, members, a duplicate name...).
    Refused,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Up => "up",
            State::Down => "down",
            State::Refused => "refused",
        }
    }
}

/// One peer.
#[derive(Debug)]
pub(crate) struct Peer {
    /// `host:port` to dial (empty for a gateway that dials us).
    addr: String,
    core: bool,
    state: State,
    router: Option<ActorRef<RouterMsg>>,
    router_id: Option<ActorId>,
    hello_sent: bool,
    hello: Option<Hello>,
    last_pong: Instant,
    rtt: Option<Duration>,
    ping_seq: u64,
    /// Highest batch seq processed from this peer, and the incarnation it belongs to.
    recv_acked: (u64, u64),
    /// Its monotonic clock mapped onto ours: (its incarnation, the least `our now_ns - its
    /// sent_ns` over its recent Pings, i.e. the clock offset plus the shortest one-way
    /// delay; see `clock`).
    clock_offset: Option<(u64, ClockOffset)>,
    link: Link,
    /// Authenticated NodeSessions with this peer, by ractor_cluster node id.
    sessions: HashMap<u64, ActorRef<NodeSessionMessage>>,
    next_dial: Instant,
    backoff: Duration,
    dialing: bool,
    over_since: Option<Instant>,
    /// Since when it is not Up (`None` while Up).
    idle_since: Option<Instant>,
    reason: Option<String>,
    downs: u64,
    /// Its last word about this node, when that was a refusal. Cleared when it accepts
    /// this node (its next Ping); counts only while it stands ([`REFUSAL_STANDS_FOR`]).
    refused_us: Option<RefusedUs>,
}

impl Peer {
    fn new(addr: String, core: bool, link: Link) -> Peer {
        let now = Instant::now();
        Peer {
            addr,
            core,
            state: State::Connecting,
            router: None,
            router_id: None,
            hello_sent: false,
            hello: None,
            last_pong: now,
            rtt: None,
            ping_seq: 0,
            recv_acked: (0, 0),
            clock_offset: None,
            link,
            sessions: HashMap::new(),
            next_dial: now,
            backoff: BACKOFF_START,
            dialing: false,
            over_since: None,
            idle_since: Some(now),
            reason: None,
            downs: 0,
            refused_us: None,
        }
    }

    /// The highest batch seq processed from its current process (the incarnation of its
    /// accepted Hello), 0 before one: what a Ping or Pong to it acknowledges. A seq from
    /// its previous process would acknowledge batches of the new link it never processed,
    /// and their bytes would no longer count against `cluster.peer_queue_bytes`.
    fn acked_for_its_process(&self) -> u64 {
        match &self.hello {
            Some(h) if h.incarnation == self.recv_acked.0 => self.recv_acked.1,
            _ => 0,
        }
    }
}

/// What a closed ractor_cluster session was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// This node stopped it (Down, refused, a duplicate name).
    Ours,
    /// A known peer's session (the peer is Down if it was its last one).
    Lost,
    /// A second connection to a peer that has another one.
    Duplicate,
    /// Closed before it authenticated: a wrong cookie, or not a convoke node.
    Unauthenticated,
}

/// A node event, from ractor_cluster's synchronous callbacks into the membership task.
#[derive(Debug)]
enum Event {
    Authenticated(NodeServerSessionInformation),
    Disconnected(NodeServerSessionInformation),
    Dialed(String, Result<(), String>),
}

struct Subscription(mpsc::UnboundedSender<Event>);

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(Event::Disconnected(ses));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(Event::Authenticated(ses));
    }
}

/// The node name in a ractor_cluster peer name (`n2@127.0.0.2`).
fn peer_name(ses: &NodeServerSessionInformation) -> Option<String> {
    ses.peer_name
        .as_ref()
        .map(|n| n.name.split('@').next().unwrap_or_default().to_owned())
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().to_vec()
}

/// Starts the NodeServer, the router and the membership task.
pub(super) async fn start(
    config: &Config,
    secret: &[u8],
    quic_addr: std::net::SocketAddr,
) -> anyhow::Result<Cluster> {
    let cfg = config.cluster.clone();
    let tls = super::tls::load(&cfg)?;
    let id = identity::load_or_create(&cfg, &config.server.data_dir)?;
    let peer_uids = identity::load_peer_uids(&config.server.data_dir)?;
    let members = members_of(&cfg);
    let placement = OnceLock::new();
    if !members.is_empty() {
        let core = members.iter().map(|m| m.name.clone()).collect();
        let _ = placement.set(Placement::new(core, cfg.shards));
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .map_err(|e| anyhow::anyhow!("app secret unusable as an HMAC key: {e}"))?;
    mac.update(b"convoke-cluster-fingerprint");
    let sorted_members = identity::sorted_members(&cfg);
    let members_hash = if sorted_members.is_empty() {
        Vec::new()
    } else {
        sha256(
            &sorted_members
                .iter()
                .map(|m| m.as_bytes())
                .collect::<Vec<_>>(),
        )
    };
    let incarnation = rand::random::<u64>();
    let hello = Hello {
        proto: PROTO,
        name: cfg.name.clone(),
        ordinal: cfg.ordinal,
        role: cfg.role.as_str().to_owned(),
        node_uid: id.node_uid.clone(),
        incarnation,
        shards: cfg.shards,
        members_hash,
        secret_mac: mac.finalize().into_bytes().to_vec(),
        members: sorted_members,
        quic_addr: quic_addr.to_string(),
        quic_cert_sha256: super::peer_quic::local_cert_sha256(),
    };
    let inner = Arc::new(Inner {
        name: cfg.name.clone(),
        ordinal: cfg.ordinal,
        role: cfg.role,
        node_uid: id.node_uid,
        incarnation,
        placement,
        hello,
        peers: Mutex::new(BTreeMap::new()),
        pending: Pending::default(),
        ordinals: Mutex::default(),
        peer_uids: Mutex::new(peer_uids),
        peer_uids_path: identity::peer_uids_path(&config.server.data_dir),
        stopped_sessions: Mutex::default(),
        inbound: OnceLock::new(),
        accepted: Default::default(),
        refusal: tokio::sync::watch::Sender::new(None),
        epoch: Instant::now(),
        server: OnceLock::new(),
        tls: tls.clone(),
        cfg: cfg.clone(),
    });
    {
        let mut peers = inner.lock();
        for m in members.iter().filter(|m| m.name != cfg.name) {
            peers.insert(m.name.clone(), inner.new_peer(&m.name, m.addr(), true));
        }
        for (i, seed) in cfg.join.iter().enumerate() {
            // A seed's name is learnt from its Hello; until then it is dialed by address.
            if !members.iter().any(|m| &m.addr() == seed) {
                let name = format!("?seed{i}");
                let peer = inner.new_peer(&name, seed.clone(), true);
                peers.insert(name, peer);
            }
        }
    }

    // The router first: peers that connect learn of it at once.
    let (router, _) = Actor::spawn(
        Some(format!("{NAME_PREFIX}{}", cfg.name)),
        Router,
        inner.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot start the cluster router: {e}"))?;
    drop(router);

    let advertised = Member::parse(&format!("{}@{}", cfg.name, cfg.advertised()))
        .map_err(|e| anyhow::anyhow!("cluster.advertise: {e}"))?;
    // With TLS the cluster port is ours (see tls::spawn_acceptor); ractor_cluster's own
    // listener then sits on an ephemeral loopback port nobody dials, still behind TLS.
    let (node_port, node_ip) = match &tls {
        Some(_) => (0, std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)),
        None => (cfg.listen.port(), cfg.listen.ip()),
    };
    let server = NodeServer::new(
        node_port,
        cfg.cookie.clone(),
        cfg.name.clone(),
        advertised.host.clone(),
        Some(match &tls {
            Some(t) => ractor_cluster::IncomingEncryptionMode::Tls(t.acceptor.clone()),
            None => ractor_cluster::IncomingEncryptionMode::Raw,
        }),
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(node_ip)
    // A batch at its limit plus ractor_cluster's envelope around it: a frame limit of
    // exactly MAX_BATCH_BYTES would drop the biggest batches a link may send.
    .with_max_inbound_frame_size((MAX_BATCH_BYTES + ENVELOPE_MARGIN) as u64);
    // The listener binds in the background; check the port is free first so that a clash
    // stops the start with a clear message instead of a log line.
    let own_listener = match &tls {
        Some(_) => Some(
            tokio::net::TcpListener::bind(cfg.listen)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot listen on cluster.listen = {}: {e}", cfg.listen)
                })?,
        ),
        None => {
            std::net::TcpListener::bind(cfg.listen).map_err(|e| {
                anyhow::anyhow!("cannot listen on cluster.listen = {}: {e}", cfg.listen)
            })?;
            None
        }
    };
    let (server, _) = Actor::spawn(Some("convoke.cluster.server".to_owned()), server, ())
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the cluster server on {}: {e}", cfg.listen))?;
    let (tx, rx) = mpsc::unbounded_channel();
    server
        .cast(ractor_cluster::NodeServerMessage::SubscribeToEvents {
            id: "convoke.membership".to_owned(),
            subscription: Box::new(Subscription(tx.clone())),
        })
        .map_err(|e| anyhow::anyhow!("cannot subscribe to cluster events: {e}"))?;
    if let (Some(listener), Some(t)) = (own_listener, &tls) {
        super::tls::spawn_acceptor(
            listener,
            t.acceptor.clone(),
            server.clone(),
            Duration::from_millis(cfg.peer_timeout_ms),
        );
    }
    let _ = inner.server.set(server);
    tokio::spawn(run(inner.clone(), rx, tx));
    tracing::info!(
        name = %cfg.name,
        ordinal = cfg.ordinal,
        role = cfg.role.as_str(),
        listen = %cfg.listen,
        members = ?cfg.members,
        shards = cfg.shards,
        "cluster: node started"
    );
    Ok(Cluster { inner })
}

/// The membership task: node events, and every heartbeat: pg scan, Hellos, Pings, timeouts,
/// dials, gauges.
async fn run(
    inner: Arc<Inner>,
    mut events: mpsc::UnboundedReceiver<Event>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let beat = Duration::from_millis(inner.cfg.heartbeat_ms);
    let mut every = tokio::time::interval(beat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    // Sessions that opened and are not authenticated yet, by node id (for the refusal count).
    loop {
        tokio::select! {
            _ = every.tick() => {
                let now = Instant::now();
                // This process was frozen (SIGSTOP, a stalled VM): nobody could answer us.
                // Give every peer a fresh timeout rather than declare them all Down.
                let paused = now.duration_since(last_tick) > Duration::from_millis(inner.cfg.peer_timeout_ms);
                last_tick = now;
                inner.tick(now, paused, &tx);
            }
            Some(event) = events.recv() => inner.on_event(event),
        }
    }
}

impl Inner {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Peer>> {
        // Every critical section leaves the table consistent; a panic in one is a bug to
        // see in the log, not a reason to stop the cluster.
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_peer(self: &Arc<Self>, name: &str, addr: String, core: bool) -> Peer {
        Peer::new(
            addr,
            core,
            Link::spawn(name, self.cfg.peer_queue_bytes, Arc::downgrade(self)),
        )
    }

    /// The router proxy of `peer` when it is Up (for links).
    pub(super) fn up_router(&self, peer: &str) -> Option<ActorRef<RouterMsg>> {
        let peers = self.lock();
        let p = peers.get(peer)?;
        (p.state == State::Up).then(|| p.router.clone()).flatten()
    }

    pub(super) fn peer_incarnation(&self, peer: &str) -> Option<u64> {
        self.lock()
            .get(peer)
            .and_then(|p| p.hello.as_ref())
            .map(|h| h.incarnation)
    }

    pub(super) fn is_up(&self, peer: &str) -> bool {
        self.lock().get(peer).is_some_and(|p| p.state == State::Up)
    }

    /// `peer`'s QUIC address, certificate SHA-256 and incarnation from its Hello, and the
    /// cluster address this node dials it at (empty for a gateway that dials us), while it
    /// is Up (for `peer_quic`, which proxies file transfers to it).
    pub(super) fn peer_quic(&self, peer: &str) -> Option<(String, Vec<u8>, u64, String)> {
        let peers = self.lock();
        let p = peers.get(peer).filter(|p| p.state == State::Up)?;
        let h = p.hello.as_ref()?;
        Some((
            h.quic_addr.clone(),
            h.quic_cert_sha256.clone(),
            h.incarnation,
            p.addr.clone(),
        ))
    }

    /// Every peer in the table, whatever its state (a gateway stays until it is forgotten).
    pub(super) fn known_peers(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub(super) fn up_peers(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.state == State::Up)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub(super) fn send(&self, peer: &str, item: Wire) -> Result<(), SendError> {
        let link = {
            let peers = self.lock();
            let p = peers
                .get(peer)
                .ok_or_else(|| SendError::Unknown(peer.to_owned()))?;
            if p.state != State::Up {
                return Err(SendError::Unavailable(peer.to_owned()));
            }
            p.link.clone()
        };
        link.push(item)
    }

    pub(super) async fn call(
        &self,
        peer: &str,
        make: impl FnOnce(u64) -> Wire,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let (corr, rx) = self.pending.register(peer);
        if let Err(e) = self.send(peer, make(corr)) {
            self.pending.forget(corr);
            return Err(match e {
                SendError::Unavailable(p) | SendError::Unknown(p) => CallError::Unavailable(p),
                SendError::Overloaded(p) => CallError::Overloaded(p),
                SendError::TooLarge { bytes, .. } => CallError::TooLarge(bytes),
            });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CallError::PeerLost(peer.to_owned())),
            Err(_) => {
                self.pending.forget(corr);
                Err(CallError::Timeout(peer.to_owned()))
            }
        }
    }

    pub(super) fn has_majority(&self) -> bool {
        let Some(placement) = self.placement.get() else {
            return false;
        };
        let core = placement.core.len();
        if core == 0 {
            return false;
        }
        let me = usize::from(placement.is_core(&self.name));
        let up = self
            .lock()
            .iter()
            .filter(|(n, p)| p.state == State::Up && placement.is_core(n))
            .count();
        (up + me) * 2 > core
    }

    /// Casts a one-item batch straight to a router (Hello, Ping, Pong, Refuse): outside the
    /// link, so it is never queued behind our own backlog.
    fn direct(&self, router: &ActorRef<RouterMsg>, item: Wire) {
        let _ = router.cast(RouterMsg::Wire(Batch {
            from: self.name.clone(),
            incarnation: self.incarnation,
            seq: 0,
            items: vec![item],
        }));
    }

    /// Pings `p` (Up): the heartbeat, an acknowledgement, and a sample of this node's clock
    /// for the peer's [`ClockOffset`]. Also sent the moment `p` comes Up, before any work
    /// is queued for it: the peer maps a forwarded call's deadline onto its clock with
    /// these samples, and a call that arrived before the first one would count its
    /// deadline from its arrival, so one that waited past it (the peer frozen with the
    /// call unread in its socket) would still be executed. A peer that freezes before it
    /// reads this first Ping still over-estimates the time left (every sample it has then
    /// includes the freeze); its caller was told the outcome is open, never "not done".
    fn ping(&self, p: &mut Peer) {
        if let Some(router) = &p.router {
            p.ping_seq += 1;
            let ping = Wire::Ping {
                seq: p.ping_seq,
                sent_ns: self.now_ns(),
                acked_batch: p.acked_for_its_process(),
            };
            self.direct(router, ping);
        }
    }

    fn on_event(self: &Arc<Self>, event: Event) {
        match event {
            Event::Dialed(peer, result) => {
                let mut peers = self.lock();
                if let Some(p) = peers.get_mut(&peer) {
                    p.dialing = false;
                    if let Err(e) = result {
                        tracing::debug!(peer = %peer, addr = %p.addr, error = %e, "cluster: dial failed");
                    }
                }
            }
            Event::Authenticated(ses) => {
                let Some(name) = peer_name(&ses) else { return };
                let mut peers = self.lock();
                if !peers.contains_key(&name) {
                    // A gateway (or a core member a gateway learns of): known from now on.
                    let peer = self.new_peer(&name, String::new(), false);
                    peers.insert(name.clone(), peer);
                }
                if let Some(p) = peers.get_mut(&name) {
                    p.sessions.insert(ses.node_id, ses.actor.clone());
                    p.dialing = false;
                }
            }
            Event::Disconnected(ses) => {
                let name = peer_name(&ses);
                match self.closed(&ses) {
                    Closed::Ours => {
                        tracing::debug!(peer = ?name, addr = %ses.peer_addr, "cluster: a session this node stopped closed");
                    }
                    Closed::Lost => {}
                    Closed::Duplicate => {
                        tracing::debug!(peer = ?name, addr = %ses.peer_addr, "cluster: duplicate connection closed");
                    }
                    Closed::Unauthenticated => {
                        metrics::counter!("convoke_cluster_refused_total", "reason" => "unauthenticated")
                            .increment(1);
                        // Also seen once when a peer thaws or restarts mid-handshake: the
                        // words say so, so that nobody chases a cookie that is right.
                        tracing::warn!(
                            peer = name.as_deref().unwrap_or("?"),
                            addr = %ses.peer_addr,
                            "cluster: a connection closed before it authenticated: a different \
                             cluster.cookie or not a convoke node if it repeats; once, after a \
                             peer froze, restarted or dialed at the same moment, it is harmless"
                        );
                        self.unauthenticated(name.as_deref(), &ses.peer_addr, !ses.is_server);
                    }
                }
            }
        }
    }

    /// What a closed session was (and, for a live peer's last session, declares it Down).
    fn closed(&self, ses: &NodeServerSessionInformation) -> Closed {
        if self
            .stopped_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ses.node_id)
        {
            return Closed::Ours;
        }
        let name = peer_name(ses);
        let mut peers = self.lock();
        // A second connection to a peer we are connected to: ractor_cluster kept the
        // other one (its session election).
        let duplicate = name.as_ref().and_then(|n| peers.get(n)).is_some_and(|p| {
            p.state == State::Up || p.sessions.keys().any(|id| *id != ses.node_id)
        });
        let known = match name.as_ref().and_then(|n| peers.get_mut(n)) {
            Some(p) => p.sessions.remove(&ses.node_id).is_some().then_some(p),
            None => None,
        };
        match known {
            Some(p) => {
                if p.sessions.is_empty() && p.state == State::Up {
                    let n = name.unwrap_or_default();
                    self.down(&n, p, "disconnected");
                }
                Closed::Lost
            }
            None if duplicate => Closed::Duplicate,
            None => Closed::Unauthenticated,
        }
    }

    /// Says in `/cluster` why a member is not Up when a connection with it (by the name it
    /// claimed, or the address this node dialed) closed before it authenticated: its
    /// `reason` only, and only while it has no session, no accepted Hello and no other
    /// reason to show (a refusal). The claimed name is unproven (no cookie), so it never
    /// touches a peer that is Up or on its way up, nor its state.
    ///
    /// A connection this node `dialed` that got as far as the other end's challenge (which
    /// names it: `name`) and was then closed before it authenticated also counts as that
    /// core member refusing this node for its cookie (`refusal::FATAL` "cookie"): the
    /// digests did not match, so a node whose cookie differs from a majority's stops with
    /// exit code 2 instead of serving alone. Nothing else counts: a connection closed
    /// before the challenge (a peer that froze, died or reset it, lost a simultaneous
    /// connect, or refused this node's TLS certificate), an incoming connection (its name
    /// is the dialer's unproven claim: anyone reaching the port could claim every member's
    /// name), or any close once a core member has accepted this process (the cookie does
    /// not change while it runs, so it is right).
    fn unauthenticated(&self, name: Option<&str>, addr: &str, dialed: bool) {
        let mut peers = self.lock();
        let named = name.filter(|n| peers.contains_key(*n)).map(str::to_owned);
        let found = named.clone().or_else(|| {
            peers
                .iter()
                .find(|(_, p)| !p.addr.is_empty() && p.addr == addr)
                .map(|(n, _)| n.clone())
        });
        let Some(found) = found else { return };
        let counts = dialed
            && named.is_some()
            && self.placement.get().is_some_and(|pl| pl.is_core(&found))
            && !self.accepted.load(std::sync::atomic::Ordering::Relaxed);
        let Some(p) = peers.get_mut(&found).filter(|p| {
            matches!(p.state, State::Connecting | State::Down)
                && p.sessions.is_empty()
                && p.hello.is_none()
        }) else {
            return;
        };
        p.reason = Some(
            "unauthenticated: a connection closed before it authenticated: a different \
             cluster.cookie, or not a convoke node"
                .to_owned(),
        );
        if counts {
            p.refused_us = Some(RefusedUs {
                code: "cookie".to_owned(),
                words: format!(
                    "{found} ({addr}) closed this node's connection after its challenge, \
                     before it authenticated: this node's cluster.cookie differs from \
                     {found}'s"
                ),
                at: Instant::now(),
            });
            self.judge_refusals(&peers, Instant::now());
        }
    }

    /// Stops a session of a peer, remembering that this node closed it.
    fn stop_session(&self, id: u64, s: &ActorRef<NodeSessionMessage>, why: String) {
        {
            let mut stopped = self
                .stopped_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if stopped.len() >= 4096 {
                // Disconnected events that never came: forget them rather than grow.
                stopped.clear();
            }
            stopped.insert(id);
        }
        s.stop(Some(why));
    }

    /// One heartbeat.
    fn tick(self: &Arc<Self>, now: Instant, paused: bool, tx: &mpsc::UnboundedSender<Event>) {
        let routers = routers_in_pg();
        let timeout = Duration::from_millis(self.cfg.peer_timeout_ms);
        let mut dials = Vec::new();
        let mut came_up = Vec::new();
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        let forgotten: Vec<String>;
        let hook;
        {
            let mut peers = self.lock();
            // Read under the table's lock, like `set_inbound` writes it: a peer that comes
            // Up here hears `peer_up` from this tick or from `set_inbound`, exactly once.
            hook = self.inbound.get().cloned();
            let names: Vec<String> = peers.keys().cloned().collect();
            for name in names {
                let Some(p) = peers.get_mut(&name) else {
                    continue;
                };
                if paused {
                    p.last_pong = now;
                }
                match routers
                    .get(&name)
                    .and_then(|cells| pick(cells, p.router_id))
                {
                    Some(cell) if p.router_id != Some(cell.get_id()) => {
                        // A new router proxy: a new session, a full resync.
                        p.router_id = Some(cell.get_id());
                        p.router = Some(ActorRef::from(cell.clone()));
                        p.hello_sent = false;
                        if p.state == State::Up {
                            self.down(&name, p, "new_session");
                        }
                    }
                    None if p.router.is_some() => {
                        p.router = None;
                        p.router_id = None;
                        p.hello_sent = false;
                        if p.state == State::Up {
                            self.down(&name, p, "disconnected");
                        }
                    }
                    _ => {}
                }
                if p.router.is_some() {
                    self.say_hello(p);
                    if promote(&name, p, now) {
                        came_up.push(name.clone());
                    }
                }
                if p.state == State::Up {
                    if now.duration_since(p.last_pong) > timeout {
                        self.down(&name, p, "heartbeat_timeout");
                    } else if p.link.queued_bytes() > self.cfg.peer_queue_bytes {
                        let since = *p.over_since.get_or_insert(now);
                        if now.duration_since(since) > timeout {
                            self.down(&name, p, "overloaded");
                        }
                    } else {
                        p.over_since = None;
                    }
                }
                if p.state == State::Up {
                    self.ping(p);
                }
                let sessionless = p.sessions.is_empty() && p.router.is_none();
                if p.state != State::Up
                    && sessionless
                    && !p.dialing
                    && !p.addr.is_empty()
                    && now >= p.next_dial
                {
                    p.dialing = true;
                    let max = Duration::from_millis(self.cfg.reconnect_max_ms);
                    let jitter = rand::random_range(0.5..1.0);
                    p.next_dial = now + p.backoff.mul_f64(jitter);
                    p.backoff = (p.backoff * 2).min(max);
                    dials.push((name.clone(), p.addr.clone()));
                }
                if p.state == State::Refused && now >= p.next_dial && sessionless {
                    // Try again later: the operator may have fixed the setting.
                    p.state = State::Connecting;
                }
                *counts.entry(p.state.as_str()).or_default() += 1;
                metrics::gauge!("convoke_cluster_peer_queue_bytes", "peer" => name.clone())
                    .set(p.link.queued_bytes() as f64);
            }
            let forget_after =
                Duration::from_millis(self.cfg.reconnect_max_ms) * GATEWAY_FORGET_AFTER;
            let stale: Vec<String> = peers
                .iter()
                .filter(|(_, p)| {
                    !p.core
                        && p.state != State::Up
                        && p.sessions.is_empty()
                        && p.idle_since
                            .is_some_and(|t| now.saturating_duration_since(t) > forget_after)
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in &stale {
                // Dropping the entry drops its link: the link's task ends.
                peers.remove(name);
                self.ordinals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|_, (n, ..)| n != name);
                tracing::info!(peer = %name, "cluster: forgot a gateway not up for {forget_after:?}");
            }
            forgotten = stale;
            let unavailable = match self.placement.get() {
                Some(placement) => placement
                    .owners()
                    .filter(|&owner| {
                        owner != self.name && peers.get(owner).is_none_or(|p| p.state != State::Up)
                    })
                    .count(),
                None => self.cfg.shards as usize,
            };
            metrics::gauge!("convoke_cluster_shards_unavailable").set(unavailable as f64);
        }
        *counts.entry("up").or_default() += 1; // this node
        for state in ["connecting", "up", "down", "refused"] {
            let n = counts.get(state).copied().unwrap_or(0);
            metrics::gauge!("convoke_cluster_peers", "state" => state).set(n as f64);
        }
        metrics::gauge!("convoke_cluster_members")
            .set(counts.get("up").copied().unwrap_or(1) as f64);
        if let Some(server) = self.server.get() {
            for (name, addr) in dials {
                let name_of_peer = name.clone();
                let server = server.clone();
                let tx = tx.clone();
                let tls = self.tls.clone();
                tokio::spawn(async move {
                    let result = match tls {
                        None => ractor_cluster::client_connect(&server, addr.as_str()).await,
                        Some(tls) => match super::tls::server_name(&addr) {
                            Some(name) => {
                                ractor_cluster::client_connect_enc(
                                    &server,
                                    addr.as_str(),
                                    tls.connector,
                                    name,
                                )
                                .await
                            }
                            None => {
                                let _ = tx.send(Event::Dialed(
                                    name_of_peer,
                                    Err(format!(
                                        "{addr}: no host name to check its certificate against"
                                    )),
                                ));
                                return;
                            }
                        },
                    }
                    .map_err(|e| e.to_string());
                    let _ = tx.send(Event::Dialed(name, result));
                });
            }
        }
        if let Some(hook) = hook {
            for name in came_up {
                hook.peer_up(&name);
            }
            for name in forgotten {
                hook.peer_removed(&name);
            }
        }
    }

    /// Sends this node's Hello to `p`'s router once per session, and only once the inbound
    /// hook is installed: a peer that accepted our Hello sees us Up and sends work, which a
    /// node still being built (no hook yet) would drop; and a peer cannot come Up here
    /// before our Hello went out, so none is Up without the hook hearing it.
    fn say_hello(&self, p: &mut Peer) {
        if p.hello_sent || p.state == State::Refused || self.inbound.get().is_none() {
            return;
        }
        if let Some(router) = &p.router {
            self.direct(router, Wire::Hello(self.hello.clone()));
            p.hello_sent = true;
        }
    }

    /// Installs the inbound hook (the first call wins) and hands it every peer already Up
    /// (`peer_up`: it asks for their presence), under the peer table's lock so that a
    /// peer coming Up meanwhile is announced exactly once, here or by its promotion.
    pub(super) fn set_inbound(&self, hook: Arc<dyn super::Inbound>) -> bool {
        let up: Vec<String> = {
            let peers = self.lock();
            if self.inbound.set(hook.clone()).is_err() {
                return false;
            }
            peers
                .iter()
                .filter(|(_, p)| p.state == State::Up)
                .map(|(n, _)| n.clone())
                .collect()
        };
        for name in up {
            hook.peer_up(&name);
        }
        true
    }

    /// Declares `p` Down (the caller holds the peer table).
    fn down(&self, name: &str, p: &mut Peer, reason: &'static str) {
        p.state = State::Down;
        p.idle_since = Some(Instant::now());
        p.downs += 1;
        p.reason = Some(reason.to_owned());
        p.hello = None;
        p.hello_sent = false;
        p.router = None;
        p.router_id = None;
        p.rtt = None;
        // A peer back from a freeze or a suspended host keeps its incarnation, not its
        // clock offset: learnt again from its next Pings.
        p.clock_offset = None;
        p.next_dial = Instant::now() + BACKOFF_START;
        for (id, s) in p.sessions.drain() {
            self.stop_session(id, &s, format!("convoke: peer {name} down ({reason})"));
        }
        p.link.reset();
        let failed = self.pending.fail_peer(name);
        metrics::counter!("convoke_cluster_peer_down_total", "peer" => name.to_owned(), "reason" => reason)
            .increment(1);
        tracing::warn!(peer = %name, reason, failed_calls = failed, "cluster: peer down");
        if let Some(hook) = self.inbound.get() {
            hook.peer_down(name);
        }
    }

    /// Refuses `from` (the caller holds the peer table): counted, logged, told, cut off.
    ///
    /// The refused node decides from the Refuse whether to stop (`refusal`), so it must
    /// arrive: it goes to the peer's router even before a tick found it, and the sessions
    /// close a heartbeat later (a stop overtakes messages still queued in the session).
    fn refuse(&self, from: &str, p: &mut Peer, reason: &'static str, detail: String) {
        metrics::counter!("convoke_cluster_refused_total", "reason" => reason).increment(1);
        tracing::warn!(peer = %from, reason, "cluster: refused peer: {detail}");
        if let Some(router) = &self.router_of(from, p) {
            self.direct(router, self.refusal_of(reason, &detail));
        }
        let was_up = p.state == State::Up;
        if was_up {
            self.down(from, p, "refused");
        }
        p.state = State::Refused;
        p.idle_since.get_or_insert_with(Instant::now);
        p.reason = Some(format!("{reason}: {detail}"));
        p.next_dial = Instant::now() + Duration::from_millis(self.cfg.reconnect_max_ms);
        for (id, s) in p.sessions.drain() {
            self.stop_session_soon(id, s, format!("convoke: refused ({reason})"));
        }
    }

    /// The Refuse this node sends for `reason`.
    fn refusal_of(&self, reason: &str, detail: &str) -> Wire {
        Wire::Refuse {
            reason: format!("refused by {}: {detail}", self.name),
            code: reason.to_owned(),
        }
    }

    /// [`Inner::stop_session`] a heartbeat from now, so that a Refuse just cast to the
    /// peer leaves first; at once outside a runtime.
    fn stop_session_soon(&self, id: u64, s: ActorRef<NodeSessionMessage>, why: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.stop_session(id, &s, why);
        };
        self.stopped_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        let grace = Duration::from_millis(self.cfg.heartbeat_ms);
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            s.stop(Some(why));
        });
    }

    /// How long a refusal heard from a peer stands ([`REFUSAL_STANDS_FOR`]).
    fn refusal_stands(&self) -> Duration {
        Duration::from_millis(self.cfg.reconnect_max_ms) * REFUSAL_STANDS_FOR
            + Duration::from_millis(self.cfg.peer_timeout_ms)
    }

    /// Peers' refusals heard that still stand at `now`: stops this node if they count
    /// (`refusal::verdict`). The caller holds the peer table.
    fn judge_refusals(&self, peers: &BTreeMap<String, Peer>, now: Instant) {
        let Some(placement) = self.placement.get() else {
            // A gateway that accepted no core member's Hello knows no core member: it
            // reaches no group either (every request answers 500).
            return;
        };
        let stands = self.refusal_stands();
        let heard: Vec<super::refusal::Heard<'_>> = peers
            .iter()
            .filter_map(|(name, p)| {
                let r = p.refused_us.as_ref()?;
                (now.saturating_duration_since(r.at) <= stands).then_some((
                    name.as_str(),
                    r.code.as_str(),
                    r.words.as_str(),
                ))
            })
            .collect();
        let accepted = self.accepted.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(words) = super::refusal::verdict(&self.name, &placement.core, &heard, accepted)
        {
            if self.refusal.borrow().is_none() {
                tracing::error!(
                    "cluster: this node was refused by the cluster and stops (exit code 2): \
                     {words}"
                );
                self.refusal.send_replace(Some(words));
            }
        }
    }

    /// A batch from a peer, on the router, in arrival order.
    pub(super) fn on_batch(self: &Arc<Self>, batch: Batch) {
        let from = batch.from.clone();
        let mut work = Vec::new();
        let mut learned = Vec::new();
        let mut evicted = None;
        let mut judge = false;
        let mut came_up = false;
        let hook;
        {
            let mut peers = self.lock();
            hook = self.inbound.get().cloned();
            if !peers.contains_key(&from)
                && matches!(batch.items.first(), Some(Wire::Hello(h)) if h.role == "gateway")
                && check_name(&from).is_ok()
            {
                // A gateway whose Hello overtook the event of its session.
                let peer = self.new_peer(&from, String::new(), false);
                peers.insert(from.clone(), peer);
            }
            let Some(p) = peers.get_mut(&from) else {
                metrics::counter!("convoke_cluster_refused_total", "reason" => "unknown_node")
                    .increment(1);
                tracing::warn!(peer = %from, "cluster: a batch from a node that is not a member; dropped");
                return;
            };
            let accepted = |p: &Peer| {
                p.hello
                    .as_ref()
                    .is_some_and(|h| h.incarnation == batch.incarnation)
            };
            for item in batch.items {
                match item {
                    Wire::Hello(h) => {
                        // A gateway learns the core members from a core member's Hello, and
                        // only from one it accepted (not from a refused impostor's).
                        let members = (self.role == ClusterRole::Gateway && h.role == "core")
                            .then(|| h.members.clone());
                        let incarnation = h.incarnation;
                        let ordinal = h.ordinal;
                        if let Some(gateway) = self.on_hello(&from, p, h) {
                            evicted = Some((gateway, ordinal));
                        }
                        let accepted_now = p.state != State::Refused
                            && p.hello
                                .as_ref()
                                .is_some_and(|h| h.incarnation == incarnation);
                        if let Some(members) = members.filter(|_| accepted_now) {
                            learned.extend(members.iter().filter_map(|m| Member::parse(m).ok()));
                        }
                    }
                    Wire::Refuse { reason, code } => {
                        tracing::warn!(peer = %from, code, "cluster: this node was refused: {reason}");
                        p.refused_us = Some(RefusedUs {
                            code,
                            words: reason,
                            at: Instant::now(),
                        });
                        judge = true;
                    }
                    Wire::Ping {
                        seq,
                        sent_ns,
                        acked_batch,
                    } if accepted(p) => {
                        // It pings only peers whose Hello it accepted: it accepts this node.
                        p.refused_us = None;
                        if self.placement.get().is_some_and(|pl| pl.is_core(&from)) {
                            self.accepted
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        p.link.acked(acked_batch);
                        let sample = i128::from(self.now_ns()) - i128::from(sent_ns);
                        match &mut p.clock_offset {
                            Some((inc, clock)) if *inc == batch.incarnation => clock.push(sample),
                            _ => {
                                let mut clock = ClockOffset::default();
                                clock.push(sample);
                                p.clock_offset = Some((batch.incarnation, clock));
                            }
                        }
                        if let Some(router) = &p.router {
                            let pong = Wire::Pong {
                                seq,
                                sent_ns,
                                acked_batch: p.acked_for_its_process(),
                            };
                            self.direct(router, pong);
                        }
                    }
                    Wire::Pong {
                        sent_ns,
                        acked_batch,
                        ..
                    } if accepted(p) => {
                        p.link.acked(acked_batch);
                        p.last_pong = Instant::now();
                        let rtt = Duration::from_nanos(self.now_ns().saturating_sub(sent_ns));
                        p.rtt = Some(rtt);
                        metrics::histogram!("convoke_cluster_peer_rtt_seconds", "peer" => from.clone())
                            .record(rtt.as_secs_f64());
                    }
                    Wire::Reply {
                        caller,
                        corr,
                        payload,
                    } if accepted(p) => {
                        if caller == self.incarnation {
                            self.pending.complete(corr, &from, payload);
                        } else {
                            // An answer to a call of this node's previous process (the peer
                            // was still working on it when we restarted): its corr may have
                            // been reused by a new call, which it must not complete.
                            metrics::counter!("convoke_cluster_stale_calls_total", "side" => "reply")
                                .increment(1);
                            tracing::debug!(peer = %from, corr, caller, "cluster: a reply for a previous incarnation of this node; dropped");
                        }
                    }
                    // A peer whose Hello we accepted after sending ours is Up now, not at
                    // our next tick: it may already see us Up and have sent work, which
                    // would otherwise be dropped and leave its caller waiting for the
                    // request timeout.
                    item if accepted(p)
                        && (p.state == State::Up || {
                            let up = promote(&from, p, Instant::now());
                            if up {
                                came_up = true;
                                self.ping(p);
                            }
                            up
                        }) =>
                    {
                        work.push(self.time_left(p, batch.incarnation, item))
                    }
                    item => {
                        tracing::debug!(peer = %from, kind = item.kind(), "cluster: item from a peer that is not Up; dropped");
                    }
                }
            }
            if batch.seq > 0 && accepted(p) {
                if p.recv_acked.0 != batch.incarnation {
                    p.recv_acked = (batch.incarnation, 0);
                }
                p.recv_acked.1 = p.recv_acked.1.max(batch.seq);
            }
            if judge {
                self.judge_refusals(&peers, Instant::now());
            }
            if let Some((gateway, ordinal)) = evicted {
                if let Some(g) = peers.get_mut(&gateway) {
                    self.refuse(
                        &gateway,
                        g,
                        "ordinal",
                        format!(
                            "it has cluster.ordinal {ordinal}, which core member {from} has \
                             (a core member's ordinal is never a gateway's)"
                        ),
                    );
                }
            }
            if !learned.is_empty() {
                let core = learned.iter().map(|m| m.name.clone()).collect();
                if self
                    .placement
                    .set(Placement::new(core, self.cfg.shards))
                    .is_ok()
                {
                    tracing::info!(
                        members = learned.len(),
                        "cluster: learnt the core members and the shard table"
                    );
                }
                self.learn(&mut peers, learned);
            }
            if came_up {
                // Up now, not at the next tick: /cluster and the gauge agree.
                let up = peers.values().filter(|p| p.state == State::Up).count();
                metrics::gauge!("convoke_cluster_members").set((up + 1) as f64);
            }
        }
        if came_up {
            if let Some(hook) = &hook {
                hook.peer_up(&from);
            }
        }
        if work.is_empty() {
            return;
        }
        match hook {
            Some(hook) => {
                for item in work {
                    hook.item(&from, item);
                }
            }
            None => {
                tracing::debug!(peer = %from, items = work.len(), "cluster: no inbound hook installed; items dropped");
            }
        }
    }

    /// A gateway learnt the core members from a Hello: dial them, and stop dialing seeds
    /// that turned out to be one of them.
    fn learn(self: &Arc<Self>, peers: &mut BTreeMap<String, Peer>, members: Vec<Member>) {
        for m in members.iter().filter(|m| m.name != self.name) {
            match peers.get_mut(&m.name) {
                Some(p) => {
                    p.core = true;
                    if p.addr.is_empty() {
                        p.addr = m.addr();
                    }
                }
                None => {
                    let peer = self.new_peer(&m.name, m.addr(), true);
                    peers.insert(m.name.clone(), peer);
                }
            }
        }
        peers.retain(|name, p| {
            !(name.starts_with('?') && members.iter().any(|m| m.addr() == p.addr))
        });
    }

    /// Checks `from`'s Hello and accepts it (`p.hello`) or refuses `from`. Returns the
    /// gateway that held the ordinal this core member claimed: the caller refuses it.
    fn on_hello(&self, from: &str, p: &mut Peer, h: Hello) -> Option<String> {
        let ours = &self.hello;
        if h.name != from {
            return self.refuse_hello(from, p, "name", format!("its Hello names {:?}", h.name));
        }
        if h.proto != PROTO {
            return self.refuse_mismatch(
                from,
                p,
                "proto",
                format!("it speaks protocol {}, this node {PROTO}", h.proto),
            );
        }
        if h.name == self.name {
            return self.refuse_hello(
                from,
                p,
                "duplicate_name",
                format!("it claims this node's own name {:?}", h.name),
            );
        }
        if h.secret_mac != ours.secret_mac {
            return self.refuse_mismatch(from, p, "app_secret", "its app secret (auth.secret) differs from this node's; every node needs the same one".to_owned());
        }
        if h.shards != ours.shards {
            return self.refuse_mismatch(
                from,
                p,
                "shards",
                format!(
                    "its cluster.shards is {}, this node's {}",
                    h.shards, ours.shards
                ),
            );
        }
        if !h.members_hash.is_empty()
            && !ours.members_hash.is_empty()
            && h.members_hash != ours.members_hash
        {
            return self.refuse_mismatch(
                from,
                p,
                "members",
                format!(
                    "its cluster.members is {:?}, this node's {:?}",
                    h.members, ours.members
                ),
            );
        }
        let core = h.role == "core";
        if let Some(placement) = self.placement.get() {
            if core != placement.is_core(from) {
                return self.refuse_hello(
                    from,
                    p,
                    "members",
                    format!(
                        "it is a {} node, and cluster.members {} it",
                        h.role,
                        if core { "does not list" } else { "lists" }
                    ),
                );
            }
        }
        if h.ordinal == self.ordinal {
            return self.refuse_hello(
                from,
                p,
                "ordinal",
                format!("it has this node's cluster.ordinal {}", h.ordinal),
            );
        }
        // A core member's claim on an ordinal wins over a gateway's, whichever came first:
        // the core member's ordinal is pinned by its data dir and carried by the ids it
        // minted, a gateway owns nothing. The gateway holding it is refused below, once
        // this Hello is accepted.
        let mut evict = None;
        if let Some((name, uid, holder_core)) = self.ordinal_holder(h.ordinal, from) {
            if holder_core || !core {
                return self.refuse_hello(
                    from,
                    p,
                    "ordinal",
                    format!(
                        "it has cluster.ordinal {}, which {} {name} (node_uid {uid}) has; \
                         every node needs its own{}",
                        h.ordinal,
                        if holder_core { "core member" } else { "node" },
                        if holder_core && !core {
                            ", and a core member's ordinal is never a gateway's"
                        } else {
                            ""
                        }
                    ),
                );
            }
            evict = Some(name);
        }
        if let Some(old) = &p.hello {
            if old.node_uid != h.node_uid && p.state == State::Up {
                // A second live process under a name that is Up: refuse the newcomer only
                // (close every session of that name but the one the Up peer uses).
                metrics::counter!("convoke_cluster_refused_total", "reason" => "duplicate_name")
                    .increment(1);
                tracing::warn!(
                    peer = %from,
                    up_node_uid = %old.node_uid,
                    newcomer_node_uid = %h.node_uid,
                    "cluster: refused a second process claiming the name of a node that is up \
                     (another data dir; cluster.name must be unique)"
                );
                let keep = p.router_id.and_then(session_of);
                let detail = format!(
                    "node {from} is up here with another data dir (node_uid {}, this process \
                     {}); cluster.name must be unique: stop this process",
                    old.node_uid, h.node_uid
                );
                let newcomer: Vec<ActorRef<RouterMsg>> = routers_in_pg()
                    .remove(from)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|cell| session_of(cell.get_id()) != keep)
                    .map(ActorRef::from)
                    .collect();
                for router in &newcomer {
                    self.direct(router, self.refusal_of("duplicate_name", &detail));
                }
                let stop: Vec<u64> = p
                    .sessions
                    .keys()
                    .copied()
                    .filter(|id| Some(*id) != keep)
                    .collect();
                for id in stop {
                    if let Some(s) = p.sessions.remove(&id) {
                        self.stop_session_soon(id, s, "convoke: duplicate node name".to_owned());
                    }
                }
                return None;
            }
            if old.incarnation != h.incarnation {
                // It restarted: everything it had in flight is gone.
                self.pending.fail_peer(from);
                p.link.reset();
            }
        }
        if core {
            if let Err(detail) = self.remember_uid(from, &h.node_uid, h.ordinal) {
                return self.refuse_hello(from, p, "node_uid", detail);
            }
        }
        if p.state == State::Refused {
            p.state = State::Connecting;
        }
        p.core = core;
        {
            let mut ordinals = self.ordinals.lock().unwrap_or_else(|p| p.into_inner());
            ordinals.retain(|_, (name, ..)| name != from);
            ordinals.insert(h.ordinal, (from.to_owned(), h.node_uid.clone(), core));
        }
        p.hello = Some(h);
        evict
    }

    /// [`Inner::refuse`], from `on_hello`: nothing to evict.
    fn refuse_hello(
        &self,
        from: &str,
        p: &mut Peer,
        reason: &'static str,
        detail: String,
    ) -> Option<String> {
        self.refuse(from, p, reason, detail);
        None
    }

    /// [`Inner::refuse_hello`] for a setting every node must share and compares alike
    /// (protocol, app secret, shard count, member list), after sending this node's own
    /// Hello if it has not gone out in this session: the peer then sees the same mismatch
    /// and refuses this node too. Without it, the refusal was one-sided whenever the peer's
    /// Hello arrived first (a node starting into a running cluster hears the others' Hellos
    /// before its own goes out, and a refused peer is never sent one): the running nodes
    /// never judged the odd node out, only heard its refusals, showed it down with no
    /// reason, and no majority ever refused it, so it kept serving.
    fn refuse_mismatch(
        &self,
        from: &str,
        p: &mut Peer,
        reason: &'static str,
        detail: String,
    ) -> Option<String> {
        if !p.hello_sent {
            if let Some(router) = self.router_of(from, p) {
                self.direct(&router, Wire::Hello(self.hello.clone()));
                p.hello_sent = true;
            }
        }
        self.refuse_hello(from, p, reason, detail)
    }

    /// `p`'s router proxy: the one a tick found, else one in pg (a Hello can arrive before
    /// the tick that finds its sender's router).
    fn router_of(&self, from: &str, p: &Peer) -> Option<ActorRef<RouterMsg>> {
        p.router.clone().or_else(|| {
            routers_in_pg()
                .get(from)
                .and_then(|cells| pick(cells, None))
                .map(|cell| ActorRef::from(cell.clone()))
        })
    }

    /// Who else holds `ordinal`: (name, node_uid, whether a core member). A core member
    /// remembered on disk holds it even while it is not Up (or not met yet by this
    /// process); else a peer accepted by this process.
    fn ordinal_holder(&self, ordinal: u32, from: &str) -> Option<(String, String, bool)> {
        let remembered = self
            .peer_uids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(name, k)| name.as_str() != from && k.ordinal == Some(ordinal))
            .map(|(name, k)| (name.clone(), k.node_uid.clone(), true));
        remembered.or_else(|| {
            self.ordinals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ordinal)
                .filter(|(name, ..)| name != from)
                .cloned()
        })
    }

    /// Rewrites a call's `remaining_ms` to the time left now, on this node's clock: its
    /// `sent_ns` mapped through the offset learnt from the sender's recent Pings (time
    /// queued, in transit, or frozen on either side counts); until one Ping came in this
    /// session, counted from now.
    fn time_left(&self, p: &Peer, incarnation: u64, mut item: Wire) -> Wire {
        if let Wire::Forward {
            remaining_ms,
            sent_ns,
            ..
        }
        | Wire::Create {
            remaining_ms,
            sent_ns,
            ..
        }
        | Wire::Query {
            remaining_ms,
            sent_ns,
            ..
        } = &mut item
        {
            let offset = p
                .clock_offset
                .as_ref()
                .filter(|(inc, _)| *inc == incarnation)
                .and_then(|(_, clock)| clock.offset());
            if let Some(offset) = offset {
                let deadline =
                    i128::from(*sent_ns) + offset + i128::from(*remaining_ms) * 1_000_000;
                let left = (deadline - i128::from(self.now_ns())).max(0) / 1_000_000;
                *remaining_ms = u64::try_from(left).unwrap_or(u64::MAX).min(*remaining_ms);
            }
        }
        item
    }

    /// Checks core peer `from`'s data dir against the one remembered for it, or remembers
    /// it, with its ordinal, at the first accepted Hello (see `identity::peer_uids_path`).
    fn remember_uid(&self, from: &str, uid: &str, ordinal: u32) -> Result<(), String> {
        let mut uids = self.peer_uids.lock().unwrap_or_else(|p| p.into_inner());
        match uids.get(from).map(|k| (k.node_uid.as_str(), k.ordinal)) {
            Some((known, Some(o))) if known == uid && o == ordinal => Ok(()),
            Some((known, _)) if known != uid => Err(format!(
                "node {from} (cluster.name = {from:?}) runs on another data dir than the one \
                 this node first met it with (node_uid {known}, now {uid}): a copy of its \
                 config on a new or different server.data_dir would take its shards without \
                 its data. Start {from} on its own data dir; to replace it deliberately, \
                 delete {} on every other node and restart them",
                self.peer_uids_path.display()
            )),
            _ => {
                // First met, or remembered by a file that had no ordinals yet.
                uids.insert(
                    from.to_owned(),
                    identity::KnownPeer {
                        node_uid: uid.to_owned(),
                        ordinal: Some(ordinal),
                    },
                );
                if let Err(e) = identity::save_peer_uids(&self.peer_uids_path, &uids) {
                    // Still accepted: this process remembers it; the next may not.
                    tracing::error!(file = %self.peer_uids_path.display(), error = %e, "cluster: cannot remember a peer's data dir");
                } else {
                    tracing::info!(peer = %from, node_uid = %uid, ordinal, file = %self.peer_uids_path.display(), "cluster: remembered a peer's data dir and ordinal (delete this file on every node to replace a node deliberately)");
                }
                Ok(())
            }
        }
    }

    pub(super) fn status(&self) -> serde_json::Value {
        use serde_json::json;
        let peers = self.lock();
        let mut members = vec![json!({
            "name": self.name,
            "ordinal": self.ordinal,
            "role": self.role.as_str(),
            "state": "up",
            "self": true,
            "incarnation": self.incarnation.to_string(),
            "node_uid": self.node_uid,
        })];
        for (name, p) in peers.iter().filter(|(n, _)| !n.starts_with('?')) {
            members.push(json!({
                "name": name,
                "ordinal": p.hello.as_ref().map(|h| h.ordinal),
                "role": if p.core { "core" } else { "gateway" },
                "addr": p.addr,
                "state": p.state.as_str(),
                "self": false,
                "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                "incarnation": p.hello.as_ref().map(|h| h.incarnation.to_string()),
                "node_uid": p.hello.as_ref().map(|h| h.node_uid.clone()),
                "quic_addr": p.hello.as_ref().map(|h| h.quic_addr.clone()),
                "queued_bytes": p.link.queued_bytes(),
                "downs": p.downs,
                "reason": p.reason,
            }));
        }
        let mut owned: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
        for owner in self.placement.get().into_iter().flat_map(Placement::owners) {
            let available =
                owner == self.name || peers.get(owner).is_some_and(|p| p.state == State::Up);
            let e = owned.entry(owner).or_insert((0, available));
            e.0 += 1;
        }
        let shards: Vec<_> = owned
            .iter()
            .map(|(owner, (n, available))| json!({"owner": owner, "shards": n, "available": available}))
            .collect();
        let unavailable: usize = owned.values().filter(|(_, a)| !a).map(|(n, _)| n).sum();
        drop(peers);
        json!({
            "node": {
                "name": self.name,
                "ordinal": self.ordinal,
                "role": self.role.as_str(),
                "incarnation": self.incarnation.to_string(),
                "node_uid": self.node_uid,
            },
            "majority": self.has_majority(),
            "members": members,
            "shards": {
                "count": self.cfg.shards,
                "unavailable": unavailable,
                "owners": shards,
            },
            "pending_calls": self.pending.len(),
        })
    }
}

/// The routers of other nodes in pg, by node name.
///
/// Two processes claiming one name both show up here; the caller keeps the router it
/// already talks to (see `pick`), so an impostor cannot take a live peer's place.
/// Makes `p` Up if everything Up needs is there: its router's proxy, our Hello sent to it
/// and its Hello accepted. True if it just came Up.
fn promote(name: &str, p: &mut Peer, now: Instant) -> bool {
    if p.state == State::Up
        || p.state == State::Refused
        || p.router.is_none()
        || !p.hello_sent
        || p.hello.is_none()
    {
        return false;
    }
    p.state = State::Up;
    p.idle_since = None;
    p.last_pong = now;
    p.backoff = BACKOFF_START;
    p.reason = None;
    p.over_since = None;
    tracing::info!(peer = %name, "cluster: peer up");
    true
}

fn routers_in_pg() -> HashMap<String, Vec<ActorCell>> {
    let mut out: HashMap<String, Vec<ActorCell>> = HashMap::new();
    for cell in ractor::pg::get_scoped_members(&SCOPE.to_owned(), &GROUP.to_owned()) {
        if cell.get_id().is_local() {
            continue;
        }
        let Some(name) = cell
            .get_name()
            .and_then(|n| n.strip_prefix(NAME_PREFIX).map(str::to_owned))
        else {
            continue;
        };
        out.entry(name).or_default().push(cell);
    }
    out
}

/// The router to use among those named alike: the current one while it exists, else the
/// first.
fn pick(cells: &[ActorCell], current: Option<ActorId>) -> Option<&ActorCell> {
    cells
        .iter()
        .find(|c| Some(c.get_id()) == current)
        .or_else(|| cells.first())
}

/// The ractor_cluster node id (session) a remote actor id belongs to.
fn session_of(id: ActorId) -> Option<u64> {
    match id {
        ActorId::Remote { node_id, .. } => Some(node_id),
        ActorId::Local(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    /// A node `n1` whose peer `n2` is Up with a local actor standing in for n2's router.
    async fn node_with_peer(
        queue_limit: u64,
    ) -> (
        Arc<Inner>,
        mpsc::UnboundedReceiver<Batch>,
        ActorRef<RouterMsg>,
    ) {
        node_with_peer_as(ClusterRole::Core, queue_limit).await
    }

    /// [`node_with_peer`] with a role: a gateway `n1` lists no members and has no shard
    /// table until it learns them from a core member's Hello.
    async fn node_with_peer_as(
        role: ClusterRole,
        queue_limit: u64,
    ) -> (
        Arc<Inner>,
        mpsc::UnboundedReceiver<Batch>,
        ActorRef<RouterMsg>,
    ) {
        node_with_peer_among(role, queue_limit, 2).await
    }

    /// [`node_with_peer_as`] in a cluster of `members` core members `n1`..: only `n2` is
    /// in n1's peer table.
    async fn node_with_peer_among(
        role: ClusterRole,
        queue_limit: u64,
        members: usize,
    ) -> (
        Arc<Inner>,
        mpsc::UnboundedReceiver<Batch>,
        ActorRef<RouterMsg>,
    ) {
        let core = role == ClusterRole::Core;
        let names: Vec<String> = (1..=members).map(|i| format!("n{i}")).collect();
        let cfg = ClusterConfig {
            enabled: true,
            role,
            members: if core {
                (1..=members)
                    .map(|i| format!("n{i}@127.0.0.{i}:1"))
                    .collect()
            } else {
                vec![]
            },
            peer_queue_bytes: queue_limit,
            ..ClusterConfig::default()
        };
        let hello = Hello {
            proto: PROTO,
            name: "n1".into(),
            ordinal: 1,
            role: "core".into(),
            node_uid: "u1".into(),
            incarnation: 1,
            shards: cfg.shards,
            members_hash: if core { vec![1] } else { vec![] },
            secret_mac: vec![],
            members: cfg.members.clone(),
            quic_addr: String::new(),
            quic_cert_sha256: Vec::new(),
        };
        let placement = OnceLock::new();
        if core {
            let _ = placement.set(Placement::new(names, cfg.shards));
        }
        let inner = Arc::new(Inner {
            name: "n1".into(),
            ordinal: 1,
            role,
            node_uid: "u1".into(),
            incarnation: 1,
            placement,
            hello: hello.clone(),
            peers: Mutex::new(BTreeMap::new()),
            pending: Pending::default(),
            ordinals: Mutex::default(),
            peer_uids: Mutex::default(),
            peer_uids_path: identity::peer_uids_path(
                &std::env::temp_dir().join(format!("convoke-test-{}", rand::random::<u64>())),
            ),
            stopped_sessions: Mutex::default(),
            inbound: OnceLock::new(),
            accepted: Default::default(),
            refusal: tokio::sync::watch::Sender::new(None),
            epoch: Instant::now(),
            server: OnceLock::new(),
            tls: None,
            cfg,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (sink, _) = Actor::spawn(None, Sink, tx).await.unwrap();
        let mut peer = inner.new_peer("n2", "127.0.0.2:1".into(), true);
        peer.state = State::Up;
        peer.router = Some(sink.clone());
        peer.hello = Some(Hello {
            name: "n2".into(),
            ordinal: 2,
            incarnation: 2,
            ..hello
        });
        inner.lock().insert("n2".into(), peer);
        (inner, rx, sink)
    }

    /// n2 as a peer whose Hello this node accepted but that is not Up yet: Connecting,
    /// with or without our own Hello sent.
    fn n2_connecting(inner: &Inner, hello_sent: bool) {
        let mut peers = inner.lock();
        let p = peers.get_mut("n2").unwrap();
        p.state = State::Connecting;
        p.hello_sent = hello_sent;
    }

    struct Sink;

    impl Actor for Sink {
        type Msg = RouterMsg;
        type State = mpsc::UnboundedSender<Batch>;
        type Arguments = mpsc::UnboundedSender<Batch>;

        async fn pre_start(
            &self,
            _: ActorRef<RouterMsg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ractor::ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _: ActorRef<RouterMsg>,
            msg: RouterMsg,
            tx: &mut Self::State,
        ) -> Result<(), ractor::ActorProcessingErr> {
            if let RouterMsg::Wire(b) = msg {
                let _ = tx.send(b);
            }
            Ok(())
        }
    }

    fn deliver(n: u8) -> Wire {
        Wire::Deliver {
            gid: 1,
            origin_session: 0,
            to: vec!["alice".into()],
            frame: vec![n; 1000],
        }
    }

    #[tokio::test]
    async fn a_link_batches_in_order_and_its_bytes_count_until_acknowledged() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        let link = inner.lock()["n2"].link.clone();
        for n in 0..50u8 {
            inner.send("n2", deliver(n)).unwrap();
        }
        let mut seen = Vec::new();
        let mut seqs = Vec::new();
        while seen.len() < 50 {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((b.from.as_str(), b.incarnation), ("n1", 1));
            seqs.push(b.seq);
            for item in b.items {
                let Wire::Deliver { frame, .. } = item else {
                    panic!("{item:?}")
                };
                seen.push(frame[0]);
            }
        }
        assert_eq!(seen, (0..50).collect::<Vec<u8>>(), "queued order kept");
        assert!(seqs.len() < 50, "items share batches: {seqs:?}");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert!(
            link.queued_bytes() > 50_000,
            "unacknowledged bytes still count"
        );
        link.acked(*seqs.last().unwrap());
        assert_eq!(link.queued_bytes(), 0);
        sink.stop(None);
    }

    #[tokio::test]
    async fn a_full_link_drops_deliveries_but_never_calls_and_a_down_peer_fails_its_calls() {
        let (inner, mut rx, sink) = node_with_peer(65_536).await;
        let mut dropped = 0;
        for n in 0..100u8 {
            if let Err(e) = inner.send("n2", deliver(n)) {
                assert_eq!(e, SendError::Overloaded("n2".into()));
                dropped += 1;
            }
        }
        assert!(dropped >= 30, "only {dropped} dropped");
        // A Forward is never dropped, even over the limit.
        let call = {
            let inner = inner.clone();
            tokio::spawn(async move {
                inner
                    .call(
                        "n2",
                        |corr| Wire::Forward {
                            caller: 1,
                            corr,
                            gid: 7,
                            remaining_ms: 60_000,
                            sent_ns: 0,
                            payload: vec![1],
                        },
                        Duration::from_secs(5),
                    )
                    .await
            })
        };
        let forward = loop {
            let b = rx.recv().await.unwrap();
            if let Some(f) = b.items.into_iter().find(|i| i.kind() == "forward") {
                break f;
            }
        };
        let Wire::Forward { corr, .. } = forward else {
            unreachable!()
        };
        // The peer answers; a reply from another node would not count.
        assert!(!inner.pending.complete(corr, "n3", vec![0]));
        inner.on_batch(Batch {
            from: "n2".into(),
            incarnation: 2,
            seq: 1,
            items: vec![Wire::Reply {
                caller: 1,
                corr,
                payload: vec![42],
            }],
        });
        assert_eq!(call.await.unwrap(), Ok(vec![42]));
        // A call out when the peer goes Down fails at once with "outcome unknown".
        let call = {
            let inner = inner.clone();
            tokio::spawn(async move {
                inner
                    .call(
                        "n2",
                        |corr| Wire::Create {
                            caller: 1,
                            corr,
                            gid: 8,
                            remaining_ms: 60_000,
                            sent_ns: 0,
                            payload: vec![],
                        },
                        Duration::from_secs(30),
                    )
                    .await
            })
        };
        while inner.pending.len() == 0 {
            tokio::task::yield_now().await;
        }
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            inner.down("n2", p, "heartbeat_timeout");
            assert_eq!(p.link.queued_bytes(), 0, "its queue is forgotten");
        }
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(e, CallError::PeerLost("n2".into()));
        assert!(e.to_api_error().message.contains("may or may not"));
        assert_eq!(
            inner.send("n2", deliver(0)),
            Err(SendError::Unavailable("n2".into()))
        );
        sink.stop(None);
    }

    /// Calls are queued past the point where deliveries are dropped, but not without bound:
    /// with more than 2 x `cluster.peer_queue_bytes` unacknowledged, a call is refused at
    /// once (its caller answers 500 retryable, nothing sent), while replies and presence
    /// are still queued. Before, every item but a delivery was queued whatever the size of
    /// the queue (review finding LOW-4).
    #[tokio::test]
    async fn a_link_refuses_calls_over_twice_its_limit_but_never_replies() {
        let (inner, _rx, sink) = node_with_peer(65_536).await;
        let link = inner.lock()["n2"].link.clone();
        let forward = |corr| Wire::Forward {
            caller: 1,
            corr,
            gid: 7,
            remaining_ms: 60_000,
            sent_ns: 0,
            payload: vec![0; 10_000],
        };
        let mut sent = 0;
        let refused = loop {
            match inner.send("n2", forward(sent)) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100, "calls never refused");
        };
        assert_eq!(refused, SendError::Overloaded("n2".into()));
        assert_eq!(sent, 13, "refused past 2 x 65536 bytes, not before");
        assert!(link.queued_bytes() > 65_536 * 2 - 10_100);
        inner
            .send(
                "n2",
                Wire::Reply {
                    caller: 2,
                    corr: 1,
                    payload: vec![0; 10_000],
                },
            )
            .unwrap();
        inner
            .send(
                "n2",
                Wire::PresenceDelta {
                    online: vec!["a".into()],
                    offline: vec![],
                },
            )
            .unwrap();
        let cluster = Cluster {
            inner: inner.clone(),
        };
        let Err(e) = cluster.start_call("n2", forward) else {
            panic!("a call over the limit was sent");
        };
        assert_eq!(e, CallError::Overloaded("n2".into()));
        let api = e.to_api_error();
        assert_eq!(api.code, convoke_protocol::ErrorCode::ServerBusy);
        assert!(api.message.contains("full"), "{}", api.message);
        assert_eq!(
            inner.pending.len(),
            0,
            "the refused call is not left pending"
        );
        // Once the peer acknowledges what it took, calls go again.
        while link.queued_bytes() > 0 {
            link.acked(u64::MAX);
            tokio::task::yield_now().await;
        }
        inner.send("n2", forward(100)).unwrap();
        sink.stop(None);
    }

    /// n1 was killed and restarted (incarnation 1 now) while n2 still worked on a call of
    /// its previous process with the same correlation id: n2's late answer must not
    /// complete the new call.
    #[tokio::test]
    async fn a_reply_for_a_previous_incarnation_does_not_complete_a_new_call() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        let call = {
            let inner = inner.clone();
            tokio::spawn(async move {
                inner
                    .call(
                        "n2",
                        |corr| Wire::Query {
                            caller: 1,
                            corr,
                            remaining_ms: 60_000,
                            sent_ns: 0,
                            payload: vec![],
                        },
                        Duration::from_secs(5),
                    )
                    .await
            })
        };
        let corr = loop {
            let b = rx.recv().await.unwrap();
            if let Some(Wire::Query { corr, caller, .. }) = b.items.into_iter().next() {
                assert_eq!(caller, 1, "the call carries this process's incarnation");
                break corr;
            }
        };
        let reply = |caller, payload| Batch {
            from: "n2".into(),
            incarnation: 2,
            seq: 1,
            items: vec![Wire::Reply {
                caller,
                corr,
                payload,
            }],
        };
        inner.on_batch(reply(77, vec![1]));
        assert_eq!(
            inner.pending.len(),
            1,
            "the stale answer completed the call"
        );
        inner.on_batch(reply(1, vec![2]));
        assert_eq!(call.await.unwrap(), Ok(vec![2]));
        sink.stop(None);
    }

    /// Big items (history pages near their maximum in Replies) with traffic around them:
    /// every batch stays encodable under the limit (before, a 0.9 MB and a 3.5 MB reply
    /// went into one 4.4 MB batch that failed to serialize, and the whole batch was lost),
    /// and nothing is lost or reordered.
    #[tokio::test]
    async fn big_items_never_make_a_batch_over_the_limit() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        let mut sent = Vec::new();
        for n in 0..4u8 {
            // Under the 1 MiB batch target, then one that would take the batch over 4 MiB.
            for (i, size) in [900_000, 3_500_000].into_iter().enumerate() {
                sent.push(Wire::Reply {
                    caller: 2,
                    corr: u64::from(n) * 2 + i as u64,
                    payload: vec![n; size],
                });
            }
            sent.push(Wire::PresenceDelta {
                online: vec![format!("u{n}")],
                offline: vec![],
            });
        }
        for item in sent.clone() {
            inner.send("n2", item).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            let n = b.items.len();
            let encoded = crate::cluster::wire::encode(&b);
            assert!(encoded.is_ok(), "a batch of {n} items: {encoded:?}");
            got.extend(b.items);
        }
        assert_eq!(got, sent);
        sink.stop(None);
    }

    /// A batch whose cast fails (the router proxy's session is gone) fails its calls at
    /// once, and its bytes are subtracted once: before, they stayed in flight too and a
    /// later acknowledgement subtracted them again, hiding other unacknowledged bytes.
    #[tokio::test]
    async fn a_batch_that_cannot_be_cast_fails_its_calls_and_is_counted_once() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        let link = inner.lock()["n2"].link.clone();
        inner.send("n2", deliver(1)).unwrap();
        let first = rx.recv().await.unwrap();
        let first_bytes = link.queued_bytes();
        sink.stop_and_wait(None, None).await.unwrap();
        let call = inner
            .call(
                "n2",
                |corr| Wire::Query {
                    caller: 1,
                    corr,
                    remaining_ms: 60_000,
                    sent_ns: 0,
                    payload: vec![0; 5000],
                },
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(call, Err(CallError::Unavailable("n2".into())), "at once");
        assert_eq!(link.queued_bytes(), first_bytes);
        // A new session's router; one more item, then everything up to it acknowledged
        // except the last.
        let (tx, mut rx2) = mpsc::unbounded_channel();
        let (sink2, _) = Actor::spawn(None, Sink, tx).await.unwrap();
        inner.lock().get_mut("n2").unwrap().router = Some(sink2.clone());
        inner.send("n2", deliver(2)).unwrap();
        let last = rx2.recv().await.unwrap();
        let last_bytes = link.queued_bytes() - first_bytes;
        link.acked(last.seq - 1);
        assert!(first.seq < last.seq - 1);
        assert_eq!(link.queued_bytes(), last_bytes, "subtracted twice");
        sink2.stop(None);
    }

    /// A fan-out to a huge group (40,000 recipients on the peer: ~2.8 MB of names) is
    /// queued as several consecutive Delivers, each well under the limit; a call over the
    /// limit is refused at once instead of breaking a batch later.
    #[tokio::test]
    async fn a_huge_deliver_is_split_and_an_oversized_call_is_refused_at_once() {
        let (inner, mut rx, sink) = node_with_peer(64 << 20).await;
        let names: Vec<String> = (0..40_000).map(|i| format!("{i:0>60}")).collect();
        inner
            .send(
                "n2",
                Wire::Deliver {
                    gid: 5,
                    origin_session: 1,
                    to: names.clone(),
                    frame: vec![7; 10_000],
                },
            )
            .unwrap();
        inner
            .send(
                "n2",
                Wire::Deliver {
                    gid: 5,
                    origin_session: 1,
                    to: vec!["last".into()],
                    frame: vec![8],
                },
            )
            .unwrap();
        let mut to = Vec::new();
        let mut parts = 0;
        'recv: loop {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(crate::cluster::wire::encode(&b).is_ok());
            for item in b.items {
                let Wire::Deliver { to: t, frame, .. } = item else {
                    panic!("{item:?}")
                };
                if frame == [8] {
                    break 'recv;
                }
                assert_eq!(frame.len(), 10_000);
                parts += 1;
                to.extend(t);
            }
        }
        assert!(parts > 2, "{parts} parts");
        assert_eq!(
            to, names,
            "every recipient once, in order, before the next event"
        );
        let refused = inner.send(
            "n2",
            Wire::Reply {
                caller: 2,
                corr: 1,
                payload: vec![0; MAX_BATCH_BYTES],
            },
        );
        assert!(
            matches!(refused, Err(SendError::TooLarge { .. })),
            "{refused:?}"
        );
        let call = inner
            .call(
                "n2",
                |corr| Wire::Forward {
                    caller: 1,
                    corr,
                    gid: 7,
                    remaining_ms: 60_000,
                    sent_ns: 0,
                    payload: vec![0; MAX_BATCH_BYTES],
                },
                Duration::from_secs(30),
            )
            .await;
        assert!(matches!(call, Err(CallError::TooLarge(_))), "{call:?}");
        assert!(call.unwrap_err().to_api_error().message.contains("limit"));
        assert_eq!(inner.pending.len(), 0);
        sink.stop(None);
    }

    /// Items, peers removed, peers Up, as the hook heard them.
    #[derive(Default)]
    struct Collect(
        Mutex<Vec<(String, Wire)>>,
        Mutex<Vec<String>>,
        Mutex<Vec<String>>,
    );

    impl super::super::Inbound for Collect {
        fn item(&self, from: &str, item: Wire) {
            self.0.lock().unwrap().push((from.to_owned(), item));
        }

        fn peer_removed(&self, peer: &str) {
            self.1.lock().unwrap().push(peer.to_owned());
        }

        fn peer_up(&self, peer: &str) {
            self.2.lock().unwrap().push(peer.to_owned());
        }
    }

    /// The node is still being built (no inbound hook yet): no Hello goes out, so no peer
    /// comes Up and none sends work that would be dropped. A hook installed while a peer
    /// is Up anyway hears `peer_up` for it (which asks for its presence): before, the hook
    /// was installed after the cluster started, a peer Up meanwhile was never announced,
    /// and its online users got no live events from this node's groups until they
    /// reconnected.
    #[tokio::test]
    async fn no_hello_before_the_inbound_hook_and_a_late_hook_hears_peers_already_up() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            inner.say_hello(p);
            assert!(!p.hello_sent, "a Hello before the hook");
        }
        let hook = Arc::new(Collect::default());
        let cluster = Cluster {
            inner: inner.clone(),
        };
        assert!(cluster.set_inbound(hook.clone()));
        assert_eq!(*hook.2.lock().unwrap(), ["n2"], "n2 was Up already");
        assert!(!cluster.set_inbound(Arc::new(Collect::default())));
        assert_eq!(hook.2.lock().unwrap().len(), 1, "announced once");
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            inner.say_hello(p);
            assert!(p.hello_sent);
        }
        let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(b.items[..], [Wire::Hello(_)]), "{:?}", b.items);
        sink.stop(None);
    }

    /// A gateway not Up for 20 x reconnect_max_ms is forgotten (entry, link task, ordinal,
    /// and through the hook its presence slot); a core member never is, nor a gateway down
    /// for less. Before, gateway entries and their link tasks stayed for the process's life.
    #[tokio::test]
    async fn a_gateway_down_for_long_is_forgotten_and_a_core_member_is_not() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let hook = Arc::new(Collect::default());
        assert!(inner.inbound.set(hook.clone()).is_ok());
        let now = Instant::now();
        let long = Duration::from_millis(inner.cfg.reconnect_max_ms) * (GATEWAY_FORGET_AFTER + 1);
        let link = {
            let mut peers = inner.lock();
            for (name, idle) in [("g8", Duration::ZERO), ("g9", long)] {
                let mut g = inner.new_peer(name, String::new(), false);
                g.state = State::Down;
                g.idle_since = now.checked_sub(idle);
                peers.insert(name.into(), g);
            }
            let n2 = peers.get_mut("n2").unwrap();
            n2.state = State::Down;
            n2.router = None;
            n2.idle_since = now.checked_sub(long);
            peers["g9"].link.watch()
        };
        inner
            .ordinals
            .lock()
            .unwrap()
            .insert(9, ("g9".into(), "u9".into(), false));
        let (tx, _events) = mpsc::unbounded_channel();
        inner.tick(now, false, &tx);
        let names: Vec<String> = inner.lock().keys().cloned().collect();
        assert_eq!(names, ["g8", "n2"]);
        assert_eq!(*hook.1.lock().unwrap(), ["g9"]);
        assert!(inner.ordinals.lock().unwrap().is_empty());
        // Its link's task has ended (the entry held the only sender).
        eventually_gone(link).await;
        sink.stop(None);
    }

    async fn eventually_gone(alive: impl Fn() -> bool) {
        for _ in 0..100 {
            if !alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the link task of a forgotten peer still runs");
    }

    /// Requests past their deadline are answered by the owner's lanes (forward.rs), on its
    /// own clock; the router hands every request of an Up peer over, in order.
    #[tokio::test]
    async fn inbound_items_reach_the_hook_in_order_and_stale_incarnations_do_not() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let hook = Arc::new(Collect::default());
        assert!(inner.inbound.set(hook.clone()).is_ok());
        let forward = |corr, remaining_ms| Wire::Forward {
            caller: 2,
            corr,
            gid: 3,
            remaining_ms,
            sent_ns: 0,
            payload: vec![],
        };
        inner.on_batch(Batch {
            from: "n2".into(),
            incarnation: 2,
            seq: 1,
            items: vec![forward(1, 60_000), deliver(7), forward(3, 0)],
        });
        // From a stale incarnation (a restarted peer's leftovers): ignored.
        inner.on_batch(Batch {
            from: "n2".into(),
            incarnation: 99,
            seq: 2,
            items: vec![forward(4, 0)],
        });
        let got: Vec<String> = hook
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(from, item)| match item {
                Wire::Forward { corr, .. } => format!("{from}:forward{corr}"),
                other => format!("{from}:{}", other.kind()),
            })
            .collect();
        assert_eq!(got, ["n2:forward1", "n2:deliver", "n2:forward3"]);
        assert_eq!(inner.lock()["n2"].recv_acked, (2, 1));
        sink.stop(None);
    }

    /// A call's deadline travels as time left plus the sender's monotonic send time,
    /// mapped onto this node's clock through the offset learnt from the sender's Pings:
    /// a call that waited out its deadline (this node frozen, a long backlog) arrives
    /// expired (answered "not executed" by the lanes), a fresh one with its time left, and
    /// no wall clock of either host is read.
    #[tokio::test]
    async fn a_call_that_waited_out_its_deadline_arrives_expired_on_our_clock() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let hook = Arc::new(Collect::default());
        assert!(inner.inbound.set(hook.clone()).is_ok());
        let peer_now: u64 = 50_000_000_000;
        let batch = |seq, items| Batch {
            from: "n2".into(),
            incarnation: 2,
            seq,
            items,
        };
        inner.on_batch(batch(
            0,
            vec![Wire::Ping {
                seq: 1,
                sent_ns: peer_now,
                acked_batch: 0,
            }],
        ));
        let call = |corr, sent_ns| Wire::Forward {
            caller: 2,
            corr,
            gid: 3,
            remaining_ms: 5_000,
            sent_ns,
            payload: vec![],
        };
        // Sent 10 s before that Ping on the peer's clock (it sat in a socket while this
        // node was frozen), and sent just now.
        inner.on_batch(batch(
            1,
            vec![call(1, peer_now - 10_000_000_000), call(2, peer_now)],
        ));
        let left: Vec<u64> = hook
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, item)| match item {
                Wire::Forward { remaining_ms, .. } => *remaining_ms,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(left[0], 0, "expired on arrival");
        assert!((4_900..=5_000).contains(&left[1]), "{left:?}");
        sink.stop(None);
    }

    /// A peer that comes Up on one of its batches (it accepted our Hello and sent work
    /// before our tick) is pinged at once: its clock mapping needs a sample of ours before
    /// the first call we forward, or that call's deadline would be counted from its
    /// arrival, and one that waited past it in a frozen owner's socket would be executed
    /// (a CI failure: the owner thawed and ran a rename its caller had been told failed).
    #[tokio::test]
    async fn a_peer_that_comes_up_on_its_batch_is_pinged_at_once() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        let hook = Arc::new(Collect::default());
        assert!(inner.inbound.set(hook.clone()).is_ok());
        n2_connecting(&inner, true);
        inner.on_batch(Batch {
            from: "n2".into(),
            incarnation: 2,
            seq: 1,
            items: vec![deliver(1)],
        });
        assert_eq!(inner.lock()["n2"].state, State::Up);
        assert_eq!(hook.0.lock().unwrap().len(), 1, "its work is taken");
        // A call queued for n2 now goes out after that Ping.
        inner.send("n2", deliver(2)).unwrap();
        let mut batches = Vec::new();
        for _ in 0..2 {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            batches.push(b.items);
        }
        let (first, second) = (&batches[0], &batches[1]);
        assert!(
            matches!(first[..], [Wire::Ping { seq: 1, .. }]),
            "{first:?}"
        );
        assert!(matches!(second[..], [Wire::Deliver { .. }]), "{second:?}");
        sink.stop(None);
    }

    /// n2 restarted (incarnation 3 now): what this node processed from its previous
    /// process (seq 50) is not acknowledged to the new one, whose link has batches of its
    /// own in flight; before, a Pong carried 50 and cleared them, under-counting its queue.
    /// Once a batch of the new process is processed, that is acknowledged.
    #[tokio::test]
    async fn acknowledgements_are_for_the_peers_current_process_only() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            p.recv_acked = (2, 50);
            if let Some(h) = p.hello.as_mut() {
                h.incarnation = 3;
            }
        }
        let from_n2 = |seq, items| Batch {
            from: "n2".into(),
            incarnation: 3,
            seq,
            items,
        };
        let ping = Wire::Ping {
            seq: 1,
            sent_ns: 1,
            acked_batch: 0,
        };
        let mut pong_acks = Vec::new();
        for (seq, items) in [
            (0, vec![ping.clone()]),
            (3, vec![deliver(1)]),
            (0, vec![ping]),
        ] {
            inner.on_batch(from_n2(seq, items));
        }
        while pong_acks.len() < 2 {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            for item in b.items {
                if let Wire::Pong { acked_batch, .. } = item {
                    pong_acks.push(acked_batch);
                }
            }
        }
        assert_eq!(pong_acks, [0, 3]);
        sink.stop(None);
    }

    /// The sender's clock falls behind ours (drift, or its host was suspended for 15 s):
    /// every Ping's sample is 15 s later than the first. The estimate follows within a
    /// window of Pings, so a fresh call keeps its time; before, the least sample of the
    /// whole incarnation was kept and every call from that peer arrived expired.
    #[tokio::test]
    async fn a_clock_that_falls_behind_is_followed_and_fresh_calls_do_not_expire() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let hook = Arc::new(Collect::default());
        assert!(inner.inbound.set(hook.clone()).is_ok());
        let batch = |items| Batch {
            from: "n2".into(),
            incarnation: 2,
            seq: 0,
            items,
        };
        let ping = |seq, sent_ns| Wire::Ping {
            seq,
            sent_ns,
            acked_batch: 0,
        };
        let peer_now: u64 = 50_000_000_000;
        inner.on_batch(batch(vec![ping(1, peer_now)]));
        // From now on the peer's clock reads 15 s less than it did against ours.
        let behind = peer_now - 15_000_000_000;
        for seq in 0..crate::cluster::clock::WINDOW as u64 {
            inner.on_batch(batch(vec![ping(seq + 2, behind)]));
        }
        inner.on_batch(Batch {
            seq: 1,
            ..batch(vec![Wire::Forward {
                caller: 2,
                corr: 1,
                gid: 3,
                remaining_ms: 5_000,
                sent_ns: behind,
                payload: vec![],
            }])
        });
        let left = match &hook.0.lock().unwrap()[..] {
            [(_, Wire::Forward { remaining_ms, .. })] => *remaining_ms,
            other => panic!("{other:?}"),
        };
        assert!((4_900..=5_000).contains(&left), "{left} ms left");
        sink.stop(None);
    }

    /// The peer already sees this node Up and sends work before this node's next tick:
    /// with our Hello sent and its Hello accepted, the work is taken (and the peer is Up
    /// now) instead of being dropped, which left the peer's caller waiting for the request
    /// timeout. Without both Hellos, work is still dropped.
    #[tokio::test]
    async fn work_from_a_peer_up_on_its_side_first_is_taken_not_dropped() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let hook = Arc::new(Collect::default());
        assert!(inner.inbound.set(hook.clone()).is_ok());
        let forward = |corr| Wire::Forward {
            caller: 2,
            corr,
            gid: 3,
            remaining_ms: 60_000,
            sent_ns: 0,
            payload: vec![],
        };
        n2_connecting(&inner, false);
        inner.on_batch(Batch {
            from: "n2".into(),
            incarnation: 2,
            seq: 1,
            items: vec![forward(1)],
        });
        assert!(
            hook.0.lock().unwrap().is_empty(),
            "our Hello is not sent yet"
        );
        assert_eq!(inner.lock()["n2"].state, State::Connecting);
        inner.lock().get_mut("n2").unwrap().hello_sent = true;
        inner.on_batch(Batch {
            from: "n2".into(),
            incarnation: 2,
            seq: 2,
            items: vec![forward(2)],
        });
        let got: Vec<u64> = hook
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, item)| match item {
                Wire::Forward { corr, .. } => *corr,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [2]);
        assert_eq!(inner.lock()["n2"].state, State::Up);
        sink.stop(None);
    }

    /// Two peers (neither of them this node) claiming one ordinal: the second is refused,
    /// naming the first; before, only the two nodes sharing it noticed.
    #[tokio::test]
    async fn a_hello_with_the_ordinal_of_another_known_peer_is_refused() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let n2 = Hello {
            name: "n2".into(),
            ordinal: 2,
            node_uid: "u2".into(),
            members_hash: vec![],
            ..inner.hello.clone()
        };
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            p.hello = None;
            inner.on_hello("n2", p, n2.clone());
            assert!(p.hello.is_some(), "{:?}", p.reason);
        }
        let g1 = inner.new_peer("g1", String::new(), false);
        inner.lock().insert("g1".into(), g1);
        let mut peers = inner.lock();
        let p = peers.get_mut("g1").unwrap();
        inner.on_hello(
            "g1",
            p,
            Hello {
                name: "g1".into(),
                role: "gateway".into(),
                node_uid: "u9".into(),
                members: vec![],
                ..n2.clone()
            },
        );
        assert_eq!(p.state, State::Refused);
        let reason = p.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("ordinal"), "{reason}");
        assert!(reason.contains("n2") && reason.contains("u2"), "{reason}");
        // n2 itself, again (a restart): still accepted.
        let p = peers.get_mut("n2").unwrap();
        inner.on_hello(
            "n2",
            p,
            Hello {
                incarnation: 3,
                ..n2
            },
        );
        assert_eq!(p.hello.as_ref().map(|h| h.incarnation), Some(3));
        drop(peers);
        if let Some(dir) = inner.peer_uids_path.parent().and_then(|d| d.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
        sink.stop(None);
    }

    /// A gateway claimed ordinal 2 before n2 came (n1 restarted, n2 slower): n2's Hello
    /// with ordinal 2 is accepted and the gateway refused; before, n2 was refused, its
    /// shards unavailable from n1, and the gateway minted ids in its space. n2 is then
    /// remembered on disk with its ordinal, so a gateway claiming it is refused while n2 is
    /// down, also by a new process of n1 that has not met n2 yet.
    #[tokio::test]
    async fn a_core_members_ordinal_wins_over_a_gateway_that_claimed_it_first() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let n2 = Hello {
            name: "n2".into(),
            ordinal: 2,
            node_uid: "u2".into(),
            incarnation: 5,
            members_hash: vec![],
            ..inner.hello.clone()
        };
        let g = Hello {
            name: "g".into(),
            role: "gateway".into(),
            node_uid: "ug".into(),
            incarnation: 6,
            members: vec![],
            ..n2.clone()
        };
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            p.hello = None;
            p.state = State::Connecting;
            let gw = inner.new_peer("g", String::new(), false);
            peers.insert("g".into(), gw);
            let p = peers.get_mut("g").unwrap();
            assert_eq!(inner.on_hello("g", p, g.clone()), None);
            assert!(
                p.hello.is_some(),
                "no core member has it yet: {:?}",
                p.reason
            );
            p.state = State::Up;
        }
        let hello = |h: Hello| Batch {
            from: h.name.clone(),
            incarnation: h.incarnation,
            seq: 0,
            items: vec![Wire::Hello(h)],
        };
        inner.on_batch(hello(n2.clone()));
        {
            let peers = inner.lock();
            assert!(peers["n2"].hello.is_some(), "{:?}", peers["n2"].reason);
            assert_eq!(peers["g"].state, State::Refused);
            let reason = peers["g"].reason.clone().unwrap_or_default();
            assert!(
                reason.starts_with("ordinal") && reason.contains("n2"),
                "{reason}"
            );
        }
        let dir = inner
            .peer_uids_path
            .parent()
            .and_then(|d| d.parent())
            .unwrap()
            .to_owned();
        assert_eq!(
            identity::load_peer_uids(&dir).unwrap()["n2"].ordinal,
            Some(2),
            "remembered on disk"
        );
        // n2 goes down; the gateway tries again: refused.
        let refused_again = |inner: &Arc<Inner>| {
            let mut peers = inner.lock();
            let p = peers.get_mut("g").unwrap();
            p.state = State::Connecting;
            inner.on_hello(
                "g",
                p,
                Hello {
                    incarnation: 7,
                    ..g.clone()
                },
            );
            (p.state, p.reason.clone().unwrap_or_default())
        };
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            inner.down("n2", p, "heartbeat_timeout");
        }
        let (state, reason) = refused_again(&inner);
        assert_eq!(state, State::Refused, "{reason}");
        assert!(reason.contains("core member n2"), "{reason}");
        // A new process of n1: nothing in memory, the file read again.
        inner.ordinals.lock().unwrap().clear();
        *inner.peer_uids.lock().unwrap() = identity::load_peer_uids(&dir).unwrap();
        let (state, reason) = refused_again(&inner);
        assert_eq!(state, State::Refused, "{reason}");
        let _ = std::fs::remove_dir_all(dir);
        sink.stop(None);
    }

    /// A refusal tells the refused node why with a code, and the refused node stops
    /// (`Cluster::refused` resolves) only when the refusals count (`refusal::verdict`):
    /// core peer n2 remembering this node's name on another data dir, before any core peer
    /// accepted this process, stops it; a disagreement from the one other core member, or
    /// any refusal once a core peer accepted this process, does not. Before, a refused
    /// node only logged the refusal and kept serving clients as that node.
    #[tokio::test]
    async fn a_refusal_about_this_nodes_identity_stops_it_a_lone_disagreement_does_not() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        let cluster = Cluster {
            inner: inner.clone(),
        };
        let from_n2 = |items| Batch {
            from: "n2".into(),
            incarnation: 2,
            seq: 0,
            items,
        };
        let refuse = |code: &str| Wire::Refuse {
            reason: format!("refused by n2: {code}"),
            code: code.into(),
        };
        let stopped = || inner.refusal.borrow().clone();
        // A setting n2 has otherwise: one of two core members is no majority.
        inner.on_batch(from_n2(vec![refuse("app_secret")]));
        assert_eq!(stopped(), None);
        // n2 accepts this node (its Ping), then says it knows this name on another data
        // dir: this process was accepted already, one peer's word is not enough.
        inner.on_batch(from_n2(vec![Wire::Ping {
            seq: 1,
            sent_ns: 1,
            acked_batch: 0,
        }]));
        assert!(
            inner.lock()["n2"].refused_us.is_none(),
            "cleared by its Ping"
        );
        inner.on_batch(from_n2(vec![refuse("node_uid")]));
        assert_eq!(stopped(), None);
        // A process no core peer accepted yet (the impostor on a copy of a config): stops.
        inner
            .accepted
            .store(false, std::sync::atomic::Ordering::Relaxed);
        inner.on_batch(from_n2(vec![refuse("node_uid")]));
        assert_eq!(stopped().as_deref(), Some("refused by n2: node_uid"));
        let words = tokio::time::timeout(Duration::from_secs(5), cluster.refused())
            .await
            .unwrap();
        assert_eq!(words, "refused by n2: node_uid");
        // What this node sends when it refuses: the code with the words.
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            inner.refuse("n2", p, "shards", "its cluster.shards is 64".into());
        }
        let refusal = loop {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if let Some(r) = b.items.into_iter().find(|i| i.kind() == "refuse") {
                break r;
            }
        };
        assert!(
            matches!(&refusal, Wire::Refuse { code, reason }
                if code == "shards" && reason.starts_with("refused by n1: its cluster.shards")),
            "{refusal:?}"
        );
        sink.stop(None);
    }

    /// n3 refused this node (say n3 had another app secret) and then stopped; later n2
    /// refuses it too. n3's refusal, no longer repeated, has lapsed: one refusal of three
    /// members is no majority, and this node, the correct one, keeps running. Two refusals
    /// that both stand still stop it. Before, n3's stale refusal counted for good (review
    /// finding LOW-3).
    #[tokio::test]
    async fn a_refusal_no_longer_repeated_stops_counting() {
        let (inner, _rx, sink) = node_with_peer_among(ClusterRole::Core, 1 << 20, 3).await;
        let n3 = inner.new_peer("n3", "127.0.0.3:1".into(), true);
        inner.lock().insert("n3".into(), n3);
        let refuse = |from: &str, incarnation| Batch {
            from: from.into(),
            incarnation,
            seq: 0,
            items: vec![Wire::Refuse {
                reason: format!("refused by {from}: its app secret differs"),
                code: "app_secret".into(),
            }],
        };
        let stopped = || inner.refusal.borrow().clone();
        inner.on_batch(refuse("n3", 3));
        assert_eq!(stopped(), None, "one of three");
        // n3 stopped; its refusal was last heard longer ago than a refusal stands.
        {
            let mut peers = inner.lock();
            let r = peers.get_mut("n3").unwrap().refused_us.as_mut().unwrap();
            r.at = Instant::now() - inner.refusal_stands() - Duration::from_secs(1);
        }
        inner.on_batch(refuse("n2", 2));
        assert_eq!(stopped(), None, "n3's refusal has lapsed");
        // Both standing (n3 repeats its refusal at its next session): a majority.
        inner.on_batch(refuse("n3", 3));
        let words = stopped().expect("two standing refusals of three stop it");
        assert!(
            words.contains("refused by n2") && words.contains("refused by n3"),
            "{words}"
        );
        sink.stop(None);
    }

    /// A core peer is remembered with the data dir (node_uid) of its first accepted Hello,
    /// on disk; while it is not Up, a Hello under its name from another data dir is refused
    /// (before, it was accepted and took the node's shards without its data).
    #[tokio::test]
    async fn a_known_core_peer_on_another_data_dir_is_refused_while_it_is_not_up() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let n2 = Hello {
            name: "n2".into(),
            ordinal: 2,
            node_uid: "u2".into(),
            members_hash: vec![],
            ..inner.hello.clone()
        };
        let mut peers = inner.lock();
        let p = peers.get_mut("n2").unwrap();
        p.hello = None;
        inner.on_hello("n2", p, n2.clone());
        assert!(p.hello.is_some(), "{:?}", p.reason);
        let file = inner.peer_uids_path.clone();
        let dir = file.parent().unwrap().parent().unwrap().to_owned();
        assert_eq!(
            identity::load_peer_uids(&dir)
                .unwrap()
                .get("n2")
                .map(|k| k.node_uid.as_str()),
            Some("u2"),
            "remembered on disk"
        );
        // n2 is lost, and a process on another data dir comes up under its name.
        inner.down("n2", p, "heartbeat_timeout");
        inner.on_hello(
            "n2",
            p,
            Hello {
                node_uid: "u-other".into(),
                incarnation: 9,
                ..n2.clone()
            },
        );
        assert_eq!(p.state, State::Refused);
        let reason = p.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("node_uid"), "{reason}");
        assert!(
            reason.contains("u2") && reason.contains(&file.display().to_string()),
            "{reason}"
        );
        // The real one returns: accepted.
        inner.on_hello(
            "n2",
            p,
            Hello {
                incarnation: 10,
                ..n2
            },
        );
        assert_eq!(p.hello.as_ref().map(|h| h.incarnation), Some(10));
        drop(peers);
        let _ = std::fs::remove_dir_all(dir);
        sink.stop(None);
    }

    struct FakeSession;

    impl Actor for FakeSession {
        type Msg = NodeSessionMessage;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<NodeSessionMessage>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }

    /// A Down this node declares stops the peer's sessions; their Disconnected events are
    /// ours, not an unauthenticated connection (before, each was counted as
    /// refused{reason=unauthenticated} and logged as a wrong cookie). A session nobody
    /// knows still is.
    #[tokio::test]
    async fn sessions_this_node_stopped_are_not_counted_as_unauthenticated() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let (session, _) = Actor::spawn(None, FakeSession, ()).await.unwrap();
        let info = |node_id| NodeServerSessionInformation {
            actor: session.clone(),
            peer_name: None,
            is_server: false,
            node_id,
            peer_addr: "127.0.0.2:1".into(),
        };
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            p.sessions.insert(42, session.clone());
            inner.down("n2", p, "heartbeat_timeout");
        }
        assert_eq!(inner.closed(&info(42)), Closed::Ours);
        assert_eq!(
            inner.closed(&info(42)),
            Closed::Unauthenticated,
            "remembered once"
        );
        assert_eq!(inner.closed(&info(43)), Closed::Unauthenticated);
        sink.stop(None);
    }

    /// A session with a member that closed before it authenticated (a wrong cookie) says
    /// so in `/cluster`: the member's `reason`, found by the name the connection claimed or
    /// by the address this node dialed. Before, the member showed `connecting` or `down`
    /// with no reason, and only the log and the metric said why. An unproven name never
    /// changes a peer that is Up, nor one refused for a setting.
    #[tokio::test]
    async fn a_connection_closed_before_it_authenticated_is_the_reason_a_member_is_not_up() {
        let (inner, _rx, sink) = node_with_peer(1 << 20).await;
        let (session, _) = Actor::spawn(None, FakeSession, ()).await.unwrap();
        let reason = |inner: &Arc<Inner>| inner.lock()["n2"].reason.clone().unwrap_or_default();
        // n2 is Up: untouched.
        inner.unauthenticated(Some("n2"), "127.0.0.9:5", false);
        assert_eq!(reason(&inner), "");
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            inner.down("n2", p, "disconnected");
        }
        assert_eq!(reason(&inner), "disconnected");
        // A dialed connection to n2's address that never authenticated (no name learnt).
        inner.on_event(Event::Disconnected(NodeServerSessionInformation {
            actor: session.clone(),
            peer_name: None,
            is_server: false,
            node_id: 7,
            peer_addr: "127.0.0.2:1".into(),
        }));
        assert!(
            reason(&inner).starts_with("unauthenticated: "),
            "{}",
            reason(&inner)
        );
        assert!(reason(&inner).contains("cluster.cookie"));
        let refused = |inner: &Arc<Inner>| {
            inner.lock()["n2"]
                .refused_us
                .as_ref()
                .map(|r| (r.code.clone(), r.words.clone()))
        };
        // Closed before n2's challenge (no name learnt: a reset, a freeze, a lost
        // simultaneous connect, a refused TLS certificate): no refusal.
        assert_eq!(refused(&inner), None);
        // Incoming, claiming n2's name: unproven, no refusal.
        inner.unauthenticated(Some("n2"), "127.0.0.2:1", false);
        assert_eq!(refused(&inner), None);
        // Dialed by this node, closed after n2's challenge named it: n2 refuses this node's
        // cookie (a majority of core members stops it; one of two is not a majority).
        // Matched by name, so a member given as a host name counts too.
        // (`on_event` passes the name of the session's `peer_name`, which ractor_cluster
        // sets from the server's challenge and does not let us build here.)
        inner.unauthenticated(Some("n2"), "10.1.2.3:7401", true);
        let (code, words) = refused(&inner).unwrap();
        assert_eq!(code, "cookie");
        assert!(
            words.contains("cluster.cookie") && words.contains("n2"),
            "{words}"
        );
        assert!(
            inner.refusal.borrow().is_none(),
            "one of two is no majority"
        );
        // Once a core member has accepted this process its cookie is right: never counts.
        inner.lock().get_mut("n2").unwrap().refused_us = None;
        inner
            .accepted
            .store(true, std::sync::atomic::Ordering::Relaxed);
        inner.unauthenticated(Some("n2"), "10.1.2.3:7401", true);
        assert_eq!(refused(&inner), None);
        // A refusal's reason stays.
        {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            inner.refuse("n2", p, "shards", "its cluster.shards is 64".into());
        }
        inner.unauthenticated(Some("n2"), "127.0.0.9:5", false);
        assert!(reason(&inner).starts_with("shards: "), "{}", reason(&inner));
        sink.stop(None);
        session.stop(None);
    }

    /// A Hello refused for a setting every node shares (the app secret, the shard count,
    /// the member list, the protocol) is answered with this node's own Hello first, then
    /// the Refuse: the peer judges this node's Hello, sees the same mismatch and refuses it
    /// too, so both sides count it and a majority can tell the odd node out. Before, a node
    /// that heard the peer's Hello before sending its own (a node starting into a running
    /// cluster) refused it and never sent one: the peers never judged it, and it was never
    /// refused by a majority. A refusal about the peer itself (its ordinal) sends no Hello.
    #[tokio::test]
    async fn a_hello_refused_for_a_shared_setting_is_answered_with_this_nodes_hello_first() {
        let (inner, mut rx, sink) = node_with_peer(1 << 20).await;
        let n2 = {
            let mut peers = inner.lock();
            let p = peers.get_mut("n2").unwrap();
            p.state = State::Connecting;
            p.hello.take().unwrap()
        };
        for h in [
            Hello {
                secret_mac: vec![1],
                ..n2.clone()
            },
            Hello {
                shards: 64,
                ..n2.clone()
            },
            Hello {
                members_hash: vec![9],
                ..n2.clone()
            },
            Hello {
                proto: 99,
                ..n2.clone()
            },
        ] {
            assert_eq!(
                kinds_after(&inner, &mut rx, h.clone()).await,
                ["hello", "refuse"],
                "{h:?}"
            );
            assert_eq!(inner.lock()["n2"].state, State::Refused);
        }
        let kinds = kinds_after(
            &inner,
            &mut rx,
            Hello {
                ordinal: 1,
                ..n2.clone()
            },
        )
        .await;
        assert_eq!(kinds, ["refuse"]);
        sink.stop(None);
    }

    /// What `n2`, not Up and not sent this node's Hello yet, is sent after its Hello `h`
    /// arrives, up to the Refuse: the kinds of the items, in order.
    async fn kinds_after(
        inner: &Arc<Inner>,
        rx: &mut mpsc::UnboundedReceiver<Batch>,
        h: Hello,
    ) -> Vec<&'static str> {
        n2_connecting(inner, false);
        inner.on_batch(Batch {
            from: "n2".into(),
            incarnation: h.incarnation,
            seq: 0,
            items: vec![Wire::Hello(h)],
        });
        let mut kinds = Vec::new();
        while !kinds.contains(&"refuse") {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            kinds.extend(b.items.iter().map(Wire::kind));
        }
        kinds
    }

    /// A gateway learns the core members (and the shard table) only from a core Hello it
    /// accepted: before, a Hello it then refused (another protocol, a clashing ordinal...)
    /// had already taught it whom to dial and who owns what.
    #[tokio::test]
    async fn a_gateway_learns_the_members_only_from_an_accepted_hello() {
        let (inner, _rx, sink) = node_with_peer_as(ClusterRole::Gateway, 1 << 20).await;
        inner.lock().get_mut("n2").unwrap().hello = None;
        let core = Hello {
            proto: PROTO,
            name: "n2".into(),
            ordinal: 2,
            role: "core".into(),
            node_uid: "u2".into(),
            incarnation: 2,
            shards: inner.cfg.shards,
            members_hash: vec![7],
            secret_mac: vec![],
            members: vec![
                "n2@127.0.0.2:1".into(),
                "n3@127.0.0.3:1".into(),
                "n4@127.0.0.4:1".into(),
            ],
            quic_addr: String::new(),
            quic_cert_sha256: Vec::new(),
        };
        let hello = |h: Hello| Batch {
            from: "n2".into(),
            incarnation: h.incarnation,
            seq: 0,
            items: vec![Wire::Hello(h)],
        };
        inner.on_batch(hello(Hello {
            proto: 99,
            ..core.clone()
        }));
        assert_eq!(inner.lock()["n2"].state, State::Refused);
        assert!(
            inner.placement.get().is_none(),
            "learnt from a refused Hello"
        );
        assert!(!inner.lock().contains_key("n3"));
        inner.lock().get_mut("n2").unwrap().state = State::Connecting;
        inner.on_batch(hello(core));
        assert!(inner.placement.get().is_some());
        assert!(inner.lock().contains_key("n3") && inner.lock().contains_key("n4"));
        sink.stop(None);
    }

    #[test]
    fn hellos_that_do_not_match_are_refused_with_the_reason() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (inner, _rx, sink) = node_with_peer(1 << 20).await;
            let base = inner.hello.clone();
            for (h, reason) in [
                (
                    Hello {
                        secret_mac: vec![1],
                        ..base.clone()
                    },
                    "app_secret",
                ),
                (
                    Hello {
                        shards: 64,
                        ..base.clone()
                    },
                    "shards",
                ),
                (
                    Hello {
                        members_hash: vec![9],
                        ..base.clone()
                    },
                    "members",
                ),
                (
                    Hello {
                        ordinal: 1,
                        ..base.clone()
                    },
                    "ordinal",
                ),
                (
                    Hello {
                        proto: 99,
                        ..base.clone()
                    },
                    "proto",
                ),
            ] {
                let h = Hello {
                    name: "n2".into(),
                    ordinal: if reason == "ordinal" { 1 } else { 2 },
                    members_hash: if reason == "members" { vec![9] } else { vec![] },
                    ..h
                };
                let mut peers = inner.lock();
                let p = peers.get_mut("n2").unwrap();
                p.state = State::Connecting;
                inner.on_hello("n2", p, h);
                assert_eq!(p.state, State::Refused, "{reason}");
                assert!(
                    p.reason.as_deref().unwrap_or("").starts_with(reason),
                    "{reason}: {:?}",
                    p.reason
                );
            }
            sink.stop(None);
        });
    }
}
