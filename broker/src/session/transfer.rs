//! Shared-file transfer streams. Each transfer arrives on a bidirectional stream of its own
//! (see `convoke_protocol::transfer`), so a large file never delays the control stream:
//! this module reads the stream's [`TransferHeader`] and hands the stream to
//! `crate::files::upload` or `crate::files::download`, each in a task of its own.
//!
//! A header that does not arrive in time, or does not decode, is answered with a -3
//! outcome on that stream only; the connection and its other streams carry on.

use super::io::{read_frame, ReadError};
use crate::files::{self, download::DownloadRequest, upload::UploadRequest};
use crate::group::rules::Caller;
use crate::node::Node;
use bytes::BytesMut;
use convoke_protocol::transfer::TransferHeader;
use convoke_protocol::ApiError;
use std::sync::Arc;
use std::time::Duration;

/// Serves one transfer stream: reads its header, then uploads or downloads.
pub async fn serve_transfer(
    node: Arc<Node>,
    caller: Caller,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut buf = BytesMut::new();
    let wait = Duration::from_millis(node.config.sessions.handshake_timeout_ms);
    let header = match tokio::time::timeout(wait, read_frame::<TransferHeader>(&mut recv, &mut buf))
        .await
    {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return,
        Ok(Err(ReadError::Stream(e))) => {
            tracing::debug!(user = %caller.user, error = %e, "transfer stream failed before its header");
            return;
        }
        Ok(Err(e)) => {
            let _ = recv.stop(0u32.into());
            let err = ApiError::param(format!("malformed transfer header: {e}"));
            files::answer(&mut send, Err(err)).await;
            return;
        }
        Err(_) => {
            let _ = recv.stop(0u32.into());
            let err = ApiError::param(format!("no transfer header within {} ms", wait.as_millis()));
            files::answer(&mut send, Err(err)).await;
            return;
        }
    };
    match header {
        TransferHeader::Upload {
            group_id,
            file_name,
            size,
            content_type,
            upload_id,
            resume,
        } => {
            let req = UploadRequest {
                group_id,
                file_name,
                size,
                content_type,
                upload_id,
                resume,
            };
            files::upload::serve(&node, &caller, send, recv, buf, req).await;
        }
        TransferHeader::Download {
            group_id,
            file_id,
            secret,
            offset,
        } => {
            drop(recv);
            let req = DownloadRequest {
                group_id,
                file_id,
                secret,
                offset,
            };
            files::download::serve(&node, &caller, send, req).await;
        }
    }
}
