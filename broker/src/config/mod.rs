//! The broker's configuration: one typed struct, read from layers.
//!
//! Every setting has a default, so an empty (or absent) file is a working development setup.
//! [`Config::load`] starts from those defaults and overlays, in order, the TOML file, then
//! `CONVOKE_<SECTION>__<FIELD>` environment variables, then command-line flags
//! ([`Config::load_layered`]); the last layer that sets a value wins. The result is checked
//! by [`Config::validate`]; any problem comes back as a [`ConfigError`] naming the setting
//! (`limits.server_max_users`), its bad value and where that value came from, never as a
//! panic. The binary exits with [`ConfigError::EXIT_CODE`] on such an error.
//!
//! [`default_toml`] is the commented default file (`convoke generate-config` prints it; the
//! same text is `ops/convoke.toml`); a unit test keeps it equal to [`Config::default`].
//!
//! Layout: the types and their defaults live here, the layering in [`load`] (private), the
//! semantic checks in `validate`, the error type in `error`.

#![warn(missing_docs)]

mod cluster;
mod error;
mod load;
mod validate;
mod webtransport;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use convoke_protocol::limits;
use serde::{Deserialize, Serialize};

pub use cluster::{check_name, ClusterConfig, ClusterRole, Member};
pub use error::{ConfigError, Origin};
pub use load::{env_vars, FlagSetting, ENV_PREFIX};
pub use webtransport::WebTransportConfig;

/// The commented default configuration file: every setting, what it means, and its default.
///
/// Parsing it yields exactly [`Config::default`]. `ops/convoke.toml` holds the same bytes.
pub fn default_toml() -> &'static str {
    include_str!("default.toml")
}

/// The whole broker configuration. Each section is a TOML table of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: where the broker listens and keeps its data.
    pub server: ServerConfig,
    /// `[tls]`: the certificate of the QUIC endpoint.
    pub tls: TlsConfig,
    /// `[auth]`: the secret that signs login tokens.
    pub auth: AuthConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[log]`: log filter and format.
    pub log: LogConfig,
    /// `[limits]`: quotas of the group API.
    pub limits: LimitsConfig,
    /// `[groups]`: group actor lifecycle.
    pub groups: GroupsConfig,
    /// `[sessions]`: client connections.
    pub sessions: SessionsConfig,
    /// `[store]`: the sled database.
    pub store: StoreConfig,
    /// `[messages]`: chat messages, history and read receipts.
    pub messages: MessagesConfig,
    /// `[files]`: shared-file storage.
    pub files: FilesConfig,
    /// `[quotas]`: per-user rate limits and the free-disk watermark.
    pub quotas: QuotasConfig,
    /// `[cluster]`: this node's place in a cluster (off: a single node).
    pub cluster: ClusterConfig,
    /// `[webtransport]`: the browser listener (off until `listen` is set).
    pub webtransport: WebTransportConfig,
    /// `[debug]`: test hooks, off by default; never for production.
    pub debug: DebugConfig,
}

/// `[server]`: where the broker listens and keeps its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// UDP address of the QUIC endpoint. Default `127.0.0.1:4433`.
    pub listen: SocketAddr,
    /// Directory of the database, files, generated certificate and secret.
    /// Default `convoke-data` (relative to the working directory).
    pub data_dir: PathBuf,
    /// On shutdown, how long open sessions get to finish before they are closed, in
    /// milliseconds. Default `5000`.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 4433)),
            data_dir: PathBuf::from("convoke-data"),
            shutdown_grace_ms: 5000,
        }
    }
}

/// `[tls]`: the certificate of the QUIC endpoint. Set both files or neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Whether a client reconnecting to this broker may send its hello in TLS 0-RTT early
    /// data (one round trip less). Only the hello is taken from early data, and nothing
    /// happens for it before the handshake completes, so a replayed hello changes nothing
    /// (ARCHITECTURE.md, "0-RTT"). Tickets are kept in memory (4 per connection, at most
    /// 40,000, ~12 MB); `false` issues and keeps none. Default `true`.
    pub early_data: bool,
    /// PEM certificate chain, leaf first. Default unset (`""`): a self-signed certificate
    /// is generated into `DATA_DIR/tls/` on first start and reused afterwards.
    #[serde(with = "empty_is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`. Default unset (`""`).
    #[serde(with = "empty_is_none")]
    pub key: Option<PathBuf>,
    /// Whether the broker may serve a generated self-signed certificate (when `cert` and
    /// `key` are unset). `false` (production): it refuses to start without them, rather
    /// than serve a certificate that clients can only trust by pinning. Default `true`.
    pub allow_generated: bool,
    /// How often to look at the certificate and key files for a change, in seconds; a
    /// change is loaded like on SIGHUP (new connections get the new certificate, open ones
    /// keep theirs). `0`: only on SIGHUP. At most 86400. Default `0`.
    pub reload_check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            early_data: true,
            cert: None,
            key: None,
            allow_generated: true,
            reload_check_secs: 0,
        }
    }
}

