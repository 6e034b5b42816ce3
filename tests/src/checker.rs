//! Jepsen-style bookkeeping for cluster fault tests (design 13.4): the outcome of every
//! operation as a client saw it, the history of a group read through a node, and a watcher
//! that samples every node's `/cluster` and metrics while faults run and records every
//! sample that shows a group able to run on a node that does not own it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoke_client::{Client, ClientError};
use convoke_protocol::{ErrorCode, GroupMessage};

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (a send carries its seq).
    Ok(Option<u64>),
    /// Refused: the contract says a failed request changes nothing.
    Err(ErrorCode, String),
    /// Maybe done, maybe not: a timeout, a dropped connection, or a 500 that says "the
    /// change may or may not have been made".
    Unknown(String),
}

impl Outcome {
    /// The outcome of a client call (`seq` extracts a send's seq from its answer).
    pub fn of<T>(r: &Result<T, ClientError>, seq: impl Fn(&T) -> Option<u64>) -> Outcome {
        match r {
            Ok(v) => Outcome::Ok(seq(v)),
            Err(ClientError::Api(e)) if e.message.contains("may or may not") => {
                Outcome::Unknown(format!("{} {}", e.code, e.message))
            }
            Err(ClientError::Api(e)) => Outcome::Err(e.code, e.message.clone()),
            // Never sent: refused before it left the client.
            Err(ClientError::Disconnected { reason }) => {
                Outcome::Err(ErrorCode::ServerBusy, format!("not sent: {reason}"))
            }
            Err(e) => Outcome::Unknown(e.to_string()),
        }
    }

    /// Whether the operation was acknowledged.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// Whether it may have taken effect (acknowledged or unknown).
    pub fn maybe_done(&self) -> bool {
        !matches!(self, Outcome::Err(..))
    }

    /// Whether it failed because the connection went away (the client must reconnect).
    pub fn lost_connection(&self) -> bool {
        matches!(self, Outcome::Unknown(m) if m.starts_with("connection closed") || m.starts_with("cannot connect"))
    }
}

/// Every message of `gid` as node-of-`client` serves it, oldest first, paged with `after`.
pub async fn read_history(client: &Client, gid: &str) -> Result<Vec<GroupMessage>, ClientError> {
    let mut out: Vec<GroupMessage> = Vec::new();
    let mut after = 0u64;
    loop {
        let mut page = client
            .get_group_messages(gid, None, Some(after), 100)
            .await?;
        if page.is_empty() {
            return Ok(out);
        }
        page.sort_by_key(|m| m.seq);
        let last = page.last().map_or(after, |m| m.seq);
        if last <= after {
            return Ok(out);
        }
        out.extend(page.into_iter().filter(|m| m.seq > after));
        after = last;
    }
}

/// The problems of one group's history: seqs not strictly contiguous.
pub fn gaps(history: &[GroupMessage]) -> Vec<String> {
    let mut out = Vec::new();
    for w in history.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            out.push(format!("seq {} followed by {}", w[0].seq, w[1].seq));
        }
    }
    out
}

/// `GET path` on an HTTP address with a short timeout (a frozen node does not answer).
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_millis(500), fut)
        .await
        .ok()
        .flatten()
}

