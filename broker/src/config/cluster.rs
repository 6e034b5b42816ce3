//! `[cluster]`: this node's place in a cluster (../shared/design/cluster.md 3.1).
//!
//! Off by default: a single node, no cluster port, today's code paths. The checks here only
//! run when `enabled = true`; the identity file that pins name, ordinal, shards and members
//! to a data dir is `crate::cluster::identity`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{empty_is_none, ConfigError};

/// `[cluster]`: whether this node is part of a cluster, and how it finds and trusts the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `false`: a single node (all shards local, no cluster port). Default `false`.
    pub enabled: bool,
    /// This node's name: letters, digits, `-` and `_`, at most 64 bytes; unique in the
    /// cluster and permanent for its data dir. Default `n1`.
    pub name: String,
    /// This node's permanent number, 1 to 63, unique in the cluster (ids it allocates are
    /// prefixed with it). Default `1`.
    pub ordinal: u32,
    /// `core` (owns shards; listed in `members`) or `gateway` (sessions and fan-out only;
    /// joins through `join`). Default `core`.
    pub role: ClusterRole,
    /// TCP address of the cluster port. Default `127.0.0.1:7401`.
    pub listen: SocketAddr,
    /// `host:port` other nodes dial to reach this node; `""`: `listen`. Default `""`.
    pub advertise: String,
    /// Core members, `name@host:port` each, this node included when it is core. Fixed at
    /// cluster creation (the shard table is computed from it). Default `[]`.
    pub members: Vec<String>,
    /// Gateways: core members (`host:port`) to learn the member list from (also `--join`).
    /// Default `[]`.
    pub join: Vec<String>,
    /// Shared secret every node presents (prefer the environment variable
    /// `CONVOKE_CLUSTER__COOKIE`); it authenticates nodes, it does not encrypt. At least 16
    /// bytes in a cluster. Default `""`.
    pub cookie: String,
    /// Number of shards groups are placed in; fixed at cluster creation. 1 to 65536.
    /// Default `256`.
    pub shards: u32,
    /// Milliseconds between heartbeats to each peer; 10 to 60000. Default `250`.
    pub heartbeat_ms: u64,
    /// A peer without a heartbeat answer this long (ms) is Down; at least 2 heartbeats.
    /// Default `2000`.
    pub peer_timeout_ms: u64,
    /// Longest pause (ms) between two attempts to reach a peer that is not Up; at least 100.
    /// Default `5000`.
    pub reconnect_max_ms: u64,
    /// Longest wait (ms) for the answer to a request handled on another node; at least 100.
    /// Default `10000`.
    pub request_timeout_ms: u64,
    /// Bytes queued towards one peer (sent and not yet acknowledged) before live
    /// deliveries to it are dropped; calls to it (requests, reads across nodes) are refused
    /// over twice this; replies and presence are always queued (a peer over the limit for
    /// `peer_timeout_ms` is declared Down). At least 65536. Default `67108864` (64 MiB).
    pub peer_queue_bytes: u64,
    /// PEM certificate of the cluster CA that signs every node's certificate. Default `""`.
    #[serde(with = "empty_is_none")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate chain of this node on the cluster port (signed by `tls_ca`).
    /// Default `""`.
    #[serde(with = "empty_is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. Default `""`.
    #[serde(with = "empty_is_none")]
    pub tls_key: Option<PathBuf>,
    /// Plain TCP between nodes without TLS even when a member, a join seed, or this node's
    /// listen or advertise address is not on loopback (private test networks only).
    /// Default `false`.
    pub allow_plaintext: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            name: "n1".to_owned(),
            ordinal: 1,
            role: ClusterRole::Core,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7401)),
            advertise: String::new(),
            members: Vec::new(),
            join: Vec::new(),
            cookie: String::new(),
            shards: 256,
            heartbeat_ms: 250,
            peer_timeout_ms: 2000,
            reconnect_max_ms: 5000,
            request_timeout_ms: 10_000,
            peer_queue_bytes: 64 * 1024 * 1024,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
        }
    }
}

