//! A cluster of real `convoke serve` processes on one machine: node `i` (1-based) listens
//! on `127.0.0.i` (Linux routes all of 127/8 to the loopback interface), all nodes on one
//! cluster port chosen per test, one shared app secret and cookie, fast heartbeats
//! (`heartbeat_ms = 100`, `peer_timeout_ms = 1000`). Each node is a [`Broker`], so
//! everything a single-node test does (clients, metrics, logs, kill -9, restart on the
//! same data dir) works per node. pg and the actor registry are process-global, so a
//! cluster can only be tested with separate processes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::Netns;
use crate::{broker_bin, eventually, Broker, Peer, SECRET, WAIT};

/// The cluster cookie of every test node.
pub const COOKIE: &str = "convoke-test-cookie-0123456789";

/// Heartbeat interval of the test nodes, ms.
pub const HEARTBEAT_MS: u64 = 100;

/// Peer timeout of the test nodes, ms.
pub const PEER_TIMEOUT_MS: u64 = 1000;

/// Shards of a test cluster.
pub const SHARDS: u32 = 256;

/// A running test cluster.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<Broker>,
    /// The cluster port, the same on every node's address.
    pub port: u16,
    /// The member list, `n1@127.0.0.1:PORT,...`.
    pub members: String,
    /// The namespaces the nodes run in ([`TestCluster::start_in_netns`]); dropped (removed)
    /// after the nodes.
    netns: Option<Netns>,
}

/// A TCP port free on the addresses of nodes 1..=`n` (127.0.0.1..n), for the cluster port
/// every node listens on. Taken below the kernel's ephemeral range (32768-60999 here), so
/// that no outgoing connection of a test running beside this one (its source port, on
/// any 127.0.0.x) takes it between this check and the nodes' start: a port the kernel
/// handed out for `:0` was free on 127.0.0.1 only, and once was in use on 127.0.0.2 by
/// the time node 2 bound it ("Address already in use", a failed CI run).
pub fn free_port(n: usize) -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000u16);
        let held: Result<Vec<_>, _> = (1..=n.max(1))
            .map(|i| std::net::TcpListener::bind((node_ip(i).as_str(), port)))
            .collect();
        if held.is_ok() {
            return port;
        }
    }
    panic!("no port in 20000-32000 free on 127.0.0.1-{n}");
}

/// The address of node `i`.
pub fn node_ip(i: usize) -> String {
    format!("127.0.0.{i}")
}

impl TestCluster {
    /// Starts `n` core nodes and waits until every one sees all `n` Up.
    pub async fn start(n: usize) -> TestCluster {
        let c = Self::start_with(n, |_| Vec::new());
        for i in 1..=n {
            c.wait_up(i, n).await;
        }
        c
    }

    /// Starts `n` core nodes with `settings` on each, waits until every one sees all `n`
    /// Up, and returns them as one [`Broker`] standing for the cluster (see
    /// [`crate::spread`]). Every node serves node 1's certificate, as nodes behind one name
    /// do, so that the broker's `cert` is good for a client of any node.
    pub(crate) async fn start_as_broker(n: usize, settings: &[(&str, &str)]) -> Broker {
        // The scenarios test behaviour, not failure detection: a peer timeout of a few
        // seconds, so that a 2-core machine busy with a build never sees a peer down
        // (which drops live deliveries, as it should) in the middle of a scenario.
        let extra: Vec<(String, String)> = [
            ("cluster.heartbeat_ms", "250"),
            ("cluster.peer_timeout_ms", "5000"),
        ]
        .iter()
        .chain(settings)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut c = Self::start_nodes(n, |_| extra.clone(), true);
        let nodes = std::mem::take(&mut c.nodes);
        wait_mesh(&nodes.iter().collect::<Vec<_>>()).await;
        let mut nodes = nodes.into_iter();
        let mut first = nodes.next().expect("a cluster of at least one node");
        first.others = nodes.collect();
        first
    }

    /// Starts `n` core nodes, node `i` with the extra settings `extra(i)` (which win over
    /// the defaults); does not wait for the mesh.
    pub fn start_with(n: usize, extra: impl Fn(usize) -> Vec<(String, String)>) -> TestCluster {
        Self::start_nodes(n, extra, false)
    }

