//! What reaches a group actor, as plain data, and the one place that hands it over.
//!
//! Every group-bound input (a request of the contract naming a group, createGroup, one
//! group's part of getGroupInfo, a shared-file transfer's admission, record, release or
//! look-up) is a [`GroupCall`] answered by a [`GroupAnswer`]; both are bincode
//! `Encode`/`Decode` like the protocol types, so a node that does not own the group can
//! forward them byte for byte to the one that does. [`Groups::call`] is the only code that
//! turns a call into an actor message: one existence check, one retry loop for an actor
//! that was stopping. Sessions and transfer streams do not call it directly but through
//! `crate::ingress`, which gathers the rules' outside facts first (and is where a cluster
//! decides local or remote).

use super::actor::{GroupMsg, Reply};
use super::directory::Groups;
use super::files::FileResult;
use super::rules::files::{FileOp, FileReply};
use super::rules::{Caller, Facts};
use bincode::{Decode, Encode};
use convoke_protocol::{ApiError, CreateGroupData, ErrorCode, GroupInfo, Request, Response};
use tokio::sync::oneshot;

/// One input for one group.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum GroupCall {
    /// A request of the contract naming this group (`Request::group_id()` is `Some`).
    Request(Request),
    /// createGroup, under the id the ingress allocated; accepted only while the group does
    /// not exist yet.
    Create(CreateGroupData),
    /// getGroupInfo for this one group (the ingress fans a list of ids out and gathers).
    Info,
    /// A shared-file transfer's step (see `rules::files`).
    File(FileOp),
}

impl GroupCall {
    /// Whether the call is about a group that may not exist yet (createGroup): no
    /// existence check before it reaches an actor.
    fn creates(&self) -> bool {
        matches!(self, Self::Create(_))
    }
}

/// A call as it crosses nodes: who asks, the outside facts gathered on the ingress node,
/// and what. The owner hands it to `crate::ingress::call_with_facts`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Forwarded {
    pub caller: Caller,
    pub facts: Facts,
    pub call: GroupCall,
}

/// A group's answer to a [`GroupCall`] (the error side is the contract's [`ApiError`]).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum GroupAnswer {
    /// To [`GroupCall::Request`] and [`GroupCall::Create`].
    Response(Response),
    /// To [`GroupCall::Info`].
    Info(GroupInfo),
    /// To [`GroupCall::File`].
    File(FileReply),
}

/// The result of a [`GroupCall`].
pub type Answer = Result<GroupAnswer, ApiError>;

impl GroupAnswer {
    /// The contract response, for callers that made a [`GroupCall::Request`] or
    /// [`GroupCall::Create`].
    pub fn into_response(self) -> Reply {
        match self {
            Self::Response(r) => Ok(r),
            other => Err(unexpected("a response", &other)),
        }
    }

    /// The file reply, for callers that made a [`GroupCall::File`].
    pub fn into_file(self) -> FileResult {
        match self {
            Self::File(r) => Ok(r),
            other => Err(unexpected("a file reply", &other)),
        }
    }

    /// The group info, for callers that made a [`GroupCall::Info`].
    pub fn into_info(self) -> Result<GroupInfo, ApiError> {
        match self {
            Self::Info(i) => Ok(i),
            other => Err(unexpected("group info", &other)),
        }
    }
}

fn unexpected(wanted: &str, got: &GroupAnswer) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("the group answered {got:?} where {wanted} was expected"),
    )
}

/// An answer a group actor owes.
///
/// Awaiting [`Groups::call`] queues the call in the actor's mailbox; awaiting
/// [`PendingReply::wait`] waits for the answer. A session awaits the first in order and the
/// second concurrently, so requests it receives in order reach the group in order, while
/// still being pipelined.
#[derive(Debug)]
pub struct PendingReply {
    gid: u64,
    rx: Rx,
}

