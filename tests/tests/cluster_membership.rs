//! Cluster membership over real processes (issue #11 items 1, 4 (failure detection), 8, 9):
//! three nodes on 127.0.0.1-3 form a mesh, see a killed or frozen node Down within the
//! peer timeout and Up again when it returns, refuse a wrong cookie and a drifted data dir,
//! turn /readyz false without a majority, and survive garbage on the cluster port.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use convoke_tests::cluster::{TestCluster, PEER_TIMEOUT_MS};
use convoke_tests::eventually;

/// Slack on top of the peer timeout: one heartbeat, the /cluster poll, a loaded CI machine.
const SLACK: Duration = Duration::from_millis(1000);

fn within_timeout(took: Duration) -> bool {
    took <= Duration::from_millis(PEER_TIMEOUT_MS) + SLACK
}

#[tokio::test]
async fn three_nodes_form_a_mesh_and_agree_on_owners() {
    let c = TestCluster::start(3).await;
    for i in 1..=3 {
        let s = c.status(i).await;
        assert_eq!(s["node"]["name"], format!("n{i}"));
        assert_eq!(s["majority"], true);
        assert_eq!(s["shards"]["count"], 256);
        assert_eq!(s["shards"]["unavailable"], 0);
        let owners = s["shards"]["owners"].as_array().unwrap();
        let per: Vec<(String, u64)> = owners
            .iter()
            .map(|o| {
                (
                    o["owner"].as_str().unwrap().to_owned(),
                    o["shards"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            per,
            vec![("n1".into(), 86), ("n2".into(), 85), ("n3".into(), 85)]
        );
        for m in s["members"].as_array().unwrap() {
            assert_eq!(m["state"], "up", "node {i}: {m}");
            assert!(m["incarnation"].is_string(), "{m}");
        }
        assert_eq!(c.metric(i, "convoke_cluster_members").await, 3.0);
        assert_eq!(c.node(i).http_get("/readyz").await.0, 200);
    }
    // Every node learnt each peer's incarnation from its Hello.
    let inc2 = c.status(2).await["node"]["incarnation"].clone();
    let seen_by_1 = c.status(1).await["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "n2")
        .unwrap()["incarnation"]
        .clone();
    assert_eq!(inc2, seen_by_1);
    // The test crate and the nodes place groups alike.
    assert_eq!(
        c.owner_of(1),
        convoke_broker::cluster::placement::owner_of(1, 256, &["n3", "n2", "n1"]).unwrap()
    );
}

#[tokio::test]
async fn a_killed_node_is_down_at_once_and_up_again_after_restart() {
    let mut c = TestCluster::start(3).await;
    let inc_before = c.status(3).await["node"]["incarnation"].clone();
    c.kill9(3);
    for i in 1..=2 {
        let took = c.wait_state(i, "n3", "down").await;
        assert!(within_timeout(took), "node {i} saw n3 down after {took:?}");
    }
    assert!(c.metric(1, "convoke_cluster_peer_down_total").await >= 1.0);
    assert_eq!(c.status(1).await["shards"]["unavailable"], 85);
    c.restart(3);
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
    // A new process: a new incarnation, the same node_uid (same data dir).
    let after = c.status(3).await;
    assert_ne!(after["node"]["incarnation"], inc_before);
    assert_eq!(c.status(1).await["shards"]["unavailable"], 0);
}

#[tokio::test]
async fn a_frozen_node_is_down_within_the_timeout_and_up_after_it_thaws() {
    let c = TestCluster::start(3).await;
    c.sigstop(2);
    for i in [1, 3] {
        let took = c.wait_state(i, "n2", "down").await;
        assert!(
            within_timeout(took),
            "node {i} saw frozen n2 down after {took:?}"
        );
    }
    let s = c.status(1).await;
    let n2 = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "n2")
        .unwrap()
        .clone();
    assert_eq!(n2["reason"], "heartbeat_timeout", "{n2}");
    c.sigcont(2);
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
    // The sessions n1 and n3 stopped themselves when they declared n2 Down are not
    // connections refused for a wrong cookie.
    for i in 1..=3 {
        let unauthenticated = c
            .metric_with(
                i,
                "convoke_cluster_refused_total",
                "reason",
                "unauthenticated",
            )
            .await;
        assert_eq!(unauthenticated, 0.0, "node {i}:\n{}", c.node(i).log());
    }
}

/// n3 of a healthy cluster restarted on its data dir with another cookie: n1 and n2 close
/// its connections before they authenticate and it is never Up anywhere; as a majority of
/// the core members close what it dials, n3 stops with exit code 2 naming
/// `cluster.cookie` (before, it served alone as n3 forever), while n1 and n2, each closed
/// by n3 alone, keep running with each other, say why n3 is not up in /cluster, the log
/// and the metric, and take n3 back once its cookie is right.
#[tokio::test]
async fn a_node_with_a_wrong_cookie_is_never_up_and_exits_2() {
    let mut c = TestCluster::start(3).await;
    let n3 = restart_n3_with(&mut c, "cluster.cookie", "another-cookie-0123456789abc");
    eventually("refusals counted on n1", || async {
        (c.metric(1, "convoke_cluster_refused_total").await >= 1.0).then_some(())
    })
    .await;
    let (code, err) = n3.await.unwrap();
    assert_eq!(code, Some(2), "n3 did not stop:\n{err}");
    assert!(
        err.contains("refused by the cluster")
            && err.contains("n1 (")
            && err.contains("n2 (")
            && err.contains("cluster.cookie"),
        "{err}"
    );
    for i in [1, 2] {
        let s = c.status(i).await;
        let m = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "n3")
            .unwrap()
            .clone();
        assert_ne!(m["state"], "up", "node {i}: {m}");
        assert!(
            m["reason"].as_str().is_some_and(|r| {
                r.starts_with("unauthenticated") && r.contains("cluster.cookie")
            }),
            "node {i}: {m}"
        );
    }
    // n1 and n2, each closed by n3 alone, keep running and see each other Up.
    for (i, peer) in [(1, "n2"), (2, "n1")] {
        assert_eq!(c.state_of(i, peer).await.as_deref(), Some("up"), "node {i}");
        assert_eq!(c.status(i).await["majority"], true, "node {i}");
    }
    let log = c.node(1).log();
    assert!(
        log.contains("closed before it authenticated") && log.contains("cluster.cookie"),
        "n1 log:\n{log}"
    );
    // With its cookie back, n3 joins again.
    c.restart(3);
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
}

#[tokio::test]
async fn a_drifted_data_dir_exits_2_naming_the_setting() {
    let mut c = TestCluster::start(3).await;
    c.node_mut(1).stop();
    let changed_members = c.members.replace("n3@", "n4@");
    for (setting, value, named) in [
        ("cluster.ordinal", "9".to_owned(), "cluster.ordinal"),
        ("cluster.members", changed_members, "cluster.members"),
        ("cluster.shards", "128".to_owned(), "cluster.shards"),
        ("cluster.name", "n9".to_owned(), "cluster.members"),
    ] {
        let (code, err) = c.run_refused(1, &[(setting, value.as_str())]);
        assert_eq!(code, Some(2), "{setting}={value}: {err}");
        assert!(err.contains(named), "{setting}={value}: {err}");
    }
    // A renamed node that is still listed fails on the identity file instead.
    let renamed = c.members.replace("n1@", "n9@");
    let (code, err) = c.run_refused(
        1,
        &[
            ("cluster.name", "n9"),
            ("cluster.members", renamed.as_str()),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cluster.name changed"), "{err}");
    // With its settings back, it starts and joins again.
    c.restart(1);
    c.wait_up(1, 3).await;
}

#[tokio::test]
async fn a_node_alone_is_not_ready() {
    let mut c = TestCluster::start(3).await;
    c.kill9(2);
    // Two of three: still a majority.
    c.wait_state(1, "n2", "down").await;
    assert_eq!(c.node(1).http_get("/readyz").await.0, 200);
    c.kill9(3);
    c.wait_state(1, "n3", "down").await;
    let (code, body) = c.node(1).http_get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("majority"), "{body}");
    assert_eq!(c.status(1).await["majority"], false);
    assert_eq!(c.metric(1, "convoke_ready").await, 0.0);
    // Back to a majority.
    c.restart(2);
    c.wait_up(1, 2).await;
    eventually("n1 ready again", || async {
        (c.node(1).http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn garbage_on_the_cluster_port_is_counted_and_the_node_survives() {
    use tokio::io::AsyncWriteExt;
    let c = TestCluster::start(2).await;
    let before = c.metric(1, "convoke_cluster_refused_total").await;
    let addr = format!("127.0.0.1:{}", c.port);
    for garbage in [
        vec![0xffu8; 64],                                     // a huge length prefix
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),                   // another protocol
        vec![0, 0, 0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], // a frame that is not protobuf
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = s.write_all(&garbage).await;
        let _ = s.shutdown().await;
    }
    eventually("the garbage connections counted", || async {
        (c.metric(1, "convoke_cluster_refused_total").await >= before + 3.0).then_some(())
    })
    .await;
    // The node still serves its peer and its clients.
    assert_eq!(c.state_of(1, "n2").await.as_deref(), Some("up"));
    assert_eq!(c.state_of(2, "n1").await.as_deref(), Some("up"));
    let alice = c.client(1, "alice").await;
    drop(alice);
    assert_eq!(
        c.metric(1, "convoke_cluster_decode_errors_total").await,
        0.0
    );
}

#[tokio::test]
async fn a_gateway_joins_through_one_core_member_and_learns_the_rest() {
    let mut c = TestCluster::start(2).await;
    let g = c.start_gateway();
    // It knew only n1's address; it found n2 through n1's Hello.
    c.wait_up(g, 3).await;
    for i in 1..=2 {
        c.wait_up(i, 3).await;
    }
    let s = c.status(g).await;
    assert_eq!(s["node"]["role"], "gateway");
    assert_eq!(s["majority"], true);
    assert_eq!(s["shards"]["unavailable"], 0);
    let owners: Vec<&str> = s["shards"]["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec!["n1", "n2"], "a gateway owns no shards");
    let seen_by_1 = c.status(1).await;
    let gw = seen_by_1["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == format!("g{g}"))
        .unwrap()
        .clone();
    assert_eq!(gw["role"], "gateway", "{gw}");
    assert_eq!(c.node(g).http_get("/readyz").await.0, 200);
    // One of two core members gone: no majority anywhere, the gateway included.
    c.kill9(2);
    c.wait_state(g, "n2", "down").await;
    assert_eq!(c.node(g).http_get("/readyz").await.0, 503);
}

/// A cluster CA and one certificate per node (SAN = the node's IP), as PEM files in `dir`.
fn cluster_pki(dir: &std::path::Path, nodes: usize, ca_name: &str) -> Vec<[String; 3]> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let ca_file = dir.join(format!("{ca_name}.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (1..=nodes)
        .map(|i| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![format!("127.0.0.{i}")])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            let (c, k) = (
                dir.join(format!("{ca_name}-n{i}.pem")),
                dir.join(format!("{ca_name}-n{i}.key")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            [ca_file.clone(), c, k].map(|p| p.display().to_string())
        })
        .collect()
}

fn tls_settings(files: &[String; 3]) -> Vec<(String, String)> {
    vec![
        ("cluster.tls_ca".into(), files[0].clone()),
        ("cluster.tls_cert".into(), files[1].clone()),
        ("cluster.tls_key".into(), files[2].clone()),
    ]
}

#[tokio::test]
async fn nodes_talk_mutual_tls_under_the_cluster_ca_and_a_foreign_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = cluster_pki(dir.path(), 3, "ca");
    let foreign = cluster_pki(dir.path(), 3, "other");
    let c = TestCluster::start_with(3, |i| {
        if i == 3 {
            tls_settings(&foreign[2])
        } else {
            tls_settings(&ours[i - 1])
        }
    });
    c.wait_up(1, 2).await;
    c.wait_up(2, 2).await;
    tokio::time::sleep(Duration::from_millis(3 * PEER_TIMEOUT_MS)).await;
    assert_eq!(c.up_count(3).await, 1, "n3 (another CA) must never be Up");
    assert_ne!(c.state_of(1, "n3").await.as_deref(), Some("up"));
    // Plain TCP to a TLS cluster port gets nowhere, and the node carries on.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{}", c.port))
            .await
            .unwrap();
        let _ = s.write_all(&[0u8; 64]).await;
    }
    assert_eq!(c.state_of(1, "n2").await.as_deref(), Some("up"));
    // A connection that never says anything is closed after the handshake timeout (the
    // peer timeout) instead of holding up the cluster port, and another connection is
    // handshaken meanwhile: n2 restarted reconnects while the idle one is open.
    {
        use tokio::io::AsyncReadExt;
        let mut idle = tokio::net::TcpStream::connect(format!("127.0.0.1:{}", c.port))
            .await
            .unwrap();
        let mut c = c;
        c.kill9(2);
        c.wait_state(1, "n2", "down").await;
        c.restart(2);
        c.wait_up(1, 2).await;
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(
            Duration::from_millis(PEER_TIMEOUT_MS) + SLACK,
            idle.read(&mut buf),
        )
        .await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert!(c.metric(1, "convoke_cluster_refused_total").await >= 2.0);
    }
    // A key that does not fit its certificate: the start is refused naming the setting.
    let c = TestCluster::start_with(1, |_| tls_settings(&ours[0]));
    c.wait_up(1, 1).await;
    let mut c = c;
    c.node_mut(1).stop();
    let (code, err) = c.run_refused(
        1,
        &[
            ("cluster.tls_ca", ours[0][0].as_str()),
            ("cluster.tls_cert", ours[0][1].as_str()),
            ("cluster.tls_key", ours[1][2].as_str()),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cluster.tls_key"), "{err}");
}

#[tokio::test]
async fn a_second_process_claiming_a_live_name_is_refused_and_the_real_one_stays_up() {
    let c = TestCluster::start(2).await;
    let inc = c.status(2).await["node"]["incarnation"].clone();
    // Another data dir (another node_uid) under the name n2, on another address.
    let mut settings = c.settings(2);
    settings.extend([
        ("server.listen".to_owned(), "127.0.0.4:0".to_owned()),
        ("metrics.listen".to_owned(), "127.0.0.4:0".to_owned()),
        ("cluster.listen".to_owned(), format!("127.0.0.4:{}", c.port)),
    ]);
    // It hears n1's refusal (a process of that name is Up with another data dir) and
    // stops: before, it kept serving clients as n2.
    let (code, err) = serve_until_exit(&settings);
    assert_eq!(code, Some(2), "the second n2 did not stop:\n{err}");
    assert!(
        err.contains("refused by n1") && err.contains("cluster.name must be unique"),
        "{err}"
    );
    eventually("n1 to refuse the second n2", || async {
        c.node(1)
            .log()
            .contains("second process claiming the name")
            .then_some(())
    })
    .await;
    // The real n2 was never replaced: still Up, same incarnation, over several timeouts.
    tokio::time::sleep(Duration::from_millis(2 * PEER_TIMEOUT_MS)).await;
    let s = c.status(1).await;
    let n2 = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "n2")
        .unwrap()
        .clone();
    assert_eq!(n2["state"], "up", "{n2}");
    assert_eq!(n2["incarnation"], inc, "{n2}");
    assert_eq!(n2["downs"], 0, "{n2}");
}

/// A data dir a single node filled (groups with ordinal-0 ids, no cluster identity file)
/// is refused when the cluster is turned on, with exit code 2 and a message naming
/// `cluster.enabled`: before, it started and its groups were silently orphaned (owned by
/// other nodes' shards).
#[tokio::test]
async fn turning_the_cluster_on_for_a_single_nodes_data_dir_exits_2() {
    let mut single = convoke_tests::Broker::start().await;
    let alice = single.connect("alice").await;
    alice
        .client
        .create_group(convoke_tests::group_data("g", &[]))
        .await
        .unwrap();
    drop(alice);
    single.stop();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(convoke_tests::broker_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(single.data_dir())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--set")
        .arg(format!("auth.secret={}", convoke_tests::SECRET))
        .args(["--set", "cluster.enabled=true", "--set", "cluster.name=n1"])
        .args(["--set", "cluster.ordinal=1"])
        .arg("--set")
        .arg(format!("cluster.listen=127.0.0.1:{port}"))
        .arg("--set")
        .arg(format!("cluster.members=n1@127.0.0.1:{port}"))
        .arg("--set")
        .arg(format!("cluster.cookie={}", convoke_tests::cluster::COOKIE))
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + convoke_tests::WAIT;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cluster.enabled") && err.contains("single node"),
        "{err}"
    );
    assert!(
        !single.data_dir().join("cluster").join("identity").exists(),
        "a refused start writes no identity"
    );
}

/// A cluster node's data dir started with the cluster off (a config without `[cluster]`)
/// exits 2 naming `cluster.enabled` and the identity file: before, it started as a single
/// node, and the groups it created (ordinal-0 ids) were orphaned once the cluster was back
/// on (owned by other nodes' shards).
#[tokio::test]
async fn a_cluster_data_dir_started_with_the_cluster_off_exits_2() {
    let mut c = TestCluster::start(1).await;
    c.node_mut(1).stop();
    let (code, err) = c.run_refused(1, &[("cluster.enabled", "false")]);
    assert_eq!(code, Some(2), "{err}");
    let identity = c.node(1).data_dir().join("cluster").join("identity");
    assert!(
        err.contains("cluster.enabled") && err.contains(&identity.display().to_string()),
        "{err}"
    );
    // Clustered again, it starts.
    c.restart(1);
    c.wait_up(1, 1).await;
}

/// While n2 is down, a process on another data dir under the name n2 (a copy of its config
/// started on an empty server.data_dir) is refused by n1, which remembers the data dir it
/// first met n2 with; before, it was accepted and took n2's shards without its data. The
/// refused process stops with exit code 2 and n1's reason (before, it kept serving clients
/// as n2: placing groups on n2's shards, minting ids with n2's ordinal). The real n2 is
/// accepted again when it returns.
#[tokio::test]
async fn another_data_dir_under_a_known_name_is_refused_while_the_real_node_is_down() {
    let mut c = TestCluster::start(2).await;
    c.wait_up(1, 2).await;
    c.node_mut(2).stop();
    c.wait_state(1, "n2", "down").await;
    let (code, err) = serve_until_exit(&c.settings(2));
    assert_eq!(code, Some(2), "the impostor did not stop:\n{err}");
    assert!(
        err.contains("refused by the cluster") && err.contains("refused by n1"),
        "{err}"
    );
    assert!(err.contains("another data dir"), "{err}");
    eventually("n1 to refuse n2 on another data dir", || async {
        c.node(1)
            .log()
            .contains("runs on another data dir")
            .then_some(())
    })
    .await;
    assert!(
        c.metric_with(1, "convoke_cluster_refused_total", "reason", "node_uid")
            .await
            >= 1.0
    );
    let log = c.node(1).log();
    assert!(
        log.contains("peer_uids"),
        "the log says how to replace a node"
    );
    assert_ne!(c.state_of(1, "n2").await.as_deref(), Some("up"));
    c.restart(2);
    c.wait_up(1, 2).await;
    // The real n2, accepted, keeps running.
    tokio::time::sleep(Duration::from_millis(2 * PEER_TIMEOUT_MS)).await;
    assert_eq!(c.state_of(1, "n2").await.as_deref(), Some("up"));
}

/// n3 of a healthy cluster restarted on its data dir with another app secret (as with
/// `CONVOKE_AUTH__SECRET_FILE=<another file>`) is the odd one out: n1 and n2 both refuse it
/// for `app_secret` (their /cluster shows it `refused` with the reason), so it stops with
/// exit code 2 naming `auth.secret`, while n1 and n2, each refused by n3 alone, keep running
/// with each other. Before, n3 refused n1's and n2's Hellos as they arrived and never sent
/// its own, so neither ever judged it: they showed it down with no reason, and with no
/// majority refusing it n3 served forever.
#[tokio::test]
async fn a_node_with_another_app_secret_is_refused_by_the_majority_and_exits_2() {
    let mut c = TestCluster::start(3).await;
    let n3 = restart_n3_with(&mut c, "auth.secret", "another-app-secret-0123456789abcdef");
    for i in [1, 2] {
        eventually(
            &format!("node {i} to refuse n3 for its app secret"),
            || async {
                let s = c.status(i).await;
                let n3 = s["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["name"] == "n3")?
                    .clone();
                (n3["state"] == "refused"
                    && n3["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("app_secret")))
                .then_some(())
            },
        )
        .await;
    }
    let (code, err) = n3.await.unwrap();
    assert_eq!(code, Some(2), "n3 did not stop:\n{err}");
    assert!(
        err.contains("refused by the cluster")
            && err.contains("refused by n1")
            && err.contains("refused by n2")
            && err.contains("auth.secret"),
        "{err}"
    );
    // n1 and n2, each refused by n3 alone, keep running and see each other Up.
    tokio::time::sleep(Duration::from_millis(2 * PEER_TIMEOUT_MS)).await;
    for (i, peer) in [(1, "n2"), (2, "n1")] {
        assert_eq!(c.state_of(i, peer).await.as_deref(), Some("up"), "node {i}");
        assert_eq!(c.status(i).await["majority"], true, "node {i}");
    }
    // With its secret back, n3 joins again.
    c.restart(3);
    for i in 1..=3 {
        c.wait_up(i, 3).await;
    }
}

/// The cookie rule must not stop a healthy node: while n2 and n3 are frozen, n1 keeps
/// dialing them and its connections wait unauthenticated; killing both then resets those
/// connections before they authenticate. n1 (accepted by both before, so its cookie is
/// right) keeps running, serving and saying why they are down.
#[tokio::test]
async fn peers_frozen_then_killed_do_not_stop_a_healthy_node() {
    let mut c = TestCluster::start(3).await;
    let alice = c.client(1, "alice").await;
    c.sigstop(2);
    c.sigstop(3);
    for peer in ["n2", "n3"] {
        c.wait_state(1, peer, "down").await;
    }
    // A few dial rounds into the frozen peers.
    tokio::time::sleep(Duration::from_millis(3 * PEER_TIMEOUT_MS)).await;
    c.kill9(2);
    c.kill9(3);
    tokio::time::sleep(Duration::from_millis(3 * PEER_TIMEOUT_MS)).await;
    assert!(
        !c.node_mut(1).has_exited(),
        "n1 stopped:\n{}",
        c.node(1).log()
    );
    assert!(alice.client.ping().await.is_ok());
    assert!(!c.node(1).log().contains("refused by the cluster"));
    assert_eq!(c.state_of(1, "n2").await.as_deref(), Some("down"));
}

/// The same for a node that no core member has accepted yet (restarted while the others
/// are frozen): its dials wait unauthenticated and are reset by the kills before any
/// challenge came back, which says nothing about its cookie. It keeps running.
#[tokio::test]
async fn peers_frozen_then_killed_do_not_stop_a_node_that_is_starting() {
    let mut c = TestCluster::start(3).await;
    c.node_mut(1).stop();
    c.sigstop(2);
    c.sigstop(3);
    c.restart(1);
    // A few dial rounds into the frozen peers.
    tokio::time::sleep(Duration::from_millis(3 * PEER_TIMEOUT_MS)).await;
    c.kill9(2);
    c.kill9(3);
    tokio::time::sleep(Duration::from_millis(3 * PEER_TIMEOUT_MS)).await;
    assert!(
        !c.node_mut(1).has_exited(),
        "n1 stopped:\n{}",
        c.node(1).log()
    );
    assert!(!c.node(1).log().contains("refused by the cluster"));
    let alice = c.client(1, "alice").await;
    assert!(alice.client.ping().await.is_ok());
}

/// Stops n3 of `c` and starts it again on its data dir with `key` = `value`, until it exits
/// by itself: its exit code and stderr ([`serve_until_exit_in`]).
fn restart_n3_with(
    c: &mut TestCluster,
    key: &str,
    value: &str,
) -> tokio::task::JoinHandle<(Option<i32>, String)> {
    c.node_mut(3).stop();
    let mut settings = c.settings(3);
    settings.push((key.to_owned(), value.to_owned()));
    let dir = c.node(3).data_dir().to_owned();
    tokio::task::spawn_blocking(move || serve_until_exit_in(&dir, &settings))
}

/// Runs `convoke serve` with `settings` on a new data dir until it exits by itself (at most
/// [`convoke_tests::WAIT`], then it is killed): its exit code (`None`: it did not exit) and
/// its stderr.
fn serve_until_exit(settings: &[(String, String)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    serve_until_exit_in(dir.path(), settings)
}

/// [`serve_until_exit`] on data dir `dir`; `settings` win over the test app secret.
fn serve_until_exit_in(
    dir: &std::path::Path,
    settings: &[(String, String)],
) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(convoke_tests::broker_bin());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .arg("--set")
        .arg(format!("auth.secret={}", convoke_tests::SECRET));
    for (k, v) in settings {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    let mut child = cmd
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + convoke_tests::WAIT;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (code, err)
}
