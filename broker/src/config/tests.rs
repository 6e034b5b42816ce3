use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use toml::{Table, Value};

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn write_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("convoke.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn load_file(text: &str) -> Result<Config, ConfigError> {
    let (_dir, path) = write_file(text);
    Config::load(Some(&path), env(&[]))
}

fn leaves(table: &Table) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (section, fields) in table {
        match fields {
            Value::Table(fields) => {
                out.extend(fields.keys().map(|f| format!("{section}.{f}")));
            }
            _ => {
                out.insert(section.clone());
            }
        }
    }
    out
}

#[test]
fn default_file_is_the_default_config() {
    let parsed: Config = toml::from_str(default_toml()).unwrap();
    assert_eq!(parsed, Config::default());
    Config::default().validate().unwrap();

    // Every setting appears in the file, uncommented, with a comment above it.
    let serialized = Table::try_from(Config::default()).unwrap();
    let in_file: Table = default_toml().parse().unwrap();
    assert_eq!(leaves(&in_file), leaves(&serialized));
    let lines: Vec<&str> = default_toml().lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            assert!(
                i > 0 && lines[i - 1].starts_with('#'),
                "setting without a comment above it: {line}"
            );
        }
    }
}

#[test]
fn ops_copy_is_byte_identical() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/convoke.toml");
    let ops = std::fs::read_to_string(path).unwrap();
    assert!(
        ops == default_toml(),
        "{path} differs from config/default.toml"
    );
}

#[test]
fn no_file_no_env_is_default() {
    assert_eq!(Config::load(None, env(&[])).unwrap(), Config::default());
    assert_eq!(load_file("").unwrap(), Config::default());
}

#[test]
fn file_overlays_defaults() {
    let config = load_file(
        "[server]\nlisten = \"0.0.0.0:5000\"\n[limits]\nmax_admins = 5\n\
         [log]\nformat = \"json\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
    )
    .unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:5000".parse().unwrap());
    assert_eq!(config.server.data_dir, PathBuf::from("convoke-data"));
    assert_eq!(config.limits.max_admins, 5);
    assert_eq!(config.limits.server_max_users, 100_000);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.tls.cert, Some(PathBuf::from("c.pem")));
}

#[test]
fn env_overlays_file_and_flags_overlay_env() {
    let (_dir, path) = write_file("[server]\nlisten = \"0.0.0.0:5000\"\nshutdown_grace_ms = 1\n");
    let vars = env(&[
        ("CONVOKE_SERVER__LISTEN", "127.0.0.1:6000"),
        ("CONVOKE_LIMITS__SERVER_MAX_USERS", "5000"),
        ("CONVOKE_METRICS__LISTEN", ""),
        ("CONVOKE_AUTH__SECRET", "0123456789abcdef-from-env"),
        ("CONVOKE_CONFIG", "/ignored/not/a/setting.toml"),
        ("CONVOKE_DEBUG__FAULT_INJECTION", "true"),
        ("PATH", "/usr/bin"),
    ]);
    let config = Config::load(Some(&path), vars.clone()).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:6000".parse().unwrap());
    assert_eq!(config.server.shutdown_grace_ms, 1);
    assert_eq!(config.limits.server_max_users, 5000);
    assert_eq!(config.metrics.listen, None);
    assert!(config.debug.fault_injection);
    assert_eq!(
        config.auth.secret.as_deref(),
        Some("0123456789abcdef-from-env")
    );

    let flags = [
        FlagSetting::new("--listen", "server.listen", "127.0.0.1:7000"),
        FlagSetting::parse_set("limits.max_admins=3").unwrap(),
    ];
    let config = Config::load_layered(Some(&path), vars, flags).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(config.limits.max_admins, 3);
    assert_eq!(config.limits.server_max_users, 5000);
}

