//! The cluster fabric (issue #11 phase 1; ../shared/design/cluster.md): nodes form a full
//! mesh over ractor_cluster from `[cluster]`, tell each other who they are (`Hello`),
//! detect failures with their own heartbeat, and carry batches of [`wire::Wire`] items
//! between one router per node.
//!
//! With `cluster.enabled = false` (the default) nothing here runs: [`start`] returns `None`,
//! no port is opened, and every other module keeps its single-node path.
//!
//! For request forwarding and cross-node fan-out (built on this):
//! - [`Cluster::get`] (or the handle [`start`] returned) is the running cluster, `None` on a
//!   single node; [`route`] answers `Local` there without a cluster;
//! - [`Cluster::route`] says where a group lives: [`Route::Local`], [`Route::Remote`] (its
//!   owner is Up) or [`Route::Unavailable`] (answer 500 retryable at once);
//! - [`Cluster::send`] queues an item on the ordered, byte-bounded link to a peer;
//!   [`Cluster::call`] sends an item carrying a fresh correlation id and waits for the
//!   peer's `Wire::Reply` (failed at once when the peer goes Down, or at the deadline);
//!   [`Cluster::reply`] answers a call;
//! - [`Cluster::set_inbound`] installs the [`Inbound`] hook that receives every `Forward`,
//!   `Create`, `Deliver`, `PresenceSnapshot` and `PresenceDelta` from an Up peer, in the
//!   order that peer queued them, on the router (hand heavy work to tasks).
//!
//! Layout: `wire` (the items and the router's hand-written message codec), `router` (the
//! remote-capable actor), `membership` (NodeServer, dialing, Hello, heartbeat, Down),
//! `link` (per-peer batching queue), `pending` (calls waiting for replies), `placement`
//! (shards and owners, pure), `identity` (what a data dir was created as), `clock` (a
//! peer's monotonic clock mapped onto ours, from its recent Pings).

mod clock;
pub mod forward;
pub mod identity;
pub mod inbound;
mod link;
mod membership;
pub mod peer_quic;
mod pending;
pub mod placement;
pub mod presence;
mod refusal;
mod router;
pub mod scatter;
mod tls;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use convoke_protocol::{ApiError, ErrorCode};
use ractor::ActorRef;

pub use link::SendError;
pub use router::{GROUP, NAME_PREFIX, SCOPE};
pub use wire::{Batch, Hello, RouterMsg, Wire};

use crate::config::{ClusterConfig, ClusterRole, Config, Member};
use membership::Peer;
use pending::Pending;

/// A start refused because of the cluster configuration or the data dir's identity; the
/// binary exits with code 2 (like any invalid configuration).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A setting differs from what the data dir was created with.
    #[error(
        "{setting} changed for an existing data dir: it was {was}, it is now {now} ({}); \
         data would be orphaned, so this node does not start. Put the setting back, or \
         start on a new data dir",
        path.display()
    )]
    Drift {
        /// The setting (`cluster.ordinal`).
        setting: String,
        /// Its value in the identity file.
        was: String,
        /// Its configured value.
        now: String,
        /// The identity file.
        path: PathBuf,
    },
    /// The identity file cannot be read, parsed or written.
    #[error("cluster identity file {}: {problem}", path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A setting this build cannot honour yet.
    #[error("{setting}: {problem}")]
    Unsupported {
        /// The setting.
        setting: String,
        /// Why.
        problem: String,
    },
    /// The cluster refused this running node for its identity or a setting (see
    /// `cluster::refusal` for when peers' refusals count): it stopped rather than serve as
    /// a node the cluster does not accept.
    #[error(
        "this node was refused by the cluster and stopped: {reasons}. Fix what is named \
         and start it again"
    )]
    ByPeers {
        /// The refusals that counted, in the peers' words (each names the setting).
        reasons: String,
    },
}

impl Refused {
    /// Process exit code for a refused start.
    pub const EXIT_CODE: u8 = 2;
}

/// Where a group lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns it (always, on a single node).
    Local,
    /// Its owner is this peer, and the peer is Up.
    Remote(String),
    /// Its owner is this peer, and the peer is not Up: answer 500 retryable at once.
    Unavailable(String),
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The peer was not Up when the call was made: nothing was sent.
    #[error("node {0} is unreachable")]
    Unavailable(String),
    /// The peer went Down (or restarted) while the call was out: outcome unknown.
    #[error("node {0} went away while handling the request")]
    PeerLost(String),
    /// The link to the peer holds more than `link::CALL_LIMIT_FACTOR` x
    /// `cluster.peer_queue_bytes` (a slow or stuck peer): nothing was sent.
    #[error("the queue to node {0} is full")]
    Overloaded(String),
    /// No reply within `cluster.request_timeout_ms`: outcome unknown.
    #[error("node {0} did not answer within the request timeout")]
    Timeout(String),
    /// The request (or its answer) encodes to this many bytes, over what one batch between
    /// nodes carries: nothing was sent.
    #[error(
        "the request needs {0} bytes between nodes, over the {max}-byte limit of one batch",
        max = wire::MAX_ITEMS_BYTES
    )]
    TooLarge(usize),
}

