//! The README walkthrough, as a user runs it: `convoke token` and `convoke-cli` (the real
//! binaries) against a real broker.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_tests::{broker_bin, cli_bin, Broker};
use serde_json::Value;
use std::process::{Command, Output, Stdio};

fn token(broker: &Broker, user: &str) -> String {
    let out = Command::new(broker_bin())
        .args(["token", "--user", user, "--data-dir"])
        .arg(broker.data_dir())
        .env("CONVOKE_AUTH__SECRET", convoke_tests::SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "only the token on stdout");
    stdout.trim().to_string()
}

fn cli(broker: &Broker, token: &str, args: &[&str]) -> Output {
    cli_at(&broker.addr.to_string(), &broker.cert, token, args)
}

/// `convoke-cli --server <servers> --ca <ca> --token <token> <args>`, run to its end.
fn cli_at(servers: &str, ca: &std::path::Path, token: &str, args: &[&str]) -> Output {
    Command::new(cli_bin())
        .args(["--server", servers, "--token", token, "--ca"])
        .arg(ca)
        .args(args)
        .env_remove("CONVOKE_SERVER")
        .env_remove("CONVOKE_TOKEN")
        .env_remove("CONVOKE_CA")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// What a `watch` printed by the time it ended (its `--count`), one JSON value a line.
async fn watched(watch: std::process::Child) -> (Output, Vec<Value>) {
    let out = tokio::task::spawn_blocking(move || watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, lines)
}

/// `convoke-cli watch --count N` for the user of `token`, running, with its output piped.
fn watch(broker: &Broker, token: &str, count: u32) -> std::process::Child {
    Command::new(cli_bin())
        .arg("--server")
        .arg(broker.addr.to_string())
        .args(["--token", token, "--ca"])
        .arg(&broker.cert)
        .args(["watch", "--count", &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_readme_walkthrough_works_from_the_command_line() {
    let broker = Broker::start().await;
    let alice = token(&broker, "alice");
    let bob = token(&broker, "bob");
    let pong = json(&cli(&broker, &bob, &["ping"]));
    assert!(pong.get("rtt_ms").is_some(), "{pong}");

    let created = json(&cli(
        &broker,
        &alice,
        &[
            "create-group",
            "--groupname",
            "game night",
            "--desc",
            "this is my group",
            "--members",
            "bob",
            "--public",
            "true",
            "--invite-need-confirm",
            "false",
        ],
    ));
    let gid = created
        .as_str()
        .map(str::to_string)
        .or_else(|| created["group_id"].as_str().map(str::to_string))
        .unwrap();

    let ids = format!("{gid},999999");
    let info = json(&cli(&broker, &bob, &["get-group-info", "--group-id", &ids]));
    assert_eq!(info[0]["info"]["name"], "game night");
    assert_eq!(info[0]["info"]["affiliations_count"], 2);
    // An entry's error carries its numeric code, like errors on stderr.
    assert_eq!(info[1]["group_id"], "999999");
    assert_eq!(info[1]["error"]["code"], 605);
    assert_eq!(info[1]["error"]["name"], "GROUP_NOT_EXIST");
    assert!(info[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("999999"));

    // bob watches while alice mutes him and posts.
    broker.wait_for_sessions(0).await;
    let watch = watch(&broker, &bob, 3);
    broker.wait_for_sessions(1).await;
    let mutes = json(&cli(
        &broker,
        &alice,
        &[
            "mute-group-member",
            "--group-id",
            &gid,
            "--username",
            "bob",
            "--mute-duration",
            "-1",
        ],
    ));
    assert_eq!(mutes[0]["expire"], -1);
    json(&cli(
        &broker,
        &alice,
        &[
            "send-group-message",
            "--group-id",
            &gid,
            "--payload",
            "hello bob",
        ],
    ));
    let (_, lines) = watched(watch).await;
    // bob's directJoined was made while he was offline. The one-shot commands he ran since
    // did not take events, so it is still kept for him: the watch gets it first.
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["operation"], "directJoined");
    assert_eq!(lines[1]["operation"], "muteMember");
    assert_eq!(lines[2]["payload"], "hello bob");

    // bob is muted: a clear error with the code on stderr and a non-zero exit.
    let denied = cli(
        &broker,
        &bob,
        &["send-group-message", "--group-id", &gid, "--payload", "hi"],
    );
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("507"), "{err}");

    let history = json(&cli(
        &broker,
        &bob,
        &["get-group-messages", "--group-id", &gid, "--limit", "10"],
    ));
    assert_eq!(history[0]["payload"], "hello bob");
    let bad = cli(&broker, &bob, &["destroy-group", "--group-id", &gid]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("603 PERMISSION_DENIED"));
}

#[tokio::test]
async fn watch_keeps_watching_across_a_broker_crash_and_restart() {
    let mut broker = Broker::start().await;
    let (alice, bob) = (token(&broker, "alice"), token(&broker, "bob"));
    json(&cli(&broker, &bob, &["ping"]));
    let gid = json(&cli(
        &broker,
        &alice,
        &["create-group", "--groupname", "g", "--members", "bob"],
    ));
    let gid = gid.as_str().unwrap().to_string();
    broker.wait_for_sessions(0).await;
    let watch = watch(&broker, &bob, 3);
    broker.wait_for_sessions(1).await;
    let send = |broker: &Broker, text: &str| {
        json(&cli(
            broker,
            &alice,
            &["send-group-message", "--group-id", &gid, "--payload", text],
        ))
    };
    send(&broker, "before");
    broker.kill9();
    broker.start_again_in_place();
    // Sent before the watch has reconnected, or after: the watch prints it either way.
    send(&broker, "after");
    let (out, lines) = watched(watch).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?} {stderr}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["operation"], "directJoined");
    assert_eq!(lines[1]["payload"], "before");
    assert_eq!(lines[2]["payload"], "after");
    assert!(stderr.contains("reconnecting"), "{stderr}");
}

/// The README's "Running a cluster" walkthrough with the real binaries on 3 nodes: tokens
/// from different nodes' data dirs work everywhere (one secret); bob watches through n2
/// while alice creates the group through n1 and posts through n1 and n3; the watch prints
/// the join and both messages in the owner's order; history and info read back through
/// other nodes; a member's change only the owner may make, and a non-member's read, are
/// refused with their codes whichever node they go through. Then n3 dies: `--server` with
/// n3 first and n2 second still reaches the cluster within about a second (the dial
/// stagger, not the 10 s connect timeout), and the group answers from n2 unless n3 owned
/// it, when the error says which node is unreachable (500, retryable).
#[tokio::test]
async fn the_readme_cluster_walkthrough_works_from_the_command_line() {
    let mut c = convoke_tests::cluster::TestCluster::start(3).await;
    let alice = token(c.node(1), "alice");
    let bob = token(c.node(2), "bob");
    let carol = token(c.node(3), "carol");
    json(&cli(c.node(3), &carol, &["ping"]));
    json(&cli(c.node(2), &bob, &["ping"]));
    c.node(2).wait_for_sessions(0).await;
    let watch = watch(c.node(2), &bob, 3);
    c.node(2).wait_for_sessions(1).await;
    let gid = json(&cli(
        c.node(1),
        &alice,
        &[
            "create-group",
            "--groupname",
            "across nodes",
            "--members",
            "bob",
            "--invite-need-confirm",
            "false",
        ],
    ));
    let gid = gid.as_str().unwrap().to_string();
    for (node, text) in [(1, "hello from n1"), (3, "hello from n3")] {
        json(&cli(
            c.node(node),
            &alice,
            &["send-group-message", "--group-id", &gid, "--payload", text],
        ));
    }
    let (_, lines) = watched(watch).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["operation"], "directJoined");
    assert_eq!(lines[1]["payload"], "hello from n1");
    assert_eq!(lines[2]["payload"], "hello from n3");

    let history = json(&cli(
        c.node(2),
        &bob,
        &["get-group-messages", "--group-id", &gid, "--limit", "5"],
    ));
    let payloads: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["hello from n1", "hello from n3"]);
    let info = json(&cli(
        c.node(3),
        &bob,
        &["get-group-info", "--group-id", &gid],
    ));
    assert_eq!(info[0]["info"]["name"], "across nodes");
    assert_eq!(info[0]["info"]["affiliations_count"], 2);
    for node in 1..=3 {
        let denied = cli(c.node(node), &bob, &["destroy-group", "--group-id", &gid]);
        assert_eq!(denied.status.code(), Some(1), "through n{node}");
        let err = String::from_utf8_lossy(&denied.stderr);
        assert!(
            err.contains("603 PERMISSION_DENIED"),
            "through n{node}: {err}"
        );
        let outsider = cli(
            c.node(node),
            &carol,
            &["get-group-messages", "--group-id", &gid],
        );
        assert_eq!(outsider.status.code(), Some(1), "through n{node}");
        let err = String::from_utf8_lossy(&outsider.stderr);
        assert!(
            err.contains("602 GROUP_NOT_JOINED") && err.contains("carol"),
            "through n{node}: {err}"
        );
    }

    // The nodes' logs went to files (the README's `2>> n1.log`): plain text, no colour
    // codes to trip grep.
    let log = c.node(1).log();
    assert!(log.contains("cluster: node started"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );

    // n3 dies; a server list with it first reaches n2.
    let owner = c.owner_of(gid.parse().unwrap());
    c.kill9(3);
    c.wait_state(2, "n3", "down").await;
    let dir = tempfile::tempdir().unwrap();
    let nodes_pem = dir.path().join("nodes.pem");
    let mut pem = std::fs::read(&c.node(3).cert).unwrap();
    pem.extend(std::fs::read(&c.node(2).cert).unwrap());
    std::fs::write(&nodes_pem, pem).unwrap();
    let servers = format!("{},{}", c.node(3).addr, c.node(2).addr);
    let listed = |args: &[&str]| cli_at(&servers, &nodes_pem, &bob, args);
    let t = std::time::Instant::now();
    let pong = json(&listed(&["ping"]));
    assert!(pong.get("rtt_ms").is_some(), "{pong}");
    // A dead first server costs the client's dial stagger (1 s), not its 10 s connect
    // timeout: n2 is dialed too once n3 has not answered for a second.
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    let read = listed(&["get-group-messages", "--group-id", &gid, "--limit", "5"]);
    if owner == "n3" {
        assert_eq!(read.status.code(), Some(1));
        let err = String::from_utf8_lossy(&read.stderr);
        assert!(
            err.contains("500") && err.contains("n3") && err.contains("unreachable"),
            "{err}"
        );
    } else {
        assert_eq!(json(&read).as_array().unwrap().len(), 2, "owner {owner}");
    }
}
