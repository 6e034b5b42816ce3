//! `attack`: abuse under load (issue #12, "Abuse under load"). One normal client keeps
//! working (a sender and a receiver in their own group, messages at a steady rate, latency
//! from each message's scheduled send time to its receipt) while one attack runs against the
//! same broker; its figures with and without the attack are reported side by side with the
//! broker's memory (VmRSS, and VmHWM, the peak, from `/proc/<pid>/status`).
//!
//! The attacks, each what the review found one user (or one address) could do to the others:
//! - `preauth`: many connections that open the control stream and send part of a hello
//!   frame announcing the largest frame, never finishing it; each one the broker closes is
//!   opened again.
//! - `unread`: sessions that pipeline getGroupInfo requests with large answers (100 groups
//!   with 8 KiB of ext each) and never read an answer.
//! - `attr-keys`: getGroupMembersAttributes of 10 members with 100 attributes each and a
//!   `keys` list of hundreds of thousands of entries, back to back.
//! - `inbox`: create/destroy loops of groups whose forced members are the victims (offline),
//!   each pair leaving kept events in every victim's inbox; afterwards one victim logs in and
//!   the kept events it is handed are counted.
//! - `slow-upload`: uploads of a 10 MiB file that trickle a byte now and then.
//!
//! The normal client runs on its own runtime in its own thread, so an attack that keeps this
//! process's main runtime busy does not delay it here; both still share the load generator's
//! core(s), so the report carries the load generator's CPU.

use super::fleet::connect_all;
use super::measure::{self, Clock, Tally, Window, WindowResult, PHASE_MEASURED};
use super::pace::Pacer;
use super::report::{finite, NOISE_PCT};
use super::servers::ConvokeServer;
use super::{FleetOpts, RunSpec};
use anyhow::{bail, Context as _};
use bytes::BytesMut;
use convoke_client::{Client, CreateGroupData, Push};
use convoke_protocol::codec::{decode_frame, frame_bytes, MAX_FRAME_LEN};
use convoke_protocol::handshake::{ClientFrame, Hello, ServerFrame, SUPPORTED_VERSIONS};
use convoke_protocol::transfer::TransferHeader;
use convoke_protocol::Request;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The attacks, by their command-line names.
pub const KINDS: &[&str] = &["preauth", "unread", "attr-keys", "inbox", "slow-upload"];

/// How hard each attack pushes (one set of knobs for all; each attack reads its own).
#[derive(Debug, Clone)]
pub struct AttackOpts {
    /// preauth: connections held at once.
    pub connections: usize,
    /// preauth: bytes of the never-finished hello sent on each connection.
    pub hello_bytes: usize,
    /// unread, slow-upload: attacking sessions; attr-keys, inbox: concurrent request loops.
    pub sessions: usize,
    /// attr-keys: entries in each request's `keys`.
    pub keys: usize,
    /// inbox: forced members (victims) of each group created.
    pub victims: usize,
    /// slow-upload: seconds between two bytes of one upload.
    pub trickle_secs: f64,
    /// Seconds of attack before the normal client's measured phase starts.
    pub ramp: Duration,
    /// The normal client's messages per second.
    pub rate: f64,
}

/// The normal client's figures over one phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseFigures {
    /// Messages sent, refused, and received by the normal receiver.
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    /// Send-to-receive latency from the scheduled send time, ms.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The broker's CPU over the phase, percent of one core.
    pub broker_cpu_pct: f64,
    /// This load generator's (normal client and attack) CPU, percent of one core.
    pub loadgen_cpu_pct: f64,
    /// Other processes' CPU (noise), percent of one core.
    pub other_cpu_pct: f64,
    /// The broker's VmRSS at the end of the phase, and the largest sampled during it, MiB.
    pub rss_mib: f64,
    pub rss_max_mib: f64,
    /// The first refusal or failure of the normal client, if any.
    pub first_error: Option<String>,
}

/// The result of one `attack` run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttackOutcome {
    /// Always `attack` (tells these JSON lines from the other scenarios').
    pub scenario: String,
    /// One of [`KINDS`].
    pub attack: String,
    /// The attack's parameters, as a reader should see them.
    pub params: String,
    /// The normal client's messages per second.
    pub rate: f64,
    /// Measured seconds of each phase.
    pub duration_s: f64,
    pub baseline: PhaseFigures,
    pub attacked: PhaseFigures,
    /// The broker's VmHWM (peak RSS over its life) at the end of the attacked phase, MiB.
    pub hwm_mib: f64,
    /// What the attack did and how the broker answered it (counts by name).
    pub attack_counts: BTreeMap<String, u64>,
    /// Broker settings beyond the defaults.
    pub settings: Vec<String>,
    pub notes: Vec<String>,
}