/// `[auth]`: the secret that signs login tokens.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The app secret (at least 16 bytes; its UTF-8 bytes are the HMAC key). Default unset
    /// (`""`): a random secret is generated into `DATA_DIR/auth/secret` on first start.
    #[serde(with = "empty_is_none")]
    pub secret: Option<String>,
    /// A file holding the app secret (its contents, less a trailing newline, are the key,
    /// as if given in `secret`): for secrets mounted as files (systemd credentials,
    /// container secrets), so that the secret is in neither argv nor the environment. Read
    /// at start. Not together with `secret`. Default unset (`""`).
    #[serde(with = "empty_is_none")]
    pub secret_file: Option<PathBuf>,
}

/// Hand-written so that logging the config never prints the secret.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// TCP address of the Prometheus scrape endpoint (`/metrics`). `""` disables it.
    /// Default `127.0.0.1:9464`.
    #[serde(with = "empty_is_none")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9464))),
        }
    }
}

/// `[log]`: log filter and format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or a tracing `EnvFilter`
    /// directive list such as `info,convoke_broker=debug`. Default `info`.
    pub level: String,
    /// Line format. Default `plain`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Plain,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text (`plain`). The default.
    #[default]
    Plain,
    /// One JSON object per line (`json`), for log shippers.
    Json,
}

/// `[limits]`: quotas of the group API. Defaults are the contract's
/// ([`convoke_protocol::limits`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest `maxusers` a group may have (owner included); at least 3. Default `100000`.
    pub server_max_users: u32,
    /// Admins per group. Default `99`.
    pub max_admins: u32,
    /// Groups one user may be a member of. Default `10000`.
    pub max_groups_per_user: u32,
    /// Concurrent sessions (connections) of one user; a new one closes the oldest.
    /// Default `8`.
    pub max_sessions_per_user: u32,
    /// Largest message payload, in bytes. Default `65536` (64 KiB).
    pub max_message_bytes: u32,
    /// Largest shared file, in bytes. Default `10485760` (10 MiB).
    pub max_file_bytes: u64,
    /// Shared files per group. Default `10000`.
    pub max_files_per_group: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            server_max_users: limits::DEFAULT_SERVER_MAX_USERS,
            max_admins: to_u32(limits::MAX_ADMINS),
            max_groups_per_user: to_u32(limits::MAX_GROUPS_PER_USER),
            max_sessions_per_user: 8,
            max_message_bytes: to_u32(limits::MAX_MESSAGE_BYTES),
            max_file_bytes: limits::MAX_FILE_BYTES,
            max_files_per_group: to_u32(limits::MAX_FILES_PER_GROUP),
        }
    }
}

/// The contract's limits are small constants; saturate rather than panic if one ever grows.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `[groups]`: group actor lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// A group actor with no traffic for this long is stopped (its state stays in the
    /// store and is re-read on next use), in seconds. Default `300`.
    pub idle_stop_secs: u64,
    /// createGroup's `members` are invited (each gets a pending invitation to accept or
    /// reject) instead of being added without being asked. Default `false` (the seed's
    /// behaviour: added directly, told by `directJoined`).
    pub create_members_as_invitations: bool,
    /// At most this many group actors are resident (loaded) at once; to load another, the
    /// least recently used one idle for at least a second is stopped, and if there is none
    /// the request is answered 500 (retry). At least 1. Default `100000`.
    pub max_resident: u64,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            idle_stop_secs: 300,
            create_members_as_invitations: false,
            max_resident: 100_000,
        }
    }
}

