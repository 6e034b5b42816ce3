//! Prometheus metrics (metrics + metrics-exporter-prometheus) and the health endpoints,
//! served over HTTP on their own address: `/metrics`, `/healthz` (live), `/readyz`
//! (serving QUIC; in a cluster also seeing a majority of the core members Up) and
//! `/cluster` (the cluster's members, their state and the shard owners, as JSON).
//!
//! [`CATALOGUE`] lists every series the broker exports, with its kind, unit and help text:
//! [`handle`] describes each one (so `/metrics` carries `# HELP` lines) and creates the
//! series that alerts and dashboards rely on at zero, so that a rate or an `absent()` is
//! meaningful from the first scrape rather than from the first event. The code that counts
//! something calls `metrics::counter!` (etc.) with the same name where it happens; a unit test
//! keeps the catalogue within Prometheus naming conventions (`convoke_` prefix, `_total`
//! counters, base units such as `_seconds` and `_bytes`).
//!
//! The HTTP side is a deliberately tiny GET-only responder on tokio: three fixed paths do not
//! earn a web framework in the broker's dependency tree.

use crate::store::Store;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static READY: AtomicBool = AtomicBool::new(false);

/// What kind of series a catalogue entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets on restart); named `..._total`.
    Counter,
    /// A current value.
    Gauge,
    /// A distribution, exported as Prometheus buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One exported metric.
#[derive(Debug)]
pub struct MetricDef {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its unit (base units only: seconds, bytes, a count).
    pub unit: Unit,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Label sets to create at zero on startup; empty when the labels are only known as
    /// traffic arrives (method and code of a request), `&[&[]]` for the unlabelled series.
    pub zero: &'static [&'static [(&'static str, &'static str)]],
}

const UNLABELLED: &[&[(&str, &str)]] = &[&[]];

