//! Starting and stopping a node: data dir, TLS, app secret, store, group directory, the QUIC
//! endpoint and its accept loop, the metrics endpoint, graceful shutdown.

use crate::config::Config;
use crate::group::actor::Shared;
use crate::group::rules::Limits;
use crate::group::Groups;
use crate::node::Node;
use crate::presence::Presence;
use crate::session::admission::{Admission, Caps, Decision};
use crate::store::Store;
use anyhow::Context;
use convoke_protocol::close;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A started broker.
#[derive(Debug)]
pub struct RunningBroker {
    /// The bound QUIC address (the real port when the config said 0).
    pub quic_addr: SocketAddr,
    /// The bound metrics address, if metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// The certificate clients should trust (PEM).
    pub cert_path: PathBuf,
    /// Whether this start generated the certificate.
    pub cert_generated: bool,
    /// The served certificate's public-key pin (`sha256/<base64>`), for clients to pin.
    pub public_key_pin: String,
    /// Whether this start generated the app secret.
    pub secret_generated: bool,
    /// The browser listener (`[webtransport]`), when it is on.
    pub webtransport: Option<crate::webtransport::Listening>,
    /// The running cluster (`None` on a single node).
    cluster: Option<crate::cluster::Cluster>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// This process's lock on the data dir ([`lock_data_dir`]), released when it ends.
    _data_dir_lock: std::fs::File,
}

/// Another process uses the data dir (it holds `DATA_DIR/lock`): this start is refused,
/// before anything in the data dir is read or written, and the binary exits 2. Two
/// processes on one data dir would write one store, one files dir and one identity.
#[derive(Debug, thiserror::Error)]
#[error(
    "server.data_dir {} is in use by another process{} (it holds the lock on {}): stop \
     that process, or start this one on another data dir (--data-dir, server.data_dir)",
    dir.display(),
    holder.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
    lock.display()
)]
pub struct DataDirInUse {
    /// The data dir.
    pub dir: PathBuf,
    /// Its lock file.
    pub lock: PathBuf,
    /// The process id the holder wrote into the lock file, when readable.
    pub holder: Option<u32>,
}

impl DataDirInUse {
    /// Process exit code for a start on a data dir in use (a usage error, like an invalid
    /// configuration).
    pub const EXIT_CODE: u8 = 2;
}

/// Takes this process's exclusive lock on `data_dir` (`flock` on `DATA_DIR/lock`, which
/// then holds this process's id): released when the returned file is dropped or the
/// process ends, even by kill -9. Fails with [`DataDirInUse`] while another process holds
/// it. Before, a second process got as far as the store and failed with sled's own lock
/// error ("could not acquire lock ... WouldBlock") and exit code 1.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use fs2::FileExt;
    use std::io::{Read, Seek, Write};
    let path = data_dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the data dir lock {}", path.display()))?;
    if let Err(e) = file.try_lock_exclusive() {
        if e.raw_os_error() != fs2::lock_contended_error().raw_os_error() {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot lock the data dir lock {}", path.display())));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(DataDirInUse {
            dir: data_dir.to_owned(),
            lock: path,
            holder: text.trim().parse().ok(),
        }
        .into());
    }
    // Who holds it, for the message a second process prints; the lock is what counts.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

