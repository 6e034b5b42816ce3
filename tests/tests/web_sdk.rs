//! The web SDK's node tests (client/web: the TypeScript codec against the Rust fixtures),
//! run from `cargo test --workspace` so the README's one test command covers them.
//!
//! Installs the dev dependencies with `npm ci` when client/web/node_modules is missing or
//! was installed from another package-lock.json, then runs `npm test` (tsc, then `node
//! --test`) and prints node's counts. Without node or npm the test is skipped with a message,
//! unless `CONVOKE_REQUIRE_TOOLS=1` (set by .ci/run), which makes it a failure.
//!
//! The second test runs the SDK in headless Chromium against the broker binary
//! (`convoke_tests::broker_bin`), see its doc.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `npm ci` fetches four packages (typescript, @types/node with undici-types, and
/// playwright-core); generous for a slow registry.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// tsc and ~500 node tests take ~10 s on 2 busy cores.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Where `node_modules` records the package-lock.json it was installed from.
const STAMP: &str = "node_modules/.convoke-installed-lock.json";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/web")
}

fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Written to the real stderr, not the harness's captured one, so CI logs show it.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Runs `cmd` in client/web with a deadline; its exit success and combined output.
fn run(program: &Path, args: &[&str], timeout: Duration) -> (bool, String) {
    run_with(program, args, &[], timeout)
}

/// [`run`] with extra environment variables.
fn run_with(
    program: &Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    timeout: Duration,
) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(web_dir())
        .env("NO_COLOR", "1")
        .env("npm_config_update_notifier", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} {args:?}: {e}", program.display()));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut out);
            }
            out
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("waiting for {} {args:?}: {e}", program.display()),
        }
    };
    let text = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    match status {
        Some(s) => (s.success(), text),
        None => (
            false,
            format!(
                "{text}\n{} {args:?} did not finish within {timeout:?}; killed",
                program.display()
            ),
        ),
    }
}

/// The lines of a `node --test` report worth showing when it failed: every `not ok` with
/// its details, and the summary.
fn failures(report: &str) -> String {
    let mut out = String::new();
    let mut in_failure = false;
    for line in report.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("not ok") {
            in_failure = true;
        } else if trimmed.starts_with("ok ") || trimmed.starts_with("# Subtest") {
            in_failure = false;
        }
        let summary = line.starts_with("# ") && !line.starts_with("# Subtest");
        if in_failure || summary || line.contains("error TS") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// node's summary count `# <name> <n>`, if printed.
fn count(report: &str, name: &str) -> Option<u64> {
    let prefix = format!("# {name} ");
    report
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// Held by each test of this file for its whole run: both install into and compile to
/// client/web (node_modules, build/), which must not happen twice at once.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `npm ci` when node_modules is missing or from another lockfile.
fn install(npm: &Path) {
    let dir = web_dir();
    let lock = std::fs::read(dir.join("package-lock.json")).expect("client/web/package-lock.json");
    let installed = std::fs::read(dir.join(STAMP)).ok();
    if installed.as_deref() != Some(&lock[..]) {
        say("web SDK: npm ci (node_modules missing or from another package-lock.json)");
        let (ok, output) = run(npm, &["ci", "--no-audit", "--no-fund"], INSTALL_TIMEOUT);
        assert!(ok, "`npm ci` in client/web failed:\n{output}");
        std::fs::write(dir.join(STAMP), &lock).expect("write the install stamp");
    }
}

/// node's counts as `name n, ...`.
fn counts(report: &str) -> Vec<String> {
    [
        "tests",
        "suites",
        "pass",
        "fail",
        "cancelled",
        "skipped",
        "todo",
    ]
    .iter()
    .filter_map(|name| count(report, name).map(|n| format!("{name} {n}")))
    .collect()
}

#[test]
fn web_sdk_node_tests_pass() {
    let (Some(node), Some(npm)) = (find_tool("node"), find_tool("npm")) else {
        if std::env::var("CONVOKE_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
            panic!(
                "web_sdk_node_tests_pass: node and npm are needed (apt-get install nodejs npm) \
                 and CONVOKE_REQUIRE_TOOLS=1"
            );
        }
        say("SKIPPED web_sdk_node_tests_pass: `node` or `npm` is not installed (apt-get install nodejs npm)");
        return;
    };
    let _one = one_at_a_time();
    let (_, version) = run(&node, &["--version"], Duration::from_secs(30));
    say(&format!("web SDK: node {}", version.trim()));

    install(&npm);

    let (ok, report) = run(&npm, &["test"], TEST_TIMEOUT);
    let counts = counts(&report);
    say(&format!("web SDK node tests: {}", counts.join(", ")));
    assert!(
        ok,
        "`npm test` in client/web failed:\n{}\n(full report: cd client/web && npm test)",
        if report.len() < 16_000 {
            report.clone()
        } else {
            failures(&report)
        }
    );
    let tests = count(&report, "tests").unwrap_or(0);
    let passed = count(&report, "pass").unwrap_or(0);
    assert!(
        tests > 0 && passed == tests && count(&report, "fail") == Some(0),
        "`npm test` exited 0 but node reported {counts:?}:\n{}",
        failures(&report)
    );
}

/// Chromium runs are slow: three suites, each with its own broker and browser.
const E2E_TIMEOUT: Duration = Duration::from_secs(600);

/// The SDK in headless Chromium against a real broker with its WebTransport listener
/// (client/web/test/e2e: every example call of the seed, the seed's scenarios between
/// pages, the demo page with a screenshot in target/web-e2e/). Skipped with a message
/// without chromium or node, unless `CONVOKE_REQUIRE_TOOLS=1`.
#[test]
fn web_sdk_in_chromium_against_the_broker() {
    let require = std::env::var("CONVOKE_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find_tool("chromium"));
    let (Some(_node), Some(npm), Some(chromium)) = (find_tool("node"), find_tool("npm"), chromium)
    else {
        assert!(
            !require,
            "web_sdk_in_chromium_against_the_broker: node, npm and chromium are needed \
             (apt-get install nodejs npm chromium) and CONVOKE_REQUIRE_TOOLS=1"
        );
        say("SKIPPED web_sdk_in_chromium_against_the_broker: `chromium`, `node` or `npm` is not installed (apt-get install chromium nodejs npm)");
        return;
    };
    let _one = one_at_a_time();
    install(&npm);
    let broker = convoke_tests::broker_bin();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-e2e");
    let (ok, report) = run_with(
        &npm,
        &["run", "test:e2e"],
        &[
            ("CONVOKE_BIN", broker.as_os_str()),
            ("CHROMIUM", chromium.as_os_str()),
            ("CONVOKE_ARTIFACTS", artifacts.as_os_str()),
        ],
        E2E_TIMEOUT,
    );
    let counts = counts(&report);
    say(&format!("web SDK in Chromium: {}", counts.join(", ")));
    assert!(
        ok,
        "`npm run test:e2e` in client/web failed:\n{}\n(full report: cd client/web && npm run test:e2e)",
        if report.len() < 16_000 {
            report.clone()
        } else {
            failures(&report)
        }
    );
    let tests = count(&report, "tests").unwrap_or(0);
    assert!(
        tests > 0
            && count(&report, "pass") == Some(tests)
            && count(&report, "skipped").unwrap_or(0) == 0,
        "`npm run test:e2e` exited 0 but node reported {counts:?}:\n{}",
        failures(&report)
    );
}
