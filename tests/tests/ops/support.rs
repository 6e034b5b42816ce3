//! Helpers of the operations suite: running the `convoke` binary and external tools with a
//! deadline, a minimal HTTP GET, a parser of the Prometheus text format, and reading ops/.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The repository's ops/ folder.
pub(crate) fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("ops")
}

/// Reads a file of ops/.
pub(crate) fn read_ops(name: &str) -> String {
    let path = ops_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a finished process printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion, killing it (and failing the test) after `limit`.
pub(crate) fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {limit:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
#[derive(Debug)]
pub(crate) struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The full path of `tool` if it is on PATH.
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// `tool`'s path, or `None` after printing why the calling test is skipped. Setting
/// `CONVOKE_REQUIRE_TOOLS=1` turns a missing tool into a failure (CI installs them).
pub(crate) fn tool_or_skip(tool: &str, test: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = find_tool(tool) {
        return Some(p);
    }
    if std::env::var("CONVOKE_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{test}: {tool} is not installed (apt-get install {package}) and CONVOKE_REQUIRE_TOOLS=1");
    }
    // Written to the real stderr, not the test harness's captured one, so it is seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: `{tool}` is not installed (apt-get install {package})"
    );
    None
}

/// A loopback port that was free a moment ago (for tools that cannot bind port 0 and say
/// which port they got).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// GET `path` from `addr` over HTTP/1.0; `None` if the server cannot be reached or answers
/// nothing within a few seconds.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Percent-encodes a query parameter.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One scrape of `/metrics`, parsed.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// (sample name, labels, value) in order.
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
    /// `# TYPE` of each metric family.
    pub types: HashMap<String, String>,
    /// Families with a `# HELP` line.
    pub helps: BTreeSet<String>,
}

impl Scrape {
    /// Parses the Prometheus text format (what metrics-exporter-prometheus writes).
    pub(crate) fn parse(text: &str) -> Scrape {
        let mut out = Scrape::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    out.types.insert(name.to_string(), kind.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some(name) = rest.split_whitespace().next() {
                    out.helps.insert(name.to_string());
                }
            } else if !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value: {line}"));
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                out.samples.push((name.to_string(), labels, value));
            }
        }
        out
    }

    /// The sum of the samples named `name` whose labels include all of `labels`; `None` if
    /// there is no such sample.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for (n, l, v) in &self.samples {
            if n == name
                && labels
                    .iter()
                    .all(|(k, want)| l.get(*k).map(String::as_str) == Some(want))
            {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// [`Scrape::value`], 0 when absent.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Every sample name (`x_bucket`, `x_sum`, `x_count` for histograms).
    pub(crate) fn sample_names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|(n, _, _)| n.as_str()).collect()
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    // Values written by the exporter escape only `\`, `"` and newlines, and our label values
    // contain no commas, so splitting on `",` is exact here.
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

/// Every `convoke_...` metric name mentioned in `text`.
pub(crate) fn convoke_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("convoke_") {
        let tail = &rest[i..];
        let len = tail
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        // A name is not part of a longer identifier (`xconvoke_...`).
        let standalone = i == 0 || {
            let before = rest.as_bytes()[i - 1];
            !(before.is_ascii_alphanumeric() || before == b'_')
        };
        let name = tail[..len].trim_end_matches('_');
        if standalone && name.len() > "convoke_".len() {
            out.insert(name.to_string());
        }
        rest = &tail[len.max(1)..];
    }
    out
}
