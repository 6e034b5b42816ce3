//! Routing one request of a session and writing its answer.
//!
//! The session task calls [`route`] for each request in the order the client sent them:
//! requests for a group (getGroupInfo's ids included) are queued through
//! [`crate::ingress`] in that group's mailbox in that order (`route` awaits the queueing), and answered concurrently (a task awaits each answer), so a client can
//! pipeline without one slow group blocking the others.
//!
//! Before anything else a request takes a token from its user's bucket ([`crate::quota`]):
//! state-changing requests and messages each have a per-user rate (509 over it), reads are
//! free. A request that then fails for another reason keeps its token spent: refused
//! requests cost the broker work too (a directory look-up, a group loaded and dropped), so
//! every request counts. The free-disk watermark for sends is checked where the message is
//! written, on the group's owner (`crate::ingress::call_with_facts`), not here.

use super::io::Responder;
use super::lookup;
use crate::group::rules::Caller;
use crate::group::GroupCall;
use crate::ingress;
use crate::node::Node;
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::handshake::ServerFrame;
use convoke_protocol::{ids::parse_group_id, ApiError, Request, RequestClass, Response};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;

/// Routes one request: to its group's actor, or to the directory lookups for requests
/// without a group. `slot` (the request's in-flight permit) is released once the answer is
/// written.
pub async fn route(
    node: &Arc<Node>,
    caller: &Caller,
    responses: &Responder,
    id: u64,
    request: Request,
    slot: OwnedSemaphorePermit,
) {
    // No new work while the session's answers fill their byte budget: the client is not
    // reading them fast enough (it is closed if it stops reading altogether).
    responses.room().await;
    let started = Instant::now();
    let method = request.method();
    if let Err(e) = admit(node, caller, &request) {
        return respond(responses, id, method, started, Err(e)).await;
    }
    match request.group_id().map(parse_group_id) {
        Some(Err(e)) => {
            respond(responses, id, method, started, Err(e)).await;
        }
        Some(Ok(gid)) => {
            match ingress::call(node, gid, caller.clone(), GroupCall::Request(request)).await {
                Ok(pending) => {
                    let responses = responses.clone();
                    tokio::spawn(async move {
                        let result = pending.response().await;
                        respond(&responses, id, method, started, result).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    respond(responses, id, method, started, Err(e)).await;
                }
            }
        }
        None if matches!(request, Request::GetGroupInfo { .. }) => {
            let Request::GetGroupInfo { group_ids } = request else {
                return;
            };
            // Queued now, in the session's order; answered by each group's actor.
            match ingress::info(node, caller, group_ids).await {
                Ok(pending) => {
                    let responses = responses.clone();
                    tokio::spawn(async move {
                        let result = pending.wait().await;
                        respond(&responses, id, method, started, result).await;
                        drop(slot);
                    });
                }
                Err(e) => respond(responses, id, method, started, Err(e)).await,
            }
        }
        None => {
            let (node, caller, responses) = (node.clone(), caller.clone(), responses.clone());
            tokio::spawn(async move {
                let result = lookup::serve(&node, &caller, request).await;
                respond(&responses, id, method, started, result).await;
                drop(slot);
            });
        }
    }
}

/// The caller's rate limits (see [`crate::quota`]). App admins (the operator's own tools)
/// are not rate limited.
fn admit(node: &Node, caller: &Caller, request: &Request) -> Result<(), ApiError> {
    let class = request.class();
    let class = if caller.app_admin {
        RequestClass::Read
    } else {
        class
    };
    node.quotas.admit(&caller.user, class)
}

async fn respond(
    tx: &Responder,
    id: u64,
    method: &'static str,
    started: Instant,
    result: Result<Response, ApiError>,
) {
    let code = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.code.code().to_string(),
    };
    metrics::counter!("convoke_requests_total", "method" => method, "code" => code).increment(1);
    metrics::histogram!("convoke_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    let frame = match frame_bytes(&ServerFrame::Response { id, result }) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(%method, error = %e, "response could not be encoded");
            let fallback = ServerFrame::Response {
                id,
                result: Err(ApiError::new(
                    convoke_protocol::ErrorCode::Internal,
                    "response too large to encode",
                )),
            };
            match frame_bytes(&fallback) {
                Ok(f) => f,
                Err(_) => return,
            }
        }
    };
    tx.send(frame).await;
}
