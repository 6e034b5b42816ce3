//! What the CLI prints: results as JSON on stdout, pushes as JSON lines, errors on stderr,
//! and the exit status of each kind of failure.
//!
//! Message payloads are bytes: they are printed as a UTF-8 string when valid, else base64,
//! and `payload_encoding` says which (`"utf8"` or `"base64"`).

use base64::Engine;
use convoke_client::{ApiError, ClientError, ConnectionEvent, GroupInfoEntry, GroupMessage, Push};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// Exit status when the broker refused the call.
pub(crate) const EXIT_API: u8 = 1;
/// Exit status for connection, TLS, protocol and local I/O problems.
pub(crate) const EXIT_TRANSPORT: u8 = 3;
/// Exit status of a transfer interrupted with Ctrl-C.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// Any serialisable result as JSON.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value)
        .unwrap_or_else(|e| json!({ "error": format!("cannot render the result: {e}") }))
}

/// An error inside a result (a per-group entry of getGroupInfo): its numeric code, its name
/// and the message, as on stderr.
pub(crate) fn api_error_json(e: &ApiError) -> Value {
    json!({ "code": e.code.code(), "name": e.code.name(), "message": e.message })
}

/// getGroupInfo's entries, each with its info or its error.
pub(crate) fn group_info_json(entries: &[GroupInfoEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|entry| {
                let mut v = to_json(entry);
                if let (Some(e), Value::Object(map)) = (&entry.error, &mut v) {
                    map.insert("error".to_string(), api_error_json(e));
                }
                v
            })
            .collect(),
    )
}

/// The result of a call that returns nothing.
pub(crate) fn ok() -> Value {
    json!({ "ok": true })
}

/// A payload as text when it is UTF-8, else base64; and which it is.
pub(crate) fn payload_json(payload: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(payload) {
        Ok(text) => (Value::String(text.to_string()), "utf8"),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(payload)),
            "base64",
        ),
    }
}

/// A message with a readable payload.
pub(crate) fn message_json(m: &GroupMessage) -> Value {
    let (payload, encoding) = payload_json(&m.payload);
    json!({
        "group_id": m.group_id,
        "msg_id": m.msg_id,
        "seq": m.seq,
        "from": m.from,
        "payload": payload,
        "payload_encoding": encoding,
        "timestamp": m.timestamp,
        "allow_group_ack": m.allow_group_ack,
    })
}

/// A push as one JSON object, tagged by `"push"` (`group`, `multiDevice`, `message`,
/// `closing`).
pub(crate) fn push_json(push: &Push) -> Value {
    match push {
        Push::Message(m) => {
            let mut v = message_json(m);
            if let Value::Object(map) = &mut v {
                map.insert("push".to_string(), Value::String("message".to_string()));
            }
            v
        }
        other => to_json(other),
    }
}

/// Prints a result: pretty on a terminal, one line otherwise.
pub(crate) fn print_result(value: &Value) {
    let mut out = std::io::stdout().lock();
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    let text = text.unwrap_or_else(|e| format!("{{\"error\":\"cannot render: {e}\"}}"));
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Prints one JSON line and flushes it; false once stdout is gone.
pub(crate) fn print_line(value: &Value) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}").and_then(|()| out.flush()).is_ok()
}

/// Reports a change of the connection's state on stderr, one line each.
pub(crate) fn connection_state(state: &ConnectionEvent) {
    match state {
        ConnectionEvent::Connected {
            server,
            session_id,
            zero_rtt,
            took,
            ..
        } => eprintln!(
            "connected to {server} in {took:?} (session {session_id}{})",
            if *zero_rtt { ", 0-RTT" } else { "" }
        ),
        ConnectionEvent::Reconnecting {
            reason,
            attempt,
            delay,
            ..
        } => eprintln!("reconnecting (attempt {attempt}, in {delay:?}): {reason}"),
        ConnectionEvent::Resumed { recovered, .. } => {
            eprintln!("resumed: {recovered} missed message(s) fetched")
        }
        ConnectionEvent::GaveUp { reason, .. } => eprintln!("gave up: {reason}"),
        other => eprintln!("{other:?}"),
    }
}

/// Reports an error on stderr and gives the exit status for it.
pub(crate) fn fail(err: &ClientError) -> ExitCode {
    let (text, status) = describe(err);
    eprintln!("{text}");
    ExitCode::from(status)
}

/// The stderr line and exit status of an error.
pub(crate) fn describe(err: &ClientError) -> (String, u8) {
    match err {
        // Displays as `error <code> <NAME>: <message>`.
        ClientError::Api(api) => (api.to_string(), EXIT_API),
        ClientError::Cancelled => (format!("error: {err}"), EXIT_INTERRUPTED),
        other => (format!("error: {other}"), EXIT_TRANSPORT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoke_client::{ApiError, ErrorCode, MessageSent};

    #[test]
    fn messages_print_text_or_base64() {
        let mut m = GroupMessage::example();
        let v = message_json(&m);
        assert_eq!(v["payload"], "hello");
        assert_eq!(v["payload_encoding"], "utf8");
        assert_eq!(v["seq"], 3);
        m.payload = vec![0xff, 0x00];
        let v = message_json(&m);
        assert_eq!(v["payload"], "/wA=");
        assert_eq!(v["payload_encoding"], "base64");
        let push = push_json(&Push::Message(m));
        assert_eq!(push["push"], "message");
        assert_eq!(push["msg_id"], "77");
    }

    #[test]
    fn pushes_and_results_have_stable_shapes() {
        for push in Push::examples() {
            let v = push_json(&push);
            assert!(v["push"].is_string(), "{v}");
        }
        let group = Push::examples().remove(0);
        let v = push_json(&group);
        assert_eq!(v["push"], "group");
        assert_eq!(v["operation"], "create");
        assert_eq!(v["detail"]["kind"], "none");
        let sent = to_json(&MessageSent {
            msg_id: "5".into(),
            seq: 2,
            timestamp: 9,
        });
        assert_eq!(sent, json!({"msg_id": "5", "seq": 2, "timestamp": 9}));
        assert_eq!(ok(), json!({"ok": true}));
    }

    #[test]
    fn errors_print_code_and_name_with_exit_statuses() {
        let api = ClientError::Api(ApiError::new(ErrorCode::GroupNotJoined, "not a member"));
        assert_eq!(
            describe(&api),
            ("error 602 GROUP_NOT_JOINED: not a member".to_string(), 1)
        );
        let closed = ClientError::Closed {
            code: Some(3),
            reason: "slow".into(),
        };
        assert_eq!(describe(&closed).1, 3);
        assert_eq!(describe(&ClientError::Timeout).1, 3);
        assert_eq!(describe(&ClientError::Cancelled).1, 130);
    }
}
