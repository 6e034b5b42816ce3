//! `convoke-loadgen`: open-loop load scenarios against a fresh `convoke` broker and, for
//! `fanout` and `idle`, the same against nats-server (plaintext and TLS), printing each
//! system's figures and appending them as JSON lines for `convoke-loadgen report`.
//!
//! Each scenario starts its own server process (pinned with `taskset` to `--server-cpu`),
//! runs for a fixed time on loopback, and stops it. Run the load generator itself pinned to
//! another core (`taskset -c 1 convoke-loadgen ...`); `benches/run.sh` does all of it.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use convoke_benches::loadgen::attack::{self, AttackOpts, AttackOutcome};
use convoke_benches::loadgen::cluster::{self, ConvokeCluster, ForwardOutcome};
use convoke_benches::loadgen::migration::{self, MigrationOutcome};
use convoke_benches::loadgen::report::{self, Outcome};
use convoke_benches::loadgen::resilience::{self, ReconnectOutcome, ResumeOutcome};
use convoke_benches::loadgen::servers::{ConvokeServer, NatsServer};
use convoke_benches::loadgen::{convoke, nats, FleetOpts, RunSpec};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(version, about = "Open-loop load generator: Convoke vs nats-server")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Common {
    /// The `convoke` binary. Default: the one beside this executable.
    #[arg(long, global = true)]
    convoke_bin: Option<PathBuf>,
    /// The nats-server binary.
    #[arg(long, global = true, default_value = "nats-server")]
    nats_bin: PathBuf,
    /// Core the server is pinned to with taskset; `-1` to not pin.
    #[arg(
        long,
        global = true,
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    server_cpu: i64,
    /// Measured seconds per scenario.
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of the same traffic first.
    #[arg(long, global = true, default_value_t = 2.0)]
    warmup: f64,
    /// Longest wait, seconds, for the last deliveries after the measured phase.
    #[arg(long, global = true, default_value_t = 60.0)]
    drain: f64,
    /// Payload bytes per message (the first 9 carry the stamp).
    #[arg(long, global = true, default_value_t = 64)]
    payload: usize,
    /// Convoke connections per shared QUIC endpoint.
    #[arg(long, global = true, default_value_t = 500)]
    per_endpoint: usize,
    /// Receive and send buffer of each shared UDP socket, bytes.
    #[arg(long, global = true, default_value_t = 4 << 20)]
    rcvbuf: usize,
    /// Connection handshakes in flight at once.
    #[arg(long, global = true, default_value_t = 64)]
    concurrency: usize,
    /// Extra broker settings, `section.key=value` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Systems to run, of convoke, nats, nats-tls (fanout and idle). With thousands of
    /// connections, run one system per process: async-nats may hold the sockets of closed
    /// clients for a while, and two runs' worth may not fit under the descriptor limit.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "convoke,nats,nats-tls"
    )]
    systems: Vec<String>,
    /// Name the Convoke results this way instead of `convoke` (e.g. `convoke-nocoalesce` for a
    /// run with different `--set` settings); reports compare every `convoke*` with nats.
    #[arg(long, global = true)]
    label: Option<String>,
    /// Append each outcome as a JSON line to this file.
    #[arg(long, global = true)]
    json_out: Option<PathBuf>,
    /// Run Convoke as a local cluster of this many core nodes (node i on 127.0.0.i, all
    /// pinned to `--server-cpu`; README "Running a cluster") instead of one broker with
    /// the default single-node setup: `fanout` spreads its members evenly over the nodes
    /// and sums the nodes' CPU; `forward` needs at least 2. 0: no cluster (`forward`: 3).
    #[arg(long, global = true, default_value_t = 0)]
    cluster_nodes: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One group (subject) of N online members, messages at rate / N per second.
    Fanout {
        /// Online members (receivers).
        #[arg(long)]
        members: usize,
        /// Offered deliveries per second.
        #[arg(long)]
        rate: f64,
    },
    /// M groups of k members, every member sending to its group (Convoke only).
    Rooms {
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 10)]
        size: usize,
        /// Messages per second each member sends.
        #[arg(long, default_value_t = 1.0)]
        member_rate: f64,
    },
    /// Management requests (mute, unmute, member attributes) at a fixed rate (Convoke only).
    Ops {
        #[arg(long, default_value_t = 10)]
        groups: usize,
        #[arg(long, default_value_t = 10)]
        size: usize,
        /// Requests per second, over all groups.
        #[arg(long)]
        rate: f64,
    },
    /// Two receivers of the same group messages, one rebinding its UDP socket every
    /// `--rebind-every` seconds (QUIC connection migration), one staying: lost and repeated
    /// messages and latency of both (Convoke only).
    Migration {
        /// Messages per second into the group.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds between two rebinds of the moving receiver.
        #[arg(long, default_value_t = 1.0)]
        rebind_every: f64,
    },
    /// A receiver behind a relay with `--delay-ms` each way, its path cut until it reports
    /// `Reconnecting` and healed, `--rounds` times per mode: heal to `Connected`, to
    /// `Resumed` and to the next message, the attempt's own time, and no message lost or
    /// repeated (Convoke only).
    Reconnect {
        /// Cut / heal rounds per mode.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// One-way delay of the receiver's path, ms.
        #[arg(long, default_value_t = 25.0)]
        delay_ms: f64,
        /// Messages per second into the group.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Reconnect modes: `0rtt` (the hello in early data), `1rtt` (the client's 0-RTT off).
        #[arg(long, value_delimiter = ',', default_value = "0rtt,1rtt")]
        modes: Vec<String>,
    },
    /// A receiver behind a relay cut for `--cut` seconds while messages arrive at `--rate`
    /// (the broker drops its session; `--warmup` seconds of live traffic before, `--duration`
    /// after): heal to `Resumed`, to caught up with live traffic, messages recovered and
    /// getGroupMessages requests, and no message lost or repeated (Convoke only). Adds
    /// `sessions.idle_timeout_secs=2` and `messages.history_per_group=100000` unless set.
    Resume {
        /// Messages per second into the group.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds the receiver's path is cut (at least).
        #[arg(long, default_value_t = 10.0)]
        cut: f64,
        /// One-way delay of the receiver's path, ms.
        #[arg(long, default_value_t = 0.0)]
        delay_ms: f64,
    },
    /// Abuse under load: each attack in turn, on a fresh broker, while one normal client
    /// (a sender and a receiver in their own group) sends and receives `--rate` messages/s:
    /// the normal client's p50 / p99 without the attack (`--duration` s) and with it
    /// (after `--ramp` s of attack, `--duration` s), and the broker's VmRSS / VmHWM
    /// (Convoke only).
    Attack {
        /// Attacks to run, of preauth, unread, attr-keys, inbox, slow-upload.
        #[arg(
            value_delimiter = ',',
            default_value = "preauth,unread,attr-keys,inbox,slow-upload"
        )]
        kinds: Vec<String>,
        /// The normal client's messages per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// preauth: connections held at once.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// preauth: bytes of the never-finished hello on each connection.
        #[arg(long, default_value_t = 128 * 1024)]
        hello_bytes: usize,
        /// Attacking sessions (unread: 4, slow-upload: 100 users x 3 uploads) or request
        /// loops (attr-keys: 2, inbox: 4); default per attack.
        #[arg(long)]
        sessions: Option<usize>,
        /// attr-keys: entries in each request's keys list.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// inbox: forced members (offline victims) of each group created.
        #[arg(long, default_value_t = 100)]
        victims: usize,
        /// slow-upload: seconds between two bytes of one upload.
        #[arg(long, default_value_t = 1.0)]
        trickle_secs: f64,
        /// Seconds of attack before the normal client's measured phase; default 3, and 35
        /// for slow-upload (longer than the broker's 30 s transfer-rate window, so that
        /// the measured phase sees what the broker does about uploads that stay slow).
        #[arg(long)]
        ramp: Option<f64>,
    },
    /// A cheap group read (getGroupInfo) through the group's owner and through each other
    /// node of a local cluster (`--cluster-nodes`, default 3): sequential requests, one
    /// reader per node, p50 / p90 / p99 per node, and ping per node as the local baseline.
    Forward {
        /// Requests per reader per round (getGroupInfo, then as many pings).
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Measured rounds (after one warm-up round); the readers take turns in each.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// N idle connections: server RSS per connection.
    Idle {
        #[arg(long)]
        connections: usize,
        /// Seconds to wait after the last connection before sampling.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
    },
    /// Renders JSON-line results files as the Markdown tables of RESULTS.md.
    Report { files: Vec<PathBuf> },
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Command::Report { files } = &cli.command {
        return print_report(files);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&cli))
}