/// What a node does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    /// Owns shards (data); listed in `cluster.members`.
    #[default]
    Core,
    /// Owns nothing: sessions and fan-out only; may come and go.
    Gateway,
}

impl ClusterRole {
    /// `core` or `gateway`, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterRole::Core => "core",
            ClusterRole::Gateway => "gateway",
        }
    }
}

/// One entry of `cluster.members`: `name@host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// The node's name.
    pub name: String,
    /// Host (name or IP) peers dial.
    pub host: String,
    /// Cluster port.
    pub port: u16,
}

impl Member {
    /// Parses `name@host:port`; the error says what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Member, String> {
        let (name, addr) = text
            .split_once('@')
            .ok_or_else(|| format!("{text:?} is not name@host:port"))?;
        check_name(name).map_err(|e| format!("{text:?}: {e}"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} has no :port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: the port must be 1 to 65535"))?;
        Ok(Member {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port`, the address to dial.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether the host is a loopback address (or `localhost`).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.addr())
    }
}

/// A node name: 1-64 bytes of letters, digits, `-`, `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a node name is 1 to 64 bytes".to_owned());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "node name {name:?} may only hold letters, digits, - and _"
        ));
    }
    Ok(())
}

/// Shortest cookie accepted in a cluster.
const MIN_COOKIE_BYTES: usize = 16;

impl ClusterConfig {
    /// The parsed `members`, in the order given.
    pub fn parsed_members(&self) -> Result<Vec<Member>, ConfigError> {
        self.members
            .iter()
            .map(|m| {
                Member::parse(m).map_err(|e| {
                    ConfigError::invalid("cluster.members", format!("{:?}", self.members), e)
                })
            })
            .collect()
    }

    /// The address other nodes dial: `advertise`, or `listen`.
    pub fn advertised(&self) -> String {
        if self.advertise.is_empty() {
            self.listen.to_string()
        } else {
            self.advertise.clone()
        }
    }

