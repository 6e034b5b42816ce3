//! Test support: a real `convoke` broker process on free ports with a temporary data dir
//! (removed on drop), tokens, connected clients, and event assertions.
//!
//! The broker runs as a child process (built by this crate on first use, or `CONVOKE_BIN`), so a test can
//! `kill -9` it and restart it on the same data dir, exactly as an operator would.
//!
//! [`relay`] puts a userspace UDP relay between clients and a broker (delay, loss,
//! reordering, cuts, NAT rebinding), where this kernel has no netem.
//!
//! A [`Broker`] can also stand for a cluster of nodes ([`spread`]): in the
//! `cluster_scenarios` test binary, or with `CONVOKE_TEST_CLUSTER=3`, `Broker::start` runs
//! a 3-node cluster and spreads the scenario's clients over its nodes.

#![allow(
    clippy::unwrap_used,
    reason = "test support: a failed setup step should panic the test"
)]

pub mod checker;
pub mod cluster;
pub mod netns;
pub mod relay;
pub mod spread;

pub use relay::{Relay, RelayOptions};
pub use spread::{known_cluster_failure, on_cluster, single_broker_only};

use convoke_client::{Client, ClientError, EventStream};
use convoke_protocol::{GroupEvent, GroupEventOp, GroupMessage, Push};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// The app secret every test broker uses.
pub const SECRET: &str = "convoke-test-secret-0123456789abcdef";

/// How long to wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long to watch for something that should NOT happen.
pub const QUIET: Duration = Duration::from_millis(400);

/// Path of the `convoke` binary, built (or brought up to date) on first use.
///
/// `cargo test` builds a package's binaries only for that package's own integration
/// tests, so neither `convoke` nor `convoke-cli` is guaranteed to exist, or to be current,
/// when this crate's tests run (a clean clone's `cargo test --workspace` has neither). The
/// first call in each test process therefore runs `cargo build` for both binaries, with the
/// profile and target directory the tests were built with; when they are current that is a
/// no-op of a fraction of a second. `CONVOKE_BIN` names a prebuilt broker instead.
pub fn broker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CONVOKE_BIN") {
        return PathBuf::from(p);
    }
    built_bin("convoke")
}

/// Path of the `convoke-cli` binary, built like [`broker_bin`]'s (`CONVOKE_CLI_BIN` names a
/// prebuilt one).
pub fn cli_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CONVOKE_CLI_BIN") {
        return PathBuf::from(p);
    }
    built_bin("convoke-cli")
}

fn built_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let profile_dir = BUILT.get_or_init(build_binaries);
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing after building it; build it with `cargo build --bins`",
        path.display()
    );
    path
}

/// Runs `cargo build` for the broker and CLI binaries into the directory this test
/// executable was built in (target/<profile>/deps/<test> -> target/<profile>), and returns
/// that directory.
fn build_binaries() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let profile = if profile == "debug" {
        "dev".to_string()
    } else {
        profile
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(&cargo);
    // `cargo test` describes the test's own package to the test process (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, ...). ring's build script tracks those variables, so passing them
    // on made every test process rebuild ring, rustls and quinn for the binaries, and the
    // next plain `cargo build` rebuild them back (~2 min on 2 cores).
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name.as_ref(),
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--profile", &profile])
        .args(["-p", "convoke-broker", "--bin", "convoke"])
        .args(["-p", "convoke-client", "--bin", "convoke-cli"])
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo} to build the binaries: {e}"));
    assert!(status.success(), "building convoke and convoke-cli failed");
    profile_dir
}

/// A running broker process; or, on a cluster ([`spread`]), node 1 of the cluster holding
/// the other nodes, each method meaning the cluster (see each method).
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    dir: TempDir,
    settings: Vec<(String, String)>,
    /// The QUIC address to listen on at the next start (`None`: a free port).
    listen: Option<SocketAddr>,
    /// QUIC address.
    pub addr: SocketAddr,
    /// Metrics/health HTTP address.
    pub metrics: Option<SocketAddr>,
    /// The broker's (self-signed) certificate.
    pub cert: PathBuf,
    /// On a cluster: nodes 2..=n (node 1 is this one). Empty for one process.
    others: Vec<Broker>,
    /// On a cluster: which node each client goes to.
    placement: spread::Placement,
}

impl Broker {
    /// Starts a broker with the test defaults.
    pub async fn start() -> Broker {
        Self::start_with(&[]).await
    }

