//! A local cluster of `convoke` nodes, as README "Running a cluster" starts one: node `i`
//! (1-based) on 127.0.0.`i` (Linux routes all of 127/8 to the loopback interface), one
//! cluster port on every node's address, one app secret and cookie, all nodes pinned to the
//! same core. The `fanout` scenario runs on it unchanged, its members spread over the nodes
//! ([`super::convoke::fanout`]); [`forward`] is the scenario only a cluster has: the same
//! cheap request through the group's owner and through the other nodes.

use super::fleet::connect_all;
use super::servers::ConvokeServer;
use super::FleetOpts;
use anyhow::{bail, Context as _};
use convoke_client::{Client, CreateGroupData};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The cookie of every loadgen cluster (given as `CONVOKE_CLUSTER__COOKIE`, as README does).
const COOKIE: &str = "convoke-loadgen-cookie-0123456789";

/// Shards of a loadgen cluster (the broker's default, set explicitly so [`owner_of`] knows).
pub const SHARDS: u32 = 256;

/// How long the nodes get to see each other Up.
const MESH: Duration = Duration::from_secs(30);

/// A running local cluster; dropping it stops every node.
#[derive(Debug)]
pub struct ConvokeCluster {
    /// Node `i + 1` (`n<i+1>` on 127.0.0.`i+1`).
    pub nodes: Vec<ConvokeServer>,
}

/// The name of node `i` (0-based index).
fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// The index of the node that owns group `gid` in a cluster of `nodes` core members named
/// `n1..`, with [`SHARDS`] shards; `None` if `gid` is not a number.
pub fn owner_of(nodes: usize, gid: &str) -> Option<usize> {
    let gid: u64 = gid.parse().ok()?;
    let names: Vec<String> = (0..nodes).map(name).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let owner = convoke_broker::cluster::placement::owner_of(gid, SHARDS, &refs)?;
    names.iter().position(|n| n == owner)
}

impl ConvokeCluster {
    /// Starts `n` core nodes with `settings` on top of the cluster's own, and waits until
    /// every node sees all `n` Up.
    pub async fn start(
        bin: &Path,
        pin: Option<usize>,
        n: usize,
        settings: &[String],
    ) -> anyhow::Result<Self> {
        if !(1..=63).contains(&n) {
            bail!("a cluster has 1 to 63 nodes, not {n}");
        }
        // A port free on 127.0.0.1 is, in practice, free on the other loopback addresses.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let ip = |i: usize| Ipv4Addr::new(127, 0, 0, u8::try_from(i + 1).unwrap_or(1));
        let members = (0..n)
            .map(|i| format!("{}@{}:{port}", name(i), ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = vec![
                "cluster.enabled=true".to_string(),
                format!("cluster.name={}", name(i)),
                format!("cluster.ordinal={}", i + 1),
                format!("cluster.listen={}:{port}", ip(i)),
                format!("cluster.members={members}"),
                format!("cluster.shards={SHARDS}"),
            ];
            s.extend(settings.iter().cloned());
            let env = [("CONVOKE_CLUSTER__COOKIE", COOKIE)];
            nodes.push(ConvokeServer::start_on(bin, pin, ip(i), &env, &s)?);
        }
        let c = Self { nodes };
        c.wait_mesh().await?;
        Ok(c)
    }

    /// Waits until every node's `/cluster` shows all nodes Up.
    async fn wait_mesh(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + MESH;
        for (i, node) in self.nodes.iter().enumerate() {
            loop {
                let up = match node.http_get("/cluster").await {
                    Ok(text) => up_count(&text),
                    Err(_) => 0,
                };
                if up == self.nodes.len() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {} sees {up} of {} nodes up after {MESH:?}; its log:\n{}",
                        name(i),
                        self.nodes.len(),
                        node.log()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Each node's pid and QUIC port, for a measurement window over all of them.
    pub fn processes(&self) -> Vec<(u32, Option<u16>)> {
        self.nodes
            .iter()
            .map(|s| (s.pid(), Some(s.addr.port())))
            .collect()
    }

    /// The end of every node's log, for an error message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(10);
            out.push_str(&format!("{} log (last lines):\n", name(i)));
            out.push_str(&lines[from..].join("\n"));
            out.push('\n');
        }
        out
    }
}

/// Members whose state is `up` in a `/cluster` response (headers and JSON body).
fn up_count(response: &str) -> usize {
    let body = response.split_once("\r\n\r\n").map_or(response, |(_, b)| b);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return 0;
    };
    v["members"].as_array().map_or(0, |m| {
        m.iter()
            .filter(|m| m["state"].as_str() == Some("up"))
            .count()
    })
}

/// One node's figures in a [`forward`] run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardNode {
    pub node: String,
    /// Whether this node owns the group.
    pub owner: bool,
    pub requests: u64,
    /// getGroupInfo round trips, microseconds.
    pub info_p50_us: f64,
    pub info_p90_us: f64,
    pub info_p99_us: f64,
    /// ping round trips (answered by the node itself), microseconds.
    pub ping_p50_us: f64,
}

/// The outcome of a [`forward`] run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardOutcome {
    pub scenario: String,
    pub nodes: Vec<ForwardNode>,
    /// The non-owner nodes' getGroupInfo p50 minus the owner's, microseconds (the largest).
    pub extra_p50_us: f64,
}