    /// The checks of `[cluster]`; nothing is checked when it is off.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        check_name(&self.name)
            .map_err(|e| ConfigError::invalid("cluster.name", format!("{:?}", self.name), e))?;
        if !(1..=63).contains(&self.ordinal) {
            return Err(ConfigError::invalid(
                "cluster.ordinal",
                self.ordinal,
                "must be 1 to 63 in a cluster (0 is a single node's)",
            ));
        }
        if self.cookie.len() < MIN_COOKIE_BYTES {
            return Err(ConfigError::invalid(
                "cluster.cookie",
                format_args!("<redacted, {} bytes>", self.cookie.len()),
                format!(
                    "must be at least {MIN_COOKIE_BYTES} bytes in a cluster (prefer the \
                     environment variable CONVOKE_CLUSTER__COOKIE)"
                ),
            ));
        }
        if !(1..=65_536).contains(&self.shards) {
            return Err(ConfigError::invalid(
                "cluster.shards",
                self.shards,
                "must be 1 to 65536",
            ));
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            return Err(ConfigError::invalid(
                "cluster.heartbeat_ms",
                self.heartbeat_ms,
                "must be 10 to 60000",
            ));
        }
        if self.peer_timeout_ms < 2 * self.heartbeat_ms {
            return Err(ConfigError::invalid(
                "cluster.peer_timeout_ms",
                self.peer_timeout_ms,
                format!(
                    "must be at least two heartbeats (2 x cluster.heartbeat_ms = {})",
                    2 * self.heartbeat_ms
                ),
            ));
        }
        for (field, value, least) in [
            ("cluster.reconnect_max_ms", self.reconnect_max_ms, 100),
            ("cluster.request_timeout_ms", self.request_timeout_ms, 100),
            ("cluster.peer_queue_bytes", self.peer_queue_bytes, 65_536),
        ] {
            if value < least {
                return Err(ConfigError::invalid(
                    field,
                    value,
                    format!("must be at least {least}"),
                ));
            }
        }
        if !self.advertise.is_empty() {
            Member::parse(&format!("{}@{}", self.name, self.advertise)).map_err(|_| {
                ConfigError::invalid(
                    "cluster.advertise",
                    format!("{:?}", self.advertise),
                    "must be host:port (or \"\" for cluster.listen)",
                )
            })?;
        }
        let members = self.parsed_members()?;
        let mut names = std::collections::BTreeSet::new();
        for m in &members {
            if !names.insert(&m.name) {
                return Err(ConfigError::invalid(
                    "cluster.members",
                    format!("{:?}", self.members),
                    format!("names node {:?} twice", m.name),
                ));
            }
        }
        let listed = members.iter().any(|m| m.name == self.name);
        match self.role {
            ClusterRole::Core if !listed => {
                return Err(ConfigError::invalid(
                    "cluster.members",
                    format!("{:?}", self.members),
                    format!(
                        "must list this core node (cluster.name = {:?}) as name@host:port",
                        self.name
                    ),
                ))
            }
            ClusterRole::Gateway if listed => {
                return Err(ConfigError::invalid(
                    "cluster.members",
                    format!("{:?}", self.members),
                    format!(
                        "lists this node {:?}, but a gateway is not a core member (set \
                         cluster.role = \"core\", or remove it)",
                        self.name
                    ),
                ))
            }
            ClusterRole::Gateway if members.is_empty() && self.join.is_empty() => {
                return Err(ConfigError::invalid(
                    "cluster.join",
                    "[]",
                    "a gateway needs a core member to join (cluster.join or --join host:port)",
                ))
            }
            _ => {}
        }
        for seed in &self.join {
            Member::parse(&format!("seed@{seed}")).map_err(|_| {
                ConfigError::invalid(
                    "cluster.join",
                    format!("{:?}", self.join),
                    format!("{seed:?} is not host:port"),
                )
            })?;
        }
        let tls = [
            ("cluster.tls_ca", &self.tls_ca),
            ("cluster.tls_cert", &self.tls_cert),
            ("cluster.tls_key", &self.tls_key),
        ];
        let set = tls.iter().filter(|(_, v)| v.is_some()).count();
        if set != 0 && set != 3 {
            let (missing, _) = tls
                .iter()
                .find(|(_, v)| v.is_none())
                .copied()
                .unwrap_or(tls[0]);
            return Err(ConfigError::invalid(
                missing,
                "\"\"",
                "cluster.tls_ca, tls_cert and tls_key are set together (or none, for plain TCP)",
            ));
        }
        if set == 0 && !self.allow_plaintext {
            // Every address plain TCP would use or be reachable on: the members, the join
            // seeds, this node's own listen address (0.0.0.0 listens on every interface)
            // and the address it advertises.
            let mut far: Vec<String> = members
                .iter()
                .filter(|m| !m.is_loopback())
                .map(Member::addr)
                .collect();
            for seed in self.join.iter().chain(Some(&self.advertise)) {
                match Member::parse(&format!("seed@{seed}")) {
                    Ok(m) if !m.is_loopback() => far.push(m.addr()),
                    _ => {}
                }
            }
            if !self.listen.ip().is_loopback() {
                far.push(format!("cluster.listen = {}", self.listen));
            }
            if let Some(far) = far.first() {
                return Err(ConfigError::invalid(
                    "cluster.tls_ca",
                    "\"\"",
                    format!(
                        "is needed: {far} is not on loopback, and plain TCP between hosts is \
                         refused (set cluster.tls_ca, tls_cert and tls_key, or \
                         cluster.allow_plaintext = true on a private test network)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, FlagSetting};

    fn load(settings: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let flags = settings
            .iter()
            .map(|(k, v)| FlagSetting::new(format!("--set {k}"), *k, *v));
        Config::load_layered(None, Vec::new(), flags)
    }

    const BASE: &[(&str, &str)] = &[
        ("cluster.enabled", "true"),
        ("cluster.cookie", "cookie-cookie-cookie"),
        (
            "cluster.members",
            "n1@127.0.0.1:7401, n2@127.0.0.2:7401,n3@127.0.0.3:7401",
        ),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        BASE.iter().chain(extra).copied().collect()
    }

    #[test]
    fn a_loopback_cluster_loads_and_members_come_from_a_comma_list() {
        let c = load(BASE).unwrap().cluster;
        assert_eq!(c.parsed_members().unwrap().len(), 3);
        assert_eq!(c.members[1], "n2@127.0.0.2:7401");
    }

    #[test]
    fn each_bad_setting_is_named() {
        for (extra, field, words) in [
            (
                &[("cluster.ordinal", "0")][..],
                "cluster.ordinal",
                "1 to 63",
            ),
            (
                &[("cluster.ordinal", "64")][..],
                "cluster.ordinal",
                "1 to 63",
            ),
            (
                &[("cluster.cookie", "short")][..],
                "cluster.cookie",
                "16 bytes",
            ),
            (
                &[("cluster.name", "n9")][..],
                "cluster.members",
                "must list",
            ),
            (&[("cluster.name", "a b")][..], "cluster.name", "letters"),
            (
                &[("cluster.shards", "0")][..],
                "cluster.shards",
                "1 to 65536",
            ),
            (
                &[("cluster.peer_timeout_ms", "100")][..],
                "cluster.peer_timeout_ms",
                "two heartbeats",
            ),
            (
                &[("cluster.members", "n1@127.0.0.1:7401,n1@127.0.0.2:7401")][..],
                "cluster.members",
                "twice",
            ),
            (
                &[("cluster.members", "n1@127.0.0.1")][..],
                "cluster.members",
                ":port",
            ),
            (
                &[("cluster.members", "n1@127.0.0.1:7401,n2@10.0.0.2:7401")][..],
                "cluster.tls_ca",
                "10.0.0.2:7401 is not on loopback",
            ),
            (
                &[("cluster.tls_ca", "/ca.pem")][..],
                "cluster.tls_cert",
                "together",
            ),
            // Loopback members, but listening on every interface or advertised elsewhere:
            // plain TCP would be reachable from other hosts (review L5).
            (
                &[("cluster.listen", "0.0.0.0:7401")][..],
                "cluster.tls_ca",
                "cluster.listen = 0.0.0.0:7401 is not on loopback",
            ),
            (
                &[("cluster.advertise", "10.0.0.1:7401")][..],
                "cluster.tls_ca",
                "10.0.0.1:7401 is not on loopback",
            ),
        ] {
            let e = load(&with(extra)).unwrap_err();
            assert_eq!(e.field(), Some(field), "{extra:?}: {e}");
            assert!(e.to_string().contains(words), "{extra:?}: {e}");
            assert!(
                !e.to_string().contains("cookie-cookie"),
                "cookie echoed: {e}"
            );
        }
        // Opting in to plain TCP across hosts.
        load(&with(&[
            ("cluster.members", "n1@127.0.0.1:7401,n2@10.0.0.2:7401"),
            ("cluster.allow_plaintext", "true"),
        ]))
        .unwrap();
        // Off: nothing is checked (a single node).
        load(&[("cluster.ordinal", "0")]).unwrap();
    }

    #[test]
    fn cookie_and_members_come_from_the_environment() {
        let env = vec![
            ("CONVOKE_CLUSTER__ENABLED".to_owned(), "true".to_owned()),
            (
                "CONVOKE_CLUSTER__COOKIE".to_owned(),
                "from-the-environment-0123".to_owned(),
            ),
            (
                "CONVOKE_CLUSTER__MEMBERS".to_owned(),
                "n1@127.0.0.1:7401,n2@127.0.0.2:7401".to_owned(),
            ),
        ];
        let c = Config::load(None, env).unwrap().cluster;
        assert_eq!(c.cookie, "from-the-environment-0123");
        assert_eq!(c.members.len(), 2);
    }

    #[test]
    fn the_cookie_is_never_echoed() {
        let e = load(&[("cluster.cookie", "")])
            .map(|_| ())
            .and_then(|_| load(&with(&[("cluster.cookie", "secret-but-short")])).map(|_| ()));
        // 16 bytes passes; an over-long value of the wrong type is redacted too.
        assert!(e.is_ok());
        let e = load(&with(&[("cluster.cookie", "tiny-secret")])).unwrap_err();
        assert!(!e.to_string().contains("tiny-secret"), "{e}");
    }
}