impl RunningBroker {
    /// Stops accepting, closes connections, waits up to the grace period, stops actors.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully. In a cluster that refuses
    /// this node for good (`crate::cluster::Cluster::refused`) it shuts down the same way
    /// and fails with [`crate::cluster::Refused::ByPeers`] (the binary exits 2).
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let cluster = self.cluster.clone();
        let refused = async move {
            match cluster {
                Some(c) => c.refused().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = wait_for_signal() => {
                signal?;
                tracing::info!("shutdown signal received");
                self.shutdown().await;
                Ok(())
            }
            reasons = refused => {
                self.shutdown().await;
                Err(crate::cluster::Refused::ByPeers { reasons }.into())
            }
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Starts a node from `config`.
pub async fn start(config: Config) -> anyhow::Result<RunningBroker> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Arc::new(config);
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let data_dir_lock = lock_data_dir(&data_dir)?;
    if !config.cluster.enabled {
        // A cluster node's data dir run as a single node would mint ids that orphan
        // groups once the cluster is back on: refused (exit 2), before anything is written.
        crate::cluster::identity::refuse_cluster_data_without_cluster(&data_dir)?;
    }

    let tls = crate::tls::load_or_generate(&config.tls, &data_dir)?;
    let (secret, secret_generated) = crate::auth::app_secret(&config.auth, &data_dir)?;
    // In a cluster every id this node allocates carries its ordinal (unique, permanent);
    // a single node keeps ordinal 0, today's ids.
    let ordinal = if config.cluster.enabled {
        u8::try_from(config.cluster.ordinal).unwrap_or(u8::MAX)
    } else {
        0
    };
    let store = Store::open_as(
        &data_dir.join("db"),
        config.store.cache_capacity_mb * 1024 * 1024,
        ordinal,
    )
    .with_context(|| format!("cannot open the store in {}", data_dir.join("db").display()))?;

    if config.cluster.enabled {
        // A single node's groups would be orphaned in a cluster: refused (exit 2).
        crate::cluster::identity::refuse_single_node_data(&data_dir, store.has_groups()?)?;
    }
    store.set_commit_window(Duration::from_micros(config.store.group_commit_window_us));
    store.set_kept_limits(
        config.sessions.kept_events_max,
        config.sessions.kept_events_per_sender_max,
    );
    store.set_commit_limits(
        Duration::from_millis(config.store.commit_deadline_ms),
        usize::try_from(config.store.commit_queue_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
    );
    let metrics_addr = match config.metrics.listen {
        Some(addr) => Some(crate::metrics::serve(addr, store.clone()).await?),
        None => None,
    };

    let files_dir = config.files_dir();
    let file_limits = crate::files::FileLimits {
        max_file_bytes: config.limits.max_file_bytes,
        max_files_per_group: config.limits.max_files_per_group as usize,
    };
    let (files, sweep) = crate::files::Files::open(files_dir.clone(), file_limits, &store)
        .with_context(|| format!("cannot open the files dir {}", files_dir.display()))?;
    if sweep != crate::files::Sweep::default() {
        tracing::info!(
            temp_files = sweep.temp_files,
            orphans = sweep.orphans,
            "start-up sweep: partial uploads removed, orphan blobs moved to files.dir/quarantine"
        );
    }

    let presence = Presence::default();
    let shared = Arc::new(Shared {
        store: store.clone(),
        fanout: crate::fanout::Fanout::local(presence.clone()),
        limits: Limits {
            server_max_users: config.limits.server_max_users,
            max_admins: config.limits.max_admins as usize,
            max_groups_per_user: config.limits.max_groups_per_user as usize,
            members_as_invitations: config.groups.create_members_as_invitations,
        },
        idle: Duration::from_secs(config.groups.idle_stop_secs.max(1)),
        max_resident: usize::try_from(config.groups.max_resident).unwrap_or(usize::MAX),
        fault_injection: config.debug.fault_injection,
        files: files.clone(),
        messages: crate::group::messages::MessageSettings {
            max_bytes: config.limits.max_message_bytes as usize,
            history_per_group: u64::from(config.messages.history_per_group),
            history_max_age_ms: i64::try_from(
                config.messages.history_max_age_secs.saturating_mul(1000),
            )
            .unwrap_or(i64::MAX),
            rate_per_sec: config.messages.rate_limit_per_sec,
            receipt_max_group: config.messages.read_receipt_max_group_size,
            receipt_window_ms: i64::try_from(
                config
                    .messages
                    .read_receipt_window_secs
                    .saturating_mul(1000),
            )
            .unwrap_or(i64::MAX),
            dedup_window_ms: i64::try_from(config.messages.dedup_window_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            history_page_bytes: config.messages.history_page_bytes as usize,
        },
    });
    let (groups, _directory) = Groups::start(shared).await?;

    let served = Arc::new(crate::tls::ServedCert::new(&tls, &config.tls, &data_dir)?);
    crate::tls::spawn_reloader(
        &served,
        (config.tls.reload_check_secs > 0)
            .then(|| Duration::from_secs(config.tls.reload_check_secs)),
    );
    let mut crypto = crate::tls::server_crypto(served, config.tls.early_data)?;
    if config.cluster.enabled {
        // Peers proxy shared-file transfers here (crate::cluster::peer_quic), pinning the
        // certificate whose SHA-256 this node's Hello announces.
        crypto
            .alpn_protocols
            .push(crate::cluster::peer_quic::ALPN.to_vec());
        if let Some(leaf) = tls.certs.first() {
            crate::cluster::peer_quic::set_local_cert(leaf);
        }
    }
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?,
    ));
    let mut transport = quinn::TransportConfig::default();
    transport
        // The control stream plus up to three file transfers at once (a fourth waits for a
        // slot); quinn keeps state per allowed stream, so this stays small.
        .max_concurrent_bidi_streams(4u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(
            Duration::from_secs(config.sessions.idle_timeout_secs).try_into()?,
        ))
        .stream_receive_window((1024 * 1024u32).into())
        .receive_window((2 * 1024 * 1024u32).into())
        .send_window(2 * 1024 * 1024)
        // convoke/1 has no datagrams: none are accepted (quinn's default buffers up to
        // 1.25 MB of unread ones per connection).
        .datagram_receive_buffer_size(None);
    server_config.transport_config(Arc::new(transport));
    // Connection migration stays on (quinn's default, said here so that nobody turns it
    // off): sessions are keyed by connection, not by address, so a client whose address
    // changes (a phone moving from Wi-Fi to cellular, a NAT giving it a new port) keeps its
    // session, its event stream and the requests in flight. The remote address is only ever
    // logged. tests/tests/migration.rs moves a receiving client both ways mid-stream.
    server_config.migration(true);
    // Connection attempts not yet judged by the accept loop (which judges each at once):
    // quinn's defaults buffer up to 100 MiB of their packets; a hello fits in far less.
    server_config
        .incoming_buffer_size(64 * 1024)
        .incoming_buffer_size_total(16 * 1024 * 1024);
    let (quic_key, _) = crate::auth::load_or_create_key(
        &data_dir.join("tls"),
        "quic.key",
        "QUIC endpoint key",
        "clients of this node reconnect only after their idle timeout, once",
    )?;
    let socket = udp_socket(config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config(&quic_key),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let quic_addr = endpoint.local_addr()?;
    // `None` on a single node: nothing of the cluster runs. Wave 2 reaches the running
    // cluster through `crate::cluster::Cluster::get()`.
    let cluster = crate::cluster::start(&config, &secret, quic_addr).await?;

    let node = Node::new(
        config.clone(),
        store.clone(),
        presence,
        groups.clone(),
        files,
        secret,
    )
    .shared();
    if let Some(cluster) = &cluster {
        // Forwarded calls, queries and deliveries from peers reach this node from here on;
        // until now it said Hello to nobody, so no peer is Up yet (Cluster::set_inbound).
        crate::cluster::inbound::install(cluster, node.clone());
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // One set of connection caps for both listeners: a browser counts like any client.
    let admission = Admission::new(Caps::from_sessions(&config.sessions));
    let webtransport =
        crate::webtransport::start(&node, admission.clone(), shutdown_rx.clone()).await?;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let task = tokio::spawn(accept_loop(endpoint, node, admission, shutdown_rx, grace));
    crate::metrics::set_ready(true);
    tracing::info!(%quic_addr, ?metrics_addr, cert = %tls.cert_path.display(), fingerprint = %tls.fingerprint(), public_key_pin = %tls.public_key_pin(), "convoke listening");
    Ok(RunningBroker {
        quic_addr,
        metrics_addr,
        cert_path: tls.cert_path.clone(),
        cert_generated: tls.generated,
        public_key_pin: tls.public_key_pin(),
        secret_generated,
        webtransport,
        cluster,
        shutdown: shutdown_tx,
        task,
        _data_dir_lock: data_dir_lock,
    })
}

/// The longest a graceful stop waits for the sessions it closed to end (a browser's
/// session close takes a round trip or 100 ms) before it closes the endpoints.
pub(crate) const SESSIONS_CLOSE: Duration = Duration::from_millis(500);

async fn accept_loop(
    endpoint: quinn::Endpoint,
    node: Arc<Node>,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => admit(&node, &admission, incoming),
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
    crate::metrics::set_ready(false);
    node.presence
        .close_all(
            close::SHUTDOWN,
            b"broker shutting down",
            grace.min(SESSIONS_CLOSE),
        )
        .await;
    endpoint.close(close::SHUTDOWN.into(), b"broker shutting down");
    let _ = tokio::time::timeout(grace, endpoint.wait_idle()).await;
    node.groups.stop();
    tracing::info!("convoke stopped");
}

/// Judges one connection attempt under the caps ([`crate::session::admission`]) and hands it
/// to its task, or answers it here (Retry, refusal) without spending a task on it.
fn admit(node: &Arc<Node>, admission: &Admission, incoming: quinn::Incoming) {
    match admission.judge(&incoming) {
        (Decision::Admit, Some(admitted)) => {
            tokio::spawn(crate::session::serve_connection(
                node.clone(),
                incoming,
                admitted,
            ));
        }
        (Decision::RefuseAfterHandshake(why), Some(admitted)) => {
            tokio::spawn(crate::session::refuse_connection(
                node.clone(),
                incoming,
                admitted,
                why,
            ));
        }
        (Decision::Retry, _) => {
            metrics::counter!("convoke_connections_retried_total").increment(1);
            if let Err(e) = incoming.retry() {
                // Already validated after all: it goes through the caps on its next try.
                e.into_incoming().ignore();
            }
        }
        (Decision::RateRefused, _) => {
            // One packet, no TLS: an honest client hears it and backs off.
            metrics::counter!("convoke_connections_refused_total", "reason" => "rate_limit")
                .increment(1);
            incoming.refuse();
        }
        (Decision::RateDropped, _) => {
            // A source that goes on after being refused again and again: not even a packet.
            metrics::counter!("convoke_connections_refused_total", "reason" => "rate_limit_dropped")
                .increment(1);
            incoming.ignore();
        }
        (Decision::RefuseNow, _) | (_, None) => {
            metrics::counter!("convoke_connections_refused_total", "reason" => "connection_limit")
                .increment(1);
            incoming.refuse();
        }
    }
}

/// The QUIC endpoint's keys, derived from this node's own random key in
/// `DATA_DIR/tls/quic.key` so that they survive a restart: a client of this node from
/// before a crash gets a stateless reset it can verify on its next packet and reconnects at
/// once, instead of waiting for its idle timeout. quinn's defaults are random per process:
/// the new process would drop the old connection ids as invalid (the id generator's hash
/// key) and a reset would carry a token the client rejects (the reset key). The key is per
/// node and not the app secret: nodes must not be able to reset each other's connections
/// (RFC 9000 21.11), and reset tokens must not leak anything about the token key.
fn endpoint_config(secret: &[u8]) -> quinn::EndpointConfig {
    let derive = |label: &[u8]| {
        ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            label,
        )
    };
    let reset = derive(b"convoke quic stateless reset key v1");
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    let cid = derive(b"convoke quic connection id key v1");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// Socket buffer size asked for the QUIC socket. Measured here: handshake bursts and
/// fan-out bursts overflow the kernel's default receive buffer (~208 KiB) and the drops
/// turn into retransmissions; 4 MiB removed them. The kernel caps it at
/// net.core.rmem_max / wmem_max.
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The broker's UDP socket, bound to `addr`, with large buffers.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4 too on [::], as quinn's own constructor does.
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "could not enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "could not enlarge the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One process per data dir: a second lock on it fails with [`DataDirInUse`] naming
    /// the data dir and the holder's pid (flock conflicts between two opens even within
    /// one process), and the lock is free again once its holder drops it.
    #[test]
    fn a_data_dir_is_locked_for_one_holder_at_a_time() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let held = lock_data_dir(dir.path()).expect("the first lock");
        let e = lock_data_dir(dir.path()).expect_err("a second lock");
        let in_use = e.downcast_ref::<DataDirInUse>().expect("DataDirInUse");
        assert_eq!(in_use.dir, dir.path());
        assert_eq!(in_use.holder, Some(std::process::id()));
        let text = e.to_string();
        assert!(
            text.contains(&dir.path().display().to_string()) && text.contains("in use"),
            "{text}"
        );
        drop(held);
        lock_data_dir(dir.path()).expect("free again");
    }
}
