//! Authentication and TLS hardening (issue #12, items 11 and 12, and the refusal form),
//! over the wire through the public client and real broker processes: sessions end with
//! their tokens, app-admin changes are logged, the app secret can come from a file,
//! certificates reload on SIGHUP, public-key pins (several, for rotation), the system
//! roots, refusing the generated certificate, and the metrics endpoint surviving accept
//! errors.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::{tls::public_key_pin, Client, ClientError, ConnectionEvent, Event};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::handshake::{parse_refusal, ClientFrame, Hello, SUPPORTED_VERSIONS};
use convoke_protocol::{close, ErrorCode};
use convoke_tests::{broker_bin, eventually, Broker, Peer, SECRET, WAIT};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The next connection-state event, skipping pushes.
async fn next_state(events: &mut convoke_client::EventStream) -> ConnectionEvent {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Event::Connection(c))) => return c,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the event stream ended"),
            Err(_) => panic!("no connection event within {WAIT:?}"),
        }
    }
}

/// The DER of the first certificate in a PEM file.
fn leaf_der(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

// ---- item 11: sessions end with their tokens ---------------------------------------------

#[tokio::test]
async fn a_session_ends_when_its_token_expires_and_the_client_says_why() {
    let broker = Broker::start().await;
    let mut other = broker.connect("other").await;
    let client = broker
        .builder()
        .token(broker.token("alice", false, 2))
        .connect()
        .await
        .unwrap();
    let mut events = client.events();
    assert!(matches!(
        next_state(&mut events).await,
        ConnectionEvent::Connected { .. }
    ));
    client.ping().await.unwrap();

    // The broker closes the session at expiry; the client reports it and, with a fixed
    // token, gives up (it cannot log in again by itself).
    match next_state(&mut events).await {
        ConnectionEvent::TokenExpired {
            reason, refreshing, ..
        } => {
            assert!(!refreshing);
            assert!(reason.contains("token expired"), "{reason}");
            assert!(reason.contains("TOKEN_NOT_ASSIGNED"), "{reason}");
        }
        other => panic!("expected TokenExpired, got {other:?}"),
    }
    match next_state(&mut events).await {
        ConnectionEvent::GaveUp { reason, .. } => {
            assert!(reason.contains("log in again"), "{reason}")
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    let err = client.closed().await;
    assert!(err.is_token_expired(), "{err:?}");
    assert!(
        matches!(&err, ClientError::Closed { code: Some(c), .. } if *c == close::TOKEN_EXPIRED)
    );
    let later = client.ping().await.unwrap_err();
    assert!(later.is_token_expired(), "{later:?}");
    // Only alice's session ended.
    broker.wait_for_sessions(1).await;
    other.client.ping().await.unwrap();
    other.expect_quiet().await;
    assert_eq!(
        broker.metric("convoke_connections_closed_total").await as u64,
        1
    );
}

#[tokio::test]
async fn a_token_provider_replaces_an_expired_token_on_its_own() {
    let broker = Broker::start().await;
    let calls = Arc::new(AtomicU32::new(0));
    // The first token lives 2 s, the next ones an hour.
    let tokens = {
        let calls = calls.clone();
        let first = broker.token("alice", false, 2);
        let later = broker.token("alice", false, 3600);
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let t = if n == 0 { first.clone() } else { later.clone() };
            async move { Ok(t) }
        }
    };
    let client = broker
        .builder()
        .token_provider(tokens)
        .connect()
        .await
        .unwrap();
    let first_session = client.session_id();
    let mut events = client.events();
    assert!(matches!(
        next_state(&mut events).await,
        ConnectionEvent::Connected { .. }
    ));
    match next_state(&mut events).await {
        ConnectionEvent::TokenExpired { refreshing, .. } => assert!(refreshing),
        other => panic!("expected TokenExpired, got {other:?}"),
    }
    // Then an ordinary reconnect, with the provider's new token.
    loop {
        match next_state(&mut events).await {
            ConnectionEvent::Reconnecting { .. } => {}
            ConnectionEvent::Connected { session_id, .. } => {
                assert_ne!(session_id, first_session);
                break;
            }
            other => panic!("expected a reconnect, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    client.ping().await.unwrap();
    assert!(!client.is_closed());
}

// ---- the refusal form ----------------------------------------------------------------------

/// A refused hello's close carries the refusal in the one form both sides share, so that a
/// client whose Refused frame was overtaken by the close still reads the code.
#[tokio::test]
async fn a_refused_handshake_closes_with_the_shared_refusal_form() {
    let broker = Broker::start().await;
    let conn = convoke_tests::raw_connection(&broker).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let hello = ClientFrame::Hello(Hello {
        versions: SUPPORTED_VERSIONS.to_vec(),
        token: "cvk1.not.valid".into(),
        device_id: "d1".into(),
        events: true,
    });
    send.write_all(&frame_bytes(&hello).unwrap()).await.unwrap();
    // The Refused frame is never read here: only the close is looked at.
    let end = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
    let quinn::ConnectionError::ApplicationClosed(app) = end else {
        panic!("expected an application close, got {end:?}");
    };
    assert_eq!(
        app.error_code.into_inner(),
        u64::from(close::HANDSHAKE_REFUSED)
    );
    let refusal = parse_refusal(&app.reason).unwrap_or_else(|| {
        panic!(
            "close reason {:?} is not a refusal",
            String::from_utf8_lossy(&app.reason)
        )
    });
    assert_eq!(refusal.code, ErrorCode::TokenNotAssigned);
    assert!(
        refusal.message.contains("malformed token"),
        "{}",
        refusal.message
    );
}

// ---- item 11: app admins, the secret file ---------------------------------------------------

#[tokio::test]
async fn app_admin_changes_are_logged_at_info() {
    let broker = Broker::start_with(&[("log.level", "info")]).await;
    let owner = broker.connect("owner").await;
    let gid = owner
        .client
        .create_group(convoke_tests::group_data("g", &[]))
        .await
        .unwrap();
    owner
        .client
        .update_group_announcement(&gid, "by the owner")
        .await
        .unwrap();
    let admin = broker.connect_admin("root").await;
    admin.client.get_group_info(&[&gid]).await.unwrap();
    admin
        .client
        .modify_group(&gid, Some("renamed by root"), None, None)
        .await
        .unwrap();
    let line = eventually("the app-admin log line", || async {
        broker
            .log()
            .lines()
            .find(|l| l.contains("app-admin request"))
            .map(str::to_string)
    })
    .await;
    assert!(
        line.contains("INFO") && line.contains("root") && line.contains("modifyGroup"),
        "{line}"
    );
    assert!(line.contains(&gid), "{line}");
    let log = broker.log();
    let audited: Vec<_> = log
        .lines()
        .filter(|l| l.contains("app-admin request"))
        .collect();
    assert_eq!(
        audited.len(),
        1,
        "reads and owners' changes are not logged: {audited:?}"
    );
}

#[tokio::test]
async fn the_app_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let file_setting = file.display().to_string();
    // The harness sets auth.secret; "" unsets it, so the file is the only secret.
    let broker =
        Broker::start_with(&[("auth.secret", ""), ("auth.secret_file", &file_setting)]).await;
    let peer = broker.connect("alice").await;
    peer.client.ping().await.unwrap();
    assert!(
        !broker.data_dir().join("auth/secret").exists(),
        "no secret generated"
    );

    // Another secret in the file: the same tokens are refused.
    std::fs::write(&file, "another-secret-of-enough-bytes\n").unwrap();
    let other =
        Broker::start_with(&[("auth.secret", ""), ("auth.secret_file", &file_setting)]).await;
    let err = other
        .builder()
        .token(other.token("alice", false, 60))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TokenNotAssigned), "{err}");

    // Both set: refused at start, naming the setting.
    let out = Command::new(broker_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", ""])
        .args(["--set", &format!("auth.secret={SECRET}")])
        .args(["--set", &format!("auth.secret_file={file_setting}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth.secret_file"), "{stderr}");
}

#[tokio::test]
async fn admin_tokens_default_to_an_hour_and_user_tokens_to_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let lifetime = |args: &[&str]| {
        let out = Command::new(broker_bin())
            .arg("token")
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env("CONVOKE_AUTH__SECRET", SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8(out.stdout).unwrap();
        let now = convoke_broker::clock::now_secs();
        let claims = convoke_broker::auth::verify(SECRET.as_bytes(), token.trim(), now).unwrap();
        (claims.expires_at - now, claims.admin)
    };
    let near = |got: u64, want: u64| got.abs_diff(want) <= 5;
    let (ttl, admin) = lifetime(&["--user", "root", "--admin"]);
    assert!(admin && near(ttl, 3_600), "{ttl}");
    let (ttl, admin) = lifetime(&["--user", "alice"]);
    assert!(!admin && near(ttl, 86_400), "{ttl}");
    let (ttl, _) = lifetime(&["--user", "root", "--admin", "--ttl", "15m"]);
    assert!(near(ttl, 900), "{ttl}");
}

// ---- item 12: certificates --------------------------------------------------------------

/// A self-signed certificate and key for localhost, as PEM files in `dir`.
fn write_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (
        dir.join(format!("{name}.cert.pem")),
        dir.join(format!("{name}.key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn pin_of(cert_pem: &Path) -> String {
    public_key_pin(&leaf_der(cert_pem)).unwrap()
}

async fn pinned(broker: &Broker, user: &str, pins: &[&str]) -> Result<Client, ClientError> {
    let mut b = Client::builder()
        .server_addr(broker.addr)
        .token(broker.token(user, false, 3600))
        .reconnect(convoke_client::ReconnectPolicy::disabled());
    for p in pins {
        b = b.pin_public_key(*p);
    }
    b.connect().await
}

fn sighup(broker: &Broker) {
    let ok = Command::new("kill")
        .arg("-HUP")
        .arg(broker.pid().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP failed");
}

#[tokio::test]
async fn sighup_serves_a_renewed_certificate_to_new_clients_while_open_ones_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = write_pair(dir.path(), "a");
    let (b_cert, b_key) = write_pair(dir.path(), "b");
    let (c_cert, _) = write_pair(dir.path(), "c");
    let (pin_a, pin_b) = (pin_of(&a_cert), pin_of(&b_cert));
    let served_cert = dir.path().join("served.cert.pem");
    let served_key = dir.path().join("served.key.pem");
    std::fs::copy(&a_cert, &served_cert).unwrap();
    std::fs::copy(&a_key, &served_key).unwrap();
    let broker = Broker::start_with(&[
        ("tls.cert", &served_cert.display().to_string()),
        ("tls.key", &served_key.display().to_string()),
        ("tls.allow_generated", "false"),
    ])
    .await;

    let mut old: Peer = pinned(&broker, "old", &[&pin_a]).await.unwrap().into();
    let old_session = old.client.session_id();
    assert!(
        pinned(&broker, "x", &[&pin_b]).await.is_err(),
        "b not served yet"
    );

    // Renew: b's files in place of a's, then SIGHUP.
    std::fs::copy(&b_cert, &served_cert).unwrap();
    std::fs::copy(&b_key, &served_key).unwrap();
    sighup(&broker);
    let new = eventually("a client pinned to the new key", || async {
        pinned(&broker, "new", &[&pin_b]).await.ok()
    })
    .await;
    new.ping().await.unwrap();
    // A new client pinned to the old key only is refused: new connections get b.
    let refused = pinned(&broker, "late", &[&pin_a]).await.unwrap_err();
    assert!(matches!(refused, ClientError::Tls(_)), "{refused}");
    // The open connection goes on: same session, requests and events flow.
    old.client.ping().await.unwrap();
    assert_eq!(old.client.session_id(), old_session);
    assert!(old.client.is_connected());
    let gid = new
        .create_group(convoke_tests::group_data("renewed", &["old"]))
        .await
        .unwrap();
    let joined = old
        .expect(convoke_protocol::GroupEventOp::DirectJoined)
        .await;
    assert_eq!(joined.group_id, gid);
    assert_eq!(
        broker.metric("convoke_tls_reloads_total").await as u64,
        1,
        "one reload"
    );

    // A broken pair (c's certificate with b's key) is refused; b stays served.
    std::fs::copy(&c_cert, &served_cert).unwrap();
    sighup(&broker);
    eventually("the refused reload in the log", || async {
        broker
            .log()
            .contains("TLS certificate not reloaded")
            .then_some(())
    })
    .await;
    pinned(&broker, "still-b", &[&pin_b]).await.unwrap();
    assert!(!broker.log().contains("panicked"));
}

/// With `tls.reload_check_secs`, a renewed pair is picked up without a signal (for
/// certificates that a tool rewrites in place, such as a mounted secret).
#[tokio::test]
async fn a_changed_certificate_is_picked_up_by_the_file_check() {
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = write_pair(dir.path(), "a");
    let (b_cert, b_key) = write_pair(dir.path(), "b");
    let served_cert = dir.path().join("served.cert.pem");
    let served_key = dir.path().join("served.key.pem");
    std::fs::copy(&a_cert, &served_cert).unwrap();
    std::fs::copy(&a_key, &served_key).unwrap();
    let broker = Broker::start_with(&[
        ("tls.cert", &served_cert.display().to_string()),
        ("tls.key", &served_key.display().to_string()),
        ("tls.reload_check_secs", "1"),
    ])
    .await;
    let old = pinned(&broker, "old", &[&pin_of(&a_cert)]).await.unwrap();
    // The key first, then the certificate, as a renewal tool may: a check in between sees a
    // pair that does not fit, refuses it and tries again at the next change.
    std::fs::copy(&b_key, &served_key).unwrap();
    std::fs::copy(&b_cert, &served_cert).unwrap();
    let pin_b = pin_of(&b_cert);
    eventually("the new certificate served", || async {
        pinned(&broker, "new", &[&pin_b]).await.ok()
    })
    .await;
    old.ping().await.unwrap();
    assert!(broker.metric("convoke_tls_reloads_total").await >= 1.0);
}

#[tokio::test]
async fn pins_a_mismatch_is_refused_and_one_of_several_is_enough() {
    let broker = Broker::start().await;
    let right = pin_of(&broker.cert);
    let dir = tempfile::tempdir().unwrap();
    let (other_cert, _) = write_pair(dir.path(), "other");
    let (next_cert, _) = write_pair(dir.path(), "next");
    let wrong = pin_of(&other_cert);
    let next = pin_of(&next_cert);

    let err = pinned(&broker, "alice", &[&wrong]).await.unwrap_err();
    match &err {
        ClientError::Tls(m) => {
            assert!(m.contains("none of the 1 pin(s)"), "{m}");
            assert!(m.contains(&right), "names the key it saw: {m}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    broker.wait_for_sessions(0).await;

    // Rotation: the current key's pin among others (before and after it) is enough.
    for pins in [[&*wrong, &*right, &*next], [&*next, &*wrong, &*right]] {
        let c = pinned(&broker, "alice", &pins).await.unwrap();
        c.ping().await.unwrap();
        c.close().await;
    }
    // A certificate fingerprint pin works alongside public-key pins.
    let fp = convoke_client::fingerprint_sha256(&leaf_der(&broker.cert));
    let c = Client::builder()
        .server_addr(broker.addr)
        .token(broker.token("bob", false, 60))
        .pin_public_key(wrong.clone())
        .pin_sha256(fp)
        .connect()
        .await
        .unwrap();
    c.ping().await.unwrap();
    // A malformed pin is a TLS configuration error, before dialling.
    let bad = pinned(&broker, "carol", &["sha256/not-base64!"]).await;
    assert!(
        matches!(bad, Err(ClientError::Tls(ref m)) if m.contains("not base64")),
        "{bad:?}"
    );
}

#[tokio::test]
async fn the_cli_takes_several_public_key_pins() {
    let broker = Broker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (other, _) = write_pair(dir.path(), "other");
    let (right, wrong) = (pin_of(&broker.cert), pin_of(&other));
    let cli = |pins: &[&str]| {
        let mut cmd = Command::new(convoke_tests::cli_bin());
        cmd.args(["--server", &broker.addr.to_string()])
            .args(["--token", &broker.token("alice", false, 60)])
            .arg("--no-reconnect");
        for p in pins {
            cmd.args(["--pin-public-key", p]);
        }
        cmd.arg("ping").output().unwrap()
    };
    let ok = cli(&[&wrong, &right]);
    assert!(ok.status.success(), "{ok:?}");
    let refused = cli(&[&wrong]);
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("none of the 1 pin(s)"), "{stderr}");
}

#[tokio::test]
async fn production_configs_refuse_the_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(broker_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", ""])
        .args(["--set", &format!("auth.secret={SECRET}")])
        .args(["--set", "tls.allow_generated=false"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.cert") && stderr.contains("tls.allow_generated"),
        "{stderr}"
    );
    assert!(!dir.path().join("data/tls").exists(), "nothing generated");

    // With a certificate of its own it starts (the reload test runs such a broker too).
    let (cert, key) = write_pair(dir.path(), "own");
    let broker = Broker::start_with(&[
        ("tls.cert", &cert.display().to_string()),
        ("tls.key", &key.display().to_string()),
        ("tls.allow_generated", "false"),
    ])
    .await;
    pinned(&broker, "alice", &[&pin_of(&cert)]).await.unwrap();
}

/// The system roots: a broker with a certificate from a CA that the "system" trusts
/// (`SSL_CERT_FILE`, read by rustls-native-certs on Linux) is accepted; with a store that
/// does not hold its CA, refused. Run in a child process (this test binary again), since
/// the environment is process-wide.
#[tokio::test]
async fn system_roots_are_the_trust_store_of_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (cert, key, ca_file) = (
        dir.path().join("leaf.pem"),
        dir.path().join("leaf.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (stranger, _) = write_pair(dir.path(), "stranger");
    let broker = Broker::start_with(&[
        ("tls.cert", &cert.display().to_string()),
        ("tls.key", &key.display().to_string()),
    ])
    .await;
    let run = |store: &Path| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "system_roots_child", "--ignored", "--nocapture"])
            .env("SSL_CERT_FILE", store)
            .env_remove("SSL_CERT_DIR")
            .env("CONVOKE_TEST_ADDR", broker.addr.to_string())
            .env("CONVOKE_TEST_TOKEN", broker.token("alice", false, 60))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("1 passed"),
            "the child test did not run: {text}"
        );
        text
    };
    assert!(run(&ca_file).contains("child: connected"));
    let refused = run(&stranger);
    assert!(refused.contains("child: refused: tls error"), "{refused}");
}

/// The child of [`system_roots_are_the_trust_store_of_the_machine`].
#[tokio::test]
#[ignore = "run by system_roots_are_the_trust_store_of_the_machine in a child process"]
async fn system_roots_child() {
    let addr = std::env::var("CONVOKE_TEST_ADDR").unwrap().parse().unwrap();
    let token = std::env::var("CONVOKE_TEST_TOKEN").unwrap();
    let r = Client::builder()
        .server_addr(addr)
        .server_name("localhost")
        .system_roots()
        .token(token)
        .connect()
        .await;
    match r {
        Ok(c) => {
            c.ping().await.unwrap();
            println!("child: connected");
        }
        Err(e) => println!("child: refused: {e}"),
    }
}

// ---- hygiene: the metrics endpoint -------------------------------------------------------

/// An accept error (here: out of file descriptors) used to end the metrics server for good.
///
/// The descriptor limit is set a little above the broker's open files (its own files may
/// come and go, so the count is only approximate) and the rest is used up by connections to
/// the metrics endpoint that this test holds open (the endpoint keeps an idle one for 5 s):
/// the accept after the last free descriptor fails, however many the broker had in use.
#[tokio::test]
async fn the_metrics_endpoint_survives_accept_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// Free descriptors left to the broker under the lowered limit.
    const HEADROOM: usize = 8;
    /// Connections held: more than the headroom, whatever the broker's own files do.
    const HELD: usize = HEADROOM + 40;
    let broker = Broker::start().await;
    let pid = broker.pid().to_string();
    assert_eq!(broker.http_get("/healthz").await.0, 200);
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: String = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .to_string();
    let prlimit = |soft: &str| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={soft}:")])
            .status()
            .expect("prlimit (util-linux) is needed for this test")
            .success();
        assert!(ok, "prlimit failed");
    };
    prlimit(&(open_fds + HEADROOM).to_string());
    let addr = broker.metrics.unwrap();
    // The first of these take the free descriptors; the accept after that fails (EMFILE)
    // and the rest wait in the listen backlog.
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while !broker.log().contains("metrics endpoint: cannot accept") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    prlimit(&soft);
    assert!(
        seen.is_ok(),
        "no accept error was logged with {HELD} connections held and {HEADROOM} descriptors \
         free:\n{}",
        broker.log()
    );
    // Served again, a connection that waited in the backlog included.
    let mut waiting = held.pop().unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, waiting.read_to_string(&mut answer))
        .await
        .expect("the waiting connection was served")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    let (status, body) = broker.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("convoke_metrics_accept_errors_total"),
        "{body}"
    );
    assert!(broker.metric("convoke_metrics_accept_errors_total").await >= 1.0);
}
