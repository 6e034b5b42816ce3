//! Shared-file transfers, each on its own bidirectional QUIC stream so that a large file
//! never delays chat traffic on the control stream.
//!
//! The client opens a stream and writes one [`TransferHeader`] frame. Everything the broker
//! writes back is [`TransferReply`] frames (and, for a download, the raw bytes):
//! - a fresh upload (`resume: false`): the raw file bytes follow the header at once and the
//!   client finishes its send side; the broker answers one [`TransferReply::Outcome`];
//! - a resumed upload (`resume: true`): the client waits for the broker's first frame:
//!   [`TransferReply::ResumeAt`] (send the bytes from that offset, then as above), or an
//!   `Outcome` at once (the upload had already completed: its entry; or a refusal);
//! - a download: the broker answers an `Outcome` (the file's entry, or an error); on success
//!   the raw bytes from the header's `offset` to the end follow.
//!
//! A stream the client gives up on is reset (and stopped) with [`CANCELLED`]; the broker
//! then drops a partial upload at once. Any other break (connection lost, another reset
//! code) leaves the partial upload kept for a resume for a while (the broker's
//! `files.resume_keep_secs`).

use crate::error::ApiError;
use crate::response::SharedFile;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// The application error code a client resets (and stops) a transfer stream with when the
/// transfer is cancelled: the broker releases a cancelled upload at once instead of keeping
/// it for a resume.
pub const CANCELLED: u32 = 1;

/// Bytes moved per read or write of a file's raw bytes, by the broker and the client alike
/// (the broker's upload reads and download writes, the client's upload writes and download
/// reads): large enough to amortise a syscall and a task wake-up, small enough that a
/// transfer holds little memory per stream.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The first frame on a transfer stream.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub enum TransferHeader {
    /// uploadGroupSharedFile: `size` bytes follow (from the offset the broker answers, on a
    /// resume).
    Upload {
        group_id: String,
        file_name: String,
        size: u64,
        content_type: String,
        /// Chosen by the client (at random), the same for every attempt of one upload. The
        /// broker keeps an interrupted upload under (user, `upload_id`).
        upload_id: u64,
        /// false: a new upload, its bytes follow the header. true: continue the upload
        /// `upload_id`; wait for [`TransferReply::ResumeAt`] before sending bytes. Group,
        /// name, size and content type must be those of the first attempt.
        resume: bool,
    },
    /// downloadGroupSharedFile.
    Download {
        group_id: String,
        file_id: String,
        secret: Option<String>,
        /// The first byte wanted (0: the whole file). At most the file's size.
        offset: u64,
    },
}

/// A frame the broker writes on a transfer stream.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub enum TransferReply {
    /// The verdict: the file's entry (its full size even when downloading from an offset),
    /// or why not. The last frame of an upload; the first of a download.
    Outcome(Result<SharedFile, ApiError>),
    /// Resumed uploads only, before any byte: the broker holds the first `offset` bytes
    /// durably (0: it starts afresh); send the rest.
    ResumeAt { offset: u64 },
}
