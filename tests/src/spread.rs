//! One [`Broker`](crate::Broker) standing for a cluster: the end-to-end scenario suites,
//! written against one broker, run unchanged on a cluster of real nodes with their users
//! spread over the nodes (issue #11 item 2, "any client on any node").
//!
//! [`scenario_nodes`] decides once per test process how many nodes `Broker::start` runs:
//! `CONVOKE_TEST_CLUSTER=<n>` (any suite, e.g. `CONVOKE_TEST_CLUSTER=3 cargo test -p
//! convoke-tests --test messages`), else 3 in the `cluster_scenarios` test binary (which
//! includes the scenario files as modules), else 1. The nodes are started by
//! [`TestCluster`](crate::cluster::TestCluster), so ports, secret, cookie and readiness are
//! the same as in the cluster suites.
//!
//! Where a client goes ([`Placement`]): a user's first device goes to the next node in
//! turn, in the order users first connect (the first user of a scenario is on node 1, the
//! second on node 2, the third on node 3, ...: every cast of two or more is spread, so every
//! group, owned by the node its id's shard maps to, has a member on a node that does not
//! own it). A user's next devices go to the nodes after its first, so a second device is
//! on another node than the first. [`Broker::builder`](crate::Broker::builder), which does
//! not know the user, takes the nodes in turn; every node serves the same certificate, so
//! a test that points a builder elsewhere (a relay in front of `addr`) still trusts it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The variable that runs any suite's `Broker::start` on a cluster of that many nodes.
pub const CLUSTER_ENV: &str = "CONVOKE_TEST_CLUSTER";

/// The test binary whose brokers are 3-node clusters without the variable.
const CLUSTER_BINARY: &str = "cluster_scenarios";

/// Nodes a scenario's broker runs on in this test process (1: a single broker).
pub fn scenario_nodes() -> usize {
    static NODES: OnceLock<usize> = OnceLock::new();
    *NODES.get_or_init(|| {
        if let Ok(v) = std::env::var(CLUSTER_ENV) {
            return match v.trim().parse::<usize>() {
                Ok(n) if (1..=9).contains(&n) => n,
                _ => panic!("{CLUSTER_ENV}={v}: expected a node count from 1 to 9"),
            };
        }
        let exe = std::env::current_exe().ok();
        let stem = exe
            .as_deref()
            .and_then(std::path::Path::file_stem)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if stem.starts_with(CLUSTER_BINARY) {
            3
        } else {
            1
        }
    })
}

/// Whether this process runs its scenarios on a cluster.
pub fn on_cluster() -> bool {
    scenario_nodes() > 1
}

/// For a scenario that has no meaning on a cluster: on a cluster, prints why it is skipped
/// and returns true (the test then returns); on one broker returns false. Every caller is
/// listed in `tests/tests/cluster_scenarios.rs`.
pub fn single_broker_only(why: &str) -> bool {
    if on_cluster() {
        eprintln!("SKIPPED on a {}-node cluster: {why}", scenario_nodes());
        return true;
    }
    false
}

/// For a scenario that fails on a cluster because of a known, reported gap of the cluster
/// (`why` names it): on a cluster, prints it and returns true (the test then returns); on
/// one broker returns false. Every caller is listed in `tests/tests/cluster_scenarios.rs`.
pub fn known_cluster_failure(why: &str) -> bool {
    if on_cluster() {
        eprintln!(
            "KNOWN FAILURE on a {}-node cluster, not run: {why}",
            scenario_nodes()
        );
        return true;
    }
    false
}

/// Which node each client of a scenario goes to (0-based node indexes).
#[derive(Debug, Default)]
pub(crate) struct Placement {
    /// Per user: its first device's node and the devices seen so far, in order.
    users: Mutex<HashMap<String, (usize, Vec<String>)>>,
    /// Users placed so far.
    next_user: AtomicUsize,
    /// Builders handed out so far.
    next_builder: AtomicUsize,
}

