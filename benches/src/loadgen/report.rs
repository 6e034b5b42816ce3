//! One scenario's result ([`Outcome`]): printed as a line for the operator, appended as one
//! JSON line to a results file, and rendered with the others as the Markdown tables of
//! `RESULTS.md` (fan-out per system and the Convoke / nats-server ratios, rooms, management
//! requests, idle connections).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Offered rates below this share of the target count as "the system did not keep up".
pub const KEEP_UP: f64 = 0.95;

/// Server CPU use (percent of one core) from which the server counts as saturated.
pub const BUSY_PCT: f64 = 93.0;

/// Other processes' CPU use (percent of one core) above which a run is marked as noisy.
pub const NOISE_PCT: f64 = 15.0;

/// The result of one scenario against one system.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// `fanout`, `rooms`, `ops` or `idle`.
    pub scenario: String,
    /// `convoke`, `nats` or `nats-tls`.
    pub system: String,
    /// Client connections opened.
    pub connections: usize,
    /// Receivers of one message (fanout: N; rooms: group size - 1) or members per group.
    pub members: usize,
    /// Groups used.
    pub groups: usize,
    /// Offered deliveries/s (fanout, rooms) or requests/s (ops).
    pub offered_per_s: f64,
    /// Messages (or requests) sent per second.
    pub sends_per_s: f64,
    /// Length of the measured phase, seconds.
    pub duration_s: f64,
    /// Messages or requests sent in the measured phase, and how many the server refused.
    pub sent: u64,
    pub send_errors: u64,
    /// Deliveries (or successful answers) that should arrive, and that arrived.
    pub expected: u64,
    pub delivered: u64,
    /// Delivered per second, from the start of the measured phase to the last delivery.
    pub achieved_per_s: f64,
    /// Latency from the scheduled send time, ms.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Server CPU seconds over the measured phase and its drain, and per delivery (or
    /// request, or connection for idle), microseconds.
    pub server_cpu_s: f64,
    pub server_cpu_us_per_op: f64,
    /// Server CPU over the window, percent of one core. Near 100 the server was saturated and
    /// its CPU per delivery is only an upper bound (a busy core is counted whole).
    #[serde(default)]
    pub server_cpu_pct: f64,
    /// Server RSS at the end, MiB.
    pub server_rss_mib: f64,
    /// Idle: server RSS growth per connection, KiB.
    pub rss_per_conn_kib: Option<f64>,
    /// Connections opened per second while setting up.
    pub connects_per_s: f64,
    /// This load generator's CPU use over the window, percent of one core.
    pub loadgen_cpu_pct: f64,
    /// CPU used by other processes on the machine over the window (noise), percent of one
    /// core.
    #[serde(default)]
    pub other_cpu_pct: f64,
    /// Kernel UDP receive-buffer and input errors during the window (whole namespace).
    pub udp_rcvbuf_errors: u64,
    pub udp_in_errors: u64,
    /// Of those, datagrams dropped on the server's own socket (Convoke's QUIC socket).
    #[serde(default)]
    pub server_socket_drops: u64,
    /// Server settings beyond the defaults.
    pub settings: Vec<String>,
    /// Anything a reader must know (errors, drops, loss).
    pub notes: Vec<String>,
}