/// `[sessions]`: client connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Events queued for one session before it counts as a slow consumer and is
    /// disconnected (after reconnecting it catches up on messages with getGroupMessages);
    /// at least 16.
    /// Default `4096`.
    pub outbound_queue: usize,
    /// Time a new connection has to complete the login handshake, in milliseconds.
    /// Default `5000`.
    pub handshake_timeout_ms: u64,
    /// A connection with no traffic (keep-alives included) for this long is closed, in
    /// seconds. Keep it well above the clients' keep-alive interval (the bundled client's
    /// default is 10 s), or idle clients reconnect over and over. Default `60`.
    pub idle_timeout_secs: u64,
    /// A session handed an event less than this long ago counts as busy, in milliseconds;
    /// `0` turns coalescing off; at most 60000. Default `200`.
    pub coalesce_busy_ms: u64,
    /// How long a busy session holds a new event to send it with the ones that follow, in
    /// milliseconds (fewer packets and ACKs per delivery). An idle session never waits.
    /// At most 1000; `0` also turns coalescing off. Default `50`.
    pub coalesce_window_ms: u64,
    /// State-changing events kept for one user until a client of theirs acknowledges them;
    /// at a login with more waiting, the oldest beyond this many are dropped (and counted in
    /// `convoke_kept_events_dropped_total`). Bounds what a user whose clients never take
    /// events (`ignore_events`, one-shot CLI commands) accumulates. At least 1.
    /// Default `10000`.
    pub kept_events_max: usize,
    /// Of the events kept for one user, how many one operator's actions may fill; beyond it
    /// that operator's oldest event for the user is dropped when a new one is written, so
    /// that one user flooding another's kept events (groups created with them as a member,
    /// then destroyed, over and over) pushes out only their own. Each write reads that
    /// operator's events for the user, so keep it in the hundreds. At least 1.
    /// Default `100`.
    pub kept_events_per_sender_max: usize,
    /// Bytes of events one session may have queued (held for coalescing or not yet taken
    /// by its stream) before it counts as a slow consumer, like `outbound_queue` in frames;
    /// at least 65536. Default `16777216` (16 MiB).
    pub outbound_queue_bytes: usize,
    /// Bytes of encoded answers one session may have waiting to be written; more wait for
    /// room and the session reads no new request meanwhile (one answer is always let
    /// through, however large); at least 65536. Default `16777216` (16 MiB).
    pub answer_queue_bytes: usize,
    /// A session whose answers or events make no progress into its streams for this long
    /// (the client stopped reading) is closed as a slow consumer, in milliseconds; at least
    /// 100. Default `30000`.
    pub write_timeout_ms: u64,
    /// QUIC connections open at once (logging in or logged in); over it new connection
    /// attempts are refused at once (QUIC CONNECTION_REFUSED). At least 1.
    /// Default `100000`.
    pub max_connections: usize,
    /// QUIC connections open at once from one IP address; over it a new one is refused
    /// after the QUIC handshake with a 500 naming the address. `0` = no limit. Clients
    /// behind one NAT share an address: keep it well above one user's sessions.
    /// Default `1000`.
    pub max_connections_per_ip: usize,
    /// Connections still logging in above which a new connection attempt from an address
    /// not yet validated must first answer a QUIC Retry (proving it receives at the address
    /// it claims, one round trip more) before it counts against the caps; `0` = always.
    /// Attempts that would reach a cap are always retried first. Default `256`.
    pub retry_above_logins: usize,
    /// New connections per second from one source address (an IPv4 address, an IPv6 /64),
    /// judged before any TLS work: over it an attempt is refused at once (QUIC
    /// CONNECTION_REFUSED), and dropped silently if its source keeps on after 8 refusals.
    /// Bounds the TLS handshakes one address can make the broker do by reconnecting as soon
    /// as it is closed. Attempts from addresses QUIC has not validated may spend only half
    /// of the burst (then they answer a Retry), so spoofed packets cannot use up another
    /// address's allowance. `0` = no limit. Default `20`: an office behind one NAT
    /// reconnecting all at once (after a broker restart) gets 100 at once and 20 more each
    /// second, 1,000 clients in 45 s.
    pub new_connections_per_ip_per_sec: u32,
    /// Of `new_connections_per_ip_per_sec`, how many may come at once (the bucket's size);
    /// at least 1. Default `100`.
    pub new_connections_per_ip_burst: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            outbound_queue: 4096,
            handshake_timeout_ms: 5000,
            idle_timeout_secs: 60,
            coalesce_busy_ms: 200,
            coalesce_window_ms: 50,
            kept_events_max: 10_000,
            kept_events_per_sender_max: 100,
            outbound_queue_bytes: 16 * 1024 * 1024,
            answer_queue_bytes: 16 * 1024 * 1024,
            write_timeout_ms: 30_000,
            max_connections: 100_000,
            max_connections_per_ip: 1000,
            retry_above_logins: 256,
            new_connections_per_ip_per_sec: 20,
            new_connections_per_ip_burst: 100,
        }
    }
}