impl AttackOutcome {
    /// Attacked p99 over the baseline p99 (the aim: at most 2).
    pub fn p99_ratio(&self) -> Option<f64> {
        match (self.attacked.p99_ms, self.baseline.p99_ms) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    }

    /// One line for the operator.
    pub fn summary(&self) -> String {
        format!(
            "attack {}: p50/p99 {} / {} ms -> {} / {} ms (p99 x{}), RSS {:.0} -> {:.0} MiB (max {:.0}, HWM {:.0}); {:?}",
            self.attack,
            ms(self.baseline.p50_ms),
            ms(self.baseline.p99_ms),
            ms(self.attacked.p50_ms),
            ms(self.attacked.p99_ms),
            self.p99_ratio().map_or("-".into(), |r| format!("{r:.2}")),
            self.baseline.rss_mib,
            self.attacked.rss_mib,
            self.attacked.rss_max_mib,
            self.hwm_mib,
            self.attack_counts
        )
    }
}

/// Counters an attack fills while it runs.
#[derive(Debug, Default)]
struct Counts(Mutex<BTreeMap<&'static str, u64>>);

impl Counts {
    fn add(&self, name: &'static str, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(name).or_default() += n;
    }

    /// Counts one `name`; true if it was the first.
    fn first(&self, name: &'static str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(name).or_default();
        *n += 1;
        *n == 1
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }
}

/// Runs `kind` against `server` while the normal client works; see the module doc.
pub async fn attack(
    server: &ConvokeServer,
    kind: &str,
    opts: &AttackOpts,
    run: &RunSpec,
    fleet: &FleetOpts,
) -> anyhow::Result<AttackOutcome> {
    if !KINDS.contains(&kind) {
        bail!("unknown attack {kind:?}; one of {KINDS:?}");
    }
    let normal = Normal::start(server, opts.rate, run.payload).await?;
    let prepared = prepare(server, kind, opts, fleet).await?;
    eprintln!("attack {kind}: prepared; warm-up {:?}", run.warmup);
    normal.measure(run.warmup).await?;
    eprintln!("attack {kind}: baseline {:?}", run.duration);
    let baseline = measured_phase(server, &normal, run.duration).await?;
    let counts = Arc::new(Counts::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_attack(
        server.clone_target(),
        prepared,
        opts.clone(),
        counts.clone(),
        stop_rx,
    ));
    eprintln!(
        "attack {kind}: attack started; ramp {:?}, then measured {:?}",
        opts.ramp, run.duration
    );
    let ramp_peak = rss_peak_during(server.pid(), tokio::time::sleep(opts.ramp)).await;
    let mut attacked = measured_phase(server, &normal, run.duration).await?;
    attacked.rss_max_mib = attacked.rss_max_mib.max(ramp_peak);
    let hwm_mib = status_kib(server.pid(), "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let _ = stop_tx.send(true);
    let mut notes = Vec::new();
    let extra = match tokio::time::timeout(Duration::from_secs(20), task).await {
        Ok(Ok(Ok(extra))) => extra,
        Ok(Ok(Err(e))) => {
            notes.push(format!("the attack failed: {e:#}"));
            BTreeMap::new()
        }
        Ok(Err(e)) => {
            notes.push(format!("the attack task failed: {e}"));
            BTreeMap::new()
        }
        Err(_) => {
            notes.push("the attack did not stop within 20 s".into());
            BTreeMap::new()
        }
    };
    let mut attack_counts = counts.snapshot();
    attack_counts.extend(extra);
    if normal.closed() {
        notes.push("the normal client was disconnected".into());
    }
    normal.stop();
    Ok(AttackOutcome {
        scenario: "attack".into(),
        attack: kind.into(),
        params: params(kind, opts),
        rate: opts.rate,
        duration_s: run.duration.as_secs_f64(),
        baseline,
        attacked,
        hwm_mib,
        attack_counts,
        settings: server.settings.clone(),
        notes,
    })
}

fn params(kind: &str, o: &AttackOpts) -> String {
    match kind {
        "preauth" => format!(
            "{} connections, {} KiB of a never-finished hello each",
            o.connections,
            o.hello_bytes / 1024
        ),
        "unread" => format!(
            "{} sessions pipelining getGroupInfo(100 groups x 8 KiB ext), never reading",
            o.sessions
        ),
        "attr-keys" => format!(
            "{} loops of getGroupMembersAttributes(10 users x 100 attributes, {} keys)",
            o.sessions, o.keys
        ),
        "inbox" => format!(
            "{} loops of createGroup(members: {} offline victims) + destroyGroup",
            o.sessions, o.victims
        ),
        "slow-upload" => format!(
            "{} sessions x 3 uploads of 10 MiB, 1 byte every {} s",
            o.sessions, o.trickle_secs
        ),
        _ => String::new(),
    }
}

/// One measured phase of the normal client, with the broker's CPU and memory beside it.
async fn measured_phase(
    server: &ConvokeServer,
    normal: &Normal,
    duration: Duration,
) -> anyhow::Result<PhaseFigures> {
    let window = Window::start(server.pid(), Some(server.addr.port()))?;
    let measuring = normal.measure(duration);
    let (figures, rss_max) = {
        let pid = server.pid();
        let mut peak = 0.0f64;
        tokio::pin!(measuring);
        let figures = loop {
            tokio::select! {
                f = &mut measuring => break f?,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    peak = peak.max(status_kib(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0);
                }
            }
        };
        (figures, peak)
    };
    let w: WindowResult = window.end(server.pid())?;
    let wall = w.wall_s.max(1e-9);
    let rss_mib = w.server_rss as f64 / (1024.0 * 1024.0);
    Ok(PhaseFigures {
        broker_cpu_pct: 100.0 * w.server_cpu_s / wall,
        loadgen_cpu_pct: 100.0 * w.loadgen_cpu_s / wall,
        other_cpu_pct: 100.0 * w.other_cpu_s / wall,
        rss_mib,
        rss_max_mib: rss_max.max(rss_mib),
        ..figures
    })
}

/// The largest VmRSS of `pid` sampled every 200 ms while `f` runs, MiB.
async fn rss_peak_during(pid: u32, f: impl std::future::Future<Output = ()>) -> f64 {
    tokio::pin!(f);
    let mut peak = 0.0f64;
    loop {
        peak = peak.max(status_kib(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0);
        tokio::select! {
            () = &mut f => return peak,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// The normal client.

type MeasureCmd = (Duration, oneshot::Sender<anyhow::Result<PhaseFigures>>);

/// The normal client: a sender and a receiver in a group of their own, on a runtime of their
/// own in a thread of their own. Each [`Normal::measure`] runs one paced phase.
struct Normal {
    commands: mpsc::UnboundedSender<MeasureCmd>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
}

impl Normal {
    async fn start(server: &ConvokeServer, rate: f64, payload: usize) -> anyhow::Result<Self> {
        let (commands, mut rx) = mpsc::unbounded_channel::<MeasureCmd>();
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<()>>();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let target = server.clone_target();
        let closed2 = closed.clone();
        std::thread::Builder::new()
            .name("normal-client".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let pair = match NormalPair::connect(&target).await {
                        Ok(p) => {
                            let _ = ready_tx.send(Ok(()));
                            p
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            cmd = rx.recv() => {
                                let Some((duration, reply)) = cmd else { break };
                                let r = pair.phase(rate, duration, payload).await;
                                let _ = reply.send(r);
                            }
                        }
                    }
                    closed2.store(
                        pair.sender.is_closed() || pair.receiver.is_closed(),
                        Ordering::Relaxed,
                    );
                    pair.sender.close().await;
                    pair.receiver.close().await;
                });
            })?;
        ready_rx
            .await
            .context("the normal client's thread died")??;
        Ok(Self {
            commands,
            closed,
            stop: Some(stop_tx),
        })
    }

    async fn measure(&self, duration: Duration) -> anyhow::Result<PhaseFigures> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((duration, tx))
            .map_err(|_| anyhow::anyhow!("the normal client's thread is gone"))?;
        rx.await.context("the normal client's thread is gone")?
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

struct NormalPair {
    sender: Client,
    receiver: Client,
    gid: Arc<str>,
    current: Arc<Mutex<Arc<Tally>>>,
    clock: Clock,
}

impl NormalPair {
    async fn connect(target: &Target) -> anyhow::Result<Self> {
        let sender = target.client("normal-sender", false).await?;
        let receiver = target.client("normal-receiver", true).await?;
        let gid: Arc<str> = sender
            .create_group(CreateGroupData {
                groupname: "normal".into(),
                members: vec!["normal-receiver".into()],
                invite_need_confirm: false,
                ..CreateGroupData::default()
            })
            .await?
            .into();
        let clock = Clock::new();
        let current = Arc::new(Mutex::new(Arc::new(Tally::new(clock))));
        let mut events = receiver.events();
        let cur = current.clone();
        tokio::spawn(async move {
            while let Some(push) = events.next_push().await {
                if let Push::Message(m) = push {
                    let t = cur.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    t.record_payload(&m.payload);
                }
            }
        });
        Ok(Self {
            sender,
            receiver,
            gid,
            current,
            clock,
        })
    }

    async fn phase(
        &self,
        rate: f64,
        duration: Duration,
        payload: usize,
    ) -> anyhow::Result<PhaseFigures> {
        let tally = Arc::new(Tally::new(self.clock));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = tally.clone();
        let mut pacer = Pacer::new(rate, duration);
        let mut pending = Vec::with_capacity(pacer.total() as usize);
        while let Some((_, due)) = pacer.next().await {
            let body = measure::stamp(self.clock.unix_ns(due), PHASE_MEASURED, payload);
            let (client, gid) = (self.sender.clone(), self.gid.clone());
            pending.push(tokio::spawn(async move {
                client.send_group_message(&gid, body, false).await
            }));
        }
        let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
        for p in pending {
            match p.await {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        let t = tally.clone();
        let received = measure::wait_for_count(
            move || t.count(PHASE_MEASURED),
            ok,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .await;
        Ok(PhaseFigures {
            sent: ok + errors,
            send_errors: errors,
            received,
            p50_ms: finite(tally.quantile_ms(0.5)),
            p99_ms: finite(tally.quantile_ms(0.99)),
            p999_ms: finite(tally.quantile_ms(0.999)),
            max_ms: finite(tally.max_ms()),
            first_error,
            ..PhaseFigures::default()
        })
    }
}

// ---------------------------------------------------------------------------------------
// Talking to the broker: the bundled client, and raw QUIC for what it would not do.

/// What a thread or task needs to reach the broker (the server handle itself stays put).
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: std::net::SocketAddr,
    pub cert_pem: Arc<Vec<u8>>,
    pub secret: String,
}

impl ConvokeServer {
    /// The broker's address, certificate and secret, for clients made elsewhere.
    pub fn clone_target(&self) -> Target {
        Target {
            addr: self.addr,
            cert_pem: Arc::new(std::fs::read(&self.cert).unwrap_or_default()),
            secret: self.secret.clone(),
        }
    }
}

impl Target {
    fn token(&self, user: &str) -> String {
        let exp = convoke_broker::clock::now_secs() + 86_400;
        convoke_broker::auth::mint(self.secret.as_bytes(), user, false, exp)
    }

    async fn client(&self, user: &str, events: bool) -> anyhow::Result<Client> {
        let mut b = Client::builder()
            .server_addr(self.addr)
            .server_name("localhost")
            .ca_pem(self.cert_pem.to_vec())
            .token(self.token(user))
            .connect_timeout(Duration::from_secs(20))
            .request_timeout(Duration::from_secs(120));
        if !events {
            b = b.ignore_events();
        }
        b.connect()
            .await
            .with_context(|| format!("{user} cannot connect"))
    }

    /// A QUIC client config trusting the broker's certificate, ALPN `convoke/1`.
    fn quic_config(&self) -> anyhow::Result<quinn::ClientConfig> {
        use rustls::pki_types::{pem::PemObject as _, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.cert_pem) {
            roots.add(cert.context("unreadable broker certificate")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![convoke_protocol::ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        Ok(quinn::ClientConfig::new(Arc::new(quic)))
    }

    /// A client endpoint on 127.0.0.1 using `config` for its connections.
    fn endpoint(&self, config: &quinn::ClientConfig) -> anyhow::Result<quinn::Endpoint> {
        let mut ep = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into())?;
        ep.set_default_client_config(config.clone());
        Ok(ep)
    }

    /// A connection that has said hello as `user` and read its welcome: the connection and
    /// the control stream.
    async fn raw_session(
        &self,
        ep: &quinn::Endpoint,
        user: &str,
        device: &str,
    ) -> anyhow::Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
        let conn = ep.connect(self.addr, "localhost")?.await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = frame_bytes(&ClientFrame::Hello(Hello {
            versions: SUPPORTED_VERSIONS.to_vec(),
            token: self.token(user),
            device_id: device.into(),
            events: false,
        }))?;
        send.write_all(&hello).await?;
        let mut buf = BytesMut::new();
        loop {
            if let Some(frame) = decode_frame::<ServerFrame>(&mut buf, MAX_FRAME_LEN)? {
                match frame {
                    ServerFrame::Welcome(_) => return Ok((conn, send, recv)),
                    ServerFrame::Refused(e) => bail!("{user} refused: {e}"),
                    ServerFrame::Response { .. } => bail!("a response before the welcome"),
                }
            }
            match recv.read_chunk(64 * 1024, true).await? {
                Some(c) => buf.extend_from_slice(&c.bytes),
                None => bail!("{user}: the control stream ended before the welcome"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The attacks: what each needs set up before the baseline, and the attack itself.

/// State an attack sets up before the baseline is measured, so that the two phases differ
/// only by the attack's traffic.
enum Prepared {
    Preauth,
    /// The attacker's 100 group ids.
    Unread(Vec<String>),
    /// The attacker (owner), the group and its 10 members.
    AttrKeys(Client, String, Vec<String>),
    /// The attacker and the victims.
    Inbox(Client, Vec<String>),
    /// The group every attacker is a member of, and the attackers.
    SlowUpload(String, Vec<String>),
}

async fn prepare(
    server: &ConvokeServer,
    kind: &str,
    o: &AttackOpts,
    fleet: &FleetOpts,
) -> anyhow::Result<Prepared> {
    let names = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:04}")).collect()
    };
    Ok(match kind {
        "preauth" => Prepared::Preauth,
        "unread" => {
            let owner = server.clone_target().client("att-unread", false).await?;
            let ext = "x".repeat(convoke_protocol::limits::MAX_EXT_BYTES);
            let mut gids = Vec::with_capacity(100);
            for i in 0..100 {
                let gid = owner
                    .create_group(CreateGroupData {
                        groupname: format!("big ext {i}"),
                        ext: ext.clone(),
                        ..CreateGroupData::default()
                    })
                    .await?;
                gids.push(gid);
            }
            owner.close().await;
            Prepared::Unread(gids)
        }
        "attr-keys" => {
            let members = names("att-k", 10);
            // Members must have logged in once.
            let clients = connect_all(server, &members, false, fleet).await?;
            let owner = clients[0].clone();
            let gid = owner
                .create_group(CreateGroupData {
                    groupname: "attribute keys".into(),
                    members: members[1..].to_vec(),
                    invite_need_confirm: false,
                    ..CreateGroupData::default()
                })
                .await?;
            for m in &members {
                let attrs: BTreeMap<String, String> = (0..100)
                    .map(|k| (format!("k{k:03}"), format!("{m}-value-{k:03}")))
                    .collect();
                owner.set_group_member_attributes(&gid, m, attrs).await?;
            }
            for c in &clients[1..] {
                c.close().await;
            }
            Prepared::AttrKeys(owner, gid, members)
        }
        "inbox" => {
            let victims = names("victim", o.victims.max(2));
            for c in connect_all(server, &victims, false, fleet).await? {
                c.close().await;
            }
            let attacker = server.clone_target().client("att-inbox", false).await?;
            Prepared::Inbox(attacker, victims)
        }
        "slow-upload" => {
            let users = names("att-slow", o.sessions.max(2));
            let clients = connect_all(server, &users, false, fleet).await?;
            let gid = clients[0]
                .create_group(CreateGroupData {
                    groupname: "slow uploads".into(),
                    members: users[1..].to_vec(),
                    invite_need_confirm: false,
                    maxusers: Some(u32::try_from(users.len() + 1).unwrap_or(u32::MAX).max(3)),
                    ..CreateGroupData::default()
                })
                .await?;
            for c in &clients {
                c.close().await;
            }
            Prepared::SlowUpload(gid, users)
        }
        other => bail!("unknown attack {other:?}"),
    })
}

/// Runs the attack until `stop`; returns counts only known at the end.
async fn run_attack(
    target: Target,
    prepared: Prepared,
    o: AttackOpts,
    counts: Arc<Counts>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let config = target.quic_config()?;
    match prepared {
        Prepared::Preauth => preauth(&target, &config, &o, &counts, stop).await,
        Prepared::Unread(gids) => unread(&target, &config, &o, &counts, stop, gids).await,
        Prepared::AttrKeys(owner, gid, members) => {
            attr_keys(&o, &counts, stop, owner, gid, members).await
        }
        Prepared::Inbox(attacker, victims) => {
            inbox(&target, &o, &counts, stop, attacker, victims).await
        }
        Prepared::SlowUpload(gid, users) => {
            slow_upload(&target, &config, &o, &counts, stop, gid, users).await
        }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Connections (per endpoint) in the attacks that open many.
const PER_ENDPOINT: usize = 250;

async fn preauth(
    target: &Target,
    config: &quinn::ClientConfig,
    o: &AttackOpts,
    counts: &Arc<Counts>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let endpoints = (0..o.connections.div_ceil(PER_ENDPOINT))
        .map(|_| target.endpoint(config))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let open = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..o.connections {
        let (ep, addr, counts, stop) = (
            endpoints[i / PER_ENDPOINT].clone(),
            target.addr,
            counts.clone(),
            stop.clone(),
        );
        let (open, peak, hello_bytes) = (open.clone(), peak.clone(), o.hello_bytes);
        tasks.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let conn = match ep.connect(addr, "localhost") {
                    Ok(c) => c,
                    Err(_) => {
                        counts.add("connect errors", 1);
                        break;
                    }
                };
                let conn = tokio::select! {
                    c = conn => c,
                    () = stopped(stop.clone()) => break,
                };
                let conn = match conn {
                    Ok(c) => c,
                    Err(_) => {
                        counts.add("handshakes refused or failed", 1);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                counts.add("connections opened", 1);
                let now = open.fetch_add(1, Ordering::Relaxed) + 1;
                peak.fetch_max(now, Ordering::Relaxed);
                let started = Instant::now();
                let hold = async {
                    if hello_bytes > 0 {
                        let (mut send, _recv) = conn.open_bi().await?;
                        let len = u32::try_from(MAX_FRAME_LEN).unwrap_or(u32::MAX);
                        send.write_all(&len.to_be_bytes()).await?;
                        let chunk = vec![0xA5u8; 16 * 1024];
                        let mut left = hello_bytes;
                        while left > 0 {
                            let n = left.min(chunk.len());
                            send.write_all(&chunk[..n]).await?;
                            left -= n;
                        }
                        // Keep the stream (and its buffered bytes) until the broker gives up.
                        conn.closed().await;
                        drop(send);
                    } else {
                        conn.closed().await;
                    }
                    anyhow::Ok(())
                };
                tokio::select! {
                    _ = hold => {
                        counts.add("closed by the broker", 1);
                        counts.add("ms held (sum)", started.elapsed().as_millis() as u64);
                    }
                    () = stopped(stop.clone()) => {
                        conn.close(0u32.into(), b"done");
                    }
                }
                open.fetch_sub(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    for ep in &endpoints {
        ep.close(0u32.into(), b"done");
    }
    Ok(BTreeMap::from([(
        "connections open at once (max)".to_string(),
        peak.load(Ordering::Relaxed),
    )]))
}

async fn unread(
    target: &Target,
    config: &quinn::ClientConfig,
    o: &AttackOpts,
    counts: &Arc<Counts>,
    stop: watch::Receiver<bool>,
    gids: Vec<String>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let ep = target.endpoint(config)?;
    let mut tasks = Vec::new();
    for s in 0..o.sessions {
        let (ep, target, counts, stop, gids) = (
            ep.clone(),
            target.clone(),
            counts.clone(),
            stop.clone(),
            gids.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let device = format!("unread{s}");
            let (conn, mut send, _recv) = match target.raw_session(&ep, "att-unread", &device).await
            {
                Ok(x) => x,
                Err(e) => {
                    counts.add("sessions refused or failed", 1);
                    return Err(e);
                }
            };
            counts.add("sessions opened", 1);
            let write = async {
                for id in 1u64.. {
                    let frame = frame_bytes(&ClientFrame::Request {
                        id,
                        request: Request::GetGroupInfo {
                            group_ids: gids.clone(),
                        },
                    })?;
                    send.write_all(&frame).await?;
                    counts.add("requests written", 1);
                }
                anyhow::Ok(())
            };
            tokio::select! {
                r = write => {
                    if r.is_err() {
                        counts.add("sessions closed by the broker", 1);
                    }
                }
                () = stopped(stop.clone()) => {}
            }
            conn.close(0u32.into(), b"done");
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ep.close(0u32.into(), b"done");
    Ok(BTreeMap::new())
}

async fn attr_keys(
    o: &AttackOpts,
    counts: &Arc<Counts>,
    stop: watch::Receiver<bool>,
    owner: Client,
    gid: String,
    members: Vec<String>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    // Keys that match nothing, 8 bytes each: bincode's decoding limit counts each String's
    // 24-byte header too, so about 120,000 such keys fit in one 4 MiB frame.
    let keys: Vec<String> = (0..o.keys).map(|i| format!("x{i:07}")).collect();
    let request = Request::GetGroupMembersAttributes {
        group_id: gid,
        user_ids: members,
        keys,
    };
    let answer_ms = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..o.sessions.max(1) {
        let (owner, request, counts, stop, answer_ms) = (
            owner.clone(),
            request.clone(),
            counts.clone(),
            stop.clone(),
            answer_ms.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let started = Instant::now();
                let r = tokio::select! {
                    r = owner.request(request.clone()) => r,
                    () = stopped(stop.clone()) => break,
                };
                match r {
                    Ok(_) => counts.add("requests answered", 1),
                    Err(e) if e.code().is_some() => {
                        if counts.first("requests refused") {
                            eprintln!("attr-keys: the first refusal: {e}");
                        }
                    }
                    Err(e) => {
                        eprintln!("attr-keys: a request failed: {e}");
                        counts.add("requests failed (connection)", 1);
                        break;
                    }
                }
                answer_ms.fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(BTreeMap::from([(
        "answer ms (sum)".to_string(),
        answer_ms.load(Ordering::Relaxed),
    )]))
}

async fn inbox(
    target: &Target,
    o: &AttackOpts,
    counts: &Arc<Counts>,
    stop: watch::Receiver<bool>,
    attacker: Client,
    victims: Vec<String>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let maxusers = u32::try_from(victims.len() + 1).unwrap_or(u32::MAX).max(3);
    let mut tasks = Vec::new();
    for _ in 0..o.sessions.max(1) {
        let (attacker, victims, counts, stop) = (
            attacker.clone(),
            victims.clone(),
            counts.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let data = CreateGroupData {
                    groupname: "spam".into(),
                    members: victims.clone(),
                    invite_need_confirm: false,
                    maxusers: Some(maxusers),
                    ..CreateGroupData::default()
                };
                let gid = match attacker.create_group(data).await {
                    Ok(g) => g,
                    Err(e) if e.code().is_some() => {
                        counts.add("creates refused", 1);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(_) => break,
                };
                counts.add("groups created", 1);
                match attacker.destroy_group(&gid).await {
                    Ok(()) => counts.add("groups destroyed", 1),
                    Err(e) if e.code().is_some() => counts.add("destroys refused", 1),
                    Err(_) => break,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // What the flood cost one victim: the events handed to it at its next login.
    let victim = target.client(&victims[0], true).await?;
    let started = Instant::now();
    let mut events = victim.events();
    let mut got = 0u64;
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(2), events.next_push()).await {
        if matches!(p, Push::Group(_)) {
            got += 1;
        }
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    let replay_ms = started.elapsed().saturating_sub(Duration::from_secs(2));
    victim.close().await;
    Ok(BTreeMap::from([
        ("victim's events at next login".to_string(), got),
        (
            "victim's replay ms".to_string(),
            replay_ms.as_millis() as u64,
        ),
    ]))
}

async fn slow_upload(
    target: &Target,
    config: &quinn::ClientConfig,
    o: &AttackOpts,
    counts: &Arc<Counts>,
    stop: watch::Receiver<bool>,
    gid: String,
    users: Vec<String>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let ep = target.endpoint(config)?;
    let gap = Duration::from_secs_f64(o.trickle_secs.max(0.001));
    let mut tasks = Vec::new();
    for user in users {
        let (ep, target, counts, stop, gid) = (
            ep.clone(),
            target.clone(),
            counts.clone(),
            stop.clone(),
            gid.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (conn, _send, _recv) = match target.raw_session(&ep, &user, "slow").await {
                Ok(x) => x,
                Err(_) => {
                    counts.add("sessions refused or failed", 1);
                    return;
                }
            };
            let mut uploads = Vec::new();
            for n in 0..3u64 {
                let (conn, counts, gid, stop) =
                    (conn.clone(), counts.clone(), gid.clone(), stop.clone());
                uploads.push(tokio::spawn(async move {
                    if trickle(&conn, gid, n, gap, &counts).await.is_err() && !*stop.borrow() {
                        counts.add("uploads ended by the broker", 1);
                    }
                }));
            }
            stopped(stop).await;
            conn.close(0u32.into(), b"done");
            for u in uploads {
                let _ = u.await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ep.close(0u32.into(), b"done");
    Ok(BTreeMap::new())
}

/// One upload of a 10 MiB file whose bytes come one every `gap`; ends when the broker (or
/// the end of the attack) ends the stream.
async fn trickle(
    conn: &quinn::Connection,
    group_id: String,
    n: u64,
    gap: Duration,
    counts: &Counts,
) -> anyhow::Result<()> {
    let (mut send, _recv) = conn.open_bi().await?;
    let header = frame_bytes(&TransferHeader::Upload {
        group_id,
        file_name: format!("slow{n}.bin"),
        size: convoke_protocol::limits::MAX_FILE_BYTES,
        content_type: "application/octet-stream".into(),
        upload_id: rand_id(n),
        resume: false,
    })?;
    send.write_all(&header).await?;
    counts.add("uploads started", 1);
    loop {
        tokio::time::sleep(gap).await;
        send.write_all(&[0x5A]).await?;
        counts.add("bytes trickled", 1);
    }
}

/// An upload id unlikely to repeat across runs.
fn rand_id(n: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    t.rotate_left(17) ^ (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

// ---------------------------------------------------------------------------------------
// The report.

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.1}"),
        None => "-".into(),
    }
}

/// The Markdown table of `runs` (one row per attack run).
pub fn markdown(runs: &[AttackOutcome]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        return out;
    }
    out.push_str("\n#### Abuse under load (one normal client, with and without the attack)\n\n");
    out.push_str("| attack | parameters | settings | normal p50 / p99 ms, no attack | normal p50 / p99 ms, attacked | p99 attacked / not | received / sent (attacked) | broker RSS MiB: no attack / attacked (max sampled) / VmHWM | broker CPU % no attack / attacked | loadgen CPU % attacked | what the attack did | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for o in runs {
        let mut notes = o.notes.clone();
        for (phase, f) in [("baseline", &o.baseline), ("attacked", &o.attacked)] {
            if f.other_cpu_pct > NOISE_PCT {
                notes.push(format!(
                    "noise ({phase}): other processes {:.0}% CPU",
                    f.other_cpu_pct
                ));
            }
            if let Some(e) = &f.first_error {
                notes.push(format!(
                    "{phase}: {} sends failed, first: {e}",
                    f.send_errors
                ));
            }
        }
        let did: Vec<String> = o
            .attack_counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} / {} | {} / {} | {} | {} / {} | {:.0} / {:.0} ({:.0}) / {:.0} | {:.0} / {:.0} | {:.0} | {} | {} |",
            o.attack,
            o.params,
            if o.settings.is_empty() {
                "defaults".to_string()
            } else {
                o.settings.join(" ")
            },
            ms(o.baseline.p50_ms),
            ms(o.baseline.p99_ms),
            ms(o.attacked.p50_ms),
            ms(o.attacked.p99_ms),
            o.p99_ratio().map_or("-".into(), |r| format!("{r:.2}")),
            o.attacked.received,
            o.attacked.sent - o.attacked.send_errors,
            o.baseline.rss_mib,
            o.attacked.rss_mib,
            o.attacked.rss_max_mib,
            o.hwm_mib,
            o.baseline.broker_cpu_pct,
            o.attacked.broker_cpu_pct,
            o.attacked.loadgen_cpu_pct,
            did.join("; "),
            notes.join("; ")
        );
    }
    out
}