fn print_report(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    let mut migrations = Vec::new();
    let (mut reconnects, mut resumes) = (Vec::new(), Vec::new());
    let mut attacks = Vec::new();
    let mut forwards = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let what = || format!("{}:{}: not an outcome", f.display(), i + 1);
            let value: serde_json::Value = serde_json::from_str(line).with_context(what)?;
            let scenario = value.get("scenario").and_then(|s| s.as_str());
            if scenario == Some("forward") {
                let o: ForwardOutcome = serde_json::from_value(value).with_context(what)?;
                forwards.push(o);
            } else if scenario == Some("attack") {
                let o: AttackOutcome = serde_json::from_value(value).with_context(what)?;
                attacks.push(o);
            } else if scenario == Some("reconnect") {
                let o: ReconnectOutcome = serde_json::from_value(value).with_context(what)?;
                reconnects.push(o);
            } else if scenario == Some("resume") {
                let o: ResumeOutcome = serde_json::from_value(value).with_context(what)?;
                resumes.push(o);
            } else if scenario == Some("migration") {
                let o: MigrationOutcome = serde_json::from_value(value).with_context(what)?;
                migrations.push(o);
            } else {
                let o: Outcome = serde_json::from_value(value).with_context(what)?;
                outcomes.push(o);
            }
        }
    }
    print!("{}", report::markdown(&outcomes));
    print!("{}", migration::markdown(&migrations));
    print!("{}", resilience::reconnect_markdown(&reconnects));
    print!("{}", resilience::resume_markdown(&resumes));
    print!("{}", attack::markdown(&attacks));
    print!("{}", cluster::forward_markdown(&forwards));
    Ok(())
}