/// `[store]`: the sled database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled's page cache, in MiB (sled's own default of 1 GiB is far too much). Default `64`.
    pub cache_capacity_mb: u64,
    /// Group commit: a committer that flushed within the last 5 ms waits this many
    /// microseconds for more writes, so that one flush serves them all (an idle one flushes
    /// at once); `0` = never wait. Nothing is acknowledged before its flush either way.
    /// Default `1000`.
    pub group_commit_window_us: u64,
    /// A change whose commit is not confirmed within this many milliseconds (a hung disk)
    /// is answered 500 "outcome unknown" instead of waiting, and `/readyz` turns false until
    /// the store catches up. At least 100. Default `10000`.
    pub commit_deadline_ms: u64,
    /// Bytes of write sets waiting for the committer, in MiB, beyond which changes are
    /// refused with 500 (nothing changed) instead of queued. At least 1. Default `64`.
    pub commit_queue_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_capacity_mb: 64,
            group_commit_window_us: 1000,
            commit_deadline_ms: 10_000,
            commit_queue_mb: 64,
        }
    }
}

/// `[messages]`: chat messages, history and read receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Messages kept per group for history (getGroupMessages). Default `10000`.
    pub history_per_group: u32,
    /// Messages older than this are dropped from history, in seconds. Default `604800`
    /// (7 days).
    pub history_max_age_secs: u64,
    /// Messages one user may send per second (per group); `0` = no limit. Default `0`.
    pub rate_limit_per_sec: u32,
    /// Read receipts are kept only in groups of at most this many members; `0` disables
    /// them. Default `500`.
    pub read_receipt_max_group_size: u32,
    /// Read receipts are accepted for messages younger than this, in seconds. Default
    /// `259200` (3 days).
    pub read_receipt_window_secs: u64,
    /// Idempotent sends: for this long a send's client message id answers a repeat of it
    /// (same sender and group) with the original message instead of storing a new one, in
    /// seconds. Ids are dropped with their messages' history, whichever comes first.
    /// 1 to 2592000 (30 days). Default `600`.
    pub dedup_window_secs: u64,
    /// Largest getGroupMessages answer, in bytes of messages: a page that would be larger
    /// holds fewer messages than asked (at least one); the client continues from the last
    /// (or first) seq it got. At least `limits.max_message_bytes`, at most 3 MiB (a frame
    /// is 4 MiB). Default `524288` (512 KiB).
    pub history_page_bytes: u32,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            history_per_group: 10_000,
            history_max_age_secs: 604_800,
            rate_limit_per_sec: 0,
            read_receipt_max_group_size: 500,
            read_receipt_window_secs: 259_200,
            dedup_window_secs: 600,
            history_page_bytes: 512 * 1024,
        }
    }
}

/// `[quotas]`: what one user may cost the others: per-user token buckets (over all their
/// sessions on this node) and the node's free-disk watermark. Over a rate, a request is
/// answered 509 (MESSAGE_CURRENT_LIMITING) naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// State-changing requests (everything but reads and sends: management, membership,
    /// attributes, receipts, createGroup) one user may make per second; `0` = no limit.
    /// Default `50`.
    pub requests_per_sec: u32,
    /// State-changing requests one user may make at once before the rate applies; at
    /// least 1. Default `500`.
    pub requests_burst: u32,
    /// Messages one user may send (and read receipts, ackGroupMessage, they may give) per
    /// second, over all groups; `0` = no limit (see also
    /// `messages.rate_limit_per_sec`, per group). Default `100`.
    pub messages_per_sec: u32,
    /// Messages one user may send at once before the rate applies; at least 1.
    /// Default `1000`.
    pub messages_burst: u32,
    /// Sends and uploads are refused while the data (or files) directory has less than
    /// this many MiB free, so that the disk never fills under the store; `0` = never.
    /// Default `256`.
    pub min_free_disk_mb: u64,
    /// Shared files one user may own on this node (all groups), in MiB; an upload that
    /// would go over is refused with error 50 (MAX_LIMIT). `0` = no limit. Default `1024`.
    pub file_mb_per_user: u64,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            requests_per_sec: 50,
            requests_burst: 500,
            messages_per_sec: 100,
            messages_burst: 1000,
            min_free_disk_mb: 256,
            file_mb_per_user: 1024,
        }
    }
}