impl CallError {
    /// The contract's answer: 500 `SERVER_BUSY` (retryable), worded for the case.
    pub fn to_api_error(&self) -> ApiError {
        let text = match self {
            CallError::Unavailable(peer) => {
                format!("the group lives on node {peer}, which is unreachable; retry")
            }
            CallError::TooLarge(_) => format!("{self}; nothing was done"),
            CallError::Overloaded(_) => format!("{self}; nothing was sent, retry"),
            CallError::PeerLost(_) | CallError::Timeout(_) => format!(
                "{self}; the change may or may not have been made, read the group state \
                 before retrying"
            ),
        };
        ApiError::new(ErrorCode::ServerBusy, text)
    }
}

/// Receives the work items of Up peers, on the router, in each peer's order.
pub trait Inbound: Send + Sync + 'static {
    /// One item (`Forward`, `Create`, `Deliver`, `PresenceSnapshot`, `PresenceDelta`) from
    /// peer `from`. Answer a `Forward`/`Create` with [`Cluster::reply`].
    fn item(&self, from: &str, item: Wire);

    /// Peer `peer` went Down (or restarted): forget its presence, receiver caches, etc.
    fn peer_down(&self, peer: &str) {
        let _ = peer;
    }

    /// Peer `peer` is Up (after every new session: send it a presence snapshot).
    fn peer_up(&self, peer: &str) {
        let _ = peer;
    }

    /// Peer `peer` (a gateway not Up for long) was forgotten: free what it held (its
    /// presence slot).
    fn peer_removed(&self, peer: &str) {
        let _ = peer;
    }
}

/// The running cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

static RUNNING: OnceLock<Cluster> = OnceLock::new();

/// Shared by the membership task, the router, the links and the handle.
pub(crate) struct Inner {
    cfg: ClusterConfig,
    name: String,
    ordinal: u32,
    role: ClusterRole,
    node_uid: String,
    incarnation: u64,
    /// The core members and the shard table: from the config on a core node; a gateway
    /// started with `join` only learns them from the first core member's Hello.
    placement: OnceLock<Placement>,
    hello: Hello,
    peers: Mutex<BTreeMap<String, Peer>>,
    pending: Pending,
    /// The ordinal of every peer whose Hello this node accepted: ordinal -> (name,
    /// node_uid, core). Two nodes with one ordinal would mint the same ids.
    ordinals: Mutex<BTreeMap<u32, (String, String, bool)>>,
    /// The node_uid and ordinal each core peer was first accepted with
    /// (`identity::peer_uids_path`), and that file.
    peer_uids: Mutex<BTreeMap<String, identity::KnownPeer>>,
    peer_uids_path: PathBuf,
    /// ractor_cluster node ids of sessions this node stopped itself (Down, refused, a
    /// duplicate): their Disconnected event is ours, not an unauthenticated peer.
    stopped_sessions: Mutex<std::collections::HashSet<u64>>,
    inbound: OnceLock<Arc<dyn Inbound>>,
    /// A core peer has accepted this process (sent it a Ping): from then on one peer's
    /// refusal about this node's identity no longer stops it (`refusal`).
    accepted: std::sync::atomic::AtomicBool,
    /// Set once when peers' refusals stop this node (`refusal::verdict`): their words.
    refusal: tokio::sync::watch::Sender<Option<String>>,
    epoch: Instant,
    server: OnceLock<ActorRef<ractor_cluster::NodeServerMessage>>,
    tls: Option<tls::ClusterTls>,
}

/// Starts the cluster when `[cluster]` is enabled (identity check, NodeServer, router,
/// membership); `None` on a single node.
pub async fn start(
    config: &Config,
    secret: &[u8],
    quic_addr: std::net::SocketAddr,
) -> anyhow::Result<Option<Cluster>> {
    if !config.cluster.enabled {
        return Ok(None);
    }
    let cluster = membership::start(config, secret, quic_addr).await?;
    let _ = RUNNING.set(cluster.clone());
    Ok(Some(cluster))
}

impl Cluster {
    /// The running cluster of this process, if any.
    pub fn get() -> Option<Cluster> {
        RUNNING.get().cloned()
    }

    /// [`Cluster::get`] without the clone: one atomic load, for hot paths.
    pub fn running() -> Option<&'static Cluster> {
        RUNNING.get()
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This node's ordinal (1..=63).
    pub fn ordinal(&self) -> u32 {
        self.inner.ordinal
    }

