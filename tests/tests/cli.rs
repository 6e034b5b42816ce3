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
    Command::new(cli_bin())
        .arg("--server")
        .arg(broker.addr.to_string())
        .arg("--token")
        .arg(token)
        .arg("--ca")
        .arg(&broker.cert)
        .args(args)
        .env_remove("CONVOKE_SERVER")
        .env_remove("CONVOKE_TOKEN")
        .env_remove("CONVOKE_CA")
        .stdin(Stdio::null())
        .output()
        .unwrap()
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
    let out = tokio::task::spawn_blocking(move || watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
    let out = tokio::task::spawn_blocking(move || watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?} {stderr}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["operation"], "directJoined");
    assert_eq!(lines[1]["payload"], "before");
    assert_eq!(lines[2]["payload"], "after");
    assert!(stderr.contains("reconnecting"), "{stderr}");
}