/// Every series the broker exports.
pub const CATALOGUE: &[MetricDef] = &[
    // ---- connections --------------------------------------------------------------------
    MetricDef {
        name: "convoke_connections",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "QUIC connections open now (handshaking or logged in).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_sessions_online",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Logged-in sessions now (connections past the handshake).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_connections_opened_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "QUIC connections accepted (TLS handshake started; ended handshakes are counted as refused with reason tls).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_sessions_early_data_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Sessions welcomed before their TLS handshake completed (0.5-RTT): their hello came in 0-RTT early data. A lower bound of 0-RTT reconnects (an early hello read after the handshake is not counted).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_connections_refused_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Connections refused before a session started, by reason (tls, timeout: not logged in within sessions.handshake_timeout_ms, protocol, version, device, token, connection_limit: sessions.max_connections, ip_limit: sessions.max_connections_per_ip, rate_limit: more new connections from one source than sessions.new_connections_per_ip_per_sec, refused without TLS work, rate_limit_dropped: the same from a source that kept on after 8 refusals, dropped without an answer).",
        zero: &[
            &[("reason", "connection_limit")],
            &[("reason", "ip_limit")],
            &[("reason", "rate_limit")],
            &[("reason", "rate_limit_dropped")],
            &[("reason", "tls")],
            &[("reason", "timeout")],
            &[("reason", "protocol")],
            &[("reason", "version")],
            &[("reason", "device")],
            &[("reason", "token")],
        ],
    },
    MetricDef {
        name: "convoke_tls_reloads_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Reloads of the TLS certificate and key (SIGHUP, or a change seen by tls.reload_check_secs), by result: ok (new connections get the new pair), error (the files did not load; the previous pair is still served).",
        zero: &[&[("result", "ok")], &[("result", "error")]],
    },
    MetricDef {
        name: "convoke_metrics_accept_errors_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Connections to this metrics endpoint that could not be accepted (e.g. out of file descriptors); it keeps serving.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_connections_retried_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Connection attempts answered with a QUIC Retry (address validation) because many connections were logging in (sessions.retry_above_logins), the attempt would reach a connection cap, or its address had used the half of its new-connection burst that unvalidated addresses may use (sessions.new_connections_per_ip_per_sec).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_connections_closed_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Connections the broker closed, by reason (frame_too_large, malformed_frame: a bad frame; token_expired: the session's token expired).",
        zero: &[
            &[("reason", "frame_too_large")],
            &[("reason", "malformed_frame")],
            &[("reason", "token_expired")],
        ],
    },
    // ---- requests -----------------------------------------------------------------------
    MetricDef {
        name: "convoke_requests_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Requests answered, by API method and result code (\"ok\", or the API error code such as -3, 603, 605, 1 internal, 500 busy).",
        zero: &[],
    },
    MetricDef {
        name: "convoke_request_duration_seconds",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Time from reading a request to queueing its response, by API method.",
        zero: &[],
    },
    // ---- delivery -----------------------------------------------------------------------
    MetricDef {
        name: "convoke_events_delivered_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Group events handed to client sessions, written or queued (one per receiving session).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_messages_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Chat messages accepted (sendGroupMessage), before fan-out.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_messages_deduplicated_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Sends answered with an earlier message because their client message id was already used (client retries); nothing was stored or delivered again.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_messages_delivered_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Chat messages handed to client sessions, written or queued (one per receiving session).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_fanout_recipients",
        kind: Kind::Histogram,
        unit: Unit::Count,
        help: "Sessions one fan-out (one event or message to a group) was handed to.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_fanout_duration_seconds",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Time one fan-out took to hand an event to all its local sessions.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_session_queue_depth",
        kind: Kind::Histogram,
        unit: Unit::Count,
        help: "Frames waiting in a session's event backlog (held for coalescing, or the stream could not take them), sampled per frame delivered (0: nothing held or waiting).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_slow_client_disconnects_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Sessions closed as slow consumers, by queue: events (event backlog full in frames or bytes, or no progress for sessions.write_timeout_ms) or answers (none taken for sessions.write_timeout_ms; answers over sessions.answer_queue_bytes wait for room instead).",
        zero: &[&[("queue", "events")], &[("queue", "answers")]],
    },
    MetricDef {
        name: "convoke_transfers_stopped_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Shared-file transfers refused or stopped for their pace, by reason: user_limit (files.max_transfers_per_user in progress already), slow (under files.transfer_min_bytes_per_sec over a rate window), deadline (past files.transfer_max_secs).",
        zero: &[
            &[("reason", "user_limit")],
            &[("reason", "slow")],
            &[("reason", "deadline")],
        ],
    },
    MetricDef {
        name: "convoke_kept_events_dropped_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Unacknowledged state-changing events dropped because more than sessions.kept_events_max were kept for the user, or more than sessions.kept_events_per_sender_max from one operator (oldest first; when a new one is written, or at a login).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_kept_events_superseded_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Kept events dropped because a newer one made them moot (a destroy of their group, or the removal of their user from it).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_rate_limited_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Requests refused by a per-user quota or the disk watermark, by kind: requests (state-changing) and messages (quotas.*_per_sec, 509), disk_data and disk_files (under quotas.min_free_disk_mb), file_bytes (quotas.file_mb_per_user).",
        zero: &[
            &[("kind", "requests")],
            &[("kind", "messages")],
            &[("kind", "disk_data")],
            &[("kind", "disk_files")],
            &[("kind", "file_bytes")],
        ],
    },
    MetricDef {
        name: "convoke_disk_free_bytes",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        help: "Free bytes in the data or files directory at the last reading (at most once a second, when a send or upload checks the watermark quotas.min_free_disk_mb).",
        zero: UNLABELLED,
    },
    // ---- group actors -------------------------------------------------------------------
    MetricDef {
        name: "convoke_group_actors",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Group actors running now (active groups).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_group_actor_spawns_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Group actors started (first use, after an idle stop, or a restart).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_group_actor_stops_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Group actors stopped on purpose, by reason (idle; refused: loaded for a request that was refused and nothing else; evicted: the least recently used, to stay within groups.max_resident; store: after a commit whose outcome is unknown, so that the group is re-read from the store).",
        zero: &[
            &[("reason", "idle")],
            &[("reason", "refused")],
            &[("reason", "evicted")],
            &[("reason", "store")],
        ],
    },
    MetricDef {
        name: "convoke_group_actor_restarts_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Group actors that failed (panicked) and were restarted from the store.",
        zero: UNLABELLED,
    },
    // ---- store and files ----------------------------------------------------------------
    MetricDef {
        name: "convoke_store_disk_bytes",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        help: "Size of the sled database on disk (measured at each scrape).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_store_errors_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Store failures, by kind: write (a write or flush failed: outcome unknown, later writes refused, the node stops), deadline (a commit not confirmed within store.commit_deadline_ms: outcome unknown, /readyz false until it completes), queue_full (a change refused, nothing written: the commit queue was over store.commit_queue_mb), corrupt (a record that does not decode, skipped), encode (a record that could not be encoded: its write set refused).",
        zero: &[
            &[("kind", "write")],
            &[("kind", "deadline")],
            &[("kind", "queue_full")],
            &[("kind", "corrupt")],
            &[("kind", "encode")],
        ],
    },
    MetricDef {
        name: "convoke_store_commits_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Flushed store commits (each may carry several write sets: group commit).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_store_write_sets_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Atomic write sets committed to the store.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_store_commit_seconds",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Time one store commit (write and flush) took.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_file_bytes_total",
        kind: Kind::Counter,
        unit: Unit::Bytes,
        help: "Shared-file bytes transferred, by direction (up: client to broker, down: broker to client).",
        zero: &[&[("direction", "up")], &[("direction", "down")]],
    },
    MetricDef {
        name: "convoke_file_resumes_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Shared-file transfers resumed, by direction (up: a resumed upload that found its kept partial file or its completed entry; down: a download from a byte offset past 0).",
        zero: &[&[("direction", "up")], &[("direction", "down")]],
    },
    MetricDef {
        name: "convoke_file_orphans_quarantined_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Blobs without an index entry that the start-up sweep moved to files.dir/quarantine (never deleted).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_file_partials_expired_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Interrupted uploads not resumed within files.resume_keep_secs: their partial file was deleted and their place under the group's file quota released.",
        zero: UNLABELLED,
    },
    // ---- node and cluster ---------------------------------------------------------------
    MetricDef {
        name: "convoke_ready",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "1 while the node serves QUIC clients (the same as /readyz answering 200), else 0.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_build_info",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Always 1; the version label is the broker's version.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_members",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Cluster members this node sees Up, itself included (1 for a single node).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_cluster_peers",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Cluster members by the state this node sees them in: up (itself included), connecting, down (lost, being redialed), refused (its Hello was refused). Absent on a single node.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_peer_rtt_seconds",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Heartbeat round trip to each peer's router (Ping to Pong), by peer node name.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_peer_down_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Peers declared Down, by peer and reason: heartbeat_timeout (no Pong within cluster.peer_timeout_ms), disconnected (its session closed), new_session (replaced by a new session), overloaded (over cluster.peer_queue_bytes that long), refused.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_refused_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Cluster connections or peers refused, by reason: unauthenticated (closed before the cookie handshake completed: a wrong cluster.cookie, or not a convoke node), tls (a TLS handshake on the cluster port failed or took longer than cluster.peer_timeout_ms), app_secret, shards, members, ordinal (another known node has it), proto, name, duplicate_name, node_uid (a core node's name on another data dir than the one this node first met it with), unknown_node.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_peer_transfers_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Shared-file transfer streams proxied between nodes (the group's blobs live on its owner), by side: ingress (a client's stream passed on to the owner), owner (a peer's authenticated stream served here).",
        zero: &[],
    },
    MetricDef {
        name: "convoke_peer_transfers_refused_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Node-to-node transfer connections (ALPN convoke-peer/1) closed or refused, by reason: bad_mac (the opening frame's HMAC is not that of cluster.cookie and the name), malformed (no decodable opening frame), timeout (no authenticated stream within sessions.handshake_timeout_ms), not_clustered, cert_pin (the owner's certificate is not the one its Hello announced).",
        zero: &[],
    },
    MetricDef {
        name: "convoke_peer_transfers_lost_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Proxied transfer streams whose owner node was lost mid-way (connection broken or the node Down): the client is answered 500 at once, or its stream reset if part of the answer had passed.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_cluster_decode_errors_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Frames from peers that did not decode as a batch (bincode with a 4 MiB limit): dropped and logged, never a panic.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_cluster_batches_sent_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Batches cast to each peer's router (one per drain of its link), by peer.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_sent_bytes_total",
        kind: Kind::Counter,
        unit: Unit::Bytes,
        help: "Bytes of items sent to each peer in batches, by peer.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_deliveries_sent_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Deliver items (one per event per node, whatever the number of recipients there) sent to each peer, by peer.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_deliveries_dropped_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Deliver items dropped towards a peer: its link over cluster.peer_queue_bytes, or the peer not Up (messages come back from history, kept events from the inbox), by peer.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_peer_queue_bytes",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        help: "Bytes queued towards each peer or sent and not yet acknowledged by its heartbeat, by peer (limit cluster.peer_queue_bytes).",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_deliveries_received_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Deliver items received from each peer (one per event or message per node, handed to this node's sessions of the users it lists), by peer.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_deliveries_shed_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Deliver items received but dropped because this node's delivery workers were 64 MiB behind (this node's CPU cannot keep up).",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_cluster_presence_users",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Users this node's presence directory knows online on each other node (the targets of cross-node fan-out there), by peer. Absent on a single node.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_expired_requests_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Requests forwarded from another node whose deadline (the time left when sent, mapped onto this node's clock through the sender's Pings, so time queued, in transit or frozen counts) passed before they ran: not executed, answered 500 \"not executed: its deadline passed\".",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_cluster_batches_failed_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Batches towards an Up peer that could not be cast (serialization or a closed session), by peer: their deliveries are counted as dropped and their calls failed at once.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_presence_slots_exhausted_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Presence items from a peer that found all 64 presence slots taken (more than 64 other nodes at once): that peer's users get no cross-node fan-out. Gateways not up for 20 x cluster.reconnect_max_ms are forgotten and free their slot.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_cluster_stale_calls_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Cross-node calls of a process that no longer runs (killed and restarted), by side: reply (an answer for this node's previous incarnation, dropped so it cannot complete a new call with the same id), request (a peer's request from its previous incarnation, not executed).",
        zero: &[],
    },
    MetricDef {
        name: "convoke_cluster_shards_unavailable",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Shards whose owner this node does not see Up: their groups answer 500 (retryable) here. 0 on a single node.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_cluster_foreign_spawn_refused_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Group loads refused because the group's shard belongs to another node (routing sends every call to the owner): must stay 0.",
        zero: UNLABELLED,
    },
    MetricDef {
        name: "convoke_cluster_partial_reads_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Reads across nodes (what: joined, public, inbox, user_facts, ack) that left out a node not Up or not answering in cluster.request_timeout_ms: the result was partial.",
        zero: &[],
    },
    MetricDef {
        name: "convoke_forwarded_requests_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Requests forwarded to the group's owner on another node.",
        zero: UNLABELLED,
    },
];

/// Buckets of every `_seconds` histogram: 100 us to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets of fan-out sizes: one session to a group of 100k.
const RECIPIENT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    20000.0, 50000.0, 100000.0,
];

/// Buckets of queue depths: powers of two up to beyond the largest sensible queue.
const DEPTH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes (the
/// exporter keeps raw samples until then; without this they would pile up).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Marks the node as serving (or not) for `/readyz` and `convoke_ready`.
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::Relaxed);
    metrics::gauge!("convoke_ready").set(if ready { 1.0 } else { 0.0 });
}