/// The actor answers each kind of call on a channel of its own type (the message hot path
/// keeps its `Reply` port down to the publisher, unchanged); they meet in [`Answer`] here.
#[derive(Debug)]
enum Rx {
    Response(oneshot::Receiver<Reply>),
    Info(oneshot::Receiver<Result<GroupInfo, ApiError>>),
    File(oneshot::Receiver<FileResult>),
    Ready(Answer),
    /// The owner's answer, coming back from another node (`crate::cluster::forward`).
    Remote(RemoteAnswer),
}

/// A forwarded call's answer, owed by another node.
pub struct RemoteAnswer(pub std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>);

impl std::fmt::Debug for RemoteAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteAnswer")
    }
}

impl PendingReply {
    /// An answer known without asking an actor.
    pub fn ready(gid: u64, answer: Answer) -> Self {
        Self {
            gid,
            rx: Rx::Ready(answer),
        }
    }

    /// An answer owed by the group's owner on another node.
    pub fn remote(
        gid: u64,
        answer: impl std::future::Future<Output = Answer> + Send + 'static,
    ) -> Self {
        Self {
            gid,
            rx: Rx::Remote(RemoteAnswer(Box::pin(answer))),
        }
    }

    /// Waits for the answer.
    pub async fn wait(self) -> Answer {
        let gid = self.gid;
        let gone = move || {
            ApiError::new(
                ErrorCode::ServerBusy,
                format!("group {gid} restarted while handling the request; check the group state and retry"),
            )
        };
        match self.rx {
            Rx::Response(rx) => rx
                .await
                .unwrap_or_else(|_| Err(gone()))
                .map(GroupAnswer::Response),
            Rx::Info(rx) => rx
                .await
                .unwrap_or_else(|_| Err(gone()))
                .map(GroupAnswer::Info),
            Rx::File(rx) => rx
                .await
                .unwrap_or_else(|_| Err(gone()))
                .map(GroupAnswer::File),
            Rx::Ready(a) => a,
            Rx::Remote(a) => a.0.await,
        }
    }

    /// Waits for the answer to a [`GroupCall::Request`] or [`GroupCall::Create`].
    pub async fn response(self) -> Reply {
        self.wait().await?.into_response()
    }
}

/// Builds the actor message of `call`, with the channel its answer comes back on.
fn message(caller: Caller, facts: Facts, call: GroupCall) -> (GroupMsg, Rx) {
    match call {
        GroupCall::Request(request) => {
            let (tx, rx) = oneshot::channel();
            let msg = GroupMsg::Request {
                caller,
                facts,
                request,
                reply: tx.into(),
            };
            (msg, Rx::Response(rx))
        }
        GroupCall::Create(data) => {
            let (tx, rx) = oneshot::channel();
            let msg = GroupMsg::Create {
                caller,
                facts,
                data,
                reply: tx.into(),
            };
            (msg, Rx::Response(rx))
        }
        GroupCall::Info => {
            let (tx, rx) = oneshot::channel();
            (
                GroupMsg::Info {
                    caller,
                    reply: tx.into(),
                },
                Rx::Info(rx),
            )
        }
        GroupCall::File(op) => {
            let (tx, rx) = oneshot::channel();
            (
                GroupMsg::File {
                    caller,
                    op,
                    reply: tx.into(),
                },
                Rx::File(rx),
            )
        }
    }
}

/// Takes back the call of a message the actor's mailbox refused (it was stopping).
fn unsend(msg: GroupMsg) -> Option<(Caller, Facts, GroupCall)> {
    match msg {
        GroupMsg::Request {
            caller,
            facts,
            request,
            ..
        } => Some((caller, facts, GroupCall::Request(request))),
        GroupMsg::Create {
            caller,
            facts,
            data,
            ..
        } => Some((caller, facts, GroupCall::Create(data))),
        GroupMsg::Info { caller, .. } => Some((caller, Facts::default(), GroupCall::Info)),
        GroupMsg::File { caller, op, .. } => Some((caller, Facts::default(), GroupCall::File(op))),
        GroupMsg::Tick | GroupMsg::Retire { .. } => None,
    }
}

