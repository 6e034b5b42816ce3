//! What a run measures: a shared clock for send stamps, the latency histogram and delivery
//! counters the receivers fill, and the server's CPU time, RSS and the kernel's UDP error
//! counters read from /proc.
//!
//! Latency is measured from the message's *scheduled* send time (stamped in its payload), not
//! from when the sender got round to sending it, so a stalled server cannot hide its stall
//! by slowing the sender down (no coordinated omission).

use anyhow::Context as _;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes at the start of every payload: scheduled send time (u64 LE, ns) and phase (u8).
pub const STAMP_LEN: usize = 9;

/// Warm-up traffic: delivered and counted, but outside the histogram and the CPU window.
pub const PHASE_WARMUP: u8 = 0;
/// Measured traffic.
pub const PHASE_MEASURED: u8 = 1;

/// Wall-clock nanoseconds from one monotonic base, so that stamps written by the sender and
/// read by the receivers (all in this process) compare exactly.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose zero is the Unix epoch, read once now.
    pub fn new() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            base: Instant::now(),
            base_unix_ns: u64::try_from(unix.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Unix nanoseconds of `at`.
    pub fn unix_ns(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base).as_nanos();
        self.base_unix_ns
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Unix nanoseconds now.
    pub fn now_ns(&self) -> u64 {
        self.unix_ns(Instant::now())
    }
}

/// A payload of `size` bytes (at least [`STAMP_LEN`]) stamped with `scheduled_ns` and `phase`.
pub fn stamp(scheduled_ns: u64, phase: u8, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(STAMP_LEN)];
    p[..8].copy_from_slice(&scheduled_ns.to_le_bytes());
    p[8] = phase;
    p
}

/// The scheduled time and phase of a stamped payload.
pub fn read_stamp(payload: &[u8]) -> Option<(u64, u8)> {
    let ts = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    Some((ts, *payload.get(8)?))
}

/// Deliveries (or answers) counted by phase, and the latency histogram of the measured ones.
#[derive(Debug)]
pub struct Tally {
    clock: Clock,
    /// Nanoseconds, 3 significant digits, 1 us to 5 min.
    hist: Mutex<Histogram<u64>>,
    counts: [AtomicU64; 2],
    last_ns: AtomicU64,
}

const HIST_LOW_NS: u64 = 1_000;
const HIST_HIGH_NS: u64 = 300_000_000_000;

impl Tally {
    /// An empty tally on `clock`.
    pub fn new(clock: Clock) -> Self {
        let hist = Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)
            .expect("constant histogram bounds are valid");
        Self {
            clock,
            hist: Mutex::new(hist),
            counts: [AtomicU64::new(0), AtomicU64::new(0)],
            last_ns: AtomicU64::new(0),
        }
    }

    /// Counts one stamped payload received now. Unstamped payloads are ignored.
    pub fn record_payload(&self, payload: &[u8]) {
        if let Some((scheduled, phase)) = read_stamp(payload) {
            self.record(scheduled, phase);
        }
    }

    /// Counts one delivery (or answer) of something scheduled at `scheduled_ns`, now.
    pub fn record(&self, scheduled_ns: u64, phase: u8) {
        let now = self.clock.now_ns();
        let i = usize::from(phase.min(PHASE_MEASURED));
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        if phase == PHASE_MEASURED {
            self.last_ns.fetch_max(now, Ordering::Relaxed);
            let v = now
                .saturating_sub(scheduled_ns)
                .clamp(HIST_LOW_NS, HIST_HIGH_NS);
            // Clamped to the histogram's bounds, so recording cannot fail.
            let _ = self.hist().record(v);
        }
    }

    fn hist(&self) -> MutexGuard<'_, Histogram<u64>> {
        // A panic while recording cannot leave a histogram half-updated in a way that matters.
        self.hist.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many of `phase` were counted.
    pub fn count(&self, phase: u8) -> u64 {
        self.counts[usize::from(phase.min(PHASE_MEASURED))].load(Ordering::Relaxed)
    }

    /// Unix ns of the last measured delivery (0 if none).
    pub fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Relaxed)
    }

    /// Measured latency at quantile `q`, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let h = self.hist();
        if h.is_empty() {
            return f64::NAN;
        }
        h.value_at_quantile(q) as f64 / 1e6
    }

    /// Largest measured latency, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        let h = self.hist();
        if h.is_empty() {
            return f64::NAN;
        }
        h.max() as f64 / 1e6
    }
}

/// Waits until `count()` reaches `expected`, or it stops growing for `stall`, or `limit`
/// has passed. Returns the last count.
pub async fn wait_for_count(
    mut count: impl FnMut() -> u64,
    expected: u64,
    stall: Duration,
    limit: Duration,
) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = count();
    let mut last_change = Instant::now();
    while last < expected && Instant::now() < deadline && last_change.elapsed() < stall {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = count();
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    last
}

/// A process's CPU time and resident memory at one moment.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// User + system CPU seconds of all its threads so far.
    pub cpu_s: f64,
    /// Resident set, bytes.
    pub rss: u64,
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Samples `/proc/<pid>` (`self` for this process).
pub fn sample(pid: &str) -> anyhow::Result<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after it may not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/PID/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime); `rest` starts at field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    let cpu_s = (ticks(11)? + ticks(12)?) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(ProcSample {
        at,
        cpu_s,
        rss: rss_kb * 1024,
    })
}

/// The kernel's UDP error counters (IPv4, this network namespace, every socket in it).
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpErrors {
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
}

