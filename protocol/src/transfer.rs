//! Shared-file transfers, each on its own bidirectional QUIC stream so that a large file
//! never delays chat traffic on the control stream.
//!
//! The client opens a stream and writes one [`TransferHeader`] frame. For an upload the raw
//! file bytes follow and the client finishes its send side; the broker answers one
//! [`TransferOutcome`] frame. For a download the broker answers a [`TransferOutcome`] frame
//! (the file's entry, or an error) followed by the raw bytes.

use crate::error::ApiError;
use crate::response::SharedFile;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// The first frame on a transfer stream.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub enum TransferHeader {
    /// uploadGroupSharedFile: `size` bytes follow.
    Upload {
        group_id: String,
        file_name: String,
        size: u64,
        content_type: String,
    },
    /// downloadGroupSharedFile.
    Download {
        group_id: String,
        file_id: String,
        secret: Option<String>,
    },
}

/// The broker's verdict on a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct TransferOutcome {
    pub result: Result<SharedFile, ApiError>,
}