    /// [`TestCluster::start_with`]; with `one_cert`, nodes 2..=n start with node 1's
    /// generated certificate and key (its `data/tls`) instead of generating their own.
    fn start_nodes(
        n: usize,
        extra: impl Fn(usize) -> Vec<(String, String)>,
        one_cert: bool,
    ) -> TestCluster {
        let port = free_port(n);
        let members = (1..=n)
            .map(|i| format!("n{i}@{}:{port}", node_ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = TestCluster {
            nodes: Vec::new(),
            port,
            members,
            netns: None,
        };
        for i in 1..=n {
            let mut settings = c.settings(i);
            settings.extend(extra(i));
            let refs: Vec<(&str, &str)> = settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut b = Broker::unstarted(&refs);
            if let Some(first) = c.nodes.first().filter(|_| one_cert) {
                let (from, to) = (first.data_dir().join("tls"), b.data_dir().join("tls"));
                std::fs::create_dir_all(&to).expect("the tls dir");
                for name in ["cert.pem", "key.pem"] {
                    std::fs::copy(from.join(name), to.join(name))
                        .unwrap_or_else(|e| panic!("copying node 1's {name}: {e}"));
                }
            }
            b.launch();
            c.nodes.push(b);
        }
        c
    }

    /// Starts `n` core nodes, node `i` inside `netns`' namespace `i` on its address
    /// (`10.77.x.i`), with the extra settings `extra(i)`; does not wait for the mesh. The
    /// test's clients run in the root namespace and reach every node through the bridge;
    /// the cluster owns `netns` and removes it after its nodes are gone.
    pub fn start_in_netns(
        n: usize,
        netns: Netns,
        extra: impl Fn(usize) -> Vec<(String, String)>,
    ) -> TestCluster {
        // Every namespace has its own port space: any fixed port is free in each.
        let port = 7401;
        let members = (1..=n)
            .map(|i| format!("n{i}@{}:{port}", netns.ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = TestCluster {
            nodes: Vec::new(),
            port,
            members,
            netns: Some(netns),
        };
        for i in 1..=n {
            let mut settings = c.settings(i);
            // A private bridge of the test: plain TCP between the nodes is fine there.
            settings.push(("cluster.allow_plaintext".into(), "true".into()));
            settings.extend(extra(i));
            let refs: Vec<(&str, &str)> = settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            c.nodes.push(Broker::unstarted(&refs));
            c.launch(i);
        }
        c
    }

    /// The namespaces of a cluster started with [`TestCluster::start_in_netns`].
    pub fn netns(&self) -> &Netns {
        self.netns
            .as_ref()
            .expect("a cluster started in namespaces")
    }

    /// The address of node `i` (`127.0.0.i`, or its namespace's address).
    pub fn ip(&self, i: usize) -> String {
        match &self.netns {
            Some(ns) => ns.ip(i),
            None => node_ip(i),
        }
    }

    /// Starts node `i`'s process (in its namespace, if any).
    fn launch(&mut self, i: usize) {
        let prefix = self.netns.as_ref().map(|ns| ns.exec_prefix(i));
        let b = &mut self.nodes[i - 1];
        match prefix {
            None => b.launch(),
            Some(prefix) => spawn_wrapped(b, &prefix),
        }
    }

    /// The settings of node `i`.
    pub fn settings(&self, i: usize) -> Vec<(String, String)> {
        let ip = self.ip(i);
        [
            ("server.listen", format!("{ip}:0")),
            ("metrics.listen", format!("{ip}:0")),
            ("log.level", "warn,convoke_broker::cluster=info".to_owned()),
            ("cluster.enabled", "true".to_owned()),
            ("cluster.name", format!("n{i}")),
            ("cluster.ordinal", i.to_string()),
            ("cluster.listen", format!("{ip}:{}", self.port)),
            ("cluster.members", self.members.clone()),
            ("cluster.cookie", COOKIE.to_owned()),
            ("cluster.shards", SHARDS.to_string()),
            ("cluster.heartbeat_ms", HEARTBEAT_MS.to_string()),
            ("cluster.peer_timeout_ms", PEER_TIMEOUT_MS.to_string()),
            ("cluster.reconnect_max_ms", "1000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts a gateway node `g<i>` (the next index `i`, on `127.0.0.i`) that knows only
    /// node 1's cluster address (`cluster.join`, as `--join` sets it) and learns the rest;
    /// returns `i`.
    pub fn start_gateway(&mut self) -> usize {
        let i = self.nodes.len() + 1;
        let ip = node_ip(i);
        let settings: Vec<(String, String)> = [
            ("server.listen", format!("{ip}:0")),
            ("metrics.listen", format!("{ip}:0")),
            ("log.level", "warn,convoke_broker::cluster=info".to_owned()),
            ("cluster.enabled", "true".to_owned()),
            ("cluster.role", "gateway".to_owned()),
            ("cluster.name", format!("g{i}")),
            ("cluster.ordinal", i.to_string()),
            ("cluster.listen", format!("{ip}:{}", self.port)),
            ("cluster.join", format!("{}:{}", node_ip(1), self.port)),
            ("cluster.cookie", COOKIE.to_owned()),
            ("cluster.shards", SHARDS.to_string()),
            ("cluster.heartbeat_ms", HEARTBEAT_MS.to_string()),
            ("cluster.peer_timeout_ms", PEER_TIMEOUT_MS.to_string()),
            ("cluster.reconnect_max_ms", "1000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let refs: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut b = Broker::unstarted(&refs);
        b.launch();
        self.nodes.push(b);
        i
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: usize) -> &Broker {
        &self.nodes[i - 1]
    }

    /// Node `i`, mutably.
    pub fn node_mut(&mut self, i: usize) -> &mut Broker {
        &mut self.nodes[i - 1]
    }

    /// A connected client for `user` on node `i`.
    pub async fn client(&self, i: usize, user: &str) -> Peer {
        self.node(i).connect(user).await
    }

    /// `kill -9` node `i`.
    pub fn kill9(&mut self, i: usize) {
        self.node_mut(i).kill9();
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open, it answers nothing. Returns once
    /// every thread of it is stopped: `kill` returns when the signal is queued, and on a
    /// busy machine a thread that was running kept running (and took a forwarded call)
    /// for milliseconds after, until the thread the kernel picked got a CPU to stop them.
    pub fn sigstop(&self, i: usize) {
        let pid = self.node(i).pid();
        signal(pid, "-STOP");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "node {i} (pid {pid}) did not stop within 5 s of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Thaws node `i` (SIGCONT).
    pub fn sigcont(&self, i: usize) {
        signal(self.node(i).pid(), "-CONT");
    }

    /// Starts node `i` again on its data dir (after [`TestCluster::kill9`]), or restarts it
    /// gracefully when it runs.
    pub fn restart(&mut self, i: usize) {
        let b = self.node_mut(i);
        if b.pid() != 0 {
            b.stop();
        }
        self.launch(i);
    }

    /// Node `i`'s `/cluster` document (`Value::Null` when it does not answer).
    pub async fn status(&self, i: usize) -> Value {
        status_of(self.node(i)).await
    }

    /// The state node `i` sees `peer` in (`up`, `down`, `connecting`, `refused`).
    pub async fn state_of(&self, i: usize, peer: &str) -> Option<String> {
        let s = self.status(i).await;
        s["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == peer)
            .and_then(|m| m["state"].as_str())
            .map(str::to_owned)
    }

    /// Members node `i` sees Up, itself included.
    pub async fn up_count(&self, i: usize) -> usize {
        up_count_of(self.node(i)).await
    }

    /// Waits until node `i` sees `n` members Up (itself included).
    pub async fn wait_up(&self, i: usize, n: usize) {
        eventually(&format!("node {i} to see {n} members up"), || async {
            (self.up_count(i).await == n).then_some(())
        })
        .await;
    }

    /// Waits until node `i` sees `peer` in `state`; returns how long that took.
    pub async fn wait_state(&self, i: usize, peer: &str, state: &str) -> Duration {
        let start = Instant::now();
        eventually(&format!("node {i} to see {peer} {state}"), || async {
            (self.state_of(i, peer).await.as_deref() == Some(state)).then_some(())
        })
        .await;
        start.elapsed()
    }

    /// The name of the core node that owns group `gid`.
    pub fn owner_of(&self, gid: u64) -> String {
        let names: Vec<String> = self
            .members
            .split(',')
            .filter_map(|m| m.split('@').next())
            .map(str::to_owned)
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        convoke_broker::cluster::placement::owner_of(gid, SHARDS, &refs)
            .expect("members")
            .to_owned()
    }

    /// Metric `name` on node `i`, summed over its series.
    pub async fn metric(&self, i: usize, name: &str) -> f64 {
        self.node(i).metric(name).await
    }

    /// Metric `name` on every node of the cluster, summed (a node that does not answer
    /// counts 0).
    pub async fn metric_all(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for i in 1..=self.nodes.len() {
            sum += self.metric(i, name).await;
        }
        sum
    }

    /// The series of metric `name` on node `i` whose labels include `label="value"`, summed.
    pub async fn metric_with(&self, i: usize, name: &str, label: &str, value: &str) -> f64 {
        let (_, body) = self.node(i).http_get("/metrics").await;
        let want = format!("{label}=\"{value}\"");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, v) = l.rsplit_once(' ')?;
                let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && labels.split(',').any(|kv| kv.trim_end_matches('}') == want))
                    .then(|| v.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    /// Runs `convoke serve` once more on node `i`'s data dir (which must not be running)
    /// with `overrides`, and returns its exit code and stderr when it exits within
    /// [`WAIT`] (`None` as the code when it was still running and had to be killed).
    pub fn run_refused(&self, i: usize, overrides: &[(&str, &str)]) -> (Option<i32>, String) {
        let mut cmd = Command::new(broker_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.node(i).data_dir())
            .arg("--set")
            .arg(format!("auth.secret={SECRET}"));
        for (k, v) in self.settings(i) {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        for (k, v) in overrides {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("convoke starts");
        let deadline = Instant::now() + WAIT;
        let code = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (code, err)
    }
}

/// `node`'s `/cluster` document (`Value::Null` when it does not answer).
async fn status_of(node: &Broker) -> Value {
    let (code, body) = node.http_get("/cluster").await;
    if code != 200 {
        return Value::Null;
    }
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Members `node` sees Up, itself included.
async fn up_count_of(node: &Broker) -> usize {
    let s = status_of(node).await;
    s["members"]
        .as_array()
        .map(|ms| ms.iter().filter(|m| m["state"] == "up").count())
        .unwrap_or(0)
}

/// Waits until each of `nodes` sees all of them Up.
pub(crate) async fn wait_mesh(nodes: &[&Broker]) {
    for (i, node) in nodes.iter().enumerate() {
        eventually(
            &format!("node {} to see {} members up", i + 1, nodes.len()),
            || async { (up_count_of(node).await == nodes.len()).then_some(()) },
        )
        .await;
    }
}

/// Starts `b` like [`Broker::launch`], its command line run by `prefix` (e.g. `ip netns
/// exec NS`, which execs the broker: the child's pid is the broker's).
fn spawn_wrapped(b: &mut Broker, prefix: &[String]) {
    use std::io::{BufRead, BufReader};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(b.dir.path().join("broker.log"))
        .expect("the broker log");
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..])
        .arg(broker_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(b.data_dir())
        .arg("--set")
        .arg(format!("auth.secret={SECRET}"))
        .arg("--set")
        .arg("log.level=warn");
    for (k, v) in &b.settings {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    let mut child = cmd
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {prefix:?} {}: {e}", broker_bin().display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("convoke ready") {
                let _ = tx.send(line);
            }
        }
    });
    let Ok(line) = rx.recv_timeout(WAIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("broker did not become ready; log:\n{}", b.log());
    };
    for part in line.split_whitespace() {
        if let Some(v) = part.strip_prefix("quic=") {
            b.addr = v.parse().expect("quic address");
        } else if let Some(v) = part.strip_prefix("metrics=") {
            b.metrics = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("cert=") {
            b.cert = std::path::PathBuf::from(v);
        }
    }
    b.child = Some(child);
}

/// Whether every thread of process `pid` is stopped (state `T` in its `stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let Ok(tasks) = tasks.collect::<Result<Vec<_>, _>>() else {
        return false;
    };
    !tasks.is_empty()
        && tasks.iter().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                // "tid (comm) S ...": the comm may hold spaces and parentheses.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            })
        })
}

fn signal(pid: u32, sig: &str) {
    assert!(pid != 0, "the node is not running");
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} {pid} failed");
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A frozen node would not die of SIGKILL until thawed on some systems; thaw first.
        for b in &self.nodes {
            if b.pid() != 0 {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(b.pid().to_string())
                    .status();
            }
        }
    }
}
