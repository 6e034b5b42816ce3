//! The Convoke wire contract, sans-IO.
//!
//! Everything a client and a broker must agree on lives here and nowhere else: the frame
//! codec ([`codec`]), the handshake ([`handshake`]), every request and response of the group
//! API ([`request`], [`response`]), the pushed events and messages ([`event`]), the error
//! codes ([`error`]), identifier rules ([`ids`]) and the contract's limits ([`limits`]).
//!
//! Like quinn-proto, this crate performs no I/O: it encodes into and decodes from byte
//! buffers, reports "need more bytes" as `Ok(None)`, and never reads a clock. Both the broker
//! and the client depend on it; it depends on neither.

pub mod codec;
pub mod error;
pub mod event;
pub mod handshake;
pub mod ids;
pub mod limits;
pub mod pin;
pub mod request;
pub mod response;
pub mod transfer;

pub use codec::{decode_frame, encode_frame, FrameError, MAX_FRAME_LEN};
pub use error::{ApiError, ErrorCode};
pub use event::{EventDetail, GroupEvent, GroupEventOp, GroupMessage, Push};
pub use handshake::{
    ClientFrame, Hello, ServerFrame, Welcome, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
pub use request::{CreateGroupData, Request, RequestClass};
pub use response::{
    GroupInfo, GroupInfoEntry, JoinedGroup, MemberEntry, MuteEntry, PublicGroup, ReadUser,
    Response, Role, SharedFile,
};

/// ALPN protocol identifier every Convoke QUIC connection negotiates.
pub const ALPN: &[u8] = b"convoke/1";

/// QUIC application close codes: why a connection was closed.
pub mod close {
    /// Normal close by either side.
    pub const NORMAL: u32 = 0;
    /// A frame could not be decoded (malformed bincode or trailing bytes).
    pub const MALFORMED_FRAME: u32 = 1;
    /// A frame's length prefix exceeded [`crate::MAX_FRAME_LEN`].
    pub const FRAME_TOO_LARGE: u32 = 2;
    /// The client did not read its events fast enough; its bounded queue filled up.
    pub const SLOW_CONSUMER: u32 = 3;
    /// The broker is shutting down.
    pub const SHUTDOWN: u32 = 4;
    /// The handshake was refused (bad token, unsupported version, ...).
    pub const HANDSHAKE_REFUSED: u32 = 5;
    /// The client violated the stream layout (e.g. no hello first).
    pub const PROTOCOL_VIOLATION: u32 = 6;
    /// The user has too many sessions open; the oldest is closed.
    pub const SESSION_LIMIT: u32 = 7;
    /// The session's token expired: log in again with a new token. The reason is a refusal
    /// in the form of [`crate::handshake::refusal_reason`] (`error 28 TOKEN_NOT_ASSIGNED:
    /// ...`).
    pub const TOKEN_EXPIRED: u32 = 8;

    /// A readable name for a close code (`"unknown code"` for one this crate does not know).
    pub fn name(code: u32) -> &'static str {
        match code {
            NORMAL => "normal",
            MALFORMED_FRAME => "malformed frame",
            FRAME_TOO_LARGE => "frame too large",
            SLOW_CONSUMER => "slow consumer",
            SHUTDOWN => "broker shutting down",
            HANDSHAKE_REFUSED => "handshake refused",
            PROTOCOL_VIOLATION => "protocol violation",
            SESSION_LIMIT => "session limit",
            TOKEN_EXPIRED => "token expired",
            _ => "unknown code",
        }
    }

    /// The close code for a frame that could not be decoded, the same on both sides: too
    /// large ([`FRAME_TOO_LARGE`]) or anything else ([`MALFORMED_FRAME`]).
    pub fn for_frame_error(e: &crate::FrameError) -> u32 {
        match e {
            crate::FrameError::TooLarge { .. } => FRAME_TOO_LARGE,
            _ => MALFORMED_FRAME,
        }
    }

    /// The longest close reason either side sends, in bytes: a QUIC CONNECTION_CLOSE frame
    /// must fit in one packet with its headers.
    pub const MAX_REASON_BYTES: usize = 200;

    /// `text` cut to at most [`MAX_REASON_BYTES`] bytes on a character boundary, as bytes
    /// for `Connection::close`.
    pub fn reason_bytes(text: &str) -> Vec<u8> {
        let mut end = text.len().min(MAX_REASON_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.as_bytes()[..end].to_vec()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn codes_have_distinct_names() {
            let codes = [
                NORMAL,
                MALFORMED_FRAME,
                FRAME_TOO_LARGE,
                SLOW_CONSUMER,
                SHUTDOWN,
                HANDSHAKE_REFUSED,
                PROTOCOL_VIOLATION,
                SESSION_LIMIT,
                TOKEN_EXPIRED,
            ];
            let names: std::collections::HashSet<_> = codes.iter().map(|c| name(*c)).collect();
            assert_eq!(names.len(), codes.len());
            assert!(!names.contains("unknown code"));
            assert_eq!(name(9999), "unknown code");
        }

        #[test]
        fn reasons_are_cut_on_a_character_boundary() {
            assert_eq!(reason_bytes("short"), b"short");
            let long = "é".repeat(150); // 300 bytes, 2 per character
            let cut = reason_bytes(&long);
            assert_eq!(cut.len(), MAX_REASON_BYTES);
            assert!(std::str::from_utf8(&cut).is_ok());
            let odd = format!("x{}", "é".repeat(150));
            let cut = reason_bytes(&odd);
            assert_eq!(cut.len(), MAX_REASON_BYTES - 1);
            assert!(std::str::from_utf8(&cut).is_ok());
        }

        #[test]
        fn frame_errors_map_to_their_codes() {
            let big = crate::FrameError::TooLarge { len: 9, max: 1 };
            assert_eq!(for_frame_error(&big), FRAME_TOO_LARGE);
            let bad = crate::FrameError::Trailing { unread: 1 };
            assert_eq!(for_frame_error(&bad), MALFORMED_FRAME);
        }
    }
}
