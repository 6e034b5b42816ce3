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
pub mod request;
pub mod response;
pub mod transfer;

pub use codec::{decode_frame, encode_frame, FrameError, MAX_FRAME_LEN};
pub use error::{ApiError, ErrorCode};
pub use event::{EventDetail, GroupEvent, GroupEventOp, GroupMessage, Push};
pub use handshake::{
    ClientFrame, Hello, ServerFrame, Welcome, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
pub use request::{CreateGroupData, Request};
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
}