impl Groups {
    /// Queues `call` (with the outside `facts` its rule may read, gathered by the ingress)
    /// in the mailbox of group `gid`'s actor (spawning it if needed) and returns the
    /// pending answer. 605 for a group that does not exist (except for
    /// createGroup). A release of an upload's place does not load a group: if its actor is
    /// no longer running, the place went with it.
    pub async fn call(
        &self,
        gid: u64,
        caller: Caller,
        facts: Facts,
        call: GroupCall,
    ) -> Result<PendingReply, ApiError> {
        if matches!(call, GroupCall::File(FileOp::Release { .. })) && self.running(gid).is_none() {
            return Ok(PendingReply::ready(
                gid,
                Ok(GroupAnswer::File(FileReply::Released)),
            ));
        }
        if !call.creates() && !self.exists(gid) {
            return Err(ApiError::no_group(&gid.to_string()));
        }
        let (mut caller, mut facts, mut call) = (caller, facts, call);
        for _ in 0..3 {
            let actor = self.actor(gid).await?;
            let (msg, rx) = message(caller, facts, call);
            match actor.send_message(msg) {
                Ok(()) => return Ok(PendingReply { gid, rx }),
                Err(ractor::MessagingErr::SendErr(msg)) => {
                    // The actor was stopping: drop the stale entry and try a fresh one.
                    self.forget(gid, &actor);
                    let Some(back) = unsend(msg) else {
                        break;
                    };
                    (caller, facts, call) = back;
                }
                Err(e) => {
                    return Err(ApiError::new(
                        ErrorCode::ServerBusy,
                        format!("group {gid} unavailable: {e}"),
                    ))
                }
            }
        }
        Err(ApiError::new(
            ErrorCode::ServerBusy,
            format!("group {gid} is restarting; retry"),
        ))
    }

    /// Hands `call` to group `gid`'s actor only if it is running, without waiting and
    /// without an answer: for a `Drop` (an upload's place given back). False if it was not
    /// delivered.
    pub fn notify(&self, gid: u64, caller: Caller, call: GroupCall) -> bool {
        let Some(actor) = self.running(gid) else {
            return false;
        };
        let (msg, _) = message(caller, Facts::default(), call);
        actor.send_message(msg).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::rules::UserFacts;
    use convoke_protocol::ErrorCode;

    fn round_trip<T: Encode + Decode<()> + PartialEq + std::fmt::Debug>(v: &T) {
        let cfg = bincode::config::standard();
        let bytes = bincode::encode_to_vec(v, cfg).expect("encodes");
        let (back, used): (T, usize) = bincode::decode_from_slice(&bytes, cfg).expect("decodes");
        assert_eq!((&back, used), (v, bytes.len()));
    }

    /// Calls, facts and answers survive bincode unchanged, so a node can forward them to
    /// the group's owner and hand the answer back byte for byte.
    #[test]
    fn calls_and_answers_are_plain_data() {
        let mut facts = Facts::default();
        facts.insert(
            "bob",
            UserFacts {
                exists: true,
                joined: 3,
            },
        );
        round_trip(&Forwarded {
            caller: Caller {
                user: "alice".into(),
                app_admin: false,
                session_id: 5 << 56 | 9,
            },
            facts,
            call: GroupCall::Request(Request::SendGroupMessage {
                group_id: "42".into(),
                payload: vec![1, 2, 3],
                allow_group_ack: true,
                client_msg_id: Some("c1".into()),
            }),
        });
        round_trip(&GroupCall::File(FileOp::Release { file_id: 7 }));
        round_trip(&GroupCall::Create(CreateGroupData::default()));
        let answers: [Answer; 3] = [
            Ok(GroupAnswer::Response(Response::Done)),
            Ok(GroupAnswer::File(FileReply::Admitted)),
            Err(ApiError::new(ErrorCode::GroupNotExist, "group 42")),
        ];
        for a in &answers {
            round_trip(a);
        }
    }
}