/// `Some(v)` when `v` is a number.
pub fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl Outcome {
    /// Fills in what the server window measured; `ops` is what its CPU is divided by
    /// (deliveries, answered requests or connections).
    pub fn with_window(mut self, w: &super::measure::WindowResult, ops: u64) -> Self {
        let wall = w.wall_s.max(1e-9);
        self.server_cpu_s = w.server_cpu_s;
        self.server_cpu_pct = 100.0 * w.server_cpu_s / wall;
        self.server_cpu_us_per_op = w.server_cpu_s * 1e6 / ops.max(1) as f64;
        self.server_rss_mib = w.server_rss as f64 / (1024.0 * 1024.0);
        self.loadgen_cpu_pct = 100.0 * w.loadgen_cpu_s / wall;
        self.other_cpu_pct = 100.0 * w.other_cpu_s / wall;
        self.udp_rcvbuf_errors = w.udp.rcvbuf_errors;
        self.udp_in_errors = w.udp.in_errors;
        self.server_socket_drops = w.server_socket_drops;
        self
    }

    /// Fills in the latency figures, and the achieved rate of `delivered` over `span_s`.
    pub fn with_latency(
        mut self,
        tally: &super::measure::Tally,
        delivered: u64,
        span_s: f64,
    ) -> Self {
        self.achieved_per_s = if span_s > 0.0 {
            delivered as f64 / span_s
        } else {
            0.0
        };
        self.p50_ms = finite(tally.quantile_ms(0.5));
        self.p99_ms = finite(tally.quantile_ms(0.99));
        self.p999_ms = finite(tally.quantile_ms(0.999));
        self.max_ms = finite(tally.max_ms());
        self
    }

    /// Whether fewer deliveries (or answers) arrived than should have.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// Whether the system fell short of the offered rate.
    pub fn saturated(&self) -> bool {
        self.offered_per_s > 0.0 && self.achieved_per_s < KEEP_UP * self.offered_per_s
    }

    /// Whether the server's core was (nearly) always busy: its CPU per delivery then
    /// measures the core's capacity, not the cost.
    pub fn server_busy(&self) -> bool {
        self.server_cpu_pct >= BUSY_PCT
    }

    /// The warnings a table shows beside the figures.
    pub fn flags(&self) -> String {
        let mut f = Vec::new();
        if self.saturated() {
            f.push(format!(
                "saturated ({:.0}% of offered)",
                100.0 * self.achieved_per_s / self.offered_per_s
            ));
        }
        if self.server_busy() {
            f.push(format!("server core {:.0}% busy", self.server_cpu_pct));
        }
        if self.lost() > 0 {
            f.push(format!("LOSS {}", self.lost()));
        }
        if self.send_errors > 0 {
            f.push(format!("{} send errors", self.send_errors));
        }
        if self.udp_rcvbuf_errors > 0 || self.udp_in_errors > 0 {
            f.push(format!(
                "UDP drops: {} rcvbuf, {} in ({} at the broker's socket)",
                self.udp_rcvbuf_errors, self.udp_in_errors, self.server_socket_drops
            ));
        }
        if self.other_cpu_pct > NOISE_PCT {
            f.push(format!(
                "noise: other processes {:.0}% CPU",
                self.other_cpu_pct
            ));
        }
        if self.loadgen_cpu_pct > 90.0 {
            f.push(format!("loadgen CPU {:.0}%", self.loadgen_cpu_pct));
        }
        f.extend(self.notes.iter().cloned());
        f.join("; ")
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {:<8} conns={} members={} groups={} offered={:.0}/s sends={:.1}/s \
             delivered={}/{} achieved={:.0}/s p50={} p99={} p999={} max={} \
             server_cpu={:.2}s ({:.2} us/op, {:.0}% of a core) rss={:.1}MiB loadgen_cpu={:.0}% \
             other_cpu={:.0}%",
            self.scenario,
            self.system,
            self.connections,
            self.members,
            self.groups,
            self.offered_per_s,
            self.sends_per_s,
            self.delivered,
            self.expected,
            self.achieved_per_s,
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.p999_ms),
            ms(self.max_ms),
            self.server_cpu_s,
            self.server_cpu_us_per_op,
            self.server_cpu_pct,
            self.server_rss_mib,
            self.loadgen_cpu_pct,
            self.other_cpu_pct,
        );
        if let Some(kib) = self.rss_per_conn_kib {
            let _ = write!(
                s,
                " rss/conn={kib:.1}KiB connects={:.0}/s",
                self.connects_per_s
            );
        }
        let flags = self.flags();
        if !flags.is_empty() {
            let _ = write!(s, " [{flags}]");
        }
        s
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.0}"),
        None => "-".to_string(),
    }
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The Markdown tables of a set of outcomes (in the order the scenarios first appear).
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    fn of<'a>(all: &'a [Outcome], s: &'a str) -> impl Iterator<Item = &'a Outcome> + 'a {
        all.iter().filter(move |o| o.scenario == s)
    }
    let of = |s: &'static str| of(outcomes, s);
    if of("fanout").next().is_some() {
        fanout_tables(&mut out, &of("fanout").collect::<Vec<_>>());
    }
    if of("rooms").next().is_some() {
        out.push_str("\n#### Rooms (M groups of k members, every member sending)\n\n");
        out.push_str("| system | groups x members | offered deliveries/s | sends/s | delivered / expected | deliveries/s | broker us/delivery | p50 ms | p99 ms | p99.9 ms | broker RSS MiB | loadgen CPU % | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for o in of("rooms") {
            let _ = writeln!(
                out,
                "| {} | {} x {} | {:.0} | {:.0} | {} / {} | {:.0} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
                o.system, o.groups, o.members, o.offered_per_s, o.sends_per_s, o.delivered,
                o.expected, o.achieved_per_s, num(o.server_cpu_us_per_op), ms(o.p50_ms),
                ms(o.p99_ms), ms(o.p999_ms), o.server_rss_mib, o.loadgen_cpu_pct, o.flags()
            );
        }
    }
    if of("ops").next().is_some() {
        out.push_str(
            "\n#### Management requests (mute / unmute / setGroupMemberAttributes, open loop)\n\n",
        );
        out.push_str("| groups x members | offered req/s | answered / sent | req/s | broker us/request | p50 ms | p99 ms | p99.9 ms | max ms | loadgen CPU % | notes |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        for o in of("ops") {
            let _ = writeln!(
                out,
                "| {} x {} | {:.0} | {} / {} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {} |",
                o.groups,
                o.members,
                o.offered_per_s,
                o.delivered,
                o.sent,
                o.achieved_per_s,
                num(o.server_cpu_us_per_op),
                ms(o.p50_ms),
                ms(o.p99_ms),
                ms(o.p999_ms),
                ms(o.max_ms),
                o.loadgen_cpu_pct,
                o.flags()
            );
        }
    }
    if of("idle").next().is_some() {
        out.push_str("\n#### Idle connections (server RSS growth per connection)\n\n");
        out.push_str("| connections | system | RSS per connection KiB | server RSS MiB | connects/s | broker CPU us/connection | notes |\n|---|---|---|---|---|---|---|\n");
        for o in of("idle") {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.0} | {} | {} |",
                o.connections,
                o.system,
                o.rss_per_conn_kib.map(num).unwrap_or_else(|| "-".into()),
                o.server_rss_mib,
                o.connects_per_s,
                num(o.server_cpu_us_per_op),
                o.flags()
            );
        }
    }
    out
}