impl Placement {
    /// The node of `user`'s `device` among `nodes`.
    pub(crate) fn node_of(&self, user: &str, device: &str, nodes: usize) -> usize {
        let mut users = self.users.lock().expect("placement lock");
        let (first, devices) = users.entry(user.to_owned()).or_insert_with(|| {
            let i = self.next_user.fetch_add(1, Ordering::Relaxed);
            (i % nodes, Vec::new())
        });
        let k = match devices.iter().position(|d| d == device) {
            Some(k) => k,
            None => {
                devices.push(device.to_owned());
                devices.len() - 1
            }
        };
        (*first + k) % nodes
    }

    /// The node of the next builder.
    pub(crate) fn next_builder(&self, nodes: usize) -> usize {
        self.next_builder.fetch_add(1, Ordering::Relaxed) % nodes
    }
}

/// The scrapes of several nodes as one: every sample summed over the nodes (so a counter or
/// a gauge reads as the cluster's total), in the order series first appear; comment lines
/// once.
pub(crate) fn merge_scrapes(bodies: &[String]) -> String {
    enum Line {
        Text(String),
        Sample(String, f64),
    }
    let mut lines: Vec<Line> = Vec::new();
    // Where each comment or series is in `lines`.
    let mut at: HashMap<String, usize> = HashMap::new();
    for line in bodies.iter().flat_map(|b| b.lines()) {
        let sample = match line.starts_with('#') {
            true => None,
            false => line
                .rsplit_once(' ')
                .and_then(|(series, v)| Some((series, v.parse::<f64>().ok()?))),
        };
        match sample {
            Some((series, v)) => match at.get(series) {
                Some(&i) => {
                    if let Line::Sample(_, sum) = &mut lines[i] {
                        *sum += v;
                    }
                }
                None => {
                    at.insert(series.to_owned(), lines.len());
                    lines.push(Line::Sample(series.to_owned(), v));
                }
            },
            None if line.trim().is_empty() || at.contains_key(line) => {}
            None => {
                at.insert(line.to_owned(), lines.len());
                lines.push(Line::Text(line.to_owned()));
            }
        }
    }
    let mut out = String::new();
    for line in lines {
        match line {
            Line::Text(t) => out.push_str(&t),
            Line::Sample(series, v) => out.push_str(&format!("{series} {v}")),
        }
        out.push('\n');
    }
    out
}

/// Metric `name` in a scrape, summed over its labelled series (0 when absent).
pub(crate) fn sum_of(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_go_to_the_nodes_in_turn_and_second_devices_elsewhere() {
        let p = Placement::default();
        assert_eq!(p.node_of("owner", "d1", 3), 0);
        assert_eq!(p.node_of("adm", "d1", 3), 1);
        assert_eq!(p.node_of("m1", "d1", 3), 2);
        assert_eq!(p.node_of("m2", "d1", 3), 0);
        assert_eq!(p.node_of("adm", "d1", 3), 1, "stable");
        assert_eq!(p.node_of("m1", "phone", 3), 0);
        assert_eq!(p.node_of("m1", "laptop", 3), 1);
        assert_eq!(p.node_of("m1", "phone", 3), 0, "stable");
        assert_eq!(p.node_of("x", "d1", 1), 0);
    }

    #[test]
    fn scrapes_merge_by_series() {
        let a = "# HELP c a counter\n# TYPE c counter\nc{k=\"1\"} 2\ng 1\n".to_owned();
        let b = "# HELP c a counter\n# TYPE c counter\nc{k=\"1\"} 3\nc{k=\"2\"} 1\n".to_owned();
        assert_eq!(
            merge_scrapes(&[a, b]),
            "# HELP c a counter\n# TYPE c counter\nc{k=\"1\"} 5\ng 1\nc{k=\"2\"} 1\n"
        );
    }
}