impl UdpErrors {
    /// Reads `/proc/net/snmp`; zeros if it cannot.
    pub fn read() -> Self {
        let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return Self::default();
        };
        let get = |name: &str| {
            names
                .split_whitespace()
                .position(|n| n == name)
                .and_then(|i| values.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Self {
            in_errors: get("InErrors"),
            rcvbuf_errors: get("RcvbufErrors"),
        }
    }

    /// Counts since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            in_errors: self.in_errors.saturating_sub(earlier.in_errors),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
        }
    }
}

/// CPU seconds the whole machine spent busy so far (all cores; `/proc/stat`).
pub fn machine_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user].
    let busy: f64 =
        v.iter().take(8).sum::<f64>() - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0);
    busy / clock_ticks()
}

/// Datagrams the kernel dropped on the IPv4 UDP socket bound to `port` (the `drops` column
/// of `/proc/net/udp`, over the socket's life); 0 when there is none.
pub fn socket_drops(port: u16) -> u64 {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            (u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| f.last()?.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// The servers' and this process's CPU, and the UDP counters, at the start of a window.
/// A cluster's nodes are several server processes: their CPU, RSS and socket drops are
/// summed.
#[derive(Debug, Clone)]
pub struct Window {
    /// Each server process: its pid and its sample.
    servers: Vec<(u32, ProcSample)>,
    loadgen: ProcSample,
    udp: UdpErrors,
    /// The servers' UDP ports (QUIC) and their sockets' drops so far.
    server_ports: Vec<u16>,
    server_drops: u64,
    machine_busy_s: f64,
}

/// What happened during a window.
#[derive(Debug, Clone, Copy)]
pub struct WindowResult {
    pub wall_s: f64,
    /// CPU seconds of the server (the sum over a cluster's nodes).
    pub server_cpu_s: f64,
    /// Resident set of the server at the end (the sum over a cluster's nodes).
    pub server_rss: u64,
    pub loadgen_cpu_s: f64,
    pub udp: UdpErrors,
    /// Datagrams dropped on the server's own UDP socket (receive buffer full).
    pub server_socket_drops: u64,
    /// CPU seconds used on this machine by everything except the server and this process
    /// (other builds and tests: noise).
    pub other_cpu_s: f64,
}

impl Window {
    /// Starts a window on the server `pid`, whose UDP socket (if any) is on `udp_port`.
    pub fn start(pid: u32, udp_port: Option<u16>) -> anyhow::Result<Self> {
        Self::start_all(&[(pid, udp_port)])
    }

    /// Starts a window on several server processes (a cluster's nodes): pid and UDP port
    /// of each.
    pub fn start_all(servers: &[(u32, Option<u16>)]) -> anyhow::Result<Self> {
        let samples = servers
            .iter()
            .map(|(pid, _)| Ok((*pid, sample(&pid.to_string())?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let ports: Vec<u16> = servers.iter().filter_map(|(_, p)| *p).collect();
        Ok(Self {
            servers: samples,
            loadgen: sample("self")?,
            udp: UdpErrors::read(),
            server_drops: ports.iter().copied().map(socket_drops).sum(),
            server_ports: ports,
            machine_busy_s: machine_busy_s(),
        })
    }

    /// Ends the window (`pid`: the one server it was started on).
    pub fn end(&self, pid: u32) -> anyhow::Result<WindowResult> {
        debug_assert!(self.servers.iter().all(|(p, _)| *p == pid));
        self.end_all()
    }

    /// Ends the window on every server it was started on.
    pub fn end_all(&self) -> anyhow::Result<WindowResult> {
        let (mut server_cpu_s, mut server_rss, mut wall_s) = (0.0, 0, 0.0f64);
        for (pid, before) in &self.servers {
            let now = sample(&pid.to_string())?;
            server_cpu_s += now.cpu_s - before.cpu_s;
            server_rss += now.rss;
            wall_s = wall_s.max(now.at.duration_since(before.at).as_secs_f64());
        }
        let loadgen = sample("self")?;
        let loadgen_cpu_s = loadgen.cpu_s - self.loadgen.cpu_s;
        let busy = machine_busy_s() - self.machine_busy_s;
        let drops: u64 = self.server_ports.iter().copied().map(socket_drops).sum();
        Ok(WindowResult {
            wall_s,
            server_cpu_s,
            server_rss,
            loadgen_cpu_s,
            other_cpu_s: (busy - server_cpu_s - loadgen_cpu_s).max(0.0),
            udp: UdpErrors::read().since(&self.udp),
            server_socket_drops: drops.saturating_sub(self.server_drops),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_short_payloads_are_ignored() {
        let p = stamp(1234, PHASE_MEASURED, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(read_stamp(&p), Some((1234, PHASE_MEASURED)));
        assert_eq!(read_stamp(&p[..8]), None);
    }

    #[test]
    fn tally_counts_by_phase_and_measures_only_the_measured() {
        let clock = Clock::new();
        let t = Tally::new(clock);
        let now = clock.now_ns();
        t.record(now, PHASE_WARMUP);
        assert!(t.quantile_ms(0.5).is_nan());
        t.record(now.saturating_sub(2_000_000), PHASE_MEASURED);
        assert_eq!((t.count(PHASE_WARMUP), t.count(PHASE_MEASURED)), (1, 1));
        assert!(t.quantile_ms(0.5) >= 2.0, "{}", t.quantile_ms(0.5));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample("self").unwrap_or_else(|e| panic!("{e:#}"));
        assert!(s.rss > 0);
    }
}