    /// This process's incarnation (random per start).
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// `cluster.shards`.
    pub fn shards(&self) -> u32 {
        self.inner.cfg.shards
    }

    /// The core member that owns group `gid` (`None` only on a gateway that has not heard
    /// from any core member yet).
    pub fn owner_of(&self, gid: u64) -> Option<&str> {
        self.inner.owner_of(gid)
    }

    /// Whether this node owns `gid`'s shard.
    pub fn owns(&self, gid: u64) -> bool {
        self.inner.owner_of(gid) == Some(self.inner.name.as_str())
    }

    /// Where group `gid` lives and whether its owner is reachable.
    pub fn route(&self, gid: u64) -> Route {
        let Some(owner) = self.inner.owner_of(gid) else {
            return Route::Unavailable("(no core member reached yet)".to_owned());
        };
        if owner == self.inner.name {
            Route::Local
        } else if self.is_up(owner) {
            Route::Remote(owner.to_owned())
        } else {
            Route::Unavailable(owner.to_owned())
        }
    }

    /// Whether `peer` is Up.
    pub fn is_up(&self, peer: &str) -> bool {
        self.inner.is_up(peer)
    }

    /// The peers that are Up now (core and gateways), by name.
    pub fn up_peers(&self) -> Vec<String> {
        self.inner.up_peers()
    }

    /// Every peer this node knows (core members and the gateways it has met and not
    /// forgotten), Up or not, by name.
    pub fn known_peers(&self) -> Vec<String> {
        self.inner.known_peers()
    }

    /// Queues `item` to `peer` on its ordered link (never waits). A `Deliver` is dropped
    /// (and counted) when the link is over `cluster.peer_queue_bytes`.
    pub fn send(&self, peer: &str, item: Wire) -> Result<(), SendError> {
        self.inner.send(peer, item)
    }

    /// Sends the item `make(corr)` to `peer` and waits for its `Wire::Reply { corr, .. }`
    /// payload, at most `cluster.request_timeout_ms`.
    pub async fn call(
        &self,
        peer: &str,
        make: impl FnOnce(u64) -> Wire,
    ) -> Result<Vec<u8>, CallError> {
        let timeout = Duration::from_millis(self.inner.cfg.request_timeout_ms);
        self.inner.call(peer, make, timeout).await
    }

    /// [`Cluster::call`] split in two: registers the call and queues `make(corr)` on the
    /// link to `peer` now (so calls started one after another reach the peer in that
    /// order), and returns the wait for the reply (at most `cluster.request_timeout_ms`
    /// from now) to be awaited later, e.g. in a task.
    pub fn start_call(
        &self,
        peer: &str,
        make: impl FnOnce(u64) -> Wire,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<u8>, CallError>> + Send + 'static,
        CallError,
    > {
        let inner = self.inner.clone();
        let (corr, rx) = inner.pending.register(peer);
        if let Err(e) = inner.send(peer, make(corr)) {
            inner.pending.forget(corr);
            return Err(match e {
                SendError::Unavailable(p) | SendError::Unknown(p) => CallError::Unavailable(p),
                SendError::Overloaded(p) => CallError::Overloaded(p),
                SendError::TooLarge { bytes, .. } => CallError::TooLarge(bytes),
            });
        }
        let timeout = Duration::from_millis(inner.cfg.request_timeout_ms);
        let peer = peer.to_owned();
        Ok(async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(CallError::PeerLost(peer)),
                Err(_) => {
                    inner.pending.forget(corr);
                    Err(CallError::Timeout(peer))
                }
            }
        })
    }

    /// The core members (they own the shards), sorted; empty on a gateway that has not
    /// heard from one yet.
    pub fn core_members(&self) -> Vec<String> {
        self.inner
            .placement
            .get()
            .map(|p| p.core.clone())
            .unwrap_or_default()
    }

    /// Answers call `corr` that `peer`'s process `caller` (the incarnation its call
    /// carried) made.
    pub fn reply(
        &self,
        peer: &str,
        caller: u64,
        corr: u64,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        self.inner.send(
            peer,
            Wire::Reply {
                caller,
                corr,
                payload,
            },
        )
    }

    /// The incarnation of `peer`'s process as this node knows it from its accepted Hello
    /// (`None` when it has none): work from an older process of it is not executed.
    pub fn peer_incarnation(&self, peer: &str) -> Option<u64> {
        self.inner.peer_incarnation(peer)
    }

    /// The time a call made now has (`cluster.request_timeout_ms`), sent with it as
    /// `remaining_ms`.
    pub fn remaining_ms(&self) -> u64 {
        self.inner.cfg.request_timeout_ms
    }

    /// Whether this node started so recently that core peers may not be Up yet although
    /// they run (the first dials and Hellos: within two peer timeouts of the start).
    pub fn just_started(&self) -> bool {
        self.inner.epoch.elapsed()
            < Duration::from_millis(self.inner.cfg.peer_timeout_ms.saturating_mul(2))
    }

    /// This process's monotonic clock, ns since it started: a call's `sent_ns`.
    pub fn clock_ns(&self) -> u64 {
        self.inner.now_ns()
    }

    /// Installs the hook for inbound work items; only the first call takes effect. Until
    /// one is installed this node sends no Hello, so no peer comes Up on either side and
    /// none sends work that would be dropped; a peer already Up (a hook installed late)
    /// hears `peer_up` now.
    pub fn set_inbound(&self, inbound: Arc<dyn Inbound>) -> bool {
        self.inner.set_inbound(inbound)
    }

    /// Resolves when the cluster refused this node for good (its identity, or a setting a
    /// majority of the core members has otherwise; `cluster::refusal`), with the peers'
    /// words: the node then stops and the binary exits 2 ([`Refused::ByPeers`]).
    pub async fn refused(&self) -> String {
        let mut rx = self.inner.refusal.subscribe();
        let words = match rx.wait_for(Option::is_some).await {
            Ok(words) => words.clone().unwrap_or_default(),
            // The sender lives in `Inner`, which this handle holds.
            Err(_) => std::future::pending().await,
        };
        words
    }

    /// Whether this node sees a majority of the core members Up (itself included when core).
    pub fn has_majority(&self) -> bool {
        self.inner.has_majority()
    }

    /// The `/cluster` document.
    pub fn status(&self) -> serde_json::Value {
        self.inner.status()
    }
}

