//! The systems under test as child processes: a fresh `convoke` broker or `nats-server` per
//! scenario, on a loopback port, in a temporary directory, optionally pinned to one core with
//! `taskset` (which execs the server, so the child's pid is the server's). Dropping one kills
//! it and removes its directory.

use anyhow::{bail, Context as _};
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a server gets to become ready.
const READY: Duration = Duration::from_secs(30);

fn command(pin: Option<usize>, program: &Path) -> Command {
    match pin {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `convoke serve`.
#[derive(Debug)]
pub struct ConvokeServer {
    child: Child,
    dir: TempDir,
    /// The app secret its tokens are signed with.
    pub secret: String,
    /// QUIC address.
    pub addr: SocketAddr,
    /// Address of its Prometheus endpoint (`/metrics`), if on.
    pub metrics: Option<SocketAddr>,
    /// Its self-signed certificate.
    pub cert: PathBuf,
    /// The `--set` settings it was started with (beyond data dir, ports and secret).
    pub settings: Vec<String>,
}

impl ConvokeServer {
    /// Starts `bin serve` on 127.0.0.1 with a new data dir and `settings` (`key=value`).
    pub fn start(bin: &Path, pin: Option<usize>, settings: &[String]) -> anyhow::Result<Self> {
        Self::start_on(bin, pin, Ipv4Addr::LOCALHOST, &[], settings)
    }

    /// Starts `bin serve` on `ip` (its QUIC and metrics ports), with `env` added to its
    /// environment, a new data dir and `settings` (`key=value`).
    pub fn start_on(
        bin: &Path,
        pin: Option<usize>,
        ip: Ipv4Addr,
        env: &[(&str, &str)],
        settings: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("convoke-loadgen")
            .tempdir()?;
        let secret = "convoke-loadgen-secret-0123456789abcdef".to_string();
        let log = std::fs::File::create(dir.path().join("broker.log"))?;
        let mut cmd = command(pin, bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(format!("{ip}:0"))
            .arg("--metrics-listen")
            .arg(format!("{ip}:0"))
            .args(["--set", &format!("auth.secret={secret}")])
            .args(["--set", "log.level=warn"])
            // Every simulated user connects from 127.0.0.1 and a bench sender sends as fast
            // as it is told to: the per-address caps (open and new connections) and the
            // per-user rate limits, which are there against abuse from the internet, would
            // refuse the load being measured.
            // A bench's own settings come after these and may turn them back on.
            .args(["--set", "sessions.max_connections_per_ip=0"])
            .args(["--set", "sessions.new_connections_per_ip_per_sec=0"])
            .args(["--set", "quotas.messages_per_sec=0"])
            .args(["--set", "quotas.requests_per_sec=0"]);
        for s in settings {
            cmd.arg("--set").arg(s);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("convoke ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let Ok(line) = rx.recv_timeout(READY) else {
            stop(&mut child);
            let log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
            bail!("the broker did not become ready; its log:\n{log}");
        };
        let mut addr = None;
        let mut cert = None;
        let mut metrics = None;
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("quic=") {
                addr = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("metrics=") {
                metrics = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("cert=") {
                cert = Some(PathBuf::from(v));
            }
        }
        let (Some(addr), Some(cert)) = (addr, cert) else {
            stop(&mut child);
            bail!("cannot read the broker's ready line: {line}");
        };
        Ok(Self {
            child,
            dir,
            secret,
            addr,
            metrics,
            cert,
            settings: settings.to_vec(),
        })
    }

    /// The sum of every series of counter `name` whose labels include `label` (e.g.
    /// `method="getGroupMessages"`), scraped from `/metrics` now.
    pub async fn counter(&self, name: &str, label: &str) -> anyhow::Result<u64> {
        let text = self.http_get("/metrics").await?;
        Ok(sum_counter(&text, name, label))
    }

    /// The response (headers and body) to `GET path` on the metrics port.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = self
            .metrics
            .context("the broker's metrics endpoint is off")?;
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok(text)
    }

    /// The broker's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A day-long token for `user`.
    pub fn token(&self, user: &str) -> String {
        let exp = convoke_broker::clock::now_secs() + 86_400;
        convoke_broker::auth::mint(self.secret.as_bytes(), user, false, exp)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

/// The sum of the series of `name` in a Prometheus text exposition whose labels include
/// `label`.
fn sum_counter(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| l.rsplit_once('}'))
        .filter(|(labels, _)| labels.split(',').any(|l| l == label))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

impl Drop for ConvokeServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A running `nats-server`, plaintext or TLS.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    _dir: TempDir,
    /// `nats://` or `tls://` URL.
    pub url: String,
    /// The CA (self-signed certificate) clients must trust, with TLS.
    pub ca: Option<PathBuf>,
}

impl NatsServer {
    /// Starts `bin` on a free loopback port; with `tls`, on a new self-signed certificate.
    pub fn start(bin: &Path, pin: Option<usize>, tls: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("nats-loadgen").tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut conf = format!("listen: \"127.0.0.1:{port}\"\nmax_connections: 100000\n");
        let mut ca = None;
        if tls {
            let (cert, key) = self_signed(dir.path())?;
            conf.push_str(&format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\n",
                cert.display(),
                key.display()
            ));
            ca = Some(cert);
        }
        let conf_path = dir.path().join("nats.conf");
        std::fs::write(&conf_path, conf)?;
        let log = std::fs::File::create(dir.path().join("nats.log"))?;
        let mut child = command(pin, bin)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let deadline = Instant::now() + READY;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                stop(&mut child);
                let log = std::fs::read_to_string(dir.path().join("nats.log")).unwrap_or_default();
                bail!("nats-server did not start on port {port}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let scheme = if tls { "tls" } else { "nats" };
        Ok(Self {
            child,
            _dir: dir,
            url: format!("{scheme}://127.0.0.1:{port}"),
            ca,
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost in `dir`: (cert, key) paths.
fn self_signed(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_sums_the_series_with_the_label() {
        let text = "# TYPE convoke_requests_total counter\n\
            convoke_requests_total{method=\"getGroupMessages\",code=\"ok\"} 101\n\
            convoke_requests_total{method=\"getGroupMessages\",code=\"603\"} 2\n\
            convoke_requests_total{method=\"sendGroupMessage\",code=\"ok\"} 7\n\
            convoke_requests_total_x{method=\"getGroupMessages\"} 5\n";
        let n = super::sum_counter(
            text,
            "convoke_requests_total",
            "method=\"getGroupMessages\"",
        );
        assert_eq!(n, 103);
    }
}
