//! `convoke-cli` as a user runs it: the real binary against the scripted broker
//! (tests/support), checking stdout JSON, stderr and exit statuses.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use serde_json::Value;
use std::process::Output;
use std::time::Duration;
use support::FakeBroker;

struct Cli {
    broker: FakeBroker,
    dir: tempfile::TempDir,
}

impl Cli {
    async fn start() -> Self {
        let broker = FakeBroker::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &broker.cert_pem).unwrap();
        Self { broker, dir }
    }

    fn command(&self, token: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_convoke-cli"));
        cmd.env_remove("CONVOKE_SERVER")
            .env_remove("CONVOKE_TOKEN")
            .env_remove("CONVOKE_CA")
            .env_remove("CONVOKE_PIN_SHA256")
            .arg("--server")
            .arg(self.broker.addr.to_string())
            .arg("--token")
            .arg(token)
            .arg("--ca")
            .arg(self.dir.path().join("ca.pem"))
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, token: &str, args: &[&str]) -> Output {
        let run = self.command(token, args).output();
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("convoke-cli finished")
            .expect("convoke-cli ran")
    }
}

fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn results_print_as_json() {
    let cli = Cli::start().await;
    let out = cli.run("alice", &["ping", "--count", "3"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["count"], 3);
    assert_eq!(v["rtt_ms"].as_array().unwrap().len(), 3);
    assert!(v["min_ms"].as_f64().unwrap() <= v["max_ms"].as_f64().unwrap());

    let out = cli
        .run(
            "alice",
            &[
                "create-group",
                "--groupname",
                "g",
                "--members",
                "a,b",
                "--invite-need-confirm",
                "false",
            ],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out), "42");

    let out = cli
        .run(
            "alice",
            &["send-group-message", "--group-id", "42", "--payload", "hi"],
        )
        .await;
    assert_eq!(
        json(&out),
        serde_json::json!({"msg_id": "m1", "seq": 1, "timestamp": 3})
    );
    let out = cli
        .run(
            "alice",
            &[
                "update-group-announcement",
                "--group-id",
                "42",
                "--announcement",
                "0",
            ],
        )
        .await;
    assert_eq!(json(&out), serde_json::json!({"ok": true}));
}

#[tokio::test]
async fn errors_go_to_stderr_with_exit_statuses() {
    let cli = Cli::start().await;
    let out = cli
        .run("alice", &["get-group-blocklist", "--group-id", "5"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).starts_with("error 501 NOT_IMPLEMENTED: getGroupBlocklist"),
        "{}",
        stderr(&out)
    );

    let out = cli.run("bad", &["ping"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error 28 TOKEN_NOT_ASSIGNED"),
        "{}",
        stderr(&out)
    );

    let out = cli
        .run("alice", &["destroy-group", "--group-id", "3"])
        .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("slow consumer"), "{}", stderr(&out));

    let out = cli
        .run("alice", &["mute-group-member", "--group-id", "5"])
        .await;
    assert_eq!(out.status.code(), Some(2), "usage errors are clap's 2");
}

/// A `--server` without a port is bad usage (exit 2, as the help says) naming the value,
/// from the flag and from CONVOKE_SERVER alike: before, it failed to resolve ("invalid
/// socket address") with exit 3, as if the network were at fault.
#[tokio::test]
async fn a_server_without_a_port_is_a_usage_error_naming_it() {
    let cli = Cli::start().await;
    for from_env in [false, true] {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_convoke-cli"));
        cmd.env_remove("CONVOKE_SERVER")
            .env_remove("CONVOKE_TOKEN")
            .env_remove("CONVOKE_CA")
            .args(["--token", "alice", "--ca"])
            .arg(cli.dir.path().join("ca.pem"));
        if from_env {
            cmd.env("CONVOKE_SERVER", "127.0.0.42");
        } else {
            cmd.args(["--server", "127.0.0.42"]);
        }
        let out = cmd.arg("ping").output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("127.0.0.42") && stderr(&out).contains("host:port"),
            "{}",
            stderr(&out)
        );
    }
}

/// `--server` takes several nodes, repeated or comma-separated (the README's cluster
/// section: the owner's clients reconnect to another node): with the first one silent,
/// the call is made on the next. Before, a second `--server` was refused ("cannot be used
/// multiple times").
#[tokio::test]
async fn several_servers_are_tried_in_turn() {
    let cli = Cli::start().await;
    // Bound and never read: a broker that does not answer.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let live = cli.broker.addr.to_string();
    let both = format!("{silent},{live}");
    for servers in [
        vec!["--server", &silent, "--server", &live],
        vec!["--server", &both],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_convoke-cli"))
            .env_remove("CONVOKE_SERVER")
            .env_remove("CONVOKE_TOKEN")
            .env_remove("CONVOKE_CA")
            .args(&servers)
            .args(["--connect-timeout", "1", "--token", "alice", "--ca"])
            .arg(cli.dir.path().join("ca.pem"))
            .arg("ping")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{servers:?}: {}", stderr(&out));
        assert!(json(&out)["rtt_ms"].is_array(), "{}", json(&out));
    }
}

#[tokio::test]
async fn files_upload_and_download() {
    let cli = Cli::start().await;
    let src = cli.dir.path().join("notes.txt");
    std::fs::write(&src, b"shared notes").unwrap();
    let out = cli
        .run(
            "alice",
            &[
                "upload-group-shared-file",
                "--group-id",
                "42",
                "--file",
                src.to_str().unwrap(),
            ],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let file = json(&out);
    assert_eq!(file["file_size"], 12);
    let file_id = file["file_id"].as_str().unwrap().to_string();

    let dest = cli.dir.path().join("copy.txt");
    let out = cli
        .run(
            "alice",
            &[
                "download-group-shared-file",
                "--group-id",
                "42",
                "--file-id",
                &file_id,
                "--output",
                dest.to_str().unwrap(),
            ],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), b"shared notes");
}

#[tokio::test]
async fn watch_prints_one_json_line_per_push() {
    let cli = Cli::start().await;
    let watcher = cli
        .command("bob", &["watch", "--count", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sessions = || cli.broker.seen.lock().unwrap().sessions.len();
    assert!(support::eventually(10, || sessions() == 1).await);
    let alice = cli.broker.client("alice").connect().await.unwrap();
    alice
        .send_group_message("42", "hi bob", false)
        .await
        .unwrap();
    alice
        .send_group_message("42", vec![0xff, 0xfe], true)
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), watcher.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["push"], "message");
    assert_eq!(lines[0]["from"], "alice");
    assert_eq!(lines[0]["payload"], "hi bob");
    assert_eq!(lines[0]["payload_encoding"], "utf8");
    assert_eq!(lines[1]["payload"], "//4=");
    assert_eq!(lines[1]["payload_encoding"], "base64");
}

#[tokio::test]
async fn watch_without_reconnect_ends_with_status_3_when_the_broker_goes_away() {
    let cli = Cli::start().await;
    let watcher = cli
        .command("bob", &["--no-reconnect", "watch"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sessions = || cli.broker.seen.lock().unwrap().sessions.len();
    assert!(support::eventually(10, || sessions() == 1).await);
    drop(cli.broker);
    let out = tokio::time::timeout(Duration::from_secs(20), watcher.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("connection closed"),
        "{}",
        stderr(&out)
    );
}
