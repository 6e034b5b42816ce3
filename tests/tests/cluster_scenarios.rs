//! Any client on any node (issue #11 item 2): the end-to-end scenario suites, unchanged,
//! on a 3-node cluster with each scenario's users on different nodes.
//!
//! The suites below are included as modules, so their tests run twice in `cargo test
//! --workspace`: once in their own target on one broker, once here. In this binary
//! `Broker::start` starts a cluster of 3 real nodes (`TestCluster`, on 127.0.0.1-3, one
//! certificate for all, a peer timeout of 5 s so that a busy CI machine does not see a peer
//! down mid-scenario) and a `Broker` stands for the whole cluster (`convoke_tests::spread`):
//! - `connect`/`connect_device`/`connect_admin`: a user's first device goes to the next node
//!   in turn, in the order users first connect (the usual cast "owner", "adm", "m1", "m2",
//!   "out" is on nodes 1, 2, 3, 1, 2); a user's further devices go to the nodes after its
//!   first (multi-device across nodes). `builder()` takes the nodes in turn. Groups are
//!   owned by the node their id's shard maps to, so most requests are forwarded and most
//!   events cross nodes; every group has members on a node that does not own it.
//! - `restart`/`crash_restart`/`kill9`/`stop`/`start_again_in_place`: every node (a restart
//!   returns when the nodes see each other again); `metric`, `wait_for_sessions` and
//!   `/metrics` through `http_get`: summed over the nodes; `log`: every node's;
//!   `data_dirs`/`pids`/`node_metrics`: per node; `addr`, `cert`, `data_dir`, `pid`: node 1's
//!   (raw connections and the CLI go there). A failing scenario prints the tail of every
//!   node's log.
//!
//! Changes made to the suites for this, each needed on a cluster and neutral on one broker:
//! files.rs looks for blobs and partial uploads in every node's data dir (they are on the
//! group's owner); idempotent_sends.rs waits for any node to abort (under fault injection
//! the group's owner aborts, not necessarily node 1); the known failures below return early
//! on a cluster, saying so.
//!
//! Any suite runs on a cluster by hand: `CONVOKE_TEST_CLUSTER=3 cargo test -p convoke-tests
//! --test <suite>`.
//!
//! Cost: 101 tests in 67 s wall on the 2-core machine (prebuilt binaries, `CONVOKE_BIN`),
//! where the same 13 suites take 47 s on one broker.
//!
//! # Known failures
//! None: the four this file found (the login replay's order and bounds across nodes, the
//! per-sender bound, the per-user file quota) are fixed, and their scenarios run here.
//!
//! # Not run on the cluster
//! Tests of the included suites skipped here: none.
//!
//! Suites not included, and why:
//! - `reconnect`: client resilience across broker restarts, being extended for issue #14
//!   meanwhile. By hand on 3 nodes (`CONVOKE_TEST_CLUSTER=3`) all its tests but one pass;
//!   the one shows a cluster gap: a device that reconnects to another node does not push
//!   out its stale session on the first (`max_sessions_per_user` is per node, design 5.3).
//!   (A send whose group's owner dies mid-call is now retried by the client when it has a
//!   client message id: `cluster_requests::a_send_whose_owner_dies_mid_call_...`.)
//! - `cluster_*`: written for several nodes already (fan-out counts, faults, partitions,
//!   files across nodes, shutdown, membership).
//! - Per-process concerns, with nothing to spread: `hardening_sessions` (connection caps per
//!   address and per node, QUIC Retry, login deadline), `hardening_auth` (certificate
//!   reload, pins, token expiry per connection), `hardening_actors` (resident actors per
//!   process), `hardening_durability` and `hardening_restore` (store failures, corrupt
//!   records and backups of one data dir), `crash_matrix` (kill -9 of one process at random
//!   points; `cluster_faults` and the checker do it for nodes), `scale` (seeds one store
//!   directly), `migration` (QUIC path migration of one connection), `ops`, `cli` (the
//!   binaries and ops files against one broker), `web_transport`, `web_sdk` (the browser
//!   listener and SDK, node-local).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "authorization.rs"]
mod authorization;
#[path = "files.rs"]
mod files;
#[path = "foundation.rs"]
mod foundation;
#[path = "groups_durability.rs"]
mod groups_durability;
#[path = "groups_lifecycle.rs"]
mod groups_lifecycle;
#[path = "groups_membership.rs"]
mod groups_membership;
#[path = "groups_moderation.rs"]
mod groups_moderation;
#[path = "hardening_abuse.rs"]
mod hardening_abuse;
#[path = "hardening_requests.rs"]
mod hardening_requests;
#[path = "hardening_transfers.rs"]
mod hardening_transfers;
#[path = "idempotent_sends.rs"]
mod idempotent_sends;
#[path = "messages.rs"]
mod messages;
#[path = "seams.rs"]
mod seams;

use convoke_protocol::GroupEventOp as Op;
use convoke_tests::{group_data, peers, Broker};

/// The harness itself, so that the suites above cannot silently run on one broker: here a
/// broker is 3 nodes that see each other, users are spread over them, a second device goes
/// to another node, and a group's events reach members on every node.
#[tokio::test]
async fn the_scenarios_here_run_on_three_nodes_with_their_users_spread() {
    assert!(convoke_tests::on_cluster());
    let broker = Broker::start().await;
    assert_eq!(broker.pids().len(), 3);
    assert!(broker.pids().iter().all(|&p| p != 0));
    // One certificate on every node, as behind one name: `cert` is good for any of them.
    let certs: Vec<Vec<u8>> = broker
        .data_dirs()
        .iter()
        .map(|d| std::fs::read(d.join("tls/cert.pem")).unwrap())
        .collect();
    assert!(certs.windows(2).all(|w| w[0] == w[1]));
    let [owner, mut m1, mut m2] = peers(&broker, &["owner", "m1", "m2"])
        .await
        .try_into()
        .unwrap();
    assert_eq!(
        broker.node_metrics("convoke_sessions_online").await,
        [1.0, 1.0, 1.0]
    );
    let mut owner2 = broker.connect_device("owner", "d2").await;
    assert_eq!(
        broker.node_metrics("convoke_sessions_online").await,
        [1.0, 2.0, 1.0]
    );
    assert_eq!(broker.metric("convoke_sessions_online").await, 4.0);
    let gid = owner
        .client
        .create_group(group_data("g", &["m1", "m2"]))
        .await
        .unwrap();
    for p in [&mut m1, &mut m2] {
        assert_eq!(p.expect(Op::DirectJoined).await.group_id, gid);
    }
    assert_eq!(owner2.expect(Op::Create).await.group_id, gid);
    // Members on all three nodes: the events crossed to the two nodes that do not own the
    // group, whichever that is.
    let received = broker
        .node_metrics("convoke_cluster_deliveries_received_total")
        .await;
    assert_eq!(
        received.iter().filter(|&&n| n > 0.0).count(),
        2,
        "{received:?}"
    );
}