impl ForwardOutcome {
    /// One line for the console.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{}{}: getGroupInfo p50 {:.0} us p99 {:.0} us, ping p50 {:.0} us",
                    n.node,
                    if n.owner { " (owner)" } else { "" },
                    n.info_p50_us,
                    n.info_p99_us,
                    n.ping_p50_us
                )
            })
            .collect();
        format!(
            "forward: {}; non-owner extra p50 {:.0} us",
            parts.join("; "),
            self.extra_p50_us
        )
    }
}

/// The Markdown table of [`forward`] runs (nothing for none).
pub fn forward_markdown(outcomes: &[ForwardOutcome]) -> String {
    if outcomes.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n#### A request through the owner and through other nodes (`forward`)\n\n\
         | run | node | owner | getGroupInfo requests | p50 us | p90 us | p99 us | ping p50 us | p50 over the owner's, us |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (r, o) in outcomes.iter().enumerate() {
        let owner_p50 = o
            .nodes
            .iter()
            .find(|n| n.owner)
            .map_or(f64::NAN, |n| n.info_p50_us);
        for n in &o.nodes {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                r + 1,
                n.node,
                if n.owner { "yes" } else { "" },
                n.requests,
                n.info_p50_us,
                n.info_p90_us,
                n.info_p99_us,
                n.ping_p50_us,
                n.info_p50_us - owner_p50,
            ));
        }
    }
    s
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// `forward`: one reader per node, each a member of one group; in `rounds` rounds, each
/// reader in turn sends `per_round` getGroupInfo requests for the group one after the other
/// (the owner answers them: through the reader's own node when it is the owner, forwarded
/// to it otherwise), then as many pings (answered by the reader's node itself). Rounds
/// alternate the nodes so that drift on the machine touches all of them alike. The first
/// round is warm-up.
pub async fn forward(
    cluster: &ConvokeCluster,
    per_round: usize,
    rounds: usize,
    opts: &FleetOpts,
) -> anyhow::Result<ForwardOutcome> {
    let n = cluster.nodes.len();
    if n < 2 {
        bail!("forward needs a cluster of at least 2 nodes");
    }
    let mut readers: Vec<Client> = Vec::with_capacity(n);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let user = format!("reader{}", i + 1);
        let c = connect_all(node, &[user], false, opts).await?;
        readers.push(c.into_iter().next().context("no reader")?);
    }
    let creator = connect_all(&cluster.nodes[0], &["creator".to_string()], false, opts).await?;
    let creator = creator.into_iter().next().context("no creator")?;
    let gid = creator
        .create_group(CreateGroupData {
            groupname: "forward".into(),
            members: (1..=n).map(|i| format!("reader{i}")).collect(),
            maxusers: Some(u32::try_from(n + 1).unwrap_or(u32::MAX).max(3)),
            invite_need_confirm: false,
            ..CreateGroupData::default()
        })
        .await?;
    let owner = owner_of(n, &gid).context("group id is not a number")?;
    let mut info: Vec<Histogram<u64>> = (0..n).map(|_| histogram()).collect();
    let mut ping: Vec<Histogram<u64>> = (0..n).map(|_| histogram()).collect();
    for round in 0..=rounds {
        for (i, reader) in readers.iter().enumerate() {
            for _ in 0..per_round {
                let t = Instant::now();
                let r = reader.get_group_info(&[gid.as_str()]).await?;
                let took = micros(t.elapsed());
                if let Some(e) = r.first().and_then(|e| e.error.as_ref()) {
                    bail!("getGroupInfo through n{} failed: {e:?}", i + 1);
                }
                if round > 0 {
                    info[i].record(took)?;
                }
            }
            for _ in 0..per_round {
                let rtt = reader.ping().await?;
                if round > 0 {
                    ping[i].record(micros(rtt))?;
                }
            }
        }
    }
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    let nodes: Vec<ForwardNode> = (0..n)
        .map(|i| ForwardNode {
            node: name(i),
            owner: i == owner,
            requests: info[i].len(),
            info_p50_us: q(&info[i], 0.5),
            info_p90_us: q(&info[i], 0.9),
            info_p99_us: q(&info[i], 0.99),
            ping_p50_us: q(&ping[i], 0.5),
        })
        .collect();
    let owner_p50 = nodes[owner].info_p50_us;
    let extra_p50_us = nodes
        .iter()
        .filter(|x| !x.owner)
        .map(|x| x.info_p50_us - owner_p50)
        .fold(f64::MIN, f64::max);
    Ok(ForwardOutcome {
        scenario: "forward".into(),
        nodes,
        extra_p50_us,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn up_count_reads_the_members_of_a_cluster_response() {
        let r = "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n\
                 {\"members\":[{\"name\":\"n1\",\"state\":\"up\"},\
                 {\"name\":\"n2\",\"state\":\"connecting\"},{\"name\":\"n3\",\"state\":\"up\"}]}";
        assert_eq!(super::up_count(r), 2);
        assert_eq!(super::up_count("HTTP/1.0 404\r\n\r\nnot found"), 0);
    }

    #[test]
    fn the_owner_is_one_of_the_nodes() {
        let owners: std::collections::BTreeSet<usize> = (1..200u64)
            .filter_map(|g| super::owner_of(3, &g.to_string()))
            .collect();
        assert_eq!(owners.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(super::owner_of(3, "not-a-number"), None);
    }
}
