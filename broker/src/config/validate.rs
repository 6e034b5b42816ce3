//! Semantic checks: values that parse but make no sense (a zero quota, half a TLS pair).
//!
//! Each check names the setting and says what would be accepted; the loader then adds
//! where the value came from.

use convoke_protocol::{limits, MAX_FRAME_LEN};

use super::{Config, ConfigError};

/// Level names accepted on their own in `log.level`.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Room a message frame needs besides its payload (ids, group, sender, sequence).
const MESSAGE_ENVELOPE_BYTES: usize = 64 * 1024;

/// Longest dedup window (30 days): ids are kept no longer than their messages' history
/// anyway.
const MAX_DEDUP_WINDOW_SECS: u64 = 30 * 86_400;

/// Largest `messages.history_page_bytes`: a page's messages plus their envelopes must fit
/// in one protocol frame (4 MiB).
const MAX_HISTORY_PAGE_BYTES: u32 = 3 * 1024 * 1024;

/// Shortest configured app secret: anything shorter can be guessed.
pub(super) const MIN_SECRET_BYTES: usize = 16;

impl Config {
    /// Checks the values that deserialize but make no sense, e.g. `limits.max_admins = 0`.
    ///
    /// [`Config::load`] already calls this; call it again after changing a config by hand.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "server.data_dir",
                "\"\"",
                "must name a directory",
            ));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "tls.key",
                    "\"\"",
                    "must be set when tls.cert is set (set both, or neither for a \
                     generated self-signed certificate)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "tls.cert",
                    "\"\"",
                    "must be set when tls.key is set (set both, or neither for a \
                     generated self-signed certificate)",
                ))
            }
            _ => {}
        }
        if self.tls.cert.is_none() && !self.tls.allow_generated {
            return Err(ConfigError::invalid(
                "tls.cert",
                "\"\"",
                "must be set (with tls.key) when tls.allow_generated is false: this broker \
                 refuses to serve a generated self-signed certificate",
            ));
        }
        if self.tls.reload_check_secs > 86_400 {
            return Err(ConfigError::invalid(
                "tls.reload_check_secs",
                self.tls.reload_check_secs,
                "must be at most 86400 (0 = reload only on SIGHUP)",
            ));
        }
        if self.auth.secret.is_some() && self.auth.secret_file.is_some() {
            return Err(ConfigError::invalid(
                "auth.secret_file",
                format_args!(
                    "{:?}",
                    self.auth
                        .secret_file
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
                "must not be set together with auth.secret (set one)",
            ));
        }
        if let Some(secret) = &self.auth.secret {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::invalid(
                    "auth.secret",
                    format_args!("<redacted, {} bytes>", secret.len()),
                    format!(
                        "must be at least {MIN_SECRET_BYTES} bytes (or unset, to generate one)"
                    ),
                ));
            }
        }
        check_log_level(&self.log.level)?;

        let l = &self.limits;
        at_least(
            "limits.server_max_users",
            l.server_max_users,
            limits::MIN_MAX_USERS,
            "the smallest group has 3 members",
        )?;
        at_least(
            "limits.max_admins",
            l.max_admins,
            1,
            "0 would forbid admins",
        )?;
        at_least("limits.max_groups_per_user", l.max_groups_per_user, 1, "")?;
        at_least(
            "limits.max_sessions_per_user",
            l.max_sessions_per_user,
            1,
            "",
        )?;
        at_least("limits.max_message_bytes", l.max_message_bytes, 1, "")?;
        let most = MAX_FRAME_LEN - MESSAGE_ENVELOPE_BYTES;
        if l.max_message_bytes as usize > most {
            return Err(ConfigError::invalid(
                "limits.max_message_bytes",
                l.max_message_bytes,
                format!("must be at most {most}, so that a message fits in one protocol frame"),
            ));
        }
        at_least("limits.max_file_bytes", l.max_file_bytes, 1, "")?;
        at_least("limits.max_files_per_group", l.max_files_per_group, 1, "")?;

        at_least("groups.idle_stop_secs", self.groups.idle_stop_secs, 1, "")?;
        at_least("groups.max_resident", self.groups.max_resident, 1, "")?;
        at_least(
            "store.commit_deadline_ms",
            self.store.commit_deadline_ms,
            100,
            "a shorter deadline fails ordinary flushes",
        )?;
        at_least("store.commit_queue_mb", self.store.commit_queue_mb, 1, "")?;
        at_most("store.commit_queue_mb", self.store.commit_queue_mb, 1 << 20)?;
        test_hooks_allowed(self.debug.fault_injection, cfg!(debug_assertions))?;
        self.cluster.validate()?;
        self.webtransport.validate(self.server.listen)?;

        let s = &self.sessions;
        at_least(
            "sessions.outbound_queue",
            s.outbound_queue,
            16,
            "a smaller queue disconnects clients on any burst",
        )?;
        at_least(
            "sessions.handshake_timeout_ms",
            s.handshake_timeout_ms,
            1,
            "",
        )?;
        at_least("sessions.idle_timeout_secs", s.idle_timeout_secs, 1, "")?;
        at_least("sessions.kept_events_max", s.kept_events_max, 1, "")?;
        at_least(
            "sessions.kept_events_per_sender_max",
            s.kept_events_per_sender_max,
            1,
            "",
        )?;
        at_least("quotas.requests_burst", self.quotas.requests_burst, 1, "")?;
        at_least("quotas.messages_burst", self.quotas.messages_burst, 1, "")?;
        at_most("sessions.idle_timeout_secs", s.idle_timeout_secs, 86_400)?;
        at_most("sessions.coalesce_window_ms", s.coalesce_window_ms, 1_000)?;
        at_most(
            "store.group_commit_window_us",
            self.store.group_commit_window_us,
            100_000,
        )?;
        at_most("sessions.coalesce_busy_ms", s.coalesce_busy_ms, 60_000)?;
        at_least(
            "sessions.outbound_queue_bytes",
            s.outbound_queue_bytes,
            65_536,
            "a smaller queue disconnects clients on any burst of large messages",
        )?;
        at_least(
            "sessions.answer_queue_bytes",
            s.answer_queue_bytes,
            65_536,
            "a smaller budget disconnects clients that pipeline reads",
        )?;
        at_least("sessions.write_timeout_ms", s.write_timeout_ms, 100, "")?;
        at_least("sessions.max_connections", s.max_connections, 1, "")?;
        at_least(
            "sessions.new_connections_per_ip_burst",
            s.new_connections_per_ip_burst,
            1,
            "",
        )?;

        at_least(
            "store.cache_capacity_mb",
            self.store.cache_capacity_mb,
            1,
            "",
        )?;
        at_most(
            "store.cache_capacity_mb",
            self.store.cache_capacity_mb,
            1 << 20,
        )?;

        let m = &self.messages;
        at_least("messages.history_per_group", m.history_per_group, 1, "")?;
        at_least(
            "messages.history_max_age_secs",
            m.history_max_age_secs,
            1,
            "",
        )?;
        at_least(
            "messages.read_receipt_window_secs",
            m.read_receipt_window_secs,
            1,
            "",
        )?;
        at_least(
            "messages.dedup_window_secs",
            m.dedup_window_secs,
            1,
            "0 would store a client's retries as new messages",
        )?;
        at_most(
            "messages.dedup_window_secs",
            m.dedup_window_secs,
            MAX_DEDUP_WINDOW_SECS,
        )?;
        at_most(
            "files.resume_keep_secs",
            self.files.resume_keep_secs,
            86_400,
        )?;
        let f = &self.files;
        at_least(
            "files.max_transfers_per_user",
            f.max_transfers_per_user,
            1,
            "",
        )?;
        at_least(
            "files.transfer_rate_window_ms",
            f.transfer_rate_window_ms,
            100,
            "",
        )?;
        at_most(
            "files.transfer_rate_window_ms",
            f.transfer_rate_window_ms,
            600_000,
        )?;
        at_least("files.transfer_max_secs", f.transfer_max_secs, 1, "")?;
        // Durations added to an Instant: bounded so that no value overflows the addition
        // (a panic at run time), each far above any sensible setting.
        at_most(
            "server.shutdown_grace_ms",
            self.server.shutdown_grace_ms,
            3_600_000,
        )?;
        at_most(
            "groups.idle_stop_secs",
            self.groups.idle_stop_secs,
            2_592_000,
        )?;
        at_most(
            "sessions.handshake_timeout_ms",
            s.handshake_timeout_ms,
            600_000,
        )?;
        at_most("sessions.write_timeout_ms", s.write_timeout_ms, 3_600_000)?;
        at_most(
            "store.commit_deadline_ms",
            self.store.commit_deadline_ms,
            3_600_000,
        )?;
        at_most("files.transfer_max_secs", f.transfer_max_secs, 604_800)?;
        at_least(
            "messages.history_page_bytes",
            m.history_page_bytes,
            l.max_message_bytes,
            "limits.max_message_bytes: a page holds at least one message",
        )?;
        at_most(
            "messages.history_page_bytes",
            m.history_page_bytes,
            MAX_HISTORY_PAGE_BYTES,
        )?;
        Ok(())
    }
}