fn fanout_tables(out: &mut String, rows: &[&Outcome]) {
    out.push_str("\n#### Fan-out (one group of N online members, open loop)\n\n");
    out.push_str("| N | offered deliveries/s | system | msgs/s | delivered / expected | deliveries/s | server us/delivery | server CPU % | p50 ms | p99 ms | p99.9 ms | server RSS MiB | loadgen CPU % | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for o in rows {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} / {} | {:.0} | {} | {:.0} | {} | {} | {} | {:.0} | {:.0} | {} |",
            o.members,
            o.offered_per_s,
            o.system,
            num(o.sends_per_s),
            o.delivered,
            o.expected,
            o.achieved_per_s,
            num(o.server_cpu_us_per_op),
            o.server_cpu_pct,
            ms(o.p50_ms),
            ms(o.p99_ms),
            ms(o.p999_ms),
            o.server_rss_mib,
            o.loadgen_cpu_pct,
            o.flags()
        );
    }
    medians(out, rows);
    // Ratios per matrix point and Convoke variant, in the order the points first appear.
    let mut points: Vec<(usize, u64)> = Vec::new();
    let mut variants: Vec<&str> = Vec::new();
    let mut by: BTreeMap<(usize, u64, &str), &Outcome> = BTreeMap::new();
    for o in rows {
        let key = (o.members, o.offered_per_s.round() as u64);
        if !points.contains(&key) {
            points.push(key);
        }
        if o.system.starts_with("convoke") && !variants.contains(&o.system.as_str()) {
            variants.push(&o.system);
        }
        by.insert((key.0, key.1, o.system.as_str()), o);
    }
    out.push_str("\nConvoke / nats-server, server CPU per delivery and latency (ratio > 1: Convoke costs more; \"sat.\": that system did not keep up with the offered rate):\n\n");
    out.push_str("| N | offered deliveries/s | Convoke variant | Convoke us/delivery | nats us/delivery | Convoke / nats | nats-tls us/delivery | Convoke / nats-tls | p50 ms Convoke / nats-tls | p99 ms Convoke / nats-tls |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (n, rate) in points {
        let get = |s: &str| by.get(&(n, rate, s)).copied();
        let us = |o: Option<&Outcome>| o.map(|o| num(o.server_cpu_us_per_op)).unwrap_or("-".into());
        let ratio = |a: Option<&Outcome>, b: Option<&Outcome>| match (a, b) {
            (Some(a), Some(b)) if b.server_cpu_us_per_op > 0.0 => {
                let busy = if a.server_busy() || b.server_busy() {
                    " (core busy)"
                } else {
                    ""
                };
                format!(
                    "{:.2}{busy}",
                    a.server_cpu_us_per_op / b.server_cpu_us_per_op
                )
            }
            _ => "-".into(),
        };
        let lat = |a: Option<&Outcome>, b: Option<&Outcome>, f: fn(&Outcome) -> Option<f64>| {
            let mark = |o: &Outcome| if o.saturated() { " (sat.)" } else { "" };
            match (a, b) {
                (Some(a), Some(b)) => format!("{}{} / {}{}", ms(f(a)), mark(a), ms(f(b)), mark(b)),
                (Some(a), None) => format!("{}{} / -", ms(f(a)), mark(a)),
                _ => "-".into(),
            }
        };
        let (p, t) = (get("nats"), get("nats-tls"));
        for v in &variants {
            let Some(c) = get(v) else { continue };
            let _ = writeln!(
                out,
                "| {n} | {rate} | {v} | {} | {} | {} | {} | {} | {} | {} |",
                us(Some(c)),
                us(p),
                ratio(Some(c), p),
                us(t),
                ratio(Some(c), t),
                lat(Some(c), t, |o| o.p50_ms),
                lat(Some(c), t, |o| o.p99_ms),
            );
        }
    }
}