#[test]
fn bad_value_in_file_names_field_value_and_file() {
    let err = load_file("[server]\nlisten = \"nope\"\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.field(), Some("server.listen"));
    assert!(msg.starts_with("server.listen = \"nope\""), "{msg}");
    assert!(msg.contains("invalid socket address"), "{msg}");
    assert!(msg.contains("convoke.toml"), "{msg}");

    let err = load_file("[limits]\nmax_admins = -1\n").unwrap_err();
    assert_eq!(err.field(), Some("limits.max_admins"), "{err}");
    assert!(err.to_string().contains("-1"), "{err}");

    let err = load_file("[log]\nformat = \"xml\"\n").unwrap_err();
    assert!(err.to_string().contains("plain"), "{err}");

    let err = Config::load(None, env(&[("CONVOKE_DEBUG__FAULT_INJECTION", "yes")])).unwrap_err();
    assert_eq!(err.field(), Some("debug.fault_injection"), "{err}");
    assert!(err.to_string().contains("true or false"), "{err}");

    let err = load_file("[sessions]\noutbound_queue = \"big\"\n").unwrap_err();
    assert_eq!(err.field(), Some("sessions.outbound_queue"), "{err}");
}

#[test]
fn bad_value_in_env_names_the_variable() {
    let err = Config::load(None, env(&[("CONVOKE_LIMITS__SERVER_MAX_USERS", "abc")])).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.field(), Some("limits.server_max_users"));
    assert!(msg.contains("\"abc\""), "{msg}");
    assert!(msg.contains("CONVOKE_LIMITS__SERVER_MAX_USERS"), "{msg}");

    let err = Config::load(None, env(&[("CONVOKE_SERVER__LISTEN", "nope")])).unwrap_err();
    assert!(err.to_string().contains("CONVOKE_SERVER__LISTEN"), "{err}");
    assert!(err.to_string().contains("\"nope\""), "{err}");

    let err =
        Config::load(None, env(&[("CONVOKE_LIMITS__MAX_ADMINS", "99999999999")])).unwrap_err();
    assert_eq!(err.field(), Some("limits.max_admins"), "{err}");
}

