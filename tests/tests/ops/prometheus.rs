//! A real Prometheus scrapes a live broker with the configuration of ops/prometheus.yml
//! (narrowed to that broker, with a 1 s interval), loads ops/alerts.yml, and answers queries:
//! the target is up, `convoke_` series are there, every alert rule evaluates without error
//! and every dashboard query parses and runs.

use super::support::{free_port, http_get, ops_dir, read_ops, tool_or_skip, urlencode, KillOnDrop};
use convoke_tests::Broker;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// How long Prometheus gets to start, scrape, and evaluate.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(30);

/// ops/prometheus.yml with the convoke job pointed at `broker`, the self-scrape at
/// `prometheus`, other jobs (hosts that exist only in the compose network) left out, and
/// 1 s intervals.
fn derived_config(broker: SocketAddr, prometheus: SocketAddr) -> String {
    let text = read_ops("prometheus.yml");
    let (head, jobs) = text
        .split_once("scrape_configs:\n")
        .expect("ops/prometheus.yml has scrape_configs");
    let head = replace_exactly(head, "scrape_interval: 15s", "scrape_interval: 1s");
    let head = replace_exactly(&head, "scrape_timeout: 10s", "scrape_timeout: 1s");
    let head = replace_exactly(&head, "evaluation_interval: 15s", "evaluation_interval: 1s");
    let mut out = format!("{head}scrape_configs:\n");
    let mut kept = Vec::new();
    for job in jobs.split("\n  - job_name: ").skip(1) {
        let name = job.split_whitespace().next().unwrap_or_default();
        let body = match name {
            "convoke" => replace_exactly(
                job,
                r#"["convoke-1:9464", "convoke-2:9464", "convoke-3:9464"]"#,
                &format!(r#"["{broker}"]"#),
            ),
            "prometheus" => replace_exactly(job, "localhost:9090", &prometheus.to_string()),
            _ => continue,
        };
        kept.push(name.to_string());
        out.push_str("  - job_name: ");
        out.push_str(&body);
        out.push('\n');
    }
    assert_eq!(
        kept,
        ["convoke", "prometheus"],
        "jobs of ops/prometheus.yml"
    );
    out
}

/// `text` with `from` replaced; `from` must occur exactly once (else ops/prometheus.yml
/// changed shape and this test must be updated with it).
fn replace_exactly(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected {from:?} once in ops/prometheus.yml"
    );
    text.replace(from, to)
}

/// A Prometheus API call; `data` of a successful answer.
async fn api(prometheus: SocketAddr, path: &str) -> Option<Value> {
    let (status, body) = http_get(prometheus, path).await?;
    let v: Value = serde_json::from_str(&body).ok()?;
    (status == 200 && v["status"] == "success").then(|| v["data"].clone())
}

/// Instant query; the result vector.
async fn query(prometheus: SocketAddr, promql: &str) -> Result<Vec<Value>, String> {
    let path = format!("/api/v1/query?query={}", urlencode(promql));
    let (status, body) = http_get(prometheus, &path)
        .await
        .ok_or_else(|| "no answer".to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 || v["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Polls `check` until it yields a value, or fails with `what` and Prometheus's log.
async fn until<T, F, Fut>(what: &str, log: &std::path::Path, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}: {last}\nprometheus log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sample_value(v: &Value) -> f64 {
    v["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn prometheus_scrapes_a_live_broker_with_the_ops_config() {
    let test = "prometheus_scrapes_a_live_broker_with_the_ops_config";
    let Some(prometheus_bin) = tool_or_skip("prometheus", test, "prometheus") else {
        return;
    };
    let broker = Broker::start().await;
    let _peers = super::traffic(&broker).await;
    let target = broker.metrics.expect("metrics enabled");

    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, derived_config(target, addr)).unwrap();
    std::fs::copy(ops_dir().join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let log = dir.path().join("prometheus.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let _prometheus = KillOnDrop(
        Command::new(prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start prometheus"),
    );

    until("Prometheus ready", &log, || async {
        match http_get(addr, "/-/ready").await {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The target of job "convoke" is the broker, and it is up.
    until("the convoke target to be up", &log, || async {
        let data = api(addr, "/api/v1/targets").await.ok_or("no targets yet")?;
        let targets = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let t = targets
            .iter()
            .find(|t| t["labels"]["job"] == "convoke")
            .ok_or_else(|| format!("no convoke target in {data}"))?;
        assert_eq!(t["labels"]["instance"], target.to_string());
        match t["health"].as_str() {
            Some("up") => Ok(()),
            _ => Err(format!("target: {t}")),
        }
    })
    .await;

    let up = query(addr, r#"up{job="convoke"}"#).await.unwrap();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(sample_value(&up[0]), 1.0);
    let opened = until("convoke_connections_opened_total", &log, || async {
        let r = query(addr, "convoke_connections_opened_total").await?;
        r.first()
            .map(sample_value)
            .ok_or_else(|| "no series".to_string())
    })
    .await;
    assert!(opened >= 3.0, "{opened}");
    let errors = query(
        addr,
        r#"convoke_requests_total{method="destroyGroup", code="-3"}"#,
    )
    .await
    .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0]["metric"]["instance"].as_str(),
        Some(target.to_string().as_str())
    );

    // The alert rules loaded, and each has been evaluated without an error.
    until("every alert rule evaluated", &log, || async {
        let data = api(addr, "/api/v1/rules").await.ok_or("no rules yet")?;
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        let rules: Vec<Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules.len() < 10 {
            return Err(format!("{} rules loaded", rules.len()));
        }
        for r in &rules {
            match r["health"].as_str() {
                Some("ok") => {}
                Some("err") => panic!("rule {} fails: {}", r["name"], r["lastError"]),
                _ => return Err(format!("rule {} not evaluated yet", r["name"])),
            }
        }
        Ok(())
    })
    .await;
    // A healthy single broker fires no alert.
    let alerts = api(addr, "/api/v1/alerts").await.unwrap();
    let firing: Vec<&Value> = alerts["alerts"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["state"] == "firing").collect())
        .unwrap_or_default();
    assert!(firing.is_empty(), "{firing:#?}");

    // Every query of the Grafana dashboard is valid PromQL that runs on this data.
    let dash: Value = serde_json::from_str(&read_ops("grafana/dashboards/convoke.json")).unwrap();
    let mut ran = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m");
            if let Err(e) = query(addr, &expr).await {
                panic!("dashboard panel {}: {expr}: {e}", panel["title"]);
            }
            ran += 1;
        }
    }
    assert!(ran >= 20, "{ran}");
    // `_prometheus` is killed and reaped here, and the temp dir removed.
}