/// Installs the global recorder (once per process), describes every metric and creates
/// the zero series.
pub fn handle() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let h = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("convoke_fanout_recipients".into()),
            RECIPIENT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("convoke_session_queue_depth".into()),
            DEPTH_BUCKETS,
        )?
        .install_recorder()?;
    let _ = HANDLE.set(h.clone());
    register_catalogue();
    Ok(HANDLE.get().cloned().unwrap_or(h))
}

fn register_catalogue() {
    for m in CATALOGUE {
        match m.kind {
            Kind::Counter => {
                metrics::describe_counter!(m.name, m.unit, m.help);
                for labels in m.zero {
                    metrics::counter!(m.name, *labels).increment(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(m.name, m.unit, m.help);
                for labels in m.zero {
                    metrics::gauge!(m.name, *labels).increment(0.0);
                }
            }
            Kind::Histogram => {
                metrics::describe_histogram!(m.name, m.unit, m.help);
                for labels in m.zero {
                    // Creating the handle registers the series; it renders with zero counts.
                    let _ = metrics::histogram!(m.name, *labels);
                }
            }
        }
    }
    metrics::gauge!("convoke_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // A single node is a cluster of one; the cluster module takes this over when it runs.
    metrics::gauge!("convoke_cluster_members").set(1.0);
    metrics::gauge!("convoke_ready").set(if READY.load(Ordering::Relaxed) {
        1.0
    } else {
        0.0
    });
}

/// The pause after a failed accept of the metrics endpoint.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves the metrics and health endpoints on `addr`; returns the bound address.
pub async fn serve(addr: SocketAddr, store: Store) -> anyhow::Result<SocketAddr> {
    let handle = handle()?;
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    metrics::gauge!("convoke_store_disk_bytes").set(store.size_on_disk() as f64);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        // Logged once per run of failures, not once per retry.
        let mut failing = false;
        loop {
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("metrics endpoint: accepting connections again");
                    }
                    sock
                }
                Err(e) => {
                    // Out of descriptors or memory, or a connection reset before it was
                    // accepted: none of it is a reason to stop serving. A short pause lets
                    // descriptors free up instead of spinning on a pending connection.
                    metrics::counter!("convoke_metrics_accept_errors_total").increment(1);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "metrics endpoint: cannot accept a connection; retrying every 100 ms");
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let handle = handle.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let Ok(Ok(n)) =
                    tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                        .await
                else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, ctype, body) = match path {
                    "/metrics" => {
                        metrics::gauge!("convoke_store_disk_bytes")
                            .set(store.size_on_disk() as f64);
                        let ready = READY.load(Ordering::Relaxed)
                            && store.healthy()
                            && crate::cluster::ready();
                        metrics::gauge!("convoke_ready").set(if ready { 1.0 } else { 0.0 });
                        ("200 OK", "text/plain; version=0.0.4", handle.render())
                    }
                    "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                    // Serving QUIC, and the store takes writes (none failed, none past
                    // its commit deadline).
                    "/readyz"
                        if READY.load(Ordering::Relaxed)
                            && store.healthy()
                            && crate::cluster::ready() =>
                    {
                        ("200 OK", "text/plain", "ready\n".to_string())
                    }
                    // In a cluster: a node that sees no majority of the core members steers
                    // its load balancer's traffic away.
                    "/readyz" if READY.load(Ordering::Relaxed) && store.healthy() => (
                        "503 Service Unavailable",
                        "text/plain",
                        "not ready: no majority of the cluster's core members is up\n".to_string(),
                    ),
                    "/readyz" if READY.load(Ordering::Relaxed) => (
                        "503 Service Unavailable",
                        "text/plain",
                        "not ready: store failing\n".to_string(),
                    ),
                    "/readyz" => (
                        "503 Service Unavailable",
                        "text/plain",
                        "not ready\n".to_string(),
                    ),
                    "/cluster" => match crate::cluster::status_json() {
                        Some(json) => ("200 OK", "application/json", json),
                        None => (
                            "404 Not Found",
                            "text/plain",
                            "not in a cluster (cluster.enabled = false)\n".to_string(),
                        ),
                    },
                    p if p.starts_with("/cluster/groups/") => {
                        let id = &p["/cluster/groups/".len()..];
                        match crate::cluster::group_json(id) {
                            Ok(json) => ("200 OK", "application/json", json),
                            Err(why) => ("404 Not Found", "text/plain", format!("{why}\n")),
                        }
                    }
                    _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn catalogue_follows_prometheus_naming() {
        let mut seen = HashSet::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(
                m.name.starts_with("convoke_"),
                "{}: no convoke_ prefix",
                m.name
            );
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}: not snake_case",
                m.name
            );
            assert!(!m.help.is_empty(), "{}: no help", m.name);
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Gauge | Kind::Histogram => {
                    assert!(!m.name.ends_with("_total"), "{}", m.name)
                }
            }
            for suffix in ["_bucket", "_sum", "_count"] {
                assert!(!m.name.ends_with(suffix), "{}: reserved suffix", m.name);
            }
            match m.unit {
                Unit::Seconds => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                Unit::Bytes => assert!(
                    m.name.ends_with("_bytes") || m.name.ends_with("_bytes_total"),
                    "{}",
                    m.name
                ),
                Unit::Count => assert!(
                    !m.name.contains("_seconds") && !m.name.contains("_bytes"),
                    "{}: unit suffix without the unit",
                    m.name
                ),
                other => panic!("{}: not a base unit: {other:?}", m.name),
            }
        }
    }

    /// Every literal name given to a `counter!`, `gauge!` or `histogram!` call in the broker's
    /// source is in the catalogue, so each series has a HELP line and a documented meaning.
    #[test]
    fn every_emitted_metric_is_in_the_catalogue() {
        let known: HashSet<&str> = CATALOGUE.iter().map(|m| m.name).collect();
        let mut files = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut emitted = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    files.push(entry.path());
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for macro_call in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
                for (i, _) in text.match_indices(macro_call) {
                    let rest = &text[i + macro_call.len()..];
                    let name = &rest[..rest.find('"').unwrap_or(0)];
                    assert!(
                        known.contains(name),
                        "{}: {name} is emitted but not in metrics::CATALOGUE",
                        path.display()
                    );
                    emitted += 1;
                }
            }
        }
        assert!(emitted > 10, "found only {emitted} metric calls");
    }

    #[test]
    fn buckets_ascend() {
        for b in [SECONDS_BUCKETS, RECIPIENT_BUCKETS, DEPTH_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        }
    }
}