fn convoke_bin(common: &Common) -> anyhow::Result<PathBuf> {
    if let Some(b) = &common.convoke_bin {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    Ok(dir.join(format!("convoke{}", std::env::consts::EXE_SUFFIX)))
}

fn emit(common: &Common, o: &mut Outcome) -> anyhow::Result<()> {
    if let (Some(label), true) = (&common.label, o.system == "convoke") {
        o.system = label.clone();
    }
    println!("{}", o.summary());
    if let Some(path) = &common.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(o)?)?;
    }
    Ok(())
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    let c = &cli.common;
    let pin = usize::try_from(c.server_cpu).ok();
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let spec = RunSpec {
        duration: secs(c.duration),
        warmup: secs(c.warmup),
        drain: secs(c.drain),
        payload: c.payload,
    };
    let fleet = FleetOpts {
        per_endpoint: c.per_endpoint,
        rcvbuf: c.rcvbuf,
        concurrency: c.concurrency,
    };
    let bin = convoke_bin(c)?;
    let start_convoke = || {
        eprintln!("starting {} (core {:?})", bin.display(), pin);
        ConvokeServer::start(&bin, pin, &c.settings)
    };
    let start_nats = |tls: bool| {
        eprintln!(
            "starting {} tls={tls} (core {:?})",
            c.nats_bin.display(),
            pin
        );
        NatsServer::start(&c.nats_bin, pin, tls)
    };
    match &cli.command {
        Command::Fanout { members, rate } => {
            let mut outcomes = Vec::new();
            for system in &c.systems {
                eprintln!("fanout {system}: N={members} offered={rate}/s");
                let o = match system.as_str() {
                    "convoke" if c.cluster_nodes > 0 => {
                        let n = c.cluster_nodes;
                        eprintln!("starting a cluster of {n} nodes (core {pin:?})");
                        let cl = ConvokeCluster::start(&bin, pin, n, &c.settings).await?;
                        let o = convoke::fanout(&cl.nodes, *members, *rate, &spec, &fleet).await;
                        let mut o = o.map_err(|e| e.context(cl.logs()))?;
                        if c.label.is_none() {
                            o.system = format!("convoke-cluster{n}");
                        }
                        o
                    }
                    "convoke" => {
                        let s = start_convoke()?;
                        let o = convoke::fanout(
                            std::slice::from_ref(&s),
                            *members,
                            *rate,
                            &spec,
                            &fleet,
                        )
                        .await;
                        o.map_err(|e| e.context(tail(&s.log())))?
                    }
                    "nats" | "nats-tls" => {
                        let s = start_nats(system == "nats-tls")?;
                        nats::fanout(&s, *members, *rate, &spec, &fleet).await?
                    }
                    other => anyhow::bail!("unknown system {other:?}"),
                };
                let mut o = o;
                emit(c, &mut o)?;
                outcomes.push(o);
                settle().await;
            }
            print!("{}", report::markdown(&outcomes));
        }
        Command::Idle {
            connections,
            settle: wait,
        } => {
            for system in &c.systems {
                eprintln!("idle {system}: N={connections}");
                let o = match system.as_str() {
                    "convoke" => {
                        let s = start_convoke()?;
                        convoke::idle(&s, *connections, secs(*wait), &fleet).await?
                    }
                    "nats" | "nats-tls" => {
                        let s = start_nats(system == "nats-tls")?;
                        nats::idle(&s, *connections, secs(*wait), &fleet).await?
                    }
                    other => anyhow::bail!("unknown system {other:?}"),
                };
                emit(c, &mut { o })?;
                settle().await;
            }
        }
        Command::Forward { requests, rounds } => {
            let n = if c.cluster_nodes == 0 {
                3
            } else {
                c.cluster_nodes
            };
            eprintln!("starting a cluster of {n} nodes (core {pin:?})");
            let cl = ConvokeCluster::start(&bin, pin, n, &c.settings).await?;
            let o = cluster::forward(&cl, *requests, *rounds, &fleet).await;
            let o = o.map_err(|e| e.context(cl.logs()))?;
            println!("{}", o.summary());
            append_json(c, &o)?;
            print!("{}", cluster::forward_markdown(&[o]));
        }
        Command::Rooms {
            groups,
            size,
            member_rate,
        } => {
            let s = start_convoke()?;
            let o = convoke::rooms(&s, *groups, *size, *member_rate, &spec, &fleet).await;
            emit(c, &mut o.map_err(|e| e.context(tail(&s.log())))?)?;
        }
        Command::Ops { groups, size, rate } => {
            let s = start_convoke()?;
            let o = convoke::ops(&s, *groups, *size, *rate, &spec, &fleet).await;
            emit(c, &mut o.map_err(|e| e.context(tail(&s.log())))?)?;
        }
        Command::Migration { rate, rebind_every } => {
            let s = start_convoke()?;
            let o = migration::migration(&s, *rate, secs(*rebind_every), &spec).await;
            let o = o.map_err(|e| e.context(tail(&s.log())))?;
            println!("{}", o.summary());
            if let Some(path) = &c.json_out {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                writeln!(f, "{}", serde_json::to_string(&o)?)?;
            }
            print!("{}", migration::markdown(&[o]));
        }
        Command::Reconnect {
            rounds,
            delay_ms,
            rate,
            modes,
        } => {
            let s = start_convoke()?;
            let delay = secs(delay_ms / 1e3);
            let o = resilience::reconnect(&s, modes, *rounds, delay, *rate, &spec);
            let o = o.await.map_err(|e| e.context(tail(&s.log())))?;
            for o in &o {
                append_json(c, o)?;
            }
            print!("{}", resilience::reconnect_markdown(&o));
        }
        Command::Resume {
            rate,
            cut,
            delay_ms,
        } => {
            let settings = resilience::resume_settings(&c.settings);
            eprintln!(
                "starting {} (core {:?}) with {settings:?}",
                bin.display(),
                pin
            );
            let s = ConvokeServer::start(&bin, pin, &settings)?;
            let delay = secs(delay_ms / 1e3);
            let o = resilience::resume(&s, *rate, delay, secs(*cut), &spec);
            let o = o.await.map_err(|e| e.context(tail(&s.log())))?;
            println!("{}", o.summary());
            append_json(c, &o)?;
            print!("{}", resilience::resume_markdown(&[o]));
        }
        Command::Attack {
            kinds,
            rate,
            connections,
            hello_bytes,
            sessions,
            keys,
            victims,
            trickle_secs,
            ramp,
        } => {
            let mut outcomes = Vec::new();
            for kind in kinds {
                let default_sessions = match kind.as_str() {
                    "attr-keys" => 2,
                    "slow-upload" => 100,
                    _ => 4,
                };
                let opts = AttackOpts {
                    connections: *connections,
                    hello_bytes: *hello_bytes,
                    sessions: sessions.unwrap_or(default_sessions),
                    keys: *keys,
                    victims: *victims,
                    trickle_secs: *trickle_secs,
                    ramp: secs(ramp.unwrap_or(if kind == "slow-upload" { 35.0 } else { 3.0 })),
                    rate: *rate,
                };
                let s = if kind == "preauth" {
                    // The defences under test include the limit on new connections per
                    // address, which the loadgen's brokers otherwise run without
                    // (servers.rs): back to the broker's default, unless --set says else.
                    let d = convoke_broker::Config::default().sessions;
                    let mut settings = vec![
                        format!(
                            "sessions.new_connections_per_ip_per_sec={}",
                            d.new_connections_per_ip_per_sec
                        ),
                        format!(
                            "sessions.new_connections_per_ip_burst={}",
                            d.new_connections_per_ip_burst
                        ),
                    ];
                    settings.extend(c.settings.iter().cloned());
                    eprintln!(
                        "starting {} (core {:?}) with {settings:?}",
                        bin.display(),
                        pin
                    );
                    ConvokeServer::start(&bin, pin, &settings)?
                } else {
                    start_convoke()?
                };
                let o = attack::attack(&s, kind, &opts, &spec, &fleet).await;
                let o = o.map_err(|e| e.context(tail(&s.log())))?;
                println!("{}", o.summary());
                append_json(c, &o)?;
                outcomes.push(o);
                drop(s);
                settle().await;
            }
            print!("{}", attack::markdown(&outcomes));
        }
        Command::Report { .. } => {}
    }
    Ok(())
}

/// Appends `o` as a JSON line to `--json-out`, if given.
fn append_json(common: &Common, o: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = &common.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(o)?)?;
    }
    Ok(())
}

/// Lets the previous server's sockets and this process's closed connections go away: the
/// descriptor limit here may be as low as 20,000 and the next system may need 10,000.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open_fds = || std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while open_fds() > 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if open_fds() > 200 {
        eprintln!("warning: {} descriptors still open", open_fds());
    }
}

/// The end of a log, for an error message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(20);
    format!("broker log (last lines):\n{}", lines[from..].join("\n"))
}