#[test]
fn unknown_keys_are_named() {
    let err = load_file("[server]\nlisen = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(matches!(err, ConfigError::Unknown { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("server.lisen"), "{msg}");
    assert!(msg.contains("listen"), "lists the valid keys: {msg}");

    let err = load_file("[sever]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(err.to_string().contains("sever"), "{err}");

    let err = load_file("listen = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(err.to_string().contains("listen"), "{err}");

    let err = Config::load(None, env(&[("CONVOKE_SERVER__LISEN", "x")])).unwrap_err();
    assert!(matches!(err, ConfigError::Unknown { .. }), "{err}");
    assert!(err.to_string().contains("CONVOKE_SERVER__LISEN"), "{err}");
    assert!(err.to_string().contains("server.lisen"), "{err}");

    let err = Config::load(None, env(&[("CONVOKE_NOPE__X", "x")])).unwrap_err();
    assert!(err.to_string().contains("CONVOKE_NOPE__X"), "{err}");

    let err = Config::load(None, env(&[("CONVOKE_SERVER_LISTEN", "x")])).unwrap_err();
    assert!(
        err.to_string().contains("CONVOKE_SERVER__LISTEN"),
        "suggests the right name: {err}"
    );

    assert!(FlagSetting::parse_set("no-equals").is_err());
    let err =
        Config::load_layered(None, env(&[]), [FlagSetting::new("--set x", "x", "1")]).unwrap_err();
    assert!(err.to_string().contains("--set x"), "{err}");
}

#[test]
fn syntax_and_io_errors() {
    let err = load_file("[server\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("line 1"), "{err}");

    let err = Config::load(
        Some(std::path::Path::new("/no/such/convoke.toml")),
        env(&[]),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/convoke.toml"), "{err}");
}

#[test]
fn semantic_errors_name_field_and_origin() {
    let err = load_file("[limits]\nserver_max_users = 2\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.field(), Some("limits.server_max_users"));
    assert!(msg.contains("= 2"), "{msg}");
    assert!(msg.contains("at least 3"), "{msg}");
    assert!(msg.contains("config file"), "{msg}");

    let err = Config::load(None, env(&[("CONVOKE_SESSIONS__OUTBOUND_QUEUE", "4")])).unwrap_err();
    assert!(
        err.to_string().contains("CONVOKE_SESSIONS__OUTBOUND_QUEUE"),
        "{err}"
    );

    let err = load_file("[tls]\ncert = \"c.pem\"\n").unwrap_err();
    assert_eq!(err.field(), Some("tls.key"), "{err}");
    assert!(err.to_string().contains("the default"), "{err}");

    let err = load_file("[auth]\nsecret = \"short\"\n").unwrap_err();
    assert_eq!(err.field(), Some("auth.secret"), "{err}");
    assert!(!err.to_string().contains("short"), "secret echoed: {err}");

    let err = load_file("[limits]\nmax_message_bytes = 4194304\n").unwrap_err();
    assert_eq!(err.field(), Some("limits.max_message_bytes"), "{err}");

    let err = load_file("[files]\nresume_keep_secs = 86401\n").unwrap_err();
    assert_eq!(err.field(), Some("files.resume_keep_secs"), "{err}");
    assert!(err.to_string().contains("at most 86400"), "{err}");
    let zero = load_file("[files]\nresume_keep_secs = 0\n").unwrap();
    assert_eq!(zero.files.resume_keep_secs, 0);
}

#[test]
fn secrets_never_echoed() {
    let err = Config::load(
        None,
        env(&[
            ("CONVOKE_AUTH__SECRET", "hunter2-hunter2-hunter2"),
            ("CONVOKE_AUTH__X", ""),
        ]),
    )
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let mut config = Config::default();
    config.auth.secret = Some("hunter2-hunter2-hunter2".to_owned());
    assert!(!format!("{config:?}").contains("hunter2"));
    config.auth.secret = Some("tiny".to_owned());
    assert!(!config.validate().unwrap_err().to_string().contains("tiny"));
}

#[test]
fn log_levels() {
    let mut config = Config::default();
    for ok in [
        "info",
        "DEBUG",
        "off",
        "info,convoke_broker=debug",
        "convoke_broker::session=trace",
    ] {
        config.log.level = ok.to_owned();
        config.validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in ["", "verbose", "info,convoke=loud"] {
        config.log.level = bad.to_owned();
        let err = config.validate().unwrap_err();
        assert_eq!(err.field(), Some("log.level"), "{bad}: {err}");
    }
}

#[test]
fn optional_settings_round_trip() {
    let mut config = Config::default();
    config.metrics.listen = None;
    config.files.dir = Some(PathBuf::from("/srv/files"));
    config.tls.cert = Some(PathBuf::from("c.pem"));
    config.tls.key = Some(PathBuf::from("k.pem"));
    let text = toml::to_string(&config).unwrap();
    let back: Config = toml::from_str(&text).unwrap();
    assert_eq!(back, config);
    assert_eq!(config.files_dir(), PathBuf::from("/srv/files"));
    assert_eq!(
        Config::default().files_dir(),
        PathBuf::from("convoke-data/files")
    );
    let addr: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    assert_eq!(Config::default().metrics.listen, Some(addr));
}

#[test]
fn env_vars_reads_only_the_prefix() {
    // Only checks the filter: the process environment is shared by parallel tests.
    assert!(env_vars().iter().all(|(k, _)| k.starts_with(ENV_PREFIX)));
}

#[test]
fn dedup_window_is_checked_and_named() {
    assert_eq!(Config::default().messages.dedup_window_secs, 600);
    let config = load_file("[messages]\ndedup_window_secs = 1\n").unwrap();
    assert_eq!(config.messages.dedup_window_secs, 1);
    for (value, bound) in [("0", "at least 1"), ("2592001", "at most 2592000")] {
        let err = load_file(&format!("[messages]\ndedup_window_secs = {value}\n")).unwrap_err();
        assert_eq!(err.field(), Some("messages.dedup_window_secs"), "{err}");
        assert!(err.to_string().contains(bound), "{err}");
    }
    let err = Config::load(None, env(&[("CONVOKE_MESSAGES__DEDUP_WINDOW_SECS", "0")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("CONVOKE_MESSAGES__DEDUP_WINDOW_SECS"),
        "{err}"
    );
}

/// The fault-injection hooks: a release build refuses them, naming the setting; a debug
/// build (the tests) accepts them; off is always fine.
#[test]
fn fault_injection_is_refused_by_release_builds() {
    let err = super::validate::test_hooks_allowed(true, false).unwrap_err();
    assert_eq!(err.field(), Some("debug.fault_injection"), "{err}");
    assert!(err.to_string().contains("release build"), "{err}");
    assert!(super::validate::test_hooks_allowed(true, true).is_ok());
    assert!(super::validate::test_hooks_allowed(false, false).is_ok());
}

/// Durations that are added to an `Instant` (or a `tokio::time::Instant`) have an upper
/// bound, so that no value can overflow the addition and panic at run time.
#[test]
fn durations_added_to_an_instant_are_bounded() {
    let huge = "18446744073709551";
    for (section, key, most) in [
        ("server", "shutdown_grace_ms", "at most 3600000"),
        ("groups", "idle_stop_secs", "at most 2592000"),
        ("sessions", "handshake_timeout_ms", "at most 600000"),
        ("sessions", "write_timeout_ms", "at most 3600000"),
        ("store", "commit_deadline_ms", "at most 3600000"),
        ("files", "transfer_max_secs", "at most 604800"),
    ] {
        let err = load_file(&format!("[{section}]\n{key} = {huge}\n")).unwrap_err();
        assert_eq!(
            err.field(),
            Some(format!("{section}.{key}").as_str()),
            "{err}"
        );
        assert!(err.to_string().contains(most), "{err}");
    }
    let d = Config::default();
    assert!(d.server.shutdown_grace_ms <= 3_600_000 && d.store.commit_deadline_ms <= 3_600_000);
}
