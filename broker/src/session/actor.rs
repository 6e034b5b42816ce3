//! The session actor: routes each request of one connection and writes its answer.
//!
//! Requests for a group are queued in that group's mailbox in the order the client sent
//! them (the actor awaits the queueing), and answered concurrently (a task awaits each
//! answer), so a client can pipeline without one slow group blocking the others.

use super::lookup;
use crate::group::rules::Caller;
use crate::node::Node;
use bytes::Bytes;
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::handshake::ServerFrame;
use convoke_protocol::{ids::parse_group_id, ApiError, Request, Response};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// Messages to a session actor.
#[derive(Debug)]
pub enum SessionMsg {
    /// A request read from the control stream, with its in-flight slot (released when the
    /// answer is written).
    Request {
        id: u64,
        request: Request,
        slot: OwnedSemaphorePermit,
    },
}

impl ractor::Message for SessionMsg {}

/// The session actor handler.
#[derive(Debug)]
pub struct SessionActor;

/// Its arguments and state.
#[derive(Debug)]
pub struct SessionArgs {
    pub node: Arc<Node>,
    pub caller: Caller,
    /// Encoded response frames for the control stream.
    pub responses: mpsc::Sender<Bytes>,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionArgs;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionArgs,
    ) -> Result<(), ActorProcessingErr> {
        let SessionMsg::Request { id, request, slot } = msg;
        let started = Instant::now();
        let method = request.method();
        let responses = st.responses.clone();
        let caller = st.caller.clone();
        let node = st.node.clone();
        match request.group_id().map(parse_group_id) {
            Some(Err(e)) => respond(&responses, id, method, started, Err(e)).await,
            Some(Ok(gid)) => match node.groups.dispatch(gid, caller, request).await {
                Ok(pending) => {
                    tokio::spawn(async move {
                        let result = pending.wait().await;
                        respond(&responses, id, method, started, result).await;
                        drop(slot);
                    });
                }
                Err(e) => respond(&responses, id, method, started, Err(e)).await,
            },
            None => {
                tokio::spawn(async move {
                    let result = lookup::serve(&node, &caller, request).await;
                    respond(&responses, id, method, started, result).await;
                    drop(slot);
                });
            }
        }
        Ok(())
    }
}

async fn respond(
    tx: &mpsc::Sender<Bytes>,
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
    let _ = tx.send(frame).await;
}