/// `[files]`: shared-file storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Directory of shared-file blobs. Default unset (`""`): `DATA_DIR/files`.
    #[serde(with = "empty_is_none")]
    pub dir: Option<PathBuf>,
    /// Seconds an upload interrupted by a broken stream (connection lost) is kept for the
    /// same user to resume it: its partial file stays in `tmp/` and its place under the
    /// group's file quota stays taken; then both are released. A completed upload's id is
    /// remembered as long, so that a resume whose final answer was lost gets the entry.
    /// `0` = nothing is kept (a resume starts over). At most `86400`. Default `300`.
    pub resume_keep_secs: u64,
    /// Shared-file transfers (uploads and downloads) one user may have in progress at
    /// once, over all their sessions; one more is refused with 50 (MAX_LIMIT). At least 1.
    /// Default `8`.
    pub max_transfers_per_user: u32,
    /// Slowest a transfer may be, in bytes per second, averaged over each
    /// `transfer_rate_window_ms`: a slower one is stopped (an upload is kept for a resume
    /// as if its connection broke). `0` = no minimum. Default `1024`.
    pub transfer_min_bytes_per_sec: u64,
    /// The window over which `transfer_min_bytes_per_sec` is measured, in milliseconds;
    /// 100 to 600000. Default `30000`.
    pub transfer_rate_window_ms: u64,
    /// Longest one transfer stream may take, header to last byte, in seconds; a resumed
    /// upload gets a new stream and a new deadline. At least 1. Default `3600`.
    pub transfer_max_secs: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            dir: None,
            resume_keep_secs: 300,
            max_transfers_per_user: 8,
            transfer_min_bytes_per_sec: 1024,
            transfer_rate_window_ms: 30_000,
            transfer_max_secs: 3600,
        }
    }
}

/// `[debug]`: test hooks, off by default; never for production.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Lets tests crash on purpose: a modifyGroup with ext `"convoke:panic"` panics the
    /// group actor (supervision and restart), `"convoke:fail-flush"` fails its commit after
    /// the change was applied (a disk error: the node stops), `"convoke:hang-commit:<ms>"`
    /// holds the committer that long (a hung disk), each only once the request passed its
    /// permission check; a sendGroupMessage whose client message id starts with
    /// `"fault:abort-after-commit"` aborts the broker process right after the message is
    /// durable, before it is answered or delivered (a crash between the write and the
    /// answer). Only debug builds (tests) accept `true`; a release build refuses to start
    /// with it. Default `false`.
    pub fault_injection: bool,
}

impl Config {
    /// Loads the configuration: defaults, overlaid by the TOML `file` (if any), overlaid by
    /// the `CONVOKE_<SECTION>__<FIELD>` variables in `env`, then validated.
    ///
    /// Pass [`env_vars()`] (not `std::env::vars()`, which panics on non-UTF-8 variables).
    /// Variables without the `CONVOKE_` prefix are ignored, and so are `CONVOKE_` variables
    /// without a `__` (they are left to the command-line parser, e.g. `CONVOKE_CONFIG`),
    /// unless they look like a misspelt setting. A `CONVOKE_X__Y` that names no setting is
    /// an error.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::load_layered(file, env, Vec::new())
    }

    /// [`Config::load`], then command-line `flags` on top (they win over the environment).
    pub fn load_layered(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: impl IntoIterator<Item = FlagSetting>,
    ) -> Result<Config, ConfigError> {
        load::load_layered(file, env, flags)
    }

    /// The directory of shared-file blobs: `files.dir`, or `DATA_DIR/files`.
    pub fn files_dir(&self) -> PathBuf {
        self.files
            .dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("files"))
    }
}

/// Serde adapter for optional settings: `""` (or a missing key) means unset, so that an
/// environment variable can unset a value and every setting appears in the default file.
mod empty_is_none {
    use std::borrow::Cow;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    /// A setting that is written as a string in TOML.
    pub(super) trait Text: Sized {
        fn to_text(&self) -> Cow<'_, str>;
        fn from_text(text: String) -> Result<Self, String>;
    }

    impl Text for String {
        fn to_text(&self) -> Cow<'_, str> {
            Cow::Borrowed(self)
        }
        fn from_text(text: String) -> Result<Self, String> {
            Ok(text)
        }
    }

    impl Text for std::path::PathBuf {
        fn to_text(&self) -> Cow<'_, str> {
            self.to_string_lossy()
        }
        fn from_text(text: String) -> Result<Self, String> {
            Ok(text.into())
        }
    }

    impl Text for std::net::SocketAddr {
        fn to_text(&self) -> Cow<'_, str> {
            Cow::Owned(self.to_string())
        }
        fn from_text(text: String) -> Result<Self, String> {
            text.parse().map_err(|e| {
                format!("{e}; expected an address like 127.0.0.1:9464, or \"\" to disable")
            })
        }
    }

    pub(super) fn serialize<T: Text, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_str(""),
            Some(v) => s.serialize_str(&v.to_text()),
        }
    }

    pub(super) fn deserialize<'de, T: Text, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        T::from_text(text).map(Some).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests;