/// The value of metric `name` (summed over its series) in a `/metrics` body.
pub fn metric_value(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (series.split('{').next()? == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// What a node may legitimately run.
#[derive(Debug, Clone)]
pub struct WatchedNode {
    /// `n<i>`.
    pub name: String,
    /// Its metrics address (fixed across restarts).
    pub metrics: SocketAddr,
    /// The test groups it owns: it may run at most this many group actors.
    pub owned_groups: usize,
}

/// Samples every node's `/cluster` and `/metrics` every 100 ms until stopped and records
/// each sample in which a node shows another shard table than everyone's, runs more group
/// actors than it owns test groups, or has refused to spawn a foreign group.
#[derive(Debug)]
pub struct OwnerWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicU64>,
    violations: Arc<Mutex<Vec<String>>>,
    /// Per node: rounds in which both documents answered, and the most group actors seen.
    seen: Arc<Mutex<Vec<(u64, f64)>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl OwnerWatch {
    /// Starts sampling `nodes`; `table` is the expected `/cluster` `shards.owners` list.
    pub fn start(nodes: Vec<WatchedNode>, table: serde_json::Value) -> OwnerWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicU64::new(0));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(vec![(0u64, 0f64); nodes.len()]));
        let (s, n, v, seen2) = (
            stop.clone(),
            samples.clone(),
            violations.clone(),
            seen.clone(),
        );
        let task = tokio::spawn(async move {
            let strip = |owners: &serde_json::Value| -> BTreeSet<(String, u64)> {
                owners
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| {
                        (
                            o["owner"].as_str().unwrap_or("?").to_owned(),
                            o["shards"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            };
            let want = strip(&table);
            while !s.load(Ordering::Relaxed) {
                for (idx, node) in nodes.iter().enumerate() {
                    let (status, metrics) = tokio::join!(
                        http_get(node.metrics, "/cluster"),
                        http_get(node.metrics, "/metrics")
                    );
                    let mut bad = Vec::new();
                    let answered = status.is_some() && metrics.is_some();
                    if let Some(doc) = status
                        .as_deref()
                        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                    {
                        if doc["node"]["name"] != node.name.as_str() {
                            bad.push(format!("answers as {}", doc["node"]["name"]));
                        }
                        let got = strip(&doc["shards"]["owners"]);
                        if got != want {
                            bad.push(format!("shard table {got:?}, expected {want:?}"));
                        }
                    }
                    if let Some(body) = metrics {
                        let actors = metric_value(&body, "convoke_group_actors");
                        {
                            let mut seen = seen2
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            seen[idx].0 += u64::from(answered);
                            seen[idx].1 = seen[idx].1.max(actors);
                        }
                        if actors > node.owned_groups as f64 {
                            bad.push(format!(
                                "runs {actors} group actors but owns {} groups",
                                node.owned_groups
                            ));
                        }
                        let foreign =
                            metric_value(&body, "convoke_cluster_foreign_spawn_refused_total");
                        if foreign != 0.0 {
                            bad.push(format!("foreign_spawn_refused_total = {foreign}"));
                        }
                    }
                    if !bad.is_empty() {
                        v.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(format!("{}: {}", node.name, bad.join("; ")));
                    }
                }
                n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        OwnerWatch {
            stop,
            samples,
            violations,
            seen,
            task: Some(task),
        }
    }

    /// Stops sampling; returns the number of rounds and the violations seen. Panics when
    /// a node answered in fewer than a quarter of the rounds, or no node ever ran a group
    /// actor (the watch would have watched nothing).
    pub async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let v = std::mem::take(
            &mut *self
                .violations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let rounds = self.samples.load(Ordering::Relaxed);
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (i, (answered, _)) in seen.iter().enumerate() {
            assert!(
                *answered * 4 >= rounds,
                "node {} answered /cluster and /metrics in {answered} of {rounds} rounds",
                i + 1
            );
        }
        assert!(
            seen.iter().any(|(_, actors)| *actors > 0.0),
            "no node ever showed a group actor: {seen:?}"
        );
        (rounds, v)
    }
}

impl Drop for OwnerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Checks the histories of one group read through several nodes against the sends made
/// to it: `reads` maps a node name to its history, `sends` are (payload, outcome). Returns
/// every violation (empty: fine).
pub fn check_group(
    gid: &str,
    reads: &BTreeMap<String, Vec<GroupMessage>>,
    sends: &[(Vec<u8>, Outcome)],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut first: Option<(&String, &Vec<GroupMessage>)> = None;
    for (node, h) in reads {
        for g in gaps(h) {
            out.push(format!("group {gid} via {node}: {g}"));
        }
        match first {
            None => first = Some((node, h)),
            Some((n0, h0)) => {
                let a: Vec<(u64, &[u8])> = h0.iter().map(|m| (m.seq, &m.payload[..])).collect();
                let b: Vec<(u64, &[u8])> = h.iter().map(|m| (m.seq, &m.payload[..])).collect();
                if a != b {
                    out.push(format!(
                        "group {gid}: history via {n0} ({} messages) differs from via {node} ({} messages)",
                        a.len(),
                        b.len()
                    ));
                }
            }
        }
    }
    let Some((_, h)) = first else {
        return out;
    };
    let by_payload: BTreeMap<&[u8], u64> = h.iter().map(|m| (&m.payload[..], m.seq)).collect();
    if by_payload.len() != h.len() {
        out.push(format!("group {gid}: a payload appears twice in history"));
    }
    let mut outcome_of: BTreeMap<&[u8], &Outcome> = BTreeMap::new();
    for (p, o) in sends {
        outcome_of.insert(&p[..], o);
        if let Outcome::Ok(seq) = o {
            match by_payload.get(&p[..]) {
                None => out.push(format!(
                    "group {gid}: acknowledged send {} (seq {seq:?}) lost",
                    String::from_utf8_lossy(p)
                )),
                Some(at) if Some(*at) != *seq => out.push(format!(
                    "group {gid}: acknowledged send {} at seq {seq:?} is at seq {at}",
                    String::from_utf8_lossy(p)
                )),
                Some(_) => {}
            }
        }
    }
    for m in h {
        match outcome_of.get(&m.payload[..]) {
            Some(o) if o.maybe_done() => {}
            Some(o) => out.push(format!(
                "group {gid}: seq {} {} comes from a failed send ({o:?})",
                m.seq,
                String::from_utf8_lossy(&m.payload)
            )),
            None => out.push(format!(
                "group {gid}: seq {} {} was never sent",
                m.seq,
                String::from_utf8_lossy(&m.payload)
            )),
        }
    }
    out
}
