//! The first exchange on a connection's control stream, and the frames that follow it.
//!
//! The client opens one bidirectional control stream and sends [`ClientFrame::Hello`] with
//! the protocol versions it speaks, its token and a device id. The broker answers
//! [`ServerFrame::Welcome`] with the chosen version (the highest both speak), or
//! [`ServerFrame::Refused`] and closes. After a welcome, the client sends
//! [`ClientFrame::Request`]s (pipelined; each carries an id) and the broker answers each with a
//! [`ServerFrame::Response`] carrying the same id, in any order. The broker then opens one
//! unidirectional stream on which it pushes [`crate::Push`] frames in order. Events the
//! broker keeps until they are received ([`crate::Push::Kept`]) are acknowledged with
//! [`ClientFrame::Ack`] once the client has them.

use crate::error::ApiError;
use crate::request::Request;
use crate::response::Response;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// The protocol version this crate implements (2: kept events and their acknowledgements;
/// 3: idempotent sends, resumable transfers).
pub const PROTOCOL_VERSION: u32 = 3;

/// The versions this crate can speak, newest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[PROTOCOL_VERSION];

/// The client's opening frame.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Hello {
    /// Versions the client speaks.
    pub versions: Vec<u32>,
    /// A token minted with the app secret (`convoke token`).
    pub token: String,
    /// Identifies this device among the user's sessions (1-64 bytes).
    pub device_id: String,
    /// Whether this session takes pushes. A session that does not (a client that only makes
    /// requests) gets none: no live events, messages or kept-event replay, and it never
    /// acknowledges kept events, which wait for a session that does.
    pub events: bool,
}

/// The broker's acceptance of a hello.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides will speak.
    pub version: u32,
    /// The identity this session acts as (from the token).
    pub user_id: String,
    /// Whether the token carries the app-admin claim.
    pub app_admin: bool,
    /// Unique per connection on this broker.
    pub session_id: u64,
    /// The broker's clock, ms since the Unix epoch.
    pub server_time: i64,
}

/// Frames the client sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub enum ClientFrame {
    /// Must be the first frame, and only the first.
    Hello(Hello),
    /// A request; `id` is chosen by the client and echoed in the response.
    Request { id: u64, request: Request },
    /// The client has these kept events ([`crate::Push::Kept`] ids); the broker stops
    /// keeping them. No answer. At most [`MAX_ACK_IDS`] ids per frame.
    Ack { ids: Vec<u64> },
}

/// Most ids in one [`ClientFrame::Ack`].
pub const MAX_ACK_IDS: usize = 1024;

/// Frames the broker sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The hello was accepted.
    Welcome(Welcome),
    /// The hello was refused; the connection closes after this frame.
    Refused(ApiError),
    /// The answer to request `id`.
    Response {
        id: u64,
        result: Result<Response, ApiError>,
    },
}

/// The close reason a broker gives with [`crate::close::HANDSHAKE_REFUSED`] (after a
/// [`ServerFrame::Refused`], which a close can overtake) and with
/// [`crate::close::TOKEN_EXPIRED`]: the refusal as `error <code> <NAME>: <message>` (the
/// `Display` of [`ApiError`]), cut to [`crate::close::MAX_REASON_BYTES`]. The client reads
/// it back with [`parse_refusal`], so a refusal survives even when only the close arrives.
pub fn refusal_reason(err: &ApiError) -> Vec<u8> {
    crate::close::reason_bytes(&err.to_string())
}

/// Reads a close reason written by [`refusal_reason`] back into the refusal; `None` for any
/// other text (a code or name this crate does not know, or no `error ` form at all).
pub fn parse_refusal(reason: &[u8]) -> Option<ApiError> {
    let text = std::str::from_utf8(reason).ok()?;
    let rest = text.strip_prefix("error ")?;
    let (num, rest) = rest.split_once(' ')?;
    let code = crate::ErrorCode::from_code(num.parse().ok()?)?;
    let (name, message) = rest.split_once(": ")?;
    (name == code.name()).then(|| ApiError::new(code, message))
}

/// Picks the version to speak: the highest in both lists.
pub fn negotiate(client: &[u32], server: &[u32]) -> Result<u32, ApiError> {
    client
        .iter()
        .filter(|v| server.contains(v))
        .max()
        .copied()
        .ok_or_else(|| {
            ApiError::new(
                crate::error::ErrorCode::UnsupportedVersion,
                format!(
                    "client speaks protocol version(s) {client:?}, this broker speaks {server:?}"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn refusals_survive_the_close_reason() {
        for code in ErrorCode::ALL {
            let e = ApiError::new(code, "token expired at 5: get a new one");
            assert_eq!(parse_refusal(&refusal_reason(&e)), Some(e));
        }
        let e = ApiError::new(ErrorCode::TokenNotAssigned, "x".repeat(500));
        let reason = refusal_reason(&e);
        assert_eq!(reason.len(), crate::close::MAX_REASON_BYTES);
        let back = parse_refusal(&reason).unwrap();
        assert_eq!(back.code, ErrorCode::TokenNotAssigned);
        assert!(e.message.starts_with(&back.message));
        for other in [
            &b"bye"[..],
            b"error 99999 X: y",
            b"error 28 GROUP_NOT_EXIST: wrong name for the code",
            b"error 28 TOKEN_NOT_ASSIGNED no colon",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_refusal(other), None, "{other:?}");
        }
    }

    #[test]
    fn negotiation_picks_highest_common() {
        assert_eq!(negotiate(&[1, 2, 3], &[1, 2]).unwrap(), 2);
        let e = negotiate(&[9], &[1]).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::UnsupportedVersion);
        assert!(
            e.message.contains("[9]") && e.message.contains("[1]"),
            "{}",
            e.message
        );
        assert!(negotiate(&[], &[1]).is_err());
    }
}
