//! ops/ checked by the tools that run it: promtool (config, rules, rule unit tests, and the
//! broker's live exposition format), systemd-analyze (the unit) and docker-compose (the
//! compose file). Each test is skipped, saying why, only when its tool is not installed.

use super::support::{ops_dir, read_ops, run, tool_or_skip};
use convoke_tests::{broker_bin, Broker};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOOL: Duration = Duration::from_secs(60);

fn promtool(test: &str) -> Option<std::path::PathBuf> {
    tool_or_skip("promtool", test, "prometheus")
}

#[track_caller]
fn assert_ok(out: &super::support::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

#[test]
fn promtool_checks_the_config_and_rules() {
    let Some(promtool) = promtool("promtool_checks_the_config_and_rules") else {
        return;
    };
    let ops = ops_dir();
    // `check config` also loads the rule files the config names.
    let out = run(
        Command::new(&promtool)
            .args(["check", "config"])
            .arg(ops.join("prometheus.yml")),
        TOOL,
    );
    assert_ok(&out, "promtool check config ops/prometheus.yml");
    let out = run(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(ops.join("alerts.yml")),
        TOOL,
    );
    assert_ok(&out, "promtool check rules ops/alerts.yml");
    assert!(out.stdout.contains("SUCCESS"), "{}", out.stdout);
}

#[test]
fn promtool_alert_rule_unit_tests_pass() {
    let Some(promtool) = promtool("promtool_alert_rule_unit_tests_pass") else {
        return;
    };
    let out = run(
        Command::new(&promtool)
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(ops_dir()),
        TOOL,
    );
    assert_ok(&out, "promtool test rules ops/alerts.test.yml");
}

#[tokio::test]
async fn promtool_lints_the_live_exposition_format() {
    let Some(promtool) = promtool("promtool_lints_the_live_exposition_format") else {
        return;
    };
    let broker = Broker::start().await;
    let _peers = super::traffic(&broker).await;
    let (status, body) = broker.http_get("/metrics").await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &body).unwrap();
    // promtool reads the exposition on stdin; a shell redirect keeps `run`'s deadline.
    let out = run(
        Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" check metrics < \"$1\"")
            .arg(&promtool)
            .arg(&file),
        TOOL,
    );
    assert_ok(
        &out,
        "promtool check metrics (naming lint of a live scrape)",
    );
}

#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = tool_or_skip("systemd-analyze", "systemd_unit_verifies", "systemd") else {
        return;
    };
    // Verify the unit as installed, with ExecStart pointing at the binary under test.
    let unit = std::fs::read_to_string(ops_dir().join("convoke.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/convoke serve"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("convoke.service");
    let bin = broker_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/convoke", &bin.to_string_lossy()),
    )
    .unwrap();
    let out = run(Command::new(analyze).arg("verify").arg(&path), TOOL);
    assert_ok(&out, "systemd-analyze verify ops/convoke.service");
    // Unknown or misspelt directives are only warnings: treat any as a failure.
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("convoke.service"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn compose_file_is_valid() {
    let Some(compose) = tool_or_skip("docker-compose", "compose_file_is_valid", "docker-compose")
    else {
        return;
    };
    let ops = ops_dir();
    let out = run(
        Command::new(&compose)
            .arg("-f")
            .arg(ops.join("compose.yaml"))
            .args(["config"])
            .env("CONVOKE_SECRET", "0123456789abcdef0123456789abcdef")
            .env("CONVOKE_COOKIE", "cookie-0123456789abcdef"),
        TOOL,
    );
    assert_ok(&out, "docker-compose config ops/compose.yaml");
    let config = out.stdout;
    // Three core nodes of one cluster: each its own name, ordinal, advertised address, QUIC
    // address and data volume; the same member list, cookie and app secret on all.
    let members = "convoke-1@convoke-1:7401,convoke-2@convoke-2:7401,convoke-3@convoke-3:7401";
    for i in 1..=3 {
        let node = service_block(&config, &format!("convoke-{i}"));
        let ip = format!("172.29.11.1{i}");
        for line in [
            "CONVOKE_CLUSTER__ENABLED: 'true'".to_string(),
            format!("CONVOKE_CLUSTER__NAME: convoke-{i}"),
            format!("CONVOKE_CLUSTER__ORDINAL: '{i}'"),
            format!("CONVOKE_CLUSTER__MEMBERS: {members}"),
            format!("CONVOKE_CLUSTER__ADVERTISE: convoke-{i}:7401"),
            "CONVOKE_CLUSTER__COOKIE: cookie-0123456789abcdef".to_string(),
            "CONVOKE_AUTH__SECRET: 0123456789abcdef0123456789abcdef".to_string(),
            // The QUIC address it announces to peers is its own, not 0.0.0.0.
            format!("CONVOKE_SERVER__LISTEN: {ip}:4433"),
            format!("ipv4_address: {ip}"),
            format!("- convoke-{i}:/var/lib/convoke"),
        ] {
            let quoted = line.replace('\'', "\"");
            assert!(
                node.contains(&line) || node.contains(&quoted),
                "convoke-{i} lacks `{line}`:\n{node}"
            );
        }
    }
    // Prometheus scrapes all three nodes.
    let prom = read_ops("prometheus.yml");
    for i in 1..=3 {
        assert!(prom.contains(&format!("\"convoke-{i}:9464\"")), "{prom}");
    }
    for service in [
        "convoke-1",
        "convoke-2",
        "convoke-3",
        "prometheus",
        "grafana",
        "node-exporter",
    ] {
        assert!(config.contains(&format!("  {service}:\n")), "{service}");
    }
    // What the compose file mounts exists in ops/.
    for mounted in [
        "prometheus.yml",
        "alerts.yml",
        "grafana/provisioning",
        "grafana/dashboards",
        "Containerfile",
    ] {
        assert!(Path::new(&ops.join(mounted)).exists(), "{mounted}");
    }
    // The shared secret is required, not defaulted.
    let out = run(
        Command::new(&compose)
            .arg("-f")
            .arg(ops.join("compose.yaml"))
            .args(["config", "-q"])
            .env_remove("CONVOKE_SECRET"),
        TOOL,
    );
    assert!(
        !out.status.success(),
        "compose must refuse to run without CONVOKE_SECRET"
    );
    assert!(out.stderr.contains("CONVOKE_SECRET"), "{}", out.stderr);
    // So is the cluster cookie.
    let out = run(
        Command::new(&compose)
            .arg("-f")
            .arg(ops.join("compose.yaml"))
            .args(["config", "-q"])
            .env("CONVOKE_SECRET", "0123456789abcdef0123456789abcdef")
            .env_remove("CONVOKE_COOKIE"),
        TOOL,
    );
    assert!(
        !out.status.success(),
        "compose must refuse to run without CONVOKE_COOKIE"
    );
    assert!(out.stderr.contains("CONVOKE_COOKIE"), "{}", out.stderr);
}

/// The block of service `name` in `docker-compose config` output (its lines, indented under
/// `  name:` in `services:`).
fn service_block(config: &str, name: &str) -> String {
    let head = format!("  {name}:\n");
    let start = config
        .find(&head)
        .unwrap_or_else(|| panic!("no service {name}"));
    let rest = &config[start + head.len()..];
    rest.lines()
        .take_while(|l| l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n")
}