    /// Starts a broker with extra `section.field=value` settings: one process, or a cluster
    /// of [`spread::scenario_nodes`] nodes, each with these settings.
    pub async fn start_with(settings: &[(&str, &str)]) -> Broker {
        let n = spread::scenario_nodes();
        if n > 1 {
            return cluster::TestCluster::start_as_broker(n, settings).await;
        }
        let mut b = Self::unstarted(settings);
        b.launch();
        b
    }

    /// A broker whose data dir exists but whose process is not started yet (to seed its
    /// store first); start it with [`Broker::launch`]. Always one process.
    pub fn unstarted(settings: &[(&str, &str)]) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("convoke-test")
            .tempdir()
            .unwrap();
        let settings = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let b = Broker {
            child: None,
            dir,
            settings,
            listen: None,
            addr: "127.0.0.1:1".parse().unwrap(),
            metrics: None,
            cert: PathBuf::new(),
            others: Vec::new(),
            placement: spread::Placement::default(),
        };
        std::fs::create_dir_all(b.data_dir()).unwrap();
        b
    }

    /// Starts the broker process.
    pub fn launch(&mut self) {
        self.spawn();
    }

    /// This broker's processes: itself, then on a cluster nodes 2..=n. (Node 1 is this
    /// broker, whose methods mean the whole cluster: hence private.)
    fn nodes(&self) -> impl Iterator<Item = &Broker> {
        std::iter::once(self).chain(&self.others)
    }

    /// Every node's process id (one on a single broker; 0 for a node not running).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes().map(Broker::pid).collect()
    }

    /// The data directory (on a cluster node 1's: see [`Broker::data_dirs`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Every node's data directory (one on a single broker).
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        self.nodes().map(Broker::data_dir).collect()
    }

    /// The broker's log (stderr) so far; on a cluster every node's, each after a
    /// `--- node <i> ---` line.
    pub fn log(&self) -> String {
        if self.others.is_empty() {
            return self.own_log();
        }
        self.nodes()
            .enumerate()
            .map(|(i, n)| format!("--- node {} ---\n{}", i + 1, n.own_log()))
            .collect()
    }

    fn own_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Starts every node's process; on a cluster, returns when every node sees every
    /// other up.
    fn spawn(&mut self) {
        self.spawn_process();
        for node in &mut self.others {
            node.spawn_process();
        }
        if !self.others.is_empty() {
            let nodes: Vec<&Broker> = self.nodes().collect();
            // A side thread with its own runtime: this is called from synchronous code
            // inside a test's (current-thread) runtime.
            std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(cluster::wait_mesh(&nodes));
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            });
        }
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .unwrap();
        let mut cmd = Command::new(broker_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(
                self.listen
                    .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string()),
            )
            .arg("--metrics-listen")
            .arg("127.0.0.1:0")
            .arg("--set")
            .arg(format!("auth.secret={SECRET}"))
            .arg("--set")
            .arg("log.level=warn");
        for (k, v) in &self.settings {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        if let Some(listen) = self.listen {
            // After the settings: a cluster node's settings name its address with port 0.
            cmd.arg("--set").arg(format!("server.listen={listen}"));
        }
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", broker_bin().display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("convoke ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("broker did not become ready; log:\n{}", self.own_log());
            }
        };
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("quic=") {
                self.addr = v.parse().unwrap();
            } else if let Some(v) = part.strip_prefix("metrics=") {
                self.metrics = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("cert=") {
                self.cert = PathBuf::from(v);
            }
        }
        self.child = Some(child);
    }

    /// The broker's process id (on a cluster node 1's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether the broker process (on a cluster: any node) has exited by itself (e.g. a
    /// fault-injection abort).
    pub fn has_exited(&mut self) -> bool {
        let own = self
            .child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
        own || self.others.iter_mut().any(Broker::has_exited)
    }

    /// Waits up to `within` for the broker (on a cluster: any node) to exit by itself;
    /// fails the test naming `what` if it does not.
    pub async fn wait_exited(&mut self, within: Duration, what: &str) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.has_exited() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, like `kill -9`: no shutdown code runs. On a cluster, every node.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for node in &mut self.others {
            node.kill9();
        }
    }

    /// SIGTERM and wait for a graceful exit. On a cluster, every node, at once.
    pub fn stop(&mut self) {
        for node in self.nodes() {
            if let Some(c) = &node.child {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
            }
        }
        self.wait_exit();
        for node in &mut self.others {
            node.wait_exit();
        }
    }

    /// Waits for this process to exit after a SIGTERM (kills it after [`WAIT`]).
    fn wait_exit(&mut self) {
        if let Some(mut c) = self.child.take() {
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Graceful stop, then start again on the same data dir (new ports). On a cluster,
    /// every node (the same cluster port), returning when they see each other again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `kill -9`, then start again on the same data dir (new ports).
    pub fn crash_restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts the broker again (after [`Broker::kill9`] or [`Broker::stop`]) on the same
    /// data dir and the same QUIC address, so that its clients can reconnect. On a cluster,
    /// every node on its address.
    pub fn start_again_in_place(&mut self) {
        self.listen = Some(self.addr);
        for node in &mut self.others {
            node.listen = Some(node.addr);
        }
        self.spawn();
    }

    /// A token for `user`.
    pub fn token(&self, user: &str, admin: bool, ttl_secs: i64) -> String {
        let now = convoke_broker::clock::now_secs() as i64;
        let exp = (now + ttl_secs).max(0) as u64;
        convoke_broker::auth::mint(SECRET.as_bytes(), user, admin, exp)
    }

    /// A client builder pointed at this broker, trusting its certificate; on a cluster at
    /// the nodes in turn (the builder does not know its user).
    pub fn builder(&self) -> convoke_client::ClientBuilder {
        match self.others.is_empty() {
            true => self.own_builder(),
            false => {
                let i = self.placement.next_builder(self.others.len() + 1);
                self.node(i).own_builder()
            }
        }
    }

    /// Node `i` (0-based; 0 is this one).
    fn node(&self, i: usize) -> &Broker {
        match i {
            0 => self,
            i => &self.others[i - 1],
        }
    }

    /// The node a client of `user` on `device` connects to: this broker, or on a cluster
    /// the one [`spread::Placement`] assigns.
    fn node_of(&self, user: &str, device: &str) -> &Broker {
        match self.others.is_empty() {
            true => self,
            false => self.node(self.placement.node_of(user, device, self.others.len() + 1)),
        }
    }

    fn own_builder(&self) -> convoke_client::ClientBuilder {
        Client::builder()
            .server_addr(self.addr)
            .server_name("localhost")
            .ca_file(self.cert.clone())
    }

    /// A connected client for `user` (device "d1") with its event probe.
    pub async fn connect(&self, user: &str) -> Peer {
        self.connect_device(user, "d1").await
    }

    /// A connected app admin.
    pub async fn connect_admin(&self, user: &str) -> Peer {
        let client = self
            .node_of(user, "d1")
            .own_builder()
            .token(self.token(user, true, 3600))
            .device_id("d1")
            .connect()
            .await
            .unwrap();
        Peer::new(client)
    }

    /// A connected client for `user` on `device` (on a cluster on its node, see
    /// [`spread`]).
    pub async fn connect_device(&self, user: &str, device: &str) -> Peer {
        let node = self.node_of(user, device);
        let client = node
            .own_builder()
            .token(self.token(user, false, 3600))
            .device_id(device)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect: {e}\nbroker log:\n{}", node.log()));
        Peer::new(client)
    }

    /// The value of metric `name` in a fresh scrape, summed over its labelled series (0 when
    /// absent); on a cluster also over the nodes.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await;
        spread::sum_of(&body, name)
    }

    /// Waits until the broker has exactly `n` sessions past their handshake (e.g. until a
    /// dropped client's session is really gone, so that the user counts as offline).
    pub async fn wait_for_sessions(&self, n: u64) {
        eventually(&format!("{n} online sessions"), || async {
            (self.metric("convoke_sessions_online").await as u64 == n).then_some(())
        })
        .await;
    }

    /// Fetches `/metrics` (or another path) from the metrics endpoint. On a cluster,
    /// `/metrics` is every node's scrape merged, each series summed over the nodes (the
    /// first failing node's status, if any); another path is node 1's.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        if self.others.is_empty() || path != "/metrics" {
            return self.own_http_get(path).await;
        }
        let mut status = 200;
        let mut bodies = Vec::new();
        for node in self.nodes() {
            let (code, body) = node.own_http_get(path).await;
            if status == 200 {
                status = code;
            }
            bodies.push(body);
        }
        (status, spread::merge_scrapes(&bodies))
    }

    /// Metric `name` (summed over its series) on each node, in node order (one value on a
    /// single broker).
    pub async fn node_metrics(&self, name: &str) -> Vec<f64> {
        let mut out = Vec::new();
        for node in self.nodes() {
            let (_, body) = node.own_http_get("/metrics").await;
            out.push(spread::sum_of(&body, name));
        }
        out
    }

    async fn own_http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics.expect("metrics enabled");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() && !self.others.is_empty() {
            // The data dirs go with the broker: what the nodes logged (peers seen down and
            // up, at info) is the first thing to read about a scenario failing on a cluster.
            for (i, node) in self.nodes().enumerate() {
                let log = node.own_log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- node {} log (last {} lines) ---", i + 1, tail.len());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// A connected client and its events.
#[derive(Debug)]
pub struct Peer {
    pub client: Client,
    pub events: EventStream,
}

impl From<Client> for Peer {
    fn from(client: Client) -> Self {
        Self::new(client)
    }
}

impl Peer {
    fn new(client: Client) -> Self {
        let events = client.events();
        Self { client, events }
    }

    /// The next push, within [`WAIT`].
    pub async fn next_push(&mut self) -> Push {
        match tokio::time::timeout(WAIT, self.events.next_push()).await {
            Ok(Some(p)) => p,
            Ok(None) => panic!("{}: event stream ended", self.client.user_id()),
            Err(_) => panic!("{}: no event within {WAIT:?}", self.client.user_id()),
        }
    }

    /// The next onGroupEvent, which must have operation `op`.
    pub async fn expect(&mut self, op: GroupEventOp) -> GroupEvent {
        match self.next_push().await {
            Push::Group(ev) if ev.operation == op => ev,
            other => panic!("{}: expected {op}, got {other:?}", self.client.user_id()),
        }
    }

    /// The next onMultiDeviceEvent, which must have operation `op`.
    pub async fn expect_multi_device(&mut self, op: GroupEventOp) -> GroupEvent {
        match self.next_push().await {
            Push::MultiDevice(ev) if ev.operation == op => ev,
            other => panic!(
                "{}: expected multi-device {op}, got {other:?}",
                self.client.user_id()
            ),
        }
    }

    /// The next group message.
    pub async fn expect_message(&mut self) -> GroupMessage {
        match self.next_push().await {
            Push::Message(m) => m,
            other => panic!(
                "{}: expected a message, got {other:?}",
                self.client.user_id()
            ),
        }
    }

    /// Asserts that no push arrives within [`QUIET`] (connection states are not pushes).
    pub async fn expect_quiet(&mut self) {
        if let Ok(Some(p)) = tokio::time::timeout(QUIET, self.events.next_push()).await {
            panic!("{}: expected no event, got {p:?}", self.client.user_id());
        }
    }

    /// The user id.
    pub fn user(&self) -> &str {
        self.client.user_id()
    }
}

/// Deterministic, non-repeating-looking bytes (xorshift from `seed`), for file contents.
pub fn pattern_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Asserts that `r` failed with `code`; returns the message.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    code: convoke_protocol::ErrorCode,
) -> String {
    match r {
        Err(ClientError::Api(e)) if e.code == code => e.message,
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// Polls `f` until it returns `Some`, or panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bare QUIC connection to `broker` (no handshake sent), for tests that speak raw frames.
pub async fn raw_connection(broker: &Broker) -> quinn::Connection {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&broker.cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![convoke_protocol::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    endpoint
        .connect(broker.addr, "localhost")
        .unwrap()
        .await
        .unwrap()
}

/// Connects each of `users` (so they exist) and returns their peers in order.
pub async fn peers(broker: &Broker, users: &[&str]) -> Vec<Peer> {
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        out.push(broker.connect(u).await);
    }
    out
}

/// createGroup data with a name and initial members.
pub fn group_data(name: &str, members: &[&str]) -> convoke_protocol::CreateGroupData {
    convoke_protocol::CreateGroupData {
        groupname: name.to_string(),
        members: members.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The common cast: "owner", admin "adm", members "m1" and "m2" of one group, and an
/// outsider "out"; every setup event already consumed. Returns the group id and the peers
/// in that order.
pub async fn standard_group(broker: &Broker, public: bool) -> (String, [Peer; 5]) {
    let mut all = peers(broker, &["owner", "adm", "m1", "m2", "out"]).await;
    let gid = all[0]
        .client
        .create_group(convoke_protocol::CreateGroupData {
            public,
            ..group_data("g", &["adm", "m1", "m2"])
        })
        .await
        .unwrap();
    all[0].client.set_group_admin(&gid, "adm").await.unwrap();
    all[1].expect(GroupEventOp::DirectJoined).await;
    all[1].expect(GroupEventOp::SetAdmin).await;
    all[2].expect(GroupEventOp::DirectJoined).await;
    all[3].expect(GroupEventOp::DirectJoined).await;
    let peers: [Peer; 5] = all
        .try_into()
        .unwrap_or_else(|_| unreachable!("five peers"));
    (gid, peers)
}