/// The median of `v` (the mean of the middle two for an even count); NaN for none.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// When a point was run more than once per system (repeated runs of one command): each
/// system's median server CPU per delivery with the spread (lowest and highest run), and
/// its ratio to `convoke`'s median at the same point.
fn medians(out: &mut String, rows: &[&Outcome]) {
    let mut keys: Vec<(usize, u64, &str)> = Vec::new();
    let mut runs: BTreeMap<(usize, u64, &str), Vec<&Outcome>> = BTreeMap::new();
    for o in rows {
        let key = (o.members, o.offered_per_s.round() as u64, o.system.as_str());
        if !keys.contains(&key) {
            keys.push(key);
        }
        runs.entry(key).or_default().push(o);
    }
    if runs.values().all(|r| r.len() < 2) {
        return;
    }
    let us = |r: &[&Outcome]| median(&r.iter().map(|o| o.server_cpu_us_per_op).collect::<Vec<_>>());
    out.push_str("
Medians over repeated runs (server CPU per delivery; spread = lowest - highest run; ratio: this system's median over `convoke`'s at the same point):

");
    out.push_str("| N | offered deliveries/s | system | runs | median us/delivery | spread | ratio to convoke | median p50 ms | median p99 ms | flagged runs |
|---|---|---|---|---|---|---|---|---|---|
");
    for key in keys {
        let r = &runs[&key];
        let v: Vec<f64> = r.iter().map(|o| o.server_cpu_us_per_op).collect();
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        let base = runs.get(&(key.0, key.1, "convoke")).map(|b| us(b));
        let ratio = match base {
            Some(b) if b > 0.0 && key.2 != "convoke" => format!("{:.3}", us(r) / b),
            _ => "-".into(),
        };
        let lat = |f: fn(&Outcome) -> Option<f64>| {
            ms(finite(median(
                &r.iter().filter_map(|o| f(o)).collect::<Vec<_>>(),
            )))
        };
        let flagged = r.iter().filter(|o| !o.flags().is_empty()).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} - {} | {ratio} | {} | {} | {flagged} |",
            key.0,
            key.1,
            key.2,
            r.len(),
            num(us(r)),
            num(lo),
            num(hi),
            lat(|o| o.p50_ms),
            lat(|o| o.p99_ms),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_json_and_render() {
        let o = Outcome {
            scenario: "fanout".into(),
            system: "convoke".into(),
            members: 10,
            offered_per_s: 1000.0,
            achieved_per_s: 500.0,
            expected: 10,
            delivered: 9,
            p50_ms: finite(f64::NAN),
            ..Outcome::default()
        };
        let line = serde_json::to_string(&o).unwrap_or_default();
        let back: Outcome = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(back.delivered, 9);
        assert!(back.saturated());
        assert!(back.flags().contains("LOSS 1"), "{}", back.flags());
        let md = markdown(&[back]);
        assert!(md.contains("| 10 | 1000 | convoke |"), "{md}");
        assert!(
            !md.contains("Medians"),
            "one run per system: no medians\n{md}"
        );
    }

    #[test]
    fn repeated_runs_get_medians_and_ratios() {
        let run = |system: &str, us: f64| Outcome {
            scenario: "fanout".into(),
            system: system.into(),
            members: 100,
            offered_per_s: 20000.0,
            achieved_per_s: 20000.0,
            server_cpu_us_per_op: us,
            ..Outcome::default()
        };
        let all = [
            run("convoke", 10.0),
            run("convoke-cluster1", 11.0),
            run("convoke", 8.0),
            run("convoke-cluster1", 12.0),
            run("convoke", 9.0),
            run("convoke-cluster1", 30.0),
        ];
        let md = markdown(&all);
        assert!(
            md.contains("| 100 | 20000 | convoke | 3 | 9.00 | 8.00 - 10.0 | - |"),
            "{md}"
        );
        assert!(
            md.contains("| 100 | 20000 | convoke-cluster1 | 3 | 12.0 | 11.0 - 30.0 | 1.333 |"),
            "{md}"
        );
        assert_eq!(median(&[1.0, 3.0, 2.0, 10.0]), 2.5);
    }
}