/// `debug.fault_injection` (test hooks that crash, fail or hang on purpose) is honoured only
/// by a debug build, which is what the tests run; a release build refuses it, so that no
/// production config can turn it on.
pub(super) fn test_hooks_allowed(on: bool, debug_build: bool) -> Result<(), ConfigError> {
    if on && !debug_build {
        return Err(ConfigError::invalid(
            "debug.fault_injection",
            true,
            "is a test hook: only debug builds (tests) accept it, never a release build",
        ));
    }
    Ok(())
}

fn at_least<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    min: T,
    why: &str,
) -> Result<(), ConfigError> {
    if value >= min {
        return Ok(());
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    Err(ConfigError::invalid(
        field,
        &value,
        format!("must be at least {min}{why}"),
    ))
}

fn at_most<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    max: T,
) -> Result<(), ConfigError> {
    if value <= max {
        return Ok(());
    }
    Err(ConfigError::invalid(
        field,
        &value,
        format!("must be at most {max}"),
    ))
}

/// A bare word must be a level (a bare word is also a valid `EnvFilter` directive, meaning
/// "everything from the target of that name", which is never what `level = "verbose"`
/// meant); anything else must parse as an `EnvFilter` directive list.
fn check_log_level(level: &str) -> Result<(), ConfigError> {
    let shown = format!("{level:?}");
    let trimmed = level.trim();
    let hint = "expected trace, debug, info, warn, error, off, or a filter such as \
                \"info,convoke_broker=debug\"";
    if trimmed.is_empty() {
        return Err(ConfigError::invalid("log.level", shown, hint));
    }
    let is_directive_list = trimmed.contains(['=', ',', '[', ':']);
    if !is_directive_list {
        if LEVELS.contains(&trimmed.to_ascii_lowercase().as_str()) {
            return Ok(());
        }
        return Err(ConfigError::invalid(
            "log.level",
            shown,
            format!("not a level; {hint}"),
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(trimmed)
        .map(drop)
        .map_err(|e| ConfigError::invalid("log.level", shown, format!("{e} ({hint})")))
}