/// Where group `gid` lives: always [`Route::Local`] on a single node (no cluster running),
/// else [`Cluster::route`]. One atomic load on a single node.
pub fn route(gid: u64) -> Route {
    match RUNNING.get() {
        None => Route::Local,
        Some(c) => c.route(gid),
    }
}

/// `/cluster` JSON, or `None` on a single node.
pub fn status_json() -> Option<String> {
    Cluster::get().map(|c| c.status().to_string())
}

/// `/cluster/groups/<id>` on the metrics port: where group `id` lives (its shard, its
/// owner and whether this node reaches it), for an operator; an error naming the bad id or
/// saying the node is not in a cluster.
pub fn group_json(id: &str) -> Result<String, String> {
    let cluster = Cluster::get().ok_or("not in a cluster (cluster.enabled = false)")?;
    let gid = convoke_protocol::ids::parse_group_id(id)
        .map_err(|_| format!("{id:?} is not a group id"))?;
    let (owner, state) = match cluster.route(gid) {
        Route::Local => (cluster.name().to_owned(), "local"),
        Route::Remote(peer) => (peer, "up"),
        Route::Unavailable(peer) => (peer, "unreachable"),
    };
    Ok(serde_json::json!({
        "group": id,
        "shard": placement::shard_of(gid, cluster.shards()),
        "owner": owner,
        "owner_state": state,
        "asked": cluster.name(),
    })
    .to_string())
}

/// Readiness as far as the cluster is concerned: always on a single node; in a cluster,
/// a majority of core members Up.
pub fn ready() -> bool {
    Cluster::get().is_none_or(|c| c.has_majority())
}

/// Core member names, sorted, and the shard table that indexes into them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    core: Vec<String>,
    table: Vec<u16>,
}

impl Placement {
    /// From core member names in any order.
    fn new(mut core: Vec<String>, shards: u32) -> Placement {
        core.sort();
        core.dedup();
        let table = placement::shard_table(shards, core.len());
        Placement { core, table }
    }

    fn is_core(&self, name: &str) -> bool {
        self.core.iter().any(|n| n == name)
    }

    /// The owner of each shard, in shard order.
    fn owners(&self) -> impl Iterator<Item = &str> {
        self.table
            .iter()
            .filter_map(|&i| self.core.get(usize::from(i)).map(String::as_str))
    }
}

impl Inner {
    /// The core member that owns `gid`; `None` only on a gateway that has not heard from a
    /// core member yet.
    fn owner_of(&self, gid: u64) -> Option<&str> {
        let p = self.placement.get()?;
        let shard = placement::shard_of(gid, self.cfg.shards) as usize;
        p.table
            .get(shard)
            .and_then(|&i| p.core.get(usize::from(i)))
            .map(String::as_str)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The member list of a config, parsed (validation already accepted it).
fn members_of(cfg: &ClusterConfig) -> Vec<Member> {
    cfg.parsed_members().unwrap_or_default()
}
