//! TLS on the cluster port: mutual TLS 1.3 under a cluster CA (`cluster.tls_ca`), each node
//! presenting `cluster.tls_cert`/`tls_key` both as a server and as a client. The cookie
//! handshake of ractor_cluster then runs inside the encrypted stream, so a sniffed exchange
//! no longer allows offline guessing of the cookie, and a host without a certificate from
//! the cluster CA cannot even reach it.
//!
//! Both configs are built with `builder_with_provider(ring)`: ractor_cluster's tokio-rustls
//! compiles aws-lc-rs in as well, and with two providers rustls's plain `builder()` panics.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

use super::Refused;
use crate::config::ClusterConfig;

/// The acceptor and connector of the cluster port.
#[derive(Clone)]
pub(crate) struct ClusterTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

fn refused(setting: &str, path: &Path, problem: impl std::fmt::Display) -> Refused {
    Refused::Unsupported {
        setting: setting.to_owned(),
        problem: format!("{}: {problem}", path.display()),
    }
}

fn certs(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Refused> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| refused(setting, path, format!("cannot read a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(refused(setting, path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

/// Builds the TLS configs from `cfg`; `None` when TLS is off.
pub(crate) fn load(cfg: &ClusterConfig) -> Result<Option<ClusterTls>, Refused> {
    let (Some(ca), Some(cert), Some(key)) = (&cfg.tls_ca, &cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs("cluster.tls_ca", ca)? {
        roots
            .add(c)
            .map_err(|e| refused("cluster.tls_ca", ca, format!("not a CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let chain = certs("cluster.tls_cert", cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        refused(
            "cluster.tls_key",
            key,
            format!("cannot read a PEM private key: {e}"),
        )
    })?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| refused("cluster.tls_ca", ca, e))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| refused("cluster.tls_cert", cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private.clone_key())
        .map_err(|e| {
            refused(
                "cluster.tls_key",
                key,
                format!("does not fit cluster.tls_cert: {e}"),
            )
        })?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| refused("cluster.tls_cert", cert, e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)
        .map_err(|e| {
            refused(
                "cluster.tls_key",
                key,
                format!("does not fit cluster.tls_cert: {e}"),
            )
        })?;
    Ok(Some(ClusterTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    }))
}

/// The name a peer's certificate must hold: the host of its member address.
pub(crate) fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).ok()
}

/// Handshakes under way at once on the cluster port; more wait for a slot.
const MAX_HANDSHAKES: usize = 64;

/// A TLS stream handed to ractor_cluster as an external transport.
struct TlsBidi {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: String,
    local: String,
}

impl ractor_cluster::ClusterBidiStream for TlsBidi {
    fn split(self: Box<Self>) -> (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) {
        let (r, w) = tokio::io::split(self.stream);
        (Box::new(r), Box::new(w))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.clone())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.clone())
    }
}

/// Accepts TLS connections on the cluster port ourselves: ractor_cluster 0.16.5's own
/// listener awaits each handshake inline without a timeout (net/listener.rs), so one idle
/// TCP connection would stall every later inbound connection. Here each handshake runs in
/// its own task, at most `timeout` long and [`MAX_HANDSHAKES`] at once; a finished one is
/// handed to the NodeServer as an external stream.
pub(crate) fn spawn_acceptor(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    timeout: std::time::Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
            let (acceptor, server) = (acceptor.clone(), server.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let stream = Box::new(TlsBidi {
                            stream,
                            peer: peer.to_string(),
                            local,
                        });
                        let _ = server.cast(
                            ractor_cluster::NodeServerMessage::ConnectionOpenedExternal {
                                stream,
                                is_server: true,
                            },
                        );
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("convoke_cluster_refused_total", "reason" => "tls")
                            .increment(1);
                        tracing::warn!(%peer, error = %e, "cluster: TLS handshake failed (a certificate not from cluster.tls_ca, or not TLS)");
                    }
                    Err(_) => {
                        metrics::counter!("convoke_cluster_refused_total", "reason" => "tls")
                            .increment(1);
                        tracing::warn!(%peer, "cluster: TLS handshake did not finish in time; closed");
                    }
                }
            });
        }
    });
}
