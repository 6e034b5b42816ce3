//! Shared-file transfer streams. Each transfer arrives on a bidirectional stream of its own
//! (see `convoke_protocol::transfer`); the broker does not serve transfers yet and answers
//! each with a "not implemented" outcome naming the method.

use super::io::read_frame;
use crate::group::rules::Caller;
use crate::node::Node;
use bytes::BytesMut;
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::transfer::{TransferHeader, TransferOutcome};
use convoke_protocol::ApiError;
use std::sync::Arc;

/// Accepts transfer streams on `conn` until it closes.
pub async fn accept_transfers(node: Arc<Node>, conn: quinn::Connection, caller: Caller) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_transfer(node.clone(), caller.clone(), send, recv));
    }
}

async fn serve_transfer(
    _node: Arc<Node>,
    _caller: Caller,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut buf = BytesMut::new();
    let method = match read_frame::<TransferHeader>(&mut recv, &mut buf).await {
        Ok(Some(TransferHeader::Upload { .. })) => "uploadGroupSharedFile",
        Ok(Some(TransferHeader::Download { .. })) => "downloadGroupSharedFile",
        _ => return,
    };
    let _ = recv.stop(0u32.into());
    let outcome = TransferOutcome {
        result: Err(ApiError::not_implemented(method)),
    };
    if let Ok(frame) = frame_bytes(&outcome) {
        let _ = send.write_all(&frame).await;
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}
